//! `rekey sandbox serve --world FILE`: a small world described by hand (YAML or JSON), for a
//! team that wants simulators to point its scripts at without writing a plan first.
//!
//! ```yaml
//! circleci:
//!   org: gh/acme                       # the contexts' owner (default gh/sandbox)
//!   projects:                          # project slug → variable names
//!     gh/acme/api: [AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, NPM_TOKEN]
//!   contexts:                          # context name → variable names
//!     aws-prod: [AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY]
//! aws:
//!   account_id: "123456789012"
//!   users: {ci-deployer: 1}            # IAM user → active keys (0 to 2)
//! github:
//!   repos: [acme/api]                  # each with one deploy key
//! ```
//!
//! Every value is made up: variables get a random value shaped by their name (an AWS key id
//! for `*ACCESS_KEY_ID`, else a 24-character password); nothing in the file is a secret.

use super::aws::{Access, AwsState, KeySpec};
use super::circleci::{ContextSpec, ProjectSpec};
use super::world::{PlanWorld, StandIn};
use super::{Rng, fake};
use std::collections::BTreeMap;

/// A world file.
#[derive(Debug, Clone, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WorldFile {
    #[serde(default)]
    pub circleci: CircleCiWorld,
    #[serde(default)]
    pub aws: AwsWorld,
    #[serde(default)]
    pub github: GithubWorld,
}

#[derive(Debug, Clone, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CircleCiWorld {
    #[serde(default)]
    pub org: Option<String>,
    #[serde(default)]
    pub projects: BTreeMap<String, Vec<String>>,
    #[serde(default)]
    pub contexts: BTreeMap<String, Vec<String>>,
}

#[derive(Debug, Clone, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AwsWorld {
    #[serde(default)]
    pub account_id: Option<String>,
    #[serde(default)]
    pub users: BTreeMap<String, u8>,
}

#[derive(Debug, Clone, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GithubWorld {
    #[serde(default)]
    pub repos: Vec<String>,
}

/// Projects, contexts, users or repositories beyond this are refused (a world file is small).
const MAX_ITEMS: usize = 10_000;

impl WorldFile {
    /// Parses `text` (YAML or JSON) read from `name`; errors say where.
    pub fn parse(name: &str, text: &str) -> Result<WorldFile, String> {
        let world: WorldFile = serde_saphyr::from_str(text).map_err(|e| format!("{name}: {e}"))?;
        let items = world.circleci.projects.len()
            + world.circleci.contexts.len()
            + world.aws.users.len()
            + world.github.repos.len();
        if items > MAX_ITEMS {
            return Err(format!(
                "{name}: {items} projects, contexts, users and repositories; a world file holds at most {MAX_ITEMS}"
            ));
        }
        if let Some((user, n)) = world.aws.users.iter().find(|(_, n)| **n > 2) {
            return Err(format!(
                "{name}: aws.users.{user}: {n} keys; IAM allows 2 per user"
            ));
        }
        Ok(world)
    }

    /// Starts the simulators holding this world.
    pub async fn start(&self) -> std::io::Result<PlanWorld> {
        let empty = crate::plan::load::parse(
            "(world file)",
            "apiVersion: rekey/v1\nkind: RotationPlan\nmetadata: {name: sandbox}\n",
        )
        .map_err(|d| std::io::Error::other(d.message))?;
        let me = self.clone();
        PlanWorld::start_with(
            &empty,
            &BTreeMap::<String, StandIn>::new(),
            move |ci, aws, gh| {
                let mut rng = Rng::from_entropy();
                let mut value = |name: &str| {
                    if name.ends_with("ACCESS_KEY_ID") {
                        fake::aws_access_key_id(&mut rng)
                    } else {
                        fake::password(&mut rng)
                    }
                };
                for (slug, vars) in &me.circleci.projects {
                    let spec = vars.iter().fold(ProjectSpec::new(slug.clone()), |p, v| {
                        p.env(v.clone(), value(v))
                    });
                    ci.add_project(spec);
                }
                let org = me
                    .circleci
                    .org
                    .clone()
                    .unwrap_or_else(|| "gh/sandbox".into());
                for (name, vars) in &me.circleci.contexts {
                    let spec = vars
                        .iter()
                        .fold(ContextSpec::new(org.clone(), name.clone()), |c, v| {
                            c.env(v.clone(), value(v))
                        });
                    ci.add_context(spec);
                }
                if let Some(account) = &me.aws.account_id {
                    *aws = AwsState::new(account.clone());
                }
                for (user, keys) in &me.aws.users {
                    aws.add_user(user, Access::None)
                        .map_err(|e| e.to_string())?;
                    for _ in 0..*keys {
                        aws.add_key(user, KeySpec::active())
                            .map_err(|e| e.to_string())?;
                    }
                }
                for repo in &me.github.repos {
                    gh.add_foreign_key(repo, "deploy key");
                }
                Ok(())
            },
        )
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_refuses_with_the_place() {
        let w = WorldFile::parse(
            "w.yaml",
            "circleci: {projects: {gh/acme/api: [NPM_TOKEN]}}\naws: {users: {ci: 2}}\n",
        )
        .unwrap();
        assert_eq!(w.circleci.projects["gh/acme/api"], ["NPM_TOKEN"]);
        let e = WorldFile::parse("w.yaml", "aws: {users: {ci: 3}}\n").unwrap_err();
        assert!(e.contains("aws.users.ci") && e.contains("w.yaml"), "{e}");
        let e = WorldFile::parse("w.yaml", "circleci: {projets: {}}\n").unwrap_err();
        assert!(e.starts_with("w.yaml:"), "{e}");
    }
}
