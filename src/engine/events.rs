//! What a run tells the person (or program) watching it: one event per step of each target.
//!
//! Three sinks: plain lines on stderr (logs, CI), a JSON line per event on stdout
//! (`--output json`), and progress bars on a terminal (indicatif). Events never carry a secret.

use super::steps::Step;
use serde::Serialize;
use std::collections::HashMap;
use std::sync::Mutex;

/// How a step ended, or that it started.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Status {
    Started,
    Done,
    Skipped,
    Failed,
    Waiting,
}

#[derive(Debug, Clone, Serialize)]
pub struct Event<'a> {
    pub run: &'a str,
    pub target: &'a str,
    pub step: Step,
    pub status: Status,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message: Option<&'a str>,
    pub at: chrono::DateTime<chrono::Utc>,
}

pub trait EventSink: Send + Sync {
    fn event(&self, event: &Event<'_>);
    /// A target ended this invocation (done, waiting, skipped, incomplete or failed).
    fn ended(&self, _target: &str, _outcome: &str) {}
    /// Called once when every target of the invocation has ended.
    fn finish(&self) {}
}

/// Plain lines on stderr: `[run] target: step done — message`.
pub struct PlainLines;

impl EventSink for PlainLines {
    fn event(&self, e: &Event<'_>) {
        let status = match e.status {
            Status::Started => return,
            Status::Done => "done",
            Status::Skipped => "skipped",
            Status::Failed => "FAILED",
            Status::Waiting => "waiting",
        };
        // Messages quote services' answers: control sequences are shown, not obeyed.
        let target = crate::escape::terminal_line(e.target);
        match (e.step, e.message.map(crate::escape::terminal_line)) {
            (Step::Done, Some(m)) => eprintln!("{target}: rotated — now using {m}"),
            (_, Some(m)) => eprintln!("{target}: {} {status} — {m}", e.step),
            (_, None) => eprintln!("{target}: {} {status}", e.step),
        }
    }
}

/// One JSON object per line on stdout.
pub struct JsonLines;

impl EventSink for JsonLines {
    fn event(&self, e: &Event<'_>) {
        if let Ok(line) = serde_json::to_string(e) {
            println!("{line}");
        }
    }
}

/// Progress bars on a terminal: one overall bar (targets ended / total) and one line per
/// target showing its current step.
pub struct Bars {
    multi: indicatif::MultiProgress,
    overall: indicatif::ProgressBar,
    lines: Mutex<HashMap<String, indicatif::ProgressBar>>,
}

impl Bars {
    pub fn new(targets: usize) -> Bars {
        let multi = indicatif::MultiProgress::new();
        let overall = multi.add(indicatif::ProgressBar::new(targets as u64));
        if let Ok(style) =
            indicatif::ProgressStyle::with_template("{bar:30} {pos}/{len} targets ended {msg}")
        {
            overall.set_style(style);
        }
        Bars {
            multi,
            overall,
            lines: Mutex::new(HashMap::new()),
        }
    }
}

impl EventSink for Bars {
    fn event(&self, e: &Event<'_>) {
        let Ok(mut lines) = self.lines.lock() else {
            return;
        };
        let line = lines.entry(e.target.to_string()).or_insert_with(|| {
            let bar = self.multi.add(indicatif::ProgressBar::new_spinner());
            bar.enable_steady_tick(std::time::Duration::from_millis(120));
            bar
        });
        let text = match e.message {
            Some(m) => format!("{}: {} {:?} — {m}", e.target, e.step, e.status),
            None => format!("{}: {} {:?}", e.target, e.step, e.status),
        };
        line.set_message(crate::escape::terminal_line(&text.to_lowercase()).into_owned());
    }

    fn ended(&self, target: &str, outcome: &str) {
        if let Ok(lines) = self.lines.lock()
            && let Some(line) = lines.get(target)
        {
            line.finish_with_message(
                crate::escape::terminal_line(&format!("{target}: {outcome}")).into_owned(),
            );
        }
        self.overall.inc(1);
    }

    fn finish(&self) {
        self.overall.finish();
    }
}

/// Discards events (library callers that only want the summary).
pub struct Silent;

impl EventSink for Silent {
    fn event(&self, _: &Event<'_>) {}
}
