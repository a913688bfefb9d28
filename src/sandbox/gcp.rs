//! The GCP simulator: IAM service-account keys (`/v1/projects/{p}/serviceAccounts/{email}/keys…`)
//! and the OAuth token endpoint (`/token`), behind one base URL that a plan's
//! `endpoints: {gcp_iam: URL, gcp_token: URL/token}` points at.
//!
//! Keys are real: `keys.create` generates an RSA key pair and answers a real key file (PKCS#8
//! PEM private key, base64 in `privateKeyData`), and the token endpoint checks the RS256
//! signature of a JWT bearer assertion against the public key it registered, so a forged,
//! disabled or deleted key gets no token. IAM's limit of 10 user-managed keys per account
//! answers `FAILED_PRECONDITION`, as IAM does. Every IAM call needs a bearer token this
//! simulator issued. Errors use Google's shape `{"error": {"code", "message", "status"}}`.
//!
//! Cloud Logging `POST /v2/entries:list` (a token this simulator issued) answers the log entries
//! loaded with [`GcpState::add_log_entry`] as `{"entries": […], "nextPageToken"}` (no
//! `entries` key when none match), oldest first (`orderBy` `timestamp asc`, the default; `timestamp
//! desc` reverses). `resourceNames` must be `["projects/{the project}"]` (another project: 403
//! PERMISSION_DENIED). `pageSize` 1–1000 (default 50). `pageToken` is opaque and bound to the
//! filter. The filter evaluator understands exactly what rekey's hunt emits: terms joined by
//! ` AND ` (outside quotes), each `FIELD:"TEXT"` (the field contains the text), `FIELD="TEXT"`
//! (equals; `\"` and `\\` escaped inside TEXT), or
//! `timestamp>="RFC3339"` / `timestamp<="RFC3339"` (compared as times); fields are dotted paths
//! into the entry. Anything else is 400 INVALID_ARGUMENT, so that a client never believes a
//! filter was applied.
//!
//! Key size: 2048 bits like GCP's keys. The `rsa` and `num-bigint-dig` crates are compiled with
//! optimizations even in debug builds (Cargo.toml), which keeps generation to a fraction of a
//! second; [`GcpState::key_bits`] can lower it where a test mints many keys.
//!
//! Held against Google's own Python client and auth library (`tests/vendor_clients.rs`:
//! google-api-python-client with its bundled `iam.v1` and `logging.v2` discovery documents,
//! google-auth's JWT bearer flow): every answer fits the discovery schemas. Simplifications:
//! - a key's `keyAlgorithm` is always `KEY_ALG_RSA_2048` (whatever [`GcpState::key_bits`]
//!   says), `keyOrigin` `GOOGLE_PROVIDED`; `keys.upload`, system-managed keys
//!   (`keyTypes=SYSTEM_MANAGED` lists none), `disableReason` and `extendedStatus` are not
//!   simulated;
//! - `keyTypes` is read once (the first value; IAM accepts the parameter repeated);
//! - the logging filter language is the subset above (Google's client passes any filter
//!   through; the simulator refuses the rest with 400 rather than ignore it); `LogEntry` is
//!   whatever the test stored, answered as stored;
//! - errors carry `code`, `message` and `status`, without Google's `details[]`;
//! - the token endpoint answers only the JWT bearer grant, and the IAM API accepts only tokens
//!   it issued (any account may manage any account's keys: no IAM policy is simulated).

use std::collections::{BTreeMap, HashMap};

use axum::http::{Method, StatusCode};
use axum::response::Response;
use base64::Engine as _;
use chrono::{DateTime, SecondsFormat, Utc};
use rsa::pkcs1v15::{Signature, VerifyingKey};
use rsa::pkcs8::{EncodePrivateKey, LineEnding};
use rsa::sha2::Sha256;
use rsa::signature::Verifier;
use rsa::{RsaPrivateKey, RsaPublicKey};

use super::sim::{self, SimRequest, SimServer, Simulator};
use super::{Rng, fake};
use crate::secret::Secret;

/// IAM's limit of user-managed keys per service account.
pub const MAX_KEYS: usize = 10;

/// The account that holds rekey's own key.
pub const ADMIN_ACCOUNT: &str = "rekey-admin";

const JWT_BEARER: &str = "urn:ietf:params:oauth:grant-type:jwt-bearer";

#[derive(Clone)]
struct StoredKey {
    /// The 40-hex key id (last segment of the name, `private_key_id` of the key file).
    id: String,
    public: RsaPublicKey,
    disabled: bool,
    created: DateTime<Utc>,
    /// When the token endpoint starts to accept the key (see [`GcpState::propagation`]).
    usable_at: std::time::Instant,
}

#[derive(Clone, Default)]
struct Account {
    keys: Vec<StoredKey>,
}

/// The simulated project: service accounts and their keys, and the tokens issued.
pub struct GcpState {
    project: String,
    base_url: String,
    accounts: BTreeMap<String, Account>,
    /// Access token → the account it was issued to.
    tokens: HashMap<String, String>,
    rng: Rng,
    /// RSA modulus size of generated keys.
    pub key_bits: usize,
    admin_key: Option<Secret>,
    /// Cloud Logging entries of the project, for `entries:list`.
    pub log_entries: Vec<serde_json::Value>,
    /// How long a new key is unknown to the token endpoint (real time): Google documents that a
    /// new key may need 60 seconds or more before it can be used. Applies to keys created
    /// after it is set; zero by default.
    pub propagation: std::time::Duration,
}

impl GcpState {
    fn new(project: &str, base_url: &str) -> GcpState {
        let mut state = GcpState {
            project: project.to_owned(),
            base_url: base_url.to_owned(),
            accounts: BTreeMap::new(),
            tokens: HashMap::new(),
            rng: Rng::from_entropy(),
            key_bits: 2048,
            admin_key: None,
            log_entries: Vec::new(),
            propagation: std::time::Duration::ZERO,
        };
        let admin = state.add_account(ADMIN_ACCOUNT);
        state.admin_key = state.create_key(&admin).ok().map(|(_, json)| json);
        state
    }

    /// `NAME@PROJECT.iam.gserviceaccount.com`.
    pub fn email(&self, name: &str) -> String {
        format!("{name}@{}.iam.gserviceaccount.com", self.project)
    }

    /// Creates a service account (no key) and returns its email.
    pub fn add_account(&mut self, name: &str) -> String {
        let email = self.email(name);
        self.accounts.entry(email.clone()).or_default();
        email
    }

    /// Key names of an account, in creation order, with whether each is disabled.
    pub fn keys_of(&self, email: &str) -> Vec<(String, bool)> {
        self.accounts
            .get(email)
            .map(|a| {
                a.keys
                    .iter()
                    .map(|k| (self.key_name(email, &k.id), k.disabled))
                    .collect()
            })
            .unwrap_or_default()
    }

    fn key_name(&self, email: &str, id: &str) -> String {
        format!(
            "projects/{}/serviceAccounts/{email}/keys/{id}",
            self.project
        )
    }

    /// Creates a key for `email` directly (a fixture, or keys.create): (key name, key file).
    pub fn create_key(&mut self, email: &str) -> Result<(String, Secret), String> {
        // Before generating: a full account gets no pair made for nothing.
        self.room_for_a_key(email)?;
        let private = RsaPrivateKey::new(&mut rand_core::OsRng, self.key_bits)
            .map_err(|e| format!("key generation: {e}"))?;
        self.create_key_from(email, &private)
    }

    /// An existing account with fewer than [`MAX_KEYS`] keys, or IAM's refusal.
    fn room_for_a_key(&self, email: &str) -> Result<(), String> {
        let count = self
            .accounts
            .get(email)
            .map(|a| a.keys.len())
            .ok_or_else(|| format!("no account {email}"))?;
        if count >= MAX_KEYS {
            return Err("Precondition check failed.".into());
        }
        Ok(())
    }

    /// [`Self::create_key`] with a key pair made elsewhere: a world of thousands of service
    /// accounts gives their made-up first keys one pair (each key keeps its own id and file),
    /// where generating a pair each took most of its start.
    pub fn create_key_from(
        &mut self,
        email: &str,
        private: &RsaPrivateKey,
    ) -> Result<(String, Secret), String> {
        self.room_for_a_key(email)?;
        let pem = private
            .to_pkcs8_pem(LineEnding::LF)
            .map_err(|e| format!("key encoding: {e}"))?;
        let id = self.rng.string(fake::HEX, 40);
        let client_id = self.rng.string(b"0123456789", 21);
        let json = serde_json::json!({
            "type": "service_account",
            "project_id": self.project,
            "private_key_id": id,
            "private_key": pem.as_str(),
            "client_email": email,
            "client_id": client_id,
            "auth_uri": "https://accounts.google.com/o/oauth2/auth",
            "token_uri": format!("{}/token", self.base_url),
            "auth_provider_x509_cert_url": "https://www.googleapis.com/oauth2/v1/certs",
            "client_x509_cert_url": format!("https://www.googleapis.com/robot/v1/metadata/x509/{email}"),
            "universe_domain": "googleapis.com",
        });
        let key = StoredKey {
            id: id.clone(),
            public: private.to_public_key(),
            disabled: false,
            created: Utc::now(),
            usable_at: std::time::Instant::now() + self.propagation,
        };
        if let Some(account) = self.accounts.get_mut(email) {
            account.keys.push(key);
        }
        Ok((self.key_name(email, &id), Secret::new(json.to_string())))
    }

    /// Moves every key's creation time back by `by` (fixtures older than a plan's max_age).
    pub fn backdate(&mut self, by: chrono::Duration) {
        for account in self.accounts.values_mut() {
            for key in &mut account.keys {
                key.created -= by;
            }
        }
    }

    /// Adds a log entry (a `LogEntry` as Cloud Logging returns it).
    pub fn add_log_entry(&mut self, entry: serde_json::Value) {
        self.log_entries.push(entry);
    }

    fn entries_list(&self, request: &SimRequest<'_>) -> Response {
        let authorized = request
            .bearer()
            .is_some_and(|t| self.tokens.contains_key(t));
        if !authorized {
            return error(
                StatusCode::UNAUTHORIZED,
                "UNAUTHENTICATED",
                "Request had invalid authentication credentials. Expected OAuth 2 access token, login cookie or other valid authentication credential.",
            );
        }
        let Ok(body) = serde_json::from_slice::<serde_json::Value>(request.body) else {
            return error(
                StatusCode::BAD_REQUEST,
                "INVALID_ARGUMENT",
                "Invalid JSON payload received.",
            );
        };
        let wanted = format!("projects/{}", self.project);
        let names: Vec<&str> = body
            .get("resourceNames")
            .and_then(|v| v.as_array())
            .map(|a| a.iter().filter_map(|v| v.as_str()).collect())
            .unwrap_or_default();
        if names.is_empty() {
            return error(
                StatusCode::BAD_REQUEST,
                "INVALID_ARGUMENT",
                "resourceNames is required.",
            );
        }
        if names.iter().any(|n| *n != wanted) {
            return error(
                StatusCode::FORBIDDEN,
                "PERMISSION_DENIED",
                "The caller does not have permission",
            );
        }
        let filter = body.get("filter").and_then(|v| v.as_str()).unwrap_or("");
        let terms = match parse_filter(filter) {
            Ok(t) => t,
            Err(e) => return error(StatusCode::BAD_REQUEST, "INVALID_ARGUMENT", &e),
        };
        let page_size = match body.get("pageSize").and_then(|v| v.as_i64()) {
            None => 50,
            Some(n) if (1..=1000).contains(&n) => n as usize,
            Some(_) => {
                return error(
                    StatusCode::BAD_REQUEST,
                    "INVALID_ARGUMENT",
                    "pageSize must be between 1 and 1000.",
                );
            }
        };
        let descending = match body.get("orderBy").and_then(|v| v.as_str()) {
            None | Some("timestamp asc") | Some("timestamp") => false,
            Some("timestamp desc") => true,
            Some(o) => {
                return error(
                    StatusCode::BAD_REQUEST,
                    "INVALID_ARGUMENT",
                    &format!("unsupported orderBy `{o}`"),
                );
            }
        };
        let offset = match body
            .get("pageToken")
            .and_then(|v| v.as_str())
            .filter(|t| !t.is_empty())
        {
            None => 0,
            Some(t) => {
                let decoded = hex::decode(t)
                    .ok()
                    .and_then(|b| String::from_utf8(b).ok())
                    .and_then(|s| {
                        let (f, n) = s.rsplit_once('\n')?;
                        (f == filter).then(|| n.parse::<usize>().ok()).flatten()
                    });
                match decoded {
                    Some(n) => n,
                    None => {
                        return error(
                            StatusCode::BAD_REQUEST,
                            "INVALID_ARGUMENT",
                            "Invalid page token.",
                        );
                    }
                }
            }
        };
        let time_of = |e: &serde_json::Value| {
            e.get("timestamp")
                .and_then(|t| t.as_str())
                .and_then(|t| DateTime::parse_from_rfc3339(t).ok())
                .map(|t| t.with_timezone(&Utc))
        };
        let mut matching: Vec<&serde_json::Value> = self
            .log_entries
            .iter()
            .filter(|e| terms.iter().all(|t| t.matches(e)))
            .collect();
        matching.sort_by_key(|e| time_of(e));
        if descending {
            matching.reverse();
        }
        let page: Vec<serde_json::Value> = matching
            .iter()
            .skip(offset)
            .take(page_size)
            .map(|e| (*e).clone())
            .collect();
        let mut out = serde_json::json!({});
        if !page.is_empty() {
            out["entries"] = serde_json::Value::Array(page);
        }
        if matching.len() > offset + page_size {
            out["nextPageToken"] =
                serde_json::Value::String(hex::encode(format!("{filter}\n{}", offset + page_size)));
        }
        sim::json(StatusCode::OK, &out)
    }

    /// An access token for `email`, as if it had signed in (tests).
    pub fn issue_token(&mut self, email: &str) -> Secret {
        let token = format!("ya29.{}", self.rng.string(fake::ALNUM, 60));
        self.tokens.insert(token.clone(), email.to_owned());
        Secret::new(token)
    }

    fn key_json(&self, key: &StoredKey) -> serde_json::Value {
        let mut v = serde_json::json!({
            "keyAlgorithm": "KEY_ALG_RSA_2048",
            "validAfterTime": key.created.to_rfc3339_opts(SecondsFormat::Secs, true),
            "validBeforeTime": "9999-12-31T23:59:59Z",
            "keyOrigin": "GOOGLE_PROVIDED",
            "keyType": "USER_MANAGED",
        });
        // Proto3 JSON, as IAM answers: a false boolean is left out, not sent as `false`.
        if key.disabled {
            v["disabled"] = true.into();
        }
        v
    }

    fn token_endpoint(&mut self, request: &SimRequest<'_>) -> Response {
        let refuse = |description: &str| {
            sim::json(
                StatusCode::BAD_REQUEST,
                &serde_json::json!({"error": "invalid_grant", "error_description": description}),
            )
        };
        if request.form("grant_type").as_deref() != Some(JWT_BEARER) {
            return sim::json(
                StatusCode::BAD_REQUEST,
                &serde_json::json!({"error": "unsupported_grant_type", "error_description": "Invalid grant_type"}),
            );
        }
        let Some(assertion) = request.form("assertion") else {
            return refuse("Missing required parameter: assertion");
        };
        let parts: Vec<&str> = assertion.split('.').collect();
        let [header, claims, signature] = parts.as_slice() else {
            return refuse(
                "Invalid JWT: Token must be a short-lived token and in a reasonable timeframe",
            );
        };
        let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        let decode = |s: &str| -> Option<serde_json::Value> {
            serde_json::from_slice(&b64.decode(s).ok()?).ok()
        };
        let (Some(h), Some(c)) = (decode(header), decode(claims)) else {
            return refuse("Invalid JWT Signature.");
        };
        let iss = c["iss"].as_str().unwrap_or_default().to_owned();
        let kid = h["kid"].as_str().unwrap_or_default();
        let now = Utc::now().timestamp();
        let exp = c["exp"].as_i64().unwrap_or(0);
        let iat = c["iat"].as_i64().unwrap_or(0);
        if h["alg"] != "RS256" || exp <= now || iat > now + 300 || exp - iat > 3600 {
            return refuse(
                "Invalid JWT: Token must be a short-lived token (60 minutes) and in a reasonable timeframe. Check your iat and exp values in the JWT claim.",
            );
        }
        if !c["aud"].as_str().is_some_and(|a| a.ends_with("/token")) {
            return refuse("Invalid JWT: Failed audience check.");
        }
        let Some(account) = self.accounts.get(&iss) else {
            return refuse("Invalid grant: account not found");
        };
        let Some(key) = account.keys.iter().find(|k| k.id == kid) else {
            return refuse("Invalid JWT Signature.");
        };
        let Some(sig) = b64
            .decode(signature)
            .ok()
            .and_then(|s| Signature::try_from(s.as_slice()).ok())
        else {
            return refuse("Invalid JWT Signature.");
        };
        let input = format!("{header}.{claims}");
        if VerifyingKey::<Sha256>::new(key.public.clone())
            .verify(input.as_bytes(), &sig)
            .is_err()
        {
            return refuse("Invalid JWT Signature.");
        }
        if key.disabled {
            return refuse("Invalid grant: account not found");
        }
        // Not yet propagated: Google answers as for a key it does not know.
        if std::time::Instant::now() < key.usable_at {
            return refuse("Invalid JWT Signature.");
        }
        let token = self.issue_token(&iss);
        sim::json(
            StatusCode::OK,
            &serde_json::json!({"access_token": token.expose(), "expires_in": 3599, "token_type": "Bearer"}),
        )
    }

    fn iam(&mut self, request: &SimRequest<'_>) -> Response {
        let authorized = request
            .bearer()
            .is_some_and(|t| self.tokens.contains_key(t));
        if !authorized {
            return error(
                StatusCode::UNAUTHORIZED,
                "UNAUTHENTICATED",
                "Request had invalid authentication credentials. Expected OAuth 2 access token, login cookie or other valid authentication credential.",
            );
        }
        // /v1/projects/{p}/serviceAccounts/{email}/keys[/{id}[:verb]]
        let Some(rest) = request.path.strip_prefix("/v1/projects/") else {
            return error(StatusCode::NOT_FOUND, "NOT_FOUND", "Method not found.");
        };
        let parts: Vec<&str> = rest.split('/').collect();
        let (project, email, key) = match parts.as_slice() {
            [p, "serviceAccounts", e, "keys"] => (*p, *e, None),
            [p, "serviceAccounts", e, "keys", k] => (*p, *e, Some(*k)),
            _ => return error(StatusCode::NOT_FOUND, "NOT_FOUND", "Method not found."),
        };
        let email = percent_decode(email);
        if (project != "-" && project != self.project) || !self.accounts.contains_key(&email) {
            return error(
                StatusCode::NOT_FOUND,
                "NOT_FOUND",
                &format!(
                    "Service account projects/{project}/serviceAccounts/{email} does not exist."
                ),
            );
        }
        let (key_id, verb) = match key.map(|k| k.split_once(':').unwrap_or((k, ""))) {
            Some((id, verb)) => (Some(id), verb),
            None => (None, ""),
        };
        match (request.method, key_id, verb) {
            (&Method::GET, None, "") => {
                let user_managed = request
                    .query_param("keyTypes")
                    .is_none_or(|t| t == "USER_MANAGED" || t == "KEY_TYPE_UNSPECIFIED");
                let keys: Vec<serde_json::Value> = match self.accounts.get(&email) {
                    Some(a) if user_managed => a
                        .keys
                        .iter()
                        .map(|k| {
                            let mut v = self.key_json(k);
                            v["name"] = self.key_name(&email, &k.id).into();
                            v
                        })
                        .collect(),
                    _ => Vec::new(),
                };
                sim::json(StatusCode::OK, &serde_json::json!({"keys": keys}))
            }
            (&Method::POST, None, "") => match self.create_key(&email) {
                Ok((name, key_file)) => {
                    let id = name.rsplit('/').next().unwrap_or_default().to_owned();
                    let Some(stored) = self
                        .accounts
                        .get(&email)
                        .and_then(|a| a.keys.iter().find(|k| k.id == id))
                    else {
                        return error(
                            StatusCode::INTERNAL_SERVER_ERROR,
                            "INTERNAL",
                            "Internal error encountered.",
                        );
                    };
                    let mut v = self.key_json(stored);
                    v["name"] = name.into();
                    v["privateKeyType"] = "TYPE_GOOGLE_CREDENTIALS_FILE".into();
                    v["privateKeyData"] = base64::engine::general_purpose::STANDARD
                        .encode(key_file.expose())
                        .into();
                    sim::json(StatusCode::OK, &v)
                }
                Err(m) if m.starts_with("Precondition") => {
                    error(StatusCode::BAD_REQUEST, "FAILED_PRECONDITION", &m)
                }
                Err(m) => error(StatusCode::INTERNAL_SERVER_ERROR, "INTERNAL", &m),
            },
            (method, Some(id), verb) => {
                let name = self.key_name(&email, id);
                let Some(account) = self.accounts.get_mut(&email) else {
                    return error(
                        StatusCode::NOT_FOUND,
                        "NOT_FOUND",
                        "Unknown service account",
                    );
                };
                let Some(pos) = account.keys.iter().position(|k| k.id == id) else {
                    return error(
                        StatusCode::NOT_FOUND,
                        "NOT_FOUND",
                        &format!("Service account key {name} does not exist."),
                    );
                };
                match (method, verb) {
                    (&Method::POST, "disable") | (&Method::POST, "enable") => {
                        if let Some(k) = account.keys.get_mut(pos) {
                            k.disabled = verb == "disable";
                        }
                        sim::json(StatusCode::OK, &serde_json::json!({}))
                    }
                    (&Method::DELETE, "") => {
                        account.keys.remove(pos);
                        sim::json(StatusCode::OK, &serde_json::json!({}))
                    }
                    (&Method::GET, "") => {
                        let k = account.keys[pos].clone();
                        let mut v = self.key_json(&k);
                        v["name"] = name.into();
                        sim::json(StatusCode::OK, &v)
                    }
                    _ => error(StatusCode::NOT_FOUND, "NOT_FOUND", "Method not found."),
                }
            }
            _ => error(StatusCode::NOT_FOUND, "NOT_FOUND", "Method not found."),
        }
    }
}

fn percent_decode(s: &str) -> String {
    url::form_urlencoded::parse(format!("x={}", s.replace('+', "%2B")).as_bytes())
        .next()
        .map(|(_, v)| v.into_owned())
        .unwrap_or_else(|| s.to_owned())
}

/// One term of a Cloud Logging filter, of the shapes the simulator understands.
enum Term {
    Has(Vec<String>, String),
    Equals(Vec<String>, String),
    TimeAtLeast(DateTime<Utc>),
    TimeAtMost(DateTime<Utc>),
}

impl Term {
    fn matches(&self, entry: &serde_json::Value) -> bool {
        let get = |path: &[String]| -> Option<String> {
            let mut v = entry;
            for p in path {
                v = v.get(p)?;
            }
            v.as_str().map(str::to_owned)
        };
        let time = || {
            get(&["timestamp".to_owned()])
                .and_then(|t| DateTime::parse_from_rfc3339(&t).ok())
                .map(|t| t.with_timezone(&Utc))
        };
        match self {
            Term::Has(p, text) => get(p).is_some_and(|v| v.contains(text.as_str())),
            Term::Equals(p, text) => get(p).as_deref() == Some(text.as_str()),
            Term::TimeAtLeast(t) => time().is_some_and(|x| x >= *t),
            Term::TimeAtMost(t) => time().is_some_and(|x| x <= *t),
        }
    }
}

/// The terms of a filter: split on ` AND ` outside quoted strings (where `\\` escapes).
fn split_terms(filter: &str) -> Result<Vec<&str>, String> {
    let mut terms = Vec::new();
    let (mut start, mut in_quotes, mut escaped) = (0, false, false);
    let bytes = filter.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        if in_quotes {
            match (escaped, b) {
                (true, _) => escaped = false,
                (false, b'\\') => escaped = true,
                (false, b'"') => in_quotes = false,
                _ => {}
            }
        } else if b == b'"' {
            in_quotes = true;
        } else if bytes[i..].starts_with(b" AND ") {
            terms.push(&filter[start..i]);
            i += 5;
            start = i;
            continue;
        }
        i += 1;
    }
    if in_quotes {
        return Err(format!("unterminated string in the filter `{filter}`"));
    }
    terms.push(&filter[start..]);
    Ok(terms)
}

/// A quoted string value: `"` … `"` with `\"` and `\\` escaped (the logging query language's
/// escapes); an unescaped quote inside, or another escape, is not understood.
fn unquote(v: &str) -> Option<String> {
    let inner = v.strip_prefix('"')?.strip_suffix('"')?;
    let mut out = String::new();
    let mut chars = inner.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => match chars.next()? {
                c @ ('"' | '\\') => out.push(c),
                _ => return None,
            },
            '"' => return None,
            c => out.push(c),
        }
    }
    Some(out)
}

/// The field a term starts with: a dotted path of letters, digits and `_`, `@`.
fn field(term: &str) -> &str {
    let end = term
        .find(|c: char| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '@')))
        .unwrap_or(term.len());
    &term[..end]
}

fn parse_filter(filter: &str) -> Result<Vec<Term>, String> {
    let mut out = Vec::new();
    if filter.trim().is_empty() {
        return Ok(out);
    }
    for term in split_terms(filter)? {
        let term = term.trim();
        let unsupported = || format!("the simulator does not understand the filter term `{term}`");
        let quoted = unquote;
        let path = |f: &str| f.split('.').map(str::to_owned).collect::<Vec<_>>();
        let time = |v: &str| -> Option<DateTime<Utc>> {
            DateTime::parse_from_rfc3339(&quoted(v)?)
                .ok()
                .map(|t| t.with_timezone(&Utc))
        };
        if let Some(v) = term.strip_prefix("timestamp>=") {
            out.push(Term::TimeAtLeast(time(v).ok_or_else(unsupported)?));
        } else if let Some(v) = term.strip_prefix("timestamp<=") {
            out.push(Term::TimeAtMost(time(v).ok_or_else(unsupported)?));
        } else if let Some(v) = term
            .strip_prefix(field(term))
            .and_then(|v| v.strip_prefix(':'))
        {
            out.push(Term::Has(
                path(field(term)),
                quoted(v).ok_or_else(unsupported)?,
            ));
        } else if let Some(v) = term
            .strip_prefix(field(term))
            .and_then(|v| v.strip_prefix('='))
        {
            out.push(Term::Equals(
                path(field(term)),
                quoted(v).ok_or_else(unsupported)?,
            ));
        } else {
            return Err(unsupported());
        }
    }
    Ok(out)
}

fn error(status: StatusCode, code: &str, message: &str) -> Response {
    sim::json(
        status,
        &serde_json::json!({"error": {"code": status.as_u16(), "message": message, "status": code}}),
    )
}

impl Simulator for GcpState {
    type Record = super::RecordedRequest;

    fn answer(&mut self, request: &SimRequest<'_>) -> Response {
        if request.path == "/token" && request.method == Method::POST {
            return self.token_endpoint(request);
        }
        if request.path == "/v2/entries:list" && request.method == Method::POST {
            return self.entries_list(request);
        }
        self.iam(request)
    }

    fn fault(&self, status: StatusCode) -> Response {
        let code = match status.as_u16() {
            429 => "RESOURCE_EXHAUSTED",
            503 => "UNAVAILABLE",
            s if s >= 500 => "INTERNAL",
            _ => "FAILED_PRECONDITION",
        };
        error(status, code, "Injected fault.")
    }
}

/// A running GCP simulator.
pub struct GcpSandbox {
    server: SimServer<GcpState>,
}

impl std::fmt::Debug for GcpSandbox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GcpSandbox")
            .field("url", &self.server.base_url())
            .finish()
    }
}

impl GcpSandbox {
    /// Starts with project `project` and the admin account (one key).
    pub async fn start(project: &str) -> std::io::Result<GcpSandbox> {
        let server = SimServer::start(|base| GcpState::new(project, base)).await?;
        Ok(GcpSandbox { server })
    }

    /// For the plan's `endpoints.gcp_iam`.
    pub fn iam_url(&self) -> String {
        self.server.base_url()
    }

    /// For the plan's `endpoints.gcp_logging` (the same server).
    pub fn logging_url(&self) -> String {
        self.server.base_url()
    }

    /// For the plan's `endpoints.gcp_token`.
    pub fn token_url(&self) -> String {
        format!("{}/token", self.server.base_url())
    }

    /// The admin's key file: rekey's own credentials (`GOOGLE_APPLICATION_CREDENTIALS`).
    pub fn admin_key_json(&self) -> Option<Secret> {
        self.server.with_state(|s| s.admin_key.clone())
    }

    pub fn server(&self) -> &SimServer<GcpState> {
        &self.server
    }

    pub fn with_state<R>(&self, f: impl FnOnce(&mut GcpState) -> R) -> R {
        self.server.with_state(f)
    }
}
