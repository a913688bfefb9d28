//! `apply --dry-run`: read live state and say, per target, what was found and the exact steps
//! `apply` would take, marking those that would fail. Only reads: no provider or CircleCI call
//! here changes anything, and the state directory is at most read — the journal of earlier
//! runs, when there is one, to recognise rekey's own past rotations (invariant 4).

use super::bindings;
use super::journal::{Journal, RunId};
use super::run::ProviderSet;
use super::steps::Step;
use super::steps::inspect::{current_credential, stale};
use crate::circleci::CircleCiClient;
use crate::plan::due::{Facts, Rule, Verdict, decide};
use crate::plan::{Place, Plan, Target};
use crate::providers::CredentialInfo;
use chrono::Utc;
use futures::StreamExt;
use serde::Serialize;
use std::path::Path;

/// Targets previewed at once (reads only; the services' rate limits still apply).
const PREVIEW_CONCURRENCY: usize = 32;

#[derive(Debug, Clone, Serialize)]
pub struct Preview {
    pub plan: String,
    pub targets: Vec<TargetPreview>,
    /// What the targets add up to ([`Preview::new`] counts them).
    pub totals: Tally,
}

#[derive(Debug, Clone, Serialize)]
pub struct TargetPreview {
    pub id: String,
    pub provider: String,
    /// What `apply` would do with the target as a whole.
    pub action: Action,
    /// The principal as the owner names it, and its credentials (ids, ages, status, last use).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub principal: Option<String>,
    pub credentials: Vec<CredentialInfo>,
    /// The credential the bindings hold now.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub current: Option<String>,
    /// Why the current credential is due (the incident, max_age, --ignore-max-age); a skipped
    /// target says why in its action.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub due: Option<String>,
    /// Each binding and what CircleCI shows for its variables.
    pub bindings: Vec<BindingPreview>,
    pub steps: Vec<PlannedStep>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", content = "reason", rename_all = "kebab-case")]
pub enum Action {
    Rotate,
    Skip(String),
    /// `apply` would stop at a step (marked in `steps`) or refuse the target.
    Blocked(String),
}

#[derive(Debug, Clone, Serialize)]
pub struct BindingPreview {
    pub place: String,
    /// `VAR: xxxxWXYZ` for project variables, `VAR: updated 2022-06-01T…` for context variables,
    /// `VAR: missing` when the variable does not exist yet.
    pub vars: Vec<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct PlannedStep {
    pub step: Step,
    pub description: String,
    /// Why the step would fail, if it would.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub problem: Option<String>,
}

impl Preview {
    /// The preview of `plan`'s targets, with what they add up to.
    pub fn new(plan: String, targets: Vec<TargetPreview>) -> Preview {
        let mut totals = Tally::default();
        targets.iter().for_each(|t| totals.add(t));
        Preview {
            plan,
            targets,
            totals,
        }
    }

    /// Terraform's `-detailed-exitcode`: 0 nothing to do, 2 changes pending, 1 a target would fail.
    pub fn detailed_exit_code(&self) -> u8 {
        self.totals.detailed_exit_code()
    }
}

/// Targets by what `apply` would do with them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Counts {
    pub rotate: usize,
    pub skip: usize,
    pub fail: usize,
}

impl Counts {
    fn add(&mut self, action: &Action) {
        match action {
            Action::Rotate => self.rotate += 1,
            Action::Skip(_) => self.skip += 1,
            Action::Blocked(_) => self.fail += 1,
        }
    }

    fn merge(&mut self, other: Counts) {
        self.rotate += other.rotate;
        self.skip += other.skip;
        self.fail += other.fail;
    }
}

/// Targets that would fail named in a dry run's summary; the rest are counted.
const FAILING_NAMED: usize = 20;

/// What previewed targets add up to, counted as they stream by ([`preview_each`]): the
/// summary a reviewer of 190,000 targets reads first (Terraform's "Plan: 3 to add").
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Tally {
    #[serde(flatten)]
    pub all: Counts,
    pub by_provider: std::collections::BTreeMap<String, Counts>,
    /// The first targets that would fail, in the plan's order.
    pub failing: Vec<String>,
}

impl Tally {
    pub fn add(&mut self, target: &TargetPreview) {
        self.all.add(&target.action);
        match self.by_provider.get_mut(target.provider.as_str()) {
            Some(counts) => counts.add(&target.action),
            None => {
                let mut counts = Counts::default();
                counts.add(&target.action);
                self.by_provider.insert(target.provider.clone(), counts);
            }
        }
        if matches!(target.action, Action::Blocked(_)) && self.failing.len() < FAILING_NAMED {
            self.failing.push(target.id.clone());
        }
    }

    /// Adds what a tally of later targets counted.
    pub fn merge(&mut self, later: Tally) {
        self.all.merge(later.all);
        for (provider, counts) in later.by_provider {
            self.by_provider.entry(provider).or_default().merge(counts);
        }
        let room = FAILING_NAMED.saturating_sub(self.failing.len());
        self.failing.extend(later.failing.into_iter().take(room));
    }

    /// As [`Preview::detailed_exit_code`].
    pub fn detailed_exit_code(&self) -> u8 {
        match (self.all.fail > 0, self.all.rotate > 0) {
            (true, _) => 1,
            (false, true) => 2,
            (false, false) => 0,
        }
    }

    /// The summary under a dry run's targets: totals, then each provider's, then the first
    /// targets that would fail.
    pub fn render(&self) -> String {
        use std::fmt::Write;
        let line = |c: &Counts| {
            let mut text = format!("{} would rotate, {} would skip", c.rotate, c.skip);
            if c.fail > 0 {
                let _ = write!(text, ", {} WOULD FAIL", c.fail);
            }
            text
        };
        let total = self.all.rotate + self.all.skip + self.all.fail;
        let mut out = format!("\nSummary of {total} target(s): {}\n", line(&self.all));
        if self.by_provider.len() > 1 {
            for (provider, counts) in &self.by_provider {
                let _ = writeln!(out, "  {provider}: {}", line(counts));
            }
        }
        if !self.failing.is_empty() {
            let more = self.all.fail - self.failing.len();
            let _ = write!(out, "Would fail: {}", self.failing.join(", "));
            if more > 0 {
                let _ = write!(out, " and {more} more");
            }
            out.push('\n');
        }
        out
    }
}

pub async fn preview(
    plan: &Plan,
    circleci: &CircleCiClient,
    providers: &ProviderSet,
    ignore_max_age: bool,
) -> Preview {
    preview_with_history(plan, circleci, providers, ignore_max_age, None).await
}

/// [`preview`], knowing the runs journaled in `state_dir` (read only, and only when a journal
/// exists there): a target whose bindings hold a credential that an earlier run minted is
/// previewed as `apply` would treat it — already rotated (skipped without max_age), and not
/// stale because its observations predate that rotation.
pub async fn preview_with_history(
    plan: &Plan,
    circleci: &CircleCiClient,
    providers: &ProviderSet,
    ignore_max_age: bool,
    state_dir: Option<&Path>,
) -> Preview {
    let mut targets = Vec::with_capacity(plan.targets.len());
    preview_each(plan, circleci, providers, ignore_max_age, state_dir, |t| {
        targets.push(t)
    })
    .await;
    Preview::new(plan.metadata.name.value.clone(), targets)
}

/// [`preview_with_history`], handing each target's preview to `each` in the plan's order as
/// soon as it (and every target before it) is done: the dry run of 190,000 targets prints as it
/// goes instead of holding every preview until the end.
pub async fn preview_each(
    plan: &Plan,
    circleci: &CircleCiClient,
    providers: &ProviderSet,
    ignore_max_age: bool,
    state_dir: Option<&Path>,
    mut each: impl FnMut(TargetPreview),
) {
    let history = history(state_dir);
    let run = Run {
        plan,
        circleci,
        providers,
        ignore_max_age,
        history: history.as_ref(),
    };
    // Targets are previewed concurrently, in the plan's order; a client made
    // `with_read_cache` reads each CircleCI place once for all of them.
    let mut previews = futures::stream::iter(plan.targets.iter().map(|target| run.preview(target)))
        .buffered(PREVIEW_CONCURRENCY);
    while let Some(preview) = previews.next().await {
        each(preview);
    }
}

/// Targets a thread of [`preview_threaded`] previews before handing them over together.
const CHUNK: usize = 256;

/// [`preview_each`] on `threads` threads of the caller's (each driving its share of the
/// targets on `runtime`, whose workers carry the connections), with `map` applied on those
/// threads (rendering a target costs as much as previewing it) and `each` called on the
/// caller's thread in the plan's order. The plan is cut into chunks dealt to the threads in
/// turn; a thread more than two chunks ahead of the writer waits, so memory stays bounded.
/// At most [`PREVIEW_CONCURRENCY`] targets are in flight in all, as with one thread.
#[allow(clippy::too_many_arguments)]
pub fn preview_threaded<R: Send>(
    runtime: &tokio::runtime::Handle,
    threads: usize,
    plan: &Plan,
    circleci: &CircleCiClient,
    providers: &ProviderSet,
    ignore_max_age: bool,
    state_dir: Option<&Path>,
    map: impl Fn(TargetPreview) -> R + Sync,
    mut each: impl FnMut(R),
) {
    let threads = threads.clamp(1, PREVIEW_CONCURRENCY);
    let history = history(state_dir);
    let run = &Run {
        plan,
        circleci,
        providers,
        ignore_max_age,
        history: history.as_ref(),
    };
    let chunks: Vec<&[Target]> = plan.targets.chunks(CHUNK).collect();
    let (chunks, map) = (&chunks, &map);
    std::thread::scope(|scope| {
        let mut handed = Vec::with_capacity(threads);
        for first in 0..threads {
            let (tx, rx) = std::sync::mpsc::sync_channel::<Vec<R>>(2);
            handed.push(rx);
            scope.spawn(move || {
                runtime.block_on(async move {
                    let mine = chunks.iter().skip(first).step_by(threads);
                    let mut sizes = mine.clone().map(|c| c.len());
                    let mut previews =
                        futures::stream::iter(mine.flat_map(|c| c.iter()).map(|t| run.preview(t)))
                            .buffered(PREVIEW_CONCURRENCY / threads);
                    let mut size = sizes.next().unwrap_or(0);
                    let mut chunk = Vec::with_capacity(size);
                    while let Some(preview) = previews.next().await {
                        chunk.push(map(preview));
                        if chunk.len() == size {
                            size = sizes.next().unwrap_or(0);
                            let full = std::mem::replace(&mut chunk, Vec::with_capacity(size));
                            // The writer stopped (it panicked): nothing more to do.
                            if tx.send(full).is_err() {
                                return;
                            }
                        }
                    }
                })
            });
        }
        for i in 0..chunks.len() {
            // A thread that ended early (a panic, raised again when the scope joins it).
            let Ok(chunk) = handed[i % threads].recv() else {
                break;
            };
            chunk.into_iter().for_each(&mut each);
        }
    });
}

/// What previewing a target needs besides the target.
struct Run<'a> {
    plan: &'a Plan,
    circleci: &'a CircleCiClient,
    providers: &'a ProviderSet,
    ignore_max_age: bool,
    history: Option<&'a Journal>,
}

impl Run<'_> {
    async fn preview(&self, target: &Target) -> TargetPreview {
        preview_target(
            self.plan,
            target,
            self.circleci,
            self.providers,
            self.ignore_max_age,
            self.history,
        )
        .await
    }
}

/// The journal of earlier runs in `state_dir`, read-only, when there is one.
fn history(state_dir: Option<&Path>) -> Option<Journal> {
    match state_dir.map(Journal::open_read_only) {
        Some(Ok(journal)) => journal,
        Some(Err(e)) => {
            // Without the journal the preview is still right about live state; it may only
            // call a target stale that an earlier run rotated.
            tracing::warn!(error = %e, "dry run: cannot read the journal of earlier runs");
            None
        }
        None => None,
    }
}

async fn preview_target(
    plan: &Plan,
    target: &Target,
    circleci: &CircleCiClient,
    providers: &ProviderSet,
    ignore_max_age: bool,
    history: Option<&Journal>,
) -> TargetPreview {
    let mut out = TargetPreview {
        id: target.id.value.clone(),
        provider: target.provider.value.to_string(),
        action: Action::Rotate,
        principal: None,
        credentials: Vec::new(),
        current: None,
        due: None,
        bindings: Vec::new(),
        steps: Vec::new(),
    };
    for binding in &target.bindings {
        out.bindings.push(binding_preview(circleci, binding).await);
    }
    if !target.confirmed {
        out.action =
            Action::Skip("grouping not confirmed (set `confirmed: true` after review)".into());
        return out;
    }
    let Some(provider) = providers.get(target.provider.value) else {
        out.action = Action::Skip(format!(
            "provider {} is not available in this build",
            target.provider.value
        ));
        return out;
    };
    let caps = provider.capabilities_for(target);
    let inspection = match provider.inspect(target).await {
        Ok(i) => i,
        Err(e) => {
            out.action = Action::Blocked(format!("cannot inspect: {e}"));
            return out;
        }
    };
    out.principal = Some(inspection.principal.clone());
    out.credentials = inspection.credentials.clone();
    let old = match current_credential(circleci, target, &inspection).await {
        Ok(old) => old,
        Err(reason) => {
            out.action = Action::Blocked(reason);
            return out;
        }
    };
    out.current = old.as_ref().map(|c| c.id.clone());
    // As `apply` does (target.rs, step 2): rekey's own earlier rotation is no staleness.
    let rotated_by = match (&old, history) {
        (Some(old), Some(journal)) => journal
            .rotated_by_other_runs(target.id.as_str(), &RunId::from(String::new()))
            .unwrap_or_else(|e| {
                tracing::warn!(error = %e, "dry run: cannot read earlier runs");
                Vec::new()
            })
            .into_iter()
            .find(|(_, id)| *id == old.id)
            .map(|(run, _)| run),
        _ => None,
    };
    if let Some(old) = &old {
        let run = rotated_by.as_ref().map(|r| r.to_string());
        let rule = Rule {
            incident: plan.incident.as_ref(),
            max_age: target
                .policy
                .max_age
                .as_ref()
                .or(plan.defaults.max_age.as_ref())
                .map(|m| m.value),
            ignore_max_age,
        };
        let facts = Facts {
            credential: &old.id,
            created_at: old.created_at,
            minted_by_run: run.as_deref(),
        };
        match decide(rule, facts, Utc::now()) {
            Verdict::Skip(reason) => {
                out.action = Action::Skip(reason);
                return out;
            }
            Verdict::Due(reason) => out.due = Some(reason),
        }
    }
    if rotated_by.is_none() {
        match stale(circleci, target).await {
            Ok(None) => {}
            Ok(Some(reason)) => {
                out.action = Action::Blocked(format!(
                    "the plan is stale: {reason}; re-plan this target and review again"
                ));
                return out;
            }
            Err(reason) => {
                out.action = Action::Blocked(reason);
                return out;
            }
        }
    }

    out.steps = planned_steps(plan, target, caps, &inspection, old.as_ref());
    if let Some(problem) = out.steps.iter().find_map(|s| s.problem.clone()) {
        out.action = Action::Blocked(problem);
    }
    out
}

/// The steps `apply` would take for a target that is due, in order, each with what stops it.
fn planned_steps(
    plan: &Plan,
    target: &Target,
    caps: crate::providers::Capabilities,
    inspection: &crate::providers::Inspection,
    old: Option<&crate::providers::CredentialInfo>,
) -> Vec<PlannedStep> {
    let principal = inspection.principal.clone();
    let mut steps = Vec::new();
    let mut step = |step: Step, description: String, problem: Option<String>| {
        steps.push(PlannedStep {
            step,
            description,
            problem,
        });
    };
    step(
        Step::Inspect,
        format!(
            "read {principal}: {} credential(s)",
            inspection.credentials.len()
        ),
        None,
    );
    if let Some((description, problem)) = planned_capacity(target, caps, inspection, old) {
        step(Step::Capacity, description, problem);
    }
    let mint = if caps.manual_mint {
        "ask a person for the new credential"
    } else {
        "create a new credential"
    };
    if let Some(what) = super::hunts::describe(plan, target, super::hunts::When::Pre) {
        step(Step::PreHunt, what, None);
    }
    step(
        Step::Mint,
        format!("{mint} for {principal}; keep it in the encrypted stash"),
        None,
    );
    let budget = crate::providers::budget::VerifyBudget::for_target(target);
    step(
        Step::Verify,
        format!(
            "prove the new credential authenticates as {principal} (waiting {})",
            budget.describe()
        ),
        None,
    );
    for binding in &target.bindings {
        let vars: Vec<&str> = binding.vars.values().map(|v| v.as_str()).collect();
        step(
            Step::Write,
            format!(
                "write {} to {}",
                // Project settings (the label names which) take the credential whole.
                if vars.is_empty() {
                    "the new credential".to_string()
                } else {
                    vars.join(", ")
                },
                bindings::label(binding)
            ),
            None,
        );
    }
    step(
        Step::ReadBack,
        "read every binding back (masked last four, or updated_at)".into(),
        None,
    );
    if let Some(c) = &target.policy.canary {
        step(
            Step::Canary,
            format!(
                "run a pipeline of {} on {} and wait for success",
                c.project.as_str(),
                c.branch
            ),
            None,
        );
    }
    let grace = target
        .policy
        .grace
        .as_ref()
        .map(|g| g.value)
        .unwrap_or(plan.defaults.grace.value);
    match (old, caps.deactivate) {
        (Some(o), true) => step(
            Step::Deactivate,
            format!("deactivate the old credential {}", o.id),
            None,
        ),
        (Some(o), false) => step(
            Step::Deactivate,
            format!(
                "{} cannot be disabled: it stays valid during the grace period",
                o.id
            ),
            None,
        ),
        (None, _) => {}
    }
    step(
        Step::Grace,
        format!("wait {grace} (the run ends and resumes after)"),
        None,
    );
    if let Some(what) = super::hunts::describe(plan, target, super::hunts::When::Post) {
        step(Step::PostHunt, what, None);
    }
    if let Some(o) = old {
        step(
            Step::Revoke,
            format!("delete the old credential {}", o.id),
            None,
        );
    }
    steps
}

/// Step 3 as `apply` would take it, when the owner's quota is full: which key it would delete,
/// or why it cannot.
fn planned_capacity(
    target: &Target,
    caps: crate::providers::Capabilities,
    inspection: &crate::providers::Inspection,
    old: Option<&crate::providers::CredentialInfo>,
) -> Option<(String, Option<String>)> {
    let max = caps.max_credentials?;
    let principal = &inspection.principal;
    if inspection.credentials.len() < max {
        return None;
    }
    let removable = target
        .policy
        .removable_keys
        .iter()
        .map(|k| k.as_str())
        .find(|k| {
            Some(*k) != old.map(|o| o.id.as_str())
                && inspection.credentials.iter().any(|c| c.id == *k)
        });
    Some(match removable {
        Some(k) => (
            format!("delete {k} (marked removable) to stay within {max} credentials"),
            None,
        ),
        None => (
            format!(
                "make room: {principal} already has {} credentials",
                inspection.credentials.len()
            ),
            Some("the plan marks none of the others removable (policy.removable_keys)".into()),
        ),
    })
}

async fn binding_preview(
    circleci: &CircleCiClient,
    binding: &crate::plan::Binding,
) -> BindingPreview {
    let place = bindings::label(binding);
    let mut vars = Vec::new();
    match binding.place() {
        Some(Place::Project(slug)) => match circleci.shared_project_masks(slug).await {
            Ok(masks) => {
                for var in binding.vars.values() {
                    match masks.get(var.as_str()) {
                        Some(last4) => vars.push(format!("{}: xxxx{last4}", var.as_str())),
                        None => vars.push(format!("{}: missing", var.as_str())),
                    }
                }
            }
            Err(e) => vars.push(format!("cannot read: {e}")),
        },
        Some(Place::Context(_)) => match bindings::timestamps(circleci, binding).await {
            Ok(stamps) => {
                for var in binding.vars.values() {
                    match stamps
                        .iter()
                        .find(|(k, _)| k.ends_with(&format!("/{}", var.as_str())))
                    {
                        Some((_, at)) => {
                            vars.push(format!("{}: updated {}", var.as_str(), at.to_rfc3339()))
                        }
                        None => vars.push(format!("{}: missing", var.as_str())),
                    }
                }
            }
            Err(e) => vars.push(format!("cannot read: {e}")),
        },
        None => vars.push("binding names no place".into()),
    }
    BindingPreview { place, vars }
}
