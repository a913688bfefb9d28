//! The queries of one Athena hunt: what they select (the columns the rules and attribution
//! read: [`Projection`]), and the narrowing in their WHERE clause — the `timestamp` partitions
//! of the window's days (and the `region` partitions when the table has them), the event time,
//! the credentials in scope, and without credentials the rules themselves.
//!
//! Why the rules narrow only a hunt without credentials: per-credential checks (new address,
//! hour and country baselines; the old credential used after its deactivation) read every
//! record of the credential, not only the rules' matches. With credentials in scope the query
//! returns all their records and the engine does everything it does on files; without, it
//! returns the rows some rule may match, and those baselines are not computed (the report
//! says so). On the JSON CloudTrail table the WHERE clause reduces the rows returned, not the
//! bytes scanned: only partitions do that.

use super::Table;
use super::columns::COLUMNS;
use super::rows::Projection;
use super::sql::{self, TRUE, and, literal, or};
use crate::hunt::pack::RuleSet;
use crate::hunt::source::Source;
use chrono::{DateTime, NaiveDate, Utc};

/// One query to run.
#[derive(Debug, Clone, PartialEq)]
pub struct Query {
    /// `baseline` or `window`.
    pub label: &'static str,
    pub sql: String,
    /// Days (× regions, when partitioned by region) of partitions it reads.
    pub partitions: u64,
    /// Its first and last day (the `timestamp` partitions it reads).
    pub days: (NaiveDate, NaiveDate),
}

/// The queries of a hunt and what the report should say about them.
#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    pub queries: Vec<Query>,
    pub notes: Vec<String>,
    /// No credentials in scope: only rule matches come back (per-credential baselines are
    /// not computed).
    pub unscoped: bool,
    /// The columns the queries select: those the rules and attribution read.
    pub projection: Projection,
}

/// The alias of the `i`th selected column (the header row Athena returns names them).
pub fn alias(i: usize) -> String {
    format!("c{i:02}")
}

/// `SELECT … FROM "db"."table"`: the columns of `projection`, each aliased by its index in
/// [`COLUMNS`].
fn select(table: &Table, projection: &Projection) -> Result<String, String> {
    let cols: Vec<String> = projection
        .columns()
        .iter()
        .filter_map(|&i| Some(format!("{} AS {}", COLUMNS.get(i)?.sql, alias(i))))
        .collect();
    Ok(format!(
        "SELECT {}\nFROM {}.{}",
        cols.join(", "),
        sql::identifier(&table.database)?,
        sql::identifier(&table.table)?
    ))
}

/// The rules' filter for a hunt without credentials, and what the report says about the
/// rules that cannot narrow it.
pub fn rules_filter(rules: &RuleSet) -> (String, Vec<String>) {
    let fields = rules.fields.set(Source::Cloudtrail);
    let mut overs = Vec::new();
    let mut notes = Vec::new();
    for rule in rules.for_source(Source::Cloudtrail) {
        let c = sql::compile_rule(rule, fields);
        if c.broad() {
            notes.push(format!(
                "rule {} ran locally on the rows of a broad query: {}",
                rule.id,
                c.inexact.join("; ")
            ));
        }
        overs.push(c.over);
    }
    for c in &rules.correlations {
        notes.push(format!(
            "correlation {} counted locally over the rows of its rules",
            c.spec.title
        ));
    }
    (or(overs), notes)
}

/// `yyyy/MM/dd`, the `timestamp` partition's format in AWS's projection example.
fn day(t: DateTime<Utc>) -> String {
    t.format("%Y/%m/%d").to_string()
}

/// CloudTrail's `eventTime` format; strings of it compare as times.
fn event_time(t: DateTime<Utc>) -> String {
    t.format("%Y-%m-%dT%H:%M:%SZ").to_string()
}

/// The queries for a hunt from `from` to `until` with the incident start `since`: one for the
/// baseline before `since` (when there is one), one for the window.
pub fn plan(
    table: &Table,
    rules: &RuleSet,
    credentials: &[String],
    from: DateTime<Utc>,
    since: DateTime<Utc>,
    until: DateTime<Utc>,
) -> Result<Plan, String> {
    let projection = Projection::new(rules.fields.set(Source::Cloudtrail));
    let head = select(table, &projection)?;
    let mut out = Plan {
        unscoped: credentials.is_empty(),
        projection,
        queries: Vec::new(),
        notes: Vec::new(),
    };
    let mut common = Vec::new();
    if !table.regions.is_empty() {
        let list = in_list(&table.regions)?;
        if table.region_partition {
            common.push(format!("region IN {list}"));
        }
        common.push(format!("awsregion IN {list}"));
    }
    if credentials.is_empty() {
        let (filter, notes) = rules_filter(rules);
        out.notes.extend(notes);
        out.notes.push(
            "Athena without --access-key-id: only rows a rule may match were read, so address, country and hour baselines were not computed"
                .into(),
        );
        if filter == TRUE {
            out.notes
                .push("a rule narrows nothing: the query reads every row of the window".into());
        }
        common.push(filter);
    } else {
        // The engine's scope: the key id, or the principal (arn, else invokedBy).
        let list = in_list(credentials)?;
        common.push(format!(
            "(useridentity.accesskeyid IN {list} OR useridentity.arn IN {list} OR useridentity.invokedby IN {list})"
        ));
        out.notes.push(
            "Athena: every record of the credentials in scope was read; the rules and baselines ran on them as on files"
                .into(),
        );
    }
    let regions = if table.region_partition {
        table.regions.len().max(1) as u64
    } else {
        1
    };
    let mut push = |label: &'static str, a: DateTime<Utc>, b: DateTime<Utc>, end: &str| {
        let days = (b.date_naive() - a.date_naive()).num_days().max(0) as u64 + 1;
        let mut clauses = vec![
            format!(
                "\"timestamp\" BETWEEN {} AND {}",
                literal(&day(a))?,
                literal(&day(b))?
            ),
            format!(
                "eventtime >= {} AND eventtime {end} {}",
                literal(&event_time(a))?,
                literal(&event_time(b))?
            ),
        ];
        clauses.extend(common.iter().cloned());
        out.queries.push(Query {
            label,
            sql: format!("{head}\nWHERE {}", and(clauses)),
            partitions: days * regions,
            days: (a.date_naive(), b.date_naive()),
        });
        Ok::<(), String>(())
    };
    if from < since {
        push("baseline", from, since, "<")?;
    }
    push("window", since.max(from), until, "<=")?;
    Ok(out)
}

fn in_list(values: &[String]) -> Result<String, String> {
    let items: Result<Vec<String>, String> = values.iter().map(|v| literal(v)).collect();
    Ok(format!("({})", items?.join(", ")))
}
