//! Steps 6 and 7: write the new value to every binding, then read every binding back. A
//! binding that cannot be written or read back leaves both credentials valid and the run
//! incomplete, resumable; a written binding is never rolled back.

use super::progress::{Detail, Step};
use super::runner::{Runner, StepResult};
use crate::engine::bindings::{self, BindingError};
use crate::engine::events::Status;
use crate::plan::Binding;
use crate::providers::Minted;
use std::collections::BTreeMap;

impl Runner<'_> {
    /// Step 6: every binding not yet written; one that fails does not stop the others.
    pub async fn write(&mut self, minted: &Minted) -> StepResult {
        let mut failed_places = Vec::new();
        for binding in &self.target.bindings {
            if self.progress.written.contains(&bindings::label(binding)) {
                continue;
            }
            if let Err(reason) = self.write_binding(binding, minted).await? {
                failed_places.push(reason);
            }
        }
        if failed_places.is_empty() {
            return Ok(());
        }
        let reason = format!(
            "not every binding could be written ({}); both credentials stay valid — resume once the cause is fixed",
            failed_places.join("; ")
        );
        Err(self.incomplete(Step::Write, reason))
    }

    /// Writes one binding: `Ok(Err(why))` when it could not be written.
    async fn write_binding(
        &mut self,
        binding: &Binding,
        minted: &Minted,
    ) -> Result<Result<(), String>, super::runner::Stop> {
        let place = bindings::label(binding);
        self.started(Step::Write);
        let before = match bindings::timestamps(&self.ctx.circleci, binding).await {
            Ok(b) => b,
            Err(e) => return Ok(Err(e.to_string())),
        };
        // Keep timestamps already journaled for this place (a resumed write must compare with
        // the value before the *first* attempt).
        let before: BTreeMap<_, _> = before
            .into_iter()
            .filter(|(k, _)| !self.progress.before.contains_key(k))
            .collect();
        let intent = Detail {
            place: Some(place.clone()),
            before: before.clone(),
            ..Default::default()
        };
        let done = Detail {
            place: Some(place.clone()),
            ..Default::default()
        };
        let call = bindings::write(&self.ctx.circleci, binding, minted);
        // The timestamps count from the intent on, whatever the write does.
        let result = self
            .journaled(Step::Write, &intent, call, |_| Ok(done))
            .await;
        self.progress.before.extend(before);
        match result? {
            Ok(()) => {
                self.emit(Step::Write, Status::Done, Some(&place));
                self.progress.written.push(place);
                Ok(Ok(()))
            }
            Err(e) => {
                let place = Detail {
                    place: Some(place),
                    ..Default::default()
                };
                self.record_failed(Step::Write, place, e.to_string())?;
                self.emit(Step::Write, Status::Failed, Some(&e.to_string()));
                Ok(Err(e.to_string()))
            }
        }
    }

    /// Step 7: every binding holds the new value (project variables: the masked last four;
    /// context variables: `updated_at` advanced).
    pub async fn read_back(&mut self, minted: &Minted) -> StepResult {
        if self.progress.has(Step::ReadBack) {
            return Ok(());
        }
        self.started(Step::ReadBack);
        for binding in &self.target.bindings {
            let Err(e) =
                bindings::read_back(&self.ctx.circleci, binding, minted, &self.progress.before)
                    .await
            else {
                continue;
            };
            let place = Detail {
                place: Some(bindings::label(binding)),
                ..Default::default()
            };
            self.record_failed(Step::ReadBack, place.clone(), e.to_string())?;
            let retry_write = matches!(
                e,
                BindingError::Mismatch { .. }
                    | BindingError::Missing { .. }
                    | BindingError::NotUpdated { .. }
            );
            if retry_write {
                // Forget the write so that resume writes this place again.
                self.record_failed(Step::Write, place, "read-back did not match".into())?;
            }
            return Err(self.incomplete(
                Step::ReadBack,
                format!("read-back failed: {e}; both credentials stay valid"),
            ));
        }
        self.record(
            Step::ReadBack,
            super::progress::EventPhase::Done,
            &Detail::default(),
        )?;
        self.emit(Step::ReadBack, Status::Done, None);
        Ok(())
    }
}
