//! GCP Cloud Logging audit logs (`--gcp-project P [--gcp-principal EMAIL]`): `POST
//! {gcp_logging}/v2/entries:list` with `resourceNames: ["projects/P"]`, the filter
//! `logName:"cloudaudit.googleapis.com" AND timestamp>="FROM" AND timestamp<="UNTIL"[ AND
//! protoPayload.authenticationInfo.principalEmail="EMAIL"]`, `pageSize` 1000 and
//! `pageToken`/`nextPageToken` pagination. Each answer (`{"entries": […]}`) is one page named
//! `gcp:projects/P/entries page N`.
//!
//! rekey's own token comes from the GCP provider's code (`providers::gcp::GcpTokens`: the JWT
//! bearer grant signed with the key file of `GOOGLE_APPLICATION_CREDENTIALS`, or
//! `GOOGLE_OAUTH_ACCESS_TOKEN`). Endpoints: the plan's `endpoints.gcp_logging` and `gcp_token`.
//!
//! Retention: Admin Activity audit logs are kept 400 days, Data Access logs 30 days (the
//! `_Default` bucket's defaults); a note says so when the window reaches further back.

use super::{Context, Fetched, Http, PageSender, Window, deliver};
use crate::hunt::source::Source;
use crate::providers::gcp::{GcpAuth, GcpTokens};
use chrono::{Duration, SecondsFormat, Utc};

/// Cloud Logging's largest page.
pub const MAX_PAGE_SIZE: u32 = 1000;

/// Default retention of Data Access audit logs (the `_Default` bucket).
const DATA_ACCESS_DAYS: i64 = 30;

pub(super) async fn fetch(
    ctx: &Context,
    project: &str,
    principal: Option<&str>,
    window: Window,
    tx: &PageSender,
) -> Fetched {
    let mut out = Fetched::default();
    let base_name = format!("gcp:projects/{project}/entries");
    if project.is_empty()
        || !project
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-')
    {
        out.failed(base_name, "not a GCP project id");
        return out;
    }
    let principal = match principal.map(filter_string).transpose() {
        Ok(p) => p,
        Err(e) => {
            out.failed(base_name, e);
            return out;
        }
    };
    let http = match Http::new(ctx.retry) {
        Ok(h) => h,
        Err(e) => {
            out.failed(base_name, e);
            return out;
        }
    };
    let auth = ctx.credentials.gcp.clone().unwrap_or(GcpAuth::None);
    let tokens = GcpTokens::new(http.client().clone(), &ctx.endpoints.gcp_token, auth);
    let token = match tokens.token().await {
        Ok(t) => t,
        Err(e) => {
            out.failed(base_name, format!("no access token: {e}"));
            return out;
        }
    };
    if window.from < Utc::now() - Duration::days(DATA_ACCESS_DAYS) {
        out.notes.push(format!(
            "Cloud Logging keeps Data Access audit logs {DATA_ACCESS_DAYS} days by default (Admin Activity 400 days): older data-access entries of {project} may be gone unless the logs are routed to a longer-lived bucket or sink"
        ));
    }
    let ts = |t: chrono::DateTime<Utc>| t.to_rfc3339_opts(SecondsFormat::Secs, true);
    let mut filter = format!(
        "logName:\"cloudaudit.googleapis.com\" AND timestamp>=\"{}\" AND timestamp<=\"{}\"",
        ts(window.from),
        ts(window.until)
    );
    if let Some(p) = principal {
        filter.push_str(&format!(
            " AND protoPayload.authenticationInfo.principalEmail={p}"
        ));
    }
    let url = format!(
        "{}/v2/entries:list",
        ctx.endpoints.gcp_logging.trim_end_matches('/')
    );
    let page_size = ctx
        .page_size
        .map(|n| n.clamp(1, MAX_PAGE_SIZE))
        .unwrap_or(MAX_PAGE_SIZE);
    let secrets = [token.expose()];
    let mut page_token: Option<String> = None;
    let mut page = 0u32;
    loop {
        page += 1;
        let name = format!("{base_name} page {page}");
        let mut body = serde_json::json!({
            "resourceNames": [format!("projects/{project}")],
            "filter": filter,
            "orderBy": "timestamp asc",
            "pageSize": page_size,
        });
        if let Some(t) = &page_token {
            body["pageToken"] = serde_json::Value::String(t.clone());
        }
        let answer = http
            .send(|| {
                http.client()
                    .post(&url)
                    .bearer_auth(token.expose())
                    .json(&body)
            })
            .await;
        let answer = match answer {
            Ok(a) if a.status.is_success() => a,
            Ok(a) => {
                out.failed(name, a.error_text(&secrets));
                return out;
            }
            Err(kind) => {
                out.failed(name, format!("POST entries:list failed: {kind}"));
                return out;
            }
        };
        #[derive(serde::Deserialize)]
        #[serde(rename_all = "camelCase")]
        struct Head {
            #[serde(default)]
            entries: Vec<serde::de::IgnoredAny>,
            #[serde(default)]
            next_page_token: Option<String>,
        }
        let head: Head = match serde_json::from_slice(&answer.body) {
            Ok(h) => h,
            Err(e) => {
                out.failed(
                    name,
                    format!(
                        "unreadable answer (JSON error at line {}, column {})",
                        e.line(),
                        e.column()
                    ),
                );
                return out;
            }
        };
        // An empty page is `{}`: nothing to read (and no record to mistake it for).
        if !head.entries.is_empty() && !deliver(tx, Source::GcpLogging, name, answer.body).await {
            return out;
        }
        match head.next_page_token.filter(|t| !t.is_empty()) {
            Some(t) => page_token = Some(t),
            None => break,
        }
    }
    out
}

/// The longest principal put in a filter; e-mail addresses are at most 254 characters.
const MAX_PRINCIPAL: usize = 1024;

/// `text` as a quoted string of the logging query language: `"` and `\\` escaped with a
/// backslash, so that an address holding them still narrows the hunt to itself and nothing
/// else. Control characters (which have no escape there) and overlong text are refused.
pub fn filter_string(text: &str) -> Result<String, String> {
    if text.len() > MAX_PRINCIPAL {
        return Err(format!(
            "the principal is longer than {MAX_PRINCIPAL} bytes; not an e-mail address"
        ));
    }
    if text.chars().any(char::is_control) {
        return Err(
            "the principal holds a control character, which a Cloud Logging filter cannot quote"
                .into(),
        );
    }
    let mut out = String::with_capacity(text.len() + 2);
    out.push('"');
    for c in text.chars() {
        if c == '"' || c == '\\' {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('"');
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filter_strings_are_escaped() {
        assert_eq!(filter_string("a@b.iam").unwrap(), "\"a@b.iam\"");
        assert_eq!(
            filter_string("x\" OR \"\\y").unwrap(),
            "\"x\\\" OR \\\"\\\\y\""
        );
        assert!(filter_string("a\nb").is_err());
        assert!(filter_string(&"a".repeat(2000)).is_err());
    }
}
