//! Steps 9 to 12: retire the old credential once every binding holds the new one —
//! deactivate it where the owner can (the grace period starts), wait out the grace period,
//! revoke it (or hand the revocation to a person), and end the target.

use super::progress::{Detail, EventPhase, Step};
use super::runner::{Runner, StepResult, Stop, retry};
use crate::engine::events::Status;
use crate::engine::target::{AWAITING_CONFIRMATION, MANUAL_STEP, Outcome};
use crate::providers::ProviderError;
use chrono::Utc;

impl Runner<'_> {
    /// Step 9: deactivate the old credential, and start the grace period.
    pub async fn deactivate(&mut self) -> StepResult {
        if self.progress.has(Step::Deactivate) {
            return Ok(());
        }
        let grace = self.ctx.grace(self.target);
        let until = Utc::now() + chrono::Duration::seconds(grace.seconds() as i64);
        match (self.progress.old_id.clone(), self.caps.deactivate) {
            (Some(old_id), true) => {
                self.started(Step::Deactivate);
                let intent = Detail {
                    old_id: Some(old_id.clone()),
                    ..Default::default()
                };
                let call = retry(|| self.provider.deactivate(self.target, &old_id));
                let done = |_: &()| {
                    Ok(Detail {
                        until: Some(until),
                        at: Some(Utc::now()),
                        ..intent.clone()
                    })
                };
                if let Err(e) = self
                    .journaled(Step::Deactivate, &intent, call, done)
                    .await?
                {
                    let reason = format!("cannot deactivate {old_id}: {e}");
                    return Err(self.incomplete(Step::Deactivate, reason));
                }
                self.progress.deactivated_at = Some(Utc::now());
                self.emit(Step::Deactivate, Status::Done, Some(&old_id));
            }
            (old, _) => {
                let message = match old {
                    Some(_) => format!(
                        "{} cannot disable a credential: the old one stays valid during the grace period",
                        self.target.provider.value
                    ),
                    None => "no old credential to deactivate".to_string(),
                };
                let detail = Detail {
                    until: Some(until),
                    message: Some(message.clone()),
                    ..Default::default()
                };
                self.record(Step::Deactivate, EventPhase::Skipped, &detail)?;
                self.emit(Step::Deactivate, Status::Skipped, Some(&message));
            }
        }
        self.progress.grace_until = Some(until);
        Ok(())
    }

    /// Step 10: the invocation ends here until the grace period is over.
    pub fn grace(&mut self) -> StepResult {
        if self.progress.has(Step::Grace) {
            return Ok(());
        }
        let until = self.progress.grace_until.unwrap_or_else(Utc::now);
        if Utc::now() < until {
            self.ctx
                .journal
                .set_state(self.id, "waiting", Some(until), None)?;
            self.emit(Step::Grace, Status::Waiting, Some(&until.to_rfc3339()));
            return Err(Stop::End(Outcome::Waiting {
                until,
                old_still_valid: self.progress.old_id.is_some() && !self.caps.deactivate,
            }));
        }
        self.record(Step::Grace, EventPhase::Done, &Detail::default())?;
        self.emit(Step::Grace, Status::Done, None);
        Ok(())
    }

    /// Step 11: revoke the old credential; where only a person can, a manual step, journaled,
    /// pending until `rekey confirm` records it done.
    pub async fn revoke(&mut self) -> StepResult {
        let Some(old_id) = self.progress.old_id.clone() else {
            return Ok(());
        };
        if self.progress.has(Step::Revoke) {
            return Ok(());
        }
        self.started(Step::Revoke);
        let detail = Detail {
            old_id: Some(old_id.clone()),
            ..Default::default()
        };
        let call = retry(|| self.provider.revoke(self.target, &old_id));
        match self
            .journaled(Step::Revoke, &detail, call, |_| Ok(detail.clone()))
            .await?
        {
            Ok(()) => {}
            Err(ProviderError::NeedsInput(what)) => {
                let action = format!(
                    "{what}; then run `rekey confirm {} {}`",
                    self.ctx.run_id, self.id
                );
                self.record_failed(Step::Revoke, detail, format!("{MANUAL_STEP}{action}"))?;
                self.emit(Step::Revoke, Status::Waiting, Some(&action));
                self.ctx
                    .journal
                    .set_state(self.id, AWAITING_CONFIRMATION, None, Some(&action))?;
                return Err(Stop::End(Outcome::AwaitingConfirmation { action }));
            }
            Err(e) => {
                let reason = format!("cannot revoke {old_id}: {e}");
                return Err(self.incomplete(Step::Revoke, reason));
            }
        }
        self.emit(Step::Revoke, Status::Done, Some(&old_id));
        Ok(())
    }

    /// Step 12: the minted value leaves the stash. Recorded first, erased after: erased first,
    /// a crash before the record would leave a run that needs the value (for nothing but its
    /// id) and can no longer find it. A crash after the record leaves the sealed value behind
    /// until the next invocation, which erases it for a finished target.
    pub fn done(&mut self, new_id: &str) -> Result<Outcome, Stop> {
        let detail = Detail {
            new_id: Some(new_id.to_string()),
            ..Default::default()
        };
        self.record(Step::Done, EventPhase::Done, &detail)?;
        self.ctx.stash.erase(self.id)?;
        self.ctx.journal.set_state(self.id, "done", None, None)?;
        self.emit(Step::Done, Status::Done, Some(new_id));
        Ok(Outcome::Done)
    }
}
