//! Classification: from an [`Inventory`] to candidate rotation targets.
//!
//! This module owns the rules that say which variable names (and masked shapes) hold which
//! credential, and the grouping of one credential's places into one target. Its output,
//! [`Classification`], is what the planner turns into a plan; it lists every variable it did
//! not turn into a target (ignored as configuration, or unclassified for review), so nothing
//! is dropped silently.
//!
//! - [`rules`]: the rule format (YAML; the built-in set is `rules.yaml`), loading and compiling;
//! - `vars`: variables to credentials, and grouping across places;
//! - `keys`: checkout keys, additional SSH keys and the legacy AWS key pair, found by place;
//! - [`synthetic`]: a generated inventory for benchmarks and tests.
//!
//! Output order never depends on inventory order: targets by provider then id, bindings by
//! place, findings by place then variable.

pub mod keys;
pub mod rules;
pub mod synthetic;
mod vars;

pub use keys::{LEGACY_AWS_ACCESS_KEY_ID, LEGACY_AWS_SECRET_ACCESS_KEY};
pub use rules::{ClassifyError, RuleSet};

use crate::inventory::Inventory;
use crate::plan::{Finding, Located, Place, Target, Text};
use std::collections::HashSet;

/// What classification found in an inventory.
#[derive(Debug, Clone, PartialEq)]
pub struct Classification {
    /// Candidate targets, sorted by provider then id.
    pub targets: Vec<Candidate>,
    /// Variables recognised as configuration, not secrets (sorted by place then variable).
    pub ignored: Vec<Finding>,
    /// Variables no rule turned into a target, each with why (sorted by place then variable).
    pub unclassified: Vec<Finding>,
}

/// A target the planner proposes, with the rule that made it and why.
#[derive(Debug, Clone, PartialEq)]
pub struct Candidate {
    pub target: Target,
    /// Name of the rule (or built-in place kind, e.g. `circleci-checkout-key`) that matched.
    pub rule: Text,
    /// One sentence for the plan comment: what the credential is and why its places were grouped.
    pub reason: String,
}

/// Classifies every variable and key of `inv` with `rules`.
pub fn classify(inv: &Inventory, rules: &RuleSet) -> Classification {
    let mut out = Output::default();
    vars::classify_vars(inv, rules, &mut out);
    keys::classify_keys(inv, &mut out);
    let targets = sorted_by(assign_ids(out.drafts), |a, b| {
        (a.target.provider.value, a.target.id.as_str())
            .cmp(&(b.target.provider.value, b.target.id.as_str()))
    });
    // Keys are reported beside variables: one order for both (place, then name).
    let mut ignored = out.ignored;
    ignored.sort_by(|a, b| (a.place(), &a.var).cmp(&(b.place(), &b.var)));
    Classification {
        targets,
        ignored,
        unclassified: out.unclassified,
    }
}

/// `items` in the order of `cmp` (stable), each item moved once: a candidate is large, and a
/// sort of the items themselves copied them O(n log n) times (about a tenth of `rekey plan`
/// at 190,000 targets); here an order of indices is sorted instead, then followed in place
/// (a second array of the items was 145 MB at that size).
fn sorted_by<T>(mut items: Vec<T>, cmp: impl Fn(&T, &T) -> std::cmp::Ordering) -> Vec<T> {
    let mut order: Vec<usize> = (0..items.len()).collect();
    order.sort_by(|&a, &b| cmp(&items[a], &items[b]));
    // Position k takes the item at order[k]: each cycle of the permutation is a chain of
    // swaps, and a position is done once its cycle has been followed (marked usize::MAX).
    for start in 0..order.len() {
        let mut k = start;
        while order[k] != usize::MAX {
            let from = std::mem::replace(&mut order[k], usize::MAX);
            if from == start {
                break;
            }
            items.swap(k, from);
            k = from;
        }
    }
    items
}

/// What the passes accumulate; drafts get their ids once every target is known.
#[derive(Default)]
pub(crate) struct Output {
    pub drafts: Vec<Draft>,
    pub ignored: Vec<Finding>,
    pub unclassified: Vec<Finding>,
}

/// A target before its id is chosen: ids must be unique across all targets.
pub(crate) struct Draft {
    pub target: Target,
    /// The id's words from the rule and the credential's distinguishing name parts.
    pub base: Text,
    /// Whether `base` already tells this credential apart; if not, a place is appended.
    pub distinct: bool,
    /// Kebab-case name of the first place (last segment of a project slug, or context name).
    pub place_token: Text,
    pub rule: Text,
    pub reason: String,
}

/// The words a place contributes to an id: `gh/acme/api` → `api`, context `AWS prod` → `aws-prod`.
pub(crate) fn place_token(place: Place) -> Text {
    match place {
        Place::Project(slug) => rules::kebab(slug.rsplit('/').next().unwrap_or(slug)),
        Place::Context(name) => rules::kebab(name),
    }
    .into()
}

/// `base` followed by the place's words it does not already have: `aws` + `aws-prod` → `aws-prod`.
fn with_place(base: &str, place: &str) -> String {
    let mut id = base.to_string();
    for word in place.split('-').filter(|w| !w.is_empty()) {
        if !id.split('-').any(|w| w == word) {
            if !id.is_empty() {
                id.push('-');
            }
            id.push_str(word);
        }
    }
    id
}

/// Unique, readable ids: the base; a place when the base does not distinguish the credential or
/// when two credentials share a base; then `-2`, `-3`… in a content-derived order.
fn assign_ids(drafts: Vec<Draft>) -> Vec<Candidate> {
    let mut ids: Vec<String> = drafts
        .iter()
        .map(|d| {
            if d.distinct {
                d.base.to_string()
            } else {
                with_place(&d.base, &d.place_token)
            }
        })
        .collect();
    // Maps borrow the ids (190,000 of them): counted, never copied.
    let shared: Vec<usize> = {
        let count = counts(&ids);
        (0..ids.len())
            .filter(|&i| count.get(ids[i].as_str()).is_some_and(|&n| n > 1))
            .collect()
    };
    for i in shared {
        ids[i] = with_place(&ids[i], &drafts[i].place_token);
    }

    // Remaining duplicates are numbered in an order that depends only on the targets' content.
    // An id held once keeps it; only the duplicates need that order.
    let renamed: Vec<(usize, String)> = {
        let seen = counts(&ids);
        let mut order: Vec<usize> = (0..drafts.len())
            .filter(|&i| seen.get(ids[i].as_str()).is_some_and(|&n| n > 1))
            .collect();
        let key = |i: usize| {
            let d = &drafts[i];
            let first_obs = d.target.observed.first();
            (
                &ids[i],
                d.target.provider.value,
                d.target.bindings.first().and_then(|b| b.place()),
                first_obs.and_then(|o| o.place()),
                first_obs.and_then(|o| o.var.as_deref().or(o.fingerprint.as_deref())),
                &d.rule,
            )
        };
        order.sort_by(|&a, &b| key(a).cmp(&key(b)));
        // Taken: every id held once, and each number given so far.
        let mut given: HashSet<String> = HashSet::new();
        let mut renamed = Vec::with_capacity(order.len());
        for &i in &order {
            let id = &ids[i];
            let mut candidate = id.clone();
            let mut n = 1;
            while seen.get(candidate.as_str()) == Some(&1) || given.contains(&candidate) {
                n += 1;
                candidate = format!("{id}-{n}");
            }
            given.insert(candidate.clone());
            renamed.push((i, candidate));
        }
        renamed
    };
    for (i, id) in renamed {
        ids[i] = id;
    }

    drafts
        .into_iter()
        .zip(ids)
        .map(|(mut d, id)| {
            d.target.id = Located::new(id);
            Candidate {
                target: d.target,
                rule: d.rule,
                reason: d.reason,
            }
        })
        .collect()
}

/// How many times each id occurs.
fn counts(ids: &[String]) -> vars::FxMap<&str, usize> {
    let mut count = vars::FxMap::default();
    count.reserve(ids.len());
    for id in ids {
        *count.entry(id.as_str()).or_default() += 1;
    }
    count
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::inventory::{Context, ContextVar, InventorySource, Masked, Project, ProjectVar};
    use crate::plan::Confidence;

    fn project(slug: &str, vars: &[(&str, &str)]) -> Project {
        Project {
            slug: slug.into(),
            env_vars: vars
                .iter()
                .map(|(n, m)| ProjectVar {
                    name: (*n).into(),
                    masked: Masked::new(m),
                    created_at: None,
                })
                .collect(),
            checkout_keys: vec![],
            ssh_keys: vec![],
            legacy_aws_keys: None,
        }
    }

    fn inventory(projects: Vec<Project>, contexts: Vec<Context>) -> Inventory {
        Inventory {
            source: InventorySource::CircleciApi,
            org: None,
            taken_at: chrono::DateTime::UNIX_EPOCH,
            projects,
            contexts,
            errors: vec![],
        }
    }

    fn ids(c: &Classification) -> Vec<&str> {
        c.targets.iter().map(|t| t.target.id.as_str()).collect()
    }

    #[test]
    fn sorted_by_is_a_stable_sort() {
        // Several cycles, fixed points and equal keys (their input order kept).
        let items: Vec<(u32, usize)> = [5, 3, 9, 3, 1, 5, 0, 7, 3, 2, 8, 1]
            .into_iter()
            .enumerate()
            .map(|(i, k)| (k, i))
            .collect();
        let mut want = items.clone();
        want.sort_by_key(|&(k, _)| k);
        assert_eq!(sorted_by(items, |a, b| a.0.cmp(&b.0)), want);
        assert!(sorted_by(Vec::<u8>::new(), |a, b| a.cmp(b)).is_empty());
    }

    #[test]
    fn classify_same_place_word_in_two_orgs_is_numbered() {
        let pair = |m| [("AWS_ACCESS_KEY_ID", m), ("AWS_SECRET_ACCESS_KEY", m)];
        let inv = inventory(
            vec![
                project("gh/b/api", &pair("xxxxBBBB")),
                project("gh/a/api", &pair("xxxxAAAA")),
            ],
            vec![],
        );
        let c = classify(&inv, &RuleSet::builtin().unwrap());
        assert_eq!(ids(&c), ["aws-api", "aws-api-2"]);
        // Numbering follows content (the place), not inventory order.
        assert_eq!(
            c.targets[0].target.bindings[0]
                .project
                .as_deref()
                .map(|p| p.as_str()),
            Some("gh/a/api")
        );
    }

    #[test]
    fn classify_shape_conditions_never_match_context_variables() {
        let ctx = Context {
            id: "c".into(),
            name: "keys".into(),
            created_at: None,
            variables: vec![ContextVar {
                name: "SIGNING_KEY".into(),
                created_at: None,
                updated_at: None,
            }],
        };
        let inv = inventory(
            vec![project(
                "gh/a/web",
                &[("SIGNING_KEY", "xxxx----"), ("TLS_KEY", "xxxxabcd")],
            )],
            vec![ctx],
        );
        let c = classify(&inv, &RuleSet::builtin().unwrap());
        assert_eq!(ids(&c), ["private-key-signing"]);
        let unclassified: Vec<_> = c
            .unclassified
            .iter()
            .map(|f| (f.place().map(|p| p.to_string()), f.var.as_str()))
            .collect();
        assert_eq!(
            unclassified,
            [
                (Some("project gh/a/web".into()), "TLS_KEY"),
                (Some("context keys".into()), "SIGNING_KEY")
            ]
        );
    }

    #[test]
    fn classify_a_second_variable_for_a_filled_field_is_reported() {
        let user = RuleSet::from_yaml(
            "credentials:\n  - name: acme\n    provider: exec\n    description: Acme token\n    fields:\n      token: {var: '^(?:ACME|ACME_CI)_TOKEN$'}\n",
            "user.yaml",
        )
        .unwrap();
        let rules = RuleSet::builtin().unwrap().extend(user);
        let inv = inventory(
            vec![project(
                "gh/a/web",
                &[("ACME_TOKEN", "xxxx1111"), ("ACME_CI_TOKEN", "xxxx2222")],
            )],
            vec![],
        );
        let c = classify(&inv, &rules);
        // Name order decides: ACME_CI_TOKEN < ACME_TOKEN.
        assert_eq!(c.targets.len(), 1);
        assert_eq!(
            c.targets[0].target.bindings[0]
                .vars
                .values()
                .next()
                .map(|v| v.as_str()),
            Some("ACME_CI_TOKEN")
        );
        assert_eq!(c.unclassified.len(), 1);
        assert_eq!(
            c.unclassified[0].reason,
            "a second Acme token (token) in this place: ACME_CI_TOKEN is already used for it"
        );
    }

    #[test]
    fn classify_single_context_keeps_rule_confidence_several_do_not() {
        let ctx = |name: &str| Context {
            id: format!("id-{name}"),
            name: name.into(),
            created_at: None,
            variables: vec![ContextVar {
                name: "NPM_TOKEN".into(),
                created_at: None,
                updated_at: None,
            }],
        };
        let rules = RuleSet::builtin().unwrap();
        let one = classify(&inventory(vec![], vec![ctx("a")]), &rules);
        assert_eq!(
            (
                one.targets[0].target.confidence,
                one.targets[0].target.confirmed
            ),
            (Confidence::High, true)
        );
        let two = classify(&inventory(vec![], vec![ctx("b"), ctx("a")]), &rules);
        assert_eq!(two.targets.len(), 1);
        assert_eq!(
            (
                two.targets[0].target.confidence,
                two.targets[0].target.confirmed
            ),
            (Confidence::Medium, false)
        );
    }
}
