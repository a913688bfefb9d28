//! The server machinery every simulator shares (CircleCI, GitHub, GCP IAM, Azure Entra ID +
//! Graph, AWS IAM/STS/CloudTrail): bind on 127.0.0.1 at a free port, serve every request through
//! one simulator's `answer`, fault injection (latency, forced statuses with an optional body and
//! `Retry-After`, lost responses, a seeded 5xx rate) and the request log (never a body, where
//! secrets travel).
//!
//! Faults strike where the simulator says ([`Simulator::FAULTS_BY_PATH`]): before `answer`,
//! matched on the request's path (REST services), or inside `answer` at the point the
//! simulator chooses, matched on a key it names ([`SimRequest::injected`]): AWS names the
//! action, after SigV4 authentication, as AWS's own throttling does. The log keeps a
//! [`LogRecord`] per request: method, path, query and status, or what the simulator adds
//! (AWS: the calling access key, the action, the error code).

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri};
use axum::response::Response;
use regex::Regex;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use super::{RecordedRequest, Rng, lock};

/// One request, as a simulator's `answer` sees it.
pub struct SimRequest<'a> {
    pub method: &'a Method,
    pub path: &'a str,
    pub query: Option<&'a str>,
    pub headers: &'a HeaderMap,
    pub body: &'a [u8],
    /// The server's faults, for simulators that inject them themselves.
    faults: &'a Mutex<Faults>,
}

/// A fault [`SimRequest::injected`] chose for a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Injected {
    /// Answer with this status (the service's error for it), doing nothing.
    Status(StatusCode),
    /// Do what the request asks, then answer with a server error: the client cannot know.
    LoseResponse,
}

impl SimRequest<'_> {
    /// For a simulator whose faults are not keyed by path ([`Simulator::FAULTS_BY_PATH`]
    /// false): the fault, if any, for the operation named `key` (an AWS action), consuming one
    /// use of the first matching rule, else drawn at the error rate. Called once per request,
    /// where the service would fail (after authentication).
    pub fn injected(&self, key: &str) -> Option<Injected> {
        let mut faults = lock(self.faults);
        if let Some(rule) = faults
            .forced
            .iter_mut()
            .find(|r| r.remaining > 0 && r.pattern.is_match(key))
        {
            rule.remaining -= 1;
            return Some(match rule.kind {
                FaultKind::Status(status) => Injected::Status(status),
                FaultKind::LoseResponse => Injected::LoseResponse,
            });
        }
        faults
            .drawn_error()
            .then_some(Injected::Status(StatusCode::INTERNAL_SERVER_ERROR))
    }

    /// A form-encoded body's field.
    pub fn form(&self, name: &str) -> Option<String> {
        url::form_urlencoded::parse(self.body)
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.into_owned())
    }

    pub fn query_param(&self, name: &str) -> Option<String> {
        url::form_urlencoded::parse(self.query?.as_bytes())
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.into_owned())
    }

    /// The token of an `Authorization: Bearer …` header.
    pub fn bearer(&self) -> Option<&str> {
        self.headers
            .get("authorization")?
            .to_str()
            .ok()?
            .strip_prefix("Bearer ")
    }
}

/// A simulated service.
pub trait Simulator: Send + 'static {
    /// What the request log keeps of each request.
    type Record: LogRecord;

    /// Faults strike before `answer`, matched on `METHOD path`; when false, `answer` asks for
    /// them itself ([`SimRequest::injected`]) with a key of its choosing.
    const FAULTS_BY_PATH: bool = true;

    /// Answers one request, changing the state as the service would.
    fn answer(&mut self, request: &SimRequest<'_>) -> Response;

    /// The service's own error shape for an injected fault.
    fn fault(&self, status: StatusCode) -> Response;
}

/// One entry of a simulator's request log. Never a body: secrets travel there.
pub trait LogRecord: Clone + Send + 'static {
    /// The entry for a request the server saw (`seen`) and the response it sent, from which a
    /// simulator may take what its `answer` left in the response's extensions.
    fn from_exchange(seen: RecordedRequest, response: &mut Response) -> Self;

    /// Whether the request could have changed something.
    fn is_mutating(&self) -> bool;
}

impl LogRecord for RecordedRequest {
    fn from_exchange(seen: RecordedRequest, _: &mut Response) -> Self {
        seen
    }

    fn is_mutating(&self) -> bool {
        RecordedRequest::is_mutating(self)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum FaultKind {
    /// The forced status, nothing happens.
    Status(StatusCode),
    /// The request takes effect, then the answer is a 500: the client cannot know.
    LoseResponse,
}

#[derive(Debug)]
struct Forced {
    pattern: Regex,
    remaining: u32,
    kind: FaultKind,
    body: Option<String>,
    retry_after: Option<Duration>,
}

impl Forced {
    /// A rule's pattern may name the path alone (`^/api/v2/context/`) or `METHOD path`
    /// (`^POST .*/keys$`). Lost responses only take requests that change something.
    fn takes(&self, method: &Method, path: &str) -> bool {
        if self.remaining == 0 {
            return false;
        }
        if self.kind == FaultKind::LoseResponse && is_read(method) {
            return false;
        }
        self.pattern.is_match(path) || self.pattern.is_match(&format!("{method} {path}"))
    }
}

fn is_read(method: &Method) -> bool {
    matches!(method.as_str(), "GET" | "HEAD" | "OPTIONS")
}

#[derive(Debug)]
struct Faults {
    latency: Duration,
    forced: Vec<Forced>,
    error_rate: f64,
    rng: Rng,
}

impl Faults {
    /// Whether this request fails at the error rate.
    fn drawn_error(&mut self) -> bool {
        self.error_rate > 0.0 && self.rng.next_f64() < self.error_rate
    }
}

impl Default for Faults {
    fn default() -> Self {
        Faults {
            latency: Duration::ZERO,
            forced: Vec::new(),
            error_rate: 0.0,
            rng: Rng::seeded(0),
        }
    }
}

struct Shared<S: Simulator> {
    state: Mutex<S>,
    faults: Mutex<Faults>,
    log: Mutex<Vec<S::Record>>,
    started: Instant,
}

/// A running simulator. Dropping it stops the server.
pub struct SimServer<S: Simulator> {
    shared: Arc<Shared<S>>,
    addr: std::net::SocketAddr,
    shutdown: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<()>>,
}

impl<S: Simulator> SimServer<S> {
    /// Binds first, so that `make` can know the base URL (key files name their token URI).
    pub async fn start(make: impl FnOnce(&str) -> S) -> std::io::Result<SimServer<S>> {
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", 0)).await?;
        let addr = listener.local_addr()?;
        let state = make(&format!("http://{addr}"));
        let shared = Arc::new(Shared {
            state: Mutex::new(state),
            faults: Mutex::new(Faults::default()),
            log: Mutex::new(Vec::new()),
            started: Instant::now(),
        });
        let app = axum::Router::new()
            .fallback(handle::<S>)
            .with_state(shared.clone());
        let (tx, rx) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            let served = axum::serve(listener, app)
                .with_graceful_shutdown(async {
                    let _ = rx.await;
                })
                .await;
            if let Err(e) = served {
                tracing::debug!(error = %e, "simulator stopped");
            }
        });
        Ok(SimServer {
            shared,
            addr,
            shutdown: Some(tx),
            task: Some(task),
        })
    }

    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn addr(&self) -> std::net::SocketAddr {
        self.addr
    }

    pub fn with_state<R>(&self, f: impl FnOnce(&mut S) -> R) -> R {
        f(&mut lock(&self.shared.state))
    }

    pub fn set_latency(&self, latency: Duration) {
        lock(&self.shared.faults).latency = latency;
    }

    /// The next `count` requests whose path or `METHOD /path` matches (`"^POST .*/keys$"`,
    /// or just `"/keys$"` for any method) answer `status` (with the service's error shape, or
    /// `body` verbatim when given), doing nothing. 429s carry `Retry-After: 1`.
    pub fn fail_next(
        &self,
        path_regex: &str,
        count: u32,
        status: u16,
        body: Option<&str>,
    ) -> Result<(), regex::Error> {
        let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let retry_after =
            (status == StatusCode::TOO_MANY_REQUESTS).then_some(Duration::from_secs(1));
        self.force(
            path_regex,
            count,
            FaultKind::Status(status),
            body,
            retry_after,
        )
    }

    /// The next `count` matching requests answer 429 with `Retry-After` (whole seconds,
    /// rounded up: the header has no fractions).
    pub fn throttle(
        &self,
        path_regex: &str,
        count: u32,
        retry_after: Duration,
    ) -> Result<(), regex::Error> {
        self.force(
            path_regex,
            count,
            FaultKind::Status(StatusCode::TOO_MANY_REQUESTS),
            None,
            Some(retry_after),
        )
    }

    /// The next `count` matching requests that change something (POST, PUT, PATCH, DELETE)
    /// take effect, then answer 502, as a proxy does when the answer is lost: the client cannot
    /// know what happened. (Faults matched by a simulator's own key take any request.)
    pub fn lose_response(&self, path_regex: &str, count: u32) -> Result<(), regex::Error> {
        self.force(path_regex, count, FaultKind::LoseResponse, None, None)
    }

    fn force(
        &self,
        path_regex: &str,
        count: u32,
        kind: FaultKind,
        body: Option<&str>,
        retry_after: Option<Duration>,
    ) -> Result<(), regex::Error> {
        let pattern = Regex::new(path_regex)?;
        lock(&self.shared.faults).forced.push(Forced {
            pattern,
            remaining: count,
            kind,
            body: body.map(str::to_owned),
            retry_after,
        });
        Ok(())
    }

    /// A `fraction` of requests answer 500, drawn from a generator seeded with `seed`.
    pub fn set_error_rate(&self, fraction: f64, seed: u64) {
        let mut faults = lock(&self.shared.faults);
        faults.error_rate = if fraction.is_finite() {
            fraction.clamp(0.0, 1.0)
        } else {
            0.0
        };
        faults.rng = Rng::seeded(seed);
    }

    pub fn clear_faults(&self) {
        *lock(&self.shared.faults) = Faults::default();
    }

    pub fn requests(&self) -> Vec<S::Record> {
        lock(&self.shared.log).clone()
    }

    pub fn mutating_requests(&self) -> Vec<S::Record> {
        self.requests()
            .into_iter()
            .filter(LogRecord::is_mutating)
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

impl<S: Simulator> Drop for SimServer<S> {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

async fn handle<S: Simulator>(
    State(shared): State<Arc<Shared<S>>>,
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
    let fault = if !S::FAULTS_BY_PATH {
        None
    } else {
        let mut faults = lock(&shared.faults);
        let forced = faults
            .forced
            .iter_mut()
            .find(|r| r.takes(&method, &path))
            .map(|rule| {
                rule.remaining -= 1;
                (rule.kind, rule.body.clone(), rule.retry_after)
            });
        match forced {
            Some(f) => Some(f),
            None if faults.drawn_error() => Some((
                FaultKind::Status(StatusCode::INTERNAL_SERVER_ERROR),
                None,
                None,
            )),
            None => None,
        }
    };
    let request = SimRequest {
        method: &method,
        path: &path,
        query: query.as_deref(),
        headers: &headers,
        body: &body,
        faults: &shared.faults,
    };
    let mut response = {
        let mut state = lock(&shared.state);
        match fault {
            Some((FaultKind::Status(status), body, retry_after)) => {
                let mut response = match body {
                    Some(body) => Response::builder()
                        .status(status)
                        .header("content-type", "application/json")
                        .body(axum::body::Body::from(body))
                        .unwrap_or_else(|_| state.fault(status)),
                    None => state.fault(status),
                };
                if let Some(after) = retry_after {
                    let secs = after.as_secs() + u64::from(after.subsec_nanos() > 0);
                    if let Ok(v) = HeaderValue::from_str(&secs.to_string()) {
                        response.headers_mut().insert("retry-after", v);
                    }
                }
                response
            }
            Some((FaultKind::LoseResponse, _, _)) => {
                let _ = state.answer(&request);
                state.fault(StatusCode::BAD_GATEWAY)
            }
            None => state.answer(&request),
        }
    };
    let seen = RecordedRequest {
        method: method.to_string(),
        path,
        query,
        status: response.status().as_u16(),
        at: shared.started.elapsed(),
    };
    let record = S::Record::from_exchange(seen, &mut response);
    lock(&shared.log).push(record);
    response
}

/// A JSON response.
pub fn json(status: StatusCode, value: &serde_json::Value) -> Response {
    Response::builder()
        .status(status)
        .header("content-type", "application/json; charset=utf-8")
        .body(axum::body::Body::from(value.to_string()))
        .unwrap_or_default()
}
