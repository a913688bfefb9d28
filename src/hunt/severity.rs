//! Severity from what a credential normally does. This module owns the action baseline (which
//! rule matched which action of each credential before the incident start) and how it moves a
//! finding's severity away from its rule's level:
//!
//! - the same (rule, action) seen for the credential before the incident start: lowered to
//!   informational — a CI deployer updating its Lambda every day is doing its job;
//! - a rule tagged `rekey.severity.first-seen` whose action the credential never made before,
//!   while it has a baseline: raised to high — the same call from a credential that never made
//!   it is what a stolen key looks like;
//! - otherwise the rule's level, and the reason says whether a baseline existed.
//!
//! Memory follows what is distinct (credentials × rules × actions), not the input.

use super::Severity;
use super::findings::Finding;
use super::pack::RuleSet;
use chrono::{DateTime, Utc};
use std::sync::Arc;

type HashMap<K, V> = std::collections::HashMap<K, V, foldhash::fast::RandomState>;

/// Distinct (rule, action) pairs kept per credential; more are counted only (a credential
/// matching thousands of distinct actions before the incident has no meaningful baseline).
pub const MAX_PAIRS_PER_CREDENTIAL: usize = 10_000;

/// credential → rule id → action → matches before the incident start.
#[derive(Debug, Default)]
pub struct ActionBaseline {
    seen: HashMap<Arc<str>, PerCredential>,
}

#[derive(Debug, Default)]
struct PerCredential {
    pairs: usize,
    rules: HashMap<Arc<str>, HashMap<Arc<str>, u64>>,
}

impl ActionBaseline {
    /// A record before the incident start matched `rule_id` with `action`.
    pub fn observe(&mut self, credential: &Arc<str>, rule_id: &Arc<str>, action: &Arc<str>) {
        self.add(credential, rule_id, action, 1);
    }

    fn add(&mut self, credential: &Arc<str>, rule_id: &Arc<str>, action: &Arc<str>, n: u64) {
        let per = match self.seen.get_mut(credential) {
            Some(p) => p,
            None => self.seen.entry(credential.clone()).or_default(),
        };
        let full = per.pairs >= MAX_PAIRS_PER_CREDENTIAL;
        let actions = match per.rules.get_mut(rule_id) {
            Some(a) => a,
            None if full => return,
            None => per.rules.entry(rule_id.clone()).or_default(),
        };
        if let Some(c) = actions.get_mut(action) {
            *c += n;
        } else if !full {
            actions.insert(action.clone(), n);
            per.pairs += 1;
        }
    }

    pub fn merge(&mut self, other: ActionBaseline) {
        for (cred, per) in other.seen {
            for (rule, actions) in per.rules {
                for (action, n) in actions {
                    self.add(&cred, &rule, &action, n);
                }
            }
        }
    }

    fn count(&self, credential: &str, rule_id: &str, action: &str) -> u64 {
        self.seen
            .get(credential)
            .and_then(|p| p.rules.get(rule_id))
            .and_then(|a| a.get(action))
            .copied()
            .unwrap_or(0)
    }
}

/// Sets every Sigma finding's severity and reason (findings of the baseline checks, which
/// carry a `detail`, keep theirs). `records_before` gives how many records a credential had
/// before `since`: none means no baseline to compare with.
pub fn apply(
    findings: &mut [Finding],
    rules: &RuleSet,
    baseline: &ActionBaseline,
    records_before: &(dyn Fn(&str) -> u64 + Sync),
    since: DateTime<Utc>,
) {
    apply_on(findings, 1, rules, baseline, records_before, since);
}

/// [`apply`] on `threads` threads, each setting a contiguous share of the findings (a verdict
/// depends on the finding alone: any share gives the same severities). On the run's tail,
/// after the workers: one core did it while the other waited.
pub fn apply_on(
    findings: &mut [Finding],
    threads: usize,
    rules: &RuleSet,
    baseline: &ActionBaseline,
    records_before: &(dyn Fn(&str) -> u64 + Sync),
    since: DateTime<Utc>,
) {
    let share = findings.len().div_ceil(threads.max(1)).max(1);
    if threads < 2 || findings.len() < 4096 {
        return apply_one(findings, rules, baseline, records_before, since);
    }
    std::thread::scope(|scope| {
        let mut chunks = findings.chunks_mut(share);
        let mine = chunks.next();
        for chunk in chunks {
            scope.spawn(move || apply_one(chunk, rules, baseline, records_before, since));
        }
        if let Some(chunk) = mine {
            apply_one(chunk, rules, baseline, records_before, since);
        }
    });
}

fn apply_one(
    findings: &mut [Finding],
    rules: &RuleSet,
    baseline: &ActionBaseline,
    records_before: &(dyn Fn(&str) -> u64 + Sync),
    since: DateTime<Utc>,
) {
    let raise: std::collections::HashSet<&str> = rules
        .rules
        .iter()
        .filter(|r| r.raise_first_seen)
        .map(|r| &*r.id)
        .collect();
    let since = since.format("%Y-%m-%dT%H:%M:%SZ").to_string();
    // Findings repeat (credential, rule, action, level): each verdict is worked out (and its
    // reason written) once, then shared. A reason written per finding was a format! per
    // finding on the run's serial tail.
    let mut verdicts: Vec<(Severity, Arc<str>)> = Vec::new();
    let picks: Vec<usize> = {
        type Key<'a> = (Option<&'a str>, &'a str, Option<&'a str>, Severity);
        let mut index: HashMap<Key<'_>, usize> = HashMap::default();
        findings
            .iter()
            .filter(|f| f.detail.is_none())
            .map(|f| {
                let key = (
                    f.credential.as_deref(),
                    &*f.rule_id,
                    f.action.as_deref(),
                    f.severity,
                );
                *index.entry(key).or_insert_with(|| {
                    verdicts.push(verdict(f, &raise, baseline, records_before, &since));
                    verdicts.len() - 1
                })
            })
            .collect()
    };
    let todo = findings.iter_mut().filter(|f| f.detail.is_none());
    for (f, &v) in todo.zip(&picks) {
        if let Some((severity, reason)) = verdicts.get(v) {
            f.severity = *severity;
            f.severity_reason = reason.clone();
        }
    }
}

/// A finding's severity and why, from its rule's level and the credential's baseline.
fn verdict(
    f: &Finding,
    raise: &std::collections::HashSet<&str>,
    baseline: &ActionBaseline,
    records_before: &(dyn Fn(&str) -> u64 + Sync),
    since: &str,
) -> (Severity, Arc<str>) {
    let level = f.severity;
    let (Some(cred), Some(action)) = (f.credential.as_deref(), f.action.as_deref()) else {
        return (level, format!("rule level {level}").into());
    };
    let before = baseline.count(cred, &f.rule_id, action);
    let history = records_before(cred);
    let (severity, reason) = if before > 0 {
        (
            Severity::Informational,
            format!(
                "lowered from {level}: in the credential's baseline ({action} matched this rule {before} time(s) before {since})"
            ),
        )
    } else if raise.contains(&*f.rule_id) && history > 0 {
        if level < Severity::High {
            (
                Severity::High,
                format!(
                    "raised from {level}: {action} first seen for the credential after {since} (none in its {history} earlier record(s))"
                ),
            )
        } else {
            (
                level,
                format!("rule level {level}; {action} first seen for the credential after {since}"),
            )
        }
    } else if history == 0 {
        (
            level,
            format!(
                "rule level {level}; no records of the credential before {since} to compare with"
            ),
        )
    } else {
        (level, format!("rule level {level}"))
    };
    (severity, reason.into())
}
