//! Azure app registration client secrets: the `azure-app-secret` provider, over Microsoft Graph.
//!
//! Operations (Graph v1.0, `{azure_graph}`): `GET /applications/{id}?$select=…` (inspect: the
//! app's `appId` and `passwordCredentials`), `POST /applications/{id}/addPassword` (mint: the
//! answer's `secretText` is the minted `client_secret` field, its `keyId` the credential id),
//! `POST /applications/{id}/removePassword` (revoke). Client secrets cannot be disabled, so the
//! capabilities say no deactivate: during the grace period the old secret stays valid, and the
//! engine's report says so.
//!
//! Verification asks `{azure_authority}/{tenant}/oauth2/v2.0/token` for a client-credentials
//! token with the app's client id and the NEW secret. rekey's own Graph token comes the same
//! way from `AZURE_TENANT_ID`, `AZURE_CLIENT_ID`, `AZURE_CLIENT_SECRET` (the variables of the
//! Azure SDKs' environment credential). Both go through [`AzureTokens`], which the hunt's Azure
//! fetchers share (a Graph token for sign-ins, an ARM token for the Activity Log: one
//! [`AzureTokens`] per scope, see [`graph_scope`] and [`management_scope`]).
//!
//! Why reqwest rather than azure_identity: the authority must follow the plan's `endpoints:`
//! per run (the sandbox stands in for Entra ID); azure_identity's client-secret credential
//! takes its authority host from process-wide configuration (`AZURE_AUTHORITY_HOST`), and
//! verification needs Entra's own error answer (`AADSTS…` codes) to tell a refused secret from
//! an outage. A client-credentials request is one form POST. Graph's error bodies are quoted
//! verbatim in errors, with every secret rekey knows replaced.

use super::rest::{self, TokenOutcome};
use super::{
    Capabilities, CredentialInfo, CredentialStatus, Inspection, Minted, Provider, ProviderError,
};
use crate::plan::{Endpoints, ProviderKind, Target};
use crate::secret::Secret;
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

pub const DEFAULT_AUTHORITY: &str = "https://login.microsoftonline.com";
pub const DEFAULT_GRAPH: &str = "https://graph.microsoft.com/v1.0";

/// The minted field.
pub const FIELD_CLIENT_SECRET: &str = "client_secret";

/// The scope of a Graph token in the global cloud (client credentials always ask for
/// `.default`); national clouds' Graph hosts (graph.microsoft.us, microsoftgraph.chinacloudapi.cn)
/// have their own, derived from the Graph URL by [`graph_scope`].
const GRAPH_SCOPE: &str = "https://graph.microsoft.com/.default";

/// The resource a Graph token must be issued for: the Graph URL without its API version
/// (`https://graph.microsoft.com/v1.0` → `https://graph.microsoft.com/.default`).
pub fn graph_scope(graph: &str) -> String {
    match url::Url::parse(graph) {
        Ok(u) if u.host_str().is_some() => {
            let path = u.path().trim_end_matches('/');
            let path = match path.rsplit_once('/') {
                Some((rest, "v1.0" | "beta")) => rest,
                _ => path,
            };
            format!("{}{path}/.default", u.origin().ascii_serialization())
        }
        _ => GRAPH_SCOPE.to_owned(),
    }
}

/// The scope of an Azure Resource Manager token in the global cloud.
const MANAGEMENT_SCOPE: &str = "https://management.azure.com/.default";

/// The resource an ARM token must be issued for: the ARM URL itself
/// (`https://management.azure.com` → `https://management.azure.com/.default`;
/// management.usgovcloudapi.net, management.chinacloudapi.cn alike).
pub fn management_scope(management: &str) -> String {
    match url::Url::parse(management) {
        Ok(u) if u.host_str().is_some() => format!(
            "{}{}/.default",
            u.origin().ascii_serialization(),
            u.path().trim_end_matches('/')
        ),
        _ => MANAGEMENT_SCOPE.to_owned(),
    }
}

/// Lifetime of a new secret when the target's policy names no `max_age`.
const DEFAULT_LIFETIME_DAYS: i64 = 180;

const TOKEN_MARGIN: Duration = Duration::from_secs(120);

/// rekey's own identity at Entra ID (a client secret of the rotating app registration).
#[derive(Clone)]
pub struct AzureIdentity {
    pub tenant_id: String,
    pub client_id: String,
    pub client_secret: Secret,
}

impl std::fmt::Debug for AzureIdentity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AzureIdentity")
            .field("tenant_id", &self.tenant_id)
            .field("client_id", &self.client_id)
            .finish_non_exhaustive()
    }
}

impl AzureIdentity {
    /// From `AZURE_TENANT_ID`, `AZURE_CLIENT_ID`, `AZURE_CLIENT_SECRET`; `None` unless all three
    /// are set.
    pub fn from_env() -> Option<AzureIdentity> {
        let get = |n: &str| std::env::var(n).ok().filter(|v| !v.is_empty());
        Some(AzureIdentity {
            tenant_id: get("AZURE_TENANT_ID")?,
            client_id: get("AZURE_CLIENT_ID")?,
            client_secret: Secret::new(get("AZURE_CLIENT_SECRET")?),
        })
    }
}

/// Client-credentials tokens at Entra ID (`{authority}/{tenant}/oauth2/v2.0/token`) for one
/// scope: rekey's own token (from [`AzureIdentity`], cached, renewed before it expires) and
/// one-off grants with any app's secret (verification of a minted secret). Shared by the
/// `azure-app-secret` provider (Graph scope) and the hunt's Azure fetchers (Graph sign-ins,
/// ARM Activity Log).
pub struct AzureTokens {
    http: reqwest::Client,
    authority: String,
    scope: String,
    identity: Option<AzureIdentity>,
    cached: Mutex<Option<(Secret, Instant)>>,
}

impl std::fmt::Debug for AzureTokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AzureTokens")
            .field("authority", &self.authority)
            .field("scope", &self.scope)
            .field("identity", &self.identity)
            .finish_non_exhaustive()
    }
}

impl AzureTokens {
    /// Tokens for `scope` (see [`graph_scope`], [`management_scope`]) from `authority`.
    pub fn new(
        http: reqwest::Client,
        authority: &str,
        scope: String,
        identity: Option<AzureIdentity>,
    ) -> AzureTokens {
        AzureTokens {
            http,
            authority: authority.trim_end_matches('/').to_owned(),
            scope,
            identity,
            cached: Mutex::new(None),
        }
    }

    pub fn identity(&self) -> Option<&AzureIdentity> {
        self.identity.as_ref()
    }

    fn token_url(&self, tenant: &str) -> String {
        format!("{}/{tenant}/oauth2/v2.0/token", self.authority)
    }

    /// A client-credentials token request; the secret goes in the form body only.
    pub async fn client_credentials(
        &self,
        what: &str,
        tenant: &str,
        client_id: &str,
        secret: &Secret,
    ) -> Result<TokenOutcome, ProviderError> {
        tracing::debug!(tenant, client_id, scope = %self.scope, "Azure: client-credentials token request");
        rest::token_request(
            &self.http,
            what,
            &self.token_url(tenant),
            &[
                ("grant_type", "client_credentials"),
                ("client_id", client_id),
                ("client_secret", secret.expose()),
                ("scope", self.scope.as_str()),
            ],
            &[secret.expose()],
        )
        .await
    }

    /// rekey's own token: cached, renewed before it expires.
    pub async fn token(&self) -> Result<Secret, ProviderError> {
        let Some(id) = &self.identity else {
            return Err(ProviderError::Failed(
                "no Azure credentials for rekey: set AZURE_TENANT_ID, AZURE_CLIENT_ID and AZURE_CLIENT_SECRET".into(),
            ));
        };
        if let Ok(cached) = self.cached.lock()
            && let Some((token, renew_at)) = cached.as_ref()
            && Instant::now() < *renew_at
        {
            return Ok(token.clone());
        }
        let what = format!("Azure token for rekey (client {})", id.client_id);
        match self
            .client_credentials(&what, &id.tenant_id, &id.client_id, &id.client_secret)
            .await?
        {
            TokenOutcome::Granted(token, lifetime) => {
                if let Ok(mut cached) = self.cached.lock() {
                    *cached = Some((
                        token.clone(),
                        Instant::now() + lifetime.saturating_sub(TOKEN_MARGIN),
                    ));
                }
                Ok(token)
            }
            TokenOutcome::Refused(why) => Err(ProviderError::Failed(why)),
        }
    }
}

/// The `azure-app-secret` provider: client secrets of the app registration whose object id is
/// `target.principal.app_id`, in tenant `target.principal.tenant_id`.
pub struct AzureAppSecretProvider {
    http: reqwest::Client,
    graph: String,
    tokens: AzureTokens,
}

impl std::fmt::Debug for AzureAppSecretProvider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AzureAppSecretProvider")
            .field("graph", &self.graph)
            .field("tokens", &self.tokens)
            .finish_non_exhaustive()
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Application {
    #[serde(default)]
    app_id: String,
    #[serde(default)]
    display_name: Option<String>,
    #[serde(default)]
    password_credentials: Vec<PasswordCredential>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct PasswordCredential {
    key_id: String,
    #[serde(default)]
    display_name: Option<String>,
    #[serde(default)]
    start_date_time: Option<DateTime<Utc>>,
    #[serde(default)]
    end_date_time: Option<DateTime<Utc>>,
    #[serde(default)]
    secret_text: Option<String>,
}

impl AzureAppSecretProvider {
    pub fn new(
        endpoints: &Endpoints,
        identity: Option<AzureIdentity>,
    ) -> Result<Self, ProviderError> {
        let pick = |v: &Option<crate::plan::Located<String>>, default: &str| {
            v.as_ref()
                .map(|l| l.value.trim_end_matches('/').to_owned())
                .unwrap_or_else(|| default.to_owned())
        };
        let http = rest::client()?;
        let graph = pick(&endpoints.azure_graph, DEFAULT_GRAPH);
        let tokens = AzureTokens::new(
            http.clone(),
            &pick(&endpoints.azure_authority, DEFAULT_AUTHORITY),
            graph_scope(&graph),
            identity,
        );
        Ok(AzureAppSecretProvider {
            http,
            graph,
            tokens,
        })
    }

    /// rekey's own Graph token.
    async fn token(&self) -> Result<Secret, ProviderError> {
        self.tokens.token().await.map_err(|e| match e {
            ProviderError::Failed(m) => ProviderError::Failed(format!("azure-app-secret: {m}")),
            other => other,
        })
    }

    /// An authenticated Graph request; `Ok` holds a 2xx body. `secrets` are redacted from any
    /// quoted error body (rekey's token and client secret always are).
    async fn call(
        &self,
        what: &str,
        method: reqwest::Method,
        path: &str,
        body: Option<serde_json::Value>,
        secrets: &[&str],
    ) -> Result<String, ProviderError> {
        let token = self.token().await?;
        let url = format!("{}{path}", self.graph);
        let mut request = self
            .http
            .request(method.clone(), &url)
            .bearer_auth(token.expose());
        if let Some(body) = body {
            request = request.json(&body);
        }
        tracing::debug!(%method, url, "azure-app-secret: {what}");
        let answer = rest::send(what, request).await?;
        if (200..300).contains(&answer.status) {
            return Ok(answer.body);
        }
        let mut all: Vec<&str> = secrets.to_vec();
        all.push(token.expose());
        if let Some(id) = self.tokens.identity() {
            all.push(id.client_secret.expose());
        }
        // Graph's answer verbatim (minus secrets): its code and message say what to fix.
        let text = format!(
            "azure-app-secret {what}: HTTP {}: {}",
            answer.status,
            rest::quote(&answer.body, &all)
        );
        Err(rest::by_status(answer.status, text))
    }

    async fn application(&self, target: &Target) -> Result<Application, ProviderError> {
        let (app, _) = principal_of(target)?;
        let what = format!("read of application {app}");
        let body = self
            .call(
                &what,
                reqwest::Method::GET,
                &format!("/applications/{app}?$select=id,appId,displayName,passwordCredentials"),
                None,
                &[],
            )
            .await?;
        serde_json::from_str(&body).map_err(|e| {
            ProviderError::Failed(format!("azure-app-secret {what}: unreadable answer: {e}"))
        })
    }
}

#[async_trait]
impl Provider for AzureAppSecretProvider {
    fn kind(&self) -> ProviderKind {
        ProviderKind::AzureAppSecret
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            deactivate: false,
            reactivate: false,
            manual_mint: false,
            max_credentials: None,
        }
    }

    fn marks(&self) -> bool {
        true
    }

    async fn inspect(&self, target: &Target) -> Result<Inspection, ProviderError> {
        let (app, _) = principal_of(target)?;
        let a = self.application(target).await?;
        let now = Utc::now();
        Ok(Inspection {
            principal: match &a.display_name {
                Some(name) => format!("application {app} (client {}, {name})", a.app_id),
                None => format!("application {app} (client {})", a.app_id),
            },
            credentials: a
                .password_credentials
                .into_iter()
                .map(|p| CredentialInfo {
                    label: p.display_name,
                    id: p.key_id,
                    // An expired secret no longer authenticates: as good as disabled.
                    status: match p.end_date_time {
                        Some(end) if end <= now => CredentialStatus::Inactive,
                        _ => CredentialStatus::Active,
                    },
                    created_at: p.start_date_time,
                    last_used: None,
                    last_used_service: None,
                })
                .collect(),
        })
    }

    async fn mint(&self, target: &Target) -> Result<Minted, ProviderError> {
        let (app, _) = principal_of(target)?;
        let display_name = target
            .principal
            .title()
            .map(|t| t.value.clone())
            .unwrap_or_else(|| format!("rekey {}", Utc::now().format("%Y-%m-%d")));
        // rekey's mark, so that an orphan sweep can tell this secret from a colleague's.
        let display_name = format!("{display_name} {}", super::mint_mark(target));
        // A scheduled run rotates at max_age: the secret lives twice that, so a late run still
        // finds it valid.
        let lifetime = target
            .policy
            .max_age
            .as_ref()
            .map(|m| m.value.to_chrono() * 2)
            .unwrap_or_else(|| chrono::Duration::days(DEFAULT_LIFETIME_DAYS));
        let end = Utc::now()
            .checked_add_signed(lifetime)
            .unwrap_or_else(|| Utc::now() + chrono::Duration::days(DEFAULT_LIFETIME_DAYS));
        let what = format!("addPassword on application {app}");
        let body = self
            .call(
                &what,
                reqwest::Method::POST,
                &format!("/applications/{app}/addPassword"),
                Some(serde_json::json!({
                    "passwordCredential": {
                        "displayName": display_name,
                        "endDateTime": end.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
                    }
                })),
                &[],
            )
            .await?;
        // The answer holds the secret: serde's message could quote it, so position only.
        let created: PasswordCredential = serde_json::from_str(&body).map_err(|e| {
            ProviderError::Failed(format!(
                "azure-app-secret {what}: unreadable answer (JSON error at line {}, column {})",
                e.line(),
                e.column()
            ))
        })?;
        let Some(secret) = created
            .secret_text
            .filter(|s| !s.is_empty())
            .map(Secret::new)
        else {
            return Err(ProviderError::Failed(format!(
                "azure-app-secret {what}: secret {} was created but the answer has no secretText",
                created.key_id
            )));
        };
        tracing::debug!(key = %created.key_id, "azure-app-secret: secret added");
        Ok(Minted {
            id: created.key_id,
            fields: BTreeMap::from([(FIELD_CLIENT_SECRET.to_owned(), secret)]),
        })
    }

    async fn verify(&self, target: &Target, minted: &Minted) -> Result<(), ProviderError> {
        let (_, tenant) = principal_of(target)?;
        let secret = minted.fields.get(FIELD_CLIENT_SECRET).ok_or_else(|| {
            ProviderError::Failed(format!(
                "azure-app-secret verify of {}: no client_secret field",
                minted.id
            ))
        })?;
        let app = self.application(target).await?;
        let what = format!(
            "azure-app-secret verify of secret {} (token for client {})",
            minted.id, app.app_id
        );
        match self
            .tokens
            .client_credentials(&what, tenant, &app.app_id, secret)
            .await?
        {
            TokenOutcome::Granted(_, _) => Ok(()),
            // New secrets take a moment to reach every Entra replica: the engine retries.
            TokenOutcome::Refused(why) => Err(ProviderError::Rejected(why)),
        }
    }

    async fn deactivate(&self, _target: &Target, _id: &str) -> Result<(), ProviderError> {
        Err(ProviderError::Unsupported {
            provider: ProviderKind::AzureAppSecret,
            operation: "deactivate",
        })
    }

    async fn reactivate(&self, _target: &Target, _id: &str) -> Result<(), ProviderError> {
        Err(ProviderError::Unsupported {
            provider: ProviderKind::AzureAppSecret,
            operation: "reactivate",
        })
    }

    async fn revoke(&self, target: &Target, credential_id: &str) -> Result<(), ProviderError> {
        let (app, _) = principal_of(target)?;
        if credential_id.is_empty()
            || !credential_id
                .chars()
                .all(|c| c.is_ascii_hexdigit() || c == '-')
        {
            return Err(ProviderError::Failed(format!(
                "azure-app-secret: `{credential_id}` is not a keyId (a GUID)"
            )));
        }
        let what = format!("removePassword {credential_id} on application {app}");
        let result = self
            .call(
                &what,
                reqwest::Method::POST,
                &format!("/applications/{app}/removePassword"),
                Some(serde_json::json!({"keyId": credential_id})),
                &[],
            )
            .await;
        match result {
            Ok(_) | Err(ProviderError::NotFound(_)) => Ok(()),
            // Graph refuses an unknown keyId with a 400: gone is the goal, so look before
            // reporting a failure.
            Err(ProviderError::Failed(m)) => {
                let listed = self.inspect(target).await?;
                if listed.credentials.iter().any(|c| c.id == credential_id) {
                    Err(ProviderError::Failed(m))
                } else {
                    Ok(())
                }
            }
            Err(e) => Err(e),
        }
    }
}

/// (application object id, tenant id) of an azure-app-secret target.
fn principal_of(target: &Target) -> Result<(&str, &str), ProviderError> {
    if *target.provider != ProviderKind::AzureAppSecret {
        return Err(ProviderError::Failed(format!(
            "target {} is {}, not azure-app-secret",
            target.id.as_str(),
            target.provider.as_str()
        )));
    }
    fn get(v: Option<&crate::plan::Located<String>>) -> Option<&str> {
        v.map(|v| v.as_str()).filter(|s| {
            !s.is_empty()
                && s.chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_'))
        })
    }
    match (
        get(target.principal.app_id()),
        get(target.principal.tenant_id()),
    ) {
        (Some(app), Some(tenant)) => Ok((app, tenant)),
        _ => Err(ProviderError::Failed(format!(
            "target {}: azure-app-secret needs principal.app_id (the application's object id) and principal.tenant_id",
            target.id.as_str()
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scopes_follow_the_graph_host() {
        assert_eq!(graph_scope(DEFAULT_GRAPH), GRAPH_SCOPE);
        assert_eq!(
            graph_scope("https://graph.microsoft.us/v1.0"),
            "https://graph.microsoft.us/.default"
        );
        assert_eq!(graph_scope("not a url"), GRAPH_SCOPE);
        assert_eq!(graph_scope("https://graph.microsoft.com/beta"), GRAPH_SCOPE);
        // A simulator's Graph under a path keeps the path, without the version.
        assert_eq!(
            graph_scope("http://127.0.0.1:9/v1.0"),
            "http://127.0.0.1:9/.default"
        );
    }

    #[test]
    fn management_scopes_follow_the_arm_url() {
        assert_eq!(
            management_scope("https://management.azure.com"),
            MANAGEMENT_SCOPE
        );
        assert_eq!(
            management_scope("https://management.usgovcloudapi.net/"),
            "https://management.usgovcloudapi.net/.default"
        );
        assert_eq!(
            management_scope("http://127.0.0.1:9/arm"),
            "http://127.0.0.1:9/arm/.default"
        );
        assert_eq!(management_scope("nope"), MANAGEMENT_SCOPE);
    }
}
