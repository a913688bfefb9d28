//! The Athena API flow of one query (aws-sdk-athena): StartQueryExecution in the workgroup
//! (with the output location when given), GetQueryExecution polled with backoff while it is
//! queued or running (a progress line on stderr), then GetQueryResults page by page
//! (NextToken), each page of rows handed to the workers as it came (see [`super::rows`]).
//!
//! A query that fails or is cancelled is an error, never an empty result: the hunt lists it
//! as a source it could not read. Bytes scanned come from the execution's statistics.

use super::rows::{Projection, Rows};
use super::{Table, query};
use crate::hunt::remote::{Body, Page, PageSender};
use crate::hunt::source::Source;
use aws_sdk_athena::types::{QueryExecutionContext, QueryExecutionState, ResultConfiguration};
use std::time::{Duration, Instant};

/// Rows asked per GetQueryResults (Athena's maximum).
const MAX_ROWS: i32 = 1000;
/// The longest wait between two polls.
const MAX_POLL: Duration = Duration::from_secs(5);

/// What one query did.
#[derive(Debug, Clone, Default)]
pub struct Ran {
    pub id: String,
    pub rows: u64,
    pub pages: u64,
    pub bytes_scanned: u64,
}

/// How the client polls and pages; tests shorten the first wait and the page size.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pace {
    pub first_poll: Duration,
    pub page_rows: i32,
}

impl Default for Pace {
    fn default() -> Self {
        Pace {
            first_poll: Duration::from_millis(500),
            page_rows: MAX_ROWS,
        }
    }
}

/// Runs `q` (which selects the columns of `projection`) and sends its rows as pages. `Err`
/// says why the query's rows are not all read (with its execution id when it has one).
pub async fn run(
    client: &aws_sdk_athena::Client,
    table: &Table,
    q: &query::Query,
    projection: &Projection,
    pace: Pace,
    tx: &PageSender,
) -> Result<Ran, String> {
    let mut start = client
        .start_query_execution()
        .query_string(&q.sql)
        .work_group(&table.workgroup)
        .query_execution_context(
            QueryExecutionContext::builder()
                .database(&table.database)
                .build(),
        );
    if let Some(output) = &table.output {
        start = start.result_configuration(
            ResultConfiguration::builder()
                .output_location(output)
                .build(),
        );
    }
    let started = start.send().await.map_err(|e| {
        format!(
            "StartQueryExecution failed: {}",
            crate::hunt::remote::aws_error(&e)
        )
    })?;
    let id = started
        .query_execution_id()
        .ok_or("StartQueryExecution answered without a query id")?
        .to_string();
    let mut ran = Ran {
        id: id.clone(),
        ..Default::default()
    };
    ran.bytes_scanned = wait(client, &id, q.label, pace).await?;
    let mut token: Option<String> = None;
    loop {
        let mut answer = client
            .get_query_results()
            .query_execution_id(&id)
            .max_results(pace.page_rows.clamp(1, MAX_ROWS))
            .set_next_token(token.take())
            .send()
            .await
            .map_err(|e| {
                format!(
                    "query {id}: GetQueryResults (page {}) failed: {}",
                    ran.pages + 1,
                    crate::hunt::remote::aws_error(&e)
                )
            })?;
        ran.pages += 1;
        let next = answer.next_token.take().filter(|t| !t.is_empty());
        // The answer is taken by value: its strings are freed here, as the page is built.
        let answered = answer
            .result_set
            .take()
            .unwrap_or_else(|| aws_sdk_athena::types::ResultSet::builder().build());
        let rows = Rows::from_answer(answered, projection, ran.pages == 1)
            .map_err(|e| format!("query {id}: page {}: {e}", ran.pages))?;
        ran.rows += rows.len() as u64;
        if !rows.is_empty() {
            let page = Page {
                source: Source::Cloudtrail,
                name: format!(
                    "athena:{}.{} {} query {id} page {}",
                    table.database, table.table, q.label, ran.pages
                ),
                body: Body::Rows(rows),
            };
            if tx.send(page).await.is_err() {
                // The workers are gone: the hunt ended.
                return Ok(ran);
            }
        }
        match next {
            Some(t) => token = Some(t),
            None => return Ok(ran),
        }
    }
}

/// Polls until the query ends; its bytes scanned when it succeeded.
async fn wait(
    client: &aws_sdk_athena::Client,
    id: &str,
    label: &str,
    pace: Pace,
) -> Result<u64, String> {
    let began = Instant::now();
    let mut delay = pace.first_poll;
    let mut last: Option<QueryExecutionState> = None;
    let mut last_line = Instant::now();
    loop {
        let answer = client
            .get_query_execution()
            .query_execution_id(id)
            .send()
            .await
            .map_err(|e| {
                format!(
                    "query {id}: GetQueryExecution failed: {}",
                    crate::hunt::remote::aws_error(&e)
                )
            })?;
        let exec = answer
            .query_execution()
            .ok_or_else(|| format!("query {id}: GetQueryExecution answered without the query"))?;
        let status = exec.status();
        let state = status.and_then(|s| s.state()).cloned();
        let scanned = exec
            .statistics()
            .and_then(|s| s.data_scanned_in_bytes())
            .map(|b| b.max(0) as u64)
            .unwrap_or(0);
        let reason = || {
            status
                .and_then(|s| s.state_change_reason())
                .map(|r| r.chars().take(300).collect::<String>())
                .unwrap_or_else(|| "no reason given".into())
        };
        // A line when the state changes, and every 30 s while it does not.
        if state != last || last_line.elapsed() >= Duration::from_secs(30) {
            eprintln!(
                "athena: {label} query {id} {} after {:.0?}, {} scanned",
                state.as_ref().map(|s| s.as_str()).unwrap_or("(no state)"),
                began.elapsed(),
                super::human_bytes(scanned)
            );
            last_line = Instant::now();
        }
        match &state {
            Some(QueryExecutionState::Succeeded) => return Ok(scanned),
            Some(QueryExecutionState::Failed) => {
                return Err(format!("query {id} failed: {}", reason()));
            }
            Some(QueryExecutionState::Cancelled) => {
                return Err(format!("query {id} was cancelled: {}", reason()));
            }
            Some(QueryExecutionState::Queued) | Some(QueryExecutionState::Running) | None => {}
            Some(other) => {
                return Err(format!("query {id}: unknown state {}", other.as_str()));
            }
        }
        last = state;
        tokio::time::sleep(delay).await;
        delay = (delay * 3 / 2).min(MAX_POLL);
    }
}
