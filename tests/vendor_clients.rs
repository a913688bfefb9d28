//! Fidelity of rekey's simulators against clients their vendors publish: each test starts a
//! simulator on 127.0.0.1, runs a script under `tests/vendor/` that drives it through the
//! vendor's own client library (google-api-python-client and google-auth; msal and Microsoft's
//! Graph SDK for Python; Octokit; boto3), and asserts on the JSON the script prints — what the
//! client parsed, which errors it raised, which fields the vendor's schema did not know. The
//! AWS test also sends the same calls to moto and compares the answers field by field.
//!
//! `./scripts/test` installs the clients (pinned: Python packages into `.venv-moto`, Octokit
//! into `.npm-octokit`). A missing client fails the test, as a missing moto does: a skip would
//! prove nothing.
//!
//! Secrets reach a script on its standard input, never in argv or its environment.

mod support;

use std::io::{Read, Seek, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

/// Upper bound of one client script (the Graph SDK alone takes seconds to import).
const SCRIPT_TIMEOUT: Duration = Duration::from_secs(120);

const PYTHON_HINT: &str =
    "run ./scripts/test, which installs the vendors' Python clients into .venv-moto";

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// The interpreter and its script: `.venv-moto`'s Python for `.py`, `node` for `.mjs`.
fn command_for(script: &str) -> Command {
    let path = root().join("tests/vendor").join(script);
    if script.ends_with(".py") {
        let python = root().join(".venv-moto/bin/python3");
        assert!(
            python.exists(),
            "{} is missing: {PYTHON_HINT}",
            python.display()
        );
        let mut c = Command::new(python);
        c.arg(path);
        c
    } else {
        let mut c = Command::new("node");
        c.arg(path);
        c
    }
}

/// Runs a client script with `args`, `input` on its standard input, and returns the JSON it
/// printed. Blocking (run it on a multi-thread runtime: the simulators answer meanwhile); the
/// child is killed by its PID after [`SCRIPT_TIMEOUT`]. Any failure of the script fails the
/// test with its standard error.
fn run_client(script: &str, args: &[&str], input: &Value) -> Value {
    let mut stdout = tempfile::tempfile().unwrap();
    let mut stderr = tempfile::tempfile().unwrap();
    let mut stdin_file = tempfile::tempfile().unwrap();
    stdin_file.write_all(input.to_string().as_bytes()).unwrap();
    stdin_file.rewind().unwrap();
    let mut child = command_for(script)
        .args(args)
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .stdin(Stdio::from(stdin_file))
        .stdout(Stdio::from(stdout.try_clone().unwrap()))
        .stderr(Stdio::from(stderr.try_clone().unwrap()))
        .spawn()
        .unwrap_or_else(|e| panic!("start the client script {script}: {e}"));
    let began = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if began.elapsed() > SCRIPT_TIMEOUT {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{script} did not finish within {SCRIPT_TIMEOUT:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let read = |f: &mut std::fs::File| {
        let mut s = String::new();
        f.rewind().unwrap();
        f.read_to_string(&mut s).unwrap();
        s
    };
    let (out, err) = (read(&mut stdout), read(&mut stderr));
    assert!(
        status.success(),
        "{script} failed ({status}); if a module is missing, {PYTHON_HINT}:\n{err}"
    );
    serde_json::from_str(&out)
        .unwrap_or_else(|e| panic!("{script} printed no JSON ({e}):\n{out}\n{err}"))
}

/// [`run_client`] off the runtime's thread, so the in-process simulator keeps answering.
async fn client(script: &str, args: Vec<String>, input: Value) -> Value {
    let script = script.to_owned();
    tokio::task::spawn_blocking(move || {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        run_client(&script, &args, &input)
    })
    .await
    .unwrap()
}

fn strings(v: &Value) -> Vec<&str> {
    v.as_array()
        .map(|a| a.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default()
}

mod gcp {
    use super::*;
    use rekey::sandbox::gcp::{ADMIN_ACCOUNT, GcpSandbox};

    const PROJECT: &str = "acme";

    /// Keys created, listed, disabled (the disabled key gets no token), enabled and deleted,
    /// and log entries listed page by page, through Google's client and auth library; every
    /// answer within the discovery documents' schemas.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn google_api_python_client_against_the_gcp_simulator() {
        let gcp = GcpSandbox::start(PROJECT).await.unwrap();
        let email = gcp.with_state(|s| {
            s.key_bits = 1024;
            for (i, method) in ["CreateServiceAccountKey", "DeleteServiceAccountKey"]
                .iter()
                .cycle()
                .take(5)
                .enumerate()
            {
                s.add_log_entry(json!({
                    "insertId": format!("e{i}"),
                    "logName": "projects/acme/logs/cloudaudit.googleapis.com%2Factivity",
                    "timestamp": format!("2026-01-0{}T10:00:00Z", i + 1),
                    "severity": "NOTICE",
                    "resource": {"type": "service_account", "labels": {"project_id": PROJECT}},
                    "protoPayload": {
                        "@type": "type.googleapis.com/google.cloud.audit.AuditLog",
                        "methodName": format!("google.iam.admin.v1.{method}"),
                        "authenticationInfo": {"principalEmail": "ci@acme.iam.gserviceaccount.com"}
                    }
                }));
            }
            s.email(ADMIN_ACCOUNT)
        });
        let key_file: Value = serde_json::from_str(gcp.admin_key_json().unwrap().expose()).unwrap();
        let out = client(
            "gcp_iam.py",
            vec![gcp.iam_url()],
            json!({"key_file": key_file, "project": PROJECT, "account": email}),
        )
        .await;

        let private_key = key_file["private_key"].as_str().unwrap_or_default();
        support::assert_no_secret("the client's output", &out.to_string(), &[private_key]);
        assert_eq!(out["schema_violations"], json!([]), "{out:#}");
        let created = &out["create"];
        assert_eq!(
            strings(&created["fields"]),
            [
                "keyAlgorithm",
                "keyOrigin",
                "keyType",
                "name",
                "privateKeyData",
                "privateKeyType",
                "validAfterTime",
                "validBeforeTime"
            ],
            "create answers what IAM answers (no `disabled` while false): {out:#}"
        );
        assert_eq!(created["keyType"], "USER_MANAGED");
        assert_eq!(created["privateKeyType"], "TYPE_GOOGLE_CREDENTIALS_FILE");
        assert_eq!(created["name_prefix_ok"], true);
        assert_eq!(created["key_file_id_matches"], true);
        assert!(
            strings(&created["key_file_fields"]).contains(&"token_uri"),
            "{out:#}"
        );
        assert_eq!(out["new_key_signs_in"], true, "{out:#}");
        assert_eq!(out["list"]["names"].as_array().map(Vec::len), Some(2));
        assert_eq!(out["disable"], json!({}));
        assert_eq!(out["get_after_disable"]["disabled"], true);
        assert_eq!(out["disabled_key_token"]["refused"], true, "{out:#}");
        assert_eq!(out["enable"], json!({}));
        assert_eq!(out["get_after_enable"]["disabled"], false);
        assert_eq!(out["delete"], json!({}));
        assert_eq!(out["get_after_delete"]["http_status"], 404, "{out:#}");
        assert_eq!(out["get_after_delete"]["status"], "NOT_FOUND");
        assert_eq!(out["list_unknown_account"]["http_status"], 404);
        // Three creations among the five entries, two to a page: the client's own paging.
        assert_eq!(out["log_entries"]["pages"], 2, "{out:#}");
        assert_eq!(
            strings(&out["log_entries"]["insert_ids"]),
            ["e0", "e2", "e4"]
        );
        assert_eq!(out["log_unsupported_filter"]["http_status"], 400);
        assert_eq!(out["log_unsupported_filter"]["status"], "INVALID_ARGUMENT");
    }
}

mod azure {
    use super::*;
    use rekey::sandbox::azure::AzureSandbox;

    const TENANT: &str = "8c3f0d6e-1111-4222-8333-944445555666";

    /// msal (through its https-only authority: see `tests/vendor/graph.py`) gets a Graph token
    /// from the simulator's token endpoint and is refused a wrong secret; Microsoft's Graph
    /// SDK adds, lists and removes an application password and pages through
    /// service-principal sign-ins, every answer parsed by the SDK's models with no property
    /// they do not know.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn msal_and_the_graph_sdk_against_the_azure_simulator() {
        let azure = AzureSandbox::start(TENANT).await.unwrap();
        let admin = azure.admin_identity().unwrap();
        let object = azure.with_state(|s| {
            let (object, app_id) = s.add_app("ci-deployer");
            s.add_password(&object, Some("ci"), None);
            for (i, day) in [3, 9, 14, 20, 27].iter().enumerate() {
                s.add_signin(json!({
                    "id": format!("s{i}"),
                    "createdDateTime": format!("2026-01-{day:02}T08:00:00Z"),
                    "appId": app_id,
                    "appDisplayName": "ci-deployer",
                    "ipAddress": "203.0.113.7",
                    "servicePrincipalId": "0b7f6c2e-0000-4000-8000-000000000001",
                    "servicePrincipalName": "ci-deployer",
                    "signInEventTypes": ["servicePrincipal"],
                    "status": {"errorCode": 0}
                }));
            }
            // Outside the window, and an interactive sign-in: both filtered out.
            s.add_signin(
                json!({"id": "old", "createdDateTime": "2025-12-01T08:00:00Z",
                "appId": app_id, "signInEventTypes": ["servicePrincipal"]}),
            );
            s.add_signin(
                json!({"id": "user", "createdDateTime": "2026-01-05T08:00:00Z",
                "appId": app_id, "signInEventTypes": ["interactiveUser"]}),
            );
            object
        });
        let out = client(
            "graph.py",
            vec![azure.authority_url(), TENANT.to_owned()],
            json!({
                "client_id": admin.client_id,
                "client_secret": admin.client_secret.expose(),
                "object_id": object,
            }),
        )
        .await;

        support::assert_no_secret(
            "the client's output",
            &out.to_string(),
            &[admin.client_secret.expose()],
        );
        assert!(
            out["msal_http_authority"]
                .as_str()
                .is_some_and(|s| s.starts_with("refused")),
            "msal refuses a plain-http authority (documented in graph.py): {out:#}"
        );
        assert_eq!(out["token"]["has_access_token"], true, "{out:#}");
        assert_eq!(out["token"]["token_type"], "Bearer");
        assert_eq!(out["token"]["expires_in_positive"], true);
        assert_eq!(out["wrong_secret"]["error"], "invalid_client", "{out:#}");
        assert_eq!(out["wrong_secret"]["error_codes"], json!([7000215]));
        assert_eq!(out["scope_without_default"]["error"], "invalid_scope");
        assert_eq!(out["unknown_tenant"], "refused");

        // The SDK's models know every property the simulator answers, but one: sign-ins are
        // Graph beta, and `signInEventTypes` is a beta-only property of the v1.0 model.
        let unknown = strings(&out["unknown_fields"]);
        assert_eq!(unknown.len(), 5, "{out:#}");
        assert!(
            unknown
                .iter()
                .all(|u| u.starts_with("signIn s") && u.ends_with(": ['signInEventTypes']")),
            "{out:#}"
        );
        let added = &out["add_password"];
        for field in [
            "key_id_is_uuid",
            "has_secret_text",
            "hint_is_prefix",
            "dates_parsed",
            "end_after_start",
            "start_tz_aware",
        ] {
            assert_eq!(added[field], true, "addPassword {field}: {out:#}");
        }
        assert_eq!(added["display_name"], "vendor-test");
        assert_eq!(out["get_application"]["credentials"], 2, "{out:#}");
        assert_eq!(out["get_application"]["new_key_listed"], true);
        assert_eq!(out["get_application"]["secret_text_hidden"], true);
        assert_eq!(out["remove_password"]["returned"], Value::Null);
        assert_eq!(out["after_remove"]["new_key_listed"], false);
        assert_eq!(out["remove_again"]["http_status"], 400, "{out:#}");
        assert_eq!(out["get_unknown_app"]["http_status"], 404);
        assert_eq!(out["get_unknown_app"]["code"], "Request_ResourceNotFound");
        assert_eq!(out["sign_ins"]["pages"], 3, "{out:#}");
        assert_eq!(
            strings(&out["sign_ins"]["ids"]),
            ["s4", "s3", "s2", "s1", "s0"],
            "newest first, followed through @odata.nextLink"
        );
        assert_eq!(out["sign_ins_unsupported_filter"]["http_status"], 400);
    }
}

mod github {
    use super::*;
    use rekey::sandbox::{GithubSandbox, GithubState};

    /// An OpenSSH public key (the private half is thrown away: GitHub sees public keys only).
    fn public_key(seed: u8) -> String {
        let pair = ssh_key::private::Ed25519Keypair::from_seed(&[seed; 32]);
        ssh_key::PrivateKey::from(pair)
            .public_key()
            .to_openssh()
            .unwrap()
    }

    /// Deploy keys created, listed (a page per key, through Octokit's Link paging), read and
    /// deleted, a key in use refused, and the audit log paged through its cursors, with every
    /// answer within GitHub's published OpenAPI description.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn octokit_against_the_github_simulator() {
        let now = chrono::Utc::now();
        let mut state = GithubState::new().repo("acme/app").org("acme");
        for i in 0..5i64 {
            let at = (now - chrono::Duration::hours(10 - i)).timestamp_millis();
            let action = ["repo.create", "repo.destroy", "org.update_member"][i as usize % 3];
            state.add_audit_event(
                "acme",
                json!({"@timestamp": at, "created_at": at, "_document_id": format!("d{i}"),
                    "action": action, "actor": "octocat", "actor_ip": "192.0.2.50",
                    "repo": "acme/app", "org": "acme"}),
            );
        }
        let github = GithubSandbox::start(state).await.unwrap();
        let out = client(
            "octokit.mjs",
            vec![github.base_url()],
            json!({"token": github.admin_token(), "repo": "acme/app", "org": "acme",
                "keys": [public_key(1), public_key(2)]}),
        )
        .await;

        support::assert_no_secret(
            "the client's output",
            &out.to_string(),
            &[&github.admin_token()],
        );
        assert_eq!(out["schema_violations"], json!([]), "{out:#}");
        let created = &out["create"][0];
        assert_eq!(created["status"], 201);
        assert_eq!(created["data"]["read_only"], true);
        assert_eq!(out["create"][1]["data"]["read_only"], false);
        assert_eq!(created["data"]["key"], public_key(1).trim());
        let at = created["data"]["created_at"].as_str().unwrap_or_default();
        assert!(
            chrono::NaiveDateTime::parse_from_str(at, "%Y-%m-%dT%H:%M:%SZ").is_ok(),
            "created_at in GitHub's form (seconds, Z), not `{at}`"
        );
        let ids: Vec<&Value> = out["create"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| &c["data"]["id"])
            .collect();
        assert_eq!(
            out["list"]["ids"]
                .as_array()
                .unwrap()
                .iter()
                .collect::<Vec<_>>(),
            ids,
            "every key, a page each, followed through Link: {out:#}"
        );
        assert!(
            out["list"]["first_page_link"]
                .as_str()
                .is_some_and(|l| l.contains("page=2") && l.contains("rel=\"next\"")),
            "{out:#}"
        );
        assert_eq!(out["get"]["same_as_created"], true);
        assert_eq!(out["create_again"]["status"], 422);
        assert_eq!(
            out["create_again"]["errors"][0]["message"],
            "key is already in use"
        );
        assert_eq!(out["delete"]["status"], 204);
        assert_eq!(out["get_after_delete"]["status"], 404);
        assert_eq!(out["list_unknown_repo"]["status"], 404);
        assert_eq!(
            strings(&out["audit"]["ids"]),
            ["d4", "d3", "d1", "d0"],
            "repo.* events, newest first, through the cursor links: {out:#}"
        );
        assert_eq!(
            out["audit_order_asc"]["status"], 422,
            "an order the simulator does not keep is refused, not ignored: {out:#}"
        );
        assert_eq!(out["audit_unsupported_phrase"]["status"], 422);
    }
}

mod aws {
    use super::*;
    use aws_credential_types::provider::ProvideCredentials;
    use rekey::sandbox::aws::{AwsSandbox, AwsState, KeySpec};
    use support::moto::{ACCOUNT_ID, Moto};

    const USER: &str = "ci-deployer";

    fn key(id: &str, secret: &str) -> Value {
        json!({"id": id, "secret": secret})
    }

    /// Where moto and the simulator differ (a fragment of the difference's line), and why.
    /// Each is moto's departure from AWS, the simulator's side being what AWS documents (see
    /// `src/sandbox/aws.rs`). Any other difference fails the test.
    const KNOWN_DIFFERENCES: &[(&str, &str)] = &[
        (
            ".UserId: simulator \"<AIDA... 21>\" / moto",
            "moto's user ids are 20 lower-case characters; IAM's are AIDA and 17 more",
        ),
        (
            "GetCallerIdentity inactive key.",
            "moto accepts an Inactive key; AWS refuses it with InvalidClientTokenId",
        ),
        (
            "IsTruncated: only the simulator answers false",
            "moto leaves IsTruncated out of a complete ListAccessKeys; IAM answers false",
        ),
        (
            "ListUsers MaxItems=1.",
            "moto ignores MaxItems (one page of everything); IAM pages with Marker",
        ),
        (
            "LookupEvents.",
            "moto does not implement CloudTrail LookupEvents (HTTP 500)",
        ),
        (
            "UpdateAccessKey bad status.",
            "moto stores any Status; IAM refuses one outside its enum with ValidationError",
        ),
        (
            "DeleteAccessKey again.message",
            "moto's NoSuchEntity message lacks IAM's final period",
        ),
    ];

    /// Every IAM and STS call rekey makes (and the refusals it depends on), through boto3,
    /// against the simulator and against moto, compared field by field; LookupEvents, which
    /// moto lacks, parsed by boto3 from the simulator alone.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn boto3_against_the_aws_simulator_and_moto() {
        let Some(moto) = Moto::start().await else {
            return;
        };
        let admin = moto
            .config()
            .credentials_provider()
            .unwrap()
            .provide_credentials()
            .await
            .unwrap();
        let ci = moto.create_ci_user(USER, None, 1).await;
        let (moto_key_id, moto_secret) = &ci.keys[0];

        let mut state = AwsState::new(ACCOUNT_ID)
            .user(USER)
            .with_key(KeySpec::active());
        let names = [
            ("ListBuckets", "s3.amazonaws.com"),
            ("GetCallerIdentity", "sts.amazonaws.com"),
        ];
        let records = json!({"Records": (0..5).map(|i| { let (name, source) = names[i % 2]; json!({
            "eventVersion": "1.08",
            "eventTime": format!("2026-01-{:02}T10:00:00Z", i + 3),
            "eventID": format!("00000000-0000-4000-8000-00000000000{i}"),
            "eventName": name,
            "eventSource": source,
            "readOnly": true,
            "sourceIPAddress": "203.0.113.9",
            "userIdentity": {"type": "IAMUser", "userName": USER,
                "accessKeyId": "AKIAHUNTEDHUNTEDKEY1",
                "arn": format!("arn:aws:iam::{ACCOUNT_ID}:user/{USER}")}
        })}).collect::<Vec<_>>()});
        state.load_cloudtrail_records(&records.to_string()).unwrap();
        let sim = AwsSandbox::start(state).await.unwrap();
        let sim_admin = sim.admin_credentials();
        let sim_user = sim.with_state(|s| s.credentials_of(USER)).remove(0);

        let input = json!({
            "sim": {
                "url": sim.endpoint_url(),
                "admin": key(&sim_admin.access_key_id, sim_admin.secret_access_key.expose()),
                "user": USER,
                "user_key": key(&sim_user.access_key_id, sim_user.secret_access_key.expose()),
            },
            "moto": {
                "url": moto.url,
                "admin": key(admin.access_key_id(), admin.secret_access_key()),
                "user": USER,
                "user_key": key(moto_key_id, moto_secret.expose()),
            },
        });
        let out = client("aws_compare.py", vec![], input).await;
        let text = out.to_string();
        let mut secrets: Vec<String> = sim
            .with_state(|s| s.issued_secrets())
            .iter()
            .map(|s| s.expose().to_owned())
            .collect();
        secrets.push(moto_secret.expose().to_owned());
        let secrets: Vec<&str> = secrets.iter().map(String::as_str).collect();
        support::assert_no_secret("the comparison", &text, &secrets);

        let found: Vec<&str> = strings(&out["differences"]);
        let unexplained: Vec<&&str> = found
            .iter()
            .filter(|d| !KNOWN_DIFFERENCES.iter().any(|(part, _)| d.contains(part)))
            .collect();
        assert!(
            unexplained.is_empty(),
            "differences between the simulator and moto, not documented:\n{}\n\n{out:#}",
            unexplained
                .iter()
                .map(|d| format!("  {d}"))
                .collect::<Vec<_>>()
                .join("\n")
        );
        // Each documented difference still shows (else it was fixed: drop it from the list).
        for (part, why) in KNOWN_DIFFERENCES {
            assert!(
                found.iter().any(|d| d.contains(part)),
                "documented difference `{part}` ({why}) no longer shows: {out:#}"
            );
        }
        // What the comparison cannot show, moto lacking it: the simulator's LookupEvents as
        // boto3 parsed it, newest first over three pages of two.
        let trail = &out["sim"]["LookupEvents"];
        assert_eq!(
            strings(&trail["names"]),
            [
                "ListBuckets",
                "GetCallerIdentity",
                "ListBuckets",
                "GetCallerIdentity",
                "ListBuckets"
            ],
            "{out:#}"
        );
        assert!(strings(&trail["types"]).contains(&"EventTime:datetime"));
        assert_eq!(trail["record_is_json"], true);
        // And the simulator's refusals as IAM words them (moto agrees on all but the period).
        assert_eq!(
            out["sim"]["CreateAccessKey third"]["error"],
            "LimitExceeded"
        );
        assert_eq!(out["sim"]["CreateAccessKey third"]["status"], 409);
        assert_eq!(
            out["sim"]["GetCallerIdentity deleted key"]["error"],
            "InvalidClientTokenId"
        );
    }
}
