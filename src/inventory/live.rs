//! The live inventory: reads an organization's projects and contexts from the CircleCI API into
//! the normalized [`Inventory`].
//!
//! Projects come from the v1.1 followed-projects list filtered by organization, or from the
//! private organization listing when an organization id is given, plus any named explicitly.
//! For each project it reads variables, checkout keys and v1.1 settings (additional SSH keys,
//! legacy AWS key pair); for each of the organization's contexts, its variables — with at most
//! [`LiveOptions::concurrency`] projects or contexts in flight. A place that cannot be read
//! becomes an [`InventoryError`] and the rest goes on; only a refused token stops the run.

use std::collections::BTreeSet;
use std::future::Future;

use chrono::Utc;
use futures::StreamExt;

use crate::circleci::{CircleCiClient, CircleCiError, ContextInfo, ContextOwner, vcs_slug};
use crate::inventory::model::{
    CheckoutKey, Context, ContextVar, ErrorScope, Inventory, InventoryError, InventorySource,
    LegacyAwsKeys, Masked, Project, ProjectVar, SshKey,
};

/// Projects or contexts read at once unless told otherwise. Each project issues its three
/// reads together, so up to three times this many requests are in flight.
pub const DEFAULT_CONCURRENCY: usize = 8;

/// What to inventory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LiveOptions {
    /// Organization slug (`gh/acme`, `bb/acme`): its followed projects and its contexts.
    pub org: Option<String>,
    /// Organization id: its projects through the private listing (covers `circleci/`
    /// GitHub App and GitLab projects) and its contexts by owner id.
    pub org_id: Option<String>,
    /// Projects to read in any case (`gh/acme/api`), merged with the discovered ones.
    pub projects: Vec<String>,
    /// Projects or contexts read at once; `1` reads strictly one request at a time (for a
    /// token under a tight rate limit), including the reads within a project.
    pub concurrency: usize,
}

impl Default for LiveOptions {
    fn default() -> Self {
        LiveOptions {
            org: None,
            org_id: None,
            projects: Vec::new(),
            concurrency: DEFAULT_CONCURRENCY,
        }
    }
}

/// Why no inventory could be taken at all.
#[derive(Debug, thiserror::Error)]
pub enum LiveError {
    /// CircleCI refused the token (401) on an organization listing, or on every read when
    /// only projects were named: an inventory of errors would only mislead.
    #[error("CircleCI refused the token: {0}")]
    Unauthorized(#[source] CircleCiError),
    #[error("nothing to inventory: name an organization (slug or id) or at least one project")]
    NothingToRead,
}

/// Takes the live inventory described by `opts`.
pub async fn take_live(
    client: &CircleCiClient,
    opts: &LiveOptions,
) -> Result<Inventory, LiveError> {
    let org = opts
        .org
        .as_deref()
        .map(normalize_org)
        .filter(|o| !o.is_empty());
    let org_id = opts
        .org_id
        .as_deref()
        .map(str::trim)
        .filter(|id| !id.is_empty());
    let explicit: Vec<&str> = opts
        .projects
        .iter()
        .map(|p| p.trim())
        .filter(|p| !p.is_empty())
        .collect();
    if org.is_none() && org_id.is_none() && explicit.is_empty() {
        return Err(LiveError::NothingToRead);
    }
    let concurrency = opts.concurrency.max(1);
    let sequential = concurrency == 1;
    let taken_at = Utc::now();
    // Organization-level errors name the slug, else the id.
    let org_label = org.clone().or_else(|| org_id.map(str::to_owned));
    let mut errors = Vec::new();

    // Discovery: the project list and the context list do not depend on each other.
    let discover = discover_projects(client, org.as_deref(), org_id);
    let owner = match (org_id, &org) {
        (Some(id), _) => Some(ContextOwner::Id(id.to_owned())),
        (None, Some(slug)) => Some(ContextOwner::Slug(slug.clone())),
        (None, None) => None,
    };
    let list_contexts = async {
        match &owner {
            Some(owner) => Some(client.list_contexts(owner).await),
            None => None,
        }
    };
    let (discovered, contexts) = both(discover, list_contexts, sequential).await;

    let mut slugs = BTreeSet::new();
    match discovered {
        Some(Ok(found)) => slugs.extend(found),
        Some(Err(e)) if e.is_unauthorized() => return Err(LiveError::Unauthorized(e)),
        Some(Err(e)) => errors.push(org_error(org_label.as_deref(), "projects", &e)),
        None => {}
    }
    let contexts = match contexts {
        Some(Ok(contexts)) => contexts,
        Some(Err(e)) if e.is_unauthorized() => return Err(LiveError::Unauthorized(e)),
        Some(Err(e)) => {
            errors.push(org_error(org_label.as_deref(), "contexts", &e));
            Vec::new()
        }
        None => Vec::new(),
    };
    slugs.extend(explicit.iter().map(|s| (*s).to_owned()));
    tracing::debug!(
        projects = slugs.len(),
        contexts = contexts.len(),
        concurrency,
        "inventory discovery done"
    );

    let units = slugs
        .into_iter()
        .map(Unit::Project)
        .chain(contexts.into_iter().map(Unit::Context));
    let outcomes: Vec<Outcome> = futures::stream::iter(units)
        .map(|unit| read_unit(client, unit, sequential))
        .buffer_unordered(concurrency)
        .collect()
        .await;

    let mut projects = Vec::new();
    let mut read_contexts = Vec::new();
    let mut refusal = None;
    for outcome in outcomes {
        match outcome {
            Outcome::Project(project, errs, refused) => {
                projects.extend(project);
                errors.extend(errs);
                refusal = refusal.or(refused);
            }
            Outcome::Context(Ok(context)) => read_contexts.push(context),
            Outcome::Context(Err((e, refused))) => {
                errors.push(e);
                refusal = refusal.or(refused);
            }
        }
    }
    // Nothing read and every failure a 401: the token is refused, not the places.
    if let Some(refused) = refusal
        && projects.is_empty()
        && read_contexts.is_empty()
        && errors.iter().all(|e| e.status == Some(401))
    {
        return Err(LiveError::Unauthorized(refused));
    }
    projects.sort_by(|a, b| a.slug.cmp(&b.slug));
    read_contexts.sort_by(|a, b| a.name.cmp(&b.name).then_with(|| a.id.cmp(&b.id)));
    errors.sort_by(|a, b| {
        scope_rank(a.scope)
            .cmp(&scope_rank(b.scope))
            .then_with(|| a.name.cmp(&b.name))
            .then_with(|| a.message.cmp(&b.message))
    });
    Ok(Inventory {
        source: InventorySource::CircleciApi,
        // The slug only: an id alone does not say which VCS organization it is.
        org,
        taken_at,
        projects,
        contexts: read_contexts,
        errors,
    })
}

enum Unit {
    Project(String),
    Context(ContextInfo),
}

/// What one project or context gave; the 401 behind a failure, if it was one, is kept so that
/// a run where every read was refused reports the token rather than a list of errors.
enum Outcome {
    Project(Option<Project>, Vec<InventoryError>, Option<CircleCiError>),
    Context(Result<Context, (InventoryError, Option<CircleCiError>)>),
}

async fn read_unit(client: &CircleCiClient, unit: Unit, sequential: bool) -> Outcome {
    match unit {
        Unit::Project(slug) => {
            let (project, errors, refused) = read_project(client, slug, sequential).await;
            Outcome::Project(project, errors, refused)
        }
        Unit::Context(info) => Outcome::Context(read_context(client, info).await),
    }
}

/// Slugs of the organization's projects, or `None` when no organization was named.
async fn discover_projects(
    client: &CircleCiClient,
    org: Option<&str>,
    org_id: Option<&str>,
) -> Option<Result<Vec<String>, CircleCiError>> {
    if let Some(id) = org_id {
        return Some(
            client
                .list_org_projects(id)
                .await
                .map(|ps| ps.into_iter().map(|p| p.slug).collect()),
        );
    }
    let org = org?;
    Some(client.list_followed_projects().await.map(|followed| {
        followed
            .iter()
            .filter_map(|p| p.slug())
            .filter(|slug| in_org(slug, org))
            .collect()
    }))
}

/// Reads one project. When its variables cannot be read the project is an error only: the
/// variables are what a rotation needs. Keys or settings that fail add an error entry each
/// and the project keeps what was read.
async fn read_project(
    client: &CircleCiClient,
    slug: String,
    sequential: bool,
) -> (Option<Project>, Vec<InventoryError>, Option<CircleCiError>) {
    tracing::debug!(project = %slug, "reading project");
    let env = client.list_project_env_vars(&slug);
    let keys = client.list_checkout_keys(&slug);
    let settings = client.project_settings(&slug);
    let (env, keys, settings) = if sequential {
        (env.await, keys.await, settings.await)
    } else {
        tokio::join!(env, keys, settings)
    };
    let mut errors = Vec::new();
    let env_vars = match env {
        Ok(vars) => vars,
        Err(e) => {
            tracing::debug!(project = %slug, status = e.status(), "project unreadable");
            errors.push(InventoryError {
                scope: ErrorScope::Project,
                name: slug,
                status: e.status(),
                message: e.reason(),
            });
            let refused = e.is_unauthorized().then_some(e);
            return (None, errors, refused);
        }
    };
    let mut project = Project {
        slug,
        env_vars: env_vars
            .into_iter()
            .map(|v| ProjectVar {
                name: v.name.into(),
                masked: Masked::new(v.value.as_str()),
                created_at: v.created_at,
            })
            .collect(),
        checkout_keys: Vec::new(),
        ssh_keys: Vec::new(),
        legacy_aws_keys: None,
    };
    project.env_vars.sort_by(|a, b| a.name.cmp(&b.name));
    match keys {
        Ok(keys) => {
            project.checkout_keys = keys
                .into_iter()
                .map(|k| CheckoutKey {
                    key_type: k.key_type,
                    fingerprint: k.fingerprint,
                    preferred: k.preferred,
                    created_at: k.created_at,
                })
                .collect();
            project
                .checkout_keys
                .sort_by(|a, b| a.fingerprint.cmp(&b.fingerprint));
        }
        Err(e) => errors.push(part_error(&project.slug, "checkout keys", &e)),
    }
    match settings {
        Ok(settings) => {
            project.ssh_keys = settings
                .ssh_keys
                .into_iter()
                .map(|k| SshKey {
                    fingerprint: k.fingerprint,
                    hostname: k.hostname,
                })
                .collect();
            project.ssh_keys.sort_by(|a, b| {
                a.hostname
                    .cmp(&b.hostname)
                    .then_with(|| a.fingerprint.cmp(&b.fingerprint))
            });
            project.legacy_aws_keys = settings.aws.keypair.map(|pair| LegacyAwsKeys {
                access_key_id: Masked::new(pair.access_key_id.as_str()),
                secret_access_key: Masked::new(pair.secret_access_key.as_str()),
            });
        }
        Err(e) => errors.push(part_error(&project.slug, "settings", &e)),
    }
    (Some(project), errors, None)
}

async fn read_context(
    client: &CircleCiClient,
    info: ContextInfo,
) -> Result<Context, (InventoryError, Option<CircleCiError>)> {
    tracing::debug!(context = %info.name, "reading context");
    match client.list_context_env_vars(&info.id).await {
        Ok(vars) => {
            let mut variables: Vec<ContextVar> = vars
                .into_iter()
                .map(|v| ContextVar {
                    name: v.variable.into(),
                    created_at: v.created_at,
                    updated_at: v.updated_at,
                })
                .collect();
            variables.sort_by(|a, b| a.name.cmp(&b.name));
            Ok(Context {
                id: info.id,
                name: info.name,
                created_at: info.created_at,
                variables,
            })
        }
        Err(e) => Err((
            InventoryError {
                scope: ErrorScope::Context,
                name: info.name,
                status: e.status(),
                message: e.reason(),
            },
            e.is_unauthorized().then_some(e),
        )),
    }
}

fn part_error(slug: &str, part: &str, e: &CircleCiError) -> InventoryError {
    InventoryError {
        scope: ErrorScope::Project,
        name: slug.to_owned(),
        status: e.status(),
        message: format!("{part}: {}", e.reason()),
    }
}

fn org_error(org: Option<&str>, what: &str, e: &CircleCiError) -> InventoryError {
    InventoryError {
        scope: ErrorScope::Organization,
        name: org.unwrap_or_default().to_owned(),
        status: e.status(),
        message: format!("listing {what}: {}", e.reason()),
    }
}

fn scope_rank(scope: ErrorScope) -> u8 {
    match scope {
        ErrorScope::Organization => 0,
        ErrorScope::Project => 1,
        ErrorScope::Context => 2,
    }
}

/// `github/acme` → `gh/acme`; trims slashes and blanks.
fn normalize_org(org: &str) -> String {
    let org = org.trim().trim_matches('/');
    match org.split_once('/') {
        Some((vcs, name)) => match vcs_slug(vcs) {
            Some(short) => format!("{short}/{name}"),
            None => org.to_owned(),
        },
        None => org.to_owned(),
    }
}

/// Whether `slug` (`gh/acme/api`) belongs to `org` (`gh/acme`); GitHub and Bitbucket
/// organization names are case-insensitive.
fn in_org(slug: &str, org: &str) -> bool {
    match slug.rsplit_once('/') {
        Some((owner, _)) => owner.eq_ignore_ascii_case(org),
        None => false,
    }
}

/// Awaits both, together or one after the other.
async fn both<A, B>(a: A, b: B, sequential: bool) -> (A::Output, B::Output)
where
    A: Future,
    B: Future,
{
    if sequential {
        let a = a.await;
        (a, b.await)
    } else {
        tokio::join!(a, b)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn org_matching() {
        assert_eq!(normalize_org(" github/acme/ "), "gh/acme");
        assert_eq!(normalize_org("bitbucket/acme"), "bb/acme");
        assert_eq!(normalize_org("circleci/1234"), "circleci/1234");
        assert!(in_org("gh/Acme/api", "gh/acme"));
        assert!(!in_org("gh/acme-corp/api", "gh/acme"));
        assert!(!in_org("bb/acme/api", "gh/acme"));
    }
}
