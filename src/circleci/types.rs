//! The shapes CircleCI answers with, as far as rekey reads them.
//!
//! Every value field is a [`Masked`] from the moment it is decoded, so that not even the
//! client holds more than the last four characters of a secret, whatever the server sent.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Deserializer};

use crate::inventory::Masked;

/// One page of a v2 listing: `{items: [...], next_page_token: "..." | null}`.
#[derive(Debug, Deserialize)]
pub(crate) struct Page<T> {
    #[serde(default = "Vec::new")]
    pub items: Vec<T>,
    #[serde(default)]
    pub next_page_token: Option<String>,
}

/// A project the token's user follows (`GET /api/v1.1/projects`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct FollowedProject {
    #[serde(default)]
    pub vcs_url: Option<String>,
    pub username: String,
    pub reponame: String,
    /// `github` or `bitbucket` (v1.1 words).
    #[serde(default)]
    pub vcs_type: Option<String>,
}

impl FollowedProject {
    /// The v2 project slug (`gh/acme/api`), or `None` for a VCS that v2 slugs cannot name.
    pub fn slug(&self) -> Option<String> {
        let vcs = match self.vcs_type.as_deref() {
            Some(vcs) => vcs_slug(vcs)?,
            // Older answers lack vcs_type; the repository URL still says where it lives.
            None => {
                let url = self.vcs_url.as_deref()?;
                if url.contains("github.com") {
                    "gh"
                } else if url.contains("bitbucket.org") {
                    "bb"
                } else {
                    return None;
                }
            }
        };
        Some(format!("{vcs}/{}/{}", self.username, self.reponame))
    }
}

/// The short v2 VCS slug for a v1.1 or v2 VCS name.
pub fn vcs_slug(vcs: &str) -> Option<&'static str> {
    match vcs.to_ascii_lowercase().as_str() {
        "github" | "gh" => Some("gh"),
        "bitbucket" | "bb" => Some("bb"),
        "circleci" => Some("circleci"),
        _ => None,
    }
}

/// A project of an organization (`GET /api/private/project?organization-id=…`, the listing
/// CircleCI-Env-Inspector uses; it also covers `circleci/` GitHub App and GitLab projects).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct OrgProject {
    pub id: String,
    #[serde(default)]
    pub name: String,
    pub slug: String,
}

/// A project environment variable (`GET /api/v2/project/{slug}/envvar`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct ProjectEnvVar {
    pub name: String,
    /// CircleCI's mask, `xxxx` + last four.
    pub value: Masked,
    #[serde(default, alias = "created-at", deserialize_with = "lenient_time")]
    pub created_at: Option<DateTime<Utc>>,
}

/// A checkout key (`GET /api/v2/project/{slug}/checkout-key`): v2 spells its fields in
/// kebab-case, unlike the rest of the API.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct CheckoutKey {
    #[serde(rename = "public-key", default)]
    pub public_key: String,
    /// `deploy-key` or `github-user-key`.
    #[serde(rename = "type")]
    pub key_type: String,
    pub fingerprint: String,
    #[serde(default)]
    pub preferred: bool,
    #[serde(rename = "created-at", default, deserialize_with = "lenient_time")]
    pub created_at: Option<DateTime<Utc>>,
}

/// The parts of the v1.1 project settings (`GET /api/v1.1/project/{vcs}/{org}/{repo}/settings`)
/// that hold credentials.
#[derive(Debug, Clone, PartialEq, Eq, Default, Deserialize)]
pub struct ProjectSettings {
    /// Additional SSH keys, each installed for one host.
    #[serde(default, deserialize_with = "null_as_default")]
    pub ssh_keys: Vec<SettingsSshKey>,
    #[serde(default, deserialize_with = "null_as_default")]
    pub aws: AwsSettings,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct SettingsSshKey {
    pub fingerprint: String,
    /// Empty or absent: the key is offered to every host.
    #[serde(default, deserialize_with = "null_as_default")]
    pub hostname: String,
    #[serde(default, deserialize_with = "null_as_default")]
    pub public_key: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Default, Deserialize)]
pub struct AwsSettings {
    /// The legacy project-settings AWS key pair; `null` when none is set.
    #[serde(default)]
    pub keypair: Option<AwsKeypair>,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct AwsKeypair {
    pub access_key_id: Masked,
    /// `secret_access_key` is the name the brief and CircleCI-Env-Inspector use; the Go client
    /// go-circleci decodes `secret_access_key_id`, so both are accepted.
    #[serde(alias = "secret_access_key_id")]
    pub secret_access_key: Masked,
}

/// A context (`GET /api/v2/context?owner-slug=…|owner-id=…`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct ContextInfo {
    pub id: String,
    pub name: String,
    #[serde(default, deserialize_with = "lenient_time")]
    pub created_at: Option<DateTime<Utc>>,
}

/// A context variable (`GET /api/v2/context/{id}/environment-variable`): CircleCI never
/// returns its value, not even masked.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct ContextEnvVar {
    pub variable: String,
    #[serde(default)]
    pub context_id: Option<String>,
    #[serde(default, deserialize_with = "lenient_time")]
    pub created_at: Option<DateTime<Utc>>,
    #[serde(default, deserialize_with = "lenient_time")]
    pub updated_at: Option<DateTime<Utc>>,
}

/// Whose contexts to list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ContextOwner {
    /// `gh/acme`, `bb/acme`.
    Slug(String),
    /// The organization id, required for `circleci/` organizations.
    Id(String),
}

/// A timestamp that does not parse is dropped rather than failing the whole listing: the
/// inventory needs the names more than the dates.
fn lenient_time<'de, D>(deserializer: D) -> Result<Option<DateTime<Utc>>, D::Error>
where
    D: Deserializer<'de>,
{
    let raw: Option<String> = Option::deserialize(deserializer)?;
    Ok(raw.and_then(|s| {
        DateTime::parse_from_rfc3339(&s)
            .ok()
            .map(|t| t.with_timezone(&Utc))
    }))
}

/// v1.1 answers often say `null` where a list or object is empty.
fn null_as_default<'de, D, T>(deserializer: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de> + Default,
{
    Ok(Option::<T>::deserialize(deserializer)?.unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn followed_project_slugs() {
        let p: FollowedProject = serde_json::from_str(
            r#"{"vcs_url":"https://github.com/acme/api","username":"acme","reponame":"api","vcs_type":"github"}"#,
        )
        .unwrap();
        assert_eq!(p.slug().as_deref(), Some("gh/acme/api"));
        let p: FollowedProject = serde_json::from_str(
            r#"{"vcs_url":"https://bitbucket.org/acme/api","username":"acme","reponame":"api"}"#,
        )
        .unwrap();
        assert_eq!(p.slug().as_deref(), Some("bb/acme/api"));
        let p: FollowedProject =
            serde_json::from_str(r#"{"username":"acme","reponame":"api","vcs_type":"svn"}"#)
                .unwrap();
        assert_eq!(p.slug(), None);
    }

    #[test]
    fn checkout_key_kebab_case() {
        let k: CheckoutKey = serde_json::from_str(
            r#"{"public-key":"ssh-ed25519 AAAA","type":"deploy-key","fingerprint":"c9:0b","preferred":true,"created-at":"2015-09-21T17:29:21.042Z"}"#,
        )
        .unwrap();
        assert_eq!(k.key_type, "deploy-key");
        assert!(k.preferred);
        assert!(k.created_at.is_some());
    }

    #[test]
    fn env_var_values_are_masked_on_decode() {
        let v: ProjectEnvVar =
            serde_json::from_str(r#"{"name":"K","value":"AKIAFULLVALUEWXYZ"}"#).unwrap();
        assert_eq!(v.value.as_str(), "xxxxWXYZ");
        let s: ProjectSettings = serde_json::from_str(
            r#"{"ssh_keys":[{"fingerprint":"aa","hostname":null,"public_key":"k"}],
                "aws":{"keypair":{"access_key_id":"AKIA1234567890ABCD","secret_access_key_id":"xxxxQRST"}}}"#,
        )
        .unwrap();
        let pair = s.aws.keypair.unwrap();
        assert_eq!(pair.access_key_id.as_str(), "xxxxABCD");
        assert_eq!(pair.secret_access_key.as_str(), "xxxxQRST");
        assert_eq!(s.ssh_keys[0].hostname, "");
        let s: ProjectSettings =
            serde_json::from_str(r#"{"ssh_keys":null,"aws":{"keypair":null}}"#).unwrap();
        assert_eq!(s, ProjectSettings::default());
    }

    #[test]
    fn bad_timestamps_are_dropped() {
        let v: ContextEnvVar = serde_json::from_str(
            r#"{"variable":"X","created_at":"yesterday","updated_at":"2023-01-04T10:00:00Z"}"#,
        )
        .unwrap();
        assert_eq!(v.created_at, None);
        assert!(v.updated_at.is_some());
    }
}

/// `POST /api/v2/project/{slug}/pipeline` answer.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct PipelineCreated {
    pub id: String,
    #[serde(default)]
    pub number: u64,
    #[serde(default)]
    pub state: String,
}

/// One workflow of a pipeline; `status` is CircleCI's word (`success`, `running`, `failed`,
/// `error`, `canceled`, `on_hold`, `not_run`, `failing`, `unauthorized`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Workflow {
    pub id: String,
    pub name: String,
    pub status: String,
}

impl Workflow {
    /// Whether the workflow reached a final status.
    pub fn is_finished(&self) -> bool {
        !matches!(self.status.as_str(), "running" | "on_hold" | "failing")
    }
}
