//! A world for driving the real `rekey` binary end to end: the in-process CircleCI sandbox, an
//! AWS double (moto's server, or the in-process AWS sandbox), an IAM user `ci-deployer` whose
//! key is bound in two projects and one context, a state directory, and helpers that run the
//! binary as a user would (environment only, no secret on the command line) and check the
//! protocol's invariants from outside: what CircleCI stores, what the AWS double holds and
//! accepts, what `rekey status` says, and which requests each double saw.
//!
//! The tests' runtime (multi-threaded, owned by the [`World`]) serves the sandboxes while the
//! test thread blocks on the child process.

use super::moto::{self, Moto};
use aws_credential_types::Credentials;
use rekey::sandbox::aws::{Access, AwsSandbox, AwsState, KeySpec, KeyStatus};
use rekey::sandbox::{CircleCiState, ContextSpec, ProjectSpec, Sandbox};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// The IAM user every world rotates.
pub const USER: &str = "ci-deployer";
pub const ACCOUNT_ID: &str = "123456789012";
pub const PROJECTS: [&str; 2] = ["gh/acme/api", "gh/acme/web"];
pub const CONTEXT: &str = "aws-prod";
pub const ID_VAR: &str = "AWS_ACCESS_KEY_ID";
pub const SECRET_VAR: &str = "AWS_SECRET_ACCESS_KEY";
pub const TARGET: &str = "aws-ci-deployer";
/// Longest a single `rekey` invocation may take before the test kills it and fails.
const INVOCATION_TIMEOUT: Duration = Duration::from_secs(90);

/// The AWS test double behind `AWS_ENDPOINT_URL`.
pub enum AwsDouble {
    /// moto's server: real IAM/STS emulation; accepts Inactive keys. (Boxed: much larger.)
    Moto(Box<Moto>),
    /// rekey's own simulator: rejects Inactive keys, logs every request, injects faults.
    Sandbox(AwsSandbox),
}

/// An access key as the double lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Key {
    pub id: String,
    pub active: bool,
}

/// One invocation of the binary and what it left behind.
#[derive(Debug)]
pub struct Invocation {
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
    /// Raw bytes, for secret scans.
    pub stdout_bytes: Vec<u8>,
    pub stderr_bytes: Vec<u8>,
    pub took: Duration,
}

impl Invocation {
    /// Panics with both outputs unless the exit code is `code`.
    pub fn expect_code(&self, code: i32, what: &str) -> &Self {
        assert_eq!(
            self.code,
            Some(code),
            "{what}: exit code\n--- stdout\n{}\n--- stderr\n{}",
            self.stdout,
            self.stderr
        );
        self
    }

    /// The final summary of `apply --output json` (its last stdout line).
    pub fn summary(&self) -> serde_json::Value {
        let line = self
            .stdout
            .lines()
            .rev()
            .find(|l| l.starts_with("{\"summary\""))
            .unwrap_or_else(|| panic!("no summary line on stdout:\n{}", self.stdout));
        let v: serde_json::Value = serde_json::from_str(line)
            .unwrap_or_else(|e| panic!("summary is not JSON ({e}): {line}"));
        v["summary"].clone()
    }

    pub fn run_id(&self) -> String {
        self.summary()["run"]
            .as_str()
            .unwrap_or_else(|| panic!("summary without a run id:\n{}", self.stdout))
            .to_owned()
    }
}

/// What a test's plan says beyond the fixed target (YAML fragments are inserted as given).
#[derive(Debug, Clone)]
pub struct PlanSpec {
    pub grace: String,
    pub max_age: Option<String>,
    pub removable_keys: Vec<String>,
    /// Record what the world looks like now in `observed` (the stale-plan check).
    pub observed: bool,
    /// `policy.canary`, as a YAML flow mapping (`{project: gh/acme/api, branch: main}`).
    pub canary: Option<String>,
    /// `policy.verify.attempts`.
    pub verify_attempts: Option<u32>,
    /// `defaults.on_findings`, as a YAML flow mapping (`{pre: pause}`).
    pub on_findings: Option<String>,
    /// Top-level sections (`hunts:`, `allow_cidrs:`) written before `targets:`.
    pub sections: String,
}

impl Default for PlanSpec {
    fn default() -> Self {
        PlanSpec {
            grace: "0s".into(),
            max_age: None,
            removable_keys: Vec::new(),
            observed: true,
            canary: None,
            verify_attempts: None,
            on_findings: None,
            sections: String::new(),
        }
    }
}

/// Everything one test needs. Fields drop in order: the doubles stop before their runtime.
pub struct World {
    pub circleci: Sandbox,
    pub aws: AwsDouble,
    /// The key bound in CircleCI when the world was made (id, secret).
    pub old_key: (String, String),
    /// Other keys the user had from the start (ids).
    pub other_keys: Vec<String>,
    pub context_id: String,
    pub dir: tempfile::TempDir,
    pub stash_key: String,
    token: String,
    admin: (String, String),
    invocations: std::cell::Cell<usize>,
    pub rt: tokio::runtime::Runtime,
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap_or_else(|e| panic!("tokio runtime: {e}"))
}

impl World {
    /// moto's server with `ci-deployer` holding `keys` keys (made through IAM, so moto's
    /// request recording starts after them). The first key is the one CircleCI holds.
    pub fn moto(keys: usize) -> Option<World> {
        let rt = runtime();
        let moto = rt.block_on(Moto::start())?;
        let user = rt.block_on(moto.create_ci_user(USER, None, keys));
        let admin = rt.block_on(async {
            use aws_credential_types::provider::ProvideCredentials;
            let provider = moto
                .config()
                .credentials_provider()
                .unwrap_or_else(|| panic!("moto config without credentials"));
            let c = provider
                .provide_credentials()
                .await
                .unwrap_or_else(|e| panic!("moto admin credentials: {e}"));
            (
                c.access_key_id().to_owned(),
                c.secret_access_key().to_owned(),
            )
        });
        let mut keys: Vec<(String, String)> = user
            .keys
            .iter()
            .map(|(id, s)| (id.clone(), s.expose().to_owned()))
            .collect();
        assert!(!keys.is_empty(), "a world needs the key CircleCI holds");
        let old_key = keys.remove(0);
        let other_keys = keys.into_iter().map(|(id, _)| id).collect();
        rt.block_on(moto.start_recording());
        Some(World::finish(
            rt,
            AwsDouble::Moto(Box::new(moto)),
            admin,
            old_key,
            other_keys,
        ))
    }

    /// The AWS sandbox with `ci-deployer` holding `keys` keys made in 2022 (old enough for
    /// any max_age); the first is the one CircleCI holds.
    pub fn sandbox(keys: usize) -> World {
        let rt = runtime();
        let mut state = AwsState::new(ACCOUNT_ID)
            .user(USER)
            .with_access(Access::None);
        for _ in 0..keys {
            state = state.with_key(KeySpec::active());
        }
        let creds = state.credentials_of(USER);
        assert!(!creds.is_empty(), "a world needs the key CircleCI holds");
        let admin = state.admin_credentials();
        let admin = (
            admin.access_key_id.clone(),
            admin.secret_access_key.expose().to_owned(),
        );
        let old_key = (
            creds[0].access_key_id.clone(),
            creds[0].secret_access_key.expose().to_owned(),
        );
        let other_keys = creds[1..].iter().map(|c| c.access_key_id.clone()).collect();
        let aws = rt
            .block_on(AwsSandbox::start(state))
            .unwrap_or_else(|e| panic!("AWS sandbox: {e}"));
        World::finish(rt, AwsDouble::Sandbox(aws), admin, old_key, other_keys)
    }

    fn finish(
        rt: tokio::runtime::Runtime,
        aws: AwsDouble,
        admin: (String, String),
        old_key: (String, String),
        other_keys: Vec<String>,
    ) -> World {
        let token = format!(
            "CCIPAT_test_{}",
            rekey::engine::stash::StashKey::generate()
                .unwrap_or_else(|e| panic!("{e}"))
                .fingerprint()
        );
        let mut state = CircleCiState::new(token.clone());
        for slug in PROJECTS {
            state.add_project(
                ProjectSpec::new(slug)
                    .env(ID_VAR, old_key.0.clone())
                    .env(SECRET_VAR, old_key.1.clone())
                    .env("NODE_ENV", "production"),
            );
        }
        let context_id = state.add_context(
            ContextSpec::new("gh/acme", CONTEXT)
                .env(ID_VAR, old_key.0.clone())
                .env(SECRET_VAR, old_key.1.clone()),
        );
        let circleci = rt
            .block_on(Sandbox::start(state))
            .unwrap_or_else(|e| panic!("CircleCI sandbox: {e}"));
        let stash_key = rekey::engine::stash::StashKey::generate()
            .unwrap_or_else(|e| panic!("{e}"))
            .to_base64()
            .expose()
            .to_owned();
        World {
            circleci,
            aws,
            old_key,
            other_keys,
            context_id,
            dir: tempfile::tempdir().unwrap_or_else(|e| panic!("tempdir: {e}")),
            stash_key,
            token,
            admin,
            invocations: std::cell::Cell::new(0),
            rt,
        }
    }

    /// A CircleCI client of the sandbox, as rekey builds it (for calling the library directly).
    pub fn circleci_client(&self) -> rekey::circleci::CircleCiClient {
        rekey::circleci::CircleCiClient::new(
            &self.circleci.base_url(),
            rekey::secret::Secret::new(self.token.clone()),
        )
        .unwrap_or_else(|e| panic!("CircleCI client: {e}"))
    }

    /// The providers rekey would use, signed as its admin at the AWS double.
    pub fn providers(&self) -> rekey::engine::run::ProviderSet {
        let aws = match &self.aws {
            AwsDouble::Moto(m) => rekey::providers::aws::AwsIamProvider::new(m.config()),
            AwsDouble::Sandbox(s) => rekey::providers::aws::AwsIamProvider::new(&s.sdk_config()),
        };
        rekey::engine::run::ProviderSet::default().with(std::sync::Arc::new(aws))
    }

    pub fn sandbox_aws(&self) -> &AwsSandbox {
        match &self.aws {
            AwsDouble::Sandbox(s) => s,
            AwsDouble::Moto(_) => panic!("this test needs the AWS sandbox"),
        }
    }

    pub fn endpoint(&self) -> String {
        match &self.aws {
            AwsDouble::Moto(m) => m.url.clone(),
            AwsDouble::Sandbox(s) => s.endpoint_url(),
        }
    }

    pub fn state_dir(&self) -> PathBuf {
        self.dir.path().join("state")
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    // ---------------------------------------------------------------- the plan

    /// Writes the plan (one target: the user's key in both projects and the context) to
    /// `plan.yaml` and returns its path.
    pub fn write_plan(&self, spec: &PlanSpec) -> PathBuf {
        let path = self.path("plan.yaml");
        std::fs::write(&path, self.plan_yaml(spec)).unwrap_or_else(|e| panic!("plan: {e}"));
        path
    }

    pub fn plan_yaml(&self, spec: &PlanSpec) -> String {
        let vars = format!("{{access_key_id: {ID_VAR}, secret_access_key: {SECRET_VAR}}}");
        let mut y = String::from(
            "apiVersion: rekey/v1\nkind: RotationPlan\nmetadata: {name: apply-test}\n",
        );
        y.push_str(&format!("defaults:\n  grace: {}\n", spec.grace));
        if let Some(max_age) = &spec.max_age {
            y.push_str(&format!("  max_age: {max_age}\n"));
        }
        if let Some(on_findings) = &spec.on_findings {
            y.push_str(&format!("  on_findings: {on_findings}\n"));
        }
        y.push_str(&spec.sections);
        y.push_str(&format!(
            "targets:\n  - id: {TARGET}\n    provider: aws-iam\n    principal: {{user: {USER}, account_id: \"{ACCOUNT_ID}\"}}\n    bindings:\n"
        ));
        for slug in PROJECTS {
            y.push_str(&format!("      - project: {slug}\n        vars: {vars}\n"));
        }
        y.push_str(&format!(
            "      - context: {CONTEXT}\n        context_id: {}\n        vars: {vars}\n",
            self.context_id
        ));
        if spec.observed {
            y.push_str("    observed:\n");
            for slug in PROJECTS {
                let value = self.project_value(slug, ID_VAR).unwrap_or_default();
                y.push_str(&format!(
                    "      - {{project: {slug}, var: {ID_VAR}, masked: {}}}\n",
                    rekey::sandbox::circleci::mask(&value)
                ));
            }
            let updated = self
                .circleci
                .with_state(|s| {
                    s.context_by_name(CONTEXT)
                        .and_then(|c| c.vars.get(ID_VAR))
                        .map(|v| v.updated_at)
                })
                .unwrap_or_else(|| panic!("context variable missing"));
            y.push_str(&format!(
                "      - {{context: {CONTEXT}, var: {ID_VAR}, updated_at: {}}}\n",
                updated.to_rfc3339()
            ));
        }
        if !spec.removable_keys.is_empty()
            || spec.canary.is_some()
            || spec.verify_attempts.is_some()
        {
            y.push_str("    policy:\n");
        }
        if !spec.removable_keys.is_empty() {
            y.push_str(&format!(
                "      removable_keys: [{}]\n",
                spec.removable_keys.join(", ")
            ));
        }
        if let Some(canary) = &spec.canary {
            y.push_str(&format!("      canary: {canary}\n"));
        }
        if let Some(attempts) = spec.verify_attempts {
            y.push_str(&format!("      verify: {{attempts: {attempts}}}\n"));
        }
        y
    }

    // ---------------------------------------------------------------- running rekey

    /// The binary with the environment a CI job would give it: endpoints, rekey's own
    /// credentials (never on the command line), the stash key, no keyring, and a HOME without
    /// an AWS profile.
    pub fn command(&self) -> Command {
        let (id, secret) = &self.admin;
        let mut c = Command::new(env!("CARGO_BIN_EXE_rekey"));
        c.env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("HOME", self.dir.path())
            .env("CIRCLECI_HOST", self.circleci.base_url())
            .env("CIRCLECI_TOKEN", &self.token)
            .env("AWS_ENDPOINT_URL", self.endpoint())
            .env("AWS_ACCESS_KEY_ID", id)
            .env("AWS_SECRET_ACCESS_KEY", secret)
            .env("AWS_REGION", "us-east-1")
            .env("AWS_EC2_METADATA_DISABLED", "true")
            .env("REKEY_STASH_KEY", &self.stash_key)
            .env("REKEY_KEYRING_DISABLED", "1")
            .current_dir(self.dir.path());
        c
    }

    /// Runs `rekey ARGS` to completion (killed after a generous timeout), with stdout and
    /// stderr captured through files so that no pipe can fill up.
    pub fn run(&self, args: &[&str], extra_env: &[(&str, &str)]) -> Invocation {
        let n = self.invocations.get() + 1;
        self.invocations.set(n);
        let out_path = self.path(&format!("invocation-{n}.stdout"));
        let err_path = self.path(&format!("invocation-{n}.stderr"));
        let out = std::fs::File::create(&out_path).unwrap_or_else(|e| panic!("{e}"));
        let err = std::fs::File::create(&err_path).unwrap_or_else(|e| panic!("{e}"));
        let mut command = self.command();
        command
            .args(args)
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err);
        for (k, v) in extra_env {
            command.env(k, v);
        }
        let began = Instant::now();
        let mut child = command
            .spawn()
            .unwrap_or_else(|e| panic!("start rekey: {e}"));
        let status = loop {
            match child.try_wait() {
                Ok(Some(status)) => break status,
                Ok(None) if began.elapsed() > INVOCATION_TIMEOUT => {
                    // Our own child, by its handle.
                    let _ = child.kill();
                    let _ = child.wait();
                    panic!(
                        "rekey {args:?} did not finish within {INVOCATION_TIMEOUT:?}\n--- stderr\n{}",
                        std::fs::read_to_string(&err_path).unwrap_or_default()
                    );
                }
                Ok(None) => std::thread::sleep(Duration::from_millis(10)),
                Err(e) => panic!("wait for rekey: {e}"),
            }
        };
        let took = began.elapsed();
        let stdout_bytes = std::fs::read(&out_path).unwrap_or_default();
        let stderr_bytes = std::fs::read(&err_path).unwrap_or_default();
        // Only the scans need them: keep the temporary directory for state files alone.
        let _ = std::fs::remove_file(&out_path);
        let _ = std::fs::remove_file(&err_path);
        Invocation {
            code: status.code(),
            stdout: String::from_utf8_lossy(&stdout_bytes).into_owned(),
            stderr: String::from_utf8_lossy(&stderr_bytes).into_owned(),
            stdout_bytes,
            stderr_bytes,
            took,
        }
    }

    /// `rekey apply PLAN` with the test's state directory and short waits, plus `extra`.
    pub fn apply(&self, plan: &Path, extra: &[&str]) -> Invocation {
        let plan = plan.display().to_string();
        let state = self.state_dir().display().to_string();
        let mut args = vec![
            "apply",
            plan.as_str(),
            "--state-dir",
            state.as_str(),
            "--verify-backoff-ms",
            "50",
            "--poll-interval-ms",
            "50",
        ];
        args.extend_from_slice(extra);
        self.run(&args, &[])
    }

    /// `rekey apply --resume RUN` with the test's state directory and short waits.
    pub fn resume(&self, run: &str, extra: &[&str]) -> Invocation {
        let state = self.state_dir().display().to_string();
        let mut args = vec![
            "apply",
            "--resume",
            run,
            "--state-dir",
            state.as_str(),
            "--verify-backoff-ms",
            "50",
            "--poll-interval-ms",
            "50",
        ];
        args.extend_from_slice(extra);
        self.run(&args, &[])
    }

    /// `rekey status --output json` (of the newest run, or of `run`).
    pub fn status(&self, run: Option<&str>) -> serde_json::Value {
        let state = self.state_dir().display().to_string();
        let mut args = vec!["status", "--state-dir", state.as_str(), "--output", "json"];
        if let Some(run) = run {
            args.push(run);
        }
        let inv = self.run(&args, &[]);
        inv.expect_code(0, "rekey status");
        serde_json::from_str(&inv.stdout)
            .unwrap_or_else(|e| panic!("status is not JSON ({e}):\n{}", inv.stdout))
    }

    /// The status of `run` and the state of the test's target in it.
    pub fn run_and_target_state(&self, run: &str) -> (String, String) {
        let v = self.status(Some(run));
        let status = v["runs"]
            .as_array()
            .and_then(|runs| runs.iter().find(|r| r["id"] == run))
            .map(|r| r["status"].as_str().unwrap_or_default().to_owned())
            .unwrap_or_else(|| panic!("run {run} not in status: {v}"));
        let target = v["targets"]
            .as_array()
            .and_then(|ts| ts.iter().find(|t| t["target"] == TARGET))
            .map(|t| t["state"].as_str().unwrap_or_default().to_owned())
            .unwrap_or_else(|| panic!("target {TARGET} not in status: {v}"));
        (status, target)
    }

    // ---------------------------------------------------------------- CircleCI

    pub fn project_value(&self, slug: &str, var: &str) -> Option<String> {
        self.circleci.with_state(|s| {
            s.project_by_slug(slug)
                .and_then(|p| p.env_vars.get(var))
                .map(|v| v.value.clone())
        })
    }

    pub fn context_value(&self, var: &str) -> Option<String> {
        self.circleci.with_state(|s| {
            s.context_by_name(CONTEXT)
                .and_then(|c| c.vars.get(var))
                .map(|v| v.value.clone())
        })
    }

    /// (place, key id, secret) that every binding holds now.
    pub fn bound(&self) -> Vec<(String, String, String)> {
        let mut out = Vec::new();
        for slug in PROJECTS {
            out.push((
                format!("project {slug}"),
                self.project_value(slug, ID_VAR).unwrap_or_default(),
                self.project_value(slug, SECRET_VAR).unwrap_or_default(),
            ));
        }
        out.push((
            format!("context {CONTEXT}"),
            self.context_value(ID_VAR).unwrap_or_default(),
            self.context_value(SECRET_VAR).unwrap_or_default(),
        ));
        out
    }

    /// `METHOD path` of every mutating request the CircleCI sandbox answered.
    pub fn circleci_mutations(&self) -> Vec<String> {
        self.circleci
            .mutating_requests()
            .iter()
            .map(|r| format!("{} {} -> {}", r.method, r.path, r.status))
            .collect()
    }

    // ---------------------------------------------------------------- AWS

    /// Starts a fresh request log at both doubles.
    pub fn clear_request_logs(&self) {
        self.circleci.clear_requests();
        match &self.aws {
            AwsDouble::Moto(m) => self.rt.block_on(m.start_recording()),
            AwsDouble::Sandbox(s) => s.clear_requests(),
        }
    }

    /// Actions of every request the AWS double saw since the last clear (moto: refused ones
    /// included; the sandbox: all, with their outcome).
    pub fn aws_actions(&self) -> Vec<String> {
        match &self.aws {
            AwsDouble::Moto(m) => m.recorded_actions(),
            AwsDouble::Sandbox(s) => s
                .requests()
                .iter()
                .map(|r| r.action.clone().unwrap_or_else(|| "?".into()))
                .collect(),
        }
    }

    /// Actions that could have changed something (anything but Get/List/Describe/Simulate).
    pub fn aws_mutations(&self) -> Vec<String> {
        self.aws_actions()
            .into_iter()
            .filter(|a| {
                !["Get", "List", "Describe", "Simulate"]
                    .iter()
                    .any(|p| a.starts_with(p))
            })
            .collect()
    }

    /// CreateAccessKey calls that created a key (the sandbox knows the outcome; moto's log
    /// does not, and moto gets no faults, so every recorded call counts).
    pub fn keys_created(&self) -> usize {
        match &self.aws {
            AwsDouble::Moto(m) => m
                .recorded_actions()
                .iter()
                .filter(|a| *a == "CreateAccessKey")
                .count(),
            AwsDouble::Sandbox(s) => s
                .requests()
                .iter()
                .filter(|r| r.action.as_deref() == Some("CreateAccessKey") && r.succeeded())
                .count(),
        }
    }

    /// The user's keys as the double holds them, in creation order.
    pub fn keys(&self) -> Vec<Key> {
        match &self.aws {
            AwsDouble::Sandbox(s) => s
                .keys_of(USER)
                .into_iter()
                .map(|k| Key {
                    id: k.access_key_id,
                    active: k.status == KeyStatus::Active,
                })
                .collect(),
            AwsDouble::Moto(m) => self.rt.block_on(async {
                let out = m
                    .iam()
                    .list_access_keys()
                    .user_name(USER)
                    .send()
                    .await
                    .unwrap_or_else(|e| panic!("ListAccessKeys: {}", moto::describe(&e)));
                let mut keys: Vec<(Option<aws_sdk_iam::primitives::DateTime>, Key)> = out
                    .access_key_metadata()
                    .iter()
                    .map(|k| {
                        (
                            k.create_date().cloned(),
                            Key {
                                id: k.access_key_id().unwrap_or_default().to_owned(),
                                active: k.status() == Some(&aws_sdk_iam::types::StatusType::Active),
                            },
                        )
                    })
                    .collect();
                keys.sort_by_key(|(at, _)| at.map(|t| (t.secs(), t.subsec_nanos())));
                keys.into_iter().map(|(_, k)| k).collect()
            }),
        }
    }

    /// STS GetCallerIdentity signed with `id`/`secret` at the double: the ARN, or why not.
    pub fn caller_arn(&self, id: &str, secret: &str) -> Result<String, String> {
        let url = self.endpoint();
        self.rt.block_on(async {
            let config = aws_sdk_sts::Config::builder()
                .behavior_version(aws_config::BehaviorVersion::latest())
                .region(aws_sdk_sts::config::Region::new("us-east-1"))
                .endpoint_url(url)
                .credentials_provider(Credentials::new(id, secret, None, None, "apply-test"))
                .retry_config(aws_sdk_sts::config::retry::RetryConfig::disabled())
                .build();
            let sts = aws_sdk_sts::Client::from_conf(config);
            match sts.get_caller_identity().send().await {
                Ok(out) => Ok(out.arn().unwrap_or_default().to_owned()),
                Err(e) => Err(match e.raw_response() {
                    Some(raw) => format!(
                        "HTTP {}: {}",
                        raw.status().as_u16(),
                        raw.body()
                            .bytes()
                            .map(|b| String::from_utf8_lossy(b).into_owned())
                            .unwrap_or_default()
                    ),
                    None => format!("{}", aws_sdk_sts::error::DisplayErrorContext(&e)),
                }),
            }
        })
    }

    /// Whether `id`/`secret` authenticates as the world's user.
    pub fn works(&self, id: &str, secret: &str) -> bool {
        self.caller_arn(id, secret)
            .is_ok_and(|arn| arn == format!("arn:aws:iam::{ACCOUNT_ID}:user/{USER}"))
    }

    // ---------------------------------------------------------------- invariants

    /// The end state of a complete rotation of the world's key, checked from outside:
    /// 1/2. every binding holds one and the same new key, and it authenticates as the user;
    ///      the user has exactly that key (Active), no orphan, the old key is gone
    ///      (and the removable keys listed in `also_gone`);
    /// 3. the old key is refused by STS;
    /// 4. `rekey status` says the run is complete and the target done;
    /// 5. exactly `mints` keys were created.
    ///
    /// Returns the new key (id, secret).
    pub fn assert_rotated(
        &self,
        run: &str,
        mints: usize,
        also_gone: &[String],
    ) -> (String, String) {
        let bound = self.bound();
        let (_, new_id, new_secret) = bound[0].clone();
        for (place, id, secret) in &bound {
            assert_eq!(
                id, &new_id,
                "{place} holds another key id than {}",
                bound[0].0
            );
            assert_eq!(secret, &new_secret, "{place} holds another secret");
        }
        assert_ne!(
            new_id, self.old_key.0,
            "the bindings still hold the old key"
        );
        assert!(
            self.works(&new_id, &new_secret),
            "the bound key does not authenticate: {:?}",
            self.caller_arn(&new_id, &new_secret)
        );
        let keys = self.keys();
        assert_eq!(
            keys,
            vec![Key {
                id: new_id.clone(),
                active: true
            }],
            "the user must end with exactly the bound key, active"
        );
        for gone in also_gone {
            assert!(!keys.iter().any(|k| &k.id == gone), "{gone} still exists");
        }
        let old = self.caller_arn(&self.old_key.0, &self.old_key.1);
        assert!(old.is_err(), "the old key still authenticates: {old:?}");
        let (status, target) = self.run_and_target_state(run);
        assert_eq!(status, "complete", "run status");
        assert_eq!(target, "done", "target state");
        assert_eq!(self.keys_created(), mints, "keys created at the AWS double");
        (new_id, new_secret)
    }

    /// Nothing changed: CircleCI still holds the old key everywhere, the user's keys are as
    /// at the start, and neither double saw a mutating request since the last clear.
    pub fn assert_untouched(&self, what: &str) {
        for (place, id, secret) in self.bound() {
            assert_eq!(id, self.old_key.0, "{what}: {place} changed");
            assert_eq!(secret, self.old_key.1, "{what}: {place} changed");
        }
        let mut expected = vec![self.old_key.0.clone()];
        expected.extend(self.other_keys.iter().cloned());
        let mut ids: Vec<String> = self.keys().into_iter().map(|k| k.id).collect();
        ids.sort();
        expected.sort();
        assert_eq!(ids, expected, "{what}: the user's keys changed");
        assert_eq!(
            self.circleci_mutations(),
            Vec::<String>::new(),
            "{what}: mutating requests at CircleCI"
        );
        assert_eq!(
            self.aws_mutations(),
            Vec::<String>::new(),
            "{what}: mutating requests at AWS"
        );
    }

    /// Every file of the state directory, (path, bytes).
    pub fn state_files(&self) -> Vec<(PathBuf, Vec<u8>)> {
        let mut out = Vec::new();
        let mut stack = vec![self.state_dir()];
        while let Some(dir) = stack.pop() {
            let Ok(entries) = std::fs::read_dir(&dir) else {
                continue;
            };
            for entry in entries.flatten() {
                let path = entry.path();
                if path.is_dir() {
                    stack.push(path);
                } else if let Ok(bytes) = std::fs::read(&path) {
                    out.push((path, bytes));
                }
            }
        }
        out
    }
}

/// Where `needle` occurs in `haystack` (byte offset), if it does.
pub fn find_bytes(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    if needle.is_empty() || needle.len() > haystack.len() {
        return None;
    }
    haystack.windows(needle.len()).position(|w| w == needle)
}
