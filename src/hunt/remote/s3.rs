//! CloudTrail log files in an S3 bucket (`--cloudtrail s3://bucket/prefix`): ListObjectsV2,
//! paginated by continuation token, then GetObject of every `.json` and `.json.gz` object
//! (digest files skipped); each object's body is one page, named `s3://bucket/key`, read by the
//! workers exactly like the same file on disk (gzip is recognised by its magic number).
//!
//! Keys in CloudTrail's own layout (`…/CloudTrail/<region>/YYYY/MM/DD/…`) of days wholly
//! before the window are not downloaded; keys of any other shape always are.
//!
//! Credentials and endpoint: the AWS SDK's default chain (`AWS_ENDPOINT_URL` included) or the
//! configuration the caller gives; with an overridden endpoint, path-style addressing (an
//! S3-compatible server or moto has no per-bucket host names).

use super::{Body, Chunks, Context, Fetched, LOOK_AHEAD, Page, PageSender, Window};
use crate::hunt::source::Source;
use chrono::NaiveDate;

/// Object keys listed per request (S3's maximum).
const MAX_KEYS: i32 = 1000;

pub(super) async fn fetch(
    ctx: &Context,
    bucket: &str,
    prefix: &str,
    window: Window,
    tx: &PageSender,
) -> Fetched {
    let mut out = Fetched::default();
    let sdk = ctx.credentials.aws_config().await;
    let mut config = aws_sdk_s3::config::Builder::from(&sdk);
    if sdk.endpoint_url().is_some() {
        config = config.force_path_style(true);
    }
    let client = aws_sdk_s3::Client::from_conf(config.build());
    let first_day = window.from.date_naive();
    let mut token: Option<String> = None;
    let mut listing = 0u32;
    let mut skipped_days = 0u64;
    let downloads = std::sync::Arc::new(tokio::sync::Semaphore::new(LOOK_AHEAD));
    loop {
        listing += 1;
        let page_size = ctx
            .page_size
            .map(|n| n.clamp(1, MAX_KEYS as u32) as i32)
            .unwrap_or(MAX_KEYS);
        let answer = client
            .list_objects_v2()
            .bucket(bucket)
            .prefix(prefix)
            .max_keys(page_size)
            .set_continuation_token(token.take())
            .send()
            .await;
        let list = match answer {
            Ok(l) => l,
            Err(e) => {
                out.failed(
                    format!("s3://{bucket}/{prefix} (listing page {listing})"),
                    format!("ListObjectsV2 failed: {}", super::aws_error(&e)),
                );
                return out;
            }
        };
        for object in list.contents() {
            let Some(key) = object.key() else { continue };
            if !wanted(key) {
                continue;
            }
            if cloudtrail_day(key).is_some_and(|day| day < first_day) {
                skipped_days += 1;
                continue;
            }
            let name = format!("s3://{bucket}/{key}");
            // At most LOOK_AHEAD objects downloading at once, each a few chunks ahead of its
            // worker: an object is streamed, never held whole (it may be as large as whoever
            // writes to the bucket wants).
            let Ok(permit) = downloads.clone().acquire_owned().await else {
                return out;
            };
            let object = match client.get_object().bucket(bucket).key(key).send().await {
                Ok(o) => o,
                Err(e) => {
                    out.failed(name, format!("GetObject failed: {}", super::aws_error(&e)));
                    continue;
                }
            };
            let size = object.content_length().and_then(|n| u64::try_from(n).ok());
            let (feed, chunks) = Chunks::channel();
            let body = Body::Streamed {
                size: size.unwrap_or(0),
                chunks,
            };
            let page = Page {
                source: Source::Cloudtrail,
                name,
                body,
            };
            if tx.send(page).await.is_err() {
                return out;
            }
            let mut stream = object.body;
            tokio::spawn(async move {
                let _permit = permit;
                loop {
                    let next = match stream.try_next().await {
                        Ok(Some(bytes)) => Ok(bytes.to_vec()),
                        Ok(None) => return,
                        Err(e) => Err(format!("GetObject: reading the body failed: {e}")),
                    };
                    let failed = next.is_err();
                    // The worker stopped reading (a bound, the end of the hunt): stop too.
                    if feed.send(next).await.is_err() || failed {
                        return;
                    }
                }
            });
        }
        match list.next_continuation_token() {
            Some(t) if list.is_truncated() == Some(true) => token = Some(t.to_owned()),
            _ => break,
        }
    }
    if skipped_days > 0 {
        out.notes.push(format!(
            "s3://{bucket}/{prefix}: {skipped_days} log file(s) of days before {first_day} not downloaded (before the window)"
        ));
    }
    out
}

/// CloudTrail log files; digests (integrity proofs, no events) and anything else are not.
fn wanted(key: &str) -> bool {
    !key.contains("/CloudTrail-Digest/") && (key.ends_with(".json") || key.ends_with(".json.gz"))
}

/// The delivery day of a key in CloudTrail's layout `…/CloudTrail/<region>/YYYY/MM/DD/<file>`.
pub fn cloudtrail_day(key: &str) -> Option<NaiveDate> {
    let parts: Vec<&str> = key.split('/').collect();
    let at = parts.iter().rposition(|p| *p == "CloudTrail")?;
    // CloudTrail / region / YYYY / MM / DD / file
    let (y, m, d) = match parts.get(at + 2..at + 6)? {
        [y, m, d, _file] => (*y, *m, *d),
        _ => return None,
    };
    if y.len() != 4 || m.len() != 2 || d.len() != 2 {
        return None;
    }
    NaiveDate::from_ymd_opt(y.parse().ok()?, m.parse().ok()?, d.parse().ok()?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn days_of_cloudtrail_keys() {
        let k = "AWSLogs/218007301253/CloudTrail/us-east-1/2023/07/10/x.json.gz";
        assert_eq!(cloudtrail_day(k), NaiveDate::from_ymd_opt(2023, 7, 10));
        let org = "AWSLogs/o-abc/218007301253/CloudTrail/eu-west-1/2022/12/01/x.json";
        assert_eq!(cloudtrail_day(org), NaiveDate::from_ymd_opt(2022, 12, 1));
        assert_eq!(cloudtrail_day("exports/x.json"), None);
        assert_eq!(
            cloudtrail_day("AWSLogs/1/CloudTrail/r/2023/7/10/x.json"),
            None
        );
        assert_eq!(
            cloudtrail_day("AWSLogs/1/CloudTrail/r/2023/02/30/x.json"),
            None
        );
        assert!(wanted(k));
        assert!(!wanted(
            "AWSLogs/1/CloudTrail-Digest/r/2023/07/10/x.json.gz"
        ));
        assert!(!wanted("AWSLogs/1/CloudTrail/r/2023/07/10/x.txt"));
    }
}
