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
    ///
    /// What each place holds before the write is read first and the intents of all places
    /// are journaled together, then the places are written one after the other: on S3 state
    /// the journal waits once for the step instead of once per place.
    pub async fn write(&mut self) -> StepResult {
        let mut failed_places = Vec::new();
        let mut ready = Vec::new();
        for binding in &self.target.bindings {
            let place = bindings::label(binding);
            if self.progress.written.contains(&place) {
                continue;
            }
            match self.timestamps_before(binding).await {
                Ok(before) => ready.push((binding, place, before)),
                Err(reason) => failed_places.push(reason),
            }
        }
        if !ready.is_empty() {
            let minted = self.minted_value()?;
            let intents: Vec<Detail> = ready
                .iter()
                .map(|(_, place, before)| Detail {
                    place: Some(place.clone()),
                    before: before.clone(),
                    ..Default::default()
                })
                .collect();
            self.record_intents(Step::Write, &intents)?;
            for (binding, place, before) in ready {
                // The timestamps count from the intent on, whatever the write does.
                self.progress.before.extend(before);
                if let Err(reason) = self.write_binding(binding, place, &minted).await? {
                    failed_places.push(reason);
                }
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

    /// The timestamps of a place before its first write (for read-back), less those already
    /// journaled: a resumed write must compare with the value before the *first* attempt.
    async fn timestamps_before(
        &self,
        binding: &Binding,
    ) -> Result<BTreeMap<String, chrono::DateTime<chrono::Utc>>, String> {
        let before = bindings::timestamps(&self.ctx.circleci, binding)
            .await
            .map_err(|e| e.to_string())?;
        Ok(before
            .into_iter()
            .filter(|(k, _)| !self.progress.before.contains_key(k))
            .collect())
    }

    /// Writes one binding whose intent is journaled: `Ok(Err(why))` when it could not be
    /// written.
    async fn write_binding(
        &mut self,
        binding: &Binding,
        place: String,
        minted: &Minted,
    ) -> Result<Result<(), String>, super::runner::Stop> {
        self.started(Step::Write);
        let done = Detail {
            place: Some(place.clone()),
            ..Default::default()
        };
        let call = bindings::write(&self.ctx.circleci, binding, minted);
        match self.after_intent(Step::Write, call, |_| Ok(done)).await? {
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
    pub async fn read_back(&mut self) -> StepResult {
        if self.progress.has(Step::ReadBack) {
            return Ok(());
        }
        let minted = &self.minted_value()?;
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
