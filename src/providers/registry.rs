//! The provider registry: which [`Provider`] serves each kind of target, and building that set
//! for a real run from the environment and the plan's `endpoints:`.
//!
//! The command line asks here instead of calling provider constructors, so that adding a
//! provider (or a new way to configure one) changes this file and the provider's module, not
//! every command that rotates. Rehearsals and demos build their sets against simulators
//! ([`crate::sandbox`]) with [`ProviderSet::with`].

use super::Provider;
use super::aws::AwsIamProvider;
use super::azure::{AzureAppSecretProvider, AzureIdentity};
use super::checkout_key::CheckoutKeyProvider;
use super::exec::ExecProvider;
use super::gcp::{GcpAuth, GcpSaKeyProvider};
use super::github::{GithubDeployKeyProvider, GithubTokenProvider, TokenInputs};
use super::ssh_key::SshKeyProvider;
use super::wrappers::RateLimited;
use crate::circleci::CircleCiClient;
use crate::credentials::{self, Service};
use crate::github::GithubClient;
use crate::plan::{Plan, ProviderKind};
use crate::ratelimit::RateLimiter;
use std::collections::HashMap;
use std::sync::Arc;

/// The providers available to a run, by kind.
#[derive(Clone, Default)]
pub struct ProviderSet(HashMap<ProviderKind, Arc<dyn Provider>>);

impl ProviderSet {
    pub fn with(mut self, provider: Arc<dyn Provider>) -> Self {
        self.0.insert(provider.kind(), provider);
        self
    }

    pub fn get(&self, kind: ProviderKind) -> Option<&dyn Provider> {
        self.0.get(&kind).map(|p| p.as_ref())
    }
}

/// Why the provider set could not be built: the user's configuration (a bad variable, a broken
/// key file: fix and run again) or building a client (rare: TLS setup and the like).
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    #[error("{0}")]
    Config(String),
    #[error("{0}")]
    Build(String),
}

/// What a real run's providers are built from besides the environment.
pub struct RealInputs<'a> {
    /// The plan to run: its `endpoints:` point GCP and Azure, its targets say which
    /// credentials are needed at all.
    pub plan: &'a Plan,
    /// CircleCI's client (checkout keys are CircleCI's own credentials).
    pub circleci: &'a CircleCiClient,
    /// `--rate-limit SERVICE=N` as given; see [`limiter`].
    pub rate_limits: &'a [(String, f64)],
    /// New and old values of github-token targets.
    pub token_inputs: TokenInputs,
    /// The exec provider as the operator's policy makes it ([`crate::policy::OperatorPolicy`]).
    pub exec: ExecProvider,
    /// An invocation that changes nothing (the dry run): providers may share what they read
    /// across targets ([`AwsIamProvider::with_user_directory`]).
    pub read_only: bool,
}

/// Every provider of a real run. AWS from its default chain (AWS_ENDPOINT_URL included) behind
/// the `aws-iam` rate limit; GitHub from GITHUB_API_URL with GITHUB_TOKEN (needed by deploy-key
/// targets only: a missing token fails those targets, not the run); GCP, Azure and exec from the
/// plan's `endpoints:` and their own credentials.
pub async fn real(inputs: RealInputs<'_>) -> Result<ProviderSet, RegistryError> {
    let aws = AwsIamProvider::from_env().await;
    let aws = if inputs.read_only {
        aws.with_user_directory()
    } else {
        aws
    };
    let aws: Arc<dyn Provider> = match limiter(inputs.rate_limits, "aws-iam", 20.0) {
        Some(limiter) => Arc::new(RateLimited::new(aws, limiter)),
        None => Arc::new(aws),
    };
    let github_token = credentials::token(Service::Github).ok();
    let github_own =
        GithubClient::from_env(github_token).map_err(|e| RegistryError::Config(e.to_string()))?;
    let github_anonymous =
        GithubClient::from_env(None).map_err(|e| RegistryError::Config(e.to_string()))?;
    let hooks = inputs.exec.clone();
    Ok(cloud(inputs.plan, inputs.exec)?
        .with(aws)
        .with(Arc::new(GithubDeployKeyProvider::new(github_own)))
        .with(Arc::new(GithubTokenProvider::new(
            github_anonymous,
            inputs.token_inputs,
        )))
        .with(Arc::new(CheckoutKeyProvider::new(inputs.circleci.clone())))
        .with(Arc::new(
            SshKeyProvider::new(inputs.circleci.clone()).with_hooks(hooks),
        )))
}

/// The providers besides AWS (whose SDK finds its own endpoint), the GCP and Azure ones pointed
/// at the plan's `endpoints:`. rekey's own GCP and Azure credentials come from the standard
/// variables; a broken `GOOGLE_APPLICATION_CREDENTIALS` stops the run only when the plan has a
/// GCP target.
fn cloud(plan: &Plan, exec: ExecProvider) -> Result<ProviderSet, RegistryError> {
    let has = |kind: ProviderKind| plan.targets.iter().any(|t| t.provider.value == kind);
    let gcp_auth = match GcpAuth::from_env() {
        Ok(auth) => auth,
        Err(e) if has(ProviderKind::GcpSaKey) => return Err(RegistryError::Config(e)),
        Err(_) => GcpAuth::None,
    };
    let gcp = GcpSaKeyProvider::new(&plan.endpoints, gcp_auth)
        .map_err(|e| RegistryError::Build(e.to_string()))?;
    let azure = AzureAppSecretProvider::new(&plan.endpoints, AzureIdentity::from_env())
        .map_err(|e| RegistryError::Build(e.to_string()))?;
    Ok(ProviderSet::default()
        .with(Arc::new(gcp))
        .with(Arc::new(azure))
        .with(Arc::new(exec)))
}

/// `plan --discover aws`: every IAM user of the account with its access key ids (ListUsers,
/// ListAccessKeys), with AWS credentials from the default chain.
pub async fn discover_aws_users() -> Result<Vec<(String, Vec<String>)>, String> {
    AwsIamProvider::from_env()
        .await
        .discover_users()
        .await
        .map_err(|e| e.to_string())
}

/// The limiter of `service` from `--rate-limit SERVICE=N` values (the last one given wins;
/// `default` when none; `None` for 0 = unlimited).
pub fn limiter(limits: &[(String, f64)], service: &str, default: f64) -> Option<Arc<RateLimiter>> {
    let rate = limits
        .iter()
        .rev()
        .find(|(s, _)| s == service)
        .map(|(_, r)| *r)
        .unwrap_or(default);
    // A burst of a second's worth lets a target's few calls go together.
    (rate > 0.0).then(|| Arc::new(RateLimiter::new(rate, rate.ceil() as u32)))
}
