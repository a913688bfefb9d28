//! The AWS simulator: IAM and STS behind one endpoint, faithful enough that the real AWS SDK
//! for Rust talks to it unchanged (`AWS_ENDPOINT_URL`, or [`AwsSandbox::sdk_config`]). It
//! speaks the Query protocol with the services' XML shapes and error codes, verifies every
//! SigV4 signature against the signing key's secret, refuses unknown, deleted and Inactive
//! keys (unlike moto, which accepts Inactive ones), enforces two keys per user, records each
//! key's last use, and can delay a new key's first successful use as IAM's eventual
//! consistency does.
//!
//! Submodules: [`state`] (users and keys, the builder), `api` (protocol and actions),
//! `sigv4` (signature verification). Fault injection (latency, `Throttling`, `InternalFailure`,
//! a lost response after the effect) and the request log (never a secret) live here, as in
//! the CircleCI sandbox.

mod api;
pub mod cloudtrail;
mod sigv4;
pub mod state;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::Response;
use regex::Regex;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use super::{Rng, lock};
use api::{ApiError, Params, RequestParts, Service};

pub use state::{
    ADMIN_USER, Access, AwsCredentials, AwsState, KeyInfo, KeySpec, KeyStatus, LastUsed,
    MAX_KEYS_PER_USER, Propagation, SetupError, UserInfo,
};

/// The region [`AwsSandbox::sdk_config`] signs for (IAM's signing region).
pub const REGION: &str = "us-east-1";

/// One request as the AWS simulator saw it. Holds no secret: parameters are kept only from a
/// fixed list of non-secret names, and of the credentials only the access key id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AwsRequest {
    pub method: String,
    /// `iam` or `sts`, from the signature's credential scope; `None` when unsigned.
    pub service: Option<String>,
    pub action: Option<String>,
    /// The key the request was signed with, known to the account or not.
    pub access_key_id: Option<String>,
    /// `UserName`, `AccessKeyId`, `Status`, `Marker`, `MaxItems`, `PathPrefix` when sent.
    pub params: BTreeMap<String, String>,
    pub status: u16,
    /// AWS's error code when the request failed (`NoSuchEntity`, `Throttling`, …).
    pub error_code: Option<String>,
    /// When the answer was sent, from the sandbox's start.
    pub at: Duration,
}

impl AwsRequest {
    /// Any action that is not a read (`Get*`, `List*`, `Describe*`, `Simulate*`): Create,
    /// Update and Delete calls, and unknown actions that might have been writes.
    pub fn is_mutating(&self) -> bool {
        self.action.as_deref().is_some_and(|a| {
            !["Get", "List", "Describe", "Simulate"]
                .iter()
                .any(|p| a.starts_with(p))
        })
    }

    pub fn param(&self, name: &str) -> Option<&str> {
        self.params.get(name).map(String::as_str)
    }

    pub fn succeeded(&self) -> bool {
        (200..300).contains(&self.status)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fault {
    /// 400 `Throttling`, which the SDK retries.
    Throttle,
    /// 500 `InternalFailure` before anything happens.
    InternalFailure,
    /// The action takes effect, then the answer is a 500 `InternalFailure`: the client
    /// cannot know (a key created but never reported, say).
    LoseResponse,
}

#[derive(Debug)]
struct ForcedFault {
    pattern: Regex,
    remaining: u32,
    fault: Fault,
}

#[derive(Debug)]
struct Faults {
    latency: Duration,
    forced: Vec<ForcedFault>,
    error_rate: f64,
    rng: Rng,
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

struct Shared {
    state: Mutex<AwsState>,
    faults: Mutex<Faults>,
    log: Mutex<Vec<AwsRequest>>,
    started: Instant,
}

/// A running AWS simulator. Dropping it stops the server.
pub struct AwsSandbox {
    shared: Arc<Shared>,
    addr: std::net::SocketAddr,
    shutdown: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for AwsSandbox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AwsSandbox")
            .field("addr", &self.addr)
            .finish()
    }
}

impl AwsSandbox {
    /// Starts the simulator with `state` on 127.0.0.1 at a free port. Must be called within
    /// a Tokio runtime, which then serves the requests.
    pub async fn start(state: AwsState) -> std::io::Result<AwsSandbox> {
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
                tracing::debug!(error = %e, "aws sandbox server stopped");
            }
        });
        tracing::debug!(%addr, "aws sandbox listening");
        Ok(AwsSandbox {
            shared,
            addr,
            shutdown: Some(tx),
            task: Some(task),
        })
    }

    /// `http://127.0.0.1:PORT`, to use as `AWS_ENDPOINT_URL` (IAM and STS both).
    pub fn endpoint_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn addr(&self) -> std::net::SocketAddr {
        self.addr
    }

    pub fn account_id(&self) -> String {
        lock(&self.shared.state).account_id().to_owned()
    }

    /// rekey's own credentials ([`ADMIN_USER`]'s key).
    pub fn admin_credentials(&self) -> AwsCredentials {
        lock(&self.shared.state).admin_credentials()
    }

    /// An SDK configuration that reaches this simulator as the admin: static credentials,
    /// region us-east-1, endpoint overridden, the SDK's standard retries (with a 10 ms
    /// initial backoff, so that retried faults keep tests fast).
    pub fn sdk_config(&self) -> aws_config::SdkConfig {
        self.sdk_config_for(&self.admin_credentials())
    }

    /// The same, signing with `credentials` (a newly minted key, say).
    pub fn sdk_config_for(&self, credentials: &AwsCredentials) -> aws_config::SdkConfig {
        use aws_credential_types::provider::SharedCredentialsProvider;
        aws_config::SdkConfig::builder()
            .behavior_version(aws_config::BehaviorVersion::latest())
            .region(aws_config::Region::from_static(REGION))
            .endpoint_url(self.endpoint_url())
            .credentials_provider(SharedCredentialsProvider::new(credentials.to_sdk()))
            .retry_config(
                aws_config::retry::RetryConfig::standard()
                    .with_initial_backoff(Duration::from_millis(10)),
            )
            .build()
    }

    /// Stops the server and waits (a second at most) for it to finish.
    pub async fn shutdown(mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(mut task) = self.task.take() {
            // Idle keep-alive connections may hold a graceful shutdown; do not wait forever.
            if tokio::time::timeout(Duration::from_secs(1), &mut task)
                .await
                .is_err()
            {
                task.abort();
            }
        }
    }

    /// Reads or changes the simulated account (to set up a case, or to check what happened).
    pub fn with_state<R>(&self, f: impl FnOnce(&mut AwsState) -> R) -> R {
        f(&mut lock(&self.shared.state))
    }

    /// A copy of the simulated account.
    pub fn state(&self) -> AwsState {
        lock(&self.shared.state).clone()
    }

    /// `user`'s keys in creation order, with their status and last use.
    pub fn keys_of(&self, user: &str) -> Vec<KeyInfo> {
        lock(&self.shared.state).keys_of(user)
    }

    /// A live key's id and secret.
    pub fn credentials(&self, access_key_id: &str) -> Option<AwsCredentials> {
        lock(&self.shared.state).credentials(access_key_id)
    }

    /// Delays every answer by `latency`.
    pub fn set_latency(&self, latency: Duration) {
        lock(&self.shared.faults).latency = latency;
    }

    /// Answers the next `count` authenticated requests whose Action matches `action_regex`
    /// with 400 `Throttling` ("Rate exceeded"), which the SDK retries.
    pub fn throttle(&self, action_regex: &str, count: u32) -> Result<(), regex::Error> {
        self.force(action_regex, count, Fault::Throttle)
    }

    /// Answers the next `count` matching requests with 500 `InternalFailure`, doing nothing.
    pub fn fail_next(&self, action_regex: &str, count: u32) -> Result<(), regex::Error> {
        self.force(action_regex, count, Fault::InternalFailure)
    }

    /// Lets the next `count` matching requests take effect, then answers them with 500
    /// `InternalFailure`: a crash between the call and the client's record of its result.
    pub fn lose_response(&self, action_regex: &str, count: u32) -> Result<(), regex::Error> {
        self.force(action_regex, count, Fault::LoseResponse)
    }

    fn force(&self, action_regex: &str, count: u32, fault: Fault) -> Result<(), regex::Error> {
        let pattern = Regex::new(action_regex)?;
        lock(&self.shared.faults).forced.push(ForcedFault {
            pattern,
            remaining: count,
            fault,
        });
        Ok(())
    }

    /// Answers a `fraction` (0.0–1.0) of authenticated requests with 500 `InternalFailure`,
    /// drawn from a generator seeded with `seed`: reproducible for a given order of requests.
    pub fn set_error_rate(&self, fraction: f64, seed: u64) {
        let mut faults = lock(&self.shared.faults);
        faults.error_rate = if fraction.is_finite() {
            fraction.clamp(0.0, 1.0)
        } else {
            0.0
        };
        faults.rng = Rng::seeded(seed);
    }

    /// Removes every injected fault.
    pub fn clear_faults(&self) {
        *lock(&self.shared.faults) = Faults::default();
    }

    /// Every request answered so far, in the order the answers were sent.
    pub fn requests(&self) -> Vec<AwsRequest> {
        lock(&self.shared.log).clone()
    }

    /// Requests that could have changed something ([`AwsRequest::is_mutating`]), whatever
    /// their outcome.
    pub fn mutating_requests(&self) -> Vec<AwsRequest> {
        self.requests()
            .into_iter()
            .filter(AwsRequest::is_mutating)
            .collect()
    }

    pub fn clear_requests(&self) {
        lock(&self.shared.log).clear();
    }
}

impl Drop for AwsSandbox {
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
    if let Some(target) = headers
        .get("x-amz-target")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
    {
        return handle_json(&shared, &method, &uri, &headers, &body, &target);
    }
    // The Query protocol carries parameters in a POST's form body or a GET's query string.
    let form: &[u8] = if method == Method::POST { &body } else { &[] };
    let params = Params::parse(uri.query(), form);
    let action = params.get("Action").map(str::to_owned);
    let mut record = AwsRequest {
        method: method.to_string(),
        service: None,
        action: action.clone(),
        access_key_id: sigv4::access_key_id_of(&headers),
        params: params.loggable(),
        status: 0,
        error_code: None,
        at: Duration::ZERO,
    };
    let request = RequestParts {
        method: method.as_str(),
        path: uri.path(),
        query: uri.query(),
        headers: &headers,
        body: &body,
        now: Instant::now(),
    };
    let response = answer(&shared, &request, &params, action.as_deref(), &mut record);
    record.status = response.status().as_u16();
    record.at = shared.started.elapsed();
    lock(&shared.log).push(record);
    response
}

/// Authentication, then injected faults, then the action.
fn answer(
    shared: &Shared,
    request: &RequestParts<'_>,
    params: &Params,
    action: Option<&str>,
    record: &mut AwsRequest,
) -> Response {
    let mut state = lock(&shared.state);
    let request_id = state.request_id();
    let refuse = |service: Service, error: ApiError, record: &mut AwsRequest| {
        record.error_code = Some(error.code.to_owned());
        api::error_response(service, &error, &request_id)
    };
    if request.method != "GET" && request.method != "POST" {
        let error = ApiError {
            status: StatusCode::METHOD_NOT_ALLOWED,
            code: "InvalidAction",
            message: "The Query protocol accepts GET and POST only.".into(),
        };
        return refuse(Service::guess(action), error, record);
    }
    let caller = match api::authenticate(&mut state, request, action) {
        Ok(caller) => caller,
        Err((service, error)) => {
            record.service = sigv4::parse_authorization(request.headers)
                .ok()
                .map(|a| a.service);
            return refuse(service, error, record);
        }
    };
    record.service = Some(caller.service.name().to_owned());
    let Some(action) = action else {
        let error = ApiError {
            status: StatusCode::BAD_REQUEST,
            code: "MissingAction",
            message: "The request must contain the parameter Action.".into(),
        };
        return refuse(caller.service, error, record);
    };
    let fault = injected_fault(shared, action);
    match fault {
        Some(Fault::Throttle) => return refuse(caller.service, ApiError::throttling(), record),
        Some(Fault::InternalFailure) => {
            return refuse(caller.service, ApiError::internal_failure(), record);
        }
        Some(Fault::LoseResponse) | None => {}
    }
    match api::dispatch(&mut state, &caller, action, params, &request_id) {
        Ok(_) if fault == Some(Fault::LoseResponse) => {
            refuse(caller.service, ApiError::internal_failure(), record)
        }
        Ok(body) => api::xml_response(StatusCode::OK, body, &request_id),
        Err(error) => refuse(caller.service, error, record),
    }
}

/// The JSON protocol (CloudTrail): `X-Amz-Target` names the operation, the body is JSON.
fn handle_json(
    shared: &Shared,
    method: &Method,
    uri: &Uri,
    headers: &HeaderMap,
    body: &[u8],
    target: &str,
) -> Response {
    let operation = target.rsplit('.').next().unwrap_or(target).to_owned();
    let mut record = AwsRequest {
        method: method.to_string(),
        service: None,
        action: Some(operation.clone()),
        access_key_id: sigv4::access_key_id_of(headers),
        params: BTreeMap::new(),
        status: 0,
        error_code: None,
        at: Duration::ZERO,
    };
    let request = RequestParts {
        method: method.as_str(),
        path: uri.path(),
        query: uri.query(),
        headers,
        body,
        now: Instant::now(),
    };
    let response = {
        let mut state = lock(&shared.state);
        let request_id = state.request_id();
        let refuse = |error: ApiError, record: &mut AwsRequest| {
            record.error_code = Some(error.code.to_owned());
            cloudtrail::error_response(&error, &request_id)
        };
        match api::authenticate(&mut state, &request, Some(&operation)) {
            Err((_, error)) => refuse(error, &mut record),
            Ok(caller) => {
                record.service = Some(caller.service.name().to_owned());
                if caller.service != Service::Cloudtrail
                    || !cloudtrail::is_cloudtrail_target(target)
                {
                    let error = ApiError::new(
                        StatusCode::BAD_REQUEST,
                        "UnknownOperationException",
                        format!("The simulator does not implement {target}"),
                    );
                    refuse(error, &mut record)
                } else {
                    match injected_fault(shared, &operation) {
                        Some(Fault::Throttle) => refuse(ApiError::throttling(), &mut record),
                        Some(Fault::InternalFailure) => {
                            refuse(ApiError::internal_failure(), &mut record)
                        }
                        fault => {
                            match cloudtrail::dispatch(&state, &caller.user, &operation, body) {
                                Ok(_) if fault == Some(Fault::LoseResponse) => {
                                    refuse(ApiError::internal_failure(), &mut record)
                                }
                                Ok(answer) => {
                                    cloudtrail::json_response(StatusCode::OK, &answer, &request_id)
                                }
                                Err(error) => refuse(error, &mut record),
                            }
                        }
                    }
                }
            }
        }
    };
    record.status = response.status().as_u16();
    record.at = shared.started.elapsed();
    lock(&shared.log).push(record);
    response
}

fn injected_fault(shared: &Shared, action: &str) -> Option<Fault> {
    let mut faults = lock(&shared.faults);
    if let Some(rule) = faults
        .forced
        .iter_mut()
        .find(|r| r.remaining > 0 && r.pattern.is_match(action))
    {
        rule.remaining -= 1;
        return Some(rule.fault);
    }
    if faults.error_rate > 0.0 && faults.rng.next_f64() < faults.error_rate {
        return Some(Fault::InternalFailure);
    }
    None
}
