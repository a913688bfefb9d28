//! `rekey demo`: the whole flow on a made-up organization, against the in-process simulators
//! ([`crate::sandbox::demo`]): inventory, plan with a reviewer's edits, dry run, apply with
//! injected faults, the report, checks against the simulators and a secret-hygiene check.
//! Each numbered stage of the script is one function here.

use super::apply::render_preview;
use super::output::{Failure, runtime};
use crate::classify::{self, RuleSet};
use crate::diagnostic::{self, Diagnostic};
use crate::engine::events::{Event, EventSink, PlainLines};
use crate::engine::run::{ApplyOptions, Environment, RunReport};
use crate::inventory::{self, Inventory};
use crate::plan::{self, Plan, PrincipalField, build::BuildOptions};
use crate::sandbox::demo::{self, DemoWorld};
use crate::sandbox::demo_cloud::CloudDemo;
use std::path::Path;
use std::sync::Arc;

/// A demo failure: what failed, and why.
fn fail(what: &str, e: &dyn std::fmt::Display) -> Failure {
    Failure::runtime(format!("demo: {what}: {e}"))
}

/// `rekey demo`: the whole flow against the in-process simulators of CircleCI and AWS.
pub fn run() -> Result<u8, Failure> {
    let rt = runtime()?;
    rt.block_on(demo())
}

async fn demo() -> Result<u8, Failure> {
    println!(
        "rekey demo — a made-up organization, gh/acme, in in-process simulators of CircleCI, AWS"
    );
    println!(
        "IAM/STS, GCP IAM and Azure Entra ID/Graph on 127.0.0.1, plus a made-up token owner driven"
    );
    println!(
        "by the exec provider. Real protocols, real AWS SDK calls, nothing leaves this machine.\n"
    );
    let world = demo::start()
        .await
        .map_err(|e| fail("starting the simulators", &e))?;
    // GCP, Azure and an exec owner: their credentials replace the demo org's fakes.
    let cloud = CloudDemo::start(&world.circleci)
        .await
        .map_err(|e| fail("starting the GCP and Azure simulators", &e))?;
    let token = crate::secret::Secret::new(world.circleci.state().token());
    let client = crate::circleci::CircleCiClient::new(&world.circleci.base_url(), token)
        .map_err(|e| fail("CircleCI client", &e))?;

    println!("1. Inventory (CircleCI API: projects, variables, checkout keys, contexts)");
    let options = inventory::live::LiveOptions {
        org: Some("gh/acme".into()),
        ..Default::default()
    };
    let inv = inventory::live::take_live(&client, &options)
        .await
        .map_err(|e| fail("inventory", &e))?;
    print!("   {}", super::inventory::summary(&inv));

    println!("\n2. Plan (classification, then `--discover aws` fills IAM users from key ids)");
    let draft = draft_plan(&world, &inv).await?;
    let mut plan = draft.plan.clone();
    review_aws(&mut plan, &world);
    add_other_targets(&mut plan, &cloud)?;
    let text =
        plan::write::to_yaml(&plan, &draft.notes).map_err(|e| fail("writing the plan", &e))?;
    let reparsed = validated("demo-plan.yaml", &text)?;

    let providers = world
        .providers(&client, &cloud)
        .map_err(|e| fail("providers", &e))?;
    println!("\n3. Dry run (reads live state, changes nothing)");
    let preview = crate::engine::dryrun::preview(&reparsed, &client, &providers, false).await;
    for line in render_preview(&preview).lines().skip(2) {
        println!("   {line}");
    }

    println!(
        "\n4. Apply, with faults injected: CircleCI answers 429 (Retry-After) to a write, AWS fails a CreateAccessKey with 500"
    );
    let state_dir = std::env::temp_dir().join(format!("rekey-demo-{}", std::process::id()));
    let env = Environment {
        circleci: client.clone(),
        providers,
        stash_key: crate::engine::stash::StashKey::generate().map_err(|e| fail("stash key", &e))?,
        hunt_aws: Some(world.aws.sdk_config()),
    };
    let events = Arc::new(Recorded::default());
    let report = apply_with_faults(&world, &text, reparsed, env, &state_dir, events.clone()).await;
    let outcome = report.and_then(|report| {
        println!("\n5. Report");
        print_report(&report);
        print_checks(&world, &cloud);
        let markdown = crate::report::run::markdown(&report);
        println!("\n   The Markdown report for the incident ticket (`--report FILE`) begins:");
        for line in markdown.lines().take(8) {
            println!("   | {line}");
        }
        secret_hygiene(&world, &plan, &state_dir, &markdown, &events)?;
        Ok(report)
    });
    let _ = std::fs::remove_dir_all(&state_dir);
    let report = outcome?;
    println!(
        "\nNext: `rekey inventory --org gh/<yours> --out inventory.json` — see the README, \"Rotating for real\"."
    );
    // The demo's own outcome: its hunt findings are the point of the show, not a failure
    // (`rekey apply` itself exits 3 on them).
    Ok(match report.exit_code() {
        3 => 0,
        code => code,
    })
}

/// Stage 2, the machine's part: classify the inventory, then `--discover aws`.
async fn draft_plan(world: &DemoWorld, inv: &Inventory) -> Result<plan::build::Draft, Failure> {
    let rules = RuleSet::builtin().map_err(|e| fail("rules", &e))?;
    let mut draft = plan::build::build(
        inv,
        classify::classify(inv, &rules),
        &BuildOptions::default(),
    );
    let listing = world
        .aws_provider()
        .discover_users()
        .await
        .map_err(|e| fail("discovery", &e))?;
    for r in plan::discover::fill_aws_users(&mut draft, &listing) {
        println!("   {}: {}", r.target, r.note);
    }
    println!(
        "   {} targets, {} unclassified, {} ignored. This demo rotates the AWS keys and one target of each other provider (GitHub deploy key, checkout key, GitHub token, GCP, Azure, exec); the others stay for review.",
        draft.plan.targets.len(),
        draft.plan.unclassified.len(),
        draft.plan.ignored.len()
    );
    Ok(draft)
}

/// Stage 2, the reviewer's part, done here for the demo: keep the AWS targets rekey can rotate,
/// fill what discovery could not (a context shows no key id), mark the old key removable, add
/// a canary.
fn review_aws(plan: &mut Plan, world: &DemoWorld) {
    plan.targets.retain(|t| {
        t.provider.value == plan::ProviderKind::AwsIam && !t.bindings.iter().any(|b| b.aws_keypair)
    });
    for t in &mut plan.targets {
        let in_context = t
            .bindings
            .iter()
            .any(|b| b.context.as_ref().is_some_and(|c| c.as_str() == "aws-prod"));
        if in_context {
            t.principal.set(
                PrincipalField::User,
                Some(plan::Located::new("release-bot".into())),
            );
            t.confirmed = true;
            println!(
                "   reviewer: {} (context aws-prod) belongs to IAM user release-bot",
                t.id
            );
        }
        if t.principal
            .user()
            .is_some_and(|u| u.as_str() == "prod-deployer")
        {
            t.policy.removable_keys = vec![plan::Located::new(world.removable_key.clone())];
            println!(
                "   reviewer: {} may delete the unused old key {} to make room",
                t.id, world.removable_key
            );
        }
        if t.bindings.iter().any(|b| {
            b.project
                .as_ref()
                .is_some_and(|p| p.as_str() == "gh/acme/api")
        }) {
            t.policy.canary = Some(plan::Canary {
                project: plan::Located::new("gh/acme/api".into()),
                branch: "main".into(),
                timeout: None,
            });
            println!(
                "   reviewer: {} must pass a canary pipeline of gh/acme/api before the old key is disabled",
                t.id
            );
        }
    }
}

/// Stage 2, the reviewer adds one target of each other provider, and the hunts; the grace
/// period is shortened so the demo ends.
fn add_other_targets(plan: &mut Plan, cloud: &CloudDemo) -> Result<(), Failure> {
    // The GitHub side, as a reviewer would write it: the repository's deploy key (its private
    // key in a project variable), the project's checkout key, and a personal access token
    // (whose new value a person supplies: here in process, as `--value-from-file` would).
    let github_targets = format!(
        "- id: github-deploy-key-api
  provider: github-deploy-key
  principal: {{repository: acme/api, title: rekey demo}}
  bindings:
    - project: gh/acme/api
      vars: {{private_key: {var}}}
      encoding: {{private_key: base64}}
- id: checkout-key-api
  provider: circleci-checkout-key
  principal: {{project: gh/acme/api}}
- id: github-token-api
  provider: github-token
  principal: {{user: release-bot}}
  bindings:
    - project: gh/acme/api
      vars: {{token: GITHUB_TOKEN}}
",
        var = demo::DEPLOY_KEY_VAR
    );
    let extra: Vec<plan::Target> =
        serde_saphyr::from_str(&github_targets).map_err(|e| fail("GitHub targets", &e))?;
    for t in &extra {
        println!(
            "   reviewer: adds {} ({}), with grace 0s like the rest",
            t.id, t.provider.value
        );
    }
    plan.targets.extend(extra);
    // One target of each other provider, as the reviewer writes them, with the simulators'
    // endpoints.
    for t in cloud.targets() {
        println!(
            "   reviewer: {} ({}) rotates {}",
            t.id,
            t.provider.value,
            t.bindings
                .iter()
                .flat_map(|b| b.vars.values().map(|v| v.value.clone()))
                .collect::<Vec<_>>()
                .join(", ")
        );
        plan.targets.push(t);
    }
    plan.endpoints = cloud.endpoints();
    plan.defaults.grace = plan::Located::new(plan::PlanDuration(0));
    // Hunts: CloudTrail's event history through LookupEvents, narrowed to each AWS key; the
    // simulator delivers at once, so no delivery delay.
    plan.incident.get_or_insert_with(Default::default).since =
        plan::Located::new(demo::incident_start());
    plan.hunts.sources.cloudtrail = vec![plan::Located::new("api".into())];
    plan.hunts.delivery_delay.insert(
        "cloudtrail".into(),
        plan::Located::new(plan::PlanDuration(0)),
    );
    println!(
        "   reviewer: hunts read CloudTrail through LookupEvents (`hunts.sources.cloudtrail: [api]`); findings before a rotation are recorded and the rotation goes on (on_findings.pre: continue)"
    );
    Ok(())
}

/// The plan as written, read back and validated as `rekey validate` would.
fn validated(name: &str, text: &str) -> Result<Plan, Failure> {
    let reparsed = plan::load::parse(name, text).map_err(|d| fail("reading the plan back", &d))?;
    let problems: Vec<Diagnostic> = plan::validate::validate(name, text, &reparsed)
        .into_iter()
        .filter(|d| d.is_error())
        .collect();
    if !problems.is_empty() {
        return Err(fail(
            "validating the plan",
            &diagnostic::render_all(&problems),
        ));
    }
    println!(
        "   validate: the plan is valid ({} targets, grace 0s for the demo; 24h by default)",
        reparsed.targets.len()
    );
    Ok(reparsed)
}

/// Stage 4: apply with a CircleCI 429 and an AWS 500 injected, then count the faults survived.
async fn apply_with_faults(
    world: &DemoWorld,
    text: &str,
    plan: Plan,
    env: Environment,
    state_dir: &Path,
    events: Arc<Recorded>,
) -> Result<RunReport, Failure> {
    let _ = world
        .circleci
        .throttle("/envvar$", 1, std::time::Duration::from_secs(1));
    let _ = world.aws.fail_next("CreateAccessKey", 1);
    let options = ApplyOptions {
        state_dir: state_dir.to_path_buf(),
        verify_backoff: std::time::Duration::from_millis(100),
        poll_interval: std::time::Duration::from_millis(200),
        ..Default::default()
    };
    let report = crate::engine::run::apply("demo-plan.yaml", text, plan, env, options, events)
        .await
        .map_err(|e| fail("apply", &e))?;
    let throttled = world
        .circleci
        .requests()
        .iter()
        .filter(|r| r.status == 429)
        .count();
    let failed = world
        .aws
        .requests()
        .iter()
        .filter(|r| r.status >= 500)
        .count();
    println!(
        "   Faults survived: CircleCI answered 429 {throttled}× (rekey waited for Retry-After), AWS answered 500 {failed}× (rekey retried); no credential was minted twice."
    );
    Ok(report)
}

/// Stage 5: the run's summary and the hunts that found something.
fn print_report(report: &RunReport) {
    println!("   Run {} ({:?})", report.run, report.status);
    for line in crate::report::run::summary_table(report).lines() {
        println!("   {line}");
    }
    for h in report.hunts.iter().filter(|h| h.findings > 0) {
        println!(
            "\n   {} {}-rotation hunt: {} finding(s), highest {} (CloudTrail via LookupEvents):",
            h.target,
            h.phase,
            h.findings,
            h.highest.map(|s| s.to_string()).unwrap_or_default()
        );
        for (rule, severity, n) in &h.per_rule {
            println!("     {n:>3} × {:<6} {rule}", severity.as_str());
        }
    }
}

/// Stage 5: whether every binding now holds a working credential, at the simulators.
fn print_checks(world: &DemoWorld, cloud: &CloudDemo) {
    println!("\n   Checks against the simulators:");
    for (place, works) in world
        .bindings_work()
        .into_iter()
        .chain(cloud.bindings_work(&world.circleci))
    {
        println!(
            "   {} {place}: {}",
            if works { "✓" } else { "✗" },
            if works {
                "holds a working key"
            } else {
                "does NOT hold a working key"
            }
        );
    }
    for (what, ok) in world.github_checks() {
        println!(
            "   {} {what}{}",
            if ok { "✓" } else { "✗" },
            if ok { "" } else { ": NOT as expected" }
        );
    }
    for user in ["ci-deployer", "prod-deployer", "release-bot"] {
        let keys = world.aws.keys_of(user);
        println!(
            "   {user}: {} key(s), {} active",
            keys.len(),
            keys.iter()
                .filter(|k| k.status == crate::sandbox::aws::KeyStatus::Active)
                .count()
        );
    }
}

/// Secret hygiene, checked on the spot: every value now in a binding (the new credentials) and
/// every AWS secret ever issued (old ones included), raw and base64, searched in every file of
/// the state directory (journal, stash, lock), the report and every progress line.
fn secret_hygiene(
    world: &DemoWorld,
    plan: &Plan,
    state_dir: &Path,
    markdown: &str,
    events: &Recorded,
) -> Result<(), Failure> {
    let mut secrets: Vec<String> = Vec::new();
    {
        let state = world.circleci.state();
        for t in &plan.targets {
            for b in &t.bindings {
                for var in b.vars.values() {
                    let value = match b.place() {
                        Some(plan::Place::Project(slug)) => state
                            .project_by_slug(slug)
                            .and_then(|p| p.env_vars.get(var.as_str())),
                        Some(plan::Place::Context(name)) => state
                            .context_by_name(name)
                            .and_then(|c| c.vars.get(var.as_str())),
                        None => None,
                    };
                    // Ids are public (an AWS key id shows in CloudTrail); only secrets count.
                    if let Some(v) =
                        value.filter(|v| v.value.len() >= 16 && !v.value.starts_with("AKIA"))
                    {
                        secrets.push(v.value.clone());
                    }
                }
            }
        }
    }
    secrets.extend(
        world
            .aws
            .state()
            .issued_secrets()
            .iter()
            .map(|s| s.expose().to_string()),
    );
    let mut haystacks: Vec<Vec<u8>> =
        vec![markdown.as_bytes().to_vec(), events.text().into_bytes()];
    // Every file below the state directory: journal, stash, lock, hunt findings.
    let files = crate::engine::rehearsal::files_below(state_dir);
    let count = files.len();
    haystacks.extend(files.into_iter().map(|(_, bytes)| bytes));
    use base64::Engine as _;
    let found = secrets
        .iter()
        .flat_map(|s| {
            [
                s.clone(),
                base64::engine::general_purpose::STANDARD.encode(s),
            ]
        })
        .filter(|needle| {
            haystacks
                .iter()
                .any(|h| h.windows(needle.len()).any(|w| w == needle.as_bytes()))
        })
        .count();
    println!(
        "\n   Secret hygiene: {} secret values (new and old, raw and base64) searched in {count} state files, the report and {} progress lines: {found} found.",
        secrets.len() * 2,
        events.count()
    );
    if found > 0 {
        return Err(Failure::runtime(
            "demo: a secret reached the state directory, the report or the progress output",
        ));
    }
    Ok(())
}

/// Progress lines of the demo, printed as usual and kept for the demo's secret-hygiene check.
#[derive(Default)]
struct Recorded {
    lines: std::sync::Mutex<Vec<String>>,
}

impl Recorded {
    fn text(&self) -> String {
        self.lines.lock().map(|l| l.join("\n")).unwrap_or_default()
    }

    fn count(&self) -> usize {
        self.lines.lock().map(|l| l.len()).unwrap_or_default()
    }
}

impl EventSink for Recorded {
    fn event(&self, e: &Event<'_>) {
        PlainLines.event(e);
        if let Ok(line) = serde_json::to_string(e)
            && let Ok(mut lines) = self.lines.lock()
        {
            lines.push(line);
        }
    }
}
