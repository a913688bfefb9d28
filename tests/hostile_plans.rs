//! Malicious plans (DESIGN.md, "Threat model": a plan is reviewed data, not code). A plan in
//! an unreviewed pull request, checked by `validate` and `apply --dry-run`, must not send
//! rekey's credentials to a host the operator did not name, must not run its commands unless
//! the operator asks, and its commands never see rekey's own credentials. Each test asserts
//! at the owner: what the simulators received, what the plan's command could see.

mod support;

use std::path::Path;
use support::world::{PROJECTS, World};

/// The World's own target, plus `sections` (an `endpoints:` block, say).
fn plan_with(w: &World, sections: &str) -> std::path::PathBuf {
    let spec = support::world::PlanSpec {
        sections: sections.to_owned(),
        ..Default::default()
    };
    w.write_plan(&spec)
}

#[test]
fn a_plan_endpoint_off_the_providers_hosts_is_refused_before_any_request() {
    let w = World::sandbox(1);
    // "evil" as a non-official https host and as a non-loopback plain-http address.
    let plan = plan_with(
        &w,
        "endpoints:\n  azure_authority: https://evil.example/tenant\n  gcp_token: http://10.255.255.1/token\n",
    );
    let plan_arg = plan.display().to_string();

    let validate = w.run(&["validate", &plan_arg], &[]);
    validate.expect_code(2, "validate refuses the endpoints");
    assert!(
        validate.stderr.contains("endpoints.azure_authority")
            && validate.stderr.contains("--allow-endpoint evil.example")
            && validate.stderr.contains("endpoints.gcp_token")
            && validate.stderr.contains("plain http"),
        "{}",
        validate.stderr
    );

    w.clear_request_logs();
    let dry = w.apply(&plan, &["--dry-run"]);
    dry.expect_code(2, "the dry run refuses the plan");
    assert!(dry.stderr.contains("evil.example"), "{}", dry.stderr);
    // Nothing was asked of anyone: refused before the first request.
    assert!(
        w.circleci.requests().is_empty(),
        "{:?}",
        w.circleci.requests()
    );
    assert!(w.aws_actions().is_empty(), "{:?}", w.aws_actions());

    // The operator, not the plan, widens the list.
    let plan = plan_with(
        &w,
        "endpoints:\n  azure_authority: https://evil.example/tenant\n",
    );
    let plan_arg = plan.display().to_string();
    w.run(
        &["validate", &plan_arg, "--allow-endpoint", "evil.example"],
        &[],
    )
    .expect_code(0, "allowed on the command line");
    w.run(
        &["validate", &plan_arg],
        &[("REKEY_ALLOW_ENDPOINTS", "other.example,evil.example")],
    )
    .expect_code(0, "allowed in the environment");
}

#[test]
fn circleci_host_over_plain_http_off_loopback_is_refused() {
    let w = World::sandbox(1);
    let plan = plan_with(&w, "");
    let plan_arg = plan.display().to_string();
    let state = w.state_dir().display().to_string();
    let out = w.run(
        &["apply", &plan_arg, "--dry-run", "--state-dir", &state],
        &[("CIRCLECI_HOST", "http://circleci.corp.example")],
    );
    out.expect_code(2, "plain http off loopback");
    assert!(
        out.stderr.contains("CIRCLECI_HOST") && out.stderr.contains("plain http"),
        "{}",
        out.stderr
    );
    let out = w.run(
        &["apply", &plan_arg, "--dry-run", "--state-dir", &state],
        &[("GITHUB_API_URL", "http://ghe.corp.example/api/v3")],
    );
    out.expect_code(2, "plain http off loopback");
    assert!(out.stderr.contains("GITHUB_API_URL"), "{}", out.stderr);
}

/// A plan with one exec target whose inspect command records what it can see into `dir`.
fn spying_plan(w: &World) -> std::path::PathBuf {
    let dir = w.dir.path().display();
    let inspect = format!(
        "env > {dir}/inspect-env.txt; ulimit -c > {dir}/core-limit.txt; \
         echo '{{\"principal\": \"npm\", \"credentials\": []}}'"
    );
    let yaml = format!(
        r#"apiVersion: rekey/v1
kind: RotationPlan
metadata: {{name: spy}}
targets:
  - id: npm-publish
    provider: exec
    principal: {{service: npm}}
    bindings:
      - project: {project}
        vars: {{value: NPM_TOKEN}}
    exec:
      mint: [sh, -c, "env > {dir}/mint-env.txt; exit 1"]
      verify: ["true"]
      revoke: ["true"]
      inspect: [sh, -c, {inspect:?}]
"#,
        project = PROJECTS[0],
    );
    let path = w.path("spy.yaml");
    std::fs::write(&path, yaml).unwrap_or_else(|e| panic!("{e}"));
    path
}

/// rekey's own credentials, as a CI job's environment holds them (World::command adds AWS_*,
/// CIRCLECI_TOKEN and REKEY_STASH_KEY).
const OWN: &[(&str, &str)] = &[
    ("GITHUB_TOKEN", "ghp_rekeys-own-github-token-0000"),
    ("AZURE_CLIENT_SECRET", "rekeys-own-azure-client-secret"),
    ("GOOGLE_OAUTH_ACCESS_TOKEN", "ya29.rekeys-own-google-token"),
    ("NPM_TOKEN_ADMIN", "npm_operator-passed-token"),
];

#[test]
fn a_dry_run_runs_no_plan_command_unless_the_operator_asks() {
    let w = World::sandbox(1);
    let plan = spying_plan(&w);
    let out = w.apply(&plan, &["--dry-run"]);
    assert!(
        !w.path("inspect-env.txt").exists(),
        "the plan's inspect command ran in a dry run"
    );
    assert!(
        out.stdout.contains("not inspected"),
        "the preview says why: {}\n{}",
        out.stdout,
        out.stderr
    );
    assert!(w.circleci_mutations().is_empty());
}

#[cfg(target_os = "linux")]
#[test]
fn plan_commands_see_an_allow_listed_environment_and_no_core_dumps() {
    use std::os::unix::process::CommandExt;
    let w = World::sandbox(1);
    let plan = spying_plan(&w);
    let state = w.state_dir().display().to_string();
    let mut command = w.command();
    command
        .args([
            "apply",
            &plan.display().to_string(),
            "--dry-run",
            "--dry-run-exec",
            "--exec-env",
            "NPM_TOKEN_ADMIN",
            "--state-dir",
            &state,
        ])
        .envs(OWN.iter().copied());
    // Core dumps allowed as far as the hard limit goes: rekey must turn them off itself.
    // SAFETY: setrlimit in the child before exec; async-signal-safe, no allocation.
    unsafe {
        command.pre_exec(|| {
            let mut limit = libc::rlimit {
                rlim_cur: 0,
                rlim_max: 0,
            };
            libc::getrlimit(libc::RLIMIT_CORE, &mut limit);
            limit.rlim_cur = limit.rlim_max;
            libc::setrlimit(libc::RLIMIT_CORE, &limit);
            Ok(())
        });
    }
    let out = command.output().unwrap_or_else(|e| panic!("rekey: {e}"));
    let env = std::fs::read_to_string(w.path("inspect-env.txt")).unwrap_or_else(|e| {
        panic!(
            "the inspect command did not run ({e}): {}",
            String::from_utf8_lossy(&out.stderr)
        )
    });
    let names: Vec<&str> = env
        .lines()
        .filter_map(|l| l.split_once('=').map(|(k, _)| k))
        .collect();
    assert!(
        names.contains(&"PATH") && names.contains(&"HOME"),
        "{names:?}"
    );
    assert!(names.contains(&"NPM_TOKEN_ADMIN"), "{names:?}");
    for name in &names {
        assert!(
            !name.starts_with("AWS_")
                && !name.starts_with("AZURE_")
                && !name.starts_with("GOOGLE_")
                && !name.starts_with("REKEY_")
                && !["GITHUB_TOKEN", "CIRCLECI_TOKEN", "CIRCLECI_HOST"].contains(name),
            "{name} reached the plan's command: {names:?}"
        );
    }
    let own: Vec<&str> = OWN[..3].iter().map(|(_, v)| *v).collect();
    support::assert_no_secret("the command's environment", &env, &own);
    support::assert_no_secret("the command's environment", &env, &[&w.stash_key]);
    assert!(!w.path("mint-env.txt").exists(), "a dry run never mints");
    let core = std::fs::read_to_string(w.path("core-limit.txt")).unwrap_or_default();
    assert_eq!(
        core.trim(),
        "0",
        "core dumps stay off in rekey and its children"
    );
}

#[test]
fn exec_env_cannot_name_rekeys_own_credentials() {
    let w = World::sandbox(1);
    let plan = spying_plan(&w);
    let out = w.apply(
        &plan,
        &[
            "--dry-run",
            "--dry-run-exec",
            "--exec-env",
            "AWS_SECRET_ACCESS_KEY",
        ],
    );
    out.expect_code(2, "refused");
    assert!(
        out.stderr.contains("never reach a plan command"),
        "{}",
        out.stderr
    );
    assert!(!Path::new(&w.path("inspect-env.txt")).exists());
}
