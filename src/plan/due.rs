//! Whether a credential is due: the one rule shared by `apply` and its dry run (DESIGN.md,
//! "Incident and schedule").
//!
//! In an **incident** (`incident:` present) every credential created before `incident.until`
//! (before now while the incident is open) is due whatever its age, and so is one that cannot
//! be dated: it may have been exposed. On a **schedule** (`max_age`) a credential older than
//! `max_age` is due. A plan may say both; a credential is due when either says so. A credential
//! that rekey itself minted after the incident began remediated it, so only `max_age` (or
//! `--ignore-max-age`) makes it due again: applying an incident plan twice rotates once.
//!
//! Every verdict carries its reason, in words a reviewer reads in the dry run and the report.

use super::PlanDuration;
use super::model::Incident;
use chrono::{DateTime, Utc};

/// What is known about the credential the bindings hold now.
#[derive(Debug, Clone, Copy)]
pub struct Facts<'a> {
    /// Its public id, for the reason (`AKIA…`, a key name).
    pub credential: &'a str,
    /// When it was created: the owner's date, else when an earlier run of rekey minted it.
    pub created_at: Option<DateTime<Utc>>,
    /// The earlier run of rekey that minted it, if one did.
    pub minted_by_run: Option<&'a str>,
}

/// The plan's say: its incident (if any), the target's `max_age`, and the operator's override.
#[derive(Debug, Clone, Copy)]
pub struct Rule<'a> {
    pub incident: Option<&'a Incident>,
    pub max_age: Option<PlanDuration>,
    /// `--ignore-max-age`: rotate whatever the age.
    pub ignore_max_age: bool,
}

/// Due (with why) or not due (with why).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Due(String),
    Skip(String),
}

impl Verdict {
    pub fn reason(&self) -> &str {
        match self {
            Verdict::Due(r) | Verdict::Skip(r) => r,
        }
    }
}

fn rfc3339(at: DateTime<Utc>) -> String {
    at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

fn age(now: DateTime<Utc>, created: DateTime<Utc>) -> PlanDuration {
    PlanDuration((now - created).num_seconds().max(0) as u64)
}

/// Decides whether the credential described by `facts` is due under `rule` at `now`.
pub fn decide(rule: Rule<'_>, facts: Facts<'_>, now: DateTime<Utc>) -> Verdict {
    let cred = facts.credential;
    if rule.ignore_max_age {
        return Verdict::Due(format!(
            "--ignore-max-age: {cred} is rotated whatever its age"
        ));
    }
    // rekey's own credential, minted once the incident had begun: that run was the remedy.
    let remedied = facts.minted_by_run.is_some()
        && match (rule.incident, facts.created_at) {
            (Some(incident), Some(created)) => created >= incident.since.value,
            _ => true,
        };
    let mut after_incident = None;
    if let Some(incident) = rule.incident
        && !remedied
    {
        let until = incident.until.as_ref().map(|u| u.value);
        let window_end = match until {
            Some(u) => format!("before the incident ended ({})", rfc3339(u)),
            None => "while the incident is open (no incident.until)".to_string(),
        };
        match facts.created_at {
            Some(created) if until.is_some_and(|u| created >= u) => {
                after_incident = until;
            }
            Some(created) => {
                return Verdict::Due(format!(
                    "incident: {cred} was created {}, {window_end}",
                    rfc3339(created)
                ));
            }
            None => {
                return Verdict::Due(format!(
                    "incident: {cred} has no creation date, so it may have been exposed"
                ));
            }
        }
    }
    let after = after_incident
        .map(|u| format!(", created after the incident ended ({})", rfc3339(u)))
        .unwrap_or_default();
    let by_run = match (remedied, facts.minted_by_run) {
        (true, Some(run)) => format!(" (rotated by run {run})"),
        _ => String::new(),
    };
    match (rule.max_age, facts.created_at) {
        (Some(max_age), Some(created)) => {
            let age = age(now, created);
            if age.seconds() < max_age.seconds() {
                Verdict::Skip(format!(
                    "{cred}{by_run} is {age} old, younger than max_age {max_age}{after}"
                ))
            } else {
                Verdict::Due(format!(
                    "schedule: {cred}{by_run} is {age} old, older than max_age {max_age}"
                ))
            }
        }
        (Some(max_age), None) => Verdict::Due(format!(
            "schedule: {cred} has no creation date to compare with max_age {max_age}"
        )),
        (None, _) if remedied => Verdict::Skip(format!(
            "already rotated by run {}: the bindings hold {cred}, which that run minted (set max_age to rotate on a schedule, or pass --ignore-max-age to rotate again now)",
            facts.minted_by_run.unwrap_or_default()
        )),
        (None, _) if after_incident.is_some() => {
            Verdict::Skip(format!("{cred}{after}, and the plan sets no max_age"))
        }
        (None, _) => Verdict::Due(format!(
            "{cred}: the plan has neither an incident nor a max_age, so every credential is rotated"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::Located;
    use chrono::TimeZone;

    fn at(y: i32, m: u32, d: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(y, m, d, 0, 0, 0)
            .single()
            .unwrap_or_default()
    }

    fn incident(until: Option<DateTime<Utc>>) -> Incident {
        Incident {
            since: Located::new(at(2022, 12, 21)),
            until: until.map(Located::new),
        }
    }

    fn facts(created: DateTime<Utc>) -> Facts<'static> {
        Facts {
            credential: "AKIAOLD",
            created_at: Some(created),
            minted_by_run: None,
        }
    }

    const NOW: fn() -> DateTime<Utc> = || at(2023, 1, 10);

    #[test]
    fn incident_rotates_a_young_credential_that_max_age_would_skip() {
        let inc = incident(Some(at(2023, 1, 4)));
        let rule = Rule {
            incident: Some(&inc),
            max_age: Some(PlanDuration::from_days(90)),
            ignore_max_age: false,
        };
        let v = decide(rule, facts(at(2023, 1, 2)), NOW());
        assert!(
            matches!(&v, Verdict::Due(r) if r.contains("before the incident ended")),
            "{v:?}"
        );
        // Without the incident, the schedule alone skips it.
        let v = decide(
            Rule {
                incident: None,
                ..rule
            },
            facts(at(2023, 1, 2)),
            NOW(),
        );
        assert!(
            matches!(&v, Verdict::Skip(r) if r.contains("younger than max_age")),
            "{v:?}"
        );
    }

    #[test]
    fn max_age_rotates_an_old_credential_created_after_the_incident() {
        let inc = incident(Some(at(2022, 1, 31)));
        let rule = Rule {
            incident: Some(&inc),
            max_age: Some(PlanDuration::from_days(90)),
            ignore_max_age: false,
        };
        // Created after `until`, but older than max_age: the schedule says due.
        let v = decide(rule, facts(at(2022, 6, 1)), NOW());
        assert!(
            matches!(&v, Verdict::Due(r) if r.contains("older than max_age")),
            "{v:?}"
        );
        // Created after `until` and young: neither says due.
        let v = decide(rule, facts(at(2023, 1, 5)), NOW());
        assert!(
            matches!(&v, Verdict::Skip(r) if r.contains("after the incident ended")),
            "{v:?}"
        );
    }

    #[test]
    fn an_open_incident_rotates_everything_but_its_own_remedy() {
        let inc = incident(None);
        let rule = Rule {
            incident: Some(&inc),
            max_age: None,
            ignore_max_age: false,
        };
        let v = decide(rule, facts(at(2023, 1, 9)), NOW());
        assert!(
            matches!(&v, Verdict::Due(r) if r.contains("incident is open")),
            "{v:?}"
        );
        let undated = Facts {
            created_at: None,
            ..facts(NOW())
        };
        assert!(matches!(decide(rule, undated, NOW()), Verdict::Due(_)));
        let remedy = Facts {
            minted_by_run: Some("r1"),
            ..facts(at(2023, 1, 9))
        };
        let v = decide(rule, remedy, NOW());
        assert!(
            matches!(&v, Verdict::Skip(r) if r.contains("already rotated by run r1")),
            "{v:?}"
        );
        // rekey's own rotation from before the incident was exposed like any other credential.
        let exposed = Facts {
            minted_by_run: Some("r0"),
            ..facts(at(2022, 6, 1))
        };
        assert!(matches!(decide(rule, exposed, NOW()), Verdict::Due(_)));
        let forced = Rule {
            ignore_max_age: true,
            ..rule
        };
        assert!(matches!(decide(forced, remedy, NOW()), Verdict::Due(_)));
    }
}
