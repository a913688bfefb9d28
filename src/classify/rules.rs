//! Classification rules: their YAML format, loading with located errors, and compilation.
//!
//! This module owns the rule *data* — what a rule file may say and what makes one invalid — and
//! the compiled [`RuleSet`] that [`super::classify`] runs. It knows nothing about inventories.
//!
//! A rule file has three lists, tried in this order:
//!
//! ```yaml
//! credentials:            # a credential of one or more sibling variables
//!   - name: aws-access-key
//!     provider: aws-iam
//!     confidence: high
//!     description: AWS access key pair
//!     target_id: aws      # ids: aws-<captured parts>, or aws-<place> when nothing distinguishes
//!     fields:             # credential field -> the variable names that hold it
//!       access_key_id:
//!         var: '^(?P<prefix>(?:[A-Z0-9]+_)*)AWS_ACCESS_KEY_ID(?P<suffix>(?:_[A-Z0-9]+)*)$'
//!         canonical: '{prefix}AWS_ACCESS_KEY_ID{suffix}'
//!       secret_access_key:
//!         var: '^(?P<prefix>(?:[A-Z0-9]+_)*)AWS_SECRET_ACCESS_KEY(?P<suffix>(?:_[A-Z0-9]+)*)$'
//!         canonical: '{prefix}AWS_SECRET_ACCESS_KEY{suffix}'
//!     principal: {user: REVIEW-REQUIRED}
//! ignore:                 # configuration, not secrets: listed in the plan, never rotated
//!   - name: aws-region
//!     var: '^(?:[A-Z0-9]+_)*AWS_(?:DEFAULT_)?REGION$'
//!     reason: AWS region (configuration, not a secret)
//! hints:                  # only to explain an unclassified variable to the reviewer
//!   - var: '(?:^|_)TOKEN(?:_|$)'
//!     label: '…_TOKEN'
//! ```
//!
//! Named captures are the parts of a name that must agree between sibling variables of one
//! credential (`PROD_AWS_ACCESS_KEY_ID` goes with `PROD_AWS_SECRET_ACCESS_KEY`, not with
//! `AWS_SECRET_ACCESS_KEY`), so every field of a rule must capture the same names. A field may be
//! optional (`required: false`), carry a default `encoding`, and a `last_four` regex over the
//! masked value: such a field only matches project variables whose mask fits (context variables
//! have no value, so it never matches them).
//!
//! Precedence: within a rule set, credential rules in file order, then ignore rules; a user rule
//! set ([`RuleSet::extend`]) is tried entirely before the built-in one, and a user rule with the
//! name of a built-in rule replaces it.

use crate::plan::{Confidence, Encoding, ExecCommands, Located, Pos, Principal, ProviderKind};
use regex::{Regex, RegexSet, RegexSetBuilder};
use serde::Deserialize;
use serde::de::{Deserializer, MapAccess, Visitor};
use std::collections::HashSet;
use std::path::{Path, PathBuf};

/// The built-in rules, compiled into the binary.
const BUILTIN_YAML: &str = include_str!("rules.yaml");
/// How errors name the built-in rules.
pub const BUILTIN_ORIGIN: &str = "built-in rules (src/classify/rules.yaml)";
/// Fields of one credential rule; the matcher keeps a bit per field.
pub(crate) const MAX_FIELDS: usize = 32;
/// The only rule-file format version this build reads.
const FORMAT_VERSION: u32 = 1;

/// A rule file that could not be read or is invalid.
#[derive(Debug, thiserror::Error)]
pub enum ClassifyError {
    #[error("cannot read rule file {}: {source}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// Invalid YAML, an unknown field, a bad regex… `line`/`column` are 1-based, 0 when unknown.
    #[error("{}", render_invalid(origin, *line, *column, rule.as_deref(), message))]
    Invalid {
        origin: String,
        line: u32,
        column: u32,
        /// The rule the error is about, when it is about one.
        rule: Option<String>,
        message: String,
    },
}

fn render_invalid(
    origin: &str,
    line: u32,
    column: u32,
    rule: Option<&str>,
    message: &str,
) -> String {
    let place = if line > 0 {
        format!("{origin}:{line}:{column}")
    } else {
        origin.to_string()
    };
    match rule {
        Some(rule) => format!("{place}: rule `{rule}`: {message}"),
        None => format!("{place}: {message}"),
    }
}

impl ClassifyError {
    /// `(line, column)` of the offending text, when known.
    pub fn location(&self) -> Option<(u32, u32)> {
        match self {
            ClassifyError::Invalid { line, column, .. } if *line > 0 => Some((*line, *column)),
            _ => None,
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The file format (what serde reads). Strings that errors may point at are `Located`.

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RulesFile {
    /// Format version; only 1 exists. Present so that a future format can refuse old readers.
    #[serde(default)]
    version: Option<Located<u32>>,
    #[serde(default)]
    credentials: Vec<CredentialSpec>,
    #[serde(default)]
    ignore: Vec<IgnoreSpec>,
    #[serde(default)]
    hints: Vec<HintSpec>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CredentialSpec {
    name: Located<String>,
    provider: Located<ProviderKind>,
    #[serde(default)]
    confidence: Confidence,
    /// What the credential is, for the plan comment: "AWS access key pair".
    description: String,
    /// Appended to the plan comment: why a choice was made (encoding, confidence…).
    #[serde(default)]
    note: Option<String>,
    /// First words of target ids (default: the rule name).
    #[serde(default)]
    target_id: Option<Located<String>>,
    /// Kept in file order: the first field names the credential in comments and reasons.
    #[serde(deserialize_with = "ordered_fields")]
    fields: Vec<(Located<String>, FieldSpec)>,
    #[serde(default)]
    principal: Option<Principal>,
    /// Commands of an `exec` target (default: REVIEW-REQUIRED placeholders).
    #[serde(default)]
    exec: Option<ExecCommands>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FieldSpec {
    var: Located<String>,
    #[serde(default = "yes")]
    required: bool,
    #[serde(default)]
    encoding: Encoding,
    #[serde(default)]
    last_four: Option<Located<String>>,
    /// The sibling's expected name, `{capture}` placeholders filled from the variable found.
    #[serde(default)]
    canonical: Option<Located<String>>,
}

fn yes() -> bool {
    true
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct IgnoreSpec {
    name: Located<String>,
    var: Located<String>,
    reason: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct HintSpec {
    var: Located<String>,
    label: String,
}

/// A YAML map read as an ordered list (serde's maps would sort or hash the keys).
fn ordered_fields<'de, D: Deserializer<'de>>(
    d: D,
) -> Result<Vec<(Located<String>, FieldSpec)>, D::Error> {
    struct Fields;
    impl<'de> Visitor<'de> for Fields {
        type Value = Vec<(Located<String>, FieldSpec)>;
        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("a map from credential field name to {var: regex, …}")
        }
        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
            let mut out: Vec<(Located<String>, FieldSpec)> = Vec::new();
            while let Some((key, spec)) = map.next_entry::<Located<String>, FieldSpec>()? {
                if out.iter().any(|(k, _)| k.value == key.value) {
                    return Err(serde::de::Error::custom(format!(
                        "field `{}` is listed twice",
                        key.value
                    )));
                }
                out.push((key, spec));
            }
            Ok(out)
        }
    }
    d.deserialize_map(Fields)
}

// ---------------------------------------------------------------------------------------------
// Compiled rules.

/// One compiled rule, credential or ignore; its index in [`RuleSet::rules`] is its precedence.
#[derive(Debug, Clone)]
pub(crate) enum Rule {
    // Boxed: a credential rule is eight times the size of an ignore rule.
    Credential(Box<CredentialRule>),
    Ignore(IgnoreRule),
}

impl Rule {
    pub(crate) fn name(&self) -> &str {
        match self {
            Rule::Credential(r) => &r.name,
            Rule::Ignore(r) => &r.name,
        }
    }
}

#[derive(Debug, Clone)]
pub(crate) struct CredentialRule {
    pub name: String,
    pub provider: ProviderKind,
    pub confidence: Confidence,
    pub description: String,
    pub note: Option<String>,
    /// Kebab-case words that start every target id of this rule.
    pub target_id: String,
    pub fields: Vec<FieldRule>,
    /// The named captures every field shares, in the order of the first field's regex.
    pub captures: Vec<String>,
    /// Principal hints, positions dropped: they are copied into plans, not the rule file.
    pub principal: Principal,
    pub exec: Option<ExecCommands>,
}

#[derive(Debug, Clone)]
pub(crate) struct FieldRule {
    pub field: String,
    pub var: Regex,
    pub required: bool,
    pub encoding: Encoding,
    pub last_four: Option<Regex>,
    pub canonical: Option<String>,
}

#[derive(Debug, Clone)]
pub(crate) struct IgnoreRule {
    pub name: String,
    pub var: Regex,
    /// Shared by every finding it explains (a clone counts a reference).
    pub reason: crate::plan::Text,
}

#[derive(Debug, Clone)]
pub(crate) struct Hint {
    pub var: Regex,
    pub label: String,
}

/// A compiled, ordered set of classification rules. Build with [`RuleSet::builtin`],
/// [`RuleSet::load_file`] or [`RuleSet::from_yaml`]; combine with [`RuleSet::extend`].
#[derive(Debug, Clone)]
pub struct RuleSet {
    pub(crate) rules: Vec<Rule>,
    pub(crate) hints: Vec<Hint>,
    /// Every variable-name regex of every rule in one automaton, so a name is matched against
    /// all rules in one pass. `None` only if the combined automaton exceeded its size limit;
    /// matching then tries each regex (slower, same result).
    index: Option<RegexSet>,
    /// Pattern index in `index` -> (rule index, field index; 0 for ignore rules).
    index_map: Vec<(u32, u16)>,
}

impl RuleSet {
    /// The rules compiled into the binary.
    pub fn builtin() -> Result<RuleSet, ClassifyError> {
        RuleSet::from_yaml(BUILTIN_YAML, BUILTIN_ORIGIN)
    }

    /// Reads a user rule file (same format as the built-in rules).
    pub fn load_file(path: &Path) -> Result<RuleSet, ClassifyError> {
        let text = std::fs::read_to_string(path).map_err(|source| ClassifyError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        RuleSet::from_yaml(&text, &path.display().to_string())
    }

    /// Parses and compiles rules; `origin` names the text in errors (a file name).
    pub fn from_yaml(text: &str, origin: &str) -> Result<RuleSet, ClassifyError> {
        let file: RulesFile = serde_saphyr::from_str(text).map_err(|e| syntax_error(origin, &e))?;
        compile(file, origin)
    }

    /// This rule set with `user`'s rules tried first. A user rule named like one of `self`'s
    /// replaces it, so a user can change a built-in rule without copying the whole set.
    pub fn extend(self, user: RuleSet) -> RuleSet {
        let replaced: HashSet<&str> = user.rules.iter().map(Rule::name).collect();
        let rules: Vec<Rule> = user
            .rules
            .iter()
            .cloned()
            .chain(
                self.rules
                    .into_iter()
                    .filter(|r| !replaced.contains(r.name())),
            )
            .collect();
        let hints = user.hints.into_iter().chain(self.hints).collect();
        RuleSet::indexed(rules, hints)
    }

    /// Names of the rules, in precedence order.
    pub fn rule_names(&self) -> impl Iterator<Item = &str> {
        self.rules.iter().map(Rule::name)
    }

    fn indexed(rules: Vec<Rule>, hints: Vec<Hint>) -> RuleSet {
        let mut patterns: Vec<&str> = Vec::new();
        let mut index_map = Vec::new();
        for (i, rule) in rules.iter().enumerate() {
            match rule {
                Rule::Credential(c) => {
                    for (f, field) in c.fields.iter().enumerate() {
                        patterns.push(field.var.as_str());
                        index_map.push((i as u32, f as u16));
                    }
                }
                Rule::Ignore(r) => {
                    patterns.push(r.var.as_str());
                    index_map.push((i as u32, 0));
                }
            }
        }
        // Every pattern compiled on its own already; only the combined size can fail here.
        let index = match RegexSetBuilder::new(&patterns)
            .size_limit(256 << 20)
            .build()
        {
            Ok(set) => Some(set),
            Err(e) => {
                tracing::warn!("rule index not built, matching rule by rule: {e}");
                None
            }
        };
        RuleSet {
            rules,
            hints,
            index,
            index_map,
        }
    }

    /// Calls `hit(rule, field)` for every rule field (or ignore rule) whose name regex matches
    /// `name`, in precedence order.
    pub(crate) fn for_each_match(&self, name: &str, mut hit: impl FnMut(usize, usize)) {
        match &self.index {
            Some(set) => {
                // `matches` yields pattern indexes in increasing order, which is rule order.
                for p in set.matches(name).iter() {
                    if let Some(&(r, f)) = self.index_map.get(p) {
                        hit(r as usize, f as usize);
                    }
                }
            }
            None => {
                for (r, rule) in self.rules.iter().enumerate() {
                    match rule {
                        Rule::Credential(c) => {
                            for (f, field) in c.fields.iter().enumerate() {
                                if field.var.is_match(name) {
                                    hit(r, f);
                                }
                            }
                        }
                        Rule::Ignore(i) => {
                            if i.var.is_match(name) {
                                hit(r, 0);
                            }
                        }
                    }
                }
            }
        }
    }
}

fn syntax_error(origin: &str, e: &serde_saphyr::Error) -> ClassifyError {
    use serde_saphyr::MessageFormatter;
    let (line, column) = e
        .location()
        .map(|l| (l.line() as u32, l.column() as u32))
        .unwrap_or((0, 0));
    // The message without the "at line…" suffix: the location is rendered once, up front.
    let inner = e.without_snippet();
    // Control characters from the input must not reach a terminal verbatim.
    let message: String = serde_saphyr::DefaultMessageFormatter
        .format_message(inner)
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    ClassifyError::Invalid {
        origin: origin.to_string(),
        line,
        column,
        rule: None,
        message,
    }
}

/// Validation and compilation of one parsed file: every error names the rule and a position.
fn compile(file: RulesFile, origin: &str) -> Result<RuleSet, ClassifyError> {
    let err = |pos: Pos, rule: Option<&str>, message: String| ClassifyError::Invalid {
        origin: origin.to_string(),
        line: pos.line,
        column: pos.column,
        rule: rule.map(str::to_string),
        message,
    };
    if let Some(v) = &file.version
        && v.value != FORMAT_VERSION
    {
        return Err(err(
            v.pos,
            None,
            format!(
                "unsupported rule format version {} (this build reads {FORMAT_VERSION})",
                v.value
            ),
        ));
    }

    let mut names: HashSet<String> = HashSet::new();
    let mut check_name = |name: &Located<String>| -> Result<(), ClassifyError> {
        if !is_kebab(name) {
            return Err(err(
                name.pos,
                None,
                format!(
                    "rule name `{}` must be kebab-case (a-z, 0-9, -)",
                    name.value
                ),
            ));
        }
        if !names.insert(name.value.clone()) {
            return Err(err(
                name.pos,
                Some(name),
                "another rule of this file has the same name".into(),
            ));
        }
        Ok(())
    };

    let mut rules = Vec::with_capacity(file.credentials.len() + file.ignore.len());
    for spec in file.credentials {
        check_name(&spec.name)?;
        rules.push(Rule::Credential(Box::new(compile_credential(spec, &err)?)));
    }
    for spec in file.ignore {
        check_name(&spec.name)?;
        let var = regex(&spec.var)
            .map_err(|m| err(spec.var.pos, Some(&spec.name), format!("var: {m}")))?;
        rules.push(Rule::Ignore(IgnoreRule {
            name: spec.name.value,
            var,
            reason: spec.reason.into(),
        }));
    }
    let mut hints = Vec::with_capacity(file.hints.len());
    for spec in file.hints {
        let var =
            regex(&spec.var).map_err(|m| err(spec.var.pos, None, format!("hint var: {m}")))?;
        hints.push(Hint {
            var,
            label: spec.label,
        });
    }
    Ok(RuleSet::indexed(rules, hints))
}

fn compile_credential(
    spec: CredentialSpec,
    err: &impl Fn(Pos, Option<&str>, String) -> ClassifyError,
) -> Result<CredentialRule, ClassifyError> {
    let name = spec.name.value.as_str();
    let at_rule = |message: String| err(spec.name.pos, Some(name), message);

    if spec.fields.is_empty() {
        return Err(at_rule("a credential rule needs at least one field".into()));
    }
    if spec.fields.len() > MAX_FIELDS {
        return Err(at_rule(format!(
            "a credential rule has at most {MAX_FIELDS} fields"
        )));
    }
    if !spec.fields.iter().any(|(_, f)| f.required) {
        return Err(at_rule("at least one field must be required".into()));
    }
    // The provider decides which credential fields exist and which a binding must name.
    let provider = spec.provider.value;
    match provider.binding_fields() {
        Some(([], _)) => {
            return Err(err(
                spec.provider.pos,
                Some(name),
                format!("provider {provider} is not held in variables; no rule can produce it"),
            ));
        }
        Some((allowed, needed)) => {
            for (field, _) in &spec.fields {
                if !allowed.contains(&field.as_str()) {
                    return Err(err(
                        field.pos,
                        Some(name),
                        format!(
                            "provider {provider} has no field `{}` (fields: {})",
                            field.value,
                            allowed.join(", ")
                        ),
                    ));
                }
            }
            for needed in needed {
                if !spec
                    .fields
                    .iter()
                    .any(|(f, s)| f.value == *needed && s.required)
                {
                    return Err(at_rule(format!(
                        "provider {provider} needs a required field `{needed}`"
                    )));
                }
            }
        }
        None => {}
    }
    if spec.exec.is_some() && provider != ProviderKind::Exec {
        return Err(at_rule(format!(
            "`exec` commands only apply to provider exec, not {provider}"
        )));
    }

    let mut fields = Vec::with_capacity(spec.fields.len());
    let mut captures: Option<(String, Vec<String>)> = None;
    for (field, f) in spec.fields {
        let var = regex(&f.var).map_err(|m| {
            err(
                f.var.pos,
                Some(name),
                format!("field `{}`: var: {m}", field.value),
            )
        })?;
        let caps: Vec<String> = var.capture_names().flatten().map(str::to_string).collect();
        match &captures {
            None => captures = Some((field.value.clone(), caps)),
            Some((first, expected)) => {
                let (mut a, mut b) = (expected.clone(), caps.clone());
                a.sort();
                b.sort();
                if a != b {
                    return Err(err(
                        f.var.pos,
                        Some(name),
                        format!(
                            "field `{}` captures {{{}}} but field `{first}` captures {{{}}}: sibling fields must capture the same parts",
                            field.value,
                            b.join(", "),
                            a.join(", ")
                        ),
                    ));
                }
            }
        }
        let last_four = match &f.last_four {
            Some(l) => Some(regex(l).map_err(|m| {
                err(
                    l.pos,
                    Some(name),
                    format!("field `{}`: last_four: {m}", field.value),
                )
            })?),
            None => None,
        };
        let canonical = match f.canonical {
            Some(c) => {
                let known: Vec<&str> = var.capture_names().flatten().collect();
                if let Some(unknown) = placeholders(&c).find(|p| !known.contains(p)) {
                    return Err(err(
                        c.pos,
                        Some(name),
                        format!(
                            "field `{}`: canonical names `{{{unknown}}}`, which the var regex does not capture",
                            field.value
                        ),
                    ));
                }
                Some(c.value)
            }
            None => None,
        };
        fields.push(FieldRule {
            field: field.value,
            var,
            required: f.required,
            encoding: f.encoding,
            last_four,
            canonical,
        });
    }

    let target_id = match &spec.target_id {
        Some(t) => {
            let id = kebab(t);
            if id.is_empty() {
                return Err(err(
                    t.pos,
                    Some(name),
                    "target_id has no letters or digits".into(),
                ));
            }
            id
        }
        None => name.to_string(),
    };
    let exec = spec.exec.map(unlocate_exec);
    Ok(CredentialRule {
        name: spec.name.value.clone(),
        provider,
        confidence: spec.confidence,
        description: spec.description,
        note: spec.note,
        target_id,
        captures: captures.map(|(_, c)| c).unwrap_or_default(),
        fields,
        principal: spec.principal.map(unlocate_principal).unwrap_or_default(),
        exec,
    })
}

/// Compiles a name regex. The regex crate's message already shows the pattern and a caret.
fn regex(pattern: &Located<String>) -> Result<Regex, String> {
    Regex::new(pattern).map_err(|e| format!("invalid regex: {e}"))
}

/// `{name}` placeholders of a template.
pub(crate) fn placeholders(template: &str) -> impl Iterator<Item = &str> {
    template
        .split('{')
        .skip(1)
        .filter_map(|s| s.split_once('}').map(|(p, _)| p))
}

/// Fills `{name}` placeholders from `values` (missing names render empty).
pub(crate) fn fill(template: &str, names: &[String], values: &[&str]) -> String {
    let mut out = String::with_capacity(template.len() + 16);
    let mut rest = template;
    while let Some(start) = rest.find('{') {
        out.push_str(&rest[..start]);
        let after = &rest[start + 1..];
        match after.find('}') {
            Some(end) => {
                let key = &after[..end];
                if let Some(i) = names.iter().position(|n| n == key) {
                    out.push_str(values.get(i).copied().unwrap_or(""));
                }
                rest = &after[end + 1..];
            }
            None => {
                out.push_str(&rest[start..]);
                rest = "";
            }
        }
    }
    out.push_str(rest);
    out
}

/// Lower-case ASCII letters and digits, every other run of characters one `-`, trimmed.
pub(crate) fn kebab(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if c.is_ascii_alphanumeric() {
            out.push(c.to_ascii_lowercase());
        } else if !out.is_empty() && !out.ends_with('-') {
            out.push('-');
        }
    }
    while out.ends_with('-') {
        out.pop();
    }
    out
}

fn is_kebab(s: &str) -> bool {
    !s.is_empty() && kebab(s) == s
}

/// Rule files are not plans: a position in one would mislead plan validation, so copies of
/// rule values carry none.
fn unlocate<T>(l: Located<T>) -> Located<T> {
    Located::new(l.value)
}

fn unlocate_principal(p: Principal) -> Principal {
    p.unlocated()
}

fn unlocate_exec(e: ExecCommands) -> ExecCommands {
    ExecCommands {
        mint: unlocate(e.mint),
        verify: unlocate(e.verify),
        revoke: unlocate(e.revoke),
        inspect: e.inspect.map(unlocate),
        deactivate: e.deactivate.map(unlocate),
        timeout: e.timeout.map(unlocate),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classify_builtin_rules_compile() {
        let rules = RuleSet::builtin().unwrap();
        assert!(rules.rule_names().any(|n| n == "aws-access-key"));
        assert!(rules.index.is_some(), "the combined automaton must fit");
    }

    #[test]
    fn classify_kebab_and_fill() {
        assert_eq!(kebab("PROD_AWS__KEY_"), "prod-aws-key");
        assert_eq!(kebab("gh/acme/Api.v2"), "gh-acme-api-v2");
        let names = vec!["prefix".to_string(), "suffix".to_string()];
        assert_eq!(
            fill("{prefix}AWS_SECRET{suffix}", &names, &["PROD_", ""]),
            "PROD_AWS_SECRET"
        );
        assert_eq!(placeholders("{a}x{b}").collect::<Vec<_>>(), ["a", "b"]);
    }

    fn invalid(yaml: &str) -> (u32, u32, Option<String>, String) {
        match RuleSet::from_yaml(yaml, "user.yaml") {
            Err(ClassifyError::Invalid {
                line,
                column,
                rule,
                message,
                ..
            }) => (line, column, rule, message),
            other => panic!("expected an invalid-rules error, got {other:?}"),
        }
    }

    #[test]
    fn classify_rule_errors_are_located() {
        let (line, _, rule, msg) = invalid(
            "credentials:\n  - name: a\n    provider: exec\n    description: x\n    fields:\n      token: {var: '^A$'}\n      other: {var: '^(?P<p>B)$'}\n",
        );
        assert_eq!((line, rule.as_deref()), (7, Some("a")));
        assert!(msg.contains("same parts"), "{msg}");

        let (line, _, _, msg) = invalid(
            "credentials:\n  - name: a\n    provider: aws-iam\n    description: x\n    fields:\n      token: {var: '^A$'}\n",
        );
        assert_eq!(line, 6, "{msg}");
        assert!(msg.contains("no field `token`"), "{msg}");

        let (line, _, _, msg) = invalid(
            "ignore:\n  - name: a\n    var: x\n    reason: r\n  - name: a\n    var: y\n    reason: r\n",
        );
        assert_eq!(line, 5);
        assert!(msg.contains("same name"), "{msg}");

        let (line, _, _, msg) = invalid(
            "credentials:\n  - name: a\n    provider: exec\n    description: x\n    fields:\n      t: {var: '^(?P<p>A)$', canonical: '{q}'}\n",
        );
        assert_eq!(line, 6);
        assert!(msg.contains("{q}"), "{msg}");

        let (line, _, _, msg) = invalid("version: 2\n");
        assert_eq!(line, 1);
        assert!(msg.contains("version 2"), "{msg}");
    }

    /// Rule-by-rule matching (used if the combined automaton were too big) finds the same hits.
    #[test]
    fn classify_fallback_matching_agrees_with_the_index() {
        let indexed = RuleSet::builtin().unwrap();
        let mut plain = indexed.clone();
        plain.index = None;
        for name in [
            "AWS_ACCESS_KEY_ID",
            "PROD_AWS_SECRET_ACCESS_KEY",
            "ARM_CLIENT_ID",
            "NPM_TOKEN",
            "AWS_REGION",
            "X",
        ] {
            let (mut a, mut b) = (Vec::new(), Vec::new());
            indexed.for_each_match(name, |r, f| a.push((r, f)));
            plain.for_each_match(name, |r, f| b.push((r, f)));
            assert_eq!(a, b, "{name}");
        }
    }
}
