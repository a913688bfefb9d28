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
    ///
    /// Written straight into one string: a cell copied to be cleaned, a string per row and
    /// one per padding made a hunt's table (29,429 rows) take most of a tenth of a second.
    pub fn render(&self) -> String {
        use std::borrow::Cow;
        /// Each cell cleaned (borrowed when nothing needed it) with its width in characters.
        fn clean(row: &[String]) -> Vec<(Cow<'_, str>, usize)> {
            row.iter()
                .map(|c| {
                    let c = crate::escape::terminal_line(c);
                    let chars = c.chars().count();
                    (c, chars)
                })
                .collect()
        }
        let header = clean(&self.header);
        let rows: Vec<Vec<(Cow<'_, str>, usize)>> = self.rows.iter().map(|r| clean(r)).collect();
        let columns = header.len();
        let mut widths: Vec<usize> = header.iter().map(|(_, n)| *n).collect();
        for row in &rows {
            for (i, (_, n)) in row.iter().enumerate().take(columns) {
                widths[i] = widths[i].max(*n);
            }
        }
        let bytes: usize = rows
            .iter()
            .chain([&header])
            .map(|r| r.iter().map(|(c, _)| c.len()).sum::<usize>() + 2 * columns + 1)
            .sum::<usize>()
            + widths.iter().sum::<usize>() * (rows.len() + 1);
        let mut out = String::with_capacity(bytes);
        for cells in [&header].into_iter().chain(&rows) {
            let start = out.len();
            for (i, width) in widths.iter().enumerate() {
                let (cell, chars) = cells.get(i).map_or(("", 0), |(c, n)| (&**c, *n));
                out.push_str(cell);
                if i + 1 < columns {
                    out.extend(std::iter::repeat_n(' ', width - chars + 2));
                }
            }
            // No padding (nor a cell's own trailing blanks) at the end of a line.
            let kept = out[start..].trim_end().len();
            out.truncate(start + kept);
            out.push('\n');
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

    /// The same text as padding each cleaned cell to its column's width in characters and
    /// trimming each line's end: wide and multi-byte characters, short and empty rows, cells
    /// ending in blanks, control characters.
    #[test]
    fn renders_as_padding_each_cell_then_trimming_each_line() {
        fn reference(header: &[&str], rows: &[Vec<&str>]) -> String {
            let clean = |c: &str| crate::escape::terminal_line(c).into_owned();
            let header: Vec<String> = header.iter().map(|c| clean(c)).collect();
            let rows: Vec<Vec<String>> = rows
                .iter()
                .map(|r| r.iter().map(|c| clean(c)).collect())
                .collect();
            let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
            for r in &rows {
                for (i, c) in r.iter().enumerate().take(widths.len()) {
                    widths[i] = widths[i].max(c.chars().count());
                }
            }
            let mut out = String::new();
            for r in std::iter::once(&header).chain(&rows) {
                let mut line = String::new();
                for (i, w) in widths.iter().enumerate() {
                    let c = r.get(i).map(String::as_str).unwrap_or("");
                    line.push_str(c);
                    if i + 1 < widths.len() {
                        line.push_str(&" ".repeat(w - c.chars().count() + 2));
                    }
                }
                out.push_str(line.trim_end());
                out.push('\n');
            }
            out
        }
        let header = ["SEVERITY", "WHO", "É", "WHERE"];
        let rows: Vec<Vec<&str>> = vec![
            vec!["high", "ünïcödé ☃", "", "f.json:1"],
            vec!["low"],
            vec![],
            vec!["", "", "", ""],
            vec![
                "medium",
                "tab\there\nnewline",
                "\u{1b}[31mred",
                "ends in blanks \u{3000} ",
            ],
            vec!["x", "日本語のテキスト", "y", "z", "extra column"],
        ];
        let mut t = Table::new(header);
        for r in &rows {
            t.row(r.iter().copied());
        }
        assert_eq!(t.render(), reference(&header, &rows));
    }
}
