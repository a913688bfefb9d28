//! The Azure simulator: Entra ID's token endpoint (`/{tenant}/oauth2/v2.0/token`, client
//! credentials), Microsoft Graph's application password credentials (`/v1.0/applications/
//! {id}`, `addPassword`, `removePassword`), Graph's service-principal sign-ins
//! (`/beta/auditLogs/signIns`) and Azure Resource Manager's Activity Log (`/arm/subscriptions/
//! {sub}/providers/Microsoft.Insights/eventtypes/management/values`), behind one base URL that a
//! plan's `endpoints: {azure_authority: URL, azure_graph: URL/v1.0, azure_management: URL/arm}`
//! points at.
//!
//! The token endpoint checks the client secret against the app's live password credentials:
//! a removed or expired secret gets Entra's `invalid_client` (AADSTS7000215 / AADSTS7000222).
//! It needs a `scope` naming one of the two resources it knows, with `/.default`: Graph
//! (`URL/.default`) or ARM (`URL/arm/.default`); a missing scope is AADSTS900144, another
//! resource AADSTS500011. A token works only for the resource it was issued for: Graph answers
//! 401 `InvalidAuthenticationToken` to any other token, ARM 401 `InvalidAuthenticationToken`
//! (unknown token) or `InvalidAuthenticationTokenAudience` (a Graph token). Graph's errors use
//! its shape `{"error": {"code", "message", "innerError"}}`, ARM's `{"error": {"code",
//! "message"}}`. removePassword of an unknown keyId answers 400 `Request_BadRequest` here (the
//! provider does not depend on which 4xx Graph uses).
//!
//! Audit records are whatever the test loads ([`AzureState::add_signin`],
//! [`AzureState::add_activity`]); retention is not simulated. The listings accept exactly the
//! filters rekey sends, as documented: sign-ins `$filter=createdDateTime ge T and
//! createdDateTime le T and signInEventTypes/any(t: t eq 'servicePrincipal')[ and appId eq
//! 'ID']` (unquoted date-times) with `$top` 1..=1000; the Activity Log `api-version=2015-04-01`
//! and `$filter=eventTimestamp ge 'T' and eventTimestamp le 'T'`. Any other filter or query
//! option is a 400 (`BadRequest`). Records whose time is not an RFC 3339 string never match a
//! time filter. Answers are newest first, `{"value": […]}` pages with `@odata.nextLink`
//! (Graph) or `nextLink` (ARM) carrying a `$skiptoken`/`$skipToken` while records remain; the
//! page size is `$top` (Graph, default 1000) or 200 (ARM), lowered by
//! [`AzureState::set_page_size`] for tests.
//!
//! `GET /{tenant}/v2.0/.well-known/openid-configuration` answers the tenant's OIDC discovery
//! document (this simulator's endpoints), which msal reads before its first token request.
//!
//! Held against Microsoft's own clients (`tests/vendor_clients.rs`: msal for the token
//! endpoint, the Graph SDK for Python for passwords and sign-ins): the SDK's models parse every
//! answer and know every property but the beta-only `signInEventTypes`. Simplifications:
//! - msal accepts only an https authority, and the simulator serves plain http on loopback:
//!   msal reaches it through an `http_client` that stands in for TLS (`tests/vendor/graph.py`);
//! - `GET /applications/{id}` answers `id`, `appId`, `displayName` and `passwordCredentials`
//!   only (no `$select`); no other Graph resource exists;
//! - sign-ins are served only under `/beta` (service-principal sign-ins are a beta feature),
//!   as stored by the test;
//! - tokens are opaque strings, not JWTs: a client that decodes its token would fail;
//! - only the client-credentials grant with a client secret; no certificate credentials.

use std::collections::{BTreeMap, HashMap};

use axum::http::{Method, StatusCode};
use axum::response::Response;
use chrono::{DateTime, SecondsFormat, Utc};

use super::sim::{self, SimRequest, SimServer, Simulator};
use super::{Rng, fake};
use crate::providers::azure::AzureIdentity;
use crate::secret::Secret;

/// The app registration that holds rekey's own secret.
pub const ADMIN_APP: &str = "rekey-admin";

#[derive(Clone)]
struct StoredPassword {
    key_id: String,
    display_name: Option<String>,
    secret: Secret,
    start: DateTime<Utc>,
    end: DateTime<Utc>,
    /// When the token endpoint starts to accept the secret (see [`AzureState::propagation`]).
    usable_at: std::time::Instant,
}

#[derive(Clone)]
struct App {
    app_id: String,
    display_name: String,
    passwords: Vec<StoredPassword>,
}

/// Which API a token was issued for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Audience {
    Graph,
    Arm,
}

/// The Activity Log's page size (ARM chooses it; the API has no `$top`).
const ARM_PAGE: usize = 200;

/// Graph's default and largest sign-in page.
const GRAPH_PAGE: usize = 1000;

/// The simulated tenant.
pub struct AzureState {
    tenant: String,
    /// `http://127.0.0.1:PORT`: the resources' identifiers and next links derive from it.
    base: String,
    /// Object id → app.
    apps: BTreeMap<String, App>,
    /// Token → (client id, audience).
    tokens: HashMap<String, (String, Audience)>,
    rng: Rng,
    admin: Option<AzureIdentity>,
    signins: Vec<serde_json::Value>,
    /// Subscription → Activity Log events.
    activity: BTreeMap<String, Vec<serde_json::Value>>,
    page_size: Option<usize>,
    /// How long a new client secret is not accepted by the token endpoint (real time): Entra
    /// replicates a new credential to every region over minutes. Applies to secrets added
    /// after it is set; zero by default.
    pub propagation: std::time::Duration,
}

impl AzureState {
    fn new(tenant: &str, base: &str) -> AzureState {
        let mut state = AzureState {
            tenant: tenant.to_owned(),
            base: base.trim_end_matches('/').to_owned(),
            apps: BTreeMap::new(),
            tokens: HashMap::new(),
            rng: Rng::from_entropy(),
            admin: None,
            signins: Vec::new(),
            activity: BTreeMap::new(),
            page_size: None,
            propagation: std::time::Duration::ZERO,
        };
        let (object, app_id) = state.add_app(ADMIN_APP);
        let secret = state
            .add_password(&object, Some("rekey"), None)
            .map(|(_, s)| s);
        state.admin = secret.map(|client_secret| AzureIdentity {
            tenant_id: tenant.to_owned(),
            client_id: app_id,
            client_secret,
        });
        state
    }

    pub fn tenant(&self) -> &str {
        &self.tenant
    }

    /// A sign-in record, as Graph would list it (`createdDateTime`, `signInEventTypes`, …).
    pub fn add_signin(&mut self, record: serde_json::Value) {
        self.signins.push(record);
    }

    /// An Activity Log event of `subscription` (which then exists).
    pub fn add_activity(&mut self, subscription: &str, record: serde_json::Value) {
        self.activity
            .entry(subscription.to_owned())
            .or_default()
            .push(record);
    }

    /// A subscription with an empty Activity Log.
    pub fn add_subscription(&mut self, subscription: &str) {
        self.activity.entry(subscription.to_owned()).or_default();
    }

    /// Caps every listing's page at `size` records (`None`: the APIs' own sizes).
    pub fn set_page_size(&mut self, size: Option<usize>) {
        self.page_size = size.map(|n| n.max(1));
    }

    /// A token for `audience` without the token endpoint (tests of the audience check).
    fn issue(&mut self, client_id: &str, audience: Audience) -> String {
        let token = format!("eyJ0eXAiOiJKV1Qi.{}", self.rng.string(fake::ALNUM, 60));
        self.tokens
            .insert(token.clone(), (client_id.to_owned(), audience));
        token
    }

    /// A token as the token endpoint would issue it to rekey's admin app for Graph.
    pub fn issue_graph_token(&mut self) -> String {
        let client = self.admin.as_ref().map(|a| a.client_id.clone());
        self.issue(&client.unwrap_or_default(), Audience::Graph)
    }

    /// A token as the token endpoint would issue it to rekey's admin app for ARM.
    pub fn issue_arm_token(&mut self) -> String {
        let client = self.admin.as_ref().map(|a| a.client_id.clone());
        self.issue(&client.unwrap_or_default(), Audience::Arm)
    }

    /// Registers an app: (object id, application (client) id).
    pub fn add_app(&mut self, display_name: &str) -> (String, String) {
        let object = fake::uuid(&mut self.rng);
        let app_id = fake::uuid(&mut self.rng);
        self.apps.insert(
            object.clone(),
            App {
                app_id: app_id.clone(),
                display_name: display_name.to_owned(),
                passwords: Vec::new(),
            },
        );
        (object, app_id)
    }

    /// Registers an app under a given object id (a rehearsal's copy of a plan's app, whose
    /// object id the plan names): its application (client) id.
    pub fn add_app_with_object_id(&mut self, object: &str, display_name: &str) -> String {
        let app_id = fake::uuid(&mut self.rng);
        self.apps.entry(object.to_owned()).or_insert_with(|| App {
            app_id: app_id.clone(),
            display_name: display_name.to_owned(),
            passwords: Vec::new(),
        });
        self.apps
            .get(object)
            .map(|a| a.app_id.clone())
            .unwrap_or(app_id)
    }

    /// Adds a secret directly (a fixture, or addPassword): (keyId, secret).
    pub fn add_password(
        &mut self,
        object: &str,
        display_name: Option<&str>,
        end: Option<DateTime<Utc>>,
    ) -> Option<(String, Secret)> {
        let key_id = fake::uuid(&mut self.rng);
        let secret = Secret::new(fake::azure_client_secret(&mut self.rng));
        let app = self.apps.get_mut(object)?;
        app.passwords.push(StoredPassword {
            key_id: key_id.clone(),
            display_name: display_name.map(str::to_owned),
            secret: secret.clone(),
            start: Utc::now(),
            end: end.unwrap_or_else(|| Utc::now() + chrono::Duration::days(730)),
            usable_at: std::time::Instant::now() + self.propagation,
        });
        Some((key_id, secret))
    }

    /// keyIds of an app's secrets.
    pub fn passwords_of(&self, object: &str) -> Vec<String> {
        self.apps
            .get(object)
            .map(|a| a.passwords.iter().map(|p| p.key_id.clone()).collect())
            .unwrap_or_default()
    }

    /// Moves every secret's start back by `by` (fixtures older than a plan's max_age).
    pub fn backdate(&mut self, by: chrono::Duration) {
        for app in self.apps.values_mut() {
            for p in &mut app.passwords {
                p.start -= by;
            }
        }
    }

    /// Whether `secret` is a live (unexpired) secret of the app.
    pub fn accepts(&self, object: &str, secret: &str) -> bool {
        let now = Utc::now();
        self.apps.get(object).is_some_and(|a| {
            a.passwords
                .iter()
                .any(|p| p.secret.expose() == secret && p.end > now)
        })
    }

    /// A secret's display name and end date, as addPassword stored them.
    pub fn password_meta(
        &self,
        object: &str,
        key_id: &str,
    ) -> Option<(Option<String>, DateTime<Utc>)> {
        let p = self
            .apps
            .get(object)?
            .passwords
            .iter()
            .find(|p| p.key_id == key_id)?;
        Some((p.display_name.clone(), p.end))
    }

    fn password_json(p: &StoredPassword, secret: bool) -> serde_json::Value {
        let hint: String = p.secret.expose().chars().take(3).collect();
        serde_json::json!({
            "customKeyIdentifier": null,
            "displayName": p.display_name,
            "endDateTime": p.end.to_rfc3339_opts(SecondsFormat::Secs, true),
            "hint": hint,
            "keyId": p.key_id,
            "secretText": if secret { serde_json::Value::String(p.secret.expose().to_owned()) } else { serde_json::Value::Null },
            "startDateTime": p.start.to_rfc3339_opts(SecondsFormat::Secs, true),
        })
    }

    fn token_endpoint(&mut self, tenant: &str, request: &SimRequest<'_>) -> Response {
        let oauth_error = |status: StatusCode, error: &str, description: &str| {
            sim::json(
                status,
                &serde_json::json!({
                    "error": error,
                    "error_description": description,
                    "error_codes": [description.split(':').next().unwrap_or_default().trim_start_matches("AADSTS").parse::<u64>().unwrap_or(0)],
                    "timestamp": Utc::now().to_rfc3339_opts(SecondsFormat::Secs, true),
                }),
            )
        };
        if tenant != self.tenant {
            return oauth_error(
                StatusCode::BAD_REQUEST,
                "invalid_request",
                &format!("AADSTS90002: Tenant '{tenant}' not found."),
            );
        }
        if request.form("grant_type").as_deref() != Some("client_credentials") {
            return oauth_error(
                StatusCode::BAD_REQUEST,
                "unsupported_grant_type",
                "AADSTS70003: The app requested an unsupported grant type.",
            );
        }
        let client_id = request.form("client_id").unwrap_or_default();
        let Some(app) = self.apps.values().find(|a| a.app_id == client_id) else {
            return oauth_error(
                StatusCode::BAD_REQUEST,
                "unauthorized_client",
                &format!(
                    "AADSTS700016: Application with identifier '{client_id}' was not found in the directory."
                ),
            );
        };
        let given = request.form("client_secret").unwrap_or_default();
        let now = Utc::now();
        // A secret not yet replicated is refused as an unknown one, as Entra does.
        let Some(password) = app
            .passwords
            .iter()
            .find(|p| p.secret.expose() == given && std::time::Instant::now() >= p.usable_at)
        else {
            return oauth_error(
                StatusCode::UNAUTHORIZED,
                "invalid_client",
                &format!(
                    "AADSTS7000215: Invalid client secret provided. Ensure the secret being sent in the request is the client secret value, not the client secret ID, for a secret added to app '{client_id}'."
                ),
            );
        };
        if password.end <= now {
            return oauth_error(
                StatusCode::UNAUTHORIZED,
                "invalid_client",
                &format!(
                    "AADSTS7000222: The provided client secret keys for app '{client_id}' are expired."
                ),
            );
        }
        let Some(scope) = request.form("scope").filter(|s| !s.is_empty()) else {
            return oauth_error(
                StatusCode::BAD_REQUEST,
                "invalid_request",
                "AADSTS900144: The request body must contain the following parameter: 'scope'.",
            );
        };
        let audience = match scope.strip_suffix("/.default") {
            Some(r) if r == self.base => Audience::Graph,
            Some(r) if r == format!("{}/arm", self.base) => Audience::Arm,
            Some(r) => {
                return oauth_error(
                    StatusCode::BAD_REQUEST,
                    "invalid_resource",
                    &format!(
                        "AADSTS500011: The resource principal named {r} was not found in the tenant named {tenant}."
                    ),
                );
            }
            None => {
                return oauth_error(
                    StatusCode::BAD_REQUEST,
                    "invalid_scope",
                    &format!(
                        "AADSTS1002012: The provided value for scope {scope} is not valid. Client credential flows must have a scope value with /.default suffixed to the resource identifier (application ID URI)."
                    ),
                );
            }
        };
        let token = self.issue(&client_id, audience);
        sim::json(
            StatusCode::OK,
            &serde_json::json!({"token_type": "Bearer", "expires_in": 3599, "ext_expires_in": 3599, "access_token": token}),
        )
    }

    /// `GET /{tenant}/v2.0/.well-known/openid-configuration`: the tenant's OIDC discovery
    /// document, which Microsoft's authentication libraries read before the first token
    /// request (the endpoints it names are this simulator's).
    fn openid_configuration(&self, tenant: &str) -> Response {
        if tenant != self.tenant {
            return sim::json(
                StatusCode::BAD_REQUEST,
                &serde_json::json!({
                    "error": "invalid_tenant",
                    "error_description": format!("AADSTS90002: Tenant '{tenant}' not found. Check to make sure you have the correct tenant ID and are signing into the correct cloud."),
                    "error_codes": [90002],
                }),
            );
        }
        let at = |path: &str| format!("{}/{tenant}{path}", self.base);
        sim::json(
            StatusCode::OK,
            &serde_json::json!({
                "issuer": at("/v2.0"),
                "authorization_endpoint": at("/oauth2/v2.0/authorize"),
                "token_endpoint": at("/oauth2/v2.0/token"),
                "device_authorization_endpoint": at("/oauth2/v2.0/devicecode"),
                "end_session_endpoint": at("/oauth2/v2.0/logout"),
                "jwks_uri": format!("{}/{tenant}/discovery/v2.0/keys", self.base),
                "token_endpoint_auth_methods_supported": ["client_secret_post", "private_key_jwt", "client_secret_basic"],
                "response_types_supported": ["code", "id_token", "code id_token", "id_token token"],
                "scopes_supported": ["openid", "profile", "email", "offline_access"],
                "subject_types_supported": ["pairwise"],
                "id_token_signing_alg_values_supported": ["RS256"],
                "tenant_region_scope": "EU",
                "cloud_instance_name": "microsoftonline.com",
            }),
        )
    }

    fn graph(&mut self, path: &str, request: &SimRequest<'_>) -> Response {
        if !self.bearer_for(request, Audience::Graph) {
            return graph_error(
                StatusCode::UNAUTHORIZED,
                "InvalidAuthenticationToken",
                "Access token validation failure. Invalid audience.",
            );
        }
        let parts: Vec<&str> = path.trim_start_matches('/').split('/').collect();
        let (object, action) = match parts.as_slice() {
            ["applications", id] => (*id, None),
            ["applications", id, action] => (*id, Some(*action)),
            _ => {
                return graph_error(
                    StatusCode::BAD_REQUEST,
                    "BadRequest",
                    &format!(
                        "Resource not found for the segment '{}'.",
                        parts.first().unwrap_or(&"")
                    ),
                );
            }
        };
        let not_found = || {
            graph_error(
                StatusCode::NOT_FOUND,
                "Request_ResourceNotFound",
                &format!(
                    "Resource '{object}' does not exist or one of its queried reference-property objects are not present."
                ),
            )
        };
        let body: serde_json::Value = serde_json::from_slice(request.body).unwrap_or_default();
        match (request.method, action) {
            (&Method::GET, None) => {
                let Some(app) = self.apps.get(object) else {
                    return not_found();
                };
                let passwords: Vec<_> = app
                    .passwords
                    .iter()
                    .map(|p| Self::password_json(p, false))
                    .collect();
                sim::json(
                    StatusCode::OK,
                    &serde_json::json!({
                        "@odata.context": "https://graph.microsoft.com/v1.0/$metadata#applications(id,appId,displayName,passwordCredentials)/$entity",
                        "id": object,
                        "appId": app.app_id,
                        "displayName": app.display_name,
                        "passwordCredentials": passwords,
                    }),
                )
            }
            (&Method::POST, Some("addPassword")) => {
                if !self.apps.contains_key(object) {
                    return not_found();
                }
                let credential = &body["passwordCredential"];
                let name = credential["displayName"].as_str().map(str::to_owned);
                let end = credential["endDateTime"]
                    .as_str()
                    .and_then(|e| DateTime::parse_from_rfc3339(e).ok())
                    .map(|e| e.with_timezone(&Utc));
                match self.add_password(object, name.as_deref(), end) {
                    Some((key_id, _)) => {
                        let stored = self
                            .apps
                            .get(object)
                            .and_then(|a| a.passwords.iter().find(|p| p.key_id == key_id));
                        match stored {
                            Some(p) => sim::json(StatusCode::OK, &Self::password_json(p, true)),
                            None => not_found(),
                        }
                    }
                    None => not_found(),
                }
            }
            (&Method::POST, Some("removePassword")) => {
                let Some(app) = self.apps.get_mut(object) else {
                    return not_found();
                };
                let key_id = body["keyId"].as_str().unwrap_or_default();
                let before = app.passwords.len();
                app.passwords.retain(|p| p.key_id != key_id);
                if app.passwords.len() == before {
                    return graph_error(
                        StatusCode::BAD_REQUEST,
                        "Request_BadRequest",
                        &format!("No password credential found with keyId '{key_id}'."),
                    );
                }
                Response::builder()
                    .status(StatusCode::NO_CONTENT)
                    .body(axum::body::Body::empty())
                    .unwrap_or_default()
            }
            _ => graph_error(
                StatusCode::METHOD_NOT_ALLOWED,
                "Request_BadRequest",
                "Specified HTTP method is not allowed for the request target.",
            ),
        }
    }

    /// Whether the request carries a token this simulator issued for `audience`.
    fn bearer_for(&self, request: &SimRequest<'_>, audience: Audience) -> bool {
        request
            .bearer()
            .and_then(|t| self.tokens.get(t))
            .is_some_and(|(_, a)| *a == audience)
    }

    /// The page size: the API's (`asked`, else its default), capped by the test's.
    fn page(&self, asked: usize) -> usize {
        self.page_size.map_or(asked, |cap| asked.min(cap)).max(1)
    }

    /// `GET /beta/auditLogs/signIns`.
    fn signins(&mut self, request: &SimRequest<'_>) -> Response {
        if !self.bearer_for(request, Audience::Graph) {
            return graph_error(
                StatusCode::UNAUTHORIZED,
                "InvalidAuthenticationToken",
                "Access token validation failure. Invalid audience.",
            );
        }
        if request.method != Method::GET {
            return graph_error(
                StatusCode::METHOD_NOT_ALLOWED,
                "Request_BadRequest",
                "Specified HTTP method is not allowed for the request target.",
            );
        }
        let bad = |message: &str| graph_error(StatusCode::BAD_REQUEST, "BadRequest", message);
        let params = query_pairs(request.query);
        if let Some((k, _)) = params
            .iter()
            .find(|(k, _)| !matches!(k.as_str(), "$filter" | "$top" | "$skiptoken"))
        {
            return bad(&format!("Query option '{k}' is not allowed."));
        }
        let get = |name: &str| {
            params
                .iter()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.clone())
        };
        let Some(filter) = get("$filter") else {
            return bad("This request needs a $filter.");
        };
        let Some((from, until, app)) = parse_signin_filter(&filter) else {
            return bad(&format!("Invalid filter clause: {filter}"));
        };
        let top = match get("$top").map(|t| t.parse::<usize>()) {
            None => GRAPH_PAGE,
            Some(Ok(n)) if (1..=GRAPH_PAGE).contains(&n) => n,
            Some(_) => return bad("Invalid page size specified: $top must be from 1 to 1000."),
        };
        let Some(offset) = skip(get("$skiptoken")) else {
            return bad("Invalid $skiptoken.");
        };
        let mut matching: Vec<(DateTime<Utc>, &serde_json::Value)> = self
            .signins
            .iter()
            .filter_map(|r| {
                let at = time_of(r, "createdDateTime")?;
                let service_principal = r["signInEventTypes"]
                    .as_array()
                    .is_some_and(|t| t.iter().any(|t| t == "servicePrincipal"));
                let app_ok = app.as_deref().is_none_or(|a| {
                    r["appId"]
                        .as_str()
                        .is_some_and(|x| x.eq_ignore_ascii_case(a))
                });
                (service_principal && app_ok && at >= from && at <= until).then_some((at, r))
            })
            .collect();
        matching.sort_by_key(|r| std::cmp::Reverse(r.0));
        let size = self.page(top);
        let page: Vec<serde_json::Value> = matching
            .iter()
            .skip(offset)
            .take(size)
            .map(|(_, r)| (*r).clone())
            .collect();
        let mut body = serde_json::json!({
            "@odata.context": format!("{}/beta/$metadata#auditLogs/signIns", self.base),
            "value": page,
        });
        if offset + size < matching.len() {
            let query = url::form_urlencoded::Serializer::new(String::new())
                .append_pair("$filter", &filter)
                .append_pair("$top", &top.to_string())
                .append_pair("$skiptoken", &skip_token(offset + size))
                .finish();
            body["@odata.nextLink"] =
                format!("{}/beta/auditLogs/signIns?{query}", self.base).into();
        }
        sim::json(StatusCode::OK, &body)
    }

    /// `GET /arm/subscriptions/{sub}/providers/Microsoft.Insights/eventtypes/management/values`.
    fn activity_log(&mut self, sub: &str, request: &SimRequest<'_>) -> Response {
        let known = request.bearer().and_then(|t| self.tokens.get(t));
        match known {
            None => {
                return arm_error(
                    StatusCode::UNAUTHORIZED,
                    "InvalidAuthenticationToken",
                    "The access token is invalid.",
                );
            }
            Some((_, Audience::Graph)) => {
                return arm_error(
                    StatusCode::UNAUTHORIZED,
                    "InvalidAuthenticationTokenAudience",
                    &format!(
                        "The access token has been obtained for wrong audience or resource '{}'. It should exactly match with one of the allowed audiences '{}/arm'.",
                        self.base, self.base
                    ),
                );
            }
            Some((_, Audience::Arm)) => {}
        }
        if request.method != Method::GET {
            return arm_error(
                StatusCode::METHOD_NOT_ALLOWED,
                "MethodNotAllowed",
                "The requested resource does not support http method.",
            );
        }
        let params = query_pairs(request.query);
        let get = |name: &str| {
            params
                .iter()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.clone())
        };
        match get("api-version").as_deref() {
            Some("2015-04-01") => {}
            Some(v) => {
                return arm_error(
                    StatusCode::BAD_REQUEST,
                    "InvalidApiVersionParameter",
                    &format!(
                        "The api-version '{v}' is invalid. The supported versions are '2015-04-01'."
                    ),
                );
            }
            None => {
                return arm_error(
                    StatusCode::BAD_REQUEST,
                    "MissingApiVersionParameter",
                    "The api-version query parameter (?api-version=) is required for all requests.",
                );
            }
        }
        if let Some((k, _)) = params
            .iter()
            .find(|(k, _)| !matches!(k.as_str(), "api-version" | "$filter" | "$skipToken"))
        {
            return arm_error(
                StatusCode::BAD_REQUEST,
                "BadRequest",
                &format!("Query option '{k}' is not supported."),
            );
        }
        let Some(events) = self.activity.get(sub) else {
            return arm_error(
                StatusCode::NOT_FOUND,
                "SubscriptionNotFound",
                &format!("The subscription '{sub}' could not be found."),
            );
        };
        let filter = get("$filter").unwrap_or_default();
        let Some((from, until)) = parse_activity_filter(&filter) else {
            return arm_error(
                StatusCode::BAD_REQUEST,
                "BadRequest",
                &format!(
                    "The filter '{filter}' is not valid: expected eventTimestamp ge '…' and eventTimestamp le '…'."
                ),
            );
        };
        let Some(offset) = skip(get("$skipToken")) else {
            return arm_error(StatusCode::BAD_REQUEST, "BadRequest", "Invalid $skipToken.");
        };
        let mut matching: Vec<(DateTime<Utc>, &serde_json::Value)> = events
            .iter()
            .filter_map(|r| {
                let at = time_of(r, "eventTimestamp")?;
                (at >= from && at <= until).then_some((at, r))
            })
            .collect();
        matching.sort_by_key(|r| std::cmp::Reverse(r.0));
        let size = self.page(ARM_PAGE);
        let page: Vec<serde_json::Value> = matching
            .iter()
            .skip(offset)
            .take(size)
            .map(|(_, r)| (*r).clone())
            .collect();
        let mut body = serde_json::json!({ "value": page });
        if offset + size < matching.len() {
            let query = url::form_urlencoded::Serializer::new(String::new())
                .append_pair("api-version", "2015-04-01")
                .append_pair("$filter", &filter)
                .append_pair("$skipToken", &skip_token(offset + size))
                .finish();
            body["nextLink"] = format!(
                "{}/arm/subscriptions/{sub}/providers/Microsoft.Insights/eventtypes/management/values?{query}",
                self.base
            )
            .into();
        }
        sim::json(StatusCode::OK, &body)
    }
}

/// A query's parameters, decoded.
fn query_pairs(query: Option<&str>) -> Vec<(String, String)> {
    url::form_urlencoded::parse(query.unwrap_or_default().as_bytes())
        .into_owned()
        .collect()
}

/// A record's time field, when it is an RFC 3339 string.
fn time_of(record: &serde_json::Value, field: &str) -> Option<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(record[field].as_str()?)
        .ok()
        .map(|t| t.with_timezone(&Utc))
}

fn skip_token(offset: usize) -> String {
    format!("rk{offset:x}")
}

/// The offset of a skip token; `Some(0)` without one, `None` for a token not issued here.
fn skip(token: Option<String>) -> Option<usize> {
    match token {
        None => Some(0),
        Some(t) => usize::from_str_radix(t.strip_prefix("rk")?, 16).ok(),
    }
}

fn rfc3339(text: &str) -> Option<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(text)
        .ok()
        .map(|t| t.with_timezone(&Utc))
}

/// `createdDateTime ge T and createdDateTime le T and signInEventTypes/any(t: t eq
/// 'servicePrincipal')[ and appId eq 'ID']`, exactly.
fn parse_signin_filter(filter: &str) -> Option<(DateTime<Utc>, DateTime<Utc>, Option<String>)> {
    let rest = filter.strip_prefix("createdDateTime ge ")?;
    let (from, rest) = rest.split_once(" and createdDateTime le ")?;
    let (until, rest) = rest.split_once(" and signInEventTypes/any(t: t eq 'servicePrincipal')")?;
    let app = match rest {
        "" => None,
        r => {
            let id = r.strip_prefix(" and appId eq '")?.strip_suffix('\'')?;
            if id.is_empty() || !id.chars().all(|c| c.is_ascii_hexdigit() || c == '-') {
                return None;
            }
            Some(id.to_owned())
        }
    };
    Some((rfc3339(from)?, rfc3339(until)?, app))
}

/// `eventTimestamp ge 'T' and eventTimestamp le 'T'`, exactly.
fn parse_activity_filter(filter: &str) -> Option<(DateTime<Utc>, DateTime<Utc>)> {
    let rest = filter.strip_prefix("eventTimestamp ge '")?;
    let (from, rest) = rest.split_once("' and eventTimestamp le '")?;
    let until = rest.strip_suffix('\'')?;
    Some((rfc3339(from)?, rfc3339(until)?))
}

/// ARM's error shape.
pub fn arm_error(status: StatusCode, code: &str, message: &str) -> Response {
    sim::json(
        status,
        &serde_json::json!({"error": {"code": code, "message": message}}),
    )
}

/// Graph's error shape.
pub fn graph_error(status: StatusCode, code: &str, message: &str) -> Response {
    let now = Utc::now().to_rfc3339_opts(SecondsFormat::Secs, true);
    sim::json(
        status,
        &serde_json::json!({"error": {"code": code, "message": message, "innerError": {"date": now, "request-id": "00000000-0000-4000-8000-000000000000"}}}),
    )
}

impl Simulator for AzureState {
    type Record = super::RecordedRequest;

    fn answer(&mut self, request: &SimRequest<'_>) -> Response {
        if let Some(graph_path) = request.path.strip_prefix("/v1.0") {
            return self.graph(graph_path, request);
        }
        if request.path == "/beta/auditLogs/signIns" {
            return self.signins(request);
        }
        if let Some(arm) = request.path.strip_prefix("/arm/subscriptions/")
            && let Some((sub, "providers/Microsoft.Insights/eventtypes/management/values")) =
                arm.split_once('/')
        {
            let sub = sub.to_owned();
            return self.activity_log(&sub, request);
        }
        let parts: Vec<&str> = request.path.trim_start_matches('/').split('/').collect();
        if let [tenant, "oauth2", "v2.0", "token"] = parts.as_slice()
            && request.method == Method::POST
        {
            return self.token_endpoint(tenant, request);
        }
        if let [tenant, "v2.0", ".well-known", "openid-configuration"] = parts.as_slice()
            && request.method == Method::GET
        {
            return self.openid_configuration(tenant);
        }
        graph_error(StatusCode::NOT_FOUND, "NotFound", "Not found.")
    }

    fn fault(&self, status: StatusCode) -> Response {
        let code = match status.as_u16() {
            429 => "TooManyRequests",
            503 => "serviceNotAvailable",
            _ => "generalException",
        };
        graph_error(status, code, "Injected fault.")
    }
}

/// A running Azure simulator.
pub struct AzureSandbox {
    server: SimServer<AzureState>,
}

impl std::fmt::Debug for AzureSandbox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AzureSandbox")
            .field("url", &self.server.base_url())
            .finish()
    }
}

impl AzureSandbox {
    /// Starts with tenant `tenant` and the admin app (one secret).
    pub async fn start(tenant: &str) -> std::io::Result<AzureSandbox> {
        let server = SimServer::start(|base| AzureState::new(tenant, base)).await?;
        Ok(AzureSandbox { server })
    }

    /// For the plan's `endpoints.azure_authority`.
    pub fn authority_url(&self) -> String {
        self.server.base_url()
    }

    /// For the plan's `endpoints.azure_graph`.
    pub fn graph_url(&self) -> String {
        format!("{}/v1.0", self.server.base_url())
    }

    /// For the plan's `endpoints.azure_management` (Azure Resource Manager).
    pub fn management_url(&self) -> String {
        format!("{}/arm", self.server.base_url())
    }

    /// rekey's own identity (the `AZURE_*` variables).
    pub fn admin_identity(&self) -> Option<AzureIdentity> {
        self.server.with_state(|s| s.admin.clone())
    }

    pub fn server(&self) -> &SimServer<AzureState> {
        &self.server
    }

    pub fn with_state<R>(&self, f: impl FnOnce(&mut AzureState) -> R) -> R {
        self.server.with_state(f)
    }
}
