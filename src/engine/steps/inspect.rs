//! Step 2, inspect: the live state of the target's principal, which credential the bindings
//! hold now, whether it is due (`plan::due`: the incident, max_age, an earlier rotation by
//! rekey), and whether the plan
//! still matches what CircleCI holds (staleness). Nothing changes here.

use super::progress::{Detail, EventPhase, Step};
use super::runner::{Runner, StepResult, Stop, retry};
use crate::circleci::{CircleCiClient, Masks};
use crate::engine::bindings;
use crate::engine::events::Status;
use crate::engine::target::Outcome;
use crate::plan::due::Verdict;
use crate::plan::{Place, Target};
use crate::providers::{CredentialInfo, Inspection};
use std::collections::BTreeMap;
use std::sync::Arc;

impl Runner<'_> {
    /// Step 2: reads live state; on the first invocation also decides whether the target is
    /// due and whether the plan is stale, and journals the credential in use.
    pub async fn inspect(&mut self) -> StepResult {
        let (ctx, target) = (self.ctx, self.target);
        self.started(Step::Inspect);
        let inspection = match retry(|| self.provider.inspect(target)).await {
            Ok(i) => i,
            Err(e) => return Err(self.incomplete(Step::Inspect, format!("cannot inspect: {e}"))),
        };
        self.principal = inspection.principal.clone();
        self.live = inspection.credentials.clone();
        if !self.progress.has(Step::Inspect) {
            let old = match current_credential(&ctx.circleci, target, &inspection).await {
                Ok(old) => old,
                Err(reason) => return Err(self.fail_untouched(Step::Inspect, reason)),
            };
            // The bindings may hold a credential that an earlier run of rekey minted for this
            // target: the plan was applied before and has done its work (invariant 5).
            let rotated_by = match &old {
                Some(old) => ctx.journal.rotated_earlier(self.id, &old.id)?,
                None => None,
            };
            let verdict = self.due(old.as_ref(), rotated_by.as_deref())?;
            if let Some(Verdict::Skip(reason)) = verdict.clone() {
                self.record(
                    Step::Inspect,
                    EventPhase::Skipped,
                    &Detail {
                        message: Some(reason.clone()),
                        ..Default::default()
                    },
                )?;
                ctx.journal
                    .set_state(self.id, "skipped", None, Some(&reason))?;
                self.emit(Step::Inspect, Status::Skipped, Some(&reason));
                return Err(Stop::End(Outcome::Skipped { reason }));
            }
            // What the plan observed predates rekey's own earlier rotation of this target, so
            // it cannot match; live state is exactly what that run left, which is not
            // staleness.
            if rotated_by.is_none() {
                self.check_stale().await?;
            }
            // Why the target is due, for the report (`TargetReport::due`).
            let detail = Detail {
                old_id: old.as_ref().map(|c| c.id.clone()),
                message: verdict.map(|v| v.reason().to_string()),
                ..Default::default()
            };
            self.record(Step::Inspect, EventPhase::Done, &detail)?;
            self.progress.old_id = detail.old_id;
        }
        self.emit(Step::Inspect, Status::Done, self.progress.old_id.as_deref());
        Ok(())
    }

    /// Whether the credential in use is due (`plan::due`: the incident, max_age, an earlier
    /// rotation by rekey), and why; `None` when no credential is in use.
    fn due(
        &self,
        old: Option<&CredentialInfo>,
        rotated_by: Option<&str>,
    ) -> Result<Option<Verdict>, Stop> {
        match old {
            Some(old) => Ok(Some(self.ctx.due(self.target, old, rotated_by)?)),
            None => Ok(None),
        }
    }

    /// Stops when the plan no longer matches live state (nothing changed), or when live state
    /// could not be read (the next invocation checks again).
    async fn check_stale(&self) -> StepResult {
        match stale(&self.ctx.circleci, self.target).await {
            Ok(None) => Ok(()),
            Ok(Some(reason)) => {
                self.emit(Step::Inspect, Status::Failed, Some(&reason));
                // Shown by `rekey status`; nothing was changed.
                self.ctx
                    .journal
                    .set_state(self.id, "stale", None, Some(&reason))?;
                Err(Stop::End(Outcome::Stale { reason }))
            }
            Err(reason) => Err(self.incomplete(Step::Inspect, reason)),
        }
    }
}

/// The credential the bindings hold now: by the masked last four of the id field in project
/// variables (AWS access key ids), else by a fingerprint the plan observed (checkout keys),
/// else the plan's `principal.key_id`, else the principal's only credential.
pub(crate) async fn current_credential(
    circleci: &CircleCiClient,
    target: &Target,
    inspection: &Inspection,
) -> Result<Option<CredentialInfo>, String> {
    let creds = &inspection.credentials;
    if let Some(field) = target.provider.value.id_field() {
        for binding in &target.bindings {
            let (Some(Place::Project(slug)), Some(var)) = (
                binding.place(),
                binding
                    .vars
                    .iter()
                    .find(|(f, _)| f.as_str() == field)
                    .map(|(_, v)| v),
            ) else {
                continue;
            };
            let masks = circleci
                .shared_project_masks(slug)
                .await
                .map_err(|e| format!("cannot read {slug}: {e}"))?;
            if let Some(last4) = masks.get(var.as_str()) {
                let matching: Vec<&CredentialInfo> = creds
                    .iter()
                    .filter(|c| c.id.ends_with(last4.as_str()))
                    .collect();
                match matching.as_slice() {
                    [one] => return Ok(Some((*one).clone())),
                    [] => {
                        return Err(format!(
                            "{var} in {slug} ends with {last4}, which matches no credential of {}: is principal right?",
                            inspection.principal
                        ));
                    }
                    _ => {}
                }
            }
        }
    }
    // The legacy AWS key pair of project settings shows its key id's last four there.
    for binding in &target.bindings {
        let last4 = bindings::keypair_id_last_four(circleci, binding)
            .await
            .map_err(|e| format!("cannot read {}: {e}", bindings::label(binding)))?;
        if let Some(last4) = last4
            && let [one] = creds
                .iter()
                .filter(|c| c.id.ends_with(&last4))
                .collect::<Vec<_>>()[..]
        {
            return Ok(Some(one.clone()));
        }
    }
    // Keys whose id is their fingerprint (CircleCI checkout keys): the plan observed which one
    // was in use.
    let observed: Vec<&str> = target
        .observed
        .iter()
        .filter_map(|o| o.fingerprint.as_deref())
        .collect();
    if let [one] = creds
        .iter()
        .filter(|c| observed.contains(&c.id.as_str()))
        .collect::<Vec<_>>()
        .as_slice()
    {
        return Ok(Some((*one).clone()));
    }
    if let Some(key_id) = target.principal.key_id() {
        return creds
            .iter()
            .find(|c| c.id == key_id.as_str())
            .cloned()
            .map(Some)
            .ok_or_else(|| {
                format!(
                    "principal.key_id {} is not a credential of {}",
                    key_id.as_str(),
                    inspection.principal
                )
            });
    }
    match creds.as_slice() {
        [] => Ok(None),
        [one] => Ok(Some(one.clone())),
        _ => Err(format!(
            "{} has {} credentials and the bindings do not show which one is in use: set principal.key_id",
            inspection.principal,
            creds.len()
        )),
    }
}

/// Compares what the plan observed with live state: `Ok(Some(description))` when they differ,
/// `Err(why)` when live state could not be read. A read that failed (a 5xx after retries, a
/// 403) says nothing about the plan, so it is not reported as staleness: that would tell the
/// reviewer to re-plan when the cause is CircleCI or the token.
pub(crate) async fn stale(
    circleci: &CircleCiClient,
    target: &Target,
) -> Result<Option<String>, String> {
    let mut unreadable = Vec::new();
    let mut changes = Vec::new();
    let mut project_cache: BTreeMap<String, Arc<Masks>> = BTreeMap::new();
    for obs in &target.observed {
        let Some(var) = &obs.var else { continue };
        match obs.place() {
            Some(Place::Project(slug)) => {
                let Some(masked) = &obs.masked else { continue };
                if !project_cache.contains_key(slug) {
                    match circleci.shared_project_masks(slug).await {
                        Ok(m) => {
                            project_cache.insert(slug.to_string(), m);
                        }
                        Err(e) => {
                            unreadable.push(format!("cannot read {slug}: {e}"));
                            continue;
                        }
                    }
                }
                match project_cache.get(slug).and_then(|m| m.get(var.as_str())) {
                    None => changes.push(format!("{var} is gone from project {slug}")),
                    Some(live) if live != masked.last_four() => changes.push(format!(
                        "{var} in project {slug} now ends with {live}, the plan saw {}",
                        masked.last_four()
                    )),
                    Some(_) => {}
                }
            }
            Some(Place::Context(name)) => {
                let Some(seen) = obs.updated_at else { continue };
                let Some(binding) = target
                    .bindings
                    .iter()
                    .find(|b| b.place() == Some(Place::Context(name)))
                else {
                    continue;
                };
                match bindings::timestamps(circleci, binding).await {
                    Ok(stamps) => {
                        let live = stamps
                            .iter()
                            .find(|(k, _)| k.ends_with(&format!("/{var}")))
                            .map(|(_, v)| *v);
                        match live {
                            None => changes.push(format!("{var} is gone from context {name}")),
                            Some(live) if live != seen => changes.push(format!(
                                "{var} in context {name} was updated at {}, after the plan was made",
                                live.to_rfc3339()
                            )),
                            Some(_) => {}
                        }
                    }
                    Err(e) => unreadable.push(format!("cannot read context {name}: {e}")),
                }
            }
            None => {}
        }
    }
    if !unreadable.is_empty() {
        return Err(format!(
            "cannot compare the plan with live state: {}",
            unreadable.join("; ")
        ));
    }
    Ok((!changes.is_empty()).then(|| changes.join("; ")))
}
