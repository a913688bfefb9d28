//! In-process simulators for demos, rehearsals and tests. This module owns the CircleCI
//! sandbox's handle ([`Sandbox`], on the shared server of [`sim`]: bind, serve, faults, request
//! log), the request record, the seeded generator and the random fake credentials ([`fake`]).
//! The CircleCI simulator itself — its state and endpoints — is [`circleci`].
//!
//! A sandbox listens on 127.0.0.1 at a port the OS picks and stops when its handle is shut
//! down or dropped.

pub mod aws;
pub mod azure;
pub mod circleci;
pub mod demo;
pub mod demo_cloud;
pub mod gcp;
pub mod github;
pub mod profiles;
pub mod sim;
pub mod world;
pub mod world_file;

use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use axum::http::StatusCode;
use axum::response::Response;

pub use aws::{AwsCredentials, AwsSandbox, AwsState, KeySpec};
pub use circleci::{
    CheckoutKeySpec, CircleCiState, ContextSpec, OrgSpec, ProjectSpec, StoredContext,
    StoredProject, demo_org,
};
pub use github::{GithubSandbox, GithubState};

/// One request as the sandbox saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordedRequest {
    pub method: String,
    /// The path as sent (still percent-encoded).
    pub path: String,
    /// The raw query string, when there was one.
    pub query: Option<String>,
    pub status: u16,
    /// When the answer was sent, from the sandbox's start.
    pub at: Duration,
}

impl RecordedRequest {
    /// Anything but GET, HEAD and OPTIONS.
    pub fn is_mutating(&self) -> bool {
        !matches!(self.method.as_str(), "GET" | "HEAD" | "OPTIONS")
    }

    /// Whether the query carries `name` (`page-token`, say).
    pub fn has_query_param(&self, name: &str) -> bool {
        self.query_param(name).is_some()
    }

    pub fn query_param(&self, name: &str) -> Option<String> {
        let query = self.query.as_deref()?;
        url::form_urlencoded::parse(query.as_bytes())
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.into_owned())
    }
}

/// A locked mutex even if a panicking test thread poisoned it: the data is still what it was.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// The CircleCI simulator behind the shared server: its state answers every request.
struct CircleCiSim(CircleCiState);

impl sim::Simulator for CircleCiSim {
    type Record = RecordedRequest;

    fn answer(&mut self, r: &sim::SimRequest<'_>) -> Response {
        circleci::answer(&mut self.0, r.method, r.path, r.query, r.headers, r.body)
    }

    fn fault(&self, status: StatusCode) -> Response {
        let message = match status {
            StatusCode::TOO_MANY_REQUESTS => "Rate limit exceeded",
            StatusCode::BAD_GATEWAY => "Bad gateway",
            StatusCode::FORBIDDEN => "Permission denied",
            _ => "Internal server error",
        };
        circleci::message(status, message)
    }
}

/// A running CircleCI sandbox. Dropping it stops the server.
pub struct Sandbox {
    server: sim::SimServer<CircleCiSim>,
}

impl std::fmt::Debug for Sandbox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sandbox")
            .field("addr", &self.server.addr())
            .finish()
    }
}

impl Sandbox {
    /// Starts the CircleCI simulator with `state` on 127.0.0.1 at a free port. Must be called
    /// within a Tokio runtime, which then serves the requests.
    pub async fn start(state: CircleCiState) -> std::io::Result<Sandbox> {
        let server = sim::SimServer::start(|_| CircleCiSim(state)).await?;
        tracing::debug!(addr = %server.addr(), "sandbox listening");
        Ok(Sandbox { server })
    }

    /// `http://127.0.0.1:PORT`, to use as `CIRCLECI_HOST`.
    pub fn base_url(&self) -> String {
        self.server.base_url()
    }

    pub fn addr(&self) -> std::net::SocketAddr {
        self.server.addr()
    }

    /// Stops the server and waits (a second at most) for it to finish.
    pub async fn shutdown(self) {
        self.server.shutdown().await
    }

    /// Reads or changes the simulated state (to set up a case, or to check what a mutation did).
    pub fn with_state<R>(&self, f: impl FnOnce(&mut CircleCiState) -> R) -> R {
        self.server.with_state(|s| f(&mut s.0))
    }

    /// A copy of the simulated state.
    pub fn state(&self) -> CircleCiState {
        self.with_state(|s| s.clone())
    }

    /// Delays every answer by `latency` (a WAN round trip, say 50 ms).
    pub fn set_latency(&self, latency: Duration) {
        self.server.set_latency(latency)
    }

    /// Answers the next `count` requests whose path matches `path_regex` with 429 and
    /// `Retry-After: <retry_after in whole seconds, rounded up>`.
    pub fn throttle(
        &self,
        path_regex: &str,
        count: u32,
        retry_after: Duration,
    ) -> Result<(), regex::Error> {
        self.server.throttle(path_regex, count, retry_after)
    }

    /// Answers the next `count` requests whose path matches `path_regex` with `status`
    /// (a 5xx, typically).
    pub fn fail_next(&self, path_regex: &str, count: u32, status: u16) -> Result<(), regex::Error> {
        self.server.fail_next(path_regex, count, status, None)
    }

    /// Lets the next `count` mutating requests (POST, PUT, PATCH, DELETE) whose path matches
    /// take effect, then answers them 502: the client cannot know what happened.
    pub fn lose_response(&self, path_regex: &str, count: u32) -> Result<(), regex::Error> {
        self.server.lose_response(path_regex, count)
    }

    /// Answers a `fraction` of requests (0.0–1.0) with 500, drawn from a generator seeded with
    /// `seed`, so that a run is reproducible for a given order of requests.
    pub fn set_error_rate(&self, fraction: f64, seed: u64) {
        self.server.set_error_rate(fraction, seed)
    }

    /// Removes every injected fault.
    pub fn clear_faults(&self) {
        self.server.clear_faults()
    }

    /// Every request answered so far, in the order the answers were sent.
    pub fn requests(&self) -> Vec<RecordedRequest> {
        self.server.requests()
    }

    /// Requests that could have changed something (POST, PUT, PATCH, DELETE).
    pub fn mutating_requests(&self) -> Vec<RecordedRequest> {
        self.server.mutating_requests()
    }

    pub fn clear_requests(&self) {
        self.server.clear_requests()
    }
}

/// SplitMix64: small, fast, good enough for fake data and fault draws; seeded for
/// reproducible faults, or from the process's random hasher keys for per-run fake values.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn seeded(seed: u64) -> Rng {
        Rng(seed)
    }

    /// A generator seeded differently on every call and every run.
    pub fn from_entropy() -> Rng {
        use std::hash::BuildHasher;
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or_default();
        Rng(std::collections::hash_map::RandomState::new().hash_one(nanos))
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `[0, 1)`.
    pub fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Uniform in `0..n` (0 when `n` is 0).
    pub fn below(&mut self, n: u64) -> u64 {
        if n == 0 { 0 } else { self.next_u64() % n }
    }

    /// `len` characters drawn from `alphabet` (ASCII).
    pub fn string(&mut self, alphabet: &[u8], len: usize) -> String {
        (0..len)
            .map(|_| {
                let i = self.below(alphabet.len() as u64) as usize;
                alphabet.get(i).copied().map(char::from).unwrap_or('x')
            })
            .collect()
    }
}

/// Fake credentials shaped like the real ones (so that classification rules see realistic
/// input) and random on every run (so that no test can pass by knowing a value).
pub mod fake {
    use super::Rng;

    pub const UPPER_DIGITS: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";
    pub const ALNUM: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    pub const BASE64: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    pub const HEX: &[u8] = b"0123456789abcdef";

    /// `AKIA` + 16 of base32's alphabet, as IAM user keys look.
    pub fn aws_access_key_id(rng: &mut Rng) -> String {
        format!(
            "AKIA{}",
            rng.string(b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567", 16)
        )
    }

    pub fn aws_secret_access_key(rng: &mut Rng) -> String {
        rng.string(BASE64, 40)
    }

    /// A classic personal access token: `ghp_` + 36 alphanumerics.
    pub fn github_token(rng: &mut Rng) -> String {
        format!("ghp_{}", rng.string(ALNUM, 36))
    }

    pub fn npm_token(rng: &mut Rng) -> String {
        format!("npm_{}", rng.string(ALNUM, 36))
    }

    /// An Entra ID client secret: three characters, `8Q~`, 34 more.
    pub fn azure_client_secret(rng: &mut Rng) -> String {
        format!(
            "{}8Q~{}",
            rng.string(ALNUM, 3),
            rng.string(
                b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_~.-",
                34
            )
        )
    }

    pub fn password(rng: &mut Rng) -> String {
        rng.string(ALNUM, 24)
    }

    pub fn slack_webhook_url(rng: &mut Rng) -> String {
        format!(
            "https://hooks.slack.com/services/T{}/B{}/{}",
            rng.string(UPPER_DIGITS, 8),
            rng.string(UPPER_DIGITS, 10),
            rng.string(ALNUM, 24)
        )
    }

    /// A version-4 UUID.
    pub fn uuid(rng: &mut Rng) -> String {
        let hex = rng.string(HEX, 32);
        let variant = ["8", "9", "a", "b"][rng.below(4) as usize];
        format!(
            "{}-{}-4{}-{}{}-{}",
            &hex[0..8],
            &hex[8..12],
            &hex[13..16],
            variant,
            &hex[17..20],
            &hex[20..32]
        )
    }

    /// A GCP service-account key file, with a random (not a real) private key.
    pub fn gcp_service_account_key(rng: &mut Rng, project: &str, account: &str) -> String {
        let body: Vec<String> = (0..6).map(|_| rng.string(BASE64, 64)).collect();
        let private_key = format!(
            "-----BEGIN PRIVATE KEY-----\\n{}\\n-----END PRIVATE KEY-----\\n",
            body.join("\\n")
        );
        format!(
            concat!(
                "{{\"type\":\"service_account\",\"project_id\":\"{project}\",",
                "\"private_key_id\":\"{key_id}\",\"private_key\":\"{private_key}\",",
                "\"client_email\":\"{account}@{project}.iam.gserviceaccount.com\",",
                "\"client_id\":\"{client_id}\",",
                "\"token_uri\":\"https://oauth2.googleapis.com/token\"}}"
            ),
            project = project,
            key_id = rng.string(HEX, 40),
            private_key = private_key,
            account = account,
            client_id = rng.string(b"0123456789", 21),
        )
    }

    /// An MD5 fingerprint, colon-separated, as CircleCI shows SSH keys.
    pub fn ssh_fingerprint(rng: &mut Rng) -> String {
        (0..16)
            .map(|_| rng.string(HEX, 2))
            .collect::<Vec<_>>()
            .join(":")
    }

    pub fn ssh_public_key(rng: &mut Rng, comment: &str) -> String {
        format!(
            "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAI{} {comment}",
            rng.string(BASE64, 43)
        )
    }

    pub fn ssh_private_key(rng: &mut Rng) -> String {
        let body: Vec<String> = (0..5).map(|_| rng.string(BASE64, 70)).collect();
        format!(
            "-----BEGIN OPENSSH PRIVATE KEY-----\n{}\n-----END OPENSSH PRIVATE KEY-----\n",
            body.join("\n")
        )
    }

    /// A CircleCI personal API token.
    pub fn circleci_token(rng: &mut Rng) -> String {
        format!("CCIPAT_{}_{}", rng.string(ALNUM, 22), rng.string(HEX, 40))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rng_is_reproducible_when_seeded() {
        let a: Vec<u64> = (0..5)
            .scan(Rng::seeded(7), |r, _| Some(r.next_u64()))
            .collect();
        let b: Vec<u64> = (0..5)
            .scan(Rng::seeded(7), |r, _| Some(r.next_u64()))
            .collect();
        assert_eq!(a, b);
        assert_ne!(
            fake::aws_access_key_id(&mut Rng::from_entropy()),
            fake::aws_access_key_id(&mut Rng::from_entropy())
        );
    }

    #[test]
    fn fakes_have_the_real_shapes() {
        let mut rng = Rng::seeded(1);
        let id = fake::aws_access_key_id(&mut rng);
        assert!(id.starts_with("AKIA") && id.len() == 20);
        assert_eq!(fake::aws_secret_access_key(&mut rng).len(), 40);
        assert_eq!(fake::github_token(&mut rng).len(), 40);
        assert!(fake::azure_client_secret(&mut rng).contains("8Q~"));
        let uuid = fake::uuid(&mut rng);
        assert_eq!(uuid.len(), 36);
        assert_eq!(&uuid[14..15], "4");
        let key = fake::gcp_service_account_key(&mut rng, "acme-prod", "deployer");
        let parsed: serde_json::Value = serde_json::from_str(&key).unwrap();
        assert_eq!(parsed["type"], "service_account");
        assert!(
            parsed["private_key"]
                .as_str()
                .unwrap()
                .starts_with("-----BEGIN PRIVATE KEY-----\n")
        );
        assert_eq!(fake::ssh_fingerprint(&mut rng).len(), 47);
    }

    #[test]
    fn recorded_request_queries() {
        let r = RecordedRequest {
            method: "GET".into(),
            path: "/api/v2/context".into(),
            query: Some("owner-slug=gh%2Facme&page-token=abc".into()),
            status: 200,
            at: Duration::ZERO,
        };
        assert_eq!(r.query_param("owner-slug").as_deref(), Some("gh/acme"));
        assert!(r.has_query_param("page-token"));
        assert!(!r.is_mutating());
    }
}
