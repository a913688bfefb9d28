//! AWS IAM user access keys: the `aws-iam` provider, and discovery of the IAM user that owns a
//! key CircleCI shows only as its last four characters.
//!
//! Owns every call rekey makes to IAM and STS, and the mapping of their errors onto
//! [`ProviderError`]. rekey's own credentials come from the AWS default chain (or the
//! [`SdkConfig`] a caller builds); the endpoint follows `AWS_ENDPOINT_URL`, which the SDK reads
//! itself, so tests point it at moto.

use super::{
    Capabilities, CredentialInfo, CredentialStatus, Inspection, Minted, Provider, ProviderError,
};
use crate::plan::{ProviderKind, Target};
use crate::secret::Secret;
use async_trait::async_trait;
use aws_config::meta::region::RegionProviderChain;
use aws_config::{BehaviorVersion, SdkConfig};
use aws_credential_types::Credentials;
use aws_sdk_iam::config::Region;
use aws_sdk_iam::config::retry::RetryConfig;
use aws_sdk_iam::config::timeout::TimeoutConfig;
use aws_sdk_iam::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use aws_sdk_iam::primitives::DateTime as AwsDateTime;
use aws_sdk_iam::types::StatusType;
use chrono::{DateTime, Utc};
use std::collections::BTreeMap;
use std::time::Duration;

/// Region used when neither the environment nor the profile names one. IAM is global, and STS
/// answers GetCallerIdentity in every region, so any region would do; this one always exists.
const DEFAULT_REGION: &str = "us-east-1";

/// Upper bound of one call when the caller's configuration sets none: a hung connection must
/// end as a `Transient` error the engine can retry, not stall a rotation forever.
const DEFAULT_OPERATION_TIMEOUT: Duration = Duration::from_secs(60);

/// Names of the credential fields a binding maps (see `ProviderKind::binding_fields`).
pub const FIELD_ACCESS_KEY_ID: &str = "access_key_id";
pub const FIELD_SECRET_ACCESS_KEY: &str = "secret_access_key";

/// Error codes that mean "this request signature / key is not accepted". When the new key gets
/// one of these from STS it may simply not have propagated yet (IAM is eventually consistent),
/// so `verify` reports [`ProviderError::Rejected`] and the engine retries within its bounds.
const AUTH_ERROR_CODES: &[&str] = &[
    "InvalidClientTokenId",
    "SignatureDoesNotMatch",
    "UnrecognizedClientException",
    "IncompleteSignature",
    "AuthFailure",
    "InvalidAccessKeyId",
    "ExpiredToken",
];

/// Error codes worth retrying: throttling and the service's own failures.
const TRANSIENT_ERROR_CODES: &[&str] = &[
    "Throttling",
    "ThrottlingException",
    "ThrottledException",
    "RequestThrottled",
    "RequestThrottledException",
    "TooManyRequestsException",
    "RequestLimitExceeded",
    "ServiceUnavailable",
    "ServiceUnavailableException",
    "ServiceFailure",
    "InternalFailure",
    "InternalError",
    "RequestTimeout",
    "RequestTimeoutException",
    "PriorRequestNotComplete",
    // IAM: another request changed the same entity at the same time.
    "ConcurrentModification",
];

/// The `aws-iam` provider: access keys of the IAM user named by `target.principal.user`.
#[derive(Clone)]
pub struct AwsIamProvider {
    iam: aws_sdk_iam::Client,
    /// Kept to build, for each `verify`, an STS client that signs with the new key.
    sdk: SdkConfig,
    /// Read-only invocations only ([`AwsIamProvider::with_user_directory`]): every user's ARN
    /// by lower-cased name, listed once; `None` inside when the listing failed.
    directory: Option<std::sync::Arc<tokio::sync::OnceCell<Option<UserArns>>>>,
}

/// Each IAM user's ARN by lower-cased name (IAM user names are unique regardless of case).
type UserArns = std::collections::HashMap<String, String>;

// Hand-written so that nothing of the SDK configuration (credential providers included) can
// ever reach a log line through `{:?}`.
impl std::fmt::Debug for AwsIamProvider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AwsIamProvider")
            .field("region", &self.sdk.region().map(|r| r.as_ref()))
            .field("endpoint_url", &self.sdk.endpoint_url())
            .finish_non_exhaustive()
    }
}

/// Result of looking a masked key id up among the account's users (`rekey plan --discover aws`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DiscoveryMatch {
    /// Exactly one user has a key ending so.
    Unique(String),
    /// Several users do (sorted, without repeats): a person must choose.
    Ambiguous(Vec<String>),
    /// No user does.
    None,
}

impl AwsIamProvider {
    /// Uses the AWS default credential chain and region (`AWS_REGION`, profile…), with
    /// `us-east-1` when none is configured. `AWS_ENDPOINT_URL` is honoured by the SDK.
    pub async fn from_env() -> Self {
        let region = RegionProviderChain::default_provider().or_else(Region::new(DEFAULT_REGION));
        let sdk = aws_config::defaults(BehaviorVersion::latest())
            .region(region)
            .load()
            .await;
        Self::new(&sdk)
    }

    /// Uses the given configuration (credentials, region, endpoint, HTTP client).
    pub fn new(sdk: &SdkConfig) -> Self {
        let mut builder = sdk.to_builder();
        if sdk.region().is_none() {
            builder.set_region(Some(Region::new(DEFAULT_REGION)));
        }
        // One attempt per call (the `Provider` contract): the engine owns retries because it
        // knows what is safe to repeat. An SDK-level retry of CreateAccessKey after a lost
        // response would mint a second key, and with AWS's two-key limit that can deadlock a
        // rotation.
        builder.set_retry_config(Some(RetryConfig::disabled()));
        if sdk
            .timeout_config()
            .and_then(|t| t.operation_timeout())
            .is_none()
        {
            let mut timeouts = sdk
                .timeout_config()
                .map(|t| t.to_builder())
                .unwrap_or_else(TimeoutConfig::builder);
            timeouts.set_operation_timeout(Some(DEFAULT_OPERATION_TIMEOUT));
            builder.set_timeout_config(Some(timeouts.build()));
        }
        let sdk = builder.build();
        AwsIamProvider {
            iam: aws_sdk_iam::Client::new(&sdk),
            sdk,
            directory: None,
        }
    }

    /// For a read-only invocation (the dry run): `inspect` takes each user's ARN from one
    /// listing of the account's users (ListUsers, 1,000 a page) instead of a GetUser per
    /// target, a third of the calls of an inspection. A user the listing lacks (created since,
    /// or ListUsers denied) is asked for with GetUser, as without the directory. Never on a
    /// provider that rotates: an ARN is only shown, but a run reads everything live.
    pub fn with_user_directory(mut self) -> Self {
        self.directory = Some(std::sync::Arc::default());
        self
    }

    /// `user`'s ARN: from the directory when there is one and it lists the user, else GetUser.
    async fn user_arn(&self, user: &str) -> Result<String, ProviderError> {
        if let Some(directory) = &self.directory {
            let listed = directory
                .get_or_init(|| async {
                    self.user_arns()
                        .await
                        .inspect_err(|e| {
                            tracing::info!(error = %e, "aws-iam: no user listing, GetUser per user")
                        })
                        .ok()
                })
                .await;
            if let Some(arn) = listed.as_ref().and_then(|m| m.get(&user.to_lowercase())) {
                return Ok(arn.clone());
            }
        }
        let what = format!("user {user}");
        let got = self
            .iam
            .get_user()
            .user_name(user)
            .send()
            .await
            .map_err(|e| map_error("GetUser", &what, e))?;
        got.user()
            .map(|u| u.arn().to_owned())
            .filter(|arn| !arn.is_empty())
            .ok_or_else(|| {
                ProviderError::Failed(format!("aws-iam GetUser for {what}: no user ARN returned"))
            })
    }

    /// Every user's ARN (ListUsers, every page).
    async fn user_arns(&self) -> Result<UserArns, ProviderError> {
        let mut arns = UserArns::new();
        // IAM's largest page: an account's users in a few calls.
        let mut pages = self
            .iam
            .list_users()
            .max_items(1000)
            .into_paginator()
            .items()
            .send();
        while let Some(user) = pages
            .try_next()
            .await
            .map_err(|e| map_error("ListUsers", "the account", e))?
        {
            if !user.arn().is_empty() {
                arns.insert(user.user_name().to_lowercase(), user.arn().to_owned());
            }
        }
        Ok(arns)
    }

    /// Every IAM user of the account with the ids of its access keys, sorted by user name.
    /// Read-only: ListUsers and ListAccessKeys, every page.
    pub async fn discover_users(&self) -> Result<Vec<(String, Vec<String>)>, ProviderError> {
        let mut users: Vec<String> = Vec::new();
        let mut pages = self.iam.list_users().into_paginator().items().send();
        while let Some(user) = pages
            .try_next()
            .await
            .map_err(|e| map_error("ListUsers", "the account", e))?
        {
            users.push(user.user_name().to_owned());
        }
        users.sort();
        let mut out = Vec::with_capacity(users.len());
        // One user at a time: with the SDK's retries off, a burst could be throttled and fail
        // the whole discovery.
        for user in users {
            let keys = match self.list_keys(&user).await {
                Ok(keys) => keys,
                // Deleted since ListUsers: it owns no key any more.
                Err(ProviderError::NotFound(_)) => continue,
                Err(e) => return Err(e),
            };
            let ids = keys.into_iter().map(|(id, _, _)| id).collect();
            out.push((user, ids));
        }
        Ok(out)
    }

    /// ListAccessKeys for one user, every page: (key id, status, created).
    async fn list_keys(
        &self,
        user: &str,
    ) -> Result<Vec<(String, CredentialStatus, Option<DateTime<Utc>>)>, ProviderError> {
        let what = format!("user {user}");
        let mut keys = Vec::new();
        let mut pages = self
            .iam
            .list_access_keys()
            .user_name(user)
            .into_paginator()
            .items()
            .send();
        while let Some(meta) = pages
            .try_next()
            .await
            .map_err(|e| map_error("ListAccessKeys", &what, e))?
        {
            let Some(id) = meta.access_key_id() else {
                // A key without an id could be neither shown nor removed; hiding it would let
                // an orphan survive, so refuse instead.
                return Err(ProviderError::Failed(format!(
                    "aws-iam ListAccessKeys for {what}: a key was listed without an id"
                )));
            };
            keys.push((
                id.to_owned(),
                status_of(meta.status()),
                meta.create_date().and_then(to_chrono),
            ));
        }
        Ok(keys)
    }

    async fn set_status(
        &self,
        target: &Target,
        credential_id: &str,
        status: StatusType,
    ) -> Result<(), ProviderError> {
        let user = user_of(target)?;
        tracing::debug!(
            user,
            key = credential_id,
            status = status.as_str(),
            "aws-iam UpdateAccessKey"
        );
        self.iam
            .update_access_key()
            .user_name(user)
            .access_key_id(credential_id)
            .status(status)
            .send()
            .await
            .map_err(|e| {
                map_error(
                    "UpdateAccessKey",
                    &format!("key {credential_id} of user {user}"),
                    e,
                )
            })?;
        Ok(())
    }
}

#[async_trait]
impl Provider for AwsIamProvider {
    fn kind(&self) -> ProviderKind {
        ProviderKind::AwsIam
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            deactivate: true,
            reactivate: true,
            manual_mint: false,
            max_credentials: Some(2),
        }
    }

    async fn inspect(&self, target: &Target) -> Result<Inspection, ProviderError> {
        let user = user_of(target)?;
        tracing::debug!(user, "aws-iam inspect");
        let principal = self.user_arn(user).await?;
        let mut credentials = Vec::new();
        for (id, status, created_at) in self.list_keys(user).await? {
            let used = self
                .iam
                .get_access_key_last_used()
                .access_key_id(&id)
                .send()
                .await
                .map_err(|e| map_error("GetAccessKeyLastUsed", &format!("key {id}"), e))?;
            let last = used.access_key_last_used();
            credentials.push(CredentialInfo {
                label: None,
                id,
                status,
                created_at,
                last_used: last.and_then(|l| l.last_used_date()).and_then(to_chrono),
                // AWS answers "N/A" for a key never used.
                last_used_service: last
                    .map(|l| l.service_name())
                    .filter(|s| !s.is_empty() && *s != "N/A")
                    .map(str::to_owned),
            });
        }
        Ok(Inspection {
            principal,
            credentials,
        })
    }

    async fn mint(&self, target: &Target) -> Result<Minted, ProviderError> {
        let user = user_of(target)?;
        tracing::debug!(user, "aws-iam CreateAccessKey");
        let out = self
            .iam
            .create_access_key()
            .user_name(user)
            .send()
            .await
            .map_err(|e| map_error("CreateAccessKey", &format!("user {user}"), e))?;
        let key = out.access_key().ok_or_else(|| {
            // The key may exist all the same; the engine finds such a key by listing.
            ProviderError::Failed(format!(
                "aws-iam CreateAccessKey for user {user}: the answer held no key"
            ))
        })?;
        let id = key.access_key_id().to_owned();
        let secret = Secret::new(key.secret_access_key());
        if id.is_empty() || secret.is_empty() {
            return Err(ProviderError::Failed(format!(
                "aws-iam CreateAccessKey for user {user}: the answer held an empty key id or secret"
            )));
        }
        tracing::info!(user, key = %id, "aws-iam minted a new access key");
        let mut fields = BTreeMap::new();
        fields.insert(FIELD_ACCESS_KEY_ID.to_owned(), Secret::new(id.clone()));
        fields.insert(FIELD_SECRET_ACCESS_KEY.to_owned(), secret);
        Ok(Minted { id, fields })
    }

    async fn verify(&self, target: &Target, minted: &Minted) -> Result<(), ProviderError> {
        let user = user_of(target)?;
        let field = |name: &str| {
            minted.fields.get(name).ok_or_else(|| {
                ProviderError::Failed(format!(
                    "aws-iam verify of key {}: the minted credential has no {name} field",
                    minted.id
                ))
            })
        };
        let key_id = field(FIELD_ACCESS_KEY_ID)?;
        let secret = field(FIELD_SECRET_ACCESS_KEY)?;
        let credentials = Credentials::new(
            key_id.expose(),
            secret.expose(),
            None,
            None,
            "rekey-minted-key",
        );
        // A client of its own that signs with the new key. No identity cache: the shared cache
        // of the SdkConfig would otherwise keep a copy of the new secret for the process's life.
        let sts_config = aws_sdk_sts::config::Builder::from(&self.sdk)
            .credentials_provider(credentials)
            .identity_cache(aws_sdk_sts::config::IdentityCache::no_cache())
            .build();
        let sts = aws_sdk_sts::Client::from_conf(sts_config);
        tracing::debug!(user, key = %minted.id, "aws-iam verify: STS GetCallerIdentity with the new key");
        let what = format!("new key {} of user {user}", minted.id);
        let identity = sts.get_caller_identity().send().await.map_err(|e| {
            let status = e.raw_response().map(|r| r.status().as_u16());
            let rejected = match code_and_message(&e).0 {
                Some(code) => AUTH_ERROR_CODES.contains(&code.as_str()),
                // A 403 without a readable code, to a call that needs no permission: the
                // signature or the key was refused.
                None => status == Some(403),
            };
            let err = map_error("STS GetCallerIdentity", &what, e);
            // Defence in depth: whatever the endpoint answered, the secret never leaves here.
            let err = scrub(err, &[secret.expose()]);
            match err {
                ProviderError::Failed(msg) if rejected => ProviderError::Rejected(msg),
                other => other,
            }
        })?;
        let arn = identity.arn().unwrap_or_default();
        let account = target.principal.account_id().map(|v| v.as_str());
        check_identity(arn, user, account).map_err(|why| {
            ProviderError::Failed(format!(
                "aws-iam verify of {what}: STS says the key belongs to {arn}, {why}"
            ))
        })
    }

    async fn deactivate(&self, target: &Target, credential_id: &str) -> Result<(), ProviderError> {
        self.set_status(target, credential_id, StatusType::Inactive)
            .await
    }

    async fn reactivate(&self, target: &Target, credential_id: &str) -> Result<(), ProviderError> {
        self.set_status(target, credential_id, StatusType::Active)
            .await
    }

    async fn revoke(&self, target: &Target, credential_id: &str) -> Result<(), ProviderError> {
        let user = user_of(target)?;
        tracing::debug!(user, key = credential_id, "aws-iam DeleteAccessKey");
        let result = self
            .iam
            .delete_access_key()
            .user_name(user)
            .access_key_id(credential_id)
            .send()
            .await
            .map_err(|e| {
                map_error(
                    "DeleteAccessKey",
                    &format!("key {credential_id} of user {user}"),
                    e,
                )
            });
        match result {
            // Already gone (a resumed run repeats the step): the goal is reached.
            Ok(_) | Err(ProviderError::NotFound(_)) => Ok(()),
            Err(e) => Err(e),
        }
    }
}

/// Which users own a key whose id ends with `last_four` (CircleCI's mask shows `xxxx` + the
/// last four characters). Pure, so the planner and tests can use it on any listing. An empty
/// suffix matches nothing rather than everything.
pub fn match_last_four(keys: &[(String, Vec<String>)], last_four: &str) -> DiscoveryMatch {
    if last_four.is_empty() {
        return DiscoveryMatch::None;
    }
    let mut users: Vec<&str> = keys
        .iter()
        .filter(|(_, ids)| ids.iter().any(|id| id.ends_with(last_four)))
        .map(|(user, _)| user.as_str())
        .collect();
    users.sort_unstable();
    users.dedup();
    match users.as_slice() {
        [] => DiscoveryMatch::None,
        [one] => DiscoveryMatch::Unique((*one).to_owned()),
        many => DiscoveryMatch::Ambiguous(many.iter().map(|u| (*u).to_owned()).collect()),
    }
}

/// The IAM user name of an aws-iam target.
fn user_of(target: &Target) -> Result<&str, ProviderError> {
    if *target.provider != ProviderKind::AwsIam {
        return Err(ProviderError::Failed(format!(
            "target {} is {}, not aws-iam",
            target.id.as_str(),
            target.provider.as_str()
        )));
    }
    target
        .principal
        .user()
        .map(|v| v.as_str())
        .filter(|u| !u.is_empty())
        .ok_or_else(|| {
            ProviderError::Failed(format!(
                "target {}: aws-iam needs principal.user (the IAM user name)",
                target.id.as_str()
            ))
        })
}

/// Checks that an ARN from STS names IAM user `user` (with or without a path) and, when given,
/// lives in `account`. `Err` says what does not match.
fn check_identity(arn: &str, user: &str, account: Option<&str>) -> Result<(), String> {
    // arn:PARTITION:iam::ACCOUNT:user/[PATH/]NAME
    let parts: Vec<&str> = arn.splitn(6, ':').collect();
    let [prefix, _partition, service, _region, arn_account, resource] = parts.as_slice() else {
        return Err("which is not an ARN".to_owned());
    };
    if *prefix != "arn" || *service != "iam" {
        return Err("which is not an IAM ARN".to_owned());
    }
    let Some(path_and_name) = resource.strip_prefix("user/") else {
        return Err(format!("which is not IAM user {user}"));
    };
    if path_and_name.rsplit('/').next() != Some(user) {
        return Err(format!("not IAM user {user}"));
    }
    if let Some(expected) = account
        && *arn_account != expected
    {
        return Err(format!("not account {expected}"));
    }
    Ok(())
}

/// Maps an SDK error onto the provider's error kinds. `operation` and `what` (user, key id)
/// make the message useful; neither ever holds a secret, and neither do AWS error messages
/// for these operations.
fn map_error<E>(operation: &str, what: &str, err: SdkError<E>) -> ProviderError
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    let prefix = format!("aws-iam {operation} for {what}");
    match &err {
        SdkError::ServiceError(service) => {
            let status = service.raw().status().as_u16();
            let (code, message) = code_and_message(&err);
            let code = code.unwrap_or_else(|| "Unknown".to_owned());
            let message = message.unwrap_or_else(|| "no message".to_owned());
            let text = format!("{prefix}: {code} (HTTP {status}): {message}");
            match code.as_str() {
                "NoSuchEntity" => ProviderError::NotFound(text),
                "LimitExceeded" => ProviderError::Quota(text),
                c if TRANSIENT_ERROR_CODES.contains(&c) => ProviderError::Transient(text),
                _ if status >= 500 || status == 429 => ProviderError::Transient(text),
                _ => ProviderError::Failed(text),
            }
        }
        // No answer, or one that could not be read: the network or the service hiccupped.
        SdkError::TimeoutError(_) | SdkError::DispatchFailure(_) | SdkError::ResponseError(_) => {
            ProviderError::Transient(format!("{prefix}: {}", DisplayErrorContext(&err)))
        }
        // The request could not even be built (bad input): retrying will not help.
        _ => ProviderError::Failed(format!("{prefix}: {}", DisplayErrorContext(&err))),
    }
}

/// The AWS error code and message of a service error. The SDK parses the standard awsQuery
/// shape (`<ErrorResponse><Error><Code>`); an endpoint that wraps it differently (moto's
/// authentication errors come as `<ErrorResponse><Errors><Error>`, EC2 style) leaves the SDK
/// without a code, so the body is searched for the first `<Code>` and `<Message>` then.
fn code_and_message<E: ProvideErrorMetadata>(
    err: &SdkError<E>,
) -> (Option<String>, Option<String>) {
    let code = err.code().map(str::to_owned);
    let message = err.message().map(str::to_owned);
    if code.is_some() {
        return (code, message);
    }
    let body = err
        .raw_response()
        .and_then(|r| r.body().bytes())
        .and_then(|b| std::str::from_utf8(b).ok());
    match body {
        Some(body) => (
            xml_text(body, "Code"),
            message.or_else(|| xml_text(body, "Message")),
        ),
        None => (None, message),
    }
}

/// Text of the first `<tag>…</tag>` in `xml`, trimmed; `None` when absent or empty. Enough for
/// error bodies, which carry no attributes or nesting inside these elements.
fn xml_text(xml: &str, tag: &str) -> Option<String> {
    let open = format!("<{tag}>");
    let close = format!("</{tag}>");
    let start = xml.find(&open)? + open.len();
    let len = xml.get(start..)?.find(&close)?;
    let text = xml.get(start..start + len)?.trim();
    (!text.is_empty()).then(|| text.to_owned())
}

/// Replaces any occurrence of the given secret values in an error's message.
fn scrub(err: ProviderError, secrets: &[&str]) -> ProviderError {
    let clean = |msg: String| crate::redact::redact(&msg, secrets);
    match err {
        ProviderError::Quota(m) => ProviderError::Quota(clean(m)),
        ProviderError::NotFound(m) => ProviderError::NotFound(clean(m)),
        ProviderError::Rejected(m) => ProviderError::Rejected(clean(m)),
        ProviderError::Transient(m) => ProviderError::Transient(clean(m)),
        ProviderError::Failed(m) => ProviderError::Failed(clean(m)),
        ProviderError::NeedsInput(m) => ProviderError::NeedsInput(clean(m)),
        other @ ProviderError::Unsupported { .. } => other,
    }
}

fn status_of(status: Option<&StatusType>) -> CredentialStatus {
    match status {
        Some(StatusType::Inactive) | Some(StatusType::Expired) => CredentialStatus::Inactive,
        // Unknown or missing: assume the key still works, so no step that protects against a
        // usable key (deactivate, revoke) is skipped because of it.
        _ => CredentialStatus::Active,
    }
}

fn to_chrono(t: &AwsDateTime) -> Option<DateTime<Utc>> {
    DateTime::from_timestamp(t.secs(), t.subsec_nanos())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn listing() -> Vec<(String, Vec<String>)> {
        vec![
            (
                "ci-deployer".into(),
                vec!["AKIAAAAAAAAAAAAAWXYZ".into(), "AKIAAAAAAAAAAAAA1234".into()],
            ),
            ("ci-web".into(), vec!["AKIABBBBBBBBBBBB5678".into()]),
            ("ci-other".into(), vec!["AKIACCCCCCCCCCCC1234".into()]),
            ("no-keys".into(), vec![]),
        ]
    }

    #[test]
    fn last_four_unique_ambiguous_none() {
        let keys = listing();
        assert_eq!(
            match_last_four(&keys, "WXYZ"),
            DiscoveryMatch::Unique("ci-deployer".into())
        );
        assert_eq!(
            match_last_four(&keys, "1234"),
            DiscoveryMatch::Ambiguous(vec!["ci-deployer".into(), "ci-other".into()])
        );
        assert_eq!(match_last_four(&keys, "0000"), DiscoveryMatch::None);
        assert_eq!(match_last_four(&keys, ""), DiscoveryMatch::None);
        // The mask shows the exact characters: no case folding.
        assert_eq!(match_last_four(&keys, "wxyz"), DiscoveryMatch::None);
    }

    #[test]
    fn two_keys_of_one_user_with_the_same_ending_are_one_match() {
        let keys = vec![(
            "u".to_owned(),
            vec![
                "AKIA1111111111119999".to_owned(),
                "AKIA2222222222229999".to_owned(),
            ],
        )];
        assert_eq!(
            match_last_four(&keys, "9999"),
            DiscoveryMatch::Unique("u".into())
        );
    }

    #[test]
    fn identity_checks() {
        let arn = "arn:aws:iam::123456789012:user/ci-deployer";
        assert!(check_identity(arn, "ci-deployer", None).is_ok());
        assert!(check_identity(arn, "ci-deployer", Some("123456789012")).is_ok());
        assert!(check_identity(arn, "ci-deployer", Some("999999999999")).is_err());
        assert!(check_identity(arn, "deployer", None).is_err());
        assert!(check_identity(arn, "ci", None).is_err());
        let with_path = "arn:aws-cn:iam::123456789012:user/ci/bots/ci-deployer";
        assert!(check_identity(with_path, "ci-deployer", None).is_ok());
        assert!(check_identity(with_path, "bots", None).is_err());
        assert!(
            check_identity(
                "arn:aws:sts::123456789012:assumed-role/r/ci-deployer",
                "ci-deployer",
                None
            )
            .is_err()
        );
        assert!(
            check_identity(
                "arn:aws:iam::123456789012:role/ci-deployer",
                "ci-deployer",
                None
            )
            .is_err()
        );
        assert!(check_identity("", "ci-deployer", None).is_err());
        assert!(check_identity("garbage", "ci-deployer", None).is_err());
    }

    #[test]
    fn statuses() {
        assert_eq!(
            status_of(Some(&StatusType::Active)),
            CredentialStatus::Active
        );
        assert_eq!(
            status_of(Some(&StatusType::Inactive)),
            CredentialStatus::Inactive
        );
        assert_eq!(
            status_of(Some(&StatusType::Expired)),
            CredentialStatus::Inactive
        );
        assert_eq!(status_of(None), CredentialStatus::Active);
    }

    #[test]
    fn xml_text_reads_codes_of_both_error_shapes() {
        let standard = "<ErrorResponse><Error><Type>Sender</Type><Code>NoSuchEntity</Code>\
                        <Message>gone</Message></Error></ErrorResponse>";
        let moto = "<?xml version=\"1.0\"?>\n<ErrorResponse><Errors><Error><Code>\
                    InvalidClientTokenId</Code><Message>The security token included in the \
                    request is invalid.</Message></Error></Errors></ErrorResponse>";
        assert_eq!(xml_text(standard, "Code").as_deref(), Some("NoSuchEntity"));
        assert_eq!(xml_text(standard, "Message").as_deref(), Some("gone"));
        assert_eq!(
            xml_text(moto, "Code").as_deref(),
            Some("InvalidClientTokenId")
        );
        assert_eq!(xml_text("<html>busy</html>", "Code"), None);
        assert_eq!(xml_text("<Code></Code>", "Code"), None);
        assert_eq!(xml_text("<Code>unterminated", "Code"), None);
    }

    #[test]
    fn scrub_removes_secrets() {
        let err = ProviderError::Failed("boom s3cr3t and s3cr3t".into());
        let err = scrub(err, &["s3cr3t", ""]);
        assert_eq!(err.to_string(), "boom [redacted] and [redacted]");
    }

    #[test]
    fn timestamps_convert() {
        let t = AwsDateTime::from_secs_and_nanos(1_700_000_000, 5);
        let c = to_chrono(&t).map(|c| (c.timestamp(), c.timestamp_subsec_nanos()));
        assert_eq!(c, Some((1_700_000_000, 5)));
    }

    #[test]
    fn target_without_user_is_refused() {
        let target: Target = serde_saphyr::from_str("id: t\nprovider: aws-iam\nbindings: []\n")
            .unwrap_or_else(|e| panic!("test target: {e}"));
        let err = user_of(&target)
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(err.contains("principal.user"), "{err}");
    }
}
