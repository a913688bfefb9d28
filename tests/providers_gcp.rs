//! The `gcp-sa-key` provider against the GCP simulator: the shared conformance suite (real RSA
//! keys, a token endpoint that checks JWT signatures, IAM's 10-key limit), plus GCP specifics:
//! a forged key gets no token, rekey's own credentials (key file or access token), quota with
//! keys made before rekey, and bad answers (5xx, 429, unreadable JSON) mapped without leaking.

mod support;

use async_trait::async_trait;
use rekey::plan::{Endpoints, Located, Principal, PrincipalField, ProviderKind, Target};
use rekey::providers::gcp::{GcpAuth, GcpSaKeyProvider, ServiceAccountKey};
use rekey::providers::{CredentialStatus, Minted, Provider, ProviderError};
use rekey::sandbox::gcp::GcpSandbox;
use rekey::secret::Secret;
use std::collections::BTreeMap;
use support::conformance::{self, Harness, Transcript, target};
use support::{LogCapture, assert_no_secret};

const PROJECT: &str = "acme-prod";

struct GcpHarness {
    sandbox: GcpSandbox,
    provider: GcpSaKeyProvider,
    admin_key: Secret,
}

fn endpoints(sandbox: &GcpSandbox) -> Endpoints {
    Endpoints {
        gcp_iam: Some(Located::new(sandbox.iam_url())),
        gcp_token: Some(Located::new(sandbox.token_url())),
        ..Endpoints::default()
    }
}

impl GcpHarness {
    async fn start() -> GcpHarness {
        let sandbox = GcpSandbox::start(PROJECT).await.unwrap();
        let admin_key = sandbox.admin_key_json().unwrap();
        let auth = GcpAuth::KeyFile(Box::new(
            ServiceAccountKey::parse(admin_key.expose()).unwrap(),
        ));
        let provider = GcpSaKeyProvider::new(&endpoints(&sandbox), auth).unwrap();
        GcpHarness {
            sandbox,
            provider,
            admin_key,
        }
    }
}

fn gcp_target(email: &str) -> Target {
    target(
        &format!("gcp-{email}"),
        ProviderKind::GcpSaKey,
        Principal::default().with(PrincipalField::ServiceAccount, email.to_owned()),
    )
}

fn email(name: &str) -> String {
    format!("{name}@{PROJECT}.iam.gserviceaccount.com")
}

#[async_trait]
impl Harness for GcpHarness {
    fn provider(&self) -> &dyn Provider {
        &self.provider
    }

    async fn fresh_principal(&self, name: &str) -> Target {
        let email = self.sandbox.with_state(|s| s.add_account(name));
        gcp_target(&email)
    }

    fn missing_principal(&self) -> Target {
        gcp_target(&email("nobody"))
    }

    fn unknown_credential_id(&self) -> String {
        // missing_things asks for it on its "unknown-credential" principal.
        format!(
            "projects/{PROJECT}/serviceAccounts/{}/keys/{}",
            email("unknown-credential"),
            "0".repeat(40)
        )
    }
}

async fn run_scenario<F>(scenario: F)
where
    F: AsyncFnOnce(&dyn Harness) -> Transcript,
{
    let h = GcpHarness::start().await;
    let logs = LogCapture::start();
    let mut transcript = scenario(&h).await;
    let log_text = logs.text();
    assert!(
        log_text.contains("gcp-sa-key"),
        "the capture saw the provider's lines"
    );
    // rekey's own key must not leak either.
    transcript.secrets.push(h.admin_key.expose().to_owned());
    let debug = format!("{:?}", h.provider);
    transcript.assert_clean(&[("logs", &log_text), ("provider Debug", &debug)]);
}

#[tokio::test]
async fn conformance_lifecycle() {
    run_scenario(async |h| conformance::lifecycle(h).await).await;
}

#[tokio::test]
async fn conformance_capacity() {
    run_scenario(async |h| conformance::capacity(h).await).await;
}

#[tokio::test]
async fn conformance_wrong_principal() {
    run_scenario(async |h| conformance::wrong_principal(h).await).await;
}

#[tokio::test]
async fn conformance_missing_principal_and_credential() {
    run_scenario(async |h| conformance::missing_things(h).await).await;
}

/// The minted key file is a real one: it parses, names the account and its key id, and its
/// private key signs a grant the token endpoint accepts; a key file whose private key is not
/// the registered one (forged) is Rejected.
#[tokio::test]
async fn a_forged_key_gets_no_token() {
    let h = GcpHarness::start().await;
    let t = h.fresh_principal("forge").await;
    let a = h.provider.mint(&t).await.unwrap();
    let b = h.provider.mint(&t).await.unwrap();
    let ka: serde_json::Value = serde_json::from_str(a.fields["key_json"].expose()).unwrap();
    let kb: serde_json::Value = serde_json::from_str(b.fields["key_json"].expose()).unwrap();
    assert_eq!(ka["type"], "service_account");
    assert_eq!(ka["client_email"], email("forge"));
    assert!(a.id.ends_with(ka["private_key_id"].as_str().unwrap()));
    h.provider.verify(&t, &a).await.unwrap();

    let mut forged = ka.clone();
    forged["private_key"] = kb["private_key"].clone();
    let forged = Minted {
        id: a.id.clone(),
        fields: BTreeMap::from([("key_json".to_owned(), Secret::new(forged.to_string()))]),
    };
    let err = h.provider.verify(&t, &forged).await.unwrap_err();
    assert!(matches!(err, ProviderError::Rejected(_)), "{err:?}");
    assert!(err.to_string().contains("invalid_grant"), "{err}");
    let secrets = [a.fields["key_json"].expose(), b.fields["key_json"].expose()];
    assert_no_secret("forged error", &format!("{err} {err:?}"), &secrets);
}

/// Keys made before rekey count towards IAM's limit: mint answers Quota, naming the limit.
#[tokio::test]
async fn quota_when_the_account_already_has_ten_keys() {
    let h = GcpHarness::start().await;
    let t = h.fresh_principal("full").await;
    h.sandbox.with_state(|s| {
        s.key_bits = 1024; // fixtures only: speed
        for _ in 0..10 {
            s.create_key(&email("full")).unwrap();
        }
    });
    let i = h.provider.inspect(&t).await.unwrap();
    assert_eq!(i.credentials.len(), 10);
    assert!(
        i.credentials
            .iter()
            .all(|c| c.status == CredentialStatus::Active && c.created_at.is_some())
    );
    let err = h.provider.mint(&t).await.unwrap_err();
    assert!(matches!(err, ProviderError::Quota(_)), "{err:?}");
    let text = err.to_string();
    assert!(
        text.contains("FAILED_PRECONDITION") && text.contains("10 user-managed keys"),
        "{text}"
    );
}

/// 5xx and 429 are Transient (the engine retries), 4xx other than 404 are Failed, and an
/// unreadable keys.create answer fails without quoting it.
#[tokio::test]
async fn bad_answers_are_mapped() {
    let h = GcpHarness::start().await;
    let t = h.fresh_principal("flaky").await;
    let sim = h.sandbox.server();
    sim.fail_next("/keys$", 1, 503, None).unwrap();
    assert!(h.provider.mint(&t).await.unwrap_err().is_transient());
    sim.fail_next("/keys$", 1, 429, None).unwrap();
    assert!(h.provider.inspect(&t).await.unwrap_err().is_transient());
    sim.fail_next("/keys$", 1, 403, Some(r#"{"error":{"code":403,"message":"Permission 'iam.serviceAccountKeys.create' denied","status":"PERMISSION_DENIED"}}"#)).unwrap();
    let err = h.provider.mint(&t).await.unwrap_err();
    assert!(matches!(err, ProviderError::Failed(_)), "{err:?}");
    assert!(
        err.to_string().contains("iam.serviceAccountKeys.create"),
        "{err}"
    );
    sim.fail_next(
        "/keys$",
        1,
        200,
        Some(r#"{"name": "x", "privateKeyData": 12, "secret": "hunter2-leak"}"#),
    )
    .unwrap();
    let err = h.provider.mint(&t).await.unwrap_err();
    assert!(matches!(err, ProviderError::Failed(_)), "{err:?}");
    assert!(!err.to_string().contains("hunter2-leak"), "{err}");
    // Nothing was created by the injected answers.
    assert!(h.provider.inspect(&t).await.unwrap().credentials.is_empty());
}

/// rekey's own credentials: a ready access token works; a disabled own key gets no token and
/// says so; no credentials at all says what to set.
#[tokio::test]
async fn rekey_own_credentials() {
    let h = GcpHarness::start().await;
    let t = h.fresh_principal("own").await;
    let token = h
        .sandbox
        .with_state(|s| s.issue_token(&s.email("rekey-admin")));
    let by_token =
        GcpSaKeyProvider::new(&endpoints(&h.sandbox), GcpAuth::AccessToken(token.clone())).unwrap();
    assert!(by_token.inspect(&t).await.unwrap().credentials.is_empty());
    assert!(!format!("{by_token:?}").contains(token.expose()));

    let none = GcpSaKeyProvider::new(&endpoints(&h.sandbox), GcpAuth::None).unwrap();
    let err = none.inspect(&t).await.unwrap_err().to_string();
    assert!(err.contains("GOOGLE_APPLICATION_CREDENTIALS"), "{err}");

    // Disable the admin's own key: a fresh provider (no cached token) is refused.
    let admin = h.sandbox.with_state(|s| s.email("rekey-admin"));
    let admin_key = h.sandbox.with_state(|s| s.keys_of(&admin))[0].0.clone();
    h.provider.inspect(&gcp_target(&admin)).await.unwrap();
    h.provider
        .deactivate(&gcp_target(&admin), &admin_key)
        .await
        .unwrap();
    let auth = GcpAuth::KeyFile(Box::new(
        ServiceAccountKey::parse(h.admin_key.expose()).unwrap(),
    ));
    let fresh = GcpSaKeyProvider::new(&endpoints(&h.sandbox), auth).unwrap();
    let err = fresh.inspect(&t).await.unwrap_err();
    assert!(matches!(err, ProviderError::Failed(_)), "{err:?}");
    assert!(err.to_string().contains("invalid_grant"), "{err}");
    assert_no_secret(
        "own-key error",
        &format!("{err:?}"),
        &[h.admin_key.expose()],
    );
}

/// A key name from the plan that is not this account's is refused before any request.
#[tokio::test]
async fn foreign_key_names_are_refused() {
    let h = GcpHarness::start().await;
    let t = h.fresh_principal("mine").await;
    let other = format!(
        "projects/{PROJECT}/serviceAccounts/{}/keys/abc",
        email("theirs")
    );
    h.sandbox.server().clear_requests();
    for result in [
        h.provider.revoke(&t, &other).await,
        h.provider.deactivate(&t, &other).await,
        h.provider.revoke(&t, "../../v1/projects/x").await,
    ] {
        assert!(
            matches!(result, Err(ProviderError::Failed(_))),
            "{result:?}"
        );
    }
    assert!(h.sandbox.server().mutating_requests().is_empty());
}
