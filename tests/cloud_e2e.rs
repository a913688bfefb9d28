//! End to end through the real binary: a plan with one `gcp-sa-key`, one `azure-app-secret`
//! and one `exec` target, its GCP and Azure endpoints pointing at the simulators through the
//! plan's `endpoints:`, CircleCI at its simulator (`CIRCLECI_HOST`).
//!
//! - The full path at `RUST_LOG=trace` with `--output json` and `--report`: a dry run that
//!   changes nothing, an apply that takes all three targets to their grace period, and
//!   `apply --resume` after it to done; then every binding holds a new working credential,
//!   every old one is gone, and the secret-hygiene scan (stdout, stderr, every byte of the
//!   state directory, the report) finds none of the secrets involved — new, old, rekey's own —
//!   nor their base64.
//! - Crash and resume: the process SIGKILLs itself (`REKEY_CRASH_AT`) at each journal boundary
//!   of each target; `--resume` then finishes with exactly one working credential per target,
//!   nothing minted twice.
//! - A lost keys.create answer (the key exists, the answer is a 500): the run still ends with
//!   one key.

mod support;

use base64::Engine as _;
use rekey::plan::{Endpoints, Located, Principal, PrincipalField, ProviderKind};
use rekey::providers::azure::{AzureAppSecretProvider, AzureIdentity};
use rekey::providers::gcp::{GcpAuth, GcpSaKeyProvider, ServiceAccountKey};
use rekey::providers::{Minted, Provider};
use rekey::sandbox::Sandbox;
use rekey::sandbox::azure::AzureSandbox;
use rekey::sandbox::circleci::{CircleCiState, OrgSpec, ProjectSpec};
use rekey::sandbox::gcp::GcpSandbox;
use rekey::secret::Secret;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use support::conformance::target;

const PROJECT: &str = "acme-prod";
const TENANT: &str = "72f988bf-86f1-41af-91ab-2d7cd011db47";
const SLUG: &str = "gh/acme/cloud";
const CIRCLECI_TOKEN: &str = "CCIPAT_e2e-cloud-token-0123456789abcdef";
const OLD_EXEC_VALUE: &str = "tok_old-exec-value-0123456789abcdef";

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

fn minted(id: &str, field: &str, v: &str) -> Minted {
    Minted {
        id: id.to_owned(),
        fields: BTreeMap::from([(field.to_owned(), Secret::new(v))]),
    }
}

/// The three owners and CircleCI, each target's credential bound in project `gh/acme/cloud`.
struct World {
    dir: tempfile::TempDir,
    gcp: GcpSandbox,
    azure: AzureSandbox,
    circleci: Sandbox,
    sa: String,
    old_gcp_key: String,
    old_gcp_json: Secret,
    gcp_admin: Secret,
    gcp_admin_file: PathBuf,
    app_object: String,
    old_azure_key: String,
    old_azure_secret: Secret,
    azure_admin: AzureIdentity,
    owner_state: PathBuf,
    plan_file: PathBuf,
    state_dir: PathBuf,
}

impl World {
    async fn start(grace: &str) -> World {
        let dir = tempfile::tempdir().unwrap();

        let gcp = GcpSandbox::start(PROJECT).await.unwrap();
        let sa = gcp.with_state(|s| s.add_account("ci-deployer"));
        let (old_gcp_key, old_gcp_json) = gcp.with_state(|s| s.create_key(&sa)).unwrap();
        let gcp_admin = gcp.admin_key_json().unwrap();
        let gcp_admin_file = dir.path().join("gcp-admin.json");
        std::fs::write(&gcp_admin_file, gcp_admin.expose()).unwrap();

        let azure = AzureSandbox::start(TENANT).await.unwrap();
        let (app_object, _) = azure.with_state(|s| s.add_app("ci-app"));
        let (old_azure_key, old_azure_secret) = azure
            .with_state(|s| s.add_password(&app_object, Some("old"), None))
            .unwrap();
        let azure_admin = azure.admin_identity().unwrap();

        let owner_state = dir.path().join("owner.json");
        std::fs::write(
            &owner_state,
            serde_json::json!({"principals": {"npm": {"cred-old": {
                "value": OLD_EXEC_VALUE, "status": "active",
                "created_at": "2022-06-01T00:00:00+00:00"}}}})
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
                        .env("NPM_TOKEN", OLD_EXEC_VALUE),
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
  grace: {grace}
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
        World {
            dir,
            gcp,
            azure,
            circleci,
            sa,
            old_gcp_key,
            old_gcp_json,
            gcp_admin,
            gcp_admin_file,
            app_object,
            old_azure_key,
            old_azure_secret,
            azure_admin,
            owner_state,
            plan_file,
            state_dir,
        }
    }

    /// The binary with everything it needs in its environment (and nothing secret in argv).
    fn rekey(&self, args: &[&str]) -> tokio::process::Command {
        let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_rekey"));
        command
            .args(args)
            .arg("--state-dir")
            .arg(&self.state_dir)
            .env("RUST_LOG", "trace")
            .env("CIRCLECI_HOST", self.circleci.base_url())
            .env("CIRCLECI_TOKEN", CIRCLECI_TOKEN)
            .env("REKEY_STASH_KEY", b64(&"k".repeat(32)))
            .env("REKEY_KEYRING_DISABLED", "1")
            .env("GOOGLE_APPLICATION_CREDENTIALS", &self.gcp_admin_file)
            .env_remove("GOOGLE_OAUTH_ACCESS_TOKEN")
            .env_remove("REKEY_CRASH_AT")
            .env("AZURE_TENANT_ID", &self.azure_admin.tenant_id)
            .env("AZURE_CLIENT_ID", &self.azure_admin.client_id)
            .env(
                "AZURE_CLIENT_SECRET",
                self.azure_admin.client_secret.expose(),
            )
            .env("AWS_ACCESS_KEY_ID", "AKIAUNUSEDUNUSED0000")
            .env("AWS_SECRET_ACCESS_KEY", "unused")
            .env("AWS_REGION", "us-east-1");
        command
    }

    fn plan_arg(&self) -> &str {
        self.plan_file.to_str().unwrap()
    }

    fn var(&self, name: &str) -> String {
        self.circleci
            .state()
            .project_by_slug(SLUG)
            .unwrap()
            .env_vars
            .get(name)
            .unwrap()
            .value
            .clone()
    }

    fn owner(&self) -> serde_json::Value {
        serde_json::from_str(&std::fs::read_to_string(&self.owner_state).unwrap()).unwrap()
    }

    /// Every binding holds a new credential that works, each owner holds exactly that one, and
    /// the old ones no longer work. Returns the new secret values.
    async fn check_rotated(&self) -> Vec<String> {
        let new_gcp_json = String::from_utf8(
            base64::engine::general_purpose::STANDARD
                .decode(self.var("GCLOUD_SERVICE_KEY"))
                .unwrap(),
        )
        .unwrap();
        let keys = self.gcp.with_state(|s| s.keys_of(&self.sa));
        assert_eq!(keys.len(), 1, "one key left: {keys:?}");
        assert_ne!(keys[0].0, self.old_gcp_key);
        assert!(!keys[0].1, "the new key is enabled");
        let gcp = GcpSaKeyProvider::new(
            &Endpoints {
                gcp_iam: Some(Located::new(self.gcp.iam_url())),
                gcp_token: Some(Located::new(self.gcp.token_url())),
                ..Endpoints::default()
            },
            GcpAuth::KeyFile(Box::new(
                ServiceAccountKey::parse(self.gcp_admin.expose()).unwrap(),
            )),
        )
        .unwrap();
        let gcp_target = target(
            "gcp",
            ProviderKind::GcpSaKey,
            Principal::default().with(PrincipalField::ServiceAccount, self.sa.clone()),
        );
        gcp.verify(&gcp_target, &minted(&keys[0].0, "key_json", &new_gcp_json))
            .await
            .unwrap();
        let old = minted(&self.old_gcp_key, "key_json", self.old_gcp_json.expose());
        assert!(gcp.verify(&gcp_target, &old).await.is_err());

        let new_azure_secret = self.var("AZURE_CLIENT_SECRET");
        let passwords = self.azure.with_state(|s| s.passwords_of(&self.app_object));
        assert_eq!(passwords.len(), 1, "one secret left");
        assert_ne!(passwords[0], self.old_azure_key);
        let azure = AzureAppSecretProvider::new(
            &Endpoints {
                azure_authority: Some(Located::new(self.azure.authority_url())),
                azure_graph: Some(Located::new(self.azure.graph_url())),
                ..Endpoints::default()
            },
            Some(self.azure_admin.clone()),
        )
        .unwrap();
        let azure_target = target(
            "azure",
            ProviderKind::AzureAppSecret,
            Principal::default()
                .with(PrincipalField::AppId, self.app_object.clone())
                .with(PrincipalField::TenantId, TENANT.to_owned()),
        );
        let new = minted(&passwords[0], "client_secret", &new_azure_secret);
        azure.verify(&azure_target, &new).await.unwrap();
        let old = minted(
            &self.old_azure_key,
            "client_secret",
            self.old_azure_secret.expose(),
        );
        assert!(azure.verify(&azure_target, &old).await.is_err());

        let new_exec_value = self.var("NPM_TOKEN");
        let owner = self.owner();
        let creds = owner["principals"]["npm"].as_object().unwrap();
        assert_eq!(creds.len(), 1, "one token left: {:?}", creds.keys());
        assert!(!creds.contains_key("cred-old"));
        let only = creds.values().next().unwrap();
        assert_eq!(only["value"], new_exec_value.as_str());
        assert_eq!(only["status"], "active");
        vec![new_gcp_json, new_azure_secret, new_exec_value]
    }
}

/// The summary line of `--output json`, after checking the exit status.
fn summary_of(out: &std::process::Output, code: i32) -> serde_json::Value {
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        out.status.code(),
        Some(code),
        "stdout:\n{stdout}\nstderr:\n{}",
        &stderr[stderr.len().saturating_sub(4000)..]
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
}

fn states(summary: &serde_json::Value) -> Vec<String> {
    summary["targets"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["state"].as_str().unwrap_or_default().to_owned())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_target_of_each_cloud_provider_applies_end_to_end() {
    let w = World::start("2s").await;
    let report = w.dir.path().join("report.md");

    // A dry run reads (the exec owner's inspect command included, as the operator asks with
    // --dry-run-exec) and changes nothing.
    let owner_before = w.owner();
    let dry = w
        .rekey(&[
            "apply",
            w.plan_arg(),
            "--dry-run",
            "--dry-run-exec",
            "--ignore-max-age",
        ])
        .output()
        .await
        .unwrap();
    assert_eq!(
        dry.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&dry.stderr)
    );
    let gcp_writes = w.gcp.server().mutating_requests();
    assert!(
        gcp_writes.iter().all(|r| r.path == "/token"),
        "{gcp_writes:?}"
    );
    let azure_writes = w.azure.server().mutating_requests();
    assert!(
        azure_writes.iter().all(|r| r.path.ends_with("/token")),
        "{azure_writes:?}"
    );
    assert!(w.circleci.mutating_requests().is_empty());
    assert_eq!(w.owner(), owner_before);

    // Apply: every target ends in its grace period (the old GCP key and exec token disabled,
    // the Azure secret still valid: it cannot be disabled).
    let first = w
        .rekey(&[
            "apply",
            w.plan_arg(),
            "--output",
            "json",
            "--ignore-max-age",
            "--verify-backoff-ms",
            "50",
            "--report",
            report.to_str().unwrap(),
        ])
        .output()
        .await
        .unwrap();
    let summary = summary_of(&first, 0);
    assert_eq!(
        states(&summary),
        ["waiting", "waiting", "waiting"],
        "{summary}"
    );
    let gcp_keys = w.gcp.with_state(|s| s.keys_of(&w.sa));
    assert_eq!(gcp_keys.iter().filter(|(_, disabled)| *disabled).count(), 1);
    assert_eq!(
        w.owner()["principals"]["npm"]["cred-old"]["status"],
        "inactive"
    );
    let run = summary["run"].as_str().unwrap().to_owned();

    // After the grace period, --resume (the plan comes from the journal, endpoints included)
    // revokes the old credentials.
    tokio::time::sleep(std::time::Duration::from_millis(2100)).await;
    let second = w
        .rekey(&["apply", "--resume", &run, "--output", "json"])
        .output()
        .await
        .unwrap();
    let summary = summary_of(&second, 0);
    assert_eq!(states(&summary), ["done", "done", "done"], "{summary}");
    let new_values = w.check_rotated().await;

    // Secret hygiene: nothing of any secret, in clear or base64, anywhere rekey wrote.
    let stderr = format!(
        "{}{}",
        String::from_utf8_lossy(&first.stderr),
        String::from_utf8_lossy(&second.stderr)
    );
    assert!(
        stderr.contains("gcp-sa-key") && stderr.contains("TRACE"),
        "trace logs were captured"
    );
    let private_key = |json: &str| {
        serde_json::from_str::<serde_json::Value>(json).unwrap()["private_key"]
            .as_str()
            .unwrap()
            .to_owned()
    };
    let mut secrets: Vec<String> = new_values.clone();
    secrets.extend([
        private_key(&new_values[0]),
        w.old_gcp_json.expose().to_owned(),
        private_key(w.old_gcp_json.expose()),
        private_key(w.gcp_admin.expose()),
        w.old_azure_secret.expose().to_owned(),
        w.azure_admin.client_secret.expose().to_owned(),
        OLD_EXEC_VALUE.to_owned(),
        CIRCLECI_TOKEN.to_owned(),
    ]);
    let encoded: Vec<String> = secrets.iter().map(|s| b64(s)).collect();
    secrets.extend(encoded);
    // PEM body lines alone (a log could print the key without its JSON quoting).
    for pem in [
        private_key(&new_values[0]),
        private_key(w.gcp_admin.expose()),
    ] {
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
    files_under(&w.state_dir, &mut outputs);
    assert!(outputs.len() > 7, "the state directory has files");
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

/// SIGKILL at each journal boundary of each target, then `--resume` until done: exactly one
/// working credential per target, the old ones gone (invariants 1–2: no orphan, nothing minted
/// twice is what "one key left" means).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crash_at_every_step_then_resume() {
    let points = [
        "mint:intent",
        "mint:done",
        "verify:done",
        "write:done",
        "read-back:done",
        "deactivate:intent",
        "revoke:intent",
        "revoke:done",
    ];
    for target in ["gcp-deployer", "azure-ci-app", "npm-publish"] {
        for point in points {
            if target == "azure-ci-app" && point == "deactivate:intent" {
                continue; // Azure secrets are never deactivated: no such boundary.
            }
            let w = World::start("0s").await;
            let crashed = w
                .rekey(&[
                    "apply",
                    w.plan_arg(),
                    "--output",
                    "json",
                    "--ignore-max-age",
                    "--verify-backoff-ms",
                    "50",
                    "--parallelism",
                    "1",
                ])
                .env("RUST_LOG", "info")
                .env("REKEY_CRASH_AT", format!("{target}:{point}"))
                .output()
                .await
                .unwrap();
            assert!(
                crashed.status.code().is_none(),
                "{target}:{point}: the process was killed ({:?}): {}",
                crashed.status,
                String::from_utf8_lossy(&crashed.stderr)
            );
            let status = w
                .rekey(&["status", "--output", "json"])
                .output()
                .await
                .unwrap();
            let status_text = String::from_utf8_lossy(&status.stdout);
            let run = serde_json::from_str::<serde_json::Value>(&status_text)
                .ok()
                .and_then(|v| {
                    v.as_array()
                        .or_else(|| v["runs"].as_array())
                        .and_then(|runs| runs.first().cloned())
                })
                .and_then(|r| {
                    r["id"]
                        .as_str()
                        .or_else(|| r["run"].as_str())
                        .map(str::to_owned)
                })
                .unwrap_or_else(|| panic!("{target}:{point}: no run in `status`: {status_text}"));
            let resumed = w
                .rekey(&[
                    "apply",
                    "--resume",
                    &run,
                    "--output",
                    "json",
                    "--verify-backoff-ms",
                    "50",
                ])
                .env("RUST_LOG", "info")
                .output()
                .await
                .unwrap();
            let summary = summary_of(&resumed, 0);
            assert_eq!(
                states(&summary),
                ["done", "done", "done"],
                "{target}:{point}: {summary}"
            );
            w.check_rotated().await;
        }
    }
}

/// keys.create takes effect but its answer is lost (a 500): the engine retries the mint, and
/// the key the lost answer created must not survive as an orphan.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_create_answer_leaves_no_orphan() {
    let w = World::start("0s").await;
    w.gcp.server().lose_response("^POST .*/keys$", 1).unwrap();
    w.azure.server().lose_response("addPassword$", 1).unwrap();
    let out = w
        .rekey(&[
            "apply",
            w.plan_arg(),
            "--output",
            "json",
            "--ignore-max-age",
            "--verify-backoff-ms",
            "50",
        ])
        .output()
        .await
        .unwrap();
    let summary = summary_of(&out, 0);
    assert_eq!(states(&summary), ["done", "done", "done"], "{summary}");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let rollbacks = stdout
        .lines()
        .filter(|l| l.contains("created by a mint whose answer was lost"))
        .count();
    assert_eq!(rollbacks, 2, "both orphans found and deleted:\n{stdout}");
    w.check_rotated().await;
}

/// Runs `apply` on the GCP and Azure targets only, 100× faster than real time
/// (`--verify-backoff-ms 10`: a budget's second takes 10 ms), after making each owner accept a
/// new credential only two (simulated) minutes after creating it.
async fn apply_with_two_minute_propagation(w: &World) -> (serde_json::Value, String, i32) {
    // One budget second in 50 ms: the one-minute budget is 3 s of real time, so a loaded
    // machine's pause between the mint and the first verification (which counts towards the
    // propagation, not the budget) cannot reach the two minutes (6 s) by itself.
    const SECOND_MS: u64 = 50;
    let clock = rekey::providers::budget::VerifyClock::with_second(
        std::time::Duration::from_millis(SECOND_MS),
    );
    let two_minutes = clock.real(std::time::Duration::from_secs(120));
    w.gcp.with_state(|s| s.propagation = two_minutes);
    w.azure.with_state(|s| s.propagation = two_minutes);
    let out = w
        .rekey(&[
            "apply",
            w.plan_arg(),
            "--output",
            "json",
            "--ignore-max-age",
            "--verify-backoff-ms",
            &SECOND_MS.to_string(),
            "--target",
            "gcp-deployer",
            "--target",
            "azure-ci-app",
        ])
        .output()
        .await
        .unwrap();
    let code = out.status.code().unwrap_or(-1);
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    (summary_of(&out, code), stdout, code)
}

/// GCP service-account keys and Azure client secrets take minutes to work everywhere: with
/// each provider's default budget (ten minutes) a credential usable only after two minutes is
/// verified and written, not deleted, and the progress says how long it may still wait.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_credential_usable_after_two_minutes_is_verified_not_deleted() {
    let w = World::start("1h").await;
    let (summary, stdout, code) = apply_with_two_minute_propagation(&w).await;
    assert_eq!(code, 0, "{summary}");
    assert_eq!(states(&summary), ["waiting", "waiting"], "{summary}");
    // The new credentials are the ones bound, and they work.
    let keys = w.gcp.with_state(|s| s.keys_of(&w.sa));
    assert_eq!(keys.len(), 2, "old (disabled) and new: {keys:?}");
    assert_ne!(w.var("AZURE_CLIENT_SECRET"), w.old_azure_secret.expose());
    assert_eq!(
        w.azure.with_state(|s| s.passwords_of(&w.app_object)).len(),
        2
    );
    // While it waited, the progress said so, with the budget.
    let waits: Vec<&str> = stdout
        .lines()
        .filter(|l| l.contains("\"status\":\"waiting\"") && l.contains("\"step\":\"verify\""))
        .collect();
    assert!(
        waits
            .iter()
            .any(|l| l.contains("gcp-deployer") && l.contains("up to 10m")),
        "{stdout}"
    );
    assert!(waits.iter().any(|l| l.contains("azure-ci-app")), "{stdout}");
}

/// The same propagation with the old one-minute budget (`policy.verify.timeout: 1m`) gives up:
/// the new credential is deleted and nothing else changes — what every GCP and Azure rotation
/// risked before the budgets were per provider.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_one_minute_budget_deletes_a_credential_that_needs_two() {
    let w = World::start("1h").await;
    let plan = std::fs::read_to_string(&w.plan_file).unwrap();
    let plan = plan
        .replace(
            "        encoding: {key_json: base64}\n",
            "        encoding: {key_json: base64}\n    policy: {verify: {timeout: 1m}}\n",
        )
        .replace(
            "        vars: {client_secret: AZURE_CLIENT_SECRET}\n",
            "        vars: {client_secret: AZURE_CLIENT_SECRET}\n    policy: {verify: {timeout: 1m}}\n",
        );
    std::fs::write(&w.plan_file, plan).unwrap();
    let (summary, _, code) = apply_with_two_minute_propagation(&w).await;
    assert_eq!(code, 1, "{summary}");
    assert_eq!(states(&summary), ["failed", "failed"], "{summary}");
    assert_eq!(
        w.gcp.with_state(|s| s.keys_of(&w.sa)).len(),
        1,
        "new key deleted"
    );
    assert_eq!(
        w.azure.with_state(|s| s.passwords_of(&w.app_object)).len(),
        1,
        "new secret deleted"
    );
    assert_eq!(w.var("AZURE_CLIENT_SECRET"), w.old_azure_secret.expose());
}
