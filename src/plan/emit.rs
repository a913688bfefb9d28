//! The YAML text of a plan's targets and lists, written directly: a general serializer per
//! target was a fifth of `rekey plan` at 190,000 targets.
//!
//! Owns the scalar forms. Names and values come from hostile inventories, so a string is
//! written plain only when no YAML reader could take it for anything else (a short alphabet,
//! no indicator first, no null/bool/number look-alike); otherwise double-quoted with every
//! character YAML does not let stand escaped. The forms are those [`super::fastload`] reads,
//! and the round-trip tests hold both (and serde-saphyr) to the same plan.

use super::Located;
use super::model::*;
use super::principal::{Principal, Written};
use std::fmt::Write as _;

/// Writes `s` as a scalar that reads back as exactly `s`, in block or flow context.
pub fn scalar(out: &mut String, s: &str) {
    if is_plain_safe(s) {
        out.push_str(s);
    } else {
        quoted(out, s);
    }
}

/// Plain is safe: starts with a letter, `_` or `/`, continues with letters, digits and
/// `_./@+=-`, and is no YAML 1.1 or 1.2 null or boolean.
fn is_plain_safe(s: &str) -> bool {
    let b = s.as_bytes();
    let Some(&first) = b.first() else {
        return false;
    };
    (first.is_ascii_alphabetic() || first == b'_' || first == b'/')
        && b[1..].iter().all(|&c| {
            c.is_ascii_alphanumeric() || matches!(c, b'_' | b'.' | b'/' | b'@' | b'+' | b'=' | b'-')
        })
        && !["null", "true", "false", "yes", "no", "on", "off", "y", "n"]
            .iter()
            .any(|word| s.eq_ignore_ascii_case(word))
}

/// `s` double-quoted, escaping `"`, `\` and every character outside YAML's printable set (and
/// the ones a YAML 1.1 reader takes for line breaks).
fn quoted(out: &mut String, s: &str) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 || ('\u{7f}'..='\u{9f}').contains(&c) => {
                let _ = write!(out, "\\x{:02x}", c as u32);
            }
            '\u{2028}' | '\u{2029}' | '\u{feff}' | '\u{fffe}' | '\u{ffff}' => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

/// `s` for a comment line: a name from an inventory may hold a line break or a character YAML
/// does not allow even in comments, written escaped instead.
pub fn comment_text(s: &str) -> std::borrow::Cow<'_, str> {
    let unfit = |c: char| {
        c.is_control()
            || matches!(
                c,
                '\u{2028}' | '\u{2029}' | '\u{feff}' | '\u{fffe}' | '\u{ffff}'
            )
    };
    if !s.chars().any(unfit) {
        return s.into();
    }
    s.chars()
        .map(|c| {
            if unfit(c) {
                c.escape_unicode().to_string()
            } else {
                c.to_string()
            }
        })
        .collect::<String>()
        .into()
}

/// A one-line flow mapping, entries added in order: `{a: 1, b: c}`.
struct Flow<'o> {
    out: &'o mut String,
    first: bool,
}

impl<'o> Flow<'o> {
    fn open(out: &'o mut String) -> Self {
        out.push('{');
        Flow { out, first: true }
    }

    fn key(&mut self, key: &str) -> &mut String {
        if !self.first {
            self.out.push_str(", ");
        }
        self.first = false;
        scalar(self.out, key);
        self.out.push_str(": ");
        self.out
    }

    fn str(&mut self, key: &str, value: Option<&str>) {
        if let Some(v) = value {
            scalar(self.key(key), v);
        }
    }

    fn close(self) {
        self.out.push('}');
    }
}

/// `[a, b]`.
fn flow_seq<'s>(out: &mut String, items: impl IntoIterator<Item = &'s String>) {
    out.push('[');
    for (n, item) in items.into_iter().enumerate() {
        if n > 0 {
            out.push_str(", ");
        }
        scalar(out, item);
    }
    out.push(']');
}

/// A timestamp as serde writes it (RFC 3339, UTC as `Z`), quoted as the serializer quoted it
/// (plain, the 190,000-target plan left the fast reader for serde-saphyr: 10 s to validate).
fn timestamp(out: &mut String, t: &chrono::DateTime<chrono::Utc>) {
    let _ = write!(
        out,
        "\"{}\"",
        t.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true)
    );
}

fn opt<S: AsRef<str>>(v: &Option<Located<S>>) -> Option<&str> {
    v.as_ref().map(|v| v.value.as_ref())
}

/// One target as an item of the top-level `targets:` list (two spaces in). `policy`, rare and
/// nested, is written by `policy_yaml` (the general serializer).
pub fn target(
    out: &mut String,
    t: &Target,
    policy_yaml: &dyn Fn(&Policy) -> Result<String, super::write::WriteError>,
) -> Result<(), super::write::WriteError> {
    out.push_str("  - id: ");
    scalar(out, &t.id);
    out.push_str("\n    provider: ");
    out.push_str(t.provider.as_str());
    out.push_str("\n    confidence: ");
    out.push_str(t.confidence.as_str());
    out.push_str(if t.confirmed {
        "\n    confirmed: true\n    principal: "
    } else {
        "\n    confirmed: false\n    principal: "
    });
    principal(out, &t.principal);
    if t.bindings.is_empty() {
        out.push_str("\n    bindings: []\n");
    } else {
        out.push_str("\n    bindings:\n");
        for b in &t.bindings {
            binding(out, b);
        }
    }
    if !t.observed.is_empty() {
        out.push_str("    observed:\n");
        for o in &t.observed {
            out.push_str("    - ");
            observed(out, o);
            out.push('\n');
        }
    }
    if !t.policy.is_empty() {
        for line in policy_yaml(&t.policy)?.lines() {
            out.push_str("    ");
            out.push_str(line);
            out.push('\n');
        }
    }
    if let Some(e) = &t.exec {
        out.push_str("    exec:\n");
        for (name, command) in e.all() {
            let _ = write!(out, "      {name}: ");
            flow_seq(out, command.iter());
            out.push('\n');
        }
        if let Some(timeout) = &e.timeout {
            let _ = writeln!(out, "      timeout: {}", timeout.value);
        }
    }
    if let Some(h) = &t.ssh_key {
        ssh_key(out, h);
    }
    Ok(())
}

fn principal(out: &mut String, p: &Principal) {
    let mut f = Flow::open(out);
    for (name, value) in p.written() {
        match value {
            Written::Str(v) => f.str(name, Some(v.as_str())),
            Written::Bool(b) => f.key(name).push_str(if b { "true" } else { "false" }),
        }
    }
    f.close();
}

fn binding(out: &mut String, b: &Binding) {
    let mut lead = "    - ";
    let mut line = |out: &mut String, key: &str| {
        out.push_str(lead);
        lead = "      ";
        scalar(out, key);
        out.push_str(": ");
    };
    if let Some(p) = &b.project {
        line(out, "project");
        scalar(out, p);
        out.push('\n');
    }
    if let Some(c) = &b.context {
        line(out, "context");
        scalar(out, c);
        out.push('\n');
    }
    if let Some(id) = &b.context_id {
        line(out, "context_id");
        scalar(out, id);
        out.push('\n');
    }
    if !b.vars.is_empty() || (!b.aws_keypair && b.ssh_hostname.is_none()) {
        line(out, "vars");
        let mut f = Flow::open(out);
        for (field, var) in &b.vars {
            scalar(f.key(field), var);
        }
        f.close();
        out.push('\n');
    }
    if !b.encoding.is_empty() {
        line(out, "encoding");
        let mut f = Flow::open(out);
        for (field, encoding) in &b.encoding {
            f.key(field).push_str(match encoding.value {
                Encoding::Raw => "raw",
                Encoding::Base64 => "base64",
            });
        }
        f.close();
        out.push('\n');
    }
    if b.aws_keypair {
        line(out, "aws_keypair");
        out.push_str("true\n");
    }
    if let Some(host) = &b.ssh_hostname {
        line(out, "ssh_hostname");
        scalar(out, host);
        out.push('\n');
    }
}

fn observed(out: &mut String, o: &Observed) {
    let mut f = Flow::open(out);
    f.str("project", opt(&o.project));
    f.str("context", opt(&o.context));
    f.str("var", o.var.as_deref());
    f.str("masked", o.masked.as_ref().map(|m| m.as_str()));
    if let Some(t) = &o.updated_at {
        timestamp(f.key("updated_at"), t);
    }
    f.str("fingerprint", o.fingerprint.as_deref());
    f.close();
}

fn ssh_key(out: &mut String, h: &SshKeyHooks) {
    if h.install.is_none() && h.remove.is_none() && !h.manual && h.timeout.is_none() {
        out.push_str("    ssh_key: {}\n");
        return;
    }
    out.push_str("    ssh_key:\n");
    for (name, command) in [("install", &h.install), ("remove", &h.remove)] {
        if let Some(command) = command {
            let _ = write!(out, "      {name}: ");
            flow_seq(out, command.iter());
            out.push('\n');
        }
    }
    if h.manual {
        out.push_str("      manual: true\n");
    }
    if let Some(timeout) = &h.timeout {
        let _ = writeln!(out, "      timeout: {}", timeout.value);
    }
}

/// One item of the `ignored` or `unclassified` list: `- {project: …, var: …, reason: …}`.
pub fn finding(out: &mut String, f: &Finding) {
    out.push_str("- ");
    let mut m = Flow::open(out);
    m.str("project", opt(&f.project));
    m.str("context", opt(&f.context));
    m.str("var", Some(&f.var));
    m.str("reason", Some(&f.reason));
    m.close();
    out.push('\n');
}

/// One item of the `errors` list.
pub fn inventory_error(out: &mut String, e: &crate::inventory::InventoryError) {
    use crate::inventory::ErrorScope;
    out.push_str("- ");
    let mut m = Flow::open(out);
    m.key("scope").push_str(match e.scope {
        ErrorScope::Project => "project",
        ErrorScope::Context => "context",
        ErrorScope::Organization => "organization",
    });
    m.str("name", Some(&e.name));
    if let Some(status) = e.status {
        let _ = write!(m.key("status"), "{status}");
    }
    m.str("message", Some(&e.message));
    m.close();
    out.push('\n');
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::{PrincipalField, fastload, load, write};

    const HOSTILE: &[&str] = &[
        "a: b",
        "a #b",
        "#a",
        "-a",
        "- a",
        "*a",
        "&a",
        "!a",
        "?a",
        "|a",
        ">a",
        "%a",
        "@a",
        "`a",
        "'a'",
        "\"a\"",
        "null",
        "NULL",
        "~",
        "",
        "true",
        "False",
        "yes",
        "no",
        "on",
        "off",
        "y",
        "n",
        "1e3",
        "0x1f",
        "012",
        "1",
        "-1",
        ".5",
        ".inf",
        "2023-01-05",
        "a\nb",
        "a\r\nb",
        "a\tb",
        "a\u{0}b",
        "a\u{1b}b",
        "a\u{7f}b",
        "a\u{85}b",
        "a\u{a0}b",
        "a\u{2028}b",
        "a\u{feff}b",
        "a\u{fffe}b",
        "é ü 日本",
        "😀",
        "a\\b",
        " a",
        "a ",
        "{a}",
        "[a]",
        "a,b",
        "${HOME}",
        "<<",
        "a: b: c",
        "xxxx+/=",
        "gh/acme/api",
        "REVIEW-REQUIRED",
    ];

    fn example() -> Plan {
        let path =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("plans/circleci-incident.yaml");
        let text = std::fs::read_to_string(path).unwrap_or_default();
        match load::parse("circleci-incident.yaml", &text) {
            Ok(plan) => plan,
            Err(d) => panic!("{d}"),
        }
    }

    /// Puts `name` in every string the emitter writes.
    fn with_everywhere(mut plan: Plan, name: &str) -> Plan {
        let l = |s: &str| Located::new(s.to_string());
        let t_ = |s: &str| Located::new(Text::new(s));
        for (n, t) in plan.targets.iter_mut().enumerate() {
            t.id = l(&format!("{name}{n}"));
            t.principal.set(PrincipalField::User, Some(l(name)));
            t.principal.set(PrincipalField::Service, Some(l(name)));
            for b in &mut t.bindings {
                if b.project.is_some() {
                    b.project = Some(t_(name));
                }
                b.vars.insert(t_(name), t_(name));
                if b.context_id.is_some() {
                    b.context_id = Some(name.into());
                }
            }
            for o in &mut t.observed {
                o.var = Some(name.into());
                o.fingerprint = o.fingerprint.as_ref().map(|_| name.to_string());
            }
            if let Some(e) = &mut t.exec {
                e.mint.value.push(name.to_string());
            }
        }
        plan.unclassified.push(Finding {
            project: Some(t_(name)),
            context: None,
            var: name.into(),
            reason: name.into(),
        });
        plan.errors.push(crate::inventory::InventoryError {
            scope: crate::inventory::ErrorScope::Context,
            name: name.to_string(),
            status: Some(404),
            message: name.to_string(),
        });
        plan
    }

    #[test]
    fn every_hostile_string_round_trips_through_serde_saphyr_and_the_fast_reader() {
        let mut fast_read = 0;
        for name in HOSTILE {
            let plan = with_everywhere(example(), name);
            let yaml = match write::to_yaml(&plan, &Default::default()) {
                Ok(y) => y,
                Err(e) => panic!("{e}"),
            };
            match load::parse_with_saphyr("p.yaml", &yaml) {
                Ok(back) => assert!(back == plan, "{name:?} changed through\n{yaml}"),
                Err(d) => panic!("{name:?}: {d}\n{yaml}"),
            }
            if let Ok(fast) = fastload::from_str::<Plan>(&yaml) {
                fast_read += 1;
                assert_eq!(load::disagreement(&yaml, &fast), None, "{name:?}");
            }
        }
        // What the emitter writes is what the fast reader reads: every spelling above.
        assert_eq!(fast_read, HOSTILE.len());
    }

    #[test]
    fn plain_only_where_nothing_else_could_be_read() {
        let plain = |s: &str| {
            let mut out = String::new();
            scalar(&mut out, s);
            out == s
        };
        for s in [
            "gh/acme/api",
            "AWS_ACCESS_KEY_ID",
            "REVIEW-REQUIRED",
            "xxxx+/=",
            "/bin/x",
        ] {
            assert!(plain(s), "{s}");
        }
        for s in [
            "", "null", "No", "y", "1", "-a", "a b", "a:b", "é", "a#", "~", ".5",
        ] {
            assert!(!plain(s), "{s}");
        }
    }
}
