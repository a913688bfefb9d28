//! The rule of issue 10: rekey's own plan, with every REVIEW-REQUIRED decided, validates, and
//! nothing CircleCI holds is dropped. An Env-Inspector export holding every kind of secret
//! CircleCI stores (project and context variables, deploy and user checkout keys, a deploy key
//! shared by two projects, a project without a checkout key, additional SSH keys for one host
//! and for every host, the legacy AWS key pair, places that could not be read) is planned and
//! written as `rekey plan` writes it; a deterministic script decides every REVIEW-REQUIRED the
//! way a reviewer would; the result must validate without an error, and every place of the
//! inventory must still be in it.

use chrono::Utc;
use rekey::classify::{RuleSet, classify};
use rekey::diagnostic::Severity;
use rekey::inventory::{Inventory, env_inspector};
use rekey::plan::build::{BuildOptions, build};
use rekey::plan::{Place, Plan, REVIEW_REQUIRED, load, validate, write};
use std::collections::BTreeSet;

fn inventory() -> Inventory {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/env-inspector/every-kind.json"
    );
    let text = std::fs::read_to_string(path).unwrap();
    env_inspector::import("every-kind.json", &text, Utc::now()).unwrap()
}

/// What a reviewer decides, mechanically: a command where one is needed, a value of the right
/// shape where a principal field is needed, and every grouping confirmed.
fn decide(yaml: &str) -> String {
    let mut n = 0;
    let mut out = String::with_capacity(yaml.len());
    for line in yaml.lines() {
        let mut line = line.replace(
            &format!("[{REVIEW_REQUIRED}]"),
            "[/opt/hooks/decided, --by, reviewer]",
        );
        while let Some(at) = line.find(REVIEW_REQUIRED) {
            n += 1;
            let key = line[..at]
                .trim_end()
                .trim_end_matches(':')
                .rsplit(|c: char| !(c.is_alphanumeric() || c == '_'))
                .next()
                .unwrap_or("")
                .to_string();
            let value = match key.as_str() {
                "repository" => format!("acme/decided-{n}"),
                "project" => "gh/acme/decided".to_string(),
                "service_account" => format!("decided-{n}@acme.iam.gserviceaccount.com"),
                _ => format!("decided-{n}"),
            };
            line.replace_range(at..at + REVIEW_REQUIRED.len(), &value);
        }
        out.push_str(&line.replace("confirmed: false", "confirmed: true"));
        out.push('\n');
    }
    out
}

fn planned() -> (Inventory, String) {
    let inv = inventory();
    let classification = classify(&inv, &RuleSet::builtin().unwrap());
    let draft = build(&inv, classification, &BuildOptions::default());
    let yaml = write::to_yaml(&draft.plan, &draft.notes).unwrap();
    (inv, yaml)
}

#[test]
fn decided_plan_validates() {
    let (_, yaml) = planned();
    assert!(
        yaml.contains(REVIEW_REQUIRED),
        "the fixture needs decisions"
    );
    let decided = decide(&yaml);
    assert!(!decided.contains(REVIEW_REQUIRED));
    let plan = load::parse("plan.yaml", &decided).unwrap_or_else(|d| panic!("{d}\n{decided}"));
    let errors: Vec<String> = validate::validate("plan.yaml", &decided, &plan)
        .into_iter()
        .filter(|d| d.severity == Severity::Error)
        .map(|d| d.to_string())
        .collect();
    assert!(errors.is_empty(), "{}\n---\n{decided}", errors.join("\n"));

    // Undecided, the same plan is refused, and each refusal names a decision.
    let raw = load::parse("plan.yaml", &yaml).unwrap();
    let undecided = validate::validate("plan.yaml", &yaml, &raw);
    assert!(undecided.iter().any(|d| d.severity == Severity::Error));
}

#[test]
fn nothing_circleci_holds_is_dropped() {
    let (inv, yaml) = planned();
    let decided = decide(&yaml);
    let plan: Plan = load::parse("plan.yaml", &decided).unwrap();

    // Every variable: bound by a target, or listed as ignored or unclassified.
    let mut accounted: BTreeSet<(String, String)> = BTreeSet::new();
    for t in &plan.targets {
        for b in &t.bindings {
            let place = b.place().map(|p| p.to_string()).unwrap_or_default();
            for var in b.vars.values() {
                accounted.insert((place.clone(), var.value.to_string()));
            }
        }
    }
    for f in plan.ignored.iter().chain(&plan.unclassified) {
        accounted.insert((
            f.place().map(|p| p.to_string()).unwrap_or_default(),
            f.var.to_string(),
        ));
    }
    for p in &inv.projects {
        for v in &p.env_vars {
            let key = (Place::Project(&p.slug).to_string(), v.name.to_string());
            assert!(accounted.contains(&key), "dropped: {key:?}");
        }
    }
    for c in &inv.contexts {
        for v in &c.variables {
            let key = (Place::Context(&c.name).to_string(), v.name.to_string());
            assert!(accounted.contains(&key), "dropped: {key:?}");
        }
    }

    // Every checkout key: a target of its project (deploy keys), or reported (user keys); a
    // project without one is reported too.
    let text_of = |slug: &str| -> Vec<String> {
        plan.ignored
            .iter()
            .filter(|f| f.project.as_deref().map(|p| p.as_str()) == Some(slug))
            .map(|f| format!("{} {}", f.var, f.reason))
            .collect()
    };
    for p in &inv.projects {
        for k in &p.checkout_keys {
            let targeted = plan.targets.iter().any(|t| {
                t.principal.project().map(|v| v.as_str()) == Some(p.slug.as_str())
                    && t.observed
                        .iter()
                        .any(|o| o.fingerprint.as_deref() == Some(&k.fingerprint))
            });
            let reported = text_of(&p.slug).iter().any(|t| t.contains(&k.fingerprint));
            assert!(
                targeted || reported,
                "checkout key {} of {} dropped",
                k.fingerprint,
                p.slug
            );
            assert_eq!(
                targeted,
                k.key_type == "deploy-key",
                "{} of {}",
                k.fingerprint,
                p.slug
            );
        }
        let unread = inv.errors.iter().any(|e| e.name == p.slug);
        if p.checkout_keys.is_empty() && !unread {
            assert!(
                text_of(&p.slug)
                    .iter()
                    .any(|t| t.contains("no checkout key")),
                "{} has no checkout key and the plan does not say so",
                p.slug
            );
        }
    }
    let shared: Vec<_> = plan
        .targets
        .iter()
        .filter(|t| {
            t.observed.iter().any(|o| {
                o.fingerprint.as_deref()
                    == Some("SHA256:sharedDeployKey000000000000000000000000000")
            })
        })
        .collect();
    assert_eq!(
        shared.len(),
        2,
        "a deploy key shared by two projects is rotated in each"
    );

    // Every additional SSH key, for its host, in every project that holds it.
    for p in &inv.projects {
        for k in &p.ssh_keys {
            let bound = plan.targets.iter().any(|t| {
                t.provider.value == rekey::plan::ProviderKind::CircleciSshKey
                    && t.observed
                        .iter()
                        .any(|o| o.fingerprint.as_deref() == Some(&k.fingerprint))
                    && t.bindings.iter().any(|b| {
                        b.project.as_deref().map(|p| p.as_str()) == Some(p.slug.as_str())
                            && b.ssh_hostname.as_deref().map(|p| p.as_str())
                                == Some(k.hostname.as_str())
                    })
            });
            assert!(bound, "SSH key {} of {} dropped", k.fingerprint, p.slug);
        }
    }

    // Every legacy AWS key pair, as a binding into the project settings.
    for p in inv.projects.iter().filter(|p| p.legacy_aws_keys.is_some()) {
        let bound = plan.targets.iter().any(|t| {
            t.bindings.iter().any(|b| {
                b.aws_keypair && b.project.as_deref().map(|p| p.as_str()) == Some(p.slug.as_str())
            })
        });
        assert!(bound, "legacy AWS key pair of {} dropped", p.slug);
    }
    assert_eq!(
        inv.projects
            .iter()
            .filter(|p| p.legacy_aws_keys.is_some())
            .count(),
        2,
        "empty strings are no key pair"
    );

    // Every place that could not be read.
    assert_eq!(plan.errors.len(), inv.errors.len());
    assert!(plan.errors.iter().any(|e| e.name == "gh/acme/locked"));
    assert!(plan.errors.iter().any(|e| e.name == "locked-context"));
}
