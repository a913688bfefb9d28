//! What the REST providers (`gcp-sa-key`, `azure-app-secret`) share: the HTTP client, reading
//! an answer's body within a bound, mapping a status onto [`ProviderError`], redaction of
//! secret values from any text that may end up in an error, and OAuth 2.0 token answers.
//!
//! The providers make one attempt per call (the [`super::Provider`] contract: the engine owns
//! retries), so nothing here retries.

use super::ProviderError;
use crate::secret::Secret;
use std::time::Duration;

/// Upper bound of one request: a hung connection must end as a `Transient` error the engine can
/// retry, not stall a rotation.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);

/// Error bodies are quoted in errors; a misbehaving endpoint must not fill a report.
const MAX_QUOTED_BODY: usize = 4096;

/// The client every REST provider uses: rekey's one builder ([`crate::http::client`]: rustls,
/// same-origin redirects only, never a 307/308) with this module's timeout.
pub fn client() -> Result<reqwest::Client, ProviderError> {
    crate::http::client::builder()
        .timeout(REQUEST_TIMEOUT)
        .build()
        .map_err(|e| ProviderError::Failed(format!("cannot build the HTTP client: {e}")))
}

/// Replaces every spelling of each non-empty secret in `text` with `[redacted]`
/// ([`crate::redact::redact`]).
pub fn redact(text: &str, secrets: &[&str]) -> String {
    crate::redact::redact(text, secrets)
}

/// A body quoted in an error: redacted, and cut (on a character boundary) when long.
pub fn quote(body: &str, secrets: &[&str]) -> String {
    let clean = redact(body.trim(), secrets);
    if clean.len() <= MAX_QUOTED_BODY {
        return clean;
    }
    let mut end = MAX_QUOTED_BODY;
    while !clean.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}… ({} bytes in all)", &clean[..end], clean.len())
}

/// A transport failure (no answer, or one that could not be read): worth retrying. reqwest's
/// message names the URL, which holds no secret in these providers (secrets travel in bodies
/// and headers only).
pub fn transport(what: &str, e: &reqwest::Error) -> ProviderError {
    let kind = crate::http::error_kind(e);
    ProviderError::Transient(format!("{what}: {kind}: {e}"))
}

/// An answer: status and body text (lossy UTF-8).
pub struct Answer {
    pub status: u16,
    pub body: String,
}

/// Sends, and reads the whole answer (within [`crate::http::MAX_BODY`]).
pub async fn send(what: &str, request: reqwest::RequestBuilder) -> Result<Answer, ProviderError> {
    let response = request.send().await.map_err(|e| transport(what, &e))?;
    let status = response.status().as_u16();
    let bytes = crate::http::read_body(response, crate::http::MAX_BODY)
        .await
        .map_err(|e| match e {
            crate::http::BodyError::Transport(e) => transport(what, &e),
            too_large => ProviderError::Failed(format!("{what}: HTTP {status}: {too_large}")),
        })?;
    Ok(Answer {
        status,
        body: String::from_utf8_lossy(&bytes).into_owned(),
    })
}

/// The default mapping of a failed status: 404 → NotFound, 408/429/5xx → Transient, else
/// Failed. `text` is the full message (already redacted).
pub fn by_status(status: u16, text: String) -> ProviderError {
    match status {
        404 => ProviderError::NotFound(text),
        408 | 429 | 500..=599 => ProviderError::Transient(text),
        _ => ProviderError::Failed(text),
    }
}

/// A successful OAuth 2.0 token answer (RFC 6749 §5.1), the token held as a [`Secret`].
#[derive(serde::Deserialize)]
struct TokenAnswer {
    access_token: String,
    #[serde(default)]
    expires_in: Option<u64>,
}

/// An OAuth 2.0 error answer (RFC 6749 §5.2).
#[derive(serde::Deserialize)]
struct TokenError {
    error: String,
    #[serde(default)]
    error_description: Option<String>,
}

/// How a token request ended.
pub enum TokenOutcome {
    /// A token, and how long it lives (default one hour when the answer does not say).
    Granted(Secret, Duration),
    /// The authorization server refused the credential (`invalid_grant`, `invalid_client`,
    /// `unauthorized_client`): the text says why, redacted.
    Refused(String),
}

/// POSTs a token request form to `url` and reads the answer. Transport failures and 429/5xx
/// are `Transient`; other unreadable answers are `Failed`.
pub async fn token_request(
    http: &reqwest::Client,
    what: &str,
    url: &str,
    form: &[(&str, &str)],
    secrets: &[&str],
) -> Result<TokenOutcome, ProviderError> {
    // Encoded here rather than with reqwest's `form` feature: one function, no new feature.
    // The form holds a client secret or a signed assertion: wiped once sent.
    let body = url::form_urlencoded::Serializer::new(String::new())
        .extend_pairs(form)
        .finish();
    let request = http
        .post(url)
        .header(
            reqwest::header::CONTENT_TYPE,
            "application/x-www-form-urlencoded",
        )
        .body(crate::http::secret_body(body.into_bytes()));
    let answer = send(what, request).await?;
    if (200..300).contains(&answer.status) {
        let parsed: TokenAnswer = serde_json::from_str(&answer.body).map_err(|e| {
            // serde's message may quote the body, which holds the token: position only.
            ProviderError::Failed(format!(
                "{what}: HTTP {} but the answer is not a token (JSON error at line {}, column {})",
                answer.status,
                e.line(),
                e.column()
            ))
        })?;
        let lifetime = Duration::from_secs(parsed.expires_in.unwrap_or(3600));
        return Ok(TokenOutcome::Granted(
            Secret::new(parsed.access_token),
            lifetime,
        ));
    }
    let quoted = quote(&answer.body, secrets);
    let text = format!("{what}: HTTP {}: {quoted}", answer.status);
    if matches!(answer.status, 408 | 429 | 500..=599) {
        return Err(ProviderError::Transient(text));
    }
    match serde_json::from_str::<TokenError>(&answer.body) {
        Ok(err)
            if matches!(
                err.error.as_str(),
                "invalid_grant" | "invalid_client" | "unauthorized_client"
            ) =>
        {
            let description = err.error_description.unwrap_or_default();
            Ok(TokenOutcome::Refused(redact(
                &format!(
                    "{what}: {} (HTTP {}): {description}",
                    err.error, answer.status
                ),
                secrets,
            )))
        }
        _ => Err(ProviderError::Failed(text)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redact_and_quote() {
        assert_eq!(
            redact("a s3cr3t b s3cr3t", &["s3cr3t", ""]),
            "a [redacted] b [redacted]"
        );
        let long = "é".repeat(5000);
        let q = quote(&long, &[]);
        assert!(
            q.len() < 4200 && q.ends_with("bytes in all)"),
            "{}",
            q.len()
        );
    }

    #[test]
    fn statuses() {
        assert!(matches!(
            by_status(404, "x".into()),
            ProviderError::NotFound(_)
        ));
        assert!(by_status(503, "x".into()).is_transient());
        assert!(by_status(429, "x".into()).is_transient());
        assert!(matches!(
            by_status(403, "x".into()),
            ProviderError::Failed(_)
        ));
    }
}
