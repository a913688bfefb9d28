//! End to end through the real binary, against the in-process CircleCI and GitHub simulators
//! (`CIRCLECI_HOST`, `GITHUB_API_URL`): a plan with a GitHub deploy key, a CircleCI checkout
//! key and two GitHub personal access tokens.
//!
//! 1. `apply` without token values: the keys rotate; the tokens stop at mint, incomplete, with
//!    the flag that provides them (exit 4).
//! 2. `apply` again with `--value-from-file` (and, for one token, `--old-value-from-file`):
//!    both tokens are written; the one whose old value was given is revoked through GitHub's
//!    credential-revocation API, the other awaits a person (`rekey status` says so, the report
//!    lists the manual step).
//! 3. `rekey confirm`, then `apply --resume`: the run is complete.
//!
//! Every byte of stdout, stderr, the state directory and the report is scanned for every
//! secret (old and new tokens, the minted private key, rekey's own tokens, and base64 forms).

use base64::Engine as _;
use rekey::sandbox::circleci::CheckoutKeySpec;
use rekey::sandbox::{CircleCiState, GithubSandbox, GithubState, ProjectSpec, Sandbox};
use std::path::Path;
use std::process::{Command, Output};

const PLAN: &str = "apiVersion: rekey/v1
kind: RotationPlan
metadata: {name: github-e2e}
defaults: {grace: 0s}
targets:
  - id: deploy-key-api
    provider: github-deploy-key
    principal: {repository: acme/api, title: rekey e2e}
    bindings:
      - project: gh/acme/api
        vars: {private_key: DEPLOY_KEY_B64}
        encoding: {private_key: base64}
  - id: checkout-key-api
    provider: circleci-checkout-key
    principal: {project: gh/acme/api}
    observed:
      - {project: gh/acme/api, fingerprint: 'FINGERPRINT'}
  - id: gh-pat
    provider: github-token
    principal: {user: release-bot}
    bindings:
      - project: gh/acme/api
        vars: {token: GH_TOKEN}
  - id: gh-pat-api
    provider: github-token
    principal: {user: release-bot}
    bindings:
      - project: gh/acme/web
        vars: {token: GH_TOKEN}
";

struct World {
    circleci: Sandbox,
    github: GithubSandbox,
    circleci_token: String,
    github_token: String,
    stash_key: String,
    old_tokens: [String; 2],
    new_tokens: [String; 2],
    old_key_id: u64,
    checkout_in_use: String,
    checkout_other: String,
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

impl World {
    fn rekey(&self, state: &Path, args: &[&str]) -> Output {
        self.rekey_crashing(state, args, None)
    }

    /// With `REKEY_CRASH_AT=<target>:<point>`: the process SIGKILLs itself there.
    fn rekey_crashing(&self, state: &Path, args: &[&str], crash_at: Option<&str>) -> Output {
        let mut command = Command::new(env!("CARGO_BIN_EXE_rekey"));
        match crash_at {
            Some(point) => command.env("REKEY_CRASH_AT", point),
            None => command.env_remove("REKEY_CRASH_AT"),
        };
        command
            .args(args)
            .args(["--state-dir", state.to_str().unwrap_or_default()])
            .env("CIRCLECI_HOST", self.circleci.base_url())
            .env("CIRCLECI_TOKEN", &self.circleci_token)
            .env("GITHUB_API_URL", self.github.base_url())
            .env("GITHUB_TOKEN", &self.github_token)
            .env("REKEY_STASH_KEY", &self.stash_key)
            .env("REKEY_KEYRING_DISABLED", "1")
            .env("RUST_LOG", "trace")
            .env("AWS_REGION", "us-east-1")
            .env("AWS_EC2_METADATA_DISABLED", "true")
            .env_remove("AWS_ENDPOINT_URL")
            .output()
            .unwrap()
    }
}

async fn world() -> World {
    let mut rng = rekey::sandbox::Rng::from_entropy();
    let mut github = GithubState::new().repo("acme/api");
    let old_key_id = github.add_foreign_key("acme/api", "CircleCI deploy key (2021)");
    let old_tokens = [
        github.add_token("release-bot", "repo, workflow"),
        github.add_token("release-bot", "repo"),
    ];
    let new_tokens = [
        github.add_token("release-bot", "repo"),
        github.add_token("release-bot", "repo"),
    ];
    let circleci_token = rekey::sandbox::fake::circleci_token(&mut rng);
    let old_private = rekey::sandbox::fake::ssh_private_key(&mut rng);
    let state = CircleCiState::new(circleci_token.clone())
        .project(
            ProjectSpec::new("gh/acme/api")
                .env(
                    "DEPLOY_KEY_B64",
                    base64::engine::general_purpose::STANDARD.encode(&old_private),
                )
                .env("GH_TOKEN", old_tokens[0].clone())
                .checkout_key(CheckoutKeySpec::deploy_key().preferred(false))
                .checkout_key(CheckoutKeySpec::deploy_key().preferred(true)),
        )
        .project(ProjectSpec::new("gh/acme/web").env("GH_TOKEN", old_tokens[1].clone()));
    let github_token = github.admin_token().to_owned();
    // Two deploy keys: the plan's observed fingerprint says which one is in use.
    let keys = &state.project_by_slug("gh/acme/api").unwrap().checkout_keys;
    let in_use = keys
        .iter()
        .find(|k| k.preferred)
        .unwrap()
        .fingerprint
        .clone();
    let other = keys
        .iter()
        .find(|k| !k.preferred)
        .unwrap()
        .fingerprint
        .clone();
    let mut key = [0u8; 32];
    getrandom::fill(&mut key).unwrap();
    World {
        circleci: Sandbox::start(state).await.unwrap(),
        github: GithubSandbox::start(github).await.unwrap(),
        circleci_token,
        github_token,
        stash_key: base64::engine::general_purpose::STANDARD.encode(key),
        old_tokens,
        new_tokens,
        old_key_id,
        checkout_in_use: in_use,
        checkout_other: other,
    }
}

fn run_id(stdout: &str) -> String {
    // The JSON summary is the last line.
    let last = stdout.lines().last().unwrap_or_default();
    let v: serde_json::Value = serde_json::from_str(last).unwrap();
    v["summary"]["run"].as_str().unwrap().to_owned()
}

fn outcome(stdout: &str, target: &str) -> serde_json::Value {
    let last = stdout.lines().last().unwrap_or_default();
    let v: serde_json::Value = serde_json::from_str(last).unwrap();
    v["summary"]["targets"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["id"] == target)
        .cloned()
        .unwrap()
}

fn all_files(dir: &Path, out: &mut Vec<u8>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            all_files(&path, out);
        } else {
            out.extend(std::fs::read(&path).unwrap());
        }
    }
}

#[test]
fn github_keys_and_tokens_rotate_end_to_end() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let w = rt.block_on(world());
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let plan = dir.path().join("plan.yaml");
    let report = dir.path().join("report.md");
    std::fs::write(&plan, PLAN.replace("FINGERPRINT", &w.checkout_in_use)).unwrap();
    let plan_s = plan.to_str().unwrap();
    let report_s = report.to_str().unwrap();
    let mut transcript: Vec<u8> = Vec::new();
    let mut keep = |o: &Output| {
        transcript.extend(&o.stdout);
        transcript.extend(&o.stderr);
    };

    // 1. No token values: keys rotate, tokens wait for a person.
    let first = w.rekey(&state, &["apply", plan_s, "--output", "json"]);
    keep(&first);
    let stdout = text(&first.stdout);
    assert_eq!(
        first.status.code(),
        Some(4),
        "{stdout}\n{}",
        text(&first.stderr)
    );
    assert_eq!(
        outcome(&stdout, "deploy-key-api")["state"],
        "done",
        "{stdout}"
    );
    assert_eq!(
        outcome(&stdout, "checkout-key-api")["state"],
        "done",
        "{stdout}"
    );
    let pat = outcome(&stdout, "gh-pat");
    assert_eq!(pat["state"], "incomplete", "{stdout}");
    assert!(
        pat["reason"]
            .as_str()
            .unwrap()
            .contains("--value-from-file gh-pat=FILE"),
        "{pat}"
    );
    let run = run_id(&stdout);

    // The deploy key: the old one is gone, the new one's private half is in the binding.
    let keys = w.github.state().keys_of("acme/api");
    assert_eq!(keys.len(), 1, "{keys:?}");
    assert_ne!(keys[0].id, w.old_key_id);
    // The plan's title, and rekey's mark for the orphan sweep.
    assert_eq!(keys[0].title, "rekey e2e [rekey:deploy-key-api]");
    let api = w
        .circleci
        .state()
        .project_by_slug("gh/acme/api")
        .unwrap()
        .clone();
    let written = api.env_vars["DEPLOY_KEY_B64"].value.clone();
    let private = String::from_utf8(
        base64::engine::general_purpose::STANDARD
            .decode(&written)
            .unwrap(),
    )
    .unwrap();
    let parsed = ssh_key::PrivateKey::from_openssh(&private).unwrap();
    assert!(
        parsed
            .public_key()
            .to_openssh()
            .unwrap()
            .starts_with(&keys[0].key)
    );
    // The checkout keys: the one in use is gone, the other untouched, the new one preferred.
    let fps: Vec<&str> = api
        .checkout_keys
        .iter()
        .map(|k| k.fingerprint.as_str())
        .collect();
    assert_eq!(api.checkout_keys.len(), 2, "{fps:?}");
    assert!(!fps.contains(&w.checkout_in_use.as_str()), "{fps:?}");
    assert!(fps.contains(&w.checkout_other.as_str()), "{fps:?}");
    let new = api
        .checkout_keys
        .iter()
        .find(|k| k.fingerprint != w.checkout_other)
        .unwrap();
    assert!(new.preferred);

    // 2. With the values; the old value of one token only.
    let files = dir.path();
    for (name, value) in [
        ("new0", &w.new_tokens[0]),
        ("new1", &w.new_tokens[1]),
        ("old1", &w.old_tokens[1]),
    ] {
        std::fs::write(files.join(name), format!("{value}\n")).unwrap();
    }
    let arg = |t: &str, f: &str| format!("{t}={}", files.join(f).display());
    let second = w.rekey(
        &state,
        &[
            "apply",
            plan_s,
            "--output",
            "json",
            "--report",
            report_s,
            "--value-from-file",
            &arg("gh-pat", "new0"),
            "--value-from-file",
            &arg("gh-pat-api", "new1"),
            "--old-value-from-file",
            &arg("gh-pat-api", "old1"),
        ],
    );
    keep(&second);
    let stdout = text(&second.stdout);
    assert_eq!(
        second.status.code(),
        Some(0),
        "{stdout}\n{}",
        text(&second.stderr)
    );
    assert_eq!(run_id(&stdout), run, "the unfinished run is continued");
    assert_eq!(outcome(&stdout, "gh-pat-api")["state"], "done", "{stdout}");
    let manual = outcome(&stdout, "gh-pat");
    assert_eq!(manual["state"], "awaiting-confirmation", "{stdout}");
    assert!(
        manual["action"]
            .as_str()
            .unwrap()
            .contains(&format!("rekey confirm {run} gh-pat")),
        "{manual}"
    );
    assert!(
        stdout.contains("scopes: repo (the old token: repo)"),
        "the scopes are reported: {stdout}"
    );
    let github = w.github.state();
    assert!(
        !github.token_works(&w.old_tokens[1]),
        "revoked through the API"
    );
    assert!(
        github.token_works(&w.old_tokens[0]),
        "a person must revoke this one"
    );
    let circleci = w.circleci.state();
    for (slug, new) in [
        ("gh/acme/api", &w.new_tokens[0]),
        ("gh/acme/web", &w.new_tokens[1]),
    ] {
        let p = circleci.project_by_slug(slug).unwrap();
        assert_eq!(
            &p.env_vars["GH_TOKEN"].value, new,
            "{slug} holds the new token"
        );
    }
    let md = std::fs::read_to_string(&report).unwrap();
    assert!(md.contains("## Manual steps"), "{md}");
    assert!(md.contains("`gh-pat`"), "{md}");
    assert!(md.contains("1 awaiting confirmation"), "{md}");

    let status = w.rekey(&state, &["status", "--output", "json", &run]);
    keep(&status);
    let v: serde_json::Value = serde_json::from_slice(&status.stdout).unwrap();
    let row = v["targets"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["target"] == "gh-pat")
        .cloned()
        .unwrap();
    assert_eq!(row["state"], "awaiting-confirmation", "{v}");
    assert!(
        row["pending"].as_str().unwrap().contains("by hand"),
        "{row}"
    );

    // A confirmation for a target that waits for none is refused.
    let wrong = w.rekey(&state, &["confirm", &run, "gh-pat-api"]);
    keep(&wrong);
    assert_eq!(wrong.status.code(), Some(2), "{}", text(&wrong.stderr));

    // 3. The person revokes it, confirms, and the run finishes.
    w.github.with_state(|s| {
        for t in s.tokens.iter_mut().filter(|t| t.value == w.old_tokens[0]) {
            t.revoked = true;
        }
    });
    let confirm = w.rekey(&state, &["confirm", &run, "gh-pat"]);
    keep(&confirm);
    assert!(confirm.status.success(), "{}", text(&confirm.stderr));
    let resumed = w.rekey(
        &state,
        &[
            "apply", "--resume", &run, "--output", "json", "--report", report_s,
        ],
    );
    keep(&resumed);
    let stdout = text(&resumed.stdout);
    assert_eq!(
        resumed.status.code(),
        Some(0),
        "{stdout}\n{}",
        text(&resumed.stderr)
    );
    for t in ["deploy-key-api", "checkout-key-api", "gh-pat", "gh-pat-api"] {
        assert_eq!(outcome(&stdout, t)["state"], "done", "{t}: {stdout}");
    }
    assert!(stdout.contains("\"status\":\"complete\""), "{stdout}");

    // Secret hygiene: every output, the state directory, the report.
    let mut haystack = transcript;
    all_files(&state, &mut haystack);
    haystack.extend(std::fs::read(&report).unwrap());
    let haystack = String::from_utf8_lossy(&haystack).into_owned();
    let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
    let mut secrets: Vec<String> = vec![
        w.circleci_token.clone(),
        w.github_token.clone(),
        private.clone(),
        written.clone(),
    ];
    for t in w.old_tokens.iter().chain(&w.new_tokens) {
        secrets.push(t.clone());
        secrets.push(b64(t));
    }
    // A line of the private key's body is enough to find it.
    secrets.extend(
        private
            .lines()
            .filter(|l| !l.starts_with("-----") && l.len() > 20)
            .map(str::to_owned),
    );
    assert!(haystack.len() > 1000, "the scan has something to read");
    for (i, s) in secrets.iter().enumerate() {
        assert!(!haystack.contains(s.as_str()), "secret #{i} leaked");
    }

    // A scheduled run of the plan with max_age: GitHub does not date tokens, but rekey's own
    // rotation does, so the tokens rotated minutes ago are skipped instead of asked for again.
    let scheduled = dir.path().join("scheduled.yaml");
    std::fs::write(
        &scheduled,
        PLAN.replace("FINGERPRINT", &w.checkout_in_use).replace(
            "defaults: {grace: 0s}",
            "defaults: {grace: 0s, max_age: 90d}",
        ),
    )
    .unwrap();
    let again = w.rekey(
        &state,
        &[
            "apply",
            scheduled.to_str().unwrap(),
            "--target",
            "gh-pat",
            "--target",
            "gh-pat-api",
            "--output",
            "json",
        ],
    );
    let stdout = text(&again.stdout);
    assert_eq!(
        again.status.code(),
        Some(0),
        "{stdout}\n{}",
        text(&again.stderr)
    );
    for t in ["gh-pat", "gh-pat-api"] {
        let o = outcome(&stdout, t);
        assert_eq!(o["state"], "skipped", "{t}: {stdout}");
        assert!(
            o["reason"]
                .as_str()
                .unwrap_or("")
                .contains("rotated by run"),
            "{t}: {o}"
        );
    }
}

/// Crash and resume at every journal boundary of the deploy-key and checkout-key targets (a
/// real SIGKILL of the binary), then apply again: each ends done, with exactly one key — the
/// new one, in the binding — and nothing minted twice or left behind.
#[test]
fn github_keys_survive_a_crash_at_every_step() {
    const KEYS_ONLY: &str = "apiVersion: rekey/v1
kind: RotationPlan
metadata: {name: github-crash}
defaults: {grace: 0s}
targets:
  - id: deploy-key-api
    provider: github-deploy-key
    principal: {repository: acme/api}
    bindings:
      - project: gh/acme/api
        vars: {private_key: DEPLOY_KEY_B64}
        encoding: {private_key: base64}
  - id: checkout-key-api
    provider: circleci-checkout-key
    principal: {project: gh/acme/api}
    observed:
      - {project: gh/acme/api, fingerprint: 'FINGERPRINT'}
";
    let points = [
        "inspect:done",
        "mint:intent",
        "mint:done",
        "verify:intent",
        "verify:done",
        "write:intent",
        "write:done",
        "read-back:done",
        "deactivate:skipped",
        "grace:done",
        "revoke:intent",
        "revoke:done",
    ];
    let rt = tokio::runtime::Runtime::new().unwrap();
    for target in ["deploy-key-api", "checkout-key-api"] {
        for point in points {
            // The checkout key has no binding: no write or read-back boundary.
            if target == "checkout-key-api" && point.starts_with("write") {
                continue;
            }
            let w = rt.block_on(world());
            let dir = tempfile::tempdir().unwrap();
            let state = dir.path().join("state");
            let plan = dir.path().join("plan.yaml");
            std::fs::write(&plan, KEYS_ONLY.replace("FINGERPRINT", &w.checkout_in_use)).unwrap();
            let plan_s = plan.to_str().unwrap();
            let crash = format!("{target}:{point}");
            let crashed = w.rekey_crashing(&state, &["apply", plan_s], Some(&crash));
            assert_eq!(
                crashed.status.code(),
                None,
                "{crash}: killed by a signal\n{}",
                text(&crashed.stderr)
            );
            let resumed = w.rekey(&state, &["apply", plan_s, "--output", "json"]);
            let stdout = text(&resumed.stdout);
            assert_eq!(
                resumed.status.code(),
                Some(0),
                "{crash}: {stdout}\n{}",
                text(&resumed.stderr)
            );
            for t in ["deploy-key-api", "checkout-key-api"] {
                assert_eq!(
                    outcome(&stdout, t)["state"],
                    "done",
                    "{crash}: {t}: {stdout}"
                );
            }
            let keys = w.github.state().keys_of("acme/api");
            assert_eq!(keys.len(), 1, "{crash}: one deploy key: {keys:?}");
            assert_ne!(keys[0].id, w.old_key_id, "{crash}");
            let api = w
                .circleci
                .state()
                .project_by_slug("gh/acme/api")
                .unwrap()
                .clone();
            let pem = base64::engine::general_purpose::STANDARD
                .decode(&api.env_vars["DEPLOY_KEY_B64"].value)
                .unwrap();
            let private = ssh_key::PrivateKey::from_openssh(pem).unwrap();
            assert!(
                private
                    .public_key()
                    .to_openssh()
                    .unwrap()
                    .starts_with(&keys[0].key),
                "{crash}: the binding holds the registered key"
            );
            let fps: Vec<&str> = api
                .checkout_keys
                .iter()
                .map(|k| k.fingerprint.as_str())
                .collect();
            assert_eq!(fps.len(), 2, "{crash}: the other key and one new: {fps:?}");
            assert!(!fps.contains(&w.checkout_in_use.as_str()), "{crash}");
            assert!(fps.contains(&w.checkout_other.as_str()), "{crash}");
        }
    }
}
