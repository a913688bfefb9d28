//! The GitHub simulator: repository deploy keys, `GET /user` for personal access tokens, and
//! the credential-revocation API, with GitHub's documented shapes — deploy keys as
//! `{id, key, url, title, verified, created_at, read_only, last_used}`, errors as
//! `{"message", "documentation_url", "status"}` (validation errors with `errors[]`), 401
//! "Bad credentials", 404 "Not Found" for a repository the token cannot see, 422 "key is
//! already in use" for a public key registered anywhere, 422 at the deploy-key limit,
//! `X-OAuth-Scopes` on `GET /user`, 202 from `POST /credentials/revoke`.
//!
//! Fault injection (latency, rate limiting as GitHub does it — 403 with
//! `x-ratelimit-remaining: 0` —, forced statuses, a lost response after the effect) and the
//! request log (method, path, status: never a body or a header) work as in the CircleCI and AWS
//! simulators. Point `GITHUB_API_URL` at [`GithubSandbox::base_url`].

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use regex::Regex;
use serde_json::{Value, json};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use super::{RecordedRequest, Rng, fake, lock};

/// Deploy keys a repository may hold before GitHub answers 422.
pub const DEFAULT_MAX_DEPLOY_KEYS: usize = 50;

const DOCS: &str = "https://docs.github.com/rest";

/// A deploy key as stored: the public key only (GitHub never sees a private key).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredDeployKey {
    pub id: u64,
    pub title: String,
    /// `ssh-ed25519 AAAA…` without the comment, as GitHub answers it.
    pub key: String,
    pub read_only: bool,
    pub created_at: DateTime<Utc>,
}

/// A personal access token GitHub knows.
#[derive(Clone, PartialEq, Eq)]
pub struct StoredToken {
    pub value: String,
    pub login: String,
    /// `X-OAuth-Scopes` (classic tokens); empty for fine-grained ones.
    pub scopes: String,
    pub revoked: bool,
}

impl std::fmt::Debug for StoredToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoredToken")
            .field("login", &self.login)
            .field("scopes", &self.scopes)
            .field("revoked", &self.revoked)
            .finish_non_exhaustive()
    }
}

/// The simulated GitHub: repositories with deploy keys, and tokens.
#[derive(Debug, Clone)]
pub struct GithubState {
    /// rekey's own token (repository administration).
    admin_token: String,
    pub repos: BTreeMap<String, Vec<StoredDeployKey>>,
    pub tokens: Vec<StoredToken>,
    pub max_deploy_keys: usize,
    next_id: u64,
    rng: Rng,
}

impl GithubState {
    /// An empty GitHub whose administration token is random.
    pub fn new() -> Self {
        let mut rng = Rng::from_entropy();
        GithubState {
            admin_token: fake::github_token(&mut rng),
            repos: BTreeMap::new(),
            tokens: Vec::new(),
            max_deploy_keys: DEFAULT_MAX_DEPLOY_KEYS,
            next_id: 64_000_000 + rng.below(1_000_000),
            rng,
        }
    }

    /// rekey's own token (`GITHUB_TOKEN`).
    pub fn admin_token(&self) -> &str {
        &self.admin_token
    }

    /// Declares `owner/repo` with no deploy key.
    pub fn repo(mut self, full_name: &str) -> Self {
        self.repos.entry(full_name.to_owned()).or_default();
        self
    }

    /// Adds a deploy key made elsewhere (a random public key); returns its id.
    pub fn add_foreign_key(&mut self, full_name: &str, title: &str) -> u64 {
        let key = fake::ssh_public_key(&mut self.rng, "x")
            .rsplit_once(' ')
            .map(|(k, _)| k.to_owned())
            .unwrap_or_default();
        let id = self.next_id();
        self.repos
            .entry(full_name.to_owned())
            .or_default()
            .push(StoredDeployKey {
                id,
                title: title.to_owned(),
                key,
                read_only: true,
                created_at: Utc::now() - chrono::Duration::days(400),
            });
        id
    }

    /// Registers a token of `login` with `scopes`; returns its value.
    pub fn add_token(&mut self, login: &str, scopes: &str) -> String {
        let value = fake::github_token(&mut self.rng);
        self.tokens.push(StoredToken {
            value: value.clone(),
            login: login.to_owned(),
            scopes: scopes.to_owned(),
            revoked: false,
        });
        value
    }

    /// Registers a token value made by a person (a test's "new" token).
    pub fn register_token(&mut self, value: &str, login: &str, scopes: &str) {
        self.tokens.push(StoredToken {
            value: value.to_owned(),
            login: login.to_owned(),
            scopes: scopes.to_owned(),
            revoked: false,
        });
    }

    pub fn token_works(&self, value: &str) -> bool {
        self.tokens.iter().any(|t| t.value == value && !t.revoked)
    }

    pub fn keys_of(&self, full_name: &str) -> Vec<StoredDeployKey> {
        self.repos.get(full_name).cloned().unwrap_or_default()
    }

    /// Every token value (for secret scans).
    pub fn token_values(&self) -> Vec<String> {
        self.tokens.iter().map(|t| t.value.clone()).collect()
    }

    fn next_id(&mut self) -> u64 {
        self.next_id += 1 + self.rng.below(50);
        self.next_id
    }
}

impl Default for GithubState {
    fn default() -> Self {
        GithubState::new()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fault {
    /// 403 with `x-ratelimit-remaining: 0`, before anything happens.
    RateLimit,
    /// This status, before anything happens.
    Status(StatusCode),
    /// The request takes effect, then the answer is a 502: the client cannot know.
    LoseResponse,
}

#[derive(Debug)]
struct Forced {
    pattern: Regex,
    remaining: u32,
    fault: Fault,
}

#[derive(Debug, Default)]
struct Faults {
    latency: Duration,
    forced: Vec<Forced>,
}

struct Shared {
    state: Mutex<GithubState>,
    faults: Mutex<Faults>,
    log: Mutex<Vec<RecordedRequest>>,
    started: Instant,
}

/// A running GitHub simulator. Dropping it stops the server.
pub struct GithubSandbox {
    shared: Arc<Shared>,
    addr: std::net::SocketAddr,
    shutdown: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for GithubSandbox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GithubSandbox")
            .field("addr", &self.addr)
            .finish()
    }
}

impl GithubSandbox {
    /// Starts the simulator on 127.0.0.1 at a free port, within the current Tokio runtime.
    pub async fn start(state: GithubState) -> std::io::Result<GithubSandbox> {
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", 0)).await?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(Shared {
            state: Mutex::new(state),
            faults: Mutex::new(Faults::default()),
            log: Mutex::new(Vec::new()),
            started: Instant::now(),
        });
        let app = axum::Router::new()
            .fallback(handle)
            .with_state(shared.clone());
        let (tx, rx) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            let served = axum::serve(listener, app)
                .with_graceful_shutdown(async {
                    let _ = rx.await;
                })
                .await;
            if let Err(e) = served {
                tracing::debug!(error = %e, "github sandbox server stopped");
            }
        });
        Ok(GithubSandbox {
            shared,
            addr,
            shutdown: Some(tx),
            task: Some(task),
        })
    }

    /// `http://127.0.0.1:PORT`, to use as `GITHUB_API_URL`.
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn admin_token(&self) -> String {
        lock(&self.shared.state).admin_token.clone()
    }

    pub fn with_state<R>(&self, f: impl FnOnce(&mut GithubState) -> R) -> R {
        f(&mut lock(&self.shared.state))
    }

    pub fn state(&self) -> GithubState {
        lock(&self.shared.state).clone()
    }

    pub fn set_latency(&self, latency: Duration) {
        lock(&self.shared.faults).latency = latency;
    }

    /// The next `count` requests whose path matches answer 403 "API rate limit exceeded".
    pub fn rate_limit(&self, path_regex: &str, count: u32) -> Result<(), regex::Error> {
        self.force(path_regex, count, Fault::RateLimit)
    }

    /// The next `count` matching requests answer `status` without any effect.
    pub fn fail_next(&self, path_regex: &str, count: u32, status: u16) -> Result<(), regex::Error> {
        let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        self.force(path_regex, count, Fault::Status(status))
    }

    /// The next `count` matching requests take effect, then answer 502.
    pub fn lose_response(&self, path_regex: &str, count: u32) -> Result<(), regex::Error> {
        self.force(path_regex, count, Fault::LoseResponse)
    }

    fn force(&self, path_regex: &str, count: u32, fault: Fault) -> Result<(), regex::Error> {
        let pattern = Regex::new(path_regex)?;
        lock(&self.shared.faults).forced.push(Forced {
            pattern,
            remaining: count,
            fault,
        });
        Ok(())
    }

    pub fn clear_faults(&self) {
        *lock(&self.shared.faults) = Faults::default();
    }

    pub fn requests(&self) -> Vec<RecordedRequest> {
        lock(&self.shared.log).clone()
    }

    pub fn mutating_requests(&self) -> Vec<RecordedRequest> {
        self.requests()
            .into_iter()
            .filter(RecordedRequest::is_mutating)
            .collect()
    }

    pub fn clear_requests(&self) {
        lock(&self.shared.log).clear();
    }

    pub async fn shutdown(mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(mut task) = self.task.take()
            && tokio::time::timeout(Duration::from_secs(1), &mut task)
                .await
                .is_err()
        {
            task.abort();
        }
    }
}

impl Drop for GithubSandbox {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

async fn handle(
    State(shared): State<Arc<Shared>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let latency = lock(&shared.faults).latency;
    if !latency.is_zero() {
        tokio::time::sleep(latency).await;
    }
    let path = uri.path().to_owned();
    let query = uri.query().map(str::to_owned);
    let fault = injected(&shared, &path);
    let response = match fault {
        Some(Fault::RateLimit) => {
            let mut r = error(
                StatusCode::FORBIDDEN,
                "API rate limit exceeded for user ID 1.",
            );
            r.headers_mut()
                .insert("x-ratelimit-remaining", HeaderValue::from_static("0"));
            r
        }
        Some(Fault::Status(status)) => {
            error(status, status.canonical_reason().unwrap_or("Server Error"))
        }
        Some(Fault::LoseResponse) | None => {
            let mut state = lock(&shared.state);
            let answer = answer(
                &mut state,
                &method,
                &path,
                query.as_deref(),
                &headers,
                &body,
            );
            if fault == Some(Fault::LoseResponse) {
                error(StatusCode::BAD_GATEWAY, "Server Error")
            } else {
                answer
            }
        }
    };
    lock(&shared.log).push(RecordedRequest {
        method: method.to_string(),
        path,
        query,
        status: response.status().as_u16(),
        at: shared.started.elapsed(),
    });
    response
}

fn injected(shared: &Shared, path: &str) -> Option<Fault> {
    let mut faults = lock(&shared.faults);
    let rule = faults
        .forced
        .iter_mut()
        .find(|r| r.remaining > 0 && r.pattern.is_match(path))?;
    rule.remaining -= 1;
    Some(rule.fault)
}

/// GitHub's error shape.
fn error(status: StatusCode, message: &str) -> Response {
    let body = json!({
        "message": message,
        "documentation_url": DOCS,
        "status": status.as_u16().to_string(),
    });
    (status, Json(body)).into_response()
}

/// GitHub's validation error (422) with one `errors[]` entry.
fn validation(resource: &str, field: &str, code: &str, message: &str) -> Response {
    let body = json!({
        "message": "Validation Failed",
        "errors": [{"resource": resource, "code": code, "field": field, "message": message}],
        "documentation_url": "https://docs.github.com/rest/deploy-keys/deploy-keys#create-a-deploy-key",
        "status": "422",
    });
    (StatusCode::UNPROCESSABLE_ENTITY, Json(body)).into_response()
}

fn bearer(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get("authorization")?.to_str().ok()?;
    value
        .strip_prefix("Bearer ")
        .or_else(|| value.strip_prefix("token "))
        .map(str::trim)
}

fn key_json(full_name: &str, k: &StoredDeployKey) -> Value {
    json!({
        "id": k.id,
        "key": k.key,
        "url": format!("https://api.github.com/repos/{full_name}/keys/{}", k.id),
        "title": k.title,
        "verified": true,
        "created_at": k.created_at,
        "read_only": k.read_only,
        "added_by": "rekey",
        "last_used": Value::Null,
        "enabled": true,
    })
}

fn answer(
    state: &mut GithubState,
    method: &Method,
    path: &str,
    query: Option<&str>,
    headers: &HeaderMap,
    body: &[u8],
) -> Response {
    let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    match (method, segments.as_slice()) {
        (&Method::GET, ["user"]) => {
            let token = bearer(headers).unwrap_or_default();
            match state.tokens.iter().find(|t| t.value == token && !t.revoked) {
                Some(t) => {
                    let mut r = (
                        StatusCode::OK,
                        Json(json!({"login": t.login, "id": 1000 + t.login.len(), "type": "User"})),
                    )
                        .into_response();
                    if let Ok(v) = HeaderValue::from_str(&t.scopes) {
                        r.headers_mut().insert("x-oauth-scopes", v);
                    }
                    r
                }
                None => error(StatusCode::UNAUTHORIZED, "Bad credentials"),
            }
        }
        (&Method::POST, ["credentials", "revoke"]) => {
            #[derive(serde::Deserialize)]
            struct Body {
                credentials: Vec<String>,
            }
            let Ok(Body { credentials }) = serde_json::from_slice::<Body>(body) else {
                return error(StatusCode::UNPROCESSABLE_ENTITY, "Invalid request.");
            };
            if credentials.is_empty() || credentials.len() > 1000 {
                return error(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "Between 1 and 1000 credentials must be given.",
                );
            }
            // Unknown credentials are accepted silently: the endpoint does not say what it
            // knows.
            for c in &credentials {
                for t in state.tokens.iter_mut().filter(|t| &t.value == c) {
                    t.revoked = true;
                }
            }
            (StatusCode::ACCEPTED, Json(json!({}))).into_response()
        }
        (_, ["repos", owner, repo, "keys", rest @ ..]) => {
            if bearer(headers) != Some(state.admin_token.as_str()) {
                return error(StatusCode::UNAUTHORIZED, "Bad credentials");
            }
            let full_name = format!("{owner}/{repo}");
            if !state.repos.contains_key(&full_name) {
                return error(StatusCode::NOT_FOUND, "Not Found");
            }
            match (method, rest) {
                (&Method::GET, []) => list_keys(state, &full_name, query),
                (&Method::POST, []) => create_key(state, &full_name, body),
                (&Method::GET, [id]) => {
                    let keys = state
                        .repos
                        .get(&full_name)
                        .map(Vec::as_slice)
                        .unwrap_or(&[]);
                    match keys.iter().find(|k| k.id.to_string() == *id) {
                        Some(k) => (StatusCode::OK, Json(key_json(&full_name, k))).into_response(),
                        None => error(StatusCode::NOT_FOUND, "Not Found"),
                    }
                }
                (&Method::DELETE, [id]) => {
                    let Some(keys) = state.repos.get_mut(&full_name) else {
                        return error(StatusCode::NOT_FOUND, "Not Found");
                    };
                    let before = keys.len();
                    keys.retain(|k| k.id.to_string() != *id);
                    if keys.len() == before {
                        error(StatusCode::NOT_FOUND, "Not Found")
                    } else {
                        StatusCode::NO_CONTENT.into_response()
                    }
                }
                _ => error(StatusCode::NOT_FOUND, "Not Found"),
            }
        }
        _ => error(StatusCode::NOT_FOUND, "Not Found"),
    }
}

fn list_keys(state: &GithubState, full_name: &str, query: Option<&str>) -> Response {
    let params: BTreeMap<String, String> = query
        .map(|q| {
            url::form_urlencoded::parse(q.as_bytes())
                .into_owned()
                .collect()
        })
        .unwrap_or_default();
    let per_page: usize = params
        .get("per_page")
        .and_then(|v| v.parse().ok())
        .unwrap_or(30)
        .clamp(1, 100);
    let page: usize = params
        .get("page")
        .and_then(|v| v.parse().ok())
        .unwrap_or(1)
        .max(1);
    let keys = state.repos.get(full_name).map(Vec::as_slice).unwrap_or(&[]);
    let items: Vec<Value> = keys
        .iter()
        .skip((page - 1) * per_page)
        .take(per_page)
        .map(|k| key_json(full_name, k))
        .collect();
    (StatusCode::OK, Json(Value::Array(items))).into_response()
}

fn create_key(state: &mut GithubState, full_name: &str, body: &[u8]) -> Response {
    #[derive(serde::Deserialize)]
    struct Body {
        #[serde(default)]
        title: Option<String>,
        key: Option<String>,
        #[serde(default)]
        read_only: Option<bool>,
    }
    let Ok(body) = serde_json::from_slice::<Body>(body) else {
        return error(StatusCode::BAD_REQUEST, "Problems parsing JSON");
    };
    let Some(key) = body.key.filter(|k| !k.trim().is_empty()) else {
        return validation("PublicKey", "key", "missing_field", "key is missing");
    };
    let Ok(parsed) = ssh_key::PublicKey::from_openssh(key.trim()) else {
        return validation(
            "PublicKey",
            "key",
            "custom",
            "key is invalid. You must supply a key in OpenSSH public key format",
        );
    };
    // Stored and compared without the comment, as GitHub does.
    let mut bare = parsed.clone();
    bare.set_comment("");
    let Ok(key_text) = bare.to_openssh() else {
        return error(StatusCode::INTERNAL_SERVER_ERROR, "Server Error");
    };
    let key_text = key_text.trim().to_owned();
    let in_use: BTreeSet<&str> = state
        .repos
        .values()
        .flatten()
        .map(|k| k.key.as_str())
        .collect();
    if in_use.contains(key_text.as_str()) {
        return validation("PublicKey", "key", "custom", "key is already in use");
    }
    let count = state.repos.get(full_name).map(Vec::len).unwrap_or(0);
    if count >= state.max_deploy_keys {
        return validation(
            "PublicKey",
            "key",
            "custom",
            "the repository has reached the maximum number of deploy keys",
        );
    }
    let id = state.next_id();
    let stored = StoredDeployKey {
        id,
        title: body.title.unwrap_or_default(),
        key: key_text,
        read_only: body.read_only.unwrap_or(false),
        created_at: Utc::now(),
    };
    let json = key_json(full_name, &stored);
    state
        .repos
        .entry(full_name.to_owned())
        .or_default()
        .push(stored);
    (StatusCode::CREATED, Json(json)).into_response()
}
