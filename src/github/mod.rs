//! The GitHub REST client of rekey: one request helper ([`GithubClient::call`]) over reqwest,
//! the base URL from `GITHUB_API_URL` (default `https://api.github.com`, GitHub Enterprise
//! Server's `https://HOST/api/v3`, or a sandbox), and GitHub's error body decoded into
//! [`ApiError`].
//!
//! Why not octocrab: the providers need raw status, headers (`X-OAuth-Scopes`, rate-limit
//! headers) and GitHub's `errors[]` for their error mapping, the credential-revocation endpoint
//! is not in octocrab's typed API, a token being verified must be sent instead of rekey's own,
//! and the `Provider` contract is one attempt per call (the engine owns retries). A thin client
//! on the reqwest stack rekey already uses does all of that without a second HTTP stack.
//!
//! Tokens are [`Secret`]s: they go only into the `Authorization` header (marked sensitive),
//! never into a URL, a log line or an error. Request bodies that may hold a secret (a token
//! sent for revocation) are wiped after use.

use reqwest::header::{ACCEPT, AUTHORIZATION, HeaderMap, HeaderValue};
use reqwest::{Method, StatusCode};
use url::Url;

use crate::http::error_kind;
use crate::secret::Secret;

/// Where GitHub's API lives unless `GITHUB_API_URL` says otherwise.
pub const DEFAULT_API_URL: &str = "https://api.github.com";

/// The REST API version rekey is written against (GitHub's `X-GitHub-Api-Version`).
pub const API_VERSION: &str = "2022-11-28";

#[derive(Debug, thiserror::Error)]
pub enum GithubError {
    /// No answer: connection refused, timeout, connection cut.
    #[error("could not reach GitHub for {method} {path}: {kind}")]
    Transport {
        method: Method,
        path: String,
        kind: &'static str,
        #[source]
        source: reqwest::Error,
    },
    /// An answer rekey will not read (larger than its bound).
    #[error("unreadable answer from GitHub to {method} {path}: {detail}")]
    Answer {
        method: Method,
        path: String,
        detail: String,
    },
    #[error("invalid GitHub API address {url:?}: {reason}")]
    InvalidBaseUrl { url: String, reason: String },
    #[error("a GitHub token contains characters that cannot be sent in a header")]
    InvalidToken,
    #[error("no GitHub token: set GITHUB_TOKEN (or use `rekey auth set github`)")]
    MissingToken,
    #[error("could not set up the HTTP client: {0}")]
    Client(#[source] reqwest::Error),
}

impl GithubError {
    /// Worth retrying: the request may simply not have arrived.
    pub fn is_transient(&self) -> bool {
        matches!(self, GithubError::Transport { .. })
    }
}

/// Which token a request carries.
#[derive(Clone, Copy)]
pub enum Auth<'a> {
    /// rekey's own (`GITHUB_TOKEN`); an error if the client has none.
    Own,
    /// This token (a new personal access token being verified).
    Token(&'a Secret),
    /// None (the credential-revocation endpoint needs no authentication).
    Anonymous,
}

/// An answer of any status, for the caller to map.
#[derive(Debug)]
pub struct Answer {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Vec<u8>,
    pub method: Method,
    pub path: String,
}

impl Answer {
    pub fn is_success(&self) -> bool {
        self.status.is_success()
    }

    /// The body as `T`; `Err` names the category and position only, never the content.
    pub fn json<T: serde::de::DeserializeOwned>(&self) -> Result<T, String> {
        serde_json::from_slice(&self.body).map_err(|e| {
            format!(
                "unexpected answer from GitHub to {} {}: {:?} error at line {} column {}",
                self.method,
                self.path,
                e.classify(),
                e.line(),
                e.column()
            )
        })
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// GitHub's error body, decoded (or a description of what came instead).
    pub fn error(&self) -> ApiError {
        ApiError::from_body(self.status, &self.body)
    }

    /// Primary (remaining 0) or secondary ("secondary rate limit") rate limiting: GitHub
    /// answers both with 403 or 429, and both pass with time.
    pub fn is_rate_limited(&self) -> bool {
        if self.status == StatusCode::TOO_MANY_REQUESTS {
            return true;
        }
        self.status == StatusCode::FORBIDDEN
            && (self.header("x-ratelimit-remaining") == Some("0")
                || self.error().message.to_lowercase().contains("rate limit"))
    }
}

/// GitHub's error shape: `{"message", "errors": [{"resource","field","code","message"}],
/// "documentation_url"}`. Messages are bounded and single-line: they end up in tables.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ApiError {
    pub status: u16,
    pub message: String,
    /// Each `errors[]` entry's `message`, or `code` (and `field`) when it has none.
    pub errors: Vec<String>,
    pub documentation_url: Option<String>,
}

impl ApiError {
    pub fn from_body(status: StatusCode, body: &[u8]) -> ApiError {
        #[derive(serde::Deserialize)]
        struct Item {
            #[serde(default)]
            message: Option<String>,
            #[serde(default)]
            code: Option<String>,
            #[serde(default)]
            field: Option<String>,
        }
        #[derive(serde::Deserialize)]
        struct Body {
            #[serde(default)]
            message: Option<String>,
            #[serde(default)]
            errors: Vec<serde_json::Value>,
            #[serde(default)]
            documentation_url: Option<String>,
        }
        let one_line = |s: &str| -> String {
            s.chars()
                .map(|c| if c.is_control() { ' ' } else { c })
                .take(300)
                .collect()
        };
        let reason = status.canonical_reason().unwrap_or("error").to_owned();
        match serde_json::from_slice::<Body>(body) {
            Ok(b) => ApiError {
                status: status.as_u16(),
                message: b.message.as_deref().map(one_line).unwrap_or(reason),
                errors: b
                    .errors
                    .into_iter()
                    .filter_map(|v| match v {
                        // Some endpoints list plain strings.
                        serde_json::Value::String(s) => Some(one_line(&s)),
                        other => {
                            let item: Item = serde_json::from_value(other).ok()?;
                            item.message.as_deref().map(one_line).or_else(|| {
                                let code = item.code.unwrap_or_else(|| "invalid".into());
                                Some(match item.field {
                                    Some(f) => one_line(&format!("{f}: {code}")),
                                    None => one_line(&code),
                                })
                            })
                        }
                    })
                    .collect(),
                documentation_url: b.documentation_url.map(|u| one_line(&u)),
            },
            // A proxy's HTML page, say: not echoed, since nobody knows what it holds.
            Err(_) if body.is_empty() => ApiError {
                status: status.as_u16(),
                message: reason,
                ..Default::default()
            },
            Err(_) => ApiError {
                status: status.as_u16(),
                message: format!("{reason} (a non-JSON answer of {} bytes)", body.len()),
                ..Default::default()
            },
        }
    }

    /// Any message (top level or in `errors[]`) containing `needle`, case-insensitively.
    pub fn mentions(&self, needle: &str) -> bool {
        let needle = needle.to_lowercase();
        std::iter::once(&self.message)
            .chain(&self.errors)
            .any(|m| m.to_lowercase().contains(&needle))
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "HTTP {}: {}", self.status, self.message)?;
        if !self.errors.is_empty() {
            write!(f, " ({})", self.errors.join("; "))?;
        }
        Ok(())
    }
}

/// A GitHub API client. Cheap to clone (the connection pool is shared).
#[derive(Clone)]
pub struct GithubClient {
    http: reqwest::Client,
    base: Url,
    token: Option<Secret>,
}

impl std::fmt::Debug for GithubClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GithubClient")
            .field("base", &self.base.as_str())
            .field("token", &self.token.as_ref().map(|_| "[redacted]"))
            .finish()
    }
}

impl GithubClient {
    /// A client for the API at `base_url` with rekey's own token, if any (a client that only
    /// verifies and revokes personal access tokens needs none).
    pub fn new(base_url: &str, token: Option<Secret>) -> Result<Self, GithubError> {
        if let Some(t) = &token
            && HeaderValue::from_str(t.expose()).is_err()
        {
            return Err(GithubError::InvalidToken);
        }
        let mut base = Url::parse(base_url.trim()).map_err(|e| GithubError::InvalidBaseUrl {
            url: base_url.to_owned(),
            reason: e.to_string(),
        })?;
        if !matches!(base.scheme(), "http" | "https") || base.cannot_be_a_base() {
            return Err(GithubError::InvalidBaseUrl {
                url: base_url.to_owned(),
                reason: "expected an http(s) address".to_owned(),
            });
        }
        base.set_query(None);
        let http = crate::http::client::builder()
            .build()
            .map_err(GithubError::Client)?;
        Ok(GithubClient {
            http,
            base,
            token: token.filter(|t| !t.is_empty()),
        })
    }

    /// A client for `GITHUB_API_URL` (default [`DEFAULT_API_URL`]).
    pub fn from_env(token: Option<Secret>) -> Result<Self, GithubError> {
        let base = std::env::var("GITHUB_API_URL")
            .ok()
            .filter(|u| !u.trim().is_empty())
            .unwrap_or_else(|| DEFAULT_API_URL.to_owned());
        GithubClient::new(&base, token)
    }

    pub fn base_url(&self) -> &Url {
        &self.base
    }

    /// The URL of `segments` under the base, each segment percent-encoded on its own.
    pub fn url(&self, segments: &[&str], query: &[(&str, &str)]) -> Url {
        let mut url = self.base.clone();
        if let Ok(mut path) = url.path_segments_mut() {
            path.pop_if_empty().extend(segments);
        }
        if !query.is_empty() {
            url.query_pairs_mut().extend_pairs(query);
        }
        url
    }

    /// One request, one attempt: the answer whatever its status, or a transport error.
    pub async fn call(
        &self,
        method: Method,
        segments: &[&str],
        query: &[(&str, &str)],
        body: Option<&serde_json::Value>,
        auth: Auth<'_>,
    ) -> Result<Answer, GithubError> {
        let url = self.url(segments, query);
        let path = url.path().to_owned();
        let mut request = self
            .http
            .request(method.clone(), url)
            .header(ACCEPT, "application/vnd.github+json")
            .header("X-GitHub-Api-Version", API_VERSION);
        let token = match auth {
            Auth::Own => Some(self.token.as_ref().ok_or(GithubError::MissingToken)?),
            Auth::Token(t) => Some(t),
            Auth::Anonymous => None,
        };
        if let Some(token) = token {
            let mut value = HeaderValue::from_str(&format!("Bearer {}", token.expose()))
                .map_err(|_| GithubError::InvalidToken)?;
            value.set_sensitive(true);
            request = request.header(AUTHORIZATION, value);
        }
        // May carry a secret (a token sent for revocation): wiped once sent.
        if let Some(body) = body {
            request = request
                .header(reqwest::header::CONTENT_TYPE, "application/json")
                .body(crate::http::secret_body(body.to_string().into_bytes()));
        }
        tracing::debug!(%method, path, "GitHub request");
        let transport = |source: reqwest::Error| GithubError::Transport {
            method: method.clone(),
            path: path.clone(),
            kind: error_kind(&source),
            source: source.without_url(),
        };
        let response = request.send().await.map_err(transport)?;
        let status = response.status();
        let headers = response.headers().clone();
        let body = crate::http::read_body(response, crate::http::MAX_BODY)
            .await
            .map_err(|e| match e {
                crate::http::BodyError::Transport(source) => transport(source),
                too_large => GithubError::Answer {
                    method: method.clone(),
                    path: path.clone(),
                    detail: too_large.to_string(),
                },
            })?;
        tracing::debug!(%method, path, status = status.as_u16(), "GitHub answer");
        Ok(Answer {
            status,
            headers,
            body,
            method,
            path,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_bodies_decode() {
        let e = ApiError::from_body(
            StatusCode::UNPROCESSABLE_ENTITY,
            br#"{"message":"Validation Failed","errors":[{"resource":"PublicKey","code":"custom","field":"key","message":"key is already in use"}],"documentation_url":"https://docs.github.com/rest"}"#,
        );
        assert_eq!(e.message, "Validation Failed");
        assert!(e.mentions("already in use"));
        assert_eq!(
            e.to_string(),
            "HTTP 422: Validation Failed (key is already in use)"
        );
        let e = ApiError::from_body(
            StatusCode::UNPROCESSABLE_ENTITY,
            br#"{"message":"Validation Failed","errors":[{"resource":"PublicKey","code":"missing_field","field":"key"}]}"#,
        );
        assert_eq!(e.errors, vec!["key: missing_field".to_string()]);
        let e = ApiError::from_body(StatusCode::BAD_GATEWAY, b"<html>x</html>");
        assert_eq!(e.message, "Bad Gateway (a non-JSON answer of 14 bytes)");
    }

    #[test]
    fn urls_encode_segments_and_keep_a_prefix() {
        let c = GithubClient::new("https://ghe.example.com/api/v3/", None).unwrap();
        assert_eq!(
            c.url(&["repos", "acme", "a/b", "keys"], &[("per_page", "100")])
                .as_str(),
            "https://ghe.example.com/api/v3/repos/acme/a%2Fb/keys?per_page=100"
        );
        assert!(GithubClient::new("ftp://x", None).is_err());
        let c = GithubClient::new(DEFAULT_API_URL, Some(Secret::new("ghp_sekrit"))).unwrap();
        assert!(!format!("{c:?}").contains("sekrit"));
    }
}
