//! The `rekey` binary end to end: exit codes, outputs, and that plans it writes validate as
//! the reviewer expects.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn rekey(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_rekey"))
        .args(args)
        .env_remove("CIRCLECI_TOKEN")
        .env_remove("RUST_LOG")
        .output()
        .expect("run rekey")
}

fn root(rel: &str) -> String {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join(rel)
        .display()
        .to_string()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn tmp() -> tempfile::TempDir {
    tempfile::tempdir().unwrap()
}

#[test]
fn plan_from_the_example_inventory_round_trips_and_validates_with_review_items() {
    let dir = tmp();
    let plan: PathBuf = dir.path().join("plan.yaml");
    let out = rekey(&[
        "plan",
        "--inventory",
        &root("plans/example-inventory.json"),
        "--out",
        plan.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    assert!(stdout.contains("aws-iam"), "{stdout}");
    let yaml = std::fs::read_to_string(&plan).unwrap();
    assert!(yaml.starts_with("# rekey rotation plan"));
    assert!(yaml.contains("apiVersion: rekey/v1"));
    assert!(
        yaml.contains("REVIEW-REQUIRED"),
        "the planner cannot know the IAM user"
    );
    assert!(
        yaml.contains("gh/acme/locked"),
        "unreadable places are listed"
    );

    // What the planner writes parses back to the same plan.
    let parsed = rekey::plan::load::parse("plan.yaml", &yaml).unwrap();
    let again = rekey::plan::write::to_yaml(&parsed, &Default::default()).unwrap();
    let reparsed = rekey::plan::load::parse("again.yaml", &again).unwrap();
    assert_eq!(parsed, reparsed);

    // Validation refuses it until a person has decided, and says where.
    let out = rekey(&["validate", plan.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    let stderr = text(&out.stderr);
    assert!(stderr.contains("needs a reviewer's decision"), "{stderr}");
    assert!(stderr.contains(&format!("{}:", plan.display())), "{stderr}");
}

#[test]
fn same_plan_twice_is_byte_identical() {
    let a = rekey(&["plan", "--inventory", &root("plans/example-inventory.json")]);
    let b = rekey(&["plan", "--inventory", &root("plans/example-inventory.json")]);
    assert!(a.status.success());
    assert_eq!(a.stdout, b.stdout);
}

#[test]
fn validate_json_output_and_exit_codes() {
    let out = rekey(&[
        "validate",
        &root("plans/circleci-incident.yaml"),
        "--output",
        "json",
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stdout));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["valid"], true);
    assert_eq!(v["targets"], 7);

    let dir = tmp();
    let bad = dir.path().join("bad.yaml");
    std::fs::write(&bad, "apiVersion: rekey/v1\nkind: RotationPlan\nmetadata: {name: x}\ntargets:\n  - id: a\n    provider: nope\n").unwrap();
    let out = rekey(&["validate", bad.to_str().unwrap(), "--output", "json"]);
    assert_eq!(out.status.code(), Some(2));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["valid"], false);
    assert_eq!(v["errors"][0]["line"], 6);
    assert_eq!(v["errors"][0]["column"], 15);

    let out = rekey(&[
        "validate",
        dir.path().join("missing.yaml").to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("cannot read plan"));
}

#[test]
fn usage_errors_exit_2() {
    assert_eq!(rekey(&["inventory"]).status.code(), Some(2));
    assert_eq!(rekey(&["plan"]).status.code(), Some(2));
    assert_eq!(rekey(&["no-such-command"]).status.code(), Some(2));
    let out = rekey(&["plan", "--inventory", &root("plans/circleci-incident.yaml")]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("not a rekey inventory"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn live_inventory_without_a_token_says_how_to_get_one() {
    let out = Command::new(env!("CARGO_BIN_EXE_rekey"))
        .args(["inventory", "--org", "gh/acme"])
        .env_remove("CIRCLECI_TOKEN")
        // An empty keyring namespace: a test must not read a developer's real token.
        .env("REKEY_KEYRING_DISABLED", "1")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("CIRCLECI_TOKEN"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn env_inspector_import_through_the_cli() {
    let dir = tmp();
    let inv = dir.path().join("inventory.json");
    let out = rekey(&[
        "inventory",
        "--from-env-inspector",
        &root("tests/fixtures/env-inspector/current.json"),
        "--out",
        inv.to_str().unwrap(),
        "--output",
        "json",
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let summary: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(summary["projects"], 3);
    assert_eq!(summary["contexts"], 2);
    let out = rekey(&[
        "plan",
        "--inventory",
        inv.to_str().unwrap(),
        "--output",
        "json",
        "--out",
        dir.path().join("p.yaml").to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let summary: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(summary["targets"].as_u64().unwrap() >= 3, "{summary}");

    let out = rekey(&[
        "inventory",
        "--from-env-inspector",
        &root("tests/fixtures/env-inspector/missing-field.json"),
    ]);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("missing field `variable`"));
}

/// The live path end to end: the binary reads the sandbox through CIRCLECI_HOST, and the plan
/// made from what it wrote carries every place, with no secret value in any output.
#[test]
fn live_inventory_against_the_sandbox_then_plan() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let state = rekey::sandbox::demo_org();
    let token = state.token().to_string();
    let secrets = state.stored_values();
    let sandbox = rt.block_on(rekey::sandbox::Sandbox::start(state)).unwrap();

    let dir = tmp();
    let inv = dir.path().join("inventory.json");
    let out = Command::new(env!("CARGO_BIN_EXE_rekey"))
        .args([
            "inventory",
            "--org",
            "gh/acme",
            "--out",
            inv.to_str().unwrap(),
            "--output",
            "json",
        ])
        .env("CIRCLECI_HOST", sandbox.base_url())
        .env("CIRCLECI_TOKEN", &token)
        .env("RUST_LOG", "trace")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    let summary: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(summary["projects"], 4, "{summary}");
    assert!(
        sandbox.mutating_requests().is_empty(),
        "inventory is read-only"
    );

    let plan = dir.path().join("plan.yaml");
    let planned = rekey(&[
        "plan",
        "--inventory",
        inv.to_str().unwrap(),
        "--out",
        plan.to_str().unwrap(),
    ]);
    assert!(planned.status.success(), "{}", text(&planned.stderr));

    let mut outputs = vec![
        text(&out.stdout),
        text(&out.stderr),
        std::fs::read_to_string(&inv).unwrap(),
        std::fs::read_to_string(&plan).unwrap(),
        text(&planned.stdout),
        text(&planned.stderr),
    ];
    outputs.push(String::new());
    let all = outputs.join("\n");
    assert!(!all.contains(&token), "the API token leaked into an output");
    for secret in secrets.iter().filter(|s| s.len() > 4) {
        assert!(
            !all.contains(secret.as_str()),
            "a stored secret leaked into an output"
        );
    }
}

/// The README's first command: the whole flow in process, surviving the injected faults, with
/// every binding holding a working key afterwards and one active key per IAM user.
#[test]
fn demo_runs_the_whole_flow() {
    let out = Command::new(env!("CARGO_BIN_EXE_rekey"))
        .arg("demo")
        .env_remove("RUST_LOG")
        .env("REKEY_KEYRING_DISABLED", "1")
        .output()
        .unwrap();
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{stdout}\n{}", text(&out.stderr));
    assert_eq!(stdout.matches("holds a working key").count(), 7, "{stdout}");
    for provider in [
        "(gcp-sa-key): holds",
        "(azure-app-secret): holds",
        "(exec): holds",
    ] {
        assert!(stdout.contains(provider), "{stdout}");
    }
    assert!(!stdout.contains("does NOT hold"), "{stdout}");
    let hygiene = stdout
        .lines()
        .find(|l| l.contains("Secret hygiene:"))
        .unwrap_or_else(|| panic!("{stdout}"));
    assert!(hygiene.ends_with(": 0 found."), "{hygiene}");
    assert!(
        !hygiene.contains(" 0 secret values"),
        "something was searched: {hygiene}"
    );
    // One target of each GitHub provider, checked against the simulators.
    for check in [
        "✓ GitHub acme/api: one deploy key",
        "✓ CircleCI gh/acme/api: one checkout deploy key, new and preferred",
        "✓ GitHub token of release-bot: the old one revoked",
    ] {
        assert!(stdout.contains(check), "{check}: {stdout}");
    }
    assert!(!stdout.contains("NOT as expected"), "{stdout}");
    for user in ["ci-deployer", "prod-deployer", "release-bot"] {
        assert!(
            stdout.contains(&format!("{user}: 1 key(s), 1 active")),
            "{stdout}"
        );
    }
    // The pre-rotation hunt finds the simulated attacker's reconnaissance with ci-deployer's
    // key in CloudTrail's event history (LookupEvents), and the rotation goes on.
    assert!(
        stdout.contains("aws-api pre-rotation hunt: 10 finding(s), highest high"),
        "{stdout}"
    );
    assert!(
        stdout.contains("3 × high   Reconnaissance by a script or scanner"),
        "{stdout}"
    );
    assert!(
        stdout.contains("1 × medium Access denied to a CI credential"),
        "{stdout}"
    );
    assert!(
        stdout.contains("answered 429 1×"),
        "the CircleCI fault was injected: {stdout}"
    );
    assert!(
        stdout.contains("answered 500 1×"),
        "the AWS fault was injected: {stdout}"
    );
    assert!(
        stdout.contains("Run ") && stdout.contains("(Complete)"),
        "{stdout}"
    );
}

/// `plan --discover aws` asks IAM (read-only) who owns each key and fills principal.user.
#[test]
fn plan_discovers_iam_users_from_masked_key_ids() {
    use rekey::sandbox::aws::{AwsSandbox, AwsState, KeySpec};
    let rt = tokio::runtime::Runtime::new().unwrap();
    let mut state = AwsState::new("123456789012");
    state
        .add_user("ci-deployer", rekey::sandbox::aws::Access::None)
        .unwrap();
    let key = state.add_key("ci-deployer", KeySpec::active()).unwrap();
    let aws = rt.block_on(AwsSandbox::start(state)).unwrap();
    let admin = aws.admin_credentials();

    let dir = tmp();
    let last4 = &key.access_key_id[key.access_key_id.len() - 4..];
    let inventory = serde_json::json!({
        "source": "circleci-api", "org": "gh/acme", "taken_at": "2026-11-28T09:00:00Z",
        "projects": [{"slug": "gh/acme/api", "env_vars": [
            {"name": "AWS_ACCESS_KEY_ID", "masked": format!("xxxx{last4}")},
            {"name": "AWS_SECRET_ACCESS_KEY", "masked": "xxxxabcd"}]}],
        "contexts": [], "errors": []
    });
    let inv = dir.path().join("inventory.json");
    std::fs::write(&inv, inventory.to_string()).unwrap();
    let plan = dir.path().join("plan.yaml");
    let out = Command::new(env!("CARGO_BIN_EXE_rekey"))
        .args([
            "plan",
            "--inventory",
            inv.to_str().unwrap(),
            "--discover",
            "aws",
            "--out",
            plan.to_str().unwrap(),
            "--output",
            "json",
        ])
        .env("AWS_ENDPOINT_URL", aws.endpoint_url())
        .env("AWS_ACCESS_KEY_ID", &admin.access_key_id)
        .env("AWS_SECRET_ACCESS_KEY", admin.secret_access_key.expose())
        .env("AWS_REGION", "us-east-1")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    let summary: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(summary["discovered"][0]["user"], "ci-deployer", "{summary}");
    let yaml = std::fs::read_to_string(&plan).unwrap();
    assert!(yaml.contains("principal: {user: ci-deployer}"), "{yaml}");
    assert!(aws.mutating_requests().is_empty(), "discovery is read-only");
    let validated = rekey(&["validate", plan.to_str().unwrap()]);
    assert_eq!(
        validated.status.code(),
        Some(0),
        "{}",
        text(&validated.stderr)
    );
}

/// `rekey auth set circleci` keeps the token in the OS keyring (here the kernel keyutils store of
/// a headless Linux), and a later process finds it without CIRCLECI_TOKEN. The token never
/// shows in any output.
#[cfg(target_os = "linux")]
#[test]
fn auth_set_stores_the_token_in_the_keyring_for_later_processes() {
    use std::io::Write;
    let rt = tokio::runtime::Runtime::new().unwrap();
    let state = rekey::sandbox::demo_org();
    let token = state.token().to_string();
    let sandbox = rt.block_on(rekey::sandbox::Sandbox::start(state)).unwrap();
    let run = |args: &[&str], stdin: Option<&str>| {
        let mut child = Command::new(env!("CARGO_BIN_EXE_rekey"))
            .args(args)
            .env_remove("CIRCLECI_TOKEN")
            .env("CIRCLECI_HOST", sandbox.base_url())
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        if let Some(input) = stdin {
            child
                .stdin
                .take()
                .unwrap()
                .write_all(input.as_bytes())
                .unwrap();
        }
        child.wait_with_output().unwrap()
    };
    let set = run(&["auth", "set", "circleci"], Some(&format!("{token}\n")));
    assert!(set.status.success(), "{}", text(&set.stderr));
    let status = run(&["auth", "status", "--output", "json"], None);
    assert!(
        text(&status.stdout).contains(r#""source": "keyring""#),
        "{}",
        text(&status.stdout)
    );
    let dir = tmp();
    let out_file = dir.path().join("inventory.json");
    let inv = run(
        &[
            "inventory",
            "--org",
            "gh/acme",
            "--output",
            "json",
            "--out",
            out_file.to_str().unwrap(),
        ],
        None,
    );
    let forgot = run(&["auth", "delete", "circleci"], None);
    assert!(
        inv.status.success(),
        "a later process reads the token from the keyring: {}",
        text(&inv.stderr)
    );
    assert!(forgot.status.success());
    let after = run(&["inventory", "--org", "gh/acme"], None);
    assert_eq!(after.status.code(), Some(2), "deleted from the keyring");
    for out in [&set, &status, &inv, &forgot, &after] {
        assert!(!text(&out.stdout).contains(&token) && !text(&out.stderr).contains(&token));
    }
}
