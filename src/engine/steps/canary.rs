//! Step 8, canary (optional): trigger the plan's CircleCI pipeline and wait for it to succeed;
//! a failure stops before the old credential is touched, both credentials valid.

use super::progress::{Detail, Step};
use super::runner::{Runner, StepResult};
use crate::engine::events::Status;
use std::time::Duration;

/// How long a canary pipeline may run when the plan does not say.
const DEFAULT_TIMEOUT_SECS: u64 = 30 * 60;

impl Runner<'_> {
    pub async fn canary(&mut self) -> StepResult {
        let Some(canary) = &self.target.policy.canary else {
            return Ok(());
        };
        if self.progress.has(Step::Canary) {
            return Ok(());
        }
        self.started(Step::Canary);
        let timeout = canary
            .timeout
            .as_ref()
            .map(|t| t.value.seconds())
            .unwrap_or(DEFAULT_TIMEOUT_SECS);
        let call = crate::engine::canary::run(
            &self.ctx.circleci,
            &canary.project,
            &canary.branch,
            Duration::from_secs(timeout),
            self.ctx.options.poll_interval,
        );
        let done = |pipeline: &String| {
            Ok(Detail {
                pipeline: Some(pipeline.clone()),
                ..Default::default()
            })
        };
        match self
            .journaled(Step::Canary, &Detail::default(), call, done)
            .await?
        {
            Ok(pipeline) => {
                self.emit(Step::Canary, Status::Done, Some(&pipeline));
                Ok(())
            }
            Err(reason) => {
                self.record_failed(Step::Canary, Detail::default(), reason.clone())?;
                Err(self.incomplete(
                    Step::Canary,
                    format!("canary failed: {reason}; both credentials stay valid"),
                ))
            }
        }
    }
}
