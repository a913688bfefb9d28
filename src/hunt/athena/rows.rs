//! Result rows handed to the evaluator: each row's cells become the record's fields directly
//! (the fields the rules read, nothing else), as if the record CloudTrail wrote had been read
//! from a file — `userIdentity.sessionContext.sessionIssuer.arn` is its struct column's cell,
//! `requestParameters.userName` is read from the `requestparameters` JSON cell, which is parsed
//! only when a rule descends into it, once per row.
//!
//! The record a row stands for ([`Shape`]) is the reference: a whole object a rule names
//! (`userIdentity`) reads as that record's JSON text, and every field has the value it has when
//! that record is read from a file (tested field by field). A JSON-text column
//! (`requestparameters`) is JSON only when it is one whole JSON value; anything else (a row is
//! the table's, so the trail writer's — hostile) is a string, so no cell can add keys to its
//! record. Absent values (SQL NULL) are absent keys; empty objects are absent too.

use super::columns::{COLUMNS, Column, Kind};
use crate::hunt::fields::{FieldId, FieldSet, FieldVal, Fields, Place};
use crate::hunt::source::{Loc, Sink};
use aws_sdk_athena::types::{Datum, ResultSet};
use serde_json::value::RawValue;
use std::borrow::Cow;

/// The columns a rule set reads (computed once per query, from the fields of its rules and of
/// attribution): what the query selects, in [`COLUMNS`] order, so GetQueryResults' answer holds
/// only these cells.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Projection {
    /// Each column's place in a selected row, by its index in [`COLUMNS`].
    slot: Vec<Option<usize>>,
    /// The selected columns (indices in [`COLUMNS`]), in select order.
    selected: Vec<usize>,
}

impl Projection {
    /// The columns the fields of `set` are read from; `eventtime` when they read none (a
    /// query selects at least one column).
    pub fn new(set: &FieldSet) -> Projection {
        let shape = Shape::cloudtrail();
        let mut fills = Vec::new();
        plan(&shape, "", set, &mut fills);
        let p = Projection::of(&fills);
        if p.selected.is_empty() {
            let time = COLUMNS.iter().position(|c| c.path == "eventTime");
            return Projection::keeping(|col| Some(col) == time);
        }
        p
    }

    /// The columns `fills` read.
    fn of(fills: &[Fill<'_>]) -> Projection {
        let mut keep = vec![false; COLUMNS.len()];
        for fill in fills {
            match fill {
                Fill::Cell { col, .. } | Fill::Json { col, .. } | Fill::Resources { col, .. } => {
                    keep[*col] = true
                }
                Fill::Object { shape, .. } => shape.leaves(&mut |col| keep[col] = true),
            }
        }
        Projection::keeping(|col| keep[col])
    }

    /// Every column.
    pub fn all() -> Projection {
        Projection::keeping(|_| true)
    }

    fn keeping(keep: impl Fn(usize) -> bool) -> Projection {
        let selected: Vec<usize> = (0..COLUMNS.len()).filter(|&c| keep(c)).collect();
        let mut slot = vec![None; COLUMNS.len()];
        for (i, &col) in selected.iter().enumerate() {
            slot[col] = Some(i);
        }
        Projection { slot, selected }
    }

    /// The selected columns (indices in [`COLUMNS`]), in select order: a row's cells.
    pub fn columns(&self) -> &[usize] {
        &self.selected
    }

    /// Column `col`'s place in a selected row, when selected.
    fn slot(&self, col: usize) -> Option<usize> {
        self.slot.get(col).copied().flatten()
    }

    /// Whether every column `other` selects, this selects.
    fn covers(&self, other: &Projection) -> bool {
        other.selected.iter().all(|&col| self.slot(col).is_some())
    }
}

/// A cell's bytes in a page's text; [`ABSENT`] for SQL NULL.
type Span = (u32, u32);
const ABSENT: Span = (1, 0);

/// A page of result rows: the cells' text in one buffer, and each cell's span of it (one per
/// selected column, row after row). GetQueryResults' answer, one string per cell, is consumed
/// on the thread that received it ([`Rows::from_answer`]), so the worker that reads the page
/// frees no string allocated on another thread; its two buffers go back to a pool.
#[derive(Debug)]
pub struct Rows {
    text: String,
    spans: Vec<Span>,
    kept: Projection,
}

/// Page buffers between uses: a page's text and spans go back here when a worker drops it, and
/// the fetching thread takes them for its next page. Freed by the worker instead, each page's
/// buffers (hundreds of KB the fetching thread allocated) made glibc coalesce, on the worker
/// and under the fetching thread's heap lock, every SDK string the fetching thread had freed
/// (profiled: 10% of a worker's time); and each new page's buffers made the fetching thread
/// do the same. Bounded: a few buffers, none large.
static POOL: std::sync::Mutex<Vec<(String, Vec<Span>)>> = std::sync::Mutex::new(Vec::new());
/// Buffers kept: the pages that may wait for workers, and those being read.
const POOLED: usize = 16;
/// No larger buffer is kept (a page of 1,000 rows is well under it).
const MAX_POOLED: usize = 8 << 20;

impl Drop for Rows {
    fn drop(&mut self) {
        let mut text = std::mem::take(&mut self.text);
        let mut spans = std::mem::take(&mut self.spans);
        if text.capacity() > MAX_POOLED || spans.capacity() * size_of::<Span>() > MAX_POOLED {
            return;
        }
        text.clear();
        spans.clear();
        if let Ok(mut pool) = POOL.lock()
            && pool.len() < POOLED
        {
            pool.push((text, spans));
        }
    }
}

impl Default for Rows {
    fn default() -> Self {
        Rows {
            text: String::new(),
            spans: Vec::new(),
            kept: Projection::all(),
        }
    }
}

/// One page of GetQueryResults' answer as the SDK builds it: a [`ResultSet`] of rows of
/// [`Datum`]s, one text cell per column (`None` for SQL NULL).
pub fn answer<I, R, S>(rows: I) -> ResultSet
where
    I: IntoIterator<Item = R>,
    R: IntoIterator<Item = Option<S>>,
    S: Into<String>,
{
    let rows = rows
        .into_iter()
        .map(|r| {
            let data = r
                .into_iter()
                .map(|c| {
                    Datum::builder()
                        .set_var_char_value(c.map(Into::into))
                        .build()
                })
                .collect();
            aws_sdk_athena::types::Row::builder()
                .set_data(Some(data))
                .build()
        })
        .collect();
    ResultSet::builder().set_rows(Some(rows)).build()
}

impl Rows {
    /// The page of `answer` (taken by value: its strings are freed here), a query's answer
    /// selecting the columns of `projection`. Athena's first row of a query's first page is
    /// the header (the aliases): skipped when `first_page`. `Err` names the row that does not
    /// have one cell per selected column.
    pub fn from_answer(
        answer: ResultSet,
        projection: &Projection,
        first_page: bool,
    ) -> Result<Rows, String> {
        let answered = answer.rows.unwrap_or_default();
        let width = projection.selected.len();
        // One allocation for the page's text: the cells' lengths summed first.
        let size: usize = answered
            .iter()
            .flat_map(|r| r.data())
            .map(|d| d.var_char_value().map_or(0, str::len))
            .sum();
        let (mut text, mut spans) = POOL
            .lock()
            .ok()
            .and_then(|mut pool| pool.pop())
            .unwrap_or_default();
        text.reserve(size);
        spans.reserve(answered.len() * width);
        let mut rows = Rows {
            text,
            spans,
            kept: projection.clone(),
        };
        for (i, row) in answered.into_iter().enumerate() {
            let data = row.data.unwrap_or_default();
            if first_page && i == 0 && is_header(&data, projection) {
                continue;
            }
            if data.len() != width {
                return Err(format!(
                    "row {}: {} columns, {width} selected",
                    i + 1,
                    data.len()
                ));
            }
            for d in data {
                let span = match d.var_char_value {
                    Some(v) => {
                        let start = rows.text.len();
                        let end = start + v.len();
                        if end > u32::MAX as usize {
                            return Err(format!("row {}: the page's text passes 4 GB", i + 1));
                        }
                        rows.text.push_str(&v);
                        (start as u32, end as u32)
                    }
                    None => ABSENT,
                };
                rows.spans.push(span);
            }
        }
        Ok(rows)
    }

    pub fn len(&self) -> usize {
        self.spans.len() / self.kept.selected.len().max(1)
    }

    pub fn is_empty(&self) -> bool {
        self.spans.is_empty()
    }

    /// The bytes of its cells.
    pub fn bytes(&self) -> u64 {
        self.text.len() as u64
    }

    /// Row `row`'s cell of column `col` (an index in [`COLUMNS`]).
    fn cell(&self, row: usize, col: usize) -> Option<&str> {
        let slot = self.kept.slot(col)?;
        let &(a, b) = self.spans.get(row * self.kept.selected.len() + slot)?;
        self.text.get(a as usize..b as usize)
    }
}

/// The header row: the selected columns' aliases, in order.
fn is_header(data: &[Datum], projection: &Projection) -> bool {
    !data.is_empty()
        && data.len() == projection.selected.len()
        && data
            .iter()
            .zip(&projection.selected)
            .all(|(d, &col)| d.var_char_value() == Some(super::query::alias(col).as_str()))
}

/// Hands every row of `rows` to `sink` as a record of `name` (row `n` at line `n`, as in the
/// JSON lines the rows stand for), with the fields of `set`. `Err` when the page lacks a
/// column `set` reads (it was kept for another rule set).
pub fn read(name: &str, rows: &Rows, set: &FieldSet, sink: &mut dyn Sink) -> std::io::Result<()> {
    let shape = Shape::cloudtrail();
    let mut fills = Vec::new();
    plan(&shape, "", set, &mut fills);
    if !rows.kept.covers(&Projection::of(&fills)) {
        return Err(std::io::Error::other(
            "the page was projected for other rules: a column they read is missing",
        ));
    }
    let mut scratch = Vec::new();
    let mut spans = Vec::new();
    for r in 0..rows.len() {
        let n = r as u64 + 1;
        let fields = fill_row(
            &fills,
            &|col| rows.cell(r, col),
            set,
            &mut scratch,
            &mut spans,
        );
        sink.record(
            Loc {
                file: name,
                line: n,
                index: n,
            },
            &fields,
        );
    }
    Ok(())
}

/// How one column (or object of columns) fills the fields a rule set reads.
enum Fill<'s> {
    /// A string cell: the field is the cell.
    Cell { col: usize, id: FieldId },
    /// A JSON-text cell read at and below its place.
    Json {
        col: usize,
        place: Place<'s>,
        ids: Vec<FieldId>,
    },
    /// `resources`: read as the record's array (keys as CloudTrail spells them).
    Resources { col: usize, place: Place<'s> },
    /// A whole object of the record (`userIdentity`), as its JSON text.
    Object { shape: &'s Shape, id: FieldId },
}

/// The fills for the fields of `set` at and below `shape` (at `prefix`).
fn plan<'s>(shape: &'s Shape, prefix: &str, set: &'s FieldSet, out: &mut Vec<Fill<'s>>) {
    for (name, _, node) in &shape.children {
        let path = format!("{prefix}{name}");
        let Some(place) = set.place(&path) else {
            continue;
        };
        match node {
            Node::Leaf(col) => {
                let col = *col;
                match COLUMNS.get(col).map(|c| c.kind) {
                    // Below a string nothing is: only the cell itself is read.
                    Some(Kind::Text | Kind::Bool) => {
                        out.extend(place.id().map(|id| Fill::Cell { col, id }));
                    }
                    Some(Kind::Json) => out.push(Fill::Json {
                        col,
                        place,
                        ids: place.ids(),
                    }),
                    Some(Kind::Resources) => out.push(Fill::Resources { col, place }),
                    None => {}
                }
            }
            Node::Object(inner) => {
                if let Some(id) = place.id() {
                    out.push(Fill::Object { shape: inner, id });
                }
                if place.descends() {
                    plan(inner, &format!("{path}."), set, out);
                }
            }
        }
    }
}

/// The fields of one row. Texts the row does not hold as such (a whole object, `resources`
/// with CloudTrail's keys) are written to `scratch` first, then read from there.
fn fill_row<'a>(
    fills: &[Fill<'_>],
    cell: &dyn Fn(usize) -> Option<&'a str>,
    set: &FieldSet,
    scratch: &'a mut Vec<u8>,
    spans: &mut Vec<Option<(usize, usize)>>,
) -> Fields<'a> {
    scratch.clear();
    spans.clear();
    for fill in fills {
        let start = scratch.len();
        let wrote = match fill {
            Fill::Object { shape, .. } => {
                // Only when the object has a key: an empty object is left out of the record.
                let any = shape.write_object(cell, scratch);
                if !any {
                    scratch.truncate(start);
                }
                any
            }
            Fill::Resources { col, .. } => match (cell(*col), COLUMNS.get(*col)) {
                (Some(v), Some(c)) => {
                    write_value(c, v, scratch);
                    true
                }
                _ => false,
            },
            _ => false,
        };
        spans.push(wrote.then_some((start, scratch.len())));
    }
    // Only strings of the row and JSON punctuation were written: UTF-8.
    let scratch: &'a str = std::str::from_utf8(scratch).unwrap_or_default();
    let mut out = set.empty();
    for (fill, span) in fills.iter().zip(spans.iter().copied()) {
        let text = span.and_then(|(a, b)| scratch.get(a..b));
        match fill {
            Fill::Cell { col, id } => {
                if let (Some(v), Some(slot)) = (cell(*col), out.get_mut(*id)) {
                    *slot = FieldVal::Text(Cow::Borrowed(v));
                }
            }
            Fill::Json { col, place, ids } => {
                let Some(v) = cell(*col) else { continue };
                if place.fill(v, &mut out).is_err() {
                    // Not one JSON value: the record holds it as a string.
                    for &id in ids {
                        if let Some(slot) = out.get_mut(id) {
                            *slot = FieldVal::Missing;
                        }
                    }
                    if let Some(slot) = place.id().and_then(|id| out.get_mut(id)) {
                        *slot = FieldVal::Text(Cow::Borrowed(v));
                    }
                }
            }
            Fill::Resources { place, .. } => {
                if let Some(t) = text {
                    // The text was written as JSON just above: it reads back.
                    let _ = place.fill(t, &mut out);
                }
            }
            Fill::Object { id, .. } => {
                if let (Some(t), Some(slot)) = (text, out.get_mut(*id)) {
                    *slot = FieldVal::Raw(t);
                }
            }
        }
    }
    out
}

/// The record paths as a tree, built once per query.
#[derive(Debug, Default)]
pub struct Shape {
    /// Each key, as written (`"key":`), and what it holds.
    children: Vec<(String, Vec<u8>, Node)>,
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
            None => self
                .children
                .push((path.to_string(), key(path), Node::Leaf(index))),
            Some((head, rest)) => {
                let pos = match self.children.iter().position(|(k, _, _)| k == head) {
                    Some(p) => p,
                    None => {
                        self.children.push((
                            head.to_string(),
                            key(head),
                            Node::Object(Shape::default()),
                        ));
                        self.children.len() - 1
                    }
                };
                if let Some((_, _, Node::Object(inner))) = self.children.get_mut(pos) {
                    inner.insert(rest, index);
                }
            }
        }
    }

    /// Appends the record of `row` (cells in [`COLUMNS`] order) and a newline to `out`.
    pub fn write_record<S: AsRef<str>>(&self, row: &[Option<S>], out: &mut Vec<u8>) {
        let cell = |col: usize| row.get(col).and_then(|c| c.as_ref()).map(AsRef::as_ref);
        self.write_object(&cell, out);
        out.push(b'\n');
    }

    /// Every column at and below it.
    fn leaves(&self, each: &mut dyn FnMut(usize)) {
        for (_, _, node) in &self.children {
            match node {
                Node::Leaf(col) => each(*col),
                Node::Object(inner) => inner.leaves(each),
            }
        }
    }

    /// Writes `{…}` of the cells `cell` gives by column; returns whether it has any key.
    fn write_object<'c>(&self, cell: &dyn Fn(usize) -> Option<&'c str>, out: &mut Vec<u8>) -> bool {
        out.push(b'{');
        let mut any = false;
        for (_, key, node) in &self.children {
            let mark = out.len();
            if any {
                out.push(b',');
            }
            out.extend_from_slice(key);
            let wrote = match node {
                Node::Leaf(i) => match (cell(*i), COLUMNS.get(*i)) {
                    (Some(v), Some(col)) => {
                        write_value(col, v, out);
                        true
                    }
                    _ => false,
                },
                Node::Object(inner) => inner.write_object(cell, out),
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

    /// The cells of `row` (every column) a query with `projection` selects.
    fn selected(row: &[Option<String>], projection: &Projection) -> Vec<Option<String>> {
        projection
            .columns()
            .iter()
            .map(|&c| row[c].clone())
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

    /// The records a page hands over, as text.
    struct Keep(Vec<String>);
    impl Sink for Keep {
        fn record(&mut self, loc: Loc<'_>, f: &Fields<'_>) {
            self.0.push(format!("{loc} {f:?}"));
        }
        fn problem(&mut self, p: crate::hunt::source::Problem) {
            panic!("{p:?}");
        }
    }

    /// The fields of a record read from its JSON text, and read from its row directly.
    fn both_ways(set: &FieldSet, cells: &[(&str, &str)]) -> (String, String) {
        use serde::de::DeserializeSeed;
        let r = row(cells);
        let mut text = Vec::new();
        Shape::cloudtrail().write_record(&r, &mut text);
        let text = std::str::from_utf8(&text).expect("utf-8");
        let mut de = serde_json::Deserializer::from_str(text.trim_end());
        let crate::hunt::fields::Extracted::Record(want) =
            set.seed().deserialize(&mut de).expect("a record")
        else {
            panic!("an object");
        };
        let projection = Projection::new(set);
        let rows = Rows::from_answer(answer([selected(&r, &projection)]), &projection, true)
            .expect("a row");
        let mut got = Keep(Vec::new());
        read("page", &rows, set, &mut got).expect("read");
        assert_eq!(got.0.len(), 1);
        (format!("page:1 (record 1) {want:?}"), got.0.remove(0))
    }

    /// Every kind of place a rule may read — a struct field, a whole struct, a path inside
    /// JSON text (deep, through an array), `resources`, a path below a string, a path no
    /// column has — reads the same from the row as from the record, hostile cells included.
    #[test]
    fn a_row_reads_as_its_record_reads() {
        let mut set = FieldSet::default();
        for p in [
            "eventName",
            "eventName.below",
            "userIdentity",
            "userIdentity.accessKeyId",
            "userIdentity.sessionContext",
            "userIdentity.sessionContext.sessionIssuer.arn",
            "userIdentity.sessionContext.attributes.mfaAuthenticated",
            "userIdentity.nothing",
            "requestParameters",
            "requestParameters.userName",
            "requestParameters.policy.Statement.Effect",
            "requestParameters.items.name",
            "responseElements",
            "additionalEventData.MFAUsed",
            "resources",
            "resources.ARN",
            "readOnly",
            "tlsDetails",
            "notAColumn",
        ] {
            set.intern(p);
        }
        let full: &[(&str, &str)] = &[
            ("eventname", "CreateUser"),
            ("useridentity.accesskeyid", "AKIAEXAMPLE"),
            (
                "useridentity.sessioncontext.sessionissuer.arn",
                "arn:aws:iam::1:role/r",
            ),
            (
                "useridentity.sessioncontext.attributes.mfaauthenticated",
                "false",
            ),
            (
                "requestparameters",
                r#" {"userName":"bob","policy":{"Statement":[{"Effect":"Allow"},{"Effect":"Deny"}]},"items":[{"x":1},{"name":"n\u0041"}]} "#,
            ),
            ("responseelements", "null"),
            ("additionaleventdata", r#"{"MFAUsed":"No"}"#),
            (
                "json_format(CAST(resources AS JSON))",
                r#"[{"arn":"arn:r","accountid":"1","type":"T"}]"#,
            ),
            ("readonly", "true"),
            ("tlsdetails.tlsversion", "TLSv1.3"),
        ];
        let hostile: &[&[(&str, &str)]] = &[
            full,
            &[],
            &[("eventname", "a\"b\n\u{1}c"), ("readonly", "maybe")],
            &[("requestparameters", r#"{"userName":"bob","#)],
            &[(
                "requestparameters",
                r#"{"userName":"bob"} {"userName":"eve"}"#,
            )],
            &[(
                "requestparameters",
                r#"1,"userIdentity":{"accessKeyId":"AKIAFORGED"}"#,
            )],
            &[("requestparameters", r#""just a string""#)],
            &[("requestparameters", r#"{"userName":"a","userName":"b"}"#)],
            &[("requestparameters", "")],
            &[("json_format(CAST(resources AS JSON))", "[{\"arn\":")],
            &[("json_format(CAST(resources AS JSON))", "[]")],
            &[("useridentity.sessioncontext.sessionissuer.arn", "")],
        ];
        for cells in hostile {
            let (want, got) = both_ways(&set, cells);
            assert_eq!(got, want, "{cells:?}");
        }
        let (_, got) = both_ways(&set, full);
        for seen in ["\"bob\"", "\"Allow\"", "\"nA\"", "\"arn:r\"", "\"No\""] {
            assert!(got.contains(seen), "{seen} in {got}");
        }
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

    /// A query selects the columns its rules read and nothing else (`eventtime` when they
    /// read none); its page skips Athena's header row on a query's first page only, and names
    /// the row that lacks a cell; rules reading a column the query did not select get an
    /// error, never absent fields.
    #[test]
    fn a_page_holds_what_the_rules_read() {
        let mut set = FieldSet::default();
        set.intern("eventName");
        set.intern("requestParameters.userName");
        let projection = Projection::new(&set);
        let col = |sql: &str| COLUMNS.iter().position(|c| c.sql == sql).expect("a column");
        assert_eq!(
            projection.columns(),
            [col("eventname"), col("requestparameters")]
        );
        assert_eq!(
            Projection::new(&FieldSet::default()).columns(),
            [col("eventtime")]
        );
        let params = r#"{"userName":"bob"}"#;
        let full = row(&[
            ("eventname", "CreateUser"),
            ("eventsource", "iam.amazonaws.com"),
            ("requestparameters", params),
        ]);
        let r = selected(&full, &projection);
        assert_eq!(r, [Some("CreateUser".into()), Some(params.into())]);
        let header: Vec<Option<String>> = projection
            .columns()
            .iter()
            .map(|&i| Some(super::super::query::alias(i)))
            .collect();

        let page = answer([header.clone(), r.clone()]);
        let rows = Rows::from_answer(page, &projection, true).expect("a page");
        assert_eq!(rows.len(), 1);
        assert_eq!(rows.bytes(), ("CreateUser".len() + params.len()) as u64);
        assert_eq!(rows.cell(0, col("eventname")), Some("CreateUser"));
        assert_eq!(rows.cell(0, col("requestparameters")), Some(params));
        assert_eq!(rows.cell(0, col("eventsource")), None);
        let mut got = Keep(Vec::new());
        read("page", &rows, &set, &mut got).expect("read");
        assert_eq!(got.0.len(), 1);
        assert!(got.0[0].contains("\"bob\""), "{:?}", got.0);

        // Past the first page a row spelling the aliases is a row.
        let page = answer([header, r.clone()]);
        let rows = Rows::from_answer(page, &projection, false).expect("a page");
        assert_eq!(rows.len(), 2);
        assert_eq!(rows.cell(1, col("eventname")), Some("CreateUser"));

        let mut short = r.clone();
        short.pop();
        let e = Rows::from_answer(answer([r.clone(), short]), &projection, true)
            .expect_err("a row short of a cell");
        assert_eq!(e, "row 2: 1 columns, 2 selected");
        let e = Rows::from_answer(answer([full]), &projection, true)
            .expect_err("a row of every column");
        assert_eq!(e, format!("row 1: {} columns, 2 selected", COLUMNS.len()));

        let mut other = FieldSet::default();
        other.intern("eventSource");
        let rows = Rows::from_answer(answer([r]), &projection, true).expect("a page");
        let mut got = Keep(Vec::new());
        let e = read("page", &rows, &other, &mut got).expect_err("a dropped column");
        assert!(e.to_string().contains("projected for other rules"), "{e}");
        assert!(got.0.is_empty());
    }
}
