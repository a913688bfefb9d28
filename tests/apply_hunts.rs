//! Hunts inside a rotation, end to end through the binary: the pre-rotation hunt's policy
//! (pause until a person confirms, abort), the post-rotation hunt after the grace period (the
//! old key used after deactivation → reactivated and held for a person; the new key used from
//! outside the allow-list → reported, and revoked anyway under `continue`), the delivery-delay
//! window, `rekey hunt --run`, and no secret in any finding.
//!
//! CloudTrail records are written as CloudTrail delivers them (`{"Records":[…]}`) into a
//! directory the plan names in `hunts.sources.cloudtrail`, with the world's real key ids.

mod support;

use chrono::{DateTime, SubsecRound, Utc};
use serde_json::json;
use support::world::{PlanSpec, TARGET, World};

fn next_id() -> u64 {
    static N: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
    N.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
}

/// One CloudTrail record of the world's IAM user.
fn event(
    key: &str,
    name: &str,
    ip: &str,
    at: DateTime<Utc>,
    error: Option<&str>,
) -> serde_json::Value {
    let mut e = json!({
        "eventVersion": "1.08",
        "userIdentity": {
            "type": "IAMUser",
            "principalId": "AIDAEXAMPLE",
            "arn": "arn:aws:iam::123456789012:user/ci-deployer",
            "accountId": "123456789012",
            "accessKeyId": key,
            "userName": "ci-deployer"
        },
        "eventTime": at.trunc_subsecs(0).format("%Y-%m-%dT%H:%M:%SZ").to_string(),
        "eventSource": "s3.amazonaws.com",
        "eventName": name,
        "awsRegion": "us-east-1",
        "sourceIPAddress": ip,
        "userAgent": "Boto3/1.26.0 Python/3.10.6 Linux/5.15",
        "eventID": format!("{:08x}-0000-4000-8000-{:012x}", at.timestamp(), next_id()),
        "eventType": "AwsApiCall",
        "recipientAccountId": "123456789012"
    });
    if let Some(code) = error {
        e["errorCode"] = json!(code);
        e["errorMessage"] = json!("denied");
    }
    e
}

/// Writes a delivery file of `records` into the world's CloudTrail directory.
fn deliver(w: &World, name: &str, records: Vec<serde_json::Value>) {
    let dir = w.path("cloudtrail");
    std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("{e}"));
    let body = json!({ "Records": records }).to_string();
    std::fs::write(dir.join(format!("{name}.json")), body).unwrap_or_else(|e| panic!("{e}"));
}

/// The plan's hunts; the CloudTrail directory is named relative to the plan file (the binary
/// runs elsewhere), as a plan kept next to its exports would.
fn hunts_section(pre: &str, post: &str, extra: &str) -> String {
    format!(
        "hunts:\n  pre: [{pre}]\n  post: [{post}]\n  sources: {{cloudtrail: [cloudtrail]}}\n{extra}"
    )
}

/// Post-rotation hunts only, over a simulator-fast CloudTrail (no delivery delay).
fn post_only(post: &str) -> String {
    hunts_section("", post, "  delivery_delay: {cloudtrail: 0s}\n")
}

/// Writes the plan, an empty CloudTrail delivery, and applies until the grace period: the new
/// key is bound, the old one disabled. Returns the invocation and the run id.
fn until_grace(w: &World, spec: &PlanSpec) -> (support::world::Invocation, String) {
    let plan = w.write_plan(spec);
    deliver(w, "empty", vec![]);
    let first = w.apply(&plan, &["--output", "json"]);
    first.expect_code(0, "apply until the grace period");
    let run = first.run_id();
    (first, run)
}

fn findings(w: &World, run: &str, phase: &str) -> serde_json::Value {
    let path = w
        .state_dir()
        .join("hunts")
        .join(run)
        .join(format!("{TARGET}.{phase}.json"));
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("findings {}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("findings are not JSON ({e}): {text}"))
}

/// Every finding of a report (`--output json` groups them per credential).
fn all_findings(report: &serde_json::Value) -> Vec<serde_json::Value> {
    report["credentials"]
        .as_array()
        .unwrap_or_else(|| panic!("no credentials array: {report}"))
        .iter()
        .flat_map(|c| c["findings"].as_array().cloned().unwrap_or_default())
        .collect()
}

fn rule_ids(report: &serde_json::Value) -> Vec<String> {
    all_findings(report)
        .iter()
        .map(|f| f["rule_id"].as_str().unwrap_or("").to_string())
        .collect()
}

fn confirm(w: &World, run: &str) {
    let state = w.state_dir().display().to_string();
    w.run(&["confirm", "--state-dir", &state, run, TARGET], &[])
        .expect_code(0, "rekey confirm");
}

/// Evidence of reconnaissance with the key in use: the pre-hunt pauses the target before
/// anything is minted; after `rekey confirm`, the same run rotates it.
#[test]
fn pre_hunt_findings_pause_the_target_until_a_person_confirms() {
    let w = World::sandbox(1);
    let old = w.old_key.0.clone();
    let day = "2023-01-02T10:00:00Z"
        .parse::<DateTime<Utc>>()
        .unwrap_or_default();
    deliver(
        &w,
        "pre",
        vec![
            event(&old, "ListUsers", "203.0.113.9", day, None),
            event(&old, "PutObject", "198.51.100.7", day, None),
            // Another key's recon is not this target's business.
            event(
                "AKIAOTHERKEY00000000",
                "ListUsers",
                "203.0.113.9",
                day,
                None,
            ),
        ],
    );
    let plan = w.write_plan(&PlanSpec {
        on_findings: Some("{pre: pause}".into()),
        sections: hunts_section("aws-recon", "", ""),
        ..PlanSpec::default()
    });

    let dry = w.apply(&plan, &["--dry-run"]);
    dry.expect_code(0, "dry run");
    assert!(
        dry.stdout.contains("hunt aws-recon over cloudtrail"),
        "the dry run names the pre-hunt and its source:\n{}",
        dry.stdout
    );

    let out = w.apply(&plan, &["--output", "json"]);
    out.expect_code(3, "apply with pre-hunt findings");
    let run = out.run_id();
    assert_eq!(
        out.summary()["targets"][0]["state"],
        "awaiting-confirmation",
        "{}",
        out.stdout
    );
    assert_eq!(w.keys_created(), 0, "nothing minted while paused");
    w.assert_untouched("paused by the pre-hunt");
    let report = findings(&w, &run, "pre");
    let found = all_findings(&report);
    // Both rules of the aws-recon hunt fire (recon; recon by a script), on that one record.
    assert_eq!(found.len(), 2, "only the old key's ListUsers: {report}");
    for f in &found {
        assert_eq!(f["action"], "ListUsers");
        assert_eq!(f["credential"], old.as_str());
        assert_eq!(f["source_ip"], "203.0.113.9");
        assert_eq!(f["hunt"], "aws-recon");
    }

    // Applying again without a confirmation changes nothing.
    w.resume(&run, &["--output", "json"])
        .expect_code(3, "resume while paused");
    assert_eq!(w.keys_created(), 0);

    confirm(&w, &run);
    let done = w.resume(&run, &["--output", "json"]);
    done.expect_code(0, "resume after the confirmation");
    w.assert_rotated(&run, 1, &[]);
}

/// `on_findings.pre: abort` leaves the target as it is, every time it is applied.
#[test]
fn pre_hunt_abort_leaves_the_target_alone() {
    let w = World::sandbox(1);
    let old = w.old_key.0.clone();
    let day = "2023-01-05T03:00:00Z"
        .parse::<DateTime<Utc>>()
        .unwrap_or_default();
    deliver(
        &w,
        "pre",
        vec![event(
            &old,
            "GetObject",
            "203.0.113.9",
            day,
            Some("AccessDenied"),
        )],
    );
    let plan = w.write_plan(&PlanSpec {
        on_findings: Some("{pre: abort}".into()),
        sections: hunts_section("aws-denied", "", ""),
        ..PlanSpec::default()
    });
    for attempt in 0..2 {
        let out = w.apply(&plan, &["--output", "json"]);
        out.expect_code(3, "apply with pre-hunt findings under abort");
        let t = &out.summary()["targets"][0];
        assert_eq!(t["state"], "skipped", "attempt {attempt}: {t}");
        assert!(
            t["reason"]
                .as_str()
                .unwrap_or("")
                .contains("on_findings.pre: abort"),
            "{t}"
        );
    }
    assert_eq!(w.keys_created(), 0);
    w.assert_untouched("aborted by the pre-hunt");
}

/// The old key used successfully after it was disabled: a consumer that was missed (or an
/// attacker). Under the default policy the post-hunt reactivates it and holds the target for a
/// person; `rekey hunt --run` shows the same findings; after `rekey confirm` the run revokes it.
#[test]
fn old_key_used_after_deactivation_is_reactivated_and_held_for_a_person() {
    let w = World::sandbox(1);
    let old = w.old_key.0.clone();
    let (first, run) = until_grace(
        &w,
        &PlanSpec {
            grace: "2s".into(),
            sections: post_only("old-credential-used, new-credential-outside-allowlist"),
            ..PlanSpec::default()
        },
    );
    assert_eq!(first.summary()["targets"][0]["state"], "waiting");
    let (_, new_id, new_secret) = w.bound()[0].clone();
    assert!(
        w.keys().iter().any(|k| k.id == old && !k.active),
        "old key disabled"
    );

    // A job that was missed keeps using the old key; an attempt also fails.
    let after = Utc::now() + chrono::Duration::seconds(1);
    deliver(
        &w,
        "post",
        vec![
            event(&old, "GetObject", "198.51.100.7", after, None),
            event(
                &old,
                "PutObject",
                "198.51.100.7",
                after,
                Some("InvalidClientTokenId"),
            ),
            // Before the rotation: not a finding of this check.
            event(
                &old,
                "GetObject",
                "198.51.100.7",
                after - chrono::Duration::days(3),
                None,
            ),
        ],
    );
    std::thread::sleep(std::time::Duration::from_millis(3200));
    let report_md = w.path("report.md");
    let held = w.resume(
        &run,
        &[
            "--output",
            "json",
            "--report",
            &report_md.display().to_string(),
        ],
    );
    held.expect_code(3, "resume with post-hunt findings");
    let md = std::fs::read_to_string(&report_md).unwrap_or_else(|e| panic!("report: {e}"));
    assert!(
        md.contains("## Hunts")
            && md.contains("post-rotation")
            && md.contains("Old credential used successfully after deactivation"),
        "the run report shows the post-hunt:\n{md}"
    );
    let t = &held.summary()["targets"][0];
    assert_eq!(t["state"], "awaiting-confirmation", "{t}");
    assert!(
        t["action"]
            .as_str()
            .unwrap_or("")
            .contains("was reactivated"),
        "{t}"
    );
    let keys = w.keys();
    assert!(
        keys.iter().any(|k| k.id == old && k.active),
        "the old key is active again: {keys:?}"
    );
    assert!(keys.iter().any(|k| k.id == new_id && k.active), "{keys:?}");
    let mut ids = rule_ids(&findings(&w, &run, "post"));
    ids.sort();
    assert_eq!(
        ids,
        vec!["rekey-old-credential-attempt", "rekey-old-credential-used"],
        "one use, one attempt"
    );

    // Re-run later, read-only, as a responder would.
    let state = w.state_dir().display().to_string();
    let again = w.run(
        &[
            "hunt",
            "--run",
            &run,
            "--state-dir",
            &state,
            "--output",
            "json",
        ],
        &[],
    );
    again.expect_code(3, "rekey hunt --run");
    let rerun: serde_json::Value =
        serde_json::from_str(&again.stdout).unwrap_or_else(|e| panic!("{e}: {}", again.stdout));
    let mut ids = rule_ids(&rerun);
    ids.sort();
    assert_eq!(
        ids,
        vec!["rekey-old-credential-attempt", "rekey-old-credential-used"]
    );
    assert_eq!(w.keys().len(), 2, "hunt --run changes nothing");

    // No secret anywhere: outputs, findings, journal.
    let secrets = [new_secret.as_str(), w.old_key.1.as_str()];
    for (path, bytes) in w.state_files() {
        for s in secrets {
            assert!(
                support::world::find_bytes(&bytes, s.as_bytes()).is_none(),
                "a secret in {}",
                path.display()
            );
        }
    }
    for out in [&first, &held, &again] {
        for s in secrets {
            assert!(!out.stdout.contains(s) && !out.stderr.contains(s));
        }
    }

    confirm(&w, &run);
    let done = w.resume(&run, &["--output", "json"]);
    done.expect_code(0, "resume after the confirmation");
    w.assert_rotated(&run, 1, &[]);
}

/// The new key used from outside the allow-list is a finding; under `post: continue` the old
/// key is revoked anyway, and the exit code says there were findings.
#[test]
fn new_key_outside_the_allow_list_is_reported_and_continue_revokes() {
    let w = World::sandbox(1);
    let (_, run) = until_grace(
        &w,
        &PlanSpec {
            grace: "2s".into(),
            on_findings: Some("{post: continue}".into()),
            sections: format!(
                "{}allow_cidrs: [198.51.100.0/24]\n",
                post_only("new-credential-outside-allowlist")
            ),
            ..PlanSpec::default()
        },
    );
    let (_, new_id, _) = w.bound()[0].clone();
    let after = Utc::now() + chrono::Duration::seconds(1);
    deliver(
        &w,
        "post",
        vec![
            event(&new_id, "GetObject", "198.51.100.20", after, None),
            event(&new_id, "GetObject", "203.0.113.50", after, None),
        ],
    );
    std::thread::sleep(std::time::Duration::from_millis(3200));
    let out = w.resume(&run, &["--output", "json"]);
    out.expect_code(3, "findings, rotated anyway");
    assert_eq!(out.summary()["targets"][0]["state"], "done");
    w.assert_rotated(&run, 1, &[]);
    let report = findings(&w, &run, "post");
    let found = all_findings(&report);
    assert_eq!(found.len(), 1, "{report}");
    assert_eq!(found[0]["rule_id"], "rekey-outside-allowlist");
    assert_eq!(found[0]["source_ip"], "203.0.113.50");
    assert_eq!(found[0]["credential"], new_id.as_str());
}

/// A grace period shorter than CloudTrail's delivery delay: the post-hunt says how far it could
/// look and when to run `rekey hunt --run` for the rest. A hunt whose source is missing holds
/// the old key disabled instead of looking clean.
#[test]
fn a_short_grace_says_so_and_a_missing_source_holds_the_revocation() {
    let w = World::sandbox(1);
    let (_, run) = until_grace(
        &w,
        &PlanSpec {
            grace: "1s".into(),
            sections: hunts_section("", "old-credential-used", ""),
            ..PlanSpec::default()
        },
    );
    std::thread::sleep(std::time::Duration::from_millis(1500));
    let done = w.resume(&run, &["--output", "json"]);
    done.expect_code(0, "nothing found");
    let report = findings(&w, &run, "post");
    let notes = report["notes"].to_string();
    assert!(
        notes.contains("15m late") && notes.contains("rekey hunt --run"),
        "the window's limit is said: {notes}"
    );
    w.assert_rotated(&run, 1, &[]);

    // Same plan shape, but the source is gone: the old key stays disabled, the run incomplete.
    let w = World::sandbox(1);
    let plan = w.write_plan(&PlanSpec {
        grace: "1s".into(),
        sections: hunts_section("", "old-credential-used", ""),
        ..PlanSpec::default()
    });
    let first = w.apply(&plan, &["--output", "json"]);
    first.expect_code(0, "apply until the grace period");
    let run = first.run_id();
    std::thread::sleep(std::time::Duration::from_millis(1500));
    let held = w.resume(&run, &["--output", "json"]);
    held.expect_code(4, "post-hunt could not read its source");
    let t = &held.summary()["targets"][0];
    assert_eq!(t["state"], "incomplete", "{t}");
    assert!(
        t["reason"]
            .as_str()
            .unwrap_or("")
            .contains("could not read"),
        "{t}"
    );
    assert_eq!(w.keys().len(), 2, "the old key is not revoked");
    assert!(w.keys().iter().any(|k| k.id == w.old_key.0 && !k.active));
}

/// A crash between the post-hunt and its record (at the reactivation's intent) loses nothing:
/// the next invocation hunts again, reactivates (again: idempotent) and holds the target.
#[test]
fn a_crash_during_the_reactivation_is_resumed() {
    let w = World::sandbox(1);
    let old = w.old_key.0.clone();
    let (_, run) = until_grace(
        &w,
        &PlanSpec {
            grace: "1s".into(),
            sections: post_only("old-credential-used"),
            ..PlanSpec::default()
        },
    );
    let after = Utc::now() + chrono::Duration::seconds(1);
    deliver(
        &w,
        "post",
        vec![event(&old, "GetObject", "198.51.100.7", after, None)],
    );
    std::thread::sleep(std::time::Duration::from_millis(2200));
    let state = w.state_dir().display().to_string();
    let crashed = w.run(
        &[
            "apply",
            "--resume",
            &run,
            "--state-dir",
            &state,
            "--output",
            "json",
        ],
        &[("REKEY_CRASH_AT", &format!("{TARGET}:rollback:intent"))],
    );
    assert_eq!(
        crashed.code, None,
        "killed by SIGKILL at the reactivation's intent: {}",
        crashed.stderr
    );
    let held = w.resume(&run, &["--output", "json"]);
    held.expect_code(3, "resume after the crash");
    assert_eq!(
        held.summary()["targets"][0]["state"],
        "awaiting-confirmation"
    );
    assert!(
        w.keys().iter().any(|k| k.id == old && k.active),
        "the old key is active again"
    );
    assert_eq!(w.keys_created(), 1, "nothing minted twice");
}

/// `hunts.sources.cloudtrail: [api]` in a rotation: CloudTrail's event history through
/// LookupEvents (the AWS simulator's), narrowed to the target's key. The reconnaissance before
/// the rotation pauses it; after `rekey confirm`, the rotation runs and its post-hunt over the
/// same API finds nothing.
#[test]
fn api_sources_read_cloudtrail_through_lookup_events() {
    let w = World::sandbox(1);
    let old = w.old_key.0.clone();
    let ten_days_ago = Utc::now() - chrono::Duration::days(10);
    let history = json!({
        "Records": [
            event(&old, "ListUsers", "203.0.113.9", ten_days_ago, None),
            event("AKIAOTHERKEY00000000", "ListUsers", "203.0.113.9", ten_days_ago, None),
        ]
    })
    .to_string();
    w.sandbox_aws()
        .with_state(|s| s.load_cloudtrail_records(&history))
        .unwrap_or_else(|e| panic!("{e}"));
    let since = (Utc::now() - chrono::Duration::days(30)).to_rfc3339();
    let plan = w.write_plan(&PlanSpec {
        on_findings: Some("{pre: pause}".into()),
        sections: format!(
            "incident: {{since: {since}}}\nhunts:\n  pre: [aws-recon]\n  post: [old-credential-used]\n  sources: {{cloudtrail: [api]}}\n  delivery_delay: {{cloudtrail: 0s}}\n"
        ),
        ..PlanSpec::default()
    });
    let out = w.apply(&plan, &["--output", "json"]);
    out.expect_code(3, "the pre-hunt finds the reconnaissance");
    let run = out.run_id();
    let found = all_findings(&findings(&w, &run, "pre"));
    assert_eq!(
        found.len(),
        2,
        "both aws-recon rules, the old key only: {found:?}"
    );
    for f in &found {
        assert_eq!(f["credential"], old.as_str());
        assert!(
            f["location"]
                .as_str()
                .unwrap_or("")
                .contains("LookupEvents"),
            "{f}"
        );
    }
    assert_eq!(w.keys_created(), 0);

    confirm(&w, &run);
    let done = w.resume(&run, &["--output", "json"]);
    done.expect_code(0, "rotated; the post-hunt over LookupEvents is clean");
    w.assert_rotated(&run, 1, &[]);
    let post = findings(&w, &run, "post");
    assert!(all_findings(&post).is_empty(), "{post}");
    assert!(
        post["stats"]["pages"].as_u64().unwrap_or(0) >= 1,
        "the post-hunt read LookupEvents pages: {post}"
    );
}
