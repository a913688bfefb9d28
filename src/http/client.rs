//! How every reqwest client of rekey is built ([`builder`]), and how every answer's body is
//! read ([`read_body`]).
//!
//! One builder, so no client can forget a rule: rustls, timeouts, rekey's user agent, and
//! the redirect policy. A redirect is followed only to the same origin (scheme, host and
//! port) as the request, and never with a 307 or 308: those replay the method and the body,
//! and a request body may hold a secret being written. Headers such as `Circle-Token` are not
//! among those reqwest strips on a cross-host redirect, so a same-origin rule is the only
//! thing that keeps rekey's own token from following a redirect elsewhere.
//!
//! Bodies are streamed into memory up to a bound ([`MAX_BODY`] unless the caller says
//! otherwise): a hostile or broken server cannot make rekey allocate without limit, and a
//! declared `Content-Length` beyond the bound is refused before a byte is read.

use std::time::Duration;

/// The bound of one answer's body by default: far beyond any API page rekey reads.
pub const MAX_BODY: usize = 64 << 20;

/// Redirects followed in a row at most (same origin only).
const MAX_REDIRECTS: usize = 5;

/// A client builder with rekey's rules: rustls, a connect timeout of 10 s, a request timeout
/// of 60 s, rekey's user agent and the same-origin redirect policy. Callers may tighten it.
pub fn builder() -> reqwest::ClientBuilder {
    reqwest::Client::builder()
        .user_agent(concat!("rekey/", env!("CARGO_PKG_VERSION")))
        .connect_timeout(Duration::from_secs(10))
        .timeout(Duration::from_secs(60))
        .redirect(redirect_policy())
}

/// Follows a redirect only to the origin of the first request, never a 307/308, at most
/// [`MAX_REDIRECTS`] in a row.
pub fn redirect_policy() -> reqwest::redirect::Policy {
    reqwest::redirect::Policy::custom(|attempt| {
        let status = attempt.status().as_u16();
        let first = attempt.previous().first().map(url::Url::origin);
        let same_origin = first.as_ref() == Some(&attempt.url().origin());
        if status == 307 || status == 308 {
            attempt.error(RedirectRefused::Replay(status))
        } else if !same_origin {
            attempt.error(RedirectRefused::CrossOrigin(status))
        } else if attempt.previous().len() > MAX_REDIRECTS {
            attempt.error(RedirectRefused::TooMany)
        } else {
            attempt.follow()
        }
    })
}

/// Why a redirect was not followed (the target address is not named: it is the server's).
#[derive(Debug, thiserror::Error)]
pub enum RedirectRefused {
    #[error(
        "refused a {0} redirect to another origin (rekey's credentials stay where they were sent)"
    )]
    CrossOrigin(u16),
    #[error("refused a {0} redirect (it would replay the request body)")]
    Replay(u16),
    #[error("refused more than {MAX_REDIRECTS} redirects in a row")]
    TooMany,
}

/// Why a body could not be read.
#[derive(Debug, thiserror::Error)]
pub enum BodyError {
    #[error("the answer is larger than {limit} bytes; rekey stopped reading it")]
    TooLarge { limit: usize },
    #[error("{}", super::error_kind(.0))]
    Transport(#[source] reqwest::Error),
}

/// The whole body of `response`, at most `limit` bytes (streamed: memory never exceeds the
/// bound plus one chunk).
pub async fn read_body(
    mut response: reqwest::Response,
    limit: usize,
) -> Result<Vec<u8>, BodyError> {
    if response.content_length().is_some_and(|n| n > limit as u64) {
        return Err(BodyError::TooLarge { limit });
    }
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await.map_err(BodyError::Transport)? {
        if body.len() + chunk.len() > limit {
            return Err(BodyError::TooLarge { limit });
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

/// A request body that is wiped when the last copy of it is dropped: the JSON of a variable
/// being written, a token being revoked, a form with a client secret. Cloning shares the bytes
/// (a retry sends the same buffer again) instead of copying them.
pub fn secret_body(bytes: Vec<u8>) -> reqwest::Body {
    reqwest::Body::from(secret_bytes(bytes))
}

/// [`secret_body`] as shareable bytes, for a body sent again on a retry: each clone is the
/// same buffer, wiped when the last one drops. (hyper may still copy a small body into its
/// write buffer: that copy is not rekey's to wipe.)
pub fn secret_bytes(bytes: Vec<u8>) -> bytes::Bytes {
    bytes::Bytes::from_owner(Wiped(bytes))
}

/// Bytes zeroized on drop, for [`bytes::Bytes::from_owner`].
struct Wiped(Vec<u8>);

impl AsRef<[u8]> for Wiped {
    fn as_ref(&self) -> &[u8] {
        &self.0
    }
}

impl Drop for Wiped {
    fn drop(&mut self) {
        zeroize::Zeroize::zeroize(&mut self.0);
    }
}
