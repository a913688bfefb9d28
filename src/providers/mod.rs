//! Providers: one trait, one module per credential owner, like `object_store`'s backends.
//!
//! A [`Provider`] does the owner-side operations of the rotation protocol for one target:
//! list the principal's credentials, mint a new one, prove it works, disable, re-enable and
//! delete. It never decides *what* to do — the engine (`crate::engine`) owns the protocol, the
//! journal and the policy (which key is old, which may be removed for capacity). Providers report
//! what their owner supports through [`Capabilities`], and the engine adapts.
//!
//! Wrappers that implement the same trait around any provider (faults, latency) live in
//! [`wrappers`], so chaos tests never touch a provider's code.

pub mod aws;
pub mod azure;
pub mod budget;
pub mod checkout_key;
pub mod exec;
pub mod gcp;
pub mod github;
pub mod registry;
pub mod rest;
pub mod ssh_key;
pub mod wrappers;

use crate::plan::{ProviderKind, Target};
use crate::secret::Secret;
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// What an owner supports; the engine asks before it plans the steps of a target.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Capabilities {
    /// The old credential can be disabled without deleting it (AWS Inactive, GCP disable).
    pub deactivate: bool,
    /// A disabled credential can be enabled again (rollback after a post-hunt finding).
    pub reactivate: bool,
    /// Minting is a person's job (GitHub personal access tokens): the run pauses for the value.
    pub manual_mint: bool,
    /// How many credentials the owner allows per principal (AWS: 2 access keys per user).
    pub max_credentials: Option<usize>,
}

/// Status of one credential at its owner.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CredentialStatus {
    Active,
    Inactive,
}

/// One credential of the principal, as the owner lists it. Never a secret value: `id` is the
/// public identifier (AWS access key id, GCP key name, Azure keyId, deploy key id).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CredentialInfo {
    pub id: String,
    pub status: CredentialStatus,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created_at: Option<DateTime<Utc>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_used: Option<DateTime<Utc>>,
    /// Service the credential was last used with, when the owner says (AWS: e.g. `s3`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_used_service: Option<String>,
    /// The owner's name for it, where it keeps one (a deploy key's title, an Azure secret's
    /// displayName): where rekey's [`mint_mark`] shows that rekey made it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub label: Option<String>,
}

/// The mark a mint puts in the credential's name where the owner keeps one
/// ([`Provider::marks`]): an orphan sweep deletes only credentials that bear it (and were
/// created after the mint began), never a colleague's key made meanwhile.
pub fn mint_mark(target: &Target) -> String {
    format!("[rekey:{}]", target.id.as_str())
}

/// Live state of the principal: every credential it has.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Inspection {
    /// The principal as the owner names it (an IAM user ARN, a service-account email…).
    pub principal: String,
    pub credentials: Vec<CredentialInfo>,
}

/// A freshly minted credential: its public id, and the secret value of each credential field
/// the bindings map (`access_key_id`, `secret_access_key` for AWS). The id field may repeat a
/// public value (an AWS key id), but every field is held as a [`Secret`] all the same.
#[derive(Debug, Clone)]
pub struct Minted {
    pub id: String,
    pub fields: BTreeMap<String, Secret>,
}

#[derive(Debug, thiserror::Error)]
pub enum ProviderError {
    /// The owner refused because a limit is reached (AWS LimitExceeded): capacity must be made.
    #[error("{0}")]
    Quota(String),
    /// The principal or credential does not exist.
    #[error("{0}")]
    NotFound(String),
    /// The credential was rejected when used (verification failed, or not yet consistent).
    #[error("{0}")]
    Rejected(String),
    /// The owner does not support the operation (see [`Capabilities`]).
    #[error("{operation} is not supported by {provider}")]
    Unsupported {
        provider: ProviderKind,
        operation: &'static str,
    },
    /// Throttling, 5xx, network: worth retrying.
    #[error("{0}")]
    Transient(String),
    /// Anything else the owner answered (permissions, validation…): not worth retrying.
    #[error("{0}")]
    Failed(String),
    /// A person must act: give a value the owner cannot mint by API (a GitHub personal access
    /// token), or do a step by hand (revoke a token whose old value rekey was not given). The
    /// message says what to do; the engine stops the target there, resumable.
    #[error("{0}")]
    NeedsInput(String),
}

impl ProviderError {
    pub fn is_transient(&self) -> bool {
        matches!(self, ProviderError::Transient(_))
    }
}

/// The owner-side operations of the rotation protocol (DESIGN.md, "The rotation protocol").
///
/// Every method acts on the principal named by `target.principal`; errors never contain a
/// secret value. Retrying is the engine's job (it knows what is idempotent at which step), so a
/// provider makes one attempt per call.
#[async_trait]
pub trait Provider: Send + Sync {
    fn kind(&self) -> ProviderKind;

    fn capabilities(&self) -> Capabilities;

    /// What the owner supports for this target. The same as [`Provider::capabilities`] except
    /// where a target's own configuration decides (exec: deactivation exists only when the
    /// plan names an `exec.deactivate` command). The engine asks this one.
    fn capabilities_for(&self, target: &Target) -> Capabilities {
        let _ = target;
        self.capabilities()
    }

    /// Whether a mint names its credential with [`mint_mark`] and `inspect` reports each
    /// credential's name in [`CredentialInfo::label`] (deploy keys, Azure secrets).
    fn marks(&self) -> bool {
        false
    }

    /// Lists the principal's credentials (read-only).
    async fn inspect(&self, target: &Target) -> Result<Inspection, ProviderError>;

    /// Creates a new credential for the principal.
    async fn mint(&self, target: &Target) -> Result<Minted, ProviderError>;

    /// Proves the new credential authenticates as the principal (one attempt).
    async fn verify(&self, target: &Target, minted: &Minted) -> Result<(), ProviderError>;

    /// Disables a credential without deleting it. The default is for owners that cannot
    /// (`capabilities().deactivate` false): [`ProviderError::Unsupported`].
    async fn deactivate(
        &self,
        _target: &Target,
        _credential_id: &str,
    ) -> Result<(), ProviderError> {
        Err(ProviderError::Unsupported {
            provider: self.kind(),
            operation: "deactivate",
        })
    }

    /// Enables a disabled credential again; unsupported by default, as [`Provider::deactivate`].
    async fn reactivate(
        &self,
        _target: &Target,
        _credential_id: &str,
    ) -> Result<(), ProviderError> {
        Err(ProviderError::Unsupported {
            provider: self.kind(),
            operation: "reactivate",
        })
    }

    /// Deletes a credential. Deleting one that is already gone is success (resume repeats it).
    async fn revoke(&self, target: &Target, credential_id: &str) -> Result<(), ProviderError>;

    /// What a person should know about the credential just verified for `target` (a GitHub
    /// token's scopes beside the old one's), for the journal and the progress output. Never a
    /// secret. Most owners have nothing to add.
    fn verified_note(&self, _target: &Target) -> Option<String> {
        None
    }
}
