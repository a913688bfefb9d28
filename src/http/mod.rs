//! The one HTTP retry policy of rekey: every client (CircleCI today, GitHub and Graph later)
//! sends its requests through [`RetryPolicy::send`].
//!
//! A request is built by a closure, so that it can be rebuilt for every attempt (a reqwest
//! request with a body cannot be replayed). The policy retries on 429 (waiting what
//! `Retry-After` asks, capped), on 5xx and on connection errors, with exponential backoff and
//! jitter, and hands back the final response, whatever its status, or the final error.
//!
//! [`client`] builds every reqwest client (the same-origin redirect policy, timeouts) and
//! reads every answer's body within a bound.

pub mod client;

pub use client::{BodyError, MAX_BODY, read_body, secret_body, secret_bytes};

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use chrono::{DateTime, Utc};
use reqwest::{Method, RequestBuilder, Response, StatusCode};

/// How often and how patiently a request is retried.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Attempts in total, the first one included; `1` disables retries.
    pub max_attempts: u32,
    /// Backoff before the first retry; it doubles for every further retry.
    pub base_delay: Duration,
    /// Upper bound of any single wait, a server's `Retry-After` included, so that a
    /// misbehaving server cannot park a run for hours.
    pub max_delay: Duration,
}

impl Default for RetryPolicy {
    /// Five attempts, 250 ms doubling up to 30 s: rides out CircleCI's short rate-limit windows
    /// and a deploy-time 502 without making a dead endpoint take minutes to report.
    fn default() -> Self {
        RetryPolicy {
            max_attempts: 5,
            base_delay: Duration::from_millis(250),
            max_delay: Duration::from_secs(30),
        }
    }
}

/// What to do after one attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Next {
    /// Hand this outcome to the caller.
    Done,
    /// Retry after the exponential backoff.
    Backoff,
    /// Retry after the delay the server asked for.
    After(Duration),
}

impl RetryPolicy {
    /// A policy that sends once and never retries.
    pub fn no_retry() -> Self {
        RetryPolicy {
            max_attempts: 1,
            ..RetryPolicy::default()
        }
    }

    /// The backoff ceiling before retry number `retry` (1 = the retry after the first attempt):
    /// `base_delay * 2^(retry-1)`, never more than `max_delay`.
    pub fn backoff(&self, retry: u32) -> Duration {
        let exponent = retry.saturating_sub(1).min(31);
        let factor = 1u32 << exponent;
        self.base_delay
            .checked_mul(factor)
            .unwrap_or(self.max_delay)
            .min(self.max_delay)
    }

    /// The backoff with "equal jitter": uniformly between half the ceiling and the ceiling.
    /// Half is kept fixed so that many clients retrying together still spread out but none
    /// comes back immediately; `unit` is a random number in `[0, 1)`.
    pub fn jittered(&self, retry: u32, unit: f64) -> Duration {
        let ceiling = self.backoff(retry);
        let half = ceiling / 2;
        let unit = if unit.is_finite() {
            unit.clamp(0.0, 1.0)
        } else {
            0.0
        };
        half + (ceiling - half).mul_f64(unit)
    }

    /// The wait a `Retry-After` header value asks for (delta-seconds or an HTTP-date, RFC 9110
    /// §10.2.3), capped at `max_delay`; `None` when the value is neither.
    pub fn retry_after(&self, value: &str, now: DateTime<Utc>) -> Option<Duration> {
        let value = value.trim();
        let wanted = if let Ok(seconds) = value.parse::<u64>() {
            Duration::from_secs(seconds)
        } else {
            let at = DateTime::parse_from_rfc2822(value).ok()?;
            (at.with_timezone(&Utc) - now)
                .to_std()
                .unwrap_or(Duration::ZERO)
        };
        Some(wanted.min(self.max_delay))
    }

    /// Sends the request that `build` makes, retrying as the policy says, and returns the
    /// final response (any status: the caller maps it to its own typed error) or the final
    /// transport error.
    ///
    /// Whether a failure is retried depends on the method: GET, HEAD, PUT, DELETE and OPTIONS
    /// are idempotent and retried on 429, 5xx, timeouts and connection errors. POST and PATCH
    /// are retried only where the server certainly did not act: a 429, a 503, or a connection
    /// that was never established. Use [`RetryPolicy::send_idempotent`] for a POST that the
    /// API defines as create-or-replace.
    pub async fn send<F>(&self, build: F) -> Result<Response, reqwest::Error>
    where
        F: FnMut() -> RequestBuilder,
    {
        self.send_inner(build, None).await
    }

    /// Like [`RetryPolicy::send`], but treats the request as idempotent whatever its method.
    pub async fn send_idempotent<F>(&self, build: F) -> Result<Response, reqwest::Error>
    where
        F: FnMut() -> RequestBuilder,
    {
        self.send_inner(build, Some(true)).await
    }

    async fn send_inner<F>(
        &self,
        mut build: F,
        idempotent: Option<bool>,
    ) -> Result<Response, reqwest::Error>
    where
        F: FnMut() -> RequestBuilder,
    {
        let max_attempts = self.max_attempts.max(1);
        let mut attempt = 1u32;
        loop {
            let (client, request) = build().build_split();
            // A request that cannot even be built will not build better next time.
            let request = request?;
            let method = request.method().clone();
            // The path only: a query or the host adds nothing to a debug line.
            let path = request.url().path().to_owned();
            let idempotent = idempotent.unwrap_or_else(|| is_idempotent(&method));
            let outcome = client.execute(request).await;
            let next = match &outcome {
                Ok(response) => self.after_response(response, idempotent),
                Err(error) => after_error(error, idempotent),
            };
            if next == Next::Done || attempt >= max_attempts {
                return outcome;
            }
            let delay = match next {
                Next::After(delay) => delay,
                _ => self.jittered(attempt, unit_random()),
            };
            match &outcome {
                Ok(response) => tracing::debug!(
                    %method, path, status = response.status().as_u16(), attempt,
                    delay_ms = delay.as_millis() as u64, "retrying"
                ),
                Err(error) => tracing::debug!(
                    %method, path, error = error_kind(error), attempt,
                    delay_ms = delay.as_millis() as u64, "retrying after a transport error"
                ),
            }
            // Drop the response before sleeping so that its connection returns to the pool.
            drop(outcome);
            tokio::time::sleep(delay).await;
            attempt += 1;
        }
    }

    fn after_response(&self, response: &Response, idempotent: bool) -> Next {
        let status = response.status();
        let retryable = status == StatusCode::TOO_MANY_REQUESTS
            || status == StatusCode::SERVICE_UNAVAILABLE
            || (idempotent && status.is_server_error());
        if !retryable {
            return Next::Done;
        }
        // 429 and 503 may say how long to wait (RFC 9110 §10.2.3); honour it.
        if status == StatusCode::TOO_MANY_REQUESTS || status == StatusCode::SERVICE_UNAVAILABLE {
            let asked = response
                .headers()
                .get(reqwest::header::RETRY_AFTER)
                .and_then(|value| value.to_str().ok())
                .and_then(|value| self.retry_after(value, Utc::now()));
            if let Some(delay) = asked {
                return Next::After(delay);
            }
        }
        Next::Backoff
    }
}

fn after_error(error: &reqwest::Error, idempotent: bool) -> Next {
    if error.is_builder() || error.is_redirect() || error.is_decode() {
        return Next::Done;
    }
    // A refused connection means the server never saw the request: safe for any method.
    if error.is_connect() {
        return Next::Backoff;
    }
    // A timeout or a connection cut mid-answer may have been acted on.
    if idempotent && (error.is_timeout() || error.is_request() || error.is_body()) {
        return Next::Backoff;
    }
    Next::Done
}

fn is_idempotent(method: &Method) -> bool {
    matches!(
        *method,
        Method::GET | Method::HEAD | Method::PUT | Method::DELETE | Method::OPTIONS | Method::TRACE
    )
}

/// A random number in `[0, 1)` for jitter. Jitter only has to decorrelate clients, so the
/// standard library's randomly keyed hasher is enough and spares a dependency.
fn unit_random() -> f64 {
    use std::hash::BuildHasher;
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let bits = std::collections::hash_map::RandomState::new().hash_one(n);
    (bits >> 11) as f64 / (1u64 << 53) as f64
}

/// A short, URL-free description of a transport error for logs.
pub fn error_kind(error: &reqwest::Error) -> &'static str {
    if error.is_connect() {
        "connection failed"
    } else if error.is_timeout() {
        "timed out"
    } else if error.is_body() {
        "connection cut while reading the answer"
    } else if error.is_decode() {
        "undecodable answer"
    } else if error.is_redirect() {
        "redirect refused (rekey follows redirects only to the same origin, and never a 307/308)"
    } else {
        "request failed"
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::AtomicU32;

    fn policy() -> RetryPolicy {
        RetryPolicy {
            max_attempts: 5,
            base_delay: Duration::from_millis(100),
            max_delay: Duration::from_secs(2),
        }
    }

    #[test]
    fn backoff_doubles_and_is_capped() {
        let p = policy();
        assert_eq!(p.backoff(1), Duration::from_millis(100));
        assert_eq!(p.backoff(2), Duration::from_millis(200));
        assert_eq!(p.backoff(3), Duration::from_millis(400));
        assert_eq!(p.backoff(5), Duration::from_millis(1600));
        assert_eq!(p.backoff(6), Duration::from_secs(2));
        // No overflow however far the retries go.
        assert_eq!(p.backoff(u32::MAX), Duration::from_secs(2));
        assert_eq!(p.backoff(0), Duration::from_millis(100));
    }

    #[test]
    fn jitter_stays_between_half_and_full_backoff() {
        let p = policy();
        assert_eq!(p.jittered(3, 0.0), Duration::from_millis(200));
        assert_eq!(p.jittered(3, 1.0), Duration::from_millis(400));
        assert_eq!(p.jittered(3, 0.5), Duration::from_millis(300));
        assert_eq!(p.jittered(3, f64::NAN), Duration::from_millis(200));
        for _ in 0..1000 {
            let d = p.jittered(4, unit_random());
            assert!(d >= Duration::from_millis(400) && d <= Duration::from_millis(800));
        }
    }

    #[test]
    fn unit_random_is_in_range_and_varies() {
        let draws: Vec<f64> = (0..100).map(|_| unit_random()).collect();
        assert!(draws.iter().all(|u| (0.0..1.0).contains(u)));
        assert!(draws.windows(2).any(|w| w[0] != w[1]));
    }

    #[test]
    fn retry_after_seconds_and_dates_are_capped() {
        let p = policy();
        let now = DateTime::parse_from_rfc3339("2023-01-04T12:00:00Z")
            .unwrap()
            .with_timezone(&Utc);
        assert_eq!(p.retry_after("1", now), Some(Duration::from_secs(1)));
        assert_eq!(p.retry_after(" 0 ", now), Some(Duration::ZERO));
        assert_eq!(p.retry_after("3600", now), Some(Duration::from_secs(2)));
        assert_eq!(
            p.retry_after("Wed, 04 Jan 2023 12:00:01 GMT", now),
            Some(Duration::from_secs(1))
        );
        // A date in the past means "now".
        assert_eq!(
            p.retry_after("Wed, 04 Jan 2023 11:00:00 GMT", now),
            Some(Duration::ZERO)
        );
        assert_eq!(p.retry_after("soon", now), None);
        assert_eq!(p.retry_after("-5", now), None);
    }

    /// A tiny server answering from a script of statuses, then 200.
    async fn scripted(statuses: Vec<(u16, Option<&'static str>)>) -> (String, Arc<AtomicU32>) {
        use axum::http::{HeaderValue, StatusCode as S};
        use axum::response::IntoResponse;
        let hits = Arc::new(AtomicU32::new(0));
        let counter = hits.clone();
        let statuses = Arc::new(statuses);
        let app = axum::Router::new().fallback(move || {
            let counter = counter.clone();
            let statuses = statuses.clone();
            async move {
                let n = counter.fetch_add(1, Ordering::SeqCst) as usize;
                let (code, retry_after) = statuses.get(n).copied().unwrap_or((200, None));
                let mut response = (S::from_u16(code).unwrap(), "{}").into_response();
                if let Some(value) = retry_after {
                    response
                        .headers_mut()
                        .insert("retry-after", HeaderValue::from_static(value));
                }
                response
            }
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await });
        (format!("http://{addr}/x"), hits)
    }

    fn fast() -> RetryPolicy {
        RetryPolicy {
            max_attempts: 4,
            base_delay: Duration::from_millis(5),
            max_delay: Duration::from_secs(2),
        }
    }

    #[tokio::test]
    async fn retries_5xx_then_succeeds() {
        let (url, hits) = scripted(vec![(500, None), (502, None)]).await;
        let client = reqwest::Client::new();
        let response = fast().send(|| client.get(&url)).await.unwrap();
        assert_eq!(response.status(), 200);
        assert_eq!(hits.load(Ordering::SeqCst), 3);
    }

    #[tokio::test]
    async fn honours_retry_after_on_429() {
        let (url, hits) = scripted(vec![(429, Some("1"))]).await;
        let client = reqwest::Client::new();
        let started = std::time::Instant::now();
        let response = fast().send(|| client.get(&url)).await.unwrap();
        assert_eq!(response.status(), 200);
        assert_eq!(hits.load(Ordering::SeqCst), 2);
        assert!(started.elapsed() >= Duration::from_millis(950));
    }

    #[tokio::test]
    async fn gives_up_and_returns_the_last_response() {
        let (url, hits) = scripted(vec![(503, None); 10]).await;
        let client = reqwest::Client::new();
        let response = fast().send(|| client.get(&url)).await.unwrap();
        assert_eq!(response.status(), 503);
        assert_eq!(hits.load(Ordering::SeqCst), 4);
    }

    #[tokio::test]
    async fn post_is_not_retried_on_500_but_is_on_429() {
        let (url, hits) = scripted(vec![(500, None)]).await;
        let client = reqwest::Client::new();
        let response = fast().send(|| client.post(&url).body("x")).await.unwrap();
        assert_eq!(response.status(), 500);
        assert_eq!(hits.load(Ordering::SeqCst), 1);

        let (url, hits) = scripted(vec![(429, Some("0"))]).await;
        let response = fast().send(|| client.post(&url).body("x")).await.unwrap();
        assert_eq!(response.status(), 200);
        assert_eq!(hits.load(Ordering::SeqCst), 2);

        let (url, hits) = scripted(vec![(500, None)]).await;
        let response = fast()
            .send_idempotent(|| client.post(&url).body("x"))
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        assert_eq!(hits.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn retries_connection_errors_then_reports_them() {
        // Bind then drop: the port is (almost certainly) closed now.
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        drop(listener);
        let client = reqwest::Client::new();
        let calls = AtomicU32::new(0);
        let error = fast()
            .send(|| {
                calls.fetch_add(1, Ordering::SeqCst);
                client.get(format!("http://{addr}/"))
            })
            .await
            .unwrap_err();
        assert!(error.is_connect());
        assert_eq!(calls.load(Ordering::SeqCst), 4);
    }
}
