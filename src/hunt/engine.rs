//! One hunt run: reads every input file (in parallel, one worker per core), attributes each
//! record to a credential, applies the Sigma rules of its source, and beside them the checks
//! Sigma cannot express — per-credential address baselines and CIDR allow-lists — then
//! gathers the findings into a [`HuntReport`].
//!
//! Records before `since` are never findings: they are the baseline of what was normal.

mod credentials;

use super::Severity;
use super::bounded;
use super::chunked::Chunked;
use super::fields::Fields;
use super::findings::{
    Finding, HuntReport, apply_order, dedup_sorted, merge_sorted_lists, order_of,
};
use super::pack::RuleSet;
use super::phases;
use super::remote::Page;
use super::severity::{self, ActionBaseline};
use super::sigma::correlation::{self, Burst};
use super::sigma::{Prefilter, Rule};
use super::source::{self, Core, Loc, Problem, Sink, Source, first, parse_time};
use chrono::{DateTime, TimeZone, Utc};
use credentials::{Credentials, PairCounts};
use ipnet::IpNet;
use std::collections::HashSet;

/// Maps consulted for every record (credential → state): a fast, randomly seeded hasher
/// instead of SipHash.
type HashMap<K, V> = std::collections::HashMap<K, V, foldhash::fast::RandomState>;
use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

/// What to hunt in.
#[derive(Debug, Clone)]
pub struct HuntOptions {
    /// Input paths (files or directory trees) per source.
    pub inputs: Vec<(Source, PathBuf)>,
    /// Only records attributed to these credentials (empty: all).
    pub credentials: Vec<String>,
    /// Start of the incident window.
    pub since: DateTime<Utc>,
    /// Addresses that are expected (CI egress, office); never "new", never "outside".
    pub allow: Vec<IpNet>,
    /// Actors whose CircleCI variable changes are expected.
    pub expected_actors: Vec<String>,
    /// Worker threads (0: one per core).
    pub threads: usize,
    /// Records after this time are left out: audit logs arrive late, and a window that ends
    /// before the newest deliveries says so instead of looking complete.
    pub until: Option<DateTime<Utc>>,
    /// Set when the hunt runs after a rotation: the old and new credentials, and when the old
    /// one was disabled.
    pub rotation: Option<Rotation>,
    /// The process ends once the report is written (the command line): the tail leaves the
    /// maps it is done with (credentials, correlations) to the process's end instead of freeing
    /// them entry by entry beside the work the report still waits for (2% of a hunt's CPU).
    /// They hold log contents and counts, no secret: nothing to zeroize. Never set where hunts
    /// run one after another in one process.
    pub process_ends_after: bool,
}

/// The credentials of one rotation, for the checks of a post-rotation hunt: the old credential
/// used after it was disabled, and the new one used from outside the allow-list.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Rotation {
    pub old: Vec<String>,
    pub new: Vec<String>,
    /// When the old credential was disabled; `None` when the owner cannot disable it (then
    /// any use after `HuntOptions::since` counts).
    pub deactivated_at: Option<DateTime<Utc>>,
}

/// Whether a record attributed to `credential` names `id`: the same text, or a resource name
/// ending in it (`projects/p/serviceAccounts/sa/keys/<id>`).
pub fn names_credential(credential: &str, id: &str) -> bool {
    credential == id
        || (credential.len() > id.len()
            && credential.ends_with(id)
            && credential.as_bytes()[credential.len() - id.len() - 1] == b'/')
}

/// Whether a record says the call failed, from its source's error field: CloudTrail's
/// `errorCode`, CircleCI's `success`, Cloud Logging's `status.code`, Graph's
/// `status.errorCode` (0 is success).
fn failed(source: Source, error: Option<&str>) -> bool {
    match (source, error) {
        (_, None) => false,
        (Source::CircleciAudit, Some(e)) => e.eq_ignore_ascii_case("false"),
        (Source::GcpLogging | Source::AzureSignins, Some(e)) => e != "0",
        (_, Some(_)) => true,
    }
}

impl Default for HuntOptions {
    fn default() -> Self {
        HuntOptions {
            inputs: Vec::new(),
            credentials: Vec::new(),
            since: Utc
                .with_ymd_and_hms(2022, 12, 21, 0, 0, 0)
                .single()
                .unwrap_or_default(),
            allow: Vec::new(),
            expected_actors: Vec::new(),
            threads: 0,
            until: None,
            rotation: None,
            process_ends_after: false,
        }
    }
}

/// Parses an allow-list: one CIDR or address a line, `#` comments.
pub fn parse_cidrs(origin: &str, text: &str) -> Result<Vec<IpNet>, String> {
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let t = line.split('#').next().unwrap_or("").trim();
        if t.is_empty() {
            continue;
        }
        out.push(parse_cidr(t).map_err(|e| format!("{origin}:{}: {e}", i + 1))?);
    }
    Ok(out)
}

/// A CIDR, or a single address as its /32 or /128.
pub fn parse_cidr(t: &str) -> Result<IpNet, String> {
    t.parse::<IpNet>()
        .or_else(|_| t.parse::<IpAddr>().map(IpNet::from))
        .map_err(|_| format!("`{t}` is not a CIDR or an IP address"))
}

/// A record's place in the run's inputs: (input number, line, record index).
type At = (usize, u64, u64);

/// Findings kept per credential and rule; the rest are counted (see [`HuntReport::notes`]).
pub const FINDINGS_PER_PAIR: u64 = 1000;

/// Problems kept per run; the rest are counted.
pub const MAX_PROBLEMS: usize = 10_000;

/// One copy of each repeated value (user agents, principals, event names) per worker: findings
/// of one credential share them (its name is its state's, see [`credentials`]).
#[derive(Default)]
struct Interner(HashSet<Arc<str>, foldhash::fast::RandomState>);

/// A finding's fields that come from its record: the same for every rule the record matches,
/// made for its first finding and copied from it for the others.
struct FromRecord {
    principal: Option<Arc<str>>,
    action: Option<Arc<str>>,
    source_ip: Option<Arc<str>>,
    user_agent: Option<Arc<str>>,
    error: Option<Arc<str>>,
    location: String,
    record_id: Option<String>,
}

impl FromRecord {
    fn copied_from(f: &Finding) -> FromRecord {
        FromRecord {
            principal: f.principal.clone(),
            action: f.action.clone(),
            source_ip: f.source_ip.clone(),
            user_agent: f.user_agent.clone(),
            error: f.error.clone(),
            location: f.location.clone(),
            record_id: f.record_id.clone(),
        }
    }
}

/// A rule's strings as one worker's findings share them (see [`Worker::rule_texts`]).
#[derive(Clone)]
struct RuleTexts {
    id: Arc<str>,
    title: Arc<str>,
    hunt: Option<Arc<str>>,
    attack: Option<Arc<str>>,
}

impl RuleTexts {
    fn of(rule: &Rule, strings: &mut Interner) -> RuleTexts {
        RuleTexts {
            id: strings.get(&rule.id),
            title: strings.get(&rule.title),
            hunt: rule.hunt.as_deref().map(|h| strings.get(h)),
            attack: rule.attack.as_deref().map(|a| strings.get(a)),
        }
    }
}

impl Interner {
    fn get(&mut self, s: &str) -> Arc<str> {
        if let Some(a) = self.0.get(s) {
            return a.clone();
        }
        let a: Arc<str> = Arc::from(s);
        self.0.insert(a.clone());
        a
    }
}

struct Worker<'a> {
    rules: &'a RuleSet,
    opts: &'a HuntOptions,
    source: Source,
    /// The input's number among the run's inputs (files in order, then pages as fetched).
    item: usize,
    /// The source's rules, indexed so that a record meets only those it could match.
    source_rules: &'a Prefilter<'a>,
    core: &'a Core,
    circleci_ids: &'a Mutex<HashSet<String>>,
    report: HuntReport,
    creds: Credentials,
    /// The most findings of one (credential, rule) pair (see [`over_cap`]).
    most: u64,
    strings: Interner,
    /// Every finding's reason until [`severity`] sets it: interned once, not per finding.
    rule_level: Arc<str>,
    /// The strings findings take from each rule of `source_rules` (by its position there),
    /// this worker's own copies: a rule's own are shared by every worker, and counting their
    /// references from two cores at once moved their cache line between the cores for
    /// every finding.
    rule_texts: Vec<Option<RuleTexts>>,
    /// What the rules matched per credential before the incident start.
    actions: ActionBaseline,
    /// Events of the correlations, per group.
    corr: correlation::Store,
    /// The findings made (`report` keeps the rest: problems, counts).
    findings: Chunked<Finding>,
    /// Where each of `findings` is in the inputs, in the same order: past the cap the first
    /// findings in the inputs' order are kept, whichever worker read them.
    ats: Vec<At>,
}

/// What one worker gathered over all the inputs it read.
struct Part {
    report: HuntReport,
    creds: Credentials,
    /// Records before the incident start per credential that has any, for the severities:
    /// summed over the workers, they need not wait for the credentials' merge.
    before: HashMap<Arc<str>, u64>,
    most: u64,
    actions: ActionBaseline,
    corr: correlation::Store,
    findings: Chunked<Finding>,
    ats: Vec<At>,
}

impl<'a> Worker<'a> {
    fn new(
        rules: &'a RuleSet,
        opts: &'a HuntOptions,
        no_rules: &'a Prefilter<'a>,
        circleci_ids: &'a Mutex<HashSet<String>>,
    ) -> Worker<'a> {
        Worker {
            rules,
            opts,
            source: Source::Cloudtrail,
            item: 0,
            source_rules: no_rules,
            core: rules.fields.core(Source::Cloudtrail),
            circleci_ids,
            report: HuntReport::default(),
            creds: Credentials::default(),
            most: 0,
            strings: Interner::default(),
            rule_level: Arc::from("rule level"),
            rule_texts: Vec::new(),
            actions: ActionBaseline::default(),
            corr: correlation::Store::default(),
            findings: Chunked::default(),
            ats: Vec::new(),
        }
    }

    /// The next input: its source and number (see [`Self::item`]).
    fn start(&mut self, source: Source, item: usize, source_rules: &'a Prefilter<'a>) {
        self.source = source;
        self.item = item;
        if !std::ptr::eq(self.source_rules, source_rules) {
            // Positions are among another source's rules now.
            self.rule_texts.clear();
        }
        self.source_rules = source_rules;
        self.core = self.rules.fields.core(source);
    }

    /// What the worker gathered; its findings sorted when `sorted` (see
    /// [`HuntReport::normalize`]), their places in the inputs moved with them.
    fn finish(self, sorted: bool) -> Part {
        let mut findings = self.findings;
        let mut ats = self.ats;
        if sorted {
            sort_chunked(&mut findings, |a, b| ats.swap(a, b));
        }
        Part {
            report: self.report,
            before: self.creds.records_before(),
            creds: self.creds,
            most: self.most,
            actions: self.actions,
            corr: self.corr,
            findings,
            ats,
        }
    }

    /// Keeps a finding of the record at `loc`.
    fn push(&mut self, loc: &Loc<'_>, finding: Finding) {
        self.findings.push(finding);
        self.ats.push((self.item, loc.line, loc.index));
    }

    fn in_scope(&self, credential: Option<&str>, principal: Option<&str>) -> bool {
        if self.opts.credentials.is_empty() {
            return true;
        }
        self.opts.credentials.iter().any(|c| {
            credential.is_some_and(|k| names_credential(k, c)) || principal.is_some_and(|p| p == c)
        })
    }
}

impl Worker<'_> {
    /// A use of the old credential after it was disabled: successful (a consumer that was
    /// missed, or an attacker) or attempted.
    fn rotation_checks(
        &mut self,
        rotation: &Rotation,
        credential: &Arc<str>,
        time: DateTime<Utc>,
        ip_text: Option<&str>,
        loc: &Loc<'_>,
        f: &Fields<'_>,
    ) {
        if !rotation.old.iter().any(|o| names_credential(credential, o)) {
            return;
        }
        if rotation.deactivated_at.is_some_and(|d| time < d) {
            return;
        }
        let core = self.core;
        let error = first(f, &core.error);
        let (rule_id, rule, severity) = if failed(self.source, error) {
            (
                "rekey-old-credential-attempt",
                "Attempt with the old credential after deactivation",
                Severity::Medium,
            )
        } else {
            (
                "rekey-old-credential-used",
                "Old credential used successfully after deactivation",
                Severity::High,
            )
        };
        let detail = match rotation.deactivated_at {
            Some(d) => format!("disabled at {}", d.to_rfc3339()),
            None => "the owner cannot disable it: used after the rotation started".into(),
        };
        let finding = Finding {
            rule_id: rule_id.into(),
            rule: rule.into(),
            hunt: Some("old-credential-used".into()),
            severity,
            severity_reason: self.strings.get(if severity == Severity::High {
                "the old credential worked after its deactivation"
            } else {
                "a failed attempt with the old credential after its deactivation"
            }),
            attack: Some(self.strings.get("attack.initial-access,attack.t1078.004")),
            source: self.source,
            credential: Some(credential.clone()),
            principal: first(f, &core.principal).map(|p| self.strings.get(p)),
            time,
            action: first(f, &core.action).map(|a| self.strings.get(a)),
            source_ip: ip_text.map(|i| self.strings.get(i)),
            user_agent: first(f, &core.ua).map(|u| self.strings.get(u)),
            error: error.map(|e| self.strings.get(e)),
            location: loc.text(),
            record_id: first(f, &core.id).map(str::to_string),
            detail: Some(detail),
        };
        self.push(loc, finding);
    }
}

impl Worker<'_> {
    /// Records which rules a record before the incident start matched, and with which
    /// action: the baseline [`super::severity`] compares findings with; and feeds the
    /// correlations, whose bursts before the incident start are their baseline.
    fn baseline_matches(
        &mut self,
        credential: Option<&str>,
        time: DateTime<Utc>,
        ip_text: Option<&str>,
        loc: &Loc<'_>,
        f: &Fields<'_>,
    ) {
        let action = first(f, &self.core.action);
        let rules = self.source_rules;
        let mut matched = rules.candidates(f).filter(|r| r.matches(f)).peekable();
        if matched.peek().is_none() {
            return;
        }
        let pair = match (credential, action) {
            (Some(c), Some(a)) => Some((self.strings.get(c), self.strings.get(a))),
            _ => None,
        };
        for rule in matched {
            if let Some((c, a)) = &pair {
                self.actions.observe(c, &rule.id, a);
            }
            self.feed_correlations(rule, time, credential, ip_text, action, loc, f);
        }
    }

    /// A record matched `rule`: an event for each correlation that names it.
    #[allow(clippy::too_many_arguments)]
    fn feed_correlations(
        &mut self,
        rule: &Rule,
        time: DateTime<Utc>,
        credential: Option<&str>,
        source_ip: Option<&str>,
        action: Option<&str>,
        loc: &Loc<'_>,
        f: &Fields<'_>,
    ) {
        if rule.correlations.is_empty() {
            return;
        }
        let seen = correlation::Seen {
            source: self.source,
            item: u32::try_from(self.item).unwrap_or(u32::MAX),
            time: time.timestamp(),
            loc,
            credential,
            source_ip,
            action,
        };
        for &(ci, slot) in &rule.correlations {
            if let Some(c) = self.rules.correlations.get(ci) {
                self.corr.observe(ci, c, slot, f, &seen);
            }
        }
    }
}

impl Sink for Worker<'_> {
    fn record(&mut self, loc: Loc<'_>, f: &Fields<'_>) {
        self.report.stats.records += 1;
        let core = self.core;
        if self.source == Source::CircleciAudit
            && let Some(id) = first(f, &core.id)
        {
            // CircleCI's export may repeat an event; its id is unique per event.
            let fresh = match self.circleci_ids.lock() {
                Ok(mut ids) => ids.insert(id.to_string()),
                Err(_) => true,
            };
            if !fresh {
                self.report.stats.duplicates += 1;
                return;
            }
        }
        let Some(time) = first(f, &core.time).and_then(|t| parse_time(self.source, t)) else {
            self.problem(Problem {
                location: loc.text(),
                message: format!(
                    "no usable time in `{}`; skipped",
                    core.time
                        .iter()
                        .map(|&i| self.rules.fields.set(self.source).path(i))
                        .collect::<Vec<_>>()
                        .join("` or `")
                ),
            });
            return;
        };
        if self.opts.until.is_some_and(|u| time > u) {
            self.report.stats.after_until += 1;
            return;
        }
        let credential = first(f, &core.credential);
        let principal = first(f, &core.principal);
        if !self.in_scope(credential, principal) {
            self.report.stats.out_of_scope += 1;
            return;
        }
        let ip_text = first(f, &core.ip);
        // Service names such as "AWS Internal" or "secretsmanager.amazonaws.com" stand where an
        // address would: they are not addresses and never make a baseline finding.
        let ip = ip_text.and_then(|t| t.parse::<IpAddr>().ok());
        let after = time >= self.opts.since;
        // The credential's state, found once for everything the record adds to it.
        let cred_id = credential.map(|c| self.creds.id(c, self.source));
        if let Some(id) = cred_id {
            let state = self.creds.state(id);
            if let Some(ip) = ip {
                let s = state.addresses.seen(ip, self.source);
                s.observe(after, time, self.item, &loc, f, core, &mut self.strings);
            }
            state.hours.observe(after, time);
            if let Some(country) = first(f, &core.country) {
                let strings = &mut self.strings;
                state.country(country, self.source, |s| {
                    s.observe(after, time, self.item, &loc, f, core, strings);
                });
            }
        }
        if !after {
            self.baseline_matches(credential, time, ip_text, &loc, f);
            return;
        }
        self.report.stats.in_window += 1;
        if let (Some(rotation), Some(id)) = (&self.opts.rotation, cred_id) {
            // The credential's one name, shared with its other findings.
            let credential = self.creds.state(id).name.clone();
            self.rotation_checks(rotation, &credential, time, ip_text, &loc, f);
        }
        // This record's first finding, once made: the record's strings (interned, its location
        // and id) are the same for every rule it matches, and are copied from it after that.
        let mut first_finding: Option<usize> = None;
        let mut candidates = self.source_rules.candidates(f);
        while let Some((at, rule)) = candidates.next_positioned() {
            if !rule.matches(f) {
                continue;
            }
            if rule.expected_actor_filter
                && principal.is_some_and(|p| self.opts.expected_actors.iter().any(|a| a == p))
            {
                continue;
            }
            self.feed_correlations(
                rule,
                time,
                credential,
                ip_text,
                first(f, &core.action),
                &loc,
                f,
            );
            if rule.correlation_only {
                continue;
            }
            // Memory follows what is distinct, not the input: past the cap a (credential, rule)
            // pair is only counted.
            let (cred, counts) = match cred_id {
                Some(id) => {
                    let state = self.creds.state(id);
                    (Some(state.name.clone()), &mut state.per_rule)
                }
                None => (None, &mut self.creds.unattributed),
            };
            let n = counts.add(&rule.id);
            self.most = self.most.max(n);
            if n > FINDINGS_PER_PAIR {
                continue;
            }
            if self.rule_texts.len() <= at {
                self.rule_texts
                    .resize(self.source_rules.len().max(at + 1), None);
            }
            let texts = match &mut self.rule_texts[at] {
                Some(t) => t.clone(),
                empty => empty.insert(RuleTexts::of(rule, &mut self.strings)).clone(),
            };
            let from_record = match first_finding.and_then(|i| self.findings.get(i)) {
                Some(same) => FromRecord::copied_from(same),
                None => FromRecord {
                    principal: principal.map(|p| self.strings.get(p)),
                    action: first(f, &core.action).map(|a| self.strings.get(a)),
                    source_ip: ip_text.map(|i| self.strings.get(i)),
                    user_agent: first(f, &core.ua).map(|u| self.strings.get(u)),
                    error: first(f, &core.error).map(|e| self.strings.get(e)),
                    location: loc.text(),
                    record_id: first(f, &core.id).map(str::to_string),
                },
            };
            let finding = Finding {
                rule_id: texts.id,
                rule: texts.title,
                hunt: texts.hunt,
                severity: rule.level,
                // Set by `severity::apply` once the baseline is known.
                severity_reason: self.rule_level.clone(),
                attack: texts.attack,
                source: self.source,
                credential: cred,
                principal: from_record.principal,
                time,
                action: from_record.action,
                source_ip: from_record.source_ip,
                user_agent: from_record.user_agent,
                error: from_record.error,
                location: from_record.location,
                record_id: from_record.record_id,
                detail: None,
            };
            first_finding.get_or_insert(self.findings.len());
            self.push(&loc, finding);
        }
    }

    fn problem(&mut self, problem: Problem) {
        // A hostile file may be nothing but unreadable records: keep the first ones, count
        // the rest (memory follows the cap, not the input).
        if self.report.problems.len() < MAX_PROBLEMS {
            self.report.problems.push(problem);
        } else {
            self.report.stats.problems_not_listed += 1;
        }
    }
}

/// One unit of work for a worker.
enum Item<'a> {
    File(Source, &'a PathBuf),
    Page(Page),
}

impl Item<'_> {
    fn source(&self) -> Source {
        match self {
            Item::File(s, _) => *s,
            Item::Page(p) => p.source,
        }
    }
}

/// Pages fetched from APIs, delivered while the hunt runs; the channel is bounded, so memory
/// follows the fetchers' look-ahead, not the input.
pub type PageFeed = Mutex<tokio::sync::mpsc::Receiver<Page>>;

fn next_page(pages: Option<&PageFeed>) -> Option<Page> {
    // Workers are plain threads outside the async runtime: blocking here is what they are for.
    pages?.lock().ok()?.blocking_recv()
}

/// Runs a hunt over files. Unreadable inputs become problems; nothing here panics on input.
pub fn run(rules: &RuleSet, opts: &HuntOptions) -> HuntReport {
    run_with_pages(rules, opts, None)
}

/// Runs a hunt over files and over pages fetched while it runs (see [`super::remote`]); returns
/// when the files are read and the feed is closed.
pub fn run_with_pages(rules: &RuleSet, opts: &HuntOptions, pages: Option<&PageFeed>) -> HuntReport {
    let started = std::time::Instant::now();
    phases::mark("hunt: start");
    let mut files: Vec<(Source, PathBuf)> = Vec::new();
    let mut report = HuntReport {
        since: Some(opts.since),
        rule_errors: rules.all_errors(),
        ..Default::default()
    };
    report.stats.rules = rules.rules.len();
    for (source, path) in &opts.inputs {
        match source::expand(*source, path) {
            Ok(list) => files.extend(list.into_iter().map(|p| (*source, p))),
            Err(e) => report.problems.push(Problem {
                location: path.display().to_string(),
                message: format!("cannot read: {e}"),
            }),
        }
    }
    report.stats.files = files.len();
    let threads = super::threads_or_cores(opts.threads).min(if pages.is_some() {
        usize::MAX
    } else {
        files.len().max(1)
    });
    // With several workers each sorts its own findings on its core (the tail merges the
    // runs); one worker's are sorted in the tail, where nothing runs beside it anyway.
    let workers_sort = threads > 1;
    let prefilters: Vec<(Source, Prefilter)> = source::ALL_SOURCES
        .iter()
        .map(|&s| (s, Prefilter::new(rules.for_source(s))))
        .collect();
    let prefilter = |s: Source| prefilters.iter().find(|(p, _)| *p == s).map(|(_, p)| p);
    let no_rules = Prefilter::default();
    let next = AtomicUsize::new(0);
    let circleci_ids = Mutex::new(HashSet::new());
    let parts: Vec<Part> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..threads)
            .map(|_| {
                scope.spawn(|| {
                    let mut w = Worker::new(rules, opts, &no_rules, &circleci_ids);
                    loop {
                        // Files first, then pages as the fetchers deliver them.
                        let i = next.fetch_add(1, Ordering::Relaxed);
                        let item = match files.get(i) {
                            Some((source, path)) => Item::File(*source, path),
                            None => match next_page(pages) {
                                Some(page) => Item::Page(page),
                                None => break,
                            },
                        };
                        let source = item.source();
                        w.start(source, i, prefilter(source).unwrap_or(&no_rules));
                        let set = rules.fields.set(source);
                        let (name, result) = match item {
                            Item::File(_, path) => {
                                if let Ok(m) = std::fs::metadata(path) {
                                    w.report.stats.bytes += m.len();
                                }
                                (
                                    path.display().to_string(),
                                    source::read_file(source, path, set, &mut w),
                                )
                            }
                            Item::Page(page) => {
                                w.report.stats.bytes += page.body.len();
                                w.report.stats.pages += 1;
                                let name = page.name.clone();
                                (name, page.read(set, &mut w))
                            }
                        };
                        // An input not wholly read (an I/O error, a bound exceeded) leaves
                        // the hunt incomplete: it must not look clean.
                        if let Err(e) = result {
                            let message = match bounded::over_limit(&e) {
                                Some(o) => o.to_string(),
                                None => format!("read error, rest of the input skipped: {e}"),
                            };
                            w.report.incomplete.push(Problem {
                                location: name,
                                message,
                            });
                        }
                    }
                    // In the report's order already, on this worker's core: the tail's sort
                    // then merges the workers' runs (see `HuntReport::normalize`).
                    let part = w.finish(workers_sort);
                    phases::mark("worker: done");
                    part
                })
            })
            .collect();
        handles.into_iter().filter_map(|h| h.join().ok()).collect()
    });
    phases::mark("tail: workers joined");
    // The workers' maps, merged after they finished. Addresses, countries and correlations
    // are merged (and their findings made, and the maps freed) on threads of their own beside
    // the rest: done in turn on one core, this tail kept a 2-worker run far from twice as fast.
    let mut cred_parts = Vec::new();
    let mut before: HashMap<Arc<str>, u64> = HashMap::default();
    let mut most = 0u64;
    let mut stores = Vec::new();
    let mut action_baselines = Vec::new();
    // Per worker: its findings (in the report's order when there are several) and where each is.
    let mut lists: Vec<(Chunked<Finding>, Vec<At>)> = Vec::new();
    for p in parts {
        cred_parts.push(p.creds);
        for (cred, n) in p.before {
            *before.entry(cred).or_default() += n;
        }
        most += p.most;
        stores.push(p.corr);
        action_baselines.push(p.actions);
        let r = p.report;
        lists.push((p.findings, p.ats));
        report.problems.extend(r.problems);
        report.incomplete.extend(r.incomplete);
        let st = &mut report.stats;
        st.problems_not_listed += r.stats.problems_not_listed;
        st.bytes += r.stats.bytes;
        st.pages += r.stats.pages;
        st.records += r.stats.records;
        st.in_window += r.stats.in_window;
        st.out_of_scope += r.stats.out_of_scope;
        st.after_until += r.stats.after_until;
        st.duplicates += r.stats.duplicates;
    }
    // When no worker's largest count, summed over the workers, is past the cap (the usual
    // case), no pair is: the counts are not summed.
    let per_pair = if most > FINDINGS_PER_PAIR {
        credentials::over_cap(&cred_parts, FINDINGS_PER_PAIR)
    } else {
        PairCounts::default()
    };
    phases::mark("tail: findings gathered");
    let parallel = threads > 1;
    let (parts, findings) = std::thread::scope(|scope| {
        // What the credentials' addresses, countries and hours show.
        let credentials = later(scope, parallel, move || {
            let creds = merged(cred_parts, Credentials::merge);
            phases::mark("tail: credentials merged");
            let mut part = HuntReport::default();
            credentials::baselines(&creds, opts, &mut part);
            credentials::country_baselines(&creds, &mut part);
            credentials::hour_baselines(&creds, &mut part);
            // Freed here, beside the sort, not on the thread that goes on to write the report.
            release(creds, opts.process_ends_after);
            phases::mark("tail: credentials done");
            part
        });
        let correlations = later(scope, parallel, move || {
            let mut corr = merged(stores, correlation::Store::merge);
            phases::mark("tail: correlations merged");
            let mut part = HuntReport::default();
            correlation_findings(rules, &mut corr, opts.since, &mut part);
            release(corr, opts.process_ends_after);
            phases::mark("tail: correlations done");
            part
        });
        // What severities compare with: the credentials' actions before the incident start.
        let actions = later(scope, parallel, move || {
            let actions = merged(action_baselines, ActionBaseline::merge);
            phases::mark("tail: actions done");
            actions
        });
        // Meanwhile here: the workers' findings in the report's order, trimmed to the cap,
        // without duplicates — then their severities, once the baseline is known.
        trim_to_cap(&mut lists, &per_pair);
        // Each list sorted (here, unless its worker did: checking an order the workers made
        // compared every pair of neighbours again), then merged in the workers' order: the
        // order of a stable sort of them all, each finding moved once. (Trimming to the cap
        // keeps the order.)
        let len = lists.iter().map(|(list, _)| list.len()).sum();
        let sorted: Vec<_> = lists
            .into_iter()
            .map(|(mut list, _)| {
                if !workers_sort {
                    sort_chunked(&mut list, |_, _| {});
                }
                list.into_iter()
            })
            .collect();
        let mut findings = merge_sorted_lists(sorted, len);
        phases::mark("tail: findings sorted");
        dedup_sorted(&mut findings);
        phases::mark("tail: findings deduplicated");
        let actions = actions.get();
        let records_before = |c: &str| -> u64 { before.get(c).copied().unwrap_or(0) };
        severity::apply_on(
            &mut findings,
            threads,
            rules,
            &actions,
            &records_before,
            opts.since,
        );
        phases::mark("tail: severities applied");
        // In the order they were made on one core: ties in the sort keep it.
        let parts = [credentials.get(), correlations.get()];
        (parts, findings)
    });
    phases::mark("tail: baselines, correlations, severities");
    // The checks' findings, merged in after the workers' ones (the order of a stable sort of
    // all). Each carries a detail of its own kind (an address, a country, an hours' count, a
    // burst; a worker's finding has none, or the old credential's), so none is a duplicate of
    // a worker's finding (see [`dedup_sorted`]).
    let mut more = Vec::new();
    for part in parts {
        more.extend(part.findings);
        report.notes.extend(part.notes);
    }
    report.normalize_from(findings, more);
    phases::mark("tail: normalized");
    // Say what the cap left out.
    let mut capped: Vec<_> = per_pair
        .into_iter()
        .filter(|(_, n)| *n > FINDINGS_PER_PAIR)
        .collect();
    capped.sort();
    for ((cred, rule), n) in capped {
        report.notes.push(format!(
            "{} finding(s) of rule {rule} for {} not listed (first {FINDINGS_PER_PAIR} kept)",
            n - FINDINGS_PER_PAIR,
            cred.as_deref().unwrap_or("(unattributed)")
        ));
        report.stats.findings_not_listed += n - FINDINGS_PER_PAIR;
    }
    if report.problems.len() > MAX_PROBLEMS {
        let more = report.problems.len() - MAX_PROBLEMS;
        report.problems.truncate(MAX_PROBLEMS);
        report.stats.problems_not_listed += more as u64;
    }
    if report.stats.problems_not_listed > 0 {
        report.notes.push(format!(
            "{} further unreadable record(s) not listed",
            report.stats.problems_not_listed
        ));
    }
    report.stats.elapsed_ms = started.elapsed().as_millis();
    phases::mark("tail: report ready");
    report
}

/// Workers each kept the first [`FINDINGS_PER_PAIR`] findings of a (credential, rule) pair in
/// the order they read their inputs; of those, the run keeps the first in the inputs' order
/// (input, line, record), as one worker reading every input in turn does — whichever worker
/// read what. Each worker's findings come with where each is. No pair over the cap (the usual
/// case): nothing to do.
fn trim_to_cap(lists: &mut [(Chunked<Finding>, Vec<At>)], per_pair: &PairCounts) {
    type Pair<'a> = (Option<&'a str>, &'a str);
    let mut over: HashMap<Pair<'_>, Vec<At>> = per_pair
        .iter()
        .filter(|(_, n)| **n > FINDINGS_PER_PAIR)
        .map(|((c, r), _)| ((c.as_deref(), &**r), Vec::new()))
        .collect();
    if over.is_empty() {
        return;
    }
    let capped = |f: &Finding| f.detail.is_none();
    for (f, at) in lists.iter().flat_map(|(fs, ats)| fs.iter().zip(ats)) {
        if capped(f)
            && let Some(v) = over.get_mut(&(f.credential.as_deref(), &*f.rule_id))
        {
            v.push(*at);
        }
    }
    let cap = FINDINGS_PER_PAIR as usize;
    // The place of the last finding kept, per pair that has more than the cap here.
    let last: HashMap<Pair<'_>, At> = over
        .into_iter()
        .filter(|(_, v)| v.len() > cap)
        .map(|(k, mut v)| {
            let (_, nth, _) = v.select_nth_unstable(cap - 1);
            (k, *nth)
        })
        .collect();
    if last.is_empty() {
        return;
    }
    let keep: Vec<Vec<bool>> = lists
        .iter()
        .map(|(findings, ats)| {
            findings
                .iter()
                .zip(ats)
                .map(|(f, at)| {
                    !capped(f)
                        || last
                            .get(&(f.credential.as_deref(), &*f.rule_id))
                            .is_none_or(|l| at <= l)
                })
                .collect()
        })
        .collect();
    for ((findings, _), keep) in lists.iter_mut().zip(keep) {
        let mut keep = keep.into_iter();
        findings.retain(|_| keep.next().unwrap_or(true));
    }
}

/// Sorts a worker's findings in [`Finding::order`] (stably), each moved once; `also` swaps
/// what goes with them.
fn sort_chunked(findings: &mut Chunked<Finding>, mut also: impl FnMut(usize, usize)) {
    if let Some(order) = order_of(findings.len(), |i| &findings[i]) {
        apply_order(order, |a, b| {
            findings.swap(a, b);
            also(a, b);
        });
    }
}

/// Frees what the tail is done with, or leaves it to the process's end when that comes next
/// (see [`HuntOptions::process_ends_after`]).
fn release<T>(done_with: T, process_ends_after: bool) {
    if process_ends_after {
        std::mem::forget(done_with);
    } else {
        drop(done_with);
    }
}

/// A part of the run's tail: on a scoped thread when `parallel`, else done at once.
enum Later<'s, T> {
    Done(T),
    Running(std::thread::ScopedJoinHandle<'s, T>),
}

fn later<'s, T: Send + 's>(
    scope: &'s std::thread::Scope<'s, '_>,
    parallel: bool,
    f: impl FnOnce() -> T + Send + 's,
) -> Later<'s, T> {
    if parallel {
        Later::Running(scope.spawn(f))
    } else {
        Later::Done(f())
    }
}

impl<T> Later<'_, T> {
    fn get(self) -> T {
        match self {
            Later::Done(t) => t,
            // A panic there is a panic here, as when it ran on this thread.
            Later::Running(h) => h.join().unwrap_or_else(|p| std::panic::resume_unwind(p)),
        }
    }
}

/// The workers' parts as one: the first taken whole (merged into an empty one, each map was
/// rebuilt entry by entry on one core after the workers had finished), the others merged
/// into it.
fn merged<T: Default>(parts: Vec<T>, mut merge: impl FnMut(&mut T, T)) -> T {
    let mut parts = parts.into_iter();
    let mut into = parts.next().unwrap_or_default();
    for part in parts {
        merge(&mut into, part);
    }
    into
}

/// The correlations' bursts as findings: one per burst, its severity lowered when the same
/// group had a burst before the incident start.
fn correlation_findings(
    rules: &RuleSet,
    store: &mut correlation::Store,
    since: DateTime<Utc>,
    report: &mut HuntReport,
) {
    let mut dropped: Vec<(usize, u64)> = store.dropped.iter().map(|(c, n)| (*c, *n)).collect();
    dropped.sort_unstable();
    for (ci, n) in dropped {
        if let Some(c) = rules.correlations.get(ci) {
            report.notes.push(format!(
                "correlation {}: {n} matching record(s) past the limit of {} events per worker were not evaluated",
                c.spec.title,
                correlation::MAX_EVENTS
            ));
        }
    }
    let since_text = since.format("%Y-%m-%dT%H:%M:%SZ");
    for b in correlation::evaluate(&rules.correlations, store, since.timestamp()) {
        let Some(c) = rules.correlations.get(b.correlation) else {
            continue;
        };
        let Burst {
            first,
            last,
            events,
            distinct,
            before,
            measure,
            ..
        } = b;
        let why = c.reason(measure);
        let (severity, reason) = if before > 0 {
            (
                Severity::Informational,
                format!(
                    "lowered from {}: {why}, but the same group had {before} such burst(s) before {since_text} (its baseline)",
                    c.spec.level
                ),
            )
        } else {
            (c.spec.level, format!("correlation: {why}"))
        };
        let time = |t: i64| DateTime::from_timestamp(t, 0).unwrap_or_default();
        let mut action: String = b
            .values
            .iter()
            .map(|v| v.to_string())
            .collect::<Vec<_>>()
            .join(", ");
        if distinct > b.values.len() {
            action.push_str(&format!(" (+{} more)", distinct - b.values.len()));
        }
        let group: Vec<String> = b.group.iter().map(|(k, v)| format!("{k}={v}")).collect();
        report.findings.push(Finding {
            rule_id: c.spec.id.clone(),
            rule: c.spec.title.clone(),
            hunt: c.spec.hunt.clone(),
            severity,
            severity_reason: reason.into(),
            attack: c.spec.attack.clone(),
            source: b.source,
            credential: b.credential,
            principal: None,
            time: time(first),
            action: Some(action.into()),
            source_ip: b.source_ip,
            user_agent: None,
            error: None,
            location: b.location,
            record_id: None,
            detail: Some(format!(
                "{events} record(s), {distinct} distinct value(s), from {} to {}; group {}",
                time(first).format("%Y-%m-%dT%H:%M:%SZ"),
                time(last).format("%Y-%m-%dT%H:%M:%SZ"),
                group.join(" ")
            )),
        });
    }
}
