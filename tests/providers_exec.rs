//! The `exec` provider against a fixture owner (`tests/fixtures/exec/owner.py`, which speaks
//! the protocol and exits 99 if a secret value ever reaches its argv, environment or
//! /proc/self/cmdline): the shared conformance suite, plus the protocol's failure modes:
//! timeout (the command's whole process group is killed), non-zero exit with stderr redacted,
//! malformed JSON never quoted, exit statuses mapped, no inspect command.

mod support;

use async_trait::async_trait;
use rekey::plan::{
    ExecCommands, Located, PlanDuration, Principal, PrincipalField, ProviderKind, Target,
};
use rekey::providers::exec::ExecProvider;
use rekey::providers::{CredentialStatus, Provider, ProviderError};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use support::conformance::{self, Harness, Transcript, target};
use support::{LogCapture, assert_no_secret};

fn fixture() -> String {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/exec/owner.py")
        .display()
        .to_string()
}

struct ExecHarness {
    _dir: tempfile::TempDir,
    state: PathBuf,
    provider: ExecProvider,
}

impl ExecHarness {
    fn new() -> ExecHarness {
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("owner.json");
        std::fs::write(&state, r#"{"principals": {}}"#).unwrap();
        ExecHarness {
            _dir: dir,
            state,
            provider: ExecProvider::new(),
        }
    }

    fn add_principal(&self, name: &str) {
        let mut v: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&self.state).unwrap()).unwrap();
        v["principals"][name] = serde_json::json!({});
        std::fs::write(&self.state, v.to_string()).unwrap();
    }

    fn command(&self, op: &str, extra: &[&str]) -> Located<Vec<String>> {
        let mut argv = vec![
            "python3".to_owned(),
            fixture(),
            self.state.display().to_string(),
            op.to_owned(),
        ];
        argv.extend(extra.iter().map(|s| (*s).to_owned()));
        Located::new(argv)
    }

    fn target(&self, name: &str) -> Target {
        let mut t = target(
            &format!("exec-{name}"),
            ProviderKind::Exec,
            Principal::default().with(PrincipalField::Service, name.to_owned()),
        );
        t.exec = Some(Box::new(ExecCommands {
            mint: self.command("mint", &[]),
            verify: self.command("verify", &[]),
            revoke: self.command("revoke", &[]),
            inspect: Some(self.command("inspect", &[])),
            deactivate: Some(self.command("deactivate", &[])),
            timeout: Some(Located::new(PlanDuration(20))),
        }));
        t
    }
}

#[async_trait]
impl Harness for ExecHarness {
    fn provider(&self) -> &dyn Provider {
        &self.provider
    }

    async fn fresh_principal(&self, name: &str) -> Target {
        self.add_principal(name);
        self.target(name)
    }

    fn missing_principal(&self) -> Target {
        self.target("nobody")
    }

    fn unknown_credential_id(&self) -> String {
        "cred-000000000000".to_owned()
    }
}

async fn run_scenario<F>(scenario: F)
where
    F: AsyncFnOnce(&dyn Harness) -> Transcript,
{
    let h = ExecHarness::new();
    let logs = LogCapture::start();
    let mut transcript = scenario(&h).await;
    let log_text = logs.text();
    assert!(
        log_text.contains("exec"),
        "the capture saw the provider's lines"
    );
    // Every value the owner ever held, revoked ones included, is in its state only while
    // live; the transcript has the minted ones.
    if transcript.secrets.is_empty() {
        transcript
            .secrets
            .push("tok_never-minted-placeholder".to_owned());
    }
    transcript.assert_clean(&[("logs", &log_text)]);
}

#[tokio::test]
async fn conformance_lifecycle() {
    run_scenario(async |h| conformance::lifecycle(h).await).await;
}

#[tokio::test]
async fn conformance_capacity() {
    // An exec owner declares no limit: the scenario has nothing to check (a command may
    // still answer Quota, status 5, tested below).
    let h = ExecHarness::new();
    assert_eq!(h.provider.capabilities().max_credentials, None);
    assert!(conformance::capacity(&h).await.texts.is_empty());
}

#[tokio::test]
async fn conformance_wrong_principal() {
    run_scenario(async |h| conformance::wrong_principal(h).await).await;
}

#[tokio::test]
async fn conformance_missing_principal_and_credential() {
    run_scenario(async |h| conformance::missing_things(h).await).await;
}

/// A command that outlives `exec.timeout` fails the step, and its process group dies with it:
/// here a shell whose background `sleep` would otherwise hold the pipes open.
#[tokio::test]
async fn timeout_kills_the_whole_command() {
    let h = ExecHarness::new();
    let dir = tempfile::tempdir().unwrap();
    let pidfile = dir.path().join("pid");
    let mut t = h.target("slow");
    let exec = t.exec.as_mut().unwrap();
    exec.mint = Located::new(vec![
        "sh".into(),
        "-c".into(),
        format!("sleep 30 & echo $! > {}; wait", pidfile.display()),
    ]);
    exec.timeout = Some(Located::new(PlanDuration(1)));
    let began = Instant::now();
    let err = h.provider.mint(&t).await.unwrap_err();
    assert!(
        began.elapsed() < Duration::from_secs(10),
        "{:?}",
        began.elapsed()
    );
    assert!(matches!(err, ProviderError::Failed(_)), "{err:?}");
    assert!(
        err.to_string().contains("did not finish within 1s"),
        "{err}"
    );
    let pid: i32 = std::fs::read_to_string(&pidfile)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    // The killed sleep may linger a moment as a zombie of the killed shell: wait for it.
    let mut alive = true;
    for _ in 0..50 {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        alive = !stat.is_empty() && !stat.contains(") Z ");
        if !alive {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(!alive, "the command's child {pid} survived the timeout");
}

/// A non-zero exit fails the step with the command's stderr, every secret of the call
/// replaced; status 4 is Rejected, 75 Transient, 5 Quota, others Failed.
#[tokio::test]
async fn non_zero_exit_quotes_stderr_redacted() {
    let h = ExecHarness::new();
    let mut t = h.fresh_principal("failing").await;
    let m = h.provider.mint(&t).await.unwrap();
    let value = m.fields["value"].expose().to_owned();
    for (status, check) in [
        (
            "1",
            (|e: &ProviderError| matches!(e, ProviderError::Failed(_)))
                as fn(&ProviderError) -> bool,
        ),
        ("4", |e| matches!(e, ProviderError::Rejected(_))),
        ("75", |e| e.is_transient()),
        ("5", |e| matches!(e, ProviderError::Quota(_))),
    ] {
        t.exec.as_mut().unwrap().verify = h.command("verify", &["--fail", status]);
        let err = h.provider.verify(&t, &m).await.unwrap_err();
        assert!(check(&err), "status {status}: {err:?}");
        let text = err.to_string();
        assert!(
            text.contains(&format!("exited with status {status}")),
            "{text}"
        );
        assert!(
            text.contains("owner refused the credential [redacted]"),
            "{text}"
        );
        assert!(text.contains("see the owner's log"), "{text}");
        assert_no_secret("exec error", &format!("{text} {err:?}"), &[&value]);
    }
}

/// A mint that printed its answer, then failed and repeated the value on stderr: the value
/// printed on stdout is redacted from the error too.
#[tokio::test]
async fn a_failing_mint_does_not_leak_what_it_printed() {
    let h = ExecHarness::new();
    let mut t = h.fresh_principal("half").await;
    t.exec.as_mut().unwrap().mint = h.command("mint", &["--then-fail"]);
    let err = h.provider.mint(&t).await.unwrap_err();
    let text = err.to_string();
    assert!(
        text.contains("created [redacted] but could not record it"),
        "{text}"
    );
    assert!(!text.contains("tok_"), "{text}");
}

/// Malformed JSON on stdout fails the step without quoting stdout (it may hold a secret).
#[tokio::test]
async fn malformed_json_is_a_failure_that_quotes_nothing() {
    let h = ExecHarness::new();
    let mut t = h.fresh_principal("garbage").await;
    t.exec.as_mut().unwrap().mint = h.command("mint", &["--garbage"]);
    let err = h.provider.mint(&t).await.unwrap_err();
    assert!(matches!(err, ProviderError::Failed(_)), "{err:?}");
    let text = err.to_string();
    assert!(text.contains("not the expected JSON"), "{text}");
    assert!(
        !text.contains("not\", \"a\"") && !text.contains("string\""),
        "{text}"
    );
    t.exec.as_mut().unwrap().inspect = Some(Located::new(vec![
        "echo".into(),
        "{\"principal\": 3}".into(),
    ]));
    assert!(matches!(
        h.provider.inspect(&t).await,
        Err(ProviderError::Failed(_))
    ));
}

/// Positive control of the fixture's check: a value in argv is caught (exit 99), so the
/// conformance runs above prove rekey never puts one there.
#[tokio::test]
async fn the_fixture_catches_a_secret_in_argv() {
    let h = ExecHarness::new();
    let mut t = h.fresh_principal("leaky").await;
    let m = h.provider.mint(&t).await.unwrap();
    let value = m.fields["value"].expose().to_owned();
    t.exec.as_mut().unwrap().verify = h.command("verify", &[&value]);
    let err = h.provider.verify(&t, &m).await.unwrap_err();
    assert!(err.to_string().contains("status 99"), "{err}");
    assert!(err.to_string().contains("SECRET VALUE IN ARGV"), "{err}");
}

/// Without an inspect command, rekey knows only `principal.key_id`; without a deactivate
/// command the target cannot deactivate (capabilities per target say so).
#[tokio::test]
async fn optional_commands() {
    let h = ExecHarness::new();
    let mut t = h.fresh_principal("minimal").await;
    assert!(h.provider.capabilities_for(&t).deactivate);
    let exec = t.exec.as_mut().unwrap();
    exec.inspect = None;
    exec.deactivate = None;
    assert!(!h.provider.capabilities_for(&t).deactivate);
    assert!(h.provider.inspect(&t).await.unwrap().credentials.is_empty());
    t.principal
        .set(PrincipalField::KeyId, Some(Located::new("cred-old".into())));
    let i = h.provider.inspect(&t).await.unwrap();
    assert_eq!(i.principal, "minimal");
    assert_eq!(i.credentials.len(), 1);
    assert_eq!(i.credentials[0].id, "cred-old");
    assert_eq!(i.credentials[0].status, CredentialStatus::Active);
    assert!(matches!(
        h.provider.deactivate(&t, "cred-old").await,
        Err(ProviderError::Unsupported { .. })
    ));
    t.exec = None;
    assert!(matches!(
        h.provider.mint(&t).await,
        Err(ProviderError::Failed(_))
    ));
    let mut t = h.target("x");
    t.exec.as_mut().unwrap().mint = Located::new(vec!["/nonexistent/command".into()]);
    let err = h.provider.mint(&t).await.unwrap_err();
    assert!(err.to_string().contains("cannot start"), "{err}");
}
