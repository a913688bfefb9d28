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
    records_before: &dyn Fn(&str) -> u64,
    since: DateTime<Utc>,
) {
    let raise: std::collections::HashSet<&str> = rules
        .rules
        .iter()
        .filter(|r| r.raise_first_seen)
        .map(|r| &*r.id)
        .collect();
    let since = since.format("%Y-%m-%dT%H:%M:%SZ").to_string();
    let mut reasons: HashMap<String, Arc<str>> = HashMap::default();
    let mut intern = |s: String| -> Arc<str> {
        reasons
            .entry(s)
            .or_insert_with_key(|s| Arc::from(s.as_str()))
            .clone()
    };
    for f in findings.iter_mut().filter(|f| f.detail.is_none()) {
        let (Some(cred), Some(action)) = (f.credential.as_deref(), f.action.as_deref()) else {
            f.severity_reason = intern(format!("rule level {}", f.severity));
            continue;
        };
        let before = baseline.count(cred, &f.rule_id, action);
        let history = records_before(cred);
        if before > 0 {
            f.severity_reason = intern(format!(
                "lowered from {}: in the credential's baseline ({action} matched this rule {before} time(s) before {since})",
                f.severity
            ));
            f.severity = Severity::Informational;
        } else if raise.contains(&*f.rule_id) && history > 0 {
            if f.severity < Severity::High {
                f.severity_reason = intern(format!(
                    "raised from {}: {action} first seen for the credential after {since} (none in its {history} earlier record(s))",
                    f.severity
                ));
                f.severity = Severity::High;
            } else {
                f.severity_reason = intern(format!(
                    "rule level {}; {action} first seen for the credential after {since}",
                    f.severity
                ));
            }
        } else if history == 0 {
            f.severity_reason = intern(format!(
                "rule level {}; no records of the credential before {since} to compare with",
                f.severity
            ));
        } else {
            f.severity_reason = intern(format!("rule level {}", f.severity));
        }
    }
}
