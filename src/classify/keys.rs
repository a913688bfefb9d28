//! Keys and settings that are not variables: checkout keys, additional SSH keys and the legacy
//! AWS key pair of project settings. They are recognised by where they are, not by a name, so
//! they need no rules. Each becomes a draft target that validates once its REVIEW-REQUIRED
//! fields are decided, or, where rekey cannot rotate it, an `ignored` entry saying why and what
//! a person does: nothing CircleCI holds is dropped.

use super::{Draft, Output, place_token};
use crate::inventory::{Inventory, Masked, Project};
use crate::plan::{
    Binding, Confidence, Finding, Located, Observed, Place, Principal, PrincipalField,
    ProviderKind, REVIEW_REQUIRED, SshKeyHooks, Target, Text,
};
use std::collections::HashMap;

/// Pseudo-variable naming the access key id of a project's legacy AWS key pair, as plans of
/// earlier versions wrote it in a binding (validation refuses it and says to use
/// `aws_keypair: true`). It is not a CircleCI environment variable.
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
        project: Some(Located::new(Text::new(slug))),
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
        ssh_key: None,
    }
}

/// Each deploy key is its own credential: CircleCI mints one per project. A user key acts as a
/// person on GitHub and cannot be replaced by a deploy key, and a project without any checkout
/// key has nothing to rotate: both are reported with what to do.
fn checkout_keys(inv: &Inventory, out: &mut Output) {
    let unread: Vec<&str> = inv.errors.iter().map(|e| e.name.as_str()).collect();
    let mut holders: HashMap<&str, Vec<&str>> = HashMap::new();
    for project in &inv.projects {
        for key in &project.checkout_keys {
            holders
                .entry(&key.fingerprint)
                .or_default()
                .push(&project.slug);
        }
    }
    for project in &inv.projects {
        if project.checkout_keys.is_empty() && !unread.contains(&project.slug.as_str()) {
            out.ignored.push(Finding {
                project: Some(Located::new(Text::new(&project.slug))),
                context: None,
                var: "checkout key".into(),
                reason: "the project has no checkout key: nothing to rotate (CircleCI checks it out through the GitHub App, or jobs cannot clone it; add one in Project Settings → SSH Keys if they need to)".into(),
            });
        }
        for key in &project.checkout_keys {
            if key.key_type != DEPLOY_KEY {
                out.ignored.push(Finding {
                    project: Some(Located::new(Text::new(&project.slug))),
                    context: None,
                    var: format!("checkout key {}", key.fingerprint).into(),
                    reason: format!(
                        "{} checkout key: it is a key of a person's GitHub account, which rekey cannot mint; that person \
                         deletes it at GitHub (Settings → SSH keys) and adds a new user key in Project Settings → SSH Keys",
                        key.key_type
                    )
                    .into(),
                });
                continue;
            }
            let principal =
                Principal::default().with(PrincipalField::Project, project.slug.clone());
            let mut t = target(
                ProviderKind::CircleciCheckoutKey,
                Confidence::High,
                principal,
            );
            t.observed
                .push(observed_key(&project.slug, &key.fingerprint));
            let preferred = if key.preferred { ", preferred" } else { "" };
            let shared = match holders.get(key.fingerprint.as_str()) {
                Some(slugs) if slugs.len() > 1 => format!(
                    "; the same key is the checkout key of {} projects ({}): each gets its own new key and loses the shared one",
                    slugs.len(),
                    slugs.join(", ")
                ),
                _ => String::new(),
            };
            out.drafts.push(Draft {
                target: t,
                base: "circleci-checkout-key".into(),
                distinct: false,
                place_token: place_token(Place::Project(&project.slug)),
                rule: "circleci-checkout-key".into(),
                reason: format!(
                    "CircleCI checkout key ({}{preferred}, fingerprint {}) of project {}{shared}",
                    key.key_type, key.fingerprint, project.slug
                ),
            });
        }
    }
}

/// The checkout key type rekey rotates (see `providers::checkout_key`).
const DEPLOY_KEY: &str = "deploy-key";

/// Additional SSH keys: the same fingerprint in several projects is one key, rotated by the
/// `circleci-ssh-key` provider; a reviewer names how its public half is installed.
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
        let host_names: Vec<&str> = hosts
            .iter()
            .map(|h| if h.is_empty() { "every host" } else { h })
            .collect();
        let principal = Principal::default().with(
            PrincipalField::Service,
            format!("SSH access to {}", host_names.join(", ")),
        );
        let mut t = target(ProviderKind::CircleciSshKey, Confidence::High, principal);
        t.ssh_key = Some(Box::new(SshKeyHooks {
            install: Some(Located::new(vec![REVIEW_REQUIRED.to_string()])),
            ..Default::default()
        }));
        t.bindings = places
            .iter()
            .map(|(p, host)| Binding {
                project: Some(Located::new(Text::new(&p.slug))),
                context: None,
                context_id: None,
                vars: Default::default(),
                encoding: Default::default(),
                aws_keypair: false,
                ssh_hostname: Some(Located::new(host.to_string())),
            })
            .collect();
        let mut slugs: Vec<&str> = places.iter().map(|p| p.0.slug.as_str()).collect();
        slugs.dedup();
        t.observed = slugs.iter().map(|s| observed_key(s, fingerprint)).collect();
        let host_words = hosts
            .first()
            .map(|h| super::rules::kebab(h))
            .unwrap_or_default();
        out.drafts.push(Draft {
            target: t,
            base: if host_words.is_empty() { "ssh-key".into() } else { format!("ssh-key-{host_words}").into() },
            distinct: !host_words.is_empty(),
            place_token: place_token(Place::Project(&first.slug)),
            rule: "circleci-ssh-key".into(),
            reason: format!(
                "additional SSH key for {} (fingerprint {fingerprint}) in {}: rekey generates a new pair, `ssh_key.install` \
                 (a command) or a person (`manual: true`) makes its public half trusted there, and jobs that select the key \
                 by fingerprint in .circleci/config.yml (`add_ssh_keys`) of {} must switch to the new fingerprint, or select \
                 by hostname, before the grace period ends",
                host_names.join(", "),
                slugs.join(", "),
                slugs.join(", ")
            ),
        });
    }
}

/// The legacy key pair of project settings; the same masks in several projects are grouped.
/// CircleCI's settings page writes it with `PUT /api/v1.1/project/…/settings`, so it is
/// rotated like any binding (`aws_keypair: true`).
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
    for ((access, _), mut projects) in by_masks {
        projects.sort_by(|a, b| a.slug.cmp(&b.slug));
        let Some(first) = projects.first() else {
            continue;
        };
        let principal =
            Principal::default().with(PrincipalField::User, REVIEW_REQUIRED.to_string());
        let mut t = target(ProviderKind::AwsIam, Confidence::Medium, principal);
        for p in &projects {
            t.bindings.push(Binding {
                project: Some(Located::new(Text::new(&p.slug))),
                context: None,
                context_id: None,
                vars: Default::default(),
                encoding: Default::default(),
                aws_keypair: true,
                ssh_hostname: None,
            });
            t.observed.push(Observed {
                project: Some(Located::new(Text::new(&p.slug))),
                context: None,
                var: None,
                masked: Some(access.clone()),
                updated_at: None,
                fingerprint: None,
            });
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
                "legacy AWS key pair of the project settings {where_} (access key id ending {}): rekey writes the new \
                 pair through the settings API; moving the key to environment variables instead is a reviewer's choice",
                access.last_four()
            ),
        });
    }
}
