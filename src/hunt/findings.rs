//! Findings of a hunt and how people and machines read them: deduplicated, grouped per
//! credential, as a table, one JSON document, a Markdown section for the run report, and a
//! text timeline per credential.

use super::Severity;
use super::sigma::RuleError;
use super::source::{Problem, Source};
use crate::report::Table;
use chrono::{DateTime, Utc};
use serde::Serialize;
use std::collections::BTreeMap;
use std::sync::Arc;

mod ahead;
mod json;

/// One suspicious record (or, for baseline checks, the first record of a suspicious pattern).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Finding {
    #[serde(serialize_with = "text")]
    pub rule_id: Arc<str>,
    #[serde(serialize_with = "text")]
    pub rule: Arc<str>,
    /// The catalogue hunt (`rekey hunt --list`) the rule belongs to, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[serde(serialize_with = "opt_text")]
    pub hunt: Option<Arc<str>>,
    pub severity: Severity,
    /// Why the finding has its severity: the rule's level, or how the credential's baseline
    /// moved it.
    #[serde(serialize_with = "text")]
    pub severity_reason: Arc<str>,
    /// The rule's ATT&CK tags, comma-joined (`attack.persistence,attack.t1098`).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[serde(serialize_with = "opt_text")]
    pub attack: Option<Arc<str>>,
    pub source: Source,
    /// The credential the record is attributed to (AWS access key id, GCP key name, Azure
    /// credential key id, GitHub hashed token or actor, CircleCI actor).
    #[serde(serialize_with = "opt_text")]
    pub credential: Option<Arc<str>>,
    #[serde(serialize_with = "opt_text")]
    pub principal: Option<Arc<str>>,
    #[serde(serialize_with = "time")]
    pub time: DateTime<Utc>,
    #[serde(serialize_with = "opt_text")]
    pub action: Option<Arc<str>>,
    #[serde(serialize_with = "opt_text")]
    pub source_ip: Option<Arc<str>>,
    #[serde(serialize_with = "opt_text")]
    pub user_agent: Option<Arc<str>>,
    #[serde(serialize_with = "opt_text")]
    pub error: Option<Arc<str>>,
    /// The record's file and line or record number.
    pub location: String,
    /// The record's own id (eventID, insertId, …), used to drop duplicates.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub record_id: Option<String>,
    /// For checks beyond a single record: what was seen.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct Stats {
    pub files: usize,
    /// Pages fetched from APIs (S3 objects, API responses).
    pub pages: u64,
    pub bytes: u64,
    pub records: u64,
    /// Records at or after `since` (the others only feed baselines).
    pub in_window: u64,
    /// Records outside the `--access-key-id` scope.
    pub out_of_scope: u64,
    /// Records newer than the window's end (not yet complete: delivery delay).
    pub after_until: u64,
    pub duplicates: u64,
    /// Findings beyond the per-credential-and-rule cap, counted only.
    pub findings_not_listed: u64,
    /// Unreadable records beyond the cap on listed problems, counted only.
    pub problems_not_listed: u64,
    pub rules: usize,
    pub elapsed_ms: u128,
}

/// Everything a hunt produced.
#[derive(Debug, Clone, Default, Serialize)]
pub struct HuntReport {
    pub since: Option<DateTime<Utc>>,
    pub stats: Stats,
    pub findings: Vec<Finding>,
    /// Records that could not be read, with their location; they were skipped.
    pub problems: Vec<Problem>,
    /// Rules that could not be loaded, with the reason.
    pub rule_errors: Vec<RuleError>,
    /// Things the reader should know (credentials without a baseline, …).
    pub notes: Vec<String>,
    /// Remote sources, or pages of them, that could not be fetched (HTTP errors, refused
    /// credentials): the hunt did not see everything it was asked to, so it must not look clean.
    pub incomplete: Vec<Problem>,
}

/// Sorts findings in [`Finding::order`] through an order of indices, then moves each finding
/// once: sorting the findings themselves moved every one (a few hundred bytes) about log n
/// times.
pub fn sort_findings(findings: &mut [Finding]) {
    if let Some(order) = order_of(findings.len(), |i| &findings[i]) {
        apply_order(order, |a, b| findings.swap(a, b));
    }
}

/// Where each of `len` findings, the `i`th at `at(i)` (a slice, or chunks of one), goes in
/// [`Finding::order`] (a stable sort): `order[k]` is the index of the `k`th; `None` when they
/// are in that order already.
pub(crate) fn order_of<'f>(len: usize, at: impl Fn(usize) -> &'f Finding) -> Option<Vec<usize>> {
    if (1..len).all(|i| Finding::order(at(i - 1), at(i)).is_le()) {
        return None;
    }
    let mut order: Vec<usize> = (0..len).collect();
    order.sort_by(|&i, &j| Finding::order(at(i), at(j)));
    Some(order)
}

/// Drops from findings in [`Finding::order`] those of a rule on a record (same rule, source,
/// record id or location, detail) already listed before them.
pub fn dedup_sorted(findings: &mut Vec<Finding>) {
    // Keys are log contents (attacker-chosen): a randomly seeded hasher. Each key is hashed
    // once to 64 bits; the table holds those and the first finding of each (16 bytes an
    // entry, not the key's four strings: a table of a busy trail's keys missed the cache on
    // every insert), and a finding whose hash was seen is compared in full with that one.
    use std::hash::BuildHasher;
    let state = foldhash::fast::RandomState::default();
    dedup_hashed(findings, |k| state.hash_one(k));
}

/// [`dedup_sorted`] with the keys hashed by `hash`.
fn dedup_hashed(
    findings: &mut Vec<Finding>,
    hash: impl Fn((&str, Source, &str, Option<&str>)) -> u64,
) {
    let mut first: std::collections::HashMap<u64, usize, foldhash::fast::RandomState> =
        std::collections::HashMap::with_capacity_and_hasher(findings.len(), Default::default());
    let mut keep = Vec::with_capacity(findings.len());
    for (i, f) in findings.iter().enumerate() {
        if let Some(ahead) = findings.get(i + json::PREFETCH_AHEAD) {
            json::prefetch(dedup_key(ahead).2);
        }
        let k = dedup_key(f);
        match first.entry(hash(k)) {
            std::collections::hash_map::Entry::Vacant(v) => {
                v.insert(i);
                keep.push(true);
            }
            // The same key: a duplicate.
            std::collections::hash_map::Entry::Occupied(o)
                if dedup_key(&findings[*o.get()]) == k =>
            {
                keep.push(false);
            }
            // Two keys of one 64-bit hash (never seen in practice): the keys themselves decide.
            std::collections::hash_map::Entry::Occupied(_) => {
                return dedup_by_keys(findings);
            }
        }
    }
    if keep.iter().all(|&k| k) {
        return;
    }
    let mut keep = keep.into_iter();
    findings.retain(|_| keep.next().unwrap_or(true));
}

/// What makes two findings one: the rule, the source, the record (its id, else where it is)
/// and the detail.
fn dedup_key(f: &Finding) -> (&str, Source, &str, Option<&str>) {
    (
        &f.rule_id,
        f.source,
        f.record_id.as_deref().unwrap_or(&f.location),
        f.detail.as_deref(),
    )
}

/// [`dedup_sorted`] with a set of the keys themselves.
fn dedup_by_keys(findings: &mut Vec<Finding>) {
    let keep: Vec<bool> = {
        let mut seen: std::collections::HashSet<_, foldhash::fast::RandomState> =
            std::collections::HashSet::with_capacity_and_hasher(findings.len(), Default::default());
        findings.iter().map(|f| seen.insert(dedup_key(f))).collect()
    };
    let mut keep = keep.into_iter();
    findings.retain(|_| keep.next().unwrap_or(true));
}

/// Two lists in [`Finding::order`] as one, `a`'s first on ties (a stable sort of `a` then `b`).
/// With room for [`FEW`] more: the checks' findings, inserted in place afterwards (see
/// [`HuntReport::normalize_from`]), then need no second list of them all.
pub fn merge_sorted(a: Vec<Finding>, b: Vec<Finding>) -> Vec<Finding> {
    merge_runs(a, b, FEW, Finding::order)
}

/// Sorted lists of findings (`len` in all) as one, in [`Finding::order`]: an earlier list's
/// first on ties (a stable sort of them in turn), each finding moved once, with room for
/// [`FEW`] more (see [`merge_sorted`]).
pub fn merge_sorted_lists<I: Iterator<Item = Finding>>(lists: Vec<I>, len: usize) -> Vec<Finding> {
    merge_lists(lists, len, FEW, Finding::order)
}

/// So few findings to add to many that each is inserted in its place.
const FEW: usize = 8;

/// Two lists sorted by `order` as one, `a`'s first on ties; each item moved once. A new list
/// has room for `spare` more.
fn merge_runs<T>(
    a: Vec<T>,
    b: Vec<T>,
    spare: usize,
    order: impl Fn(&T, &T) -> std::cmp::Ordering,
) -> Vec<T> {
    if b.is_empty() {
        return a;
    }
    if a.is_empty() {
        return b;
    }
    let len = a.len() + b.len();
    merge_lists(vec![a.into_iter(), b.into_iter()], len, spare, order)
}

/// Lists sorted by `order` (`len` items in all) as one, with room for `spare` more; on ties,
/// an earlier list's first (a stable sort of them in turn); each item moved once.
fn merge_lists<T, I: Iterator<Item = T>>(
    lists: Vec<I>,
    len: usize,
    spare: usize,
    order: impl Fn(&T, &T) -> std::cmp::Ordering,
) -> Vec<T> {
    let mut out = Vec::with_capacity(len + spare);
    out.extend(merging(lists, order));
    out
}

/// Lists sorted by `order`, read as one sorted list; on ties, an earlier list's first.
fn merging<T, I: Iterator<Item = T>>(
    mut lists: Vec<I>,
    order: impl Fn(&T, &T) -> std::cmp::Ordering,
) -> impl Iterator<Item = T> {
    let mut heads: Vec<Option<T>> = lists.iter_mut().map(Iterator::next).collect();
    std::iter::from_fn(move || {
        // The first list whose head no later head precedes (a few lists: one per worker).
        let mut least: Option<usize> = None;
        for (k, head) in heads.iter().enumerate() {
            if let Some(x) = head
                && least.is_none_or(|l| heads[l].as_ref().is_some_and(|y| order(x, y).is_lt()))
            {
                least = Some(k);
            }
        }
        let k = least?;
        let next = lists[k].next();
        std::mem::replace(&mut heads[k], next)
    })
}

/// Puts items in `order` (a permutation of their indices: `order[k]` is the index of the
/// `k`th) in place, through `swap(a, b)` of the items at `a` and `b`: each cycle of the
/// permutation followed once, an item moved by one swap. In place because a second buffer of
/// findings (a few hundred bytes each) was as many fresh pages, each a page fault.
pub fn apply_order(mut order: Vec<usize>, mut swap: impl FnMut(usize, usize)) {
    for start in 0..order.len() {
        let mut at = start;
        // Done positions point at themselves: a cycle is followed from its first position only.
        while order[at] != at {
            let from = order[at];
            order[at] = at;
            if from == start {
                break;
            }
            swap(at, from);
            at = from;
        }
    }
}

impl Finding {
    /// The order of a report's findings: by credential, time, rule and location.
    pub fn order(a: &Finding, b: &Finding) -> std::cmp::Ordering {
        (&a.credential, a.time, &a.rule_id, &a.location).cmp(&(
            &b.credential,
            b.time,
            &b.rule_id,
            &b.location,
        ))
    }
}

impl HuntReport {
    /// Drops findings of the same rule on the same record, then orders by credential and time.
    pub fn normalize(&mut self) {
        // Workers hand over their findings already in this order (see [`Finding::order`]):
        // the stable sort finds those runs and merges them, nearly linear on one core.
        sort_findings(&mut self.findings);
        super::phases::mark("normalize: sorted");
        dedup_sorted(&mut self.findings);
        self.sort_problems();
    }

    /// [`Self::normalize`] of `sorted` (in [`Finding::order`], no duplicates) and `more` (any
    /// order, no finding a duplicate of one in `sorted`): `more` sorted and merged in, `sorted`
    /// first on ties, as a stable sort of `sorted` then `more` orders them.
    pub fn normalize_from(&mut self, sorted: Vec<Finding>, mut more: Vec<Finding>) {
        sort_findings(&mut more);
        dedup_sorted(&mut more);
        if more.len() <= FEW {
            // A few: each put in its place (after its equals, as the stable sort puts it)
            // instead of every finding moved into a new list.
            self.findings = sorted;
            for f in more {
                let at = self
                    .findings
                    .partition_point(|x| Finding::order(x, &f).is_le());
                self.findings.insert(at, f);
            }
        } else {
            self.findings = merge_sorted(sorted, more);
        }
        self.sort_problems();
    }

    fn sort_problems(&mut self) {
        self.problems.sort_by(|a, b| a.location.cmp(&b.location));
    }

    pub fn highest(&self) -> Option<Severity> {
        self.findings.iter().map(|f| f.severity).max()
    }

    /// Findings per credential (`None` last: records no credential could be attributed to).
    pub fn by_credential(&self) -> Vec<(Option<&str>, Vec<&Finding>)> {
        by_credential_of(&self.findings)
    }

    /// Count of findings per rule title, most first.
    pub fn per_rule(&self) -> Vec<(String, Severity, usize)> {
        // Hashed, then sorted once: the map is small, the findings many.
        let mut map: std::collections::HashMap<
            (&str, Severity),
            usize,
            foldhash::fast::RandomState,
        > = Default::default();
        for f in &self.findings {
            *map.entry((&*f.rule, f.severity)).or_default() += 1;
        }
        let mut v: Vec<_> = map
            .into_iter()
            .map(|((r, s), n)| (r.to_string(), s, n))
            .collect();
        v.sort_by(|a, b| b.2.cmp(&a.2).then(b.1.cmp(&a.1)).then(a.0.cmp(&b.0)));
        v
    }

    /// One JSON document (compact): summary, findings grouped per credential, problems, rule
    /// errors.
    /// Serialized straight from the report (no intermediate tree: a hunt may hold many findings).
    pub fn write_json(&self, w: &mut dyn std::io::Write) -> serde_json::Result<()> {
        self.write_json_with(w, 0)
    }

    /// [`Self::write_json`] with the findings rendered by `threads` helper threads (0: one per
    /// core) ahead of the writer, see [`ahead`].
    pub fn write_json_with(
        &self,
        w: &mut dyn std::io::Write,
        threads: usize,
    ) -> serde_json::Result<()> {
        super::phases::mark("json: start");
        let layout = ahead::Layout::of(&self.findings);
        super::phases::mark("json: by credential");
        std::thread::scope(|scope| {
            // The helpers start on the findings while the groups are made here.
            let stream = ahead::Stream::start(scope, &layout, threads);
            let groups = self.group_runs(threads);
            super::phases::mark("json: groups made");
            self.write_doc(w, groups, stream, threads)
        })
    }

    /// The document, compact, field by field in this order (what `serde_json` writes for a
    /// struct of these fields): the `credentials` array comes rendered ahead, as text.
    fn write_doc(
        &self,
        w: &mut dyn std::io::Write,
        groups: GroupRuns<'_>,
        credentials: ahead::Stream<'_, '_>,
        threads: usize,
    ) -> serde_json::Result<()> {
        // The groups' second half rendered from now on, beside what comes before them.
        std::thread::scope(|scope| {
            let array = GroupsArray::start(scope, &groups, threads);
            self.write_fields(w, &groups, array, credentials)
        })
    }

    /// [`Self::write_doc`]'s fields, in order.
    fn write_fields(
        &self,
        w: &mut dyn std::io::Write,
        groups: &GroupRuns<'_>,
        array: GroupsArray<'_, '_>,
        credentials: ahead::Stream<'_, '_>,
    ) -> serde_json::Result<()> {
        #[derive(Serialize)]
        struct ByRule {
            rule: String,
            severity: Severity,
            count: usize,
        }
        fn field<T: Serialize + ?Sized>(
            w: &mut dyn std::io::Write,
            first: bool,
            name: &str,
            value: &T,
        ) -> serde_json::Result<()> {
            let sep: &[u8] = if first { b"{\"" } else { b",\"" };
            w.write_all(sep)
                .and_then(|()| w.write_all(name.as_bytes()))
                .and_then(|()| w.write_all(b"\":"))
                .map_err(serde_json::Error::io)?;
            serde_json::to_writer(w, value)
        }
        let by_rule: Vec<ByRule> = self
            .per_rule()
            .into_iter()
            .map(|(rule, severity, count)| ByRule {
                rule,
                severity,
                count,
            })
            .collect();
        field(w, true, "since", &self.since)?;
        field(w, false, "highest", &self.highest())?;
        field(w, false, "total", &self.findings.len())?;
        field(w, false, "stats", &self.stats)?;
        field(w, false, "by_rule", &by_rule)?;
        // Whatever the groups' order: it counts and collects into sorted maps.
        field(
            w,
            false,
            "summary",
            &Self::summary_of(groups.0.iter().chain(&groups.1)),
        )?;
        w.write_all(b",\"groups\":")
            .map_err(serde_json::Error::io)?;
        array.write(w)?;
        super::phases::mark("json: groups written");
        w.write_all(b",\"credentials\":")
            .map_err(serde_json::Error::io)?;
        credentials.write(w)?;
        field(w, false, "problems", &self.problems)?;
        // Left out when empty.
        if !self.incomplete.is_empty() {
            field(w, false, "incomplete", &self.incomplete)?;
        }
        field(w, false, "rule_errors", &self.rule_errors)?;
        field(w, false, "notes", &self.notes)?;
        // Compact: a hunt over a busy trail lists every record, and indentation was a fifth of
        // the bytes (73 MB, now 59 MB in the bench); `jq .` pretty-prints for a person.
        w.write_all(b"}").map_err(serde_json::Error::io)
    }

    /// The human table: the summary, then the findings grouped (see [`Self::groups`]).
    pub fn to_table(&self) -> String {
        self.to_table_grouped()
    }

    /// The table with every record (`--all`): per credential, one row per finding.
    pub fn to_table_all(&self) -> String {
        let mut out = String::new();
        for (c, fs) in self.by_credential() {
            out.push_str(&format!(
                "Credential {} — {} finding(s)\n",
                c.unwrap_or("(unattributed)"),
                fs.len()
            ));
            let mut t = Table::new([
                "TIME",
                "SEVERITY",
                "RULE",
                "ACTION",
                "SOURCE IP",
                "USER AGENT",
                "WHERE",
            ]);
            for f in fs {
                t.row([
                    f.time.format("%Y-%m-%dT%H:%M:%SZ").to_string(),
                    f.severity.to_string(),
                    f.rule.to_string(),
                    f.action.as_deref().unwrap_or_default().to_string(),
                    f.source_ip.as_deref().unwrap_or_default().to_string(),
                    shorten(f.user_agent.as_deref().unwrap_or(""), 40),
                    f.location.clone(),
                ]);
            }
            out.push_str(&t.render());
            out.push('\n');
        }
        out.push_str(&self.summary_text());
        out
    }

    fn summary_text(&self) -> String {
        let mut out = format!(
            "{} finding(s){} in {} record(s) of {} file(s) ({} in the window), {} rule(s).\n",
            self.findings.len(),
            self.highest()
                .map(|s| format!(", highest {s}"))
                .unwrap_or_default(),
            self.stats.records,
            self.stats.files,
            self.stats.in_window,
            self.stats.rules,
        );
        for p in &self.incomplete {
            out.push_str(&format!("NOT READ: {}: {}\n", p.location, p.message));
        }
        for p in &self.problems {
            out.push_str(&format!("skipped: {}: {}\n", p.location, p.message));
        }
        for e in &self.rule_errors {
            out.push_str(&format!("rule not loaded: {}: {}\n", e.origin, e.reason));
        }
        for n in &self.notes {
            out.push_str(&format!("note: {n}\n"));
        }
        out
    }

    /// A text timeline per credential: the groups, in order of their first time.
    pub fn timeline(&self) -> String {
        self.timeline_grouped()
    }

    /// A text timeline per credential with every record (`--all`).
    pub fn timeline_all(&self) -> String {
        let mut out = String::new();
        for (c, fs) in self.by_credential() {
            out.push_str(&format!("== {}\n", c.unwrap_or("(unattributed)")));
            let mut last_day = String::new();
            for f in fs {
                let day = f.time.format("%Y-%m-%d").to_string();
                if day != last_day {
                    out.push_str(&format!("{day}\n"));
                    last_day = day;
                }
                out.push_str(&format!(
                    "  {}  {:<13} {:<28} {} {}\n",
                    f.time.format("%H:%M:%S"),
                    f.severity.as_str(),
                    f.action.as_deref().unwrap_or("-"),
                    f.source_ip.as_deref().unwrap_or("-"),
                    f.rule
                ));
            }
        }
        out
    }

    /// A Markdown section for the run report (incident ticket).
    pub fn markdown_section(&self) -> String {
        self.markdown_section_with_chart(None)
    }

    /// [`Self::markdown_section`], showing under its summary the timeline chart at `chart` (a
    /// path relative to the Markdown file, without `<`, `>` or line breaks).
    pub fn markdown_section_with_chart(&self, chart: Option<&str>) -> String {
        self.markdown(chart, false)
    }

    /// [`Self::markdown_section_with_chart`] with every record instead of the groups (`--all`).
    pub fn markdown_section_every_record(&self, chart: Option<&str>) -> String {
        self.markdown(chart, true)
    }

    fn markdown(&self, chart: Option<&str>, every_record: bool) -> String {
        let mut md = String::from("## Hunt findings\n\n");
        md.push_str(&format!(
            "{} finding(s){} in {} record(s) from {} file(s){}.\n\n",
            self.findings.len(),
            self.highest()
                .map(|s| format!(", highest **{s}**"))
                .unwrap_or_default(),
            self.stats.records,
            self.stats.files,
            self.since
                .map(|s| format!(", window from {}", s.to_rfc3339()))
                .unwrap_or_default()
        ));
        if let Some(chart) = chart {
            md.push_str(&format!(
                "![Timeline of the findings per credential](<{chart}>)\n\n"
            ));
        }
        if !self.findings.is_empty() {
            md.push_str("| Rule | Severity | Count |\n|---|---|---|\n");
            for (r, s, n) in self.per_rule() {
                md.push_str(&format!("| {} | {s} | {n} |\n", md_cell(&r)));
            }
            md.push('\n');
        }
        if !every_record {
            self.markdown_groups(&mut md);
        }
        for (c, fs) in self.by_credential().into_iter().filter(|_| every_record) {
            md.push_str(&format!(
                "### {}

",
                crate::escape::markdown_code(c.unwrap_or("(unattributed)"))
            ));
            md.push_str("| Time | Severity | Rule | Action | Source IP | User agent | Where |\n|---|---|---|---|---|---|---|\n");
            for f in fs {
                md.push_str(&format!(
                    "| {} | {} | {} | {} | {} | {} | {} |\n",
                    f.time.format("%Y-%m-%d %H:%M:%S"),
                    f.severity,
                    md_cell(&f.rule),
                    md_cell(f.action.as_deref().unwrap_or("")),
                    md_cell(f.source_ip.as_deref().unwrap_or("")),
                    md_cell(&shorten(f.user_agent.as_deref().unwrap_or(""), 60)),
                    md_cell(&f.location)
                ));
            }
            md.push('\n');
        }
        if !self.incomplete.is_empty() {
            md.push_str("**Incomplete hunt**: these sources could not be read:\n\n");
            for p in &self.incomplete {
                md.push_str(&format!(
                    "- {}: {}\n",
                    crate::escape::markdown_code(&p.location),
                    md_cell(&p.message)
                ));
            }
            md.push('\n');
        }
        if !self.problems.is_empty() {
            md.push_str(&format!(
                "{} record(s) could not be read and were skipped:\n\n",
                self.problems.len()
            ));
            for p in &self.problems {
                md.push_str(&format!(
                    "- {}: {}\n",
                    crate::escape::markdown_code(&p.location),
                    md_cell(&p.message)
                ));
            }
            md.push('\n');
        }
        md
    }
}

// Arc<str> shares repeated values between findings; serde's `rc` feature would rebuild every
// dependency for two one-line functions.
fn text<S: serde::Serializer>(t: &Arc<str>, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(t)
}

fn opt_text<S: serde::Serializer>(t: &Option<Arc<str>>, s: S) -> Result<S::Ok, S::Error> {
    match t {
        Some(t) => s.serialize_str(t),
        None => s.serialize_none(),
    }
}

/// A time as chrono's `Serialize` writes it (RFC 3339, `Z`, a fraction only when there is
/// one), here without the formatting machinery for whole seconds: every finding has a time, and
/// chrono's `Display` path was a sixth of rendering one.
fn time<S: serde::Serializer>(t: &DateTime<Utc>, s: S) -> Result<S::Ok, S::Error> {
    use chrono::Timelike;
    match whole_seconds(t) {
        Some(b) if t.nanosecond() == 0 => match std::str::from_utf8(&b) {
            Ok(text) => s.serialize_str(text),
            Err(_) => t.serialize(s),
        },
        _ => t.serialize(s),
    }
}

/// A time to the second as `%Y-%m-%dT%H:%M:%SZ` writes it (any fraction left out), for the
/// tables' cells (two per group).
fn stamp(t: &DateTime<Utc>) -> String {
    match whole_seconds(t).map(|b| String::from_utf8(b.to_vec())) {
        Some(Ok(text)) => text,
        _ => t.format("%Y-%m-%dT%H:%M:%SZ").to_string(),
    }
}

/// `%Y-%m-%dT%H:%M:%SZ` of a time in years 0 to 9999, digit by digit: chrono's formatting
/// machinery was a sixth of rendering a finding. On the stack: the JSON writer renders one
/// per finding and group. `None` for other years and for a leap second (chrono writes `60`).
fn whole_seconds(t: &DateTime<Utc>) -> Option<[u8; 20]> {
    use chrono::{Datelike, Timelike};
    let year = t.year();
    if !(0..=9999).contains(&year) || t.nanosecond() >= 1_000_000_000 {
        return None;
    }
    let mut b = *b"0000-00-00T00:00:00Z";
    for (at, width, v) in [
        (0, 4, year.unsigned_abs()),
        (5, 2, t.month()),
        (8, 2, t.day()),
        (11, 2, t.hour()),
        (14, 2, t.minute()),
        (17, 2, t.second()),
    ] {
        let mut v = v;
        for i in (at..at + width).rev() {
            b[i] = b'0' + (v % 10) as u8;
            v /= 10;
        }
    }
    Some(b)
}

/// A cell's text shown literally (user agents, actions and messages are the attacker's).
fn md_cell(s: &str) -> String {
    crate::escape::markdown(s)
}

fn shorten(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        s.to_string()
    } else {
        let mut t: String = s.chars().take(max.saturating_sub(1)).collect();
        t.push('…');
        t
    }
}

/// Findings of one (credential, rule, action, source address): what a person reads first.
#[derive(Debug, Clone, Serialize)]
pub struct FindingGroup<'a> {
    pub credential: Option<&'a str>,
    pub rule_id: &'a str,
    pub rule: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hunt: Option<&'a str>,
    /// The highest severity among the group's findings, and why it has it.
    pub severity: Severity,
    pub severity_reason: &'a str,
    pub action: Option<&'a str>,
    pub source_ip: Option<&'a str>,
    pub count: usize,
    #[serde(serialize_with = "time")]
    pub first: DateTime<Utc>,
    #[serde(serialize_with = "time")]
    pub last: DateTime<Utc>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub attack: Option<&'a str>,
    /// The first finding's location and detail.
    pub location: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<&'a str>,
    /// Where its credential comes among the report's credentials in their order (`None`
    /// first, then by name): equal for equal credentials, in the same order as their names.
    /// Sorting tens of thousands of groups compared names on every tie of severity and time (a
    /// string compare, its first load a cache miss); this is one compare of integers.
    #[serde(skip)]
    credential_rank: usize,
}

/// [`HuntReport::by_credential`] of these findings.
fn by_credential_of(fs: &[Finding]) -> Vec<(Option<&str>, Vec<&Finding>)> {
    if let Some(runs) = credential_runs(fs) {
        return runs
            .into_iter()
            .map(|(c, r)| (c, fs[r].iter().collect()))
            .collect();
    }
    let mut map: BTreeMap<(bool, Option<&str>), Vec<&Finding>> = BTreeMap::new();
    for f in fs {
        let c = f.credential.as_deref();
        map.entry((c.is_none(), c)).or_default().push(f);
    }
    map.into_iter().map(|((_, c), v)| (c, v)).collect()
}

/// Whether the findings come in runs per credential, in the credentials' order (as
/// [`HuntReport::normalize`] leaves them).
fn sorted_by_credential(fs: &[Finding]) -> bool {
    fs.windows(2).all(|w| w[0].credential <= w[1].credential)
}

/// The runs of findings per credential, in the order [`HuntReport::by_credential`] lists them
/// (`None` last), when the findings are sorted by credential (as [`HuntReport::normalize`]
/// leaves them): taken in one pass, no map entry per finding (a few milliseconds of the run's
/// serial tail). `None` when they are not.
fn credential_runs(fs: &[Finding]) -> Option<Vec<(Option<&str>, std::ops::Range<usize>)>> {
    if !sorted_by_credential(fs) {
        return None;
    }
    let mut out = Vec::new();
    let mut start = 0;
    for i in 1..=fs.len() {
        if i == fs.len() || fs[i].credential != fs[start].credential {
            out.push((fs[start].credential.as_deref(), start..i));
            start = i;
        }
    }
    // `None` sorts first; it is listed last.
    if out.first().is_some_and(|(c, _)| c.is_none()) {
        out.rotate_left(1);
    }
    Some(out)
}

/// The order of groups: severity (highest first), first time, then the group's key (a total
/// order: keys are unique), its credential compared by [`FindingGroup::credential_rank`].
fn group_order(a: &FindingGroup<'_>, b: &FindingGroup<'_>) -> std::cmp::Ordering {
    b.severity
        .cmp(&a.severity)
        .then(a.first.cmp(&b.first))
        .then(a.credential_rank.cmp(&b.credential_rank))
        .then_with(|| {
            a.rule_id
                .cmp(b.rule_id)
                .then(a.action.cmp(&b.action))
                .then(a.source_ip.cmp(&b.source_ip))
        })
}

/// The sorted groups of `findings`; `by_credential`: they come in runs per credential (the
/// report's order), and the map of groups holds one credential's at a time (small, in cache,
/// instead of every group). `first` is the position of `findings[0]` among the report's
/// findings: a credential's rank is the position of its first finding there (see
/// [`FindingGroup::credential_rank`]), the same whichever part of them is grouped.
fn groups_of(findings: &[Finding], by_credential: bool, first: usize) -> Vec<FindingGroup<'_>> {
    type Key<'a> = (Option<&'a str>, &'a str, Option<&'a str>, Option<&'a str>);
    // Out of order (never for a normalized report): the ranks from the credentials sorted.
    let names: Vec<Option<&str>> = if by_credential {
        Vec::new()
    } else {
        let mut names: Vec<_> = findings.iter().map(|f| f.credential.as_deref()).collect();
        names.sort_unstable();
        names.dedup();
        names
    };
    let mut run_start = 0;
    // Keys are log contents (attacker-chosen): a randomly seeded hasher, faster than SipHash.
    let mut map: std::collections::HashMap<Key<'_>, FindingGroup<'_>, foldhash::fast::RandomState> =
        Default::default();
    // Room for the most groups there can be (one per finding) at once: grown by doubling, the
    // list was copied and faulted in afresh each time; the room never used is never touched.
    let mut out: Vec<FindingGroup<'_>> = Vec::with_capacity(findings.len());
    for (i, f) in findings.iter().enumerate() {
        if by_credential && i > 0 && findings[i - 1].credential != f.credential {
            out.extend(map.drain().map(|(_, g)| g));
            run_start = i;
        }
        let key = (
            f.credential.as_deref(),
            &*f.rule_id,
            f.action.as_deref(),
            f.source_ip.as_deref(),
        );
        let g = map.entry(key).or_insert_with(|| FindingGroup {
            credential: f.credential.as_deref(),
            rule_id: &f.rule_id,
            rule: &f.rule,
            hunt: f.hunt.as_deref(),
            severity: f.severity,
            severity_reason: &f.severity_reason,
            action: f.action.as_deref(),
            source_ip: f.source_ip.as_deref(),
            count: 0,
            first: f.time,
            last: f.time,
            attack: f.attack.as_deref(),
            location: &f.location,
            detail: f.detail.as_deref(),
            credential_rank: if by_credential {
                first + run_start
            } else {
                names.partition_point(|&n| n < f.credential.as_deref())
            },
        });
        g.count += 1;
        if f.severity > g.severity {
            g.severity = f.severity;
            g.severity_reason = &f.severity_reason;
        }
        if f.time < g.first {
            g.first = f.time;
            g.location = &f.location;
            g.detail = f.detail.as_deref();
        }
        g.last = g.last.max(f.time);
    }
    out.extend(map.into_values());
    // Keys are unique and the order total: the same order as a stable sort, without a second
    // buffer of groups (fresh pages, each a page fault).
    out.sort_unstable_by(group_order);
    out
}

/// Credentials with high findings named in the summary line of the table and Markdown; the
/// others are counted there (a line of 3,616 names is not read in a minute).
pub const HIGH_CREDENTIALS_NAMED: usize = 20;

/// What the summary at the top of every rendering says.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Summary {
    /// Credentials with findings at high or above, with how many groups.
    pub high_credentials: Vec<(String, usize)>,
    /// ATT&CK tactic → the rules (with their technique ids) seen under it.
    pub tactics: BTreeMap<String, Vec<String>>,
}

impl HuntReport {
    /// The findings grouped per (credential, rule, action, source address), sorted by severity
    /// (highest first) then first time.
    pub fn groups(&self) -> Vec<FindingGroup<'_>> {
        self.groups_with(1)
    }

    /// [`Self::groups`] on two threads when `threads` (0: one per core) allows and the
    /// findings are many (see [`Self::group_runs`]).
    pub fn groups_with(&self, threads: usize) -> Vec<FindingGroup<'_>> {
        let GroupRuns(a, b) = self.group_runs(threads);
        merge_runs(a, b, 0, group_order)
    }

    /// The groups as two sorted lists, made on two threads when `threads` (0: one per core)
    /// allows and the findings are many: each groups the credentials of one half of the
    /// findings (a group never spans credentials) and sorts its groups. Grouping was a
    /// twentieth of a hunt on the writer's thread, while the workers' cores sat idle.
    fn group_runs(&self, threads: usize) -> GroupRuns<'_> {
        let threads = crate::hunt::threads_or_cores(threads);
        let fs = &self.findings[..];
        if !sorted_by_credential(fs) {
            return GroupRuns(groups_of(fs, false, 0), Vec::new());
        }
        if threads < 2 || fs.len() < 4096 {
            return GroupRuns(groups_of(fs, true, 0), Vec::new());
        }
        // Cut between two credentials near the middle.
        let mut cut = fs.len() / 2;
        while cut < fs.len() && fs[cut].credential == fs[cut - 1].credential {
            cut += 1;
        }
        let (a, b) = fs.split_at(cut);
        let (a, b) = std::thread::scope(|s| {
            let other = s.spawn(|| groups_of(b, true, cut));
            (groups_of(a, true, 0), other.join())
        });
        match b {
            Ok(b) => GroupRuns(a, b),
            Err(_) => GroupRuns(groups_of(fs, true, 0), Vec::new()),
        }
    }

    /// Who has high findings, and which ATT&CK tactics and techniques were seen.
    pub fn summary(&self) -> Summary {
        Self::summary_of(&self.groups())
    }

    /// The summary of these groups (computed once per rendering: grouping is not free).
    fn summary_of<'g, 'a: 'g>(groups: impl IntoIterator<Item = &'g FindingGroup<'a>>) -> Summary {
        let mut high: BTreeMap<&str, usize> = BTreeMap::new();
        let mut tactics: BTreeMap<String, std::collections::BTreeSet<String>> = BTreeMap::new();
        // A rule's label and tactics follow from its title and tags: worked out once per
        // (rule, tags), not per group (tens of thousands on a busy trail, on the writer's
        // thread).
        let mut labelled: std::collections::HashSet<
            (&str, Option<&str>),
            foldhash::fast::RandomState,
        > = Default::default();
        for g in groups {
            if g.severity >= Severity::High {
                *high
                    .entry(g.credential.unwrap_or("(unattributed)"))
                    .or_default() += 1;
            }
            if g.severity == Severity::Informational || !labelled.insert((g.rule, g.attack)) {
                continue;
            }
            let tags: Vec<&str> = g
                .attack
                .unwrap_or("")
                .split(',')
                .filter_map(|t| t.strip_prefix("attack."))
                .collect();
            let techniques: Vec<String> = tags
                .iter()
                .filter(|t| is_technique(t))
                .map(|t| t.to_ascii_uppercase())
                .collect();
            let label = if techniques.is_empty() {
                g.rule.to_string()
            } else {
                format!("{} ({})", g.rule, techniques.join(", "))
            };
            for t in tags.iter().filter(|t| !is_technique(t)) {
                tactics
                    .entry(t.to_string())
                    .or_default()
                    .insert(label.clone());
            }
        }
        let mut high_credentials: Vec<(String, usize)> =
            high.into_iter().map(|(c, n)| (c.to_string(), n)).collect();
        high_credentials.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
        Summary {
            high_credentials,
            tactics: tactics
                .into_iter()
                .map(|(k, v)| (k, v.into_iter().collect()))
                .collect(),
        }
    }

    /// The summary as lines of text: the credentials with high findings (the first
    /// [`HIGH_CREDENTIALS_NAMED`]; or one line saying there are none), then the techniques per
    /// tactic.
    pub fn summary_lines(&self) -> Vec<String> {
        self.summary_lines_of(&self.groups())
    }

    /// [`Self::summary_lines`] of groups already made.
    fn summary_lines_of(&self, groups: &[FindingGroup<'_>]) -> Vec<String> {
        let s = Self::summary_of(groups);
        let mut out = Vec::new();
        if s.high_credentials.is_empty() {
            out.push(format!(
                "No high findings: no credential did anything at high severity{}.",
                self.since
                    .map(|t| format!(" after {}", t.format("%Y-%m-%dT%H:%M:%SZ")))
                    .unwrap_or_default()
            ));
        } else {
            // A line a person reads: the credentials with most high groups first, the rest
            // counted (the JSON summary lists them all).
            let list: Vec<String> = s
                .high_credentials
                .iter()
                .take(HIGH_CREDENTIALS_NAMED)
                .map(|(c, n)| format!("{c} ({n} group(s))"))
                .collect();
            let more = s
                .high_credentials
                .len()
                .saturating_sub(HIGH_CREDENTIALS_NAMED);
            let more = match more {
                0 => String::new(),
                n => format!(", and {n} more credential(s) (all in --output json)"),
            };
            out.push(format!("High findings for: {}{more}", list.join(", ")));
        }
        for (tactic, rules) in &s.tactics {
            out.push(format!("{tactic}: {}", rules.join("; ")));
        }
        out
    }

    /// Groups per credential, credentials with the highest severity first.
    fn groups_by_credential(&self) -> Vec<(Option<&str>, Vec<FindingGroup<'_>>)> {
        Self::by_credential_of(self.groups())
    }

    /// [`Self::groups_by_credential`] of groups already made.
    fn by_credential_of(
        groups: Vec<FindingGroup<'_>>,
    ) -> Vec<(Option<&str>, Vec<FindingGroup<'_>>)> {
        let mut per: Vec<(Option<&str>, Vec<FindingGroup<'_>>)> = Vec::new();
        // Each credential's place in `per`: a search of `per` per group was quadratic (3,616
        // credentials and 29,429 groups: 0.2 s of a table on one core).
        let mut at: std::collections::HashMap<Option<&str>, usize, foldhash::fast::RandomState> =
            Default::default();
        for g in groups {
            match at.get(&g.credential) {
                Some(&i) => per[i].1.push(g),
                None => {
                    at.insert(g.credential, per.len());
                    per.push((g.credential, vec![g]));
                }
            }
        }
        per
    }

    /// The table a person reads: the summary, then per credential one row per group.
    pub fn to_table_grouped(&self) -> String {
        let mut out = String::new();
        // Made once for the summary and the sections (each making them was most of a table).
        let groups = self.groups();
        for l in self.summary_lines_of(&groups) {
            out.push_str(&l);
            out.push('\n');
        }
        out.push('\n');
        for (c, gs) in Self::by_credential_of(groups) {
            let n: usize = gs.iter().map(|g| g.count).sum();
            out.push_str(&format!(
                "Credential {} — {n} finding(s) in {} group(s)\n",
                c.unwrap_or("(unattributed)"),
                gs.len()
            ));
            let mut t = Table::new([
                "SEVERITY",
                "RULE",
                "ACTION",
                "SOURCE IP",
                "COUNT",
                "FIRST",
                "LAST",
                "WHY",
                "WHERE",
            ]);
            for g in &gs {
                t.row([
                    g.severity.to_string(),
                    g.rule.to_string(),
                    shorten(g.action.unwrap_or(""), 48),
                    g.source_ip.unwrap_or("").to_string(),
                    g.count.to_string(),
                    stamp(&g.first),
                    stamp(&g.last),
                    shorten(g.severity_reason, 80),
                    g.location.to_string(),
                ]);
            }
            out.push_str(&t.render());
            out.push('\n');
        }
        out.push_str(&self.summary_text());
        out
    }

    /// The timeline of groups per credential: first time, severity, action ×count.
    pub fn timeline_grouped(&self) -> String {
        let mut out = String::new();
        for (c, mut gs) in self.groups_by_credential() {
            gs.sort_by_key(|g| g.first);
            out.push_str(&format!("== {}\n", c.unwrap_or("(unattributed)")));
            let mut last_day = String::new();
            for g in gs {
                let day = g.first.format("%Y-%m-%d").to_string();
                if day != last_day {
                    out.push_str(&format!("{day}\n"));
                    last_day = day;
                }
                let span = if g.count > 1 {
                    format!(
                        " ×{} until {}",
                        g.count,
                        g.last.format("%Y-%m-%dT%H:%M:%SZ")
                    )
                } else {
                    String::new()
                };
                out.push_str(&format!(
                    "  {}  {:<13} {:<28} {} {}{span}\n",
                    g.first.format("%H:%M:%S"),
                    g.severity.as_str(),
                    shorten(g.action.unwrap_or("-"), 28),
                    g.source_ip.unwrap_or("-"),
                    g.rule
                ));
            }
        }
        out
    }

    /// The Markdown groups: the summary lines, then per credential one row per group.
    fn markdown_groups(&self, md: &mut String) {
        let groups = self.groups();
        for l in self.summary_lines_of(&groups) {
            md.push_str(&format!("- {}\n", md_cell(&l)));
        }
        md.push('\n');
        for (c, gs) in Self::by_credential_of(groups) {
            md.push_str(&format!(
                "### {}\n\n",
                crate::escape::markdown_code(c.unwrap_or("(unattributed)"))
            ));
            md.push_str("| Severity | Rule | Action | Source IP | Count | First | Last | Why |\n|---|---|---|---|---|---|---|---|\n");
            for g in gs {
                md.push_str(&format!(
                    "| {} | {} | {} | {} | {} | {} | {} | {} |\n",
                    g.severity,
                    md_cell(g.rule),
                    md_cell(&shorten(g.action.unwrap_or(""), 60)),
                    md_cell(g.source_ip.unwrap_or("")),
                    g.count,
                    g.first.format("%Y-%m-%d %H:%M:%S"),
                    g.last.format("%Y-%m-%d %H:%M:%S"),
                    md_cell(g.severity_reason)
                ));
            }
            md.push('\n');
        }
    }
}

/// Groups rendered into buffers of their own, a chunk at a time (one buffer for a half of the
/// array outgrew its guessed size and was copied whole).
const GROUP_CHUNK: usize = 512;

fn render_groups(
    chunk: &[&FindingGroup<'_>],
    out: &mut Vec<u8>,
    texts: &mut json::Texts,
) -> serde_json::Result<()> {
    out.clear();
    for (i, g) in chunk.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        if let Some(ahead) = chunk.get(i + json::PREFETCH_AHEAD) {
            json::prefetch(ahead.location);
        }
        json::write_group(out, g, texts)?;
    }
    Ok(())
}

/// The groups as two lists, each sorted by [`group_order`] (the groups of two halves of the
/// findings, see [`HuntReport::group_runs`]), read in their merged order where the report
/// writes them: merged into a third list first, they were a copy of every group into fresh
/// memory on the writer's thread.
struct GroupRuns<'a>(Vec<FindingGroup<'a>>, Vec<FindingGroup<'a>>);

/// Sorted `a` and `b` read as one sorted list, `a`'s first on ties (as [`merge_runs`] puts
/// them).
fn merged<'s, T>(
    a: &'s [T],
    b: &'s [T],
    order: impl Fn(&T, &T) -> std::cmp::Ordering,
) -> impl Iterator<Item = &'s T> {
    merging(vec![a.iter(), b.iter()], move |x: &&T, y: &&T| order(x, y))
}

/// How many of the first `k` items of `merged(a, b, order)` come from `a` (the rest come from
/// `b`): a binary search, nothing merged.
fn from_first<T>(
    a: &[T],
    b: &[T],
    k: usize,
    order: impl Fn(&T, &T) -> std::cmp::Ordering,
) -> usize {
    let k = k.min(a.len() + b.len());
    let (mut lo, mut hi) = (k.saturating_sub(b.len()), k.min(a.len()));
    while lo < hi {
        let i = lo + (hi - lo) / 2;
        // With `i` from `a`, `k - i` (at least 1) from `b`: `a[i]` comes before `b[k - i - 1]`
        // (ties: `a`'s first), so more come from `a`.
        if order(&b[k - i - 1], &a[i]).is_ge() {
            lo = i + 1;
        } else {
            hi = i;
        }
    }
    lo
}

/// The `groups` array: the first half written by the writer a chunk at a time, in one reused
/// buffer (the whole array held at once was a peak of its own); the second half, when there
/// are threads to spare, rendered beside it from [`GroupsArray::start`] on — before the
/// summary and counts that precede the array are worked out, which kept the other core idle.
/// Each half is read from the two sorted lists in merged order (see [`GroupRuns`]).
struct GroupsArray<'s, 'a> {
    first: (&'s [FindingGroup<'a>], &'s [FindingGroup<'a>]),
    second: Option<std::thread::ScopedJoinHandle<'s, serde_json::Result<Vec<Vec<u8>>>>>,
}

/// Renders the groups of `a` and `b` in merged order, a chunk of [`GROUP_CHUNK`] into each
/// buffer `each` is given.
fn render_merged(
    (a, b): (&[FindingGroup<'_>], &[FindingGroup<'_>]),
    texts: &mut json::Texts,
    mut each: impl FnMut(&mut Vec<u8>, &[&FindingGroup<'_>], &mut json::Texts) -> serde_json::Result<()>,
) -> serde_json::Result<()> {
    let mut all = merged(a, b, group_order);
    let mut chunk: Vec<&FindingGroup<'_>> = Vec::with_capacity(GROUP_CHUNK);
    let mut out = Vec::new();
    loop {
        chunk.clear();
        chunk.extend(all.by_ref().take(GROUP_CHUNK));
        if chunk.is_empty() {
            return Ok(());
        }
        each(&mut out, &chunk, texts)?;
    }
}

impl<'s, 'a> GroupsArray<'s, 'a> {
    fn start(
        scope: &'s std::thread::Scope<'s, '_>,
        groups: &'s GroupRuns<'a>,
        threads: usize,
    ) -> GroupsArray<'s, 'a> {
        let threads = crate::hunt::threads_or_cores(threads);
        let (a, b) = (&groups.0[..], &groups.1[..]);
        let n = a.len() + b.len();
        if threads < 2 || n < 2048 {
            return GroupsArray {
                first: (a, b),
                second: None,
            };
        }
        let i = from_first(a, b, n / 2, group_order);
        let j = n / 2 - i;
        let second = scope.spawn(move || {
            let mut texts = json::Texts::default();
            let mut chunks = Vec::new();
            render_merged((&a[i..], &b[j..]), &mut texts, |_, chunk, texts| {
                let mut out = Vec::new();
                render_groups(chunk, &mut out, texts)?;
                chunks.push(out);
                Ok(())
            })?;
            Ok(chunks)
        });
        GroupsArray {
            first: (&a[..i], &b[..j]),
            second: Some(second),
        }
    }

    fn write(self, w: &mut dyn std::io::Write) -> serde_json::Result<()> {
        let io = serde_json::Error::io;
        w.write_all(b"[").map_err(io)?;
        let mut texts = json::Texts::default();
        let mut started = false;
        render_merged(self.first, &mut texts, |out, chunk, texts| {
            if std::mem::replace(&mut started, true) {
                w.write_all(b",").map_err(io)?;
            }
            render_groups(chunk, out, texts)?;
            w.write_all(out).map_err(io)
        })?;
        let rest = match self.second {
            Some(h) => h
                .join()
                .map_err(|_| serde::ser::Error::custom("a rendering thread stopped early"))??,
            None => Vec::new(),
        };
        for chunk in rest {
            w.write_all(b",").map_err(io)?;
            w.write_all(&chunk).map_err(io)?;
        }
        w.write_all(b"]").map_err(io)
    }
}

/// `t1098`, `t1098.001`: an ATT&CK technique id (tactics are words).
fn is_technique(tag: &str) -> bool {
    tag.len() > 1
        && tag.starts_with('t')
        && tag[1..].bytes().all(|b| b.is_ascii_digit() || b == b'.')
}

#[cfg(test)]
mod tests {
    use super::{Finding, HuntReport, apply_order, from_first, merge_runs, merged};
    use crate::hunt::Severity;
    use crate::hunt::source::Source;
    use chrono::{DateTime, TimeZone, Utc};

    /// A report of these findings, in the report's order.
    pub(super) fn normalized(findings: Vec<Finding>) -> HuntReport {
        let mut report = HuntReport {
            findings,
            ..Default::default()
        };
        report.normalize();
        report
    }

    /// The JSON document of `report`, rendered by `threads` threads.
    pub(super) fn json_of(report: &HuntReport, threads: usize) -> Vec<u8> {
        let mut out = Vec::new();
        report.write_json_with(&mut out, threads).unwrap();
        out
    }

    /// A finding of CloudTrail's `ListUsers` with the fields that group it; the others plain.
    fn listed(
        rule: usize,
        severity: Severity,
        credential: String,
        time: DateTime<Utc>,
        source_ip: String,
        location: String,
    ) -> Finding {
        Finding {
            rule_id: format!("rule-{rule}").into(),
            rule: format!("A \"quoted\" rule {rule}").into(),
            hunt: None,
            severity,
            severity_reason: "rule level".into(),
            attack: Some("attack.discovery".into()),
            source: Source::Cloudtrail,
            credential: Some(credential.into()),
            principal: None,
            time,
            action: Some("ListUsers".into()),
            source_ip: Some(source_ip.into()),
            user_agent: None,
            error: None,
            location,
            record_id: None,
            detail: None,
        }
    }

    /// Groups sort by severity, first time, then credential, rule, action and address by
    /// name (the credentials compared by rank), on one thread or two, from findings in the
    /// report's order or in any order.
    #[test]
    fn groups_sort_by_their_key_by_name_whatever_the_path() {
        let base = Utc.with_ymd_and_hms(2023, 7, 10, 11, 42, 36).unwrap();
        let findings: Vec<Finding> = (0..6000)
            .map(|i| {
                let mut f = listed(
                    i % 3,
                    [Severity::Low, Severity::High][i % 2],
                    format!("AKIA{}", (i * 7919) % 211),
                    base + chrono::Duration::seconds((i % 4) as i64),
                    format!("198.51.100.{}", i % 5),
                    format!("f.json (record {i})"),
                );
                if i % 13 == 0 {
                    f.credential = None;
                }
                f
            })
            .collect();
        let by_name = |a: &super::FindingGroup<'_>, b: &super::FindingGroup<'_>| {
            (
                b.severity,
                a.first,
                a.credential,
                a.rule_id,
                a.action,
                a.source_ip,
            )
                .cmp(&(
                    a.severity,
                    b.first,
                    b.credential,
                    b.rule_id,
                    b.action,
                    b.source_ip,
                ))
        };
        let key = |g: &super::FindingGroup<'_>| {
            (
                g.severity,
                g.first,
                g.credential.map(str::to_string),
                g.rule_id.to_string(),
                g.source_ip.map(str::to_string),
                g.count,
            )
        };
        let report = normalized(findings.clone());
        let mut want = super::groups_of(&report.findings, true, 0);
        want.sort_by(by_name);
        let want: Vec<_> = want.iter().map(key).collect();
        assert!(want.len() > 1000, "{}", want.len());
        for threads in [1, 2] {
            let got: Vec<_> = report.groups_with(threads).iter().map(key).collect();
            assert!(got == want, "{threads} thread(s)");
        }
        let mut shuffled = findings;
        shuffled.reverse();
        shuffled.swap(0, 2999);
        let got: Vec<_> = super::groups_of(&shuffled, false, 0)
            .iter()
            .map(key)
            .collect();
        assert!(got == want, "findings out of order");
    }

    /// Duplicates (same rule, source, record, detail) go, the first kept, whether the keys'
    /// hashes are distinct, all equal (every finding compared in full), or the real ones.
    #[test]
    fn duplicates_go_whatever_the_hashes() {
        let base = Utc.with_ymd_and_hms(2023, 7, 10, 11, 42, 36).unwrap();
        let findings: Vec<Finding> = (0..400)
            .map(|i| {
                let mut f = listed(
                    i % 3,
                    Severity::Low,
                    format!("AKIA{}", i % 5),
                    base,
                    "198.51.100.7".into(),
                    format!("f.json (record {})", i % 150),
                );
                f.detail = (i % 7 == 0).then(|| "why".into());
                f.record_id = (i % 11 == 0).then(|| format!("id-{}", i % 22));
                f
            })
            .collect();
        let names = |v: &[Finding]| -> Vec<(String, String, Option<String>)> {
            v.iter()
                .map(|f| {
                    (
                        f.rule_id.to_string(),
                        f.location.clone(),
                        f.detail.as_deref().map(str::to_string),
                    )
                })
                .collect()
        };
        let mut by_keys = findings.clone();
        super::dedup_by_keys(&mut by_keys);
        assert!(
            by_keys.len() < findings.len() && by_keys.len() > 100,
            "{}",
            by_keys.len()
        );
        let mut real = findings.clone();
        super::dedup_sorted(&mut real);
        assert_eq!(names(&real), names(&by_keys));
        let mut colliding = findings.clone();
        super::dedup_hashed(&mut colliding, |_| 7);
        assert_eq!(names(&colliding), names(&by_keys));
        let mut counted = findings;
        let distinct = std::cell::RefCell::new(Vec::new());
        super::dedup_hashed(&mut counted, |k| {
            let mut d = distinct.borrow_mut();
            let key = format!("{k:?}");
            match d.iter().position(|x| *x == key) {
                Some(i) => i as u64,
                None => {
                    d.push(key);
                    d.len() as u64 - 1
                }
            }
        });
        assert_eq!(names(&counted), names(&by_keys));
    }

    /// Every permutation of a few items, and long random ones with long cycles: the same
    /// order as gathering the items by index.
    #[test]
    fn apply_order_puts_items_in_order_in_place() {
        fn check(order: &[usize]) {
            let mut items: Vec<usize> = (100..100 + order.len()).collect();
            let want: Vec<usize> = order.iter().map(|&i| items[i]).collect();
            apply_order(order.to_vec(), |a, b| items.swap(a, b));
            assert_eq!(items, want, "{order:?}");
        }
        fn permutations(n: usize, prefix: &mut Vec<usize>, each: &mut dyn FnMut(&[usize])) {
            if prefix.len() == n {
                return each(prefix);
            }
            for i in 0..n {
                if !prefix.contains(&i) {
                    prefix.push(i);
                    permutations(n, prefix, each);
                    prefix.pop();
                }
            }
        }
        for n in 0..=6 {
            permutations(n, &mut Vec::new(), &mut |p| check(p));
        }
        let mut state = 0x9e37_79b9_7f4a_7c15u64;
        for n in [100, 1000, 4096] {
            let mut order: Vec<usize> = (0..n).collect();
            for i in (1..n).rev() {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                order.swap(i, (state % (i as u64 + 1)) as usize);
            }
            check(&order);
        }
    }

    /// Table times to the second, digit by digit, as chrono's format writes them: fractions
    /// left out, leap seconds, years outside 0-9999 through chrono itself.
    #[test]
    fn stamps_are_written_as_chrono_formats_them() {
        let base = Utc.with_ymd_and_hms(2023, 7, 10, 11, 42, 36).unwrap();
        let times = [
            base,
            base + chrono::Duration::milliseconds(250),
            Utc.with_ymd_and_hms(2016, 12, 31, 23, 59, 59).unwrap()
                + chrono::Duration::nanoseconds(1_500_000_000),
            Utc.with_ymd_and_hms(12345, 1, 2, 3, 4, 5).unwrap(),
            Utc.with_ymd_and_hms(7, 1, 2, 3, 4, 5).unwrap(),
            Utc.with_ymd_and_hms(0, 12, 31, 23, 59, 59).unwrap(),
            Utc.with_ymd_and_hms(-1, 1, 1, 0, 0, 0).unwrap(),
            // A leap second.
            chrono::NaiveDate::from_ymd_opt(2016, 12, 31)
                .and_then(|d| d.and_hms_nano_opt(23, 59, 59, 1_500_000_000))
                .unwrap()
                .and_utc(),
        ];
        for t in times {
            assert_eq!(super::stamp(&t), t.format("%Y-%m-%dT%H:%M:%SZ").to_string());
        }
    }

    /// Thirty credentials with high findings: the table's summary line names the twenty with
    /// most high groups and counts the rest; the JSON summary lists all thirty; each credential
    /// has its section of the table once, with all its groups.
    #[test]
    fn the_summary_line_names_twenty_credentials_and_counts_the_rest() {
        let base = Utc.with_ymd_and_hms(2023, 7, 10, 11, 42, 36).unwrap();
        let findings: Vec<Finding> = (0..30)
            .flat_map(|c| (0..=(c % 3)).map(move |r| (c, r)))
            .map(|(c, r)| {
                listed(
                    r as usize,
                    Severity::High,
                    format!("AKIA{c:04}"),
                    base + chrono::Duration::seconds(c * 10 + r),
                    "198.51.100.7".into(),
                    format!("f.json (record {c}-{r})"),
                )
            })
            .collect();
        let report = normalized(findings);
        let table = report.to_table();
        let line = table.lines().next().unwrap();
        assert!(line.starts_with("High findings for: "), "{line}");
        assert_eq!(line.matches("group(s))").count(), 20, "{line}");
        assert!(
            line.ends_with(", and 10 more credential(s) (all in --output json)"),
            "{line}"
        );
        // Those with three high groups come first.
        assert!(line.contains("AKIA0002 (3 group(s))"), "{line}");
        assert_eq!(report.summary().high_credentials.len(), 30);
        for c in 0..30 {
            let heading = format!("Credential AKIA{c:04} ");
            assert_eq!(table.matches(&heading).count(), 1, "{heading}");
        }
    }

    /// More groups than one thread renders alone (each finding its own address): the same
    /// bytes for any number of rendering threads.
    #[test]
    fn many_groups_are_written_the_same_by_any_number_of_threads() {
        let base = Utc.with_ymd_and_hms(2023, 7, 10, 11, 42, 36).unwrap();
        let findings: Vec<Finding> = (0..5000)
            .map(|i| {
                listed(
                    i % 3,
                    [Severity::Low, Severity::High][i % 2],
                    format!("AKIA{:04}", i % 7),
                    base + chrono::Duration::seconds(i as i64),
                    format!("198.51.{}.{}", i / 250, i % 250),
                    format!("f.json (record {i})"),
                )
            })
            .collect();
        let report = normalized(findings);
        let one = json_of(&report, 1);
        let doc: serde_json::Value = serde_json::from_slice(&one).unwrap();
        let groups = doc["groups"].as_array().unwrap();
        assert_eq!(groups.len(), 5000);
        assert_eq!(
            serde_json::to_value(report.groups()).unwrap(),
            doc["groups"]
        );
        for threads in [2, 3] {
            assert!(json_of(&report, threads) == one, "{threads} threads");
        }
    }

    /// Two sorted lists read in merged order give what merging them gives (ties: the first
    /// list's first), and any prefix of that order is split between them as counted.
    #[test]
    fn sorted_lists_read_merged_and_split_at_any_point() {
        // (key, list, position): ordered by key only, so equal keys are ties.
        let cases: Vec<(Vec<u32>, Vec<u32>)> = vec![
            (vec![], vec![]),
            (vec![1, 2, 3], vec![]),
            (vec![], vec![1, 2, 3]),
            (vec![1, 3, 5, 7], vec![2, 4, 6, 8]),
            (vec![1, 1, 2, 2, 9], vec![1, 2, 2, 3]),
            (vec![5, 5, 5], vec![5, 5]),
            (vec![10, 20], vec![1, 2, 3, 4, 5, 30]),
        ];
        for (a, b) in cases {
            let a: Vec<(u32, u8, usize)> =
                a.into_iter().enumerate().map(|(i, k)| (k, 0, i)).collect();
            let b: Vec<(u32, u8, usize)> =
                b.into_iter().enumerate().map(|(i, k)| (k, 1, i)).collect();
            let order = |x: &(u32, u8, usize), y: &(u32, u8, usize)| x.0.cmp(&y.0);
            let want = merge_runs(a.clone(), b.clone(), 0, order);
            let read: Vec<_> = merged(&a, &b, order).copied().collect();
            assert_eq!(read, want, "{a:?} {b:?}");
            for k in 0..=want.len() + 1 {
                let i = from_first(&a, &b, k, order);
                let taken = k.min(want.len());
                assert_eq!(
                    i,
                    want[..taken].iter().filter(|x| x.1 == 0).count(),
                    "k {k}: {a:?} {b:?}"
                );
                let mut halves: Vec<_> = merged(&a[..i], &b[..taken - i], order).copied().collect();
                halves.extend(merged(&a[i..], &b[taken - i..], order).copied());
                assert_eq!(halves, want, "k {k}");
            }
        }
    }
}
