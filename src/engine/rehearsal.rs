//! Rehearsals (`rekey apply PLAN --rehearse`): the plan applied by the same engine to a
//! simulated copy of its own world ([`crate::sandbox::world::PlanWorld`]), before anything
//! real is touched, with the faults of a profile ([`crate::sandbox::profiles`]).
//!
//! What differs from a real run, and only this: the world (loopback simulators seeded from the
//! plan, every credential made up, rekey's "own" credentials the simulators' admin ones: the
//! operator's are never read); the state (a throwaway directory, removed at the end); time
//! (grace periods divided by 3600 and capped at 2 s, verification and canary polls ten times
//! faster, hunt delivery delays zero); what cannot run against a simulator (exec commands
//! replaced by the operator's stand-ins, hunt sources other than CloudTrail's API dropped: they
//! read real logs with rekey's real credentials). Each difference is listed in the result.
//!
//! A grace period ends an invocation with targets waiting, as in a real run; the rehearsal
//! then resumes the run when the (compressed) period is over, as the next scheduled apply
//! would. The hostile profile also crashes one target's worker at a step drawn with the seed
//! (right after that step's journal record, as `REKEY_CRASH_AT` does in a separate process)
//! and resumes the run. At the end, every file of the state directory, the report and every
//! progress event are searched for every secret the world knows, in every spelling
//! ([`crate::redact::spellings`]).

use super::EngineError;
use super::events::{Event, EventSink, Status};
use super::run::{ApplyOptions, Environment, RunReport};
use super::stash::StashKey;
use super::steps::Step;
use super::target::Outcome;
use crate::plan::{HuntSelection, Located, Plan, PlanDuration, ProviderKind};
use crate::sandbox::profiles::{FaultProfile, FaultTally, Injection};
use crate::sandbox::world::{NotRehearsable, PlanWorld, StandIn, scratch_base};
use crate::sandbox::{Rng, fake};
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Grace periods in a rehearsal: an hour becomes a second, none lasts over this.
const MAX_GRACE_SECS: u64 = 2;

/// Invocations at most (the first, a resume after a crash, resumes after grace periods).
const MAX_INVOCATIONS: usize = 8;

/// How to rehearse.
#[derive(Debug, Clone, Default)]
pub struct RehearsalOptions {
    pub faults: FaultProfile,
    /// Draws the hostile profile's refusing binding and crash point.
    pub seed: u64,
    /// Who plays each exec target's owner.
    pub stand_ins: BTreeMap<String, StandIn>,
    pub parallelism: usize,
    pub ignore_max_age: bool,
    /// Only these targets (all when empty).
    pub only: Vec<String>,
}

/// Where the hostile profile crashed the run.
#[derive(Debug, Clone, serde::Serialize)]
pub struct CrashPoint {
    pub target: String,
    pub step: String,
    /// Whether the run reached it (a target that stops earlier never does).
    pub reached: bool,
}

/// One invocation of the engine in the rehearsal.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Invocation {
    /// `apply`, `resume after the crash`, `resume after the grace period`.
    pub what: String,
    /// The run's status after it (`crashed` when the crash stopped it).
    pub status: String,
    /// Its targets per outcome (what `rekey apply` would print at that point).
    pub outcomes: BTreeMap<&'static str, usize>,
}

/// The secret scan of a rehearsal's outputs.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct SecretScan {
    /// Secret values searched for (each in every spelling).
    pub values: usize,
    /// Files, reports and events searched.
    pub places: usize,
    /// Where a secret was found (never the secret).
    pub found: Vec<String>,
}

/// What a rehearsal did and found.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Rehearsal {
    pub plan: String,
    pub faults: FaultProfile,
    pub seed: u64,
    /// The last invocation's report: what the run reached in the end.
    pub report: Option<RunReport>,
    pub invocations: Vec<Invocation>,
    /// Targets the world could not hold, with the reason.
    pub not_rehearsable: Vec<NotRehearsable>,
    /// How the rehearsed plan differs from the plan (time compressed, sources dropped, …).
    pub changes: Vec<String>,
    /// What the world made up or simplified.
    pub notes: Vec<String>,
    pub injected: Injection,
    /// What the simulators answered.
    pub tally: FaultTally,
    pub crash: Option<CrashPoint>,
    pub secret_scan: SecretScan,
}

impl Rehearsal {
    /// The exit code a real apply would have: the run's; a leaked secret is a failure (1);
    /// a run that went through but left targets unrehearsed is incomplete (4).
    pub fn exit_code(&self) -> u8 {
        if !self.secret_scan.found.is_empty() {
            return 1;
        }
        let code = self.report.as_ref().map(RunReport::exit_code).unwrap_or(0);
        if code == 0 && !self.not_rehearsable.is_empty() {
            4
        } else {
            code
        }
    }

    /// Targets per outcome of the final report (`done`, `incomplete`, …).
    pub fn outcomes(&self) -> BTreeMap<&'static str, usize> {
        self.report.as_ref().map(count_outcomes).unwrap_or_default()
    }

    /// The human rendering: the report a real run would print, then what the rehearsal did.
    pub fn render(&self) -> String {
        let mut out = format!(
            "Rehearsal of plan {} (faults: {}, seed {}): simulators on 127.0.0.1 only; nothing real was touched.\n",
            self.plan, self.faults, self.seed
        );
        if let Some(report) = &self.report {
            out.push_str(&format!("\nRun {} ({:?})\n", report.run, report.status));
            out.push_str(&crate::report::run::summary_table(report));
        }
        let outcomes: Vec<String> = self
            .outcomes()
            .iter()
            .map(|(k, v)| format!("{v} {k}"))
            .collect();
        out.push_str(&format!(
            "\nOutcome: {}; exit code {} (as a real apply)\n",
            if outcomes.is_empty() {
                "no target rehearsed".to_string()
            } else {
                outcomes.join(", ")
            },
            self.exit_code()
        ));
        let section = |out: &mut String, title: &str, lines: &[String]| {
            if !lines.is_empty() {
                out.push_str(&format!("\n{title}:\n"));
                for l in lines {
                    out.push_str(&format!("  - {l}\n"));
                }
            }
        };
        let not: Vec<String> = self
            .not_rehearsable
            .iter()
            .map(|n| format!("{}: {}", n.target, n.reason))
            .collect();
        section(&mut out, "Not rehearsable", &not);
        let invocations: Vec<String> = self
            .invocations
            .iter()
            .map(|i| {
                let counts: Vec<String> =
                    i.outcomes.iter().map(|(k, v)| format!("{v} {k}")).collect();
                if counts.is_empty() {
                    format!("{} → {}", i.what, i.status)
                } else {
                    format!("{} → {} ({})", i.what, i.status, counts.join(", "))
                }
            })
            .collect();
        section(&mut out, "Invocations", &invocations);
        section(&mut out, "Faults injected", &self.injected.faults);
        if let Some(c) = &self.crash {
            out.push_str(&format!(
                "\nCrash: target {} after its {} step {} (seed {}), then resumed\n",
                c.target,
                c.step,
                if c.reached {
                    "was journaled"
                } else {
                    "(never reached)"
                },
                self.seed
            ));
        }
        out.push_str(&format!(
            "\nWhat the simulators answered: {} requests, {} throttled (429), {} server errors (5xx), {} writes refused (403), {} new credentials not yet propagated\n",
            self.tally.requests,
            self.tally.throttled,
            self.tally.server_errors,
            self.tally.refused,
            self.tally.not_yet_propagated
        ));
        section(
            &mut out,
            "The rehearsed plan differs from yours",
            &self.changes,
        );
        section(&mut out, "The simulated world", &self.notes);
        out.push_str(&format!(
            "\nSecret scan: {} values (every spelling) in {} places: {}\n",
            self.secret_scan.values,
            self.secret_scan.places,
            if self.secret_scan.found.is_empty() {
                "none found".to_string()
            } else {
                format!("FOUND in {}", self.secret_scan.found.join(", "))
            }
        ));
        out
    }
}

fn outcome_name(o: &Outcome) -> &'static str {
    match o {
        Outcome::Done => "done",
        Outcome::Waiting { .. } => "waiting",
        Outcome::AwaitingConfirmation { .. } => "awaiting confirmation",
        Outcome::Skipped { .. } => "skipped",
        Outcome::Incomplete { .. } => "incomplete",
        Outcome::Stale { .. } => "stale",
        Outcome::Failed { .. } => "failed",
    }
}

/// Why a rehearsal could not be run at all.
#[derive(Debug, thiserror::Error)]
pub enum RehearsalError {
    #[error("rehearsal: starting the simulators: {0}")]
    World(String),
    #[error("rehearsal: {0}")]
    Engine(#[from] EngineError),
    #[error("rehearsal: {0}")]
    Internal(String),
}

/// Rehearses `plan` (read from `plan_file`): see the module's documentation. `sink` receives
/// every progress event of every invocation.
pub async fn rehearse(
    plan_file: &str,
    plan: Plan,
    options: RehearsalOptions,
    sink: Arc<dyn EventSink>,
) -> Result<Rehearsal, RehearsalError> {
    let world = PlanWorld::start(&plan, &options.stand_ins)
        .await
        .map_err(|e| RehearsalError::World(e.to_string()))?;
    rehearse_in(&world, plan_file, plan, options, sink).await
}

/// [`rehearse`] in a world already started from `plan` (so that a test can check, at the
/// simulators, what the rehearsal left).
pub async fn rehearse_in(
    world: &PlanWorld,
    plan_file: &str,
    plan: Plan,
    options: RehearsalOptions,
    sink: Arc<dyn EventSink>,
) -> Result<Rehearsal, RehearsalError> {
    let (prepared, changes) = prepare(&plan, world, &options.only);
    let text = crate::plan::write::to_yaml(&prepared, &Default::default())
        .map_err(|e| RehearsalError::Internal(e.to_string()))?;
    let injected = world.inject(options.faults, &prepared, options.seed);
    let state = Scratch::create()?;
    let stash_key = StashKey::generate().map_err(|e| RehearsalError::Internal(e.to_string()))?;
    let spared = injected.refused.as_ref().map(|r| r.target.as_str());
    let crash = (options.faults == FaultProfile::Hostile)
        .then(|| crash_point(&prepared, spared, options.seed))
        .flatten();
    let recorder = Arc::new(Recorder::new(sink, crash.clone()));
    let apply_options = ApplyOptions {
        state_dir: state.0.clone(),
        parallelism: options.parallelism.max(1),
        ignore_max_age: options.ignore_max_age,
        verify_backoff: Duration::from_millis(100),
        poll_interval: Duration::from_millis(50),
        ..Default::default()
    };
    let mut invocations = Vec::new();
    let mut report = None;
    if !prepared.targets.is_empty() {
        let events: Arc<dyn EventSink> = recorder.clone();
        let first = super::run::apply(
            plan_file,
            &text,
            prepared.clone(),
            environment(world, &stash_key)?,
            apply_options.clone(),
            events.clone(),
        )
        .await;
        let mut current = match first {
            Ok(r) => {
                invocations.push(invoked("apply", &r));
                r
            }
            Err(e) if recorder.crashed() => {
                tracing::debug!(error = %e, "the rehearsal's crash stopped the run");
                invocations.push(Invocation {
                    what: "apply".into(),
                    status: "crashed".into(),
                    outcomes: BTreeMap::new(),
                });
                let run = recorder
                    .run_id()
                    .ok_or_else(|| RehearsalError::Internal("the crashed run has no id".into()))?;
                let r = super::run::resume(
                    &run,
                    environment(world, &stash_key)?,
                    apply_options.clone(),
                    events.clone(),
                )
                .await?;
                invocations.push(invoked("resume after the crash", &r));
                r
            }
            Err(e) => return Err(e.into()),
        };
        while invocations.len() < MAX_INVOCATIONS {
            let Some(until) = waiting_until(&current) else {
                break;
            };
            let wait = (until - chrono::Utc::now())
                .to_std()
                .unwrap_or_default()
                .min(Duration::from_secs(MAX_GRACE_SECS + 1));
            tokio::time::sleep(wait + Duration::from_millis(50)).await;
            current = super::run::resume(
                &current.run,
                environment(world, &stash_key)?,
                apply_options.clone(),
                events.clone(),
            )
            .await?;
            invocations.push(invoked("resume after the grace period", &current));
        }
        report = Some(current);
    }
    let mut rehearsal = Rehearsal {
        plan: plan.metadata.name.value.clone(),
        faults: options.faults,
        seed: options.seed,
        report,
        invocations,
        not_rehearsable: world.not_rehearsable.clone(),
        changes,
        notes: world.notes.clone(),
        injected,
        tally: world.tally(),
        crash: crash.map(|(target, step)| CrashPoint {
            target,
            step: step.as_str().to_string(),
            reached: recorder.crashed(),
        }),
        secret_scan: SecretScan::default(),
    };
    rehearsal.secret_scan = scan(world, &state.0, &rehearsal, &recorder);
    Ok(rehearsal)
}

fn invoked(what: &str, report: &RunReport) -> Invocation {
    Invocation {
        what: what.into(),
        status: format!("{:?}", report.status).to_lowercase(),
        outcomes: count_outcomes(report),
    }
}

/// Targets per outcome (`done`, `waiting`, …).
fn count_outcomes(report: &RunReport) -> BTreeMap<&'static str, usize> {
    let mut out = BTreeMap::new();
    for t in &report.targets {
        *out.entry(outcome_name(&t.outcome)).or_insert(0) += 1;
    }
    out
}

/// The latest end of a grace period among waiting targets, if any target waits.
fn waiting_until(report: &RunReport) -> Option<chrono::DateTime<chrono::Utc>> {
    report
        .targets
        .iter()
        .filter_map(|t| match &t.outcome {
            Outcome::Waiting { until, .. } => Some(*until),
            _ => None,
        })
        .max()
}

/// The run's outside world: the simulators, the rehearsal's throwaway stash key (the same
/// for every invocation, as `REKEY_STASH_KEY` is for a real run's).
fn environment(world: &PlanWorld, stash_key: &StashKey) -> Result<Environment, RehearsalError> {
    let circleci = world.circleci_client().map_err(RehearsalError::Internal)?;
    let providers = world
        .providers(&circleci)
        .map_err(RehearsalError::Internal)?;
    Ok(Environment {
        circleci,
        providers,
        stash_key: stash_key.clone(),
        hunt_aws: Some(world.aws.sdk_config()),
    })
}

/// The plan as the rehearsal runs it, and how it differs from `plan`.
fn prepare(plan: &Plan, world: &PlanWorld, only: &[String]) -> (Plan, Vec<String>) {
    let mut p = plan.clone();
    let mut changes = BTreeSet::new();
    let excluded: BTreeSet<&str> = world
        .not_rehearsable
        .iter()
        .map(|n| n.target.as_str())
        .collect();
    p.targets.retain(|t| {
        !excluded.contains(t.id.as_str())
            && (only.is_empty() || only.iter().any(|o| o == t.id.as_str()))
    });
    p.endpoints = world.endpoints();
    changes.insert("endpoints: the simulators on 127.0.0.1".to_string());
    let compress = |g: &mut Located<PlanDuration>, changes: &mut BTreeSet<String>| {
        let to = (g.value.0 / 3600).min(MAX_GRACE_SECS);
        if to != g.value.0 {
            changes.insert(format!("grace {}s → {to}s", g.value.0));
        }
        g.value = PlanDuration(to);
    };
    compress(&mut p.defaults.grace, &mut changes);
    sanitize_hunts(&mut p.hunts, &mut changes);
    for t in &mut p.targets {
        if let Some(g) = &mut t.policy.grace {
            compress(g, &mut changes);
        }
        if let Some(h) = &mut t.policy.hunts {
            sanitize_hunts(h, &mut changes);
        }
        if t.provider.value == ProviderKind::Exec
            && let Some(commands) = world.exec_commands(t.id.as_str())
        {
            changes.insert(format!(
                "{}: exec commands run the stand-in {}",
                t.id.value,
                commands.mint.value.first().cloned().unwrap_or_default()
            ));
            t.exec = Some(Box::new(commands.clone()));
        }
    }
    (p, changes.into_iter().collect())
}

/// Keeps only hunt sources the world serves (CloudTrail through its API, at the AWS
/// simulator); zero delivery delays.
fn sanitize_hunts(h: &mut HuntSelection, changes: &mut BTreeSet<String>) {
    let sources = &mut h.sources;
    let mut dropped: Vec<String> = Vec::new();
    sources.cloudtrail.retain(|s| {
        let keep = s.as_str() == "api";
        if !keep {
            dropped.push(format!("cloudtrail {}", s.as_str()));
        }
        keep
    });
    for (name, list) in [
        ("circleci_audit", &mut sources.circleci_audit),
        ("github_audit", &mut sources.github_audit),
        ("gcp_logging", &mut sources.gcp_logging),
        ("azure_signins", &mut sources.azure_signins),
        ("azure_activity", &mut sources.azure_activity),
    ] {
        dropped.extend(list.drain(..).map(|s| format!("{name} {}", s.as_str())));
    }
    for d in dropped {
        changes.insert(format!(
            "hunt source not rehearsed (real logs, read with real credentials): {d}"
        ));
    }
    for delay in h.delivery_delay.values_mut() {
        delay.value = PlanDuration(0);
    }
    h.delivery_delay
        .entry("cloudtrail".into())
        .or_insert_with(|| Located::new(PlanDuration(0)));
}

/// The hostile profile's crash: a target (not `spared`, whose binding refuses writes and so
/// never reaches the later steps) and a step, drawn with `seed`.
fn crash_point(plan: &Plan, spared: Option<&str>, seed: u64) -> Option<(String, Step)> {
    let mut rng = Rng::seeded(seed ^ 0x5eed_c4a5);
    let targets: Vec<&str> = plan
        .targets
        .iter()
        .map(|t| t.id.as_str())
        .filter(|t| Some(*t) != spared)
        .collect();
    let target = targets.get(rng.below(targets.len() as u64) as usize)?;
    let steps = [
        Step::Inspect,
        Step::Mint,
        Step::Verify,
        Step::Write,
        Step::Deactivate,
    ];
    let step = steps[rng.below(steps.len() as u64) as usize];
    Some((target.to_string(), step))
}

/// Passes every event on, keeps them for the secret scan, and crashes the run at the crash
/// point: the target's task unwinds right after the step's journal record (no panic hook
/// runs, nothing after that point runs for that target), as a killed process would leave it.
struct Recorder {
    inner: Arc<dyn EventSink>,
    crash: Option<(String, Step)>,
    crashed: AtomicBool,
    run: Mutex<Option<String>>,
    lines: Mutex<Vec<String>>,
}

impl Recorder {
    fn new(inner: Arc<dyn EventSink>, crash: Option<(String, Step)>) -> Recorder {
        Recorder {
            inner,
            crash,
            crashed: AtomicBool::new(false),
            run: Mutex::new(None),
            lines: Mutex::new(Vec::new()),
        }
    }

    fn crashed(&self) -> bool {
        self.crashed.load(Ordering::SeqCst)
    }

    fn run_id(&self) -> Option<String> {
        self.run.lock().ok().and_then(|r| r.clone())
    }

    fn lines(&self) -> Vec<String> {
        self.lines.lock().map(|l| l.clone()).unwrap_or_default()
    }
}

impl EventSink for Recorder {
    fn event(&self, e: &Event<'_>) {
        self.inner.event(e);
        if let Ok(line) = serde_json::to_string(e)
            && let Ok(mut lines) = self.lines.lock()
        {
            lines.push(line);
        }
        if let Ok(mut run) = self.run.lock() {
            run.get_or_insert_with(|| e.run.to_string());
        }
        let at_crash = self
            .crash
            .as_ref()
            .is_some_and(|(t, s)| t == e.target && *s == e.step && e.status == Status::Done);
        if at_crash && !self.crashed.swap(true, Ordering::SeqCst) {
            std::panic::resume_unwind(Box::new("rekey rehearsal: crash point"));
        }
    }

    fn ended(&self, target: &str, outcome: &str) {
        self.inner.ended(target, outcome);
    }

    fn finish(&self) {
        self.inner.finish();
    }
}

/// A throwaway state directory (owner-only), removed when dropped.
struct Scratch(PathBuf);

impl Scratch {
    /// In memory where the system offers it ([`scratch_base`]): the journal syncs every
    /// record, and a throwaway state needs no disk (a 1,000-target rehearsal spent most of its
    /// time in fsync on a disk-backed temp directory).
    fn create() -> Result<Scratch, RehearsalError> {
        let base = scratch_base();
        let dir = base.join(format!(
            "rekey-rehearsal-{}-{}",
            std::process::id(),
            Rng::from_entropy().string(fake::HEX, 12)
        ));
        std::fs::create_dir_all(&dir).map_err(|e| RehearsalError::Internal(e.to_string()))?;
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let _ = std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700));
        }
        Ok(Scratch(dir))
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Searches every file below `state`, the rehearsal's report (JSON and text) and every event
/// for every secret of `world`, in every spelling.
fn scan(world: &PlanWorld, state: &Path, rehearsal: &Rehearsal, recorder: &Recorder) -> SecretScan {
    let secrets = world.secrets();
    let needles: Vec<String> = secrets
        .iter()
        .flat_map(|s| crate::redact::spellings(s))
        .filter(|s| s.len() >= 8)
        .collect();
    let Ok(matcher) = aho_corasick::AhoCorasick::new(&needles) else {
        return SecretScan {
            values: secrets.len(),
            places: 0,
            found: vec!["(the scan could not be built)".into()],
        };
    };
    let mut places: Vec<(String, Vec<u8>)> = vec![
        (
            "the report".into(),
            serde_json::to_vec(rehearsal).unwrap_or_default(),
        ),
        (
            "the rendered report".into(),
            rehearsal.render().into_bytes(),
        ),
        (
            "the progress events".into(),
            recorder.lines().join("\n").into_bytes(),
        ),
    ];
    for (path, bytes) in files_below(state) {
        let name = path
            .strip_prefix(state)
            .map(|p| format!("state file {}", p.display()))
            .unwrap_or_default();
        places.push((name, bytes));
    }
    SecretScan {
        values: secrets.len(),
        places: places.len(),
        found: places
            .iter()
            .filter(|(_, bytes)| matcher.is_match(bytes))
            .map(|(name, _)| name.clone())
            .collect(),
    }
}

/// Every file below `dir` (any depth) with its bytes: what a secret scan searches.
pub fn files_below(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let mut out = Vec::new();
    let mut dirs = vec![dir.to_path_buf()];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
            let path = entry.path();
            if path.is_dir() {
                dirs.push(path);
            } else if let Ok(bytes) = std::fs::read(&path) {
                out.push((path, bytes));
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The scan finds a world's secret planted in a state file, in base64 too: it can fail.
    #[tokio::test]
    async fn the_secret_scan_finds_a_planted_secret() {
        let plan = crate::plan::load::parse(
            "p.yaml",
            "apiVersion: rekey/v1\nkind: RotationPlan\nmetadata: {name: p}\ntargets:\n  - id: t\n    provider: aws-iam\n    principal: {user: u}\n    bindings:\n      - project: gh/acme/api\n        vars: {access_key_id: AWS_ACCESS_KEY_ID, secret_access_key: AWS_SECRET_ACCESS_KEY}\n",
        )
        .unwrap();
        let world = PlanWorld::start(&plan, &BTreeMap::new()).await.unwrap();
        let recorder = Recorder::new(Arc::new(super::super::events::Silent), None);
        let rehearsal = Rehearsal {
            plan: "p".into(),
            faults: FaultProfile::None,
            seed: 0,
            report: None,
            invocations: Vec::new(),
            not_rehearsable: Vec::new(),
            changes: Vec::new(),
            notes: Vec::new(),
            injected: Injection::default(),
            tally: FaultTally::default(),
            crash: None,
            secret_scan: SecretScan::default(),
        };
        let state = Scratch::create().unwrap();
        std::fs::create_dir_all(state.0.join("runs")).unwrap();
        std::fs::write(state.0.join("runs/clean"), b"nothing here").unwrap();
        let clean = scan(&world, &state.0, &rehearsal, &recorder);
        assert!(clean.found.is_empty() && clean.values >= 1 && clean.places == 4);
        let secret = world
            .circleci
            .state()
            .project_by_slug("gh/acme/api")
            .and_then(|p| p.env_vars.get("AWS_SECRET_ACCESS_KEY").cloned())
            .unwrap()
            .value;
        use base64::Engine as _;
        let encoded = base64::engine::general_purpose::STANDARD.encode(&secret);
        std::fs::write(state.0.join("runs/leak"), format!("x {encoded} y")).unwrap();
        let found = scan(&world, &state.0, &rehearsal, &recorder).found;
        assert_eq!(found, ["state file runs/leak"]);
    }
}
