//! The Azure simulator: Entra ID's token endpoint (`/{tenant}/oauth2/v2.0/token`, client
//! credentials) and Microsoft Graph's application password credentials (`/v1.0/applications/
//! {id}`, `addPassword`, `removePassword`), behind one base URL that a plan's
//! `endpoints: {azure_authority: URL, azure_graph: URL/v1.0}` points at.
//!
//! The token endpoint checks the client secret against the app's live password credentials:
//! a removed or expired secret gets Entra's `invalid_client` (AADSTS7000215 / AADSTS7000222).
//! Graph calls need a bearer token this simulator issued; errors use Graph's shape
//! `{"error": {"code", "message", "innerError"}}`. removePassword of an unknown keyId answers
//! 400 `Request_BadRequest` here (the provider does not depend on which 4xx Graph uses).

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
}

#[derive(Clone)]
struct App {
    app_id: String,
    display_name: String,
    passwords: Vec<StoredPassword>,
}

/// The simulated tenant.
pub struct AzureState {
    tenant: String,
    /// Object id → app.
    apps: BTreeMap<String, App>,
    tokens: HashMap<String, String>,
    rng: Rng,
    admin: Option<AzureIdentity>,
}

impl AzureState {
    fn new(tenant: &str) -> AzureState {
        let mut state = AzureState {
            tenant: tenant.to_owned(),
            apps: BTreeMap::new(),
            tokens: HashMap::new(),
            rng: Rng::from_entropy(),
            admin: None,
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
        let Some(password) = app.passwords.iter().find(|p| p.secret.expose() == given) else {
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
        let token = format!("eyJ0eXAiOiJKV1Qi.{}", self.rng.string(fake::ALNUM, 60));
        self.tokens.insert(token.clone(), client_id);
        sim::json(
            StatusCode::OK,
            &serde_json::json!({"token_type": "Bearer", "expires_in": 3599, "ext_expires_in": 3599, "access_token": token}),
        )
    }

    fn graph(&mut self, path: &str, request: &SimRequest<'_>) -> Response {
        if !request
            .bearer()
            .is_some_and(|t| self.tokens.contains_key(t))
        {
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
    fn answer(&mut self, request: &SimRequest<'_>) -> Response {
        if let Some(graph_path) = request.path.strip_prefix("/v1.0") {
            return self.graph(graph_path, request);
        }
        let parts: Vec<&str> = request.path.trim_start_matches('/').split('/').collect();
        if let [tenant, "oauth2", "v2.0", "token"] = parts.as_slice()
            && request.method == Method::POST
        {
            return self.token_endpoint(tenant, request);
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
        let server = SimServer::start(|_| AzureState::new(tenant)).await?;
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
