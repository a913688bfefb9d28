//! Fidelity of rekey's simulators against clients their vendors publish: each test starts a
//! simulator on 127.0.0.1, runs a script under `tests/vendor/` that drives it through the
//! vendor's own client library (google-api-python-client and google-auth; msal and Microsoft's
//! Graph SDK for Python; Octokit; boto3), and asserts on the JSON the script prints — what the
//! client parsed, which errors it raised, which fields the vendor's schema did not know. The
//! AWS test also sends the same calls to moto and compares the answers field by field.
//!
//! `./scripts/test` installs the clients (pinned: Python packages into `.venv-moto`, Octokit
//! into `.npm-octokit`). A missing client fails the test, as a missing moto does: a skip would
//! prove nothing.
//!
//! Secrets reach a script on its standard input, never in argv or its environment.

mod support;

use std::io::{Read, Seek, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

/// Upper bound of one client script (the Graph SDK alone takes seconds to import).
const SCRIPT_TIMEOUT: Duration = Duration::from_secs(120);

const PYTHON_HINT: &str =
    "run ./scripts/test, which installs the vendors' Python clients into .venv-moto";

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// The interpreter and its script: `.venv-moto`'s Python for `.py`, `node` for `.mjs`.
fn command_for(script: &str) -> Command {
    let path = root().join("tests/vendor").join(script);
    if script.ends_with(".py") {
        let python = root().join(".venv-moto/bin/python3");
        assert!(
            python.exists(),
            "{} is missing: {PYTHON_HINT}",
            python.display()
        );
        let mut c = Command::new(python);
        c.arg(path);
        c
    } else {
        let mut c = Command::new("node");
        c.arg(path);
        c
    }
}

/// Runs a client script with `args`, `input` on its standard input, and returns the JSON it
/// printed. Blocking (run it on a multi-thread runtime: the simulators answer meanwhile); the
/// child is killed by its PID after [`SCRIPT_TIMEOUT`]. Any failure of the script fails the
/// test with its standard error.
fn run_client(script: &str, args: &[&str], input: &Value) -> Value {
    let mut stdout = tempfile::tempfile().unwrap();
    let mut stderr = tempfile::tempfile().unwrap();
    let mut stdin_file = tempfile::tempfile().unwrap();
    stdin_file.write_all(input.to_string().as_bytes()).unwrap();
    stdin_file.rewind().unwrap();
    let mut child = command_for(script)
        .args(args)
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .stdin(Stdio::from(stdin_file))
        .stdout(Stdio::from(stdout.try_clone().unwrap()))
        .stderr(Stdio::from(stderr.try_clone().unwrap()))
        .spawn()
        .unwrap_or_else(|e| panic!("start the client script {script}: {e}"));
    let began = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if began.elapsed() > SCRIPT_TIMEOUT {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{script} did not finish within {SCRIPT_TIMEOUT:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let read = |f: &mut std::fs::File| {
        let mut s = String::new();
        f.rewind().unwrap();
        f.read_to_string(&mut s).unwrap();
        s
    };
    let (out, err) = (read(&mut stdout), read(&mut stderr));
    assert!(
        status.success(),
        "{script} failed ({status}); if a module is missing, {PYTHON_HINT}:\n{err}"
    );
    serde_json::from_str(&out)
        .unwrap_or_else(|e| panic!("{script} printed no JSON ({e}):\n{out}\n{err}"))
}

/// [`run_client`] off the runtime's thread, so the in-process simulator keeps answering.
async fn client(script: &str, args: Vec<String>, input: Value) -> Value {
    let script = script.to_owned();
    tokio::task::spawn_blocking(move || {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        run_client(&script, &args, &input)
    })
    .await
    .unwrap()
}

fn strings(v: &Value) -> Vec<&str> {
    v.as_array()
        .map(|a| a.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default()
}

mod gcp {
    use super::*;
    use rekey::sandbox::gcp::{ADMIN_ACCOUNT, GcpSandbox};

    const PROJECT: &str = "acme";

    /// Keys created, listed, disabled (the disabled key gets no token), enabled and deleted,
    /// and log entries listed page by page, through Google's client and auth library; every
    /// answer within the discovery documents' schemas.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn google_api_python_client_against_the_gcp_simulator() {
        let gcp = GcpSandbox::start(PROJECT).await.unwrap();
        let email = gcp.with_state(|s| {
            s.key_bits = 1024;
            for (i, method) in ["CreateServiceAccountKey", "DeleteServiceAccountKey"]
                .iter()
                .cycle()
                .take(5)
                .enumerate()
            {
                s.add_log_entry(json!({
                    "insertId": format!("e{i}"),
                    "logName": "projects/acme/logs/cloudaudit.googleapis.com%2Factivity",
                    "timestamp": format!("2026-01-0{}T10:00:00Z", i + 1),
                    "severity": "NOTICE",
                    "resource": {"type": "service_account", "labels": {"project_id": PROJECT}},
                    "protoPayload": {
                        "@type": "type.googleapis.com/google.cloud.audit.AuditLog",
                        "methodName": format!("google.iam.admin.v1.{method}"),
                        "authenticationInfo": {"principalEmail": "ci@acme.iam.gserviceaccount.com"}
                    }
                }));
            }
            s.email(ADMIN_ACCOUNT)
        });
        let key_file: Value = serde_json::from_str(gcp.admin_key_json().unwrap().expose()).unwrap();
        let out = client(
            "gcp_iam.py",
            vec![gcp.iam_url()],
            json!({"key_file": key_file, "project": PROJECT, "account": email}),
        )
        .await;

        assert_eq!(out["schema_violations"], json!([]), "{out:#}");
        let created = &out["create"];
        assert_eq!(
            strings(&created["fields"]),
            [
                "keyAlgorithm",
                "keyOrigin",
                "keyType",
                "name",
                "privateKeyData",
                "privateKeyType",
                "validAfterTime",
                "validBeforeTime"
            ],
            "create answers what IAM answers (no `disabled` while false): {out:#}"
        );
        assert_eq!(created["keyType"], "USER_MANAGED");
        assert_eq!(created["privateKeyType"], "TYPE_GOOGLE_CREDENTIALS_FILE");
        assert_eq!(created["name_prefix_ok"], true);
        assert_eq!(created["key_file_id_matches"], true);
        assert!(
            strings(&created["key_file_fields"]).contains(&"token_uri"),
            "{out:#}"
        );
        assert_eq!(out["new_key_signs_in"], true, "{out:#}");
        assert_eq!(out["list"]["names"].as_array().map(Vec::len), Some(2));
        assert_eq!(out["disable"], json!({}));
        assert_eq!(out["get_after_disable"]["disabled"], true);
        assert_eq!(out["disabled_key_token"]["refused"], true, "{out:#}");
        assert_eq!(out["enable"], json!({}));
        assert_eq!(out["get_after_enable"]["disabled"], false);
        assert_eq!(out["delete"], json!({}));
        assert_eq!(out["get_after_delete"]["http_status"], 404, "{out:#}");
        assert_eq!(out["get_after_delete"]["status"], "NOT_FOUND");
        assert_eq!(out["list_unknown_account"]["http_status"], 404);
        // Three creations among the five entries, two to a page: the client's own paging.
        assert_eq!(out["log_entries"]["pages"], 2, "{out:#}");
        assert_eq!(
            strings(&out["log_entries"]["insert_ids"]),
            ["e0", "e2", "e4"]
        );
        assert_eq!(out["log_unsupported_filter"]["http_status"], 400);
        assert_eq!(out["log_unsupported_filter"]["status"], "INVALID_ARGUMENT");
    }
}
