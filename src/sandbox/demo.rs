//! The demo world: a made-up organization `gh/acme` in the CircleCI simulator whose AWS
//! variables hold real keys of the AWS simulator, so that `rekey demo` rotates them for real —
//! in process, on 127.0.0.1, with nothing leaving the machine.
//!
//! IAM users: `ci-deployer` (its key in projects api and web), `prod-deployer` (its key in
//! project infra, plus an old inactive key the plan marks removable: the user is at AWS's
//! 2-key limit), `release-bot` (its key in the `aws-prod` context). A canary pipeline succeeds
//! only if the project's AWS variables authenticate at the AWS simulator.

use super::Sandbox;
use super::aws::{AwsSandbox, AwsState, KeySpec, KeyStatus};
use super::circleci::{CircleCiState, PipelineCheck, StoredVar, demo_org};
use super::demo_cloud::CloudDemo;
use super::github::{GithubSandbox, GithubState};
use crate::circleci::CircleCiClient;
use crate::github::GithubClient;
use crate::providers::aws::AwsIamProvider;
use crate::providers::checkout_key::CheckoutKeyProvider;
use crate::providers::github::{
    GithubDeployKeyProvider, GithubTokenProvider, TokenInputs, ValueSource,
};
use crate::providers::registry::ProviderSet;
use chrono::{Duration, Utc};
use std::sync::Arc;

/// Both simulators, started, with the demo organization.
pub struct DemoWorld {
    pub circleci: Sandbox,
    pub aws: Arc<AwsSandbox>,
    /// The removable old key of `prod-deployer`.
    pub removable_key: String,
    /// GitHub: repository acme/api with one old deploy key; the old and new personal access
    /// tokens of user release-bot (the old one is what gh/acme/api's GITHUB_TOKEN holds).
    pub github: GithubSandbox,
    pub old_github_token: crate::secret::Secret,
    pub new_github_token: crate::secret::Secret,
}

/// The project variable the demo's deploy key is written to (base64 of the OpenSSH key).
pub const DEPLOY_KEY_VAR: &str = "GITHUB_DEPLOY_KEY";

pub const ACCOUNT: &str = "123456789012";

/// When the demo's incident began: the exposed key's history before it is the baseline.
pub fn incident_start() -> chrono::DateTime<Utc> {
    Utc::now() - Duration::days(30)
}

/// CloudTrail's event history of `ci-deployer`'s key, as LookupEvents serves it: weeks of
/// deployments from CircleCI's egress, then, after the incident start, someone else's
/// reconnaissance with Boto3 from an address never seen before, and a denied attempt.
fn event_history(key: &str) -> String {
    let record =
        |days_ago: i64, name: &str, source: &str, ip: &str, agent: &str, error: Option<&str>| {
            let at = Utc::now() - Duration::days(days_ago);
            let mut r = serde_json::json!({
                "eventVersion": "1.08",
                "userIdentity": {
                    "type": "IAMUser",
                    "principalId": "AIDADEMOCIDEPLOYER01",
                    "arn": format!("arn:aws:iam::{ACCOUNT}:user/ci-deployer"),
                    "accountId": ACCOUNT,
                    "accessKeyId": key,
                    "userName": "ci-deployer"
                },
                "eventTime": at.format("%Y-%m-%dT%H:%M:%SZ").to_string(),
                "eventSource": source,
                "eventName": name,
                "awsRegion": "us-east-1",
                "sourceIPAddress": ip,
                "userAgent": agent,
                "eventID": format!("demo-{days_ago}-{name}"),
                "eventType": "AwsApiCall",
                "readOnly": true,
                "recipientAccountId": ACCOUNT
            });
            if let Some(code) = error {
                r["errorCode"] = serde_json::json!(code);
                r["errorMessage"] =
                    serde_json::json!("User is not authorized to perform this action");
            }
            r
        };
    let deploy = "aws-cli/2.9.0 Python/3.9.11 Linux/5.15 exe/x86_64.ubuntu.22";
    let boto = "Boto3/1.26.41 Python/3.10.6 Linux/5.19.0 Botocore/1.29.41";
    let mut records = Vec::new();
    for days_ago in [60, 52, 45, 38, 33] {
        records.push(record(
            days_ago,
            "PutObject",
            "s3.amazonaws.com",
            "198.51.100.10",
            deploy,
            None,
        ));
    }
    records.push(record(
        9,
        "GetCallerIdentity",
        "sts.amazonaws.com",
        "203.0.113.66",
        boto,
        None,
    ));
    records.push(record(
        9,
        "ListUsers",
        "iam.amazonaws.com",
        "203.0.113.66",
        boto,
        None,
    ));
    records.push(record(
        9,
        "GetAccountAuthorizationDetails",
        "iam.amazonaws.com",
        "203.0.113.66",
        boto,
        Some("AccessDenied"),
    ));
    serde_json::json!({ "Records": records }).to_string()
}

/// Starts the world. Must be called within a Tokio runtime.
pub async fn start() -> std::io::Result<DemoWorld> {
    let long_ago = Utc::now() - Duration::days(700);
    let mut aws = AwsState::new(ACCOUNT);
    let mut add =
        |user: &str, status_active: bool, days: i64| -> std::io::Result<super::AwsCredentials> {
            if aws.user_info(user).is_none() {
                aws.add_user(user, super::aws::Access::None)
                    .map_err(std::io::Error::other)?;
            }
            let spec = if status_active {
                KeySpec::active()
            } else {
                KeySpec::inactive()
            };
            aws.add_key(user, spec.created_at(Utc::now() - Duration::days(days)))
                .map_err(std::io::Error::other)
        };
    let ci = add("ci-deployer", true, 700)?;
    let prod = add("prod-deployer", true, 500)?;
    let prod_old = add("prod-deployer", false, 900)?;
    let release = add("release-bot", true, 400)?;
    aws.load_cloudtrail_records(&event_history(&ci.access_key_id))
        .map_err(std::io::Error::other)?;
    let aws = Arc::new(AwsSandbox::start(aws).await?);

    let mut state: CircleCiState = demo_org();
    let set_project = |state: &mut CircleCiState, slug: &str, name: &str, value: &str| {
        if let Some(p) = state.project_by_slug_mut(slug) {
            p.env_vars.insert(
                name.to_string(),
                StoredVar {
                    value: value.to_string(),
                    created_at: long_ago,
                    updated_at: long_ago,
                },
            );
        }
    };
    for slug in ["gh/acme/api", "gh/acme/web"] {
        set_project(&mut state, slug, "AWS_ACCESS_KEY_ID", &ci.access_key_id);
        set_project(
            &mut state,
            slug,
            "AWS_SECRET_ACCESS_KEY",
            ci.secret_access_key.expose(),
        );
    }
    set_project(
        &mut state,
        "gh/acme/infra",
        "PROD_AWS_ACCESS_KEY_ID",
        &prod.access_key_id,
    );
    set_project(
        &mut state,
        "gh/acme/infra",
        "PROD_AWS_SECRET_ACCESS_KEY",
        prod.secret_access_key.expose(),
    );
    if let Some(c) = state.context_by_name_mut("aws-prod") {
        for (name, value) in [
            ("AWS_ACCESS_KEY_ID", release.access_key_id.as_str()),
            ("AWS_SECRET_ACCESS_KEY", release.secret_access_key.expose()),
        ] {
            c.vars.insert(
                name.to_string(),
                StoredVar {
                    value: value.to_string(),
                    created_at: long_ago,
                    updated_at: long_ago,
                },
            );
        }
    }
    // A pipeline "deploys" with the project's AWS variables: it succeeds only if they are a
    // live, active key at the AWS simulator.
    state.pipeline_check = Some(aws_pipeline_check(aws.clone()));
    // GitHub: the deploy key and the token the demo rotates. The old token is the value the
    // CircleCI project already holds; the new one is what a person would create and paste.
    let mut github = GithubState::new().repo("acme/api");
    github.add_foreign_key("acme/api", "CircleCI deploy (2021)");
    let old_token = state
        .project_by_slug("gh/acme/api")
        .and_then(|p| p.env_vars.get("GITHUB_TOKEN"))
        .map(|v| v.value.clone())
        .unwrap_or_default();
    github.register_token(&old_token, "release-bot", "repo, workflow");
    let new_token = github.add_token("release-bot", "repo");
    let mut rng = super::Rng::from_entropy();
    set_project(
        &mut state,
        "gh/acme/api",
        DEPLOY_KEY_VAR,
        // Multi-line values are stored base64-encoded in CircleCI, as is customary.
        &base64::Engine::encode(
            &base64::engine::general_purpose::STANDARD,
            super::fake::ssh_private_key(&mut rng),
        ),
    );
    let circleci = Sandbox::start(state).await?;
    Ok(DemoWorld {
        circleci,
        aws,
        removable_key: prod_old.access_key_id,
        github: GithubSandbox::start(github).await?,
        old_github_token: crate::secret::Secret::new(old_token),
        new_github_token: crate::secret::Secret::new(new_token),
    })
}

/// A pipeline check that "deploys" with the project's AWS variables: the workflow succeeds
/// only if `AWS_ACCESS_KEY_ID` and `AWS_SECRET_ACCESS_KEY` (when the project has them) are a
/// live, active key of `aws` (the demo's and a rehearsal's canaries).
pub fn aws_pipeline_check(aws: Arc<AwsSandbox>) -> PipelineCheck {
    PipelineCheck(Arc::new(move |project, _branch| {
        let (Some(id), Some(secret)) = (
            project.env_vars.get("AWS_ACCESS_KEY_ID"),
            project.env_vars.get("AWS_SECRET_ACCESS_KEY"),
        ) else {
            return true;
        };
        let state = aws.state();
        let active = state
            .key(&id.value)
            .is_some_and(|k| k.status == KeyStatus::Active);
        active
            && state
                .credentials(&id.value)
                .is_some_and(|c| c.secret_access_key.expose() == secret.value)
    }))
}

impl DemoWorld {
    /// Checks the GitHub side after a rotation: (what, ok) for the deploy key (one key on
    /// acme/api, the public half of the private key in gh/acme/api), the checkout key (one
    /// deploy key on gh/acme/api, preferred) and the token (the old revoked, the binding
    /// holding the new one).
    pub fn github_checks(&self) -> Vec<(String, bool)> {
        let state = self.circleci.state();
        let github = self.github.state();
        let project = state.project_by_slug("gh/acme/api");
        let keys = github.keys_of("acme/api");
        let deploy_ok = match (
            project.and_then(|p| p.env_vars.get(DEPLOY_KEY_VAR)),
            keys.as_slice(),
        ) {
            (Some(var), [one]) => {
                base64::Engine::decode(&base64::engine::general_purpose::STANDARD, &var.value)
                    .ok()
                    .and_then(|pem| ssh_key::PrivateKey::from_openssh(pem).ok())
                    .and_then(|k| k.public_key().to_openssh().ok())
                    .is_some_and(|public| public.starts_with(&one.key))
            }
            _ => false,
        };
        let checkout_ok = project.is_some_and(|p| {
            let deploy: Vec<_> = p
                .checkout_keys
                .iter()
                .filter(|k| k.key_type == "deploy-key")
                .collect();
            deploy.len() == 1 && deploy.iter().all(|k| k.preferred)
        });
        let token_ok = !github.token_works(self.old_github_token.expose())
            && github.token_works(self.new_github_token.expose())
            && project
                .and_then(|p| p.env_vars.get("GITHUB_TOKEN"))
                .is_some_and(|v| v.value == self.new_github_token.expose());
        vec![
            (
                format!(
                    "GitHub acme/api: one deploy key, the one whose private key gh/acme/api {DEPLOY_KEY_VAR} holds"
                ),
                deploy_ok,
            ),
            (
                "CircleCI gh/acme/api: one checkout deploy key, new and preferred".to_string(),
                checkout_ok,
            ),
            (
                "GitHub token of release-bot: the old one revoked, gh/acme/api GITHUB_TOKEN holds the new one"
                    .to_string(),
                token_ok,
            ),
        ]
    }

    /// Checks the world after a rotation: for every AWS binding, whether it holds an active
    /// key of the simulator with the right secret. (place, variable, works) per binding.
    pub fn bindings_work(&self) -> Vec<(String, bool)> {
        let state = self.circleci.state();
        let aws = self.aws.state();
        let works = |id: Option<&StoredVar>, secret: Option<&StoredVar>| match (id, secret) {
            (Some(id), Some(secret)) => {
                aws.key(&id.value)
                    .is_some_and(|k| k.status == KeyStatus::Active)
                    && aws
                        .credentials(&id.value)
                        .is_some_and(|c| c.secret_access_key.expose() == secret.value)
            }
            _ => false,
        };
        let mut out = Vec::new();
        for (slug, prefix) in [
            ("gh/acme/api", ""),
            ("gh/acme/web", ""),
            ("gh/acme/infra", "PROD_"),
        ] {
            if let Some(p) = state.project_by_slug(slug) {
                let id = p.env_vars.get(&format!("{prefix}AWS_ACCESS_KEY_ID"));
                let secret = p.env_vars.get(&format!("{prefix}AWS_SECRET_ACCESS_KEY"));
                out.push((format!("project {slug}"), works(id, secret)));
            }
        }
        if let Some(c) = state.context_by_name("aws-prod") {
            out.push((
                "context aws-prod".to_string(),
                works(
                    c.vars.get("AWS_ACCESS_KEY_ID"),
                    c.vars.get("AWS_SECRET_ACCESS_KEY"),
                ),
            ));
        }
        out
    }

    /// rekey's AWS provider, at the AWS simulator.
    pub fn aws_provider(&self) -> AwsIamProvider {
        AwsIamProvider::new(&self.aws.sdk_config())
    }

    /// Every provider the demo's plan uses, with rekey's own credentials at each simulator:
    /// AWS, the GitHub deploy key and token (the token's new and old values supplied in
    /// process, as `--value-from-file` would), checkout keys through `circleci`, and GCP,
    /// Azure and exec from `cloud`.
    pub fn providers(
        &self,
        circleci: &CircleCiClient,
        cloud: &CloudDemo,
    ) -> std::io::Result<ProviderSet> {
        let github = GithubClient::new(
            &self.github.base_url(),
            Some(crate::secret::Secret::new(self.github.admin_token())),
        )
        .map_err(std::io::Error::other)?;
        let anonymous =
            GithubClient::new(&self.github.base_url(), None).map_err(std::io::Error::other)?;
        let one = |value: &crate::secret::Secret| {
            [(
                "github-token-api".to_string(),
                ValueSource::Value(value.clone()),
            )]
            .into()
        };
        let token_inputs = TokenInputs {
            new: one(&self.new_github_token),
            old: one(&self.old_github_token),
            prompt: false,
        };
        let mut providers = ProviderSet::default()
            .with(Arc::new(self.aws_provider()))
            .with(Arc::new(GithubDeployKeyProvider::new(github)))
            .with(Arc::new(GithubTokenProvider::new(anonymous, token_inputs)))
            .with(Arc::new(CheckoutKeyProvider::new(circleci.clone())))
            .with(Arc::new(crate::providers::ssh_key::SshKeyProvider::new(
                circleci.clone(),
            )));
        for p in cloud.providers()? {
            providers = providers.with(p);
        }
        Ok(providers)
    }
}
