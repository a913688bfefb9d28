//! Escaping of foreign text for where rekey prints it: a terminal and a Markdown report.
//!
//! Variable names, project slugs, CircleCI and API messages, Env-Inspector files and audit
//! records are written by others. Printed raw, a control sequence in them can rewrite what the
//! operator sees (clear the screen, hide a line, set the window title, fake a "done"), and a
//! `|`, a backtick or a link in a Markdown cell can reshape the incident report. [`terminal`]
//! makes every control character visible as an escape; [`markdown`] and [`markdown_code`]
//! make a cell's text literal.

use std::borrow::Cow;

/// True for what a terminal interprets rather than shows: C0 controls (except newline and
/// tab), DEL, C1 controls, and the Unicode bidirectional overrides that reorder a line.
fn is_hazard(c: char) -> bool {
    (c.is_control() && c != '\n' && c != '\t')
        || matches!(c, '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}' | '\u{200E}' | '\u{200F}')
}

/// Whether `text` may hold a hazard, from its bytes alone (a dry run escapes 200 MB): a C0
/// control or DEL, a C1 control (C2 80–9F), a bidirectional mark or override (E2 80 …, E2 81 …).
/// Never false for a text that holds one.
fn may_hold_hazard(text: &str) -> bool {
    let bytes = text.as_bytes();
    bytes.iter().enumerate().any(|(i, &b)| match b {
        b'\n' | b'\t' => false,
        0..=0x1f | 0x7f => true,
        0xc2 => bytes.get(i + 1).is_some_and(|n| (0x80..=0x9f).contains(n)),
        // U+200E, U+200F, U+202A–U+202E (E2 80 …), U+2066–U+2069 (E2 81 …).
        0xe2 => matches!(
            (bytes.get(i + 1), bytes.get(i + 2)),
            (Some(0x80), Some(0x8e | 0x8f | 0xaa..=0xae)) | (Some(0x81), Some(0xa6..=0xa9))
        ),
        _ => false,
    })
}

/// `text` with every control character (ESC, CR, backspace, BEL, C1, bidi overrides) shown as
/// `\u{…}`; newlines and tabs stay. Borrowed when there is nothing to escape.
pub fn terminal(text: &str) -> Cow<'_, str> {
    if !may_hold_hazard(text) || !text.chars().any(is_hazard) {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        if is_hazard(c) {
            out.push_str(&format!("\\u{{{:x}}}", c as u32));
        } else {
            out.push(c);
        }
    }
    Cow::Owned(out)
}

/// One line for a table cell or a log field: [`terminal`], and newlines and tabs as spaces.
pub fn terminal_line(text: &str) -> Cow<'_, str> {
    match terminal(text) {
        Cow::Borrowed(t) if !t.contains(['\n', '\t']) => Cow::Borrowed(t),
        other => Cow::Owned(other.replace(['\n', '\t'], " ")),
    }
}

/// The text of a Markdown table cell or list item, shown literally: one line, every character
/// that Markdown or HTML would interpret escaped with a backslash.
pub fn markdown(text: &str) -> String {
    let line = terminal_line(text);
    let mut out = String::with_capacity(line.len() + 8);
    for c in line.chars() {
        // Only what changes meaning inside a line: emphasis, code, links and images
        // (`[`), HTML and entities, strikethrough, the cell separator, the escape itself.
        if matches!(
            c,
            '\\' | '`' | '*' | '_' | '[' | ']' | '<' | '>' | '|' | '~' | '&'
        ) {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// `text` as an inline code span that no backtick inside can close early (CommonMark: a fence
/// longer than any run of backticks in it), with `|` escaped so a table cell stays one cell.
pub fn markdown_code(text: &str) -> String {
    let line = terminal_line(text);
    let mut longest = 0;
    let mut run = 0;
    for c in line.chars() {
        run = if c == '`' { run + 1 } else { 0 };
        longest = longest.max(run);
    }
    let fence = "`".repeat(longest + 1);
    let pad = if longest > 0 { " " } else { "" };
    format!("{fence}{pad}{}{pad}{fence}", line.replace('|', "\\|"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_byte_prefilter_misses_no_hazard() {
        for c in (0..=0x3000u32).filter_map(char::from_u32) {
            let text = format!("a{c}b");
            assert!(may_hold_hazard(&text) || !is_hazard(c), "{:x}", c as u32);
        }
        assert!(!may_hold_hazard("plain — ✗ text\n\t"));
    }

    #[test]
    fn control_sequences_become_visible() {
        assert_eq!(terminal("plain\ttext\n"), "plain\ttext\n");
        assert_eq!(terminal("\x1b[2Jgone\r"), "\\u{1b}[2Jgone\\u{d}");
        assert_eq!(terminal("a\u{202E}b\u{9b}"), "a\\u{202e}b\\u{9b}");
        assert_eq!(terminal_line("two\nlines"), "two lines");
    }

    #[test]
    fn markdown_stays_literal() {
        assert_eq!(
            markdown("a|b [x](http://e) <img>"),
            "a\\|b \\[x\\](http://e) \\<img\\>"
        );
        assert_eq!(markdown("line\nbreak"), "line break");
        assert_eq!(markdown_code("id"), "`id`");
        assert_eq!(markdown_code("a`b|c"), "`` a`b\\|c ``");
    }
}
