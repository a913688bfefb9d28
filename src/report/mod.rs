//! Human output: aligned plain-text tables, and the run report ([`run`]: summary table and
//! Markdown for the incident ticket). JSON output is serde's.

pub mod run;

/// A table with a header row; columns are padded to their widest cell (counted in characters).
#[derive(Debug, Default)]
pub struct Table {
    header: Vec<String>,
    rows: Vec<Vec<String>>,
}

impl Table {
    pub fn new<S: Into<String>>(header: impl IntoIterator<Item = S>) -> Self {
        Table {
            header: header.into_iter().map(Into::into).collect(),
            rows: Vec::new(),
        }
    }

    pub fn row<S: Into<String>>(&mut self, cells: impl IntoIterator<Item = S>) {
        self.rows.push(cells.into_iter().map(Into::into).collect());
    }

    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    /// The table as aligned text; every cell shown on one line with its control characters
    /// escaped (cells hold names and messages from services and files).
    pub fn render(&self) -> String {
        let clean = |row: &[String]| -> Vec<String> {
            row.iter()
                .map(|c| crate::escape::terminal_line(c).into_owned())
                .collect()
        };
        let table = Table {
            header: clean(&self.header),
            rows: self.rows.iter().map(|r| clean(r)).collect(),
        };
        table.render_clean()
    }

    fn render_clean(&self) -> String {
        let columns = self.header.len();
        let mut widths: Vec<usize> = self.header.iter().map(|h| h.chars().count()).collect();
        for row in &self.rows {
            for (i, cell) in row.iter().enumerate().take(columns) {
                widths[i] = widths[i].max(cell.chars().count());
            }
        }
        let mut out = String::new();
        let line = |cells: &[String], out: &mut String| {
            let mut text = String::new();
            for (i, width) in widths.iter().enumerate() {
                let cell = cells.get(i).map(String::as_str).unwrap_or("");
                text.push_str(cell);
                if i + 1 < columns {
                    text.push_str(&" ".repeat(width - cell.chars().count() + 2));
                }
            }
            out.push_str(text.trim_end());
            out.push('\n');
        };
        line(&self.header, &mut out);
        for row in &self.rows {
            line(row, &mut out);
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aligns_columns() {
        let mut t = Table::new(["A", "BB"]);
        t.row(["xyz", "1"]);
        assert_eq!(t.render(), "A    BB\nxyz  1\n");
        let mut t = Table::new(["A"]);
        t.row(["\x1b[2Jx\ny"]);
        assert_eq!(t.render(), "A\n\\u{1b}[2Jx y\n");
    }
}
