//! moto's server as the AWS test double: one child process per [`Moto`], on 127.0.0.1 at a free
//! port, with IAM authentication enforced, killed by PID when the value is dropped.
//!
//! moto enforces authentication once `INITIAL_NO_AUTH_ACTION_COUNT` requests have been served:
//! the harness spends exactly that allowance creating an admin user and key for rekey itself
//! (the bootstrap), then checks that an unknown key is refused. From then on a deleted key is
//! rejected with `InvalidClientTokenId`, like AWS. (moto still accepts an Inactive key: do not
//! assert that.)
//!
//! Every test gets its own server (~1.4 s to start): the auth counter, the account's users and
//! the two-keys-per-user limit are then never shared between tests running in parallel.
//!
//! The executable is `$REKEY_MOTO_SERVER`, else `.venv-moto/bin/moto_server` in the crate root.
//! Missing, the test fails and says how to install it; only `REKEY_SKIP_MOTO=1` skips.

use aws_config::{BehaviorVersion, SdkConfig};
use aws_credential_types::Credentials;
use aws_sdk_iam::config::Region;
use aws_sdk_iam::error::ProvideErrorMetadata;
use rekey::secret::Secret;
use std::io::{Read, Write};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// moto's default account.
pub const ACCOUNT_ID: &str = "123456789012";
pub const REGION: &str = "us-east-1";
/// The admin user the bootstrap creates for rekey itself.
pub const ADMIN_USER: &str = "rekey-admin";
/// Unauthenticated requests the bootstrap makes: CreateUser, PutUserPolicy, CreateAccessKey.
const BOOTSTRAP_REQUESTS: u32 = 3;
const INSTALL_HINT: &str =
    "python3 -m venv .venv-moto && .venv-moto/bin/pip install 'moto[server]==5.2.5'";
const START_TIMEOUT: Duration = Duration::from_secs(30);

/// A running moto server and the configuration of rekey's admin identity in it.
pub struct Moto {
    child: Child,
    pub url: String,
    /// Signed with the admin key; region us-east-1; endpoint = this server.
    config: SdkConfig,
    log: tempfile::NamedTempFile,
    /// Where moto's recorder appends the requests it sees once recording is on
    /// ([`Moto::start_recording`]): the only request log moto offers.
    recording: tempfile::NamedTempFile,
    /// How long the start took (process start to bootstrap done), for reports.
    pub started_in: Duration,
}

/// An IAM user made by a test, with the keys made for it outside rekey.
pub struct CiUser {
    pub name: String,
    pub keys: Vec<(String, Secret)>,
}

impl Moto {
    /// Starts a server and bootstraps it. `None` only when `REKEY_SKIP_MOTO=1` (said loudly);
    /// a missing moto is a test failure, not a skip.
    pub async fn start() -> Option<Moto> {
        if std::env::var("REKEY_SKIP_MOTO").is_ok_and(|v| v == "1") {
            // Straight to stderr: `eprintln!` would be captured by the test harness and hidden.
            let _ = writeln!(
                std::io::stderr(),
                "\n!!!!!!!! REKEY_SKIP_MOTO=1: SKIPPING a test against moto — it proves nothing !!!!!!!!\n"
            );
            return None;
        }
        let exe = server_executable();
        let began = Instant::now();
        // The port is free when asked but may be taken before moto binds it: try again then.
        let mut last_failure = String::new();
        for _ in 0..3 {
            match spawn(&exe).await {
                Ok((child, url, log, recording)) => {
                    let config = bootstrap(&url).await;
                    return Some(Moto {
                        child,
                        url,
                        config,
                        log,
                        recording,
                        started_in: began.elapsed(),
                    });
                }
                Err(failure) => last_failure = failure,
            }
        }
        panic!("moto server did not start: {last_failure}");
    }

    /// Configuration signed by rekey's admin key: what `AwsIamProvider::new` takes.
    pub fn config(&self) -> &SdkConfig {
        &self.config
    }

    /// An IAM client acting as the admin, for fixtures.
    pub fn iam(&self) -> aws_sdk_iam::Client {
        aws_sdk_iam::Client::new(&self.config)
    }

    /// Creates IAM user `name` (under `path` when given, e.g. `/ci/bots/`) with `keys` access
    /// keys made directly, as if they predated rekey.
    pub async fn create_ci_user(&self, name: &str, path: Option<&str>, keys: usize) -> CiUser {
        let iam = self.iam();
        iam.create_user()
            .user_name(name)
            .set_path(path.map(str::to_owned))
            .send()
            .await
            .unwrap_or_else(|e| panic!("create user {name}: {}", describe(&e)));
        let mut made = Vec::new();
        for _ in 0..keys {
            made.push(self.create_key(name).await);
        }
        CiUser {
            name: name.to_owned(),
            keys: made,
        }
    }

    /// Makes an access key for `user` directly (not through rekey).
    pub async fn create_key(&self, user: &str) -> (String, Secret) {
        let out = self
            .iam()
            .create_access_key()
            .user_name(user)
            .send()
            .await
            .unwrap_or_else(|e| panic!("create key for {user}: {}", describe(&e)));
        let key = out
            .access_key()
            .unwrap_or_else(|| panic!("moto answered CreateAccessKey without a key"));
        (
            key.access_key_id().to_owned(),
            Secret::new(key.secret_access_key()),
        )
    }

    /// Empties the server (`/moto-api/reset`) and bootstraps a new admin, for a test that wants
    /// a clean account without paying for a new server. The previous admin key is gone with
    /// everything else, so providers built from the old [`Moto::config`] stop working.
    pub async fn reset(&mut self) {
        let http = reqwest::Client::new();
        for (path, body) in [
            ("/moto-api/reset", String::new()),
            // Resets the request counter too, so the bootstrap allowance is available again.
            ("/moto-api/reset-auth", BOOTSTRAP_REQUESTS.to_string()),
        ] {
            let status = http
                .post(format!("{}{path}", self.url))
                .body(body)
                .send()
                .await
                .map(|r| r.status())
                .unwrap_or_else(|e| panic!("POST {path}: {e}"));
            assert!(status.is_success(), "POST {path}: {status}");
        }
        self.config = bootstrap(&self.url).await;
    }

    /// Empties moto's request recording and records every request from now on.
    pub async fn start_recording(&self) {
        let http = reqwest::Client::new();
        for path in [
            "/moto-api/recorder/reset-recording",
            "/moto-api/recorder/start-recording",
        ] {
            let status = http
                .post(format!("{}{path}", self.url))
                .send()
                .await
                .map(|r| r.status())
                .unwrap_or_else(|e| panic!("POST {path}: {e}"));
            assert!(status.is_success(), "POST {path}: {status}");
        }
    }

    /// The `Action` of every request recorded since [`Moto::start_recording`], in order
    /// (`?` when a request carried none). Requests moto refused are included.
    pub fn recorded_actions(&self) -> Vec<String> {
        use base64::Engine as _;
        let text = std::fs::read_to_string(self.recording.path()).unwrap_or_default();
        let mut actions = Vec::new();
        for line in text.lines().filter(|l| !l.trim().is_empty()) {
            let entry: serde_json::Value = serde_json::from_str(line)
                .unwrap_or_else(|e| panic!("moto recording line is not JSON: {e}"));
            let body = entry["body"].as_str().unwrap_or_default();
            let body = if entry["body_encoded"].as_bool() == Some(true) {
                base64::engine::general_purpose::STANDARD
                    .decode(body)
                    .unwrap_or_default()
            } else {
                body.as_bytes().to_vec()
            };
            let url = entry["url"].as_str().unwrap_or_default();
            let query = url.split_once('?').map(|(_, q)| q).unwrap_or_default();
            let action = url::form_urlencoded::parse(&body)
                .chain(url::form_urlencoded::parse(query.as_bytes()))
                .find(|(k, _)| k == "Action")
                .map(|(_, v)| v.into_owned())
                .unwrap_or_else(|| "?".to_owned());
            actions.push(action);
        }
        actions
    }

    /// What the server logged so far (requests, tracebacks): for failure messages.
    pub fn server_log(&self) -> String {
        read_log(&self.log)
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        // Kills our own child by its PID, then reaps it.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn server_executable() -> PathBuf {
    let exe = match std::env::var_os("REKEY_MOTO_SERVER") {
        Some(p) => PathBuf::from(p),
        None => PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(".venv-moto/bin/moto_server"),
    };
    if !exe.is_file() {
        panic!(
            "moto's server is not installed at {} — the AWS provider tests need it.\n\
             Install it from the crate root with:\n    {INSTALL_HINT}\n\
             (or point REKEY_MOTO_SERVER at a moto_server executable; REKEY_SKIP_MOTO=1 skips \
             these tests, proving nothing)",
            exe.display()
        );
    }
    exe
}

/// Starts the process and waits until it answers HTTP. `Err` when it exited early (port taken).
type Spawned = (
    Child,
    String,
    tempfile::NamedTempFile,
    tempfile::NamedTempFile,
);

async fn spawn(exe: &PathBuf) -> Result<Spawned, String> {
    let port = free_port();
    let log = tempfile::NamedTempFile::new().map_err(|e| format!("log file: {e}"))?;
    let recording = tempfile::NamedTempFile::new().map_err(|e| format!("recording file: {e}"))?;
    let stderr = log.reopen().map_err(|e| format!("log file: {e}"))?;
    let mut command = Command::new(exe);
    command
        .args(["-H", "127.0.0.1", "-p", &port.to_string()])
        .env(
            "INITIAL_NO_AUTH_ACTION_COUNT",
            BOOTSTRAP_REQUESTS.to_string(),
        )
        .env("MOTO_PORT", port.to_string())
        // Recording stays off until a test asks (`start_recording`); this only says where.
        .env("MOTO_RECORDER_FILEPATH", recording.path())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        // To a file, not a pipe: moto logs every request, and a pipe nobody reads would fill
        // up and block the server.
        .stderr(stderr);
    kill_with_parent(&mut command);
    let mut child = command
        .spawn()
        .unwrap_or_else(|e| panic!("start {}: {e}", exe.display()));
    let url = format!("http://127.0.0.1:{port}");
    let http = reqwest::Client::new();
    let deadline = Instant::now() + START_TIMEOUT;
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            return Err(format!("moto exited with {status}:\n{}", read_log(&log)));
        }
        let probe = http
            .get(format!("{url}/moto-api/data.json"))
            .timeout(Duration::from_secs(2))
            .send()
            .await;
        if probe.is_ok_and(|r| r.status().is_success()) {
            return Ok((child, url, log, recording));
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "moto did not answer on {url} within {START_TIMEOUT:?}:\n{}",
                read_log(&log)
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// On Linux the server also dies if the test process dies without dropping [`Moto`] (abort,
/// SIGKILL, timeout). The signal follows the *thread* that spawned the child, which on a
/// current-thread test runtime is the test's own thread: it outlives the value.
#[cfg(target_os = "linux")]
fn kill_with_parent(command: &mut Command) {
    use std::os::unix::process::CommandExt;
    // SAFETY: between fork and exec only async-signal-safe calls are made (prctl, getppid,
    // _exit), as `pre_exec` requires.
    unsafe {
        command.pre_exec(|| {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            // The parent may have died before prctl: then nobody would send the signal.
            if libc::getppid() == 1 {
                libc::_exit(1);
            }
            Ok(())
        });
    }
}

#[cfg(not(target_os = "linux"))]
fn kill_with_parent(_: &mut Command) {}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap_or_else(|e| panic!("no free port on 127.0.0.1: {e}"))
}

fn read_log(log: &tempfile::NamedTempFile) -> String {
    let mut text = String::new();
    if let Ok(mut f) = log.reopen() {
        let _ = f.read_to_string(&mut text);
    }
    // The tail is what explains a failure.
    let start = text.len().saturating_sub(4000);
    let start = (start..text.len())
        .find(|i| text.is_char_boundary(*i))
        .unwrap_or(0);
    text[start..].to_owned()
}

pub async fn config_with(url: &str, key_id: &str, secret: &str) -> SdkConfig {
    aws_config::defaults(BehaviorVersion::latest())
        .region(Region::new(REGION))
        .endpoint_url(url)
        .credentials_provider(Credentials::new(key_id, secret, None, None, "moto-test"))
        .load()
        .await
}

/// Spends the unauthenticated allowance on rekey's admin identity, then checks moto enforces
/// authentication. Returns the admin's configuration.
async fn bootstrap(url: &str) -> SdkConfig {
    // Any credentials do while the allowance lasts; exactly BOOTSTRAP_REQUESTS requests follow,
    // with SDK retries off so none is spent twice.
    let anon = config_with(url, "AKIABOOTSTRAPBOOTSTR", "bootstrap").await;
    let iam = aws_sdk_iam::Client::from_conf(
        aws_sdk_iam::config::Builder::from(&anon)
            .retry_config(aws_sdk_iam::config::retry::RetryConfig::disabled())
            .build(),
    );
    iam.create_user()
        .user_name(ADMIN_USER)
        .send()
        .await
        .unwrap_or_else(|e| panic!("bootstrap CreateUser: {}", describe(&e)));
    // moto evaluates IAM policies once auth is on: the admin needs one that allows everything.
    iam.put_user_policy()
        .user_name(ADMIN_USER)
        .policy_name("admin")
        .policy_document(
            r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"*","Resource":"*"}]}"#,
        )
        .send()
        .await
        .unwrap_or_else(|e| panic!("bootstrap PutUserPolicy: {}", describe(&e)));
    let out = iam
        .create_access_key()
        .user_name(ADMIN_USER)
        .send()
        .await
        .unwrap_or_else(|e| panic!("bootstrap CreateAccessKey: {}", describe(&e)));
    let key = out
        .access_key()
        .unwrap_or_else(|| panic!("bootstrap CreateAccessKey: no key in the answer"));
    // The allowance is spent: an unknown key must now be refused, else every "rejected"
    // assertion of the suite would be meaningless.
    let refused = iam.list_users().send().await;
    let text = match &refused {
        Err(e) => describe(e),
        Ok(_) => String::from("ListUsers succeeded"),
    };
    assert!(
        text.contains("InvalidClientTokenId"),
        "moto does not enforce authentication after the bootstrap: {text}"
    );
    config_with(url, key.access_key_id(), key.secret_access_key()).await
}

/// Code and message of an SDK error (never a secret: these are errors of fixture calls). moto's
/// authentication errors come in a shape the SDK does not parse (`<Errors><Error>`, see
/// `providers::aws`), so without a parsed code the raw body is shown.
pub fn describe<E: ProvideErrorMetadata + std::error::Error + 'static>(
    e: &aws_sdk_iam::error::SdkError<E>,
) -> String {
    if let Some(code) = e.code() {
        return format!("{code}: {}", e.message().unwrap_or(""));
    }
    match e.raw_response() {
        Some(raw) => format!(
            "HTTP {}: {}",
            raw.status().as_u16(),
            raw.body()
                .bytes()
                .map(|b| String::from_utf8_lossy(b).into_owned())
                .unwrap_or_default()
        ),
        None => format!("{}", aws_sdk_iam::error::DisplayErrorContext(e)),
    }
}
