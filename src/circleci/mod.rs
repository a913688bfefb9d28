//! The CircleCI API client: one authenticated, retrying request helper ([`CircleCiClient::request`])
//! and the typed listings rekey reads (followed and organization projects, project variables,
//! checkout keys, v1.1 settings, contexts and their variables).
//!
//! The token is a [`Secret`]: it goes only into the `Circle-Token` header (marked sensitive),
//! never into a URL, a log line or an error. Every listing follows `next_page_token` by
//! repeating the same endpoint with `page-token=…` until the token is absent.

pub mod types;

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use reqwest::header::{ACCEPT, HeaderValue};
use reqwest::{Method, StatusCode};
use serde::Serialize;
use serde::de::DeserializeOwned;
use url::Url;

use crate::http::{RetryPolicy, error_kind};
use crate::secret::Secret;

pub use types::{
    AwsKeypair, AwsSettings, CheckoutKey, ContextEnvVar, ContextInfo, ContextOwner,
    FollowedProject, OrgProject, PipelineCreated, ProjectEnvVar, ProjectSettings, SettingsSshKey,
    Workflow, vcs_slug,
};

/// Where CircleCI lives unless `CIRCLECI_HOST` says otherwise.
pub const DEFAULT_HOST: &str = "https://circleci.com";

/// A listing that goes on for more pages than this is taken to be looping (CircleCI's private
/// project listing has been seen returning the same pages forever).
const MAX_PAGES: usize = 10_000;

/// Everything that can go wrong talking to CircleCI. No variant carries the token, a value,
/// or a response body other than CircleCI's own `message`.
#[derive(Debug, thiserror::Error)]
pub enum CircleCiError {
    /// CircleCI answered with an error status; `message` is its `{"message": …}`.
    #[error("CircleCI answered {status} to {method} {path}: {message}")]
    Api {
        status: u16,
        method: Method,
        path: String,
        message: String,
    },
    /// No answer: connection refused, timeout, connection cut (after the retries).
    #[error("could not reach CircleCI for {method} {path}: {kind}")]
    Transport {
        method: Method,
        path: String,
        kind: &'static str,
        #[source]
        source: reqwest::Error,
    },
    /// A success status with a body rekey cannot read.
    #[error("unexpected answer from CircleCI to {method} {path}: {detail}")]
    Decode {
        method: Method,
        path: String,
        detail: String,
    },
    /// A listing whose pages never end.
    #[error("CircleCI kept returning pages for {path}; stopped after a repeated page token")]
    Pagination { path: String },
    #[error("invalid CircleCI address {url:?}: {reason}")]
    InvalidBaseUrl { url: String, reason: String },
    #[error(
        "invalid project slug {slug:?}: expected vcs/org/repo (gh/acme/api, circleci/ORG-ID/PROJECT-ID)"
    )]
    InvalidSlug { slug: String },
    #[error("no CircleCI token: set CIRCLECI_TOKEN (or use `rekey auth`)")]
    MissingToken,
    #[error("the CircleCI token contains characters that cannot be sent in a header")]
    InvalidToken,
    #[error("could not set up the HTTP client: {0}")]
    Client(#[source] reqwest::Error),
}

impl CircleCiError {
    /// The HTTP status, when CircleCI answered.
    pub fn status(&self) -> Option<u16> {
        match self {
            CircleCiError::Api { status, .. } => Some(*status),
            _ => None,
        }
    }

    /// The reason alone, without method and path: CircleCI's message for an HTTP error.
    pub fn reason(&self) -> String {
        match self {
            CircleCiError::Api { message, .. } => message.clone(),
            CircleCiError::Transport { kind, .. } => format!("could not reach CircleCI: {kind}"),
            CircleCiError::Decode { detail, .. } => format!("unexpected answer: {detail}"),
            other => other.to_string(),
        }
    }

    /// 401: the token itself is refused.
    pub fn is_unauthorized(&self) -> bool {
        self.status() == Some(401)
    }
}

/// A CircleCI API client. Cheap to clone (the connection pool is shared).
#[derive(Debug, Clone)]
pub struct CircleCiClient {
    http: reqwest::Client,
    base: Url,
    token: Secret,
    retry: RetryPolicy,
    /// The run's CircleCI rate limit, when one is set.
    limiter: Option<std::sync::Arc<crate::ratelimit::RateLimiter>>,
    /// Read-only invocations only (`with_read_cache`): variables read once per place.
    reads: Option<std::sync::Arc<ReadCache>>,
}

/// What CircleCI shows of a project's variables, by name: the last four characters of each
/// value ([`CircleCiClient::project_masks`]).
pub type Masks = std::collections::BTreeMap<String, String>;

/// When each variable of a context was last written, by name
/// ([`CircleCiClient::context_stamps`]).
pub type Stamps = std::collections::BTreeMap<String, chrono::DateTime<chrono::Utc>>;

/// What each project's and context's variables show, read once and shared by every target
/// that binds the place: a dry run of 190,000 targets reads 10,500 places, not a million, and
/// hands each target the same map instead of a copy. Never on a client that writes, where a
/// read after a write must see the write.
#[derive(Debug, Default)]
struct ReadCache {
    masks: std::sync::Mutex<HashMap<String, Arc<tokio::sync::OnceCell<Arc<Masks>>>>>,
    stamps: std::sync::Mutex<HashMap<String, Arc<tokio::sync::OnceCell<Arc<Stamps>>>>>,
}

/// The cell of `key` in `map`, made empty on first use; concurrent readers share one fetch.
fn cell<T>(
    map: &std::sync::Mutex<HashMap<String, Arc<tokio::sync::OnceCell<T>>>>,
    key: &str,
) -> Arc<tokio::sync::OnceCell<T>> {
    let mut map = map.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    if let Some(cell) = map.get(key) {
        return cell.clone();
    }
    map.entry(key.to_string()).or_default().clone()
}

impl CircleCiClient {
    /// A client for the CircleCI at `base_url` (`https://circleci.com`, a server install, or
    /// a sandbox such as `http://127.0.0.1:PORT`).
    pub fn new(base_url: &str, token: Secret) -> Result<Self, CircleCiError> {
        if token.is_empty() {
            return Err(CircleCiError::MissingToken);
        }
        if HeaderValue::from_str(token.expose()).is_err() {
            return Err(CircleCiError::InvalidToken);
        }
        let base = Url::parse(base_url.trim()).map_err(|e| CircleCiError::InvalidBaseUrl {
            url: base_url.to_owned(),
            reason: e.to_string(),
        })?;
        if !matches!(base.scheme(), "http" | "https") || base.cannot_be_a_base() {
            return Err(CircleCiError::InvalidBaseUrl {
                url: base_url.to_owned(),
                reason: "expected an http(s) address".to_owned(),
            });
        }
        let http = crate::http::client::builder()
            .build()
            .map_err(CircleCiError::Client)?;
        Ok(CircleCiClient {
            http,
            base,
            token,
            retry: RetryPolicy::default(),
            limiter: None,
            reads: None,
        })
    }

    /// A client for the host in `CIRCLECI_HOST` (default [`DEFAULT_HOST`]). The token comes from
    /// [`crate::credentials`], which looks in the environment and the OS keyring.
    pub fn from_env(token: Secret) -> Result<Self, CircleCiError> {
        let host = std::env::var("CIRCLECI_HOST")
            .ok()
            .filter(|h| !h.trim().is_empty())
            .unwrap_or_else(|| DEFAULT_HOST.to_owned());
        CircleCiClient::new(&host, token)
    }

    /// Makes every request wait for `limiter` first (shared by all targets of a run).
    pub fn with_rate_limit(
        mut self,
        limiter: std::sync::Arc<crate::ratelimit::RateLimiter>,
    ) -> Self {
        self.limiter = Some(limiter);
        self
    }

    /// A client for a read-only invocation (the dry run): each project's masks and each
    /// context's stamps are fetched once and shared (errors are not kept: the next reader
    /// tries again).
    pub fn with_read_cache(mut self) -> Self {
        self.reads = Some(Arc::default());
        self
    }

    /// Replaces the retry policy (tests shorten it; a tight rate limit may lengthen it).
    pub fn with_retry_policy(mut self, retry: RetryPolicy) -> Self {
        self.retry = retry;
        self
    }

    pub fn retry_policy(&self) -> RetryPolicy {
        self.retry
    }

    pub fn base_url(&self) -> &Url {
        &self.base
    }

    /// The URL of `segments` under the base; each segment is percent-encoded on its own, so a
    /// variable name or a context id can never escape its place in the path.
    pub fn url(&self, segments: &[&str], query: &[(&str, &str)]) -> Url {
        let mut url = self.base.clone();
        if let Ok(mut path) = url.path_segments_mut() {
            path.pop_if_empty().extend(segments);
        }
        url.set_query(None);
        if !query.is_empty() {
            url.query_pairs_mut().extend_pairs(query);
        }
        url
    }

    /// The general request helper: sends `method` to `segments` with `query` and an optional
    /// JSON `body`, through the retry policy, and decodes a 2xx answer as `T`. An error status
    /// becomes [`CircleCiError::Api`] with CircleCI's message.
    pub async fn request<T, B>(
        &self,
        method: Method,
        segments: &[&str],
        query: &[(&str, &str)],
        body: Option<&B>,
    ) -> Result<T, CircleCiError>
    where
        T: DeserializeOwned,
        B: Serialize + ?Sized,
    {
        self.request_with(method, segments, query, body, false, None)
            .await
    }

    /// [`Self::request`], optionally retrying a POST like a PUT: for endpoints whose POST
    /// replaces (project variables), a repeat after a lost answer does no harm.
    async fn request_with<T, B>(
        &self,
        method: Method,
        segments: &[&str],
        query: &[(&str, &str)],
        body: Option<&B>,
        idempotent_post: bool,
        secret: Option<&Secret>,
    ) -> Result<T, CircleCiError>
    where
        T: DeserializeOwned,
        B: Serialize + ?Sized,
    {
        let url = self.url(segments, query);
        let path = url.path().to_owned();
        // Serialized once; each attempt clones the bytes.
        // Bodies may carry a secret value (a variable being written): wipe them after use.
        let body = match body {
            Some(b) => Some(crate::http::secret_bytes(serde_json::to_vec(b).map_err(
                |e| CircleCiError::Decode {
                    method: method.clone(),
                    path: path.clone(),
                    detail: format!("request body could not be encoded ({:?})", e.classify()),
                },
            )?)),
            None => None,
        };
        tracing::debug!(%method, path, "CircleCI request");
        let build = || {
            let mut request = self
                .http
                .request(method.clone(), url.clone())
                .header(ACCEPT, "application/json")
                .header("Circle-Token", self.token_header());
            if let Some(body) = &body {
                request = request
                    .header(reqwest::header::CONTENT_TYPE, "application/json")
                    .body(body.clone());
            }
            request
        };
        if let Some(limiter) = &self.limiter {
            limiter.acquire().await;
        }
        let sent = if idempotent_post {
            self.retry.send_idempotent(build).await
        } else {
            self.retry.send(build).await
        };
        let response = sent.map_err(|source| CircleCiError::Transport {
            method: method.clone(),
            path: path.clone(),
            kind: error_kind(&source),
            source: source.without_url(),
        })?;
        let status = response.status();
        let bytes = crate::http::read_body(response, crate::http::MAX_BODY)
            .await
            .map_err(|e| match e {
                crate::http::BodyError::Transport(source) => CircleCiError::Transport {
                    method: method.clone(),
                    path: path.clone(),
                    kind: error_kind(&source),
                    source: source.without_url(),
                },
                too_large => CircleCiError::Decode {
                    method: method.clone(),
                    path: path.clone(),
                    detail: too_large.to_string(),
                },
            })?;
        tracing::debug!(%method, path, status = status.as_u16(), "CircleCI answer");
        if !status.is_success() {
            // CircleCI may echo what it was sent: its token never, the value being written
            // never, in any spelling.
            let mut secrets = vec![self.token.expose()];
            secrets.extend(secret.map(Secret::expose));
            return Err(CircleCiError::Api {
                status: status.as_u16(),
                method,
                path,
                message: error_message(status, &bytes, &secrets),
            });
        }
        // An empty success body (a DELETE, say) reads as JSON null.
        let bytes: &[u8] = if bytes.iter().all(u8::is_ascii_whitespace) {
            b"null"
        } else {
            &bytes
        };
        serde_json::from_slice(bytes).map_err(|e| CircleCiError::Decode {
            method,
            path,
            // Position and category only: serde's own message may quote the offending value.
            detail: format!(
                "{:?} error at line {} column {}",
                e.classify(),
                e.line(),
                e.column()
            ),
        })
    }

    /// A GET of `segments`.
    pub async fn get<T: DeserializeOwned>(
        &self,
        segments: &[&str],
        query: &[(&str, &str)],
    ) -> Result<T, CircleCiError> {
        self.request::<T, ()>(Method::GET, segments, query, None)
            .await
    }

    /// Every item of a v2 listing: repeats the same endpoint, same query, plus
    /// `page-token=<next_page_token>` until the token is absent or empty.
    pub async fn get_all<T: DeserializeOwned>(
        &self,
        segments: &[&str],
        query: &[(&str, &str)],
    ) -> Result<Vec<T>, CircleCiError> {
        let mut items = Vec::new();
        let mut token: Option<String> = None;
        let mut seen = HashSet::new();
        for _ in 0..MAX_PAGES {
            let mut q: Vec<(&str, &str)> = query.to_vec();
            if let Some(t) = token.as_deref() {
                q.push(("page-token", t));
            }
            let page: types::Page<T> = self.get(segments, &q).await?;
            items.extend(page.items);
            match page.next_page_token.filter(|t| !t.is_empty()) {
                None => return Ok(items),
                Some(next) => {
                    if !seen.insert(next.clone()) {
                        break;
                    }
                    token = Some(next);
                }
            }
        }
        Err(CircleCiError::Pagination {
            path: self.url(segments, &[]).path().to_owned(),
        })
    }

    /// Projects the token's user follows (`GET /api/v1.1/projects`).
    pub async fn list_followed_projects(&self) -> Result<Vec<FollowedProject>, CircleCiError> {
        self.get(&["api", "v1.1", "projects"], &[]).await
    }

    /// Projects of an organization by id (`GET /api/private/project?organization-id=…`).
    pub async fn list_org_projects(&self, org_id: &str) -> Result<Vec<OrgProject>, CircleCiError> {
        self.get_all(
            &["api", "private", "project"],
            &[("organization-id", org_id)],
        )
        .await
    }

    /// A project's environment variables, values masked (`GET /api/v2/project/{slug}/envvar`).
    pub async fn list_project_env_vars(
        &self,
        slug: &str,
    ) -> Result<Vec<ProjectEnvVar>, CircleCiError> {
        let [vcs, org, repo] = split_slug(slug)?;
        self.get_all(&["api", "v2", "project", vcs, org, repo, "envvar"], &[])
            .await
    }

    /// A project's checkout keys (`GET /api/v2/project/{slug}/checkout-key`).
    pub async fn list_checkout_keys(&self, slug: &str) -> Result<Vec<CheckoutKey>, CircleCiError> {
        let [vcs, org, repo] = split_slug(slug)?;
        self.get_all(
            &["api", "v2", "project", vcs, org, repo, "checkout-key"],
            &[],
        )
        .await
    }

    /// A project's v1.1 settings: additional SSH keys and the legacy AWS key pair
    /// (`GET /api/v1.1/project/{vcs}/{org}/{repo}/settings`, with v1.1's `github`/`bitbucket`).
    pub async fn project_settings(&self, slug: &str) -> Result<ProjectSettings, CircleCiError> {
        let [vcs, org, repo] = v1_project(slug)?;
        self.get(&["api", "v1.1", "project", vcs, org, repo, "settings"], &[])
            .await
    }

    /// An organization's contexts (`GET /api/v2/context?owner-slug=…` or `owner-id=…`).
    pub async fn list_contexts(
        &self,
        owner: &ContextOwner,
    ) -> Result<Vec<ContextInfo>, CircleCiError> {
        let query = match owner {
            ContextOwner::Slug(slug) => ("owner-slug", slug.as_str()),
            ContextOwner::Id(id) => ("owner-id", id.as_str()),
        };
        self.get_all(&["api", "v2", "context"], &[query]).await
    }

    /// A context's variables, never with values
    /// (`GET /api/v2/context/{id}/environment-variable`).
    pub async fn list_context_env_vars(
        &self,
        context_id: &str,
    ) -> Result<Vec<ContextEnvVar>, CircleCiError> {
        self.get_all(
            &["api", "v2", "context", context_id, "environment-variable"],
            &[],
        )
        .await
    }

    /// What CircleCI shows of a project's variables, by name: the last four characters of
    /// each value (it masks them as `xxxx` + last four). The observable state of a project
    /// binding: which credential it holds, whether a plan's observation still holds.
    pub async fn project_masks(&self, slug: &str) -> Result<Masks, CircleCiError> {
        Ok(Arc::unwrap_or_clone(self.shared_project_masks(slug).await?))
    }

    /// [`Self::project_masks`], shared: read once per project on a client made
    /// [`Self::with_read_cache`].
    pub async fn shared_project_masks(&self, slug: &str) -> Result<Arc<Masks>, CircleCiError> {
        let fetch = || async {
            let vars = self.list_project_env_vars(slug).await?;
            Ok(Arc::new(
                vars.into_iter()
                    .map(|v| (v.name, v.value.last_four().to_string()))
                    .collect(),
            ))
        };
        match &self.reads {
            Some(reads) => cell(&reads.masks, slug)
                .get_or_try_init(fetch)
                .await
                .cloned(),
            None => fetch().await,
        }
    }

    /// When each variable of a context was last written (`updated_at`, else `created_at`), by
    /// name: the only observable state of a context variable, which has no readable value.
    pub async fn context_stamps(&self, context_id: &str) -> Result<Stamps, CircleCiError> {
        Ok(Arc::unwrap_or_clone(
            self.shared_context_stamps(context_id).await?,
        ))
    }

    /// [`Self::context_stamps`], shared: read once per context on a client made
    /// [`Self::with_read_cache`].
    pub async fn shared_context_stamps(
        &self,
        context_id: &str,
    ) -> Result<Arc<Stamps>, CircleCiError> {
        let fetch = || async {
            let vars = self.list_context_env_vars(context_id).await?;
            Ok(Arc::new(
                vars.into_iter()
                    .filter_map(|v| Some((v.variable, v.updated_at.or(v.created_at)?)))
                    .collect(),
            ))
        };
        match &self.reads {
            Some(reads) => cell(&reads.stamps, context_id)
                .get_or_try_init(fetch)
                .await
                .cloned(),
            None => fetch().await,
        }
    }

    fn token_header(&self) -> HeaderValue {
        // Checked in `new`; the fallback only keeps this path free of panics.
        let mut value = HeaderValue::from_str(self.token.expose())
            .unwrap_or_else(|_| HeaderValue::from_static(""));
        value.set_sensitive(true);
        value
    }
}

/// The three parts of a project slug, refusing anything else (an empty part would silently
/// address another endpoint).
/// Writes: the only calls of this client that change CircleCI. `apply` makes them; `--dry-run`
/// never reaches them.
impl CircleCiClient {
    /// Creates or replaces a project environment variable; CircleCI answers with the masked value.
    pub async fn set_project_var(
        &self,
        slug: &str,
        name: &str,
        value: &Secret,
    ) -> Result<ProjectEnvVar, CircleCiError> {
        let [vcs, org, repo] = split_slug(slug)?;
        let body = NewVar {
            name,
            value: value.expose(),
        };
        self.request_with(
            Method::POST,
            &["api", "v2", "project", vcs, org, repo, "envvar"],
            &[],
            Some(&body),
            true,
            Some(value),
        )
        .await
    }

    /// Adds or replaces a context environment variable (`updated_at` advances).
    pub async fn set_context_var(
        &self,
        context_id: &str,
        name: &str,
        value: &Secret,
    ) -> Result<ContextEnvVar, CircleCiError> {
        let body = ContextValue {
            value: value.expose(),
        };
        self.request_with(
            Method::PUT,
            &[
                "api",
                "v2",
                "context",
                context_id,
                "environment-variable",
                name,
            ],
            &[],
            Some(&body),
            false,
            Some(value),
        )
        .await
    }

    /// Creates a checkout key (`POST /api/v2/project/{slug}/checkout-key` with `{"type": …}`):
    /// `deploy-key` makes CircleCI generate a key pair and register the public half on the
    /// repository itself; the private half never leaves CircleCI. The body has no "preferred"
    /// flag: CircleCI decides which key checkouts use, and says so in the listing.
    pub async fn create_checkout_key(
        &self,
        slug: &str,
        key_type: &str,
    ) -> Result<CheckoutKey, CircleCiError> {
        let [vcs, org, repo] = split_slug(slug)?;
        // Not idempotent: a repeat would create a second key, so only the retry policy's safe
        // cases are retried.
        self.request(
            Method::POST,
            &["api", "v2", "project", vcs, org, repo, "checkout-key"],
            &[],
            Some(&serde_json::json!({ "type": key_type })),
        )
        .await
    }

    /// Deletes a checkout key by fingerprint (CircleCI also removes a deploy key it registered).
    pub async fn delete_checkout_key(
        &self,
        slug: &str,
        fingerprint: &str,
    ) -> Result<(), CircleCiError> {
        let [vcs, org, repo] = split_slug(slug)?;
        self.request::<serde_json::Value, ()>(
            Method::DELETE,
            &[
                "api",
                "v2",
                "project",
                vcs,
                org,
                repo,
                "checkout-key",
                fingerprint,
            ],
            &[],
            None,
        )
        .await
        .map(|_| ())
    }

    /// Adds an additional SSH key to a project (`POST /api/v1.1/project/{vcs}/{org}/{repo}/ssh-key`
    /// with `hostname` and `private_key`); CircleCI derives the fingerprint. Adding a key that is
    /// already there changes nothing, so a repeat after a lost answer is harmless.
    pub async fn add_ssh_key(
        &self,
        slug: &str,
        hostname: &str,
        private_key: &Secret,
    ) -> Result<(), CircleCiError> {
        let [vcs, org, repo] = v1_project(slug)?;
        let body = NewSshKey {
            hostname,
            private_key: private_key.expose(),
        };
        self.request_with::<serde_json::Value, _>(
            Method::POST,
            &["api", "v1.1", "project", vcs, org, repo, "ssh-key"],
            &[],
            Some(&body),
            true,
            Some(private_key),
        )
        .await
        .map(|_| ())
    }

    /// Deletes an additional SSH key by fingerprint and hostname (`DELETE` on the same path).
    pub async fn delete_ssh_key(
        &self,
        slug: &str,
        fingerprint: &str,
        hostname: &str,
    ) -> Result<(), CircleCiError> {
        let [vcs, org, repo] = v1_project(slug)?;
        self.request::<serde_json::Value, _>(
            Method::DELETE,
            &["api", "v1.1", "project", vcs, org, repo, "ssh-key"],
            &[],
            Some(&serde_json::json!({ "fingerprint": fingerprint, "hostname": hostname })),
        )
        .await
        .map(|_| ())
    }

    /// Replaces the legacy AWS key pair of project settings
    /// (`PUT /api/v1.1/project/{vcs}/{org}/{repo}/settings` with `{"aws": {"keypair": …}}`,
    /// the call CircleCI's own settings page makes; a PUT, so repeating it is harmless).
    pub async fn set_aws_keypair(
        &self,
        slug: &str,
        access_key_id: &Secret,
        secret_access_key: &Secret,
    ) -> Result<(), CircleCiError> {
        let [vcs, org, repo] = v1_project(slug)?;
        let body = AwsSettingsBody {
            aws: AwsKeypairBody {
                keypair: NewAwsKeypair {
                    access_key_id: access_key_id.expose(),
                    secret_access_key: secret_access_key.expose(),
                },
            },
        };
        self.request_with::<serde_json::Value, _>(
            Method::PUT,
            &["api", "v1.1", "project", vcs, org, repo, "settings"],
            &[],
            Some(&body),
            false,
            Some(secret_access_key),
        )
        .await
        .map(|_| ())
    }

    /// Triggers a pipeline on `branch` (the canary of a rotation).
    pub async fn trigger_pipeline(
        &self,
        slug: &str,
        branch: &str,
    ) -> Result<PipelineCreated, CircleCiError> {
        let [vcs, org, repo] = split_slug(slug)?;
        // Not idempotent: a repeat would start a second pipeline, so only the retry policy's
        // safe cases (429, 503, refused connection) are retried.
        self.request(
            Method::POST,
            &["api", "v2", "project", vcs, org, repo, "pipeline"],
            &[],
            Some(&serde_json::json!({ "branch": branch })),
        )
        .await
    }

    /// The workflows of a pipeline, with their status.
    pub async fn pipeline_workflows(
        &self,
        pipeline_id: &str,
    ) -> Result<Vec<Workflow>, CircleCiError> {
        self.get_all(&["api", "v2", "pipeline", pipeline_id, "workflow"], &[])
            .await
    }
}

#[derive(Serialize)]
struct NewVar<'a> {
    name: &'a str,
    value: &'a str,
}

#[derive(Serialize)]
struct ContextValue<'a> {
    value: &'a str,
}

#[derive(Serialize)]
struct NewSshKey<'a> {
    hostname: &'a str,
    private_key: &'a str,
}

#[derive(Serialize)]
struct AwsSettingsBody<'a> {
    aws: AwsKeypairBody<'a>,
}

#[derive(Serialize)]
struct AwsKeypairBody<'a> {
    keypair: NewAwsKeypair<'a>,
}

#[derive(Serialize)]
struct NewAwsKeypair<'a> {
    access_key_id: &'a str,
    secret_access_key: &'a str,
}

/// A slug's parts with v1.1's VCS names (`github`/`bitbucket` for `gh`/`bb`).
fn v1_project(slug: &str) -> Result<[&str; 3], CircleCiError> {
    let [vcs, org, repo] = split_slug(slug)?;
    let vcs = match vcs {
        "gh" => "github",
        "bb" => "bitbucket",
        other => other,
    };
    Ok([vcs, org, repo])
}

pub fn split_slug(slug: &str) -> Result<[&str; 3], CircleCiError> {
    let parts: Vec<&str> = slug.split('/').collect();
    match parts.as_slice() {
        [vcs, org, repo] if !vcs.is_empty() && !org.is_empty() && !repo.is_empty() => {
            Ok([vcs, org, repo])
        }
        _ => Err(CircleCiError::InvalidSlug {
            slug: slug.to_owned(),
        }),
    }
}

/// CircleCI's `{"message": …}`, or the status's reason when the body is something else (a
/// proxy's HTML page, say — not echoed, since nobody knows what it holds).
fn error_message(status: StatusCode, body: &[u8], secrets: &[&str]) -> String {
    #[derive(serde::Deserialize)]
    struct Message {
        message: String,
    }
    if let Ok(m) = serde_json::from_slice::<Message>(body) {
        // Redacted first (a secret's lines are recognizable only before they are joined),
        // then bounded, single line: it ends up in tables and YAML.
        let one_line: String = crate::redact::redact(&m.message, secrets)
            .chars()
            .map(|c| if c.is_control() { ' ' } else { c })
            .take(300)
            .collect();
        return one_line;
    }
    let reason = status.canonical_reason().unwrap_or("error");
    if body.is_empty() {
        reason.to_owned()
    } else {
        format!("{reason} (a non-JSON answer of {} bytes)", body.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn client(base: &str) -> CircleCiClient {
        CircleCiClient::new(base, Secret::new("tok")).unwrap()
    }

    #[test]
    fn urls_encode_each_segment() {
        let c = client("https://circleci.example.com/");
        assert_eq!(
            c.url(
                &["api", "v2", "project", "gh", "acme", "api", "envvar"],
                &[]
            )
            .as_str(),
            "https://circleci.example.com/api/v2/project/gh/acme/api/envvar"
        );
        assert_eq!(
            c.url(
                &["api", "v2", "context", "a/../b", "environment-variable"],
                &[("page-token", "x y&z")]
            )
            .as_str(),
            "https://circleci.example.com/api/v2/context/a%2F..%2Fb/environment-variable?page-token=x+y%26z"
        );
        let c = client("http://127.0.0.1:9/prefix");
        assert_eq!(
            c.url(&["api", "v1.1", "projects"], &[]).as_str(),
            "http://127.0.0.1:9/prefix/api/v1.1/projects"
        );
    }

    #[test]
    fn rejects_bad_configuration() {
        assert!(matches!(
            CircleCiClient::new("ftp://x", Secret::new("t")),
            Err(CircleCiError::InvalidBaseUrl { .. })
        ));
        assert!(matches!(
            CircleCiClient::new("not a url", Secret::new("t")),
            Err(CircleCiError::InvalidBaseUrl { .. })
        ));
        assert!(matches!(
            CircleCiClient::new(DEFAULT_HOST, Secret::new("")),
            Err(CircleCiError::MissingToken)
        ));
        let err = CircleCiClient::new(DEFAULT_HOST, Secret::new("bad\ntoken-XYZ")).unwrap_err();
        assert!(!err.to_string().contains("XYZ"));
        assert!(!format!("{:?}", client(DEFAULT_HOST)).contains("tok\""));
    }

    #[test]
    fn slugs_have_three_parts() {
        assert_eq!(split_slug("gh/acme/api").unwrap(), ["gh", "acme", "api"]);
        assert!(split_slug("gh/acme").is_err());
        assert!(split_slug("gh//api").is_err());
        assert!(split_slug("gh/acme/api/x").is_err());
    }

    #[test]
    fn error_messages() {
        assert_eq!(
            error_message(
                StatusCode::NOT_FOUND,
                br#"{"message":"Project not found"}"#,
                &[]
            ),
            "Project not found"
        );
        assert_eq!(
            error_message(StatusCode::BAD_GATEWAY, b"<html>secret?</html>", &[]),
            "Bad Gateway (a non-JSON answer of 20 bytes)"
        );
        assert_eq!(error_message(StatusCode::FORBIDDEN, b"", &[]), "Forbidden");
    }
}
