//! Loading a plan: YAML text to [`Plan`], with every syntax or type error located.
//!
//! Unknown fields, wrong types, duplicate keys, unparsable durations and timestamps are caught
//! here by serde; [`super::validate`] checks what types cannot say.

use super::model::Plan;
use crate::diagnostic::Diagnostic;

/// Parses `text` (the content of `file`) into a plan, or the one error that stopped parsing.
pub fn parse(file: &str, text: &str) -> Result<Plan, Diagnostic> {
    serde_saphyr::from_str::<Plan>(text).map_err(|e| yaml_error(file, text, &e))
}

/// A serde-saphyr error as a [`Diagnostic`]: its first line, without the position prefix.
pub fn yaml_error(file: &str, text: &str, e: &serde_saphyr::Error) -> Diagnostic {
    let (line, column) = e
        .location()
        .map(|l| (l.line() as u32, l.column() as u32))
        .unwrap_or((0, 0));
    Diagnostic::error(file, text, line, column, bare_message(&e.to_string()))
}

/// serde-saphyr renders `error: line L column C: message` followed by a snippet; we render the
/// snippet ourselves, so keep only the message.
fn bare_message(rendered: &str) -> String {
    let first = rendered.lines().next().unwrap_or(rendered);
    let first = first.strip_prefix("error: ").unwrap_or(first);
    match first.split_once(": ") {
        Some((prefix, rest)) if prefix.starts_with("line ") && prefix.contains(" column ") => {
            rest.to_string()
        }
        _ => first.to_string(),
    }
}

/// Reads and parses a plan file; I/O errors become a diagnostic too.
pub fn load_file(path: &std::path::Path) -> Result<(String, Plan), Diagnostic> {
    let name = path.display().to_string();
    let text = std::fs::read_to_string(path)
        .map_err(|e| Diagnostic::error(&name, "", 0, 0, format!("cannot read plan: {e}")))?;
    let plan = parse(&name, &text)?;
    Ok((text, plan))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strips_position_prefix() {
        assert_eq!(
            bare_message("error: line 3 column 5: unknown field `x`\n --> …"),
            "unknown field `x`"
        );
        assert_eq!(bare_message("something else"), "something else");
    }
}
