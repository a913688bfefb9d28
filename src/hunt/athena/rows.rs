//! Result rows turned back into CloudTrail records: one JSON object per row, one row per line,
//! nested as CloudTrail writes them (`userIdentity.sessionContext.sessionIssuer.arn`), so that
//! the workers read a page of rows exactly as they read a file of JSON lines.
//!
//! A JSON-text column (`requestparameters`) is embedded as JSON only when it is one whole JSON
//! value; anything else (a row is the table's, so the trail writer's — hostile) becomes a
//! string, so no cell can add keys to its record. Absent values (SQL NULL) are left out, as
//! absent keys; empty objects are left out too.

use super::columns::{COLUMNS, Column, Kind};
use serde_json::value::RawValue;

/// The record paths as a tree, built once per query.
#[derive(Debug, Default)]
pub struct Shape {
    /// Each key as written (`"key":`), and what it holds.
    children: Vec<(Vec<u8>, Node)>,
}

#[derive(Debug)]
enum Node {
    Leaf(usize),
    Object(Shape),
}

impl Shape {
    /// The tree of [`COLUMNS`].
    pub fn cloudtrail() -> Shape {
        let mut root = Shape::default();
        for (i, col) in COLUMNS.iter().enumerate() {
            root.insert(col.path, i);
        }
        root
    }

    fn insert(&mut self, path: &str, index: usize) {
        let key = |k: &str| {
            let mut out = Vec::new();
            write_str(k, &mut out);
            out.push(b':');
            out
        };
        match path.split_once('.') {
            None => self.children.push((key(path), Node::Leaf(index))),
            Some((head, rest)) => {
                let head = key(head);
                let pos = match self.children.iter().position(|(k, _)| *k == head) {
                    Some(p) => p,
                    None => {
                        self.children.push((head, Node::Object(Shape::default())));
                        self.children.len() - 1
                    }
                };
                if let Some((_, Node::Object(inner))) = self.children.get_mut(pos) {
                    inner.insert(rest, index);
                }
            }
        }
    }

    /// Appends the record of `row` (cells in [`COLUMNS`] order) and a newline to `out`.
    pub fn write_record(&self, row: &[Option<&str>], out: &mut Vec<u8>) {
        self.write_object(row, out);
        out.push(b'\n');
    }

    /// Writes `{…}`; returns whether it has any key.
    fn write_object(&self, row: &[Option<&str>], out: &mut Vec<u8>) -> bool {
        out.push(b'{');
        let mut any = false;
        for (key, node) in &self.children {
            let mark = out.len();
            if any {
                out.push(b',');
            }
            out.extend_from_slice(key);
            let wrote = match node {
                Node::Leaf(i) => match (row.get(*i).copied().flatten(), COLUMNS.get(*i)) {
                    (Some(v), Some(col)) => {
                        write_value(col, v, out);
                        true
                    }
                    _ => false,
                },
                Node::Object(inner) => inner.write_object(row, out),
            };
            if wrote {
                any = true;
            } else {
                out.truncate(mark);
            }
        }
        out.push(b'}');
        any
    }
}

fn write_value(col: &Column, v: &str, out: &mut Vec<u8>) {
    match col.kind {
        Kind::Text => write_str(v, out),
        Kind::Bool if v == "true" || v == "false" => out.extend_from_slice(v.as_bytes()),
        Kind::Bool => write_str(v, out),
        Kind::Json => match serde_json::from_str::<&RawValue>(v) {
            Ok(raw) => out.extend_from_slice(raw.get().as_bytes()),
            Err(_) => write_str(v, out),
        },
        Kind::Resources => match serde_json::from_str::<serde_json::Value>(v) {
            Ok(serde_json::Value::Array(items)) => {
                let items: Vec<serde_json::Value> = items.into_iter().map(resource).collect();
                let _ = serde_json::to_writer(&mut *out, &items);
            }
            _ => write_str(v, out),
        },
    }
}

/// A resource as CloudTrail spells its keys (`ARN`, `accountId`, `type`); Trino's cast of the
/// struct to JSON spells them as the table's lowercase field names.
fn resource(v: serde_json::Value) -> serde_json::Value {
    let serde_json::Value::Object(m) = v else {
        return v;
    };
    let renamed = m
        .into_iter()
        .map(|(k, v)| {
            let k = match k.as_str() {
                "arn" => "ARN".to_string(),
                "accountid" => "accountId".to_string(),
                _ => k,
            };
            (k, v)
        })
        .collect();
    serde_json::Value::Object(renamed)
}

fn write_str(s: &str, out: &mut Vec<u8>) {
    // Most values need no escaping: copied as they are.
    if s.bytes().all(|b| b >= 0x20 && b != b'"' && b != b'\\') {
        out.reserve(s.len() + 2);
        out.push(b'"');
        out.extend_from_slice(s.as_bytes());
        out.push(b'"');
        return;
    }
    // Writing a string into a Vec cannot fail.
    let _ = serde_json::to_writer(&mut *out, s);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(cells: &[(&str, &str)]) -> Vec<Option<String>> {
        COLUMNS
            .iter()
            .map(|c| {
                cells
                    .iter()
                    .find(|(sql, _)| *sql == c.sql)
                    .map(|(_, v)| v.to_string())
            })
            .collect()
    }

    fn record(cells: &[(&str, &str)]) -> serde_json::Value {
        let r = row(cells);
        let cells: Vec<Option<&str>> = r.iter().map(|c| c.as_deref()).collect();
        let mut out = Vec::new();
        Shape::cloudtrail().write_record(&cells, &mut out);
        assert_eq!(out.last(), Some(&b'\n'));
        serde_json::from_slice(&out).expect("a record is JSON")
    }

    #[test]
    fn a_row_nests_as_cloudtrail_writes_it() {
        let r = record(&[
            ("useridentity.accesskeyid", "AKIAEXAMPLE"),
            ("useridentity.sessioncontext.sessionissuer.arn", "arn:x"),
            ("eventname", "ListUsers"),
            ("requestparameters", "{\"userName\":\"bob\"}"),
            ("readonly", "true"),
            (
                "json_format(CAST(resources AS JSON))",
                "[{\"arn\":\"arn:r\",\"accountid\":\"1\",\"type\":\"T\"}]",
            ),
        ]);
        assert_eq!(
            r,
            serde_json::json!({
                "userIdentity": {"accessKeyId": "AKIAEXAMPLE",
                    "sessionContext": {"sessionIssuer": {"arn": "arn:x"}}},
                "eventName": "ListUsers",
                "requestParameters": {"userName": "bob"},
                "readOnly": true,
                "resources": [{"ARN": "arn:r", "accountId": "1", "type": "T"}],
            })
        );
    }

    #[test]
    fn a_hostile_cell_cannot_add_keys() {
        let r = record(&[
            ("eventname", "A\",\"errorCode\":\"x"),
            (
                "requestparameters",
                "1,\"userIdentity\":{\"accessKeyId\":\"AKIAFORGED\"}",
            ),
        ]);
        assert_eq!(r["eventName"], "A\",\"errorCode\":\"x");
        assert!(r.get("errorCode").is_none());
        assert!(r.get("userIdentity").is_none());
        assert!(r["requestParameters"].is_string());
    }
}
