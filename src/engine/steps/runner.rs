//! The runner one target's steps share: what is known so far (the journal's [`Progress`], the
//! live credentials, the minted value), how a step ends the invocation ([`Stop`]), and the one
//! journal discipline every side effect follows ([`Runner::journaled`]).

use super::progress::{Detail, EventPhase, Progress, Step};
use crate::engine::EngineError;
use crate::engine::events::Status;
use crate::engine::run::Ctx;
use crate::engine::target::Outcome;
use crate::plan::Target;
use crate::providers::{Capabilities, CredentialInfo, Minted, Provider, ProviderError};
use std::time::Duration;

/// Why a step ends this invocation of a target: an outcome to report, or an engine failure
/// (journal, stash) that makes the protocol unsafe to go on with.
pub(crate) enum Stop {
    End(Outcome),
    Engine(EngineError),
}

impl From<EngineError> for Stop {
    fn from(e: EngineError) -> Self {
        Stop::Engine(e)
    }
}

/// What a step returns: `Ok` to go on to the next step.
pub(crate) type StepResult = Result<(), Stop>;

/// One target's invocation of the protocol.
pub(crate) struct Runner<'a> {
    pub ctx: &'a Ctx,
    pub target: &'a Target,
    /// The target's id, as the journal names it.
    pub id: &'a str,
    pub provider: &'a dyn Provider,
    pub caps: Capabilities,
    /// What the journal proves, updated as steps complete.
    pub progress: Progress,
    /// The principal as the owner names it, and its credentials, from the inspection (step 2)
    /// less any this invocation removed.
    pub principal: String,
    pub live: Vec<CredentialInfo>,
    /// The new credential, once minted or read back from the stash.
    pub minted: Option<Minted>,
}

impl<'a> Runner<'a> {
    pub fn new(
        ctx: &'a Ctx,
        target: &'a Target,
        provider: &'a dyn Provider,
        progress: Progress,
    ) -> Self {
        Runner {
            ctx,
            target,
            id: target.id.as_str(),
            provider,
            caps: provider.capabilities_for(target),
            progress,
            principal: String::new(),
            live: Vec::new(),
            minted: None,
        }
    }

    /// Journals one record of this target.
    pub fn record(&self, step: Step, phase: EventPhase, detail: &Detail) -> Result<(), Stop> {
        Ok(self.ctx.journal.record(self.id, step, phase, detail)?)
    }

    /// Journals the intents of one step's side effects on several places, durable together.
    pub fn record_intents(&self, step: Step, intents: &[Detail]) -> Result<(), Stop> {
        Ok(self.ctx.journal.record_intents(self.id, step, intents)?)
    }

    /// Journals a step's failure with its message.
    pub fn record_failed(&self, step: Step, detail: Detail, message: String) -> Result<(), Stop> {
        self.record(
            step,
            EventPhase::Failed,
            &Detail {
                message: Some(message),
                ..detail
            },
        )
    }

    /// The journal discipline of a side effect: `intent` is recorded before it, the call runs
    /// between the crash points `<step>-before-call` and `<step>-after-call`, and on success
    /// `done` (which may do the step's bookkeeping first, e.g. stash a minted value) gives the
    /// record written after it. On an error nothing more is journaled: the step says what
    /// the failure means.
    pub async fn journaled<T, E, Fut>(
        &self,
        step: Step,
        intent: &Detail,
        call: Fut,
        done: impl FnOnce(&T) -> Result<Detail, Stop>,
    ) -> Result<Result<T, E>, Stop>
    where
        Fut: std::future::Future<Output = Result<T, E>>,
    {
        self.record(step, EventPhase::Intent, intent)?;
        self.after_intent(step, call, done).await
    }

    /// [`Runner::journaled`] for a side effect whose intent is already recorded (with others,
    /// by [`Runner::record_intents`]).
    pub async fn after_intent<T, E, Fut>(
        &self,
        step: Step,
        call: Fut,
        done: impl FnOnce(&T) -> Result<Detail, Stop>,
    ) -> Result<Result<T, E>, Stop>
    where
        Fut: std::future::Future<Output = Result<T, E>>,
    {
        self.ctx
            .crash_point(self.id, &format!("{}-before-call", step.as_str()));
        let value = match call.await {
            Ok(v) => v,
            Err(e) => return Ok(Err(e)),
        };
        self.ctx
            .crash_point(self.id, &format!("{}-after-call", step.as_str()));
        let detail = done(&value)?;
        self.record(step, EventPhase::Done, &detail)?;
        Ok(Ok(value))
    }

    pub fn emit(&self, step: Step, status: Status, message: Option<&str>) {
        self.ctx.emit(self.id, step, status, message);
    }

    pub fn started(&self, step: Step) {
        self.emit(step, Status::Started, None);
    }

    /// Stops with both credentials valid; `apply --resume` continues once the cause is fixed.
    pub fn incomplete(&self, step: Step, reason: String) -> Stop {
        self.emit(step, Status::Failed, Some(&reason));
        let _ = self
            .ctx
            .journal
            .set_state(self.id, "incomplete", None, Some(&reason));
        Stop::End(Outcome::Incomplete { reason })
    }

    /// A failure before anything lasting changed at the owner or in CircleCI.
    pub fn fail_untouched(&self, step: Step, reason: String) -> Stop {
        self.emit(step, Status::Failed, Some(&reason));
        let _ = self
            .ctx
            .journal
            .set_state(self.id, "failed", None, Some(&reason));
        Stop::End(Outcome::Failed { reason })
    }
}

/// Attempts of a provider operation on transient errors. An operation may be several calls to
/// the owner, each of which can fail (an AWS inspection is GetUser, ListAccessKeys and one
/// GetAccessKeyLastUsed per key: at a 20 % error rate, a whole attempt succeeds half the
/// time), and the provider makes one attempt per call: six attempts left a run stopped one
/// time in sixty at that rate; ten make it about one in a thousand.
const PROVIDER_ATTEMPTS: u32 = 10;

/// Retries a provider call on transient errors (throttling, 5xx), with exponential backoff
/// from 100 ms, capped at 2 s (11 s of waiting at most).
pub(crate) async fn retry<T, F, Fut>(mut call: F) -> Result<T, ProviderError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, ProviderError>>,
{
    let mut delay = Duration::from_millis(100);
    for _ in 1..PROVIDER_ATTEMPTS {
        match call().await {
            Err(e) if e.is_transient() => {
                tracing::debug!(error = %e, delay_ms = delay.as_millis() as u64, "transient provider error; retrying");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(2));
            }
            other => return other,
        }
    }
    call().await
}
