//! `rekey apply PLAN --rehearse` (issue 15): plans/circleci-incident.yaml rehearsed under each
//! fault profile, with the report's figures asserted and the world checked at the simulators
//! afterwards; rehearsals that stop where the real run would (an exec target without a
//! stand-in, a plan stale against its own observations); a secret scan of every output; and,
//! through the binary, a rehearsal whose plan and environment point elsewhere, with garbage
//! credentials, that still touches nothing but its own loopback simulators.

use rekey::engine::events::{Event, EventSink};
use rekey::engine::rehearsal::{Rehearsal, RehearsalOptions, rehearse_in};
use rekey::plan::Plan;
use rekey::sandbox::aws::KeyStatus;
use rekey::sandbox::profiles::FaultProfile;
use rekey::sandbox::world::{PlanWorld, StandIn};
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

const PLAN: &str = "plans/circleci-incident.yaml";

fn incident_plan() -> (String, Plan) {
    let text = std::fs::read_to_string(PLAN).expect("read the incident plan");
    let plan = rekey::plan::load::parse(PLAN, &text).expect("the incident plan parses");
    (text, plan)
}

/// Every event, as JSON lines, for the secret scan.
#[derive(Default)]
struct Lines(Mutex<Vec<String>>);

impl EventSink for Lines {
    fn event(&self, e: &Event<'_>) {
        if let Ok(line) = serde_json::to_string(e) {
            self.0.lock().unwrap().push(line);
        }
    }
}

struct Rehearsed {
    world: PlanWorld,
    rehearsal: Rehearsal,
    events: Arc<Lines>,
}

fn with_builtin_npm() -> BTreeMap<String, StandIn> {
    BTreeMap::from([("npm-publish".to_string(), StandIn::Builtin)])
}

async fn rehearse(
    plan: Plan,
    faults: FaultProfile,
    stand_ins: BTreeMap<String, StandIn>,
) -> Rehearsed {
    let world = PlanWorld::start(&plan, &stand_ins)
        .await
        .expect("start the world");
    let events = Arc::new(Lines::default());
    let options = RehearsalOptions {
        faults,
        seed: 7,
        stand_ins,
        parallelism: 8,
        ..Default::default()
    };
    let rehearsal = rehearse_in(&world, PLAN, plan, options, events.clone())
        .await
        .unwrap_or_else(|e| panic!("rehearsal: {e}"));
    Rehearsed {
        world,
        rehearsal,
        events,
    }
}

fn outcome_of<'a>(r: &'a Rehearsal, target: &str) -> &'a str {
    let t = r
        .report
        .as_ref()
        .and_then(|rep| rep.targets.iter().find(|t| t.id == target))
        .unwrap_or_else(|| panic!("no target {target} in the report"));
    match &t.outcome {
        rekey::engine::target::Outcome::Done => "done",
        rekey::engine::target::Outcome::Incomplete { .. } => "incomplete",
        rekey::engine::target::Outcome::Stale { .. } => "stale",
        rekey::engine::target::Outcome::Failed { .. } => "failed",
        _ => "other",
    }
}

/// The AWS target at the owner: `ci-deployer`'s active keys, and whether the project and the
/// context hold one of them.
fn aws_at_owner(world: &PlanWorld) -> (Vec<String>, bool, bool) {
    let active: Vec<String> = world
        .aws
        .keys_of("ci-deployer")
        .into_iter()
        .filter(|k| k.status == KeyStatus::Active)
        .map(|k| k.access_key_id)
        .collect();
    let state = world.circleci.state();
    let works = |id: Option<&rekey::sandbox::circleci::StoredVar>,
                 secret: Option<&rekey::sandbox::circleci::StoredVar>| {
        match (id, secret) {
            (Some(id), Some(secret)) => {
                world
                    .aws
                    .credentials(&id.value)
                    .is_some_and(|c| c.secret_access_key.expose() == secret.value)
                    && active.contains(&id.value)
            }
            _ => false,
        }
    };
    let api = state.project_by_slug("gh/acme/api").unwrap();
    let project_ok = works(
        api.env_vars.get("AWS_ACCESS_KEY_ID"),
        api.env_vars.get("AWS_SECRET_ACCESS_KEY"),
    );
    let ctx = state.context_by_name("aws-prod").unwrap();
    let context_ok = works(
        ctx.vars.get("AWS_ACCESS_KEY_ID"),
        ctx.vars.get("AWS_SECRET_ACCESS_KEY"),
    );
    (active, project_ok, context_ok)
}

/// Every secret the world knows (old and new, every spelling) in the rendered and JSON
/// report and every event: none.
fn assert_no_secret_in_outputs(r: &Rehearsed) {
    let secrets = r.world.secrets();
    assert!(
        secrets.len() >= 10,
        "the scan must have secrets to look for: {}",
        secrets.len()
    );
    let haystacks = [
        r.rehearsal.render(),
        serde_json::to_string(&r.rehearsal).unwrap(),
        r.events.0.lock().unwrap().join("\n"),
    ];
    for secret in &secrets {
        for spelling in rekey::redact::spellings(secret)
            .into_iter()
            .filter(|s| s.len() >= 8)
        {
            for h in &haystacks {
                assert!(!h.contains(&spelling), "a secret reached the outputs");
            }
        }
    }
    assert!(r.rehearsal.secret_scan.found.is_empty());
    assert!(r.rehearsal.secret_scan.values >= 10 && r.rehearsal.secret_scan.places >= 3);
}

/// Exit 0, every one of the incident plan's 7 targets done.
fn assert_every_target_done(reh: &Rehearsal) {
    assert_eq!(reh.exit_code(), 0, "{}", reh.render());
    assert_eq!(
        reh.outcomes(),
        BTreeMap::from([("done", 7)]),
        "{}",
        reh.render()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn incident_plan_without_faults_rotates_everything_at_the_simulators() {
    let (_, plan) = incident_plan();
    let r = rehearse(plan, FaultProfile::None, with_builtin_npm()).await;
    let reh = &r.rehearsal;
    assert_every_target_done(reh);
    assert!(reh.not_rehearsable.is_empty());
    assert_eq!(
        reh.tally.throttled + reh.tally.server_errors + reh.tally.refused,
        0
    );
    assert!(reh.injected.faults.is_empty());
    // The grace periods (1h and 24h) ended the first invocation with targets waiting; the
    // rehearsal resumed after the compressed wait, as the next scheduled apply would.
    assert_eq!(
        reh.invocations[0].status, "waiting",
        "{:?}",
        reh.invocations
    );
    assert_eq!(reh.invocations.last().unwrap().status, "complete");
    assert!(
        reh.changes.iter().any(|c| c == "grace 3600s → 1s"),
        "{:?}",
        reh.changes
    );
    assert!(
        reh.changes
            .iter()
            .any(|c| c.contains("github_audit org:acme"))
    );
    // At the owner: one active key, held by the project and the context; the old (…WXYZ)
    // and the removable key are gone.
    let (active, project_ok, context_ok) = aws_at_owner(&r.world);
    assert_eq!(active.len(), 1, "{active:?}");
    assert!(!active[0].ends_with("WXYZ"));
    assert_eq!(r.world.aws.keys_of("ci-deployer").len(), 1);
    assert!(project_ok && context_ok);
    // The GitHub deploy key of acme/infra was replaced (one key, rekey's mark in its title).
    let keys = r.world.github.state().keys_of("acme/infra");
    assert_eq!(keys.len(), 1);
    assert!(keys[0].title.starts_with("circleci-infra-deploy"));
    assert_no_secret_in_outputs(&r);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn realistic_faults_throttle_and_delay_and_the_run_still_completes() {
    let (_, plan) = incident_plan();
    let r = rehearse(plan, FaultProfile::Realistic, with_builtin_npm()).await;
    let reh = &r.rehearsal;
    assert_every_target_done(reh);
    // One 429 each at CircleCI, GitHub and AWS (7 targets: a burst of 7/10 + 1 = 1 write).
    assert_eq!(reh.tally.throttled, 3, "{}", reh.render());
    assert_eq!(reh.tally.server_errors, 0);
    // IAM's eventual consistency (and GCP's, Azure's) refused new credentials at first.
    assert!(reh.tally.not_yet_propagated >= 1, "{}", reh.render());
    assert!(
        reh.injected
            .faults
            .iter()
            .any(|f| f.contains("eventual consistency"))
    );
    let (active, project_ok, context_ok) = aws_at_owner(&r.world);
    assert_eq!(active.len(), 1);
    assert!(project_ok && context_ok);
    assert_no_secret_in_outputs(&r);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn hostile_faults_fail_every_call_once_refuse_a_binding_and_crash_then_resume() {
    let (_, plan) = incident_plan();
    let r = rehearse(plan, FaultProfile::Hostile, with_builtin_npm()).await;
    let reh = &r.rehearsal;
    // The only context binding (aws-prod of aws-ci-deployer) refuses writes: that target is
    // incomplete and resumable (exit 4), everything else survives its failures.
    let refused = reh.injected.refused.as_ref().expect("a refusing binding");
    assert_eq!(refused.target, "aws-ci-deployer");
    assert_eq!(refused.place, "context aws-prod");
    assert_eq!(reh.exit_code(), 4, "{}", reh.render());
    assert_eq!(
        reh.outcomes(),
        BTreeMap::from([("done", 6), ("incomplete", 1)]),
        "{}",
        reh.render()
    );
    assert_eq!(outcome_of(reh, "aws-ci-deployer"), "incomplete");
    assert!(
        reh.tally.refused >= 1 && reh.tally.server_errors >= 10,
        "{:?}",
        reh.tally
    );
    // The crash was reached, the run was resumed from its journal.
    let crash = reh.crash.as_ref().expect("a crash point");
    assert!(crash.reached, "{crash:?}");
    assert_ne!(crash.target, refused.target);
    assert_eq!(reh.invocations[0].status, "crashed");
    assert_eq!(reh.invocations[1].what, "resume after the crash");
    // At the owner, the incomplete target keeps both keys valid (never roll back a written
    // binding, never disable the old key before every binding holds the new one): the old
    // key (…WXYZ) still works from the context, the new one from the projects.
    let (active, project_ok, context_ok) = aws_at_owner(&r.world);
    assert_eq!(active.len(), 2, "{active:?}");
    assert!(active.iter().any(|k| k.ends_with("WXYZ")));
    assert!(project_ok && context_ok);
    // No orphan anywhere else: the crashed target ended with one credential at its owner.
    assert_eq!(r.world.github.state().keys_of("acme/infra").len(), 1);
    assert_no_secret_in_outputs(&r);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_exec_target_without_a_stand_in_is_not_rehearsable_and_says_how_to_fix_it() {
    let (_, plan) = incident_plan();
    let r = rehearse(plan, FaultProfile::None, BTreeMap::new()).await;
    let reh = &r.rehearsal;
    assert_eq!(reh.not_rehearsable.len(), 1, "{:?}", reh.not_rehearsable);
    let n = &reh.not_rehearsable[0];
    assert_eq!(n.target, "npm-publish");
    assert!(
        n.reason.contains("--stand-in npm-publish=PROGRAM"),
        "{}",
        n.reason
    );
    // The rest went through; the rehearsal could not show the whole plan goes through.
    assert_eq!(reh.outcomes(), BTreeMap::from([("done", 6)]));
    assert_eq!(reh.exit_code(), 4);
    assert!(
        reh.render()
            .contains("Not rehearsable:\n  - npm-publish: exec:")
    );
    // Its variable was never written (the target never ran).
    let state = r.world.circleci.state();
    let var = &state.project_by_slug("gh/acme/web").unwrap().env_vars["NPM_TOKEN"];
    assert!(var.updated_at < chrono::Utc::now() - chrono::Duration::days(1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_plan_stale_against_its_own_observations_stops_at_inspect_changing_nothing() {
    // The same key observed ending in WXYZ in gh/acme/api and in ABCD in gh/acme/web: no world
    // can hold both, and a real run would refuse the plan as stale at inspect.
    let (text, _) = incident_plan();
    let stale = text.replacen(
        "{project: gh/acme/web, var: AWS_ACCESS_KEY_ID, masked: xxxxWXYZ}",
        "{project: gh/acme/web, var: AWS_ACCESS_KEY_ID, masked: xxxxABCD}",
        1,
    );
    assert_ne!(stale, text);
    let plan = rekey::plan::load::parse(PLAN, &stale).unwrap();
    let mut only = plan.clone();
    only.targets.retain(|t| t.id.as_str() == "aws-ci-deployer");
    let r = rehearse(only, FaultProfile::None, BTreeMap::new()).await;
    let reh = &r.rehearsal;
    assert_eq!(
        outcome_of(reh, "aws-ci-deployer"),
        "stale",
        "{}",
        reh.render()
    );
    assert_eq!(reh.exit_code(), 2);
    assert!(
        reh.render()
            .contains("now ends with WXYZ, the plan saw ABCD")
    );
    // Nothing changed at the owner or in CircleCI.
    assert!(r.world.aws.mutating_requests().is_empty());
    assert!(r.world.circleci.mutating_requests().is_empty());
}

/// A plan whose endpoints and an environment that point at a "real service" (a listener this
/// test owns), with garbage credentials in every variable rekey reads: the rehearsal needs
/// none of it, and the listener sees no connection.
#[test]
fn a_rehearsal_reads_no_credential_and_reaches_nothing_but_its_simulators() {
    use std::io::Read;
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let elsewhere = format!("http://{}", listener.local_addr().unwrap());
    let dir = tempfile::tempdir().unwrap();
    let text = std::fs::read_to_string(PLAN).unwrap().replace(
        "endpoints: {}",
        &format!(
            "endpoints: {{gcp_iam: {e}, gcp_token: {e}/token, azure_authority: {e}, azure_graph: {e}/v1.0}}",
            e = elsewhere
        ),
    );
    let plan = dir.path().join("plan.yaml");
    std::fs::write(&plan, text).unwrap();
    let garbage = "garbage-credential-0123456789";
    let child = std::process::Command::new(env!("CARGO_BIN_EXE_rekey"))
        .args([
            "apply",
            plan.to_str().unwrap(),
            "--rehearse",
            "--faults",
            "realistic",
        ])
        .args(["--stand-in", "npm-publish=builtin", "--output", "json"])
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("HOME", dir.path())
        .env("TMPDIR", dir.path())
        .env("AWS_ACCESS_KEY_ID", "AKIAGARBAGEGARBAGE00")
        .env("AWS_SECRET_ACCESS_KEY", garbage)
        .env("AWS_ENDPOINT_URL", &elsewhere)
        .env("CIRCLECI_HOST", &elsewhere)
        .env("CIRCLECI_TOKEN", garbage)
        .env("GITHUB_API_URL", &elsewhere)
        .env("GITHUB_TOKEN", garbage)
        .env(
            "GOOGLE_APPLICATION_CREDENTIALS",
            dir.path().join("missing.json"),
        )
        .env("AZURE_CLIENT_SECRET", garbage)
        .env("REKEY_STASH_KEY", "not base64!")
        .env("HTTPS_PROXY", &elsewhere)
        .env("HTTP_PROXY", &elsewhere)
        .env("NO_PROXY", "127.0.0.1,localhost")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id();
    let out = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stdout}\n{stderr}");
    let doc: serde_json::Value = stdout
        .lines()
        .rev()
        .find(|l| l.starts_with('{') && l.contains("\"rehearsal\""))
        .and_then(|l| serde_json::from_str(l).ok())
        .or_else(|| {
            // print_json prints one pretty document: from its first line to the end.
            let start = stdout.find("{\n")?;
            serde_json::from_str(&stdout[start..]).ok()
        })
        .unwrap_or_else(|| panic!("no JSON document: {stdout}"));
    assert_eq!(doc["exit_code"], 0);
    assert_eq!(
        doc["rehearsal"]["report"]["targets"]
            .as_array()
            .unwrap()
            .len(),
        7
    );
    assert!(!stdout.contains(garbage) && !stderr.contains(garbage));
    // Nothing connected to the "real service".
    let mut seen = 0;
    while let Ok((mut s, _)) = listener.accept() {
        let mut buf = [0u8; 256];
        let _ = s.read(&mut buf);
        seen += 1;
    }
    assert_eq!(seen, 0, "the rehearsal connected outside its simulators");
    // The throwaway state and the stand-ins' directories are gone, wherever they were made.
    let shm = std::path::Path::new("/dev/shm");
    for place in [dir.path(), shm] {
        let left: Vec<_> = std::fs::read_dir(place)
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n.starts_with("rekey-") && n.contains(&format!("-{pid}-")))
            .collect();
        assert!(left.is_empty(), "{left:?} left in {}", place.display());
    }
}
