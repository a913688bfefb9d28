//! End to end through the real binary: a plan with one `gcp-sa-key`, one `azure-app-secret`
//! and one `exec` target, its GCP and Azure endpoints pointing at the simulators through the
//! plan's `endpoints:`, CircleCI at its simulator (`CIRCLECI_HOST`). `rekey apply` at
//! `RUST_LOG=trace` with `--output json` and `--report` (after a dry run that changes
//! nothing) takes all three to their grace period, `apply --resume` after it to done; then
//! every binding holds a new working credential, every old one is gone, and the
//! secret-hygiene scan (stdout, stderr, every byte of the state directory, the report) finds
//! none of the secrets involved — new, old, rekey's own — nor their base64.

mod support;

use base64::Engine as _;
use rekey::plan::{Endpoints, Located, Principal, ProviderKind};
use rekey::providers::azure::AzureAppSecretProvider;
use rekey::providers::gcp::{GcpAuth, GcpSaKeyProvider, ServiceAccountKey};
use rekey::providers::{Minted, Provider};
use rekey::sandbox::Sandbox;
use rekey::sandbox::azure::AzureSandbox;
use rekey::sandbox::circleci::{CircleCiState, OrgSpec, ProjectSpec};
use rekey::sandbox::gcp::GcpSandbox;
use rekey::secret::Secret;
use std::collections::BTreeMap;
use std::path::Path;
use support::conformance::target;

const PROJECT: &str = "acme-prod";
const TENANT: &str = "72f988bf-86f1-41af-91ab-2d7cd011db47";
const SLUG: &str = "gh/acme/cloud";
const CIRCLECI_TOKEN: &str = "CCIPAT_e2e-cloud-token-0123456789abcdef";

fn b64(s: &str) -> String {
    base64::engine::general_purpose::STANDARD.encode(s)
}

fn files_under(dir: &Path, out: &mut Vec<(String, Vec<u8>)>) {
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        let path = entry.path();
        if path.is_dir() {
            files_under(&path, out);
        } else {
            out.push((path.display().to_string(), std::fs::read(&path).unwrap()));
        }
    }
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    !needle.is_empty() && haystack.windows(needle.len()).any(|w| w == needle)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_target_of_each_cloud_provider_applies_end_to_end() {
    let dir = tempfile::tempdir().unwrap();

    // GCP: service account ci-deployer with its current key.
    let gcp = GcpSandbox::start(PROJECT).await.unwrap();
    let sa = gcp.with_state(|s| s.add_account("ci-deployer"));
    let (old_gcp_key, old_gcp_json) = gcp.with_state(|s| s.create_key(&sa)).unwrap();
    let gcp_admin = gcp.admin_key_json().unwrap();
    let gcp_admin_file = dir.path().join("gcp-admin.json");
    std::fs::write(&gcp_admin_file, gcp_admin.expose()).unwrap();

    // Azure: app ci-app with its current secret.
    let azure = AzureSandbox::start(TENANT).await.unwrap();
    let (app_object, _) = azure.with_state(|s| s.add_app("ci-app"));
    let (old_azure_key, old_azure_secret) = azure
        .with_state(|s| s.add_password(&app_object, Some("old"), None))
        .unwrap();
    let azure_admin = azure.admin_identity().unwrap();

    // exec: the fixture owner, principal npm, its current token.
    let owner_state = dir.path().join("owner.json");
    let old_exec_value = "tok_old-exec-value-0123456789abcdef";
    std::fs::write(
        &owner_state,
        serde_json::json!({"principals": {"npm": {"cred-old": {
            "value": old_exec_value, "status": "active", "created_at": "2022-06-01T00:00:00+00:00"}}}})
        .to_string(),
    )
    .unwrap();

    let circleci = Sandbox::start(
        CircleCiState::new(CIRCLECI_TOKEN)
            .org(OrgSpec::new("gh/acme"))
            .project(
                ProjectSpec::new(SLUG)
                    .env("GCLOUD_SERVICE_KEY", b64(old_gcp_json.expose()))
                    .env("AZURE_CLIENT_SECRET", old_azure_secret.expose())
                    .env("NPM_TOKEN", old_exec_value),
            ),
    )
    .await
    .unwrap();

    let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/exec/owner.py");
    let cmd = |op: &str| {
        format!(
            "[python3, \"{}\", \"{}\", {op}]",
            fixture.display(),
            owner_state.display()
        )
    };
    let plan = format!(
        r#"apiVersion: rekey/v1
kind: RotationPlan
metadata:
  name: cloud-e2e
defaults:
  grace: 2s
endpoints:
  gcp_iam: {gcp_iam}
  gcp_token: {gcp_token}
  azure_authority: {authority}
  azure_graph: {graph}
targets:
  - id: gcp-deployer
    provider: gcp-sa-key
    principal: {{service_account: {sa}}}
    bindings:
      - project: {SLUG}
        vars: {{key_json: GCLOUD_SERVICE_KEY}}
        encoding: {{key_json: base64}}
  - id: azure-ci-app
    provider: azure-app-secret
    principal: {{app_id: {app_object}, tenant_id: {TENANT}, title: rekey-ci}}
    bindings:
      - project: {SLUG}
        vars: {{client_secret: AZURE_CLIENT_SECRET}}
  - id: npm-publish
    provider: exec
    principal: {{service: npm}}
    bindings:
      - project: {SLUG}
        vars: {{value: NPM_TOKEN}}
    exec:
      mint: {mint}
      verify: {verify}
      revoke: {revoke}
      inspect: {inspect}
      deactivate: {deactivate}
      timeout: 30s
"#,
        gcp_iam = gcp.iam_url(),
        gcp_token = gcp.token_url(),
        authority = azure.authority_url(),
        graph = azure.graph_url(),
        mint = cmd("mint"),
        verify = cmd("verify"),
        revoke = cmd("revoke"),
        inspect = cmd("inspect"),
        deactivate = cmd("deactivate"),
    );
    let plan_file = dir.path().join("plan.yaml");
    std::fs::write(&plan_file, &plan).unwrap();
    let state_dir = dir.path().join("state");
    let report = dir.path().join("report.md");
    let stash_key = b64(&"k".repeat(32));

    let rekey = |args: Vec<String>| {
        let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_rekey"));
        command
            .args(args)
            .arg("--state-dir")
            .arg(&state_dir)
            .env("RUST_LOG", "trace")
            .env("CIRCLECI_HOST", circleci.base_url())
            .env("CIRCLECI_TOKEN", CIRCLECI_TOKEN)
            .env("REKEY_STASH_KEY", &stash_key)
            .env("REKEY_KEYRING_DISABLED", "1")
            .env("GOOGLE_APPLICATION_CREDENTIALS", &gcp_admin_file)
            .env_remove("GOOGLE_OAUTH_ACCESS_TOKEN")
            .env("AZURE_TENANT_ID", &azure_admin.tenant_id)
            .env("AZURE_CLIENT_ID", &azure_admin.client_id)
            .env("AZURE_CLIENT_SECRET", azure_admin.client_secret.expose())
            .env("AWS_ACCESS_KEY_ID", "AKIAUNUSEDUNUSED0000")
            .env("AWS_SECRET_ACCESS_KEY", "unused")
            .env("AWS_REGION", "us-east-1");
        command
    };
    let summary_of = |out: &std::process::Output| -> serde_json::Value {
        let stdout = String::from_utf8_lossy(&out.stdout);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(
            out.status.code(),
            Some(0),
            "stdout:\n{stdout}\nstderr:\n{stderr}"
        );
        stdout
            .lines()
            .rev()
            .find_map(|l| {
                serde_json::from_str::<serde_json::Value>(l)
                    .ok()
                    .filter(|v| v.get("summary").is_some())
            })
            .unwrap_or_else(|| panic!("no summary line in\n{stdout}"))["summary"]
            .clone()
    };
    let args = |extra: &[&str]| -> Vec<String> { extra.iter().map(|s| (*s).to_owned()).collect() };
    let plan_arg = plan_file.to_str().unwrap();

    // A dry run reads (the exec owner's inspect command included) and changes nothing.
    let owner_before = std::fs::read_to_string(&owner_state).unwrap();
    let dry = rekey(args(&["apply", plan_arg, "--dry-run", "--ignore-max-age"]))
        .output()
        .await
        .unwrap();
    assert_eq!(
        dry.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&dry.stderr)
    );
    assert!(
        gcp.server()
            .mutating_requests()
            .iter()
            .all(|r| r.path == "/token"),
        "{:?}",
        gcp.server().mutating_requests()
    );
    assert!(
        azure
            .server()
            .mutating_requests()
            .iter()
            .all(|r| r.path.ends_with("/token"))
    );
    assert!(circleci.mutating_requests().is_empty());
    let parse = |t: &str| serde_json::from_str::<serde_json::Value>(t).unwrap();
    assert_eq!(
        parse(&std::fs::read_to_string(&owner_state).unwrap()),
        parse(&owner_before)
    );

    // Apply: every target ends in its grace period (the old GCP key and exec token disabled,
    // the Azure secret still valid: it cannot be disabled).
    let first = rekey(args(&[
        "apply",
        plan_arg,
        "--output",
        "json",
        "--ignore-max-age",
        "--verify-backoff-ms",
        "50",
    ]))
    .arg("--report")
    .arg(&report)
    .output()
    .await
    .unwrap();
    let summary = summary_of(&first);
    for t in summary["targets"].as_array().unwrap() {
        assert_eq!(t["state"], "waiting", "{t}");
    }
    assert_eq!(
        gcp.with_state(|s| s.keys_of(&sa))
            .iter()
            .filter(|(_, disabled)| *disabled)
            .count(),
        1
    );
    let run = summary["run"].as_str().unwrap().to_owned();

    // After the grace period, --resume (the plan comes from the journal, endpoints included)
    // revokes the old credentials.
    tokio::time::sleep(std::time::Duration::from_millis(2100)).await;
    let second = rekey(args(&["apply", "--resume", &run, "--output", "json"]))
        .output()
        .await
        .unwrap();
    let summary = summary_of(&second);
    for t in summary["targets"].as_array().unwrap() {
        assert_eq!(t["state"], "done", "{t}");
    }
    let stderr = format!(
        "{}{}",
        String::from_utf8_lossy(&first.stderr),
        String::from_utf8_lossy(&second.stderr)
    );

    // The bindings hold new credentials that work; the old ones are gone.
    let vars = circleci
        .state()
        .project_by_slug(SLUG)
        .unwrap()
        .env_vars
        .clone();
    let value = |name: &str| vars.get(name).unwrap().value.clone();

    let new_gcp_json = String::from_utf8(
        base64::engine::general_purpose::STANDARD
            .decode(value("GCLOUD_SERVICE_KEY"))
            .unwrap(),
    )
    .unwrap();
    let keys = gcp.with_state(|s| s.keys_of(&sa));
    assert_eq!(keys.len(), 1, "{keys:?}");
    assert_ne!(keys[0].0, old_gcp_key);
    let parsed: serde_json::Value = serde_json::from_str(&new_gcp_json).unwrap();
    assert!(
        keys[0]
            .0
            .ends_with(parsed["private_key_id"].as_str().unwrap())
    );
    let gcp_endpoints = Endpoints {
        gcp_iam: Some(Located::new(gcp.iam_url())),
        gcp_token: Some(Located::new(gcp.token_url())),
        ..Endpoints::default()
    };
    let gcp_provider = GcpSaKeyProvider::new(
        &gcp_endpoints,
        GcpAuth::KeyFile(Box::new(
            ServiceAccountKey::parse(gcp_admin.expose()).unwrap(),
        )),
    )
    .unwrap();
    let gcp_target = target(
        "gcp",
        ProviderKind::GcpSaKey,
        Principal {
            service_account: Some(Located::new(sa.clone())),
            ..Principal::default()
        },
    );
    let minted = |id: &str, field: &str, v: &str| Minted {
        id: id.to_owned(),
        fields: BTreeMap::from([(field.to_owned(), Secret::new(v))]),
    };
    gcp_provider
        .verify(&gcp_target, &minted(&keys[0].0, "key_json", &new_gcp_json))
        .await
        .unwrap();
    assert!(
        gcp_provider
            .verify(
                &gcp_target,
                &minted(&old_gcp_key, "key_json", old_gcp_json.expose())
            )
            .await
            .is_err()
    );

    let new_azure_secret = value("AZURE_CLIENT_SECRET");
    let passwords = azure.with_state(|s| s.passwords_of(&app_object));
    assert_eq!(passwords.len(), 1);
    assert_ne!(passwords[0], old_azure_key);
    let azure_provider = AzureAppSecretProvider::new(
        &Endpoints {
            azure_authority: Some(Located::new(azure.authority_url())),
            azure_graph: Some(Located::new(azure.graph_url())),
            ..Endpoints::default()
        },
        Some(azure_admin.clone()),
    )
    .unwrap();
    let azure_target = target(
        "azure",
        ProviderKind::AzureAppSecret,
        Principal {
            app_id: Some(Located::new(app_object.clone())),
            tenant_id: Some(Located::new(TENANT.to_owned())),
            ..Principal::default()
        },
    );
    azure_provider
        .verify(
            &azure_target,
            &minted(&passwords[0], "client_secret", &new_azure_secret),
        )
        .await
        .unwrap();
    assert!(
        azure_provider
            .verify(
                &azure_target,
                &minted(&old_azure_key, "client_secret", old_azure_secret.expose())
            )
            .await
            .is_err()
    );

    let new_exec_value = value("NPM_TOKEN");
    let owner: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&owner_state).unwrap()).unwrap();
    let creds = owner["principals"]["npm"].as_object().unwrap();
    assert_eq!(creds.len(), 1, "{creds:?}");
    assert!(!creds.contains_key("cred-old"));
    assert_eq!(
        creds.values().next().unwrap()["value"],
        new_exec_value.as_str()
    );

    // Secret hygiene: nothing of any secret, in clear or base64, anywhere rekey wrote.
    let gcp_private = |json: &str| {
        serde_json::from_str::<serde_json::Value>(json).unwrap()["private_key"]
            .as_str()
            .unwrap()
            .to_owned()
    };
    let mut secrets: Vec<String> = vec![
        new_gcp_json.clone(),
        gcp_private(&new_gcp_json),
        old_gcp_json.expose().to_owned(),
        gcp_private(old_gcp_json.expose()),
        gcp_private(gcp_admin.expose()),
        new_azure_secret.clone(),
        old_azure_secret.expose().to_owned(),
        azure_admin.client_secret.expose().to_owned(),
        new_exec_value.clone(),
        old_exec_value.to_owned(),
        CIRCLECI_TOKEN.to_owned(),
    ];
    let encoded: Vec<String> = secrets.iter().map(|s| b64(s)).collect();
    secrets.extend(encoded);
    // The PEM body lines alone (a log could print the key without its JSON quoting).
    for pem in [gcp_private(&new_gcp_json), gcp_private(gcp_admin.expose())] {
        secrets.extend(
            pem.lines()
                .filter(|l| l.len() >= 40 && !l.starts_with("-----"))
                .take(3)
                .map(str::to_owned),
        );
    }
    let mut outputs: Vec<(String, Vec<u8>)> = vec![
        ("dry-run stdout".into(), dry.stdout.clone()),
        ("dry-run stderr".into(), dry.stderr.clone()),
        ("stdout".into(), first.stdout.clone()),
        ("stderr".into(), first.stderr.clone()),
        ("resume stdout".into(), second.stdout.clone()),
        ("resume stderr".into(), second.stderr.clone()),
        ("report".into(), std::fs::read(&report).unwrap()),
    ];
    files_under(&state_dir, &mut outputs);
    assert!(outputs.len() > 3, "the state directory has files");
    assert!(
        stderr.contains("gcp-sa-key") && stderr.contains("TRACE"),
        "trace logs were captured"
    );
    let mut hits = Vec::new();
    for (what, bytes) in &outputs {
        for (i, s) in secrets.iter().enumerate() {
            if contains(bytes, s.as_bytes()) {
                hits.push(format!("secret #{i} in {what}"));
            }
        }
    }
    assert!(hits.is_empty(), "secret-hygiene scan: {hits:?}");
}
