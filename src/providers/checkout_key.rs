//! CircleCI checkout keys (`circleci-checkout-key`): the deploy keys CircleCI itself holds to
//! check out a project's repository.
//!
//! `POST /api/v2/project/{slug}/checkout-key` with `{"type": "deploy-key"}` makes CircleCI
//! generate a key pair and register its public half on GitHub; the private half stays in
//! CircleCI, so this provider has no binding to write and its credential id is the key's
//! fingerprint. Verification is the new key being listed. The old key is deleted by
//! fingerprint after the grace period; a checkout key cannot be disabled, so the old one stays
//! valid until then.
//!
//! "Preferred": the v2 API has no way to choose the key checkouts use (the create body takes
//! only `type`, and there is no update endpoint); `preferred` is read-only in the listing.
//! CircleCI prefers a user key over deploy keys, so after the rotation a project with a user
//! key keeps checking out with it; `verify` logs which key is preferred.
//!
//! Only keys of type `deploy-key` are the target's credentials: a `github-user-key` belongs
//! to a person's GitHub account and is not rotated here.

use super::{
    Capabilities, CredentialInfo, CredentialStatus, Inspection, Minted, Provider, ProviderError,
};
use crate::circleci::{CheckoutKey, CircleCiClient, CircleCiError};
use crate::plan::{ProviderKind, Target};
use async_trait::async_trait;
use std::collections::BTreeMap;

/// The checkout key type this provider creates and rotates.
pub const DEPLOY_KEY: &str = "deploy-key";

/// The `circleci-checkout-key` provider: deploy-type checkout keys of `principal.project`.
#[derive(Debug, Clone)]
pub struct CheckoutKeyProvider {
    client: CircleCiClient,
}

impl CheckoutKeyProvider {
    pub fn new(client: CircleCiClient) -> Self {
        CheckoutKeyProvider { client }
    }

    async fn deploy_keys(&self, slug: &str) -> Result<Vec<CheckoutKey>, ProviderError> {
        let keys = self
            .client
            .list_checkout_keys(slug)
            .await
            .map_err(|e| map_error("list checkout keys", slug, e))?;
        Ok(keys
            .into_iter()
            .filter(|k| k.key_type == DEPLOY_KEY)
            .collect())
    }
}

fn project_of(target: &Target) -> Result<&str, ProviderError> {
    if *target.provider != ProviderKind::CircleciCheckoutKey {
        return Err(ProviderError::Failed(format!(
            "target {} is {}, not circleci-checkout-key",
            target.id.as_str(),
            target.provider.as_str()
        )));
    }
    target
        .principal
        .project()
        .map(|v| v.as_str())
        .filter(|p| !p.is_empty())
        .ok_or_else(|| {
            ProviderError::Failed(format!(
                "target {}: circleci-checkout-key needs principal.project (the project slug)",
                target.id.as_str()
            ))
        })
}

/// A CircleCI API error as a provider error, for the owners CircleCI itself is (checkout and
/// SSH keys): 404 not found, 429 and 5xx and transport failures transient, the rest failed.
pub(super) fn map_error(operation: &str, slug: &str, e: CircleCiError) -> ProviderError {
    let text = format!("CircleCI {operation} for project {slug}: {}", e.reason());
    match e.status() {
        Some(404) => ProviderError::NotFound(text),
        Some(429) => ProviderError::Transient(text),
        Some(s) if s >= 500 => ProviderError::Transient(text),
        Some(_) => ProviderError::Failed(text),
        None => match e {
            CircleCiError::Transport { .. } => ProviderError::Transient(text),
            _ => ProviderError::Failed(text),
        },
    }
}

#[async_trait]
impl Provider for CheckoutKeyProvider {
    fn kind(&self) -> ProviderKind {
        ProviderKind::CircleciCheckoutKey
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            deactivate: false,
            reactivate: false,
            manual_mint: false,
            max_credentials: None,
        }
    }

    async fn inspect(&self, target: &Target) -> Result<Inspection, ProviderError> {
        let slug = project_of(target)?;
        tracing::debug!(project = slug, "circleci-checkout-key inspect");
        let credentials = self
            .deploy_keys(slug)
            .await?
            .into_iter()
            .map(|k| CredentialInfo {
                label: None,
                id: k.fingerprint,
                status: CredentialStatus::Active,
                created_at: k.created_at,
                last_used: None,
                last_used_service: None,
            })
            .collect();
        Ok(Inspection {
            principal: slug.to_owned(),
            credentials,
        })
    }

    async fn mint(&self, target: &Target) -> Result<Minted, ProviderError> {
        let slug = project_of(target)?;
        tracing::debug!(project = slug, "circleci-checkout-key create");
        // CircleCI makes the key, so a lost answer cannot be recognised by what was sent: the
        // keys before the create tell which one is new.
        let before: Vec<String> = self
            .deploy_keys(slug)
            .await?
            .into_iter()
            .map(|k| k.fingerprint)
            .collect();
        let key = match self.client.create_checkout_key(slug, DEPLOY_KEY).await {
            Ok(key) => key,
            Err(e) => {
                let ambiguous = match e.status() {
                    None => matches!(e, CircleCiError::Transport { .. }),
                    Some(s) => s >= 500,
                };
                let appeared = if ambiguous {
                    self.deploy_keys(slug).await.ok().map(|now| {
                        now.into_iter()
                            .filter(|k| !before.contains(&k.fingerprint))
                            .collect::<Vec<_>>()
                    })
                } else {
                    None
                };
                match appeared.as_deref() {
                    // Exactly one new key: ours, whose answer was lost.
                    Some([one]) => {
                        tracing::info!(project = slug, fingerprint = %one.fingerprint, "circleci-checkout-key: the create's answer was lost, the key exists");
                        one.clone()
                    }
                    _ => return Err(map_error("create checkout key", slug, e)),
                }
            }
        };
        if key.fingerprint.is_empty() {
            return Err(ProviderError::Failed(format!(
                "CircleCI create checkout key for project {slug}: the answer held no fingerprint"
            )));
        }
        tracing::info!(project = slug, fingerprint = %key.fingerprint, preferred = key.preferred, "circleci-checkout-key minted a new deploy key");
        // No field: the private key lives in CircleCI only.
        Ok(Minted {
            id: key.fingerprint,
            fields: BTreeMap::new(),
        })
    }

    async fn verify(&self, target: &Target, minted: &Minted) -> Result<(), ProviderError> {
        let slug = project_of(target)?;
        let keys = self.deploy_keys(slug).await?;
        match keys.iter().find(|k| k.fingerprint == minted.id) {
            Some(k) => {
                tracing::info!(project = slug, fingerprint = %k.fingerprint, preferred = k.preferred, "circleci-checkout-key: the new key is listed");
                Ok(())
            }
            None => Err(ProviderError::Rejected(format!(
                "CircleCI: checkout key {} is not listed for project {slug}",
                minted.id
            ))),
        }
    }

    async fn revoke(&self, target: &Target, credential_id: &str) -> Result<(), ProviderError> {
        let slug = project_of(target)?;
        tracing::debug!(
            project = slug,
            fingerprint = credential_id,
            "circleci-checkout-key delete"
        );
        match self.client.delete_checkout_key(slug, credential_id).await {
            Ok(()) => Ok(()),
            // Already gone (a resumed run repeats the step): the goal is reached. A missing
            // project also answers 404; the key is gone with it.
            Err(e) if e.status() == Some(404) => Ok(()),
            Err(e) => Err(map_error("delete checkout key", slug, e)),
        }
    }
}
