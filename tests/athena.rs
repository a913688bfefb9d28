//! `rekey hunt --athena`: the rules compiled to SQL give the same findings as the streaming
//! engine. The SQL runs on a real SQL engine — DuckDB (PyPI `duckdb`, pinned, installed by
//! `scripts/test` into `.venv-moto`), loaded with the Invictus CloudTrail records shaped as the
//! CloudTrail table presents them, behind a three-macro dialect layer
//! (`tests/support/duckdb_athena.py`). The rows it returns go through rekey's own row-to-record
//! code and the same engine as files.
//!
//! The Athena API flow (start, poll, page, failed and cancelled queries) is tested against
//! moto's server in `athena_api`.

mod support;

use rekey::hunt::athena::rows::{Projection, Rows};
use rekey::hunt::athena::{self, Table, columns::COLUMNS, query, sql};
use rekey::hunt::engine::{self, HuntOptions, PageFeed};
use rekey::hunt::fields::Fields;
use rekey::hunt::findings::{Finding, HuntReport};
use rekey::hunt::pack::RuleSet;
use rekey::hunt::remote::{Body, Page};
use rekey::hunt::source::{self, Loc, Problem, Sink, Source};
use serde_json::Value;
use serde_json::value::RawValue;
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

const TABLE: &str = "security.cloudtrail_logs";

fn root(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(rel)
}

fn python() -> PathBuf {
    let p = root(".venv-moto/bin/python3");
    assert!(
        p.exists(),
        "{} is missing: run ./scripts/test (it installs moto and duckdb there)",
        p.display()
    );
    p
}

/// The built-in pack plus the 57 SigmaHQ CloudTrail rules.
fn all_rules() -> RuleSet {
    let mut rules = RuleSet::builtin();
    let sigma = root("../shared/datasets/sigma-aws-cloudtrail");
    if sigma.is_dir() {
        rules.add_path(&sigma).expect("SigmaHQ rules");
    }
    rules
}

/// A CloudTrail record as the table's SerDe presents it: struct columns as objects with
/// lowercase keys, JSON columns as their text, other columns as text, plus the partitions.
fn table_row(record: &RawValue) -> Value {
    let map: BTreeMap<String, &RawValue> =
        serde_json::from_str(record.get()).expect("a record is an object");
    let json_columns = [
        "requestparameters",
        "responseelements",
        "additionaleventdata",
        "serviceeventdetails",
    ];
    let mut row = serde_json::Map::new();
    for (k, raw) in &map {
        let col = k.to_ascii_lowercase();
        let v: Value = serde_json::from_str(raw.get()).expect("JSON");
        let cell = if json_columns.contains(&col.as_str()) {
            if v.is_null() {
                Value::Null
            } else {
                Value::String(raw.get().to_string())
            }
        } else if matches!(col.as_str(), "useridentity" | "resources" | "tlsdetails") {
            lowercase_keys(v)
        } else {
            match v {
                Value::String(_) | Value::Null => v,
                other => Value::String(other.to_string()),
            }
        };
        row.insert(col, cell);
    }
    let time = row
        .get("eventtime")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string();
    row.insert(
        "timestamp".into(),
        Value::String(time.get(..10).unwrap_or("").replace('-', "/")),
    );
    let region = row.get("awsregion").cloned().unwrap_or(Value::Null);
    row.insert("region".into(), region);
    Value::Object(row)
}

fn lowercase_keys(v: Value) -> Value {
    match v {
        Value::Object(m) => Value::Object(
            m.into_iter()
                .map(|(k, v)| (k.to_ascii_lowercase(), lowercase_keys(v)))
                .collect(),
        ),
        Value::Array(a) => Value::Array(a.into_iter().map(lowercase_keys).collect()),
        other => other,
    }
}

/// The dataset's records, raw.
fn records(dir: &Path) -> Vec<Box<RawValue>> {
    #[derive(serde::Deserialize)]
    struct Doc {
        #[serde(rename = "Records")]
        records: Vec<Box<RawValue>>,
    }
    let mut out = Vec::new();
    for f in support::trail::files(dir) {
        let text = std::fs::read_to_string(&f).expect("read");
        let doc: Doc = serde_json::from_str(&text).expect("a CloudTrail delivery");
        out.extend(doc.records);
    }
    out
}

/// DuckDB loaded with the dataset, answering queries.
struct Duck {
    dir: tempfile::TempDir,
    rows: PathBuf,
}

impl Duck {
    fn load(records: &[Box<RawValue>]) -> Duck {
        let dir = tempfile::tempdir().expect("tempdir");
        let rows = dir.path().join("rows.jsonl");
        let mut text = String::new();
        for r in records {
            text.push_str(&table_row(r).to_string());
            text.push('\n');
        }
        std::fs::write(&rows, text).expect("write rows");
        Duck { dir, rows }
    }

    /// Each query's rows (cells as text), or its error.
    fn run(&self, queries: &[String]) -> Vec<Result<Vec<Vec<Option<String>>>, String>> {
        let qpath = self.dir.path().join("queries.json");
        std::fs::write(&qpath, serde_json::to_string(queries).expect("json")).expect("write");
        let out = std::process::Command::new(python())
            .arg(root("tests/support/duckdb_athena.py"))
            .arg(&self.rows)
            .arg(&qpath)
            .arg(TABLE)
            .output()
            .expect("run python");
        assert!(
            out.status.success(),
            "duckdb helper failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let answers: Vec<Value> = serde_json::from_slice(&out.stdout).expect("helper JSON");
        answers
            .into_iter()
            .map(|a| match a.get("error").and_then(Value::as_str) {
                Some(e) => Err(e.to_string()),
                None => Ok(a["rows"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|r| {
                        r.as_array()
                            .into_iter()
                            .flatten()
                            .map(|c| c.as_str().map(str::to_string))
                            .collect()
                    })
                    .collect()),
            })
            .collect()
    }
}

/// Which records each rule matches, by the evaluator: eventID → matched per rule.
struct Matches<'r> {
    rules: Vec<&'r rekey::hunt::sigma::Rule>,
    id: Vec<usize>,
    out: Vec<(String, Vec<bool>)>,
}

impl Sink for Matches<'_> {
    fn record(&mut self, _: Loc<'_>, f: &Fields<'_>) {
        let id = source::first(f, &self.id).unwrap_or("").to_string();
        let m = self.rules.iter().map(|r| r.matches(f)).collect();
        self.out.push((id, m));
    }
    fn problem(&mut self, p: Problem) {
        panic!("unreadable record in the dataset: {p:?}");
    }
}

fn one_column(rows: &[Vec<Option<String>>]) -> BTreeSet<String> {
    rows.iter()
        .filter_map(|r| r.first().cloned().flatten())
        .collect()
}

/// Every rule, compiled, selects on DuckDB a superset (`over`) and a subset (`under`) of what
/// the evaluator matches in the dataset, and exactly it when the compiler says it is exact.
#[test]
fn every_rule_compiled_to_sql_matches_what_the_evaluator_matches() {
    let Some(dir) = support::trail::invictus() else {
        return;
    };
    let rules = all_rules();
    let recs = records(&dir);
    let duck = Duck::load(&recs);
    let fields = rules.fields.set(Source::Cloudtrail);
    let cloudtrail: Vec<_> = rules.for_source(Source::Cloudtrail).collect();
    assert!(
        cloudtrail.len() >= 90,
        "pack + SigmaHQ: {} CloudTrail rules",
        cloudtrail.len()
    );
    let mut sink = Matches {
        rules: cloudtrail.clone(),
        id: rules.fields.core(Source::Cloudtrail).id.clone(),
        out: Vec::new(),
    };
    for f in support::trail::files(&dir) {
        source::read_file(Source::Cloudtrail, &f, fields, &mut sink).expect("read");
    }
    assert_eq!(sink.out.len(), recs.len());
    let ids: BTreeSet<&str> = sink.out.iter().map(|(id, _)| id.as_str()).collect();
    assert_eq!(ids.len(), recs.len(), "eventIDs are unique in the dataset");
    let compiled: Vec<sql::Compiled> = cloudtrail
        .iter()
        .map(|r| sql::compile_rule(r, fields))
        .collect();
    let mut queries = Vec::new();
    for c in &compiled {
        for cond in [&c.over, &c.under] {
            queries.push(format!(
                "SELECT eventid FROM \"security\".\"cloudtrail_logs\" WHERE {cond}"
            ));
        }
    }
    let answers = duck.run(&queries);
    let (mut exact, mut broad, mut matched_any) = (0, 0, 0);
    for (i, rule) in cloudtrail.iter().enumerate() {
        let want: BTreeSet<String> = sink
            .out
            .iter()
            .filter(|(_, m)| m[i])
            .map(|(id, _)| id.clone())
            .collect();
        let over = one_column(answers[2 * i].as_ref().unwrap_or_else(|e| {
            panic!(
                "rule {}: over SQL failed on DuckDB: {e}\n{}",
                rule.id, compiled[i].over
            )
        }));
        let under = one_column(answers[2 * i + 1].as_ref().unwrap_or_else(|e| {
            panic!(
                "rule {}: under SQL failed on DuckDB: {e}\n{}",
                rule.id, compiled[i].under
            )
        }));
        assert!(
            want.is_subset(&over),
            "rule {}: the SQL misses records the evaluator matches: {:?}\n{}",
            rule.id,
            want.difference(&over).collect::<Vec<_>>(),
            compiled[i].over
        );
        assert!(
            under.is_subset(&want),
            "rule {}: `under` selects records the evaluator does not match: {:?}\n{}",
            rule.id,
            under.difference(&want).collect::<Vec<_>>(),
            compiled[i].under
        );
        if compiled[i].exact() {
            exact += 1;
            assert_eq!(over, want, "rule {} is exact", rule.id);
            assert_eq!(under, want, "rule {} is exact", rule.id);
        }
        if compiled[i].broad() {
            broad += 1;
        }
        if !want.is_empty() {
            matched_any += 1;
        }
    }
    eprintln!(
        "{} rules: {exact} exact, {broad} broad, {matched_any} match records in the dataset",
        cloudtrail.len()
    );
    assert!(matched_any >= 5, "the dataset exercises the rules");
    assert!(
        exact * 10 >= cloudtrail.len() * 7,
        "most rules compile exactly ({exact} of {})",
        cloudtrail.len()
    );
    assert!(broad <= 2, "{broad} rules narrow nothing");
}

/// Runs a hunt's queries on DuckDB and hands the rows, as the client hands GetQueryResults'
/// pages, to the same engine (rows read as records' fields, never written as records); returns
/// the report, the rows returned and the queries.
fn hunt_via_sql(
    rules: &RuleSet,
    duck: &Duck,
    opts: &HuntOptions,
    from: chrono::DateTime<chrono::Utc>,
    until: chrono::DateTime<chrono::Utc>,
) -> (HuntReport, usize, Vec<String>) {
    let table = Table::parse_name(TABLE).expect("table");
    let plan =
        query::plan(&table, rules, &opts.credentials, from, opts.since, until).expect("plan");
    let sqls: Vec<String> = plan.queries.iter().map(|q| q.sql.clone()).collect();
    let mut n = 0;
    let mut opts = opts.clone();
    opts.inputs.clear();
    let mut pages = Vec::new();
    for (i, answer) in duck.run(&sqls).into_iter().enumerate() {
        let rows = answer.unwrap_or_else(|e| panic!("query failed on DuckDB: {e}\n{}", sqls[i]));
        n += rows.len();
        for (p, chunk) in rows.chunks(1000).enumerate() {
            // As the client builds a page: GetQueryResults' answer, projected for the rules.
            let page = Rows::from_answer(
                athena::rows::answer(chunk.iter().cloned()),
                &plan.projection,
                p == 0,
            )
            .expect("one cell per column");
            pages.push(Page {
                source: Source::Cloudtrail,
                name: format!("athena:{TABLE} query {i} page {}", p + 1),
                body: Body::Rows(page),
            });
        }
    }
    let (tx, rx) = tokio::sync::mpsc::channel(pages.len().max(1));
    for p in pages {
        tx.try_send(p).expect("room for every page");
    }
    drop(tx);
    let feed: PageFeed = std::sync::Mutex::new(rx);
    (engine::run_with_pages(rules, &opts, Some(&feed)), n, sqls)
}

/// The same findings; the first difference shown, not thousands of lines.
fn same(streamed: &[String], via_sql: &[String]) {
    let only_a: Vec<&String> = streamed.iter().filter(|k| !via_sql.contains(k)).collect();
    let only_b: Vec<&String> = via_sql.iter().filter(|k| !streamed.contains(k)).collect();
    assert!(
        only_a.is_empty() && only_b.is_empty() && streamed.len() == via_sql.len(),
        "streaming {} findings, SQL {}; only streaming: {:?}; only SQL: {:?}",
        streamed.len(),
        via_sql.len(),
        only_a.iter().take(3).collect::<Vec<_>>(),
        only_b.iter().take(3).collect::<Vec<_>>()
    );
}

/// A finding without where its record was read (a file, or a query's page).
fn key(f: &Finding) -> String {
    format!(
        "{} {:?} {} {:?} {:?} {:?} {:?} {:?} {:?}",
        f.rule_id,
        f.credential,
        f.time.to_rfc3339(),
        f.action,
        f.source_ip,
        f.record_id,
        f.severity,
        f.severity_reason,
        f.detail
    )
}

fn window() -> (
    chrono::DateTime<chrono::Utc>,
    chrono::DateTime<chrono::Utc>,
    chrono::DateTime<chrono::Utc>,
) {
    let t = |s: &str| s.parse::<chrono::DateTime<chrono::Utc>>().expect("time");
    (
        t("2023-07-10T00:00:00Z"),
        t("2023-07-10T12:00:00Z"),
        t("2023-07-11T00:00:00Z"),
    )
}

/// With the credentials in scope, the queries return every record of them, and the hunt
/// finds exactly what the streaming hunt finds: rules, correlations, baselines, severities.
#[test]
fn a_scoped_hunt_through_sql_finds_what_streaming_finds() {
    let Some(dir) = support::trail::invictus() else {
        return;
    };
    let rules = all_rules();
    let duck = Duck::load(&records(&dir));
    let (from, since, until) = window();
    let opts = HuntOptions {
        inputs: vec![(Source::Cloudtrail, dir.clone())],
        credentials: vec!["AKIATFQR7NSC8Q4X20BJ".into(), "AKIATFQR7NSCUXC3DDDP".into()],
        since,
        until: Some(until),
        threads: 1,
        ..Default::default()
    };
    let streamed = engine::run(&rules, &opts);
    let (via_sql, rows, sqls) = hunt_via_sql(&rules, &duck, &opts, from, until);
    assert_eq!(sqls.len(), 2, "a baseline query and a window query");
    for s in &sqls {
        assert!(
            s.contains(
                "useridentity.accesskeyid IN ('AKIATFQR7NSC8Q4X20BJ', 'AKIATFQR7NSCUXC3DDDP')"
            ),
            "{s}"
        );
    }
    assert!(sqls[0].contains("\"timestamp\" BETWEEN '2023/07/10' AND '2023/07/10'"));
    assert!(sqls[0].contains("eventtime < '2023-07-10T12:00:00Z'"));
    assert!(sqls[1].contains("eventtime <= '2023-07-11T00:00:00Z'"));
    assert_eq!(
        rows as u64,
        streamed.stats.records - streamed.stats.out_of_scope
    );
    let a: Vec<String> = streamed.findings.iter().map(key).collect();
    let b: Vec<String> = via_sql.findings.iter().map(key).collect();
    assert!(a.len() > 20, "the hunt finds things ({} findings)", a.len());
    same(&a, &b);
    assert!(
        a.iter()
            .any(|k| k.starts_with("rekey-new-source-address")
                || k.starts_with("rekey-unusual-hour")),
        "baselines ran"
    );
}

/// Without credentials the rules themselves narrow the query: fewer rows come back, and the
/// rules and correlations find what streaming finds (per-credential baselines, which need
/// every record, are left out and the report says so).
#[test]
fn an_unscoped_hunt_through_sql_finds_what_streaming_finds() {
    let Some(dir) = support::trail::invictus() else {
        return;
    };
    let rules = all_rules();
    let recs = records(&dir);
    let duck = Duck::load(&recs);
    let (from, since, until) = window();
    let opts = HuntOptions {
        inputs: vec![(Source::Cloudtrail, dir.clone())],
        since,
        until: Some(until),
        threads: 1,
        ..Default::default()
    };
    let streamed = engine::run(&rules, &opts);
    let (via_sql, rows, sqls) = hunt_via_sql(&rules, &duck, &opts, from, until);
    // An attack simulation: most of its records match some rule.
    assert!(
        rows < recs.len(),
        "the rules narrow the query: {rows} of {} rows",
        recs.len()
    );
    eprintln!("unscoped: {rows} of {} rows returned", recs.len());
    assert!(sqls.iter().all(|s| !s.contains("accesskeyid IN")));
    // Severities "raised: first use" depend on how many records the credential had before;
    // without every record that count differs, so compare without severity.
    let strip = |f: &Finding| {
        format!(
            "{} {:?} {} {:?} {:?} {:?} {:?}",
            f.rule_id,
            f.credential,
            f.time.to_rfc3339(),
            f.action,
            f.source_ip,
            f.record_id,
            f.detail
        )
    };
    let keep = |f: &&Finding| !athena::BASELINE_RULES.contains(&&*f.rule_id);
    let a: Vec<String> = streamed.findings.iter().filter(keep).map(strip).collect();
    let b: Vec<String> = via_sql.findings.iter().filter(keep).map(strip).collect();
    assert!(a.len() > 20, "the hunt finds things ({})", a.len());
    same(&a, &b);
}

/// Rules that read nested places — struct fields deep in `userIdentity.sessionContext`, the
/// whole `sessionContext` struct, paths inside `requestParameters` (through arrays) and
/// `responseElements`, `resources` — find through the rows exactly what they find in files.
#[test]
fn nested_fields_read_from_rows_as_from_files() {
    let Some(dir) = support::trail::invictus() else {
        return;
    };
    let mut rules = RuleSet::default();
    let rule = |id: &str, detection: &str| {
        format!(
            "title: nested {id}\nid: {id}\nlogsource:\n  product: aws\n  service: cloudtrail\n\
             detection:\n{detection}\n  condition: selection\nlevel: high\n"
        )
    };
    for (id, detection) in [
        (
            "role-without-mfa",
            "  selection:\n    userIdentity.sessionContext.sessionIssuer.type: Role\n    \
             userIdentity.sessionContext.attributes.mfaAuthenticated: 'false'",
        ),
        (
            "mfa-true",
            "  selection:\n    userIdentity.sessionContext.attributes.mfaAuthenticated: 'true'",
        ),
        (
            "session-context-whole",
            // (Not `sessionIssuer`: the table cannot tell an empty struct from an absent one.)
            "  selection:\n    userIdentity.sessionContext|contains: 'mfaAuthenticated'",
        ),
        (
            "filter-through-arrays",
            "  selection:\n    requestParameters.filterSet.items.name|startswith: 'association'",
        ),
        (
            "encryption-context",
            "  selection:\n    requestParameters.encryptionContext.PARAMETER_ARN|contains: '/credentials/'",
        ),
        (
            "request-whole",
            "  selection:\n    requestParameters|contains: 'stratus'",
        ),
        (
            "issued-credentials",
            "  selection:\n    responseElements.credentials.accessKeyId|startswith: 'ASIA'",
        ),
        (
            "resource-arn",
            "  selection:\n    resources.ARN|contains: ':kms:'",
        ),
    ] {
        rules.add_text(&format!("{id}.yml"), &rule(id, detection));
    }
    assert!(rules.all_errors().is_empty(), "{:?}", rules.all_errors());
    let duck = Duck::load(&records(&dir));
    // The whole day of the dataset is the window (no baseline query).
    let (from, _, until) = window();
    let opts = HuntOptions {
        inputs: vec![(Source::Cloudtrail, dir.clone())],
        since: from,
        until: Some(until),
        threads: 1,
        ..Default::default()
    };
    let streamed = engine::run(&rules, &opts);
    let (via_rows, _, _) = hunt_via_sql(&rules, &duck, &opts, from, until);
    let a: Vec<String> = streamed.findings.iter().map(key).collect();
    let b: Vec<String> = via_rows.findings.iter().map(key).collect();
    let mut per_rule: BTreeMap<&str, usize> = BTreeMap::new();
    for f in &streamed.findings {
        *per_rule.entry(&f.rule_id).or_default() += 1;
    }
    eprintln!("nested: {per_rule:?}");
    for id in [
        "role-without-mfa",
        "mfa-true",
        "session-context-whole",
        "filter-through-arrays",
        "encryption-context",
        "request-whole",
        "issued-credentials",
        "resource-arn",
    ] {
        assert!(
            per_rule.get(id).is_some_and(|n| *n > 0),
            "{id} matches records"
        );
    }
    same(&a, &b);
}

/// Hostile rule values stay inside their SQL literals: the query still parses, and selects
/// only what the rule means.
#[test]
fn a_quote_in_a_rule_value_cannot_break_out_of_the_sql() {
    let Some(dir) = support::trail::invictus() else {
        return;
    };
    let mut rules = RuleSet::default();
    rules.add_text(
        "hostile.yml",
        r#"
title: hostile
id: hostile-1
logsource: {product: aws, service: cloudtrail}
detection:
  sel:
    eventName: "x' OR '1'='1"
  sel2:
    userAgent|contains: "'); DROP TABLE cloudtrail_logs; --"
  sel3:
    errorCode|startswith: "100%_\\"
  condition: sel or sel2 or sel3
"#,
    );
    assert!(rules.errors.is_empty(), "{:?}", rules.errors);
    let rule = rules.get("hostile-1").expect("loaded");
    let c = sql::compile_rule(rule, rules.fields.set(Source::Cloudtrail));
    assert!(c.over.contains("'x'' or ''1''=''1'"), "{}", c.over);
    let duck = Duck::load(&records(&dir));
    let q = format!(
        "SELECT count(*) FROM \"security\".\"cloudtrail_logs\" WHERE {}",
        c.over
    );
    let all = "SELECT count(*) FROM \"security\".\"cloudtrail_logs\"".to_string();
    let answers = duck.run(&[q.clone(), all]);
    let n = answers[0].as_ref().unwrap_or_else(|e| panic!("{e}\n{q}"));
    assert_eq!(
        n[0][0].as_deref(),
        Some("0"),
        "the hostile rule matches nothing"
    );
    let total = answers[1].as_ref().expect("count");
    assert_ne!(
        total[0][0].as_deref(),
        Some("0"),
        "and the table is still there"
    );
}

/// The dialect layer: DuckDB answers the Trino functions as Trino documents them.
#[test]
fn the_dialect_layer_means_what_trino_means() {
    let duck = Duck::load(&[]);
    let qs: Vec<String> = [
        // json_extract_scalar: NULL for objects and arrays, text for scalars.
        r#"SELECT json_extract_scalar('{"a":{"b":1}}', '$.a')"#,
        r#"SELECT json_extract_scalar('{"a":{"b":1}}', '$.a.b')"#,
        r#"SELECT json_extract_scalar('{"a":[1]}', '$.a')"#,
        r#"SELECT json_extract_scalar('{"a":"x"}', '$.a')"#,
        r#"SELECT json_extract_scalar('{"a":true}', '$.a')"#,
        r#"SELECT json_extract_scalar('{"a":null}', '$.a')"#,
        // regexp_like: found anywhere.
        "SELECT regexp_like('abc', 'b')",
        "SELECT regexp_like('abc', '^b')",
        "SELECT json_format(CAST([1, 2] AS JSON))",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let got: Vec<Option<String>> = duck
        .run(&qs)
        .into_iter()
        .map(|a| a.expect("query")[0][0].clone())
        .collect();
    let want: Vec<Option<&str>> = vec![
        None,
        Some("1"),
        None,
        Some("x"),
        Some("true"),
        None,
        Some("true"),
        Some("false"),
        Some("[1,2]"),
    ];
    assert_eq!(got.iter().map(|g| g.as_deref()).collect::<Vec<_>>(), want);
}

// ---------------------------------------------------------------------------------------
// The Athena API flow.

use rekey::hunt::athena::client::Pace;
use rekey::hunt::remote::{self, Context, Credentials, Remote, Window};
use std::sync::Arc;

/// The scoped hunt of the differential test.
fn scoped_opts(dir: &Path) -> HuntOptions {
    let (_, since, until) = window();
    HuntOptions {
        inputs: vec![(Source::Cloudtrail, dir.to_path_buf())],
        credentials: vec!["AKIATFQR7NSC8Q4X20BJ".into(), "AKIATFQR7NSCUXC3DDDP".into()],
        since,
        until: Some(until),
        threads: 1,
        ..Default::default()
    }
}

/// A result set as GetQueryResults gives it: the header row (the aliases of the columns the
/// query selects), then the rows.
fn result_rows(projection: &Projection, rows: &[Vec<Option<String>>]) -> Vec<Value> {
    let datum = |c: Option<&str>| match c {
        Some(v) => serde_json::json!({"VarCharValue": v}),
        None => serde_json::json!({}),
    };
    let header: Vec<Value> = projection
        .columns()
        .iter()
        .map(|&i| datum(Some(&query::alias(i))))
        .collect();
    std::iter::once(serde_json::json!({ "Data": header }))
        .chain(rows.iter().map(|r| {
            serde_json::json!({"Data": r.iter().map(|c| datum(c.as_deref())).collect::<Vec<_>>()})
        }))
        .collect()
}

fn athena_ctx(config: aws_config::SdkConfig) -> Arc<Context> {
    Arc::new(Context {
        credentials: Credentials {
            aws: Some(config),
            ..Default::default()
        },
        ..Default::default()
    })
}

/// The test table, polled every 20 ms at first, `page_rows` rows a page.
fn test_table(page_rows: i32) -> Table {
    let mut t = Table::parse_name(TABLE).expect("table");
    t.pace = Pace {
        first_poll: std::time::Duration::from_millis(20),
        page_rows,
    };
    t
}

async fn moto_post(moto: &support::moto::Moto, path: &str, body: Value) {
    let status = reqwest::Client::new()
        .post(format!("{}{path}", moto.url))
        .json(&body)
        .send()
        .await
        .map(|r| r.status())
        .unwrap_or_else(|e| panic!("POST {path}: {e}"));
    assert!(status.is_success(), "POST {path}: {status}");
}

/// Against moto's server: the queries are started, polled while queued and running, their
/// results (set the documented way, rows DuckDB computed from the same SQL) read and hunted:
/// the same findings as streaming, and the cost line shown.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_api_flow_against_moto_finds_what_streaming_finds() {
    let Some(dir) = support::trail::invictus() else {
        return;
    };
    let Some(moto) = support::moto::Moto::start().await else {
        return;
    };
    let rules = all_rules();
    let opts = scoped_opts(&dir);
    let streamed = engine::run(&rules, &opts);
    let (from, since, until) = window();
    let table = test_table(1000);
    let plan = query::plan(&table, &rules, &opts.credentials, from, since, until).expect("plan");
    let sqls: Vec<String> = plan.queries.iter().map(|q| q.sql.clone()).collect();
    let duck = Duck::load(&records(&dir));
    let results: Vec<Value> = duck
        .run(&sqls)
        .into_iter()
        .map(|a| serde_json::json!({"rows": result_rows(&plan.projection, &a.expect("DuckDB")), "column_info": []}))
        .collect();
    moto_post(
        &moto,
        "/moto-api/static/athena/query-results",
        serde_json::json!({"results": results}),
    )
    .await;
    // Each query is seen queued, then running, before it succeeds.
    moto_post(
        &moto,
        "/moto-api/state-manager/set-transition",
        serde_json::json!({"model_name": "athena::execution", "transition": {"progression": "manual", "times": 2}}),
    )
    .await;
    let mut athena_opts = opts.clone();
    athena_opts.inputs.clear();
    let report = remote::hunt(
        Arc::new(rules),
        athena_opts,
        vec![Remote::Athena(table)],
        Window { from, until },
        athena_ctx(moto.config().clone()),
    )
    .await;
    assert!(report.incomplete.is_empty(), "{:?}", report.incomplete);
    same(
        &streamed.findings.iter().map(key).collect::<Vec<_>>(),
        &report.findings.iter().map(key).collect::<Vec<_>>(),
    );
    assert!(
        report
            .notes
            .iter()
            .any(|n| n.contains("Athena scanned 0 B in 2 query(ies), about $0.0000")),
        "{:?}",
        report.notes
    );
    assert!(
        report
            .findings
            .iter()
            .filter(|f| f.record_id.is_some())
            .all(|f| f
                .location
                .starts_with("athena:security.cloudtrail_logs window query ")
                || f.location
                    .starts_with("athena:security.cloudtrail_logs baseline query ")),
        "findings say which query and page they came from"
    );
}

/// A query cancelled while rekey waits for it is a source not read: the hunt is incomplete
/// (`rekey hunt` exits 1), never clean.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancelled_query_leaves_the_hunt_incomplete() {
    let Some(moto) = support::moto::Moto::start().await else {
        return;
    };
    // Queued for good: only StopQueryExecution ends it.
    moto_post(
        &moto,
        "/moto-api/state-manager/set-transition",
        serde_json::json!({"model_name": "athena::execution", "transition": {"progression": "manual", "times": 1000000}}),
    )
    .await;
    let (from, since, until) = window();
    let opts = HuntOptions {
        credentials: vec!["AKIAEXAMPLE".into()],
        since,
        until: Some(until),
        ..Default::default()
    };
    let client = aws_sdk_athena::Client::new(moto.config());
    let stopper = tokio::spawn(async move {
        loop {
            if let Ok(list) = client.list_query_executions().send().await {
                for id in list.query_execution_ids() {
                    let _ = client
                        .stop_query_execution()
                        .query_execution_id(id)
                        .send()
                        .await;
                }
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    });
    let report = remote::hunt(
        Arc::new(RuleSet::builtin()),
        opts,
        vec![Remote::Athena(test_table(1000))],
        Window { from, until },
        athena_ctx(moto.config().clone()),
    )
    .await;
    stopper.abort();
    assert_eq!(report.incomplete.len(), 2, "{:?}", report.incomplete);
    for p in &report.incomplete {
        assert!(p.message.contains("was cancelled"), "{p:?}");
        assert!(
            p.location.starts_with("athena:security.cloudtrail_logs"),
            "{p:?}"
        );
    }
    assert!(report.findings.is_empty());
}

/// moto 5.2.5 answers GetQueryResults in one page and never fails a query. For those two
/// paths, a stand-in on 127.0.0.1 answers as the Athena API reference documents (JSON 1.1,
/// `X-Amz-Target`, `NextToken`, `FAILED` with a reason, `DataScannedInBytes`).
struct StandIn {
    url: String,
    seen: Arc<std::sync::Mutex<Vec<(String, Value)>>>,
}

impl StandIn {
    fn start(projection: Projection, rows: Vec<Vec<Option<String>>>, fail: bool) -> StandIn {
        use std::io::{BufRead, BufReader, Read, Write};
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let url = format!("http://{}", listener.local_addr().expect("addr"));
        let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
        let log = seen.clone();
        std::thread::spawn(move || {
            let all = result_rows(&projection, &rows);
            let mut polls = 0;
            for stream in listener.incoming().flatten() {
                let mut reader = BufReader::new(stream.try_clone().expect("clone"));
                let (mut target, mut len) = (String::new(), 0usize);
                loop {
                    let mut line = String::new();
                    if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                        break;
                    }
                    let lower = line.to_ascii_lowercase();
                    if let Some(v) = lower.strip_prefix("x-amz-target:") {
                        target = v.trim().to_string();
                    }
                    if let Some(v) = lower.strip_prefix("content-length:") {
                        len = v.trim().parse().unwrap_or(0);
                    }
                }
                let mut body = vec![0; len];
                let _ = reader.read_exact(&mut body);
                let req: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
                log.lock().expect("log").push((target.clone(), req.clone()));
                let answer = match target.as_str() {
                    "amazonathena.startqueryexecution" => {
                        serde_json::json!({"QueryExecutionId": "q-1"})
                    }
                    "amazonathena.getqueryexecution" => {
                        polls += 1;
                        let state = if polls == 1 {
                            "RUNNING"
                        } else if fail {
                            "FAILED"
                        } else {
                            "SUCCEEDED"
                        };
                        serde_json::json!({"QueryExecution": {"QueryExecutionId": "q-1",
                            "Status": {"State": state, "StateChangeReason": "HIVE_BAD_DATA: Error parsing field value"},
                            "Statistics": {"DataScannedInBytes": 2_500_000_000u64}}})
                    }
                    "amazonathena.getqueryresults" => {
                        let size = req["MaxResults"].as_u64().unwrap_or(1000) as usize;
                        let at: usize = req["NextToken"]
                            .as_str()
                            .and_then(|t| t.parse().ok())
                            .unwrap_or(0);
                        let end = (at + size).min(all.len());
                        let mut page = serde_json::json!({"ResultSet": {"Rows": all[at..end].to_vec(),
                            "ResultSetMetadata": {"ColumnInfo": []}}});
                        if end < all.len() {
                            page["NextToken"] = Value::String(end.to_string());
                        }
                        page
                    }
                    _ => serde_json::json!({}),
                };
                let text = answer.to_string();
                let mut s = stream;
                let _ = write!(
                    s,
                    "HTTP/1.1 200 OK\r\nContent-Type: application/x-amz-json-1.1\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{text}",
                    text.len()
                );
            }
        });
        StandIn { url, seen }
    }

    fn targets(&self) -> Vec<(String, Value)> {
        self.seen.lock().expect("log").clone()
    }
}

/// Results come in pages of `MaxResults` rows linked by `NextToken`: every page is read, the
/// header row skipped once, and the bytes scanned shown with their cost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn results_are_read_page_by_page_and_the_cost_is_shown() {
    let Some(dir) = support::trail::invictus() else {
        return;
    };
    let rules = all_rules();
    let mut opts = scoped_opts(&dir);
    opts.credentials = vec!["AKIATFQR7NSC8Q4X20BJ".into()];
    let (_, since, until) = window();
    // One query (no baseline), its rows computed by DuckDB.
    let table = test_table(100);
    let plan = query::plan(&table, &rules, &opts.credentials, since, since, until).expect("plan");
    assert_eq!(plan.queries.len(), 1);
    let duck = Duck::load(&records(&dir));
    let rows = duck
        .run(&[plan.queries[0].sql.clone()])
        .remove(0)
        .expect("DuckDB");
    assert!(rows.len() > 300, "{} rows", rows.len());
    let stand_in = StandIn::start(plan.projection.clone(), rows.clone(), false);
    let config = support::moto::config_with(&stand_in.url, "AKIDSTANDIN", "secret").await;
    let mut athena_opts = opts.clone();
    athena_opts.inputs.clear();
    let report = remote::hunt(
        Arc::new(rules),
        athena_opts,
        vec![Remote::Athena(table)],
        Window { from: since, until },
        athena_ctx(config),
    )
    .await;
    assert!(report.incomplete.is_empty(), "{:?}", report.incomplete);
    let pages: Vec<Value> = stand_in
        .targets()
        .into_iter()
        .filter(|(t, _)| t == "amazonathena.getqueryresults")
        .map(|(_, r)| r)
        .collect();
    assert_eq!(
        pages.len(),
        (rows.len() + 1).div_ceil(100),
        "every page read"
    );
    assert!(pages[0].get("NextToken").is_none());
    assert_eq!(pages[1]["NextToken"], "100");
    assert!(pages.iter().all(|p| p["MaxResults"] == 100));
    assert_eq!(
        report.stats.records as usize,
        rows.len(),
        "each row once, no header"
    );
    assert!(
        report
            .notes
            .iter()
            .any(|n| n.contains("Athena scanned 2.5 GB in 1 query(ies), about $0.0125")),
        "{:?}",
        report.notes
    );
    assert!(!report.findings.is_empty());
}

/// A failed query is a source not read, with Athena's reason; never an empty, clean result.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_query_leaves_the_hunt_incomplete_with_its_reason() {
    let stand_in = StandIn::start(Projection::all(), Vec::new(), true);
    let config = support::moto::config_with(&stand_in.url, "AKIDSTANDIN", "secret").await;
    let (_, since, until) = window();
    let report = remote::hunt(
        Arc::new(RuleSet::builtin()),
        HuntOptions {
            credentials: vec!["AKIAEXAMPLE".into()],
            since,
            until: Some(until),
            ..Default::default()
        },
        vec![Remote::Athena(test_table(1000))],
        Window { from: since, until },
        athena_ctx(config),
    )
    .await;
    assert_eq!(report.incomplete.len(), 1, "{:?}", report.incomplete);
    assert!(
        report.incomplete[0]
            .message
            .contains("query q-1 failed: HIVE_BAD_DATA"),
        "{:?}",
        report.incomplete
    );
    assert!(
        !stand_in
            .targets()
            .iter()
            .any(|(t, _)| t == "amazonathena.getqueryresults"),
        "no results read from a failed query"
    );
}

/// The narrowing in the generated SQL: partitions of the window's days (and regions), event
/// time, credentials; without credentials, the rules.
#[test]
fn queries_are_narrowed_by_partitions_time_regions_and_credentials() {
    let rules = RuleSet::builtin();
    let t = |s: &str| s.parse::<chrono::DateTime<chrono::Utc>>().expect("time");
    let mut table = Table::parse_name("security.org_trail").expect("table");
    table.regions = vec!["us-east-1".into(), "eu-west-1".into()];
    table.region_partition = true;
    let plan = query::plan(
        &table,
        &rules,
        &["AKIAOLD".to_string()],
        t("2024-03-01T00:00:00Z"),
        t("2024-03-30T06:00:00Z"),
        t("2024-04-02T00:00:00Z"),
    )
    .expect("plan");
    let [baseline, window] = &plan.queries[..] else {
        panic!("two queries: {plan:?}")
    };
    assert!(
        baseline
            .sql
            .contains("\"timestamp\" BETWEEN '2024/03/01' AND '2024/03/30'")
    );
    assert!(
        baseline
            .sql
            .contains("eventtime >= '2024-03-01T00:00:00Z' AND eventtime < '2024-03-30T06:00:00Z'")
    );
    assert!(
        window
            .sql
            .contains("\"timestamp\" BETWEEN '2024/03/30' AND '2024/04/02'")
    );
    assert!(
        window.sql.contains(
            "eventtime >= '2024-03-30T06:00:00Z' AND eventtime <= '2024-04-02T00:00:00Z'"
        )
    );
    for q in [baseline, window] {
        assert!(
            q.sql.contains("region IN ('us-east-1', 'eu-west-1')"),
            "{}",
            q.sql
        );
        assert!(q.sql.contains("awsregion IN ('us-east-1', 'eu-west-1')"));
        assert!(q.sql.contains("useridentity.accesskeyid IN ('AKIAOLD')"));
        assert!(q.sql.contains("FROM \"security\".\"org_trail\""));
        // They select the columns the rules and attribution read, and nothing else.
        let head = &q.sql[..q.sql.find("\nFROM").expect("FROM")];
        for (i, c) in COLUMNS.iter().enumerate() {
            let column = format!("{} AS {}", c.sql, query::alias(i));
            let selected = plan.projection.columns().contains(&i);
            assert_eq!(head.contains(&column), selected, "{column} in {head}");
        }
    }
    assert_eq!(
        plan.projection,
        Projection::new(rules.fields.set(Source::Cloudtrail))
    );
    assert!(plan.projection.columns().len() < COLUMNS.len());
    assert_eq!(baseline.partitions, 30 * 2);
    assert_eq!(window.partitions, 4 * 2);
    // Without credentials the rules narrow the rows.
    let plan = query::plan(
        &table,
        &rules,
        &[],
        t("2024-03-30T06:00:00Z"),
        t("2024-03-30T06:00:00Z"),
        t("2024-04-02T00:00:00Z"),
    )
    .expect("plan");
    assert_eq!(plan.queries.len(), 1);
    let sql = &plan.queries[0].sql;
    assert!(!sql.contains("accesskeyid IN"));
    assert!(sql.contains("lower(eventname) = 'stoplogging'"), "{sql}");
    assert!(
        plan.notes
            .iter()
            .any(|n| n.contains("baselines were not computed"))
    );
    // The days whose partitions the dry run's estimate lists.
    let d = |s: &str| s.parse::<chrono::NaiveDate>().expect("date");
    assert_eq!(baseline.days, (d("2024-03-01"), d("2024-03-30")));
    assert_eq!(window.days, (d("2024-03-30"), d("2024-04-02")));
}

/// A plan may name the table as a CloudTrail source; anywhere else, or malformed, it is a
/// located error.
#[test]
fn plans_accept_an_athena_table_as_their_cloudtrail_source() {
    use rekey::plan::{load, validate};
    let plan = |sources: &str| {
        format!(
            "apiVersion: rekey/v1\nkind: RotationPlan\nmetadata:\n  name: t\nhunts:\n  pre: [aws-recon]\n  sources: {sources}\ntargets:\n  - id: aws-a\n    provider: aws-iam\n    principal: {{user: ci}}\n    bindings:\n      - project: gh/acme/api\n        vars: {{access_key_id: AWS_ACCESS_KEY_ID, secret_access_key: AWS_SECRET_ACCESS_KEY}}\n"
        )
    };
    let errors = |text: &str| -> Vec<String> {
        let p = load::parse("plan.yaml", text).expect("parses");
        validate::validate("plan.yaml", text, &p)
            .into_iter()
            .filter(|d| d.is_error())
            .map(|d| format!("{}:{} {}", d.line, d.column, d.message))
            .collect()
    };
    assert_eq!(
        errors(&plan(
            "{cloudtrail: ['athena:security.cloudtrail_logs?workgroup=hunting']}"
        )),
        Vec::<String>::new()
    );
    let e = errors(&plan("{github_audit: ['athena:security.cloudtrail_logs']}"));
    assert_eq!(e.len(), 1, "{e:?}");
    assert!(
        e[0].starts_with("7:") && e[0].contains("holds only CloudTrail"),
        "{e:?}"
    );
    let e = errors(&plan("{cloudtrail: ['athena:nodot']}"));
    assert!(
        e.len() == 1 && e[0].contains("expected DATABASE.TABLE"),
        "{e:?}"
    );
}

/// `rekey hunt --athena …` with the environment a test controls (no profile, no instance
/// metadata).
fn rekey_cmd() -> std::process::Command {
    let mut c = std::process::Command::new(env!("CARGO_BIN_EXE_rekey"));
    c.env_remove("RUST_LOG")
        .env_remove("AWS_PROFILE")
        .env("AWS_REGION", "us-east-1")
        .env("AWS_CONFIG_FILE", "/dev/null")
        .env("AWS_SHARED_CREDENTIALS_FILE", "/dev/null")
        .env("AWS_EC2_METADATA_DISABLED", "true");
    c
}

/// `rekey hunt --athena … --dry-run` prints the queries and what they read, and starts no
/// query; with no catalog to ask (no AWS endpoint is reachable here) the estimate says so and
/// the dry run still succeeds.
#[test]
fn the_dry_run_prints_the_sql_and_spends_nothing() {
    let out = rekey_cmd()
        .args([
            "hunt",
            "--athena",
            "security.cloudtrail_logs",
            "--athena-region",
            "us-east-1",
            "--access-key-id",
            "AKIAEXAMPLEOLD",
            "--since",
            "2024-03-30T06:00:00Z",
            "--until",
            "2024-04-02T00:00:00Z",
            "--baseline",
            "2d",
            "--dry-run",
        ])
        .env("AWS_ENDPOINT_URL", "http://127.0.0.1:9")
        .env("AWS_ACCESS_KEY_ID", "AKIDNOTUSED")
        .env("AWS_SECRET_ACCESS_KEY", "not-used")
        .output()
        .expect("run rekey");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("-- athena:security.cloudtrail_logs baseline query: 3 partition(s)"),
        "{stdout}"
    );
    assert!(
        stdout.contains("-- athena:security.cloudtrail_logs window query: 4 partition(s)"),
        "{stdout}"
    );
    assert!(
        stdout.contains("\"timestamp\" BETWEEN '2024/03/28' AND '2024/03/30'"),
        "{stdout}"
    );
    assert!(stdout.contains("useridentity.accesskeyid IN ('AKIAEXAMPLEOLD')"));
    assert!(stdout.contains("awsregion IN ('us-east-1')"));
    for label in ["baseline", "window"] {
        assert!(
            stdout.contains(&format!(
                "-- athena:security.cloudtrail_logs {label} query: no estimate: Glue GetTable security.cloudtrail_logs"
            )),
            "{stdout}"
        );
    }
    assert!(!stdout.contains("estimated scan"), "{stdout}");
}

const TRAIL_BUCKET: &str = "trail-estimate";
const TRAIL_BASE: &str = "s3://trail-estimate/AWSLogs/111122223333/CloudTrail";

/// A CloudTrail table in moto's Glue, partitioned by region and day, with these parameters.
async fn create_table(glue: &aws_sdk_glue::Client, name: &str, params: &[(&str, &str)]) {
    use aws_sdk_glue::types::{Column, StorageDescriptor, TableInput};
    let key = |n: &str| {
        Column::builder()
            .name(n)
            .r#type("string")
            .build()
            .expect("column")
    };
    let mut input = TableInput::builder()
        .name(name)
        .storage_descriptor(StorageDescriptor::builder().location(TRAIL_BASE).build())
        .partition_keys(key("region"))
        .partition_keys(key("timestamp"));
    for (k, v) in params {
        input = input.parameters(*k, *v);
    }
    glue.create_table()
        .database_name("security")
        .table_input(input.build().expect("table input"))
        .send()
        .await
        .unwrap_or_else(|e| panic!("Glue CreateTable: {}", support::moto::describe(&e)));
}

/// A table projected by region and day, the AWS way, with this location template.
async fn create_projected_table(glue: &aws_sdk_glue::Client, name: &str, template: &str) {
    create_table(
        glue,
        name,
        &[
            ("projection.enabled", "true"),
            ("projection.region.type", "enum"),
            ("projection.region.values", "us-east-1,eu-west-1,ap-south-1"),
            ("projection.timestamp.type", "date"),
            ("projection.timestamp.format", "yyyy/MM/dd"),
            ("projection.timestamp.range", "2020/01/01,NOW"),
            ("projection.timestamp.interval", "1"),
            ("projection.timestamp.interval.unit", "DAYS"),
            ("storage.location.template", template),
        ],
    )
    .await;
}

/// A table whose partitions are registered in Glue (no projection).
async fn create_registered_table(glue: &aws_sdk_glue::Client) {
    use aws_sdk_glue::types::{PartitionInput, StorageDescriptor};
    create_table(glue, "registered", &[]).await;
    for (region, day) in [
        ("us-east-1", "2024/03/30"),
        ("eu-west-1", "2024/03/31"),
        ("us-east-1", "2024/03/28"),
        ("ap-south-1", "2024/03/30"),
    ] {
        glue.create_partition()
            .database_name("security")
            .table_name("registered")
            .partition_input(
                PartitionInput::builder()
                    .values(region)
                    .values(day)
                    .storage_descriptor(
                        StorageDescriptor::builder()
                            .location(format!("{TRAIL_BASE}/{region}/{day}"))
                            .build(),
                    )
                    .build(),
            )
            .send()
            .await
            .unwrap_or_else(|e| panic!("Glue CreatePartition: {}", support::moto::describe(&e)));
    }
}

/// The dry run's estimate against moto's Glue and S3: objects of known sizes under days and
/// regions inside and outside each query's partitions (more than one ListObjectsV2 page in
/// one of them), for a projected table and one whose partitions are registered in Glue; the
/// estimate is exactly the bytes inside. An absent table and a hostile
/// template give "no estimate: …", and the dry run's exit code is unchanged.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dry_run_estimates_the_bytes_under_the_partitions_it_reads() {
    use aws_credential_types::provider::ProvideCredentials;
    use futures::StreamExt;
    let Some(moto) = support::moto::Moto::start().await else {
        return;
    };
    let glue = aws_sdk_glue::Client::new(moto.config());
    glue.create_database()
        .database_input(
            aws_sdk_glue::types::DatabaseInput::builder()
                .name("security")
                .build()
                .expect("database input"),
        )
        .send()
        .await
        .unwrap_or_else(|e| panic!("Glue CreateDatabase: {}", support::moto::describe(&e)));
    let base = TRAIL_BASE;
    create_projected_table(
        &glue,
        "cloudtrail_logs",
        &format!("{base}/${{region}}/${{timestamp}}"),
    )
    .await;
    create_projected_table(
        &glue,
        "hostile",
        &format!("{base}/../../other/${{region}}/${{timestamp}}"),
    )
    .await;
    create_registered_table(&glue).await;
    let s3 = support::trail::s3(moto.config());
    s3.create_bucket()
        .bucket(TRAIL_BUCKET)
        .send()
        .await
        .expect("create bucket");
    let prefix = "AWSLogs/111122223333/CloudTrail";
    let mut objects: Vec<(String, usize)> = [
        // The baseline's days (03/29, 03/30) and the window's (03/30 to 04/01).
        ("us-east-1/2024/03/29/a.json.gz", 100),
        ("us-east-1/2024/03/30/a.json.gz", 200),
        ("eu-west-1/2024/03/31/a.json.gz", 300),
        ("eu-west-1/2024/03/31/b.json.gz", 50),
        ("us-east-1/2024/04/01/a.json.gz", 400),
        // Outside: days before and after, a region not asked for.
        ("us-east-1/2024/03/28/x.json.gz", 1000),
        ("us-east-1/2024/04/02/x.json.gz", 2000),
        ("ap-south-1/2024/03/30/x.json.gz", 4000),
    ]
    .iter()
    .map(|(k, n)| (format!("{prefix}/{k}"), *n))
    .collect();
    // Another account's trail beside it.
    objects.push((
        "AWSLogs/999999999999/CloudTrail/us-east-1/2024/03/30/x.json.gz".into(),
        8000,
    ));
    // More than a page (1,000 keys) in one partition of the window.
    for i in 0..1010 {
        objects.push((
            format!("{prefix}/eu-west-1/2024/04/01/many/{i:04}.json.gz"),
            1,
        ));
    }
    let s3 = &s3;
    futures::stream::iter(objects)
        .map(|(key, n)| async move {
            support::trail::put(s3, TRAIL_BUCKET, &key, vec![b'x'; n]).await;
        })
        .buffer_unordered(16)
        .collect::<Vec<()>>()
        .await;
    let creds = moto
        .config()
        .credentials_provider()
        .expect("credentials")
        .provide_credentials()
        .await
        .expect("credentials");
    let url = moto.url.clone();
    let run = move |table: &str| {
        let out = rekey_cmd()
            .args([
                "hunt",
                "--athena",
                table,
                "--athena-region",
                "us-east-1",
                "--athena-region",
                "eu-west-1",
                "--athena-region-partition",
                "--access-key-id",
                "AKIAEXAMPLEOLD",
                "--since",
                "2024-03-30T06:00:00Z",
                "--until",
                "2024-04-01T12:00:00Z",
                "--baseline",
                "1d",
                "--dry-run",
            ])
            .env("AWS_ENDPOINT_URL", &url)
            .env("AWS_ACCESS_KEY_ID", creds.access_key_id())
            .env("AWS_SECRET_ACCESS_KEY", creds.secret_access_key())
            .output()
            .expect("run rekey");
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(
            out.status.success(),
            "{stdout}{}",
            String::from_utf8_lossy(&out.stderr)
        );
        stdout
    };
    let (a, b, c, d) = tokio::task::spawn_blocking(move || {
        (
            run("security.cloudtrail_logs"),
            run("security.nosuch"),
            run("security.hostile"),
            run("security.registered"),
        )
    })
    .await
    .expect("rekey ran");
    // Partitions registered in Glue: those of the query's days and regions, as it compares them.
    assert!(
        d.contains("baseline query estimated scan: 200 B (200 bytes in 1 S3 object(s) under the 1 partition prefix(es)"),
        "{d}"
    );
    assert!(
        d.contains("window query estimated scan: 550 B (550 bytes in 3 S3 object(s) under the 2 partition prefix(es)"),
        "{d}"
    );
    assert!(
        a.contains(
            "-- athena:security.cloudtrail_logs baseline query estimated scan: 300 B (300 bytes in 2 S3 object(s) under the 4 partition prefix(es) the query reads), about $0.0000 at $5/TB — an upper bound"
        ),
        "{a}"
    );
    assert!(
        a.contains(
            "-- athena:security.cloudtrail_logs window query estimated scan: 2.0 KB (1960 bytes in 1014 S3 object(s) under the 6 partition prefix(es) the query reads)"
        ),
        "{a}"
    );
    assert!(
        b.contains("baseline query: no estimate: Glue GetTable security.nosuch")
            && b.contains("window query: no estimate: Glue GetTable security.nosuch"),
        "{b}"
    );
    assert!(
        c.contains("window query: no estimate: location `s3://trail-estimate/AWSLogs/111122223333/CloudTrail/../../other/"),
        "{c}"
    );
    for out in [&b, &c] {
        assert!(!out.contains("estimated scan"), "{out}");
        assert!(out.contains("SELECT "), "the SQL is still printed: {out}");
    }
}
