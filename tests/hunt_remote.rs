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
