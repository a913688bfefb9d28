//! Import of CircleCI-Env-Inspector's `circleci-data.json` into the normalized [`Inventory`].
//!
//! Two shapes are accepted: the current one (`{"user", "accounts": [{"contexts", "projects",
//! "errors"}]}`) and the older one its README still shows (top-level `projects` with `variables`,
//! `keys`, `legacyAWSKeys`, and top-level `contexts`). Unknown fields are ignored; a missing or
//! mistyped required field is an error naming the JSON path, line and column.

use super::model::*;
use crate::diagnostic::Diagnostic;
use chrono::{DateTime, Utc};
use serde::Deserialize;
use serde_json::Value;

/// Reads Env-Inspector output from `text`; `file` names it in errors.
pub fn import(file: &str, text: &str, taken_at: DateTime<Utc>) -> Result<Inventory, Diagnostic> {
    let probe: Probe = serde_json::from_str(text).map_err(|e| json_error(file, text, e, None))?;
    let mut inventory = if probe.accounts.is_some() {
        let doc: current::Document = parse_located(file, text)?;
        current::convert(doc)
    } else if probe.projects.is_some() || probe.contexts.is_some() {
        let doc: older::Document = parse_located(file, text)?;
        older::convert(file, text, doc)?
    } else {
        return Err(Diagnostic::error(
            file,
            text,
            1,
            1,
            "not CircleCI-Env-Inspector output: expected a top-level `accounts` list (current format) or `projects` (older format)",
        ));
    };
    inventory.taken_at = taken_at;
    sort(&mut inventory);
    Ok(inventory)
}

#[derive(Deserialize)]
struct Probe {
    accounts: Option<serde::de::IgnoredAny>,
    projects: Option<serde::de::IgnoredAny>,
    contexts: Option<serde::de::IgnoredAny>,
}

fn parse_located<T: for<'de> Deserialize<'de>>(file: &str, text: &str) -> Result<T, Diagnostic> {
    let mut de = serde_json::Deserializer::from_str(text);
    serde_path_to_error::deserialize(&mut de).map_err(|e| {
        let path = e.path().to_string();
        json_error(file, text, e.into_inner(), Some(path))
    })
}

fn json_error(file: &str, text: &str, e: serde_json::Error, path: Option<String>) -> Diagnostic {
    // serde_json appends " at line L column C"; we show the position our own way.
    let full = e.to_string();
    let message = without_values(full.split(" at line ").next().unwrap_or(&full));
    let message = match path.filter(|p| p != ".") {
        Some(p) => format!("at `{p}`: {message}"),
        None => message,
    };
    let mut d = Diagnostic::error(file, text, e.line() as u32, e.column() as u32, message);
    // The file's line may be the whole file (Env-Inspector writes one line), values included:
    // the path, line and column say where, without quoting it.
    d.source_line.clear();
    d
}

/// serde's message without the offending value: it quotes a string as `"…"` and a number or
/// an enum variant as `` `…` ``, and a file's values are not to be repeated (a variable's value
/// may be unmasked, a hostile file may hold control sequences). Field names stay: they are
/// the schema's, and what the reader needs to fix the file.
fn without_values(message: &str) -> String {
    static STRING: std::sync::LazyLock<Option<regex::Regex>> =
        std::sync::LazyLock::new(|| regex::Regex::new(r#""(?:[^"\\]|\\.)*"?"#).ok());
    static TICKED: std::sync::LazyLock<Option<regex::Regex>> = std::sync::LazyLock::new(|| {
        regex::Regex::new(
            r"^(invalid type: [a-z ]+|invalid value: [a-z ]+|unknown variant) `[^`]*`",
        )
        .ok()
    });
    let Some((string, ticked)) = STRING.as_ref().zip(TICKED.as_ref()) else {
        return "malformed value".into();
    };
    let message = string.replace_all(message, "(value not shown)");
    ticked
        .replace(&message, "$1 (value not shown)")
        .into_owned()
}

/// Maps CircleCI's VCS names to slug prefixes (`github` → `gh`).
fn vcs_prefix(vcs: &str) -> &str {
    match vcs.to_ascii_lowercase().as_str() {
        "github" | "gh" => "gh",
        "bitbucket" | "bb" => "bb",
        "circleci" => "circleci",
        _ => vcs,
    }
}

/// Env-Inspector writes errors as strings or objects; keep whatever text they carry.
fn error_entry(scope: ErrorScope, name: &str, raw: &Value) -> InventoryError {
    let status = raw
        .get("status")
        .or_else(|| raw.get("code"))
        .and_then(Value::as_u64)
        .and_then(|s| u16::try_from(s).ok());
    let message = match raw {
        Value::String(s) => s.clone(),
        Value::Object(map) => map
            .get("message")
            .or_else(|| map.get("error"))
            .and_then(Value::as_str)
            .map(str::to_string)
            .unwrap_or_else(|| raw.to_string()),
        other => other.to_string(),
    };
    InventoryError {
        scope,
        name: name.to_string(),
        status,
        message,
    }
}

fn sort(inv: &mut Inventory) {
    inv.projects.sort_by(|a, b| a.slug.cmp(&b.slug));
    for p in &mut inv.projects {
        p.env_vars.sort_by(|a, b| a.name.cmp(&b.name));
        p.checkout_keys
            .sort_by(|a, b| a.fingerprint.cmp(&b.fingerprint));
        p.ssh_keys.sort_by(|a, b| a.fingerprint.cmp(&b.fingerprint));
    }
    inv.contexts
        .sort_by(|a, b| a.name.cmp(&b.name).then(a.id.cmp(&b.id)));
    for c in &mut inv.contexts {
        c.variables.sort_by(|a, b| a.name.cmp(&b.name));
    }
}

fn masked_pair(id: Option<&str>, secret: Option<&str>) -> Option<LegacyAwsKeys> {
    match (id, secret) {
        (Some(id), Some(secret)) if !id.is_empty() => Some(LegacyAwsKeys {
            access_key_id: Masked::new(id),
            secret_access_key: Masked::new(secret),
        }),
        _ => None,
    }
}

/// The shape CircleCI-Env-Inspector writes today.
mod current {
    use super::*;

    #[derive(Deserialize)]
    pub struct Document {
        pub accounts: Vec<Account>,
    }

    #[derive(Deserialize)]
    pub struct Account {
        pub name: String,
        #[serde(default)]
        pub vcstype: Option<String>,
        #[serde(default)]
        pub contexts: Vec<Context>,
        #[serde(default)]
        pub projects: Vec<Project>,
        #[serde(default)]
        pub errors: Vec<Value>,
    }

    #[derive(Deserialize)]
    pub struct Context {
        pub id: String,
        pub name: String,
        #[serde(default)]
        pub created_at: Option<DateTime<Utc>>,
        #[serde(default)]
        pub variables: Vec<ContextVariable>,
    }

    #[derive(Deserialize)]
    pub struct ContextVariable {
        pub variable: String,
        #[serde(default)]
        pub created_at: Option<DateTime<Utc>>,
        #[serde(default)]
        pub updated_at: Option<DateTime<Utc>>,
    }

    #[derive(Deserialize)]
    pub struct Project {
        pub slug: String,
        #[serde(default)]
        pub errors: Vec<Value>,
        #[serde(default)]
        pub project_env_vars: Vec<EnvVar>,
        #[serde(default)]
        pub checkout_keys: Vec<CheckoutKey>,
        #[serde(default)]
        pub ssh_keys: Vec<SshKey>,
        #[serde(default)]
        pub legacy_aws_keys: Option<LegacyKeys>,
    }

    #[derive(Deserialize)]
    pub struct EnvVar {
        pub name: String,
        pub value: String,
    }

    #[derive(Deserialize)]
    pub struct CheckoutKey {
        #[serde(rename = "type")]
        pub key_type: String,
        #[serde(default)]
        pub preferred: bool,
        #[serde(default)]
        pub created_at: Option<DateTime<Utc>>,
        pub fingerprint: String,
    }

    #[derive(Deserialize)]
    pub struct SshKey {
        pub fingerprint: String,
        #[serde(default)]
        pub hostname: Option<String>,
    }

    #[derive(Deserialize)]
    pub struct LegacyKeys {
        #[serde(default)]
        pub access_key_id: Option<String>,
        #[serde(default)]
        pub secret_access_key: Option<String>,
    }

    pub fn convert(doc: Document) -> Inventory {
        let org = match doc.accounts.as_slice() {
            [one] => Some(match one.vcstype.as_deref() {
                Some(vcs) => format!("{}/{}", vcs_prefix(vcs), one.name),
                None => one.name.clone(),
            }),
            _ => None,
        };
        let mut inv = Inventory {
            source: InventorySource::EnvInspector,
            org,
            taken_at: DateTime::<Utc>::default(),
            projects: Vec::new(),
            contexts: Vec::new(),
            errors: Vec::new(),
        };
        for account in doc.accounts {
            for raw in &account.errors {
                inv.errors
                    .push(error_entry(ErrorScope::Organization, &account.name, raw));
            }
            for c in account.contexts {
                inv.contexts.push(super::Context {
                    id: c.id,
                    name: c.name,
                    created_at: c.created_at,
                    variables: c
                        .variables
                        .into_iter()
                        .map(|v| ContextVar {
                            name: v.variable,
                            created_at: v.created_at,
                            updated_at: v.updated_at,
                        })
                        .collect(),
                });
            }
            for p in account.projects {
                for raw in &p.errors {
                    inv.errors
                        .push(error_entry(ErrorScope::Project, &p.slug, raw));
                }
                let legacy = p.legacy_aws_keys.as_ref().and_then(|k| {
                    masked_pair(k.access_key_id.as_deref(), k.secret_access_key.as_deref())
                });
                inv.projects.push(super::Project {
                    slug: p.slug,
                    env_vars: p
                        .project_env_vars
                        .into_iter()
                        .map(|v| ProjectVar {
                            name: v.name,
                            masked: Masked::new(&v.value),
                            created_at: None,
                        })
                        .collect(),
                    checkout_keys: p
                        .checkout_keys
                        .into_iter()
                        .map(|k| super::CheckoutKey {
                            key_type: k.key_type,
                            fingerprint: k.fingerprint,
                            preferred: k.preferred,
                            created_at: k.created_at,
                        })
                        .collect(),
                    ssh_keys: p
                        .ssh_keys
                        .into_iter()
                        .map(|k| super::SshKey {
                            fingerprint: k.fingerprint,
                            hostname: k.hostname.unwrap_or_default(),
                        })
                        .collect(),
                    legacy_aws_keys: legacy,
                });
            }
        }
        inv
    }
}

/// The older shape, as the Env-Inspector README still shows it.
mod older {
    use super::*;

    #[derive(Deserialize)]
    pub struct Document {
        #[serde(default)]
        pub contexts: Vec<Context>,
        #[serde(default)]
        pub projects: Vec<Project>,
        /// Projects the tool could not read.
        #[serde(default)]
        pub unavailable: Vec<String>,
    }

    #[derive(Deserialize)]
    pub struct Context {
        pub id: String,
        pub name: String,
        #[serde(default)]
        pub variables: Vec<current::ContextVariable>,
    }

    #[derive(Deserialize)]
    pub struct Project {
        /// `ORG/REPO`.
        pub name: String,
        /// `https://app.circleci.com/settings/project/<VCS>/<ORG>/<REPO>/…`, the only place the VCS is.
        #[serde(default)]
        pub url: Option<String>,
        #[serde(default)]
        pub slug: Option<String>,
        #[serde(default)]
        pub variables: Vec<current::EnvVar>,
        #[serde(default)]
        pub keys: Vec<Key>,
        #[serde(default, rename = "legacyAWSKeys")]
        pub legacy_aws_keys: Option<LegacyKeys>,
    }

    #[derive(Deserialize)]
    pub struct Key {
        #[serde(rename = "type")]
        pub key_type: String,
        #[serde(default)]
        pub preferred: bool,
        #[serde(default, alias = "created-at")]
        pub created_at: Option<DateTime<Utc>>,
        pub fingerprint: String,
    }

    #[derive(Deserialize)]
    pub struct LegacyKeys {
        #[serde(default, alias = "accessKeyId")]
        pub access_key_id: Option<String>,
        #[serde(default, alias = "secretAccessKey")]
        pub secret_access_key: Option<String>,
    }

    /// `gh/ORG/REPO` from the settings URL; the older format has no slug field.
    fn slug_of(p: &Project) -> Option<String> {
        if let Some(slug) = &p.slug {
            return Some(slug.clone());
        }
        let url = p.url.as_deref()?;
        let rest = url.split("/settings/project/").nth(1)?;
        let mut parts = rest.split('/');
        let (vcs, org, repo) = (parts.next()?, parts.next()?, parts.next()?);
        if vcs.is_empty() || org.is_empty() || repo.is_empty() {
            return None;
        }
        Some(format!("{}/{org}/{repo}", vcs_prefix(vcs)))
    }

    pub fn convert(file: &str, text: &str, doc: Document) -> Result<Inventory, Diagnostic> {
        let mut inv = Inventory {
            source: InventorySource::EnvInspector,
            org: None,
            taken_at: DateTime::<Utc>::default(),
            projects: Vec::new(),
            contexts: Vec::new(),
            errors: doc
                .unavailable
                .iter()
                .map(|name| InventoryError {
                    scope: ErrorScope::Project,
                    name: name.clone(),
                    status: None,
                    message: "Env-Inspector could not read this project".into(),
                })
                .collect(),
        };
        for (index, p) in doc.projects.iter().enumerate() {
            let slug = slug_of(p).ok_or_else(|| {
                Diagnostic::error(
                    file,
                    text,
                    0,
                    0,
                    format!(
                        "at `projects[{index}]` ({}): no `slug`, and no settings `url` to derive one from",
                        p.name
                    ),
                )
            })?;
            inv.projects.push(super::Project {
                slug,
                env_vars: p
                    .variables
                    .iter()
                    .map(|v| ProjectVar {
                        name: v.name.clone(),
                        masked: Masked::new(&v.value),
                        created_at: None,
                    })
                    .collect(),
                checkout_keys: p
                    .keys
                    .iter()
                    .map(|k| super::CheckoutKey {
                        key_type: k.key_type.clone(),
                        fingerprint: k.fingerprint.clone(),
                        preferred: k.preferred,
                        created_at: k.created_at,
                    })
                    .collect(),
                ssh_keys: Vec::new(),
                legacy_aws_keys: p.legacy_aws_keys.as_ref().and_then(|k| {
                    masked_pair(k.access_key_id.as_deref(), k.secret_access_key.as_deref())
                }),
            });
        }
        for c in doc.contexts {
            inv.contexts.push(super::Context {
                id: c.id,
                name: c.name,
                created_at: None,
                variables: c
                    .variables
                    .into_iter()
                    .map(|v| ContextVar {
                        name: v.variable,
                        created_at: v.created_at,
                        updated_at: v.updated_at,
                    })
                    .collect(),
            });
        }
        Ok(inv)
    }
}
