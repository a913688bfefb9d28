//! The `credentials` array of a JSON report rendered ahead of the writer, in parallel: the
//! findings (in the order they are written) are cut into windows, helper `k` of `n` renders
//! windows `k`, `k + n`, … to JSON text — each finding, with the opening of the credential
//! entry it starts and the end of the one before — and the writer copies the windows out in
//! order, as they are.
//!
//! Why: rendering every finding (escaping, times) was a sixth of a hunt, on one core after the
//! workers had finished, so two workers were far from twice as fast as one. A window is one
//! buffer of text (no per-finding allocation, no second copy through the serializer) and goes
//! to the output in one write. Windows travel through bounded channels: memory holds a few
//! windows per helper, never the whole report. With no helpers the writer renders the same
//! windows itself, so the bytes never depend on the thread count.
//! Each finding is written by [`super::json`], its shared strings escaped once per thread.

use super::Finding;
use super::json::{PREFETCH_AHEAD, Texts, prefetch, write_finding};
use std::io::Write;
use std::sync::mpsc::{Receiver, Sender, channel, sync_channel};

/// Findings per window.
const WINDOW: usize = 512;

/// Windows a helper may render ahead of the writer.
const AHEAD: usize = 2;

type Window = serde_json::Result<Vec<u8>>;

/// The findings in the order they are written, and where each credential's entry starts.
pub(super) struct Layout<'a> {
    order: Vec<&'a Finding>,
    /// Per credential entry: its credential and the position of its first finding in `order`
    /// (every entry has at least one).
    entries: Vec<(Option<&'a str>, usize)>,
}

impl<'a> Layout<'a> {
    /// The report's findings per credential, as [`super::HuntReport::by_credential`] lists
    /// them; from their runs when they are sorted (no list per credential made first).
    pub(super) fn of(findings: &'a [Finding]) -> Layout<'a> {
        let Some(runs) = super::credential_runs(findings) else {
            return Layout::new(&super::by_credential_of(findings));
        };
        let mut order = Vec::with_capacity(findings.len());
        let mut entries = Vec::with_capacity(runs.len());
        for (credential, run) in runs {
            entries.push((credential, order.len()));
            order.extend(&findings[run]);
        }
        Layout { order, entries }
    }

    fn new(by_credential: &[(Option<&'a str>, Vec<&'a Finding>)]) -> Layout<'a> {
        let mut order = Vec::with_capacity(by_credential.iter().map(|(_, f)| f.len()).sum());
        let mut entries = Vec::with_capacity(by_credential.len());
        for (credential, findings) in by_credential.iter().filter(|(_, f)| !f.is_empty()) {
            entries.push((*credential, order.len()));
            order.extend(findings.iter().copied());
        }
        Layout { order, entries }
    }

    fn windows(&self) -> usize {
        self.order.len().div_ceil(WINDOW)
    }

    /// Renders window `k` into `out`: `[{"credential":…,"count":…,"findings":[` … `]},{…`;
    /// the writer closes the last entry and the array.
    fn render(&self, k: usize, out: &mut Vec<u8>, texts: &mut Texts) -> serde_json::Result<()> {
        let start = k * WINDOW;
        let end = (start + WINDOW).min(self.order.len());
        // The first entry starting in the window or after it.
        let mut next = self.entries.partition_point(|&(_, s)| s < start);
        for i in start..end {
            if self.entries.get(next).is_some_and(|&(_, s)| s == i) {
                if next > 0 {
                    out.extend_from_slice(b"]},");
                }
                let (credential, _) = self.entries[next];
                let count = self.entries.get(next + 1).map_or(self.order.len(), |e| e.1) - i;
                out.extend_from_slice(b"{\"credential\":");
                serde_json::to_writer(&mut *out, &credential)?;
                out.extend_from_slice(b",\"count\":");
                out.extend_from_slice(count.to_string().as_bytes());
                out.extend_from_slice(b",\"findings\":[");
                next += 1;
            } else {
                out.push(b',');
            }
            if let Some(ahead) = self.order.get(i + PREFETCH_AHEAD) {
                prefetch(&ahead.location);
                prefetch(ahead.record_id.as_deref().unwrap_or(""));
            }
            write_finding(out, self.order[i], texts)?;
        }
        Ok(())
    }
}

/// The rendered windows, in the order they are written.
pub(super) struct Stream<'l, 'a> {
    layout: &'l Layout<'a>,
    /// Per helper: its rendered windows, and where its written buffers go back to it (fresh
    /// buffers were a page fault per 4 KiB of output); none: the writer renders the windows
    /// itself.
    helpers: Vec<(Receiver<Window>, Sender<Vec<u8>>)>,
}

impl<'l, 'a> Stream<'l, 'a> {
    /// Starts `threads` helpers (0: one per core) on `layout`; with one thread, or few
    /// findings, none.
    pub(super) fn start<'scope>(
        scope: &'scope std::thread::Scope<'scope, '_>,
        layout: &'l Layout<'a>,
        threads: usize,
    ) -> Stream<'l, 'a>
    where
        'l: 'scope,
    {
        let threads = crate::hunt::threads_or_cores(threads);
        let mut stream = Stream {
            layout,
            helpers: Vec::new(),
        };
        if threads < 2 || layout.windows() < 4 {
            return stream;
        }
        for k in 0..threads {
            let (tx, rx) = sync_channel::<Window>(AHEAD);
            let (give_back, returned) = channel::<Vec<u8>>();
            stream.helpers.push((rx, give_back));
            scope.spawn(move || {
                let mut texts = Texts::default();
                for w in (k..layout.windows()).step_by(threads) {
                    let mut out = returned.try_recv().unwrap_or_default();
                    out.clear();
                    let rendered = layout.render(w, &mut out, &mut texts).map(|()| out);
                    // The writer stopped (an error): nothing more to render.
                    if tx.send(rendered).is_err() {
                        return;
                    }
                }
            });
        }
        stream
    }

    /// Writes the `credentials` array: `[`, every window in order, the last entry's end, `]`.
    pub(super) fn write(self, w: &mut dyn Write) -> serde_json::Result<()> {
        use serde::ser::Error as _;
        let io = serde_json::Error::io;
        w.write_all(b"[").map_err(io)?;
        let mut own = Vec::new();
        let mut texts = Texts::default();
        for k in 0..self.layout.windows() {
            match self.helpers.get(k % self.helpers.len().max(1)) {
                Some((rx, give_back)) => {
                    let window = rx.recv().map_err(|_| {
                        serde_json::Error::custom("a rendering thread stopped early")
                    })??;
                    w.write_all(&window).map_err(io)?;
                    // The helper may have finished: then the buffer is simply freed.
                    let _ = give_back.send(window);
                }
                None => {
                    own.clear();
                    self.layout.render(k, &mut own, &mut texts)?;
                    w.write_all(&own).map_err(io)?;
                }
            }
        }
        if !self.layout.entries.is_empty() {
            w.write_all(b"]}").map_err(io)?;
        }
        w.write_all(b"]").map_err(io)
    }
}

#[cfg(test)]
mod tests {
    use super::super::Finding;
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

    /// The `credentials` array as serde writes the entries of `by_credential`.
    fn entries(report: &super::super::HuntReport) -> serde_json::Value {
        let entries: Vec<serde_json::Value> = report
            .by_credential()
            .iter()
            .map(
                |(c, fs)| serde_json::json!({ "credential": c, "count": fs.len(), "findings": fs }),
            )
            .collect();
        serde_json::Value::Array(entries)
    }

    /// Findings not in the report's order (a report never normalized) are listed per
    /// credential as `by_credential` lists them, `None` last.
    #[test]
    fn findings_out_of_order_are_listed_per_credential() {
        let base = Utc.with_ymd_and_hms(2023, 7, 10, 11, 42, 36).unwrap();
        let mut findings: Vec<Finding> = (0..3000)
            .map(|i| finding(i, base + chrono::Duration::seconds(i as i64)))
            .collect();
        findings.reverse();
        let report = super::super::HuntReport {
            findings,
            ..Default::default()
        };
        assert!(super::super::credential_runs(&report.findings).is_none());
        let doc: serde_json::Value =
            serde_json::from_slice(&super::super::tests::json_of(&report, 2)).unwrap();
        assert_eq!(doc["credentials"], entries(&report));
        let last = doc["credentials"].as_array().unwrap().last().unwrap();
        assert!(last["credential"].is_null());
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
        let report = super::super::tests::normalized(findings);
        let one = super::super::tests::json_of(&report, 1);
        for threads in [2, 3, 8] {
            assert!(
                super::super::tests::json_of(&report, threads) == one,
                "{threads} threads"
            );
        }
        // Each finding the same bytes as serde writes it, absent fields and odd strings included.
        let mut texts = super::super::json::Texts::default();
        let mut bare = finding(7, base);
        bare.hunt = None;
        bare.principal = Some("a\\b\"c\u{7f}\u{2028}\u{1b}".into());
        bare.error = Some("\t\r\u{0}".into());
        bare.record_id = None;
        bare.detail = Some("why \"here\"".into());
        bare.attack = Some("attack.persistence".into());
        for f in report.findings.iter().chain([&bare]) {
            let mut mine = Vec::new();
            super::super::json::write_finding(&mut mine, f, &mut texts).unwrap();
            let serde = serde_json::to_vec(f).unwrap();
            assert!(
                mine == serde,
                "{} vs {}",
                String::from_utf8_lossy(&mine),
                String::from_utf8_lossy(&serde)
            );
        }
        let doc: serde_json::Value = serde_json::from_slice(&one).unwrap();
        // The entries as serde writes them, whatever window their findings fell in.
        assert_eq!(doc["credentials"], entries(&report));
        assert_eq!(doc["total"], 5000);
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
