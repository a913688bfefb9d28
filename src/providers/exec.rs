//! The `exec` provider: any credential owner rekey does not know (npm, Docker Hub, Slack, a
//! database password), through commands the plan names.
//!
//! # Protocol
//!
//! Each operation runs the target's command for it (`exec.mint`, `exec.verify`,
//! `exec.revoke`, optionally `exec.inspect` and `exec.deactivate`: argv arrays, run directly,
//! no shell, in rekey's working directory). rekey writes one JSON object to the command's
//! stdin and closes it; the command answers on stdout (one JSON object, only where said
//! below) and by its exit status. Secret values travel **only through these pipes**: never in
//! argv, never in the environment. The child's environment is an allow-list: `PATH`, `HOME`,
//! `LANG`, `TMPDIR`, and the variables the operator names (`--exec-env NAME`); never rekey's
//! own credentials (`AWS_*`, `AZURE_*`, `GOOGLE_*`, `REKEY_*`, `CIRCLECI_TOKEN`,
//! `GITHUB_TOKEN`), whatever is named. A plan cannot widen it. In a dry run without
//! `--dry-run-exec` no command runs at all ([`ExecProvider::not_running`]).
//!
//! stdin, every operation:
//! `{"operation": "mint", "target": "<target id>", "principal": {<the plan's principal>}}`
//! plus, for verify: `"id": "<credential id>", "fields": {"<field>": "<value>", …}`; for
//! revoke and deactivate: `"id": "<credential id>"`.
//!
//! stdout:
//! - mint: `{"id": "<public id of the new credential>", "fields": {"<field>": "<value>"}}`;
//!   the field names are what the plan's bindings map (`vars: {value: NPM_TOKEN}`).
//! - inspect: `{"principal": "<name>", "credentials": [{"id": "…", "status": "active" |
//!   "inactive", "created_at": "<RFC 3339>"?}]}`. Without an inspect command rekey knows only
//!   the credential the plan names in `principal.key_id` (so no orphan search after a crash).
//! - verify, revoke, deactivate: nothing is read.
//!
//! Exit status: `0` success; `3` not found (the principal, or the credential: for revoke this
//! counts as success, the goal being reached); `4` rejected (verify: the credential was not
//! accepted, maybe not yet: rekey retries within the plan's verify policy); `5` quota (the
//! owner allows no more credentials); `75` temporary failure (retried); anything else a
//! failure. A non-zero exit, a missing or malformed JSON answer, or a command that outlives
//! `exec.timeout` (default 60 s; the command's whole process group is then killed) fails the
//! step with the command's stderr (last 2 KiB) in the error, every secret value rekey knows
//! for that call replaced by `[redacted]`. stdout is never quoted.

use super::{
    Capabilities, CredentialInfo, CredentialStatus, Inspection, Minted, Provider, ProviderError,
};
use crate::plan::{ExecCommands, ProviderKind, Target};
use crate::secret::Secret;
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::process::Stdio;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Default per-command timeout.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(60);

/// How much of a command's stderr an error quotes (the end: where the reason usually is).
const STDERR_TAIL: usize = 2048;

/// A command's output is read whole; more than this is not a credential answer.
const MAX_OUTPUT: usize = 1 << 20;

/// What every command gets from rekey's environment (when set).
const BASE_ENV: &[&str] = &["PATH", "HOME", "LANG", "TMPDIR"];

/// Prefixes and names of rekey's own credentials: never passed to a command, even when the
/// operator names them (a command that needs a cloud credential gets one of its own).
const WITHHELD_PREFIXES: &[&str] = &["AWS_", "AZURE_", "GOOGLE_", "REKEY_", "CLOUDSDK_"];
const WITHHELD_NAMES: &[&str] = &[
    "CIRCLECI_TOKEN",
    "CIRCLE_TOKEN",
    "GITHUB_TOKEN",
    "GH_TOKEN",
    "GCLOUD_SERVICE_KEY",
];

/// True for a variable that holds (or points at) one of rekey's own credentials.
pub fn is_withheld(name: &str) -> bool {
    let upper = name.to_ascii_uppercase();
    WITHHELD_PREFIXES.iter().any(|p| upper.starts_with(p))
        || WITHHELD_NAMES.contains(&upper.as_str())
}

pub const EXIT_NOT_FOUND: i32 = 3;
pub const EXIT_REJECTED: i32 = 4;
pub const EXIT_QUOTA: i32 = 5;
pub const EXIT_TEMPFAIL: i32 = 75;

/// The `exec` provider: everything about a command comes from the target's `exec` block;
/// what it may see and whether it runs, from the operator.
#[derive(Debug, Clone, Default)]
pub struct ExecProvider {
    /// Variables passed besides [`BASE_ENV`] (the operator's `--exec-env`).
    pass_env: Vec<String>,
    /// A dry run without `--dry-run-exec`: no command runs.
    not_running: bool,
}

#[derive(Deserialize)]
struct MintAnswer {
    id: String,
    fields: BTreeMap<String, String>,
}

#[derive(Deserialize)]
struct InspectAnswer {
    principal: String,
    #[serde(default)]
    credentials: Vec<InspectCredential>,
}

#[derive(Deserialize)]
struct InspectCredential {
    id: String,
    status: CredentialStatus,
    #[serde(default)]
    created_at: Option<DateTime<Utc>>,
}

/// What one run of a command gave.
pub(crate) struct Ran {
    /// May hold the minted values: wiped when dropped.
    stdout: zeroize::Zeroizing<Vec<u8>>,
}

impl ExecProvider {
    pub fn new() -> Self {
        ExecProvider::default()
    }

    /// Also passes these variables of rekey's environment to commands (never one that
    /// [`is_withheld`]).
    pub fn passing_env(mut self, names: impl IntoIterator<Item = String>) -> Self {
        self.pass_env = names.into_iter().filter(|n| !is_withheld(n)).collect();
        self
    }

    /// Runs no command: `inspect` answers with what the plan says (the principal and
    /// `principal.key_id`), noting that nothing was run, and every other operation fails. For
    /// a dry run of a plan nobody may have reviewed yet.
    pub fn not_running(mut self) -> Self {
        self.not_running = true;
        self
    }

    /// Runs another provider's plan-named hook command (`circleci-ssh-key`'s install and
    /// remove) under the same rules as exec commands: the allow-listed environment, and
    /// nothing at all when this provider is [`Self::not_running`].
    pub(crate) async fn run_hook(
        &self,
        what: &str,
        argv: &[String],
        input: &Secret,
        timeout: Duration,
    ) -> Result<(), ProviderError> {
        if self.not_running {
            return Err(ProviderError::Failed(format!(
                "{what}: a dry run runs no plan command"
            )));
        }
        run(what, argv, input, timeout, &[], &self.environment())
            .await
            .map(|_| ())
    }

    /// The environment a command gets: [`BASE_ENV`] and the operator's names, where set.
    fn environment(&self) -> Vec<(String, std::ffi::OsString)> {
        BASE_ENV
            .iter()
            .map(|n| n.to_string())
            .chain(self.pass_env.iter().cloned())
            .filter(|n| !is_withheld(n))
            .filter_map(|n| std::env::var_os(&n).map(|v| (n, v)))
            .collect()
    }

    /// Runs one operation's command (refused when the provider is [`Self::not_running`]).
    async fn run(
        &self,
        what: &str,
        argv: &[String],
        input: &Secret,
        exec: &ExecCommands,
        secrets: &[&str],
    ) -> Result<Ran, ProviderError> {
        if self.not_running {
            return Err(ProviderError::Failed(format!(
                "exec {what}: a dry run runs no plan command (pass --dry-run-exec to run exec.inspect)"
            )));
        }
        run(
            what,
            argv,
            input,
            timeout_of(exec),
            secrets,
            &self.environment(),
        )
        .await
    }
}

fn commands(target: &Target) -> Result<&ExecCommands, ProviderError> {
    target.exec.as_deref().ok_or_else(|| {
        ProviderError::Failed(format!(
            "target {}: provider exec needs an `exec` block",
            target.id.as_str()
        ))
    })
}

fn timeout_of(exec: &ExecCommands) -> Duration {
    exec.timeout
        .as_ref()
        .map(|t| Duration::from_secs(t.value.seconds().max(1)))
        .unwrap_or(DEFAULT_TIMEOUT)
}

/// The stdin document of an operation.
fn request(
    operation: &str,
    target: &Target,
    id: Option<&str>,
    fields: Option<&BTreeMap<String, Secret>>,
) -> Secret {
    let mut doc = serde_json::json!({
        "operation": operation,
        "target": target.id.as_str(),
        "principal": target.principal,
    });
    if let Some(id) = id {
        doc["id"] = serde_json::Value::String(id.to_owned());
    }
    if let Some(fields) = fields {
        doc["fields"] = fields
            .iter()
            .map(|(k, v)| (k.clone(), serde_json::Value::String(v.expose().to_owned())))
            .collect::<serde_json::Map<_, _>>()
            .into();
    }
    let text = Secret::new(doc.to_string());
    wipe_json(&mut doc);
    text
}

/// Overwrites every string of a JSON document that held secret values before it is dropped.
fn wipe_json(value: &mut serde_json::Value) {
    match value {
        serde_json::Value::String(s) => zeroize::Zeroize::zeroize(s),
        serde_json::Value::Array(items) => items.iter_mut().for_each(wipe_json),
        serde_json::Value::Object(map) => map.values_mut().for_each(wipe_json),
        _ => {}
    }
}

/// Runs `argv` with `input` on stdin, within `timeout`. `secrets` are redacted from stderr.
/// Shared with the hooks of other providers (`circleci-ssh-key`'s install and remove).
pub(crate) async fn run(
    what: &str,
    argv: &[String],
    input: &Secret,
    timeout: Duration,
    secrets: &[&str],
    environment: &[(String, std::ffi::OsString)],
) -> Result<Ran, ProviderError> {
    let Some((program, args)) = argv.split_first() else {
        return Err(ProviderError::Failed(format!("exec {what}: empty command")));
    };
    let mut command = tokio::process::Command::new(program);
    command
        .env_clear()
        .envs(environment.iter().map(|(k, v)| (k, v)))
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    // Its own process group, so a timeout kills what the command started too (a shell's
    // children would otherwise keep the pipes open).
    #[cfg(unix)]
    command.process_group(0);
    tracing::debug!(operation = what, program = %program, "exec: running command");
    let mut child = command.spawn().map_err(|e| {
        ProviderError::Failed(format!("exec {what}: cannot start `{program}`: {e}"))
    })?;
    let pid = child.id();
    let (Some(mut stdin), Some(mut stdout), Some(mut stderr)) =
        (child.stdin.take(), child.stdout.take(), child.stderr.take())
    else {
        return Err(ProviderError::Failed(format!(
            "exec {what}: no pipes to the command"
        )));
    };
    let input = input.clone();
    let work = async move {
        let write = async {
            // A command that exits without reading its input closes the pipe: not an error
            // of rekey's; its exit status says what happened.
            let _ = stdin.write_all(input.expose().as_bytes()).await;
            let _ = stdin.shutdown().await;
            drop(stdin);
        };
        // Room up front, so a typical answer is not reallocated (leaving unwiped copies).
        let mut out = zeroize::Zeroizing::new(Vec::with_capacity(64 * 1024));
        let mut err = Vec::new();
        let read_out = async {
            let _ = (&mut stdout)
                .take(MAX_OUTPUT as u64 + 1)
                .read_to_end(&mut out)
                .await;
        };
        let read_err = async {
            let _ = (&mut stderr)
                .take(MAX_OUTPUT as u64)
                .read_to_end(&mut err)
                .await;
        };
        tokio::join!(write, read_out, read_err);
        let status = child.wait().await;
        (status, out, err)
    };
    let (status, out, err) = match tokio::time::timeout(timeout, work).await {
        Ok(done) => done,
        Err(_) => {
            kill_group(pid);
            // A step failure, not a transient error: repeating a hung command would only
            // multiply the wait.
            return Err(ProviderError::Failed(format!(
                "exec {what}: `{program}` did not finish within {}s and was killed",
                timeout.as_secs()
            )));
        }
    };
    let status = status
        .map_err(|e| ProviderError::Failed(format!("exec {what}: waiting for `{program}`: {e}")))?;
    if out.len() > MAX_OUTPUT {
        return Err(ProviderError::Failed(format!(
            "exec {what}: `{program}` wrote more than {MAX_OUTPUT} bytes to stdout"
        )));
    }
    if status.success() {
        return Ok(Ran { stdout: out });
    }
    // A command that printed its answer and then failed (a mint that created the credential
    // but could not finish) may repeat the values on stderr: redact what it printed too.
    let printed = printed_values(&out);
    let mut all: Vec<&str> = secrets.to_vec();
    all.extend(printed.iter().map(String::as_str));
    let stderr_text = stderr_tail(&err, &all);
    let code = status.code();
    let text = match code {
        Some(c) => format!("exec {what}: `{program}` exited with status {c}: {stderr_text}"),
        None => format!("exec {what}: `{program}` was killed by a signal: {stderr_text}"),
    };
    Err(match code {
        Some(EXIT_NOT_FOUND) => ProviderError::NotFound(text),
        Some(EXIT_REJECTED) => ProviderError::Rejected(text),
        Some(EXIT_QUOTA) => ProviderError::Quota(text),
        Some(EXIT_TEMPFAIL) => ProviderError::Transient(text),
        _ => ProviderError::Failed(text),
    })
}

/// What a command printed on stdout that may be a secret: every string of its JSON answer
/// (at any depth) but the top-level `id`, or, when stdout is not JSON, each of its lines of
/// 8 characters or more.
fn printed_values(stdout: &[u8]) -> zeroize::Zeroizing<Vec<String>> {
    let mut found = zeroize::Zeroizing::new(Vec::new());
    fn strings(v: &serde_json::Value, out: &mut Vec<String>) {
        match v {
            serde_json::Value::String(s) => out.push(s.clone()),
            serde_json::Value::Array(items) => items.iter().for_each(|i| strings(i, out)),
            serde_json::Value::Object(map) => map.values().for_each(|i| strings(i, out)),
            _ => {}
        }
    }
    match serde_json::from_slice::<serde_json::Value>(stdout) {
        Ok(mut answer) => {
            if let Some(map) = answer.as_object_mut() {
                map.remove("id");
            }
            strings(&answer, &mut found);
            wipe_json(&mut answer);
        }
        Err(_) => found.extend(
            String::from_utf8_lossy(stdout)
                .lines()
                .map(str::trim)
                .filter(|l| l.len() >= 8)
                .map(str::to_owned),
        ),
    }
    found
}

#[cfg(unix)]
fn kill_group(pid: Option<u32>) {
    if let Some(pid) = pid.and_then(|p| i32::try_from(p).ok()) {
        // SAFETY: kill(2) on a process group we created; no memory is involved.
        unsafe {
            libc::kill(-pid, libc::SIGKILL);
        }
    }
}

#[cfg(not(unix))]
fn kill_group(_pid: Option<u32>) {}

/// The last bytes of stderr as text, every secret replaced (before cutting, so a secret at the
/// cut cannot leave a recognizable half).
fn stderr_tail(err: &[u8], secrets: &[&str]) -> String {
    let text = String::from_utf8_lossy(err);
    let clean = super::rest::redact(text.trim(), secrets);
    if clean.is_empty() {
        return "(no stderr)".into();
    }
    if clean.len() <= STDERR_TAIL {
        return clean;
    }
    let mut start = clean.len() - STDERR_TAIL;
    while !clean.is_char_boundary(start) {
        start += 1;
    }
    format!("…{}", &clean[start..])
}

/// Parses `stdout` as every answer a command may give (inspect, mint): the fuzz targets'
/// door to the parsers of what plan-supplied commands print (`fuzz/`). Whether each parsed.
#[doc(hidden)]
pub fn parse_answers(stdout: &[u8]) -> (bool, bool) {
    (
        parse::<InspectAnswer>("inspect", stdout).is_ok(),
        parse::<MintAnswer>("mint", stdout).is_ok(),
    )
}

/// Parses a command's JSON answer without ever quoting it (it may hold secrets).
fn parse<T: serde::de::DeserializeOwned>(what: &str, stdout: &[u8]) -> Result<T, ProviderError> {
    serde_json::from_slice(stdout).map_err(|e| {
        ProviderError::Failed(format!(
            "exec {what}: stdout is not the expected JSON ({:?} error at line {}, column {}; {} bytes)",
            e.classify(),
            e.line(),
            e.column(),
            stdout.len()
        ))
    })
}

#[async_trait]
impl Provider for ExecProvider {
    fn kind(&self) -> ProviderKind {
        ProviderKind::Exec
    }

    /// Without a target: the least any exec target can do.
    fn capabilities(&self) -> Capabilities {
        Capabilities {
            deactivate: false,
            reactivate: false,
            manual_mint: false,
            max_credentials: None,
        }
    }

    fn capabilities_for(&self, target: &Target) -> Capabilities {
        Capabilities {
            deactivate: target.exec.as_ref().is_some_and(|e| e.deactivate.is_some()),
            ..self.capabilities()
        }
    }

    async fn inspect(&self, target: &Target) -> Result<Inspection, ProviderError> {
        let exec = commands(target)?;
        // Without a command to ask, what the plan says: its principal and `key_id`.
        let principal = target
            .principal
            .service()
            .map(|s| s.value.clone())
            .unwrap_or_else(|| target.id.value.clone());
        let planned: Vec<CredentialInfo> = target
            .principal
            .key_id()
            .into_iter()
            .map(|k| CredentialInfo {
                label: None,
                id: k.value.clone(),
                status: CredentialStatus::Active,
                created_at: None,
                last_used: None,
                last_used_service: None,
            })
            .collect();
        let Some(command) = &exec.inspect else {
            return Ok(Inspection {
                principal,
                credentials: planned,
            });
        };
        if self.not_running {
            tracing::info!(
                target = target.id.as_str(),
                "exec: dry run, inspect not run"
            );
            return Ok(Inspection {
                principal: format!(
                    "{principal} (not inspected: a dry run runs no plan command without --dry-run-exec)"
                ),
                credentials: planned,
            });
        }
        let input = request("inspect", target, None, None);
        let ran = self.run("inspect", command, &input, exec, &[]).await?;
        let answer: InspectAnswer = parse("inspect", &ran.stdout)?;
        Ok(Inspection {
            principal: answer.principal,
            credentials: answer
                .credentials
                .into_iter()
                .map(|c| CredentialInfo {
                    label: None,
                    id: c.id,
                    status: c.status,
                    created_at: c.created_at,
                    last_used: None,
                    last_used_service: None,
                })
                .collect(),
        })
    }

    async fn mint(&self, target: &Target) -> Result<Minted, ProviderError> {
        let exec = commands(target)?;
        let input = request("mint", target, None, None);
        let ran = self.run("mint", &exec.mint, &input, exec, &[]).await?;
        let answer: MintAnswer = parse("mint", &ran.stdout)?;
        if answer.id.is_empty()
            || answer.fields.is_empty()
            || answer.fields.values().any(String::is_empty)
        {
            return Err(ProviderError::Failed(
                "exec mint: the answer needs a non-empty id and at least one non-empty field"
                    .into(),
            ));
        }
        tracing::debug!(id = %answer.id, "exec: minted");
        Ok(Minted {
            id: answer.id,
            fields: answer
                .fields
                .into_iter()
                .map(|(k, v)| (k, Secret::new(v)))
                .collect(),
        })
    }

    async fn verify(&self, target: &Target, minted: &Minted) -> Result<(), ProviderError> {
        let exec = commands(target)?;
        let input = request("verify", target, Some(&minted.id), Some(&minted.fields));
        let secrets: Vec<&str> = minted
            .fields
            .values()
            .map(Secret::expose)
            .filter(|v| *v != minted.id)
            .collect();
        self.run("verify", &exec.verify, &input, exec, &secrets)
            .await
            .map(|_| ())
    }

    async fn deactivate(&self, target: &Target, credential_id: &str) -> Result<(), ProviderError> {
        let exec = commands(target)?;
        let Some(command) = &exec.deactivate else {
            return Err(ProviderError::Unsupported {
                provider: ProviderKind::Exec,
                operation: "deactivate (no exec.deactivate command)",
            });
        };
        let input = request("deactivate", target, Some(credential_id), None);
        self.run("deactivate", command, &input, exec, &[])
            .await
            .map(|_| ())
    }

    async fn reactivate(&self, _target: &Target, _id: &str) -> Result<(), ProviderError> {
        Err(ProviderError::Unsupported {
            provider: ProviderKind::Exec,
            operation: "reactivate",
        })
    }

    async fn revoke(&self, target: &Target, credential_id: &str) -> Result<(), ProviderError> {
        let exec = commands(target)?;
        let input = request("revoke", target, Some(credential_id), None);
        match self.run("revoke", &exec.revoke, &input, exec, &[]).await {
            // Not found: already gone, the goal is reached.
            Ok(_) | Err(ProviderError::NotFound(_)) => Ok(()),
            Err(e) => Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stderr_is_redacted_then_cut() {
        let s = format!("{}the-secret-value", "x".repeat(5000));
        let t = stderr_tail(s.as_bytes(), &["the-secret-value"]);
        assert!(!t.contains("the-secret-value") && t.ends_with("[redacted]"));
        assert_eq!(stderr_tail(b"  ", &[]), "(no stderr)");
    }

    #[test]
    fn parse_errors_never_quote_stdout() {
        let err = parse::<MintAnswer>("mint", br#"{"id": 5, "fields": "hunter2"}"#)
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(!err.contains("hunter2") && err.contains("line 1"), "{err}");
    }
}
