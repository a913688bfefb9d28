//! The steps of the rotation protocol as the journal names them, and a target's progress
//! folded from its journal events.
//!
//! A step's *intent* is journaled before its side effect and its *done* after it. Folding the
//! events in order gives [`Progress`]: what is known for certain (ids, timestamps) and which
//! step, if any, was interrupted between intent and done, so resume knows what to check.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// One step of the protocol (DESIGN.md, steps 2–12), as named in the journal.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Step {
    Inspect,
    /// The hunts before the rotation (evidence; the plan's `on_findings.pre` policy).
    PreHunt,
    Capacity,
    Mint,
    Verify,
    Write,
    ReadBack,
    Canary,
    Deactivate,
    Grace,
    /// The hunts after the grace period (the old credential used? the new one from where?).
    PostHunt,
    Revoke,
    Done,
    /// Undoing a step after a failure: deleting a new credential that failed verification,
    /// reactivating an old one.
    Rollback,
}

impl Step {
    pub fn as_str(self) -> &'static str {
        match self {
            Step::Inspect => "inspect",
            Step::PreHunt => "pre-hunt",
            Step::Capacity => "capacity",
            Step::Mint => "mint",
            Step::Verify => "verify",
            Step::Write => "write",
            Step::ReadBack => "read-back",
            Step::Canary => "canary",
            Step::Deactivate => "deactivate",
            Step::Grace => "grace",
            Step::PostHunt => "post-hunt",
            Step::Revoke => "revoke",
            Step::Done => "done",
            Step::Rollback => "rollback",
        }
    }

    pub fn parse(name: &str) -> Option<Step> {
        [
            Step::Inspect,
            Step::PreHunt,
            Step::Capacity,
            Step::Mint,
            Step::Verify,
            Step::Write,
            Step::ReadBack,
            Step::Canary,
            Step::Deactivate,
            Step::Grace,
            Step::PostHunt,
            Step::Revoke,
            Step::Done,
            Step::Rollback,
        ]
        .into_iter()
        .find(|s| s.as_str() == name)
    }
}

impl std::fmt::Display for Step {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What a journal record says about a step. Never a secret: ids, timestamps, places, messages.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Detail {
    /// The credential in use before the rotation (the one to deactivate and revoke).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub old_id: Option<String>,
    /// The credential minted by this run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub new_id: Option<String>,
    /// Credential ids the principal had before the mint: anything else found after a crash
    /// during the mint is an orphan of this run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub known_ids: Option<Vec<String>>,
    /// A credential removed to make room under the owner's quota.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub removed_id: Option<String>,
    /// The binding a write or read-back is about (`project gh/acme/api`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub place: Option<String>,
    /// Context variables' `updated_at` before the write, for read-back.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub before: BTreeMap<String, DateTime<Utc>>,
    /// End of the grace period.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub until: Option<DateTime<Utc>>,
    /// Pipeline of the canary.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pipeline: Option<String>,
    /// Why a step failed or was skipped.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// When the step's effect happened (a mint, a deactivation): hunts after the rotation
    /// start their windows here.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub at: Option<DateTime<Utc>>,
    /// How many findings a hunt step reported, and the highest severity among them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub findings: Option<usize>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub severity: Option<String>,
}

/// A journal event as the engine sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct StepEvent {
    pub step: Step,
    pub phase: EventPhase,
    pub detail: Detail,
}

impl StepEvent {
    /// A target's journal records as the engine reads them (records of unknown steps, from a
    /// newer rekey, are left out).
    pub fn from_journal(events: Vec<crate::engine::journal::Event>) -> Vec<StepEvent> {
        use crate::engine::journal::Phase;
        events
            .into_iter()
            .filter_map(|e| {
                let step = Step::parse(&e.step)?;
                let phase = match e.phase {
                    Phase::Intent => EventPhase::Intent,
                    Phase::Done => EventPhase::Done,
                    Phase::Failed => EventPhase::Failed,
                    Phase::Skipped => EventPhase::Skipped,
                };
                let detail: Detail = serde_json::from_value(e.detail).unwrap_or_default();
                Some(StepEvent {
                    step,
                    phase,
                    detail,
                })
            })
            .collect()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventPhase {
    Intent,
    Done,
    Failed,
    Skipped,
}

/// Everything the journal proves about one target of a run.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Progress {
    pub old_id: Option<String>,
    pub new_id: Option<String>,
    pub known_ids: Option<Vec<String>>,
    pub before: BTreeMap<String, DateTime<Utc>>,
    /// Steps with a `done` record (a write counts once per place, see `written`).
    pub done: Vec<Step>,
    /// Places whose write is done.
    pub written: Vec<String>,
    pub grace_until: Option<DateTime<Utc>>,
    /// When the last mint began (its intent): what an owner dates earlier is not its work.
    pub mint_began: Option<DateTime<Utc>>,
    /// When the new credential was minted and the old one disabled.
    pub minted_at: Option<DateTime<Utc>>,
    pub deactivated_at: Option<DateTime<Utc>>,
    /// A step whose intent has no done/failed record: interrupted by a crash.
    pub interrupted: Option<(Step, Detail)>,
    /// The target ended (done, or rolled back after a failed verification).
    pub finished: bool,
}

impl Progress {
    pub fn fold<'a>(events: impl IntoIterator<Item = &'a StepEvent>) -> Progress {
        let mut p = Progress::default();
        for e in events {
            let d = &e.detail;
            if d.old_id.is_some() {
                p.old_id.clone_from(&d.old_id);
            }
            if d.new_id.is_some() && e.step != Step::Rollback {
                p.new_id.clone_from(&d.new_id);
            }
            if d.known_ids.is_some() {
                p.known_ids.clone_from(&d.known_ids);
            }
            if d.until.is_some() {
                p.grace_until = d.until;
            }
            if e.phase == EventPhase::Intent && e.step == Step::Mint {
                p.mint_began = d.at;
            }
            if e.phase == EventPhase::Done && d.at.is_some() {
                match e.step {
                    Step::Mint => p.minted_at = d.at,
                    Step::Deactivate => p.deactivated_at = d.at,
                    _ => {}
                }
            }
            for (k, v) in &d.before {
                p.before.insert(k.clone(), *v);
            }
            match e.phase {
                EventPhase::Intent => p.interrupted = Some((e.step, d.clone())),
                // A skipped inspection (credential younger than max_age, already rotated)
                // left the target alone: it proves nothing, and a later invocation of the same
                // run must inspect again rather than go on to mint without an old credential.
                EventPhase::Skipped if e.step == Step::Inspect => p.interrupted = None,
                EventPhase::Done | EventPhase::Skipped => {
                    p.interrupted = None;
                    if e.step == Step::Write {
                        if let Some(place) = &d.place
                            && !p.written.contains(place)
                        {
                            p.written.push(place.clone());
                        }
                    } else if !p.done.contains(&e.step) {
                        p.done.push(e.step);
                    }
                    if e.step == Step::Done {
                        p.finished = true;
                    }
                    if e.step == Step::Rollback && d.new_id.is_some() {
                        // The new credential was deleted: this run minted nothing that lives.
                        p.new_id = None;
                        p.finished = true;
                    }
                }
                EventPhase::Failed => {
                    p.interrupted = None;
                    // A write that failed, or that read-back found missing or wrong, must be
                    // written again: forget any earlier success for that place.
                    if e.step == Step::Write
                        && let Some(place) = &d.place
                    {
                        p.written.retain(|w| w != place);
                    }
                }
            }
        }
        p
    }

    pub fn has(&self, step: Step) -> bool {
        self.done.contains(&step)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(step: Step, phase: EventPhase, detail: Detail) -> StepEvent {
        StepEvent {
            step,
            phase,
            detail,
        }
    }

    #[test]
    fn folds_ids_and_interruptions() {
        let events = vec![
            ev(
                Step::Inspect,
                EventPhase::Done,
                Detail {
                    old_id: Some("OLD".into()),
                    ..Default::default()
                },
            ),
            ev(
                Step::Mint,
                EventPhase::Intent,
                Detail {
                    known_ids: Some(vec!["OLD".into()]),
                    ..Default::default()
                },
            ),
        ];
        let p = Progress::fold(&events);
        assert_eq!(p.old_id.as_deref(), Some("OLD"));
        assert_eq!(p.interrupted.as_ref().map(|i| i.0), Some(Step::Mint));
        assert!(!p.has(Step::Mint));

        let mut events = events;
        events.push(ev(
            Step::Mint,
            EventPhase::Done,
            Detail {
                new_id: Some("NEW".into()),
                ..Default::default()
            },
        ));
        events.push(ev(
            Step::Write,
            EventPhase::Done,
            Detail {
                place: Some("project a".into()),
                ..Default::default()
            },
        ));
        let p = Progress::fold(&events);
        assert!(p.interrupted.is_none());
        assert_eq!(p.new_id.as_deref(), Some("NEW"));
        assert_eq!(p.written, vec!["project a".to_string()]);
    }
}
