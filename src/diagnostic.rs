//! Located diagnostics: one error or warning about an input file, shown the way ripgrep or rustc
//! would — `file:line:column`, the message, the offending line and a marker under the column.
//!
//! Plans, Env-Inspector imports and rule files all report problems through [`Diagnostic`], so a
//! person sees the same shape whatever they got wrong.

use serde::Serialize;
use std::fmt;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Error,
    Warning,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Diagnostic {
    pub severity: Severity,
    /// The file as the user named it.
    pub file: String,
    /// 1-based; 0 when the problem has no single place (then line and column are not shown).
    pub line: u32,
    pub column: u32,
    pub message: String,
    /// The offending source line, without its newline (empty when unknown).
    #[serde(skip_serializing_if = "String::is_empty")]
    pub source_line: String,
    /// An optional hint on how to fix it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub help: Option<String>,
}

impl Diagnostic {
    /// An error at `line:column` of `source` (the file's text), quoting the offending line.
    pub fn error(
        file: &str,
        source: &str,
        line: u32,
        column: u32,
        message: impl Into<String>,
    ) -> Self {
        Self::new(Severity::Error, file, source, line, column, message)
    }

    pub fn warning(
        file: &str,
        source: &str,
        line: u32,
        column: u32,
        message: impl Into<String>,
    ) -> Self {
        Self::new(Severity::Warning, file, source, line, column, message)
    }

    fn new(
        severity: Severity,
        file: &str,
        source: &str,
        line: u32,
        column: u32,
        message: impl Into<String>,
    ) -> Self {
        let source_line = if line > 0 {
            source
                .lines()
                .nth(line as usize - 1)
                .unwrap_or("")
                .to_string()
        } else {
            String::new()
        };
        Diagnostic {
            severity,
            file: file.to_string(),
            line,
            column,
            message: message.into(),
            source_line,
            help: None,
        }
    }

    pub fn with_help(mut self, help: impl Into<String>) -> Self {
        self.help = Some(help.into());
        self
    }

    pub fn is_error(&self) -> bool {
        self.severity == Severity::Error
    }

    /// `file:line:column` (or just the file when there is no position).
    pub fn location(&self) -> String {
        if self.line > 0 {
            format!("{}:{}:{}", self.file, self.line, self.column)
        } else {
            self.file.clone()
        }
    }
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let label = match self.severity {
            Severity::Error => "error",
            Severity::Warning => "warning",
        };
        // Files are written by others: their control sequences are shown, not obeyed.
        use crate::escape::{terminal, terminal_line};
        writeln!(f, "{label}: {}", terminal(&self.message))?;
        write!(f, "  --> {}", terminal_line(&self.location()))?;
        if self.line > 0 && !self.source_line.is_empty() {
            let source_line = terminal_line(&self.source_line);
            let number = self.line.to_string();
            let pad = " ".repeat(number.len());
            // The marker goes under the column, counted in characters; tabs keep their width.
            let prefix: String = source_line
                .chars()
                .take(self.column.saturating_sub(1) as usize)
                .map(|c| if c == '\t' { '\t' } else { ' ' })
                .collect();
            write!(
                f,
                "\n {pad} |\n {number} | {source_line}\n {pad} | {prefix}^"
            )?;
        }
        if let Some(help) = &self.help {
            write!(f, "\n  = help: {}", terminal(help))?;
        }
        Ok(())
    }
}

/// Renders every diagnostic, errors first in file order, separated by blank lines.
pub fn render_all(diagnostics: &[Diagnostic]) -> String {
    let mut sorted: Vec<&Diagnostic> = diagnostics.iter().collect();
    sorted.sort_by_key(|d| (d.severity != Severity::Error, d.line, d.column));
    sorted
        .iter()
        .map(|d| d.to_string())
        .collect::<Vec<_>>()
        .join("\n\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_location_line_and_marker() {
        let src = "a: 1\nbb: oops\n";
        let d = Diagnostic::error("p.yaml", src, 2, 5, "bad value");
        let text = d.to_string();
        assert!(text.contains("error: bad value"));
        assert!(text.contains("--> p.yaml:2:5"));
        assert!(text.contains(" 2 | bb: oops\n   |     ^"), "{text}");
    }
}
