//! Hostile logs and rules: an attacker who can write to a log bucket, or slip a rule into a
//! third-party pack, must not be able to exhaust rekey's memory or time, crash the hunt, or
//! narrow it to nothing. Each test runs what a user runs (the binary, or a remote hunt against
//! moto and the simulators) and checks the hunt survived: the other inputs were read, what
//! could not be read is reported (`incomplete`, exit 1), and memory stayed under 256 MB.

mod support;

use rekey::hunt::engine::HuntOptions;
use rekey::hunt::findings::HuntReport;
use rekey::hunt::pack::RuleSet;
use rekey::hunt::remote::{self, Context, Credentials, Remote, Window};
use std::io::Write;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

const MB: u64 = 1 << 20;
/// What a hunt may use at most, whatever its input.
const PEAK_LIMIT: u64 = 256 * MB;
const KEY: &str = "AKIAHOSTILE000000001";

/// One CloudTrail delivery file holding a reconnaissance call by KEY (a finding of the
/// built-in pack), to prove the hunt went on past a hostile file.
fn good_delivery() -> String {
    serde_json::json!({"Records": [{
        "eventVersion": "1.08", "eventTime": "2023-01-05T10:00:00Z",
        "eventSource": "iam.amazonaws.com", "eventName": "ListUsers",
        "awsRegion": "us-east-1", "sourceIPAddress": "203.0.113.9",
        "userAgent": "Boto3/1.26.0 Python/3.10", "eventID": "good-1",
        "userIdentity": {"type": "IAMUser", "accessKeyId": KEY,
            "arn": "arn:aws:iam::123456789012:user/ci"}
    }]})
    .to_string()
}

/// A gzip file of `prefix` followed by `fill` repeated to `total` bytes, as concatenated gzip
/// members (one member compressed once and repeated): small on disk, huge decompressed.
fn bomb(prefix: &[u8], fill: &[u8], total: u64) -> Vec<u8> {
    let member = |data: &[u8]| {
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
        e.write_all(data).unwrap();
        e.finish().unwrap()
    };
    const CHUNK: usize = 16 << 20;
    let chunk: Vec<u8> = fill.iter().copied().cycle().take(CHUNK).collect();
    let packed = member(&chunk);
    let mut out = member(prefix);
    for _ in 0..total / CHUNK as u64 {
        out.extend_from_slice(&packed);
    }
    out
}

/// Runs `cmd` to its end (killed after `limit`), returning its output and peak RSS in bytes
/// (the child's own `ru_maxrss`, from `wait4`).
fn run_measured(mut cmd: Command, limit: Duration) -> (std::process::Output, u64, Duration) {
    let started = Instant::now();
    let child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id() as libc::pid_t;
    // Pipes drained on threads so that a chatty child never blocks on a full pipe.
    let mut child = child;
    let mut out = child.stdout.take().unwrap();
    let mut err = child.stderr.take().unwrap();
    let o = std::thread::spawn(move || {
        let mut v = Vec::new();
        std::io::Read::read_to_end(&mut out, &mut v).unwrap();
        v
    });
    let e = std::thread::spawn(move || {
        let mut v = Vec::new();
        std::io::Read::read_to_end(&mut err, &mut v).unwrap();
        v
    });
    let (status, rusage) = loop {
        let mut status = 0;
        let mut rusage: libc::rusage = unsafe { std::mem::zeroed() };
        // SAFETY: wait4 on our own child with valid pointers; WNOHANG never blocks.
        let r = unsafe { libc::wait4(pid, &mut status, libc::WNOHANG, &mut rusage) };
        if r == pid {
            break (status, rusage);
        }
        assert!(r == 0, "wait4 failed");
        if started.elapsed() > limit {
            let _ = child.kill();
            panic!("the hunt ran longer than {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let elapsed = started.elapsed();
    use std::os::unix::process::ExitStatusExt;
    let output = std::process::Output {
        status: std::process::ExitStatus::from_raw(status),
        stdout: o.join().unwrap(),
        stderr: e.join().unwrap(),
    };
    // Linux reports ru_maxrss in KiB.
    (output, rusage.ru_maxrss as u64 * 1024, elapsed)
}

fn rekey() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_rekey"));
    c.env_remove("RUST_LOG")
        .env("REKEY_KEYRING_DISABLED", "1")
        .args(["--output", "json", "hunt", "--fail-on", "critical"]);
    c
}

fn report(out: &std::process::Output) -> serde_json::Value {
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "not a JSON report ({e}); status {:?}; stderr: {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        )
    })
}

fn texts(v: &serde_json::Value, list: &str) -> Vec<String> {
    v[list]
        .as_array()
        .map(|a| a.iter().map(|p| p.to_string()).collect())
        .unwrap_or_default()
}

/// The records that gave findings (any rule or baseline, wherever the report lists them),
/// once each.
fn finding_ids(v: &serde_json::Value) -> Vec<String> {
    fn walk(v: &serde_json::Value, out: &mut std::collections::BTreeSet<String>) {
        match v {
            serde_json::Value::Object(m) => {
                if let Some(id) = m.get("record_id").and_then(|i| i.as_str()) {
                    out.insert(id.to_string());
                }
                m.values().for_each(|x| walk(x, out));
            }
            serde_json::Value::Array(a) => a.iter().for_each(|x| walk(x, out)),
            _ => {}
        }
    }
    let mut ids = std::collections::BTreeSet::new();
    walk(v, &mut ids);
    ids.into_iter().collect()
}

/// Two bombs beside a good file: one line that never ends (1.5 GB of a string, the record
/// bound), and 1.1 GB of blank padding (the decompressed bound). Both are reported as not
/// wholly read, the good file's finding is there, exit 1, and memory stays under 256 MB
/// (today's reader grew one line to the whole 1.5 GB).
#[test]
fn gzip_bombs_are_reported_and_bounded_and_the_hunt_goes_on() {
    let dir = tempfile::tempdir().unwrap();
    let gb = 1536 * MB;
    let line = bomb(b"{\"Records\":[{\"eventName\":\"", b"A", gb);
    let pad_line: Vec<u8> = [b' '; 4095].iter().chain(b"\n").copied().collect();
    let pad = bomb(b"", &pad_line, 1088 * MB);
    assert!(line.len() < 4 * MB as usize && pad.len() < 4 * MB as usize);
    std::fs::write(dir.path().join("a-line.json.gz"), &line).unwrap();
    std::fs::write(dir.path().join("b-pad.json.gz"), &pad).unwrap();
    std::fs::write(dir.path().join("c-good.json"), good_delivery()).unwrap();
    let mut cmd = rekey();
    cmd.arg("--cloudtrail").arg(dir.path());
    let (out, peak, took) = run_measured(cmd, Duration::from_secs(600));
    eprintln!("bombs: peak {} MiB in {took:?}", peak / MB);
    let v = report(&out);
    assert_eq!(out.status.code(), Some(1), "incomplete: exit 1");
    let mut incomplete = texts(&v, "incomplete");
    incomplete.sort();
    assert_eq!(incomplete.len(), 2, "{incomplete:?}");
    assert!(incomplete[0].contains("a-line.json.gz") && incomplete[0].contains("64 MiB"));
    assert!(incomplete[1].contains("b-pad.json.gz") && incomplete[1].contains("1 GiB"));
    assert_eq!(finding_ids(&v), ["good-1"], "the good file was hunted");
    assert!(peak < PEAK_LIMIT, "peak RSS {} MiB", peak / MB);
}

/// JSON lines that are nothing but unreadable records: the problems listed are capped while
/// collected (not after), and the rest are counted.
#[test]
fn a_file_of_unreadable_records_costs_bounded_memory() {
    let dir = tempfile::tempdir().unwrap();
    // 2.8 million records without a usable time; each was a problem held in memory.
    let f = bomb(b"", b"{\"eventName\":\"x\"}\n", 48 * MB);
    std::fs::write(dir.path().join("junk.json.gz"), f).unwrap();
    let mut cmd = rekey();
    cmd.arg("--cloudtrail").arg(dir.path());
    let (out, peak, took) = run_measured(cmd, Duration::from_secs(900));
    eprintln!("junk: peak {} MiB in {took:?}", peak / MB);
    let v = report(&out);
    assert_eq!(v["problems"].as_array().map(Vec::len), Some(10_000));
    assert!(v["stats"]["problems_not_listed"].as_u64().unwrap() > 1_000_000);
    assert!(peak < PEAK_LIMIT, "peak RSS {} MiB", peak / MB);
}

/// Rules that nest 30,000 parentheses or 60,000 `not`s are refused with the file named, and the
/// other rules of the pack still hunt (today the parser overflowed the stack: SIGABRT).
#[test]
fn deeply_nested_rule_conditions_are_refused_not_fatal() {
    let dir = tempfile::tempdir().unwrap();
    let rules = dir.path().join("rules");
    std::fs::create_dir(&rules).unwrap();
    let rule = |cond: &str| {
        format!(
            "title: hostile\nlogsource: {{product: aws, service: cloudtrail}}\ndetection:\n  sel: {{eventName: ListUsers}}\n  condition: '{cond}'\n"
        )
    };
    let parens = format!("{}sel{}", "(".repeat(30_000), ")".repeat(30_000));
    std::fs::write(rules.join("parens.yml"), rule(&parens)).unwrap();
    std::fs::write(rules.join("nots.yml"), rule(&"not ".repeat(60_000))).unwrap();
    // A file of gigabytes is not read into memory to find it is not a rule.
    let big = std::fs::File::create(rules.join("huge.yml")).unwrap();
    big.set_len(1 << 30).unwrap();
    std::fs::write(dir.path().join("good.json"), good_delivery()).unwrap();
    let mut cmd = rekey();
    cmd.arg("--cloudtrail")
        .arg(dir.path().join("good.json"))
        .arg("--rules")
        .arg(&rules);
    let (out, peak, _) = run_measured(cmd, Duration::from_secs(120));
    assert!(out.status.code().is_some(), "killed by {:?}", out.status);
    let v = report(&out);
    let errors = texts(&v, "rule_errors");
    assert_eq!(errors.len(), 3, "{errors:?}");
    assert!(errors[0].contains("huge.yml") && errors[0].contains("not a Sigma rule"));
    assert!(errors[1].contains("nots.yml") && errors[1].contains("levels deep"));
    assert!(errors[2].contains("parens.yml") && errors[2].contains("levels deep"));
    assert_eq!(
        finding_ids(&v),
        ["good-1"],
        "the built-in pack still hunted"
    );
    assert!(peak < PEAK_LIMIT, "peak RSS {} MiB", peak / MB);
}

/// `contains: 'a*a*a*a*a*a*b'` against an attacker's 400-character user agent: a backtracking
/// matcher runs for minutes on one record; compiled to a regex it is linear.
#[test]
fn pathological_wildcards_take_linear_time() {
    let dir = tempfile::tempdir().unwrap();
    let rules = dir.path().join("rules");
    std::fs::create_dir(&rules).unwrap();
    std::fs::write(
        rules.join("wild.yml"),
        "title: wild\nid: wild\nlevel: low\nlogsource: {product: aws, service: cloudtrail}\ndetection:\n  sel:\n    userAgent|contains: 'a*a*a*a*a*a*b'\n  condition: sel\n",
    )
    .unwrap();
    let records: Vec<serde_json::Value> = (0..50)
        .map(|i| {
            serde_json::json!({
                "eventTime": "2023-01-05T10:00:00Z", "eventName": "GetObject",
                "eventID": format!("ua-{i}"), "sourceIPAddress": "203.0.113.9",
                "userAgent": "a".repeat(400),
                "userIdentity": {"accessKeyId": KEY}
            })
        })
        .collect();
    let mut lines = records
        .iter()
        .map(|r| r.to_string())
        .collect::<Vec<_>>()
        .join("\n");
    // One that matches, so the rule is shown to work.
    lines.push('\n');
    lines.push_str(
        &serde_json::json!({"eventTime": "2023-01-05T10:00:00Z", "eventName": "GetObject",
            "eventID": "ua-match", "userAgent": "xxAyyAaAaAAzzB",
            "userIdentity": {"accessKeyId": KEY}})
        .to_string(),
    );
    std::fs::write(dir.path().join("ua.jsonl"), lines).unwrap();
    let mut cmd = rekey();
    cmd.arg("--no-builtin")
        .arg("--cloudtrail")
        .arg(dir.path().join("ua.jsonl"))
        .arg("--rules")
        .arg(&rules);
    let (out, _, took) = run_measured(cmd, Duration::from_secs(60));
    let v = report(&out);
    assert_eq!(finding_ids(&v), ["ua-match"]);
    assert!(took < Duration::from_secs(30), "took {took:?}");
}

// ---------------------------------------------------------------------------------------------
// Remote sources

fn t(s: &str) -> chrono::DateTime<chrono::Utc> {
    s.parse().unwrap()
}

fn fast_retry() -> rekey::http::RetryPolicy {
    rekey::http::RetryPolicy {
        max_attempts: 2,
        base_delay: Duration::from_millis(1),
        max_delay: Duration::from_millis(5),
    }
}

async fn remote_hunt(remotes: Vec<Remote>, window: Window, ctx: Context) -> HuntReport {
    remote::hunt(
        Arc::new(RuleSet::builtin()),
        HuntOptions::default(),
        remotes,
        window,
        Arc::new(ctx),
    )
    .await
}

/// This process's peak RSS (VmHWM), in bytes.
fn own_peak() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap();
    kb * 1024
}

/// A bomb in the log bucket: streamed from S3, never held whole, reported as not wholly read;
/// the next object is still hunted (today the object was buffered and decompressed into one
/// 1.5 GB line, then passed as merely malformed).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_bomb_object_is_streamed_bounded_and_reported() {
    let Some(moto) = support::moto::Moto::start().await else {
        return;
    };
    let s3 = support::trail::s3(moto.config());
    s3.create_bucket().bucket("trail").send().await.unwrap();
    let key = |n: &str| format!("AWSLogs/123456789012/CloudTrail/us-east-1/2023/01/05/{n}");
    let line = bomb(b"{\"Records\":[{\"eventName\":\"", b"A", 1536 * MB);
    support::trail::put(&s3, "trail", &key("a.json.gz"), line).await;
    let good = support::trail::gzip(good_delivery().as_bytes());
    support::trail::put(&s3, "trail", &key("b.json.gz"), good).await;
    let ctx = Context {
        credentials: Credentials {
            aws: Some(moto.config().clone()),
            ..Default::default()
        },
        retry: fast_retry(),
        ..Default::default()
    };
    let window = Window {
        from: t("2023-01-01T00:00:00Z"),
        until: t("2023-02-01T00:00:00Z"),
    };
    let remotes = vec![Remote::S3 {
        bucket: "trail".into(),
        prefix: String::new(),
    }];
    let got = remote_hunt(remotes, window, ctx).await;
    assert_eq!(got.incomplete.len(), 1, "{:?}", got.incomplete);
    assert!(got.incomplete[0].location.ends_with("a.json.gz"));
    assert!(got.incomplete[0].message.contains("64 MiB"));
    let ids: std::collections::BTreeSet<_> = got
        .findings
        .iter()
        .filter_map(|f| f.record_id.clone())
        .collect();
    assert_eq!(ids, ["good-1".to_string()].into());
    assert!(own_peak() < PEAK_LIMIT, "peak RSS {} MiB", own_peak() / MB);
}

/// A principal holding `"` (or `\`) is escaped in the Cloud Logging filter, so the hunt reads
/// exactly that principal's entries (the simulator parses the filter as Cloud Logging does);
/// one holding a control character, which has no escape there, is refused with the reason.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gcp_filter_escapes_the_principal() {
    use rekey::providers::gcp::{GcpAuth, ServiceAccountKey};
    let gcp = rekey::sandbox::gcp::GcpSandbox::start("acme")
        .await
        .unwrap();
    let odd = "o\"brien\\x\" OR \"@acme.iam.gserviceaccount.com";
    gcp.with_state(|s| {
        for (id, who) in [
            ("mine", odd),
            ("theirs", "other@acme.iam.gserviceaccount.com"),
        ] {
            s.add_log_entry(serde_json::json!({
                "insertId": id, "timestamp": "2023-01-03T11:00:00Z", "severity": "ERROR",
                "logName": "projects/acme/logs/cloudaudit.googleapis.com%2Fdata_access",
                "protoPayload": {"authenticationInfo": {"principalEmail": who},
                    "methodName": "storage.objects.list",
                    "requestMetadata": {"callerIp": "203.0.113.66"},
                    "status": {"code": 7, "message": "PERMISSION_DENIED"}}
            }));
        }
    });
    let key = ServiceAccountKey::parse(gcp.admin_key_json().unwrap().expose()).unwrap();
    let ctx = || Context {
        endpoints: remote::Endpoints {
            gcp_logging: gcp.logging_url(),
            gcp_token: gcp.token_url(),
            ..Default::default()
        },
        credentials: Credentials {
            gcp: Some(GcpAuth::KeyFile(Box::new(key.clone()))),
            ..Default::default()
        },
        retry: fast_retry(),
        page_size: None,
    };
    let window = Window {
        from: t("2022-11-21T00:00:00Z"),
        until: t("2023-02-01T00:00:00Z"),
    };
    let project = |principal: &str| {
        vec![Remote::GcpProject {
            project: "acme".into(),
            principal: Some(principal.into()),
        }]
    };
    let got = remote_hunt(project(odd), window, ctx()).await;
    assert!(got.incomplete.is_empty(), "{:?}", got.incomplete);
    assert_eq!(got.stats.records, 1, "exactly the odd principal's entry");
    let ids: Vec<_> = got
        .findings
        .iter()
        .filter_map(|f| f.record_id.clone())
        .collect();
    assert!(
        ids.iter().all(|i| i == "mine") && !ids.is_empty(),
        "{ids:?}"
    );

    let got = remote_hunt(project("a\nb@acme.iam"), window, ctx()).await;
    assert_eq!(got.incomplete.len(), 1);
    assert!(got.incomplete[0].message.contains("control character"));
}
