//! The findings of a hunt as an SVG timeline chart: one lane per credential, a time axis over the
//! report's span, one marker per finding shaped and coloured by severity (binned per lane and
//! pixel column, with a count, so that any number of findings gives a bounded picture), the
//! incident start, a legend and hover tooltips. This module owns only that rendering: a pure
//! function of a [`HuntReport`], SVG 1.1 without scripts or external resources, and the XML
//! escaping of the untrusted text (rule titles, actions, user agents) that ends up in it.

use super::Severity;
use super::findings::{Finding, HuntReport};
use chrono::{DateTime, Datelike, NaiveDate, TimeZone, Utc};
use std::fmt::Write;

/// At most this many lanes; the others are summed up in one line.
pub const MAX_LANES: usize = 50;

const WIDTH: f64 = 1200.0;
const PLOT_X0: f64 = 250.0;
const PLOT_X1: f64 = WIDTH - 30.0;
/// Findings closer than this on the axis share one marker.
const BIN_PX: f64 = 10.0;
const LANE_H: f64 = 34.0;
const LANES_TOP: f64 = 92.0;
/// At most this many findings are listed in the tooltip of a marker that stands for several.
const TOOLTIP_FINDINGS: usize = 5;

const SEVERITIES: [Severity; 5] = [
    Severity::Critical,
    Severity::High,
    Severity::Medium,
    Severity::Low,
    Severity::Informational,
];

const STYLE: &str = "text{font-family:sans-serif;font-size:11px;fill:#222}\
.t{font-size:16px;font-weight:bold}.sub{fill:#555}.lbl{font-family:monospace;font-size:12px}\
.cnt{font-size:8px;fill:#333;text-anchor:middle}.tick{fill:#444;text-anchor:middle}\
.lane0{fill:#f4f4f4}.lane1{fill:#fff}.grid{stroke:#ddd;stroke-width:1}\
.axis{stroke:#444;stroke-width:1}.since{stroke:#7b3294;stroke-width:1.5;stroke-dasharray:5,3}\
.sincet{fill:#7b3294}.m{stroke:#222;stroke-width:0.6}\
.critical{fill:#b2182b}.high{fill:#e66101}.medium{fill:#d9b400}.low{fill:#2c7bb6}\
.informational{fill:#fff;stroke:#777}";

/// The chart of `report`'s findings, as a complete SVG 1.1 document.
pub fn render(report: &HuntReport) -> String {
    let mut svg = String::with_capacity(16 * 1024);
    let lanes = report.by_credential();
    let total = report.findings.len();
    let (Some(first), Some(last)) = (
        report.findings.iter().map(|f| f.time).min(),
        report.findings.iter().map(|f| f.time).max(),
    ) else {
        return empty(report);
    };

    // The lanes shown: all, or the MAX_LANES that matter most (highest severity, then most
    // findings), kept in the order of `by_credential`.
    let mut shown: Vec<usize> = (0..lanes.len()).collect();
    if lanes.len() > MAX_LANES {
        let highest = |i: usize| lanes[i].1.iter().map(|f| f.severity).max();
        shown.sort_by(|&a, &b| {
            (highest(b), lanes[b].1.len())
                .cmp(&(highest(a), lanes[a].1.len()))
                .then(a.cmp(&b))
        });
        shown.truncate(MAX_LANES);
        shown.sort_unstable();
    }
    let hidden = lanes.len() - shown.len();
    let hidden_findings: usize = total - shown.iter().map(|&i| lanes[i].1.len()).sum::<usize>();

    let axis = Axis::new(first, last, report.since);
    let lanes_bottom = LANES_TOP + LANE_H * shown.len() as f64;
    let axis_y = lanes_bottom + if hidden > 0 { 22.0 } else { 0.0 };
    let height = axis_y + 48.0;

    header(&mut svg, height);
    let credentials = lanes.len();
    let _ = write!(
        svg,
        "<text class=\"t\" x=\"10\" y=\"24\">Hunt findings per credential</text>\
         <text class=\"sub\" x=\"10\" y=\"42\">{total} finding(s), {credentials} credential(s), {} to {} \u{b7} \
         a number counts the findings one marker stands for; hover a marker for details</text>",
        first.format("%Y-%m-%d %H:%M:%S"),
        if first.date_naive() == last.date_naive() {
            last.format("%H:%M:%S UTC").to_string()
        } else {
            last.format("%Y-%m-%d %H:%M:%S UTC").to_string()
        },
    );
    legend(&mut svg, report);

    // Lane backgrounds, labels and grid.
    for (row, &i) in shown.iter().enumerate() {
        let (cred, fs) = &lanes[i];
        let y = LANES_TOP + LANE_H * row as f64;
        let highest = fs.iter().map(|f| f.severity).max();
        let _ = write!(
            svg,
            "<rect class=\"lane{}\" x=\"0\" y=\"{y:.1}\" width=\"{WIDTH}\" height=\"{LANE_H}\"/>\
             <g><title>{}</title><text class=\"lbl\" x=\"10\" y=\"{:.1}\">{}</text></g>\
             <text class=\"sub\" x=\"10\" y=\"{:.1}\">{} finding(s){}</text>",
            row % 2,
            esc(cred.unwrap_or("(unattributed)"), 200),
            y + 15.0,
            esc(
                &middle_ellipsis(cred.unwrap_or("(unattributed)"), 30),
                usize::MAX
            ),
            y + 28.0,
            fs.len(),
            highest
                .map(|s| format!(", highest {s}"))
                .unwrap_or_default(),
        );
    }
    for tick in &axis.ticks {
        let _ = write!(
            svg,
            "<line class=\"grid\" x1=\"{x:.1}\" y1=\"{LANES_TOP}\" x2=\"{x:.1}\" y2=\"{axis_y:.1}\"/>",
            x = tick.x
        );
    }
    if hidden > 0 {
        let _ = write!(
            svg,
            "<text class=\"sub\" x=\"10\" y=\"{:.1}\">+{hidden} more credential(s) with {hidden_findings} finding(s), not drawn</text>",
            lanes_bottom + 15.0
        );
    }

    // Time axis.
    let _ = write!(
        svg,
        "<line class=\"axis\" x1=\"{PLOT_X0}\" y1=\"{axis_y:.1}\" x2=\"{PLOT_X1}\" y2=\"{axis_y:.1}\"/>"
    );
    for tick in &axis.ticks {
        let _ = write!(
            svg,
            "<line class=\"axis\" x1=\"{x:.1}\" y1=\"{axis_y:.1}\" x2=\"{x:.1}\" y2=\"{:.1}\"/>\
             <text class=\"tick\" x=\"{x:.1}\" y=\"{:.1}\">{}</text>",
            axis_y + 5.0,
            axis_y + 17.0,
            tick.label,
            x = tick.x
        );
        if let Some(date) = &tick.date {
            let _ = write!(
                svg,
                "<text class=\"tick\" x=\"{:.1}\" y=\"{:.1}\">{date}</text>",
                tick.x,
                axis_y + 30.0
            );
        }
    }
    let _ = write!(
        svg,
        "<text class=\"sub\" x=\"{PLOT_X1}\" y=\"{:.1}\" text-anchor=\"end\">UTC</text>",
        axis_y + 43.0
    );

    // Incident start.
    if let Some(since) = report.since {
        let when = since.format("%Y-%m-%d %H:%M:%S UTC");
        match axis.x_of(since) {
            Some(x) => {
                let anchor = if x > (PLOT_X0 + PLOT_X1) / 2.0 {
                    "end"
                } else {
                    "start"
                };
                let _ = write!(
                    svg,
                    "<g><title>incident start {when}</title>\
                     <line class=\"since\" x1=\"{x:.1}\" y1=\"{:.1}\" x2=\"{x:.1}\" y2=\"{axis_y:.1}\"/>\
                     <text class=\"sincet\" x=\"{x:.1}\" y=\"{:.1}\" text-anchor=\"{anchor}\">incident start</text></g>",
                    LANES_TOP - 14.0,
                    LANES_TOP - 4.0,
                );
            }
            None if since < first => {
                let _ = write!(
                    svg,
                    "<text class=\"sincet\" x=\"{PLOT_X0}\" y=\"{:.1}\">\u{25c0} incident start {when} (before the axis)</text>",
                    LANES_TOP - 4.0,
                );
            }
            None => {
                let _ = write!(
                    svg,
                    "<text class=\"sincet\" x=\"{PLOT_X1}\" y=\"{:.1}\" text-anchor=\"end\">incident start {when} (after the axis) \u{25b6}</text>",
                    LANES_TOP - 4.0,
                );
            }
        }
    }

    // Markers, one per lane and bin.
    let bins = axis.bins();
    for (row, &i) in shown.iter().enumerate() {
        let cy = LANES_TOP + LANE_H * row as f64 + LANE_H / 2.0;
        let mut lane: Vec<Option<Bin>> = (0..bins).map(|_| None).collect();
        for f in &lanes[i].1 {
            let b = axis.bin_of(f.time, bins);
            lane[b].get_or_insert_with(Bin::default).add(f);
        }
        for (b, bin) in lane.iter().enumerate() {
            if let Some(bin) = bin {
                let cx = PLOT_X0 + BIN_PX * (b as f64 + 0.5);
                marker(&mut svg, bin, cx, cy, b % 2 == 0);
            }
        }
    }
    svg.push_str("</svg>\n");
    svg
}

/// The chart of a hunt without findings: still a valid picture that says so.
fn empty(report: &HuntReport) -> String {
    let mut svg = String::new();
    header(&mut svg, 110.0);
    let _ = write!(
        svg,
        "<text class=\"t\" x=\"10\" y=\"24\">Hunt findings per credential</text>\
         <text x=\"{}\" y=\"64\" text-anchor=\"middle\" style=\"font-size:14px\">No findings</text>\
         <text class=\"sub\" x=\"{}\" y=\"86\" text-anchor=\"middle\">{} record(s) of {} file(s) searched, {} rule(s){}</text></svg>",
        WIDTH / 2.0,
        WIDTH / 2.0,
        report.stats.records,
        report.stats.files,
        report.stats.rules,
        report
            .since
            .map(|s| format!(", incident start {}", s.format("%Y-%m-%d %H:%M:%S UTC")))
            .unwrap_or_default(),
    );
    svg.push('\n');
    svg
}

fn header(svg: &mut String, height: f64) {
    let _ = write!(
        svg,
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n\
         <svg xmlns=\"http://www.w3.org/2000/svg\" version=\"1.1\" width=\"{WIDTH}\" height=\"{height:.0}\" \
         viewBox=\"0 0 {WIDTH} {height:.0}\" role=\"img\">\n\
         <title>rekey hunt: findings per credential</title>\
         <style type=\"text/css\"><![CDATA[{STYLE}]]></style>\
         <rect x=\"0\" y=\"0\" width=\"{WIDTH}\" height=\"{height:.0}\" fill=\"#fff\"/>\n"
    );
}

fn legend(svg: &mut String, report: &HuntReport) {
    let mut counts = [0usize; 5];
    for f in &report.findings {
        counts[sev_index(f.severity)] += 1;
    }
    let y = 62.0;
    let mut x = PLOT_X0;
    for s in SEVERITIES {
        shape(svg, s, x + 6.0, y - 4.0);
        let label = format!("{s} ({})", counts[sev_index(s)]);
        let _ = write!(svg, "<text x=\"{:.1}\" y=\"{y}\">{label}</text>", x + 15.0);
        x += 30.0 + 6.2 * label.len() as f64;
    }
    let _ = write!(
        svg,
        "<line class=\"since\" x1=\"{:.1}\" y1=\"{:.1}\" x2=\"{:.1}\" y2=\"{:.1}\"/>\
         <text x=\"{:.1}\" y=\"{y}\">incident start</text>",
        x + 6.0,
        y - 10.0,
        x + 6.0,
        y + 2.0,
        x + 14.0,
    );
    svg.push('\n');
}

/// The findings of one lane that fall into one bin.
#[derive(Default)]
struct Bin<'a> {
    count: usize,
    per_severity: [usize; 5],
    first: Option<DateTime<Utc>>,
    last: Option<DateTime<Utc>>,
    /// The earliest few, for the tooltip.
    sample: Vec<&'a Finding>,
}

impl<'a> Bin<'a> {
    fn add(&mut self, f: &'a Finding) {
        self.count += 1;
        self.per_severity[sev_index(f.severity)] += 1;
        self.first = Some(self.first.map_or(f.time, |t| t.min(f.time)));
        self.last = Some(self.last.map_or(f.time, |t| t.max(f.time)));
        // Keep the TOOLTIP_FINDINGS earliest (stable for equal times: first seen first).
        let pos = self.sample.partition_point(|s| s.time <= f.time);
        if pos < TOOLTIP_FINDINGS {
            self.sample.insert(pos, f);
            self.sample.truncate(TOOLTIP_FINDINGS);
        }
    }

    fn highest(&self) -> Severity {
        SEVERITIES
            .into_iter()
            .find(|&s| self.per_severity[sev_index(s)] > 0)
            .unwrap_or(Severity::Informational)
    }
}

fn marker(svg: &mut String, bin: &Bin, cx: f64, cy: f64, count_above: bool) {
    svg.push_str("<g><title>");
    tooltip(svg, bin);
    svg.push_str("</title>");
    shape(svg, bin.highest(), cx, cy);
    if bin.count > 1 {
        let y = if count_above { cy - 8.0 } else { cy + 14.0 };
        let _ = write!(
            svg,
            "<text class=\"cnt\" x=\"{cx:.1}\" y=\"{y:.1}\">{}</text>",
            short_count(bin.count)
        );
    }
    svg.push_str("</g>\n");
}

fn tooltip(svg: &mut String, bin: &Bin) {
    let mut lines: Vec<String> = Vec::new();
    if let [f] = bin.sample[..]
        && bin.count == 1
    {
        lines.push(f.time.format("%Y-%m-%d %H:%M:%S UTC").to_string());
        lines.push(format!("{} \u{b7} {}", f.severity, esc(&f.rule, 120)));
        if let Some(a) = &f.action {
            lines.push(format!("action: {}", esc(a, 80)));
        }
        if let Some(ip) = &f.source_ip {
            lines.push(format!("source IP: {}", esc(ip, 60)));
        }
        if let Some(ua) = &f.user_agent {
            lines.push(format!("user agent: {}", esc(ua, 80)));
        }
    } else {
        let (first, last) = (bin.first.unwrap_or_default(), bin.last.unwrap_or_default());
        let to = if first.date_naive() == last.date_naive() {
            last.format("%H:%M:%S UTC")
        } else {
            last.format("%Y-%m-%d %H:%M:%S UTC")
        };
        lines.push(format!(
            "{} findings, {} to {to}",
            bin.count,
            first.format("%Y-%m-%d %H:%M:%S")
        ));
        lines.push(
            SEVERITIES
                .into_iter()
                .filter(|&s| bin.per_severity[sev_index(s)] > 0)
                .map(|s| format!("{s} {}", bin.per_severity[sev_index(s)]))
                .collect::<Vec<_>>()
                .join(", "),
        );
        let time = if first.date_naive() == last.date_naive() {
            "%H:%M:%S"
        } else {
            "%Y-%m-%d %H:%M:%S"
        };
        for f in &bin.sample {
            lines.push(format!(
                "{} {} {} {} \u{b7} {}",
                f.time.format(time),
                f.severity,
                esc(f.action.as_deref().unwrap_or("-"), 60),
                esc(f.source_ip.as_deref().unwrap_or("-"), 60),
                esc(&f.rule, 100),
            ));
        }
        if bin.count > bin.sample.len() {
            lines.push(format!(
                "\u{2026} and {} more",
                bin.count - bin.sample.len()
            ));
        }
    }
    svg.push_str(&lines.join("\n"));
}

fn shape(svg: &mut String, s: Severity, cx: f64, cy: f64) {
    let class = s.as_str();
    let _ = match s {
        Severity::Critical => write!(
            svg,
            "<path class=\"m {class}\" d=\"M{cx:.1} {:.1}L{:.1} {cy:.1}L{cx:.1} {:.1}L{:.1} {cy:.1}Z\"/>",
            cy - 6.0,
            cx + 6.0,
            cy + 6.0,
            cx - 6.0
        ),
        Severity::High => write!(
            svg,
            "<path class=\"m {class}\" d=\"M{cx:.1} {:.1}L{:.1} {:.1}L{:.1} {:.1}Z\"/>",
            cy - 5.5,
            cx + 5.5,
            cy + 4.5,
            cx - 5.5,
            cy + 4.5
        ),
        Severity::Medium => write!(
            svg,
            "<rect class=\"m {class}\" x=\"{:.1}\" y=\"{:.1}\" width=\"9\" height=\"9\"/>",
            cx - 4.5,
            cy - 4.5
        ),
        Severity::Low => write!(
            svg,
            "<circle class=\"m {class}\" cx=\"{cx:.1}\" cy=\"{cy:.1}\" r=\"4.5\"/>"
        ),
        Severity::Informational => write!(
            svg,
            "<circle class=\"m {class}\" cx=\"{cx:.1}\" cy=\"{cy:.1}\" r=\"3.5\"/>"
        ),
    };
}

fn sev_index(s: Severity) -> usize {
    match s {
        Severity::Critical => 0,
        Severity::High => 1,
        Severity::Medium => 2,
        Severity::Low => 3,
        Severity::Informational => 4,
    }
}

fn short_count(n: usize) -> String {
    match n {
        0..=999 => n.to_string(),
        1000..=9_999 => format!("{:.1}k", n as f64 / 1000.0),
        10_000..=999_999 => format!("{}k", n / 1000),
        _ => format!("{:.1}M", n as f64 / 1e6),
    }
}

/// `s`, at most `max` characters, as XML text or attribute content: markup characters become
/// entities; line breaks and tabs become spaces (untrusted text must not start a line of its own
/// in a tooltip); characters XML forbids (other control characters, U+FFFE, U+FFFF), C1
/// controls and bidirectional overrides become U+FFFD.
pub fn esc(s: &str, max: usize) -> String {
    let mut out = String::with_capacity(s.len().min(max.saturating_mul(4)));
    for (n, c) in s.chars().enumerate() {
        if n == max {
            out.push('\u{2026}');
            break;
        }
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            '\t' | '\n' | '\r' => out.push(' '),
            '\u{0}'..='\u{1f}'
            | '\u{7f}'..='\u{9f}'
            | '\u{202a}'..='\u{202e}'
            | '\u{2066}'..='\u{2069}'
            | '\u{fffe}'
            | '\u{ffff}' => out.push('\u{fffd}'),
            c => out.push(c),
        }
    }
    out
}

/// `s` shortened to `max` characters by cutting out its middle (both ends of an identifier say
/// the most).
fn middle_ellipsis(s: &str, max: usize) -> String {
    let n = s.chars().count();
    if n <= max {
        return s.to_string();
    }
    let head = (max - 1) / 2;
    let tail = max - 1 - head;
    let mut out: String = s.chars().take(head).collect();
    out.push('\u{2026}');
    out.extend(s.chars().skip(n - tail));
    out
}

struct Tick {
    x: f64,
    label: String,
    /// The date under a time-of-day label, where the day changes.
    date: Option<String>,
}

/// The time axis: the span drawn (the findings' span, padded, and the incident start when it is
/// close enough not to squeeze the findings into a corner) and its ticks.
struct Axis {
    t0: f64,
    t1: f64,
    ticks: Vec<Tick>,
}

impl Axis {
    fn new(first: DateTime<Utc>, last: DateTime<Utc>, since: Option<DateTime<Utc>>) -> Axis {
        let secs = |t: DateTime<Utc>| t.timestamp_millis() as f64 / 1000.0;
        let (mut lo, mut hi) = (secs(first), secs(last));
        if let Some(s) = since.map(secs) {
            // Include the incident start if the findings keep at least a third of the width.
            let span = hi - lo;
            if (s < lo && lo - s <= 2.0 * span) || (s > hi && s - hi <= 2.0 * span) {
                lo = lo.min(s);
                hi = hi.max(s);
            }
        }
        let pad = ((hi - lo) * 0.03).max(if hi > lo { 60.0 } else { 1800.0 });
        let (t0, t1) = (lo - pad, hi + pad);
        let mut axis = Axis {
            t0,
            t1,
            ticks: Vec::new(),
        };
        axis.ticks = axis.make_ticks();
        axis
    }

    fn x(&self, t: f64) -> f64 {
        PLOT_X0 + (t - self.t0) / (self.t1 - self.t0) * (PLOT_X1 - PLOT_X0)
    }

    /// The position of `t`, if it is on the axis.
    fn x_of(&self, t: DateTime<Utc>) -> Option<f64> {
        let t = t.timestamp_millis() as f64 / 1000.0;
        (self.t0..=self.t1).contains(&t).then(|| self.x(t))
    }

    fn bins(&self) -> usize {
        ((PLOT_X1 - PLOT_X0) / BIN_PX).floor() as usize
    }

    fn bin_of(&self, t: DateTime<Utc>, bins: usize) -> usize {
        let x = self.x(t.timestamp_millis() as f64 / 1000.0);
        (((x - PLOT_X0) / BIN_PX).floor().max(0.0) as usize).min(bins - 1)
    }

    fn make_ticks(&self) -> Vec<Tick> {
        const MAX_TICKS: f64 = 10.0;
        const DAY: i64 = 86_400;
        const FIXED: [i64; 19] = [
            1,
            5,
            10,
            15,
            30,
            60,
            120,
            300,
            600,
            900,
            1800,
            3600,
            2 * 3600,
            3 * 3600,
            6 * 3600,
            12 * 3600,
            DAY,
            2 * DAY,
            7 * DAY,
        ];
        let span = self.t1 - self.t0;
        let mut ticks = Vec::new();
        if let Some(&step) = FIXED.iter().find(|&&s| span / s as f64 <= MAX_TICKS) {
            let mut t = (self.t0 / step as f64).ceil() as i64 * step;
            let mut last_date = String::new();
            while (t as f64) <= self.t1 {
                let Some(dt) = Utc.timestamp_opt(t, 0).single() else {
                    break;
                };
                let (label, date) = if step < 60 {
                    (dt.format("%H:%M:%S").to_string(), true)
                } else if step < DAY {
                    (dt.format("%H:%M").to_string(), true)
                } else {
                    (dt.format("%Y-%m-%d").to_string(), false)
                };
                let date = date
                    .then(|| dt.format("%Y-%m-%d").to_string())
                    .filter(|d| *d != last_date)
                    .inspect(|d| last_date = d.clone());
                ticks.push(Tick {
                    x: self.x(t as f64),
                    label,
                    date,
                });
                t += step;
            }
            return ticks;
        }
        // Calendar months (or years) for long spans.
        let months = span / (30.44 * DAY as f64);
        let step = [1, 2, 3, 6, 12, 24, 60, 120, 600]
            .into_iter()
            .find(|&m| months / m as f64 <= MAX_TICKS)
            .unwrap_or(1200);
        let Some(start) = Utc.timestamp_opt(self.t0.floor() as i64, 0).single() else {
            return ticks;
        };
        let mut index = start.year() as i64 * 12 + start.month0() as i64;
        index = (index + step - 1).div_euclid(step) * step;
        loop {
            let (y, m) = (index.div_euclid(12), index.rem_euclid(12) as u32 + 1);
            let Some(dt) = i32::try_from(y)
                .ok()
                .and_then(|y| NaiveDate::from_ymd_opt(y, m, 1))
                .and_then(|d| d.and_hms_opt(0, 0, 0))
                .map(|d| d.and_utc())
            else {
                break;
            };
            let t = dt.timestamp() as f64;
            if t > self.t1 || ticks.len() > 20 {
                break;
            }
            if t >= self.t0 {
                ticks.push(Tick {
                    x: self.x(t),
                    label: if step >= 12 {
                        dt.format("%Y").to_string()
                    } else {
                        dt.format("%b %Y").to_string()
                    },
                    date: None,
                });
            }
            index += step;
        }
        ticks
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hunt::source::Source;
    use std::sync::Arc;

    fn finding(cred: Option<&str>, time: &str, severity: Severity) -> Finding {
        Finding {
            rule_id: Arc::from("r1"),
            rule: Arc::from("Reconnaissance by the key"),
            hunt: Some(Arc::from("aws-recon")),
            severity,
            severity_reason: Arc::from("rule level"),
            attack: None,
            source: Source::Cloudtrail,
            credential: cred.map(Arc::from),
            principal: None,
            time: time.parse().unwrap(),
            action: Some(Arc::from("ListUsers")),
            source_ip: Some(Arc::from("10.248.16.43")),
            user_agent: Some(Arc::from("Boto3/1.28")),
            error: None,
            location: "f.json (record 1)".into(),
            record_id: None,
            detail: None,
        }
    }

    fn report(findings: Vec<Finding>, since: Option<&str>) -> HuntReport {
        HuntReport {
            since: since.map(|s| s.parse().unwrap()),
            findings,
            ..Default::default()
        }
    }

    /// A minimal well-formedness check: one root element, every start tag closed in order,
    /// quoted attributes without `<`, only the five predefined or numeric entities, no
    /// characters XML forbids. Returns the number of elements.
    fn check_xml(doc: &str) -> usize {
        for c in doc.chars() {
            let ok =
                matches!(c, '\t' | '\n' | '\r') || (c >= ' ' && c != '\u{fffe}' && c != '\u{ffff}');
            assert!(ok, "forbidden character {:?}", c);
        }
        let check_text = |text: &str| {
            assert!(!text.contains('<'), "raw < in {text:?}");
            let mut rest = text;
            while let Some(i) = rest.find('&') {
                rest = &rest[i + 1..];
                let end = rest.find(';').expect("unterminated entity");
                let name = &rest[..end];
                assert!(
                    matches!(name, "amp" | "lt" | "gt" | "quot" | "apos")
                        || (name.starts_with('#') && name.len() > 1),
                    "bad entity &{name};"
                );
            }
        };
        let mut stack: Vec<&str> = Vec::new();
        let mut roots = 0;
        let mut elements = 0;
        let mut rest = doc;
        if let Some(r) = rest.strip_prefix("<?xml") {
            rest = &r[r.find("?>").expect("unterminated declaration") + 2..];
        }
        loop {
            let Some(i) = rest.find('<') else {
                assert!(rest.trim().is_empty() || !stack.is_empty());
                check_text(rest);
                break;
            };
            let text = &rest[..i];
            assert!(
                !stack.is_empty() || text.trim().is_empty(),
                "text outside the root: {text:?}"
            );
            check_text(text);
            rest = &rest[i..];
            if let Some(r) = rest.strip_prefix("<![CDATA[") {
                assert!(!stack.is_empty());
                rest = &r[r.find("]]>").expect("unterminated CDATA") + 3..];
                continue;
            }
            if let Some(r) = rest.strip_prefix("<!--") {
                rest = &r[r.find("-->").expect("unterminated comment") + 3..];
                continue;
            }
            let end = tag_end(rest);
            let tag = &rest[1..end];
            rest = &rest[end + 1..];
            if let Some(name) = tag.strip_prefix('/') {
                assert_eq!(stack.pop(), Some(name.trim()), "mismatched </{name}>");
                continue;
            }
            let self_closing = tag.ends_with('/');
            let body = tag.trim_end_matches('/');
            let name_end = body.find(|c: char| c.is_whitespace()).unwrap_or(body.len());
            let name = &body[..name_end];
            assert!(
                !name.is_empty() && name.chars().all(|c| c.is_alphanumeric() || c == ':'),
                "bad tag name in <{tag}>"
            );
            check_attributes(&body[name_end..]);
            elements += 1;
            if stack.is_empty() {
                roots += 1;
            }
            if !self_closing {
                stack.push(name);
            }
        }
        assert!(stack.is_empty(), "unclosed {stack:?}");
        assert_eq!(roots, 1, "one root element");
        elements
    }

    /// The index of the `>` ending the tag at the start of `s`, outside quoted values.
    fn tag_end(s: &str) -> usize {
        let mut quote = None;
        for (i, c) in s.char_indices() {
            match (quote, c) {
                (None, '"' | '\'') => quote = Some(c),
                (Some(q), c) if c == q => quote = None,
                (None, '>') => return i,
                (None, '<') if i > 0 => panic!("< inside a tag: {s:.80}"),
                _ => {}
            }
        }
        panic!("unterminated tag: {s:.80}")
    }

    fn check_attributes(mut s: &str) {
        loop {
            s = s.trim_start();
            if s.is_empty() {
                return;
            }
            let eq = s.find('=').expect("attribute without value");
            let name = s[..eq].trim();
            assert!(
                name.chars()
                    .all(|c| c.is_alphanumeric() || matches!(c, ':' | '-' | '_')),
                "bad attribute name {name:?}"
            );
            s = s[eq + 1..].trim_start();
            let q = s.chars().next().expect("missing value");
            assert!(q == '"' || q == '\'', "unquoted attribute {name}");
            let end = s[1..].find(q).expect("unterminated value") + 1;
            assert!(!s[1..end].contains('<'), "< in attribute {name}");
            assert!(
                !s[1..end].contains('&') || {
                    // Entities are checked like text.
                    s[1..end].split('&').skip(1).all(|e| {
                        e.starts_with("amp;")
                            || e.starts_with("lt;")
                            || e.starts_with("gt;")
                            || e.starts_with("quot;")
                            || e.starts_with("apos;")
                    })
                }
            );
            s = &s[end + 1..];
        }
    }

    #[test]
    fn the_checker_rejects_broken_xml() {
        for bad in [
            "<svg><g></svg>",
            "<svg><a>x</b></svg>",
            "<svg a=b/>",
            "<svg>a & b</svg>",
            "<svg/><svg/>",
            "<svg>\u{1}</svg>",
            "<svg><title>x < y</title></svg>",
        ] {
            assert!(
                std::panic::catch_unwind(|| check_xml(bad)).is_err(),
                "accepted {bad:?}"
            );
        }
        assert_eq!(check_xml("<svg a=\"&amp;\"><g/><t>x &lt; y</t></svg>"), 3);
    }

    #[test]
    fn one_lane_per_credential_with_markers_since_and_legend() {
        let r = report(
            vec![
                finding(Some("AKIAONE"), "2023-07-10T11:43:34Z", Severity::High),
                finding(Some("AKIAONE"), "2023-07-10T12:30:00Z", Severity::Medium),
                finding(Some("AKIATWO"), "2023-07-10T12:00:00Z", Severity::Critical),
                finding(None, "2023-07-10T12:10:00Z", Severity::Low),
            ],
            Some("2023-07-10T11:30:00Z"),
        );
        let svg = render(&r);
        check_xml(&svg);
        assert!(svg.starts_with("<?xml"));
        assert!(svg.contains("version=\"1.1\""));
        assert!(!svg.contains("<script"));
        assert_eq!(svg.matches("class=\"lbl\"").count(), 3);
        for l in [">AKIAONE<", ">AKIATWO<", ">(unattributed)<"] {
            assert!(svg.contains(l), "{l}");
        }
        assert!(
            svg.matches("<path class=\"m high\"").count() >= 2,
            "legend + marker"
        );
        assert_eq!(svg.matches("<g><title>2023-07-10 ").count(), 4, "4 markers");
        assert!(
            svg.contains("incident start</text></g>"),
            "since on the axis"
        );
        assert!(svg.contains("high (1)") && svg.contains("critical (1)"));
        assert!(svg.contains("action: ListUsers"));
        assert!(svg.contains("source IP: 10.248.16.43"));
        // Sub-day span: hour/minute ticks with the date under the first.
        assert!(svg.contains(">12:00</text>"), "{svg}");
        assert!(svg.contains(">2023-07-10</text>"));
    }

    #[test]
    fn hostile_text_is_escaped() {
        let mut f = finding(
            Some("AKIA<script>alert(1)</script>"),
            "2023-07-10T11:43:34Z",
            Severity::High,
        );
        f.rule = Arc::from("x</title><script>alert('&')</script>\"]]>");
        f.action = Some(Arc::from("List\u{0}Users\u{1b}[31m\u{202e}"));
        f.user_agent = Some(Arc::from("UA\nsource IP: 1.2.3.4\r\t\u{85}\u{fffe}"));
        f.source_ip = Some(Arc::from("'; <!-- -->"));
        let svg = render(&report(vec![f], None));
        check_xml(&svg);
        assert!(!svg.contains("<script"));
        assert!(!svg.contains("<!--"));
        assert!(svg.contains("x&lt;/title&gt;&lt;script&gt;alert(&apos;&amp;&apos;)"));
        assert!(svg.contains("&quot;]]&gt;"));
        assert!(svg.contains("List\u{fffd}Users\u{fffd}[31m\u{fffd}"));
        assert!(svg.contains("user agent: UA source IP: 1.2.3.4  \u{fffd}\u{fffd}"));
        assert!(
            !svg.contains("\nsource IP: 1.2.3.4"),
            "no forged tooltip line"
        );
        assert!(svg.contains("&apos;; &lt;!-- --&gt;"));
        assert_eq!(esc("a&b", 10), "a&amp;b");
        assert_eq!(esc("abcdef", 3), "abc\u{2026}");
    }

    #[test]
    fn no_findings_gives_a_valid_chart_that_says_so() {
        let mut r = report(vec![], Some("2022-12-21T00:00:00Z"));
        r.stats.records = 2900;
        let svg = render(&r);
        assert!(check_xml(&svg) < 10);
        assert!(svg.contains(">No findings<"));
        assert!(svg.contains("2900 record(s)"));
    }

    #[test]
    fn a_hundred_thousand_findings_stay_bounded_and_lanes_are_capped() {
        let start: DateTime<Utc> = "2023-07-10T00:00:00Z".parse().unwrap();
        let severities = SEVERITIES;
        let creds: Vec<String> = (0..80).map(|i| format!("AKIA{i:016}")).collect();
        let findings: Vec<Finding> = (0..100_000)
            .map(|i| {
                let mut f = finding(
                    Some(&creds[i % creds.len()]),
                    "2023-07-10T00:00:00Z",
                    severities[i % 5],
                );
                // Spread over ~40 days, so the axis has day ticks.
                f.time = start + chrono::Duration::seconds((i as i64 * 37) % 3_500_000);
                f
            })
            .collect();
        let svg = render(&report(findings, Some("2023-07-09T00:00:00Z")));
        let elements = check_xml(&svg);
        let bins = (PLOT_X1 - PLOT_X0) / BIN_PX;
        // Per marker: g, title, shape, count.
        assert!(
            elements as f64 <= MAX_LANES as f64 * bins * 4.0 + 500.0,
            "{elements} elements"
        );
        assert!(svg.len() < 12 * 1024 * 1024, "{} bytes", svg.len());
        assert_eq!(svg.matches("class=\"lbl\"").count(), MAX_LANES);
        assert!(svg.contains("+30 more credential(s)"));
        assert!(svg.contains("class=\"cnt\""), "binned markers show counts");
        assert!(svg.contains("\u{2026} and "), "long tooltips are cut");
        // Day ticks for a 40-day span.
        assert!(svg.contains(">2023-07-20</text>"));
    }

    #[test]
    fn ticks_follow_the_span() {
        let labels = |first: &str, last: &str| {
            let a = Axis::new(first.parse().unwrap(), last.parse().unwrap(), None);
            assert!(
                a.ticks.len() >= 2 && a.ticks.len() <= 21,
                "{}",
                a.ticks.len()
            );
            for w in a.ticks.windows(2) {
                assert!(w[1].x > w[0].x);
            }
            a.ticks.into_iter().map(|t| t.label).collect::<Vec<_>>()
        };
        let minutes = labels("2023-07-10T11:42:00Z", "2023-07-10T12:40:00Z");
        assert!(
            minutes.iter().all(|l| l.len() == 5 && l.contains(':')),
            "{minutes:?}"
        );
        let days = labels("2023-07-01T00:00:00Z", "2023-07-20T00:00:00Z");
        assert!(days.iter().all(|l| l.starts_with("2023-07-")), "{days:?}");
        let months = labels("2023-01-15T00:00:00Z", "2023-11-20T00:00:00Z");
        assert!(months.iter().all(|l| l.ends_with(" 2023")), "{months:?}");
        let years = labels("2010-01-01T00:00:00Z", "2023-11-20T00:00:00Z");
        assert!(years.iter().all(|l| l.len() == 4), "{years:?}");
        // One instant: a padded hour around it.
        let one = labels("2023-07-10T11:43:34Z", "2023-07-10T11:43:34Z");
        assert!(one.len() >= 2, "{one:?}");
    }

    #[test]
    fn a_distant_incident_start_is_noted_not_drawn_to_scale() {
        let r = report(
            vec![finding(Some("K"), "2023-07-10T11:43:34Z", Severity::High)],
            Some("2022-12-21T00:00:00Z"),
        );
        let svg = render(&r);
        check_xml(&svg);
        assert!(svg.contains("incident start 2022-12-21 00:00:00 UTC (before the axis)"));
    }
}
