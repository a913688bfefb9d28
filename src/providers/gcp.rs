//! GCP service-account keys: the `gcp-sa-key` provider, over the IAM REST API.
//!
//! Operations (IAM v1, `{gcp_iam}/v1/...`): `keys.list` with `keyTypes=USER_MANAGED` (inspect),
//! `keys.create` (mint: the answer's `privateKeyData` is the base64 of the key file, and the
//! decoded key file JSON is the minted `key_json` field; a binding that says `base64` gets the
//! common `GCLOUD_SERVICE_KEY` form from the engine), `keys.disable` / `keys.enable`
//! (deactivate / reactivate), `keys.delete` (revoke; 404 is success). A credential's id is the
//! key's full resource name (`projects/P/serviceAccounts/EMAIL/keys/KEY_ID`).
//!
//! Verification obtains an access token with the new key: an RS256-signed JWT assertion
//! (RFC 7523 bearer grant) POSTed to `{gcp_token}`, exactly what Google's client libraries do
//! with a key file when they ask the token endpoint. rekey's own credentials use the same
//! grant with the key file named by `GOOGLE_APPLICATION_CREDENTIALS`, or a ready access token
//! from `GOOGLE_OAUTH_ACCESS_TOKEN` (the variable Terraform's Google provider reads).
//!
//! Why REST over reqwest rather than google-cloud-auth and google-cloud-iam-admin-v1: every
//! endpoint must follow the plan's `endpoints:` so that the sandbox can stand in. The IAM
//! client accepts an endpoint, but google-cloud-auth signs service-account credentials as
//! self-signed JWTs sent straight to the API, so "obtain a token from `{gcp_token}`" would not
//! be what it does and the sandbox's token endpoint could not check the new key; and the
//! generated client brings a large dependency tree for five calls. The REST shapes are
//! documented and stable; the RSA signature is the RustCrypto `rsa` crate (no OpenSSL).

use super::rest::{self, TokenOutcome};
use super::{
    Capabilities, CredentialInfo, CredentialStatus, Inspection, Minted, Provider, ProviderError,
};
use crate::plan::{Endpoints, ProviderKind, Target};
use crate::secret::Secret;
use async_trait::async_trait;
use base64::Engine as _;
use chrono::{DateTime, Utc};
use rsa::pkcs1v15::SigningKey;
use rsa::pkcs8::DecodePrivateKey;
use rsa::sha2::Sha256;
use rsa::signature::{SignatureEncoding, Signer};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

pub const DEFAULT_IAM: &str = "https://iam.googleapis.com";
pub const DEFAULT_TOKEN: &str = "https://oauth2.googleapis.com/token";

/// The minted field: the key file JSON.
pub const FIELD_KEY_JSON: &str = "key_json";

/// GCP's limit of user-managed keys per service account.
pub const MAX_KEYS: usize = 10;

/// The scope rekey asks for (IAM key management needs no narrower one that exists).
const SCOPE: &str = "https://www.googleapis.com/auth/cloud-platform";

const JWT_BEARER: &str = "urn:ietf:params:oauth:grant-type:jwt-bearer";

/// A token is renewed this long before it expires, so no call carries one that dies in flight.
const TOKEN_MARGIN: Duration = Duration::from_secs(120);

/// The fields of a service-account key file that signing needs. `Debug` never shows the key.
#[derive(Clone, Deserialize)]
pub struct ServiceAccountKey {
    pub client_email: String,
    #[serde(default)]
    pub private_key_id: String,
    private_key: String,
}

impl std::fmt::Debug for ServiceAccountKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServiceAccountKey")
            .field("client_email", &self.client_email)
            .field("private_key_id", &self.private_key_id)
            .finish_non_exhaustive()
    }
}

impl ServiceAccountKey {
    /// Parses a key file. The error never quotes the text (it is a private key).
    pub fn parse(json: &str) -> Result<ServiceAccountKey, String> {
        let key: ServiceAccountKey = serde_json::from_str(json).map_err(|e| {
            format!(
                "not a service-account key file (JSON error at line {}, column {})",
                e.line(),
                e.column()
            )
        })?;
        if key.client_email.is_empty() || key.private_key.is_empty() {
            return Err("the key file has no client_email or private_key".into());
        }
        Ok(key)
    }

    /// The RFC 7523 assertion for `audience` (the token URL), valid for an hour from `now`.
    pub fn assertion(&self, audience: &str, now: DateTime<Utc>) -> Result<Secret, String> {
        let key = rsa::RsaPrivateKey::from_pkcs8_pem(&self.private_key)
            .map_err(|_| "the key file's private_key is not a PKCS#8 RSA key".to_string())?;
        let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        let header = serde_json::json!({"alg": "RS256", "typ": "JWT", "kid": self.private_key_id});
        let iat = now.timestamp();
        let claims = serde_json::json!({
            "iss": self.client_email,
            "scope": SCOPE,
            "aud": audience,
            "iat": iat,
            "exp": iat + 3600,
        });
        let input = format!(
            "{}.{}",
            b64.encode(header.to_string()),
            b64.encode(claims.to_string())
        );
        let signature = SigningKey::<Sha256>::new(key).sign(input.as_bytes());
        Ok(Secret::new(format!(
            "{input}.{}",
            b64.encode(signature.to_bytes())
        )))
    }
}

/// How rekey itself authenticates to IAM.
#[derive(Clone)]
pub enum GcpAuth {
    /// A key file (`GOOGLE_APPLICATION_CREDENTIALS`): tokens by the JWT bearer grant.
    KeyFile(Box<ServiceAccountKey>),
    /// A ready access token (`GOOGLE_OAUTH_ACCESS_TOKEN`, tests).
    AccessToken(Secret),
    /// Nothing configured: every call fails with a message that says what to set.
    None,
}

impl std::fmt::Debug for GcpAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            GcpAuth::KeyFile(k) => write!(f, "KeyFile({})", k.client_email),
            GcpAuth::AccessToken(_) => f.write_str("AccessToken([redacted])"),
            GcpAuth::None => f.write_str("None"),
        }
    }
}

impl GcpAuth {
    /// `GOOGLE_OAUTH_ACCESS_TOKEN` when set, else the key file named by
    /// `GOOGLE_APPLICATION_CREDENTIALS`, else `None`. A named file that cannot be read or parsed
    /// is an error (a typo must not look like "no credentials").
    pub fn from_env() -> Result<GcpAuth, String> {
        if let Ok(token) = std::env::var("GOOGLE_OAUTH_ACCESS_TOKEN")
            && !token.is_empty()
        {
            return Ok(GcpAuth::AccessToken(Secret::new(token)));
        }
        match std::env::var_os("GOOGLE_APPLICATION_CREDENTIALS") {
            Some(path) if !path.is_empty() => {
                let text = Secret::new(std::fs::read_to_string(&path).map_err(|e| {
                    format!(
                        "GOOGLE_APPLICATION_CREDENTIALS ({}): {e}",
                        std::path::Path::new(&path).display()
                    )
                })?);
                let key = ServiceAccountKey::parse(text.expose())
                    .map_err(|e| format!("GOOGLE_APPLICATION_CREDENTIALS: {e}"))?;
                Ok(GcpAuth::KeyFile(Box::new(key)))
            }
            _ => Ok(GcpAuth::None),
        }
    }
}

/// rekey's own GCP access tokens: the JWT bearer grant at `token_url` with the key file of
/// [`GcpAuth`], cached and renewed before expiry. Shared by the `gcp-sa-key` provider and the
/// Cloud Logging hunt (`crate::hunt::remote::gcp`).
pub struct GcpTokens {
    http: reqwest::Client,
    token_url: String,
    auth: GcpAuth,
    /// rekey's own access token and when it must be renewed.
    cached: Mutex<Option<(Secret, Instant)>>,
}

impl std::fmt::Debug for GcpTokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GcpTokens")
            .field("token_url", &self.token_url)
            .field("auth", &self.auth)
            .finish_non_exhaustive()
    }
}

impl GcpTokens {
    pub fn new(http: reqwest::Client, token_url: &str, auth: GcpAuth) -> GcpTokens {
        GcpTokens {
            http,
            token_url: token_url.trim_end_matches('/').to_owned(),
            auth,
            cached: Mutex::new(None),
        }
    }

    /// rekey's own access token: cached, renewed before it expires.
    pub async fn token(&self) -> Result<Secret, ProviderError> {
        let key = match &self.auth {
            GcpAuth::AccessToken(t) => return Ok(t.clone()),
            GcpAuth::None => {
                return Err(ProviderError::Failed(
                    "no GCP credentials for rekey: set GOOGLE_APPLICATION_CREDENTIALS to a service-account key file (or GOOGLE_OAUTH_ACCESS_TOKEN)".into(),
                ));
            }
            GcpAuth::KeyFile(key) => key,
        };
        if let Ok(cached) = self.cached.lock()
            && let Some((token, renew_at)) = cached.as_ref()
            && Instant::now() < *renew_at
        {
            return Ok(token.clone());
        }
        let what = format!("GCP token for rekey ({})", key.client_email);
        match self.grant(&what, key).await? {
            TokenOutcome::Granted(token, lifetime) => {
                let renew_at = Instant::now() + lifetime.saturating_sub(TOKEN_MARGIN);
                if let Ok(mut cached) = self.cached.lock() {
                    *cached = Some((token.clone(), renew_at));
                }
                Ok(token)
            }
            TokenOutcome::Refused(why) => Err(ProviderError::Failed(why)),
        }
    }

    /// The JWT bearer grant with `key` at the token endpoint.
    pub async fn grant(
        &self,
        what: &str,
        key: &ServiceAccountKey,
    ) -> Result<TokenOutcome, ProviderError> {
        let assertion = key
            .assertion(&self.token_url, Utc::now())
            .map_err(|e| ProviderError::Failed(format!("{what}: {e}")))?;
        tracing::debug!(account = %key.client_email, url = %self.token_url, "GCP: JWT bearer grant");
        rest::token_request(
            &self.http,
            what,
            &self.token_url,
            &[
                ("grant_type", JWT_BEARER),
                ("assertion", assertion.expose()),
            ],
            &[assertion.expose(), &key.private_key],
        )
        .await
    }
}

/// The `gcp-sa-key` provider: user-managed keys of `target.principal.service_account`.
pub struct GcpSaKeyProvider {
    http: reqwest::Client,
    iam: String,
    tokens: GcpTokens,
}

impl std::fmt::Debug for GcpSaKeyProvider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GcpSaKeyProvider")
            .field("iam", &self.iam)
            .field("tokens", &self.tokens)
            .finish_non_exhaustive()
    }
}

/// A key as `keys.list` and `keys.create` describe it. No `Debug`: `private_key_data` is the
/// key file.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Key {
    name: String,
    #[serde(default)]
    valid_after_time: Option<DateTime<Utc>>,
    #[serde(default)]
    disabled: bool,
    #[serde(default)]
    private_key_data: Option<String>,
}

#[derive(Deserialize)]
struct KeyList {
    #[serde(default)]
    keys: Vec<Key>,
}

impl GcpSaKeyProvider {
    /// Endpoints from the plan (defaults: Google's), rekey's credentials as given.
    pub fn new(endpoints: &Endpoints, auth: GcpAuth) -> Result<Self, ProviderError> {
        let pick = |v: &Option<crate::plan::Located<String>>, default: &str| {
            v.as_ref()
                .map(|l| l.value.trim_end_matches('/').to_owned())
                .unwrap_or_else(|| default.to_owned())
        };
        let http = rest::client()?;
        Ok(GcpSaKeyProvider {
            tokens: GcpTokens::new(
                http.clone(),
                &pick(&endpoints.gcp_token, DEFAULT_TOKEN),
                auth,
            ),
            http,
            iam: pick(&endpoints.gcp_iam, DEFAULT_IAM),
        })
    }

    /// Sends an authenticated IAM request; `Ok` holds a 2xx answer's body, errors are mapped.
    async fn call(
        &self,
        what: &str,
        method: reqwest::Method,
        url: &str,
        body: Option<serde_json::Value>,
        create: bool,
    ) -> Result<String, ProviderError> {
        let token = self.tokens.token().await.map_err(|e| match e {
            ProviderError::Failed(m) => ProviderError::Failed(format!("gcp-sa-key: {m}")),
            other => other,
        })?;
        let mut request = self
            .http
            .request(method.clone(), url)
            .bearer_auth(token.expose());
        if let Some(body) = body {
            request = request.json(&body);
        }
        tracing::debug!(%method, url, "gcp-sa-key: {what}");
        let answer = rest::send(what, request).await?;
        if (200..300).contains(&answer.status) {
            return Ok(answer.body);
        }
        Err(map_error(
            what,
            answer.status,
            &answer.body,
            create,
            &[token.expose()],
        ))
    }

    fn keys_url(&self, email: &str) -> String {
        format!("{}/v1/projects/-/serviceAccounts/{email}/keys", self.iam)
    }

    async fn set_disabled(
        &self,
        target: &Target,
        key_name: &str,
        disabled: bool,
    ) -> Result<(), ProviderError> {
        let email = account_of(target)?;
        check_key_name(key_name, email)?;
        let verb = if disabled { "disable" } else { "enable" };
        let what = format!("keys.{verb} of {key_name}");
        match self
            .call(
                &what,
                reqwest::Method::POST,
                &format!("{}/v1/{key_name}:{verb}", self.iam),
                Some(serde_json::json!({})),
                false,
            )
            .await
        {
            Ok(_) => Ok(()),
            // Already in the wanted state: IAM answers FAILED_PRECONDITION; the goal is reached.
            Err(ProviderError::Failed(m)) if m.contains("FAILED_PRECONDITION") => {
                let listed = self.inspect(target).await?;
                let want = if disabled {
                    CredentialStatus::Inactive
                } else {
                    CredentialStatus::Active
                };
                match listed.credentials.iter().find(|c| c.id == key_name) {
                    Some(c) if c.status == want => Ok(()),
                    _ => Err(ProviderError::Failed(m)),
                }
            }
            Err(e) => Err(e),
        }
    }
}

#[async_trait]
impl Provider for GcpSaKeyProvider {
    fn kind(&self) -> ProviderKind {
        ProviderKind::GcpSaKey
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            deactivate: true,
            reactivate: true,
            manual_mint: false,
            max_credentials: Some(MAX_KEYS),
        }
    }

    async fn inspect(&self, target: &Target) -> Result<Inspection, ProviderError> {
        let email = account_of(target)?;
        let what = format!("keys.list of {email}");
        let body = self
            .call(
                &what,
                reqwest::Method::GET,
                &format!("{}?keyTypes=USER_MANAGED", self.keys_url(email)),
                None,
                false,
            )
            .await?;
        let list: KeyList = serde_json::from_str(&body).map_err(|e| {
            ProviderError::Failed(format!("gcp-sa-key {what}: unreadable answer: {e}"))
        })?;
        Ok(Inspection {
            principal: email.to_owned(),
            credentials: list
                .keys
                .into_iter()
                .map(|k| CredentialInfo {
                    label: None,
                    id: k.name,
                    status: if k.disabled {
                        CredentialStatus::Inactive
                    } else {
                        CredentialStatus::Active
                    },
                    created_at: k.valid_after_time,
                    last_used: None,
                    last_used_service: None,
                })
                .collect(),
        })
    }

    async fn mint(&self, target: &Target) -> Result<Minted, ProviderError> {
        let email = account_of(target)?;
        let what = format!("keys.create for {email}");
        let body = self
            .call(
                &what,
                reqwest::Method::POST,
                &self.keys_url(email),
                Some(serde_json::json!({
                    "privateKeyType": "TYPE_GOOGLE_CREDENTIALS_FILE",
                    "keyAlgorithm": "KEY_ALG_RSA_2048",
                })),
                true,
            )
            .await?;
        // The answer holds the private key: serde's message could quote it, so position only.
        let key: Key = serde_json::from_str(&body).map_err(|e| {
            ProviderError::Failed(format!(
                "gcp-sa-key {what}: unreadable answer (JSON error at line {}, column {})",
                e.line(),
                e.column()
            ))
        })?;
        let decoded = key
            .private_key_data
            .as_deref()
            .and_then(|d| base64::engine::general_purpose::STANDARD.decode(d).ok())
            .and_then(|b| String::from_utf8(b).ok())
            .map(Secret::new);
        let Some(key_json) = decoded else {
            // A key was created that rekey cannot use: the engine's orphan handling removes it
            // on resume; say so rather than hide it.
            return Err(ProviderError::Failed(format!(
                "gcp-sa-key {what}: key {} was created but the answer has no readable privateKeyData",
                key.name
            )));
        };
        if let Err(e) = ServiceAccountKey::parse(key_json.expose()) {
            return Err(ProviderError::Failed(format!(
                "gcp-sa-key {what}: key {} was created but its key file is unusable: {e}",
                key.name
            )));
        }
        tracing::debug!(key = %key.name, "gcp-sa-key: key created");
        Ok(Minted {
            id: key.name,
            fields: BTreeMap::from([(FIELD_KEY_JSON.to_owned(), key_json)]),
        })
    }

    async fn verify(&self, target: &Target, minted: &Minted) -> Result<(), ProviderError> {
        let email = account_of(target)?;
        let json = minted.fields.get(FIELD_KEY_JSON).ok_or_else(|| {
            ProviderError::Failed(format!(
                "gcp-sa-key verify of {}: no key_json field",
                minted.id
            ))
        })?;
        let key = ServiceAccountKey::parse(json.expose()).map_err(|e| {
            ProviderError::Failed(format!("gcp-sa-key verify of {}: {e}", minted.id))
        })?;
        if !key.client_email.eq_ignore_ascii_case(email) {
            return Err(ProviderError::Failed(format!(
                "gcp-sa-key verify of {}: the key belongs to {}, not {email}",
                minted.id, key.client_email
            )));
        }
        let what = format!(
            "gcp-sa-key verify of {} (token with the new key)",
            minted.id
        );
        match self.tokens.grant(&what, &key).await {
            Ok(TokenOutcome::Granted(_, _)) => Ok(()),
            Ok(TokenOutcome::Refused(why)) => Err(ProviderError::Rejected(why)),
            Err(e) => Err(e),
        }
    }

    async fn deactivate(&self, target: &Target, credential_id: &str) -> Result<(), ProviderError> {
        self.set_disabled(target, credential_id, true).await
    }

    async fn reactivate(&self, target: &Target, credential_id: &str) -> Result<(), ProviderError> {
        self.set_disabled(target, credential_id, false).await
    }

    async fn revoke(&self, target: &Target, credential_id: &str) -> Result<(), ProviderError> {
        let email = account_of(target)?;
        check_key_name(credential_id, email)?;
        let what = format!("keys.delete of {credential_id}");
        match self
            .call(
                &what,
                reqwest::Method::DELETE,
                &format!("{}/v1/{credential_id}", self.iam),
                None,
                false,
            )
            .await
        {
            // Already gone (a resumed run repeats the step): the goal is reached.
            Ok(_) | Err(ProviderError::NotFound(_)) => Ok(()),
            Err(e) => Err(e),
        }
    }
}

/// The service-account email of a gcp-sa-key target.
fn account_of(target: &Target) -> Result<&str, ProviderError> {
    if *target.provider != ProviderKind::GcpSaKey {
        return Err(ProviderError::Failed(format!(
            "target {} is {}, not gcp-sa-key",
            target.id.as_str(),
            target.provider.as_str()
        )));
    }
    let email = target
        .principal
        .service_account()
        .map(|v| v.as_str())
        .unwrap_or_default();
    if email.is_empty() || !email.contains('@') || !email.chars().all(safe_char) {
        return Err(ProviderError::Failed(format!(
            "target {}: gcp-sa-key needs principal.service_account (the service account's email)",
            target.id.as_str()
        )));
    }
    Ok(email)
}

fn safe_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '@' | '.' | '-' | '_')
}

/// A key name rekey may act on: `projects/P/serviceAccounts/EMAIL/keys/ID` of this target's
/// account, with nothing that could escape the path (a plan's `key_id` is user input).
fn check_key_name(name: &str, email: &str) -> Result<(), ProviderError> {
    let parts: Vec<&str> = name.split('/').collect();
    let ok = matches!(
        parts.as_slice(),
        ["projects", project, "serviceAccounts", account, "keys", id]
            if !project.is_empty()
                && account.eq_ignore_ascii_case(email)
                && !id.is_empty()
                && name.chars().all(|c| safe_char(c) || c == '/')
    );
    if ok {
        Ok(())
    } else {
        Err(ProviderError::Failed(format!(
            "gcp-sa-key: `{name}` is not a key name of {email} (projects/P/serviceAccounts/{email}/keys/ID)"
        )))
    }
}

#[derive(Deserialize)]
struct ErrorBody {
    error: ErrorDetail,
}

#[derive(Deserialize)]
struct ErrorDetail {
    #[serde(default)]
    message: String,
    #[serde(default)]
    status: String,
}

/// Google's error shape (`{"error": {"code", "message", "status"}}`) onto the provider's
/// kinds. keys.create answers FAILED_PRECONDITION when the account has its 10 user-managed keys.
fn map_error(what: &str, status: u16, body: &str, create: bool, secrets: &[&str]) -> ProviderError {
    let (code, message) = match serde_json::from_str::<ErrorBody>(body) {
        Ok(b) => (b.error.status, rest::redact(&b.error.message, secrets)),
        Err(_) => (String::new(), rest::quote(body, secrets)),
    };
    let text = format!("gcp-sa-key {what}: HTTP {status} {code}: {message}");
    match code.as_str() {
        "FAILED_PRECONDITION" | "RESOURCE_EXHAUSTED" if create && status != 429 => {
            ProviderError::Quota(format!(
                "{text} (GCP allows {MAX_KEYS} user-managed keys per service account)"
            ))
        }
        "NOT_FOUND" => ProviderError::NotFound(text),
        "UNAVAILABLE" | "INTERNAL" | "DEADLINE_EXCEEDED" => ProviderError::Transient(text),
        _ => rest::by_status(status, text),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_names_are_checked() {
        let e = "ci@acme.iam.gserviceaccount.com";
        assert!(
            check_key_name(&format!("projects/acme/serviceAccounts/{e}/keys/abc123"), e).is_ok()
        );
        assert!(check_key_name(&format!("projects/-/serviceAccounts/{e}/keys/abc"), e).is_ok());
        assert!(check_key_name("projects/acme/serviceAccounts/other@x/keys/abc", e).is_err());
        assert!(
            check_key_name(
                &format!("projects/acme/serviceAccounts/{e}/keys/../../x"),
                e
            )
            .is_err()
        );
        assert!(check_key_name(&format!("projects/acme/serviceAccounts/{e}/keys/a?b"), e).is_err());
        assert!(check_key_name("abc", e).is_err());
    }

    #[test]
    fn errors_map() {
        let quota = r#"{"error":{"code":400,"message":"Precondition check failed.","status":"FAILED_PRECONDITION"}}"#;
        assert!(matches!(
            map_error("x", 400, quota, true, &[]),
            ProviderError::Quota(_)
        ));
        assert!(matches!(
            map_error("x", 400, quota, false, &[]),
            ProviderError::Failed(_)
        ));
        let nf = r#"{"error":{"code":404,"message":"gone","status":"NOT_FOUND"}}"#;
        assert!(matches!(
            map_error("x", 404, nf, false, &[]),
            ProviderError::NotFound(_)
        ));
        assert!(map_error("x", 502, "<html>bad gateway</html>", false, &[]).is_transient());
        let leaky = r#"{"error":{"code":400,"message":"bad tok3n","status":"INVALID_ARGUMENT"}}"#;
        assert!(
            !map_error("x", 400, leaky, false, &["tok3n"])
                .to_string()
                .contains("tok3n")
        );
    }

    #[test]
    fn key_file_debug_hides_the_key() {
        let k = ServiceAccountKey::parse(
            r#"{"client_email":"a@b","private_key_id":"k1","private_key":"-----BEGIN PRIVATE KEY-----\nSECRETBYTES\n-----END PRIVATE KEY-----\n"}"#,
        )
        .unwrap_or_else(|e| panic!("{e}"));
        assert!(!format!("{k:?}").contains("SECRETBYTES"));
        let err = ServiceAccountKey::parse(r#"{"private_key": "SECRETBYTES""#)
            .err()
            .unwrap_or_default();
        assert!(!err.contains("SECRETBYTES"), "{err}");
    }
}
