//! Loading a plan: YAML text to [`Plan`], with every syntax or type error located.
//!
//! Unknown fields, wrong types, duplicate keys, unparsable durations and timestamps are caught
//! here by serde; [`super::validate`] checks what types cannot say.
//!
//! The YAML reader's budget (nodes, events, scalar bytes) is sized from the text: a plan of
//! 190,000 targets is 100+ MB and millions of nodes, which no fixed count fits, yet a hostile
//! file still gets only work in proportion to its size (every node takes at least one byte,
//! aliases stay capped), and no plan may exceed [`MAX_PLAN_BYTES`].

use super::model::Plan;
use super::text::PlanText;
use crate::diagnostic::Diagnostic;

/// Largest plan file rekey reads (a 190,000-target plan is about 130 MB).
pub const MAX_PLAN_BYTES: usize = 1 << 30;

/// Parses `text` (the content of `file`) into a plan, or the one error that stopped parsing.
pub fn parse(file: &str, text: &str) -> Result<Plan, Diagnostic> {
    parse_releasing(file, text, &mut |_| {})
}

/// Parses a plan file's text, handing the pages the fast reader has passed back to the page
/// cache as it goes (see [`PlanText`]): the model grows while the text read so far does not
/// stay resident.
pub fn parse_text(file: &str, text: &PlanText) -> Result<Plan, Diagnostic> {
    parse_releasing(file, text, &mut |offset| text.release_before(offset))
}

fn parse_releasing(
    file: &str,
    text: &str,
    release: &mut dyn FnMut(usize),
) -> Result<Plan, Diagnostic> {
    if text.len() > MAX_PLAN_BYTES {
        return Err(Diagnostic::error(
            file,
            "",
            0,
            0,
            format!(
                "the plan is {} bytes, more than rekey reads ({MAX_PLAN_BYTES}): split it with `rekey plan --split-by`",
                text.len()
            ),
        ));
    }
    if let Ok(plan) = super::fastload::from_str_releasing::<Plan>(text, release) {
        // Debug builds (every test) hold the fast reader to serde-saphyr's answer.
        #[cfg(debug_assertions)]
        if text.len() <= DIFFERENTIAL_BYTES
            && let Some(why) = disagreement(text, &plan)
        {
            panic!("the fast plan reader disagrees with serde-saphyr on {file}: {why}");
        }
        return Ok(plan);
    }
    parse_with_saphyr(file, text)
}

/// Largest text whose fast reading debug builds check against serde-saphyr's.
#[cfg(debug_assertions)]
const DIFFERENTIAL_BYTES: usize = 4 << 20;

/// Where the fast reader's `fast` (read from `text`) differs from serde-saphyr's reading of
/// the same text, values and positions both; `None` when they agree.
pub fn disagreement(text: &str, fast: &Plan) -> Option<String> {
    match parse_with_saphyr("plan.yaml", text) {
        Err(e) => Some(format!(
            "serde-saphyr rejects what the fast reader accepted: {e}"
        )),
        Ok(slow) => {
            let (fast, slow) = (format!("{fast:#?}"), format!("{slow:#?}"));
            let line = fast.lines().zip(slow.lines()).position(|(f, s)| f != s);
            match line {
                None if fast == slow => None,
                None => Some("one reading is longer than the other".to_string()),
                Some(n) => Some(format!(
                    "fast `{}` against serde-saphyr `{}` (line {n} of their Debug forms)",
                    fast.lines().nth(n).unwrap_or_default().trim(),
                    slow.lines().nth(n).unwrap_or_default().trim()
                )),
            }
        }
    }
}

/// Parses `text` with serde-saphyr alone: the reference the fast reader must agree with, and
/// the reader of everything it declines (with every error's location).
pub fn parse_with_saphyr(file: &str, text: &str) -> Result<Plan, Diagnostic> {
    serde_saphyr::from_str_with_options::<Plan>(text, options_for(text.len()))
        .map_err(|e| yaml_error(file, text, &e))
}

/// The reader's limits for a text of `bytes` bytes: the library's defaults, raised in
/// proportion to the size where a large plan needs it (a node is at least one byte and a
/// separator, an event at most two per node), never lowered.
pub fn options_for(bytes: usize) -> serde_saphyr::Options {
    let mut budget = serde_saphyr::Budget::default();
    budget.max_nodes = budget.max_nodes.max(bytes / 2 + 1);
    budget.max_events = budget.max_events.max(bytes + 1);
    budget.max_total_scalar_bytes = budget.max_total_scalar_bytes.max(bytes);
    budget.max_reader_input_bytes = Some(MAX_PLAN_BYTES);
    let mut options = serde_saphyr::Options::default();
    options.budget = Some(budget);
    options
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

/// Reads and parses a plan file into memory; I/O errors become a diagnostic too.
pub fn load_file(path: &std::path::Path) -> Result<(PlanText, Plan), Diagnostic> {
    load_file_with(path, PlanText::read)
}

/// [`load_file`] for a check that only reports: a large file is mapped, not copied
/// ([`PlanText::map_or_read`]).
pub fn load_file_mapped(path: &std::path::Path) -> Result<(PlanText, Plan), Diagnostic> {
    load_file_with(path, PlanText::map_or_read)
}

fn load_file_with(
    path: &std::path::Path,
    read: fn(&std::path::Path) -> std::io::Result<PlanText>,
) -> Result<(PlanText, Plan), Diagnostic> {
    let name = path.display().to_string();
    let text = read(path)
        .map_err(|e| Diagnostic::error(&name, "", 0, 0, format!("cannot read plan: {e}")))?;
    let plan = parse_text(&name, &text)?;
    Ok((text, plan))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_budget_grows_with_the_file_and_not_without_it() {
        let small = options_for(1_000).budget.unwrap_or_default();
        assert_eq!(small.max_nodes, serde_saphyr::Budget::default().max_nodes);
        let big = options_for(130_000_000).budget.unwrap_or_default();
        assert_eq!(big.max_nodes, 65_000_001);
        assert!(big.max_events >= 130_000_000);
        // Aliases stay capped whatever the size (billion laughs).
        assert_eq!(big.max_aliases, serde_saphyr::Budget::default().max_aliases);
    }

    #[test]
    fn strips_position_prefix() {
        assert_eq!(
            bare_message("error: line 3 column 5: unknown field `x`\n --> …"),
            "unknown field `x`"
        );
        assert_eq!(bare_message("something else"), "something else");
    }
}
