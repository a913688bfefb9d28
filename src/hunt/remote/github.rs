//! The GitHub organization audit log (`--github-org ORG`): `GET {GITHUB_API_URL}/orgs/{org}/
//! audit-log?include=all&per_page=100&phrase=created:>=YYYY-MM-DD [--github-phrase]`, followed
//! page by page through the `Link: <…>; rel="next"` header (cursor-based, `after=`), each
//! answer (a JSON array of events, `@timestamp` in epoch milliseconds) one page named
//! `github:orgs/{org}/audit-log page N`.
//!
//! The token is rekey's own GitHub token (`GITHUB_TOKEN`, or the keyring entry of `rekey auth
//! set github`); it travels only in the `Authorization` header. 429 and 5xx go through the
//! project's retry policy; GitHub's 403 rate limits (primary and secondary) are waited out
//! (`Retry-After`, else `x-ratelimit-reset`, capped by the policy) as many times as the policy
//! allows retries.
//!
//! GitHub keeps git events (`git.clone`, `git.fetch`, `git.push`) for 7 days in the API: when the
//! window reaches further back, a note says so (the audit-log export or streaming has them).

use super::{Context, Fetched, Http, PageSender, Window, deliver};
use crate::hunt::source::Source;
use chrono::{Duration, SecondsFormat, Utc};

/// How long the API keeps git events.
pub const GIT_EVENTS_DAYS: i64 = 7;

/// GitHub's largest page.
pub const MAX_PER_PAGE: u32 = 100;

pub(super) async fn fetch(
    ctx: &Context,
    org: &str,
    phrase: Option<&str>,
    window: Window,
    tx: &PageSender,
) -> Fetched {
    let mut out = Fetched::default();
    let base_name = format!("github:orgs/{org}/audit-log");
    let Some(token) = &ctx.credentials.github_token else {
        out.failed(
            base_name,
            "no GitHub token: set GITHUB_TOKEN or run `rekey auth set github`",
        );
        return out;
    };
    let kept_from = Utc::now() - Duration::days(GIT_EVENTS_DAYS);
    if window.from < kept_from {
        out.notes.push(format!(
            "GitHub keeps git events {GIT_EVENTS_DAYS} days in the audit-log API: git.clone, git.fetch and git.push before {} are not available from it (use the audit-log export or audit-log streaming for older git events)",
            kept_from.to_rfc3339_opts(SecondsFormat::Secs, true)
        ));
    }
    let http = match Http::new(ctx.retry) {
        Ok(h) => h,
        Err(e) => {
            out.failed(base_name, e);
            return out;
        }
    };
    let mut full_phrase = format!("created:>={}", window.from.format("%Y-%m-%d"));
    if let Some(p) = phrase.filter(|p| !p.trim().is_empty()) {
        full_phrase.push(' ');
        full_phrase.push_str(p.trim());
    }
    let per_page = ctx
        .page_size
        .map(|n| n.clamp(1, MAX_PER_PAGE))
        .unwrap_or(MAX_PER_PAGE)
        .to_string();
    let mut url = match url::Url::parse(ctx.endpoints.github_api.trim()) {
        Ok(mut u) if matches!(u.scheme(), "http" | "https") && !u.cannot_be_a_base() => {
            if let Ok(mut path) = u.path_segments_mut() {
                path.pop_if_empty().extend(["orgs", org, "audit-log"]);
            }
            u.query_pairs_mut()
                .append_pair("include", "all")
                .append_pair("per_page", &per_page)
                .append_pair("phrase", &full_phrase);
            u
        }
        _ => {
            out.failed(
                base_name,
                format!(
                    "GITHUB_API_URL `{}` is not an http(s) URL",
                    ctx.endpoints.github_api
                ),
            );
            return out;
        }
    };
    let secrets = [token.expose()];
    let mut page = 0u32;
    loop {
        page += 1;
        let name = format!("{base_name} page {page}");
        let mut waits = 0u32;
        let answer = loop {
            let answer = http
                .send(|| {
                    http.client()
                        .get(url.clone())
                        .bearer_auth(token.expose())
                        .header("accept", "application/vnd.github+json")
                        .header("x-github-api-version", crate::github::API_VERSION)
                })
                .await;
            match answer {
                Ok(a) if rate_limited(&a) && waits + 1 < http.retry().max_attempts => {
                    waits += 1;
                    let delay = rate_limit_wait(&a, http.retry(), waits);
                    tracing::debug!(
                        page,
                        delay_ms = delay.as_millis() as u64,
                        "GitHub rate limit: waiting"
                    );
                    tokio::time::sleep(delay).await;
                }
                other => break other,
            }
        };
        let answer = match answer {
            Ok(a) if a.status.is_success() => a,
            Ok(a) => {
                let mut text = a.error_text(&secrets);
                if rate_limited(&a) {
                    text.push_str(" (rate limited; retries exhausted)");
                }
                out.failed(name, text);
                return out;
            }
            Err(kind) => {
                out.failed(name, format!("GET failed: {kind}"));
                return out;
            }
        };
        let next = answer.header("link").and_then(next_link);
        if !deliver(tx, Source::GithubAudit, name, answer.body).await {
            return out;
        }
        match next.and_then(|n| url.join(&n).ok()) {
            Some(n) => url = n,
            None => break,
        }
    }
    out
}

/// GitHub's rate limits: 429, or 403 with no requests left or a "rate limit" message.
fn rate_limited(a: &super::Answer) -> bool {
    if a.status == reqwest::StatusCode::TOO_MANY_REQUESTS {
        return true;
    }
    a.status == reqwest::StatusCode::FORBIDDEN
        && (a.header("x-ratelimit-remaining") == Some("0")
            || String::from_utf8_lossy(&a.body)
                .to_lowercase()
                .contains("rate limit"))
}

/// What GitHub asks to wait: `Retry-After`, else until `x-ratelimit-reset`, else the policy's
/// backoff; never more than the policy's ceiling.
fn rate_limit_wait(
    a: &super::Answer,
    policy: &crate::http::RetryPolicy,
    retry: u32,
) -> std::time::Duration {
    if let Some(d) = a
        .header("retry-after")
        .and_then(|v| policy.retry_after(v, Utc::now()))
    {
        return d;
    }
    if let Some(reset) = a
        .header("x-ratelimit-reset")
        .and_then(|v| v.trim().parse::<i64>().ok())
    {
        let secs = (reset - Utc::now().timestamp()).max(0) as u64;
        return std::time::Duration::from_secs(secs).min(policy.max_delay);
    }
    policy.backoff(retry)
}

/// The `rel="next"` URL of a `Link` header.
pub fn next_link(header: &str) -> Option<String> {
    header.split(',').find_map(|part| {
        let (target, params) = part.trim().split_once(';')?;
        let is_next = params
            .split(';')
            .any(|p| p.trim().replace(' ', "") == "rel=\"next\"");
        let url = target.trim().strip_prefix('<')?.strip_suffix('>')?;
        is_next.then(|| url.to_owned())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn link_headers() {
        let h = r#"<https://api.github.com/orgs/a/audit-log?after=MS4y&before=>; rel="next", <https://api.github.com/orgs/a/audit-log?before=x>; rel="prev""#;
        assert_eq!(
            next_link(h).as_deref(),
            Some("https://api.github.com/orgs/a/audit-log?after=MS4y&before=")
        );
        assert_eq!(next_link(r#"<https://x/y>; rel="first""#), None);
        assert_eq!(next_link("garbage"), None);
    }
}
