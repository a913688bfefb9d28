//! GitHub contract check: every kind of request the GitHub providers make (deploy keys: list,
//! create read-only and read-write, get, delete; tokens: `GET /user` with the old and the new
//! token, credential revocation) is sent to Prism (npm `@stoplight/prism-cli`) mocking GitHub's
//! published OpenAPI description (npm `@octokit/openapi`, the operations rekey uses extracted by
//! `scripts/github-openapi-subset.js`), and the test fails on any request violation Prism
//! reports. The flows themselves are tested against the stateful simulator
//! (`tests/providers_github.rs`): Prism keeps no state and answers with the spec's examples.
//!
//! `./scripts/test` installs Prism and the description into `.npm-prism/`; without them this
//! test fails (as the AWS tests do without moto) rather than passing without checking.

use rekey::github::GithubClient;
use rekey::plan::{Located, Principal, PrincipalField, ProviderKind, Target};
use rekey::providers::Provider;
use rekey::providers::github::{
    GithubDeployKeyProvider, GithubTokenProvider, TokenInputs, ValueSource,
};
use rekey::secret::Secret;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Upper bound of one request to Prism.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(20);
const START_TIMEOUT: Duration = Duration::from_secs(90);

struct Prism {
    child: Child,
    url: String,
    log: PathBuf,
}

impl Drop for Prism {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Prism {
    fn start(dir: &Path) -> Prism {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join(".npm-prism");
        let prism = root.join("node_modules/.bin/prism");
        let spec = root.join("github-subset.json");
        assert!(
            prism.exists() && spec.exists(),
            "Prism or GitHub's OpenAPI description is missing in {}: run ./scripts/test, which installs them",
            root.display()
        );
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        };
        let log = dir.join("prism.log");
        let out = std::fs::File::create(&log).unwrap();
        let err = out.try_clone().unwrap();
        let child = Command::new(&prism)
            .args([
                "mock",
                "--errors",
                "-h",
                "127.0.0.1",
                "-p",
                &port.to_string(),
            ])
            .arg(&spec)
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .unwrap();
        let prism = Prism {
            child,
            url: format!("http://127.0.0.1:{port}"),
            log,
        };
        let began = Instant::now();
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                began.elapsed() < START_TIMEOUT,
                "Prism did not listen within {START_TIMEOUT:?}: {}",
                std::fs::read_to_string(&prism.log).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
        prism
    }
}

fn deploy_target(read_only: bool) -> Target {
    Target {
        id: Located::new("deploy-key".into()),
        provider: Located::new(ProviderKind::GithubDeployKey),
        confidence: Default::default(),
        confirmed: true,
        principal: {
            let mut p = Principal::default()
                .with(PrincipalField::Repository, "acme/api")
                .with(PrincipalField::Title, "rekey contract");
            p.read_only = Some(read_only);
            p
        },
        bindings: Vec::new(),
        observed: Vec::new(),
        policy: Default::default(),
        exec: None,
        ssh_key: None,
    }
}

async fn bounded<T>(what: &str, f: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(REQUEST_TIMEOUT, f)
        .await
        .unwrap_or_else(|_| panic!("{what}: Prism did not answer within {REQUEST_TIMEOUT:?}"))
}

#[tokio::test]
async fn github_requests_match_the_published_openapi_description() {
    let dir = tempfile::tempdir().unwrap();
    let prism = Prism::start(dir.path());
    let own = GithubClient::new(
        &prism.url,
        Some(Secret::new("ghp_contractcheck0000000000000000000000")),
    )
    .unwrap();

    // Deploy keys. Outcomes are the mock's business (its example key does not match ours);
    // only what was sent is checked, so a transport failure is the one outcome refused.
    let keys = GithubDeployKeyProvider::new(own);
    let mut sent = 0;
    for read_only in [true, false] {
        let t = deploy_target(read_only);
        let inspected = bounded("inspect", keys.inspect(&t)).await;
        assert!(
            inspected.as_ref().map_err(|e| e.is_transient()).err() != Some(true),
            "{inspected:?}"
        );
        // Prism answers 406 to GitHub's media type (`application/vnd.github+json`, which the
        // spec lists as `application/json`) after validating the request, so the mint's answer
        // may be an error; verify and revoke then use a key id of the right shape.
        let minted = match bounded("mint", keys.mint(&t)).await {
            Ok(m) => m,
            Err(e) => {
                assert!(!e.is_transient(), "{e}");
                let (private, _) = rekey::providers::github::generate_ed25519("x").unwrap();
                rekey::providers::Minted {
                    id: "42".into(),
                    fields: BTreeMap::from([("private_key".to_owned(), private)]),
                }
            }
        };
        let _ = bounded("verify", keys.verify(&t, &minted)).await;
        let _ = bounded("revoke", keys.revoke(&t, &minted.id)).await;
        sent += 4;
    }

    // Tokens: GET /user with the old and the new token, then the revocation.
    let anonymous = GithubClient::new(&prism.url, None).unwrap();
    let inputs = TokenInputs {
        new: BTreeMap::from([(
            "pat".to_owned(),
            ValueSource::Value(Secret::new("ghp_newnewnewnewnewnewnewnewnewnewnew00")),
        )]),
        old: BTreeMap::from([(
            "pat".to_owned(),
            ValueSource::Value(Secret::new("ghp_oldoldoldoldoldoldoldoldoldoldold00")),
        )]),
        prompt: false,
    };
    let tokens = GithubTokenProvider::new(anonymous, inputs);
    let mut t = deploy_target(true);
    t.id = Located::new("pat".into());
    t.provider = Located::new(ProviderKind::GithubToken);
    t.principal = Principal::default();
    let old_id = rekey::providers::github::hashed_token(&Secret::new(
        "ghp_oldoldoldoldoldoldoldoldoldoldold00",
    ));
    let _ = bounded("token inspect", tokens.inspect(&t)).await;
    let minted = bounded("token mint", tokens.mint(&t)).await.unwrap();
    let _ = bounded("token verify", tokens.verify(&t, &minted)).await;
    let revoked = bounded("token revoke", tokens.revoke(&t, &old_id)).await;
    assert!(
        !matches!(revoked, Err(ref e) if e.is_transient()),
        "{revoked:?}"
    );
    sent += 3;

    let log = std::fs::read_to_string(&prism.log).unwrap();
    let received = log.matches("Request received").count();
    assert!(
        received >= sent,
        "Prism saw {received} requests, rekey sent {sent}:\n{log}"
    );
    // Every request was validated, and passed.
    let passed = log
        .matches("The request passed the validation rules")
        .count();
    assert_eq!(
        passed, received,
        "not every request passed validation:\n{log}"
    );
    let violations: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("Violation: request"))
        .collect();
    assert!(
        violations.is_empty(),
        "requests that do not match GitHub's OpenAPI description:\n{}",
        violations.join("\n")
    );
    assert!(
        !log.contains("ghp_newnew") && !log.contains("ghp_oldold"),
        "Prism logs no body, so no token either"
    );
}
