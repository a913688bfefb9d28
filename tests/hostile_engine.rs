//! The engine's invariants 1 and 2 against hostile or mistaken plans, owners and crashes
//! (issue 9), through the real binary against the simulated owners: every test asserts what
//! happened at the owner and in CircleCI (no write, no revoke, nobody else's credential
//! deleted, the key still there), not only what rekey printed, and scans the outputs for the
//! secrets involved.
//!
//! - an exec binding whose field the mint does not return: nothing written, nothing retired;
//! - an exec mint that fails after creating: the credential it made is deleted;
//! - the same value for a GitHub token's new and old: nothing written, nothing revoked;
//! - a colleague's deploy key made while a mint was interrupted: left alone by the sweep;
//! - a stash key changed after the write: grace and revoke still end the rotation;
//! - durations past what dates can hold: refused by `validate`, `apply` and `hunt`;
//! - two targets on one principal: refused by `validate`.

mod support;

use rekey::sandbox::{GithubSandbox, GithubState};
use std::path::{Path, PathBuf};
use support::assert_no_secret;
use support::world::{PlanSpec, World};

/// The exec owner fixture (`tests/fixtures/exec/owner.py`).
fn owner() -> String {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/exec/owner.py")
        .display()
        .to_string()
}

/// An exec owner whose principal `svc` holds one credential (`cred-old`), and its state file.
fn exec_owner(w: &World) -> (PathBuf, String) {
    let state = w.path("owner.json");
    let old_value = "tok_old_value_0123456789abcdef".to_string();
    let doc = serde_json::json!({"principals": {"svc": {"cred-old": {
        "value": old_value, "status": "active", "created_at": "2022-01-01T00:00:00+00:00"}}}});
    std::fs::write(&state, doc.to_string()).unwrap();
    (state, old_value)
}

/// The owner's credentials of `svc`: id → value.
fn exec_credentials(state: &Path) -> serde_json::Map<String, serde_json::Value> {
    let v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(state).unwrap()).unwrap();
    v["principals"]["svc"]
        .as_object()
        .cloned()
        .unwrap_or_default()
}

/// A plan with one exec target bound to `THING_KEY` of gh/acme/web through `vars`.
fn exec_plan(w: &World, state: &Path, vars: &str, mint_flags: &str) -> PathBuf {
    let cmd = |op: &str, flags: &str| {
        let mut argv = vec![
            "python3".to_string(),
            owner(),
            state.display().to_string(),
            op.to_string(),
        ];
        argv.extend(flags.split_whitespace().map(str::to_string));
        serde_json::to_string(&argv).unwrap()
    };
    let yaml = format!(
        "apiVersion: rekey/v1\nkind: RotationPlan\nmetadata: {{name: hostile}}\ndefaults: {{grace: 0s}}\ntargets:\n  - id: thing\n    provider: exec\n    principal: {{service: svc}}\n    exec:\n      mint: {}\n      verify: {}\n      revoke: {}\n      inspect: {}\n    bindings:\n      - project: gh/acme/web\n        vars: {vars}\n",
        cmd("mint", mint_flags),
        cmd("verify", ""),
        cmd("revoke", ""),
        cmd("inspect", "")
    );
    let path = w.path("exec-plan.yaml");
    std::fs::write(&path, yaml).unwrap();
    path
}

fn scan(what: &str, run: &support::world::Invocation, secrets: &[String]) {
    let secrets: Vec<&str> = secrets.iter().map(String::as_str).collect();
    assert_no_secret(&format!("{what} stdout"), &run.stdout, &secrets);
    assert_no_secret(&format!("{what} stderr"), &run.stderr, &secrets);
}

#[test]
fn exec_binding_field_the_mint_does_not_return_retires_nothing() {
    let w = World::sandbox(1);
    let (state, old_value) = exec_owner(&w);
    // The mint answers `{"fields": {"value": …}}`; the binding misspells it.
    let plan = exec_plan(&w, &state, "{valeu: THING_KEY}", "");
    w.clear_request_logs();
    let run = w.apply(&plan, &[]);
    assert_ne!(run.code, Some(0), "{}\n{}", run.stdout, run.stderr);
    assert!(
        run.stdout.contains("valeu") || run.stderr.contains("valeu"),
        "the refusal names the field:\n{}\n{}",
        run.stdout,
        run.stderr
    );
    // At the owner: the old credential is still there and active, the new one deleted.
    let creds = exec_credentials(&state);
    assert_eq!(
        creds.keys().collect::<Vec<_>>(),
        vec!["cred-old"],
        "{creds:?}"
    );
    assert_eq!(creds["cred-old"]["status"], "active");
    assert_eq!(creds["cred-old"]["value"], old_value.as_str());
    // In CircleCI: nothing written.
    assert!(
        w.circleci_mutations().is_empty(),
        "{:?}",
        w.circleci_mutations()
    );
    assert_eq!(w.project_value("gh/acme/web", "THING_KEY"), None);
    scan("apply", &run, &[old_value]);
}

#[test]
fn exec_mint_that_fails_after_creating_leaves_no_orphan() {
    let w = World::sandbox(1);
    let (state, old_value) = exec_owner(&w);
    let plan = exec_plan(&w, &state, "{value: THING_KEY}", "--then-fail");
    w.clear_request_logs();
    let run = w.apply(&plan, &[]);
    assert_eq!(run.code, Some(1), "{}\n{}", run.stdout, run.stderr);
    // The credential the failing mint created is gone; the old one untouched.
    let creds = exec_credentials(&state);
    assert_eq!(
        creds.keys().collect::<Vec<_>>(),
        vec!["cred-old"],
        "{creds:?}"
    );
    assert_eq!(creds["cred-old"]["status"], "active");
    assert!(
        w.circleci_mutations().is_empty(),
        "{:?}",
        w.circleci_mutations()
    );
    scan("apply", &run, &[old_value]);
}

/// The CircleCI/AWS world plus a GitHub simulator holding `acme/api`, and the environment
/// that points rekey at it.
fn github(w: &World, state: GithubState) -> (GithubSandbox, Vec<(String, String)>) {
    let gh =
        w.rt.block_on(GithubSandbox::start(state))
            .unwrap_or_else(|e| panic!("github sandbox: {e}"));
    let env = vec![
        ("GITHUB_API_URL".to_string(), gh.base_url()),
        ("GITHUB_TOKEN".to_string(), gh.admin_token()),
    ];
    (gh, env)
}

fn env_refs(env: &[(String, String)]) -> Vec<(&str, &str)> {
    env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect()
}

#[test]
fn same_value_for_a_new_and_old_github_token_revokes_nothing() {
    let w = World::sandbox(1);
    let mut state = GithubState::new().repo("acme/api");
    let token = state.add_token("release-bot", "repo");
    let (gh, env) = github(&w, state);
    let plan = w.path("token-plan.yaml");
    std::fs::write(
        &plan,
        "apiVersion: rekey/v1\nkind: RotationPlan\nmetadata: {name: hostile}\ndefaults: {grace: 0s}\ntargets:\n  - id: gh-pat\n    provider: github-token\n    principal: {user: release-bot}\n    bindings:\n      - project: gh/acme/web\n        vars: {token: GH_TOKEN}\n",
    )
    .unwrap();
    let file = w.path("token.txt");
    std::fs::write(&file, &token).unwrap();
    let arg = format!("gh-pat={}", file.display());
    w.clear_request_logs();
    let mut args = vec!["--value-from-file", arg.as_str()];
    args.extend(["--old-value-from-file", arg.as_str()]);
    let state_dir = w.state_dir().display().to_string();
    let plan_arg = plan.display().to_string();
    let mut all = vec![
        "apply",
        plan_arg.as_str(),
        "--state-dir",
        state_dir.as_str(),
    ];
    all.extend(args);
    all.extend(["--output", "json"]);
    let run = w.run(&all, &env_refs(&env));
    assert_eq!(run.code, Some(1), "{}\n{}", run.stdout, run.stderr);
    // At GitHub: the token still works (not revoked); in CircleCI: nothing written.
    assert!(
        gh.with_state(|s| s.token_works(&token)),
        "the token was revoked"
    );
    assert!(
        gh.mutating_requests().is_empty(),
        "{:?}",
        gh.mutating_requests()
    );
    assert!(
        w.circleci_mutations().is_empty(),
        "{:?}",
        w.circleci_mutations()
    );
    scan("apply", &run, &[token]);
}

#[test]
fn the_orphan_sweep_leaves_a_colleagues_deploy_key_alone() {
    let w = World::sandbox(1);
    let mut state = GithubState::new().repo("acme/api");
    let old = state.add_foreign_key("acme/api", "CircleCI deploy key (2021)");
    let (gh, env) = github(&w, state);
    let plan = w.path("deploy-plan.yaml");
    std::fs::write(
        &plan,
        "apiVersion: rekey/v1\nkind: RotationPlan\nmetadata: {name: hostile}\ndefaults: {grace: 0s}\ntargets:\n  - id: deploy-key-api\n    provider: github-deploy-key\n    principal: {repository: acme/api, title: ci deploy key}\n    bindings:\n      - project: gh/acme/api\n        vars: {private_key: DEPLOY_KEY}\n",
    )
    .unwrap();
    let state_dir = w.state_dir().display().to_string();
    let plan_arg = plan.display().to_string();
    let args = [
        "apply",
        plan_arg.as_str(),
        "--state-dir",
        state_dir.as_str(),
        "--output",
        "json",
    ];
    // The mint's intent is journaled, then the process dies before the call.
    let mut crash_env = env_refs(&env);
    crash_env.push(("REKEY_CRASH_AT", "deploy-key-api:mint-before-call"));
    let crashed = w.run(&args, &crash_env);
    assert_ne!(crashed.code, Some(0), "{}", crashed.stderr);
    // Meanwhile a colleague adds a deploy key to the same repository.
    let colleague = gh.with_state(|s| s.add_foreign_key("acme/api", "release automation"));
    let resumed = w.run(&args, &env_refs(&env));
    let keys: Vec<u64> = gh.with_state(|s| s.keys_of("acme/api").iter().map(|k| k.id).collect());
    assert!(
        keys.contains(&colleague),
        "the colleague's key {colleague} was deleted: {keys:?}\n{}",
        resumed.stdout
    );
    // The rotation itself went through: the old key revoked, a new one (rekey's) bound.
    assert_eq!(
        resumed.code,
        Some(0),
        "{}\n{}",
        resumed.stdout,
        resumed.stderr
    );
    assert!(!keys.contains(&old), "{keys:?}");
    assert_eq!(keys.len(), 2, "{keys:?}");
}

#[test]
fn a_changed_stash_key_does_not_strand_grace_and_revoke() {
    let w = World::sandbox(1);
    let plan = w.write_plan(&PlanSpec {
        grace: "2s".into(),
        ..PlanSpec::default()
    });
    let old = w.old_key.clone();
    let first = w.apply(&plan, &["--output", "json"]);
    assert_eq!(first.code, Some(0), "{}\n{}", first.stdout, first.stderr);
    assert_eq!(first.summary()["status"], "waiting");
    let run = first.run_id();
    std::thread::sleep(std::time::Duration::from_millis(2200));
    // Another machine, another stash key: the value is not needed any more, only ids.
    let other_key = "A".repeat(43) + "=";
    let state = w.state_dir().display().to_string();
    let resumed = w.run(
        &[
            "apply",
            "--resume",
            run.as_str(),
            "--state-dir",
            state.as_str(),
            "--output",
            "json",
        ],
        &[("REKEY_STASH_KEY", other_key.as_str())],
    );
    assert_eq!(
        resumed.code,
        Some(0),
        "{}\n{}",
        resumed.stdout,
        resumed.stderr
    );
    // At the owner: the old key is gone, one (new) key remains.
    let keys = w.keys();
    assert!(keys.iter().all(|k| k.id != old.0), "{keys:?}");
    assert_eq!(keys.len(), 1, "{keys:?}");
    scan("resume", &resumed, &[old.1]);
}

#[test]
fn durations_past_what_dates_hold_are_refused_before_anything_changes() {
    let w = World::sandbox(1);
    let plan = w.write_plan(&PlanSpec {
        grace: "200000000d".into(),
        ..PlanSpec::default()
    });
    validate_refuses(&w, &plan, "grace", "100 years");
    w.clear_request_logs();
    let keys_before = w.keys();
    let apply = w.apply(&plan, &[]);
    assert_eq!(apply.code, Some(2), "{}\n{}", apply.stdout, apply.stderr);
    assert!(!apply.stderr.contains("panicked"), "{}", apply.stderr);
    assert!(
        w.circleci_mutations().is_empty(),
        "{:?}",
        w.circleci_mutations()
    );
    assert!(w.aws_mutations().is_empty(), "{:?}", w.aws_mutations());
    assert_eq!(w.keys(), keys_before);
    // The command line too.
    let trail = w.path("trail");
    std::fs::create_dir_all(&trail).unwrap();
    let trail = trail.display().to_string();
    let hunt = w.run(
        &[
            "hunt",
            "--since",
            "2022-12-21T00:00:00Z",
            "--baseline",
            "200000000d",
            "--cloudtrail",
            trail.as_str(),
        ],
        &[],
    );
    assert_eq!(hunt.code, Some(2), "{}\n{}", hunt.stdout, hunt.stderr);
    assert!(!hunt.stderr.contains("panicked"), "{}", hunt.stderr);
}

#[test]
fn two_targets_on_one_principal_are_refused_for_every_listing_provider() {
    let w = World::sandbox(1);
    let (state, _) = exec_owner(&w);
    let exec = exec_plan(&w, &state, "{value: THING_KEY}", "");
    let exec_text = std::fs::read_to_string(&exec).unwrap();
    let second_exec = exec_text
        .split("targets:\n")
        .nth(1)
        .unwrap()
        .replace("id: thing", "id: thing-2")
        .replace("gh/acme/web", "gh/acme/api");
    // Two targets of `provider` on the principal `principal`, bound to different variables.
    let pair = |provider: &str, principal: &str, field: &str| {
        ["a", "b"]
            .iter()
            .map(|id| {
                format!(
                    "  - id: {id}\n    provider: {provider}\n    principal: {principal}\n    bindings:\n      - project: gh/acme/api\n        vars: {{{field}: K_{id}}}\n"
                )
            })
            .collect::<String>()
    };
    let cases = [
        (
            "deploy keys",
            pair("github-deploy-key", "{repository: acme/api}", "private_key"),
        ),
        (
            "gcp keys",
            pair(
                "gcp-sa-key",
                "{service_account: ci@p.iam.gserviceaccount.com}",
                "key_json",
            ),
        ),
        (
            "exec",
            format!(
                "{}{second_exec}",
                exec_text.split("targets:\n").nth(1).unwrap()
            ),
        ),
    ];
    for (what, targets) in cases {
        let path = w.path("shared.yaml");
        std::fs::write(
            &path,
            format!("apiVersion: rekey/v1\nkind: RotationPlan\nmetadata: {{name: shared}}\ntargets:\n{targets}"),
        )
        .unwrap();
        validate_refuses(&w, &path, what, "both rotate");
    }
}

#[test]
fn an_exec_binding_that_maps_no_field_is_refused() {
    let w = World::sandbox(1);
    let (state, _) = exec_owner(&w);
    let plan = exec_plan(&w, &state, "{}", "");
    validate_refuses(&w, &plan, "exec", "maps no field");
}

/// `rekey validate PLAN` exits 2 with a diagnostic that says `phrase`.
fn validate_refuses(w: &World, plan: &Path, what: &str, phrase: &str) {
    let p = plan.display().to_string();
    let run = w.run(&["validate", p.as_str()], &[]);
    assert_eq!(run.code, Some(2), "{what}: {}\n{}", run.stdout, run.stderr);
    assert!(
        run.stderr.contains(phrase) || run.stdout.contains(phrase),
        "{what}: {}\n{}",
        run.stdout,
        run.stderr
    );
}

#[test]
#[cfg(target_os = "linux")]
fn a_keyring_key_made_over_sealed_entries_is_an_error_not_a_silent_new_key() {
    use rekey::credentials::{self, keyutils};
    use rekey::engine::journal::Journal;
    use rekey::engine::stash::{KeySource, Stash, StashError, StashKey};
    use rekey::providers::Minted;
    use rekey::secret::Secret;

    if keyutils::session_keyring().is_err() {
        eprintln!("SKIPPED: no kernel keyrings here (keyctl is blocked or missing)");
        return;
    }
    /// Removes the test's keyring entry however the test ends.
    struct Cleanup(String);
    impl Drop for Cleanup {
        fn drop(&mut self) {
            let _ = credentials::keyring_delete(&self.0);
        }
    }
    let dir = tempfile::tempdir().unwrap();
    let journal = Journal::open(dir.path()).unwrap();
    let run = journal
        .create_run("p", "p.yaml", "kind: RotationPlan\n")
        .unwrap();
    // A value sealed with the key the keyring held before a reboot cleared it.
    let before = StashKey::generate().unwrap();
    let minted = Minted {
        id: "AKIAHOSTILEENGINE01".into(),
        fields: [(
            "secret_access_key".to_string(),
            Secret::new("hostile-engine-secret-value"),
        )]
        .into(),
    };
    Stash::open(dir.path(), before.clone())
        .unwrap()
        .put(&run, "t", &minted)
        .unwrap();
    let mut bytes = [0u8; 12];
    getrandom::fill(&mut bytes).unwrap();
    let entry = format!("hostile-engine-{}", hex::encode(bytes));
    let _cleanup = Cleanup(entry.clone());
    let fresh = StashKey::from_keyring_entry(&entry).unwrap();
    assert_eq!(fresh.source(), KeySource::Keyring { created: true });
    let err = Stash::open(dir.path(), fresh).unwrap_err();
    assert!(
        matches!(err, StashError::KeyLost { entries: 1, .. }),
        "{err}"
    );
    assert!(err.to_string().contains("REKEY_STASH_KEY"), "{err}");
    // The sealed value is still there for the right key.
    let kept = Stash::open(dir.path(), before)
        .unwrap()
        .get(&run, "t")
        .unwrap();
    assert_eq!(kept.map(|m| m.id), Some(minted.id));
}
