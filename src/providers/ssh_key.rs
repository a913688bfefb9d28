//! Additional SSH keys of CircleCI projects (`circleci-ssh-key`): the keys jobs load with
//! `add_ssh_keys` to reach a host (a deploy server, a bastion).
//!
//! Both halves have an owner: the private half lives in the project settings of every project
//! that holds it, the public half where it is trusted (`authorized_keys` on the host). So:
//! - **mint**: rekey generates an ed25519 pair locally; the public half is installed by the
//!   plan's `ssh_key.install` command (JSON on stdin: `operation`, `target`, `public_key`,
//!   `fingerprint`, `sha256_fingerprint`, `hostnames`; never the private key), or, with
//!   `ssh_key.manual`, by a person later (see revoke); then the private half is added to every
//!   bound project for its host (`POST /api/v1.1/project/{vcs}/{org}/{repo}/ssh-key`). The key
//!   exists at its owner (CircleCI) from then on, so a crash before the journal knows it is
//!   found by listing and deleted like any orphan. The old key stays beside the new one, so
//!   jobs keep working through the grace period whichever one they select.
//! - **write** (engine, `engine::bindings`): adds the key again (a no-op when present) and
//!   read-back proves it is listed for its host in every project.
//! - **verify**: the key is listed in every bound project for its host, and the private half
//!   held is that key (its fingerprint).
//! - **revoke**: the old key is deleted from every bound project by fingerprint and hostname
//!   (`DELETE` on the same path), then `ssh_key.remove` removes its public half from the host.
//!   Where a person must act (manual install, or no `remove` command), revoke is a confirmed
//!   manual step that shows the new public key and fingerprints and lists what to do.
//!
//! Credential ids are the MD5 fingerprints API v1.1 lists (`aa:bb:…`), which is also what
//! `.circleci/config.yml` selects with `add_ssh_keys: fingerprints:`; a job that selects the
//! old fingerprint must be changed to the new one (or select by hostname) before the grace ends:
//! [`Provider::verified_note`] names those projects.

use super::checkout_key::map_error;
use super::{
    Capabilities, CredentialInfo, CredentialStatus, Inspection, Minted, Provider, ProviderError,
};
use crate::circleci::CircleCiClient;
use crate::plan::{ProviderKind, SshKeyHooks, Target};
use crate::secret::Secret;
use async_trait::async_trait;
use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::Duration;

/// The `circleci-ssh-key` provider.
#[derive(Debug)]
pub struct SshKeyProvider {
    client: CircleCiClient,
    /// Runs the plan's install and remove hooks, as exec commands run (allow-listed
    /// environment, nothing in a dry run).
    hooks: super::exec::ExecProvider,
    /// Fingerprints of the key minted for each target in this process, for the note.
    minted: Mutex<BTreeMap<String, (String, String)>>,
}

impl SshKeyProvider {
    pub fn new(client: CircleCiClient) -> Self {
        SshKeyProvider {
            client,
            hooks: super::exec::ExecProvider::new(),
            minted: Mutex::new(BTreeMap::new()),
        }
    }

    /// Runs hooks through `exec` (the operator's exec policy) instead of the default one.
    pub fn with_hooks(mut self, exec: super::exec::ExecProvider) -> Self {
        self.hooks = exec;
        self
    }

    /// Every additional SSH key the target's projects hold for the target's hosts.
    async fn listed(&self, target: &Target) -> Result<Vec<Listed>, ProviderError> {
        let mut out: Vec<Listed> = Vec::new();
        for (slug, host) in places(target)? {
            let settings = self
                .client
                .project_settings(slug)
                .await
                .map_err(|e| map_error("read settings", slug, e))?;
            for key in settings.ssh_keys.into_iter().filter(|k| k.hostname == host) {
                out.push(Listed {
                    slug: slug.to_string(),
                    host: host.to_string(),
                    fingerprint: key.fingerprint,
                    public_key: key.public_key,
                });
            }
        }
        Ok(out)
    }
}

struct Listed {
    slug: String,
    host: String,
    fingerprint: String,
    public_key: String,
}

/// (project, hostname) of every binding.
fn places(target: &Target) -> Result<Vec<(&str, &str)>, ProviderError> {
    if *target.provider != ProviderKind::CircleciSshKey {
        return Err(ProviderError::Failed(format!(
            "target {} is {}, not circleci-ssh-key",
            target.id.as_str(),
            target.provider.as_str()
        )));
    }
    let places: Vec<(&str, &str)> = target
        .bindings
        .iter()
        .filter_map(|b| {
            Some((
                b.project.as_deref()?.as_str(),
                b.ssh_hostname.as_deref()?.as_str(),
            ))
        })
        .collect();
    if places.is_empty() {
        return Err(ProviderError::Failed(format!(
            "target {}: circleci-ssh-key needs bindings with `project` and `ssh_hostname`",
            target.id.as_str()
        )));
    }
    Ok(places)
}

fn hooks(target: &Target) -> Result<&SshKeyHooks, ProviderError> {
    target.ssh_key.as_deref().ok_or_else(|| {
        ProviderError::Failed(format!(
            "target {}: circleci-ssh-key needs an `ssh_key` block (`install` or `manual: true`)",
            target.id.as_str()
        ))
    })
}

fn hostnames(target: &Target) -> Vec<String> {
    let mut hosts: Vec<String> = target
        .bindings
        .iter()
        .filter_map(|b| b.ssh_hostname.as_ref().map(|h| h.value.clone()))
        .collect();
    hosts.sort();
    hosts.dedup();
    hosts
}

fn projects(target: &Target) -> String {
    let mut slugs: Vec<&str> = target
        .bindings
        .iter()
        .filter_map(|b| b.project.as_deref().map(|p| p.as_str()))
        .collect();
    slugs.dedup();
    slugs.join(", ")
}

/// MD5 fingerprint (`aa:bb:…`) of an OpenSSH private key's public half: how API v1.1 names
/// additional SSH keys and how `add_ssh_keys` selects them.
pub fn md5_fingerprint(private_key: &str) -> Option<String> {
    use md5::Digest as _;
    let key = ssh_key::PrivateKey::from_openssh(private_key.trim().as_bytes()).ok()?;
    let blob = key.public_key().to_bytes().ok()?;
    let digest = md5::Md5::digest(&blob);
    Some(
        digest
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect::<Vec<_>>()
            .join(":"),
    )
}

/// Runs one hook command with `doc` (public data only) on stdin.
async fn run_hook(
    runner: &super::exec::ExecProvider,
    what: &str,
    target: &Target,
    argv: &[String],
    doc: serde_json::Value,
) -> Result<(), ProviderError> {
    let timeout = hooks(target)?
        .timeout
        .as_ref()
        .map(|t| Duration::from_secs(t.value.seconds().max(1)))
        .unwrap_or(super::exec::DEFAULT_TIMEOUT);
    runner
        .run_hook(what, argv, &Secret::new(doc.to_string()), timeout)
        .await
}

#[async_trait]
impl Provider for SshKeyProvider {
    fn kind(&self) -> ProviderKind {
        ProviderKind::CircleciSshKey
    }

    /// The mark travels in the generated key's comment, which the listed public key keeps.
    fn marks(&self) -> bool {
        true
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
        let mut credentials: Vec<CredentialInfo> = Vec::new();
        for key in self.listed(target).await? {
            if !credentials.iter().any(|c| c.id == key.fingerprint) {
                credentials.push(CredentialInfo {
                    // The public key's comment: rekey's mark when rekey generated it.
                    label: key.public_key.splitn(3, ' ').nth(2).map(str::to_string),
                    id: key.fingerprint,
                    status: CredentialStatus::Active,
                    created_at: None,
                    last_used: None,
                    last_used_service: None,
                });
            }
        }
        Ok(Inspection {
            principal: format!(
                "SSH key for {} in {}",
                hostnames(target).join(", "),
                projects(target)
            ),
            credentials,
        })
    }

    async fn mint(&self, target: &Target) -> Result<Minted, ProviderError> {
        let places = places(target)?;
        let hooks = hooks(target)?;
        // Every project must be readable before anything is installed anywhere.
        self.listed(target).await?;
        let (private, public) =
            super::github::generate_ed25519(&format!("rekey {}", super::mint_mark(target)))?;
        let fingerprint = md5_fingerprint(private.expose()).ok_or_else(|| {
            ProviderError::Failed("the generated SSH key could not be read back".into())
        })?;
        let sha256 = super::github::private_key_fingerprint(&private)?;
        if let Some(install) = &hooks.install {
            let doc = serde_json::json!({
                "operation": "install",
                "target": target.id.as_str(),
                "public_key": public,
                "fingerprint": fingerprint,
                "sha256_fingerprint": sha256,
                "hostnames": hostnames(target),
            });
            run_hook(&self.hooks, "ssh_key.install", target, install, doc).await?;
        }
        let mut added: Vec<(&str, &str)> = Vec::new();
        for (slug, host) in &places {
            if let Err(e) = self.client.add_ssh_key(slug, host, &private).await {
                // Leave nothing half-added behind; what cannot be undone now the engine finds
                // as an orphan by listing.
                for (done_slug, done_host) in &added {
                    let _ = self
                        .client
                        .delete_ssh_key(done_slug, &fingerprint, done_host)
                        .await;
                }
                return Err(map_error("add SSH key", slug, e));
            }
            added.push((slug, host));
        }
        tracing::info!(target = target.id.as_str(), fingerprint = %fingerprint, sha256 = %sha256, "circleci-ssh-key minted a new key pair");
        if let Ok(mut minted) = self.minted.lock() {
            minted.insert(target.id.value.clone(), (fingerprint.clone(), sha256));
        }
        Ok(Minted {
            id: fingerprint,
            fields: BTreeMap::from([("private_key".to_string(), private)]),
        })
    }

    async fn verify(&self, target: &Target, minted: &Minted) -> Result<(), ProviderError> {
        let private = minted.fields.get("private_key").ok_or_else(|| {
            ProviderError::Rejected("the minted SSH key has no private key".into())
        })?;
        if md5_fingerprint(private.expose()).as_deref() != Some(minted.id.as_str()) {
            return Err(ProviderError::Rejected(format!(
                "the private key held for {} is not that key",
                minted.id
            )));
        }
        let listed = self.listed(target).await?;
        for (slug, host) in places(target)? {
            let present = listed
                .iter()
                .any(|k| k.slug == slug && k.host == host && k.fingerprint == minted.id);
            if !present {
                return Err(ProviderError::Rejected(format!(
                    "SSH key {} is not listed for host `{host}` in project {slug}",
                    minted.id
                )));
            }
        }
        Ok(())
    }

    async fn revoke(&self, target: &Target, credential_id: &str) -> Result<(), ProviderError> {
        let hooks = hooks(target)?;
        let listed = self.listed(target).await?;
        if hooks.manual {
            // A person installs the new public half; until they confirm, the old key stays.
            let new: Vec<String> = listed
                .iter()
                .filter(|k| k.fingerprint != credential_id)
                .map(|k| {
                    format!(
                        "{} (fingerprint {}, in {} for host `{}`)",
                        k.public_key.trim(),
                        k.fingerprint,
                        k.slug,
                        k.host
                    )
                })
                .collect();
            return Err(ProviderError::NeedsInput(format!(
                "make the new public key trusted on {}: {}; switch `add_ssh_keys` fingerprints from {credential_id} to the new one in .circleci/config.yml of {} (or select by hostname); then delete the old key {credential_id} in Project Settings → SSH Keys of each project and remove its public half from the host",
                hostnames(target).join(", "),
                if new.is_empty() {
                    "(no new key is listed)".to_string()
                } else {
                    new.join("; ")
                },
                projects(target)
            )));
        }
        let old_public = listed
            .iter()
            .find(|k| k.fingerprint == credential_id)
            .map(|k| k.public_key.clone());
        let mut missing = 0;
        for (slug, host) in places(target)? {
            tracing::debug!(
                project = slug,
                fingerprint = credential_id,
                "circleci-ssh-key delete"
            );
            match self.client.delete_ssh_key(slug, credential_id, host).await {
                Ok(()) => {}
                // Already gone (a resumed run repeats the step), or the project is.
                Err(e) if e.status() == Some(404) => missing += 1,
                Err(e) => return Err(map_error("delete SSH key", slug, e)),
            }
        }
        tracing::debug!(
            target = target.id.as_str(),
            missing,
            "circleci-ssh-key: old key deleted from CircleCI"
        );
        match &hooks.remove {
            Some(remove) => {
                let doc = serde_json::json!({
                    "operation": "remove",
                    "target": target.id.as_str(),
                    "fingerprint": credential_id,
                    "public_key": old_public,
                    "hostnames": hostnames(target),
                });
                run_hook(&self.hooks, "ssh_key.remove", target, remove, doc).await
            }
            None => Err(ProviderError::NeedsInput(format!(
                "the old SSH key {credential_id} is deleted from CircleCI; remove its public half from {} (authorized_keys)",
                hostnames(target).join(", ")
            ))),
        }
    }

    fn verified_note(&self, target: &Target) -> Option<String> {
        let minted = self.minted.lock().ok()?;
        let (fingerprint, sha256) = minted.get(target.id.as_str())?;
        Some(format!(
            "new SSH key {fingerprint} ({sha256}): jobs that select the old key by fingerprint in .circleci/config.yml (`add_ssh_keys: fingerprints:`) of {} must switch to {fingerprint}, or select by hostname, before the grace period ends",
            projects(target)
        ))
    }
}
