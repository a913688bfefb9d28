//! Hunts inside a rotation: which hunts a target runs before and after its rotation, over which
//! audit logs, narrowed to which credentials and which time window; what the findings decide
//! (the plan's `on_findings` policy is applied by the state machine in `target.rs`); and where
//! the findings are kept (`<state dir>/hunts/<run>/<target>.<phase>.json`) for the run report
//! and `rekey hunt --run`.
//!
//! The work itself is `crate::hunt`: the same sources, rules and checks as `rekey hunt`.

use crate::hunt::Severity;
use crate::hunt::engine::{HuntOptions, Rotation, names_credential};
use crate::hunt::findings::HuntReport;
use crate::hunt::pack::RuleSet;
use crate::hunt::remote::{self, Credentials, Endpoints, Remote, Window};
use crate::hunt::source::Source;
use crate::plan::{HuntSources, Located, Plan, ProviderKind, Target};
use chrono::{DateTime, Utc};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Before or after the rotation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum When {
    Pre,
    Post,
}

impl When {
    pub fn as_str(self) -> &'static str {
        match self {
            When::Pre => "pre",
            When::Post => "post",
        }
    }
}

/// What one phase's hunts found for a target, and what they could not look at.
#[derive(Debug, Default)]
pub struct PhaseResult {
    pub report: HuntReport,
    /// Hunts that ran.
    pub ran: Vec<String>,
    /// Hunts skipped, one entry per reason: `a, b (no hunts.sources.cloudtrail)`.
    pub skipped: Vec<String>,
    /// Sources that could not be read (a missing export, an API that failed).
    pub unread: Vec<String>,
    /// What the reader must know: the window ends before the newest deliveries, …
    pub notes: Vec<String>,
}

impl PhaseResult {
    /// Findings at or above `threshold`.
    pub fn serious(&self, threshold: Severity) -> usize {
        self.report
            .findings
            .iter()
            .filter(|f| f.severity >= threshold)
            .count()
    }

    /// One line for the journal and the terminal: counts, highest severity, skips, notes.
    pub fn summary(&self) -> String {
        let mut parts = vec![format!(
            "{} finding(s){}",
            self.report.findings.len(),
            self.report
                .highest()
                .map(|s| format!(", highest {s}"))
                .unwrap_or_default()
        )];
        if !self.ran.is_empty() {
            parts.push(format!("ran {}", self.ran.join(", ")));
        }
        if !self.skipped.is_empty() {
            parts.push(format!("skipped {}", self.skipped.join("; ")));
        }
        if !self.unread.is_empty() {
            parts.push(format!("could not read {}", self.unread.join("; ")));
        }
        parts.extend(self.notes.iter().cloned());
        parts.join("; ")
    }
}

/// What a phase found for a target, as the run report shows it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct HuntRecord {
    pub target: String,
    pub phase: &'static str,
    pub findings: usize,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub highest: Option<Severity>,
    pub summary: String,
    /// The findings in full (JSON).
    pub file: String,
    /// Rule, severity, count.
    pub per_rule: Vec<(String, Severity, usize)>,
}

impl HuntRecord {
    pub fn of(target: &str, when: When, result: &PhaseResult, file: &Path) -> HuntRecord {
        HuntRecord {
            target: target.to_string(),
            phase: when.as_str(),
            findings: result.report.findings.len(),
            highest: result.report.highest(),
            summary: result.summary(),
            file: file.display().to_string(),
            per_rule: result.report.per_rule(),
        }
    }
}

/// The credentials a post-rotation hunt looks for, and when things happened.
#[derive(Debug, Clone, Default)]
pub struct RotationFacts {
    pub old_id: Option<String>,
    pub new_id: Option<String>,
    /// When the new credential was minted: the post-hunt's window starts here.
    pub minted_at: Option<DateTime<Utc>>,
    /// When the old credential was disabled (`None`: the owner cannot disable it).
    pub deactivated_at: Option<DateTime<Utc>>,
}

/// The hunt names of `phase` for `target`: its own policy's, else the plan's.
pub fn names<'p>(plan: &'p Plan, target: &'p Target, when: When) -> &'p [Located<String>] {
    let selection = target.policy.hunts.as_ref().unwrap_or(&plan.hunts);
    match when {
        When::Pre => &selection.pre,
        When::Post => &selection.post,
    }
}

/// Where a target's records of the credential itself are (the provider's own audit log).
fn provider_source(kind: ProviderKind) -> Option<Source> {
    match kind {
        ProviderKind::AwsIam => Some(Source::Cloudtrail),
        ProviderKind::GcpSaKey => Some(Source::GcpLogging),
        ProviderKind::AzureAppSecret => Some(Source::AzureSignins),
        ProviderKind::GithubDeployKey
        | ProviderKind::GithubToken
        | ProviderKind::CircleciCheckoutKey => Some(Source::GithubAudit),
        ProviderKind::Exec | ProviderKind::CircleciSshKey => None,
    }
}

/// The source a catalogue hunt reads; `None` for the checks that read whatever source holds
/// the target's credential.
fn hunt_source(name: &str) -> Option<Source> {
    if name.starts_with("azure-activity") {
        return Some(Source::AzureActivity);
    }
    let prefix = name.split('-').next().unwrap_or("");
    match prefix {
        "circleci" => Some(Source::CircleciAudit),
        "aws" => Some(Source::Cloudtrail),
        "github" => Some(Source::GithubAudit),
        "gcp" => Some(Source::GcpLogging),
        "azure" => Some(Source::AzureSignins),
        _ => None,
    }
}

/// Whether `source` logs the use of credentials whose own log is `own` (the Activity Log
/// records what an Azure app's secret did; sign-ins record the sign-in itself).
fn records_credentials_of(source: Source, own: Option<Source>) -> bool {
    match own {
        Some(Source::AzureSignins) => {
            matches!(source, Source::AzureSignins | Source::AzureActivity)
        }
        Some(o) => source == o,
        None => false,
    }
}

/// Whether a source's records name the credential itself (an access key id, a key name, a
/// credential key id), so the hunt can be narrowed to it. CircleCI's audit log names actors and
/// GitHub's names tokens by hash or actor: their hunts look at every record.
fn attributes_keys(source: Source) -> bool {
    matches!(
        source,
        Source::Cloudtrail | Source::GcpLogging | Source::AzureSignins
    )
}

fn entries(sources: &HuntSources, source: Source) -> &[Located<String>] {
    match source {
        Source::Cloudtrail => &sources.cloudtrail,
        Source::CircleciAudit => &sources.circleci_audit,
        Source::GithubAudit => &sources.github_audit,
        Source::GcpLogging => &sources.gcp_logging,
        Source::AzureSignins => &sources.azure_signins,
        Source::AzureActivity => &sources.azure_activity,
    }
}

/// The plan's (or the target's) delivery delay of `source`, else the source's typical delay.
pub fn delivery_delay(plan: &Plan, source: Source) -> chrono::Duration {
    let key = source.name().replace('-', "_");
    plan.hunts
        .delivery_delay
        .get(&key)
        .or_else(|| plan.hunts.delivery_delay.get(source.name()))
        .map(|d| d.value.to_chrono())
        .unwrap_or_else(|| source.typical_delivery_delay())
}

/// An entry of `hunts.sources` resolved for one target: files, a remote, or nothing (with why).
enum Input {
    Path(PathBuf),
    Remote(Remote),
    Unusable(String),
}

fn resolve(entry: &str, source: Source, target: &Target, keys: &[String]) -> Input {
    if let Some(r) = Remote::parse_s3(entry) {
        return match (source, r) {
            (Source::Cloudtrail, Ok(r)) => Input::Remote(r),
            (_, Ok(_)) => Input::Unusable(format!("{entry}: S3 holds only CloudTrail log files")),
            (_, Err(e)) => Input::Unusable(e),
        };
    }
    if let Some(t) = crate::hunt::athena::Table::parse(entry) {
        return match (source, t) {
            (Source::Cloudtrail, Ok(t)) => Input::Remote(Remote::Athena(t)),
            (_, Ok(_)) => Input::Unusable(format!("{entry}: Athena's table holds only CloudTrail")),
            (_, Err(e)) => Input::Unusable(e),
        };
    }
    if let Some(subscription) = entry.strip_prefix("subscription:") {
        return match source {
            Source::AzureActivity => Input::Remote(Remote::AzureActivity {
                subscription: subscription.to_string(),
            }),
            _ => Input::Unusable(format!(
                "{entry}: subscription: names an Azure subscription (azure_activity)"
            )),
        };
    }
    if let Some(org) = entry.strip_prefix("org:") {
        return match source {
            Source::GithubAudit => Input::Remote(Remote::GithubOrg {
                org: org.to_string(),
                phrase: None,
            }),
            _ => Input::Unusable(format!("{entry}: org: names a GitHub organization")),
        };
    }
    if entry != "api" {
        return Input::Path(PathBuf::from(entry));
    }
    let principal = &target.principal;
    let value = |f: Option<&Located<String>>| f.map(|v| v.value.clone());
    let remote = match source {
        Source::Cloudtrail if target.provider.value == ProviderKind::AwsIam => {
            Some(Remote::LookupEvents {
                access_key_ids: keys.to_vec(),
            })
        }
        Source::GcpLogging => value(principal.service_account()).and_then(|email| {
            // name@PROJECT.iam.gserviceaccount.com
            let project = email.split('@').nth(1)?.split('.').next()?.to_string();
            Some(Remote::GcpProject {
                project,
                principal: Some(email),
            })
        }),
        // principal.app_id is the application's OBJECT id, while a sign-in's appId is its
        // client id: filtering Graph by it would find nothing and look clean. All
        // service-principal sign-ins are asked instead; the hunt narrows them to the secret's
        // key id (servicePrincipalCredentialKeyId).
        Source::AzureSignins => {
            value(principal.app_id()).map(|_| Remote::AzureSignins { app_id: None })
        }
        Source::GithubAudit => value(principal.repository())
            .and_then(|r| r.split('/').next().map(str::to_string))
            .or_else(|| {
                value(principal.project()).and_then(|p| p.split('/').nth(1).map(str::to_string))
            })
            .map(|org| Remote::GithubOrg { org, phrase: None }),
        _ => None,
    };
    match remote {
        Some(r) => Input::Remote(r),
        None => Input::Unusable(format!(
            "`api` for {source} needs a target whose principal names where to look"
        )),
    }
}

/// Which of a phase's hunts can run for a target, over which sources.
struct Selection<'p> {
    sources: &'p HuntSources,
    wanted: Vec<Source>,
    ran: Vec<String>,
    skipped: Vec<String>,
}

fn select<'p>(plan: &'p Plan, target: &'p Target, names: &[String]) -> Selection<'p> {
    let selection = target.policy.hunts.as_ref().unwrap_or(&plan.hunts);
    let sources = if selection.sources.is_empty() {
        &plan.hunts.sources
    } else {
        &selection.sources
    };
    let own = provider_source(target.provider.value);
    let mut sel = Selection {
        sources,
        wanted: Vec::new(),
        ran: Vec::new(),
        skipped: Vec::new(),
    };
    let mut skipped: Vec<(&str, String)> = Vec::new();
    for name in names {
        let source = hunt_source(name).or(own);
        // CircleCI's audit log concerns every target; a provider's own log only its targets
        // (CloudTrail says nothing about a GitHub token): elsewhere the hunt does not apply.
        if let (Some(s), true) = (source, hunt_source(name).is_some())
            && s != Source::CircleciAudit
            && !records_credentials_of(s, own)
        {
            continue;
        }
        let why = match source {
            Some(s) if !entries(sources, s).is_empty() => {
                if !sel.wanted.contains(&s) {
                    sel.wanted.push(s);
                }
                sel.ran.push(name.clone());
                continue;
            }
            Some(s) => format!("no hunts.sources.{}", s.name().replace('-', "_")),
            None => format!("{} keeps no audit log rekey reads", target.provider.value),
        };
        skipped.push((name.as_str(), why));
    }
    sel.skipped = group_by_reason(&skipped);
    sel
}

/// `a, b (why); c (other)`: hunts skipped for one reason said once (a dry run prints this for
/// each of 190,000 targets), reasons in the order they first came.
fn group_by_reason(skipped: &[(&str, String)]) -> Vec<String> {
    let mut reasons: Vec<&str> = Vec::new();
    for (_, why) in skipped {
        if !reasons.contains(&why.as_str()) {
            reasons.push(why);
        }
    }
    reasons
        .into_iter()
        .map(|why| {
            let names: Vec<&str> = skipped
                .iter()
                .filter(|(_, w)| w == why)
                .map(|(n, _)| *n)
                .collect();
            format!("{} ({why})", names.join(", "))
        })
        .collect()
}

/// What a phase would do, for the dry run: the hunts and their sources, and the ones skipped.
pub fn describe(plan: &Plan, target: &Target, when: When) -> Option<String> {
    let names: Vec<String> = names(plan, target, when)
        .iter()
        .map(|n| n.value.clone())
        .collect();
    if names.is_empty() {
        return None;
    }
    let sel = select(plan, target, &names);
    let mut parts = Vec::new();
    if !sel.ran.is_empty() {
        let over: Vec<String> = sel
            .wanted
            .iter()
            .flat_map(|s| {
                entries(sel.sources, *s)
                    .iter()
                    .map(move |e| format!("{s} {}", e.value))
            })
            .collect();
        parts.push(format!(
            "hunt {} over {}",
            sel.ran.join(", "),
            over.join(", ")
        ));
    }
    if !sel.skipped.is_empty() {
        parts.push(format!("skip {}", sel.skipped.join("; ")));
    }
    Some(parts.join("; "))
}

/// Everything a phase needs from outside the target.
pub struct HuntEnv<'a> {
    pub plan: &'a Plan,
    pub rules: Arc<RuleSet>,
    pub now: DateTime<Utc>,
    /// CloudTrail's AWS configuration; `None`: the default chain.
    pub aws: Option<aws_config::SdkConfig>,
    /// Relative source paths are relative to this directory (the plan file's).
    pub plan_dir: PathBuf,
    /// Reports of logs read whole before rotations, shared by a run's targets.
    pub shared: Option<&'a SharedReads>,
}

/// Reports of the logs every target reads whole (CircleCI's, GitHub's), by what was read.
pub type SharedReads = tokio::sync::Mutex<std::collections::HashMap<String, HuntReport>>;

/// The directory relative paths of a plan file are read from (`.` for a bare file name).
pub fn plan_dir(plan_file: &str) -> PathBuf {
    Path::new(plan_file)
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."))
}

/// Runs `when`'s hunts for `target`. With no hunts named, returns an empty result.
pub async fn run_phase(
    env: &HuntEnv<'_>,
    target: &Target,
    when: When,
    facts: &RotationFacts,
) -> PhaseResult {
    let mut result = PhaseResult::default();
    let names: Vec<String> = names(env.plan, target, when)
        .iter()
        .map(|n| n.value.clone())
        .collect();
    if names.is_empty() {
        return result;
    }
    let sel = select(env.plan, target, &names);
    let (sources_cfg, wanted) = (sel.sources, sel.wanted);
    result.ran = sel.ran;
    result.skipped = sel.skipped;
    // The credentials to narrow to: before, the one in use; after, both.
    let mut keys: Vec<String> = facts.old_id.iter().cloned().collect();
    if when == When::Post {
        keys.extend(facts.new_id.iter().cloned());
    }
    if wanted.is_empty() {
        return result;
    }
    let since = match when {
        When::Pre => env.plan.incident_since(),
        When::Post => facts.minted_at.unwrap_or(env.plan.incident_since()),
    };
    // After the rotation, stop where every source's deliveries are complete.
    let until = match when {
        When::Pre => None,
        When::Post => Some(delivered_until(
            env,
            &wanted,
            facts,
            since,
            &mut result.notes,
        )),
    };
    let rotation = (when == When::Post).then(|| Rotation {
        old: facts.old_id.iter().cloned().collect(),
        new: facts.new_id.iter().cloned().collect(),
        deactivated_at: facts.deactivated_at,
    });
    // Two runs of the engine: sources that name the credential are narrowed to it, the others
    // (CircleCI, GitHub) are read whole.
    for narrowed in [true, false] {
        let mut opts = HuntOptions {
            since,
            until,
            rotation: rotation.clone(),
            expected_actors: Vec::new(),
            ..HuntOptions::default()
        };
        if narrowed {
            if keys.is_empty() {
                continue;
            }
            opts.credentials = keys.clone();
        }
        for c in &env.plan.allow_cidrs {
            if let Ok(net) = crate::hunt::engine::parse_cidr(&c.value) {
                opts.allow.push(net);
            }
        }
        let mut remotes = Vec::new();
        for source in wanted.iter().filter(|s| attributes_keys(**s) == narrowed) {
            for entry in entries(sources_cfg, *source) {
                match resolve(&entry.value, *source, target, &keys) {
                    Input::Path(p) if env.plan_dir.join(&p).exists() => {
                        opts.inputs.push((*source, env.plan_dir.join(p)))
                    }
                    Input::Path(p) => result.unread.push(format!(
                        "{} (no such file or directory)",
                        env.plan_dir.join(p).display()
                    )),
                    Input::Remote(r) => remotes.push(r),
                    Input::Unusable(why) => result.unread.push(why),
                }
            }
        }
        if opts.inputs.is_empty() && remotes.is_empty() {
            continue;
        }
        let window = Window {
            from: since - chrono::Duration::days(30),
            until: until.unwrap_or(env.now),
        };
        // rekey's own credentials for the APIs, from the standard places; missing ones are
        // reported by the fetcher that needs them.
        let mut credentials = match Credentials::from_env(&remotes) {
            Ok(c) => c,
            Err(e) => {
                result.unread.push(e);
                Credentials::default()
            }
        };
        if env.aws.is_some() {
            credentials.aws = env.aws.clone();
        }
        let ctx = Arc::new(remote::Context {
            endpoints: Endpoints::default().with_plan(&env.plan.endpoints),
            credentials,
            ..Default::default()
        });
        // The logs read whole (CircleCI's, GitHub's) give every target the same report before
        // a rotation: read them once per run.
        let shared = (!narrowed && when == When::Pre)
            .then_some(env.shared)
            .flatten();
        let report = read_once(shared, env, opts, remotes, window, ctx).await;
        result.unread.extend(
            report
                .incomplete
                .iter()
                .map(|p| format!("{}: {}", p.location, p.message)),
        );
        merge(&mut result.report, report);
    }
    // Only what the plan asked for: a hunt's rules and checks, not every rule of the pack.
    result.report.findings.retain(|f| {
        f.hunt
            .as_deref()
            .is_some_and(|h| names.iter().any(|n| n == h))
    });
    // The allow-list and old-credential checks only concern this rotation's credentials.
    result.report.findings.retain(|f| match f.hunt.as_deref() {
        Some("old-credential-used") => f
            .credential
            .as_deref()
            .is_some_and(|c| facts.old_id.iter().any(|o| names_credential(c, o))),
        _ => true,
    });
    result.report.normalize();
    result.report.since = Some(since);
    result
}

/// Where a post-rotation hunt stops: now less the longest delivery delay of its sources, with
/// a note when that cuts the window short of the deactivation.
fn delivered_until(
    env: &HuntEnv<'_>,
    wanted: &[Source],
    facts: &RotationFacts,
    since: DateTime<Utc>,
    notes: &mut Vec<String>,
) -> DateTime<Utc> {
    let delay = wanted
        .iter()
        .map(|s| delivery_delay(env.plan, *s))
        .max()
        .unwrap_or_default();
    let until = env.now - delay;
    let from = facts.deactivated_at.unwrap_or(since);
    if delay > chrono::Duration::zero() && env.now - from < delay {
        notes.push(format!(
            "audit logs arrive up to {} late, longer than the time since the old credential was disabled: the hunt covers only up to {}; run `rekey hunt --run RUN_ID` after {} for the full window",
            crate::plan::PlanDuration(delay.num_seconds().max(0) as u64),
            until.to_rfc3339(),
            (from + delay).to_rfc3339()
        ));
    }
    until
}

/// Runs one read of the hunt engine; with `shared`, a read with the same inputs made earlier
/// in this run is reused (held while reading, so that targets running in parallel wait for
/// one read).
async fn read_once(
    shared: Option<&SharedReads>,
    env: &HuntEnv<'_>,
    opts: HuntOptions,
    remotes: Vec<Remote>,
    window: Window,
    ctx: Arc<remote::Context>,
) -> HuntReport {
    let Some(cache) = shared else {
        return remote::hunt(env.rules.clone(), opts, remotes, window, ctx).await;
    };
    let key = format!("{:?}|{remotes:?}|{}", opts.inputs, opts.since);
    let mut reads = cache.lock().await;
    if let Some(r) = reads.get(&key) {
        return r.clone();
    }
    let r = remote::hunt(env.rules.clone(), opts, remotes, window, ctx).await;
    reads.insert(key, r.clone());
    r
}

fn merge(into: &mut HuntReport, from: HuntReport) {
    into.findings.extend(from.findings);
    into.problems.extend(from.problems);
    into.notes.extend(from.notes);
    into.rule_errors = from.rule_errors;
    let (a, b) = (&mut into.stats, from.stats);
    a.files += b.files;
    a.pages += b.pages;
    a.bytes += b.bytes;
    a.records += b.records;
    a.in_window += b.in_window;
    a.out_of_scope += b.out_of_scope;
    a.after_until += b.after_until;
    a.duplicates += b.duplicates;
    into.incomplete.extend(from.incomplete);
    a.rules = b.rules;
    a.elapsed_ms += b.elapsed_ms;
}

/// Where a phase's findings are kept.
/// (On this machine: beside an S3 state, in `.rekey/`.)
pub fn findings_path(state_dir: &Path, run: &str, target: &str, when: When) -> PathBuf {
    super::state::StateLocation::local_dir(state_dir)
        .join("hunts")
        .join(run)
        .join(format!("{target}.{}.json", when.as_str()))
}

/// Keeps a phase's findings as JSON (no secrets: findings hold ids, addresses, actions).
pub fn keep(path: &Path, result: &PhaseResult) -> std::io::Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    // The report with what the phase itself noted: skipped hunts, unread sources, the window.
    let mut report = result.report.clone();
    report.notes.extend(result.notes.iter().cloned());
    report
        .notes
        .extend(result.skipped.iter().map(|s| format!("skipped {s}")));
    report
        .notes
        .extend(result.unread.iter().map(|s| format!("could not read {s}")));
    let mut buf = Vec::new();
    report.write_json(&mut buf).map_err(std::io::Error::other)?;
    crate::fsio::write_atomically(path, &buf)
}

/// `rekey hunt --run RUN_ID`: the post-rotation hunts of a run again, now that later audit
/// records have arrived. Read-only: the journal is not changed; the caller prints the findings.
pub async fn rerun_post(
    state_dir: &Path,
    run_id: &str,
    rules: Arc<RuleSet>,
) -> Result<Vec<(String, PhaseResult)>, super::EngineError> {
    use super::EngineError;
    use super::journal::{Journal, RunId};
    use super::steps::{Progress, StepEvent};
    let journal = Journal::open_read_only(state_dir)?
        .ok_or_else(|| EngineError::NoSuchRun(run_id.to_string()))?;
    let run = RunId::parse(run_id)?;
    let record = journal
        .run(&run)?
        .ok_or_else(|| EngineError::NoSuchRun(run_id.to_string()))?;
    let plan = crate::plan::load::parse(&record.plan_file, &record.plan_text)
        .map_err(|d| EngineError::Internal(format!("the run's plan no longer parses: {d}")))?;
    let mut out = Vec::new();
    for target in &plan.targets {
        let id = target.id.as_str();
        let progress = Progress::fold(&StepEvent::from_journal(journal.events(&run, Some(id))?));
        let mut result = PhaseResult::default();
        if progress.new_id.is_none() {
            result
                .notes
                .push("not rotated by this run: nothing to hunt after".into());
            out.push((id.to_string(), result));
            continue;
        }
        let facts = RotationFacts {
            old_id: progress.old_id.clone(),
            new_id: progress.new_id.clone(),
            minted_at: progress.minted_at,
            deactivated_at: progress.deactivated_at,
        };
        let env = HuntEnv {
            plan: &plan,
            rules: rules.clone(),
            now: Utc::now(),
            aws: None,
            plan_dir: plan_dir(&record.plan_file),
            shared: None,
        };
        result = run_phase(&env, target, When::Post, &facts).await;
        out.push((id.to_string(), result));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn azure_signins_by_api_are_not_filtered_by_the_object_id() {
        let text = include_str!("../../plans/circleci-incident.yaml");
        let plan = crate::plan::load::parse("circleci-incident.yaml", text)
            .unwrap_or_else(|d| panic!("{d}"));
        let target = plan
            .targets
            .iter()
            .find(|t| t.provider.value == ProviderKind::AzureAppSecret)
            .unwrap_or_else(|| panic!("the example plan has an Azure target"));
        let keys = vec!["aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee".to_owned()];
        assert!(matches!(
            resolve("api", Source::AzureSignins, target, &keys),
            Input::Remote(Remote::AzureSignins { app_id: None })
        ));
        assert!(matches!(
            resolve(
                "subscription:00000000-0000-0000-0000-0000000000aa",
                Source::AzureActivity,
                target,
                &keys
            ),
            Input::Remote(Remote::AzureActivity { .. })
        ));
    }

    #[test]
    fn hunts_skipped_for_one_reason_are_named_together_in_first_seen_order() {
        let plan = crate::plan::load::parse(
            "p.yaml",
            "apiVersion: rekey/v1
kind: RotationPlan
metadata: {name: t}
hunts:
  pre: [circleci-persistence, aws-recon, circleci-logins, aws-denied]
targets:
  - id: one
    provider: aws-iam
    principal: {user: a}
",
        )
        .unwrap_or_else(|d| panic!("{d}"));
        assert_eq!(
            describe(&plan, &plan.targets[0], When::Pre).as_deref(),
            Some(
                "skip circleci-persistence, circleci-logins (no hunts.sources.circleci_audit); \
                 aws-recon, aws-denied (no hunts.sources.cloudtrail)"
            )
        );
    }
}

#[cfg(test)]
mod shared_reads {
    use super::*;

    const PLAN: &str = "apiVersion: rekey/v1
kind: RotationPlan
metadata: {name: t}
hunts:
  pre: [circleci-persistence]
  sources: {circleci_audit: [audit.jsonl]}
targets:
  - id: one
    provider: aws-iam
    principal: {user: a}
  - id: two
    provider: aws-iam
    principal: {user: b}
";

    /// CircleCI's audit log is the same for every target: read once per run, before the
    /// rotations. The second target gets the first one's report even though the file was
    /// emptied in between.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn logs_read_whole_are_read_once_per_run() {
        let dir = tempfile::tempdir().unwrap();
        let audit = dir.path().join("audit.jsonl");
        let fixture = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/fixtures/hunt/circleci-audit.jsonl"
        );
        std::fs::copy(fixture, &audit).unwrap();
        let plan = crate::plan::load::parse("plan.yaml", PLAN).unwrap();
        let shared = SharedReads::default();
        let env = HuntEnv {
            plan: &plan,
            rules: Arc::new(RuleSet::builtin()),
            now: Utc::now(),
            aws: None,
            plan_dir: dir.path().to_path_buf(),
            shared: Some(&shared),
        };
        let facts = RotationFacts::default();
        let first = run_phase(&env, &plan.targets[0], When::Pre, &facts).await;
        assert!(!first.report.findings.is_empty(), "{}", first.summary());
        assert!(first.unread.is_empty(), "{}", first.summary());
        std::fs::write(&audit, b"").unwrap();
        let second = run_phase(&env, &plan.targets[1], When::Pre, &facts).await;
        assert_eq!(
            second.report.findings.len(),
            first.report.findings.len(),
            "read from the run's cache: {}",
            second.summary()
        );

        // Without the cache, the file is read again: empty now.
        let alone = HuntEnv {
            shared: None,
            ..env
        };
        let third = run_phase(&alone, &plan.targets[1], When::Pre, &facts).await;
        assert!(third.report.findings.is_empty(), "{}", third.summary());
    }
}
