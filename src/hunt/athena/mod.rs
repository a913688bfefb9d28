//! Hunting where the logs are: the rules compiled to SQL and run on Athena over the standard
//! CloudTrail table, the rows handed to the same engine as records read from files. This
//! module owns the table a hunt names (`athena:DATABASE.TABLE`, its workgroup, output and
//! regions), the fetch of one hunt (its queries, run one after the other), the cost line, and
//! the dry run; beside it:
//!
//! - [`columns`]: the table's columns and the record path of each,
//! - [`sql`]: Sigma detections compiled to SQL (over- and under-approximations, literals),
//! - [`query`]: the queries of a hunt and their narrowing (partitions, time, credentials),
//! - [`rows`]: result rows handed to the evaluator as the records they stand for,
//! - [`client`]: the Athena API flow of one query (start, poll, page),
//! - [`estimate`]: the dry run's estimate of the bytes each query will scan.

pub mod client;
pub mod columns;
pub mod estimate;
pub mod query;
pub mod rows;
pub mod sql;

use super::pack::RuleSet;
use super::remote::{Context, Fetched, PageSender, Window};
use chrono::{DateTime, Utc};
use std::sync::Arc;

/// The findings of per-credential baselines: wrong over only some of a credential's records.
pub const BASELINE_RULES: &[&str] = &[
    "rekey-new-source-address",
    "rekey-new-country",
    "rekey-unusual-hour",
    "rekey-outside-allowlist",
];

/// Athena's public price per terabyte scanned (US regions; 10 MB minimum per query).
pub const USD_PER_TB: f64 = 5.0;

/// A CloudTrail table to hunt in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Table {
    pub database: String,
    pub table: String,
    pub workgroup: String,
    /// `s3://…` for the results; `None`: the workgroup's own.
    pub output: Option<String>,
    /// Only these regions (`awsregion`; and the `region` partition when the table has one).
    pub regions: Vec<String>,
    /// The table is partitioned by `region` as well as `timestamp` (an organization or
    /// multi-region projection); AWS's single-region example is partitioned by `timestamp`.
    pub region_partition: bool,
    /// How its queries are polled and their results paged.
    pub pace: client::Pace,
}

impl Table {
    /// `DATABASE.TABLE`, with the workgroup `primary` and nothing else set.
    pub fn parse_name(text: &str) -> Result<Table, String> {
        let (database, table) = text
            .split_once('.')
            .ok_or_else(|| format!("`{text}`: expected DATABASE.TABLE"))?;
        sql::identifier(database)?;
        sql::identifier(table)?;
        Ok(Table {
            database: database.to_string(),
            table: table.to_string(),
            workgroup: "primary".into(),
            output: None,
            regions: Vec::new(),
            region_partition: false,
            pace: client::Pace::default(),
        })
    }

    /// A plan's `athena:DATABASE.TABLE[?workgroup=WG&output=s3://…&region=R1,R2&region_partition=true]`;
    /// `None` when `text` is not an `athena:` entry.
    pub fn parse(text: &str) -> Option<Result<Table, String>> {
        let rest = text.strip_prefix("athena:")?;
        let (name, options) = rest.split_once('?').unwrap_or((rest, ""));
        Some(Table::parse_name(name).and_then(|mut t| {
            for pair in options.split('&').filter(|p| !p.is_empty()) {
                let (k, v) = pair
                    .split_once('=')
                    .ok_or_else(|| format!("`{pair}`: expected KEY=VALUE"))?;
                match k {
                    "workgroup" if !v.is_empty() => t.workgroup = v.to_string(),
                    "output" if v.starts_with("s3://") => t.output = Some(v.to_string()),
                    "region" => t.regions = v.split(',').map(str::to_string).collect(),
                    "region_partition" => t.region_partition = v == "true",
                    _ => {
                        return Err(format!(
                            "`{pair}`: options are workgroup=WG, output=s3://…, region=R1,R2, region_partition=true"
                        ));
                    }
                }
            }
            Ok(t)
        }))
    }
}

impl std::fmt::Display for Table {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "athena:{}.{}", self.database, self.table)
    }
}

/// What a hunt's queries need besides the table and the window.
#[derive(Debug, Clone)]
pub struct Scope {
    pub rules: Arc<RuleSet>,
    pub credentials: Vec<String>,
    pub since: DateTime<Utc>,
}

/// `1.2 GB`.
pub fn human_bytes(n: u64) -> String {
    let units = ["B", "KB", "MB", "GB", "TB", "PB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1000.0 && u + 1 < units.len() {
        v /= 1000.0;
        u += 1;
    }
    if u == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", units[u])
    }
}

/// The cost line shown with the findings.
pub fn cost_note(table: &Table, queries: usize, bytes: u64) -> String {
    format!(
        "{table}: Athena scanned {} in {queries} query(ies), about ${:.4} at ${USD_PER_TB} per TB (10 MB minimum per query)",
        human_bytes(bytes),
        bytes as f64 / 1e12 * USD_PER_TB
    )
}

/// The dry run: the queries, and what they will scan — the size of the objects under the
/// partitions they read (see [`estimate`]: Glue and S3 listings, nothing Athena bills).
pub async fn dry_run(
    sdk: &aws_config::SdkConfig,
    table: &Table,
    rules: &RuleSet,
    credentials: &[String],
    window: Window,
    since: DateTime<Utc>,
) -> Result<String, String> {
    let plan = query::plan(table, rules, credentials, window.from, since, window.until)?;
    let estimates = estimate::estimate(sdk, table, &plan.queries).await;
    let mut out = String::new();
    for (q, e) in plan.queries.iter().zip(&estimates) {
        out.push_str(&format!(
            "-- {table} {} query: {} partition(s) of one day{}\n-- {table} {e}\n{};\n\n",
            q.label,
            q.partitions,
            if table.region_partition {
                " and region"
            } else {
                ""
            },
            q.sql
        ));
    }
    for n in &plan.notes {
        out.push_str(&format!("-- {n}\n"));
    }
    Ok(out)
}

/// Runs a hunt's queries on `table`, sending their rows to the workers. Failed or cancelled
/// queries become problems (the hunt is then incomplete); the cost and what ran locally,
/// notes.
pub async fn fetch(
    ctx: &Context,
    table: &Table,
    window: Window,
    scope: &Scope,
    tx: &PageSender,
) -> Fetched {
    let mut out = Fetched::default();
    let plan = match query::plan(
        table,
        &scope.rules,
        &scope.credentials,
        window.from,
        scope.since,
        window.until,
    ) {
        Ok(p) => p,
        Err(e) => {
            out.problems.push(super::source::Problem {
                location: table.to_string(),
                message: e,
            });
            return out;
        }
    };
    let sdk = ctx.credentials.aws_config().await;
    let client = aws_sdk_athena::Client::new(&sdk);
    let mut scanned = 0u64;
    let mut ran = 0usize;
    for q in &plan.queries {
        match client::run(&client, table, q, &plan.projection, table.pace, tx).await {
            Ok(r) => {
                scanned += r.bytes_scanned;
                ran += 1;
            }
            Err(e) => out.problems.push(super::source::Problem {
                location: format!("{table} ({} query)", q.label),
                message: e,
            }),
        }
    }
    out.notes.extend(plan.notes);
    out.notes.push(cost_note(table, ran, scanned));
    out.bytes_scanned = scanned;
    if plan.unscoped {
        out.partial_records = true;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plan_entries_parse_with_their_options() {
        let t = Table::parse("athena:security.cloudtrail_logs?workgroup=hunt&output=s3://r/x&region=us-east-1,eu-west-1")
            .expect("athena entry")
            .expect("valid");
        assert_eq!(t.database, "security");
        assert_eq!(t.table, "cloudtrail_logs");
        assert_eq!(t.workgroup, "hunt");
        assert_eq!(t.output.as_deref(), Some("s3://r/x"));
        assert_eq!(t.regions, ["us-east-1", "eu-west-1"]);
        assert!(Table::parse("s3://b/p").is_none());
        assert!(Table::parse("athena:nodot").expect("entry").is_err());
        assert!(
            Table::parse("athena:a.b?color=red")
                .expect("entry")
                .is_err()
        );
        assert!(Table::parse("athena:a.b\"; --").expect("entry").is_err());
    }
}
