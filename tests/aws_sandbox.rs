//! The AWS simulator driven by the real AWS SDK for Rust (aws-sdk-iam, aws-sdk-sts) through an
//! endpoint override and static credentials: if these pass, the SDK-based provider talks to
//! the simulator exactly as it would to AWS — same requests, same XML, same typed errors.

use std::time::Duration;

use aws_sdk_iam::types::StatusType;
use chrono::{DateTime, Utc};
use hmac::{Hmac, Mac};
use rekey::sandbox::aws::{
    ADMIN_USER, Access, AwsCredentials, AwsSandbox, AwsState, KeySpec, KeyStatus, Propagation,
};
use rekey::secret::Secret;
use sha2::{Digest, Sha256};

const ACCOUNT: &str = "123456789012";

async fn start(state: AwsState) -> (AwsSandbox, aws_sdk_iam::Client) {
    let sandbox = AwsSandbox::start(state).await.unwrap();
    let iam = aws_sdk_iam::Client::new(&sandbox.sdk_config());
    (sandbox, iam)
}

fn deployer() -> AwsState {
    AwsState::new(ACCOUNT)
        .user("ci-deployer")
        .with_key(KeySpec::active())
}

fn sts_as(sandbox: &AwsSandbox, creds: &AwsCredentials) -> aws_sdk_sts::Client {
    aws_sdk_sts::Client::new(&sandbox.sdk_config_for(creds))
}

/// The error code of a failed GetCallerIdentity, and its HTTP status.
async fn sts_refusal(sandbox: &AwsSandbox, creds: &AwsCredentials) -> (String, u16) {
    use aws_sdk_sts::error::ProvideErrorMetadata;
    let err = sts_as(sandbox, creds)
        .get_caller_identity()
        .send()
        .await
        .expect_err("GetCallerIdentity should be refused");
    let status = err.raw_response().map(|r| r.status().as_u16()).unwrap_or(0);
    (err.code().unwrap_or_default().to_owned(), status)
}

fn creds_of(key: &aws_sdk_iam::types::AccessKey) -> AwsCredentials {
    AwsCredentials {
        access_key_id: key.access_key_id().to_owned(),
        secret_access_key: Secret::new(key.secret_access_key()),
    }
}

#[tokio::test]
async fn key_lifecycle_through_the_sdk() {
    let (sandbox, iam) = start(deployer()).await;
    let old = sandbox.keys_of("ci-deployer")[0].clone();

    // Create: the whole AccessKey comes back, secret included, Active.
    let created = iam
        .create_access_key()
        .user_name("ci-deployer")
        .send()
        .await
        .unwrap();
    let key = created.access_key().unwrap();
    assert_eq!(key.user_name(), "ci-deployer");
    assert_eq!(key.status(), &StatusType::Active);
    assert!(key.access_key_id().starts_with("AKIA") && key.access_key_id().len() == 20);
    assert_eq!(key.secret_access_key().len(), 40);
    assert!(key.create_date().is_some());
    assert!(aws_sdk_iam::operation::RequestId::request_id(&created).is_some());
    let new = creds_of(key);

    // List: both keys, in creation order, with their status.
    let listed = iam
        .list_access_keys()
        .user_name("ci-deployer")
        .send()
        .await
        .unwrap();
    let ids: Vec<&str> = listed
        .access_key_metadata()
        .iter()
        .filter_map(|k| k.access_key_id())
        .collect();
    assert_eq!(
        ids,
        [old.access_key_id.as_str(), new.access_key_id.as_str()]
    );
    assert!(!listed.is_truncated());

    // Never used yet: N/A, no date.
    let unused = iam
        .get_access_key_last_used()
        .access_key_id(&new.access_key_id)
        .send()
        .await
        .unwrap();
    let last = unused.access_key_last_used().unwrap();
    assert_eq!((last.service_name(), last.region()), ("N/A", "N/A"));
    assert!(last.last_used_date().is_none());
    assert_eq!(unused.user_name(), Some("ci-deployer"));

    // STS with the new key: the user's identity; then last use is recorded.
    let identity = sts_as(&sandbox, &new)
        .get_caller_identity()
        .send()
        .await
        .unwrap();
    assert_eq!(
        identity.arn(),
        Some("arn:aws:iam::123456789012:user/ci-deployer")
    );
    assert_eq!(identity.account(), Some(ACCOUNT));
    let user = iam
        .get_user()
        .user_name("ci-deployer")
        .send()
        .await
        .unwrap();
    assert_eq!(identity.user_id(), Some(user.user().unwrap().user_id()));
    let used = iam
        .get_access_key_last_used()
        .access_key_id(&new.access_key_id)
        .send()
        .await
        .unwrap();
    let last = used.access_key_last_used().unwrap();
    assert_eq!((last.service_name(), last.region()), ("sts", "us-east-1"));
    let when = last.last_used_date().unwrap().secs();
    assert!((Utc::now().timestamp() - when).abs() < 60);

    // Inactive: refused as an invalid token (403), unlike moto.
    iam.update_access_key()
        .user_name("ci-deployer")
        .access_key_id(&new.access_key_id)
        .status(StatusType::Inactive)
        .send()
        .await
        .unwrap();
    assert_eq!(
        sandbox.keys_of("ci-deployer")[1].status,
        KeyStatus::Inactive
    );
    assert_eq!(
        sts_refusal(&sandbox, &new).await,
        ("InvalidClientTokenId".to_owned(), 403)
    );

    // Reactivated: works again.
    iam.update_access_key()
        .user_name("ci-deployer")
        .access_key_id(&new.access_key_id)
        .status(StatusType::Active)
        .send()
        .await
        .unwrap();
    sts_as(&sandbox, &new)
        .get_caller_identity()
        .send()
        .await
        .unwrap();

    // Deleted: gone from the listing, refused, and a second delete is NoSuchEntity (404).
    iam.delete_access_key()
        .user_name("ci-deployer")
        .access_key_id(&new.access_key_id)
        .send()
        .await
        .unwrap();
    assert_eq!(sandbox.keys_of("ci-deployer").len(), 1);
    assert_eq!(
        sts_refusal(&sandbox, &new).await,
        ("InvalidClientTokenId".to_owned(), 403)
    );
    let err = iam
        .delete_access_key()
        .user_name("ci-deployer")
        .access_key_id(&new.access_key_id)
        .send()
        .await
        .unwrap_err();
    assert_eq!(err.raw_response().unwrap().status().as_u16(), 404);
    let err = err.into_service_error();
    assert!(err.is_no_such_entity_exception(), "{err:?}");
    assert_eq!(
        aws_sdk_iam::error::ProvideErrorMetadata::message(&err),
        Some(
            format!(
                "The Access Key with id {} cannot be found.",
                new.access_key_id
            )
            .as_str()
        )
    );
    sandbox.shutdown().await;
}

#[tokio::test]
async fn users_are_listed_and_looked_up() {
    let state = deployer()
        .user("web-deployer")
        .user("bot")
        .with_path("/ci/bots/");
    let (_sandbox, iam) = start(state).await;
    // Without a name: the caller.
    let me = iam.get_user().send().await.unwrap();
    let me = me.user().unwrap();
    assert_eq!(me.user_name(), ADMIN_USER);
    assert_eq!(
        me.arn(),
        format!("arn:aws:iam::{ACCOUNT}:user/{ADMIN_USER}")
    );
    assert!(me.user_id().starts_with("AIDA"));
    assert_eq!(me.path(), "/");

    let users = iam.list_users().send().await.unwrap();
    let names: Vec<&str> = users.users().iter().map(|u| u.user_name()).collect();
    assert_eq!(names, ["bot", "ci-deployer", ADMIN_USER, "web-deployer"]);

    // Paths: in the ARN, and as ListUsers' PathPrefix filter, through the SDK's paginator.
    let bots = iam
        .list_users()
        .path_prefix("/ci/")
        .max_items(1)
        .into_paginator()
        .items()
        .send()
        .collect::<Vec<_>>()
        .await
        .into_iter()
        .collect::<Result<Vec<_>, _>>()
        .unwrap();
    assert_eq!(bots.len(), 1);
    assert_eq!(bots[0].path(), "/ci/bots/");
    assert_eq!(
        bots[0].arn(),
        format!("arn:aws:iam::{ACCOUNT}:user/ci/bots/bot")
    );
    let all = iam.list_users().max_items(2).send().await.unwrap();
    assert!(all.is_truncated() && all.users().len() == 2);

    let err = iam
        .get_user()
        .user_name("nobody")
        .send()
        .await
        .unwrap_err()
        .into_service_error();
    assert!(err.is_no_such_entity_exception(), "{err:?}");
    let err = iam
        .list_access_keys()
        .user_name("nobody")
        .send()
        .await
        .unwrap_err()
        .into_service_error();
    assert!(err.is_no_such_entity_exception(), "{err:?}");
}

#[tokio::test]
async fn quota_of_two_keys_is_a_typed_limit_exceeded() {
    let (sandbox, iam) = start(deployer().with_key(KeySpec::inactive())).await;
    let err = iam
        .create_access_key()
        .user_name("ci-deployer")
        .send()
        .await
        .unwrap_err();
    assert_eq!(err.raw_response().unwrap().status().as_u16(), 409);
    let err = err.into_service_error();
    assert!(err.is_limit_exceeded_exception(), "{err:?}");
    assert_eq!(
        aws_sdk_iam::error::ProvideErrorMetadata::message(&err),
        Some("Cannot exceed quota for AccessKeysPerUser: 2")
    );
    // Nothing was created, and the refused call is logged as a mutation attempt.
    assert_eq!(sandbox.keys_of("ci-deployer").len(), 2);
    let mutations = sandbox.mutating_requests();
    assert_eq!(mutations.len(), 1);
    assert_eq!(mutations[0].error_code.as_deref(), Some("LimitExceeded"));
}

#[tokio::test]
async fn signatures_are_verified() {
    let (sandbox, _iam) = start(deployer()).await;
    let good = sandbox.state().credentials_of("ci-deployer")[0].clone();

    let wrong_secret = AwsCredentials {
        access_key_id: good.access_key_id.clone(),
        secret_access_key: Secret::new("x".repeat(40)),
    };
    assert_eq!(
        sts_refusal(&sandbox, &wrong_secret).await,
        ("SignatureDoesNotMatch".to_owned(), 403)
    );
    let unknown = AwsCredentials {
        access_key_id: "AKIAAAAAAAAAAAAAAAAA".into(),
        secret_access_key: good.secret_access_key.clone(),
    };
    assert_eq!(
        sts_refusal(&sandbox, &unknown).await,
        ("InvalidClientTokenId".to_owned(), 403)
    );
    // A failed signature is not a use of the key.
    assert!(sandbox.keys_of("ci-deployer")[0].last_used.is_none());

    // A key seeded with known material (as the CircleCI sandbox holds it) authenticates.
    let imported = AwsCredentials {
        access_key_id: "AKIAIMPORTEDKEY00001".into(),
        secret_access_key: Secret::new("wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY"),
    };
    sandbox.with_state(|s| {
        s.add_user("legacy", Access::None).unwrap();
        s.add_key("legacy", KeySpec::active().credentials(imported.clone()))
            .unwrap();
    });
    let who = sts_as(&sandbox, &imported)
        .get_caller_identity()
        .send()
        .await
        .unwrap();
    assert_eq!(who.arn(), Some("arn:aws:iam::123456789012:user/legacy"));

    // The same refusals through IAM, as the IAM client surfaces them.
    let iam = aws_sdk_iam::Client::new(&sandbox.sdk_config_for(&wrong_secret));
    let err = iam.list_users().send().await.unwrap_err();
    assert_eq!(
        aws_sdk_iam::error::ProvideErrorMetadata::code(&err),
        Some("SignatureDoesNotMatch")
    );
}

#[tokio::test]
async fn list_access_keys_paginates_with_max_items() {
    let (sandbox, iam) = start(deployer().with_key(KeySpec::inactive())).await;
    let first = iam
        .list_access_keys()
        .user_name("ci-deployer")
        .max_items(1)
        .send()
        .await
        .unwrap();
    assert_eq!(first.access_key_metadata().len(), 1);
    assert!(first.is_truncated());
    let marker = first.marker().unwrap().to_owned();
    let second = iam
        .list_access_keys()
        .user_name("ci-deployer")
        .max_items(1)
        .marker(&marker)
        .send()
        .await
        .unwrap();
    assert_eq!(second.access_key_metadata().len(), 1);
    assert!(!second.is_truncated());
    assert!(second.marker().is_none());
    assert_eq!(
        second.access_key_metadata()[0].status(),
        Some(&StatusType::Inactive)
    );

    // The SDK's own paginator follows the markers to the end.
    let all = iam
        .list_access_keys()
        .user_name("ci-deployer")
        .max_items(1)
        .into_paginator()
        .items()
        .send()
        .collect::<Vec<_>>()
        .await
        .into_iter()
        .collect::<Result<Vec<_>, _>>()
        .unwrap();
    let ids: Vec<String> = all
        .iter()
        .filter_map(|k| k.access_key_id().map(str::to_owned))
        .collect();
    let expected: Vec<String> = sandbox
        .keys_of("ci-deployer")
        .into_iter()
        .map(|k| k.access_key_id)
        .collect();
    assert_eq!(ids, expected);

    // A marker from another listing is refused.
    let err = iam
        .list_access_keys()
        .user_name(ADMIN_USER)
        .marker(&marker)
        .send()
        .await
        .unwrap_err();
    assert_eq!(
        aws_sdk_iam::error::ProvideErrorMetadata::code(&err),
        Some("ValidationError")
    );
}

#[tokio::test]
async fn throttling_is_retried_by_the_sdk() {
    let (sandbox, iam) = start(deployer()).await;
    sandbox.throttle("^ListAccessKeys$", 2).unwrap();
    let listed = iam
        .list_access_keys()
        .user_name("ci-deployer")
        .send()
        .await
        .unwrap();
    assert_eq!(listed.access_key_metadata().len(), 1);
    let attempts: Vec<(u16, Option<String>)> = sandbox
        .requests()
        .into_iter()
        .filter(|r| r.action.as_deref() == Some("ListAccessKeys"))
        .map(|r| (r.status, r.error_code))
        .collect();
    assert_eq!(
        attempts,
        [
            (400, Some("Throttling".to_owned())),
            (400, Some("Throttling".to_owned())),
            (200, None)
        ]
    );

    // More throttles than the SDK's attempts: the typed error reaches the caller.
    sandbox.throttle("^GetUser$", 5).unwrap();
    let err = iam.get_user().send().await.unwrap_err();
    assert_eq!(
        aws_sdk_iam::error::ProvideErrorMetadata::code(&err),
        Some("Throttling")
    );
}

#[tokio::test]
async fn server_failures_and_lost_responses() {
    let (sandbox, iam) = start(AwsState::new(ACCOUNT).user("ci-deployer")).await;
    // Every request fails: the SDK retries (3 attempts in all), then reports InternalFailure.
    sandbox.set_error_rate(1.0, 7);
    let err = iam.list_users().send().await.unwrap_err();
    assert_eq!(err.raw_response().unwrap().status().as_u16(), 500);
    assert_eq!(
        aws_sdk_iam::error::ProvideErrorMetadata::code(&err),
        Some("InternalFailure")
    );
    assert_eq!(sandbox.requests().len(), 3);
    sandbox.clear_faults();

    // A create whose answer is lost is retried by the SDK: two keys exist, the caller knows
    // one — the orphan rekey must find on resume.
    sandbox.lose_response("^CreateAccessKey$", 1).unwrap();
    let created = iam
        .create_access_key()
        .user_name("ci-deployer")
        .send()
        .await
        .unwrap();
    let known = created.access_key().unwrap().access_key_id().to_owned();
    let keys = sandbox.keys_of("ci-deployer");
    assert_eq!(keys.len(), 2);
    assert_eq!(keys[1].access_key_id, known);
    assert_eq!(sandbox.mutating_requests().len(), 2);
}

#[tokio::test]
async fn new_keys_can_take_time_to_propagate() {
    let state = deployer().with_propagation(Propagation::Rejections(2));
    let (sandbox, iam) = start(state).await;
    let created = iam
        .create_access_key()
        .user_name("ci-deployer")
        .send()
        .await
        .unwrap();
    let new = creds_of(created.access_key().unwrap());
    for _ in 0..2 {
        assert_eq!(
            sts_refusal(&sandbox, &new).await.0,
            "InvalidClientTokenId".to_owned()
        );
    }
    sts_as(&sandbox, &new)
        .get_caller_identity()
        .send()
        .await
        .unwrap();
    // Seeded keys were never subject to it.
    let old = sandbox.state().credentials_of("ci-deployer")[0].clone();
    sts_as(&sandbox, &old)
        .get_caller_identity()
        .send()
        .await
        .unwrap();

    sandbox.with_state(|s| s.set_propagation(Propagation::Delay(Duration::from_millis(300))));
    iam.delete_access_key()
        .user_name("ci-deployer")
        .access_key_id(&new.access_key_id)
        .send()
        .await
        .unwrap();
    let created = iam
        .create_access_key()
        .user_name("ci-deployer")
        .send()
        .await
        .unwrap();
    let delayed = creds_of(created.access_key().unwrap());
    assert_eq!(
        sts_refusal(&sandbox, &delayed).await.0,
        "InvalidClientTokenId".to_owned()
    );
    tokio::time::sleep(Duration::from_millis(350)).await;
    sts_as(&sandbox, &delayed)
        .get_caller_identity()
        .send()
        .await
        .unwrap();
}

#[tokio::test]
async fn permissions_follow_the_users_access() {
    let state = deployer()
        .user("self-rotator")
        .with_access(Access::OwnKeys)
        .with_key(KeySpec::active());
    let (sandbox, _admin) = start(state).await;
    let rotator = sandbox.state().credentials_of("self-rotator")[0].clone();
    let iam = aws_sdk_iam::Client::new(&sandbox.sdk_config_for(&rotator));

    // Its own keys, without naming itself.
    let own = iam.list_access_keys().send().await.unwrap();
    assert_eq!(own.access_key_metadata().len(), 1);
    iam.create_access_key().send().await.unwrap();
    assert_eq!(sandbox.keys_of("self-rotator").len(), 2);

    // Someone else's: denied with AWS's message.
    let err = iam
        .list_access_keys()
        .user_name("ci-deployer")
        .send()
        .await
        .unwrap_err();
    assert_eq!(err.raw_response().unwrap().status().as_u16(), 403);
    assert_eq!(
        aws_sdk_iam::error::ProvideErrorMetadata::code(&err),
        Some("AccessDenied")
    );
    let message = aws_sdk_iam::error::ProvideErrorMetadata::message(&err).unwrap_or_default();
    assert!(
        message.starts_with(&format!(
            "User: arn:aws:iam::{ACCOUNT}:user/self-rotator is not authorized to perform: \
             iam:ListAccessKeys"
        )),
        "{message}"
    );

    // A user without policies: IAM denied, STS still answers.
    let deployer = sandbox.state().credentials_of("ci-deployer")[0].clone();
    let iam = aws_sdk_iam::Client::new(&sandbox.sdk_config_for(&deployer));
    let err = iam.list_users().send().await.unwrap_err();
    assert_eq!(
        aws_sdk_iam::error::ProvideErrorMetadata::code(&err),
        Some("AccessDenied")
    );
    sts_as(&sandbox, &deployer)
        .get_caller_identity()
        .send()
        .await
        .unwrap();
}

#[tokio::test]
async fn request_log_holds_no_secret() {
    let (sandbox, iam) = start(deployer().user("web-deployer")).await;
    let mut minted = Vec::new();
    for user in ["ci-deployer", "web-deployer", "web-deployer"] {
        let created = iam
            .create_access_key()
            .user_name(user)
            .send()
            .await
            .unwrap();
        minted.push(creds_of(created.access_key().unwrap()));
    }
    for creds in &minted {
        sts_as(&sandbox, creds)
            .get_caller_identity()
            .send()
            .await
            .unwrap();
    }
    let bad = AwsCredentials {
        access_key_id: minted[0].access_key_id.clone(),
        secret_access_key: Secret::new("y".repeat(40)),
    };
    sts_refusal(&sandbox, &bad).await;
    iam.delete_access_key()
        .user_name("web-deployer")
        .access_key_id(&minted[2].access_key_id)
        .send()
        .await
        .unwrap();

    let log = format!("{:?}", sandbox.requests());
    let state = sandbox.state();
    let secrets = state.issued_secrets();
    // Admin key + seeded key + three minted, the deleted one included.
    assert_eq!(secrets.len(), 5);
    for secret in &secrets {
        assert!(!log.contains(secret.expose()), "a secret is in the log");
    }
    assert!(!format!("{state:?}").contains(minted[0].secret_access_key.expose()));

    // Who signed what is recorded, by key id.
    let requests = sandbox.requests();
    let admin = sandbox.admin_credentials().access_key_id;
    assert!(
        requests
            .iter()
            .filter(|r| r.service.as_deref() == Some("iam"))
            .all(|r| r.access_key_id.as_deref() == Some(admin.as_str()))
    );
    let sts: Vec<_> = requests
        .iter()
        .filter(|r| r.action.as_deref() == Some("GetCallerIdentity"))
        .collect();
    assert_eq!(sts.len(), 4);
    assert_eq!(sts[3].error_code.as_deref(), Some("SignatureDoesNotMatch"));
    assert_eq!(
        sts[0].access_key_id.as_deref(),
        Some(minted[0].access_key_id.as_str())
    );

    let mutations: Vec<(String, Option<String>)> = sandbox
        .mutating_requests()
        .into_iter()
        .map(|r| {
            (
                r.action.clone().unwrap_or_default(),
                r.param("AccessKeyId").map(str::to_owned),
            )
        })
        .collect();
    assert_eq!(
        mutations,
        [
            ("CreateAccessKey".to_owned(), None),
            ("CreateAccessKey".to_owned(), None),
            ("CreateAccessKey".to_owned(), None),
            (
                "DeleteAccessKey".to_owned(),
                Some(minted[2].access_key_id.clone())
            ),
        ]
    );
}

/// Signs a GET by hand (SigV4, host and x-amz-date signed), for the wire-level checks the SDK
/// cannot make: the query-string form of the protocol and the raw XML.
fn signed_get(
    sandbox: &AwsSandbox,
    creds: &AwsCredentials,
    service: &str,
    sorted_query: &str,
    at: DateTime<Utc>,
) -> reqwest::RequestBuilder {
    type HmacSha256 = Hmac<Sha256>;
    let host = sandbox.addr().to_string();
    let amz_date = at.format("%Y%m%dT%H%M%SZ").to_string();
    let date = &amz_date[..8];
    let canonical = format!(
        "GET\n/\n{sorted_query}\nhost:{host}\nx-amz-date:{amz_date}\n\nhost;x-amz-date\n{}",
        hex::encode(Sha256::digest(b""))
    );
    let scope = format!("{date}/us-east-1/{service}/aws4_request");
    let to_sign = format!(
        "AWS4-HMAC-SHA256\n{amz_date}\n{scope}\n{}",
        hex::encode(Sha256::digest(canonical.as_bytes()))
    );
    let mut key = format!("AWS4{}", creds.secret_access_key.expose()).into_bytes();
    for part in [date, "us-east-1", service, "aws4_request", to_sign.as_str()] {
        let mut mac = HmacSha256::new_from_slice(&key).unwrap();
        mac.update(part.as_bytes());
        key = mac.finalize().into_bytes().to_vec();
    }
    reqwest::Client::new()
        .get(format!("{}/?{sorted_query}", sandbox.endpoint_url()))
        .header("x-amz-date", amz_date)
        .header(
            "authorization",
            format!(
                "AWS4-HMAC-SHA256 Credential={}/{scope}, SignedHeaders=host;x-amz-date, \
                 Signature={}",
                creds.access_key_id,
                hex::encode(key)
            ),
        )
}

#[tokio::test]
async fn wire_format_of_answers_and_errors() {
    let (sandbox, _iam) = start(deployer()).await;
    let admin = sandbox.admin_credentials();

    // GET with the parameters in the query string works as POST does.
    let response = signed_get(
        &sandbox,
        &admin,
        "sts",
        "Action=GetCallerIdentity&Version=2011-06-15",
        Utc::now(),
    )
    .send()
    .await
    .unwrap();
    assert_eq!(response.status().as_u16(), 200);
    assert_eq!(response.headers()["content-type"], "text/xml");
    let request_id = response.headers()["x-amzn-requestid"]
        .to_str()
        .unwrap()
        .to_owned();
    let body = response.text().await.unwrap();
    assert!(
        body.starts_with(
            "<GetCallerIdentityResponse xmlns=\"https://sts.amazonaws.com/doc/2011-06-15/\">\
             <GetCallerIdentityResult><Arn>arn:aws:iam::123456789012:user/rekey-admin</Arn>"
        ),
        "{body}"
    );
    assert!(body.contains(&format!(
        "<ResponseMetadata><RequestId>{request_id}</RequestId></ResponseMetadata>"
    )));

    // An error document, as AWS writes it.
    let response = signed_get(
        &sandbox,
        &admin,
        "iam",
        "Action=GetUser&UserName=nobody&Version=2010-05-08",
        Utc::now(),
    )
    .send()
    .await
    .unwrap();
    assert_eq!(response.status().as_u16(), 404);
    let body = response.text().await.unwrap();
    assert!(
        body.starts_with(
            "<ErrorResponse xmlns=\"https://iam.amazonaws.com/doc/2010-05-08/\"><Error>\
             <Type>Sender</Type><Code>NoSuchEntity</Code>\
             <Message>The user with name nobody cannot be found.</Message></Error><RequestId>"
        ),
        "{body}"
    );

    // A request signed 20 minutes ago has expired.
    let stale = Utc::now() - chrono::TimeDelta::minutes(20);
    let response = signed_get(
        &sandbox,
        &admin,
        "iam",
        "Action=ListUsers&Version=2010-05-08",
        stale,
    )
    .send()
    .await
    .unwrap();
    assert_eq!(response.status().as_u16(), 403);
    let body = response.text().await.unwrap();
    assert!(
        body.contains("<Code>SignatureDoesNotMatch</Code>"),
        "{body}"
    );
    assert!(body.contains("Signature expired"), "{body}");

    // Wrong or missing Version, unknown action, no signature at all.
    for (query, code, status) in [
        ("Action=ListUsers&Version=2011-06-15", "InvalidAction", 400),
        ("Action=ListUsers", "InvalidAction", 400),
        (
            "Action=CreateUser&UserName=x&Version=2010-05-08",
            "InvalidAction",
            400,
        ),
    ] {
        let response = signed_get(&sandbox, &admin, "iam", query, Utc::now())
            .send()
            .await
            .unwrap();
        assert_eq!(response.status().as_u16(), status, "{query}");
        let body = response.text().await.unwrap();
        assert!(body.contains(&format!("<Code>{code}</Code>")), "{body}");
    }
    let response = reqwest::Client::new()
        .post(sandbox.endpoint_url())
        .header("content-type", "application/x-www-form-urlencoded")
        .body("Action=ListUsers&Version=2010-05-08")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 403);
    let body = response.text().await.unwrap();
    assert!(
        body.contains("<Code>MissingAuthenticationToken</Code>"),
        "{body}"
    );
}

#[tokio::test]
async fn dropping_the_handle_stops_the_server() {
    let (sandbox, iam) = start(deployer()).await;
    iam.list_users().send().await.unwrap();
    let config = sandbox.sdk_config();
    drop(sandbox);
    // Give the aborted task a moment to release the socket; a new client opens a new
    // connection, which nothing accepts any more.
    tokio::time::sleep(Duration::from_millis(50)).await;
    let iam = aws_sdk_iam::Client::new(&config);
    let err = iam.list_users().send().await.unwrap_err();
    assert!(err.raw_response().is_none(), "{err:?}");
}
