//! GitHub credentials: repository deploy keys (`github-deploy-key`) and personal access tokens
//! (`github-token`), through [`crate::github::GithubClient`] (`GITHUB_API_URL`).
//!
//! Deploy keys: rekey generates an ed25519 key pair locally (the private key never leaves
//! this process except to the target's bindings), registers the public half with
//! `POST /repos/{owner}/{repo}/keys`, verifies by reading the key back and comparing its
//! SHA-256 fingerprint with the generated one, and deletes the old key by id. GitHub cannot
//! disable a deploy key, so the grace period runs with the old key still valid.
//!
//! Personal access tokens cannot be minted by API: the new value comes from a person (a hidden
//! prompt, a file, stdin — see [`TokenInputs`]). The token is verified with `GET /user` (its
//! scopes are logged from `X-OAuth-Scopes`), and the old token is revoked through GitHub's
//! credential-revocation API when its value was supplied; otherwise revocation is a manual step
//! the engine records and a person confirms. A token's public id is GitHub's `hashed_token`
//! (base64 of its SHA-256, as the audit log shows it), so the journal and the hunts can name a
//! token without holding it.

use super::{
    Capabilities, CredentialInfo, CredentialStatus, Inspection, Minted, Provider, ProviderError,
};
use crate::github::{Answer, Auth, GithubClient, GithubError};
use crate::plan::{ProviderKind, Target};
use crate::secret::Secret;
use async_trait::async_trait;
use base64::Engine as _;
use chrono::{DateTime, Utc};
use reqwest::Method;
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Mutex;

/// Deploy keys a repository may hold. GitHub documents no exact figure in the REST reference;
/// it refuses new keys past about 50 with a 422, which this constant (and the sandbox) follows.
pub const MAX_DEPLOY_KEYS: usize = 50;

/// Binding field of a deploy key: the private key, OpenSSH format.
pub const FIELD_PRIVATE_KEY: &str = "private_key";
/// Binding field of a personal access token.
pub const FIELD_TOKEN: &str = "token";

/// The credential id `inspect` reports for a token in use whose value rekey was not given: it
/// exists, it must be revoked, and only a person can do it.
pub const UNKNOWN_TOKEN_ID: &str = "previous-token";

/// Replaces a secret value in an error's message, in case an endpoint echoed it.
fn scrub(err: ProviderError, secret: &Secret) -> ProviderError {
    if secret.is_empty() {
        return err;
    }
    let clean = |m: String| crate::redact::redact(&m, &[secret.expose()]);
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

/// Maps a non-success GitHub answer of `operation` on `what` onto the provider's error kinds.
fn api_error(operation: &str, what: &str, answer: &Answer) -> ProviderError {
    let error = answer.error();
    let text = format!("GitHub {operation} for {what}: {error}");
    if answer.is_rate_limited() || answer.status.is_server_error() {
        return ProviderError::Transient(text);
    }
    match answer.status.as_u16() {
        404 => ProviderError::NotFound(text),
        _ => ProviderError::Failed(text),
    }
}

fn transport(operation: &str, what: &str, e: GithubError) -> ProviderError {
    let text = format!("GitHub {operation} for {what}: {e}");
    if e.is_transient() {
        ProviderError::Transient(text)
    } else {
        ProviderError::Failed(text)
    }
}

/// The `owner/repo` of a github-deploy-key target, as its two parts.
fn repository_of(target: &Target) -> Result<(&str, &str), ProviderError> {
    if *target.provider != ProviderKind::GithubDeployKey {
        return Err(ProviderError::Failed(format!(
            "target {} is {}, not github-deploy-key",
            target.id.as_str(),
            target.provider.as_str()
        )));
    }
    let repo = target
        .principal
        .repository()
        .map(|v| v.as_str())
        .unwrap_or_default();
    match repo.split_once('/') {
        Some((owner, name)) if !owner.is_empty() && !name.is_empty() && !name.contains('/') => {
            Ok((owner, name))
        }
        _ => Err(ProviderError::Failed(format!(
            "target {}: github-deploy-key needs principal.repository as owner/repo, got {repo:?}",
            target.id.as_str()
        ))),
    }
}

/// A new ed25519 key pair: the private key in OpenSSH format, and the public key's
/// `ssh-ed25519 AAAA… comment` line.
pub fn generate_ed25519(comment: &str) -> Result<(Secret, String), ProviderError> {
    let mut seed = zeroize::Zeroizing::new([0u8; 32]);
    getrandom::fill(seed.as_mut())
        .map_err(|e| ProviderError::Failed(format!("no randomness for a new key: {e}")))?;
    let keypair = ssh_key::private::Ed25519Keypair::from_seed(&seed);
    let mut private = ssh_key::PrivateKey::from(keypair);
    private.set_comment(comment);
    let pem = private
        .to_openssh(ssh_key::LineEnding::LF)
        .map_err(|e| ProviderError::Failed(format!("cannot encode the new key: {e}")))?;
    let public = private
        .public_key()
        .to_openssh()
        .map_err(|e| ProviderError::Failed(format!("cannot encode the new public key: {e}")))?;
    Ok((Secret::new(pem.as_str()), public))
}

/// SHA-256 fingerprint (`SHA256:…`) of the public half of an OpenSSH private key.
pub fn private_key_fingerprint(private: &Secret) -> Result<String, ProviderError> {
    let key = ssh_key::PrivateKey::from_openssh(private.expose().as_bytes()).map_err(|_| {
        // The parser's message is not echoed: it could quote part of the key.
        ProviderError::Failed("the minted private key cannot be read back".into())
    })?;
    Ok(key
        .public_key()
        .fingerprint(ssh_key::HashAlg::Sha256)
        .to_string())
}

/// SHA-256 fingerprint of an `ssh-… AAAA… [comment]` public key line.
pub fn public_key_fingerprint(public: &str) -> Option<String> {
    let key = ssh_key::PublicKey::from_openssh(public.trim()).ok()?;
    Some(key.fingerprint(ssh_key::HashAlg::Sha256).to_string())
}

#[derive(serde::Deserialize)]
struct DeployKey {
    id: u64,
    key: String,
    #[serde(default)]
    title: Option<String>,
    #[serde(default)]
    created_at: Option<DateTime<Utc>>,
    #[serde(default)]
    last_used: Option<DateTime<Utc>>,
}

/// The `github-deploy-key` provider: deploy keys of `principal.repository`.
#[derive(Debug, Clone)]
pub struct GithubDeployKeyProvider {
    client: GithubClient,
}

impl GithubDeployKeyProvider {
    /// `client` must carry rekey's own token (repository administration: `repo` scope, or a
    /// fine-grained token with "Administration: write").
    pub fn new(client: GithubClient) -> Self {
        GithubDeployKeyProvider { client }
    }

    async fn list(&self, owner: &str, repo: &str) -> Result<Vec<DeployKey>, ProviderError> {
        let what = format!("repository {owner}/{repo}");
        let mut keys = Vec::new();
        // 100 per page: a repository holds about 50 at most, so one page almost always.
        for page in 1..=20u32 {
            let page_text = page.to_string();
            let answer = self
                .client
                .call(
                    Method::GET,
                    &["repos", owner, repo, "keys"],
                    &[("per_page", "100"), ("page", &page_text)],
                    None,
                    Auth::Own,
                )
                .await
                .map_err(|e| transport("list deploy keys", &what, e))?;
            if !answer.is_success() {
                return Err(api_error("list deploy keys", &what, &answer));
            }
            let batch: Vec<DeployKey> = answer.json().map_err(ProviderError::Failed)?;
            let full = batch.len() == 100;
            keys.extend(batch);
            if !full {
                break;
            }
        }
        Ok(keys)
    }
}

impl GithubDeployKeyProvider {
    /// The id of the repository's key whose public half is `private`'s, if the listing works
    /// and has it.
    async fn find_by_fingerprint(
        &self,
        owner: &str,
        repo: &str,
        private: &Secret,
    ) -> Option<String> {
        let wanted = private_key_fingerprint(private).ok()?;
        let keys = self.list(owner, repo).await.ok()?;
        keys.into_iter()
            .find(|k| public_key_fingerprint(&k.key).as_deref() == Some(wanted.as_str()))
            .map(|k| k.id.to_string())
    }
}

#[async_trait]
impl Provider for GithubDeployKeyProvider {
    fn kind(&self) -> ProviderKind {
        ProviderKind::GithubDeployKey
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            deactivate: false,
            reactivate: false,
            manual_mint: false,
            max_credentials: Some(MAX_DEPLOY_KEYS),
        }
    }

    fn marks(&self) -> bool {
        true
    }

    async fn inspect(&self, target: &Target) -> Result<Inspection, ProviderError> {
        let (owner, repo) = repository_of(target)?;
        tracing::debug!(owner, repo, "github-deploy-key inspect");
        let credentials = self
            .list(owner, repo)
            .await?
            .into_iter()
            .map(|k| CredentialInfo {
                label: k.title,
                id: k.id.to_string(),
                status: CredentialStatus::Active,
                created_at: k.created_at,
                last_used: k.last_used,
                last_used_service: None,
            })
            .collect();
        Ok(Inspection {
            principal: format!("{owner}/{repo}"),
            credentials,
        })
    }

    async fn mint(&self, target: &Target) -> Result<Minted, ProviderError> {
        let (owner, repo) = repository_of(target)?;
        let what = format!("repository {owner}/{repo}");
        let title = target
            .principal
            .title()
            .map(|t| t.value.clone())
            .unwrap_or_else(|| format!("rekey {}", Utc::now().format("%Y-%m-%d")));
        // rekey's mark, so that an orphan sweep can tell this key from a colleague's.
        let title = format!("{title} {}", super::mint_mark(target));
        let read_only = target.principal.read_only.unwrap_or(true);
        let (private, public) = generate_ed25519(&title)?;
        tracing::debug!(owner, repo, title, read_only, "github-deploy-key create");
        let body = serde_json::json!({"title": title, "key": public, "read_only": read_only});
        let sent = self
            .client
            .call(
                Method::POST,
                &["repos", owner, repo, "keys"],
                &[],
                Some(&body),
                Auth::Own,
            )
            .await;
        // An answer lost after the key may have been created (connection cut, a 5xx from a
        // proxy): this key pair is ours alone, so look for its fingerprint before reporting a
        // failure the engine would retry with a second key, leaving the first an orphan.
        let ambiguous = match &sent {
            Err(_) => true,
            Ok(a) => a.status.is_server_error(),
        };
        if ambiguous && let Some(id) = self.find_by_fingerprint(owner, repo, &private).await {
            tracing::info!(owner, repo, key = %id, "github-deploy-key: the create's answer was lost, the key exists");
            let mut fields = BTreeMap::new();
            fields.insert(FIELD_PRIVATE_KEY.to_owned(), private);
            return Ok(Minted { id, fields });
        }
        let answer = sent.map_err(|e| transport("create deploy key", &what, e))?;
        if !answer.is_success() {
            let error = answer.error();
            if answer.status.as_u16() == 422 {
                if error.mentions("already in use") {
                    return Err(ProviderError::Failed(format!(
                        "GitHub create deploy key for {what}: the public key is already in use (a deploy key belongs to one repository, and an account key cannot be a deploy key): {error}"
                    )));
                }
                if error.mentions("maximum") || error.mentions("limit") {
                    return Err(ProviderError::Quota(format!(
                        "GitHub create deploy key for {what}: the repository is at GitHub's deploy-key limit (about {MAX_DEPLOY_KEYS}); mark an unused key in policy.removable_keys: {error}"
                    )));
                }
            }
            if answer.status.as_u16() == 404 {
                return Err(ProviderError::NotFound(format!(
                    "GitHub create deploy key for {what}: no such repository, or the token cannot administer it: {error}"
                )));
            }
            return Err(api_error("create deploy key", &what, &answer));
        }
        let created: DeployKey = answer.json().map_err(ProviderError::Failed)?;
        let id = created.id.to_string();
        tracing::info!(owner, repo, key = %id, "github-deploy-key minted a new deploy key");
        let mut fields = BTreeMap::new();
        fields.insert(FIELD_PRIVATE_KEY.to_owned(), private);
        Ok(Minted { id, fields })
    }

    async fn verify(&self, target: &Target, minted: &Minted) -> Result<(), ProviderError> {
        let (owner, repo) = repository_of(target)?;
        let what = format!("deploy key {} of {owner}/{repo}", minted.id);
        let private = minted.fields.get(FIELD_PRIVATE_KEY).ok_or_else(|| {
            ProviderError::Failed(format!(
                "verify of {what}: the minted key has no private_key"
            ))
        })?;
        let expected = private_key_fingerprint(private)?;
        let answer = self
            .client
            .call(
                Method::GET,
                &["repos", owner, repo, "keys", &minted.id],
                &[],
                None,
                Auth::Own,
            )
            .await
            .map_err(|e| transport("get deploy key", &what, e))?;
        if answer.status.as_u16() == 404 {
            // Not (yet) registered there: maybe consistency, maybe another repository's key.
            return Err(ProviderError::Rejected(format!(
                "GitHub get deploy key: {what} is not registered"
            )));
        }
        if !answer.is_success() {
            return Err(api_error("get deploy key", &what, &answer));
        }
        let key: DeployKey = answer.json().map_err(ProviderError::Failed)?;
        match public_key_fingerprint(&key.key) {
            Some(fp) if fp == expected => {
                tracing::debug!(owner, repo, key = %minted.id, fingerprint = %fp, "deploy key verified");
                Ok(())
            }
            Some(fp) => Err(ProviderError::Failed(format!(
                "GitHub get deploy key: {what} has fingerprint {fp}, the generated key has {expected}"
            ))),
            None => Err(ProviderError::Failed(format!(
                "GitHub get deploy key: {what} holds a key that is not an OpenSSH public key"
            ))),
        }
    }

    async fn revoke(&self, target: &Target, credential_id: &str) -> Result<(), ProviderError> {
        let (owner, repo) = repository_of(target)?;
        let what = format!("deploy key {credential_id} of {owner}/{repo}");
        tracing::debug!(owner, repo, key = credential_id, "github-deploy-key delete");
        let answer = self
            .client
            .call(
                Method::DELETE,
                &["repos", owner, repo, "keys", credential_id],
                &[],
                None,
                Auth::Own,
            )
            .await
            .map_err(|e| transport("delete deploy key", &what, e))?;
        match answer.status.as_u16() {
            // 404: already gone (a resumed run repeats the step): the goal is reached.
            s if (200..300).contains(&s) || s == 404 => Ok(()),
            _ => Err(api_error("delete deploy key", &what, &answer)),
        }
    }
}

/// GitHub's `hashed_token`: base64 of the token's SHA-256, as the audit log shows it.
pub fn hashed_token(token: &Secret) -> String {
    base64::engine::general_purpose::STANDARD.encode(Sha256::digest(token.expose().as_bytes()))
}

/// Where a token value comes from.
#[derive(Clone)]
pub enum ValueSource {
    /// A file holding the token (surrounding whitespace ignored).
    File(PathBuf),
    /// One line of standard input.
    Stdin,
    /// Given in process (tests, the demo).
    Value(Secret),
}

impl std::fmt::Debug for ValueSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ValueSource::File(p) => write!(f, "File({})", p.display()),
            ValueSource::Stdin => f.write_str("Stdin"),
            ValueSource::Value(_) => f.write_str("Value([redacted])"),
        }
    }
}

impl ValueSource {
    async fn read(&self) -> Result<Secret, String> {
        let text = match self {
            ValueSource::Value(s) => return Ok(s.clone()),
            ValueSource::File(path) => tokio::fs::read_to_string(path)
                .await
                .map(zeroize::Zeroizing::new)
                .map_err(|e| format!("cannot read {}: {e}", path.display()))?,
            ValueSource::Stdin => tokio::task::spawn_blocking(|| {
                let mut line = zeroize::Zeroizing::new(String::new());
                std::io::stdin().read_line(&mut line).map(|_| line)
            })
            .await
            .map_err(|e| format!("cannot read standard input: {e}"))?
            .map_err(|e| format!("cannot read standard input: {e}"))?,
        };
        let value = Secret::new(text.trim());
        if value.is_empty() {
            return Err(match self {
                ValueSource::File(p) => format!("{} is empty", p.display()),
                _ => "standard input gave an empty value".into(),
            });
        }
        Ok(value)
    }
}

/// The values a person supplies for `github-token` targets, by target id: the new token
/// (`--value-from-file TARGET=FILE`, `-` for stdin), the old one when it should be revoked
/// through GitHub's API (`--old-value-from-file`), and whether rekey may ask on the terminal.
#[derive(Debug, Clone, Default)]
pub struct TokenInputs {
    pub new: BTreeMap<String, ValueSource>,
    pub old: BTreeMap<String, ValueSource>,
    /// Ask with a hidden prompt for a target that has no new-value source (a terminal only).
    pub prompt: bool,
}

/// The `github-token` provider. Needs no token of rekey's own: it verifies the new token with
/// itself, and the revocation endpoint is unauthenticated.
pub struct GithubTokenProvider {
    client: GithubClient,
    inputs: TokenInputs,
    /// Values read so far, by hashed id: each source is read once per process (stdin can only
    /// be), and `revoke` can revoke any token whose value it was given.
    known: Mutex<BTreeMap<String, Secret>>,
    /// New values read, by target id.
    read_new: Mutex<BTreeMap<String, Secret>>,
    /// Old values read, by target id (stdin can be read only once, and inspect and revoke
    /// both need the value).
    read_old: Mutex<BTreeMap<String, Secret>>,
    /// `X-OAuth-Scopes` seen, by (target id, "old" | "new"): `None` for a fine-grained token.
    scopes: Mutex<BTreeMap<(String, &'static str), Option<String>>>,
    /// One prompt at a time on the terminal.
    prompt_lock: tokio::sync::Mutex<()>,
}

impl std::fmt::Debug for GithubTokenProvider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GithubTokenProvider")
            .field("client", &self.client)
            .field("inputs", &self.inputs)
            .finish_non_exhaustive()
    }
}

impl GithubTokenProvider {
    pub fn new(client: GithubClient, inputs: TokenInputs) -> Self {
        GithubTokenProvider {
            client,
            inputs,
            known: Mutex::new(BTreeMap::new()),
            read_new: Mutex::new(BTreeMap::new()),
            read_old: Mutex::new(BTreeMap::new()),
            scopes: Mutex::new(BTreeMap::new()),
            prompt_lock: tokio::sync::Mutex::new(()),
        }
    }

    fn remember(&self, value: &Secret) -> String {
        let id = hashed_token(value);
        if let Ok(mut known) = self.known.lock() {
            known.insert(id.clone(), value.clone());
        }
        id
    }

    fn note_scopes(&self, target: &Target, which: &'static str, scopes: Option<String>) {
        if let Ok(mut m) = self.scopes.lock() {
            m.insert((target.id.value.clone(), which), scopes);
        }
    }

    fn known(&self, id: &str) -> Option<Secret> {
        self.known.lock().ok().and_then(|k| k.get(id).cloned())
    }

    async fn old_value(&self, target: &Target) -> Result<Option<Secret>, ProviderError> {
        let id = target.id.as_str();
        if let Some(v) = self.read_old.lock().ok().and_then(|m| m.get(id).cloned()) {
            return Ok(Some(v));
        }
        let Some(source) = self.inputs.old.get(id) else {
            return Ok(None);
        };
        let value = source
            .read()
            .await
            .map_err(|e| ProviderError::Failed(format!("target {id}: the old token: {e}")))?;
        self.remember(&value);
        if let Ok(mut m) = self.read_old.lock() {
            m.insert(id.to_owned(), value.clone());
        }
        Ok(Some(value))
    }

    /// `GET /user` with `token`: the login and the scopes, or why not (never the token, even
    /// if an endpoint echoed it).
    async fn whoami(
        &self,
        token: &Secret,
        what: &str,
    ) -> Result<(String, Option<String>), ProviderError> {
        self.whoami_inner(token, what)
            .await
            .map_err(|e| scrub(e, token))
    }

    async fn whoami_inner(
        &self,
        token: &Secret,
        what: &str,
    ) -> Result<(String, Option<String>), ProviderError> {
        let answer = self
            .client
            .call(Method::GET, &["user"], &[], None, Auth::Token(token))
            .await
            .map_err(|e| transport("GET /user", what, e))?;
        if answer.status.as_u16() == 401 {
            return Err(ProviderError::Rejected(format!(
                "GitHub GET /user for {what}: the token is not accepted ({})",
                answer.error()
            )));
        }
        if !answer.is_success() {
            return Err(api_error("GET /user", what, &answer));
        }
        #[derive(serde::Deserialize)]
        struct User {
            login: String,
        }
        let user: User = answer.json().map_err(ProviderError::Failed)?;
        let scopes = answer.header("x-oauth-scopes").map(str::to_owned);
        Ok((user.login, scopes))
    }
}

fn token_target(target: &Target) -> Result<(), ProviderError> {
    if *target.provider != ProviderKind::GithubToken {
        return Err(ProviderError::Failed(format!(
            "target {} is {}, not github-token",
            target.id.as_str(),
            target.provider.as_str()
        )));
    }
    Ok(())
}

#[async_trait]
impl Provider for GithubTokenProvider {
    fn kind(&self) -> ProviderKind {
        ProviderKind::GithubToken
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            deactivate: false,
            reactivate: false,
            manual_mint: true,
            max_credentials: None,
        }
    }

    /// The token in use: with its old value, the owner's login and its hashed id (nothing when
    /// the old token no longer works); without, one credential [`UNKNOWN_TOKEN_ID`] that only
    /// a person can revoke.
    async fn inspect(&self, target: &Target) -> Result<Inspection, ProviderError> {
        token_target(target)?;
        let named = target
            .principal
            .user()
            .or(target.principal.service())
            .map(|s| s.value.clone());
        let Some(old) = self.old_value(target).await? else {
            return Ok(Inspection {
                principal: named.unwrap_or_else(|| "GitHub user (token owner)".into()),
                credentials: vec![CredentialInfo {
                    label: None,
                    id: UNKNOWN_TOKEN_ID.into(),
                    status: CredentialStatus::Active,
                    created_at: None,
                    last_used: None,
                    last_used_service: None,
                }],
            });
        };
        let id = hashed_token(&old);
        let what = format!("the old token of {}", target.id.as_str());
        match self.whoami(&old, &what).await {
            Ok((login, scopes)) => {
                tracing::info!(
                    target = target.id.as_str(),
                    login,
                    scopes = scopes.as_deref().unwrap_or(""),
                    "github-token: the old token works"
                );
                self.note_scopes(target, "old", scopes);
                Ok(Inspection {
                    principal: login,
                    credentials: vec![CredentialInfo {
                        label: None,
                        id,
                        status: CredentialStatus::Active,
                        created_at: None,
                        last_used: None,
                        last_used_service: None,
                    }],
                })
            }
            // Revoked or expired already: nothing left to revoke.
            Err(ProviderError::Rejected(_)) => Ok(Inspection {
                principal: named.unwrap_or_else(|| "GitHub user (token owner)".into()),
                credentials: Vec::new(),
            }),
            Err(e) => Err(e),
        }
    }

    async fn mint(&self, target: &Target) -> Result<Minted, ProviderError> {
        token_target(target)?;
        let id = target.id.as_str();
        let cached = self.read_new.lock().ok().and_then(|m| m.get(id).cloned());
        let value = match (cached, self.inputs.new.get(id)) {
            (Some(v), _) => v,
            (None, Some(source)) => source
                .read()
                .await
                .map_err(|e| ProviderError::Failed(format!("target {id}: the new token: {e}")))?,
            (None, None) if self.inputs.prompt => {
                let _one = self.prompt_lock.lock().await;
                let prompt = format!(
                    "New GitHub personal access token for target {id} (create it at GitHub → Settings → Developer settings; input hidden): "
                );
                let text = tokio::task::spawn_blocking(move || rpassword::prompt_password(prompt))
                    .await
                    .map_err(|e| ProviderError::Failed(format!("cannot prompt: {e}")))?
                    .map_err(|e| ProviderError::Failed(format!("cannot read the token: {e}")))?;
                let text = zeroize::Zeroizing::new(text);
                let value = Secret::new(text.trim());
                if value.is_empty() {
                    return Err(ProviderError::NeedsInput(format!(
                        "no token entered for target {id}"
                    )));
                }
                value
            }
            (None, None) => {
                return Err(ProviderError::NeedsInput(format!(
                    "GitHub cannot mint personal access tokens: create one, then provide it with `--value-from-file {id}=FILE` (`{id}=-` for stdin), or run on a terminal to be asked"
                )));
            }
        };
        if let Ok(mut m) = self.read_new.lock() {
            m.insert(id.to_owned(), value.clone());
        }
        let hashed = self.remember(&value);
        let mut fields = BTreeMap::new();
        fields.insert(FIELD_TOKEN.to_owned(), value);
        Ok(Minted { id: hashed, fields })
    }

    async fn verify(&self, target: &Target, minted: &Minted) -> Result<(), ProviderError> {
        token_target(target)?;
        let token = minted
            .fields
            .get(FIELD_TOKEN)
            .ok_or_else(|| ProviderError::Failed("the new credential has no token field".into()))?;
        let what = format!("the new token of {}", target.id.as_str());
        let (login, scopes) = self.whoami(token, &what).await?;
        tracing::info!(
            target = target.id.as_str(),
            login,
            scopes = scopes.as_deref().unwrap_or("(fine-grained: none listed)"),
            "github-token: the new token works"
        );
        self.note_scopes(target, "new", scopes);
        if let Some(user) = target.principal.user()
            && !user.as_str().eq_ignore_ascii_case(&login)
        {
            return Err(ProviderError::Failed(format!(
                "{what} belongs to GitHub user {login}, the plan says {}",
                user.as_str()
            )));
        }
        Ok(())
    }

    /// The new token's scopes beside the old one's, so a reviewer sees a token that gained
    /// (or lost) a scope in the rotation.
    fn verified_note(&self, target: &Target) -> Option<String> {
        let scopes = self.scopes.lock().ok()?;
        let show = |s: &Option<String>| match s.as_deref() {
            Some("") => "none".to_owned(),
            Some(s) => s.to_owned(),
            None => "fine-grained (no X-OAuth-Scopes)".to_owned(),
        };
        let id = target.id.value.clone();
        let new = scopes.get(&(id.clone(), "new"))?;
        Some(match scopes.get(&(id, "old")) {
            Some(old) => format!("scopes: {} (the old token: {})", show(new), show(old)),
            None => format!("scopes: {} (the old token's are unknown)", show(new)),
        })
    }

    /// Through `POST /credentials/revoke` when the token's value is known to this process;
    /// otherwise a person must do it ([`ProviderError::NeedsInput`]).
    async fn revoke(&self, target: &Target, credential_id: &str) -> Result<(), ProviderError> {
        token_target(target)?;
        // Reading the old value (if given) makes it known, whatever called first.
        let old = self.old_value(target).await?;
        // The token in use when the run began, whose value was not given then but is now.
        let given = old.filter(|_| credential_id == UNKNOWN_TOKEN_ID);
        if let Some(old) = &given {
            let new = self
                .read_new
                .lock()
                .ok()
                .and_then(|m| m.get(target.id.as_str()).cloned());
            if new.is_some_and(|n| n.expose() == old.expose()) {
                return Err(ProviderError::Failed(format!(
                    "target {}: the old value given is the new token; refusing to revoke it",
                    target.id.as_str()
                )));
            }
        }
        let Some(value) = given.or_else(|| self.known(credential_id)) else {
            return Err(ProviderError::NeedsInput(format!(
                "revoke the old token by hand (GitHub → Settings → Developer settings → Personal access tokens, or ask an organization owner), or resume with `--old-value-from-file {}=FILE` to revoke it through GitHub's credential-revocation API",
                target.id.as_str()
            )));
        };
        let what = format!("token {credential_id}");
        let body = serde_json::json!({"credentials": [value.expose()]});
        let answer = self
            .client
            .call(
                Method::POST,
                &["credentials", "revoke"],
                &[],
                Some(&body),
                Auth::Anonymous,
            )
            .await
            .map_err(|e| scrub(transport("credential revocation", &what, e), &value))?;
        if !answer.is_success() {
            return Err(scrub(
                api_error("credential revocation", &what, &answer),
                &value,
            ));
        }
        tracing::info!(
            target = target.id.as_str(),
            token = credential_id,
            "github-token: old token submitted for revocation"
        );
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_keys_round_trip_and_fingerprints_match() {
        let (private, public) = generate_ed25519("rekey test").unwrap();
        assert!(
            private
                .expose()
                .starts_with("-----BEGIN OPENSSH PRIVATE KEY-----")
        );
        assert!(public.starts_with("ssh-ed25519 "));
        let a = private_key_fingerprint(&private).unwrap();
        assert_eq!(Some(a.clone()), public_key_fingerprint(&public));
        assert!(a.starts_with("SHA256:"));
        let (other, _) = generate_ed25519("x").unwrap();
        assert_ne!(private_key_fingerprint(&other).unwrap(), a);
        assert_eq!(public_key_fingerprint("not a key"), None);
    }

    #[test]
    fn hashed_tokens_are_base64_sha256() {
        // echo -n abc | sha256sum | xxd -r -p | base64
        assert_eq!(
            hashed_token(&Secret::new("abc")),
            "ungWv48Bz+pBQUDeXa4iI7ADYaOWF3qctBD/YfIAFa0="
        );
    }

    #[test]
    fn sources_never_print_values() {
        let s = ValueSource::Value(Secret::new("ghp_topsecret"));
        assert!(!format!("{s:?}").contains("topsecret"));
    }
}
