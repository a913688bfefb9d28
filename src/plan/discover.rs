//! `rekey plan --discover aws`: fill each AWS target's IAM user by matching the masked last four
//! of its `AWS_ACCESS_KEY_ID` project variables against the account's access key ids (read-only
//! IAM: ListUsers, ListAccessKeys). Targets it cannot resolve keep `REVIEW-REQUIRED`, with a note
//! that says why, for the reviewer.

use super::build::Draft;
use super::located::Located;
use super::model::{Place, ProviderKind, REVIEW_REQUIRED};
use super::principal::PrincipalField;
use crate::providers::aws::{DiscoveryMatch, match_last_four};

/// What discovery concluded for one target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resolution {
    pub target: String,
    pub user: Option<String>,
    pub note: String,
}

/// Fills `principal.user` of the draft's AWS targets from `listing` (user → key ids), and adds
/// to each target's note what was found. Returns one resolution per AWS target that needed one.
pub fn fill_aws_users(draft: &mut Draft, listing: &[(String, Vec<String>)]) -> Vec<Resolution> {
    let mut out = Vec::new();
    for target in &mut draft.plan.targets {
        if target.provider.value != ProviderKind::AwsIam {
            continue;
        }
        if target
            .principal
            .user()
            .is_some_and(|u| u.as_str() != REVIEW_REQUIRED)
        {
            continue;
        }
        let id = target.id.value.clone();
        // The last four of the key id as CircleCI shows it in project variables.
        let mut suffixes: Vec<String> = Vec::new();
        for binding in &target.bindings {
            let Some(Place::Project(project)) = binding.place() else {
                continue;
            };
            let Some(var) = binding
                .vars
                .iter()
                .find(|(f, _)| f.as_str() == "access_key_id")
                .map(|(_, v)| v.as_str())
            else {
                continue;
            };
            for obs in &target.observed {
                if obs.place() == Some(Place::Project(project))
                    && obs.var.as_deref() == Some(var)
                    && let Some(masked) = &obs.masked
                    && !suffixes.iter().any(|s| s == masked.last_four())
                {
                    suffixes.push(masked.last_four().to_string());
                }
            }
        }
        let resolution = match suffixes.as_slice() {
            [] => Resolution {
                target: id.clone(),
                user: None,
                note: "discovery: no project variable shows the key id (context variables carry no value); fill in principal.user".into(),
            },
            [last4] => match match_last_four(listing, last4) {
                DiscoveryMatch::Unique(user) => Resolution {
                    target: id.clone(),
                    note: format!("discovery: the key ending {last4} belongs to IAM user {user}"),
                    user: Some(user),
                },
                DiscoveryMatch::Ambiguous(users) => Resolution {
                    target: id.clone(),
                    user: None,
                    note: format!("discovery: keys ending {last4} belong to several IAM users ({}); choose one", users.join(", ")),
                },
                DiscoveryMatch::None => Resolution {
                    target: id.clone(),
                    user: None,
                    note: format!("discovery: no IAM user of this account has a key ending {last4} (another account, or already deleted?)"),
                },
            },
            many => Resolution {
                target: id.clone(),
                user: None,
                note: format!("discovery: the bindings show different keys ({}): they are not one credential", many.join(", ")),
            },
        };
        if let Some(user) = &resolution.user {
            target
                .principal
                .set(PrincipalField::User, Some(Located::new(user.clone())));
        }
        let note = draft.notes.entry(id).or_default();
        if !note.is_empty() {
            note.push_str("; ");
        }
        note.push_str(&resolution.note);
        out.push(resolution);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::classify::{RuleSet, classify};
    use crate::inventory::{Inventory, InventorySource, Masked, Project, ProjectVar};

    fn var(name: &str, masked: &str) -> ProjectVar {
        ProjectVar {
            name: name.into(),
            masked: Masked::new(masked),
            created_at: None,
        }
    }

    fn draft_for(projects: Vec<Project>) -> Draft {
        let inv = Inventory {
            source: InventorySource::CircleciApi,
            org: Some("gh/acme".into()),
            taken_at: chrono::Utc::now(),
            projects,
            contexts: vec![],
            errors: vec![],
        };
        let rules = RuleSet::builtin().unwrap();
        crate::plan::build::build(&inv, classify(&inv, &rules), &Default::default())
    }

    fn project(slug: &str, vars: Vec<ProjectVar>) -> Project {
        Project {
            slug: slug.into(),
            env_vars: vars,
            checkout_keys: vec![],
            ssh_keys: vec![],
            legacy_aws_keys: None,
        }
    }

    #[test]
    fn fills_unique_users_and_explains_the_rest() {
        let mut draft = draft_for(vec![
            project(
                "gh/acme/api",
                vec![
                    var("AWS_ACCESS_KEY_ID", "xxxxWXYZ"),
                    var("AWS_SECRET_ACCESS_KEY", "xxxx1111"),
                ],
            ),
            project(
                "gh/acme/ops",
                vec![
                    var("OPS_AWS_ACCESS_KEY_ID", "xxxxDUPE"),
                    var("OPS_AWS_SECRET_ACCESS_KEY", "xxxx2222"),
                ],
            ),
            project(
                "gh/acme/old",
                vec![
                    var("OLD_AWS_ACCESS_KEY_ID", "xxxxGONE"),
                    var("OLD_AWS_SECRET_ACCESS_KEY", "xxxx3333"),
                ],
            ),
        ]);
        let listing = vec![
            (
                "ci-deployer".to_string(),
                vec!["AKIAAAAAAAAAAAAAWXYZ".to_string()],
            ),
            (
                "ops-a".to_string(),
                vec!["AKIABBBBBBBBBBBBDUPE".to_string()],
            ),
            (
                "ops-b".to_string(),
                vec!["AKIACCCCCCCCCCCCDUPE".to_string()],
            ),
        ];
        let resolutions = fill_aws_users(&mut draft, &listing);
        assert_eq!(resolutions.len(), 3);
        let user_of = |needle: &str| {
            draft
                .plan
                .targets
                .iter()
                .find(|t| {
                    t.bindings
                        .iter()
                        .any(|b| b.project.as_ref().is_some_and(|p| p.contains(needle)))
                })
                .and_then(|t| t.principal.user())
                .map(|u| u.value.clone())
        };
        assert_eq!(user_of("api").as_deref(), Some("ci-deployer"));
        assert_eq!(user_of("ops").as_deref(), Some(REVIEW_REQUIRED));
        assert_eq!(user_of("old").as_deref(), Some(REVIEW_REQUIRED));
        assert!(
            resolutions
                .iter()
                .any(|r| r.note.contains("several IAM users (ops-a, ops-b)"))
        );
        assert!(resolutions.iter().any(|r| {
            r.note
                .contains("no IAM user of this account has a key ending GONE")
        }));
    }
}
