//! The `circleci-ssh-key` provider against the CircleCI simulator's API v1.1 endpoints (add,
//! list via settings, delete) and a made-up host whose trust is an `authorized_keys` file
//! (`tests/fixtures/ssh-key/host.py`): the shared conformance suite, a whole rotation through
//! the binary in which a job keeps a working key through the grace period, the manual path,
//! a failing install hook; and the legacy AWS key pair rotated through the settings API.

mod support;

use async_trait::async_trait;
use rekey::circleci::CircleCiClient;
use rekey::http::RetryPolicy;
use rekey::plan::{Binding, Located, Principal, ProviderKind, SshKeyHooks, Target};
use rekey::providers::ssh_key::{SshKeyProvider, md5_fingerprint};
use rekey::providers::{Provider, ProviderError};
use rekey::sandbox::circleci::{StoredAwsKeypair, StoredSshKey};
use rekey::sandbox::{CircleCiState, ProjectSpec, Sandbox};
use rekey::secret::Secret;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use support::conformance::{self, Harness, Transcript, target};
use support::world::{PROJECTS, PlanSpec, World};
use support::{LogCapture, assert_no_secret};

fn host_script() -> String {
    format!(
        "{}/tests/fixtures/ssh-key/host.py",
        env!("CARGO_MANIFEST_DIR")
    )
}

fn hook(authorized: &Path, extra: &[&str]) -> Located<Vec<String>> {
    let mut argv = vec![host_script(), authorized.display().to_string()];
    argv.extend(extra.iter().map(|s| s.to_string()));
    Located::new(argv)
}

fn ssh_target(id: &str, places: &[(&str, &str)], hooks: SshKeyHooks) -> Target {
    let mut t = target(id, ProviderKind::CircleciSshKey, Principal::default());
    t.bindings = places
        .iter()
        .map(|(slug, host)| Binding {
            project: Some(Located::new((*slug).into())),
            context: None,
            context_id: None,
            vars: Default::default(),
            encoding: Default::default(),
            aws_keypair: false,
            ssh_hostname: Some(Located::new(host.to_string())),
        })
        .collect();
    t.ssh_key = Some(Box::new(hooks));
    t
}

fn authorized(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(str::to_owned)
        .collect()
}

/// A job that loads the key `fingerprint` (`add_ssh_keys: fingerprints: [...]`) reaches the
/// host when CircleCI still holds that key for the host and the host trusts its public half.
fn job_works(
    state: &CircleCiState,
    authorized_keys: &Path,
    slug: &str,
    host: &str,
    fp: &str,
) -> bool {
    let Some(key) = state.project_by_slug(slug).and_then(|p| {
        p.ssh_keys
            .iter()
            .find(|k| k.fingerprint == fp && k.hostname == host)
    }) else {
        return false;
    };
    let body = key
        .public_key
        .split_whitespace()
        .nth(1)
        .unwrap_or("?")
        .to_owned();
    authorized(authorized_keys)
        .iter()
        .any(|line| line.split_whitespace().any(|w| w == body))
}

/// An existing key (a real one, so the host can trust it) added to `slug` for `host`.
fn old_key(state: &mut CircleCiState, slug: &str, host: &str, private: &Secret, public: &str) {
    let fingerprint = md5_fingerprint(private.expose()).unwrap();
    state
        .project_by_slug_mut(slug)
        .unwrap()
        .ssh_keys
        .push(StoredSshKey {
            hostname: host.to_owned(),
            fingerprint,
            public_key: public.to_owned(),
            private_key: private.expose().to_owned(),
        });
}

// ---- conformance ------------------------------------------------------------------------

struct SshHarness {
    sandbox: Sandbox,
    provider: SshKeyProvider,
    token: String,
    dir: tempfile::TempDir,
}

impl SshHarness {
    async fn start() -> Self {
        let state = CircleCiState::new("CCIPAT_ssh_harness_token_0123456789");
        let token = state.token().to_owned();
        let sandbox = Sandbox::start(state).await.unwrap();
        let client = CircleCiClient::new(&sandbox.base_url(), Secret::new(token.clone()))
            .unwrap()
            .with_retry_policy(RetryPolicy::no_retry());
        SshHarness {
            provider: SshKeyProvider::new(client),
            sandbox,
            token,
            dir: tempfile::tempdir().unwrap(),
        }
    }

    fn hooks(&self) -> SshKeyHooks {
        let file = self.dir.path().join("authorized_keys");
        SshKeyHooks {
            install: Some(hook(&file, &[])),
            remove: Some(hook(&file, &[])),
            ..Default::default()
        }
    }
}

#[async_trait]
impl Harness for SshHarness {
    fn provider(&self) -> &dyn Provider {
        &self.provider
    }

    async fn fresh_principal(&self, name: &str) -> Target {
        let slug = format!("gh/acme/{name}");
        self.sandbox
            .with_state(|s| s.add_project(ProjectSpec::new(slug.clone())));
        ssh_target(name, &[(&slug, "deploy.acme.example")], self.hooks())
    }

    fn missing_principal(&self) -> Target {
        ssh_target(
            "missing",
            &[("gh/acme/no-such-project", "deploy.acme.example")],
            self.hooks(),
        )
    }

    fn unknown_credential_id(&self) -> String {
        "00:11:22:33:44:55:66:77:88:99:aa:bb:cc:dd:ee:ff".to_owned()
    }
}

async fn run_ssh<F>(scenario: F)
where
    F: AsyncFnOnce(&dyn Harness) -> Transcript,
{
    let h = SshHarness::start().await;
    let logs = LogCapture::start();
    let mut transcript = scenario(&h).await;
    let log_text = logs.text();
    transcript.secrets.push(h.token.clone());
    let debug = format!("{:?}", h.provider);
    let trusted = authorized(&h.dir.path().join("authorized_keys")).join("\n");
    transcript.assert_clean(&[
        ("logs", &log_text),
        ("provider Debug", &debug),
        ("the host's authorized_keys", &trusted),
    ]);
}

#[tokio::test]
async fn ssh_key_conformance_lifecycle() {
    run_ssh(async |h| conformance::lifecycle(h).await).await;
}

#[tokio::test]
async fn ssh_key_conformance_wrong_principal() {
    run_ssh(async |h| conformance::wrong_principal(h).await).await;
}

#[tokio::test]
async fn ssh_key_conformance_missing_things() {
    run_ssh(async |h| conformance::missing_things(h).await).await;
}

#[tokio::test]
async fn ssh_key_conformance_capacity() {
    run_ssh(async |h| conformance::capacity(h).await).await;
}

// ---- specific behaviour -----------------------------------------------------------------

/// A failing install hook: mint fails, no key reaches CircleCI, the error names the hook and
/// quotes no key.
#[tokio::test]
async fn a_failing_install_hook_leaves_nothing_in_circleci() {
    let h = SshHarness::start().await;
    h.sandbox
        .with_state(|s| s.add_project(ProjectSpec::new("gh/acme/api")));
    let file = h.dir.path().join("authorized_keys");
    let t = ssh_target(
        "failing",
        &[("gh/acme/api", "deploy.acme.example")],
        SshKeyHooks {
            install: Some(hook(&file, &["--fail", "1"])),
            ..Default::default()
        },
    );
    let err = h.provider.mint(&t).await.unwrap_err();
    assert!(err.to_string().contains("ssh_key.install"), "{err}");
    assert!(!err.to_string().contains("PRIVATE KEY"), "{err}");
    let state = h.sandbox.state();
    assert!(
        state
            .project_by_slug("gh/acme/api")
            .unwrap()
            .ssh_keys
            .is_empty()
    );
}

/// `manual: true`: mint installs nothing on the host but adds the key to CircleCI; revoke is a
/// manual step that shows the new public key and fingerprint, names the projects whose config
/// must change, and deletes nothing until a person has done it.
#[tokio::test]
async fn manual_install_is_a_confirmed_step_with_public_key_and_fingerprint() {
    let h = SshHarness::start().await;
    let (old_private, old_public) = rekey::providers::github::generate_ed25519("old").unwrap();
    h.sandbox.with_state(|s| {
        s.add_project(ProjectSpec::new("gh/acme/api"));
        old_key(
            s,
            "gh/acme/api",
            "bastion.acme.example",
            &old_private,
            &old_public,
        );
    });
    let old_fp = md5_fingerprint(old_private.expose()).unwrap();
    let t = ssh_target(
        "manual",
        &[("gh/acme/api", "bastion.acme.example")],
        SshKeyHooks {
            manual: true,
            ..Default::default()
        },
    );
    let m = h.provider.mint(&t).await.unwrap();
    h.provider.verify(&t, &m).await.unwrap();
    let note = h.provider.verified_note(&t).unwrap();
    assert!(
        note.contains(&m.id)
            && note.contains("gh/acme/api")
            && note.contains(".circleci/config.yml"),
        "{note}"
    );
    let new_public = h
        .sandbox
        .state()
        .project_by_slug("gh/acme/api")
        .unwrap()
        .ssh_keys
        .iter()
        .find(|k| k.fingerprint == m.id)
        .map(|k| k.public_key.clone())
        .unwrap();
    match h.provider.revoke(&t, &old_fp).await {
        Err(ProviderError::NeedsInput(what)) => {
            assert!(what.contains(new_public.trim()), "{what}");
            assert!(what.contains(&m.id) && what.contains(&old_fp), "{what}");
            assert!(
                what.contains("gh/acme/api") && what.contains("add_ssh_keys"),
                "{what}"
            );
            assert_no_secret("manual step", &what, &[m.fields["private_key"].expose()]);
        }
        other => panic!("manual revoke is a person's step, got {other:?}"),
    }
    let keys = h
        .sandbox
        .state()
        .project_by_slug("gh/acme/api")
        .unwrap()
        .ssh_keys
        .clone();
    assert_eq!(keys.len(), 2, "nothing deleted before the person acts");
}

/// The simulated v1.1 endpoints behave as CircleCI's: a key that is not one is refused, the
/// fingerprint is derived, a repeat add changes nothing, an unknown key's delete is a 404.
#[tokio::test]
async fn simulated_v1_ssh_key_endpoints() {
    let h = SshHarness::start().await;
    h.sandbox
        .with_state(|s| s.add_project(ProjectSpec::new("gh/acme/api")));
    let client = CircleCiClient::new(&h.sandbox.base_url(), Secret::new(h.token.clone()))
        .unwrap()
        .with_retry_policy(RetryPolicy::no_retry());
    let err = client
        .add_ssh_key("gh/acme/api", "h", &Secret::new("not a key"))
        .await
        .unwrap_err();
    assert_eq!(err.status(), Some(400));
    let (private, _) = rekey::providers::github::generate_ed25519("k").unwrap();
    client
        .add_ssh_key("gh/acme/api", "h", &private)
        .await
        .unwrap();
    client
        .add_ssh_key("gh/acme/api", "h", &private)
        .await
        .unwrap();
    let settings = client.project_settings("gh/acme/api").await.unwrap();
    assert_eq!(settings.ssh_keys.len(), 1);
    let fp = md5_fingerprint(private.expose()).unwrap();
    assert_eq!(settings.ssh_keys[0].fingerprint, fp);
    assert!(settings.ssh_keys[0].public_key.starts_with("ssh-ed25519 "));
    let err = client
        .delete_ssh_key("gh/acme/api", &fp, "other-host")
        .await
        .unwrap_err();
    assert_eq!(err.status(), Some(404));
    client
        .delete_ssh_key("gh/acme/api", &fp, "h")
        .await
        .unwrap();
    assert!(
        client
            .project_settings("gh/acme/api")
            .await
            .unwrap()
            .ssh_keys
            .is_empty()
    );
    let err = client
        .add_ssh_key("gh/acme/nope", "h", &private)
        .await
        .unwrap_err();
    assert_eq!(err.status(), Some(404));
}

// ---- whole rotations through the binary ---------------------------------------------------

const HOST: &str = "deploy.acme.example";

fn ssh_plan(w: &World, authorized_keys: &Path, old_fp: &str, grace: &str) -> PathBuf {
    let script = host_script();
    let keys = authorized_keys.display();
    let mut y = format!(
        "apiVersion: rekey/v1\nkind: RotationPlan\nmetadata: {{name: ssh-test}}\ndefaults:\n  grace: {grace}\n",
    );
    y.push_str("targets:\n  - id: ssh-key-deploy\n    provider: circleci-ssh-key\n    bindings:\n");
    for slug in PROJECTS {
        y.push_str(&format!(
            "      - {{project: {slug}, ssh_hostname: {HOST}}}\n"
        ));
    }
    y.push_str("    observed:\n");
    for slug in PROJECTS {
        y.push_str(&format!(
            "      - {{project: {slug}, fingerprint: \"{old_fp}\"}}\n"
        ));
    }
    y.push_str(&format!(
        "    ssh_key:\n      install: [\"{script}\", \"{keys}\"]\n      remove: [\"{script}\", \"{keys}\"]\n"
    ));
    let path = w.path("ssh-plan.yaml");
    std::fs::write(&path, y).unwrap();
    path
}

/// The flow the issue asks for: the new pair is generated, its public half installed on the
/// host, its private half added to every project that held the old one; through the grace
/// period a job works with either key; then the old key leaves CircleCI and the host.
#[test]
fn a_job_keeps_a_working_key_through_the_grace_period() {
    let w = World::sandbox(1);
    let authorized_keys = w.path("authorized_keys");
    let (old_private, old_public) = rekey::providers::github::generate_ed25519("old").unwrap();
    std::fs::write(&authorized_keys, format!("{old_public}\n")).unwrap();
    let old_fp = md5_fingerprint(old_private.expose()).unwrap();
    w.circleci.with_state(|s| {
        for slug in PROJECTS {
            old_key(s, slug, HOST, &old_private, &old_public);
        }
    });
    let plan = ssh_plan(&w, &authorized_keys, &old_fp, "2s");
    let validate = w.run(&["validate", &plan.display().to_string()], &[]);
    validate.expect_code(0, "validate");

    let out = w.apply(&plan, &["--output", "json"]);
    out.expect_code(0, "apply");
    let run = out.run_id();
    let summary = out.summary();
    assert_eq!(summary["targets"][0]["state"], "waiting", "{summary}");
    let state = w.circleci.state();
    let new_fp = state
        .project_by_slug(PROJECTS[0])
        .unwrap()
        .ssh_keys
        .iter()
        .map(|k| k.fingerprint.clone())
        .find(|fp| *fp != old_fp)
        .expect("a new key in the first project");
    for slug in PROJECTS {
        assert!(
            job_works(&state, &authorized_keys, slug, HOST, &old_fp),
            "old key works in {slug} during grace"
        );
        assert!(
            job_works(&state, &authorized_keys, slug, HOST, &new_fp),
            "new key works in {slug} during grace"
        );
    }
    // The projects whose config selects the key by fingerprint are named, with the new one.
    assert!(
        out.stdout.contains(&new_fp) || out.stderr.contains(&new_fp),
        "the run names the new fingerprint: {}\n{}",
        out.stdout,
        out.stderr
    );

    std::thread::sleep(std::time::Duration::from_millis(2200));
    let late = w.resume(&run, &["--output", "json"]);
    late.expect_code(0, "resume after grace");
    assert_eq!(
        late.summary()["targets"][0]["state"],
        "done",
        "{}",
        late.stdout
    );
    let state = w.circleci.state();
    for slug in PROJECTS {
        assert!(
            !job_works(&state, &authorized_keys, slug, HOST, &old_fp),
            "old key gone in {slug}"
        );
        assert!(
            job_works(&state, &authorized_keys, slug, HOST, &new_fp),
            "new key works in {slug}"
        );
        assert_eq!(state.project_by_slug(slug).unwrap().ssh_keys.len(), 1);
    }
    assert!(
        !authorized(&authorized_keys)
            .iter()
            .any(|l| l == &old_public),
        "old public half removed from the host"
    );
    // The private keys never left in any output.
    let new_private = state.project_by_slug(PROJECTS[0]).unwrap().ssh_keys[0]
        .private_key
        .clone();
    for inv in [&out, &late] {
        for text in [&inv.stdout, &inv.stderr] {
            assert_no_secret("output", text, &[&new_private, old_private.expose()]);
        }
    }
}

/// A world whose two projects hold one SSH key for [`HOST`], trusted there; its plan.
struct SshWorld {
    w: World,
    authorized_keys: PathBuf,
    old_fp: String,
    old_public: String,
    plan: PathBuf,
}

impl SshWorld {
    fn new(grace: &str) -> SshWorld {
        let w = World::sandbox(1);
        let authorized_keys = w.path("authorized_keys");
        let (old_private, old_public) = rekey::providers::github::generate_ed25519("old").unwrap();
        std::fs::write(&authorized_keys, format!("{old_public}\n")).unwrap();
        let old_fp = md5_fingerprint(old_private.expose()).unwrap();
        w.circleci.with_state(|s| {
            for slug in PROJECTS {
                old_key(s, slug, HOST, &old_private, &old_public);
            }
        });
        let plan = ssh_plan(&w, &authorized_keys, &old_fp, grace);
        SshWorld {
            w,
            authorized_keys,
            old_fp,
            old_public,
            plan,
        }
    }

    fn apply(&self, crash_at: Option<&str>) -> support::world::Invocation {
        let plan = self.plan.display().to_string();
        let state = self.w.state_dir().display().to_string();
        let args = [
            "apply",
            plan.as_str(),
            "--state-dir",
            state.as_str(),
            "--verify-backoff-ms",
            "20",
        ];
        self.invoke(&args, crash_at)
    }

    fn resume(&self, run: &str, crash_at: Option<&str>) -> support::world::Invocation {
        let state = self.w.state_dir().display().to_string();
        let args = [
            "apply",
            "--resume",
            run,
            "--state-dir",
            state.as_str(),
            "--verify-backoff-ms",
            "20",
        ];
        self.invoke(&args, crash_at)
    }

    fn invoke(&self, args: &[&str], crash_at: Option<&str>) -> support::world::Invocation {
        match crash_at {
            Some(point) => {
                let at = format!("{SSH_TARGET}:{point}");
                self.w.run(args, &[("REKEY_CRASH_AT", at.as_str())])
            }
            None => self.w.run(args, &[]),
        }
    }

    /// After a finished run: one new key, the same in both projects, trusted on the host and
    /// nothing else trusted; the old key and any orphan gone from CircleCI and the host.
    fn check_rotated(&self, what: &str) {
        let state = self.w.circleci.state();
        let mut fingerprints = BTreeMap::new();
        for slug in PROJECTS {
            let keys = &state.project_by_slug(slug).unwrap().ssh_keys;
            assert_eq!(keys.len(), 1, "{what}: one key left in {slug}: {keys:?}");
            fingerprints.insert(slug, keys[0].fingerprint.clone());
        }
        let new_fp = fingerprints[PROJECTS[0]].clone();
        assert_eq!(
            fingerprints[PROJECTS[1]], new_fp,
            "{what}: the same key in both projects"
        );
        assert_ne!(new_fp, self.old_fp, "{what}: the key was rotated");
        for slug in PROJECTS {
            assert!(
                job_works(&state, &self.authorized_keys, slug, HOST, &new_fp),
                "{what}: a job works in {slug}"
            );
        }
        let trusted = authorized(&self.authorized_keys);
        assert_eq!(
            trusted.len(),
            1,
            "{what}: only the new key is trusted (no orphan, not the old one): {trusted:?}"
        );
        assert!(!trusted.contains(&self.old_public), "{what}");
    }
}

const SSH_TARGET: &str = "ssh-key-deploy";

fn newest_run(w: &World) -> String {
    let status = w.status(None);
    status["selected"]
        .as_str()
        .unwrap_or_else(|| panic!("no run in status: {status}"))
        .to_owned()
}

/// SIGKILL at every journal boundary of a clean run and between each side effect and its
/// record (the key added to CircleCI and trusted on the host but not journaled: the orphan is
/// found by listing, deleted from CircleCI and the host, and one key is minted again), then
/// `--resume`: the rotation ends as a clean one does.
#[test]
fn ssh_key_crash_anywhere_then_resume() {
    let clean = SshWorld::new("0s");
    clean.apply(None).expect_code(0, "clean run");
    clean.check_rotated("clean run");
    let run = newest_run(&clean.w);
    let journal = rekey::engine::journal::Journal::open(&clean.w.state_dir()).unwrap();
    let mut points: Vec<String> = Vec::new();
    let mut seen: Vec<(String, &'static str)> = Vec::new();
    for e in journal
        .events(&rekey::engine::journal::RunId::from(run), Some(SSH_TARGET))
        .unwrap()
    {
        let phase = e.phase.as_str();
        let n = seen
            .iter()
            .filter(|(s, p)| *s == e.step && *p == phase)
            .count()
            + 1;
        seen.push((e.step.clone(), phase));
        points.push(format!("{}:{phase}:{n}", e.step));
    }
    for expected in [
        "mint:intent:1",
        "mint:done:1",
        "write:done:2",
        "read-back:done:1",
        "revoke:intent:1",
        "done:done:1",
    ] {
        assert!(
            points.iter().any(|p| p == expected),
            "{expected} not in {points:?}"
        );
    }
    points.extend(
        [
            "mint-after-call",
            "mint-after-stash",
            "write-after-call:1",
            "write-after-call:2",
            "revoke-after-call",
        ]
        .map(String::from),
    );
    for point in &points {
        let world = SshWorld::new("0s");
        let crashed = world.apply(Some(point));
        assert_eq!(
            crashed.code, None,
            "{point}: killed\n{}\n{}",
            crashed.stdout, crashed.stderr
        );
        let run = newest_run(&world.w);
        let resumed = world.resume(&run, None);
        resumed.expect_code(0, &format!("resume after a crash at {point}"));
        world.check_rotated(&format!("crash at {point}"));
    }
}

/// The legacy AWS key pair of project settings is an ordinary binding: the new key is written
/// through the settings API, read back by its masks, and the old key is deleted at AWS.
#[test]
fn legacy_aws_key_pair_is_rotated_through_the_settings_api() {
    let w = World::sandbox(1);
    let slug = PROJECTS[0];
    w.circleci.with_state(|s| {
        s.project_by_slug_mut(slug).unwrap().aws_keypair = Some(StoredAwsKeypair {
            access_key_id: w.old_key.0.clone(),
            secret_access_key: w.old_key.1.clone(),
        });
    });
    let mut y = w.plan_yaml(&PlanSpec {
        observed: false,
        ..PlanSpec::default()
    });
    y.push_str(&format!("      - {{project: {slug}, aws_keypair: true}}\n"));
    // The generated plan ends with the target's bindings only when nothing follows them.
    assert!(y.trim_end().ends_with("aws_keypair: true}"), "{y}");
    let plan = w.path("legacy.yaml");
    std::fs::write(&plan, &y).unwrap();
    w.run(&["validate", &plan.display().to_string()], &[])
        .expect_code(0, "validate");
    let out = w.apply(&plan, &["--output", "json"]);
    out.expect_code(0, "apply");
    let pair = w
        .circleci
        .state()
        .project_by_slug(slug)
        .unwrap()
        .aws_keypair
        .clone()
        .expect("a key pair in the settings");
    assert_ne!(pair.access_key_id, w.old_key.0, "a new key id");
    assert!(
        w.works(&pair.access_key_id, &pair.secret_access_key),
        "the new pair works at AWS"
    );
    assert!(
        !w.works(&w.old_key.0, &w.old_key.1),
        "the old key is revoked"
    );
    let (_, var_id, _) = w.bound()[0].clone();
    assert_eq!(
        var_id, pair.access_key_id,
        "variables and settings hold the same new key"
    );
    for text in [&out.stdout, &out.stderr] {
        assert_no_secret("output", text, &[&pair.secret_access_key, &w.old_key.1]);
    }
}
