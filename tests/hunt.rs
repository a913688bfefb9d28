//! `rekey hunt` over real CloudTrail logs (the Invictus dataset), third-party SigmaHQ rules, and
//! fixtures of the other sources written from their documented formats: true findings fire,
//! look-alikes do not, malformed records are reported with their location and skipped.

use rekey::hunt::Severity;
use rekey::hunt::engine::{self, HuntOptions};
use rekey::hunt::findings::{Finding, HuntReport};
use rekey::hunt::pack::RuleSet;
use rekey::hunt::source::Source;
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

const BENJAMIN: &str = "AKIATFQR7NSCUXC3DDDP";

fn root(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(rel)
}

fn fixture(name: &str) -> PathBuf {
    root("tests/fixtures/hunt").join(name)
}

/// The shared dataset folder, or None (after saying so loudly) when it is absent.
fn dataset(name: &str) -> Option<PathBuf> {
    let p = root("../shared/datasets").join(name);
    if p.is_dir() {
        Some(p)
    } else {
        eprintln!(
            "\n!!!!!! SKIPPED: dataset {} is absent; this test proves nothing here !!!!!!\n",
            p.display()
        );
        None
    }
}

fn since(t: &str) -> chrono::DateTime<chrono::Utc> {
    t.parse().unwrap()
}

fn hunt(rules: &RuleSet, inputs: Vec<(Source, PathBuf)>, creds: &[&str]) -> HuntReport {
    let opts = HuntOptions {
        inputs,
        credentials: creds.iter().map(|s| s.to_string()).collect(),
        ..Default::default()
    };
    engine::run(rules, &opts)
}

/// What identifies a finding whatever file layout the records came from.
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

fn with_third_party() -> RuleSet {
    let mut rules = RuleSet::builtin();
    if let Some(dir) = dataset("sigma-aws-cloudtrail") {
        rules.add_path(&dir).unwrap();
    }
    rules
}

fn rekey(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_rekey"))
        .args(args)
        .env_remove("RUST_LOG")
        .output()
        .expect("run rekey")
}

#[test]
fn scoped_hunt_reports_the_boto3_reconnaissance_from_10_248_16_43() {
    let Some(ct) = dataset("cloudtrail-invictus") else {
        return;
    };
    let out = rekey(&[
        "hunt",
        "--cloudtrail",
        ct.to_str().unwrap(),
        "--access-key-id",
        BENJAMIN,
        "--output",
        "json",
    ]);
    assert_eq!(
        out.status.code(),
        Some(3),
        "high findings exit 3: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let groups = doc["credentials"].as_array().unwrap();
    assert_eq!(groups.len(), 1, "only the scoped key");
    assert_eq!(groups[0]["credential"], BENJAMIN);
    let findings = groups[0]["findings"].as_array().unwrap();
    let recon: Vec<&serde_json::Value> = findings
        .iter()
        .filter(|f| f["hunt"] == "aws-recon")
        .collect();
    let actions: BTreeSet<&str> = recon.iter().filter_map(|f| f["action"].as_str()).collect();
    for a in [
        "ListUsers",
        "GetAccountAuthorizationDetails",
        "GetAccountSummary",
        "ListMFADevices",
    ] {
        assert!(actions.contains(a), "{a} missing from {actions:?}");
    }
    for f in &recon {
        assert_eq!(f["source_ip"], "10.248.16.43");
        assert!(f["user_agent"].as_str().unwrap().contains("Boto3"), "{f}");
        assert!(
            f["location"]
                .as_str()
                .unwrap()
                .contains("218007301253_CloudTrail"),
            "{f}"
        );
    }
    let gaad = recon
        .iter()
        .find(|f| f["action"] == "GetAccountAuthorizationDetails")
        .unwrap();
    assert_eq!(gaad["time"], "2023-07-10T11:43:34Z");
    assert!(
        recon.iter().any(|f| f["severity"] == "high"),
        "scripted reconnaissance is high"
    );
}

#[test]
fn all_keys_every_access_denial_and_no_false_unknown_ip() {
    let Some(ct) = dataset("cloudtrail-invictus") else {
        return;
    };
    let rules = RuleSet::builtin();
    let r = hunt(&rules, vec![(Source::Cloudtrail, ct.clone())], &[]);
    assert_eq!(r.stats.records, 2900);
    assert!(r.problems.is_empty(), "{:?}", r.problems);
    let denied: Vec<&Finding> = r
        .findings
        .iter()
        .filter(|f| f.hunt.as_deref() == Some("aws-denied"))
        .collect();
    let count = |code: &str| {
        denied
            .iter()
            .filter(|f| f.error.as_deref() == Some(code))
            .count()
    };
    assert_eq!(count("AccessDenied"), 16);
    assert_eq!(count("Client.UnauthorizedOperation"), 44);
    assert_eq!(
        denied.len(),
        60,
        "no other error (ThrottlingException…) is a denial"
    );

    // With a baseline (records before 12:00 are normal), new addresses are flagged, and names
    // that stand where an address would ("AWS Internal", "secretsmanager.amazonaws.com") never are.
    let opts = HuntOptions {
        inputs: vec![(Source::Cloudtrail, ct)],
        since: since("2023-07-10T12:00:00Z"),
        ..Default::default()
    };
    let r = engine::run(&rules, &opts);
    let baseline: Vec<&Finding> = r
        .findings
        .iter()
        .filter(|f| f.hunt.as_deref() == Some("new-source-address"))
        .collect();
    for f in &r.findings {
        if let Some(ip) = &f.source_ip
            && f.detail.is_some()
        {
            assert!(
                ip.parse::<std::net::IpAddr>().is_ok(),
                "false unknown address: {f:?}"
            );
        }
    }
    let r_before = r
        .findings
        .iter()
        .filter(|f| f.time < since("2023-07-10T12:00:00Z"))
        .count();
    assert_eq!(r_before, 0, "records before --since are baseline only");
    assert!(
        baseline
            .iter()
            .all(|f| f.source_ip.as_deref() != Some("AWS Internal")),
        "{baseline:?}"
    );
}

#[test]
fn plan_allow_cidrs_and_since_drive_the_hunt() {
    let Some(ct) = dataset("cloudtrail-invictus") else {
        return;
    };
    // The example plan allows 198.51.100.0/24 only: benjamin's 10.248.16.43 is outside.
    let out = rekey(&[
        "hunt",
        "--plan",
        root("plans/circleci-incident.yaml").to_str().unwrap(),
        "--cloudtrail",
        ct.to_str().unwrap(),
        "--access-key-id",
        BENJAMIN,
        "--output",
        "json",
    ]);
    assert_eq!(
        out.status.code(),
        Some(3),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(doc["since"], "2022-12-21T00:00:00Z");
    let outside: Vec<&serde_json::Value> = doc["credentials"][0]["findings"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|f| f["rule_id"] == "rekey-outside-allowlist")
        .collect();
    assert_eq!(outside.len(), 1);
    assert_eq!(outside[0]["source_ip"], "10.248.16.43");
}

#[test]
fn gzip_compressed_files_give_the_same_findings() {
    let Some(ct) = dataset("cloudtrail-invictus") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let nested = dir
        .path()
        .join("AWSLogs/218007301253/CloudTrail/us-east-1/2023/07/10");
    std::fs::create_dir_all(&nested).unwrap();
    for e in std::fs::read_dir(&ct).unwrap() {
        let p = e.unwrap().path();
        if p.extension().is_some_and(|x| x == "json") {
            let data = std::fs::read(&p).unwrap();
            let name = format!("{}.gz", p.file_name().unwrap().to_str().unwrap());
            let f = std::fs::File::create(nested.join(name)).unwrap();
            let mut gz = flate2::write::GzEncoder::new(f, flate2::Compression::default());
            std::io::Write::write_all(&mut gz, &data).unwrap();
            gz.finish().unwrap();
        }
    }
    let rules = with_third_party();
    let plain = hunt(&rules, vec![(Source::Cloudtrail, ct)], &[]);
    let gz = hunt(
        &rules,
        vec![(Source::Cloudtrail, dir.path().to_path_buf())],
        &[],
    );
    assert_eq!(gz.stats.files, 55);
    assert!(!plain.findings.is_empty());
    assert_eq!(keys(&plain), keys(&gz));
}

#[test]
fn lookup_events_responses_give_the_same_findings() {
    let Some(ct) = dataset("cloudtrail-invictus") else {
        return;
    };
    // LookupEvents returns each record as the JSON text in Events[].CloudTrailEvent, 50 a page.
    let dir = tempfile::tempdir().unwrap();
    let mut records = Vec::new();
    let mut files: Vec<PathBuf> = std::fs::read_dir(&ct)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .collect();
    files.sort();
    for p in files {
        let doc: serde_json::Value = serde_json::from_slice(&std::fs::read(p).unwrap()).unwrap();
        records.extend(doc["Records"].as_array().unwrap().iter().cloned());
    }
    for (i, page) in records.chunks(50).enumerate() {
        let events: Vec<serde_json::Value> = page
            .iter()
            .map(|r| {
                serde_json::json!({
                    "EventId": r["eventID"],
                    "EventName": r["eventName"],
                    "ReadOnly": "true",
                    "EventTime": 1688989356.0,
                    "EventSource": r["eventSource"],
                    "Resources": [],
                    "CloudTrailEvent": serde_json::to_string(r).unwrap(),
                })
            })
            .collect();
        let body = serde_json::json!({"Events": events, "NextToken": format!("page{}", i + 1)});
        std::fs::write(
            dir.path().join(format!("lookup-{i:03}.json")),
            serde_json::to_vec_pretty(&body).unwrap(),
        )
        .unwrap();
    }
    let rules = with_third_party();
    let plain = hunt(&rules, vec![(Source::Cloudtrail, ct)], &[BENJAMIN]);
    let lookup = hunt(
        &rules,
        vec![(Source::Cloudtrail, dir.path().to_path_buf())],
        &[BENJAMIN],
    );
    assert!(lookup.problems.is_empty(), "{:?}", lookup.problems);
    assert_eq!(lookup.stats.records, 2900);
    assert!(!plain.findings.is_empty());
    assert_eq!(keys(&plain), keys(&lookup));
}

#[test]
fn third_party_rules_all_load_and_enum_buckets_matches_the_three_list_buckets() {
    let Some(dir) = dataset("sigma-aws-cloudtrail") else {
        return;
    };
    let Some(ct) = dataset("cloudtrail-invictus") else {
        return;
    };
    let mut rules = RuleSet::default();
    let files = rules.add_path(&dir).unwrap();
    assert!(files >= 50, "{files}");
    assert!(rules.errors.is_empty(), "{:?}", rules.errors);
    assert_eq!(rules.rules.len(), files);
    let r = hunt(&rules, vec![(Source::Cloudtrail, ct)], &[]);
    let enum_buckets: Vec<&Finding> = r
        .findings
        .iter()
        .filter(|f| &*f.rule_id == "f305fd62-beca-47da-ad95-7690a0620084")
        .collect();
    assert_eq!(enum_buckets.len(), 3, "{enum_buckets:?}");
    assert!(
        enum_buckets
            .iter()
            .all(|f| f.action.as_deref() == Some("ListBuckets"))
    );
    assert!(enum_buckets.iter().all(|f| f.hunt.is_none()));
}

#[test]
fn a_rule_that_cannot_be_used_is_reported_not_fatal() {
    let mut rules = RuleSet::default();
    rules.add_text("kw.yml", "title: kw\nlogsource: {product: aws, service: cloudtrail}\ndetection:\n  keywords: [evil]\n  condition: keywords\n");
    rules.add_text("agg.yml", "title: agg\nlogsource: {product: aws, service: cloudtrail}\ndetection:\n  sel: {eventName: X}\n  condition: sel | count() > 5\n");
    rules.add_text("win.yml", "title: win\nlogsource: {product: windows, service: security}\ndetection:\n  sel: {EventID: 4624}\n  condition: sel\n");
    rules.add_text("bad.yml", "title: [unclosed\n");
    assert_eq!(rules.rules.len(), 0);
    let reasons: Vec<&str> = rules.errors.iter().map(|e| e.reason.as_str()).collect();
    assert!(reasons[0].contains("keyword"), "{reasons:?}");
    assert!(reasons[1].contains("aggregation"), "{reasons:?}");
    assert!(reasons[2].contains("logsource"), "{reasons:?}");
    assert!(reasons[3].contains("YAML"), "{reasons:?}");
}

#[test]
fn allow_list_silences_expected_addresses_and_flags_the_others() {
    let Some(ct) = dataset("cloudtrail-invictus") else {
        return;
    };
    let rules = RuleSet::builtin();
    let run = |cidr: &str| {
        let opts = HuntOptions {
            inputs: vec![(Source::Cloudtrail, ct.clone())],
            credentials: vec![BENJAMIN.into()],
            allow: engine::parse_cidrs("allow", cidr).unwrap(),
            ..Default::default()
        };
        engine::run(&rules, &opts)
    };
    let outside = |r: &HuntReport| {
        r.findings
            .iter()
            .filter(|f| &*f.rule_id == "rekey-outside-allowlist")
            .map(|f| f.source_ip.as_deref().unwrap_or_default().to_string())
            .collect::<Vec<_>>()
    };
    assert!(outside(&run("10.248.16.0/24\n")).is_empty());
    assert_eq!(
        outside(&run("# office\n192.168.0.0/16\n")),
        vec!["10.248.16.43"]
    );
    assert!(
        engine::parse_cidrs("f", "not-a-cidr")
            .unwrap_err()
            .contains("f:1")
    );
}

#[test]
fn circleci_csv_export_duplicates_broken_cells_and_expected_actors() {
    let rules = RuleSet::builtin();
    let opts = HuntOptions {
        inputs: vec![(Source::CircleciAudit, fixture("circleci-audit.csv"))],
        expected_actors: vec!["rekey-bot".into()],
        ..Default::default()
    };
    let r = engine::run(&rules, &opts);
    assert_eq!(r.stats.duplicates, 1, "the repeated id is dropped");
    let persistence: Vec<&Finding> = r
        .findings
        .iter()
        .filter(|f| f.hunt.as_deref() == Some("circleci-persistence"))
        .collect();
    assert_eq!(persistence.len(), 2, "{persistence:#?}");
    assert!(
        persistence
            .iter()
            .all(|f| f.credential.as_deref() == Some("mallory"))
    );
    assert!(
        persistence
            .iter()
            .any(|f| f.action.as_deref() == Some("project.ssh_key.create")
                && f.severity == Severity::High)
    );
    assert!(
        !r.findings
            .iter()
            .any(|f| f.action.as_deref() == Some("project.ssh_key.delete")),
        "look-alike must not fire"
    );
    assert!(
        !r.findings
            .iter()
            .any(|f| f.credential.as_deref() == Some("rekey-bot"))
    );
    // alice logs in from an address never seen before the incident start.
    let new_ip: Vec<&Finding> = r
        .findings
        .iter()
        .filter(|f| &*f.rule_id == "rekey-new-source-address")
        .collect();
    assert_eq!(new_ip.len(), 1, "{new_ip:#?}");
    assert_eq!(new_ip[0].source_ip.as_deref(), Some("198.51.100.7"));
    assert_eq!(r.problems.len(), 1, "{:?}", r.problems);
    assert!(
        r.problems[0]
            .location
            .ends_with("circleci-audit.csv:7 (record 6)"),
        "{:?}",
        r.problems
    );
    assert!(r.problems[0].message.contains("actor"), "{:?}", r.problems);
}

#[test]
fn circleci_json_lines_give_the_same_findings_as_the_csv() {
    let rules = RuleSet::builtin();
    let csv = hunt(
        &rules,
        vec![(Source::CircleciAudit, fixture("circleci-audit.csv"))],
        &[],
    );
    let jsonl = hunt(
        &rules,
        vec![(Source::CircleciAudit, fixture("circleci-audit.jsonl"))],
        &[],
    );
    assert_eq!(keys(&csv), keys(&jsonl));
    assert_eq!(jsonl.problems.len(), 1);
    assert!(
        jsonl.problems[0]
            .location
            .contains("circleci-audit.jsonl:4:"),
        "{:?}",
        jsonl.problems
    );
    // Both at once: the same event ids are one event.
    let both = hunt(
        &rules,
        vec![
            (Source::CircleciAudit, fixture("circleci-audit.csv")),
            (Source::CircleciAudit, fixture("circleci-audit.jsonl")),
        ],
        &[],
    );
    assert_eq!(keys(&both), keys(&csv));
}

#[test]
fn github_audit_git_events_baseline_and_wrong_types() {
    let rules = RuleSet::builtin();
    let r = hunt(
        &rules,
        vec![(Source::GithubAudit, fixture("github-audit.json"))],
        &[],
    );
    let git: Vec<&Finding> = r
        .findings
        .iter()
        .filter(|f| f.hunt.as_deref() == Some("github-git-new-ip"))
        .collect();
    assert_eq!(
        git.len(),
        2,
        "clone and push after the incident start: {git:#?}"
    );
    assert!(
        !r.findings
            .iter()
            .any(|f| f.action.as_deref() == Some("repo.download_zip"))
    );
    let new_ip: Vec<&Finding> = r
        .findings
        .iter()
        .filter(|f| &*f.rule_id == "rekey-new-source-address")
        .collect();
    assert_eq!(new_ip.len(), 1);
    assert_eq!(new_ip[0].source_ip.as_deref(), Some("203.0.113.99"));
    assert_eq!(
        new_ip[0].time.to_rfc3339(),
        "2023-01-06T11:13:20+00:00",
        "@timestamp is epoch ms"
    );
    assert!(
        new_ip[0]
            .credential
            .as_deref()
            .unwrap()
            .starts_with("4b1d2b0c"),
        "attributed to the hashed token"
    );
    let new_country: Vec<&Finding> = r
        .findings
        .iter()
        .filter(|f| &*f.rule_id == "rekey-new-country")
        .collect();
    assert_eq!(new_country.len(), 1, "RU after a DE baseline");
    assert!(new_country[0].detail.as_deref().unwrap().contains("RU"));
    assert_eq!(r.problems.len(), 1);
    assert!(
        r.problems[0]
            .location
            .ends_with("github-audit.json (record 5)"),
        "{:?}",
        r.problems
    );
}

#[test]
fn gcp_key_creation_denials_and_a_truncated_line() {
    let rules = RuleSet::builtin();
    let r = hunt(
        &rules,
        vec![(Source::GcpLogging, fixture("gcp-logging.jsonl"))],
        &["0123456789abcdef"],
    );
    let created: Vec<&Finding> = r
        .findings
        .iter()
        .filter(|f| f.hunt.as_deref() == Some("gcp-key-created"))
        .collect();
    assert_eq!(
        created.len(),
        1,
        "the denied creation made no key: {created:#?}"
    );
    assert_eq!(created[0].record_id.as_deref(), Some("g1"));
    let errors: Vec<&Finding> = r
        .findings
        .iter()
        .filter(|f| f.hunt.as_deref() == Some("gcp-errors"))
        .collect();
    assert_eq!(errors.len(), 1);
    assert_eq!(errors[0].record_id.as_deref(), Some("g3"));
    assert!(
        !r.findings
            .iter()
            .any(|f| f.record_id.as_deref() == Some("g2")),
        "ListServiceAccountKeys is a look-alike"
    );
    assert_eq!(r.problems.len(), 1);
    assert!(
        r.problems[0].location.contains("gcp-logging.jsonl:3:"),
        "{:?}",
        r.problems
    );
}

#[test]
fn azure_signin_failures_from_a_graph_page() {
    let rules = RuleSet::builtin();
    let r = hunt(
        &rules,
        vec![(Source::AzureSignins, fixture("azure-signins.json"))],
        &[],
    );
    let failures: Vec<&Finding> = r
        .findings
        .iter()
        .filter(|f| f.hunt.as_deref() == Some("azure-signin-failures"))
        .collect();
    assert_eq!(failures.len(), 1, "{failures:#?}");
    assert_eq!(failures[0].record_id.as_deref(), Some("s1"));
    assert_eq!(
        failures[0].credential.as_deref(),
        Some("aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee")
    );
    assert_eq!(
        r.problems.len(),
        1,
        "createdDateTime as a number: {:?}",
        r.problems
    );
    assert!(r.problems[0].location.ends_with("(record 3)"));
}

#[test]
fn several_sources_in_one_run_table_markdown_and_fail_on() {
    let args = [
        "hunt",
        "--circleci-audit",
        fixture("circleci-audit.csv")
            .to_str()
            .unwrap()
            .to_string()
            .leak() as &str,
        "--github-audit",
        fixture("github-audit.json")
            .to_str()
            .unwrap()
            .to_string()
            .leak(),
        "--gcp-logging",
        fixture("gcp-logging.jsonl")
            .to_str()
            .unwrap()
            .to_string()
            .leak(),
        "--azure-signins",
        fixture("azure-signins.json")
            .to_str()
            .unwrap()
            .to_string()
            .leak(),
    ];
    let dir = tempfile::tempdir().unwrap();
    let md = dir.path().join("hunt.md");
    let mut a: Vec<&str> = args.to_vec();
    a.extend(["--timeline", "--markdown", md.to_str().unwrap()]);
    let out = rekey(&a);
    assert_eq!(
        out.status.code(),
        Some(3),
        "high findings, --fail-on high by default"
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("Credential mallory"), "{stdout}");
    assert!(stdout.contains("Timeline"), "{stdout}");
    assert!(stdout.contains("skipped: "), "{stdout}");
    let text = std::fs::read_to_string(&md).unwrap();
    assert!(text.starts_with("## Hunt findings"), "{text}");
    assert!(text.contains("| CircleCI persistence"), "{text}");

    let mut a: Vec<&str> = args.to_vec();
    a.extend(["--fail-on", "critical", "--output", "json"]);
    let out = rekey(&a);
    assert_eq!(out.status.code(), Some(0));
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(doc["highest"], "high");
    assert!(doc["problems"].as_array().unwrap().len() >= 4);

    let out = rekey(&["hunt"]);
    assert_eq!(out.status.code(), Some(2));
    let out = rekey(&["hunt", "--cloudtrail", "/nonexistent/x"]);
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn timeline_svg_has_a_lane_for_the_key_and_its_markers() {
    let Some(ct) = dataset("cloudtrail-invictus") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let svg_path = dir.path().join("out.svg");
    let md_path = dir.path().join("hunt.md");
    let out = rekey(&[
        "hunt",
        "--cloudtrail",
        ct.to_str().unwrap(),
        "--access-key-id",
        BENJAMIN,
        "--timeline-svg",
        svg_path.to_str().unwrap(),
        "--markdown",
        md_path.to_str().unwrap(),
    ]);
    assert_eq!(
        out.status.code(),
        Some(3),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let svg = std::fs::read_to_string(&svg_path).unwrap();
    eprintln!("timeline SVG: {} bytes", svg.len());
    assert!(svg.starts_with("<?xml") && svg.trim_end().ends_with("</svg>"));
    assert!(svg.contains("<svg xmlns=\"http://www.w3.org/2000/svg\" version=\"1.1\""));
    assert_eq!(svg.matches("class=\"lbl\"").count(), 1, "one lane");
    assert!(svg.contains(&format!(">{BENJAMIN}</text>")));
    let markers = svg.matches("<g><title>").count() - 1; // minus the lane label
    assert!(markers >= 1, "{svg}");
    assert!(svg.contains("<path class=\"m high\""), "high markers");
    assert!(svg.contains("10.248.16.43"), "tooltips name the source IP");
    assert!(svg.contains("ListUsers") || svg.contains("findings, 2023-07-10"));
    // The default incident start (2022-12-21) is months before: noted beside the axis.
    assert!(svg.contains("incident start 2022-12-21 00:00:00 UTC (before the axis)"));
    assert!(svg.len() < 512 * 1024, "{} bytes", svg.len());
    let md = std::fs::read_to_string(&md_path).unwrap();
    assert!(
        md.contains("![Timeline of the findings per credential](<out.svg>)"),
        "{md}"
    );
}

#[test]
fn list_names_every_catalogue_hunt_with_its_rules() {
    let out = rekey(&["hunt", "--list", "--output", "json"]);
    assert!(out.status.success());
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let hunts = doc["hunts"].as_array().unwrap();
    assert_eq!(hunts.len(), rekey::hunt::CATALOGUE.len());
    let rules_of = |n: &str| {
        hunts.iter().find(|h| h["name"] == n).unwrap()["rules"]
            .as_array()
            .unwrap()
            .len()
    };
    for h in [
        "aws-recon",
        "aws-denied",
        "aws-programmatic-agents",
        "circleci-persistence",
        "circleci-logins",
        "github-git-new-ip",
        "gcp-errors",
        "gcp-key-created",
        "azure-signin-failures",
    ] {
        assert!(rules_of(h) >= 1, "{h} has no rule");
    }
    // Every built-in rule names a hunt of the catalogue.
    let rules = RuleSet::builtin();
    assert!(rules.errors.is_empty(), "{:?}", rules.errors);
    for r in &rules.rules {
        let h = r.hunt.as_deref().unwrap_or("");
        assert!(
            rekey::hunt::find(h).is_some(),
            "{} names unknown hunt {h}",
            r.title
        );
    }
}

#[test]
fn azure_activity_log_sensitive_writes_and_denials() {
    let rules = RuleSet::builtin();
    let r = hunt(
        &rules,
        vec![(Source::AzureActivity, fixture("azure-activity.json"))],
        &[],
    );
    assert_eq!(
        r.stats.records, 5,
        "read, the wrong-typed one then skipped as a problem"
    );
    let fired: BTreeSet<(String, String)> = r
        .findings
        .iter()
        .filter(|f| f.hunt.as_deref() == Some("azure-activity-sensitive"))
        .map(|f| (f.record_id.clone().unwrap_or_default(), f.rule.to_string()))
        .collect();
    let ids: Vec<&str> = fired.iter().map(|(id, _)| id.as_str()).collect();
    // The role assignment written (true finding), the denied key listing (both rules); the
    // role-assignment read and the 409 conflict are look-alikes that must not fire.
    assert_eq!(
        ids,
        vec!["ev-denied", "ev-denied", "ev-role-write"],
        "{fired:?}"
    );
    let write = r
        .findings
        .iter()
        .find(|f| f.record_id.as_deref() == Some("ev-role-write"))
        .unwrap();
    assert_eq!(write.severity, Severity::High);
    assert_eq!(write.source_ip.as_deref(), Some("203.0.113.77"));
    assert_eq!(
        write.credential.as_deref(),
        Some("7d1c4b8e-1111-4a2b-9c3d-5e6f7a8b9c0d")
    );
    assert_eq!(r.problems.len(), 1, "{:?}", r.problems);
    assert!(
        r.problems[0]
            .location
            .ends_with("azure-activity.json (record 5)"),
        "{:?}",
        r.problems
    );
    // Scoped by the application (client) id through claims.appid.
    let scoped = hunt(
        &rules,
        vec![(Source::AzureActivity, fixture("azure-activity.json"))],
        &["11111111-2222-3333-4444-555555555555"],
    );
    assert_eq!(scoped.stats.out_of_scope, 0);
}

#[test]
fn invictus_post_compromise_techniques_of_the_stratus_detonation() {
    let Some(ct) = dataset("cloudtrail-invictus") else {
        return;
    };
    let r = hunt(&RuleSet::builtin(), vec![(Source::Cloudtrail, ct)], &[]);
    assert!(r.rule_errors.is_empty(), "{:?}", r.rule_errors);
    let groups = r.groups();
    let of = |rule: &str| -> Vec<&rekey::hunt::findings::FindingGroup<'_>> {
        groups.iter().filter(|g| g.rule == rule).collect()
    };
    let count = |rule: &str| of(rule).iter().map(|g| g.count).sum::<usize>();
    const BERT: &str = "AKIATFQR7NSC8Q4X20BJ";
    // Persistence: the backdoor user's key, admin policy, login profile, trust to 193672423079,
    // the Lambda opened to "*", the Roles Anywhere anchor.
    assert_eq!(count("Access key created for another IAM user"), 2);
    assert_eq!(
        count("Administrator policy attached to a user, group or role"),
        2
    );
    assert_eq!(
        count("Console password created or changed for an IAM user"),
        2
    );
    assert_eq!(
        count("Role trust policy trusts an outside account or anyone"),
        1
    );
    assert_eq!(count("Lambda function or layer opened to anyone"), 1);
    assert_eq!(count("IAM Roles Anywhere trust anchor created"), 1);
    assert_eq!(
        count("Lambda function code, configuration or layers changed"),
        8
    );
    // Defense evasion: trail stopped/deleted (attempts count), selectors, flow logs, org leave.
    assert_eq!(count("CloudTrail trail stopped or deleted"), 6);
    assert_eq!(count("CloudTrail trail or event selectors changed"), 2);
    assert_eq!(count("VPC flow logs deleted"), 1);
    assert_eq!(count("Account leaves its AWS organization"), 1);
    // Credential access.
    assert_eq!(count("Secrets Manager secret values read"), 60);
    assert_eq!(count("SSM parameters read with decryption"), 87);
    assert_eq!(count("EC2 Windows password data requested"), 29);
    assert_eq!(count("EC2 instance user data read"), 19);
    let stolen = of("EC2 instance credentials used from more than one address");
    assert_eq!(stolen.len(), 1, "{stolen:?}");
    assert!(
        stolen[0]
            .action
            .is_some_and(|a| a.contains("192.168.10.20")),
        "{stolen:?}"
    );
    // Execution, exfiltration, console.
    assert_eq!(count("SSM command sent or session started on instances"), 2);
    assert_eq!(
        count("EC2 instances launched of GPU/large types or in numbers"),
        2
    );
    assert_eq!(
        count("EBS snapshot, AMI or RDS snapshot shared with another account or made public"),
        3
    );
    assert_eq!(count("Console sign-in without MFA"), 1);
    // Correlations: bert-jan's discovery burst and the clean-up deletion bursts.
    assert!(
        of("Burst of distinct List/Describe/Get calls by one credential")
            .iter()
            .any(|g| g.credential == Some(BERT))
    );
    assert_eq!(of("Burst of deletions by one credential").len(), 2);
    // The HTTPS-from-anywhere ingress rule of the detonation is not an admin port.
    assert_eq!(
        count("Security group opened to the world on an administration port"),
        0
    );
    // The summary names the key with high findings first and the tactics seen.
    let s = r.summary();
    assert_eq!(s.high_credentials[0].0, BERT);
    for t in [
        "persistence",
        "defense-evasion",
        "credential-access",
        "discovery",
        "execution",
        "exfiltration",
        "impact",
        "initial-access",
    ] {
        assert!(s.tactics.contains_key(t), "{t} missing: {:?}", s.tactics);
    }
}

/// One worker or several, the report is the same bytes in every format: the workers' runs of
/// findings, merged maps, baselines, severities and correlations made on threads of their own
/// after the workers finish give the report one worker gives — including which of several
/// records of the same second a baseline or correlation finding names (the first in the
/// inputs' order), which record names a correlation's group, and the order of a correlation's
/// values (most frequent first, ties by value), none of which may follow the files each worker
/// happened to take.
#[test]
fn one_worker_and_several_report_the_same_findings() {
    let Some(ct) = dataset("cloudtrail-invictus") else {
        return;
    };
    let rules = with_third_party();
    let run = |threads| {
        let opts = HuntOptions {
            inputs: vec![(Source::Cloudtrail, ct.clone())],
            since: since("2023-07-10T12:00:00Z"),
            // Addresses outside it are findings of the address baseline's thread.
            allow: vec![engine::parse_cidr("10.0.0.0/8").unwrap()],
            threads,
            ..Default::default()
        };
        engine::run(&rules, &opts)
    };
    // Every rendering, the JSON document first (its stats hold the run's duration: zeroed).
    let render = |mut r: HuntReport| -> Vec<u8> {
        r.stats.elapsed_ms = 0;
        let mut out = Vec::new();
        r.write_json(&mut out).unwrap();
        for text in [
            r.to_table(),
            r.to_table_all(),
            r.timeline(),
            r.timeline_all(),
            r.markdown_section(),
            r.markdown_section_every_record(Some("chart.svg")),
        ] {
            out.extend_from_slice(text.as_bytes());
        }
        out
    };
    let one = run(1);
    assert!(one.findings.len() > 100, "{}", one.findings.len());
    assert!(
        one.findings
            .iter()
            .any(|f| &*f.rule_id == "rekey-outside-allowlist")
    );
    assert!(one.findings.iter().any(|f| {
        f.detail
            .as_deref()
            .is_some_and(|d| d.contains("distinct value(s)"))
    }));
    let one = render(one);
    for threads in [2, 3] {
        let several = render(run(threads));
        let at = one
            .iter()
            .zip(&several)
            .position(|(a, b)| a != b)
            .unwrap_or(one.len().min(several.len()));
        assert!(
            several == one,
            "{threads} workers differ from one at byte {at}: {:?} vs {:?}",
            String::from_utf8_lossy(
                &several[at.saturating_sub(200)..(at + 200).min(several.len())]
            ),
            String::from_utf8_lossy(&one[at.saturating_sub(200)..(at + 200).min(one.len())])
        );
    }
}

/// Past the cap of findings per (credential, rule), the findings listed are the first in the
/// inputs' order (input, line, record), whatever the number of workers: here the first input
/// holds the latest records, so keeping the earliest in time (what the merged, time-sorted
/// report kept before) listed another set with several workers than with one.
#[test]
fn the_cap_keeps_the_first_findings_in_the_inputs_order_for_any_worker_count() {
    let dir = tempfile::tempdir().unwrap();
    let key = "AKIACAPTEST000000001";
    let per_file = 600;
    // a.json: 15:00 on, b.json: 14:00 on, c.json: 13:00 on (input order is name order).
    for (name, hour) in [("a.json", 15), ("b.json", 14), ("c.json", 13)] {
        let records: Vec<serde_json::Value> = (0..per_file)
            .map(|i| {
                serde_json::json!({
                    "eventVersion": "1.08",
                    "eventTime": format!("2023-07-10T{hour}:{:02}:{:02}Z", i / 60, i % 60),
                    "eventSource": "ec2.amazonaws.com",
                    "eventName": "RunInstances",
                    "awsRegion": "us-east-1",
                    "sourceIPAddress": "203.0.113.5",
                    "userAgent": "aws-cli/2.13.0",
                    "errorCode": "Client.UnauthorizedOperation",
                    "errorMessage": "You are not authorized to perform this operation.",
                    "userIdentity": {"type": "IAMUser", "accessKeyId": key,
                        "arn": "arn:aws:iam::123456789012:user/ci"},
                    "eventID": format!("{name}-{i}"),
                })
            })
            .collect();
        std::fs::write(
            dir.path().join(name),
            serde_json::to_vec(&serde_json::json!({ "Records": records })).unwrap(),
        )
        .unwrap();
    }
    let rules = RuleSet::builtin();
    let run = |threads| {
        let opts = HuntOptions {
            inputs: vec![(Source::Cloudtrail, dir.path().to_path_buf())],
            since: since("2023-07-10T12:00:00Z"),
            threads,
            ..Default::default()
        };
        let mut r = engine::run(&rules, &opts);
        r.stats.elapsed_ms = 0;
        r
    };
    let denied = "08b4cd79-8f1a-4daf-b1ab-e69ab92a6359";
    let listed = |r: &HuntReport| -> BTreeSet<String> {
        r.findings
            .iter()
            .filter(|f| &*f.rule_id == denied)
            .filter_map(|f| f.record_id.clone())
            .collect()
    };
    let one = run(1);
    // All of a.json, then b.json's first 400 records.
    let want: BTreeSet<String> = (0..per_file)
        .map(|i| format!("a.json-{i}"))
        .chain((0..1000 - per_file).map(|i| format!("b.json-{i}")))
        .collect();
    assert_eq!(listed(&one), want);
    assert!(
        one.notes.iter().any(|n| n
            == &format!("800 finding(s) of rule {denied} for {key} not listed (first 1000 kept)")),
        "{:?}",
        one.notes
    );
    let json = |r: &HuntReport| {
        let mut out = Vec::new();
        r.write_json(&mut out).unwrap();
        out
    };
    let one_json = json(&one);
    for threads in [2, 3] {
        let several = run(threads);
        let got = listed(&several);
        let from = |file: &str| got.iter().filter(|id| id.starts_with(file)).count();
        assert!(
            got == want,
            "{threads} workers listed {} of a.json, {} of b.json, {} of c.json",
            from("a.json"),
            from("b.json"),
            from("c.json")
        );
        assert!(json(&several) == one_json, "{threads} workers");
    }
}

/// `RuleSet::load` (the third-party files parsed on a second thread) gives the set that the
/// built-in pack followed by `add_path` per directory gives: the same rules in the same order,
/// the same errors, a correlation resolved by a rule in a later file; an unlistable directory
/// is the error, with its path.
#[test]
fn rules_loaded_in_parallel_are_the_rules_loaded_in_turn() {
    let dir = tempfile::tempdir().unwrap();
    let write = |name: &str, text: &str| {
        let p = dir.path().join(name);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, text).unwrap();
    };
    write(
        "a_burst.yml",
        "title: Burst\ncorrelation:\n  type: event_count\n  rules: [listing]\n  group-by: [userIdentity.accessKeyId]\n  timespan: 10m\n  condition: {gte: 3}\n",
    );
    write(
        "b_listing.yml",
        "title: Listing\nname: listing\nlogsource: {product: aws, service: cloudtrail}\ndetection:\n  sel: {eventName|startswith: List}\n  condition: sel\nlevel: low\n",
    );
    write("c_broken.yml", "title: [unclosed\n");
    write(
        "deeper/d.yaml",
        "title: Deeper\nlogsource: {product: aws, service: cloudtrail}\ndetection:\n  sel: {eventName: GetUser}\n  condition: sel\n",
    );
    write("notes.txt", "not a rule");
    let mut dirs = vec![dir.path().to_path_buf()];
    dirs.extend(dataset("sigma-aws-cloudtrail"));
    for builtin in [true, false] {
        let mut in_turn = if builtin {
            RuleSet::builtin()
        } else {
            RuleSet::default()
        };
        for d in &dirs {
            in_turn.add_path(d).unwrap();
        }
        let loaded = RuleSet::load(builtin, &dirs).unwrap();
        let ids = |s: &RuleSet| s.rules.iter().map(|r| r.id.to_string()).collect::<Vec<_>>();
        let errors = |s: &RuleSet| {
            s.all_errors()
                .into_iter()
                .map(|e| (e.origin, e.reason))
                .collect::<Vec<_>>()
        };
        let correlations = |s: &RuleSet| {
            s.correlations
                .iter()
                .map(|c| (c.spec.title.clone(), c.rules.clone()))
                .collect::<Vec<_>>()
        };
        assert_eq!(ids(&loaded), ids(&in_turn));
        assert_eq!(errors(&loaded), errors(&in_turn));
        assert_eq!(correlations(&loaded), correlations(&in_turn));
        assert!(
            errors(&loaded)
                .iter()
                .any(|(o, r)| o.ends_with("c_broken.yml") && r.starts_with("not YAML")),
            "{:?}",
            errors(&loaded)
        );
        assert!(correlations(&loaded).iter().any(|(t, _)| &**t == "Burst"));
        assert!(loaded.rules.iter().any(|r| r.title.as_ref() == "Deeper"));
    }
    let missing = dir.path().join("nowhere");
    let Err((path, _)) = RuleSet::load(true, &[dir.path().to_path_buf(), missing.clone()]) else {
        panic!("a directory that does not exist loaded");
    };
    assert_eq!(path, missing);
}
