//! Steps 3 and 4: capacity (room under the owner's quota, only by removing a key the plan
//! marks removable) and mint (a new credential, its id to the journal, its value to the stash),
//! with the orphan sweep that removes what an interrupted or failed mint created unrecorded.

use super::progress::{Detail, EventPhase, Step};
use super::runner::{Runner, StepResult, Stop, retry};
use crate::engine::events::Status;
use crate::providers::{CredentialInfo, Minted, ProviderError};
use chrono::Utc;
use std::time::Duration;

impl Runner<'_> {
    /// Step 4 after a crash: an interrupted mint left the value in the stash, or the owner may
    /// hold a credential this run created but never recorded.
    ///
    /// A crash can also stop the clean-up between its rollback intent and the delete
    /// (tests/crash.rs, `mint-after-call` then `rollback:intent`): the orphan is still there
    /// and, with AWS's two-key quota, would block every later mint. With no minted id known,
    /// an interrupted rollback can only be that clean-up: run it again. The ids known before
    /// the mint come from the mint's intent, folded into `progress.known_ids`.
    pub async fn resolve_interrupted_mint(&mut self) -> StepResult {
        if self.progress.new_id.is_some()
            || !matches!(
                &self.progress.interrupted,
                Some((Step::Mint | Step::Rollback, _))
            )
        {
            return Ok(());
        }
        if let Some(m) = self.ctx.stash.get(self.id)? {
            self.record(
                Step::Mint,
                EventPhase::Done,
                &Detail {
                    new_id: Some(m.id.clone()),
                    ..Default::default()
                },
            )?;
            self.progress.new_id = Some(m.id.clone());
            self.minted = Some(m);
            return Ok(());
        }
        let known = self.progress.known_ids.clone().unwrap_or_default();
        let live = self.live.clone();
        match self
            .delete_orphans(&live, &known, "orphan of an interrupted mint")
            .await?
        {
            Ok(deleted) => self.live.retain(|c| !deleted.contains(&c.id)),
            Err(reason) => return Err(self.incomplete(Step::Rollback, reason)),
        }
        Ok(())
    }

    /// Step 3: room under the owner's quota, only by removing a key marked removable.
    pub async fn capacity(&mut self) -> StepResult {
        let Some(max) = self.caps.max_credentials else {
            return Ok(());
        };
        if self.progress.new_id.is_some() || self.live.len() < max {
            return Ok(());
        }
        let removable = self
            .target
            .policy
            .removable_keys
            .iter()
            .map(|k| k.as_str())
            .find(|k| {
                Some(*k) != self.progress.old_id.as_deref() && self.live.iter().any(|c| c.id == *k)
            });
        let Some(victim) = removable else {
            let reason = format!(
                "{} already has {} credentials, the owner's limit, and the plan marks none of the others removable (policy.removable_keys)",
                self.principal,
                self.live.len()
            );
            return Err(self.fail_untouched(Step::Capacity, reason));
        };
        self.started(Step::Capacity);
        let detail = Detail {
            removed_id: Some(victim.to_string()),
            ..Default::default()
        };
        let call = retry(|| self.provider.revoke(self.target, victim));
        if let Err(e) = self
            .journaled(Step::Capacity, &detail, call, |_| Ok(detail.clone()))
            .await?
        {
            return Err(self.incomplete(Step::Capacity, format!("cannot remove {victim}: {e}")));
        }
        self.emit(
            Step::Capacity,
            Status::Done,
            Some(&format!("removed {victim}")),
        );
        self.live.retain(|c| c.id != victim);
        Ok(())
    }

    /// Step 4: intent (with the ids that exist now), mint, stash, done.
    pub async fn mint(&mut self) -> StepResult {
        if self.progress.new_id.is_some() {
            return Ok(());
        }
        self.started(Step::Mint);
        let known: Vec<String> = self.live.iter().map(|c| c.id.clone()).collect();
        let intent = Detail {
            known_ids: Some(known.clone()),
            ..Default::default()
        };
        let stash = |m: &Minted| {
            self.ctx.stash.put(self.id, m)?;
            self.ctx.crash_point(self.id, "mint-after-stash");
            Ok(Detail {
                new_id: Some(m.id.clone()),
                at: Some(Utc::now()),
                ..Default::default()
            })
        };
        let call = self.mint_without_orphans(&known);
        let m = match self.journaled(Step::Mint, &intent, call, stash).await? {
            Ok(m) => m,
            // A person must give the value (a GitHub personal access token): nothing changed,
            // and the next invocation with the value continues from here.
            Err(MintFailure::GaveUp(ProviderError::NeedsInput(what))) => {
                self.record_failed(Step::Mint, Detail::default(), what.clone())?;
                let reason = format!("waiting for the new value: {what}");
                return Err(self.incomplete(Step::Mint, reason));
            }
            Err(MintFailure::GaveUp(e)) => {
                self.record_failed(Step::Mint, Detail::default(), e.to_string())?;
                return Err(self.fail_untouched(Step::Mint, format!("mint failed: {e}")));
            }
            // The mint's intent stays open, so a resume lists the principal's credentials
            // again and deletes what this run may have created.
            Err(MintFailure::Unsure(reason)) => return Err(self.incomplete(Step::Mint, reason)),
            Err(MintFailure::Stop(stop)) => return Err(stop),
        };
        self.emit(Step::Mint, Status::Done, Some(&m.id));
        self.progress.new_id = Some(m.id.clone());
        self.minted = Some(m);
        Ok(())
    }

    /// The minted value, for the steps that need it: from this invocation's mint, else from
    /// the stash.
    pub fn minted_value(&mut self) -> Result<Minted, Stop> {
        if let Some(m) = &self.minted {
            return Ok(m.clone());
        }
        match self.ctx.stash.get(self.id)? {
            Some(m) => {
                self.minted = Some(m.clone());
                Ok(m)
            }
            None => {
                let reason = format!(
                    "credential {} was minted by this run but is not in the stash (was REKEY_STASH_KEY or the state directory changed?)",
                    self.progress.new_id.as_deref().unwrap_or("?")
                );
                Err(self.incomplete(Step::Mint, reason))
            }
        }
    }

    /// Deletes every credential of `live` that is neither in `known` (the ids before this
    /// run's mint) nor the old one: credentials a mint created but whose answer never arrived
    /// (a lost answer, a crash). Each deletion is journaled as a rollback without `new_id`,
    /// which does not end the target (see `Progress::fold`). `Ok(Err(why))` when one could not
    /// be deleted.
    async fn delete_orphans(
        &self,
        live: &[CredentialInfo],
        known: &[String],
        why: &str,
    ) -> Result<Result<Vec<String>, String>, Stop> {
        let old_id = self.progress.old_id.as_deref();
        let mut deleted = Vec::new();
        for orphan in live
            .iter()
            .filter(|c| !known.contains(&c.id) && Some(c.id.as_str()) != old_id)
        {
            let intent = Detail {
                new_id: Some(orphan.id.clone()),
                message: Some(why.to_string()),
                ..Default::default()
            };
            let done = Detail {
                removed_id: Some(orphan.id.clone()),
                ..Default::default()
            };
            let call = retry(|| self.provider.revoke(self.target, &orphan.id));
            if let Err(e) = self
                .journaled(Step::Rollback, &intent, call, |_| Ok(done))
                .await?
            {
                return Ok(Err(format!("cannot delete {} ({why}): {e}", orphan.id)));
            }
            self.emit(
                Step::Rollback,
                Status::Done,
                Some(&format!("deleted {} ({why})", orphan.id)),
            );
            deleted.push(orphan.id.clone());
        }
        Ok(Ok(deleted))
    }

    /// Mints, retrying transient errors. A transient error can arrive after the owner acted (a
    /// 5xx or a timeout after CreateAccessKey took effect): the credential then exists with a
    /// secret nobody saw — an orphan (invariant 2) that also holds one of AWS's two slots, so
    /// that a blind retry fails on the quota. So after each transient error the principal's
    /// credentials are listed and every one that the mint's intent did not know is deleted,
    /// journaled as a rollback, before the intent is recorded again and the mint retried.
    async fn mint_without_orphans(&self, known: &[String]) -> Result<Minted, MintFailure> {
        let (id, target, provider) = (self.id, self.target, self.provider);
        let mut delay = Duration::from_millis(200);
        let mut attempt = 1;
        loop {
            let e = match provider.mint(target).await {
                Ok(m) => return Ok(m),
                Err(e) if e.is_transient() => e,
                Err(e) => return Err(MintFailure::GaveUp(e)),
            };
            tracing::debug!(target = id, attempt, error = %e, "mint failed transiently; looking for a credential it may have created");
            let live = match retry(|| provider.inspect(target)).await {
                Ok(i) => i.credentials,
                Err(list) => {
                    return Err(MintFailure::Unsure(format!(
                        "mint failed ({e}) and the credentials of {id} could not be listed to check that it created none ({list})"
                    )));
                }
            };
            let sweep = self
                .delete_orphans(&live, known, "created by a mint whose answer was lost")
                .await
                .map_err(MintFailure::Stop)?;
            if let Err(reason) = sweep {
                return Err(MintFailure::Unsure(format!("mint failed ({e}); {reason}")));
            }
            if attempt >= MINT_ATTEMPTS {
                return Err(MintFailure::GaveUp(e));
            }
            tokio::time::sleep(delay).await;
            delay = (delay * 2).min(Duration::from_secs(5));
            attempt += 1;
            // The intent again, so that the last record before the next attempt is a mint
            // intent: a crash during it is resolved on resume like any interrupted mint.
            let intent = Detail {
                known_ids: Some(known.to_vec()),
                ..Default::default()
            };
            self.record(Step::Mint, EventPhase::Intent, &intent)
                .map_err(MintFailure::Stop)?;
        }
    }
}

/// How a mint ended without a credential.
enum MintFailure {
    /// The owner refused, or kept failing; nothing this run created is left behind.
    GaveUp(ProviderError),
    /// A credential may exist that this run created and could not delete.
    Unsure(String),
    /// The journal or the stash failed.
    Stop(Stop),
}

/// Attempts of a mint (each followed, on a transient error, by a sweep for orphans).
const MINT_ATTEMPTS: u32 = 6;
