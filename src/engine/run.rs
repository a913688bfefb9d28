//! Runs: applying a plan's targets with bounded concurrency, resuming a run from its journal,
//! and the shared context every target's state machine uses.
//!
//! A run is created with the plan's text stored in the journal, so `apply --resume RUN_ID`
//! executes exactly what was reviewed, even if the file changed since. `apply PLAN` on a plan
//! whose previous run is still waiting or incomplete continues that run (a scheduled job does
//! exactly this) instead of starting a second rotation.

use super::EngineError;
use super::events::{Event, EventSink, Status};
use super::journal::{Journal, Phase, RunId, RunStatus};
use super::lock::StateLock;
use super::stash::{Stash, StashKey};
use super::steps::{Detail, EventPhase, Step, StepEvent};
use super::target::{self, Outcome};
use crate::circleci::CircleCiClient;
use crate::plan::{Plan, PlanDuration, ProviderKind, Target};
use crate::providers::Minted;
use chrono::{DateTime, Utc};
use futures::StreamExt;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// How to run.
#[derive(Debug, Clone)]
pub struct ApplyOptions {
    pub state_dir: PathBuf,
    /// Targets in flight at once.
    pub parallelism: usize,
    /// Rotate even credentials younger than `max_age` (an incident, not a schedule).
    pub ignore_max_age: bool,
    /// What one second of a verification budget takes in real time (1 s; less in tests, which
    /// run the providers' budgets faster: see `providers::budget::VerifyClock`).
    pub verify_backoff: Duration,
    /// Pause between polls of a canary pipeline.
    pub poll_interval: Duration,
    /// Only these target ids (all when empty).
    pub only: Vec<String>,
    /// The lock's lease (S3 state) and how long to wait for another holder.
    pub lock: super::state::lease::LeaseOptions,
}

impl Default for ApplyOptions {
    fn default() -> Self {
        ApplyOptions {
            state_dir: PathBuf::from(".rekey"),
            parallelism: 8,
            ignore_max_age: false,
            verify_backoff: Duration::from_secs(1),
            poll_interval: Duration::from_secs(10),
            only: Vec::new(),
            lock: Default::default(),
        }
    }
}

/// The providers available to a run, by kind (built by [`crate::providers::registry`]).
pub use crate::providers::registry::ProviderSet;

/// What an invocation did, per target.
#[derive(Debug, Clone, serde::Serialize)]
pub struct RunReport {
    pub run: String,
    pub plan: String,
    pub status: RunStatus,
    pub targets: Vec<TargetReport>,
    /// Hunt findings of this invocation at or above the plan's `on_findings.severity`.
    pub serious_findings: usize,
    /// The hunts this invocation ran, per target and phase.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub hunts: Vec<super::hunts::HuntRecord>,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct TargetReport {
    pub id: String,
    pub provider: ProviderKind,
    /// Why the target was due (incident, max_age, --ignore-max-age), as its inspection found;
    /// a skipped target says why in its outcome.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub due: Option<String>,
    #[serde(flatten)]
    pub outcome: Outcome,
}

impl RunReport {
    /// Exit code of the invocation: 2 stale plan, 1 a target failed, 3 hunt findings at or
    /// above the plan's severity, 4 incomplete, else 0.
    pub fn exit_code(&self) -> u8 {
        let any = |f: fn(&Outcome) -> bool| self.targets.iter().any(|t| f(&t.outcome));
        if any(|o| matches!(o, Outcome::Stale { .. })) {
            2
        } else if any(|o| matches!(o, Outcome::Failed { .. })) {
            1
        } else if self.serious_findings > 0 {
            3
        } else if any(|o| matches!(o, Outcome::Incomplete { .. })) {
            4
        } else {
            0
        }
    }
}

/// The journal bound to one run, with crash points for the crash tests.
///
/// No lock of its own: the journal serializes its short transactions itself, and a record
/// that waits for S3 (an intent before its side effect) must not hold up the other targets'
/// records while it waits — behind a run-wide lock, S3 state ran 8x slower than local.
pub struct RunJournal {
    journal: Journal,
    run: RunId,
}

impl RunJournal {
    pub fn events(&self, target: &str) -> Result<Vec<StepEvent>, EngineError> {
        let journal = &self.journal;
        let events = journal.events(&self.run, Some(target))?;
        Ok(StepEvent::from_journal(events))
    }

    pub fn record(
        &self,
        target: &str,
        step: Step,
        phase: EventPhase,
        detail: &Detail,
    ) -> Result<(), EngineError> {
        let value =
            serde_json::to_value(detail).map_err(|e| EngineError::Internal(e.to_string()))?;
        let phase_j = match phase {
            EventPhase::Intent => Phase::Intent,
            EventPhase::Done => Phase::Done,
            EventPhase::Failed => Phase::Failed,
            EventPhase::Skipped => Phase::Skipped,
        };
        {
            let journal = &self.journal;
            journal.record(&self.run, target, step.as_str(), phase_j, &value)?;
        }
        let point = format!("{}:{}", step.as_str(), phase_name(phase));
        crash_if_asked(target, &point);
        Ok(())
    }

    /// Journals the intents of one step on several places, durable together (see
    /// [`Journal::record_intents`]); each still passes its crash point, once all are durable.
    pub fn record_intents(
        &self,
        target: &str,
        step: Step,
        details: &[Detail],
    ) -> Result<(), EngineError> {
        let values = details
            .iter()
            .map(serde_json::to_value)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| EngineError::Internal(e.to_string()))?;
        self.journal
            .record_intents(&self.run, target, step.as_str(), &values)?;
        let point = format!("{}:{}", step.as_str(), phase_name(EventPhase::Intent));
        for _ in details {
            crash_if_asked(target, &point);
        }
        Ok(())
    }

    /// The run (other than this one) that minted `credential_id` for `target` and finished
    /// rotating it, if any.
    pub fn rotated_earlier(
        &self,
        target: &str,
        credential_id: &str,
    ) -> Result<Option<String>, EngineError> {
        let journal = &self.journal;
        Ok(journal
            .rotated_by_other_runs(target, &self.run)?
            .into_iter()
            .find(|(_, id)| id == credential_id)
            .map(|(run, _)| run.to_string()))
    }

    /// When another run last rotated `target` to the end (see
    /// `Journal::last_rotation_by_other_runs`).
    pub fn last_rotation(
        &self,
        target: &str,
    ) -> Result<Option<(String, DateTime<Utc>)>, EngineError> {
        let journal = &self.journal;
        Ok(journal
            .last_rotation_by_other_runs(target, &self.run)?
            .map(|(run, at)| (run.to_string(), at)))
    }

    pub fn set_state(
        &self,
        target: &str,
        state: &str,
        until: Option<DateTime<Utc>>,
        message: Option<&str>,
    ) -> Result<(), EngineError> {
        let journal = &self.journal;
        journal.set_target_state(&self.run, target, state, until, message)?;
        Ok(())
    }
}

fn phase_name(phase: EventPhase) -> &'static str {
    match phase {
        EventPhase::Intent => "intent",
        EventPhase::Done => "done",
        EventPhase::Failed => "failed",
        EventPhase::Skipped => "skipped",
    }
}

/// Test hook for the crash tests: `REKEY_CRASH_AT=<target>:<point>` makes the process SIGKILL
/// itself at that point (a journal boundary such as `mint:intent`, or a point inside a step such
/// as `mint-after-call`). Unset in every real use; it only ever stops the process.
///
/// A point reached several times by one target (`write:done` once per binding) is chosen by its
/// occurrence in this process, counted from 1: `REKEY_CRASH_AT=<target>:write:done:2` kills the
/// process at the second binding's `write:done`. Without the suffix, the first occurrence.
fn crash_if_asked(target: &str, point: &str) {
    let Ok(wanted) = std::env::var("REKEY_CRASH_AT") else {
        return;
    };
    let here = format!("{target}:{point}");
    // `<target>:<point>:<n>`; a point never ends in a number, so a numeric last part is `n`.
    let (wanted_point, nth) = match wanted.rsplit_once(':') {
        Some((p, n)) if !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()) => {
            (p, n.parse::<u64>().unwrap_or(u64::MAX))
        }
        _ => (wanted.as_str(), 1),
    };
    if wanted_point != here {
        return;
    }
    static SEEN: Mutex<u64> = Mutex::new(0);
    let count = {
        let mut seen = SEEN.lock().unwrap_or_else(|p| p.into_inner());
        *seen += 1;
        *seen
    };
    if count == nth {
        eprintln!("REKEY_CRASH_AT reached ({wanted}): killing this process");
        // SAFETY: kill(2) on our own pid with SIGKILL has no memory-safety preconditions.
        unsafe {
            libc::kill(libc::getpid(), libc::SIGKILL);
        }
    }
}

/// The stash bound to one run. Like [`RunJournal`], without a lock of its own: the stash's
/// connection is the journal's, and an S3 write of one target must not wait for another's.
pub struct RunStash {
    stash: Stash,
    run: RunId,
}

impl RunStash {
    pub fn put(&self, target: &str, minted: &Minted) -> Result<(), EngineError> {
        let stash = &self.stash;
        Ok(stash.put(&self.run, target, minted)?)
    }

    pub fn get(&self, target: &str) -> Result<Option<Minted>, EngineError> {
        let stash = &self.stash;
        Ok(stash.get(&self.run, target)?)
    }

    pub fn erase(&self, target: &str) -> Result<(), EngineError> {
        let stash = &self.stash;
        Ok(stash.erase(&self.run, target)?)
    }
}

/// What every target of a run shares.
pub struct Ctx {
    pub journal: RunJournal,
    pub stash: RunStash,
    pub circleci: CircleCiClient,
    pub providers: ProviderSet,
    pub options: ApplyOptions,
    pub plan: Plan,
    pub sink: Arc<dyn EventSink>,
    pub run_id: String,
    /// The built-in hunt rules, loaded once per run.
    pub hunt_rules: Arc<crate::hunt::pack::RuleSet>,
    /// Hunt findings at or above the plan's `on_findings.severity`, over every target.
    pub serious_findings: std::sync::atomic::AtomicUsize,
    /// The hunts run so far, for the run report.
    pub hunt_records: Mutex<Vec<super::hunts::HuntRecord>>,
    pub hunt_aws: Option<aws_config::SdkConfig>,
    /// The directory of the plan file, as named when the run was created.
    pub plan_dir: std::path::PathBuf,
    pub hunt_reads: super::hunts::SharedReads,
}

impl Ctx {
    pub fn emit(&self, target: &str, step: Step, status: Status, message: Option<&str>) {
        self.sink.event(&Event {
            run: &self.run_id,
            target,
            step,
            status,
            message,
            at: Utc::now(),
        });
    }

    pub fn grace(&self, target: &Target) -> PlanDuration {
        target
            .policy
            .grace
            .as_ref()
            .map(|g| g.value)
            .unwrap_or(self.plan.defaults.grace.value)
    }

    pub fn max_age(&self, target: &Target) -> Option<PlanDuration> {
        target
            .policy
            .max_age
            .as_ref()
            .or(self.plan.defaults.max_age.as_ref())
            .map(|m| m.value)
    }

    /// Why the target was found due: the message of its inspection in this run's journal.
    pub fn due_reason(&self, target: &str) -> Option<String> {
        let events = self.journal.events(target).ok()?;
        events
            .into_iter()
            .rev()
            .find(|e| e.step == Step::Inspect && e.phase == EventPhase::Done)
            .and_then(|e| e.detail.message)
    }

    /// Whether `old`, the credential the bindings hold, is due (DESIGN.md, "Incident and
    /// schedule"), and why. A credential its owner cannot date (a GitHub token) is dated by
    /// the last rotation of this target by rekey, which then counts as that run's mint.
    pub fn due(
        &self,
        target: &Target,
        old: &crate::providers::CredentialInfo,
        rotated_by: Option<&str>,
    ) -> Result<crate::plan::due::Verdict, EngineError> {
        use crate::plan::due::{Facts, Rule, decide};
        let mut created_at = old.created_at;
        let mut run = rotated_by.map(str::to_string);
        if created_at.is_none()
            && let Some((by, minted)) = self.journal.last_rotation(target.id.as_str())?
        {
            created_at = Some(minted);
            run.get_or_insert(by);
        }
        let rule = Rule {
            incident: self.plan.incident.as_ref(),
            max_age: self.max_age(target),
            ignore_max_age: self.options.ignore_max_age,
        };
        let facts = Facts {
            credential: &old.id,
            created_at,
            minted_by_run: run.as_deref(),
        };
        Ok(decide(rule, facts, Utc::now()))
    }

    /// A crash point inside a step, between a side effect and its journal record
    /// (`mint-after-call`: the key exists at the owner, neither stash nor journal knows it).
    /// Same `REKEY_CRASH_AT` hook as the journal boundaries: `<target>:mint-after-call`.
    pub fn crash_point(&self, target: &str, point: &str) {
        crash_if_asked(target, point);
    }
}

/// Everything outside rekey that a run talks to.
pub struct Environment {
    pub circleci: CircleCiClient,
    pub providers: ProviderSet,
    pub stash_key: StashKey,
    /// The AWS configuration hunts read CloudTrail with (LookupEvents, S3); `None`: the
    /// default chain, as the AWS provider uses in a real run.
    pub hunt_aws: Option<aws_config::SdkConfig>,
}

/// Applies `plan` (read from `plan_file`, whose text is `plan_text`): continues an unfinished
/// run of the same plan text, or starts a new one.
pub async fn apply(
    plan_file: &str,
    plan_text: &str,
    plan: Plan,
    env: Environment,
    options: ApplyOptions,
    sink: Arc<dyn EventSink>,
) -> Result<RunReport, EngineError> {
    let lock = StateLock::acquire_with(&options.state_dir, options.lock)?;
    let journal = Journal::open(&options.state_dir)?;
    let run = match journal.unfinished_run_for(plan_text)? {
        Some(run) => {
            tracing::info!(run = %run, "continuing the unfinished run of this plan");
            run
        }
        None => journal.create_run(plan.metadata.name.as_str(), plan_file, plan_text)?,
    };
    execute(run, plan, journal, env, options, sink, lock).await
}

/// Continues run `run_id` with the plan text stored in its journal.
pub async fn resume(
    run_id: &str,
    env: Environment,
    options: ApplyOptions,
    sink: Arc<dyn EventSink>,
) -> Result<RunReport, EngineError> {
    let lock = StateLock::acquire_with(&options.state_dir, options.lock)?;
    let journal = Journal::open(&options.state_dir)?;
    let run = RunId::from(run_id.to_string());
    let record = journal
        .run(&run)?
        .ok_or_else(|| EngineError::NoSuchRun(run_id.to_string()))?;
    let plan = crate::plan::load::parse(&record.plan_file, &record.plan_text).map_err(|d| {
        EngineError::Internal(format!(
            "the plan stored with run {run_id} no longer parses: {}",
            d.message
        ))
    })?;
    execute(run, plan, journal, env, options, sink, lock).await
}

/// The plan stored with run `run_id` (what `--resume` executes), read without taking the
/// lock: the command line needs it before the run starts, to build the providers with the
/// plan's `endpoints:`.
pub fn stored_plan(state_dir: &std::path::Path, run_id: &str) -> Result<Plan, EngineError> {
    let journal = Journal::open(state_dir)?;
    let record = journal
        .run(&RunId::from(run_id.to_string()))?
        .ok_or_else(|| EngineError::NoSuchRun(run_id.to_string()))?;
    crate::plan::load::parse(&record.plan_file, &record.plan_text).map_err(|d| {
        EngineError::Internal(format!(
            "the plan stored with run {run_id} no longer parses: {}",
            d.message
        ))
    })
}

async fn execute(
    run: RunId,
    plan: Plan,
    journal: Journal,
    env: Environment,
    options: ApplyOptions,
    sink: Arc<dyn EventSink>,
    lock: StateLock,
) -> Result<RunReport, EngineError> {
    lock.set_run(run.as_str());
    let stash = Stash::for_journal(journal.share(), env.stash_key);
    // Relative paths in the plan (hunt sources) are relative to the plan's directory.
    let plan_dir = journal
        .run(&run)?
        .map(|r| super::hunts::plan_dir(&r.plan_file))
        .unwrap_or_default();
    let parallelism = options.parallelism.max(1);
    let targets: Vec<Target> = plan
        .targets
        .iter()
        .filter(|t| options.only.is_empty() || options.only.iter().any(|o| o == t.id.as_str()))
        .cloned()
        .collect();
    let plan_name = plan.metadata.name.value.clone();
    let ctx = Arc::new(Ctx {
        journal: RunJournal {
            journal,
            run: run.clone(),
        },
        stash: RunStash {
            stash,
            run: run.clone(),
        },
        circleci: env.circleci,
        providers: env.providers,
        options,
        plan,
        sink: sink.clone(),
        run_id: run.to_string(),
        hunt_rules: Arc::new(crate::hunt::pack::RuleSet::builtin()),
        serious_findings: std::sync::atomic::AtomicUsize::new(0),
        hunt_records: Mutex::new(Vec::new()),
        hunt_aws: env.hunt_aws,
        plan_dir,
        hunt_reads: Default::default(),
    });
    // Each target is a task of its own, so that one waiting for its state to be durable (S3
    // state blocks its thread through `block_in_place`) does not hold up the others.
    let results: Vec<TargetReport> = futures::stream::iter(targets.into_iter().map(|t| {
        let ctx = ctx.clone();
        let task = tokio::spawn(async move {
            let outcome = target::run(&ctx, &t).await;
            ctx.sink.ended(t.id.as_str(), &outcome.label());
            TargetReport {
                id: t.id.value.clone(),
                provider: t.provider.value,
                due: ctx.due_reason(t.id.as_str()),
                outcome,
            }
        });
        async move {
            task.await
                .map_err(|e| EngineError::Internal(format!("a target's task ended: {e}")))
        }
    }))
    .buffer_unordered(parallelism)
    .collect::<Vec<_>>()
    .await
    .into_iter()
    .collect::<Result<_, _>>()?;
    sink.finish();
    let mut targets = results;
    targets.sort_by(|a, b| a.id.cmp(&b.id));
    // A failed or stale target changed nothing that a resume could carry on (a new credential
    // that did not verify was deleted, a stale plan needs a new review), so a run with only
    // such targets left is `failed`, not unfinished: `apply` of the same plan then starts a new
    // run instead of continuing this one forever.
    let any = |f: fn(&Outcome) -> bool| targets.iter().any(|t| f(&t.outcome));
    let status = if any(|o| matches!(o, Outcome::Incomplete { .. })) {
        RunStatus::Incomplete
    } else if any(|o| {
        matches!(
            o,
            Outcome::Waiting { .. } | Outcome::AwaitingConfirmation { .. }
        )
    }) {
        RunStatus::Waiting
    } else if any(|o| matches!(o, Outcome::Failed { .. } | Outcome::Stale { .. })) {
        RunStatus::Failed
    } else {
        RunStatus::Complete
    };
    ctx.journal.journal.set_run_status(&run, status)?;
    Ok(RunReport {
        run: run.to_string(),
        plan: plan_name,
        status,
        targets,
        serious_findings: ctx
            .serious_findings
            .load(std::sync::atomic::Ordering::Relaxed),
        hunts: {
            let mut records = ctx
                .hunt_records
                .lock()
                .map(|mut r| std::mem::take(&mut *r))
                .unwrap_or_default();
            records.sort_by(|a, b| {
                (&a.target, a.phase == "post").cmp(&(&b.target, b.phase == "post"))
            });
            records
        },
    })
}

/// What `rekey confirm` did.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Confirmation {
    pub run: String,
    pub target: String,
    /// The manual step that was pending (its journal message).
    pub step: String,
}

/// Records that a person did the manual step a target is waiting for (revoking a GitHub token
/// by hand): the step is journaled as done, and the next `apply --resume` finishes the target.
/// Refuses when the target is not waiting for a confirmation, so a typo cannot skip a step.
pub fn confirm(
    state_dir: &std::path::Path,
    run_id: &str,
    target: &str,
) -> Result<Confirmation, EngineError> {
    let _lock = StateLock::acquire(state_dir)?;
    let journal = Journal::open(state_dir)?;
    let run = RunId::parse(run_id)?;
    if journal.run(&run)?.is_none() {
        return Err(EngineError::NoSuchRun(run_id.to_string()));
    }
    let waiting = journal
        .target_states(&run)?
        .into_iter()
        .find(|s| s.target == target)
        .filter(|s| s.state == target::AWAITING_CONFIRMATION);
    let Some(state) = waiting else {
        return Err(EngineError::NothingToConfirm {
            run: run_id.to_string(),
            target: target.to_string(),
        });
    };
    // The step that waits for a person: a manual revocation, or a hunt whose findings the
    // plan's policy holds for review.
    let waiting_steps = [Step::Revoke, Step::PreHunt, Step::PostHunt];
    let last = journal
        .events(&run, Some(target))?
        .into_iter()
        .rev()
        .find(|e| e.phase == Phase::Failed && waiting_steps.iter().any(|s| s.as_str() == e.step));
    let confirmed_step = last
        .as_ref()
        .and_then(|e| Step::parse(&e.step))
        .unwrap_or(Step::Revoke);
    let old_id = last
        .as_ref()
        .and_then(|e| e.detail.get("old_id"))
        .and_then(|v| v.as_str())
        .map(str::to_owned);
    let detail = Detail {
        old_id,
        message: Some(format!(
            "confirmed by a person at {}: {}",
            Utc::now().to_rfc3339(),
            state.message.clone().unwrap_or_default()
        )),
        ..Default::default()
    };
    let value = serde_json::to_value(&detail).map_err(|e| EngineError::Internal(e.to_string()))?;
    journal.record(&run, target, confirmed_step.as_str(), Phase::Done, &value)?;
    journal.set_target_state(
        &run,
        target,
        "confirmed",
        None,
        Some("manual step confirmed; `rekey apply --resume` finishes the target"),
    )?;
    journal.flush(&run)?;
    Ok(Confirmation {
        run: run_id.to_string(),
        target: target.to_string(),
        step: state.message.unwrap_or_default(),
    })
}
