//! Crash tests: the rekey binary is SIGKILLed (a real `kill(getpid(), SIGKILL)`, through the
//! `REKEY_CRASH_AT` hook of `src/engine/run.rs`) at every journal step boundary of an AWS IAM
//! target and at the in-step points where a side effect has happened but is not journaled yet;
//! then `rekey apply --resume RUN_ID` runs, and the five crash invariants are checked against
//! the simulators' state and request logs:
//!
//! 1. every binding (two projects, one context) holds a key that authenticates (STS
//!    GetCallerIdentity signed with the stored values) as `ci-deployer`;
//! 2. the user ends with exactly one key, Active, the one in the bindings: no orphan;
//! 3. the old key is gone and STS rejects it;
//! 4. the run is complete in the journal, the target `done`, the stash empty;
//! 5. nothing was minted twice (the AWS account's issued secrets and the successful
//!    CreateAccessKey calls, across both invocations), except where a crash between
//!    CreateAccessKey and the stash write left an orphan: it was deleted, one new key survives;
//!
//! and the ordering invariant: the old key is deactivated and deleted only after every CircleCI
//! write (none comes later), after the new key was verified.
//!
//! Everything runs in process except rekey: an in-process CircleCI sandbox and AWS IAM/STS
//! simulator on 127.0.0.1, served by a Tokio runtime the test owns while the binary runs.
//! The boundaries are not hard-coded: they come from the journal of a clean run, so a step the
//! engine journals one day is crash-tested without touching this file.

use rekey::engine::journal::{Journal, Phase, RunId, RunStatus};
use rekey::engine::stash::{Stash, StashKey};
use rekey::sandbox::aws::{AwsCredentials, AwsSandbox, AwsState, KeySpec, KeyStatus, Propagation};
use rekey::sandbox::{CircleCiState, ContextSpec, ProjectSpec, Sandbox};
use rekey::secret::Secret;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

const ACCOUNT: &str = "123456789012";
const USER: &str = "ci-deployer";
const TARGET: &str = "aws-ci-deployer";
const TOKEN: &str = "crash-test-circle-token";
const PROJECTS: [&str; 2] = ["gh/acme/api", "gh/acme/web"];
const CONTEXT: &str = "aws-prod";
const ID_VAR: &str = "AWS_ACCESS_KEY_ID";
const SECRET_VAR: &str = "AWS_SECRET_ACCESS_KEY";

/// What the user holds before the rotation.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Setup {
    /// One key, the one CircleCI holds.
    OneKey,
    /// The key in use plus a stale Inactive one that the plan marks removable: the capacity
    /// step must delete it before the mint (AWS's two-key quota).
    Full,
    /// One key, and the plan has a canary pipeline (step 8) in project gh/acme/api.
    Canary,
    /// One key, and a new key never authenticates (IAM keeps refusing it): verification fails
    /// after two attempts and the new key is deleted; nothing else changes.
    NeverVerifies,
}

/// One crash case: the crash points of successive invocations (each invocation after the first
/// is a resume), then a final resume that must complete.
struct Case {
    name: String,
    setup: Setup,
    /// `REKEY_CRASH_AT` values (without the target prefix), one per crashing invocation.
    crashes: Vec<String>,
    /// How many keys rekey creates in all (2 when an orphan is created, then deleted).
    minted: usize,
    /// The invocation after the first crash is `rekey apply PLAN` (a scheduled job re-running
    /// the plan) instead of `--resume RUN_ID`.
    rerun_plan: bool,
    /// CreateAccessKey calls that took effect but whose answer was lost (not successful in the
    /// request log).
    lost_creates: usize,
}

impl Case {
    fn new(setup: Setup, crashes: &[&str]) -> Case {
        Case {
            name: crashes.join(" → "),
            setup,
            crashes: crashes.iter().map(|c| c.to_string()).collect(),
            minted: 1,
            rerun_plan: false,
            lost_creates: 0,
        }
    }

    fn minted(mut self, n: usize) -> Case {
        self.minted = n;
        self
    }
}

/// Both simulators, the seeded credentials, a state directory and a plan.
struct World {
    circle: Sandbox,
    aws: AwsSandbox,
    /// The key CircleCI holds before the rotation.
    old: AwsCredentials,
    /// The removable stale key of [`Setup::Full`].
    removable: Option<String>,
    /// Secrets issued before rekey ran (the admin's, the user's).
    issued_before: usize,
    setup: Setup,
    dir: tempfile::TempDir,
    stash_key: String,
    /// Brackets of the moments each simulator started (their request logs count from there).
    circle_started: (Instant, Instant),
    aws_started: (Instant, Instant),
    rt: tokio::runtime::Runtime,
}

impl World {
    fn new(setup: Setup) -> World {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("tokio runtime");
        let mut state = AwsState::new(ACCOUNT)
            .user(USER)
            .with_key(KeySpec::active());
        if setup == Setup::Full {
            state = state.with_key(KeySpec::inactive());
        }
        if setup == Setup::NeverVerifies {
            state = state.with_propagation(Propagation::Rejections(u32::MAX));
        }
        let keys = state.credentials_of(USER);
        let old = keys[0].clone();
        let removable = keys.get(1).map(|k| k.access_key_id.clone());
        let issued_before = state.issued_secrets().len();

        let mut circle_state = CircleCiState::new(TOKEN);
        for slug in PROJECTS {
            circle_state = circle_state.project(
                ProjectSpec::new(slug)
                    .env(ID_VAR, old.access_key_id.clone())
                    .env(SECRET_VAR, old.secret_access_key.expose())
                    .env("UNRELATED", "left-alone-1234"),
            );
        }
        circle_state = circle_state.context(
            ContextSpec::new("gh/acme", CONTEXT)
                .env(ID_VAR, old.access_key_id.clone())
                .env(SECRET_VAR, old.secret_access_key.expose()),
        );

        let (circle, circle_started, aws, aws_started) = rt.block_on(async {
            let a = Instant::now();
            let circle = Sandbox::start(circle_state)
                .await
                .expect("circleci sandbox");
            let b = Instant::now();
            let c = Instant::now();
            let aws = AwsSandbox::start(state).await.expect("aws sandbox");
            let d = Instant::now();
            (circle, (a, b), aws, (c, d))
        });

        let mut key = [0u8; 32];
        getrandom::fill(&mut key).expect("random stash key");
        use base64::Engine as _;
        let stash_key = base64::engine::general_purpose::STANDARD.encode(key);

        let world = World {
            circle,
            aws,
            old,
            removable,
            issued_before,
            setup,
            dir: tempfile::tempdir().expect("tempdir"),
            stash_key,
            circle_started,
            aws_started,
            rt,
        };
        std::fs::write(world.plan_path(), world.plan()).expect("write plan");
        world
    }

    fn plan_path(&self) -> PathBuf {
        self.dir.path().join("plan.yaml")
    }

    fn state_dir(&self) -> PathBuf {
        self.dir.path().join("state")
    }

    fn context_id(&self) -> String {
        self.circle
            .with_state(|s| s.context_by_name(CONTEXT).map(|c| c.id.clone()))
            .expect("context")
    }

    fn plan(&self) -> String {
        let last4 = &self.old.access_key_id[self.old.access_key_id.len() - 4..];
        let updated = self
            .circle
            .with_state(|s| {
                s.context_by_name(CONTEXT)
                    .and_then(|c| c.vars.get(ID_VAR))
                    .map(|v| v.updated_at)
            })
            .expect("context var")
            .to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
        let vars = format!("{{access_key_id: {ID_VAR}, secret_access_key: {SECRET_VAR}}}");
        let mut policy = String::new();
        if let Some(id) = &self.removable {
            policy.push_str(&format!("\n      removable_keys: [{id}]"));
        }
        match self.setup {
            Setup::Canary => policy.push_str(&format!(
                "\n      canary: {{project: {}, branch: main, timeout: 1m}}",
                PROJECTS[0]
            )),
            Setup::NeverVerifies => policy.push_str("\n      verify: {attempts: 2}"),
            Setup::OneKey | Setup::Full => {}
        }
        format!(
            "apiVersion: rekey/v1
kind: RotationPlan
metadata:
  name: crash-test
incident:
  since: 2022-12-21T00:00:00Z
defaults:
  grace: 0s
targets:
  - id: {TARGET}
    provider: aws-iam
    principal: {{user: {USER}, account_id: \"{ACCOUNT}\"}}
    bindings:
      - project: {p0}
        vars: {vars}
      - project: {p1}
        vars: {vars}
      - context: {CONTEXT}
        context_id: {cid}
        vars: {vars}
    observed:
      - {{project: {p0}, var: {ID_VAR}, masked: xxxx{last4}}}
      - {{project: {p1}, var: {ID_VAR}, masked: xxxx{last4}}}
      - {{context: {CONTEXT}, var: {ID_VAR}, updated_at: {updated}}}
    policy:
      grace: 0s{policy}
",
            p0 = PROJECTS[0],
            p1 = PROJECTS[1],
            cid = self.context_id(),
        )
    }

    /// Runs the rekey binary; the simulators keep serving on the runtime's workers meanwhile.
    fn rekey(&self, args: &[&str], crash_at: Option<&str>) -> Output {
        let admin = self.aws.admin_credentials();
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_rekey"));
        cmd.args(args)
            .env_clear()
            .env("CIRCLECI_HOST", self.circle.base_url())
            .env("CIRCLECI_TOKEN", TOKEN)
            .env("AWS_ENDPOINT_URL", self.aws.endpoint_url())
            .env("AWS_ACCESS_KEY_ID", &admin.access_key_id)
            .env("AWS_SECRET_ACCESS_KEY", admin.secret_access_key.expose())
            .env("AWS_REGION", "us-east-1")
            .env("AWS_EC2_METADATA_DISABLED", "true")
            .env("REKEY_STASH_KEY", &self.stash_key)
            .env("REKEY_KEYRING_DISABLED", "1");
        if let Some(point) = crash_at {
            cmd.env("REKEY_CRASH_AT", format!("{TARGET}:{point}"));
        }
        cmd.output().expect("run rekey")
    }

    fn apply(&self, crash_at: Option<&str>) -> Output {
        let plan = self.plan_path();
        let state = self.state_dir();
        self.rekey(
            &[
                "apply",
                path(&plan),
                "--state-dir",
                path(&state),
                "--verify-backoff-ms",
                "20",
                "--poll-interval-ms",
                "10",
            ],
            crash_at,
        )
    }

    fn resume(&self, run: &str, crash_at: Option<&str>) -> Output {
        let state = self.state_dir();
        self.rekey(
            &[
                "apply",
                "--resume",
                run,
                "--state-dir",
                path(&state),
                "--verify-backoff-ms",
                "20",
                "--poll-interval-ms",
                "10",
            ],
            crash_at,
        )
    }

    /// The run id, as `rekey status --output json` reports the newest run.
    fn run_id(&self) -> String {
        let state = self.state_dir();
        let out = self.rekey(
            &["--output", "json", "status", "--state-dir", path(&state)],
            None,
        );
        assert!(out.status.success(), "rekey status failed: {}", text(&out));
        let doc: serde_json::Value = serde_json::from_slice(&out.stdout).expect("status json");
        doc["selected"]
            .as_str()
            .unwrap_or_else(|| panic!("no run in status: {doc}"))
            .to_string()
    }

    /// `(step, phase)` of every journal event of the target in `run`, in order.
    fn journal_steps(&self, run: &str) -> Vec<(String, Phase)> {
        let journal = Journal::open(&self.state_dir()).expect("journal");
        journal
            .events(&RunId::from(run.to_string()), Some(TARGET))
            .expect("events")
            .into_iter()
            .map(|e| (e.step, e.phase))
            .collect()
    }

    /// An STS GetCallerIdentity signed with `id`/`secret`: the caller's ARN, or the error code.
    fn whoami(&self, id: &str, secret: &str) -> Result<String, String> {
        let creds = AwsCredentials {
            access_key_id: id.to_string(),
            secret_access_key: Secret::new(secret),
        };
        let sts = aws_sdk_sts::Client::new(&self.aws.sdk_config_for(&creds));
        self.rt.block_on(async {
            use aws_sdk_sts::error::ProvideErrorMetadata;
            match sts.get_caller_identity().send().await {
                Ok(out) => Ok(out.arn().unwrap_or_default().to_string()),
                Err(e) => Err(e.code().unwrap_or("no error code").to_string()),
            }
        })
    }

    /// The (key id, secret) each binding holds now, read from the CircleCI sandbox's state.
    fn bound_values(&self) -> Vec<(String, String, String)> {
        self.circle.with_state(|s| {
            let mut out = Vec::new();
            for slug in PROJECTS {
                let p = s.project_by_slug(slug).expect("project");
                out.push((
                    format!("project {slug}"),
                    p.env_vars[ID_VAR].value.clone(),
                    p.env_vars[SECRET_VAR].value.clone(),
                ));
            }
            let c = s.context_by_name(CONTEXT).expect("context");
            out.push((
                format!("context {CONTEXT}"),
                c.vars[ID_VAR].value.clone(),
                c.vars[SECRET_VAR].value.clone(),
            ));
            out
        })
    }

    /// After a rotation whose new key never verified: it was deleted, everything else is as it
    /// was (the old key Active and bound everywhere, CircleCI never written), the target failed,
    /// the stash is empty.
    fn check_rolled_back(&self, case: &Case, run: &str) {
        let name = &case.name;
        let keys = self.aws.keys_of(USER);
        assert_eq!(
            keys.iter()
                .map(|k| (k.access_key_id.as_str(), k.status))
                .collect::<Vec<_>>(),
            vec![(self.old.access_key_id.as_str(), KeyStatus::Active)],
            "[{name}] the user should hold only the old key, Active"
        );
        let arn = format!("arn:aws:iam::{ACCOUNT}:user/{USER}");
        for (place, id, secret) in self.bound_values() {
            assert_eq!(id, self.old.access_key_id, "[{name}] {place} was changed");
            assert_eq!(
                self.whoami(&id, &secret),
                Ok(arn.clone()),
                "[{name}] {place}"
            );
        }
        assert!(
            self.circle.mutating_requests().is_empty(),
            "[{name}] CircleCI was written"
        );
        let requests = self.aws.requests();
        assert!(
            !requests.iter().any(|r| r.is_mutating()
                && r.param("AccessKeyId") == Some(self.old.access_key_id.as_str())),
            "[{name}] the old key was touched"
        );
        let issued = self.aws.with_state(|s| s.issued_secrets().len()) - self.issued_before;
        assert_eq!(issued, case.minted, "[{name}] keys created by rekey");
        let run_id = RunId::from(run.to_string());
        let journal = Journal::open(&self.state_dir()).expect("journal");
        let states = journal.target_states(&run_id).expect("target states");
        assert_eq!(
            states
                .iter()
                .find(|s| s.target == TARGET)
                .map(|s| s.state.as_str()),
            Some("failed"),
            "[{name}] target state"
        );
        let key = StashKey::from_base64(&self.stash_key, "REKEY_STASH_KEY").expect("stash key");
        let stash = Stash::open(&self.state_dir(), key).expect("stash");
        assert!(
            stash.entries(&run_id).expect("stash entries").is_empty(),
            "[{name}] the stash still holds the deleted key's secret"
        );
    }

    /// The five invariants and the ordering invariant, after the last invocation.
    fn check_invariants(&self, case: &Case, run: &str) {
        let name = &case.name;
        let arn = format!("arn:aws:iam::{ACCOUNT}:user/{USER}");

        // 2. exactly one key, Active, the one every binding holds.
        let keys = self.aws.keys_of(USER);
        assert_eq!(
            keys.len(),
            1,
            "[{name}] {USER} should end with exactly one key, has {:?}",
            keys.iter()
                .map(|k| (&k.access_key_id, k.status))
                .collect::<Vec<_>>()
        );
        let new = &keys[0];
        assert_eq!(
            new.status,
            KeyStatus::Active,
            "[{name}] the new key is not Active"
        );
        assert_ne!(
            new.access_key_id, self.old.access_key_id,
            "[{name}] not rotated"
        );

        // 1. every binding holds the new key, and it authenticates as ci-deployer.
        for (place, id, secret) in self.bound_values() {
            assert_eq!(
                id, new.access_key_id,
                "[{name}] {place} holds {id}, not the user's only key"
            );
            assert_eq!(
                self.whoami(&id, &secret),
                Ok(arn.clone()),
                "[{name}] {place}'s key does not authenticate as {USER}"
            );
        }
        // Nothing else of the projects was touched.
        self.circle.with_state(|s| {
            for slug in PROJECTS {
                let p = s.project_by_slug(slug).expect("project");
                assert_eq!(p.env_vars["UNRELATED"].value, "left-alone-1234", "[{name}]");
            }
        });

        // 3. the old key is gone, and STS refuses it.
        assert!(
            self.aws
                .with_state(|s| s.key(&self.old.access_key_id))
                .is_none(),
            "[{name}] the old key still exists"
        );
        assert_eq!(
            self.whoami(&self.old.access_key_id, self.old.secret_access_key.expose()),
            Err("InvalidClientTokenId".to_string()),
            "[{name}] STS does not reject the old key"
        );

        // 4. the run is complete, the target done, the stash empty.
        let run_id = RunId::from(run.to_string());
        let journal = Journal::open(&self.state_dir()).expect("journal");
        let record = journal.run(&run_id).expect("run").expect("run exists");
        assert_eq!(record.status, RunStatus::Complete, "[{name}] run status");
        let states = journal.target_states(&run_id).expect("target states");
        let state = states.iter().find(|s| s.target == TARGET);
        assert_eq!(
            state.map(|s| s.state.as_str()),
            Some("done"),
            "[{name}] target state"
        );
        let steps = self.journal_steps(run);
        assert_eq!(
            steps.last().map(|(s, p)| (s.as_str(), *p)),
            Some(("done", Phase::Done)),
            "[{name}] the journal does not end with done"
        );
        let key = StashKey::from_base64(&self.stash_key, "REKEY_STASH_KEY").expect("stash key");
        let stash = Stash::open(&self.state_dir(), key).expect("stash");
        assert!(
            stash.entries(&run_id).expect("stash entries").is_empty(),
            "[{name}] the stash still holds the minted value"
        );
        drop(journal);

        // 5. nothing minted twice; an orphan was deleted.
        let requests = self.aws.requests();
        let issued = self.aws.with_state(|s| s.issued_secrets().len()) - self.issued_before;
        let creates = requests
            .iter()
            .filter(|r| r.action.as_deref() == Some("CreateAccessKey") && r.succeeded())
            .count();
        assert_eq!(issued, case.minted, "[{name}] keys created by rekey");
        assert_eq!(
            creates,
            case.minted - case.lost_creates,
            "[{name}] successful CreateAccessKey calls"
        );
        let deleted_others: Vec<&str> = requests
            .iter()
            .filter(|r| r.action.as_deref() == Some("DeleteAccessKey") && r.succeeded())
            .filter_map(|r| r.param("AccessKeyId"))
            .filter(|id| *id != self.old.access_key_id && Some(*id) != self.removable.as_deref())
            .collect();
        assert_eq!(
            deleted_others.len(),
            case.minted - 1,
            "[{name}] orphans deleted: {deleted_others:?}"
        );
        assert!(
            !deleted_others.contains(&new.access_key_id.as_str()),
            "[{name}] the surviving key was deleted once"
        );
        if let Some(removable) = &self.removable {
            assert!(
                self.aws.with_state(|s| s.key(removable)).is_none(),
                "[{name}] the removable key survived"
            );
        }

        // Ordering: the old key is touched (UpdateAccessKey, DeleteAccessKey) only after every
        // CircleCI write, and after the new key authenticated once. The two logs count from
        // their own simulator's start; the starts are bracketed, so compare conservatively.
        let old_touched: Vec<_> = requests
            .iter()
            .filter(|r| {
                matches!(
                    r.action.as_deref(),
                    Some("UpdateAccessKey") | Some("DeleteAccessKey")
                ) && r.param("AccessKeyId") == Some(self.old.access_key_id.as_str())
            })
            .collect();
        assert!(
            old_touched
                .iter()
                .any(|r| r.action.as_deref() == Some("UpdateAccessKey")),
            "[{name}] the old key was never deactivated"
        );
        let first_touch = old_touched
            .iter()
            .map(|r| self.aws_started.0 + r.at)
            .min()
            .expect("old key touched");
        let writes: Vec<_> = self.circle.mutating_requests();
        assert!(
            writes.len() >= 6,
            "[{name}] expected 6 CircleCI writes at least, saw {}",
            writes.len()
        );
        for w in &writes {
            let latest = self.circle_started.1 + w.at;
            assert!(
                latest < first_touch,
                "[{name}] CircleCI {} {} may have been answered after the old key was first \
                 touched (by up to {:?})",
                w.method,
                w.path,
                latest.saturating_duration_since(first_touch)
            );
        }
        if std::env::var_os("REKEY_CRASH_VERBOSE").is_some() {
            let last_write = writes
                .iter()
                .map(|w| self.circle_started.1 + w.at)
                .max()
                .expect("writes");
            let slack = (self.circle_started.1 - self.circle_started.0)
                + (self.aws_started.1 - self.aws_started.0);
            println!(
                "  [{name}] last CircleCI write → first touch of the old key: at least {:?} (clock brackets {slack:?})",
                first_touch.saturating_duration_since(last_write)
            );
        }
        let first_touch_at = old_touched.iter().map(|r| r.at).min().unwrap_or_default();
        assert!(
            requests
                .iter()
                .any(|r| r.action.as_deref() == Some("GetCallerIdentity")
                    && r.access_key_id.as_deref() == Some(new.access_key_id.as_str())
                    && r.succeeded()
                    && r.at < first_touch_at),
            "[{name}] the new key was not verified before the old one was touched"
        );
        // Each binding got both variables (projects: two POSTs; context: one PUT per var).
        for slug in PROJECTS {
            let posts = writes
                .iter()
                .filter(|w| {
                    w.method == "POST" && w.path == format!("/api/v2/project/{slug}/envvar")
                })
                .count();
            assert!(posts >= 2, "[{name}] {slug} got {posts} writes");
        }
        let cid = self.context_id();
        for var in [ID_VAR, SECRET_VAR] {
            let path = format!("/api/v2/context/{cid}/environment-variable/{var}");
            assert!(
                writes.iter().any(|w| w.method == "PUT" && w.path == path),
                "[{name}] context variable {var} never written"
            );
        }
    }
}

fn path(p: &Path) -> &str {
    p.to_str().expect("utf-8 temp path")
}

fn text(out: &Output) -> String {
    format!(
        "status {:?}\n--- stdout\n{}\n--- stderr\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// Runs one case in a fresh world: crash, (crash again…), resume, check.
fn run_case(case: &Case) -> Duration {
    let began = Instant::now();
    let world = World::new(case.setup);
    let name = &case.name;
    if case.lost_creates > 0 {
        let count = u32::try_from(case.lost_creates).expect("small count");
        world
            .aws
            .lose_response("^CreateAccessKey$", count)
            .expect("fault pattern");
    }
    if case.crashes.is_empty() {
        // No crash: one apply must complete, or stop resumable (4) and complete on resume.
        let out = world.apply(None);
        let run = world.run_id();
        if out.status.code() != Some(0) {
            assert_eq!(out.status.code(), Some(4), "[{name}] apply: {}", text(&out));
            let again = world.resume(&run, None);
            assert_eq!(
                again.status.code(),
                Some(0),
                "[{name}] resume: {}",
                text(&again)
            );
        }
        world.check_invariants(case, &run);
        return began.elapsed();
    }
    let mut run: Option<String> = None;
    for (i, point) in case.crashes.iter().enumerate() {
        let out = match &run {
            None => world.apply(Some(point)),
            Some(_) if i == 1 && case.rerun_plan => world.apply(Some(point)),
            Some(run) => world.resume(run, Some(point)),
        };
        assert_eq!(
            out.status.signal(),
            Some(libc::SIGKILL),
            "[{name}] invocation {} was not SIGKILLed at {point}: {}",
            i + 1,
            text(&out)
        );
        let id = world.run_id();
        if let Some(previous) = &run {
            assert_eq!(&id, previous, "[{name}] a second run was started");
        }
        run = Some(id);
    }
    let run = run.expect("a case crashes at least once");
    let out = if case.rerun_plan && case.crashes.len() == 1 {
        world.apply(None)
    } else {
        world.resume(&run, None)
    };
    let (expected, what) = match case.setup {
        Setup::NeverVerifies => (1, "fail (the new key never verifies)"),
        _ => (0, "complete"),
    };
    assert_eq!(
        out.status.code(),
        Some(expected),
        "[{name}] the resumed apply did not {what}: {}",
        text(&out)
    );
    assert_eq!(world.run_id(), run, "[{name}] the resume started a new run");
    match case.setup {
        Setup::NeverVerifies => world.check_rolled_back(case, &run),
        _ => world.check_invariants(case, &run),
    }
    began.elapsed()
}

fn run_cases(cases: &[Case]) {
    let mut timings = Vec::new();
    for case in cases {
        let took = run_case(case);
        timings.push(format!("  {:<45} {:>5} ms", case.name, took.as_millis()));
    }
    // Printed with --nocapture: the cost of each case.
    println!("{}", timings.join("\n"));
}

/// The crash points of every journal record of a clean run: `step:phase:n`, `n` counting the
/// occurrences of the same (step, phase) — the three bindings' writes share the step `write`.
fn boundaries_of_a_clean_run(setup: Setup) -> Vec<String> {
    let world = World::new(setup);
    let out = world.apply(None);
    let run = world.run_id();
    let clean = Case::new(setup, &["(none: clean run)"]);
    if setup == Setup::NeverVerifies {
        assert_eq!(out.status.code(), Some(1), "clean run: {}", text(&out));
        world.check_rolled_back(&clean, &run);
    } else {
        assert_eq!(out.status.code(), Some(0), "clean run: {}", text(&out));
        world.check_invariants(&clean, &run);
    }
    let mut seen: Vec<(String, Phase)> = Vec::new();
    let mut points = Vec::new();
    for (step, phase) in world.journal_steps(&run) {
        let n = seen
            .iter()
            .filter(|(s, p)| *s == step && *p == phase)
            .count()
            + 1;
        seen.push((step.clone(), phase));
        points.push(format!("{step}:{}:{n}", phase.as_str()));
    }
    points
}

/// A SIGKILL right after each journal record of a clean run, then `--resume`.
#[test]
fn crash_at_every_journal_boundary_then_resume() {
    let points = boundaries_of_a_clean_run(Setup::OneKey);
    // The protocol as journaled today; if the engine journals more, the cases follow.
    for expected in [
        "inspect:done:1",
        "mint:intent:1",
        "mint:done:1",
        "verify:intent:1",
        "verify:done:1",
        "write:intent:1",
        "write:done:1",
        "write:intent:2",
        "write:done:2",
        "write:intent:3",
        "write:done:3",
        "read-back:done:1",
        "deactivate:intent:1",
        "deactivate:done:1",
        "grace:done:1",
        "revoke:intent:1",
        "revoke:done:1",
        "done:done:1",
    ] {
        assert!(
            points.iter().any(|p| p == expected),
            "a clean run does not journal {expected}: {points:?}"
        );
    }
    println!("boundaries: {points:?}");
    let cases: Vec<Case> = points
        .iter()
        .map(|p| Case::new(Setup::OneKey, &[p.as_str()]))
        .collect();
    run_cases(&cases);
}

/// Inside steps, between a side effect and its journal record.
#[test]
fn crash_between_a_side_effect_and_its_record_then_resume() {
    let cases = vec![
        // CreateAccessKey answered, the value neither stashed nor journaled: resume finds the
        // key by listing the user's keys, deletes it, and mints once more.
        Case::new(Setup::OneKey, &["mint-after-call"]).minted(2),
        // Stashed but not journaled: resume takes the stashed value, mints nothing.
        Case::new(Setup::OneKey, &["mint-after-stash"]),
        Case::new(Setup::OneKey, &["write-after-call:1"]),
        Case::new(Setup::OneKey, &["write-after-call:2"]),
        Case::new(Setup::OneKey, &["write-after-call:3"]),
        Case::new(Setup::OneKey, &["deactivate-after-call"]),
        Case::new(Setup::OneKey, &["revoke-after-call"]),
    ];
    run_cases(&cases);
}

/// The user already holds two keys; the plan marks the stale one removable.
#[test]
fn crash_around_the_capacity_step_then_resume() {
    let points = boundaries_of_a_clean_run(Setup::Full);
    for expected in ["capacity:intent:1", "capacity:done:1"] {
        assert!(
            points.iter().any(|p| p == expected),
            "{expected}: {points:?}"
        );
    }
    let cases = vec![
        Case::new(Setup::Full, &["capacity:intent:1"]),
        Case::new(Setup::Full, &["capacity:done:1"]),
        Case::new(Setup::Full, &["mint:intent:1"]),
        Case::new(Setup::Full, &["mint-after-call"]).minted(2),
    ];
    run_cases(&cases);
}

/// Several crashes in a row, including inside the clean-up of an orphan during a resume, and
/// a scheduled job re-running `rekey apply PLAN` instead of `--resume`.
#[test]
fn repeated_crashes_then_resume() {
    let mut rerun = Case::new(Setup::OneKey, &["write:done:2"]);
    rerun.name = "write:done:2, then `apply PLAN` again".into();
    rerun.rerun_plan = true;
    let cases = vec![
        // The orphan's deletion is journaled as rollback intent/done: crash at both.
        Case::new(Setup::OneKey, &["mint-after-call", "rollback:intent"]).minted(2),
        Case::new(Setup::OneKey, &["mint-after-call", "rollback:done"]).minted(2),
        Case::new(
            Setup::OneKey,
            &[
                "mint:done",
                "write:done:1",
                "write-after-call:1",
                "deactivate:intent",
                "revoke:intent",
            ],
        ),
        rerun,
    ];
    run_cases(&cases);
}

/// The answer to CreateAccessKey is lost after the key was created (a 500 from IAM, or a cut
/// connection): the key exists, its secret is gone for good. rekey must delete it (it would also
/// hold one of the user's two key slots), never bind it, and finish with one new key — also
/// when it is SIGKILLed in the middle of that clean-up.
#[test]
fn lost_create_access_key_answer_then_crashes() {
    let lost = |crashes: &[&str], name: &str| {
        let mut case = Case::new(Setup::OneKey, crashes).minted(2);
        case.name = format!("CreateAccessKey answer lost{name}");
        case.lost_creates = 1;
        case
    };
    let cases = vec![
        lost(&[], ""),
        lost(&["rollback:intent"], ", crash at rollback:intent"),
        lost(&["rollback:done"], ", crash at rollback:done"),
        lost(&["mint:intent:2"], ", crash at the second mint:intent"),
    ];
    run_cases(&cases);
}

/// With a canary pipeline (step 8) between read-back and deactivation.
#[test]
fn crash_around_the_canary_then_resume() {
    let points = boundaries_of_a_clean_run(Setup::Canary);
    let canary: Vec<&String> = points.iter().filter(|p| p.starts_with("canary:")).collect();
    assert_eq!(
        canary,
        ["canary:intent:1", "canary:done:1"],
        "canary records of a clean run: {points:?}"
    );
    let cases: Vec<Case> = canary
        .iter()
        .map(|p| Case::new(Setup::Canary, &[p.as_str()]))
        .collect();
    run_cases(&cases);
}

/// The new key never verifies: it must be deleted and nothing else changed, also when the
/// process is killed at any record of that rollback.
#[test]
fn crash_while_rolling_back_a_key_that_never_verified() {
    let points = boundaries_of_a_clean_run(Setup::NeverVerifies);
    for expected in ["verify:failed:1", "rollback:intent:1", "rollback:done:1"] {
        assert!(
            points.iter().any(|p| p == expected),
            "{expected}: {points:?}"
        );
    }
    let cases: Vec<Case> = points
        .iter()
        .filter(|p| !p.starts_with("inspect:"))
        .map(|p| Case::new(Setup::NeverVerifies, &[p.as_str()]))
        .collect();
    run_cases(&cases);
}
