//! Steps 3 and 4: capacity (room under the owner's quota, only by removing a key the plan
//! marks removable) and mint (a new credential, its id to the journal, its value to the stash),
//! with the orphan sweep that removes what an interrupted or failed mint created unrecorded.

use super::progress::{Detail, EventPhase, Step};
use super::runner::{Runner, StepResult, Stop, retry};
use crate::engine::events::Status;
use crate::providers::{CredentialInfo, Minted, ProviderError};
use chrono::{DateTime, Utc};
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
        let since = self.progress.mint_began;
        match self
            .delete_orphans(&live, &known, since, "orphan of an interrupted mint")
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
        // When the mint began: a credential the owner dates earlier is not this mint's.
        let at = Utc::now();
        let intent = Detail {
            known_ids: Some(known.clone()),
            at: Some(at),
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
        let old_id = self.progress.old_id.clone();
        let call = async {
            let m = self.mint_without_orphans(&known, at).await?;
            // An owner (or a person giving a token) may hand back the credential in use: bound
            // and then revoked as "old", it would leave every binding with a dead credential.
            match old_id {
                Some(old) if old == m.id => Err(MintFailure::SameAsOld(old)),
                _ => Ok(m),
            }
        };
        let m = match self.journaled(Step::Mint, &intent, call, stash).await? {
            Ok(m) => m,
            // A person must give the value (a GitHub personal access token): nothing changed,
            // and the next invocation with the value continues from here.
            Err(MintFailure::GaveUp(ProviderError::NeedsInput(what))) => {
                self.record_failed(Step::Mint, Detail::default(), what.clone())?;
                let reason = format!("waiting for the new value: {what}");
                return Err(self.incomplete(Step::Mint, reason));
            }
            Err(MintFailure::SameAsOld(old)) => {
                let reason = format!(
                    "the new credential is the one in use ({old}): nothing was written or revoked; give a credential that differs from the old one"
                );
                self.record_failed(Step::Mint, Detail::default(), reason.clone())?;
                return Err(self.fail_untouched(Step::Mint, reason));
            }
            // A refusal may come after the owner created something (GCP without the key's
            // data, an AWS answer without the key, an exec mint failing after creating): sweep
            // before recording the failure, so that an interrupted sweep is resumed.
            Err(MintFailure::GaveUp(e)) => {
                let swept = self.sweep_after(&known, at, &e).await?;
                let reason = match swept {
                    Ok(note) => format!("mint failed: {e}{note}"),
                    Err(reason) => return Err(self.incomplete(Step::Mint, reason)),
                };
                self.record_failed(Step::Mint, Detail::default(), e.to_string())?;
                return Err(self.fail_untouched(Step::Mint, reason));
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
        since: Option<DateTime<Utc>>,
        why: &str,
    ) -> Result<Result<Vec<String>, String>, Stop> {
        let old_id = self.progress.old_id.as_deref();
        let mark = self
            .provider
            .marks()
            .then(|| crate::providers::mint_mark(self.target));
        let mut deleted = Vec::new();
        for orphan in live
            .iter()
            .filter(|c| !known.contains(&c.id) && Some(c.id.as_str()) != old_id)
        {
            if let Err(doubt) = minted_by_rekey(orphan, since, mark.as_deref()) {
                // Someone else's credential, maybe: leave it, and say so.
                let message = format!("left {} alone: {doubt}", orphan.id);
                tracing::warn!(target = self.id, "{message}");
                self.emit(Step::Rollback, Status::Skipped, Some(&message));
                continue;
            }
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
    async fn mint_without_orphans(
        &self,
        known: &[String],
        at: DateTime<Utc>,
    ) -> Result<Minted, MintFailure> {
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
                .delete_orphans(
                    &live,
                    known,
                    Some(at),
                    "created by a mint whose answer was lost",
                )
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
                at: Some(at),
                ..Default::default()
            };
            self.record(Step::Mint, EventPhase::Intent, &intent)
                .map_err(MintFailure::Stop)?;
        }
    }
}

impl Runner<'_> {
    /// After a mint that gave up: lists the principal's credentials and deletes those this
    /// mint provably created. `Ok(note)` for the failure's message; `Err(why)` when the owner
    /// could not be listed or an orphan not deleted (the intent stays open for a resume).
    async fn sweep_after(
        &self,
        known: &[String],
        at: DateTime<Utc>,
        error: &ProviderError,
    ) -> Result<Result<String, String>, Stop> {
        // A person's step or a refusal before anything existed leaves nothing to look for.
        if matches!(
            error,
            ProviderError::NeedsInput(_) | ProviderError::Unsupported { .. }
        ) {
            return Ok(Ok(String::new()));
        }
        let live = match retry(|| self.provider.inspect(self.target)).await {
            Ok(i) => i.credentials,
            Err(list) => {
                return Ok(Err(format!(
                    "mint failed ({error}) and the credentials of {} could not be listed to check that it created none ({list})",
                    self.id
                )));
            }
        };
        let why = "created by a mint that then failed";
        Ok(
            match self.delete_orphans(&live, known, Some(at), why).await? {
                Ok(deleted) if deleted.is_empty() => Ok(String::new()),
                Ok(deleted) => Ok(format!(
                    "; deleted what it had created ({})",
                    deleted.join(", ")
                )),
                Err(reason) => Err(format!("mint failed ({error}); {reason}")),
            },
        )
    }
}

/// Slack for the owner's clock against rekey's when comparing a credential's creation time
/// with the mint's start (AWS dates keys to the second).
const CLOCK_SKEW: chrono::Duration = chrono::Duration::seconds(120);

/// Whether `c` is provably a credential of this target's mint: created (by the owner's date)
/// after the mint began, and bearing rekey's mark where the owner keeps one. `Err(why not)`.
fn minted_by_rekey(
    c: &CredentialInfo,
    since: Option<DateTime<Utc>>,
    mark: Option<&str>,
) -> Result<(), String> {
    let bears_mark = mark.is_some_and(|m| c.label.as_deref().is_some_and(|l| l.contains(m)));
    let (Some(created), Some(since)) = (c.created_at, since) else {
        // An owner that dates nothing (CircleCI's additional SSH keys) but keeps the mark rekey
        // wrote into the credential itself: the mark alone names this target's mint.
        if c.created_at.is_none() && bears_mark {
            return Ok(());
        }
        return Err("the owner does not date it, or the journal does not say when the mint began, so nothing proves rekey made it".into());
    };
    if created < since - CLOCK_SKEW {
        return Err(format!(
            "it was created at {}, before this mint began ({})",
            created.to_rfc3339(),
            since.to_rfc3339()
        ));
    }
    if let Some(mark) = mark
        && !bears_mark
    {
        return Err(format!("it does not bear rekey's mark `{mark}`"));
    }
    Ok(())
}

/// How a mint ended without a credential.
enum MintFailure {
    /// The owner refused, or kept failing; nothing this run created is left behind.
    GaveUp(ProviderError),
    /// A credential may exist that this run created and could not delete.
    Unsure(String),
    /// The owner answered with the credential in use (its id).
    SameAsOld(String),
    /// The journal or the stash failed.
    Stop(Stop),
}

/// Attempts of a mint (each followed, on a transient error, by a sweep for orphans).
const MINT_ATTEMPTS: u32 = 6;
