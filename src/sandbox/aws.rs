//! The AWS simulator: IAM and STS behind one endpoint, faithful enough that the real AWS SDK
//! for Rust talks to it unchanged (`AWS_ENDPOINT_URL`, or [`AwsSandbox::sdk_config`]). It
//! speaks the Query protocol with the services' XML shapes and error codes, verifies every
//! SigV4 signature against the signing key's secret, refuses unknown, deleted and Inactive
//! keys (unlike moto, which accepts Inactive ones), enforces two keys per user, records each
//! key's last use, and can delay a new key's first successful use as IAM's eventual
//! consistency does.
//!
//! Submodules: [`state`] (users and keys, the builder), `api` (protocol and actions),
//! `sigv4` (signature verification). It runs on the simulators' one server (`sandbox/sim.rs`):
//! faults (latency, `Throttling`, `InternalFailure`, a lost response after the effect) are
//! keyed by action and strike after authentication; the request log records the calling access
//! key and the error code (never a secret).
//!
//! Held against boto3 and moto (`tests/vendor_clients.rs`, `tests/vendor/aws_compare.py`):
//! every IAM and STS call rekey makes, and the refusals it depends on (NoSuchEntity,
//! LimitExceeded, ValidationError, InvalidClientTokenId for a deleted key), answer the same
//! shapes, types, statuses, codes and messages as moto's, with ids, secrets and dates compared
//! by shape. Where moto departs from AWS the simulator keeps to AWS (moto: 20-character user
//! ids, Inactive keys accepted, no `IsTruncated` on a complete ListAccessKeys, `MaxItems`
//! ignored by ListUsers, any `Status` stored, no LookupEvents). Simplifications:
//! - permissions are the [`Access`] levels of a user, not IAM policies;
//! - only the actions rekey calls exist (others are `InvalidAction`); ListUsers answers in
//!   user-name order;
//! - CloudTrail events carry `Resources: []`.

mod api;
pub mod cloudtrail;
mod sigv4;
pub mod state;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use axum::http::{Method, StatusCode};
use axum::response::Response;

use super::RecordedRequest;
use super::sim::{Injected, LogRecord, SimRequest, SimServer, Simulator};
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

impl LogRecord for AwsRequest {
    /// What `answer` left in the response's extensions, with the status and time the server
    /// saw.
    fn from_exchange(seen: RecordedRequest, response: &mut Response) -> Self {
        let noted = response.extensions_mut().remove::<AwsRequest>();
        AwsRequest {
            status: seen.status,
            at: seen.at,
            ..noted.unwrap_or(AwsRequest {
                method: seen.method,
                service: None,
                action: None,
                access_key_id: None,
                params: BTreeMap::new(),
                status: 0,
                error_code: None,
                at: Duration::ZERO,
            })
        }
    }

    fn is_mutating(&self) -> bool {
        AwsRequest::is_mutating(self)
    }
}

/// The simulated account behind the shared server.
struct AwsSim {
    state: AwsState,
}

impl Simulator for AwsSim {
    type Record = AwsRequest;

    /// AWS fails requests by action, after authentication.
    const FAULTS_BY_PATH: bool = false;

    fn answer(&mut self, request: &SimRequest<'_>) -> Response {
        let (mut response, record) = answer(&mut self.state, request);
        response.extensions_mut().insert(record);
        response
    }

    fn fault(&self, _: StatusCode) -> Response {
        // Faults are injected by `answer` (FAULTS_BY_PATH is false); this shape is a fallback.
        api::error_response(Service::Iam, &ApiError::internal_failure(), "fault")
    }
}

/// A running AWS simulator. Dropping it stops the server.
pub struct AwsSandbox {
    server: SimServer<AwsSim>,
}

impl std::fmt::Debug for AwsSandbox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AwsSandbox")
            .field("addr", &self.server.addr())
            .finish()
    }
}

impl AwsSandbox {
    /// Starts the simulator with `state` on 127.0.0.1 at a free port. Must be called within
    /// a Tokio runtime, which then serves the requests.
    pub async fn start(state: AwsState) -> std::io::Result<AwsSandbox> {
        let server = SimServer::start(|_| AwsSim { state }).await?;
        tracing::debug!(addr = %server.addr(), "aws sandbox listening");
        Ok(AwsSandbox { server })
    }

    /// `http://127.0.0.1:PORT`, to use as `AWS_ENDPOINT_URL` (IAM and STS both).
    pub fn endpoint_url(&self) -> String {
        self.server.base_url()
    }

    pub fn addr(&self) -> std::net::SocketAddr {
        self.server.addr()
    }

    pub fn account_id(&self) -> String {
        self.with_state(|s| s.account_id().to_owned())
    }

    /// rekey's own credentials ([`ADMIN_USER`]'s key).
    pub fn admin_credentials(&self) -> AwsCredentials {
        self.with_state(|s| s.admin_credentials())
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
    pub async fn shutdown(self) {
        self.server.shutdown().await;
    }

    /// Reads or changes the simulated account (to set up a case, or to check what happened).
    pub fn with_state<R>(&self, f: impl FnOnce(&mut AwsState) -> R) -> R {
        self.server.with_state(|sim| f(&mut sim.state))
    }

    /// A copy of the simulated account.
    pub fn state(&self) -> AwsState {
        self.with_state(|s| s.clone())
    }

    /// `user`'s keys in creation order, with their status and last use.
    pub fn keys_of(&self, user: &str) -> Vec<KeyInfo> {
        self.with_state(|s| s.keys_of(user))
    }

    /// A live key's id and secret.
    pub fn credentials(&self, access_key_id: &str) -> Option<AwsCredentials> {
        self.with_state(|s| s.credentials(access_key_id))
    }

    /// Delays every answer by `latency`.
    pub fn set_latency(&self, latency: Duration) {
        self.server.set_latency(latency);
    }

    /// Answers the next `count` authenticated requests whose Action matches `action_regex`
    /// with 400 `Throttling` ("Rate exceeded"), which the SDK retries.
    pub fn throttle(&self, action_regex: &str, count: u32) -> Result<(), regex::Error> {
        self.server.fail_next(
            action_regex,
            count,
            StatusCode::TOO_MANY_REQUESTS.as_u16(),
            None,
        )
    }

    /// Answers the next `count` matching requests with 500 `InternalFailure`, doing nothing.
    pub fn fail_next(&self, action_regex: &str, count: u32) -> Result<(), regex::Error> {
        self.server.fail_next(
            action_regex,
            count,
            StatusCode::INTERNAL_SERVER_ERROR.as_u16(),
            None,
        )
    }

    /// Lets the next `count` matching requests take effect, then answers them with 500
    /// `InternalFailure`: a crash between the call and the client's record of its result.
    pub fn lose_response(&self, action_regex: &str, count: u32) -> Result<(), regex::Error> {
        self.server.lose_response(action_regex, count)
    }

    /// Answers a `fraction` (0.0–1.0) of authenticated requests with 500 `InternalFailure`,
    /// drawn from a generator seeded with `seed`: reproducible for a given order of requests.
    pub fn set_error_rate(&self, fraction: f64, seed: u64) {
        self.server.set_error_rate(fraction, seed);
    }

    /// Removes every injected fault.
    pub fn clear_faults(&self) {
        self.server.clear_faults();
    }

    /// Every request answered so far, in the order the answers were sent.
    pub fn requests(&self) -> Vec<AwsRequest> {
        self.server.requests()
    }

    /// Requests that could have changed something ([`AwsRequest::is_mutating`]), whatever
    /// their outcome.
    pub fn mutating_requests(&self) -> Vec<AwsRequest> {
        self.server.mutating_requests()
    }

    pub fn clear_requests(&self) {
        self.server.clear_requests();
    }
}

/// An injected fault as AWS answers it: throttling (which the SDK retries), or an internal
/// failure; `None` for no fault or a lost response (the action runs first).
fn fault_error(fault: Option<Injected>) -> Option<ApiError> {
    match fault {
        Some(Injected::Status(StatusCode::TOO_MANY_REQUESTS)) => Some(ApiError::throttling()),
        Some(Injected::Status(_)) => Some(ApiError::internal_failure()),
        Some(Injected::LoseResponse) | None => None,
    }
}

/// One request: the JSON protocol (CloudTrail) when `X-Amz-Target` names the operation, else
/// the Query protocol, whose parameters are in a POST's form body or a GET's query string.
/// Returns the answer and the log's record of it.
fn answer(state: &mut AwsState, request: &SimRequest<'_>) -> (Response, AwsRequest) {
    let parts = RequestParts {
        method: request.method.as_str(),
        path: request.path,
        query: request.query,
        headers: request.headers,
        body: request.body,
        now: Instant::now(),
    };
    let mut record = AwsRequest {
        method: request.method.to_string(),
        service: None,
        action: None,
        access_key_id: sigv4::access_key_id_of(request.headers),
        params: BTreeMap::new(),
        status: 0,
        error_code: None,
        at: Duration::ZERO,
    };
    if let Some(target) = request
        .headers
        .get("x-amz-target")
        .and_then(|v| v.to_str().ok())
    {
        let response = answer_json(state, request, &parts, target, &mut record);
        return (response, record);
    }
    let form: &[u8] = if *request.method == Method::POST {
        request.body
    } else {
        &[]
    };
    let params = Params::parse(request.query, form);
    record.action = params.get("Action").map(str::to_owned);
    record.params = params.loggable();
    let response = answer_query(state, request, &parts, &params, &mut record);
    (response, record)
}

/// The Query protocol (IAM, STS): authentication, then injected faults, then the action.
fn answer_query(
    state: &mut AwsState,
    request: &SimRequest<'_>,
    parts: &RequestParts<'_>,
    params: &Params,
    record: &mut AwsRequest,
) -> Response {
    let request_id = state.request_id();
    let action = record.action.clone();
    let refuse = |service: Service, error: ApiError, record: &mut AwsRequest| {
        record.error_code = Some(error.code.to_owned());
        api::error_response(service, &error, &request_id)
    };
    if parts.method != "GET" && parts.method != "POST" {
        let error = ApiError {
            status: StatusCode::METHOD_NOT_ALLOWED,
            code: "InvalidAction",
            message: "The Query protocol accepts GET and POST only.".into(),
        };
        return refuse(Service::guess(action.as_deref()), error, record);
    }
    let caller = match api::authenticate(state, parts, action.as_deref()) {
        Ok(caller) => caller,
        Err((service, error)) => {
            record.service = sigv4::parse_authorization(parts.headers)
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
    let fault = request.injected(&action);
    if let Some(error) = fault_error(fault) {
        return refuse(caller.service, error, record);
    }
    match api::dispatch(state, &caller, &action, params, &request_id) {
        Ok(_) if fault == Some(Injected::LoseResponse) => {
            refuse(caller.service, ApiError::internal_failure(), record)
        }
        Ok(body) => api::xml_response(StatusCode::OK, body, &request_id),
        Err(error) => refuse(caller.service, error, record),
    }
}

/// The JSON protocol (CloudTrail): `X-Amz-Target` names the operation, the body is JSON.
fn answer_json(
    state: &mut AwsState,
    request: &SimRequest<'_>,
    parts: &RequestParts<'_>,
    target: &str,
    record: &mut AwsRequest,
) -> Response {
    let operation = target.rsplit('.').next().unwrap_or(target).to_owned();
    record.action = Some(operation.clone());
    let request_id = state.request_id();
    let refuse = |error: ApiError, record: &mut AwsRequest| {
        record.error_code = Some(error.code.to_owned());
        cloudtrail::error_response(&error, &request_id)
    };
    let caller = match api::authenticate(state, parts, Some(&operation)) {
        Err((_, error)) => return refuse(error, record),
        Ok(caller) => caller,
    };
    record.service = Some(caller.service.name().to_owned());
    if caller.service != Service::Cloudtrail || !cloudtrail::is_cloudtrail_target(target) {
        let error = ApiError::new(
            StatusCode::BAD_REQUEST,
            "UnknownOperationException",
            format!("The simulator does not implement {target}"),
        );
        return refuse(error, record);
    }
    let fault = request.injected(&operation);
    if let Some(error) = fault_error(fault) {
        return refuse(error, record);
    }
    match cloudtrail::dispatch(state, &caller.user, &operation, request.body) {
        Ok(_) if fault == Some(Injected::LoseResponse) => {
            refuse(ApiError::internal_failure(), record)
        }
        Ok(answer) => cloudtrail::json_response(StatusCode::OK, &answer, &request_id),
        Err(error) => refuse(error, record),
    }
}
