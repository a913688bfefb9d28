//! Hostile answers and files (DESIGN.md, "Threat model": everything read from services is
//! hostile). Redirects that would carry rekey's token or a secret body elsewhere, answers
//! without end, services and commands that echo a secret in another spelling, files that
//! carry terminal control sequences or values into error messages. Each test asserts at the
//! fake server what it received, or at the output what it shows.

mod support;

use base64::Engine as _;
use rekey::circleci::CircleCiClient;
use rekey::secret::Secret;
use std::sync::{Arc, Mutex};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// One request as a fake server read it.
#[derive(Debug, Clone)]
struct Seen {
    method: String,
    path: String,
    head: String,
    body: Vec<u8>,
}

/// What a fake server answers to a request: raw HTTP bytes (status line, headers, body), or
/// an endless body after the given head.
enum Reply {
    Bytes(Vec<u8>),
    Endless(String),
}

type Script = Arc<dyn Fn(&Seen) -> Reply + Send + Sync>;

/// A loopback HTTP/1.1 server answering by `script`, recording every request and connection.
struct Fake {
    url: String,
    seen: Arc<Mutex<Vec<Seen>>>,
    connections: Arc<Mutex<usize>>,
}

impl Fake {
    async fn start(script: Script) -> Fake {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let connections = Arc::new(Mutex::new(0));
        let (s, c) = (seen.clone(), connections.clone());
        tokio::spawn(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                *c.lock().unwrap() += 1;
                let (s, script) = (s.clone(), script.clone());
                tokio::spawn(async move {
                    let Some(req) = read_request(&mut stream).await else {
                        return;
                    };
                    s.lock().unwrap().push(req.clone());
                    match script(&req) {
                        Reply::Bytes(b) => {
                            let _ = stream.write_all(&b).await;
                        }
                        Reply::Endless(head) => {
                            if stream.write_all(head.as_bytes()).await.is_err() {
                                return;
                            }
                            let chunk = format!("{:x}\r\n{}\r\n", 1 << 20, "x".repeat(1 << 20));
                            while stream.write_all(chunk.as_bytes()).await.is_ok() {}
                        }
                    }
                    let _ = stream.shutdown().await;
                });
            }
        });
        Fake {
            url: format!("http://{addr}"),
            seen,
            connections,
        }
    }

    fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }

    fn connections(&self) -> usize {
        *self.connections.lock().unwrap()
    }
}

async fn read_request(stream: &mut tokio::net::TcpStream) -> Option<Seen> {
    let mut buf = Vec::new();
    let mut byte = [0u8; 4096];
    let head_end = loop {
        let n = stream.read(&mut byte).await.ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&byte[..n]);
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
    let length: usize = head
        .lines()
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case("content-length")
                .then(|| v.trim().parse().ok())?
        })
        .unwrap_or(0);
    let mut body = buf[head_end..].to_vec();
    while body.len() < length {
        let n = stream.read(&mut byte).await.ok()?;
        if n == 0 {
            break;
        }
        body.extend_from_slice(&byte[..n]);
    }
    let mut first = head.lines().next()?.split(' ');
    Some(Seen {
        method: first.next()?.to_owned(),
        path: first.next()?.to_owned(),
        head,
        body,
    })
}

fn answer(status: &str, headers: &str, body: &str) -> Reply {
    Reply::Bytes(
        format!(
            "HTTP/1.1 {status}\r\n{headers}content-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
            body.len()
        )
        .into_bytes(),
    )
}

const TOKEN: &str = "CCIPAT_rekeys-own-circleci-token-0123";

fn client(url: &str) -> CircleCiClient {
    CircleCiClient::new(url, Secret::new(TOKEN))
        .unwrap()
        .with_retry_policy(rekey::http::RetryPolicy::no_retry())
}

/// `GET /user` through rekey's GitHub client at `url`, with `token` as rekey's own.
async fn github_user(
    url: &str,
    token: Option<&str>,
) -> Result<rekey::github::Answer, rekey::github::GithubError> {
    let github = rekey::github::GithubClient::new(url, token.map(Secret::new)).unwrap();
    let auth = match token {
        Some(_) => rekey::github::Auth::Own,
        None => rekey::github::Auth::Anonymous,
    };
    github
        .call(reqwest::Method::GET, &["user"], &[], None, auth)
        .await
}

#[tokio::test]
async fn no_redirect_carries_the_token_to_another_origin() {
    let evil = Fake::start(Arc::new(|_| answer("200 OK", "", "{\"items\": []}"))).await;
    let target = format!("{}/api/v2/project/gh/acme/api/envvar", evil.url);
    for status in [
        "301 Moved Permanently",
        "302 Found",
        "303 See Other",
        "307 Temporary Redirect",
    ] {
        let location = target.clone();
        let redirecting = Fake::start(Arc::new(move |_| {
            answer(status, &format!("location: {location}\r\n"), "")
        }))
        .await;
        let err = client(&redirecting.url)
            .list_project_env_vars("gh/acme/api")
            .await
            .expect_err("a cross-origin redirect is refused");
        assert!(err.to_string().contains("redirect"), "{status}: {err}");
        // GitHub's client too, with rekey's own token.
        let gh = github_user(&redirecting.url, Some("ghp_rekeys-own-token")).await;
        assert!(gh.is_err(), "{status}: GitHub followed the redirect");
    }
    assert_eq!(evil.connections(), 0, "{:?}", evil.seen());
}

#[tokio::test]
async fn a_307_never_replays_a_secret_body() {
    let server = Fake::start(Arc::new(|req: &Seen| {
        if req.path.starts_with("/elsewhere") {
            answer("200 OK", "", r#"{"name": "X", "value": "xxxxxxxx"}"#)
        } else {
            answer("307 Temporary Redirect", "location: /elsewhere\r\n", "")
        }
    }))
    .await;
    let value = Secret::new("the-new-secret-value-0123456789");
    let err = client(&server.url)
        .set_project_var("gh/acme/api", "X", &value)
        .await
        .expect_err("a 307 is not followed");
    assert!(err.to_string().contains("redirect"), "{err}");
    let seen = server.seen();
    assert!(
        seen.iter().all(|r| !r.path.starts_with("/elsewhere")),
        "{seen:?}"
    );
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].method, "POST");
}

#[tokio::test]
async fn answers_without_end_are_cut_at_the_bound() {
    // A declared length far beyond the bound: refused before reading.
    let declared = Fake::start(Arc::new(|_| {
        Reply::Bytes(
            b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 107374182400\r\n\r\n[".to_vec(),
        )
    }))
    .await;
    let err = client(&declared.url)
        .list_project_env_vars("gh/acme/api")
        .await
        .expect_err("too large");
    assert!(err.to_string().contains("larger than"), "{err}");

    // No length, a body that never ends: streamed up to the bound, then given up.
    let endless = Fake::start(Arc::new(|_| {
        Reply::Endless(
            "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ntransfer-encoding: chunked\r\n\r\n"
                .into(),
        )
    }))
    .await;
    let started = std::time::Instant::now();
    let err = client(&endless.url)
        .list_project_env_vars("gh/acme/api")
        .await
        .expect_err("too large");
    assert!(err.to_string().contains("larger than"), "{err}");
    assert!(started.elapsed() < std::time::Duration::from_secs(60));

    let gh = github_user(&endless.url, None).await;
    assert!(
        gh.as_ref()
            .err()
            .is_some_and(|e| e.to_string().contains("larger than")),
        "{:?}",
        gh.err()
    );
}

/// A private key: newlines, a quote, a backslash, slashes (every PEM is like this).
const PEM: &str = "-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjEAAAAABG5vbmUAAAAEbm9uZQAAAAAAAAABAAAAMwAAAAtzc2gtZW\nQyNTUxOQAAACBvX2Fubm90aGVyLWtleS1ib2R5LWxpbmUtaGVyZS8rL3Nsc2g\"q\\b\n-----END OPENSSH PRIVATE KEY-----\n";

fn lines_of_pem() -> Vec<&'static str> {
    PEM.lines().filter(|l| l.len() >= 16).collect()
}

#[tokio::test]
async fn an_api_echoing_the_written_secret_is_redacted_in_every_spelling() {
    // CircleCI answers 400 quoting the request it got (JSON-escaped, base64 and
    // URL-encoded), and rekey's token for good measure.
    let server = Fake::start(Arc::new(|req: &Seen| {
        let body = String::from_utf8_lossy(&req.body).into_owned();
        let b64 = base64::engine::general_purpose::STANDARD.encode(&req.body);
        let form: String = url::form_urlencoded::byte_serialize(&req.body).collect();
        let echo = serde_json::json!({
            "message": format!("invalid request {body} ({b64}) [{form}] {}", req.head)
        });
        answer("400 Bad Request", "", &echo.to_string())
    }))
    .await;
    let err = client(&server.url)
        .set_project_var("gh/acme/api", "DEPLOY_KEY", &Secret::new(PEM))
        .await
        .expect_err("400");
    let text = err.to_string();
    assert!(text.contains("[redacted]"), "{text}");
    let mut secrets = lines_of_pem();
    secrets.push(TOKEN);
    support::assert_no_secret("the CircleCI error", &text, &secrets);
    assert!(!text.contains(&serde_json::to_string(PEM).unwrap()[1..40]));
}

#[tokio::test]
async fn exec_stderr_never_repeats_what_the_mint_printed() {
    use rekey::plan::{ExecCommands, Located, Principal, PrincipalField, ProviderKind};
    use rekey::providers::Provider;
    let dir = tempfile::tempdir().unwrap();
    let value = "npm_minted-secret-value-with-\"quote\"-and-\\backslash-0123456789";
    let answer = serde_json::json!({"id": "cred-1", "fields": {"value": value}}).to_string();
    let b64 = base64::engine::general_purpose::STANDARD.encode(value);
    let json_escaped = serde_json::to_string(value).unwrap();
    let script = dir.path().join("mint.sh");
    std::fs::write(
        &script,
        format!(
            "cat > /dev/null\nprintf '%s' '{}'\necho 'debug: {}' >&2\necho 'as JSON: {}' >&2\nexit 1\n",
            answer.replace('\'', "'\\''"),
            b64,
            json_escaped.replace('\'', "'\\''"),
        ),
    )
    .unwrap();
    let mut target = support::conformance::target(
        "npm",
        ProviderKind::Exec,
        Principal::default().with(PrincipalField::Service, "npm"),
    );
    let sh = |op: &str| Located::new(vec!["sh".into(), script.display().to_string(), op.into()]);
    target.exec = Some(Box::new(ExecCommands {
        mint: sh("mint"),
        verify: sh("verify"),
        revoke: sh("revoke"),
        inspect: None,
        deactivate: None,
        timeout: None,
    }));
    let err = rekey::providers::exec::ExecProvider::new()
        .mint(&target)
        .await
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    assert!(err.contains("exited with status 1"), "{err}");
    assert!(err.contains("[redacted]"), "{err}");
    support::assert_no_secret(
        "the exec error",
        &err,
        &[value, &b64, &json_escaped[1..json_escaped.len() - 1]],
    );
}

#[test]
fn env_inspector_files_neither_quote_values_nor_drive_the_terminal() {
    let dir = tempfile::tempdir().unwrap();
    let secretish = "hunter2-unmasked-value-from-a-patched-inspector";
    // A value where a list belongs: the error must not quote it (nor the line holding it).
    let bad = dir.path().join("bad.json");
    std::fs::write(
        &bad,
        format!(r#"{{"accounts": [{{"name": "acme", "projects": "{secretish}"}}]}}"#),
    )
    .unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_rekey"))
        .args(["inventory", "--from-env-inspector"])
        .arg(&bad)
        .env("REKEY_KEYRING_DISABLED", "1")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("accounts[0].projects"), "{stderr}");
    support::assert_no_secret("the import error", &stderr, &[secretish]);

    // Control sequences in names and messages are shown, not obeyed.
    let hostile = dir.path().join("hostile.json");
    let doc = serde_json::json!({"accounts": [{"name": "acme", "projects": [], "contexts": [],
        "errors": [{"message": "\u{1b}]0;owned\u{7}\u{1b}[2J\u{1b}[1Aall good\r", "status": 403}]}]});
    std::fs::write(&hostile, doc.to_string()).unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_rekey"))
        .args(["inventory", "--from-env-inspector"])
        .arg(&hostile)
        .args(["--out", &dir.path().join("inv.json").display().to_string()])
        .env("REKEY_KEYRING_DISABLED", "1")
        .output()
        .unwrap();
    let shown = [out.stdout.as_slice(), out.stderr.as_slice()].concat();
    assert!(
        String::from_utf8_lossy(&shown).contains("all good"),
        "{}",
        String::from_utf8_lossy(&shown)
    );
    assert!(
        !shown
            .iter()
            .any(|b| *b == 0x1b || *b == 0x07 || *b == b'\r'),
        "a control byte reached the terminal: {:?}",
        String::from_utf8_lossy(&shown)
    );
}
