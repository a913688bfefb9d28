//! The `aws-iam` provider against moto's server with authentication enforced (the shared
//! conformance suite plus AWS specifics: account and path checks, discovery by the last four
//! characters of a key id, last-use reporting), and its error mapping against a scripted fake
//! endpoint (throttling, 5xx, one attempt per call, unreachable endpoint).
//!
//! Every moto test starts its own server; see `support::moto` for how it is found and why a
//! missing moto fails instead of skipping.

mod support;

use async_trait::async_trait;
use rekey::plan::{Located, Principal, PrincipalField, ProviderKind, Target};
use rekey::providers::aws::{AwsIamProvider, DiscoveryMatch, match_last_four};
use rekey::providers::wrappers::{FaultKind, Faulty, Operation};
use rekey::providers::{CredentialStatus, Minted, Provider, ProviderError};
use rekey::secret::Secret;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;
use support::conformance::{self, Harness, Transcript, target};
use support::moto::{self, Moto};
use support::{LogCapture, assert_no_secret};

struct MotoHarness {
    moto: Moto,
    provider: AwsIamProvider,
}

impl MotoHarness {
    async fn start() -> Option<Self> {
        let moto = Moto::start().await?;
        eprintln!("moto ready at {} in {:?}", moto.url, moto.started_in);
        let provider = AwsIamProvider::new(moto.config());
        Some(MotoHarness { moto, provider })
    }
}

#[async_trait]
impl Harness for MotoHarness {
    fn provider(&self) -> &dyn Provider {
        &self.provider
    }

    async fn fresh_principal(&self, name: &str) -> Target {
        let user = self.moto.create_ci_user(name, None, 0).await;
        aws_target(&user.name)
    }

    fn missing_principal(&self) -> Target {
        aws_target("nobody-by-this-name")
    }

    fn unknown_credential_id(&self) -> String {
        "AKIAUNKNOWNUNKNOWN00".to_owned()
    }

    // moto 5.2.5 still accepts an Inactive key (DESIGN.md, test doubles): AWS does not.
    fn rejects_inactive(&self) -> bool {
        false
    }
}

fn aws_target(user: &str) -> Target {
    target(
        &format!("aws-{user}"),
        ProviderKind::AwsIam,
        Principal::default().with(PrincipalField::User, user.to_owned()),
    )
}

/// Runs a conformance scenario with every log line captured, then scans the scenario's outputs
/// and the logs for the secrets it handled.
async fn run_scenario<F>(name: &str, scenario: F)
where
    F: AsyncFnOnce(&dyn Harness) -> Transcript,
{
    let began = Instant::now();
    let Some(h) = MotoHarness::start().await else {
        return;
    };
    let logs = LogCapture::start();
    let transcript = scenario(&h).await;
    let log_text = logs.text();
    assert!(
        log_text.contains("aws-iam"),
        "the log capture saw the provider's own lines"
    );
    let provider_debug = format!("{:?}", h.provider);
    transcript.assert_clean(&[("logs", &log_text), ("provider Debug", &provider_debug)]);
    eprintln!(
        "{name}: {:?} (moto start {:?})",
        began.elapsed(),
        h.moto.started_in
    );
}

#[tokio::test]
async fn conformance_lifecycle() {
    run_scenario("lifecycle", async |h| conformance::lifecycle(h).await).await;
}

#[tokio::test]
async fn conformance_capacity() {
    run_scenario("capacity", async |h| conformance::capacity(h).await).await;
}

#[tokio::test]
async fn conformance_wrong_principal() {
    run_scenario("wrong principal", async |h| {
        conformance::wrong_principal(h).await
    })
    .await;
}

#[tokio::test]
async fn conformance_missing_principal_and_credential() {
    // This scenario mints nothing, so give the scan something to look for: a key made by a
    // fixture whose secret must not show up anywhere either.
    let Some(h) = MotoHarness::start().await else {
        return;
    };
    let logs = LogCapture::start();
    let mut transcript = conformance::missing_things(&h).await;
    let user = h.moto.create_ci_user("fixture", None, 1).await;
    transcript.secrets.push(user.keys[0].1.expose().to_owned());
    transcript.assert_clean(&[("logs", &logs.text())]);
}

/// A user that already has two keys (made before rekey): inspect lists both with their status,
/// and mint answers Quota with AWS's code.
#[tokio::test]
async fn quota_when_the_user_already_has_two_keys() {
    let Some(h) = MotoHarness::start().await else {
        return;
    };
    let user = h.moto.create_ci_user("ci-full", None, 2).await;
    let t = aws_target(&user.name);
    let p = &h.provider;
    p.deactivate(&t, &user.keys[1].0).await.unwrap();

    let i = p.inspect(&t).await.unwrap();
    assert_eq!(
        i.principal,
        format!("arn:aws:iam::{}:user/ci-full", moto::ACCOUNT_ID)
    );
    let listed: BTreeMap<_, _> = i
        .credentials
        .iter()
        .map(|c| (c.id.clone(), c.status))
        .collect();
    let expected = BTreeMap::from([
        (user.keys[0].0.clone(), CredentialStatus::Active),
        (user.keys[1].0.clone(), CredentialStatus::Inactive),
    ]);
    assert_eq!(listed, expected);
    assert!(
        i.credentials.iter().all(|c| c.created_at.is_some()),
        "{i:?}"
    );

    let err = p.mint(&t).await.unwrap_err();
    let text = err.to_string();
    assert!(matches!(err, ProviderError::Quota(_)), "{err:?}");
    assert!(text.contains("LimitExceeded"), "{text}");
    assert!(text.contains("ci-full"), "{text}");
    let secrets: Vec<&str> = user.keys.iter().map(|(_, s)| s.expose()).collect();
    assert_no_secret("quota error", &format!("{text} {err:?} {i:?}"), &secrets);
}

#[tokio::test]
async fn verify_checks_the_account_when_the_plan_names_it() {
    let Some(h) = MotoHarness::start().await else {
        return;
    };
    h.moto.create_ci_user("ci-acct", None, 0).await;
    let mut t = aws_target("ci-acct");
    let p = &h.provider;
    let m = p.mint(&t).await.unwrap();

    t.principal.set(
        PrincipalField::AccountId,
        Some(Located::new(moto::ACCOUNT_ID.to_owned())),
    );
    p.verify(&t, &m).await.unwrap();

    t.principal.set(
        PrincipalField::AccountId,
        Some(Located::new("999999999999".to_owned())),
    );
    let err = p.verify(&t, &m).await.unwrap_err();
    assert!(matches!(err, ProviderError::Failed(_)), "{err:?}");
    assert!(
        err.to_string().contains("not account 999999999999"),
        "{err}"
    );
    p.revoke(&t, &m.id).await.unwrap();
}

#[tokio::test]
async fn verify_accepts_a_user_with_a_path_and_names_the_wrong_user() {
    let Some(h) = MotoHarness::start().await else {
        return;
    };
    h.moto
        .create_ci_user("ci-pathed", Some("/ci/bots/"), 0)
        .await;
    h.moto.create_ci_user("bots", None, 0).await;
    let t = aws_target("ci-pathed");
    let p = &h.provider;
    let m = p.mint(&t).await.unwrap();
    let i = p.inspect(&t).await.unwrap();
    assert!(
        i.principal.ends_with(":user/ci/bots/ci-pathed"),
        "{}",
        i.principal
    );
    p.verify(&t, &m).await.unwrap();

    // A path segment is not the user name.
    let err = p.verify(&aws_target("bots"), &m).await.unwrap_err();
    assert!(matches!(err, ProviderError::Failed(_)), "{err:?}");
    assert!(err.to_string().contains("not IAM user bots"), "{err}");
}

/// How moto rejects keys: a deleted key gets InvalidClientTokenId, a wrong secret gets
/// SignatureDoesNotMatch; both are `Rejected` (the engine retries them for consistency) and
/// neither error carries the secret.
#[tokio::test]
async fn rejected_keys_carry_the_aws_code_and_no_secret() {
    let Some(h) = MotoHarness::start().await else {
        return;
    };
    let t = h.fresh_principal("ci-rejected").await;
    let p = &h.provider;
    let m = p.mint(&t).await.unwrap();

    let mut forged = m.clone();
    let wrong = Secret::new("wrongSecretwrongSecretwrongSecretwrong123");
    forged
        .fields
        .insert("secret_access_key".into(), wrong.clone());
    let err = p.verify(&t, &forged).await.unwrap_err();
    assert!(matches!(err, ProviderError::Rejected(_)), "{err:?}");
    assert!(err.to_string().contains("SignatureDoesNotMatch"), "{err}");
    assert_no_secret(
        "wrong-secret error",
        &format!("{err} {err:?}"),
        &[wrong.expose()],
    );

    p.revoke(&t, &m.id).await.unwrap();
    let err = p.verify(&t, &m).await.unwrap_err();
    assert!(matches!(err, ProviderError::Rejected(_)), "{err:?}");
    assert!(err.to_string().contains("InvalidClientTokenId"), "{err}");
    assert!(err.to_string().contains(&m.id), "names the key id: {err}");
    let secret = m.fields["secret_access_key"].expose().to_owned();
    assert_no_secret(
        "deleted-key error",
        &format!("{err} {err:?} {m:?}"),
        &[&secret],
    );

    let mut incomplete = m.clone();
    incomplete.fields.remove("secret_access_key");
    let err = p.verify(&t, &incomplete).await.unwrap_err();
    assert!(
        err.to_string().contains("no secret_access_key field"),
        "{err}"
    );
}

#[tokio::test]
async fn inspect_reports_last_use_after_verify() {
    let Some(h) = MotoHarness::start().await else {
        return;
    };
    let t = h.fresh_principal("ci-used").await;
    let p = &h.provider;
    let m = p.mint(&t).await.unwrap();
    let before = p.inspect(&t).await.unwrap();
    assert_eq!(before.credentials[0].last_used, None);
    assert_eq!(before.credentials[0].last_used_service, None);
    p.verify(&t, &m).await.unwrap();
    let after = p.inspect(&t).await.unwrap();
    let c = &after.credentials[0];
    assert!(c.last_used.is_some(), "{c:?}");
    assert_eq!(c.last_used_service.as_deref(), Some("sts"));
}

#[tokio::test]
async fn discovery_finds_the_user_by_the_last_four_of_a_key() {
    let Some(h) = MotoHarness::start().await else {
        return;
    };
    let a = h.moto.create_ci_user("ci-a", None, 2).await;
    let b = h.moto.create_ci_user("ci-b", None, 1).await;
    h.moto.create_ci_user("ci-none", None, 0).await;
    let began = Instant::now();
    let found = h.provider.discover_users().await.unwrap();
    eprintln!("discover_users: {:?}", began.elapsed());

    let users: Vec<&str> = found.iter().map(|(u, _)| u.as_str()).collect();
    assert_eq!(users, vec!["ci-a", "ci-b", "ci-none", moto::ADMIN_USER]);
    let keys_of = |user: &str| {
        let mut k = found.iter().find(|(u, _)| u == user).unwrap().1.clone();
        k.sort();
        k
    };
    let mut a_keys: Vec<String> = a.keys.iter().map(|(id, _)| id.clone()).collect();
    a_keys.sort();
    assert_eq!(keys_of("ci-a"), a_keys);
    assert_eq!(keys_of("ci-none"), Vec::<String>::new());

    let b_key = &b.keys[0].0;
    let last_four = &b_key[b_key.len() - 4..];
    assert_eq!(
        match_last_four(&found, last_four),
        DiscoveryMatch::Unique("ci-b".into())
    );
    assert_eq!(match_last_four(&found, "!!!!"), DiscoveryMatch::None);

    // moto draws key ids at random, so two real keys sharing their last four cannot be made
    // on purpose; add a listing entry for a second user with such a key to see the planner's
    // ambiguous case on a real listing (the pure function has unit tests for the rest).
    let mut with_twin = found.clone();
    with_twin.push((
        "ci-twin".into(),
        vec![format!("AKIATWINTWINTWIN{last_four}")],
    ));
    assert_eq!(
        match_last_four(&with_twin, last_four),
        DiscoveryMatch::Ambiguous(vec!["ci-b".into(), "ci-twin".into()])
    );
}

/// A mint whose answer is lost (the key exists, the caller got an error): the key shows up in
/// `inspect`, which is how a resumed run finds and removes it.
#[tokio::test]
async fn a_lost_mint_answer_leaves_a_key_that_inspect_lists() {
    let Some(h) = MotoHarness::start().await else {
        return;
    };
    let t = h.fresh_principal("ci-lost").await;
    let p = Faulty::new(h.provider.clone());
    p.fail_next_after(Operation::Mint, 1, FaultKind::Transient);
    assert!(p.mint(&t).await.unwrap_err().is_transient());
    let i = p.inspect(&t).await.unwrap();
    assert_eq!(i.credentials.len(), 1, "the orphan is listed");
    p.revoke(&t, &i.credentials[0].id).await.unwrap();
    assert!(p.inspect(&t).await.unwrap().credentials.is_empty());
}

#[tokio::test]
async fn reset_gives_a_clean_account_with_a_new_admin() {
    let Some(mut h) = MotoHarness::start().await else {
        return;
    };
    let t = h.fresh_principal("ci-before-reset").await;
    h.provider.inspect(&t).await.unwrap();
    h.moto.reset().await;
    let old_admin = h.provider.inspect(&t).await.unwrap_err();
    assert!(
        old_admin.to_string().contains("InvalidClientTokenId"),
        "{old_admin}"
    );
    h.provider = AwsIamProvider::new(h.moto.config());
    let gone = h.provider.inspect(&t).await.unwrap_err();
    assert!(matches!(gone, ProviderError::NotFound(_)), "{gone:?}");
}

#[tokio::test]
async fn a_target_without_a_user_is_refused_before_any_call() {
    // Points at a closed port: an attempted call would be Transient, not this error.
    let p = AwsIamProvider::new(&moto::config_with(&closed_port_url(), "AKIAX", "x").await);
    let mut t = aws_target("x");
    t.principal.set(PrincipalField::User, None);
    for err in [
        p.inspect(&t).await.err(),
        p.mint(&t).await.err(),
        p.revoke(&t, "AKIAX").await.err(),
    ] {
        let err = err.unwrap();
        assert!(matches!(err, ProviderError::Failed(_)), "{err:?}");
        assert!(err.to_string().contains("principal.user"), "{err}");
    }
}

fn closed_port_url() -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    drop(listener);
    format!("http://127.0.0.1:{port}")
}

#[tokio::test]
async fn an_unreachable_endpoint_is_transient() {
    let p = AwsIamProvider::new(&moto::config_with(&closed_port_url(), "AKIAX", "x").await);
    let err = p.inspect(&aws_target("ci")).await.unwrap_err();
    assert!(err.is_transient(), "{err:?}");
}

/// A scripted AWS endpoint: answers every request with one status and body, and counts them.
struct FakeAws {
    url: String,
    hits: Arc<AtomicUsize>,
}

async fn fake_aws(status: u16, body: String) -> FakeAws {
    let hits = Arc::new(AtomicUsize::new(0));
    let counter = hits.clone();
    let status = axum::http::StatusCode::from_u16(status).unwrap();
    let app = axum::Router::new().fallback(move || {
        let counter = counter.clone();
        let body = body.clone();
        async move {
            counter.fetch_add(1, Ordering::SeqCst);
            (status, [("content-type", "text/xml")], body)
        }
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    FakeAws { url, hits }
}

/// An error body in the standard awsQuery shape (what IAM and STS send).
fn aws_error(code: &str, message: &str) -> String {
    format!(
        "<ErrorResponse><Error><Type>Sender</Type><Code>{code}</Code>\
         <Message>{message}</Message></Error><RequestId>r-1</RequestId></ErrorResponse>"
    )
}

fn kind_of(e: &ProviderError) -> &'static str {
    match e {
        ProviderError::Quota(_) => "Quota",
        ProviderError::NotFound(_) => "NotFound",
        ProviderError::Rejected(_) => "Rejected",
        ProviderError::Unsupported { .. } => "Unsupported",
        ProviderError::Transient(_) => "Transient",
        ProviderError::Failed(_) => "Failed",
        ProviderError::NeedsInput(_) => "NeedsInput",
    }
}

#[tokio::test]
async fn error_mapping_and_one_attempt_per_call() {
    let cases = [
        (
            400,
            aws_error("Throttling", "Rate exceeded"),
            "Transient",
            "Throttling",
        ),
        (
            500,
            aws_error("ServiceFailure", "oops"),
            "Transient",
            "ServiceFailure",
        ),
        (503, "<html>busy</html>".to_owned(), "Transient", "503"),
        (
            403,
            aws_error("AccessDenied", "not authorized"),
            "Failed",
            "AccessDenied",
        ),
        (
            404,
            aws_error("NoSuchEntity", "no user"),
            "NotFound",
            "NoSuchEntity",
        ),
        (
            409,
            aws_error("LimitExceeded", "quota"),
            "Quota",
            "LimitExceeded",
        ),
        // moto's authentication errors: `<Errors>` around `<Error>`, which the SDK does not parse.
        (
            403,
            "<ErrorResponse><Errors><Error><Code>InvalidClientTokenId</Code><Message>bad token\
             </Message></Error></Errors></ErrorResponse>"
                .to_owned(),
            "Failed",
            "InvalidClientTokenId",
        ),
    ];
    for (status, body, expected, needle) in cases {
        let fake = fake_aws(status, body).await;
        let p = AwsIamProvider::new(&moto::config_with(&fake.url, "AKIAX", "x").await);
        let err = p.inspect(&aws_target("ci")).await.unwrap_err();
        assert_eq!(kind_of(&err), expected, "HTTP {status}: {err}");
        assert!(err.to_string().contains(needle), "HTTP {status}: {err}");
        // The SDK's own retries are off: the engine decides what to repeat.
        assert_eq!(
            fake.hits.load(Ordering::SeqCst),
            1,
            "HTTP {status}: one attempt"
        );
    }
}

#[tokio::test]
async fn verify_maps_sts_auth_errors_to_rejected_and_scrubs_the_secret() {
    let secret = "sUpErSeCrEtVaLuE0123456789abcdefghijklmn";
    let minted = Minted {
        id: "AKIANEWKEY".into(),
        fields: BTreeMap::from([
            ("access_key_id".to_owned(), Secret::new("AKIANEWKEY")),
            ("secret_access_key".to_owned(), Secret::new(secret)),
        ]),
    };
    let cases = [
        // An endpoint that (absurdly) echoes the secret must still not get it into the error.
        (
            403,
            aws_error("InvalidClientTokenId", &format!("token invalid: {secret}")),
            "Rejected",
        ),
        (
            403,
            aws_error("SignatureDoesNotMatch", "bad signature"),
            "Rejected",
        ),
        (403, "<html>forbidden</html>".to_owned(), "Rejected"),
        (400, aws_error("Throttling", "slow down"), "Transient"),
        (403, aws_error("AccessDenied", "explicit deny"), "Failed"),
    ];
    for (status, body, expected) in cases {
        let fake = fake_aws(status, body).await;
        let p = AwsIamProvider::new(&moto::config_with(&fake.url, "AKIAX", "x").await);
        let err = p.verify(&aws_target("ci"), &minted).await.unwrap_err();
        assert_eq!(kind_of(&err), expected, "HTTP {status}: {err}");
        assert_no_secret("verify error", &format!("{err} {err:?}"), &[secret]);
        assert_eq!(fake.hits.load(Ordering::SeqCst), 1, "one attempt");
    }
}

/// A dry run's provider (`with_user_directory`) takes every user's ARN from one ListUsers
/// instead of a GetUser per target, and inspects exactly as the provider without it: same
/// principal (a user under a path too) and credentials, GetUser only for a user the listing
/// lacks, the same refusal for a user that does not exist.
#[tokio::test]
async fn a_dry_runs_user_directory_lists_the_users_once() {
    use rekey::sandbox::aws::{AwsSandbox, AwsState, KeySpec};
    let state = AwsState::new("123456789012")
        .user("ci-a")
        .with_key(KeySpec::active())
        .user("CI-Pathed")
        .with_path("/ci/bots/")
        .with_key(KeySpec::active())
        .with_key(KeySpec::inactive());
    let sandbox = AwsSandbox::start(state).await.unwrap();
    let plain = AwsIamProvider::new(&sandbox.sdk_config());
    let listed = AwsIamProvider::new(&sandbox.sdk_config()).with_user_directory();
    let actions = |name: &str| {
        sandbox
            .requests()
            .iter()
            .filter(|r| r.action.as_deref() == Some(name))
            .count()
    };
    let mut expected = Vec::new();
    for user in ["ci-a", "ci-pathed"] {
        expected.push(plain.inspect(&aws_target(user)).await.unwrap());
    }
    assert!(expected[1].principal.ends_with(":user/ci/bots/CI-Pathed"));
    sandbox.clear_requests();
    for (user, want) in ["ci-a", "ci-pathed"].iter().zip(&expected) {
        let got = listed.inspect(&aws_target(user)).await.unwrap();
        assert_eq!(got.principal, want.principal);
        assert_eq!(got.credentials, want.credentials);
    }
    assert_eq!((actions("ListUsers"), actions("GetUser")), (1, 0));

    // Created after the listing: asked for.
    sandbox
        .with_state(|s| {
            s.add_user("ci-late", rekey::sandbox::aws::Access::None)
                .map(|_| ())
        })
        .unwrap();
    let late = listed.inspect(&aws_target("ci-late")).await.unwrap();
    assert!(
        late.principal.ends_with(":user/ci-late"),
        "{}",
        late.principal
    );
    assert_eq!((actions("ListUsers"), actions("GetUser")), (1, 1));
    let missing = |p: &AwsIamProvider| {
        let p = p.clone();
        async move { format!("{:?}", p.inspect(&aws_target("nobody")).await.unwrap_err()) }
    };
    assert_eq!(missing(&listed).await, missing(&plain).await);
}
