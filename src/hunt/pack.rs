//! The rule set of a hunt: the project's own Sigma pack (YAML under `src/hunt/rules/`, embedded
//! in the binary) plus third-party rules loaded unchanged from directories. Rules that cannot be
//! used are kept as [`RuleError`]s with the reason, so one odd file never stops a hunt.

use super::sigma::correlation::{self, Correlation, Resolved, Spec};
use super::sigma::{self, Rule, RuleError};
use super::source::{FieldSets, Source};
use std::path::{Path, PathBuf};

/// The built-in pack: file name and text. Each rule names its catalogue hunt with a
/// `rekey.hunt.NAME` tag.
pub const BUILTIN: &[(&str, &str)] = &[
    (
        "aws_access_denied.yml",
        include_str!("rules/aws_access_denied.yml"),
    ),
    (
        "aws_access_key_for_other_user.yml",
        include_str!("rules/aws_access_key_for_other_user.yml"),
    ),
    (
        "aws_admin_policy_attached.yml",
        include_str!("rules/aws_admin_policy_attached.yml"),
    ),
    (
        "aws_bedrock_invocation.yml",
        include_str!("rules/aws_bedrock_invocation.yml"),
    ),
    (
        "aws_cloudtrail_changed.yml",
        include_str!("rules/aws_cloudtrail_changed.yml"),
    ),
    (
        "aws_cloudtrail_stopped.yml",
        include_str!("rules/aws_cloudtrail_stopped.yml"),
    ),
    (
        "aws_console_login_without_mfa.yml",
        include_str!("rules/aws_console_login_without_mfa.yml"),
    ),
    (
        "aws_deletion_burst.yml",
        include_str!("rules/aws_deletion_burst.yml"),
    ),
    (
        "aws_denials_across_services.yml",
        include_str!("rules/aws_denials_across_services.yml"),
    ),
    (
        "aws_discovery_burst.yml",
        include_str!("rules/aws_discovery_burst.yml"),
    ),
    (
        "aws_dns_query_logging_deleted.yml",
        include_str!("rules/aws_dns_query_logging_deleted.yml"),
    ),
    (
        "aws_ec2_password_data.yml",
        include_str!("rules/aws_ec2_password_data.yml"),
    ),
    (
        "aws_ec2_ssh_key_pushed.yml",
        include_str!("rules/aws_ec2_ssh_key_pushed.yml"),
    ),
    (
        "aws_ec2_unusual_launch.yml",
        include_str!("rules/aws_ec2_unusual_launch.yml"),
    ),
    (
        "aws_ec2_user_data_changed.yml",
        include_str!("rules/aws_ec2_user_data_changed.yml"),
    ),
    (
        "aws_ec2_user_data_read.yml",
        include_str!("rules/aws_ec2_user_data_read.yml"),
    ),
    (
        "aws_federation_token.yml",
        include_str!("rules/aws_federation_token.yml"),
    ),
    (
        "aws_flow_logs_deleted.yml",
        include_str!("rules/aws_flow_logs_deleted.yml"),
    ),
    (
        "aws_guardduty_tampered.yml",
        include_str!("rules/aws_guardduty_tampered.yml"),
    ),
    (
        "aws_iam_user_created.yml",
        include_str!("rules/aws_iam_user_created.yml"),
    ),
    (
        "aws_instance_credentials_elsewhere.yml",
        include_str!("rules/aws_instance_credentials_elsewhere.yml"),
    ),
    (
        "aws_lambda_code_changed.yml",
        include_str!("rules/aws_lambda_code_changed.yml"),
    ),
    (
        "aws_lambda_opened.yml",
        include_str!("rules/aws_lambda_opened.yml"),
    ),
    (
        "aws_leave_organization.yml",
        include_str!("rules/aws_leave_organization.yml"),
    ),
    (
        "aws_login_profile_changed.yml",
        include_str!("rules/aws_login_profile_changed.yml"),
    ),
    (
        "aws_programmatic_agent.yml",
        include_str!("rules/aws_programmatic_agent.yml"),
    ),
    ("aws_recon.yml", include_str!("rules/aws_recon.yml")),
    (
        "aws_recon_scripted.yml",
        include_str!("rules/aws_recon_scripted.yml"),
    ),
    (
        "aws_role_trust_changed.yml",
        include_str!("rules/aws_role_trust_changed.yml"),
    ),
    (
        "aws_role_trusts_outside_account.yml",
        include_str!("rules/aws_role_trusts_outside_account.yml"),
    ),
    (
        "aws_roles_anywhere_trust_anchor.yml",
        include_str!("rules/aws_roles_anywhere_trust_anchor.yml"),
    ),
    (
        "aws_s3_bucket_opened.yml",
        include_str!("rules/aws_s3_bucket_opened.yml"),
    ),
    (
        "aws_secrets_manager_read.yml",
        include_str!("rules/aws_secrets_manager_read.yml"),
    ),
    (
        "aws_security_group_admin_open.yml",
        include_str!("rules/aws_security_group_admin_open.yml"),
    ),
    (
        "aws_snapshot_image_shared.yml",
        include_str!("rules/aws_snapshot_image_shared.yml"),
    ),
    (
        "aws_ssm_command.yml",
        include_str!("rules/aws_ssm_command.yml"),
    ),
    (
        "aws_ssm_parameter_decrypted.yml",
        include_str!("rules/aws_ssm_parameter_decrypted.yml"),
    ),
    (
        "azure_activity_denied.yml",
        include_str!("rules/azure_activity_denied.yml"),
    ),
    (
        "azure_activity_sensitive_write.yml",
        include_str!("rules/azure_activity_sensitive_write.yml"),
    ),
    (
        "azure_app_credentials_added.yml",
        include_str!("rules/azure_app_credentials_added.yml"),
    ),
    (
        "azure_diagnostic_settings_deleted.yml",
        include_str!("rules/azure_diagnostic_settings_deleted.yml"),
    ),
    (
        "azure_key_vault_access.yml",
        include_str!("rules/azure_key_vault_access.yml"),
    ),
    (
        "azure_signin_failure.yml",
        include_str!("rules/azure_signin_failure.yml"),
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
    ("gcp_errors.yml", include_str!("rules/gcp_errors.yml")),
    (
        "gcp_iam_binding_set.yml",
        include_str!("rules/gcp_iam_binding_set.yml"),
    ),
    (
        "gcp_instance_created.yml",
        include_str!("rules/gcp_instance_created.yml"),
    ),
    (
        "gcp_key_created.yml",
        include_str!("rules/gcp_key_created.yml"),
    ),
    (
        "gcp_logging_sink_deleted.yml",
        include_str!("rules/gcp_logging_sink_deleted.yml"),
    ),
    (
        "gcp_reconnaissance.yml",
        include_str!("rules/gcp_reconnaissance.yml"),
    ),
    (
        "gcp_secret_accessed.yml",
        include_str!("rules/gcp_secret_accessed.yml"),
    ),
    (
        "github_git_access.yml",
        include_str!("rules/github_git_access.yml"),
    ),
    (
        "github_mass_clone.yml",
        include_str!("rules/github_mass_clone.yml"),
    ),
    (
        "github_persistence.yml",
        include_str!("rules/github_persistence.yml"),
    ),
    (
        "github_repo_exposed.yml",
        include_str!("rules/github_repo_exposed.yml"),
    ),
    (
        "github_secrets_webhooks_changed.yml",
        include_str!("rules/github_secrets_webhooks_changed.yml"),
    ),
];

/// The largest rule file read: a Sigma rule is a few kilobytes; a third-party file of
/// gigabytes is refused, not read into memory.
pub const MAX_RULE_BYTES: u64 = 1 << 20;

/// The rule files below `dir` (`.yml`/`.yaml`, sorted), or `dir` itself when it is a file.
fn rule_files(dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    if dir.is_file() {
        files.push(dir.to_path_buf());
        return Ok(files);
    }
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
    files.sort();
    Ok(files)
}

/// The YAML documents of one rule file (several when separated by `---`), or why it is not
/// YAML.
fn parse_yaml(text: &str) -> Result<Vec<serde_json::Value>, String> {
    serde_saphyr::from_str_multiple(text).map_err(|e| format!("not YAML: {e}"))
}

/// One file of the built-in pack: its origin in errors and its documents.
fn parsed_pack_file(
    (name, text): &(&str, &str),
) -> (String, Result<Vec<serde_json::Value>, String>) {
    (format!("builtin:{name}"), parse_yaml(text))
}

/// One rule file read from disk: its origin (the path) and its documents.
fn parsed_rule_file(path: &Path) -> (String, Result<Vec<serde_json::Value>, String>) {
    (
        path.display().to_string(),
        read_rule(path).and_then(|t| parse_yaml(&t)),
    )
}

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
    /// Correlations whose rules are all loaded.
    pub correlations: Vec<Correlation>,
    /// Correlations naming a rule not loaded (yet): a later file may bring it.
    pending: Vec<Spec>,
}

impl RuleSet {
    /// Only the built-in pack.
    pub fn builtin() -> RuleSet {
        let mut set = RuleSet::default();
        for file in BUILTIN {
            let (origin, docs) = parsed_pack_file(file);
            set.add_parsed(&origin, docs);
        }
        set
    }

    /// Adds the rules and correlations of one YAML file (one document or several separated
    /// by `---`); what cannot be used becomes an error entry.
    pub fn add_text(&mut self, origin: &str, text: &str) {
        self.add_parsed(origin, parse_yaml(text));
    }

    /// Adds the documents of one file as [`parse_yaml`] read them (or its error).
    fn add_parsed(&mut self, origin: &str, parsed: Result<Vec<serde_json::Value>, String>) {
        let docs = match parsed {
            Ok(d) => d,
            Err(reason) => {
                self.errors.push(RuleError {
                    origin: origin.to_string(),
                    reason,
                });
                return;
            }
        };
        for doc in docs.iter().filter(|d| !d.is_null()) {
            if correlation::is_correlation(doc) {
                match correlation::parse(origin, doc) {
                    Ok(spec) => self.pending.push(spec),
                    Err(e) => self.errors.push(e),
                }
                continue;
            }
            match sigma::load_doc(origin, doc, &mut self.fields) {
                Ok(rule) => self.rules.push(rule),
                Err(e) => self.errors.push(e),
            }
        }
        self.resolve_pending();
    }

    /// Resolves the pending correlations whose rules are now all loaded.
    fn resolve_pending(&mut self) {
        let pending = std::mem::take(&mut self.pending);
        let names: Vec<String> = pending
            .iter()
            .flat_map(|s| {
                [
                    Some(s.id.to_string()),
                    s.name.as_deref().map(str::to_string),
                ]
            })
            .flatten()
            .collect();
        let names: Vec<&str> = names.iter().map(String::as_str).collect();
        for spec in pending {
            match correlation::resolve(&spec, &self.rules, &names, &mut self.fields) {
                Ok(Resolved::Ready(c)) => {
                    let ci = self.correlations.len();
                    let touched = c.rules.clone();
                    for (slot, &ri) in c.rules.iter().enumerate() {
                        if let Some(r) = self.rules.get_mut(ri) {
                            r.correlations.push((ci, slot));
                        }
                    }
                    self.correlations.push(*c);
                    // A referenced rule reports on its own only when one of its correlations
                    // says `generate: true`.
                    for ri in touched {
                        if let Some(r) = self.rules.get_mut(ri) {
                            let generated = r.correlations.iter().any(|(i, _)| {
                                self.correlations.get(*i).is_some_and(|c| c.spec.generate)
                            });
                            r.correlation_only = !generated;
                        }
                    }
                }
                Ok(Resolved::Missing(_)) => self.pending.push(spec),
                Err(e) => self.errors.push(e),
            }
        }
    }

    /// Every rule that cannot be used: load errors and correlations naming rules never loaded.
    pub fn all_errors(&self) -> Vec<RuleError> {
        let mut out = self.errors.clone();
        for spec in &self.pending {
            let missing: Vec<&str> = spec
                .rules
                .iter()
                .map(String::as_str)
                .filter(|r| {
                    !self
                        .rules
                        .iter()
                        .any(|x| x.name.as_deref() == Some(*r) || &*x.id == *r)
                })
                .collect();
            out.push(RuleError {
                origin: spec.origin.clone(),
                reason: format!(
                    "correlation `{}` names rule(s) not loaded: {}",
                    spec.title,
                    missing.join(", ")
                ),
            });
        }
        out
    }

    /// Adds every `.yml`/`.yaml` file below `dir` (or `dir` itself when it is a file).
    pub fn add_path(&mut self, dir: &Path) -> std::io::Result<usize> {
        let files = rule_files(dir)?;
        for f in &files {
            let (origin, docs) = parsed_rule_file(f);
            self.add_parsed(&origin, docs);
        }
        Ok(files.len())
    }

    /// The built-in pack (when `builtin`) and then every rule file below each of `dirs`: the
    /// rules, errors and correlations of [`Self::builtin`] followed by [`Self::add_path`] for
    /// each directory, in that order. The files are read and parsed from YAML on a second
    /// thread, each handed over as it is parsed and compiled here meanwhile (compiling
    /// registers the fields every rule reads: one thread): loading the rules was most of a
    /// hunt's start, on one core. A directory that cannot be listed is the error, with its
    /// path.
    pub fn load(builtin: bool, dirs: &[PathBuf]) -> Result<RuleSet, (PathBuf, std::io::Error)> {
        let mut files = Vec::new();
        for dir in dirs {
            files.extend(rule_files(dir).map_err(|e| (dir.clone(), e))?);
        }
        let pack = if builtin { BUILTIN } else { &[] };
        let count = pack.len() + files.len();
        // The `i`th file in the order they are added: its origin and its documents.
        let parse = |i: usize| match pack.get(i) {
            Some(file) => parsed_pack_file(file),
            None => parsed_rule_file(&files[i - pack.len()]),
        };
        let mut set = RuleSet::default();
        std::thread::scope(|scope| {
            let (tx, rx) = std::sync::mpsc::channel();
            // (YAML nests at most 64 levels deep, see `serde_saphyr::Budget`: a helper's
            // stack holds any file.)
            let parsing = std::thread::Builder::new().spawn_scoped(scope, move || {
                for i in 0..count {
                    if tx.send(parse(i)).is_err() {
                        return;
                    }
                }
            });
            let mut added = 0;
            if parsing.is_ok() {
                for (origin, docs) in rx {
                    set.add_parsed(&origin, docs);
                    added += 1;
                }
            }
            // A helper that could not start (or stopped early) leaves the rest to this thread.
            for i in added..count {
                let (origin, docs) = parse(i);
                set.add_parsed(&origin, docs);
            }
        });
        super::phases::mark("rules: loaded");
        Ok(set)
    }

    pub fn for_source(&self, source: Source) -> impl Iterator<Item = &Rule> {
        self.rules.iter().filter(move |r| r.source == source)
    }

    pub fn get(&self, id: &str) -> Option<&Rule> {
        self.rules.iter().find(|r| &*r.id == id)
    }
}
