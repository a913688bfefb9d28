//! Azure remotes: Microsoft Graph service-principal sign-ins (`--azure-graph [--azure-app-id
//! ID]`) and the Activity Log of a subscription (`--azure-subscription SUB`).
//!
//! **Sign-ins**: `GET {graph, version beta}/auditLogs/signIns?$filter=createdDateTime ge FROM
//! and createdDateTime le UNTIL and signInEventTypes/any(t: t eq 'servicePrincipal')[ and appId
//! eq 'ID']&$top=1000`, followed through `@odata.nextLink` until absent. Graph's documentation
//! ("List signIns", beta) says the list holds interactive user sign-ins unless
//! `signInEventTypes` is filtered, and v1.0's signIn has no `signInEventTypes`: service-principal
//! sign-ins are a beta-only listing, so the plan's `azure_graph` (`…/v1.0`) is used with its
//! version segment replaced by `beta`. Date-times are unquoted OData literals; the largest page
//! is 1000. Each answer (`{"value": […]}`) is one page named `graph:auditLogs/signIns page N`.
//! Entra ID keeps sign-ins 30 days (P1/P2; 7 days without): a note says so when the window
//! reaches further back.
//!
//! **Activity Log**: `GET {management}/subscriptions/SUB/providers/Microsoft.Insights/
//! eventtypes/management/values?api-version=2015-04-01&$filter=eventTimestamp ge 'FROM' and
//! eventTimestamp le 'UNTIL'`, followed through `nextLink`; pages named
//! `azure:subscriptions/SUB/activity-log page N`. The Activity Log keeps 90 days: a note says
//! so when the window reaches further back.
//!
//! rekey's own tokens come from the provider's code (`providers::azure::AzureTokens`: client
//! credentials from `AZURE_TENANT_ID`, `AZURE_CLIENT_ID`, `AZURE_CLIENT_SECRET` at the plan's
//! `azure_authority`), one per resource: the Graph scope for sign-ins, the ARM scope
//! (`https://management.azure.com/.default`) for the Activity Log. 429 (`Retry-After`) and 5xx go
//! through the project's retry policy ([`Http`]). A next link is followed only on the origin of
//! the first request: the token never leaves for another host.

use super::{Context, Fetched, Http, PageSender, Window, deliver};
use crate::hunt::source::Source;
use crate::providers::azure::{AzureTokens, graph_scope, management_scope};
use chrono::{DateTime, Duration, SecondsFormat, Utc};

/// Graph's largest sign-in page.
pub const MAX_SIGNIN_PAGE: u32 = 1000;

/// How long Entra ID keeps sign-ins with Entra ID P1/P2, and without.
pub const SIGNIN_DAYS: i64 = 30;
pub const SIGNIN_FREE_DAYS: i64 = 7;

/// How long the Activity Log keeps events.
pub const ACTIVITY_DAYS: i64 = 90;

/// The Activity Log API's version.
pub const ACTIVITY_API_VERSION: &str = "2015-04-01";

pub(super) async fn fetch_signins(
    ctx: &Context,
    app: Option<&str>,
    window: Window,
    tx: &PageSender,
) -> Fetched {
    let mut out = Fetched::default();
    let base_name = "graph:auditLogs/signIns";
    if let Some(app) = app
        && !is_guid_like(app)
    {
        out.failed(base_name, "not an application (client) id: expected a GUID");
        return out;
    }
    let now = Utc::now();
    if window.from < now - Duration::days(SIGNIN_DAYS) {
        out.notes.push(format!(
            "Entra ID keeps sign-ins {SIGNIN_DAYS} days (Entra ID P1/P2; {SIGNIN_FREE_DAYS} days without): service-principal sign-ins before {} are not available from Graph (a diagnostic setting to a Log Analytics workspace or storage account keeps them longer)",
            rfc3339(now - Duration::days(SIGNIN_DAYS))
        ));
    } else if window.from < now - Duration::days(SIGNIN_FREE_DAYS) {
        out.notes.push(format!(
            "tenants without Entra ID P1/P2 keep sign-ins {SIGNIN_FREE_DAYS} days: sign-ins before {} may be missing",
            rfc3339(now - Duration::days(SIGNIN_FREE_DAYS))
        ));
    }
    let graph = beta(&ctx.endpoints.azure_graph);
    let mut filter = format!(
        "createdDateTime ge {} and createdDateTime le {} and signInEventTypes/any(t: t eq 'servicePrincipal')",
        rfc3339(window.from),
        rfc3339(window.until)
    );
    if let Some(app) = app {
        filter.push_str(&format!(" and appId eq '{app}'"));
    }
    let top = ctx
        .page_size
        .map(|n| n.clamp(1, MAX_SIGNIN_PAGE))
        .unwrap_or(MAX_SIGNIN_PAGE);
    let url = format!(
        "{}/auditLogs/signIns?$filter={}&$top={top}",
        graph.trim_end_matches('/'),
        encode(&filter)
    );
    let scope = graph_scope(&graph);
    follow(
        ctx,
        Walk {
            first_url: url,
            scope,
            base_name: base_name.to_owned(),
            next_field: "@odata.nextLink",
            source: Source::AzureSignins,
        },
        tx,
        out,
    )
    .await
}

pub(super) async fn fetch_activity(
    ctx: &Context,
    sub: &str,
    window: Window,
    tx: &PageSender,
) -> Fetched {
    let mut out = Fetched::default();
    let base_name = format!("azure:subscriptions/{sub}/activity-log");
    if !is_guid_like(sub) {
        out.failed(base_name, "not a subscription id: expected a GUID");
        return out;
    }
    let now = Utc::now();
    if window.from < now - Duration::days(ACTIVITY_DAYS) {
        out.notes.push(format!(
            "the Activity Log keeps {ACTIVITY_DAYS} days: events of {sub} before {} are not available from it (a diagnostic setting to a Log Analytics workspace or storage account keeps them longer)",
            rfc3339(now - Duration::days(ACTIVITY_DAYS))
        ));
    }
    let management = ctx.endpoints.azure_management.trim_end_matches('/');
    let filter = format!(
        "eventTimestamp ge '{}' and eventTimestamp le '{}'",
        rfc3339(window.from),
        rfc3339(window.until)
    );
    let url = format!(
        "{management}/subscriptions/{sub}/providers/Microsoft.Insights/eventtypes/management/values?api-version={ACTIVITY_API_VERSION}&$filter={}",
        encode(&filter)
    );
    follow(
        ctx,
        Walk {
            first_url: url,
            scope: management_scope(management),
            base_name,
            next_field: "nextLink",
            source: Source::AzureActivity,
        },
        tx,
        out,
    )
    .await
}

/// One paged listing: where it starts, the token it needs, how its pages link.
struct Walk {
    first_url: String,
    scope: String,
    base_name: String,
    next_field: &'static str,
    source: Source,
}

/// Gets a token for `walk.scope`, then GETs every page from `walk.first_url` on, following
/// `walk.next_field` until it is absent, delivering each page that holds records.
async fn follow(ctx: &Context, walk: Walk, tx: &PageSender, mut out: Fetched) -> Fetched {
    let Walk {
        first_url,
        scope,
        base_name,
        next_field,
        source,
    } = walk;
    let mut url = match url::Url::parse(&first_url) {
        Ok(u) if matches!(u.scheme(), "http" | "https") && u.host_str().is_some() => u,
        _ => {
            out.failed(base_name, "the endpoint is not an http(s) URL");
            return out;
        }
    };
    let origin = url.origin();
    let http = match Http::new(ctx.retry) {
        Ok(h) => h,
        Err(e) => {
            out.failed(base_name, e);
            return out;
        }
    };
    let authority = &ctx.endpoints.azure_authority;
    let tokens = AzureTokens::new(
        http.client().clone(),
        authority,
        scope,
        ctx.credentials.azure.clone(),
    );
    let token = match tokens.token().await {
        Ok(t) => t,
        Err(e) => {
            out.failed(base_name, format!("no access token: {e}"));
            return out;
        }
    };
    let client_secret = tokens
        .identity()
        .map(|id| id.client_secret.expose().to_owned())
        .unwrap_or_else(|| token.expose().to_owned());
    let secrets = [token.expose(), client_secret.as_str()];
    let mut page = 0u32;
    loop {
        page += 1;
        let name = format!("{base_name} page {page}");
        let answer = http
            .send(|| {
                http.client()
                    .get(url.clone())
                    .bearer_auth(token.expose())
                    .header("accept", "application/json")
            })
            .await;
        let answer = match answer {
            Ok(a) if a.status.is_success() => a,
            Ok(a) => {
                out.failed(name, a.error_text(&secrets));
                return out;
            }
            Err(kind) => {
                out.failed(name, format!("GET failed: {kind}"));
                return out;
            }
        };
        let head: serde_json::Map<String, serde_json::Value> =
            match serde_json::from_slice(&answer.body) {
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
        let has_records = head
            .get("value")
            .and_then(|v| v.as_array())
            .is_some_and(|v| !v.is_empty());
        let next = head
            .get(next_field)
            .and_then(|v| v.as_str())
            .filter(|s| !s.is_empty())
            .map(str::to_owned);
        if has_records && !deliver(tx, source, name.clone(), answer.body).await {
            return out;
        }
        let Some(next) = next else { break };
        match url.join(&next) {
            Ok(n) if n.origin() == origin => url = n,
            Ok(_) => {
                out.failed(
                    name,
                    format!(
                        "{next_field} leaves {}: not followed (the token stays with its API)",
                        origin.ascii_serialization()
                    ),
                );
                return out;
            }
            Err(_) => {
                out.failed(name, format!("{next_field} is not a URL"));
                return out;
            }
        }
    }
    out
}

/// The Graph URL with its version segment as `beta` (`…/v1.0` → `…/beta`); a URL without a
/// version segment gets `/beta` appended.
fn beta(graph: &str) -> String {
    let graph = graph.trim_end_matches('/');
    match graph.rsplit_once('/') {
        Some((rest, "v1.0" | "beta")) => format!("{rest}/beta"),
        _ => format!("{graph}/beta"),
    }
}

/// `2023-01-04T12:00:00Z`.
fn rfc3339(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Secs, true)
}

/// Hex digits and dashes, as GUIDs are: nothing that could change an OData filter or a path.
fn is_guid_like(s: &str) -> bool {
    !s.is_empty() && s.len() <= 64 && s.chars().all(|c| c.is_ascii_hexdigit() || c == '-')
}

/// Percent-encodes a query value (spaces as `%20`, never `+`, which OData may keep).
fn encode(value: &str) -> String {
    let mut out = String::with_capacity(value.len() * 3);
    for b in value.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn beta_replaces_the_version() {
        assert_eq!(
            beta("https://graph.microsoft.com/v1.0"),
            "https://graph.microsoft.com/beta"
        );
        assert_eq!(
            beta("https://graph.microsoft.com/beta/"),
            "https://graph.microsoft.com/beta"
        );
        assert_eq!(beta("http://127.0.0.1:9"), "http://127.0.0.1:9/beta");
    }

    #[test]
    fn filters_are_percent_encoded() {
        assert_eq!(
            encode("a ge 'b' and t/any(t: t eq 'x')"),
            "a%20ge%20%27b%27%20and%20t%2Fany%28t%3A%20t%20eq%20%27x%27%29"
        );
        assert!(is_guid_like("11111111-2222-3333-4444-555555555555"));
        assert!(!is_guid_like("x' or true"));
        assert!(!is_guid_like(""));
    }
}
