//! Import of CircleCI-Env-Inspector's `circleci-data.json` into the normalized [`Inventory`].
//!
//! The tool wrote three shapes during 2023, all accepted and told apart by their content
//! ([`Format`]):
//! - **January 2023** (the incident's weeks): a JSON *array* of `{"<account>": {contexts,
//!   projects, unavailable}}`; a project has no slug, only its settings `url`; a listing that
//!   failed is one placeholder entry (`ERROR: Unable to fetch variables. ` / `ERROR: Unable to
//!   fetch keys. `) which becomes an inventory error, never a variable or a key. The README's
//!   example (the same account object without the array) is read the same way.
//! - **February 2023**: `{user, accounts: [{name, vcstype, contexts, projects: [{slug,
//!   variables, keys, legacyAWSKeys}], errors}]}`.
//! - **March 2023 on**: the same top level, projects with `project_env_vars`, `checkout_keys`,
//!   `ssh_keys`, `legacy_aws_keys` (empty strings on an API error: no key pair).
//!
//! The formats differ in their envelopes and field names only: one set of record types (with
//! the historical names as aliases) and one mapping ([`Mapper`]) serve all three. Unknown fields
//! are ignored; a missing or mistyped required field is an error naming the JSON path, line and
//! column, and no error ever quotes a value.

use super::model::*;
use crate::diagnostic::Diagnostic;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Deserializer};
use serde_json::Value;
use std::collections::BTreeMap;

/// The placeholder name the January 2023 tool wrote for a variable listing that failed.
pub const VARIABLES_PLACEHOLDER: &str = "ERROR: Unable to fetch variables.";
/// The placeholder type the January 2023 tool wrote for a key listing that failed.
pub const KEYS_PLACEHOLDER: &str = "ERROR: Unable to fetch keys.";

/// Longest error text kept from a file (they end up in plans and tables).
const MAX_MESSAGE: usize = 300;

/// Which of Env-Inspector's historical shapes a file has.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// January 2023: an array of accounts keyed by name (and the README's single account).
    January2023,
    /// February 2023: `{user, accounts}` with `variables`, `keys`, `legacyAWSKeys`.
    February2023,
    /// March 2023 on: `{user, accounts}` with `project_env_vars`, `checkout_keys`, `ssh_keys`.
    March2023,
}

/// Reads Env-Inspector output from `text`; `file` names it in errors.
pub fn import(file: &str, text: &str, taken_at: DateTime<Utc>) -> Result<Inventory, Diagnostic> {
    let accounts: Vec<(Option<String>, Account)> = match envelope(file, text)? {
        Envelope::Array => {
            let doc: Vec<BTreeMap<String, Account>> = parse_located(file, text)?;
            doc.into_iter()
                .flat_map(|named| named.into_iter().map(|(name, a)| (Some(name), a)))
                .collect()
        }
        Envelope::Accounts => {
            let doc: AccountsDocument = parse_located(file, text)?;
            doc.accounts.into_iter().map(|a| (None, a)).collect()
        }
        Envelope::Single => vec![(None, parse_located(file, text)?)],
    };
    let mut mapper = Mapper::default();
    for (index, (key, account)) in accounts.into_iter().enumerate() {
        let at = match &key {
            Some(name) => format!("[{index}].{name}"),
            None => format!("accounts[{index}]"),
        };
        mapper.account(file, text, &at, key, account)?;
    }
    let mut inventory = mapper.finish();
    inventory.taken_at = taken_at;
    sort(&mut inventory);
    Ok(inventory)
}

/// The format of `text`, or `None` when it is not Env-Inspector output (a cheap look at the
/// envelope and the first project; [`import`] does the real reading).
pub fn format_of(text: &str) -> Option<Format> {
    match envelope("", text).ok()? {
        Envelope::Array | Envelope::Single => Some(Format::January2023),
        Envelope::Accounts => {
            let probe: FormatProbe = serde_json::from_str(text).ok()?;
            let march = probe
                .accounts
                .iter()
                .flat_map(|a| &a.projects)
                .any(|p| p.march);
            Some(if march {
                Format::March2023
            } else {
                Format::February2023
            })
        }
    }
}

enum Envelope {
    /// `[{"<account>": {…}}]`
    Array,
    /// `{"accounts": [...]}`
    Accounts,
    /// `{"contexts", "projects"}`: one account without a name (the README's example).
    Single,
}

fn envelope(file: &str, text: &str) -> Result<Envelope, Diagnostic> {
    let not_ours = || {
        Diagnostic::error(
            file,
            text,
            1,
            1,
            "not CircleCI-Env-Inspector output: expected a list of accounts (January 2023), or an object with `accounts` (February 2023 on) or `projects`",
        )
    };
    match text.trim_start().as_bytes().first() {
        Some(b'[') => Ok(Envelope::Array),
        Some(b'{') => {
            let probe: Probe =
                serde_json::from_str(text).map_err(|e| json_error(file, text, e, None))?;
            if probe.accounts.is_some() {
                Ok(Envelope::Accounts)
            } else if probe.projects.is_some() || probe.contexts.is_some() {
                Ok(Envelope::Single)
            } else {
                Err(not_ours())
            }
        }
        // Not JSON at all: let serde say where.
        _ => match serde_json::from_str::<serde::de::IgnoredAny>(text) {
            Err(e) => Err(json_error(file, text, e, None)),
            Ok(_) => Err(not_ours()),
        },
    }
}

#[derive(Deserialize)]
struct Probe {
    accounts: Option<serde::de::IgnoredAny>,
    projects: Option<serde::de::IgnoredAny>,
    contexts: Option<serde::de::IgnoredAny>,
}

#[derive(Deserialize)]
struct FormatProbe {
    #[serde(default)]
    accounts: Vec<FormatProbeAccount>,
}

#[derive(Deserialize)]
struct FormatProbeAccount {
    #[serde(default)]
    projects: Vec<FormatProbeProject>,
}

#[derive(Deserialize)]
struct FormatProbeProject {
    #[serde(default, rename = "project_env_vars", deserialize_with = "present")]
    march: bool,
}

fn present<'de, D: Deserializer<'de>>(d: D) -> Result<bool, D::Error> {
    serde::de::IgnoredAny::deserialize(d).map(|_| true)
}

fn parse_located<T: for<'de> Deserialize<'de>>(file: &str, text: &str) -> Result<T, Diagnostic> {
    let mut de = serde_json::Deserializer::from_str(text);
    serde_path_to_error::deserialize(&mut de).map_err(|e| {
        let path = e.path().to_string();
        json_error(file, text, e.into_inner(), Some(path))
    })
}

fn json_error(file: &str, text: &str, e: serde_json::Error, path: Option<String>) -> Diagnostic {
    // serde_json appends " at line L column C"; we show the position our own way. Its
    // "invalid value" messages may quote the value: only the category is kept then.
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

// ---- the records: one set of types for every format, historical names as aliases ----

#[derive(Deserialize)]
struct AccountsDocument {
    accounts: Vec<Account>,
}

#[derive(Deserialize)]
struct Account {
    /// February 2023 on; January 2023 keys the account by name instead.
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    vcstype: Option<String>,
    #[serde(default, deserialize_with = "null_as_default")]
    contexts: Vec<ContextRecord>,
    #[serde(default, deserialize_with = "null_as_default")]
    projects: Vec<ProjectRecord>,
    /// January 2023: projects the tool could not read, by name.
    #[serde(default, deserialize_with = "null_as_default")]
    unavailable: Vec<String>,
    #[serde(default, deserialize_with = "null_as_default")]
    errors: Vec<Value>,
}

#[derive(Deserialize)]
struct ContextRecord {
    id: String,
    name: String,
    #[serde(default, deserialize_with = "lenient_time")]
    created_at: Option<DateTime<Utc>>,
    #[serde(default, deserialize_with = "null_as_default")]
    variables: Vec<ContextVariableRecord>,
}

#[derive(Deserialize)]
struct ContextVariableRecord {
    variable: String,
    #[serde(default, deserialize_with = "lenient_time")]
    created_at: Option<DateTime<Utc>>,
    #[serde(default, deserialize_with = "lenient_time")]
    updated_at: Option<DateTime<Utc>>,
    /// Set on January 2023's placeholder entry.
    #[serde(default)]
    error: Option<Value>,
}

#[derive(Deserialize)]
struct ProjectRecord {
    /// `ORG/REPO` (January 2023) or the repository name.
    #[serde(default)]
    name: Option<String>,
    /// February 2023 on.
    #[serde(default)]
    slug: Option<String>,
    /// January 2023: `https://app.circleci.com/settings/project/<vcs>/<org>/<repo>/…`, the
    /// only place the slug is.
    #[serde(default)]
    url: Option<String>,
    #[serde(
        default,
        alias = "project_env_vars",
        deserialize_with = "null_as_default"
    )]
    variables: Vec<EnvVarRecord>,
    #[serde(
        default,
        alias = "project_keys",
        alias = "checkout_keys",
        deserialize_with = "null_as_default"
    )]
    keys: Vec<KeyRecord>,
    #[serde(default, deserialize_with = "null_as_default")]
    ssh_keys: Vec<SshKeyRecord>,
    #[serde(default, rename = "legacyAWSKeys", alias = "legacy_aws_keys")]
    legacy_aws_keys: Option<LegacyKeysRecord>,
    #[serde(default, deserialize_with = "null_as_default")]
    errors: Vec<Value>,
}

#[derive(Deserialize)]
struct EnvVarRecord {
    name: String,
    #[serde(default, deserialize_with = "null_as_default")]
    value: String,
    #[serde(default)]
    error: Option<Value>,
}

#[derive(Deserialize)]
struct KeyRecord {
    #[serde(rename = "type")]
    key_type: String,
    /// A boolean, but January 2023's placeholder writes the string `"error"`.
    #[serde(default)]
    preferred: Option<Value>,
    #[serde(default, alias = "created-at", deserialize_with = "lenient_time")]
    created_at: Option<DateTime<Utc>>,
    #[serde(default, deserialize_with = "null_as_default")]
    fingerprint: String,
    #[serde(default)]
    error: Option<Value>,
}

#[derive(Deserialize)]
struct SshKeyRecord {
    fingerprint: String,
    #[serde(default, deserialize_with = "null_as_default")]
    hostname: String,
}

#[derive(Deserialize)]
struct LegacyKeysRecord {
    #[serde(default, alias = "accessKeyId")]
    access_key_id: Option<String>,
    #[serde(default, alias = "secretAccessKey")]
    secret_access_key: Option<String>,
}

fn null_as_default<'de, D, T>(d: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Default + Deserialize<'de>,
{
    Ok(Option::<T>::deserialize(d)?.unwrap_or_default())
}

/// A timestamp, or nothing when the file holds something else there (`"error"`).
fn lenient_time<'de, D: Deserializer<'de>>(d: D) -> Result<Option<DateTime<Utc>>, D::Error> {
    Ok(match Option::<Value>::deserialize(d)? {
        Some(Value::String(s)) => DateTime::parse_from_rfc3339(&s)
            .ok()
            .map(|t| t.with_timezone(&Utc)),
        _ => None,
    })
}

// ---- the one mapping from records to the inventory ----

/// Builds the inventory from the records of every account, whatever the format.
#[derive(Default)]
struct Mapper {
    orgs: Vec<String>,
    projects: Vec<Project>,
    contexts: Vec<Context>,
    errors: Vec<InventoryError>,
}

impl Mapper {
    fn account(
        &mut self,
        file: &str,
        text: &str,
        at: &str,
        key: Option<String>,
        account: Account,
    ) -> Result<(), Diagnostic> {
        let name = account.name.or(key).unwrap_or_default();
        if !name.is_empty() {
            let org = match account.vcstype.as_deref() {
                Some(vcs) => format!("{}/{name}", vcs_prefix(vcs)),
                None => name.clone(),
            };
            self.orgs.push(org);
        }
        for raw in &account.errors {
            self.errors.push(error_entry(&name, raw));
        }
        for project in &account.unavailable {
            self.errors.push(InventoryError {
                scope: ErrorScope::Project,
                name: bounded(project),
                status: None,
                message: "Env-Inspector could not read this project".into(),
            });
        }
        for c in account.contexts {
            self.context(c);
        }
        for (index, p) in account.projects.into_iter().enumerate() {
            let slug = slug_of(&p).ok_or_else(|| {
                let named = p.name.as_deref().map(|n| format!(" ({})", bounded(n))).unwrap_or_default();
                Diagnostic::error(
                    file,
                    text,
                    0,
                    0,
                    format!(
                        "at `{at}.projects[{index}]`{named}: no `slug`, and no settings `url` of the form https://app.circleci.com/settings/project/<vcs>/<org>/<repo>/… to derive one from"
                    ),
                )
            })?;
            self.project(slug, p);
        }
        Ok(())
    }

    fn context(&mut self, c: ContextRecord) {
        let mut variables = Vec::new();
        for v in c.variables {
            if let Some(message) = placeholder(&v.variable, v.error.as_ref()) {
                self.errors.push(InventoryError {
                    scope: ErrorScope::Context,
                    name: c.name.clone(),
                    status: status_of(v.error.as_ref()),
                    message,
                });
                continue;
            }
            variables.push(ContextVar {
                name: v.variable.into(),
                created_at: v.created_at,
                updated_at: v.updated_at,
            });
        }
        self.contexts.push(Context {
            id: c.id,
            name: c.name,
            created_at: c.created_at,
            variables,
        });
    }

    fn project(&mut self, slug: String, p: ProjectRecord) {
        for raw in &p.errors {
            let mut e = error_entry(&slug, raw);
            e.scope = ErrorScope::Project;
            e.name.clone_from(&slug);
            self.errors.push(e);
        }
        let mut env_vars = Vec::new();
        for v in p.variables {
            if let Some(message) = placeholder(&v.name, v.error.as_ref()) {
                self.errors
                    .push(project_error(&slug, v.error.as_ref(), message));
                continue;
            }
            env_vars.push(ProjectVar {
                name: v.name.into(),
                masked: Masked::new(&v.value),
                created_at: None,
            });
        }
        let mut checkout_keys = Vec::new();
        for k in p.keys {
            if let Some(message) = placeholder(&k.key_type, k.error.as_ref()) {
                self.errors
                    .push(project_error(&slug, k.error.as_ref(), message));
                continue;
            }
            checkout_keys.push(CheckoutKey {
                key_type: k.key_type,
                fingerprint: k.fingerprint,
                preferred: matches!(k.preferred, Some(Value::Bool(true))),
                created_at: k.created_at,
            });
        }
        let ssh_keys = p
            .ssh_keys
            .into_iter()
            .map(|k| SshKey {
                fingerprint: k.fingerprint,
                hostname: k.hostname,
            })
            .collect();
        // On an API error the March 2023 tool writes the pair with empty strings: no pair.
        let legacy_aws_keys = p.legacy_aws_keys.and_then(|k| {
            match (k.access_key_id.as_deref(), k.secret_access_key.as_deref()) {
                (Some(id), Some(secret)) if !id.is_empty() && !secret.is_empty() => {
                    Some(LegacyAwsKeys {
                        access_key_id: Masked::new(id),
                        secret_access_key: Masked::new(secret),
                    })
                }
                _ => None,
            }
        });
        self.projects.push(Project {
            slug,
            env_vars,
            checkout_keys,
            ssh_keys,
            legacy_aws_keys,
        });
    }

    fn finish(self) -> Inventory {
        let mut orgs = self.orgs;
        orgs.dedup();
        // January 2023 names accounts without their VCS: the projects' slugs tell it.
        let org = match orgs.as_slice() {
            [one] if one.contains('/') => Some(one.clone()),
            [one] => {
                // The organization most of its projects live in (`gh/acme` over `bb/acme`).
                let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
                for p in &self.projects {
                    if let Some((org, _)) = p.slug.rsplit_once('/')
                        && org.ends_with(&format!("/{one}"))
                    {
                        *counts.entry(org).or_default() += 1;
                    }
                }
                let best = counts
                    .into_iter()
                    .max_by(|a, b| a.1.cmp(&b.1).then(b.0.cmp(a.0)));
                Some(
                    best.map(|(org, _)| org.to_string())
                        .unwrap_or_else(|| one.clone()),
                )
            }
            _ => None,
        };
        Inventory {
            source: InventorySource::EnvInspector,
            org,
            taken_at: DateTime::<Utc>::default(),
            projects: self.projects,
            contexts: self.contexts,
            errors: self.errors,
        }
    }
}

/// `Some(message)` when the entry is a January 2023 placeholder for a listing that failed.
fn placeholder(name: &str, error: Option<&Value>) -> Option<String> {
    let trimmed = name.trim();
    let is_placeholder = trimmed == VARIABLES_PLACEHOLDER
        || trimmed == KEYS_PLACEHOLDER
        || trimmed.starts_with("ERROR:");
    if !is_placeholder {
        return None;
    }
    let detail = error.map(message_of).filter(|m| !m.is_empty());
    Some(match detail {
        Some(d) => format!("{trimmed} {d}"),
        None => trimmed.to_string(),
    })
}

fn project_error(slug: &str, error: Option<&Value>, message: String) -> InventoryError {
    InventoryError {
        scope: ErrorScope::Project,
        name: slug.to_string(),
        status: status_of(error),
        message,
    }
}

/// `gh/ORG/REPO` from the slug field, else from the settings URL.
fn slug_of(p: &ProjectRecord) -> Option<String> {
    if let Some(slug) = p.slug.as_ref().filter(|s| !s.is_empty()) {
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

/// Maps CircleCI's VCS names to slug prefixes (`github` → `gh`).
fn vcs_prefix(vcs: &str) -> String {
    match vcs.to_ascii_lowercase().as_str() {
        "github" | "gh" => "gh".into(),
        "bitbucket" | "bb" => "bb".into(),
        "circleci" => "circleci".into(),
        _ => vcs.to_string(),
    }
}

/// An account-level error: a context that could not be read (`{contextName, url, error}`,
/// March 2023) or anything else the tool wrote there (strings or objects).
fn error_entry(account: &str, raw: &Value) -> InventoryError {
    let context = raw
        .get("contextName")
        .and_then(Value::as_str)
        .filter(|c| !c.is_empty());
    let project = raw
        .get("projectSlug")
        .and_then(Value::as_str)
        .filter(|c| !c.is_empty());
    let (scope, name) = match (context, project) {
        (Some(c), _) => (ErrorScope::Context, c),
        (None, Some(p)) => (ErrorScope::Project, p),
        (None, None) => (ErrorScope::Organization, account),
    };
    InventoryError {
        scope,
        name: bounded(name),
        status: status_of(Some(raw)),
        message: message_of(raw),
    }
}

/// HTTP status of an error entry: `status`/`code` at the top or inside `error`.
fn status_of(raw: Option<&Value>) -> Option<u16> {
    let raw = raw?;
    let here = raw
        .get("status")
        .or_else(|| raw.get("code"))
        .and_then(Value::as_u64)
        .and_then(|s| u16::try_from(s).ok());
    here.or_else(|| raw.get("error").and_then(|e| status_of(Some(e))))
}

/// The text an error entry carries, bounded and on one line.
fn message_of(raw: &Value) -> String {
    let text = match raw {
        Value::String(s) => s.clone(),
        Value::Object(map) => match map.get("message").or_else(|| map.get("error")) {
            Some(Value::String(s)) => s.clone(),
            Some(inner @ Value::Object(_)) => message_of(inner),
            _ => map
                .get("statusText")
                .and_then(Value::as_str)
                .unwrap_or("error")
                .to_string(),
        },
        Value::Null => String::new(),
        other => other.to_string(),
    };
    bounded(&text)
}

fn bounded(text: &str) -> String {
    text.chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .take(MAX_MESSAGE)
        .collect()
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
