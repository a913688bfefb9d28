//! `rekey sandbox serve` driven by a client process, as a team would: spawn the binary, read the
//! environment it prints, call the simulators with it (CircleCI and GitHub over HTTP, AWS IAM
//! through the AWS SDK), then stop it with SIGTERM (or SIGINT) and check it exits and its
//! ports close.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A served sandbox: the child and what it printed before `# ready`.
struct Served {
    child: Child,
    env: BTreeMap<String, String>,
    comments: Vec<String>,
}

fn serve(args: &[&str]) -> Served {
    let mut child = Command::new(env!("CARGO_BIN_EXE_rekey"))
        .args(["sandbox", "serve"])
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn rekey sandbox serve");
    let stdout = child.stdout.take().expect("stdout");
    let mut env = BTreeMap::new();
    let mut comments = Vec::new();
    for line in BufReader::new(stdout).lines() {
        let line = line.expect("read a line");
        if let Some(c) = line.strip_prefix("# ") {
            comments.push(c.to_string());
            if c.starts_with("ready") {
                return Served {
                    child,
                    env,
                    comments,
                };
            }
        } else if let Some((k, v)) = line.split_once('=') {
            env.insert(k.to_string(), v.to_string());
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    panic!("the sandbox ended before it was ready: {comments:?}");
}

impl Served {
    /// Sends `signal`, waits (10 s at most) for the process to exit; its exit code.
    fn stop(mut self, signal: i32) -> Option<i32> {
        let pid = self.child.id() as i32;
        // SAFETY: kill(2) on our own child's pid.
        unsafe {
            libc::kill(pid, signal);
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(status) = self.child.try_wait().expect("wait") {
                return status.code();
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                let _ = self.child.wait();
                panic!("the sandbox did not stop on signal {signal}");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Whether a printed comment (after `# `, trimmed) starts with `prefix`.
    fn says(&self, prefix: &str) -> bool {
        self.comments
            .iter()
            .any(|c| c.trim_start().starts_with(prefix))
    }

    /// CircleCI's listing of a project's variables, with the printed host and token.
    async fn envvars(&self, http: &reqwest::Client, slug: &str) -> serde_json::Value {
        http.get(format!(
            "{}/api/v2/project/{slug}/envvar",
            self.get("CIRCLECI_HOST")
        ))
        .header("Circle-Token", self.get("CIRCLECI_TOKEN"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
    }

    fn get(&self, name: &str) -> &str {
        self.env
            .get(name)
            .unwrap_or_else(|| panic!("{name} not printed: {:?}", self.env.keys()))
    }
}

fn port_of(url: &str) -> std::net::SocketAddr {
    url.trim_start_matches("http://")
        .split('/')
        .next()
        .unwrap()
        .parse()
        .unwrap()
}

#[test]
fn a_client_drives_the_world_of_a_plan_then_sigterm_stops_it() {
    let served = serve(&["--from-plan", "plans/circleci-incident.yaml"]);
    for name in [
        "CIRCLECI_HOST",
        "CIRCLECI_TOKEN",
        "GITHUB_API_URL",
        "GITHUB_TOKEN",
        "AWS_ENDPOINT_URL",
        "AWS_ACCESS_KEY_ID",
        "AWS_SECRET_ACCESS_KEY",
    ] {
        assert!(
            served.get(name).starts_with("http://127.0.0.1:")
                || !name.ends_with("URL") && !name.ends_with("HOST"),
            "{name}"
        );
    }
    // rekey's own GCP credentials at the simulator: a key file clients can read.
    let key: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(served.get("GOOGLE_APPLICATION_CREDENTIALS")).unwrap(),
    )
    .unwrap();
    assert!(
        key["token_uri"]
            .as_str()
            .unwrap()
            .starts_with("http://127.0.0.1:")
    );
    // The plan's endpoints block for GCP and Azure, and the exec target left out.
    assert!(
        served.says("gcp_iam: http://127.0.0.1:"),
        "{:?}",
        served.comments
    );
    assert!(
        served.says("azure_graph: http://127.0.0.1:"),
        "{:?}",
        served.comments
    );
    assert!(
        served.says("not in this world: npm-publish"),
        "{:?}",
        served.comments
    );

    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let http = reqwest::Client::new();
        // CircleCI: the project variable the plan observed, masked as the plan saw it.
        let vars = served.envvars(&http, "gh/acme/api").await;
        let id = vars["items"]
            .as_array()
            .unwrap()
            .iter()
            .find(|v| v["name"] == "AWS_ACCESS_KEY_ID")
            .unwrap_or_else(|| panic!("{vars}"));
        assert_eq!(id["value"], "xxxxWXYZ");
        // GitHub: the deploy key of acme/infra.
        let keys: serde_json::Value = http
            .get(format!(
                "{}/repos/acme/infra/keys",
                served.get("GITHUB_API_URL")
            ))
            .header(
                "Authorization",
                format!("Bearer {}", served.get("GITHUB_TOKEN")),
            )
            .header("User-Agent", "rekey-test")
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(keys.as_array().map(Vec::len), Some(1), "{keys}");
        // AWS IAM through the SDK: ci-deployer holds the key in use and the removable one.
        let creds = aws_credential_types::Credentials::new(
            served.get("AWS_ACCESS_KEY_ID"),
            served.get("AWS_SECRET_ACCESS_KEY"),
            None,
            None,
            "sandbox",
        );
        let config = aws_config::SdkConfig::builder()
            .behavior_version(aws_config::BehaviorVersion::latest())
            .region(aws_config::Region::new("us-east-1"))
            .endpoint_url(served.get("AWS_ENDPOINT_URL"))
            .credentials_provider(
                aws_credential_types::provider::SharedCredentialsProvider::new(creds),
            )
            .build();
        let iam = aws_sdk_iam::Client::new(&config);
        let listed = iam
            .list_access_keys()
            .user_name("ci-deployer")
            .send()
            .await
            .expect("ListAccessKeys");
        let ids: Vec<String> = listed
            .access_key_metadata()
            .iter()
            .filter_map(|k| k.access_key_id().map(str::to_owned))
            .collect();
        assert_eq!(ids.len(), 2, "{ids:?}");
        assert!(ids.iter().any(|k| k.ends_with("WXYZ")));
        assert!(ids.iter().any(|k| k == "AKIAIOSFODNN7EXAMPLE"));
    });

    let circleci = port_of(served.get("CIRCLECI_HOST"));
    let aws = port_of(served.get("AWS_ENDPOINT_URL"));
    assert_eq!(served.stop(libc::SIGTERM), Some(0));
    for addr in [circleci, aws] {
        assert!(
            std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(500)).is_err(),
            "{addr} still accepts connections"
        );
    }
}

#[test]
fn a_world_file_is_served_with_faults_and_sigint_stops_it() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("world.yaml");
    std::fs::write(
        &file,
        "circleci:\n  projects:\n    gh/acme/api: [NPM_TOKEN, AWS_ACCESS_KEY_ID]\n  contexts:\n    deploy: [SLACK_WEBHOOK]\naws:\n  users: {ci-deployer: 2}\ngithub:\n  repos: [acme/api]\n",
    )
    .unwrap();
    let served = serve(&["--world", file.to_str().unwrap(), "--faults", "realistic"]);
    assert!(
        served.says("fault: CircleCI: the first 1 writes answer 429"),
        "{:?}",
        served.comments
    );
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let http = reqwest::Client::new();
        let host = served.get("CIRCLECI_HOST");
        let vars = served.envvars(&http, "gh/acme/api").await;
        let names: Vec<&str> = vars["items"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|v| v["name"].as_str())
            .collect();
        assert_eq!(names, ["AWS_ACCESS_KEY_ID", "NPM_TOKEN"]);
        // The realistic profile throttles the first write: 429 with Retry-After.
        let first = http
            .post(format!("{host}/api/v2/project/gh/acme/api/envvar"))
            .header("Circle-Token", served.get("CIRCLECI_TOKEN"))
            .json(&serde_json::json!({"name": "X", "value": "y"}))
            .send()
            .await
            .unwrap();
        assert_eq!(first.status().as_u16(), 429);
        assert_eq!(
            first
                .headers()
                .get("retry-after")
                .and_then(|v| v.to_str().ok()),
            Some("1")
        );
        // A wrong token is refused, as CircleCI does.
        let refused = http
            .get(format!("{host}/api/v2/project/gh/acme/api/envvar"))
            .header("Circle-Token", "not-the-token")
            .send()
            .await
            .unwrap();
        assert_eq!(refused.status().as_u16(), 401);
    });
    assert_eq!(served.stop(libc::SIGINT), Some(0));
}

#[test]
fn a_bad_world_file_is_refused_with_its_place() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("world.yaml");
    std::fs::write(&file, "aws:\n  users: {ci: 3}\n").unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_rekey"))
        .args(["sandbox", "serve", "--world", file.to_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("world.yaml: aws.users.ci: 3 keys"),
        "{stderr}"
    );
}
