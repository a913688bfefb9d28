//! CloudTrail LookupEvents per access key id (`--lookup-events` with `--access-key-id`):
//! `LookupAttributes=[{AttributeKey: AccessKeyId, AttributeValue: ID}]`, `StartTime`/`EndTime`
//! from the window (clamped to CloudTrail's 90 days of event history, with a note when the
//! window asks for more), `MaxResults` 50 (the API's maximum), `NextToken` pagination.
//!
//! Each response page becomes one page whose body is what `aws cloudtrail lookup-events`
//! prints: `{"Events": [{"EventId", "EventName", "EventTime", "AccessKeyId", "Username",
//! "EventSource", "CloudTrailEvent": "<the record as a JSON string>"}]}` — the saved
//! LookupEvents format that `source` reads (`Events`, the record in `CloudTrailEvent`). So a
//! hunt over the API and over a saved response find the same things.
//!
//! Event history holds management events only: data events (S3 object reads, Lambda invokes)
//! need the log files (`--cloudtrail s3://…`).

use super::{Context, Fetched, PageSender, Window, deliver};
use crate::hunt::source::Source;
use aws_sdk_cloudtrail::types::{LookupAttribute, LookupAttributeKey};
use chrono::{DateTime, Duration, SecondsFormat, Utc};

/// How far back CloudTrail's event history goes.
pub const RETENTION_DAYS: i64 = 90;

/// LookupEvents' largest page.
pub const MAX_RESULTS: i32 = 50;

pub(super) async fn fetch(
    ctx: &Context,
    access_key_ids: &[String],
    window: Window,
    tx: &PageSender,
) -> Fetched {
    let mut out = Fetched::default();
    if access_key_ids.is_empty() {
        out.failed(
            "CloudTrail LookupEvents",
            "no access key id to look up (--access-key-id)",
        );
        return out;
    }
    let oldest = window.until - Duration::days(RETENTION_DAYS);
    let from = if window.from < oldest {
        out.notes.push(format!(
            "CloudTrail LookupEvents keeps {RETENTION_DAYS} days: events before {} are not available from it (hunt in the log files: --cloudtrail s3://BUCKET/PREFIX)",
            oldest.to_rfc3339_opts(SecondsFormat::Secs, true)
        ));
        oldest
    } else {
        window.from
    };
    let sdk = ctx.credentials.aws_config().await;
    let client = aws_sdk_cloudtrail::Client::new(&sdk);
    let page_size = ctx
        .page_size
        .map(|n| n.clamp(1, MAX_RESULTS as u32) as i32)
        .unwrap_or(MAX_RESULTS);
    for id in access_key_ids {
        let attribute = match LookupAttribute::builder()
            .attribute_key(LookupAttributeKey::AccessKeyId)
            .attribute_value(id)
            .build()
        {
            Ok(a) => a,
            Err(e) => {
                out.failed(
                    format!("CloudTrail LookupEvents AccessKeyId={id}"),
                    e.to_string(),
                );
                continue;
            }
        };
        let mut token: Option<String> = None;
        let mut page = 0u32;
        loop {
            page += 1;
            let name = format!("cloudtrail:LookupEvents AccessKeyId={id} page {page}");
            let answer = client
                .lookup_events()
                .lookup_attributes(attribute.clone())
                .start_time(smithy_time(from))
                .end_time(smithy_time(window.until))
                .max_results(page_size)
                .set_next_token(token.take())
                .send()
                .await;
            let answer = match answer {
                Ok(a) => a,
                Err(e) => {
                    out.failed(
                        name,
                        format!("LookupEvents failed: {}", super::aws_error(&e)),
                    );
                    break;
                }
            };
            let events: Vec<serde_json::Value> = answer
                .events()
                .iter()
                .map(|e| {
                    serde_json::json!({
                        "EventId": e.event_id(),
                        "EventName": e.event_name(),
                        "ReadOnly": e.read_only(),
                        "AccessKeyId": e.access_key_id(),
                        "EventTime": e.event_time().and_then(chrono_time)
                            .map(|t| t.to_rfc3339_opts(SecondsFormat::Secs, true)),
                        "EventSource": e.event_source(),
                        "Username": e.username(),
                        "CloudTrailEvent": e.cloud_trail_event(),
                    })
                })
                .collect();
            if !events.is_empty() {
                let body = serde_json::json!({ "Events": events }).to_string();
                if !deliver(tx, Source::Cloudtrail, name, body.into_bytes()).await {
                    return out;
                }
            }
            match answer.next_token() {
                Some(t) if !t.is_empty() => token = Some(t.to_owned()),
                _ => break,
            }
        }
    }
    out
}

fn smithy_time(t: DateTime<Utc>) -> aws_sdk_cloudtrail::primitives::DateTime {
    aws_sdk_cloudtrail::primitives::DateTime::from_secs(t.timestamp())
}

fn chrono_time(t: &aws_sdk_cloudtrail::primitives::DateTime) -> Option<DateTime<Utc>> {
    DateTime::from_timestamp(t.secs(), t.subsec_nanos())
}
