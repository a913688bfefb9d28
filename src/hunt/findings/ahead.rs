//! The findings of a JSON report rendered ahead of the writer, in parallel: helper `k` of `n`
//! renders windows `k`, `k + n`, … of the findings (in the order they are written) to JSON
//! text, and the writer copies the windows back in order.
//!
//! Why: rendering every finding (escaping, times) was a sixth of a hunt, on one core after the
//! workers had finished, so two workers were far from twice as fast as one. Windows travel
//! through bounded channels: memory holds a few windows per helper, never the whole report.

use super::Finding;
use serde::ser::{Error as _, Serialize, SerializeSeq, Serializer};
use serde_json::value::RawValue;
use std::cell::RefCell;
use std::sync::mpsc::{Receiver, sync_channel};

/// Findings per window.
const WINDOW: usize = 512;

/// Windows a helper may render ahead of the writer.
const AHEAD: usize = 2;

type Window = serde_json::Result<Vec<Box<RawValue>>>;

/// The rendered findings, in the order they are written.
pub(super) struct Stream {
    /// One receiver per helper; none: the findings are rendered by the writer itself.
    helpers: Vec<Receiver<Window>>,
    /// The window to take next.
    next: usize,
    current: std::vec::IntoIter<Box<RawValue>>,
}

impl Stream {
    /// Starts `threads` helpers (0: one per core) on `order`, the findings in the order they
    /// will be written; with one thread, or few findings, none.
    pub(super) fn start<'scope, 'a: 'scope>(
        scope: &'scope std::thread::Scope<'scope, 'a>,
        order: &'a [&'a Finding],
        threads: usize,
    ) -> Stream {
        let threads = match threads {
            0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
            n => n,
        };
        let mut stream = Stream {
            helpers: Vec::new(),
            next: 0,
            current: Vec::new().into_iter(),
        };
        if threads < 2 || order.len() < 2 * WINDOW {
            return stream;
        }
        for k in 0..threads {
            let (tx, rx) = sync_channel::<Window>(AHEAD);
            stream.helpers.push(rx);
            scope.spawn(move || {
                for window in order.chunks(WINDOW).skip(k).step_by(threads) {
                    let rendered = window.iter().map(serde_json::value::to_raw_value).collect();
                    // The writer stopped (an error): nothing more to render.
                    if tx.send(rendered).is_err() {
                        return;
                    }
                }
            });
        }
        stream
    }

    fn next(&mut self) -> serde_json::Result<Box<RawValue>> {
        loop {
            if let Some(r) = self.current.next() {
                return Ok(r);
            }
            let n = self.helpers.len().max(1);
            let rx = self
                .helpers
                .get(self.next % n)
                .ok_or_else(|| serde_json::Error::custom("no rendered findings"))?;
            let window = rx
                .recv()
                .map_err(|_| serde_json::Error::custom("a rendering thread stopped early"))??;
            self.next += 1;
            self.current = window.into_iter();
        }
    }
}

/// One credential's findings in the report: taken from the stream, which holds them next.
pub(super) struct Take<'a, 'r> {
    findings: &'r [&'a Finding],
    stream: &'r RefCell<Stream>,
}

impl<'a, 'r> Take<'a, 'r> {
    pub(super) fn new(findings: &'r [&'a Finding], stream: &'r RefCell<Stream>) -> Self {
        Take { findings, stream }
    }
}

impl Serialize for Take<'_, '_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut stream = self.stream.try_borrow_mut().map_err(S::Error::custom)?;
        let mut seq = s.serialize_seq(Some(self.findings.len()))?;
        if stream.helpers.is_empty() {
            for f in self.findings {
                seq.serialize_element(f)?;
            }
        } else {
            for _ in self.findings {
                let raw = stream.next().map_err(S::Error::custom)?;
                seq.serialize_element(&raw)?;
            }
        }
        seq.end()
    }
}

#[cfg(test)]
mod tests {
    use super::super::{Finding, HuntReport};
    use crate::hunt::Severity;
    use crate::hunt::source::Source;
    use chrono::{DateTime, TimeZone, Utc};

    fn finding(i: usize, time: DateTime<Utc>) -> Finding {
        Finding {
            rule_id: format!("rule-{}", i % 7).into(),
            rule: "A \"quoted\" rule\n".into(),
            hunt: i.is_multiple_of(2).then(|| "aws-recon".into()),
            severity: Severity::Medium,
            severity_reason: "rule level".into(),
            attack: None,
            source: Source::Cloudtrail,
            credential: (!i.is_multiple_of(5)).then(|| format!("AKIA{:04}", i % 13).into()),
            principal: None,
            time,
            action: Some("ListUsers".into()),
            source_ip: Some("198.51.100.7".into()),
            user_agent: Some("ua\u{1}é".into()),
            error: None,
            location: format!("f.json (record {i})"),
            record_id: Some(format!("id-{i}")),
            detail: None,
        }
    }

    /// Rendered ahead by helpers or by the writer itself, the document is the same bytes, and
    /// times are written as chrono writes them (fractions, leap seconds, far years included).
    #[test]
    fn helpers_write_the_same_document_as_one_thread() {
        let base = Utc.with_ymd_and_hms(2023, 7, 10, 11, 42, 36).unwrap();
        let odd = [
            base + chrono::Duration::milliseconds(250),
            Utc.with_ymd_and_hms(12345, 1, 2, 3, 4, 5).unwrap(),
            Utc.with_ymd_and_hms(7, 1, 2, 3, 4, 5).unwrap(),
            Utc.with_ymd_and_hms(2016, 12, 31, 23, 59, 59).unwrap()
                + chrono::Duration::nanoseconds(1_000_000_000),
        ];
        let findings: Vec<Finding> = (0..5000)
            .map(|i| {
                let t = odd
                    .get(i % 1000)
                    .copied()
                    .unwrap_or(base + chrono::Duration::seconds(i as i64 * 37));
                finding(i, t)
            })
            .collect();
        let mut report = HuntReport {
            findings,
            ..Default::default()
        };
        report.normalize();
        let write = |threads| {
            let mut out = Vec::new();
            report.write_json_with(&mut out, threads).unwrap();
            out
        };
        let one = write(1);
        for threads in [2, 3, 8] {
            assert!(write(threads) == one, "{threads} threads");
        }
        let doc: serde_json::Value = serde_json::from_slice(&one).unwrap();
        let listed: std::collections::HashMap<&str, &serde_json::Value> = doc["credentials"]
            .as_array()
            .unwrap()
            .iter()
            .flat_map(|g| g["findings"].as_array().unwrap())
            .map(|x| (x["location"].as_str().unwrap(), &x["time"]))
            .collect();
        assert_eq!(listed.len(), 5000);
        for f in &report.findings {
            let want = serde_json::to_value(f.time).unwrap();
            assert_eq!(listed[f.location.as_str()], &want, "{}", f.location);
        }
    }
}
