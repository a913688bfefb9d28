//! The GitHub simulator: repository deploy keys, `GET /user` for personal access tokens, and
//! the credential-revocation API, with GitHub's documented shapes — deploy keys as
//! `{id, key, url, title, verified, created_at, read_only, last_used}`, errors as
//! `{"message", "documentation_url", "status"}` (validation errors with `errors[]`), 401
//! "Bad credentials", 404 "Not Found" for a repository the token cannot see, 422 "key is
//! already in use" for a public key registered anywhere, 422 at the deploy-key limit,
//! `X-OAuth-Scopes` on `GET /user`, 202 from `POST /credentials/revoke`.
//!
//! The organization audit log, `GET /orgs/{org}/audit-log` (rekey's own token; 404 for an
//! unknown organization), answers as GitHub documents it: a JSON array of events (`@timestamp`
//! and `created_at` in epoch milliseconds, `_document_id`, `action`, `actor`, `actor_ip`,
//! `hashed_token`, …: whatever [`GithubState::add_audit_event`] stored), newest first;
//! `include=web` (default), `git` or `all`; `per_page` (default 30, at most 100); cursor
//! pagination through a `Link: <…after=CURSOR>; rel="next"` header; `phrase` qualifiers
//! `action:X` (the action, or its category: `action:git` is every `git.*`), `actor:NAME`,
//! `created:>=D`, `created:>D`, `created:<=D`, `created:<D` (D a date or an RFC 3339 time) —
//! any other qualifier is a 422, so that a client never believes a filter was applied. Git
//! events older than 7 days are never answered, as the API keeps them only that long.
//!
//! Fault injection (latency, GitHub's 403 "API rate limit exceeded", forced statuses, a lost
//! response after the effect) and the request log (method, path, status: never a body or a
//! header) come from the shared simulator server, [`super::sim`]. Point `GITHUB_API_URL` at [`GithubSandbox::base_url`].
//!
//! Held against Octokit (`tests/vendor_clients.rs`: `@octokit/rest`, its `paginate` following
//! `Link` headers) with every answer checked against GitHub's published OpenAPI description
//! (`@octokit/openapi`). Deploy-key listings page by `per_page`/`page` with GitHub's `Link`
//! (`next`, `last`). Simplifications:
//! - a deploy key's `url` names `https://api.github.com`, whatever host serves the simulator;
//!   `added_by` is always `rekey`, `last_used` always null, `verified` and `enabled` true;
//! - the audit log keeps only its default order (`order=desc`) and forward cursors (`after`):
//!   `order=asc` and a non-empty `before` are refused with 422 rather than ignored;
//! - `GET /user` answers `login`, `id` and `type` only.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use axum::Json;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use serde_json::{Value, json};

use super::sim::{SimRequest, SimServer, Simulator};
use super::{RecordedRequest, Rng, fake};

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
    /// Audit-log events per organization (any order; answered newest first).
    pub audit: BTreeMap<String, Vec<Value>>,
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
            audit: BTreeMap::new(),
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

    /// Declares organization `org` (with an empty audit log).
    pub fn org(mut self, org: &str) -> Self {
        self.audit.entry(org.to_owned()).or_default();
        self
    }

    /// Stores an audit-log event of `org` as given (it should carry `@timestamp` in epoch
    /// milliseconds, `_document_id` and `action`).
    pub fn add_audit_event(&mut self, org: &str, event: Value) {
        self.audit.entry(org.to_owned()).or_default().push(event);
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

/// A running GitHub simulator on the shared simulator server ([`SimServer`]: latency, forced
/// statuses, lost responses, request log). Dropping it stops the server.
pub struct GithubSandbox {
    server: SimServer<GithubState>,
}

impl std::fmt::Debug for GithubSandbox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GithubSandbox")
            .field("base_url", &self.server.base_url())
            .finish()
    }
}

impl Simulator for GithubState {
    type Record = RecordedRequest;

    fn answer(&mut self, r: &SimRequest<'_>) -> Response {
        answer(self, r.method, r.path, r.query, r.headers, r.body)
    }

    fn fault(&self, status: StatusCode) -> Response {
        error(status, status.canonical_reason().unwrap_or("Server Error"))
    }
}

impl GithubSandbox {
    /// Starts the simulator on 127.0.0.1 at a free port, within the current Tokio runtime.
    pub async fn start(state: GithubState) -> std::io::Result<GithubSandbox> {
        Ok(GithubSandbox {
            server: SimServer::start(|_| state).await?,
        })
    }

    /// `http://127.0.0.1:PORT`, to use as `GITHUB_API_URL`.
    pub fn base_url(&self) -> String {
        self.server.base_url()
    }

    pub fn admin_token(&self) -> String {
        self.server.with_state(|s| s.admin_token.clone())
    }

    pub fn with_state<R>(&self, f: impl FnOnce(&mut GithubState) -> R) -> R {
        self.server.with_state(f)
    }

    pub fn state(&self) -> GithubState {
        self.server.with_state(|s| s.clone())
    }

    pub fn set_latency(&self, latency: Duration) {
        self.server.set_latency(latency);
    }

    /// The next `count` requests whose path matches answer 403 "API rate limit exceeded", as
    /// GitHub's primary rate limit does.
    pub fn rate_limit(&self, path_regex: &str, count: u32) -> Result<(), regex::Error> {
        let body = json!({
            "message": "API rate limit exceeded for user ID 1.",
            "documentation_url": DOCS,
            "status": "403",
        });
        self.server
            .fail_next(path_regex, count, 403, Some(&body.to_string()))
    }

    /// The next `count` matching requests answer `status` without any effect.
    pub fn fail_next(&self, path_regex: &str, count: u32, status: u16) -> Result<(), regex::Error> {
        self.server.fail_next(path_regex, count, status, None)
    }

    /// The next `count` matching requests answer `status` with `body` verbatim (GitHub's
    /// secondary-rate-limit 403, say) without any effect; 429s carry `Retry-After: 1`.
    pub fn fail_next_with_body(
        &self,
        path_regex: &str,
        count: u32,
        status: u16,
        body: Option<&str>,
    ) -> Result<(), regex::Error> {
        self.server.fail_next(path_regex, count, status, body)
    }

    /// The next `count` matching requests take effect, then answer 500.
    pub fn lose_response(&self, path_regex: &str, count: u32) -> Result<(), regex::Error> {
        self.server.lose_response(path_regex, count)
    }

    pub fn clear_faults(&self) {
        self.server.clear_faults();
    }

    pub fn requests(&self) -> Vec<RecordedRequest> {
        self.server.requests()
    }

    pub fn mutating_requests(&self) -> Vec<RecordedRequest> {
        self.server.mutating_requests()
    }

    pub fn clear_requests(&self) {
        self.server.clear_requests();
    }

    pub async fn shutdown(self) {
        self.server.shutdown().await;
    }
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
        // GitHub's form: whole seconds, `Z`.
        "created_at": k.created_at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
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
        (&Method::GET, ["orgs", org, "audit-log"]) => {
            if bearer(headers) != Some(state.admin_token.as_str()) {
                return error(StatusCode::UNAUTHORIZED, "Bad credentials");
            }
            audit_log(state, org, query, headers)
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
                (&Method::GET, []) => list_keys(state, &full_name, query, headers),
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

/// How long the audit-log API keeps git events.
const GIT_EVENTS_DAYS: i64 = 7;

/// One `phrase` qualifier the simulator understands.
enum Qualifier {
    Action(String),
    Actor(String),
    Created(&'static str, i64),
}

fn parse_phrase(phrase: &str) -> Result<Vec<Qualifier>, String> {
    let mut out = Vec::new();
    for word in phrase.split_whitespace() {
        let Some((key, value)) = word.split_once(':') else {
            return Err(format!("unsupported search term `{word}`"));
        };
        match key {
            "action" => out.push(Qualifier::Action(value.to_owned())),
            "actor" => out.push(Qualifier::Actor(value.to_owned())),
            "created" => {
                let (op, rest) = [">=", "<=", ">", "<"]
                    .iter()
                    .find_map(|op| value.strip_prefix(op).map(|r| (*op, r)))
                    .unwrap_or(("=", value));
                let ms = DateTime::parse_from_rfc3339(rest)
                    .map(|t| t.timestamp_millis())
                    .or_else(|_| {
                        chrono::NaiveDate::parse_from_str(rest, "%Y-%m-%d").map(|d| {
                            d.and_time(chrono::NaiveTime::MIN)
                                .and_utc()
                                .timestamp_millis()
                        })
                    })
                    .map_err(|_| format!("unreadable date in `{word}`"))?;
                if op == "=" {
                    return Err(format!("unsupported date form in `{word}`"));
                }
                out.push(Qualifier::Created(op, ms));
            }
            _ => return Err(format!("unsupported qualifier `{key}:`")),
        }
    }
    Ok(out)
}

fn event_ms(e: &Value) -> i64 {
    e.get("@timestamp").and_then(Value::as_i64).unwrap_or(0)
}

fn event_id(e: &Value) -> String {
    e.get("_document_id")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned()
}

fn audit_log(state: &GithubState, org: &str, query: Option<&str>, headers: &HeaderMap) -> Response {
    let Some(events) = state.audit.get(org) else {
        return error(StatusCode::NOT_FOUND, "Not Found");
    };
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
    let include = params.get("include").map(String::as_str).unwrap_or("web");
    // Only the newest-first order and forward cursors are kept: anything else is refused
    // rather than ignored, so that a client never believes it was applied.
    let unsupported = match (params.get("order"), params.get("before")) {
        (Some(o), _) if o != "desc" => Some(format!("order `{o}` is not simulated")),
        (_, Some(b)) if !b.is_empty() => Some("`before` cursors are not simulated".to_owned()),
        _ => None,
    };
    if let Some(e) = unsupported {
        return (
            StatusCode::UNPROCESSABLE_ENTITY,
            Json(json!({"message": "Validation Failed", "errors": [e], "status": "422"})),
        )
            .into_response();
    }
    let qualifiers = match parse_phrase(params.get("phrase").map(String::as_str).unwrap_or("")) {
        Ok(q) => q,
        Err(e) => {
            return (
                StatusCode::UNPROCESSABLE_ENTITY,
                Json(json!({"message": "Validation Failed", "errors": [e], "status": "422"})),
            )
                .into_response();
        }
    };
    // Cursor: the (timestamp, document id) of the first event of the next page.
    let after: Option<(i64, String)> = match params.get("after").filter(|a| !a.is_empty()) {
        None => None,
        Some(cursor) => {
            let decoded = hex::decode(cursor)
                .ok()
                .and_then(|b| String::from_utf8(b).ok())
                .and_then(|t| {
                    let (ms, id) = t.split_once('/')?;
                    Some((ms.parse().ok()?, id.to_owned()))
                });
            match decoded {
                Some(c) => Some(c),
                None => return error(StatusCode::UNPROCESSABLE_ENTITY, "Invalid cursor"),
            }
        }
    };
    let git_kept_from = (Utc::now() - chrono::Duration::days(GIT_EVENTS_DAYS)).timestamp_millis();
    let mut kept: Vec<&Value> = events
        .iter()
        .filter(|e| {
            let action = e.get("action").and_then(Value::as_str).unwrap_or("");
            let is_git = action.starts_with("git.");
            let included = match include {
                "all" => true,
                "git" => is_git,
                _ => !is_git,
            };
            let ms = event_ms(e);
            included
                && !(is_git && ms < git_kept_from)
                && qualifiers.iter().all(|q| match q {
                    Qualifier::Action(a) => action == a || action.starts_with(&format!("{a}.")),
                    Qualifier::Actor(a) => e.get("actor").and_then(Value::as_str) == Some(a),
                    Qualifier::Created(op, t) => match *op {
                        ">=" => ms >= *t,
                        ">" => ms > *t,
                        "<=" => ms <= *t,
                        _ => ms < *t,
                    },
                })
        })
        .collect();
    // Newest first; ties by document id.
    kept.sort_by(|a, b| (event_ms(b), event_id(a)).cmp(&(event_ms(a), event_id(b))));
    let key = |e: &Value| (-event_ms(e), event_id(e));
    let mut rest = kept
        .into_iter()
        .filter(|e| {
            after
                .as_ref()
                .is_none_or(|(ms, id)| key(e) >= (-*ms, id.clone()))
        })
        .peekable();
    let page: Vec<Value> = rest.by_ref().take(per_page).cloned().collect();
    let next = rest
        .peek()
        .map(|e| hex::encode(format!("{}/{}", event_ms(e), event_id(e))));
    let mut response = (StatusCode::OK, Json(Value::Array(page))).into_response();
    if let Some(cursor) = next {
        let host = headers
            .get("host")
            .and_then(|h| h.to_str().ok())
            .unwrap_or("127.0.0.1");
        let mut pairs = url::form_urlencoded::Serializer::new(String::new());
        for (k, v) in &params {
            if k != "after" && k != "before" {
                pairs.append_pair(k, v);
            }
        }
        pairs.append_pair("after", &cursor);
        pairs.append_pair("before", "");
        let link = format!(
            "<http://{host}/orgs/{org}/audit-log?{}>; rel=\"next\"",
            pairs.finish()
        );
        if let Ok(v) = HeaderValue::from_str(&link) {
            response.headers_mut().insert("link", v);
        }
    }
    response
}

fn list_keys(
    state: &GithubState,
    full_name: &str,
    query: Option<&str>,
    headers: &HeaderMap,
) -> Response {
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
    let mut response = (StatusCode::OK, Json(Value::Array(items))).into_response();
    // Page-number paging, told as GitHub tells it: `Link` with `next` and `last` while pages
    // remain (clients such as Octokit's paginate follow it).
    let last = keys.len().div_ceil(per_page).max(1);
    if page < last {
        let host = headers
            .get("host")
            .and_then(|h| h.to_str().ok())
            .unwrap_or("127.0.0.1");
        let at = |n: usize| {
            format!("<http://{host}/repos/{full_name}/keys?per_page={per_page}&page={n}>")
        };
        let link = format!("{}; rel=\"next\", {}; rel=\"last\"", at(page + 1), at(last));
        if let Ok(v) = HeaderValue::from_str(&link) {
            response.headers_mut().insert("link", v);
        }
    }
    response
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
