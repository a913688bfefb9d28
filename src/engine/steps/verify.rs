//! Step 5, verify-new: the new credential authenticates at its owner, with bounded retries for
//! eventual consistency; one that never works is deleted and nothing else has changed.

use super::progress::{Detail, Step};
use super::runner::{Runner, StepResult, retry};
use crate::engine::events::Status;
use crate::engine::run::Ctx;
use crate::plan::Target;
use crate::providers::{Minted, Provider, ProviderError};
use std::time::Duration;

impl Runner<'_> {
    /// Step 5: verify, or delete the new credential (a rollback) and fail.
    pub async fn verify(&mut self, minted: &Minted) -> StepResult {
        if self.progress.has(Step::Verify) {
            return Ok(());
        }
        self.started(Step::Verify);
        let call = verify_with_retries(self.ctx, self.provider, self.target, minted);
        let note = self.provider.verified_note(self.target);
        let done = Detail {
            message: note.clone(),
            ..Default::default()
        };
        let Err(e) = self
            .journaled(Step::Verify, &Detail::default(), call, |_| Ok(done))
            .await?
        else {
            self.emit(Step::Verify, Status::Done, note.as_deref());
            return Ok(());
        };
        self.record_failed(Step::Verify, Detail::default(), e.to_string())?;
        let rollback = Detail {
            new_id: Some(minted.id.clone()),
            ..Default::default()
        };
        let delete = retry(|| self.provider.revoke(self.target, &minted.id));
        if let Err(del) = self
            .journaled(Step::Rollback, &rollback, delete, |_| Ok(rollback.clone()))
            .await?
        {
            return Err(self.incomplete(
                Step::Rollback,
                format!("new credential did not verify ({e}) and could not be deleted: {del}"),
            ));
        }
        self.ctx.stash.erase(self.id)?;
        Err(self.fail_untouched(
            Step::Verify,
            format!(
                "new credential {} did not verify ({e}); it was deleted, nothing else changed",
                minted.id
            ),
        ))
    }
}

async fn verify_with_retries(
    ctx: &Ctx,
    provider: &dyn Provider,
    target: &Target,
    minted: &Minted,
) -> Result<(), ProviderError> {
    let attempts = target
        .policy
        .verify
        .as_ref()
        .map(|v| v.attempts)
        .unwrap_or(10)
        .max(1);
    let mut delay = ctx.options.verify_backoff;
    let mut last = None;
    for attempt in 1..=attempts {
        match provider.verify(target, minted).await {
            Ok(()) => return Ok(()),
            Err(e @ (ProviderError::Rejected(_) | ProviderError::Transient(_))) => {
                tracing::debug!(target = target.id.as_str(), attempt, error = %e, "new credential not accepted yet");
                last = Some(e);
                if attempt < attempts {
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(Duration::from_secs(8));
                }
            }
            Err(e) => return Err(e),
        }
    }
    Err(last.unwrap_or_else(|| ProviderError::Rejected("not accepted".into())))
}
