//! The GitHub providers and the CircleCI checkout-key provider against their sandbox doubles:
//! the shared conformance suite (`support::conformance`) for `github-deploy-key` (GitHub
//! simulator) and `circleci-checkout-key` (CircleCI simulator), then what is specific to each:
//! the deploy-key limit, a missing repository, a duplicate key, fingerprint checks, rate
//! limiting; the `github-token` paths (verify with scopes, revocation through the API, the
//! manual path when no value is given).

mod support;

use async_trait::async_trait;
use rekey::circleci::CircleCiClient;
use rekey::github::GithubClient;
use rekey::http::RetryPolicy;
use rekey::plan::{Located, Principal, PrincipalField, ProviderKind, Target};
use rekey::providers::checkout_key::CheckoutKeyProvider;
use rekey::providers::github::{
    FIELD_PRIVATE_KEY, GithubDeployKeyProvider, GithubTokenProvider, TokenInputs, UNKNOWN_TOKEN_ID,
    ValueSource, hashed_token,
};
use rekey::providers::{Minted, Provider, ProviderError};
use rekey::sandbox::circleci::CheckoutKeySpec;
use rekey::sandbox::{CircleCiState, GithubSandbox, GithubState, ProjectSpec, Sandbox};
use rekey::secret::Secret;
use std::collections::BTreeMap;
use support::conformance::{self, Harness, Transcript, target};
use support::{LogCapture, assert_no_secret};

// ---- github-deploy-key ------------------------------------------------------------------

struct GithubHarness {
    sandbox: GithubSandbox,
    provider: GithubDeployKeyProvider,
}

impl GithubHarness {
    async fn start() -> Self {
        let sandbox = GithubSandbox::start(GithubState::new()).await.unwrap();
        let client = GithubClient::new(
            &sandbox.base_url(),
            Some(Secret::new(sandbox.admin_token())),
        )
        .unwrap();
        GithubHarness {
            provider: GithubDeployKeyProvider::new(client),
            sandbox,
        }
    }
}

fn repo_target(repo: &str) -> Target {
    target(
        &format!("dk-{}", repo.replace('/', "-")),
        ProviderKind::GithubDeployKey,
        Principal::default().with(PrincipalField::Repository, repo.to_owned()),
    )
}

#[async_trait]
impl Harness for GithubHarness {
    fn provider(&self) -> &dyn Provider {
        &self.provider
    }

    async fn fresh_principal(&self, name: &str) -> Target {
        let repo = format!("acme/{name}");
        self.sandbox.with_state(|s| {
            s.repos.entry(repo.clone()).or_default();
        });
        repo_target(&repo)
    }

    fn missing_principal(&self) -> Target {
        repo_target("acme/no-such-repo")
    }

    fn unknown_credential_id(&self) -> String {
        "1".to_owned()
    }
}

async fn run_github<F>(scenario: F)
where
    F: AsyncFnOnce(&dyn Harness) -> Transcript,
{
    let h = GithubHarness::start().await;
    let logs = LogCapture::start();
    let mut transcript = scenario(&h).await;
    let log_text = logs.text();
    assert!(log_text.contains("github-deploy-key"), "logs were captured");
    // rekey's own token must not show up either.
    transcript.secrets.push(h.sandbox.admin_token());
    let debug = format!("{:?}", h.provider);
    transcript.assert_clean(&[("logs", &log_text), ("provider Debug", &debug)]);
    assert!(
        h.sandbox.requests().iter().all(|r| r.status != 401),
        "every request was authenticated"
    );
}

#[tokio::test]
async fn deploy_key_conformance_lifecycle() {
    run_github(async |h| conformance::lifecycle(h).await).await;
}

#[tokio::test]
async fn deploy_key_conformance_capacity() {
    run_github(async |h| conformance::capacity(h).await).await;
}

#[tokio::test]
async fn deploy_key_conformance_wrong_principal() {
    run_github(async |h| conformance::wrong_principal(h).await).await;
}

#[tokio::test]
async fn deploy_key_conformance_missing_things() {
    run_github(async |h| conformance::missing_things(h).await).await;
}

/// The private key written to bindings is an OpenSSH ed25519 key whose public half is the one
/// registered, read-only by default, with the plan's title and rekey's mark.
#[tokio::test]
async fn deploy_key_mint_registers_the_generated_public_key() {
    let h = GithubHarness::start().await;
    let mut t = h.fresh_principal("api").await;
    t.principal.set(
        PrincipalField::Title,
        Some(Located::new("rekey rotation 2026-11".into())),
    );
    let m = h.provider.mint(&t).await.unwrap();
    let private = m.fields.get(FIELD_PRIVATE_KEY).unwrap();
    let key = ssh_key::PrivateKey::from_openssh(private.expose()).unwrap();
    assert_eq!(key.algorithm(), ssh_key::Algorithm::Ed25519);
    let stored = h.sandbox.state().keys_of("acme/api");
    assert_eq!(stored.len(), 1);
    assert_eq!(stored[0].id.to_string(), m.id);
    // The plan's title, then rekey's mark (what the orphan sweep recognizes).
    assert_eq!(
        stored[0].title,
        format!("rekey rotation 2026-11 {}", rekey::providers::mint_mark(&t))
    );
    assert!(stored[0].read_only, "read_only defaults to true");
    assert_eq!(
        stored[0].key,
        key.public_key()
            .to_openssh()
            .unwrap()
            .splitn(3, ' ')
            .take(2)
            .collect::<Vec<_>>()
            .join(" ")
    );
    h.provider.verify(&t, &m).await.unwrap();

    // A write key when the plan says so.
    t.principal.read_only = Some(false);
    let w = h.provider.mint(&t).await.unwrap();
    assert!(!h.sandbox.state().keys_of("acme/api")[1].read_only);
    h.provider.revoke(&t, &w.id).await.unwrap();
}

#[tokio::test]
async fn deploy_key_limit_is_a_quota_error_with_github_message() {
    let h = GithubHarness::start().await;
    let t = h.fresh_principal("full").await;
    h.sandbox.with_state(|s| {
        s.max_deploy_keys = 2;
        s.add_foreign_key("acme/full", "old laptop");
        s.add_foreign_key("acme/full", "jenkins");
    });
    let err = h.provider.mint(&t).await.unwrap_err();
    assert!(matches!(err, ProviderError::Quota(_)), "{err:?}");
    let text = err.to_string();
    assert!(text.contains("deploy-key limit"), "{text}");
    assert!(text.contains("acme/full"), "{text}");
    assert!(text.contains("maximum number of deploy keys"), "{text}");
    assert!(text.contains("removable_keys"), "{text}");
}

#[tokio::test]
async fn deploy_key_missing_repository_is_not_found() {
    let h = GithubHarness::start().await;
    let t = h.missing_principal();
    for err in [
        h.provider.inspect(&t).await.unwrap_err(),
        h.provider.mint(&t).await.unwrap_err(),
    ] {
        assert!(matches!(err, ProviderError::NotFound(_)), "{err:?}");
        assert!(err.to_string().contains("acme/no-such-repo"), "{err}");
        assert!(err.to_string().contains("Not Found"), "{err}");
    }
}

/// GitHub refuses a public key registered anywhere (422 "key is already in use"); rekey
/// generates a fresh key every time, so it only meets this when GitHub's state is odd — the
/// simulator's registry is seeded with the very key a mint would send.
#[tokio::test]
async fn deploy_key_duplicate_is_a_clear_failure() {
    let h = GithubHarness::start().await;
    let t = h.fresh_principal("dup").await;
    let m = h.provider.mint(&t).await.unwrap();
    // Register the same public key on another repository through the API.
    let private = ssh_key::PrivateKey::from_openssh(m.fields[FIELD_PRIVATE_KEY].expose()).unwrap();
    let public = private.public_key().to_openssh().unwrap();
    h.sandbox.with_state(|s| {
        s.repos.entry("acme/other".into()).or_default();
    });
    let client = reqwest::Client::new();
    let answer = client
        .post(format!("{}/repos/acme/other/keys", h.sandbox.base_url()))
        .bearer_auth(h.sandbox.admin_token())
        .json(&serde_json::json!({"title": "copy", "key": public}))
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status().as_u16(), 422);
    let body: serde_json::Value = answer.json().await.unwrap();
    assert_eq!(body["errors"][0]["message"], "key is already in use");
    assert!(body["documentation_url"].is_string());
    // The provider's mapping of that answer.
    let api = rekey::github::ApiError::from_body(
        reqwest::StatusCode::UNPROCESSABLE_ENTITY,
        body.to_string().as_bytes(),
    );
    assert!(api.mentions("already in use"));
}

#[tokio::test]
async fn deploy_key_verify_compares_fingerprints() {
    let h = GithubHarness::start().await;
    let t = h.fresh_principal("fp").await;
    let m = h.provider.mint(&t).await.unwrap();
    // The same id, with another private key: the registered key does not match.
    let (other, _) = rekey::providers::github::generate_ed25519("x").unwrap();
    let forged = Minted {
        id: m.id.clone(),
        fields: BTreeMap::from([(FIELD_PRIVATE_KEY.to_owned(), other)]),
    };
    let err = h.provider.verify(&t, &forged).await.unwrap_err();
    assert!(matches!(err, ProviderError::Failed(_)), "{err:?}");
    assert!(err.to_string().contains("fingerprint"), "{err}");
    assert_no_secret(
        "verify error",
        &format!("{err} {err:?}"),
        &[
            m.fields[FIELD_PRIVATE_KEY].expose(),
            forged.fields[FIELD_PRIVATE_KEY].expose(),
        ],
    );
}

#[tokio::test]
async fn deploy_key_rate_limit_and_5xx_are_transient() {
    let h = GithubHarness::start().await;
    let t = h.fresh_principal("busy").await;
    h.sandbox.rate_limit("/keys$", 1).unwrap();
    let err = h.provider.inspect(&t).await.unwrap_err();
    assert!(err.is_transient(), "{err:?}");
    assert!(err.to_string().contains("rate limit"), "{err}");
    h.sandbox.fail_next("/keys$", 1, 502).unwrap();
    assert!(h.provider.mint(&t).await.unwrap_err().is_transient());
    assert!(
        h.sandbox.state().keys_of("acme/busy").is_empty(),
        "nothing created"
    );
    // One attempt per call (the engine owns retries); after an ambiguous 5xx the provider
    // only looks whether its key exists.
    let methods: Vec<String> = h
        .sandbox
        .requests()
        .iter()
        .map(|r| r.method.clone())
        .collect();
    assert_eq!(methods, ["GET", "POST", "GET"]);
    let bad = GithubDeployKeyProvider::new(
        GithubClient::new(&h.sandbox.base_url(), Some(Secret::new("ghp_wrong"))).unwrap(),
    );
    let err = bad.inspect(&t).await.unwrap_err();
    assert!(matches!(err, ProviderError::Failed(_)), "{err:?}");
    assert!(err.to_string().contains("Bad credentials"), "{err}");
}

// ---- circleci-checkout-key ----------------------------------------------------------------

struct CheckoutHarness {
    sandbox: Sandbox,
    provider: CheckoutKeyProvider,
    token: String,
}

impl CheckoutHarness {
    async fn start() -> Self {
        let state = CircleCiState::new(format!("CCIPAT_{}", rand_suffix()));
        let token = state.token().to_owned();
        let sandbox = Sandbox::start(state).await.unwrap();
        let client = CircleCiClient::new(&sandbox.base_url(), Secret::new(token.clone()))
            .unwrap()
            .with_retry_policy(RetryPolicy::no_retry());
        CheckoutHarness {
            provider: CheckoutKeyProvider::new(client),
            sandbox,
            token,
        }
    }
}

fn rand_suffix() -> String {
    let mut rng = rekey::sandbox::Rng::from_entropy();
    rng.string(rekey::sandbox::fake::ALNUM, 30)
}

fn project_target(slug: &str) -> Target {
    target(
        &format!("ck-{}", slug.replace('/', "-")),
        ProviderKind::CircleciCheckoutKey,
        Principal::default().with(PrincipalField::Project, slug.to_owned()),
    )
}

#[async_trait]
impl Harness for CheckoutHarness {
    fn provider(&self) -> &dyn Provider {
        &self.provider
    }

    async fn fresh_principal(&self, name: &str) -> Target {
        let slug = format!("gh/acme/{name}");
        self.sandbox
            .with_state(|s| s.add_project(ProjectSpec::new(slug.clone())));
        project_target(&slug)
    }

    fn missing_principal(&self) -> Target {
        project_target("gh/acme/no-such-project")
    }

    fn unknown_credential_id(&self) -> String {
        "00:11:22:33:44:55:66:77:88:99:aa:bb:cc:dd:ee:ff".to_owned()
    }
}

async fn run_checkout<F>(scenario: F)
where
    F: AsyncFnOnce(&dyn Harness) -> Transcript,
{
    let h = CheckoutHarness::start().await;
    let logs = LogCapture::start();
    let mut transcript = scenario(&h).await;
    let log_text = logs.text();
    assert!(
        transcript.texts.is_empty() || log_text.contains("circleci-checkout-key"),
        "logs were captured"
    );
    // A checkout key's private half never leaves CircleCI: the secret to look for is the token.
    transcript.secrets.push(h.token.clone());
    let debug = format!("{:?}", h.provider);
    transcript.assert_clean(&[("logs", &log_text), ("provider Debug", &debug)]);
}

#[tokio::test]
async fn checkout_key_conformance_lifecycle() {
    run_checkout(async |h| conformance::lifecycle(h).await).await;
}

#[tokio::test]
async fn checkout_key_conformance_wrong_principal() {
    run_checkout(async |h| conformance::wrong_principal(h).await).await;
}

#[tokio::test]
async fn checkout_key_conformance_missing_things() {
    run_checkout(async |h| conformance::missing_things(h).await).await;
}

#[tokio::test]
async fn checkout_key_conformance_capacity() {
    run_checkout(async |h| conformance::capacity(h).await).await;
}

/// The new deploy key becomes the preferred one (CircleCI's choice: the API has no flag); a
/// user key stays preferred and is never taken for the target's credential.
#[tokio::test]
async fn checkout_key_preference_and_user_keys() {
    let h = CheckoutHarness::start().await;
    let slug = "gh/acme/web";
    h.sandbox.with_state(|s| {
        s.add_project(
            ProjectSpec::new(slug).checkout_key(CheckoutKeySpec::deploy_key().preferred(true)),
        )
    });
    let t = project_target(slug);
    let before = h.provider.inspect(&t).await.unwrap();
    assert_eq!(before.credentials.len(), 1);
    let m = h.provider.mint(&t).await.unwrap();
    let keys = h
        .sandbox
        .state()
        .project_by_slug(slug)
        .unwrap()
        .checkout_keys
        .clone();
    let new = keys.iter().find(|k| k.fingerprint == m.id).unwrap();
    assert!(new.preferred, "the newest deploy key is preferred");
    assert_eq!(keys.iter().filter(|k| k.preferred).count(), 1);
    h.provider
        .revoke(&t, &before.credentials[0].id)
        .await
        .unwrap();
    assert_eq!(h.provider.inspect(&t).await.unwrap().credentials.len(), 1);

    h.sandbox.with_state(|s| {
        s.add_project(ProjectSpec::new("gh/acme/mono").checkout_key(CheckoutKeySpec::user_key()))
    });
    let t = project_target("gh/acme/mono");
    assert!(
        h.provider.inspect(&t).await.unwrap().credentials.is_empty(),
        "user keys are not the target's"
    );
    let m = h.provider.mint(&t).await.unwrap();
    let keys = h
        .sandbox
        .state()
        .project_by_slug("gh/acme/mono")
        .unwrap()
        .checkout_keys
        .clone();
    assert!(
        !keys
            .iter()
            .find(|k| k.fingerprint == m.id)
            .unwrap()
            .preferred
    );
    assert!(
        keys.iter()
            .find(|k| k.key_type == "github-user-key")
            .unwrap()
            .preferred
    );
}

// ---- github-token ---------------------------------------------------------------------------

fn token_target(id: &str) -> Target {
    target(id, ProviderKind::GithubToken, Principal::default())
}

async fn token_world() -> (GithubSandbox, String, String) {
    let mut state = GithubState::new();
    let old = state.add_token("release-bot", "repo, workflow");
    let new = state.add_token("release-bot", "repo");
    (GithubSandbox::start(state).await.unwrap(), old, new)
}

fn token_provider(sandbox: &GithubSandbox, inputs: TokenInputs) -> GithubTokenProvider {
    GithubTokenProvider::new(
        GithubClient::new(&sandbox.base_url(), None).unwrap(),
        inputs,
    )
}

#[tokio::test]
async fn token_with_both_values_verifies_and_revokes_through_the_api() {
    let (sandbox, old, new) = token_world().await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("new-token");
    std::fs::write(&file, format!("{new}\n")).unwrap();
    let logs = LogCapture::start();
    let p = token_provider(
        &sandbox,
        TokenInputs {
            new: BTreeMap::from([("gh-pat".to_owned(), ValueSource::File(file))]),
            old: BTreeMap::from([(
                "gh-pat".to_owned(),
                ValueSource::Value(Secret::new(old.clone())),
            )]),
            prompt: false,
        },
    );
    let mut t = token_target("gh-pat");
    assert!(p.capabilities().manual_mint && !p.capabilities().deactivate);
    let i = p.inspect(&t).await.unwrap();
    assert_eq!(i.principal, "release-bot");
    assert_eq!(i.credentials[0].id, hashed_token(&Secret::new(old.clone())));
    let m = p.mint(&t).await.unwrap();
    assert_eq!(m.id, hashed_token(&Secret::new(new.clone())));
    assert_eq!(m.fields["token"].expose(), new, "the file's value, trimmed");
    p.verify(&t, &m).await.unwrap();
    assert_eq!(
        p.verified_note(&t).as_deref(),
        Some("scopes: repo (the old token: repo, workflow)")
    );
    t.principal.set(
        PrincipalField::User,
        Some(Located::new("someone-else".into())),
    );
    let err = p.verify(&t, &m).await.unwrap_err();
    assert!(
        err.to_string()
            .contains("belongs to GitHub user release-bot"),
        "{err}"
    );

    p.revoke(&t, &i.credentials[0].id).await.unwrap();
    assert!(
        !sandbox.state().token_works(&old),
        "the old token is revoked"
    );
    assert!(sandbox.state().token_works(&new));
    let err = p.inspect(&t).await.map(|i| i.credentials.len());
    assert_eq!(
        err.unwrap(),
        0,
        "a revoked old token leaves nothing to revoke"
    );
    let log_text = logs.text();
    assert!(
        log_text.contains("scopes"),
        "scopes are reported: {log_text}"
    );
    assert!(log_text.contains("repo"), "{log_text}");
    assert_no_secret(
        "logs and debug",
        &format!("{log_text} {p:?} {m:?} {i:?}"),
        &[&old, &new],
    );
    let revokes: Vec<_> = sandbox
        .requests()
        .into_iter()
        .filter(|r| r.path == "/credentials/revoke")
        .collect();
    assert_eq!(revokes.len(), 1);
    assert_eq!(revokes[0].status, 202);
}

#[tokio::test]
async fn token_without_values_needs_a_person() {
    let (sandbox, _old, new) = token_world().await;
    let p = token_provider(&sandbox, TokenInputs::default());
    let t = token_target("gh-pat");
    let i = p.inspect(&t).await.unwrap();
    assert_eq!(i.credentials.len(), 1);
    assert_eq!(i.credentials[0].id, UNKNOWN_TOKEN_ID);
    match p.mint(&t).await {
        Err(ProviderError::NeedsInput(msg)) => {
            assert!(msg.contains("--value-from-file gh-pat=FILE"), "{msg}")
        }
        other => panic!("mint without a value needs input, got {other:?}"),
    }
    match p.revoke(&t, UNKNOWN_TOKEN_ID).await {
        Err(ProviderError::NeedsInput(msg)) => {
            assert!(
                msg.contains("by hand") && msg.contains("--old-value-from-file"),
                "{msg}"
            )
        }
        other => panic!("revoke without the old value needs a person, got {other:?}"),
    }
    // A value that GitHub does not accept is Rejected (retried, then rolled back by the engine).
    let bad = token_provider(
        &sandbox,
        TokenInputs {
            new: BTreeMap::from([(
                "gh-pat".to_owned(),
                ValueSource::Value(Secret::new("ghp_notvalid")),
            )]),
            ..Default::default()
        },
    );
    let m = bad.mint(&t).await.unwrap();
    assert!(matches!(
        bad.verify(&t, &m).await,
        Err(ProviderError::Rejected(_))
    ));
    assert!(sandbox.state().token_works(&new));
    assert!(sandbox.mutating_requests().is_empty());
}

/// A create whose answer is lost after the key was made (502 from a proxy): the provider finds
/// its key by fingerprint instead of reporting a failure the engine would retry with a second
/// key; with nothing created, the failure stays transient (safe to retry).
#[tokio::test]
async fn deploy_key_lost_create_answer_finds_the_key() {
    let h = GithubHarness::start().await;
    let t = h.fresh_principal("lost").await;
    h.sandbox.lose_response("/keys$", 1).unwrap();
    let m = h.provider.mint(&t).await.unwrap();
    let keys = h.sandbox.state().keys_of("acme/lost");
    assert_eq!(keys.len(), 1, "one key, not two");
    assert_eq!(keys[0].id.to_string(), m.id);
    h.provider.verify(&t, &m).await.unwrap();

    h.sandbox.fail_next("/keys$", 1, 503).unwrap();
    let err = h.provider.mint(&t).await.unwrap_err();
    assert!(err.is_transient(), "{err:?}");
    assert_eq!(h.sandbox.state().keys_of("acme/lost").len(), 1);
}

/// A checkout-key create whose answer is lost after CircleCI made the key: the one key that
/// appeared is taken, no second one is made; with nothing made, the failure stays transient.
#[tokio::test]
async fn checkout_key_lost_create_answer_takes_the_new_key() {
    let h = CheckoutHarness::start().await;
    let t = h.fresh_principal("lost").await;
    h.sandbox.lose_response("/checkout-key$", 1).unwrap();
    let m = h.provider.mint(&t).await.unwrap();
    let listed = h.provider.inspect(&t).await.unwrap();
    assert_eq!(listed.credentials.len(), 1, "one key, not two");
    assert_eq!(listed.credentials[0].id, m.id);
    assert!(
        h.sandbox
            .requests()
            .iter()
            .any(|r| r.method == "POST" && r.status == 502),
        "the answer was lost"
    );

    h.sandbox.fail_next("/checkout-key$", 1, 503).unwrap();
    // The listing before the create takes the 503 here (faults match by path): transient.
    let err = h.provider.mint(&t).await.unwrap_err();
    assert!(err.is_transient(), "{err:?}");
    assert_eq!(h.provider.inspect(&t).await.unwrap().credentials.len(), 1);
}
