//! `rekey apply PLAN --refresh`: when live state no longer matches what a plan observed (a
//! variable changed after planning), record the live state in the plan's `observed` entries and
//! write the result for a new review — like Terraform's refresh-only plan. Nothing is rotated.

use super::model::{Place, Plan};
use crate::circleci::CircleCiClient;
use std::collections::BTreeMap;

/// Brings every `observed` entry of `plan` up to date with CircleCI; returns one line per change.
pub async fn refresh_observed(
    plan: &mut Plan,
    circleci: &CircleCiClient,
) -> Result<Vec<String>, String> {
    let mut changes = Vec::new();
    let mut masks: BTreeMap<String, BTreeMap<String, String>> = BTreeMap::new();
    for target in &mut plan.targets {
        let bindings = target.bindings.clone();
        for obs in &mut target.observed {
            let Some(var) = obs.var.clone() else { continue };
            match obs.place() {
                Some(Place::Project(slug)) => {
                    let slug = slug.to_string();
                    if !masks.contains_key(&slug) {
                        let live = circleci
                            .project_masks(&slug)
                            .await
                            .map_err(|e| format!("cannot read {slug}: {e}"))?;
                        masks.insert(slug.clone(), live);
                    }
                    let live = masks.get(&slug).and_then(|m| m.get(var.as_str())).cloned();
                    let seen = obs.masked.as_ref().map(|m| m.last_four().to_string());
                    if live != seen {
                        changes.push(format!(
                            "{}: {var} in project {slug}: {} → {}",
                            target.id.as_str(),
                            seen.as_deref()
                                .map(|s| format!("xxxx{s}"))
                                .unwrap_or_else(|| "absent".into()),
                            live.as_deref()
                                .map(|s| format!("xxxx{s}"))
                                .unwrap_or_else(|| "absent".into())
                        ));
                        obs.masked = live.map(|l| crate::inventory::Masked::new(&l));
                    }
                }
                Some(Place::Context(name)) => {
                    let name = name.to_string();
                    let Some(binding) = bindings
                        .iter()
                        .find(|b| b.place() == Some(Place::Context(&name)))
                    else {
                        continue;
                    };
                    let Some(context_id) = binding.context_id.as_deref() else {
                        return Err(format!(
                            "context {name}: a context binding needs `context_id` (CircleCI addresses contexts by id)"
                        ));
                    };
                    let stamps = circleci
                        .context_stamps(context_id)
                        .await
                        .map_err(|e| format!("context {name}: {e}"))?;
                    // Only the binding's own variables count, as the engine compares them.
                    let live = stamps
                        .get(var.as_str())
                        .filter(|_| binding.vars.values().any(|v| v.as_str() == var))
                        .copied();
                    if live != obs.updated_at {
                        changes.push(format!(
                            "{}: {var} in context {name}: updated {} → {}",
                            target.id.as_str(),
                            obs.updated_at
                                .map(|t| t.to_rfc3339())
                                .unwrap_or_else(|| "never".into()),
                            live.map(|t| t.to_rfc3339())
                                .unwrap_or_else(|| "absent".into())
                        ));
                        obs.updated_at = live;
                    }
                }
                None => {}
            }
        }
    }
    Ok(changes)
}
