//! The normalized inventory: where secrets live in CircleCI, never what they are.
//!
//! Both the live API reader and the Env-Inspector import produce this shape, and `rekey plan`
//! reads only this shape. Values are never stored: a project variable keeps CircleCI's mask
//! (`xxxx` + last four), a context variable keeps its timestamps.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// Everything one inventory run saw, plus the places it could not read.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Inventory {
    pub source: InventorySource,
    /// Organization slug (`gh/acme`), when the inventory was taken for one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub org: Option<String>,
    pub taken_at: DateTime<Utc>,
    #[serde(default)]
    pub projects: Vec<Project>,
    #[serde(default)]
    pub contexts: Vec<Context>,
    /// Projects, contexts or listings that failed; the rest of the inventory is still valid.
    #[serde(default)]
    pub errors: Vec<InventoryError>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum InventorySource {
    /// Read live from the CircleCI API.
    CircleciApi,
    /// Imported from CircleCI-Env-Inspector's `circleci-data.json`.
    EnvInspector,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Project {
    /// Project slug: `gh/acme/api`, `bb/acme/api` or `circleci/<org-id>/<project-id>`.
    pub slug: String,
    #[serde(default)]
    pub env_vars: Vec<ProjectVar>,
    #[serde(default)]
    pub checkout_keys: Vec<CheckoutKey>,
    /// Additional SSH keys (project settings), each installed for one host.
    #[serde(default)]
    pub ssh_keys: Vec<SshKey>,
    /// The legacy AWS key pair of the project settings page, when one is set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub legacy_aws_keys: Option<LegacyAwsKeys>,
}

/// A project environment variable as CircleCI shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProjectVar {
    /// Inline up to 23 bytes (nearly every name): an inventory holds hundreds of thousands.
    pub name: crate::plan::Text,
    /// CircleCI's mask, normalized to `xxxx` + the last four characters (see [`Masked`]).
    pub masked: Masked,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created_at: Option<DateTime<Utc>>,
}

/// A checkout key (deploy key or user key) that CircleCI uses to clone the repository.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CheckoutKey {
    /// `deploy-key` or `github-user-key` (the API's words).
    #[serde(rename = "type")]
    pub key_type: String,
    pub fingerprint: String,
    #[serde(default)]
    pub preferred: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created_at: Option<DateTime<Utc>>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SshKey {
    pub fingerprint: String,
    /// Host the key is used for; empty means every host.
    #[serde(default)]
    pub hostname: String,
}

/// The masks of the legacy project-settings AWS key pair.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LegacyAwsKeys {
    pub access_key_id: Masked,
    pub secret_access_key: Masked,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Context {
    pub id: String,
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created_at: Option<DateTime<Utc>>,
    #[serde(default)]
    pub variables: Vec<ContextVar>,
}

/// A context variable: CircleCI never returns its value, not even masked.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ContextVar {
    pub name: crate::plan::Text,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created_at: Option<DateTime<Utc>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub updated_at: Option<DateTime<Utc>>,
}

/// A place the inventory could not read, kept so that the plan lists it for a person.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct InventoryError {
    /// What failed: `project`, `context`, `organization`.
    pub scope: ErrorScope,
    /// The project slug, context name or id, or organization slug.
    pub name: String,
    /// HTTP status, when the failure was an HTTP answer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<u16>,
    pub message: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum ErrorScope {
    Project,
    Context,
    Organization,
}

/// A masked value: `xxxx` followed by at most the last four characters of the secret.
///
/// Constructing one from whatever CircleCI (or a file) returned keeps only the last four
/// characters, so a full value that slipped into an export can never travel further.
#[derive(
    Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, schemars::JsonSchema,
)]
#[serde(from = "crate::plan::Text", into = "String")]
#[schemars(
    with = "String",
    description = "A masked value: xxxx followed by the last four characters."
)]
// At most 20 bytes (`xxxx` and four characters of up to four bytes), so always inline in a
// `Text`: 300,000 masks of an inventory (and the plans made from it) allocate nothing.
pub struct Masked(crate::plan::Text);

impl Masked {
    /// Normalizes CircleCI's mask (or any string) to `xxxx` + last four characters.
    pub fn new(raw: &str) -> Masked {
        let start = raw.char_indices().rev().nth(3).map_or(0, |(i, _)| i);
        let mut masked = smol_str::SmolStrBuilder::new();
        masked.push_str("xxxx");
        masked.push_str(&raw[start..]);
        Masked(masked.finish())
    }

    /// The visible last four characters (fewer when the value was shorter).
    pub fn last_four(&self) -> &str {
        &self.0[4..]
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl From<String> for Masked {
    fn from(raw: String) -> Self {
        Masked::new(&raw)
    }
}

impl From<crate::plan::Text> for Masked {
    fn from(raw: crate::plan::Text) -> Self {
        Masked::new(&raw)
    }
}

impl From<Masked> for String {
    fn from(m: Masked) -> Self {
        m.0.into()
    }
}

impl std::fmt::Display for Masked {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl Inventory {
    /// Number of variables (project and context) the inventory holds.
    pub fn variable_count(&self) -> usize {
        self.projects
            .iter()
            .map(|p| p.env_vars.len())
            .sum::<usize>()
            + self
                .contexts
                .iter()
                .map(|c| c.variables.len())
                .sum::<usize>()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn masked_keeps_only_last_four() {
        assert_eq!(Masked::new("xxxxWXYZ").as_str(), "xxxxWXYZ");
        assert_eq!(Masked::new("AKIAABCDEFGHWXYZ").as_str(), "xxxxWXYZ");
        assert_eq!(Masked::new("ab").as_str(), "xxxxab");
        assert_eq!(Masked::new("xxxxWXYZ").last_four(), "WXYZ");
        assert_eq!(Masked::new("xxxxé€ab").last_four(), "é€ab");
    }
}
