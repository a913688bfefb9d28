//! The `azure-app-secret` provider against the Azure simulator: the shared conformance suite
//! (no deactivate, so those steps are skipped; a removed secret gets no token), plus Azure
//! specifics: Graph's error bodies quoted verbatim with every secret redacted, bad answers,
//! the display name and end date sent to addPassword, rekey's own credentials.

mod support;

use async_trait::async_trait;
use rekey::plan::{
    Endpoints, Located, PlanDuration, Principal, PrincipalField, ProviderKind, Target,
};
use rekey::providers::azure::{AzureAppSecretProvider, AzureIdentity};
use rekey::providers::{CredentialStatus, Provider, ProviderError};
use rekey::sandbox::azure::AzureSandbox;
use rekey::secret::Secret;
use support::conformance::{self, Harness, Transcript, target};
use support::{LogCapture, assert_no_secret};

const TENANT: &str = "72f988bf-86f1-41af-91ab-2d7cd011db47";

struct AzureHarness {
    sandbox: AzureSandbox,
    provider: AzureAppSecretProvider,
    admin: AzureIdentity,
}

fn endpoints(sandbox: &AzureSandbox) -> Endpoints {
    Endpoints {
        azure_authority: Some(Located::new(sandbox.authority_url())),
        azure_graph: Some(Located::new(sandbox.graph_url())),
        ..Endpoints::default()
    }
}

impl AzureHarness {
    async fn start() -> AzureHarness {
        let sandbox = AzureSandbox::start(TENANT).await.unwrap();
        let admin = sandbox.admin_identity().unwrap();
        let provider =
            AzureAppSecretProvider::new(&endpoints(&sandbox), Some(admin.clone())).unwrap();
        AzureHarness {
            sandbox,
            provider,
            admin,
        }
    }
}

fn azure_target(object_id: &str) -> Target {
    target(
        &format!("azure-{object_id}"),
        ProviderKind::AzureAppSecret,
        Principal::default()
            .with(PrincipalField::AppId, object_id.to_owned())
            .with(PrincipalField::TenantId, TENANT.to_owned())
            .with(PrincipalField::Title, "rekey-ci"),
    )
}

#[async_trait]
impl Harness for AzureHarness {
    fn provider(&self) -> &dyn Provider {
        &self.provider
    }

    async fn fresh_principal(&self, name: &str) -> Target {
        let (object, _) = self.sandbox.with_state(|s| s.add_app(name));
        azure_target(&object)
    }

    fn missing_principal(&self) -> Target {
        azure_target("00000000-0000-4000-8000-000000000000")
    }

    fn unknown_credential_id(&self) -> String {
        "11111111-1111-4111-8111-111111111111".to_owned()
    }
}

async fn run_scenario<F>(scenario: F)
where
    F: AsyncFnOnce(&dyn Harness) -> Transcript,
{
    let h = AzureHarness::start().await;
    let logs = LogCapture::start();
    let mut transcript = scenario(&h).await;
    let log_text = logs.text();
    assert!(
        log_text.contains("azure-app-secret"),
        "the capture saw the provider's lines"
    );
    transcript
        .secrets
        .push(h.admin.client_secret.expose().to_owned());
    let debug = format!("{:?}", h.provider);
    transcript.assert_clean(&[("logs", &log_text), ("provider Debug", &debug)]);
}

#[tokio::test]
async fn conformance_lifecycle() {
    run_scenario(async |h| conformance::lifecycle(h).await).await;
}

#[tokio::test]
async fn conformance_capacity() {
    // Graph sets no per-app limit rekey could rely on: the scenario has nothing to check.
    let h = AzureHarness::start().await;
    assert_eq!(h.provider.capabilities().max_credentials, None);
    let t = conformance::capacity(&h).await;
    assert!(t.texts.is_empty());
}

#[tokio::test]
async fn conformance_wrong_principal() {
    run_scenario(async |h| conformance::wrong_principal(h).await).await;
}

#[tokio::test]
async fn conformance_missing_principal_and_credential() {
    run_scenario(async |h| conformance::missing_things(h).await).await;
}

#[tokio::test]
async fn capabilities_say_no_deactivate() {
    let h = AzureHarness::start().await;
    let caps = h.provider.capabilities();
    assert!(!caps.deactivate && !caps.reactivate && !caps.manual_mint);
    let t = h.fresh_principal("no-disable").await;
    let err = h.provider.deactivate(&t, "x").await.unwrap_err();
    assert!(matches!(err, ProviderError::Unsupported { .. }), "{err:?}");
}

/// Graph's error body comes back verbatim — code, message, innerError — with any secret rekey
/// knows (its own client secret, its token) replaced.
#[tokio::test]
async fn graph_errors_are_verbatim_minus_secrets() {
    let h = AzureHarness::start().await;
    let t = h.fresh_principal("errors").await;
    let leak = h.admin.client_secret.expose();
    let body = format!(
        r#"{{"error":{{"code":"Authorization_RequestDenied","message":"Insufficient privileges to complete the operation. (client secret {leak} was used)","innerError":{{"request-id":"abc-123"}}}}}}"#
    );
    h.sandbox
        .server()
        .fail_next("addPassword$", 1, 403, Some(&body))
        .unwrap();
    let err = h.provider.mint(&t).await.unwrap_err();
    assert!(matches!(err, ProviderError::Failed(_)), "{err:?}");
    let text = err.to_string();
    assert!(
        text.contains(r#""code":"Authorization_RequestDenied""#),
        "{text}"
    );
    assert!(
        text.contains(
            "Insufficient privileges to complete the operation. (client secret [redacted] was used)"
        ),
        "{text}"
    );
    assert!(text.contains(r#""request-id":"abc-123""#), "{text}");
    assert_no_secret("graph error", &format!("{text} {err:?}"), &[leak]);

    // The real 404 shape, from the simulator.
    let missing = h.missing_principal();
    let err = h.provider.inspect(&missing).await.unwrap_err();
    assert!(matches!(err, ProviderError::NotFound(_)), "{err:?}");
    assert!(
        err.to_string().contains("Request_ResourceNotFound"),
        "{err}"
    );
}

#[tokio::test]
async fn bad_answers_are_mapped() {
    let h = AzureHarness::start().await;
    let t = h.fresh_principal("flaky").await;
    let sim = h.sandbox.server();
    sim.fail_next("addPassword$", 1, 503, None).unwrap();
    assert!(h.provider.mint(&t).await.unwrap_err().is_transient());
    sim.fail_next("addPassword$", 1, 429, None).unwrap();
    assert!(h.provider.mint(&t).await.unwrap_err().is_transient());
    sim.fail_next(
        "addPassword$",
        1,
        200,
        Some(r#"{"keyId": 7, "secretText": ["hunter2-leak"]}"#),
    )
    .unwrap();
    let err = h.provider.mint(&t).await.unwrap_err();
    assert!(!err.to_string().contains("hunter2-leak"), "{err}");
    // The token endpoint down: verification is Transient, not Rejected.
    let m = h.provider.mint(&t).await.unwrap();
    sim.fail_next("oauth2/v2.0/token$", 1, 502, None).unwrap();
    assert!(h.provider.verify(&t, &m).await.unwrap_err().is_transient());
    h.provider.verify(&t, &m).await.unwrap();
}

/// addPassword gets the plan's title and an end date twice the target's max_age away; the
/// listing shows start dates, and an expired secret is listed Inactive and gets no token.
#[tokio::test]
async fn display_name_end_date_and_expiry() {
    let h = AzureHarness::start().await;
    let mut t = h.fresh_principal("dates").await;
    t.policy.max_age = Some(Located::new(PlanDuration::from_days(30)));
    let object = t.principal.app_id().unwrap().value.clone();
    let m = h.provider.mint(&t).await.unwrap();
    let (name, end) = h
        .sandbox
        .with_state(|s| s.password_meta(&object, &m.id))
        .unwrap();
    // The plan's title, then rekey's mark (what the orphan sweep recognizes).
    let expected = format!("rekey-ci {}", rekey::providers::mint_mark(&t));
    assert_eq!(name.as_deref(), Some(expected.as_str()));
    let days = (end - chrono::Utc::now()).num_days();
    assert!((59..=60).contains(&days), "end date {days} days away");
    let i = h.provider.inspect(&t).await.unwrap();
    assert!(i.principal.contains("dates"), "{}", i.principal);
    assert_eq!(i.credentials.len(), 1);
    assert!(i.credentials[0].created_at.is_some());

    let expired = h
        .sandbox
        .with_state(|s| {
            s.add_password(
                &object,
                Some("old"),
                Some(chrono::Utc::now() - chrono::Duration::days(1)),
            )
        })
        .unwrap();
    let i = h.provider.inspect(&t).await.unwrap();
    let status = |id: &str| i.credentials.iter().find(|c| c.id == id).map(|c| c.status);
    assert_eq!(status(&m.id), Some(CredentialStatus::Active));
    assert_eq!(status(&expired.0), Some(CredentialStatus::Inactive));
    let old = rekey::providers::Minted {
        id: expired.0.clone(),
        fields: [("client_secret".to_owned(), expired.1.clone())].into(),
    };
    let err = h.provider.verify(&t, &old).await.unwrap_err();
    assert!(err.to_string().contains("AADSTS7000222"), "{err}");
    assert_no_secret(
        "expired",
        &format!("{err:?}"),
        &[expired.1.expose(), m.fields["client_secret"].expose()],
    );
}

#[tokio::test]
async fn rekey_own_credentials() {
    let h = AzureHarness::start().await;
    let t = h.fresh_principal("own").await;
    let none = AzureAppSecretProvider::new(&endpoints(&h.sandbox), None).unwrap();
    assert!(
        none.inspect(&t)
            .await
            .unwrap_err()
            .to_string()
            .contains("AZURE_CLIENT_SECRET")
    );
    let wrong = AzureIdentity {
        client_secret: Secret::new("not-the-secret-0123456789"),
        ..h.admin.clone()
    };
    let p = AzureAppSecretProvider::new(&endpoints(&h.sandbox), Some(wrong)).unwrap();
    let err = p.inspect(&t).await.unwrap_err();
    assert!(matches!(err, ProviderError::Failed(_)), "{err:?}");
    assert!(err.to_string().contains("AADSTS7000215"), "{err}");
    assert!(!err.to_string().contains("not-the-secret"));
}
