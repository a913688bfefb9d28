//! Keys and settings that are not variables: checkout keys, additional SSH keys and the legacy
//! AWS key pair of project settings. They are recognised by where they are, not by a name, so
//! they need no rules; each becomes a draft target like the variable credentials.

use super::vars::review_commands;
use super::{Draft, Output, place_token};
use crate::inventory::{Inventory, Masked, Project};
use crate::plan::{
    Binding, Confidence, Located, Observed, Place, Principal, ProviderKind, REVIEW_REQUIRED, Target,
};
use std::collections::{BTreeMap, HashMap};

/// Pseudo-variable naming the access key id of a project's legacy AWS key pair in a binding.
/// It is not a CircleCI environment variable: the pair lives in the project settings.
pub const LEGACY_AWS_ACCESS_KEY_ID: &str = "LEGACY_AWS_ACCESS_KEY_ID";
/// Pseudo-variable naming the secret of a project's legacy AWS key pair (see above).
pub const LEGACY_AWS_SECRET_ACCESS_KEY: &str = "LEGACY_AWS_SECRET_ACCESS_KEY";

pub(crate) fn classify_keys(inv: &Inventory, out: &mut Output) {
    checkout_keys(inv, out);
    ssh_keys(inv, out);
    legacy_aws(inv, out);
}

fn observed_key(slug: &str, fingerprint: &str) -> Observed {
    Observed {
        project: Some(Located::new(slug.to_string())),
        context: None,
        var: None,
        masked: None,
        updated_at: None,
        fingerprint: Some(fingerprint.to_string()),
    }
}

fn target(provider: ProviderKind, confidence: Confidence, principal: Principal) -> Target {
    Target {
        id: Located::new(String::new()),
        provider: Located::new(provider),
        confidence,
        confirmed: true,
        principal,
        bindings: Vec::new(),
        observed: Vec::new(),
        policy: Default::default(),
        exec: None,
    }
}

/// Each checkout key is its own credential: CircleCI mints one per project.
fn checkout_keys(inv: &Inventory, out: &mut Output) {
    for project in &inv.projects {
        for key in &project.checkout_keys {
            let principal = Principal {
                project: Some(Located::new(project.slug.clone())),
                ..Default::default()
            };
            let mut t = target(
                ProviderKind::CircleciCheckoutKey,
                Confidence::High,
                principal,
            );
            t.observed
                .push(observed_key(&project.slug, &key.fingerprint));
            let preferred = if key.preferred { ", preferred" } else { "" };
            // A user key acts as a person on GitHub; its id says so.
            let base = if key.key_type == "deploy-key" {
                "circleci-checkout-key"
            } else {
                "circleci-checkout-key-user"
            };
            out.drafts.push(Draft {
                target: t,
                base: base.into(),
                distinct: false,
                place_token: place_token(Place::Project(&project.slug)),
                rule: "circleci-checkout-key".into(),
                reason: format!(
                    "CircleCI checkout key ({}{preferred}, fingerprint {}) of project {}",
                    key.key_type, key.fingerprint, project.slug
                ),
            });
        }
    }
}

/// Additional SSH keys: the same fingerprint in several projects is one key.
fn ssh_keys(inv: &Inventory, out: &mut Output) {
    let mut by_fingerprint: HashMap<&str, Vec<(&Project, &str)>> = HashMap::new();
    for project in &inv.projects {
        for key in &project.ssh_keys {
            by_fingerprint
                .entry(&key.fingerprint)
                .or_default()
                .push((project, &key.hostname));
        }
    }
    for (fingerprint, mut places) in by_fingerprint {
        places.sort_by(|a, b| (&a.0.slug, a.1).cmp(&(&b.0.slug, b.1)));
        places.dedup_by(|a, b| a.0.slug == b.0.slug && a.1 == b.1);
        let Some(&(first, _)) = places.first() else {
            continue;
        };
        let mut hosts: Vec<&str> = places.iter().map(|p| p.1).collect();
        hosts.sort_unstable();
        hosts.dedup();
        let host_text = |h: &str| {
            if h.is_empty() {
                "every host".to_string()
            } else {
                format!("host {h}")
            }
        };
        let hosts_text = hosts
            .iter()
            .map(|h| host_text(h))
            .collect::<Vec<_>>()
            .join(", ");
        let service = format!(
            "SSH access to {}",
            hosts
                .iter()
                .map(|h| if h.is_empty() { "every host" } else { h })
                .collect::<Vec<_>>()
                .join(", ")
        );
        let principal = Principal {
            service: Some(Located::new(service)),
            ..Default::default()
        };
        let mut t = target(ProviderKind::Exec, Confidence::Low, principal);
        t.exec = Some(review_commands());
        let mut slugs: Vec<&str> = places.iter().map(|p| p.0.slug.as_str()).collect();
        slugs.dedup();
        t.observed = slugs.iter().map(|s| observed_key(s, fingerprint)).collect();
        let where_ = match slugs.as_slice() {
            [one] => format!("in project {one}"),
            many => format!("in {} projects (same fingerprint)", many.len()),
        };
        let host_words = hosts
            .first()
            .map(|h| super::rules::kebab(h))
            .unwrap_or_default();
        out.drafts.push(Draft {
            target: t,
            base: if host_words.is_empty() { "ssh-key".into() } else { format!("ssh-key-{host_words}") },
            distinct: !host_words.is_empty(),
            place_token: place_token(Place::Project(&first.slug)),
            rule: "circleci-ssh-key".into(),
            reason: format!(
                "additional SSH key for {hosts_text} (fingerprint {fingerprint}) {where_}: its owner is whoever \
                 trusts its public half on that host, so rotate it there and in the project settings"
            ),
        });
    }
}

/// The legacy key pair of project settings; the same masks in several projects are grouped.
fn legacy_aws(inv: &Inventory, out: &mut Output) {
    let mut by_masks: HashMap<(&Masked, &Masked), Vec<&Project>> = HashMap::new();
    for project in &inv.projects {
        if let Some(keys) = &project.legacy_aws_keys {
            by_masks
                .entry((&keys.access_key_id, &keys.secret_access_key))
                .or_default()
                .push(project);
        }
    }
    for ((access, secret), mut projects) in by_masks {
        projects.sort_by(|a, b| a.slug.cmp(&b.slug));
        let Some(first) = projects.first() else {
            continue;
        };
        let principal = Principal {
            user: Some(Located::new(REVIEW_REQUIRED.to_string())),
            ..Default::default()
        };
        let mut t = target(ProviderKind::AwsIam, Confidence::Medium, principal);
        for p in &projects {
            let slug = || Some(Located::new(p.slug.clone()));
            let mut vars = BTreeMap::new();
            vars.insert(
                Located::new("access_key_id".into()),
                Located::new(LEGACY_AWS_ACCESS_KEY_ID.into()),
            );
            vars.insert(
                Located::new("secret_access_key".into()),
                Located::new(LEGACY_AWS_SECRET_ACCESS_KEY.into()),
            );
            t.bindings.push(Binding {
                project: slug(),
                context: None,
                context_id: None,
                vars,
                encoding: BTreeMap::new(),
            });
            for (var, masked) in [
                (LEGACY_AWS_ACCESS_KEY_ID, access),
                (LEGACY_AWS_SECRET_ACCESS_KEY, secret),
            ] {
                t.observed.push(Observed {
                    project: slug(),
                    context: None,
                    var: Some(var.into()),
                    masked: Some(masked.clone()),
                    updated_at: None,
                    fingerprint: None,
                });
            }
        }
        let where_ = match projects.len() {
            1 => format!("in project {}", first.slug),
            n => format!(
                "with the same masked last four {} in {n} projects",
                access.last_four()
            ),
        };
        out.drafts.push(Draft {
            target: t,
            base: "aws-legacy".into(),
            distinct: true,
            place_token: place_token(Place::Project(&first.slug)),
            rule: "aws-legacy-keypair".into(),
            reason: format!(
                "legacy AWS key pair of the project settings {where_}; {LEGACY_AWS_ACCESS_KEY_ID} and \
                 {LEGACY_AWS_SECRET_ACCESS_KEY} name its two fields, not environment variables, so a reviewer checks \
                 how it is rewritten"
            ),
        });
    }
}
