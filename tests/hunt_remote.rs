//! `rekey hunt` over the platforms' APIs: CloudTrail files in S3 (moto's server), CloudTrail
//! LookupEvents (the project's AWS simulator: moto does not implement it), the GitHub
//! organization audit log, GCP Cloud Logging and Azure (the project's simulators). A hunt over
//! an API finds exactly what the same records find as local files; a source that cannot be
//! read makes the hunt incomplete (exit 1), never clean; no token appears in any output.

mod support;

use rekey::hunt::engine::{self, HuntOptions};
use rekey::hunt::findings::HuntReport;
use rekey::hunt::pack::RuleSet;
use rekey::hunt::remote::{self, Context, Credentials, Remote, Window};
use rekey::hunt::source::Source;
use rekey::sandbox::aws::{AwsSandbox, AwsState};
use std::collections::BTreeSet;
use std::sync::Arc;
use support::moto::Moto;
use support::trail;

const BENJAMIN: &str = "AKIATFQR7NSCUXC3DDDP";

fn t(s: &str) -> chrono::DateTime<chrono::Utc> {
    s.parse().unwrap()
}

/// The dataset's day, with the default 30-day baseline before the default incident start.
fn dataset_window() -> Window {
    Window {
        from: t("2022-11-21T00:00:00Z"),
        until: t("2023-07-11T00:00:00Z"),
    }
}

/// What identifies a finding whatever the layout the records came from (not the location).
fn keys(r: &HuntReport) -> BTreeSet<(String, Option<String>, Option<String>, String)> {
    r.findings
        .iter()
        .map(|f| {
            (
                f.rule_id.to_string(),
                f.record_id.clone(),
                f.credential.as_deref().map(str::to_string),
                f.time.to_rfc3339(),
            )
        })
        .collect()
}

fn local(dir: &std::path::Path, creds: &[&str]) -> HuntReport {
    let opts = HuntOptions {
        inputs: vec![(Source::Cloudtrail, dir.to_path_buf())],
        credentials: creds.iter().map(|s| s.to_string()).collect(),
        ..Default::default()
    };
    engine::run(&RuleSet::builtin(), &opts)
}

async fn remote_hunt(
    remotes: Vec<Remote>,
    creds: &[&str],
    window: Window,
    ctx: Context,
) -> HuntReport {
    let opts = HuntOptions {
        credentials: creds.iter().map(|s| s.to_string()).collect(),
        ..Default::default()
    };
    remote::hunt(
        Arc::new(RuleSet::builtin()),
        opts,
        remotes,
        window,
        Arc::new(ctx),
    )
    .await
}

fn denials(r: &HuntReport, code: &str) -> usize {
    r.findings
        .iter()
        .filter(|f| f.hunt.as_deref() == Some("aws-denied") && f.error.as_deref() == Some(code))
        .count()
}

/// Benjamin's reconnaissance: every recon finding from 10.248.16.43 with Boto3.
fn assert_benjamin_recon(r: &HuntReport) {
    let recon: Vec<_> = r
        .findings
        .iter()
        .filter(|f| f.hunt.as_deref() == Some("aws-recon"))
        .collect();
    let actions: BTreeSet<&str> = recon.iter().filter_map(|f| f.action.as_deref()).collect();
    for a in [
        "ListUsers",
        "GetAccountAuthorizationDetails",
        "GetAccountSummary",
        "ListMFADevices",
    ] {
        assert!(actions.contains(a), "{a} missing from {actions:?}");
    }
    for f in &recon {
        assert_eq!(f.credential.as_deref(), Some(BENJAMIN));
        assert_eq!(f.source_ip.as_deref(), Some("10.248.16.43"));
        assert!(f.user_agent.as_deref().unwrap_or("").contains("Boto3"));
    }
}

// ---------------------------------------------------------------------------------------------
// S3 (moto)

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_plain_and_gzip_objects_give_the_same_findings_as_the_files() {
    let Some(dir) = trail::invictus() else { return };
    let Some(moto) = Moto::start().await else {
        return;
    };
    let s3 = trail::s3(moto.config());
    s3.create_bucket().bucket("trail").send().await.unwrap();
    for f in trail::files(&dir) {
        let name = f.file_name().unwrap().to_str().unwrap().to_owned();
        let bytes = std::fs::read(&f).unwrap();
        trail::put(
            &s3,
            "trail",
            &format!("plain/{}/{name}", trail::DAY_PREFIX),
            bytes.clone(),
        )
        .await;
        trail::put(
            &s3,
            "trail",
            &format!("gz/{}/{name}.gz", trail::DAY_PREFIX),
            trail::gzip(&bytes),
        )
        .await;
    }
    // Never read: a digest (not JSON records), a file of another kind, and a day wholly
    // before the window (its record would be a finding if it were read).
    for prefix in ["plain", "gz"] {
        trail::put(
            &s3,
            "trail",
            &format!(
                "{prefix}/AWSLogs/218007301253/CloudTrail-Digest/us-east-1/2023/07/10/d.json.gz"
            ),
            b"not json at all".to_vec(),
        )
        .await;
        trail::put(
            &s3,
            "trail",
            &format!("{prefix}/{}/README.txt", trail::DAY_PREFIX),
            b"not json at all".to_vec(),
        )
        .await;
        trail::put(
            &s3,
            "trail",
            &format!("{prefix}/AWSLogs/218007301253/CloudTrail/us-east-1/2022/01/02/old.json"),
            br#"{"Records":[{"eventTime":"2022-01-02T00:00:00Z","eventID":"old-1","eventName":"ListUsers","errorCode":"AccessDenied","userIdentity":{"accessKeyId":"AKIAOLDOLDOLDOLDOLD1"}}]}"#.to_vec(),
        )
        .await;
    }
    let want_all = local(&dir, &[]);
    let want_benjamin = local(&dir, &[BENJAMIN]);
    for prefix in ["plain", "gz"] {
        let ctx = || Context {
            credentials: Credentials {
                aws: Some(moto.config().clone()),
                ..Default::default()
            },
            // Listing pages of 7 keys: pagination by continuation token is exercised.
            page_size: Some(7),
            ..Default::default()
        };
        let s3_remote = || Remote::S3 {
            bucket: "trail".into(),
            prefix: format!("{prefix}/"),
        };
        let got = remote_hunt(vec![s3_remote()], &[], dataset_window(), ctx()).await;
        assert!(got.incomplete.is_empty(), "{:?}", got.incomplete);
        assert!(got.problems.is_empty(), "{:?}", got.problems);
        assert_eq!(got.stats.records, 2900, "{prefix}");
        assert_eq!(
            got.stats.pages, 55,
            "{prefix}: every log file, nothing else"
        );
        assert_eq!(denials(&got, "AccessDenied"), 16, "{prefix}");
        assert_eq!(
            denials(&got, "Client.UnauthorizedOperation"),
            44,
            "{prefix}"
        );
        assert_eq!(keys(&got), keys(&want_all), "{prefix}");
        assert!(
            got.notes
                .iter()
                .any(|n| n.contains("1 log file(s) of days before 2022-11-21")),
            "{:?}",
            got.notes
        );
        assert!(
            got.findings.iter().all(|f| f
                .location
                .starts_with(&format!("s3://trail/{prefix}/AWSLogs/"))),
            "locations name the object"
        );

        let got = remote_hunt(vec![s3_remote()], &[BENJAMIN], dataset_window(), ctx()).await;
        assert_eq!(keys(&got), keys(&want_benjamin), "{prefix}");
        assert_benjamin_recon(&got);
        let gaad = got
            .findings
            .iter()
            .find(|f| f.action.as_deref() == Some("GetAccountAuthorizationDetails"))
            .unwrap();
        assert!(
            gaad.location.contains("218007301253_CloudTrail"),
            "{gaad:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_missing_bucket_makes_the_hunt_incomplete() {
    let Some(moto) = Moto::start().await else {
        return;
    };
    let ctx = Context {
        credentials: Credentials {
            aws: Some(moto.config().clone()),
            ..Default::default()
        },
        ..Default::default()
    };
    let got = remote_hunt(
        vec![Remote::S3 {
            bucket: "nope".into(),
            prefix: String::new(),
        }],
        &[],
        dataset_window(),
        ctx,
    )
    .await;
    assert_eq!(got.incomplete.len(), 1, "{:?}", got.incomplete);
    assert!(got.incomplete[0].location.starts_with("s3://nope/"));
    assert!(
        got.incomplete[0].message.contains("NoSuchBucket"),
        "{:?}",
        got.incomplete
    );
    assert_eq!(got.stats.pages, 0);
}

// ---------------------------------------------------------------------------------------------
// LookupEvents (the AWS simulator)

async fn trail_sandbox(dir: &std::path::Path) -> AwsSandbox {
    let mut state = AwsState::new("218007301253");
    assert_eq!(trail::load_into(&mut state, dir), 2900);
    AwsSandbox::start(state).await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lookup_events_give_the_same_findings_as_the_files() {
    let Some(dir) = trail::invictus() else { return };
    let aws = trail_sandbox(&dir).await;
    let ctx = Context {
        credentials: Credentials {
            aws: Some(aws.sdk_config()),
            ..Default::default()
        },
        ..Default::default()
    };
    let got = remote_hunt(
        vec![Remote::LookupEvents {
            access_key_ids: vec![BENJAMIN.into()],
        }],
        &[BENJAMIN],
        dataset_window(),
        ctx,
    )
    .await;
    assert!(got.incomplete.is_empty(), "{:?}", got.incomplete);
    assert!(got.problems.is_empty(), "{:?}", got.problems);
    let want = local(&dir, &[BENJAMIN]);
    assert!(!want.findings.is_empty());
    assert_eq!(keys(&got), keys(&want));
    assert_benjamin_recon(&got);
    let benjamin_events = aws.with_state(|s| {
        s.trail_events()
            .iter()
            .filter(|e| e.access_key_id.as_deref() == Some(BENJAMIN))
            .count()
    });
    assert_eq!(got.stats.records as usize, benjamin_events);
    assert_eq!(
        got.stats.pages as usize,
        benjamin_events.div_ceil(50),
        "pages of 50"
    );
    assert!(
        got.findings.iter().all(|f| f
            .location
            .starts_with("cloudtrail:LookupEvents AccessKeyId=AKIATFQR7NSCUXC3DDDP page ")),
        "locations name the page"
    );
    // The window is more than 90 days: the fetcher clamps it and says so.
    assert!(
        got.notes.iter().any(|n| n.contains("keeps 90 days")),
        "{:?}",
        got.notes
    );
    let calls: Vec<_> = aws
        .requests()
        .into_iter()
        .filter(|r| r.action.as_deref() == Some("LookupEvents"))
        .collect();
    assert_eq!(calls.len(), got.stats.pages as usize);
    assert!(calls.iter().all(|r| r.status == 200));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lookup_events_paginates_filters_by_time_and_key_newest_first() {
    let Some(dir) = trail::invictus() else { return };
    let aws = trail_sandbox(&dir).await;
    let ct = aws_sdk_cloudtrail::Client::new(&aws.sdk_config());
    let attr = aws_sdk_cloudtrail::types::LookupAttribute::builder()
        .attribute_key(aws_sdk_cloudtrail::types::LookupAttributeKey::AccessKeyId)
        .attribute_value(BENJAMIN)
        .build()
        .unwrap();
    let expected = aws.with_state(|s| {
        s.trail_events()
            .iter()
            .filter(|e| e.access_key_id.as_deref() == Some(BENJAMIN))
            .count()
    });
    let mut token = None;
    let mut times = Vec::new();
    let mut pages = 0;
    loop {
        let out = ct
            .lookup_events()
            .lookup_attributes(attr.clone())
            .max_results(7)
            .set_next_token(token.take())
            .send()
            .await
            .unwrap();
        pages += 1;
        assert!(out.events().len() <= 7);
        for e in out.events() {
            assert_eq!(e.access_key_id(), Some(BENJAMIN));
            let record: serde_json::Value =
                serde_json::from_str(e.cloud_trail_event().unwrap()).unwrap();
            assert_eq!(record["userIdentity"]["accessKeyId"], BENJAMIN);
            times.push(e.event_time().unwrap().secs());
        }
        match out.next_token() {
            Some(t) => token = Some(t.to_owned()),
            None => break,
        }
    }
    assert_eq!(times.len(), expected);
    assert_eq!(pages, expected.div_ceil(7));
    assert!(times.windows(2).all(|w| w[0] >= w[1]), "newest first");

    // Time filter: only 11:43:34 (inclusive both ends) — GetAccountAuthorizationDetails.
    let at =
        aws_sdk_cloudtrail::primitives::DateTime::from_secs(t("2023-07-10T11:43:34Z").timestamp());
    let out = ct
        .lookup_events()
        .lookup_attributes(attr.clone())
        .start_time(at)
        .end_time(at)
        .send()
        .await
        .unwrap();
    let names: BTreeSet<&str> = out.events().iter().filter_map(|e| e.event_name()).collect();
    assert!(
        names.contains("GetAccountAuthorizationDetails"),
        "{names:?}"
    );
    assert!(
        out.events()
            .iter()
            .all(|e| e.event_time().unwrap().secs() == at.secs())
    );

    // Documented errors.
    let err = ct.lookup_events().max_results(51).send().await.unwrap_err();
    assert_eq!(
        aws_sdk_cloudtrail::error::ProvideErrorMetadata::code(&err),
        Some("InvalidMaxResultsException")
    );
    let err = ct
        .lookup_events()
        .next_token("00ff")
        .send()
        .await
        .unwrap_err();
    assert_eq!(
        aws_sdk_cloudtrail::error::ProvideErrorMetadata::code(&err),
        Some("InvalidNextTokenException")
    );
    let err = ct
        .lookup_events()
        .start_time(aws_sdk_cloudtrail::primitives::DateTime::from_secs(20))
        .end_time(aws_sdk_cloudtrail::primitives::DateTime::from_secs(10))
        .send()
        .await
        .unwrap_err();
    assert_eq!(
        aws_sdk_cloudtrail::error::ProvideErrorMetadata::code(&err),
        Some("InvalidTimeRangeException")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lookup_events_refused_credentials_make_the_hunt_incomplete() {
    let aws = AwsSandbox::start(AwsState::new("218007301253"))
        .await
        .unwrap();
    let mut bad = aws.admin_credentials();
    bad.access_key_id = "AKIAUNKNOWNUNKNOWN12".into();
    let ctx = Context {
        credentials: Credentials {
            aws: Some(aws.sdk_config_for(&bad)),
            ..Default::default()
        },
        ..Default::default()
    };
    let got = remote_hunt(
        vec![Remote::LookupEvents {
            access_key_ids: vec![BENJAMIN.into()],
        }],
        &[],
        dataset_window(),
        ctx,
    )
    .await;
    assert_eq!(got.incomplete.len(), 1, "{:?}", got.incomplete);
    assert_eq!(
        got.incomplete[0].location,
        "cloudtrail:LookupEvents AccessKeyId=AKIATFQR7NSCUXC3DDDP page 1"
    );
    assert!(
        got.incomplete[0]
            .message
            .contains("UnrecognizedClientException"),
        "{:?}",
        got.incomplete
    );
    let text = format!("{:?}", got.incomplete);
    support::assert_no_secret("report", &text, &[bad.secret_access_key.expose()]);
}

// ---------------------------------------------------------------------------------------------
// GitHub organization audit log (the GitHub simulator)

use rekey::sandbox::github::{GithubSandbox, GithubState};

const TOKEN_A: &str = "4b1d2b0c3f1e5a6c7d8e9f00112233445566778899aabbccddeeff0011223344";

fn git_event(
    id: &str,
    action: &str,
    ip: &str,
    at: chrono::DateTime<chrono::Utc>,
) -> serde_json::Value {
    serde_json::json!({
        "@timestamp": at.timestamp_millis(),
        "created_at": at.timestamp_millis(),
        "_document_id": id,
        "action": action,
        "actor": "ci-bot",
        "actor_ip": ip,
        "org": "acme",
        "repo": "acme/api",
        "hashed_token": TOKEN_A,
        "transport_protocol_name": "http",
    })
}

/// acme's audit log, relative to now: a baseline fetch (5 days ago), a clone from the same
/// address and one from a new address after the incident start (3 days ago), a clone 10 days
/// ago (gone from the API: git events are kept 7 days) and web events.
async fn github_with_events() -> (GithubSandbox, chrono::DateTime<chrono::Utc>) {
    let now = chrono::Utc::now();
    let days = chrono::Duration::days;
    let mut state = GithubState::new().org("acme");
    for e in [
        git_event("d-base", "git.fetch", "192.0.2.10", now - days(5)),
        git_event("d-same", "git.clone", "192.0.2.10", now - days(1)),
        git_event(
            "d-new",
            "git.clone",
            "203.0.113.9",
            now - days(1) + chrono::Duration::hours(1),
        ),
        git_event("d-old", "git.clone", "198.51.100.1", now - days(10)),
    ] {
        state.add_audit_event("acme", e);
    }
    for i in 0..5 {
        state.add_audit_event(
            "acme",
            serde_json::json!({
                "@timestamp": (now - days(2) + chrono::Duration::minutes(i)).timestamp_millis(),
                "_document_id": format!("w-{i}"),
                "action": "org.update_member",
                "actor": "octocat",
                "actor_ip": "192.0.2.50",
            }),
        );
    }
    let sandbox = GithubSandbox::start(state).await.unwrap();
    (sandbox, now - days(3))
}

fn fast_retry() -> rekey::http::RetryPolicy {
    rekey::http::RetryPolicy {
        max_attempts: 4,
        base_delay: std::time::Duration::from_millis(5),
        max_delay: std::time::Duration::from_millis(50),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn github_audit_log_pages_rate_limits_and_the_git_retention_note() {
    let (gh, since) = github_with_events().await;
    let token = gh.admin_token();
    // A 429 (Retry-After) and a secondary rate limit (403) on the way: both waited out.
    gh.fail_next_with_body("/audit-log$", 1, 429, None).unwrap();
    gh.fail_next_with_body(
        "/audit-log$",
        1,
        403,
        Some(r#"{"message":"You have exceeded a secondary rate limit. Please wait a few minutes before you try again.","documentation_url":"https://docs.github.com/rest"}"#),
    )
    .unwrap();
    let ctx = Context {
        endpoints: remote::Endpoints {
            github_api: gh.base_url(),
            ..Default::default()
        },
        credentials: Credentials {
            github_token: Some(rekey::secret::Secret::new(token.clone())),
            ..Default::default()
        },
        retry: fast_retry(),
        page_size: Some(2),
    };
    let opts = HuntOptions {
        since,
        ..Default::default()
    };
    let window = Window {
        from: since - chrono::Duration::days(30),
        until: chrono::Utc::now(),
    };
    let report = remote::hunt(
        Arc::new(RuleSet::builtin()),
        opts,
        vec![Remote::GithubOrg {
            org: "acme".into(),
            phrase: None,
        }],
        window,
        Arc::new(ctx),
    )
    .await;
    assert!(report.incomplete.is_empty(), "{:?}", report.incomplete);
    assert!(report.problems.is_empty(), "{:?}", report.problems);
    // 8 events answered (the 10-day-old clone is gone), 2 a page.
    assert_eq!(report.stats.records, 8);
    assert_eq!(report.stats.pages, 4);
    let git: Vec<_> = report
        .findings
        .iter()
        .filter(|f| f.rule_id.as_ref() == "30651bc9-00e0-4711-9126-5b93efba8444")
        .map(|f| f.record_id.clone().unwrap_or_default())
        .collect();
    assert_eq!(git.len(), 2, "{git:?}");
    let new_ip: Vec<_> = report
        .findings
        .iter()
        .filter(|f| f.rule_id.as_ref() == "rekey-new-source-address")
        .collect();
    assert_eq!(new_ip.len(), 1, "{:?}", report.findings);
    assert_eq!(new_ip[0].source_ip.as_deref(), Some("203.0.113.9"));
    assert_eq!(new_ip[0].credential.as_deref(), Some(TOKEN_A));
    assert!(
        new_ip[0]
            .location
            .starts_with("github:orgs/acme/audit-log page ")
    );
    assert!(
        report
            .notes
            .iter()
            .any(|n| n.contains("git.clone, git.fetch and git.push before")),
        "{:?}",
        report.notes
    );
    let requests = gh.requests();
    let audit: Vec<_> = requests
        .iter()
        .filter(|r| r.path == "/orgs/acme/audit-log")
        .collect();
    assert_eq!(audit.len(), 6, "4 pages + 2 rate-limited attempts");
    let first = audit[0].query.as_deref().unwrap_or_default();
    let params: std::collections::BTreeMap<String, String> =
        url::form_urlencoded::parse(first.as_bytes())
            .into_owned()
            .collect();
    assert_eq!(params["include"], "all");
    assert_eq!(
        params["phrase"],
        format!("created:>={}", window.from.format("%Y-%m-%d"))
    );
    assert!(
        audit[3..]
            .iter()
            .all(|r| r.query.as_deref().unwrap_or("").contains("after="))
    );
    support::assert_no_secret("report", &format!("{report:?}"), &[&token]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn github_phrase_narrows_and_bad_token_is_incomplete_without_the_token() {
    let (gh, since) = github_with_events().await;
    let run = |token: String, phrase: Option<&str>| {
        let ctx = Context {
            endpoints: remote::Endpoints {
                github_api: gh.base_url(),
                ..Default::default()
            },
            credentials: Credentials {
                github_token: Some(rekey::secret::Secret::new(token)),
                ..Default::default()
            },
            retry: fast_retry(),
            ..Default::default()
        };
        let remotes = vec![Remote::GithubOrg {
            org: "acme".into(),
            phrase: phrase.map(str::to_owned),
        }];
        remote::hunt(
            Arc::new(RuleSet::builtin()),
            HuntOptions {
                since,
                ..Default::default()
            },
            remotes,
            Window {
                from: since - chrono::Duration::days(1),
                until: chrono::Utc::now(),
            },
            Arc::new(ctx),
        )
    };
    let r = run(gh.admin_token(), Some("action:git")).await;
    assert!(r.incomplete.is_empty(), "{:?}", r.incomplete);
    // Git events only, and only from 4 days back (created:>=): the 5-day-old fetch is not asked.
    assert_eq!(r.stats.records, 2);
    let ids: BTreeSet<String> = r
        .findings
        .iter()
        .filter_map(|f| f.record_id.clone())
        .collect();
    assert_eq!(
        ids,
        BTreeSet::from(["d-new".to_owned(), "d-same".to_owned()])
    );
    assert!(
        !r.notes.iter().any(|n| n.contains("git.clone")),
        "a 4-day window is within git retention: {:?}",
        r.notes
    );

    let wrong = "ghp_wrongwrongwrongwrongwrongwrongwrong".to_owned();
    let r = run(wrong.clone(), None).await;
    assert_eq!(r.incomplete.len(), 1);
    assert_eq!(
        r.incomplete[0].location,
        "github:orgs/acme/audit-log page 1"
    );
    assert!(
        r.incomplete[0].message.starts_with("HTTP 401"),
        "{:?}",
        r.incomplete
    );
    support::assert_no_secret("report", &format!("{r:?}"), &[&wrong]);
}

// ---------------------------------------------------------------------------------------------
// The command line

fn rekey_cmd() -> std::process::Command {
    let mut c = std::process::Command::new(env!("CARGO_BIN_EXE_rekey"));
    c.env_remove("RUST_LOG")
        .env_remove("GITHUB_TOKEN")
        .env_remove("AWS_PROFILE")
        .env("REKEY_KEYRING_DISABLED", "1")
        .env("AWS_CONFIG_FILE", "/dev/null")
        .env("AWS_SHARED_CREDENTIALS_FILE", "/dev/null")
        .env("AWS_EC2_METADATA_DISABLED", "true");
    c
}

#[test]
fn cli_lookup_events_needs_an_access_key_id() {
    let out = rekey_cmd()
        .args(["hunt", "--lookup-events"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--access-key-id"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cli_lookup_events_finds_the_reconnaissance_and_keeps_the_secret() {
    let Some(dir) = trail::invictus() else { return };
    let aws = trail_sandbox(&dir).await;
    let admin = aws.admin_credentials();
    let url = aws.endpoint_url();
    let secret = admin.secret_access_key.expose().to_owned();
    let out = tokio::task::spawn_blocking(move || {
        rekey_cmd()
            .args([
                "hunt",
                "--lookup-events",
                "--access-key-id",
                BENJAMIN,
                "--since",
                "2023-07-10T00:00:00Z",
                "--baseline",
                "1d",
                "--until",
                "2023-07-11T00:00:00Z",
                "--output",
                "json",
            ])
            .env("AWS_ENDPOINT_URL", url)
            .env("AWS_REGION", "us-east-1")
            .env("AWS_ACCESS_KEY_ID", &admin.access_key_id)
            .env("AWS_SECRET_ACCESS_KEY", admin.secret_access_key.expose())
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "high recon findings: {stderr}");
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let findings = doc["credentials"][0]["findings"].as_array().unwrap();
    let gaad = findings
        .iter()
        .find(|f| f["action"] == "GetAccountAuthorizationDetails")
        .unwrap();
    assert_eq!(gaad["source_ip"], "10.248.16.43");
    assert_eq!(gaad["time"], "2023-07-10T11:43:34Z");
    assert!(doc.get("incomplete").is_none(), "{doc}");
    let all = format!("{}{stderr}", String::from_utf8_lossy(&out.stdout));
    support::assert_no_secret("output", &all, &[&secret]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cli_github_org_clean_run_and_refused_token_exits_1_without_the_token() {
    let (gh, since) = github_with_events().await;
    let base = gh.base_url();
    let good = gh.admin_token();
    let since = since.to_rfc3339();
    let run = move |token: String| {
        let base = base.clone();
        let since = since.clone();
        tokio::task::spawn_blocking(move || {
            rekey_cmd()
                .args(["hunt", "--github-org", "acme", "--since", &since])
                .env("GITHUB_API_URL", base)
                .env("GITHUB_TOKEN", token)
                .output()
                .unwrap()
        })
    };
    let out = run(good.clone()).await.unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    // A medium new-address finding: under the default --fail-on high.
    assert_eq!(out.status.code(), Some(0), "{stdout}{stderr}");
    assert!(stdout.contains("203.0.113.9"), "{stdout}");
    assert!(
        stdout.contains("github:orgs/acme/audit-log page 1"),
        "{stdout}"
    );
    support::assert_no_secret("output", &format!("{stdout}{stderr}"), &[&good]);

    let wrong = "ghp_notthetokennotthetokennotthetoken00".to_owned();
    let out = run(wrong.clone()).await.unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(1), "{stdout}{stderr}");
    assert!(
        stdout.contains("NOT READ: github:orgs/acme/audit-log page 1: HTTP 401"),
        "{stdout}"
    );
    assert!(stderr.contains("the hunt is incomplete"), "{stderr}");
    support::assert_no_secret("output", &format!("{stdout}{stderr}"), &[&wrong, &good]);
}

// ---------------------------------------------------------------------------------------------
// GCP Cloud Logging (the GCP simulator)

use rekey::providers::gcp::{GcpAuth, ServiceAccountKey};
use rekey::sandbox::gcp::GcpSandbox;

const GCP_SA: &str = "ci@acme.iam.gserviceaccount.com";

fn gcp_fixture() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/hunt/gcp-logging.jsonl")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gcp_entries_list_gives_the_fixture_findings_filtered_by_principal_and_log() {
    let gcp = GcpSandbox::start("acme").await.unwrap();
    let text = std::fs::read_to_string(gcp_fixture()).unwrap();
    gcp.with_state(|s| {
        // The fixture's readable entries…
        for line in text.lines() {
            if let Ok(v) = serde_json::from_str::<serde_json::Value>(line) {
                s.add_log_entry(v);
            }
        }
        // …and entries the request must filter out: another principal's denial, an
        // application log's error, and a denial before the window.
        let denied = |id: &str, who: &str, log: &str, at: &str| {
            serde_json::json!({
                "insertId": id, "logName": log, "timestamp": at, "severity": "ERROR",
                "protoPayload": {"authenticationInfo": {"principalEmail": who},
                    "methodName": "storage.objects.list",
                    "requestMetadata": {"callerIp": "203.0.113.66"},
                    "status": {"code": 7, "message": "PERMISSION_DENIED"}}
            })
        };
        let audit = "projects/acme/logs/cloudaudit.googleapis.com%2Fdata_access";
        s.add_log_entry(denied(
            "x-other",
            "other@acme.iam.gserviceaccount.com",
            audit,
            "2023-01-03T11:00:00Z",
        ));
        s.add_log_entry(denied(
            "x-app",
            GCP_SA,
            "projects/acme/logs/app",
            "2023-01-03T11:00:00Z",
        ));
        s.add_log_entry(denied("x-early", GCP_SA, audit, "2022-01-03T11:00:00Z"));
    });
    let key = ServiceAccountKey::parse(gcp.admin_key_json().unwrap().expose()).unwrap();
    let ctx = Context {
        endpoints: remote::Endpoints {
            gcp_logging: gcp.logging_url(),
            gcp_token: gcp.token_url(),
            ..Default::default()
        },
        credentials: Credentials {
            gcp: Some(GcpAuth::KeyFile(Box::new(key))),
            ..Default::default()
        },
        retry: fast_retry(),
        page_size: Some(1),
    };
    let window = Window {
        from: t("2022-11-21T00:00:00Z"),
        until: t("2023-02-01T00:00:00Z"),
    };
    let got = remote_hunt(
        vec![Remote::GcpProject {
            project: "acme".into(),
            principal: Some(GCP_SA.into()),
        }],
        &[],
        window,
        ctx,
    )
    .await;
    assert!(got.incomplete.is_empty(), "{:?}", got.incomplete);
    assert!(got.problems.is_empty(), "{:?}", got.problems);
    assert_eq!(got.stats.records, 3, "g1, g2, g3 only");
    assert_eq!(got.stats.pages, 3, "one entry a page");
    let want = engine::run(
        &RuleSet::builtin(),
        &HuntOptions {
            inputs: vec![(Source::GcpLogging, gcp_fixture())],
            ..Default::default()
        },
    );
    assert!(!want.findings.is_empty());
    assert_eq!(keys(&got), keys(&want));
    assert!(
        got.findings
            .iter()
            .all(|f| f.location.starts_with("gcp:projects/acme/entries page "))
    );
    // The filter went as documented.
    let lists: Vec<_> = gcp
        .server()
        .requests()
        .into_iter()
        .filter(|r| r.path == "/v2/entries:list")
        .collect();
    assert_eq!(lists.len(), 3);
    assert!(lists.iter().all(|r| r.status == 200));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gcp_without_credentials_or_with_a_foreign_project_is_incomplete() {
    let gcp = GcpSandbox::start("acme").await.unwrap();
    let token = gcp.with_state(|s| s.issue_token("rekey-admin@acme.iam.gserviceaccount.com"));
    for (auth, project, expect) in [
        (GcpAuth::None, "acme", "no GCP credentials"),
        (GcpAuth::AccessToken(token.clone()), "other", "HTTP 403"),
    ] {
        let ctx = Context {
            endpoints: remote::Endpoints {
                gcp_logging: gcp.logging_url(),
                gcp_token: gcp.token_url(),
                ..Default::default()
            },
            credentials: Credentials {
                gcp: Some(auth),
                ..Default::default()
            },
            retry: fast_retry(),
            ..Default::default()
        };
        let got = remote_hunt(
            vec![Remote::GcpProject {
                project: project.into(),
                principal: None,
            }],
            &[],
            dataset_window(),
            ctx,
        )
        .await;
        assert_eq!(got.incomplete.len(), 1, "{:?}", got.incomplete);
        assert!(
            got.incomplete[0].message.contains(expect),
            "{:?}",
            got.incomplete
        );
        support::assert_no_secret("report", &format!("{got:?}"), &[token.expose()]);
    }
}

// ---------------------------------------------------------------------------------------------
// Azure: Graph service-principal sign-ins and the Activity Log (the Azure simulator)

use rekey::providers::azure::AzureIdentity;
use rekey::sandbox::azure::AzureSandbox;

const AZ_APP: &str = "11111111-2222-3333-4444-555555555555";
const AZ_OTHER_APP: &str = "99999999-2222-3333-4444-555555555555";
const AZ_SUB: &str = "00000000-0000-0000-0000-0000000000aa";

fn azure_fixture(name: &str) -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("tests/fixtures/hunt/{name}"))
}

/// The `value` records of a fixture.
fn azure_records(name: &str) -> Vec<serde_json::Value> {
    let text = std::fs::read_to_string(azure_fixture(name)).unwrap();
    let doc: serde_json::Value = serde_json::from_str(&text).unwrap();
    doc["value"].as_array().unwrap().clone()
}

/// The fixture window: from the default baseline to February 2023.
fn azure_window() -> Window {
    Window {
        from: t("2022-11-21T00:00:00Z"),
        until: t("2023-02-01T00:00:00Z"),
    }
}

/// Another app's failed sign-in in the window: served unless the app id narrows.
fn other_app_signin() -> serde_json::Value {
    let mut r = azure_records("azure-signins.json")[0].clone();
    r["id"] = "o1".into();
    r["appId"] = AZ_OTHER_APP.into();
    r["servicePrincipalCredentialKeyId"] = "bbbbbbbb-bbbb-cccc-dddd-eeeeeeeeeeee".into();
    r["ipAddress"] = "203.0.113.99".into();
    r["createdDateTime"] = "2023-01-05T08:00:00Z".into();
    r
}

/// A simulator holding the fixtures' records, and records the requests must leave out: a user
/// sign-in, a service-principal sign-in and an event before the window, an event of another
/// subscription.
async fn azure_with_records() -> AzureSandbox {
    let az = AzureSandbox::start("acme-tenant").await.unwrap();
    az.with_state(|s| {
        for r in azure_records("azure-signins.json") {
            s.add_signin(r);
        }
        s.add_signin(other_app_signin());
        let mut user = azure_records("azure-signins.json")[0].clone();
        user["id"] = "u1".into();
        user["signInEventTypes"] = serde_json::json!(["interactiveUser"]);
        s.add_signin(user);
        let mut early = azure_records("azure-signins.json")[0].clone();
        early["id"] = "e1".into();
        early["createdDateTime"] = "2022-01-04T12:00:00Z".into();
        s.add_signin(early);
        for r in azure_records("azure-activity.json") {
            s.add_activity(AZ_SUB, r);
        }
        let mut early = azure_records("azure-activity.json")[3].clone();
        early["eventDataId"] = "ev-early".into();
        early["eventTimestamp"] = "2022-01-04T09:18:00Z".into();
        s.add_activity(AZ_SUB, early.clone());
        early["eventDataId"] = "ev-other-sub".into();
        early["eventTimestamp"] = "2023-01-04T09:18:00Z".into();
        s.add_activity("00000000-0000-0000-0000-0000000000bb", early);
    });
    az
}

fn azure_ctx(az: &AzureSandbox, identity: Option<AzureIdentity>, page: Option<u32>) -> Context {
    Context {
        endpoints: remote::Endpoints {
            azure_authority: az.authority_url(),
            azure_graph: az.graph_url(),
            azure_management: az.management_url(),
            ..Default::default()
        },
        credentials: Credentials {
            azure: identity,
            ..Default::default()
        },
        retry: fast_retry(),
        page_size: page,
    }
}

fn local_file(source: Source, path: &std::path::Path) -> HuntReport {
    engine::run(
        &RuleSet::builtin(),
        &HuntOptions {
            inputs: vec![(source, path.to_path_buf())],
            ..Default::default()
        },
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn azure_signins_give_the_same_findings_as_the_export_paged_throttled_and_narrowed() {
    let az = azure_with_records().await;
    let admin = az.admin_identity().unwrap();
    // One 429 on the way (Retry-After): waited out through the retry policy.
    az.server()
        .throttle(
            "/auditLogs/signIns$",
            1,
            std::time::Duration::from_millis(10),
        )
        .unwrap();
    let all = remote_hunt(
        vec![Remote::AzureSignins { app_id: None }],
        &[],
        azure_window(),
        azure_ctx(&az, Some(admin.clone()), Some(1)),
    )
    .await;
    assert!(all.incomplete.is_empty(), "{:?}", all.incomplete);
    assert!(all.problems.is_empty(), "{:?}", all.problems);
    // s1, s2 and the other app's sign-in (s3's time is not a date: never in a time filter).
    assert_eq!(all.stats.records, 3);
    assert_eq!(all.stats.pages, 3, "one sign-in a page");
    // The same records as an export: the same findings.
    let dir = tempfile::tempdir().unwrap();
    let export = dir.path().join("signins.json");
    let mut served = azure_records("azure-signins.json");
    served.push(other_app_signin());
    std::fs::write(&export, serde_json::json!({ "value": served }).to_string()).unwrap();
    let want = local_file(Source::AzureSignins, &export);
    assert!(!want.findings.is_empty());
    assert_eq!(keys(&all), keys(&want));
    assert!(
        all.findings
            .iter()
            .any(|f| f.record_id.as_deref() == Some("o1")),
        "{:?}",
        all.findings
    );
    assert!(
        all.findings
            .iter()
            .all(|f| f.location.starts_with("graph:auditLogs/signIns page ")),
        "locations name the page"
    );
    let signins: Vec<_> = az
        .server()
        .requests()
        .into_iter()
        .filter(|r| r.path == "/beta/auditLogs/signIns")
        .collect();
    assert_eq!(signins.len(), 4, "3 pages + 1 throttled attempt");
    assert_eq!(signins[0].status, 429);
    let params: std::collections::BTreeMap<String, String> =
        url::form_urlencoded::parse(signins[0].query.as_deref().unwrap_or("").as_bytes())
            .into_owned()
            .collect();
    assert_eq!(
        params["$filter"],
        "createdDateTime ge 2022-11-21T00:00:00Z and createdDateTime le 2023-02-01T00:00:00Z and signInEventTypes/any(t: t eq 'servicePrincipal')"
    );
    assert_eq!(params["$top"], "1");
    assert!(
        signins[2..]
            .iter()
            .all(|r| r.query.as_deref().unwrap_or("").contains("skiptoken")),
        "later pages follow @odata.nextLink"
    );
    assert!(
        all.notes
            .iter()
            .any(|n| n.contains("keeps sign-ins 30 days")),
        "{:?}",
        all.notes
    );

    // The app id narrows: the fixture's app only, as its export finds.
    az.server().clear_requests();
    let one = remote_hunt(
        vec![Remote::AzureSignins {
            app_id: Some(AZ_APP.into()),
        }],
        &[],
        azure_window(),
        azure_ctx(&az, Some(admin.clone()), None),
    )
    .await;
    assert!(one.incomplete.is_empty(), "{:?}", one.incomplete);
    assert_eq!(one.stats.records, 2);
    assert_eq!(one.stats.pages, 1, "Graph's own page size");
    let want = local_file(Source::AzureSignins, &azure_fixture("azure-signins.json"));
    assert_eq!(keys(&one), keys(&want));
    assert!(keys(&one).len() < keys(&all).len());
    let q = az
        .server()
        .requests()
        .into_iter()
        .find(|r| r.path == "/beta/auditLogs/signIns")
        .and_then(|r| r.query)
        .unwrap_or_default();
    assert!(q.contains("appId%20eq%20%27"), "{q}");
    assert!(q.contains("%24top=1000") || q.contains("$top=1000"), "{q}");
    let text = format!("{all:?}{one:?}");
    support::assert_no_secret("report", &text, &[admin.client_secret.expose()]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn azure_activity_log_gives_the_same_findings_as_the_export_paged() {
    let az = azure_with_records().await;
    az.with_state(|s| s.set_page_size(Some(2)));
    let admin = az.admin_identity().unwrap();
    let got = remote_hunt(
        vec![Remote::AzureActivity {
            subscription: AZ_SUB.into(),
        }],
        &[],
        azure_window(),
        azure_ctx(&az, Some(admin.clone()), None),
    )
    .await;
    assert!(got.incomplete.is_empty(), "{:?}", got.incomplete);
    assert!(got.problems.is_empty(), "{:?}", got.problems);
    // The fixture's four dated events (the fifth's time is a number), two a page.
    assert_eq!(got.stats.records, 4);
    assert_eq!(got.stats.pages, 2);
    let want = local_file(Source::AzureActivity, &azure_fixture("azure-activity.json"));
    assert!(!want.findings.is_empty());
    assert_eq!(keys(&got), keys(&want));
    assert!(got.findings.iter().all(|f| {
        f.location
            .starts_with(&format!("azure:subscriptions/{AZ_SUB}/activity-log page "))
    }));
    let calls: Vec<_> = az
        .server()
        .requests()
        .into_iter()
        .filter(|r| r.path.ends_with("/eventtypes/management/values"))
        .collect();
    assert_eq!(calls.len(), 2);
    assert!(calls.iter().all(|r| r.status == 200));
    let params: std::collections::BTreeMap<String, String> =
        url::form_urlencoded::parse(calls[0].query.as_deref().unwrap_or("").as_bytes())
            .into_owned()
            .collect();
    assert_eq!(params["api-version"], "2015-04-01");
    assert_eq!(
        params["$filter"],
        "eventTimestamp ge '2022-11-21T00:00:00Z' and eventTimestamp le '2023-02-01T00:00:00Z'"
    );
    assert!(
        calls[1]
            .query
            .as_deref()
            .unwrap_or("")
            .contains("skipToken")
    );
    assert!(
        got.notes
            .iter()
            .any(|n| n.contains("the Activity Log keeps 90 days")),
        "{:?}",
        got.notes
    );
    support::assert_no_secret(
        "report",
        &format!("{got:?}"),
        &[admin.client_secret.expose()],
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn azure_refused_secret_foreign_subscription_and_short_window() {
    let az = azure_with_records().await;
    let admin = az.admin_identity().unwrap();
    let wrong = "Wr0ng~secret.secret.secret.secret.xyz".to_owned();
    let bad = AzureIdentity {
        client_secret: rekey::secret::Secret::new(wrong.clone()),
        ..admin.clone()
    };
    let both = || {
        vec![
            Remote::AzureSignins { app_id: None },
            Remote::AzureActivity {
                subscription: AZ_SUB.into(),
            },
        ]
    };
    let got = remote_hunt(both(), &[], azure_window(), azure_ctx(&az, Some(bad), None)).await;
    assert_eq!(got.incomplete.len(), 2, "{:?}", got.incomplete);
    assert!(
        got.incomplete
            .iter()
            .all(|p| p.message.contains("no access token") && p.message.contains("AADSTS7000215")),
        "{:?}",
        got.incomplete
    );
    assert_eq!(got.stats.pages, 0);
    support::assert_no_secret("report", &format!("{got:?}"), &[&wrong]);

    // No credentials at all.
    let got = remote_hunt(both(), &[], azure_window(), azure_ctx(&az, None, None)).await;
    assert_eq!(got.incomplete.len(), 2, "{:?}", got.incomplete);
    assert!(got.incomplete[0].message.contains("AZURE_CLIENT_SECRET"));

    // A subscription the tenant does not have: ARM's 404, incomplete.
    let got = remote_hunt(
        vec![Remote::AzureActivity {
            subscription: "00000000-0000-0000-0000-0000000000cc".into(),
        }],
        &[],
        azure_window(),
        azure_ctx(&az, Some(admin.clone()), None),
    )
    .await;
    assert_eq!(got.incomplete.len(), 1, "{:?}", got.incomplete);
    assert!(
        got.incomplete[0].message.starts_with("HTTP 404")
            && got.incomplete[0].message.contains("SubscriptionNotFound"),
        "{:?}",
        got.incomplete
    );

    // An app id that is not a GUID never reaches the filter.
    let got = remote_hunt(
        vec![Remote::AzureSignins {
            app_id: Some("x' or true".into()),
        }],
        &[],
        azure_window(),
        azure_ctx(&az, Some(admin.clone()), None),
    )
    .await;
    assert_eq!(got.incomplete.len(), 1, "{:?}", got.incomplete);

    // A window within every retention: no note, nothing to read, complete.
    let now = chrono::Utc::now();
    let recent = Window {
        from: now - chrono::Duration::days(3),
        until: now,
    };
    let got = remote_hunt(both(), &[], recent, azure_ctx(&az, Some(admin), None)).await;
    assert!(got.incomplete.is_empty(), "{:?}", got.incomplete);
    assert!(got.notes.is_empty(), "{:?}", got.notes);
    assert_eq!(got.stats.records, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn azure_simulator_checks_audiences_and_filters() {
    let az = azure_with_records().await;
    let (graph_token, arm_token) = az.with_state(|s| (s.issue_graph_token(), s.issue_arm_token()));
    let http = reqwest::Client::new();
    let base = az.authority_url();
    let signins = format!(
        "{base}/beta/auditLogs/signIns?$filter=createdDateTime%20ge%202023-01-01T00:00:00Z%20and%20createdDateTime%20le%202023-02-01T00:00:00Z%20and%20signInEventTypes/any(t:%20t%20eq%20'servicePrincipal')"
    );
    let activity = format!(
        "{}/subscriptions/{AZ_SUB}/providers/Microsoft.Insights/eventtypes/management/values?api-version=2015-04-01&$filter=eventTimestamp%20ge%20'2023-01-01T00:00:00Z'%20and%20eventTimestamp%20le%20'2023-02-01T00:00:00Z'",
        az.management_url()
    );
    let get = |url: String, token: &str| {
        let req = http.get(url).bearer_auth(token);
        async move {
            let r = req.send().await.unwrap();
            let status = r.status().as_u16();
            let body: serde_json::Value = r.json().await.unwrap();
            (status, body)
        }
    };
    let (status, body) = get(signins.clone(), &graph_token).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["value"].as_array().unwrap().len(), 3);
    let (status, body) = get(activity.clone(), &arm_token).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["value"].as_array().unwrap().len(), 4);
    // Each token only for its own API.
    let (status, body) = get(signins.clone(), &arm_token).await;
    assert_eq!(status, 401);
    assert_eq!(body["error"]["code"], "InvalidAuthenticationToken");
    let (status, body) = get(activity.clone(), &graph_token).await;
    assert_eq!(status, 401);
    assert_eq!(body["error"]["code"], "InvalidAuthenticationTokenAudience");
    // Filters other than rekey's shapes: 400 with the error shape.
    let (status, body) = get(signins.replace("%20ge%20", "%20gt%20"), &graph_token).await;
    assert_eq!(status, 400);
    assert_eq!(body["error"]["code"], "BadRequest");
    assert!(body["error"]["innerError"].is_object(), "Graph's shape");
    let (status, body) = get(format!("{signins}&$top=1001"), &graph_token).await;
    assert_eq!(status, 400, "{body}");
    let (status, body) = get(format!("{signins}&$skiptoken=zz"), &graph_token).await;
    assert_eq!(status, 400, "{body}");
    let (status, body) = get(
        activity.replace("'2023-01-01T00:00:00Z'", "2023-01-01"),
        &arm_token,
    )
    .await;
    assert_eq!(status, 400);
    assert_eq!(body["error"]["code"], "BadRequest");
    let (status, body) = get(
        activity.replace("api-version=2015-04-01", "api-version=2017-03-01-preview"),
        &arm_token,
    )
    .await;
    assert_eq!(status, 400);
    assert_eq!(body["error"]["code"], "InvalidApiVersionParameter");
    // The token endpoint wants a scope it knows.
    let admin = az.admin_identity().unwrap();
    let token_url = format!("{base}/{}/oauth2/v2.0/token", admin.tenant_id);
    for (scope, code) in [
        (None, "invalid_request"),
        (
            Some("https://example.com/.default".to_owned()),
            "invalid_resource",
        ),
        (Some(format!("{base}/arm")), "invalid_scope"),
    ] {
        let mut form = vec![
            ("grant_type", "client_credentials".to_owned()),
            ("client_id", admin.client_id.clone()),
            ("client_secret", admin.client_secret.expose().to_owned()),
        ];
        if let Some(s) = scope {
            form.push(("scope", s));
        }
        let body = url::form_urlencoded::Serializer::new(String::new())
            .extend_pairs(form)
            .finish();
        let r = http
            .post(&token_url)
            .header("content-type", "application/x-www-form-urlencoded")
            .body(body)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 400);
        let body: serde_json::Value = r.json().await.unwrap();
        assert_eq!(body["error"], code);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cli_azure_graph_and_subscription_and_refused_secret_exits_1_without_the_secret() {
    let az = azure_with_records().await;
    let admin = az.admin_identity().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let plan = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("plans/circleci-incident.yaml"),
    )
    .unwrap()
    .replace(
        "endpoints: {}",
        &format!(
            "endpoints: {{azure_authority: \"{}\", azure_graph: \"{}\", azure_management: \"{}\"}}",
            az.authority_url(),
            az.graph_url(),
            az.management_url()
        ),
    );
    assert!(plan.contains("azure_management"));
    let plan_path = dir.path().join("plan.yaml");
    std::fs::write(&plan_path, plan).unwrap();
    let run = move |secret: String| {
        let plan_path = plan_path.clone();
        let admin = admin.clone();
        tokio::task::spawn_blocking(move || {
            rekey_cmd()
                .args(["hunt", "--plan"])
                .arg(&plan_path)
                .args([
                    "--azure-graph",
                    "--azure-app-id",
                    AZ_APP,
                    "--azure-subscription",
                    AZ_SUB,
                    "--since",
                    "2022-12-21T00:00:00Z",
                    "--until",
                    "2023-02-01T00:00:00Z",
                ])
                .env("AZURE_TENANT_ID", &admin.tenant_id)
                .env("AZURE_CLIENT_ID", &admin.client_id)
                .env("AZURE_CLIENT_SECRET", secret)
                .output()
                .unwrap()
        })
    };
    let good = az
        .admin_identity()
        .unwrap()
        .client_secret
        .expose()
        .to_owned();
    let out = run(good.clone()).await.unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    // High findings in the Activity Log (a role assignment written, storage keys listed).
    assert_eq!(out.status.code(), Some(3), "{stdout}{stderr}");
    assert!(stdout.contains("roleAssignments/write"), "{stdout}");
    assert!(!stdout.contains("NOT READ"), "{stdout}");
    assert!(
        stdout.contains("graph:auditLogs/signIns page 1"),
        "{stdout}"
    );
    assert!(
        stdout.contains(&format!("azure:subscriptions/{AZ_SUB}/activity-log page 1")),
        "{stdout}"
    );
    support::assert_no_secret("output", &format!("{stdout}{stderr}"), &[&good]);

    let wrong = "Wr0ng~secret.secret.secret.secret.xyz".to_owned();
    let out = run(wrong.clone()).await.unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(1), "{stdout}{stderr}");
    assert!(
        stdout.contains("NOT READ: graph:auditLogs/signIns"),
        "{stdout}"
    );
    assert!(
        stdout.contains(&format!(
            "NOT READ: azure:subscriptions/{AZ_SUB}/activity-log"
        )),
        "{stdout}"
    );
    assert!(stderr.contains("the hunt is incomplete"), "{stderr}");
    support::assert_no_secret("output", &format!("{stdout}{stderr}"), &[&wrong, &good]);
}
