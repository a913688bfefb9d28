//! The rule set of a hunt: the project's own Sigma pack (YAML under `src/hunt/rules/`, embedded
//! in the binary) plus third-party rules loaded unchanged from directories. Rules that cannot be
//! used are kept as [`RuleError`]s with the reason, so one odd file never stops a hunt.

use super::sigma::{self, Rule, RuleError};
use super::source::{FieldSets, Source};
use std::path::Path;

/// The built-in pack: file name and text. Each rule names its catalogue hunt with a
/// `rekey.hunt.NAME` tag.
pub const BUILTIN: &[(&str, &str)] = &[
    ("aws_recon.yml", include_str!("rules/aws_recon.yml")),
    (
        "aws_recon_scripted.yml",
        include_str!("rules/aws_recon_scripted.yml"),
    ),
    (
        "aws_access_denied.yml",
        include_str!("rules/aws_access_denied.yml"),
    ),
    (
        "aws_programmatic_agent.yml",
        include_str!("rules/aws_programmatic_agent.yml"),
    ),
    (
        "circleci_login.yml",
        include_str!("rules/circleci_login.yml"),
    ),
    (
        "circleci_persistence.yml",
        include_str!("rules/circleci_persistence.yml"),
    ),
    (
        "circleci_variable_change.yml",
        include_str!("rules/circleci_variable_change.yml"),
    ),
    (
        "github_git_access.yml",
        include_str!("rules/github_git_access.yml"),
    ),
    ("gcp_errors.yml", include_str!("rules/gcp_errors.yml")),
    (
        "gcp_key_created.yml",
        include_str!("rules/gcp_key_created.yml"),
    ),
    (
        "azure_signin_failure.yml",
        include_str!("rules/azure_signin_failure.yml"),
    ),
    (
        "azure_activity_sensitive_write.yml",
        include_str!("rules/azure_activity_sensitive_write.yml"),
    ),
    (
        "azure_activity_denied.yml",
        include_str!("rules/azure_activity_denied.yml"),
    ),
];

/// The largest rule file read: a Sigma rule is a few kilobytes; a third-party file of
/// gigabytes is refused, not read into memory.
pub const MAX_RULE_BYTES: u64 = 1 << 20;

/// The text of one rule file, bounded by [`MAX_RULE_BYTES`].
fn read_rule(path: &Path) -> Result<String, String> {
    use std::io::Read;
    let file = std::fs::File::open(path).map_err(|e| format!("unreadable: {e}"))?;
    let mut text = String::new();
    file.take(MAX_RULE_BYTES + 1)
        .read_to_string(&mut text)
        .map_err(|e| format!("unreadable: {e}"))?;
    if text.len() as u64 > MAX_RULE_BYTES {
        return Err(format!(
            "larger than {} KiB, not a Sigma rule; skipped",
            MAX_RULE_BYTES >> 10
        ));
    }
    Ok(text)
}

/// Compiled rules, grouped by source, and the field sets they reference.
#[derive(Debug, Default)]
pub struct RuleSet {
    pub rules: Vec<Rule>,
    pub errors: Vec<RuleError>,
    pub fields: FieldSets,
}

impl RuleSet {
    /// Only the built-in pack.
    pub fn builtin() -> RuleSet {
        let mut set = RuleSet::default();
        for (name, text) in BUILTIN {
            set.add_text(&format!("builtin:{name}"), text);
        }
        set
    }

    /// Adds one rule from YAML text; a rule that cannot be used becomes an error entry.
    pub fn add_text(&mut self, origin: &str, text: &str) {
        match sigma::load(origin, text, &mut self.fields) {
            Ok(rule) => self.rules.push(rule),
            Err(e) => self.errors.push(e),
        }
    }

    /// Adds every `.yml`/`.yaml` file below `dir` (or `dir` itself when it is a file).
    pub fn add_path(&mut self, dir: &Path) -> std::io::Result<usize> {
        let mut files = Vec::new();
        if dir.is_file() {
            files.push(dir.to_path_buf());
        } else {
            let mut stack = vec![dir.to_path_buf()];
            while let Some(d) = stack.pop() {
                for e in std::fs::read_dir(&d)? {
                    let p = e?.path();
                    if p.is_dir() {
                        stack.push(p);
                    } else if p.extension().is_some_and(|x| x == "yml" || x == "yaml") {
                        files.push(p);
                    }
                }
            }
        }
        files.sort();
        for f in &files {
            let origin = f.display().to_string();
            match read_rule(f) {
                Ok(text) => self.add_text(&origin, &text),
                Err(reason) => self.errors.push(RuleError { origin, reason }),
            }
        }
        Ok(files.len())
    }

    pub fn for_source(&self, source: Source) -> impl Iterator<Item = &Rule> {
        self.rules.iter().filter(move |r| r.source == source)
    }

    pub fn get(&self, id: &str) -> Option<&Rule> {
        self.rules.iter().find(|r| &*r.id == id)
    }
}
