//! The CircleCI simulator: a stateful stand-in for the endpoints rekey reads and writes, with
//! CircleCI's documented behaviour — project values stored whole but answered as `xxxx` + last
//! four, context variables answered without any value, listings paginated with
//! `next_page_token` / `page-token`, kebab-case checkout keys, v1.1 settings, `Circle-Token`
//! authentication, and errors as `{"message": …}` with the real statuses.
//!
//! [`CircleCiState`] is built with small specs ([`ProjectSpec`], [`ContextSpec`], …);
//! [`demo_org`] builds a made-up organization with a realistic mix of secrets.

use std::collections::BTreeMap;

use axum::Json;
use axum::http::{HeaderMap, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Duration as Days, TimeZone, Utc};
use serde_json::{Value, json};

use super::{Rng, fake};

/// Page size when a test does not choose one.
pub const DEFAULT_PAGE_SIZE: usize = 20;

/// A stored variable: the whole value, which the API never gives back.
#[derive(Clone, PartialEq, Eq)]
pub struct StoredVar {
    pub value: String,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl std::fmt::Debug for StoredVar {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoredVar")
            .field(
                "value",
                &format_args!("[{} chars]", self.value.chars().count()),
            )
            .field("created_at", &self.created_at)
            .field("updated_at", &self.updated_at)
            .finish()
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredCheckoutKey {
    pub public_key: String,
    /// `deploy-key` or `github-user-key`.
    pub key_type: String,
    pub fingerprint: String,
    pub preferred: bool,
    pub created_at: DateTime<Utc>,
}

#[derive(Clone, PartialEq, Eq)]
pub struct StoredSshKey {
    pub hostname: String,
    pub fingerprint: String,
    pub public_key: String,
    pub private_key: String,
}

impl std::fmt::Debug for StoredSshKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoredSshKey")
            .field("hostname", &self.hostname)
            .field("fingerprint", &self.fingerprint)
            .finish_non_exhaustive()
    }
}

#[derive(Clone, PartialEq, Eq)]
pub struct StoredAwsKeypair {
    pub access_key_id: String,
    pub secret_access_key: String,
}

impl std::fmt::Debug for StoredAwsKeypair {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoredAwsKeypair").finish_non_exhaustive()
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredProject {
    pub id: String,
    pub slug: String,
    pub env_vars: BTreeMap<String, StoredVar>,
    pub checkout_keys: Vec<StoredCheckoutKey>,
    pub ssh_keys: Vec<StoredSshKey>,
    pub aws_keypair: Option<StoredAwsKeypair>,
    /// Listed by `GET /api/v1.1/projects`.
    pub followed: bool,
    /// Every project endpoint answers 403.
    pub forbidden: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredContext {
    pub id: String,
    pub name: String,
    /// The owning organization's slug (`gh/acme`).
    pub owner_slug: String,
    pub created_at: DateTime<Utc>,
    pub vars: BTreeMap<String, StoredVar>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Org {
    pub id: String,
    /// `gh/acme`, or `circleci/<id>` for GitHub App and GitLab organizations.
    pub slug: String,
    pub name: String,
}

/// An organization to declare (projects and contexts declare theirs implicitly).
#[derive(Debug, Clone)]
pub struct OrgSpec {
    slug: String,
    id: Option<String>,
}

impl OrgSpec {
    pub fn new(slug: impl Into<String>) -> Self {
        OrgSpec {
            slug: slug.into(),
            id: None,
        }
    }

    pub fn id(mut self, id: impl Into<String>) -> Self {
        self.id = Some(id.into());
        self
    }
}

/// A checkout key to create; fingerprint and public key are generated.
#[derive(Debug, Clone)]
pub struct CheckoutKeySpec {
    key_type: String,
    preferred: bool,
}

impl CheckoutKeySpec {
    pub fn deploy_key() -> Self {
        CheckoutKeySpec {
            key_type: "deploy-key".into(),
            preferred: true,
        }
    }

    pub fn user_key() -> Self {
        CheckoutKeySpec {
            key_type: "github-user-key".into(),
            preferred: false,
        }
    }

    pub fn preferred(mut self, preferred: bool) -> Self {
        self.preferred = preferred;
        self
    }
}

/// A project to create.
#[derive(Debug, Clone)]
pub struct ProjectSpec {
    slug: String,
    env: Vec<(String, String)>,
    checkout_keys: Vec<CheckoutKeySpec>,
    ssh_hosts: Vec<String>,
    aws_keypair: Option<(String, String)>,
    followed: bool,
    forbidden: bool,
}

impl ProjectSpec {
    /// A followed project with nothing in it yet.
    pub fn new(slug: impl Into<String>) -> Self {
        ProjectSpec {
            slug: slug.into(),
            env: Vec::new(),
            checkout_keys: Vec::new(),
            ssh_hosts: Vec::new(),
            aws_keypair: None,
            followed: true,
            forbidden: false,
        }
    }

    pub fn env(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.env.push((name.into(), value.into()));
        self
    }

    pub fn checkout_key(mut self, key: CheckoutKeySpec) -> Self {
        self.checkout_keys.push(key);
        self
    }

    /// An additional SSH key for `hostname` (empty: every host); the key is generated.
    pub fn ssh_key(mut self, hostname: impl Into<String>) -> Self {
        self.ssh_hosts.push(hostname.into());
        self
    }

    /// The legacy project-settings AWS key pair.
    pub fn aws_keypair(
        mut self,
        access_key_id: impl Into<String>,
        secret_access_key: impl Into<String>,
    ) -> Self {
        self.aws_keypair = Some((access_key_id.into(), secret_access_key.into()));
        self
    }

    /// Not in the token user's followed projects (only the organization listing shows it).
    pub fn unfollowed(mut self) -> Self {
        self.followed = false;
        self
    }

    /// Every project endpoint answers 403.
    pub fn forbidden(mut self) -> Self {
        self.forbidden = true;
        self
    }
}

/// A context to create.
#[derive(Debug, Clone)]
pub struct ContextSpec {
    owner_slug: String,
    name: String,
    env: Vec<(String, String)>,
}

impl ContextSpec {
    pub fn new(owner_slug: impl Into<String>, name: impl Into<String>) -> Self {
        ContextSpec {
            owner_slug: owner_slug.into(),
            name: name.into(),
            env: Vec::new(),
        }
    }

    pub fn env(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.env.push((name.into(), value.into()));
        self
    }
}

/// Decides whether a triggered pipeline's workflow succeeds, from the project as it is when the
/// pipeline starts (its variables, say): the demo checks that the AWS key in them works.
#[derive(Clone)]
pub struct PipelineCheck(pub std::sync::Arc<PipelineVerdict>);

/// A pipeline check's function: the project at the pipeline's start and the branch, to success.
pub type PipelineVerdict = dyn Fn(&StoredProject, &str) -> bool + Send + Sync;

impl std::fmt::Debug for PipelineCheck {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PipelineCheck")
    }
}

/// A triggered pipeline with one workflow, `running` on its first poll, then final.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredPipeline {
    pub id: String,
    pub slug: String,
    pub branch: String,
    pub number: u64,
    pub workflow_id: String,
    pub polls: u32,
    pub success: bool,
}

/// Everything the simulated CircleCI holds.
#[derive(Debug, Clone)]
pub struct CircleCiState {
    tokens: Vec<String>,
    /// Pipelines triggered so far (canaries).
    pub pipelines: Vec<StoredPipeline>,
    /// Decides pipeline outcomes; without one, every pipeline succeeds.
    pub pipeline_check: Option<PipelineCheck>,
    /// Items per page of every v2 listing.
    pub page_size: usize,
    orgs: Vec<Org>,
    projects: BTreeMap<String, StoredProject>,
    contexts: Vec<StoredContext>,
    rng: Rng,
}

impl CircleCiState {
    /// An empty CircleCI that accepts `token`.
    pub fn new(token: impl Into<String>) -> Self {
        CircleCiState {
            tokens: vec![token.into()],
            pipelines: Vec::new(),
            pipeline_check: None,
            page_size: DEFAULT_PAGE_SIZE,
            orgs: Vec::new(),
            projects: BTreeMap::new(),
            contexts: Vec::new(),
            rng: Rng::from_entropy(),
        }
    }

    /// The token the state was created with.
    pub fn token(&self) -> &str {
        self.tokens.first().map(String::as_str).unwrap_or_default()
    }

    pub fn with_page_size(mut self, page_size: usize) -> Self {
        self.page_size = page_size.max(1);
        self
    }

    pub fn org(mut self, spec: OrgSpec) -> Self {
        self.add_org(spec);
        self
    }

    pub fn project(mut self, spec: ProjectSpec) -> Self {
        self.add_project(spec);
        self
    }

    pub fn context(mut self, spec: ContextSpec) -> Self {
        self.add_context(spec);
        self
    }

    /// Declares an organization (or returns the id of the one already declared).
    pub fn add_org(&mut self, spec: OrgSpec) -> String {
        if let Some(org) = self.orgs.iter().find(|o| o.slug == spec.slug) {
            return org.id.clone();
        }
        let id = spec.id.unwrap_or_else(|| {
            // A circleci/ organization's slug already holds its id.
            match spec.slug.strip_prefix("circleci/") {
                Some(id) => id.to_owned(),
                None => fake::uuid(&mut self.rng),
            }
        });
        let name = spec.slug.rsplit('/').next().unwrap_or_default().to_owned();
        self.orgs.push(Org {
            id: id.clone(),
            slug: spec.slug,
            name,
        });
        id
    }

    /// Creates (or replaces) a project; its organization is declared if it was not.
    pub fn add_project(&mut self, spec: ProjectSpec) {
        if let Some((owner, _)) = spec.slug.rsplit_once('/') {
            self.add_org(OrgSpec::new(owner));
        }
        let rng = &mut self.rng;
        let mut env_vars = BTreeMap::new();
        for (name, value) in spec.env {
            let at = past_time(rng);
            env_vars.insert(
                name,
                StoredVar {
                    value,
                    created_at: at,
                    updated_at: at,
                },
            );
        }
        let repo = spec.slug.rsplit('/').next().unwrap_or_default().to_owned();
        let checkout_keys = spec
            .checkout_keys
            .into_iter()
            .map(|k| StoredCheckoutKey {
                public_key: fake::ssh_public_key(rng, &repo),
                key_type: k.key_type,
                fingerprint: fake::ssh_fingerprint(rng),
                preferred: k.preferred,
                created_at: past_time(rng),
            })
            .collect();
        let ssh_keys = spec
            .ssh_hosts
            .into_iter()
            .map(|hostname| StoredSshKey {
                fingerprint: fake::ssh_fingerprint(rng),
                public_key: fake::ssh_public_key(rng, &hostname),
                private_key: fake::ssh_private_key(rng),
                hostname,
            })
            .collect();
        let project = StoredProject {
            id: fake::uuid(rng),
            slug: spec.slug.clone(),
            env_vars,
            checkout_keys,
            ssh_keys,
            aws_keypair: spec.aws_keypair.map(|(access_key_id, secret_access_key)| {
                StoredAwsKeypair {
                    access_key_id,
                    secret_access_key,
                }
            }),
            followed: spec.followed,
            forbidden: spec.forbidden,
        };
        self.projects.insert(spec.slug, project);
    }

    /// Creates a context and returns its id.
    pub fn add_context(&mut self, spec: ContextSpec) -> String {
        self.add_org(OrgSpec::new(spec.owner_slug.clone()));
        let id = fake::uuid(&mut self.rng);
        let mut vars = BTreeMap::new();
        for (name, value) in spec.env {
            let at = past_time(&mut self.rng);
            vars.insert(
                name,
                StoredVar {
                    value,
                    created_at: at,
                    updated_at: at,
                },
            );
        }
        self.contexts.push(StoredContext {
            id: id.clone(),
            name: spec.name,
            owner_slug: spec.owner_slug,
            created_at: past_time(&mut self.rng),
            vars,
        });
        id
    }

    pub fn org_id(&self, slug: &str) -> Option<&str> {
        self.orgs
            .iter()
            .find(|o| o.slug == slug)
            .map(|o| o.id.as_str())
    }

    pub fn orgs(&self) -> &[Org] {
        &self.orgs
    }

    pub fn projects(&self) -> impl Iterator<Item = &StoredProject> {
        self.projects.values()
    }

    pub fn project_by_slug(&self, slug: &str) -> Option<&StoredProject> {
        self.projects.get(slug)
    }

    pub fn project_by_slug_mut(&mut self, slug: &str) -> Option<&mut StoredProject> {
        self.projects.get_mut(slug)
    }

    pub fn contexts(&self) -> &[StoredContext] {
        &self.contexts
    }

    pub fn context_by_name(&self, name: &str) -> Option<&StoredContext> {
        self.contexts.iter().find(|c| c.name == name)
    }

    pub fn context_by_name_mut(&mut self, name: &str) -> Option<&mut StoredContext> {
        self.contexts.iter_mut().find(|c| c.name == name)
    }

    /// Every stored value — variables, legacy AWS keys, SSH private keys and the API token —
    /// so that a test can check none of them leaked into an output.
    pub fn stored_values(&self) -> Vec<String> {
        let mut values: Vec<String> = self.tokens.clone();
        for p in self.projects.values() {
            values.extend(p.env_vars.values().map(|v| v.value.clone()));
            values.extend(p.ssh_keys.iter().map(|k| k.private_key.clone()));
            if let Some(pair) = &p.aws_keypair {
                values.push(pair.access_key_id.clone());
                values.push(pair.secret_access_key.clone());
            }
        }
        for c in &self.contexts {
            values.extend(c.vars.values().map(|v| v.value.clone()));
        }
        values
    }

    fn authorized(&self, headers: &HeaderMap) -> bool {
        headers
            .get("circle-token")
            .and_then(|v| v.to_str().ok())
            .is_some_and(|t| self.tokens.iter().any(|known| known == t))
    }

    fn org_of_project(&self, project: &StoredProject) -> Option<&Org> {
        let (owner, _) = project.slug.rsplit_once('/')?;
        self.orgs.iter().find(|o| o.slug == owner)
    }
}

/// A date in 2022 before the incident window opened, as most stored secrets were.
fn past_time(rng: &mut Rng) -> DateTime<Utc> {
    let start = Utc
        .with_ymd_and_hms(2022, 1, 3, 9, 0, 0)
        .single()
        .unwrap_or_default();
    start + Days::seconds(rng.below(340 * 24 * 3600) as i64)
}

/// `xxxx` + the last four characters, as CircleCI shows project variables.
pub fn mask(value: &str) -> String {
    let chars: Vec<char> = value.chars().collect();
    let tail: String = chars[chars.len().saturating_sub(4)..].iter().collect();
    format!("xxxx{tail}")
}

/// CircleCI's error shape.
pub(crate) fn message(status: StatusCode, message: &str) -> Response {
    (status, Json(json!({ "message": message }))).into_response()
}

fn ok(value: Value) -> Response {
    (StatusCode::OK, Json(value)).into_response()
}

fn not_allowed() -> Response {
    message(StatusCode::METHOD_NOT_ALLOWED, "Method not allowed")
}

/// Answers one request (authentication, routing, the endpoint itself).
pub(crate) fn answer(
    state: &mut CircleCiState,
    method: &Method,
    raw_path: &str,
    query: Option<&str>,
    headers: &HeaderMap,
    body: &[u8],
) -> Response {
    if !state.authorized(headers) {
        return message(StatusCode::UNAUTHORIZED, "You must log in first.");
    }
    let Some(path) = percent_decode(raw_path) else {
        return message(StatusCode::NOT_FOUND, "Not found");
    };
    let params: Vec<(String, String)> = query
        .map(|q| {
            url::form_urlencoded::parse(q.as_bytes())
                .into_owned()
                .collect()
        })
        .unwrap_or_default();
    let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    let page = PageRequest::new(&path, &params, state.page_size);
    match (method, segments.as_slice()) {
        (&Method::GET, ["api", "v1.1", "projects"]) => ok(followed_projects(state)),
        (_, ["api", "v1.1", "projects"]) => not_allowed(),
        (&Method::GET, ["api", "v1.1", "project", vcs, org, repo, "settings"]) => {
            let Some(vcs) = v2_vcs(vcs) else {
                return message(StatusCode::NOT_FOUND, "Project not found");
            };
            let slug = format!("{vcs}/{org}/{repo}");
            match project(state, &slug) {
                Ok(p) => ok(settings(p)),
                Err((status, text)) => message(status, text),
            }
        }
        (_, ["api", "v1.1", "project", vcs, org, repo, "settings"]) if *method == Method::PUT => {
            let Some(vcs) = v2_vcs(vcs) else {
                return message(StatusCode::NOT_FOUND, "Project not found");
            };
            match project_mut(state, &format!("{vcs}/{org}/{repo}")) {
                Ok(p) => put_settings(p, body),
                Err((status, text)) => message(status, text),
            }
        }
        (_, ["api", "v1.1", "project", vcs, org, repo, "ssh-key"]) => {
            let Some(vcs) = v2_vcs(vcs) else {
                return message(StatusCode::NOT_FOUND, "Project not found");
            };
            let project = match project_mut(state, &format!("{vcs}/{org}/{repo}")) {
                Ok(p) => p,
                Err((status, text)) => return message(status, text),
            };
            match *method {
                Method::POST => add_ssh_key(project, body),
                Method::DELETE => delete_ssh_key(project, body),
                _ => not_allowed(),
            }
        }
        (&Method::GET, ["api", "private", "project"]) => org_projects(state, &params, &page),
        (_, ["api", "v2", "project", vcs, org, repo, "envvar"]) => {
            let slug = format!("{vcs}/{org}/{repo}");
            match *method {
                Method::GET => match project(state, &slug) {
                    Ok(p) => {
                        let items: Vec<Value> = p
                            .env_vars
                            .iter()
                            .map(|(name, v)| project_var_json(name, v))
                            .collect();
                        page.answer(items)
                    }
                    Err((status, text)) => message(status, text),
                },
                Method::POST => create_project_var(state, &slug, body),
                _ => not_allowed(),
            }
        }
        (_, ["api", "v2", "project", vcs, org, repo, "envvar", name]) => {
            let slug = format!("{vcs}/{org}/{repo}");
            let project = match project_mut(state, &slug) {
                Ok(p) => p,
                Err((status, text)) => return message(status, text),
            };
            match *method {
                Method::GET => match project.env_vars.get(*name) {
                    Some(v) => ok(project_var_json(name, v)),
                    None => message(StatusCode::NOT_FOUND, "Environment variable not found."),
                },
                Method::DELETE => match project.env_vars.remove(*name) {
                    Some(_) => ok(json!({"message": "Environment variable deleted."})),
                    None => message(StatusCode::NOT_FOUND, "Environment variable not found."),
                },
                _ => not_allowed(),
            }
        }
        (_, ["api", "v2", "project", vcs, org, repo, "checkout-key"]) => {
            let slug = format!("{vcs}/{org}/{repo}");
            match *method {
                Method::GET => match project(state, &slug) {
                    Ok(p) => page.answer(p.checkout_keys.iter().map(checkout_key_json).collect()),
                    Err((status, text)) => message(status, text),
                },
                Method::POST => create_checkout_key(state, &slug, body),
                _ => not_allowed(),
            }
        }
        (
            _,
            [
                "api",
                "v2",
                "project",
                vcs,
                org,
                repo,
                "checkout-key",
                fingerprint,
            ],
        ) => {
            let slug = format!("{vcs}/{org}/{repo}");
            let project = match project_mut(state, &slug) {
                Ok(p) => p,
                Err((status, text)) => return message(status, text),
            };
            match *method {
                Method::GET => match project
                    .checkout_keys
                    .iter()
                    .find(|k| k.fingerprint == *fingerprint)
                {
                    Some(k) => ok(checkout_key_json(k)),
                    None => message(StatusCode::NOT_FOUND, "Checkout key not found"),
                },
                Method::DELETE => {
                    let before = project.checkout_keys.len();
                    project
                        .checkout_keys
                        .retain(|k| k.fingerprint != *fingerprint);
                    if project.checkout_keys.len() == before {
                        message(StatusCode::NOT_FOUND, "Checkout key not found")
                    } else {
                        prefer_newest_deploy_key(project);
                        ok(json!({"message": "ok"}))
                    }
                }
                _ => not_allowed(),
            }
        }
        (&Method::POST, ["api", "v2", "project", vcs, org, repo, "pipeline"]) => {
            let slug = format!("{vcs}/{org}/{repo}");
            trigger_pipeline(state, &slug, body)
        }
        (&Method::GET, ["api", "v2", "pipeline", id, "workflow"]) => {
            let Some(p) = state.pipelines.iter_mut().find(|p| p.id == *id) else {
                return message(StatusCode::NOT_FOUND, "Pipeline not found");
            };
            p.polls += 1;
            let status = match (p.polls, p.success) {
                (1, _) => "running",
                (_, true) => "success",
                (_, false) => "failed",
            };
            let item = json!({
                "id": p.workflow_id, "name": "build-and-deploy", "status": status,
                "pipeline_id": p.id, "pipeline_number": p.number, "project_slug": p.slug,
            });
            page.answer(vec![item])
        }
        (&Method::GET, ["api", "v2", "context"]) => list_contexts(state, &params, &page),
        (&Method::GET, ["api", "v2", "context", id, "environment-variable"]) => {
            match state.contexts.iter().find(|c| c.id == *id) {
                Some(c) => page.answer(
                    c.vars
                        .iter()
                        .map(|(name, v)| context_var_json(&c.id, name, v))
                        .collect(),
                ),
                None => message(StatusCode::NOT_FOUND, "Context not found"),
            }
        }
        (_, ["api", "v2", "context", id, "environment-variable", name]) => {
            let Some(context) = state.contexts.iter_mut().find(|c| c.id == *id) else {
                return message(StatusCode::NOT_FOUND, "Context not found");
            };
            match *method {
                Method::PUT => put_context_var(context, name, body),
                Method::DELETE => match context.vars.remove(*name) {
                    Some(_) => ok(json!({"message": "Environment variable deleted."})),
                    None => message(StatusCode::NOT_FOUND, "Environment variable not found."),
                },
                _ => not_allowed(),
            }
        }
        _ => message(StatusCode::NOT_FOUND, "Not found"),
    }
}

/// `POST /api/v2/project/{slug}/checkout-key` with `{"type": "deploy-key" | "user-key"}`:
/// CircleCI makes the key pair (and, for real, registers the public half on GitHub). The body
/// has no preferred flag: a user key, when there is one, stays preferred; otherwise the newest
/// deploy key is.
fn create_checkout_key(state: &mut CircleCiState, slug: &str, body: &[u8]) -> Response {
    #[derive(serde::Deserialize)]
    struct Body {
        #[serde(rename = "type")]
        key_type: String,
    }
    let key_type = match serde_json::from_slice::<Body>(body) {
        Ok(b) if b.key_type == "deploy-key" => "deploy-key",
        Ok(b) if b.key_type == "user-key" => "github-user-key",
        Ok(_) => {
            return message(
                StatusCode::BAD_REQUEST,
                "Invalid checkout key type: expected deploy-key or user-key",
            );
        }
        Err(_) => return message(StatusCode::BAD_REQUEST, "Invalid JSON body."),
    };
    let public_key = fake::ssh_public_key(&mut state.rng, slug);
    let fingerprint = fake::ssh_fingerprint(&mut state.rng);
    let project = match project_mut(state, slug) {
        Ok(p) => p,
        Err((status, text)) => return message(status, text),
    };
    project.checkout_keys.push(StoredCheckoutKey {
        public_key,
        key_type: key_type.to_owned(),
        fingerprint: fingerprint.clone(),
        preferred: false,
        created_at: Utc::now(),
    });
    prefer_newest_deploy_key(project);
    let created = project
        .checkout_keys
        .iter()
        .find(|k| k.fingerprint == fingerprint)
        .map(checkout_key_json)
        .unwrap_or(Value::Null);
    (StatusCode::CREATED, Json(created)).into_response()
}

/// The preferred key: a user key if there is one, else the newest deploy key.
fn prefer_newest_deploy_key(project: &mut StoredProject) {
    let user_key = project
        .checkout_keys
        .iter()
        .rposition(|k| k.key_type == "github-user-key");
    let chosen = user_key.or_else(|| {
        project
            .checkout_keys
            .iter()
            .enumerate()
            .filter(|(_, k)| k.key_type == "deploy-key")
            .max_by_key(|(i, k)| (k.created_at, *i))
            .map(|(i, _)| i)
    });
    for (i, k) in project.checkout_keys.iter_mut().enumerate() {
        k.preferred = Some(i) == chosen;
    }
}

/// `POST /api/v2/project/{slug}/pipeline`: records the pipeline and decides its outcome now,
/// from the project's variables as they are at trigger time.
fn trigger_pipeline(state: &mut CircleCiState, slug: &str, body: &[u8]) -> Response {
    #[derive(serde::Deserialize)]
    struct Body {
        #[serde(default)]
        branch: Option<String>,
    }
    let branch = match serde_json::from_slice::<Body>(body) {
        Ok(b) => b.branch.unwrap_or_else(|| "main".to_string()),
        Err(_) => return message(StatusCode::BAD_REQUEST, "Invalid JSON body."),
    };
    let success = match project(state, slug) {
        Ok(p) => state
            .pipeline_check
            .as_ref()
            .is_none_or(|check| (check.0)(p, &branch)),
        Err((status, text)) => return message(status, text),
    };
    let number = state.pipelines.iter().filter(|p| p.slug == slug).count() as u64 + 1;
    let id = fake::uuid(&mut state.rng);
    let workflow_id = fake::uuid(&mut state.rng);
    state.pipelines.push(StoredPipeline {
        id: id.clone(),
        slug: slug.to_string(),
        branch,
        number,
        workflow_id,
        polls: 0,
        success,
    });
    let created = json!({"id": id, "number": number, "state": "created", "created_at": Utc::now()});
    (StatusCode::CREATED, axum::Json(created)).into_response()
}

/// v1.1 names the VCS `github`/`bitbucket`; the short v2 names are accepted too.
fn v2_vcs(vcs: &str) -> Option<&'static str> {
    match vcs {
        "github" | "gh" => Some("gh"),
        "bitbucket" | "bb" => Some("bb"),
        "circleci" => Some("circleci"),
        _ => None,
    }
}

/// Why a project cannot be used: the status and CircleCI's message.
type Refusal = (StatusCode, &'static str);

fn project<'a>(state: &'a CircleCiState, slug: &str) -> Result<&'a StoredProject, Refusal> {
    match state.projects.get(slug) {
        None => Err((StatusCode::NOT_FOUND, "Project not found")),
        Some(p) if p.forbidden => Err((StatusCode::FORBIDDEN, "Permission denied")),
        Some(p) => Ok(p),
    }
}

fn project_mut<'a>(
    state: &'a mut CircleCiState,
    slug: &str,
) -> Result<&'a mut StoredProject, Refusal> {
    match state.projects.get_mut(slug) {
        None => Err((StatusCode::NOT_FOUND, "Project not found")),
        Some(p) if p.forbidden => Err((StatusCode::FORBIDDEN, "Permission denied")),
        Some(p) => Ok(p),
    }
}

fn followed_projects(state: &CircleCiState) -> Value {
    let items: Vec<Value> = state
        .projects
        .values()
        .filter(|p| p.followed)
        .filter_map(|p| {
            let mut parts = p.slug.splitn(3, '/');
            let (vcs, org, repo) = (parts.next()?, parts.next()?, parts.next()?);
            let (vcs_type, host) = match vcs {
                "gh" => ("github", "github.com"),
                "bb" => ("bitbucket", "bitbucket.org"),
                // v1.1 knows nothing of GitHub App or GitLab projects.
                _ => return None,
            };
            Some(json!({
                "vcs_url": format!("https://{host}/{org}/{repo}"),
                "username": org,
                "reponame": repo,
                "vcs_type": vcs_type,
                "following": true,
                "default_branch": "main",
                "branches": {},
            }))
        })
        .collect();
    Value::Array(items)
}

fn settings(p: &StoredProject) -> Value {
    let mut parts = p.slug.splitn(3, '/');
    let (vcs, org, repo) = (
        parts.next().unwrap_or_default(),
        parts.next().unwrap_or_default(),
        parts.next().unwrap_or_default(),
    );
    let host = if vcs == "bb" {
        "bitbucket.org"
    } else {
        "github.com"
    };
    let keypair = match &p.aws_keypair {
        // The key id is shown whole, the secret masked, as on the settings page.
        Some(pair) => json!({
            "access_key_id": pair.access_key_id,
            "secret_access_key": mask(&pair.secret_access_key),
        }),
        None => Value::Null,
    };
    json!({
        "vcs_url": format!("https://{host}/{org}/{repo}"),
        "username": org,
        "reponame": repo,
        "default_branch": "main",
        "feature_flags": {"oss": false, "build-fork-prs": false},
        "ssh_keys": p.ssh_keys.iter().map(|k| json!({
            "hostname": k.hostname,
            "public_key": k.public_key,
            "fingerprint": k.fingerprint,
        })).collect::<Vec<_>>(),
        "aws": {"keypair": keypair},
    })
}

/// `PUT /api/v1.1/project/…/settings`: of the settings only the legacy AWS key pair is kept
/// here (`{"aws": {"keypair": {access_key_id, secret_access_key}}}`, or `null` to remove it);
/// the answer is the settings as a GET shows them.
fn put_settings(project: &mut StoredProject, body: &[u8]) -> Response {
    #[derive(serde::Deserialize)]
    struct Body {
        #[serde(default)]
        aws: Option<Aws>,
    }
    #[derive(serde::Deserialize)]
    struct Aws {
        keypair: Option<Pair>,
    }
    #[derive(serde::Deserialize)]
    struct Pair {
        access_key_id: String,
        secret_access_key: String,
    }
    let Ok(parsed) = serde_json::from_slice::<Body>(body) else {
        return message(StatusCode::BAD_REQUEST, "Invalid JSON body.");
    };
    if let Some(aws) = parsed.aws {
        project.aws_keypair = match aws.keypair {
            Some(pair) if pair.access_key_id.is_empty() || pair.secret_access_key.is_empty() => {
                return message(
                    StatusCode::BAD_REQUEST,
                    "access_key_id and secret_access_key are required",
                );
            }
            Some(pair) => Some(StoredAwsKeypair {
                access_key_id: pair.access_key_id,
                secret_access_key: pair.secret_access_key,
            }),
            None => None,
        };
    }
    ok(settings(project))
}

/// `POST /api/v1.1/project/…/ssh-key` with `{hostname, private_key}`: CircleCI parses the
/// key (refusing one with a passphrase or not a key at all), derives the fingerprint and keeps
/// the key for the host. The same key for the same host again changes nothing.
fn add_ssh_key(project: &mut StoredProject, body: &[u8]) -> Response {
    #[derive(serde::Deserialize)]
    struct Body {
        #[serde(default)]
        hostname: Option<String>,
        private_key: String,
    }
    let Ok(parsed) = serde_json::from_slice::<Body>(body) else {
        return message(StatusCode::BAD_REQUEST, "Invalid JSON body.");
    };
    let parsed_key = ssh_key::PrivateKey::from_openssh(parsed.private_key.trim().as_bytes());
    let (Ok(key), Some(fingerprint)) = (
        parsed_key,
        crate::providers::ssh_key::md5_fingerprint(&parsed.private_key),
    ) else {
        return message(StatusCode::BAD_REQUEST, "Invalid private key");
    };
    if key.is_encrypted() {
        return message(
            StatusCode::BAD_REQUEST,
            "Private keys with passphrases are not supported",
        );
    }
    let hostname = parsed.hostname.unwrap_or_default();
    let exists = project
        .ssh_keys
        .iter()
        .any(|k| k.fingerprint == fingerprint && k.hostname == hostname);
    if !exists {
        project.ssh_keys.push(StoredSshKey {
            hostname,
            fingerprint,
            public_key: key.public_key().to_openssh().unwrap_or_default(),
            private_key: parsed.private_key,
        });
    }
    (StatusCode::OK, "").into_response()
}

/// `DELETE /api/v1.1/project/…/ssh-key` with `{fingerprint, hostname}`.
fn delete_ssh_key(project: &mut StoredProject, body: &[u8]) -> Response {
    #[derive(serde::Deserialize)]
    struct Body {
        fingerprint: String,
        #[serde(default)]
        hostname: Option<String>,
    }
    let Ok(parsed) = serde_json::from_slice::<Body>(body) else {
        return message(StatusCode::BAD_REQUEST, "Invalid JSON body.");
    };
    let hostname = parsed.hostname.unwrap_or_default();
    let before = project.ssh_keys.len();
    project
        .ssh_keys
        .retain(|k| !(k.fingerprint == parsed.fingerprint && k.hostname == hostname));
    if project.ssh_keys.len() == before {
        return message(StatusCode::NOT_FOUND, "SSH key not found");
    }
    (StatusCode::OK, "").into_response()
}

fn org_projects(
    state: &CircleCiState,
    params: &[(String, String)],
    page: &PageRequest,
) -> Response {
    let Some(org_id) = param(params, "organization-id") else {
        return message(StatusCode::BAD_REQUEST, "organization-id is required");
    };
    let Some(org) = state.orgs.iter().find(|o| o.id == org_id) else {
        return message(StatusCode::NOT_FOUND, "Organization not found");
    };
    let items: Vec<Value> = state
        .projects
        .values()
        .filter(|p| state.org_of_project(p).is_some_and(|o| o.id == org.id))
        .map(|p| {
            json!({
                "id": p.id,
                "name": p.slug.rsplit('/').next().unwrap_or_default(),
                "slug": p.slug,
                "has_trigger": true,
            })
        })
        .collect();
    page.answer(items)
}

fn list_contexts(
    state: &CircleCiState,
    params: &[(String, String)],
    page: &PageRequest,
) -> Response {
    let owner_slug = if let Some(id) = param(params, "owner-id") {
        match state.orgs.iter().find(|o| o.id == id) {
            Some(org) => org.slug.clone(),
            None => return message(StatusCode::NOT_FOUND, "Organization not found"),
        }
    } else if let Some(slug) = param(params, "owner-slug") {
        slug.to_owned()
    } else {
        return message(
            StatusCode::BAD_REQUEST,
            "Must provide either owner-id or owner-slug",
        );
    };
    let items: Vec<Value> = state
        .contexts
        .iter()
        .filter(|c| c.owner_slug == owner_slug)
        .map(|c| json!({"id": c.id, "name": c.name, "created_at": c.created_at}))
        .collect();
    page.answer(items)
}

fn project_var_json(name: &str, v: &StoredVar) -> Value {
    json!({"name": name, "value": mask(&v.value), "created_at": v.created_at})
}

fn context_var_json(context_id: &str, name: &str, v: &StoredVar) -> Value {
    json!({
        "variable": name,
        "context_id": context_id,
        "created_at": v.created_at,
        "updated_at": v.updated_at,
    })
}

fn checkout_key_json(k: &StoredCheckoutKey) -> Value {
    json!({
        "public-key": k.public_key,
        "type": k.key_type,
        "fingerprint": k.fingerprint,
        "preferred": k.preferred,
        "created-at": k.created_at,
    })
}

/// Environment variable names as CircleCI accepts them.
fn valid_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

fn create_project_var(state: &mut CircleCiState, slug: &str, body: &[u8]) -> Response {
    #[derive(serde::Deserialize)]
    struct Body {
        name: String,
        value: String,
    }
    let project = match project_mut(state, slug) {
        Ok(p) => p,
        Err((status, text)) => return message(status, text),
    };
    let Ok(Body { name, value }) = serde_json::from_slice::<Body>(body) else {
        return message(
            StatusCode::BAD_REQUEST,
            "Expected a JSON body with name and value",
        );
    };
    if !valid_name(&name) {
        return message(StatusCode::BAD_REQUEST, "Invalid environment variable name");
    }
    let now = Utc::now();
    // Create-or-replace: a replaced variable is a new variable as far as CircleCI says.
    let var = StoredVar {
        value,
        created_at: now,
        updated_at: now,
    };
    let answer = project_var_json(&name, &var);
    project.env_vars.insert(name, var);
    (StatusCode::CREATED, Json(answer)).into_response()
}

fn put_context_var(context: &mut StoredContext, name: &str, body: &[u8]) -> Response {
    #[derive(serde::Deserialize)]
    struct Body {
        value: String,
    }
    let Ok(Body { value }) = serde_json::from_slice::<Body>(body) else {
        return message(StatusCode::BAD_REQUEST, "Expected a JSON body with value");
    };
    if !valid_name(name) {
        return message(StatusCode::BAD_REQUEST, "Invalid environment variable name");
    }
    let now = Utc::now();
    let var = match context.vars.get_mut(name) {
        Some(existing) => {
            existing.value = value;
            // updated_at must move forward even within one clock tick: rekey's read-back
            // compares it.
            existing.updated_at = if now > existing.updated_at {
                now
            } else {
                existing.updated_at + Days::milliseconds(1)
            };
            existing.clone()
        }
        None => {
            let var = StoredVar {
                value,
                created_at: now,
                updated_at: now,
            };
            context.vars.insert(name.to_owned(), var.clone());
            var
        }
    };
    ok(context_var_json(&context.id, name, &var))
}

fn param<'a>(params: &'a [(String, String)], name: &str) -> Option<&'a str> {
    params
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

/// The page a listing request asks for. Page tokens are opaque and bound to the listing
/// (path and filters): a token replayed on another endpoint is refused with 400, as a client
/// that builds its next-page URL wrongly deserves.
struct PageRequest {
    listing_key: u64,
    token: Option<String>,
    page_size: usize,
}

impl PageRequest {
    fn new(path: &str, params: &[(String, String)], page_size: usize) -> Self {
        let mut filters: Vec<String> = params
            .iter()
            .filter(|(k, _)| k != "page-token")
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        filters.sort();
        PageRequest {
            listing_key: fnv1a(&format!("{path}?{}", filters.join("&"))),
            token: param(params, "page-token").map(str::to_owned),
            page_size: page_size.max(1),
        }
    }

    fn answer(&self, items: Vec<Value>) -> Response {
        let offset = match &self.token {
            None => 0,
            Some(token) => match u64::from_str_radix(token, 16) {
                Ok(raw) if (raw ^ self.listing_key) <= items.len() as u64 => {
                    (raw ^ self.listing_key) as usize
                }
                _ => return message(StatusCode::BAD_REQUEST, "Invalid page-token"),
            },
        };
        let end = (offset + self.page_size).min(items.len());
        let next = if end < items.len() {
            Value::String(format!("{:016x}", end as u64 ^ self.listing_key))
        } else {
            Value::Null
        };
        let page: Vec<Value> = items.into_iter().skip(offset).take(end - offset).collect();
        ok(json!({"items": page, "next_page_token": next}))
    }
}

fn fnv1a(s: &str) -> u64 {
    s.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

/// Percent-decodes a path (CircleCI accepts a slug's slashes escaped as `%2F`).
fn percent_decode(path: &str) -> Option<String> {
    let bytes = path.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// A made-up organization, `gh/acme`, holding the kind of secrets a real one does: AWS key
/// pairs (one shared by two projects and a context, one `PROD_`-prefixed), a GCP
/// service-account key, an Azure client secret with its `ARM_*` companions, GitHub, npm and
/// Docker Hub credentials, a Slack webhook, deploy and user keys, additional SSH keys, a legacy
/// AWS key pair, plain configuration and a few names no rule knows. Values are random on
/// every call; the API token is [`CircleCiState::token`].
pub fn demo_org() -> CircleCiState {
    let mut rng = Rng::from_entropy();
    let token = fake::circleci_token(&mut rng);
    let org = "gh/acme";
    let shared_id = fake::aws_access_key_id(&mut rng);
    let shared_secret = fake::aws_secret_access_key(&mut rng);
    let prod_id = fake::aws_access_key_id(&mut rng);
    let prod_secret = fake::aws_secret_access_key(&mut rng);
    let legacy_id = fake::aws_access_key_id(&mut rng);
    let legacy_secret = fake::aws_secret_access_key(&mut rng);
    let azure_client_id = fake::uuid(&mut rng);
    let azure_tenant_id = fake::uuid(&mut rng);

    CircleCiState::new(token)
        .org(OrgSpec::new(org))
        .project(
            ProjectSpec::new("gh/acme/api")
                .env("AWS_ACCESS_KEY_ID", shared_id.clone())
                .env("AWS_SECRET_ACCESS_KEY", shared_secret.clone())
                .env("AWS_DEFAULT_REGION", "us-east-1")
                .env("GITHUB_TOKEN", fake::github_token(&mut rng))
                .env("NPM_TOKEN", fake::npm_token(&mut rng))
                .env("MYSTERY_CONFIG", fake::password(&mut rng))
                .checkout_key(CheckoutKeySpec::deploy_key())
                .ssh_key("deploy.acme.example"),
        )
        .project(
            ProjectSpec::new("gh/acme/web")
                .env("AWS_ACCESS_KEY_ID", shared_id.clone())
                .env("AWS_SECRET_ACCESS_KEY", shared_secret.clone())
                .env("AWS_DEFAULT_REGION", "eu-west-1")
                .env("DOCKERHUB_USERNAME", "acmebot")
                .env("DOCKERHUB_PASSWORD", fake::password(&mut rng))
                .env("SLACK_WEBHOOK_URL", fake::slack_webhook_url(&mut rng))
                .env("SENTRY_DSN_LEGACY", fake::password(&mut rng))
                .checkout_key(CheckoutKeySpec::deploy_key())
                .checkout_key(CheckoutKeySpec::user_key()),
        )
        .project(
            ProjectSpec::new("gh/acme/infra")
                .env("PROD_AWS_ACCESS_KEY_ID", prod_id)
                .env("PROD_AWS_SECRET_ACCESS_KEY", prod_secret)
                .env(
                    "GCLOUD_SERVICE_KEY",
                    fake::gcp_service_account_key(&mut rng, "acme-prod", "ci-deployer"),
                )
                .env("GOOGLE_PROJECT_ID", "acme-prod")
                .env("ARM_CLIENT_ID", azure_client_id)
                .env("ARM_CLIENT_SECRET", fake::azure_client_secret(&mut rng))
                .env("ARM_TENANT_ID", azure_tenant_id)
                .env("ARM_SUBSCRIPTION_ID", fake::uuid(&mut rng))
                .env("TF_VAR_blob", fake::password(&mut rng))
                .checkout_key(CheckoutKeySpec::deploy_key())
                .ssh_key("bastion.acme.example")
                .aws_keypair(legacy_id, legacy_secret),
        )
        .project(
            ProjectSpec::new("gh/acme/docs")
                .env("NETLIFY_AUTH_TOKEN", fake::password(&mut rng))
                .env("DOCS_BASE_URL", "https://docs.acme.example")
                .env("ALGOLIA_ADMIN_KEY", rng.string(fake::HEX, 32))
                .checkout_key(CheckoutKeySpec::deploy_key())
                .ssh_key(""),
        )
        .context(
            ContextSpec::new(org, "aws-prod")
                .env("AWS_ACCESS_KEY_ID", shared_id)
                .env("AWS_SECRET_ACCESS_KEY", shared_secret)
                .env("AWS_DEFAULT_REGION", "us-east-1"),
        )
        .context(
            ContextSpec::new(org, "release")
                .env("GITHUB_TOKEN", fake::github_token(&mut rng))
                .env("NPM_TOKEN", fake::npm_token(&mut rng))
                .env("DOCKERHUB_USERNAME", "acmebot")
                .env("DOCKERHUB_PASSWORD", fake::password(&mut rng)),
        )
        .context(
            ContextSpec::new(org, "notifications")
                .env("SLACK_WEBHOOK_URL", fake::slack_webhook_url(&mut rng))
                .env("PAGERDUTY_ROUTING_KEY", rng.string(fake::HEX, 32))
                .env("STATUSPAGE_THING", fake::password(&mut rng)),
        )
}

#[cfg(test)]
mod tests {
    use super::super::Sandbox;
    use super::*;
    use crate::circleci::CircleCiClient;
    use crate::http::RetryPolicy;
    use crate::secret::Secret;
    use reqwest::Method;

    #[test]
    fn masks_like_circleci() {
        assert_eq!(mask("AKIAABCDEFGHWXYZ"), "xxxxWXYZ");
        assert_eq!(mask("ab"), "xxxxab");
        assert_eq!(
            percent_decode("/gh%2Facme%2Fapi").as_deref(),
            Some("/gh/acme/api")
        );
        assert_eq!(percent_decode("/a%2").as_deref(), Some("/a%2"));
        assert_eq!(percent_decode("/%zz"), None);
    }

    #[test]
    fn demo_org_is_random_and_realistic() {
        let a = demo_org();
        let b = demo_org();
        assert_ne!(a.token(), b.token());
        assert_ne!(a.stored_values(), b.stored_values());
        assert_eq!(a.projects().count(), 4);
        assert_eq!(a.contexts().len(), 3);
        let api = a.project_by_slug("gh/acme/api").unwrap();
        let web = a.project_by_slug("gh/acme/web").unwrap();
        let ctx = a.context_by_name("aws-prod").unwrap();
        let key = &api.env_vars["AWS_ACCESS_KEY_ID"].value;
        assert_eq!(&web.env_vars["AWS_ACCESS_KEY_ID"].value, key);
        assert_eq!(&ctx.vars["AWS_ACCESS_KEY_ID"].value, key);
    }

    async fn start() -> (Sandbox, CircleCiClient) {
        let state = demo_org().with_page_size(2);
        let token = state.token().to_owned();
        let sandbox = Sandbox::start(state).await.unwrap();
        let client = CircleCiClient::new(&sandbox.base_url(), Secret::new(token))
            .unwrap()
            .with_retry_policy(RetryPolicy::no_retry());
        (sandbox, client)
    }

    #[tokio::test]
    async fn lists_are_masked_paginated_and_authenticated() {
        let (sandbox, client) = start().await;
        let vars = client.list_project_env_vars("gh/acme/api").await.unwrap();
        assert_eq!(vars.len(), 6);
        let stored = sandbox.state();
        for v in &vars {
            let full = &stored.project_by_slug("gh/acme/api").unwrap().env_vars[&v.name].value;
            assert_eq!(v.value.as_str(), mask(full));
        }
        let pages = sandbox
            .requests()
            .iter()
            .filter(|r| r.path == "/api/v2/project/gh/acme/api/envvar")
            .count();
        assert_eq!(pages, 3);

        let unauthenticated =
            CircleCiClient::new(&sandbox.base_url(), Secret::new("wrong")).unwrap();
        let err = unauthenticated
            .list_project_env_vars("gh/acme/api")
            .await
            .unwrap_err();
        assert_eq!(err.status(), Some(401));
        assert_eq!(err.reason(), "You must log in first.");

        let err = client
            .list_project_env_vars("gh/acme/nope")
            .await
            .unwrap_err();
        assert_eq!(err.status(), Some(404));
        assert_eq!(err.reason(), "Project not found");
        sandbox.shutdown().await;
    }

    #[tokio::test]
    async fn foreign_page_tokens_are_refused() {
        let (_sandbox, client) = start().await;
        let first: Value = client
            .get(
                &["api", "v2", "project", "gh", "acme", "api", "envvar"],
                &[],
            )
            .await
            .unwrap();
        let token = first["next_page_token"].as_str().unwrap().to_owned();
        let err = client
            .get::<Value>(
                &["api", "v2", "project", "gh", "acme", "web", "envvar"],
                &[("page-token", &token)],
            )
            .await
            .unwrap_err();
        assert_eq!(err.status(), Some(400));
    }

    #[tokio::test]
    async fn mutations_store_values_and_answer_masked() {
        let (sandbox, client) = start().await;
        let created: Value = client
            .request(
                Method::POST,
                &["api", "v2", "project", "gh", "acme", "api", "envvar"],
                &[],
                Some(&json!({"name": "NEW_SECRET", "value": "s3cr3t-value-9876"})),
            )
            .await
            .unwrap();
        assert_eq!(created["value"], "xxxx9876");
        let stored = sandbox.with_state(|s| {
            s.project_by_slug("gh/acme/api").unwrap().env_vars["NEW_SECRET"]
                .value
                .clone()
        });
        assert_eq!(stored, "s3cr3t-value-9876");

        let _: Value = client
            .request::<Value, ()>(
                Method::DELETE,
                &[
                    "api",
                    "v2",
                    "project",
                    "gh",
                    "acme",
                    "api",
                    "envvar",
                    "NEW_SECRET",
                ],
                &[],
                None,
            )
            .await
            .unwrap();
        let err = client
            .request::<Value, ()>(
                Method::DELETE,
                &[
                    "api",
                    "v2",
                    "project",
                    "gh",
                    "acme",
                    "api",
                    "envvar",
                    "NEW_SECRET",
                ],
                &[],
                None,
            )
            .await
            .unwrap_err();
        assert_eq!(err.status(), Some(404));

        let ctx = sandbox.with_state(|s| s.context_by_name("aws-prod").unwrap().clone());
        let before = ctx.vars["AWS_ACCESS_KEY_ID"].updated_at;
        let updated: Value = client
            .request(
                Method::PUT,
                &[
                    "api",
                    "v2",
                    "context",
                    &ctx.id,
                    "environment-variable",
                    "AWS_ACCESS_KEY_ID",
                ],
                &[],
                Some(&json!({"value": "AKIANEWVALUE0000"})),
            )
            .await
            .unwrap();
        assert!(updated.get("value").is_none());
        let after: DateTime<Utc> = serde_json::from_value(updated["updated_at"].clone()).unwrap();
        assert!(after > before);
        let _: Value = client
            .request::<Value, ()>(
                Method::DELETE,
                &[
                    "api",
                    "v2",
                    "context",
                    &ctx.id,
                    "environment-variable",
                    "AWS_DEFAULT_REGION",
                ],
                &[],
                None,
            )
            .await
            .unwrap();
        sandbox.with_state(|s| {
            let c = s.context_by_name("aws-prod").unwrap();
            assert_eq!(c.vars["AWS_ACCESS_KEY_ID"].value, "AKIANEWVALUE0000");
            assert!(!c.vars.contains_key("AWS_DEFAULT_REGION"));
        });
        assert_eq!(sandbox.mutating_requests().len(), 5);
    }

    #[tokio::test]
    async fn forbidden_projects_and_settings() {
        let (sandbox, client) = start().await;
        sandbox.with_state(|s| {
            s.add_project(ProjectSpec::new("gh/acme/locked").forbidden());
        });
        let err = client
            .list_checkout_keys("gh/acme/locked")
            .await
            .unwrap_err();
        assert_eq!(err.status(), Some(403));
        let settings = client.project_settings("gh/acme/infra").await.unwrap();
        assert_eq!(settings.ssh_keys.len(), 1);
        assert!(settings.aws.keypair.is_some());
        let keys = client.list_checkout_keys("gh/acme/web").await.unwrap();
        assert_eq!(keys.len(), 2);
        assert!(
            keys.iter()
                .all(|k| k.public_key.starts_with("ssh-ed25519 "))
        );
    }

    #[tokio::test]
    async fn shutdown_stops_the_server() {
        let (sandbox, client) = start().await;
        assert!(client.list_followed_projects().await.is_ok());
        sandbox.shutdown().await;
        let err = client.list_followed_projects().await.unwrap_err();
        assert!(err.status().is_none());
    }
}
