//! Sigma correlation rules (the Sigma 2 specification): `event_count`, `value_count`,
//! `temporal` and `temporal_ordered` over the matches of other rules, grouped by fields
//! (`group-by`, with `aliases`), within a `timespan`, against a `condition` (`gt`, `gte`, `lt`,
//! `lte`, `eq`, combinable). This module owns parsing a correlation document, resolving the
//! rules it names (by `name` or `id`), the per-group event store the hunt workers fill while
//! they stream, and the sliding-window evaluation that turns a group's events into bursts.
//!
//! Memory: a matched record costs one 32-byte event in its group (no record text); a worker
//! keeps at most [`MAX_EVENTS`] events, past which matches are counted and reported, never
//! kept. Evaluation sorts each group once (files arrive in any order).
//!
//! Not supported (a clear load error, never a crash): correlations of correlations (chains)
//! and the later metric types (`value_sum`, `value_avg`, …).

use super::{Rule, RuleError};
use crate::hunt::Severity;
use crate::hunt::fields::{FieldId, Fields};
use crate::hunt::source::{FieldSets, Loc, Source, first};
use serde_json::Value;
use smol_str::SmolStr;
use std::sync::Arc;

type HashMap<K, V> = std::collections::HashMap<K, V, foldhash::fast::RandomState>;

/// Events a worker keeps across all correlations (32 bytes each: 32 MiB).
pub const MAX_EVENTS: usize = 1 << 20;

/// Longest `timespan` accepted (a year): longer windows would mean "the whole log".
const MAX_TIMESPAN_SECS: i64 = 366 * 24 * 3600;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    EventCount,
    ValueCount,
    Temporal,
    TemporalOrdered,
}

/// The `condition` map: every bound present must hold.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Threshold {
    gt: Option<u64>,
    gte: Option<u64>,
    lt: Option<u64>,
    lte: Option<u64>,
    eq: Option<u64>,
}

impl Threshold {
    pub fn holds(&self, n: u64) -> bool {
        self.gt.is_none_or(|v| n > v)
            && self.gte.is_none_or(|v| n >= v)
            && self.lt.is_none_or(|v| n < v)
            && self.lte.is_none_or(|v| n <= v)
            && self.eq.is_none_or(|v| n == v)
    }

    fn is_empty(&self) -> bool {
        *self == Threshold::default()
    }

    /// `≥ 20`, `> 3 and ≤ 10`: for reasons and details.
    fn describe(&self) -> String {
        let parts: Vec<String> = [
            (self.gt, ">"),
            (self.gte, "≥"),
            (self.lt, "<"),
            (self.lte, "≤"),
            (self.eq, "="),
        ]
        .iter()
        .filter_map(|(v, op)| v.map(|v| format!("{op} {v}")))
        .collect();
        parts.join(" and ")
    }
}

/// A correlation document as written, before the rules it names are known.
#[derive(Debug, Clone)]
pub struct Spec {
    pub origin: String,
    pub id: Arc<str>,
    pub title: Arc<str>,
    pub name: Option<Arc<str>>,
    pub level: Severity,
    pub hunt: Option<Arc<str>>,
    pub attack: Option<Arc<str>>,
    pub kind: Kind,
    pub rules: Vec<String>,
    pub group_by: Vec<String>,
    /// alias → rule name → field.
    pub aliases: std::collections::BTreeMap<String, std::collections::BTreeMap<String, String>>,
    pub timespan_secs: i64,
    pub condition: Threshold,
    /// `value_count`'s field.
    pub field: Option<String>,
    pub generate: bool,
}

/// A correlation whose rules are resolved, ready to evaluate.
#[derive(Debug)]
pub struct Correlation {
    pub spec: Spec,
    /// Indices of the referenced rules in the rule set, in `rules` order.
    pub rules: Vec<usize>,
    /// Per referenced rule (same order), its source and the field ids of the group-by
    /// entries and of the counted value (`value_count`'s field, else the record's action).
    slots: Vec<Slot>,
}

#[derive(Debug)]
struct Slot {
    group: Vec<FieldId>,
    value: Option<FieldId>,
}

fn yaml_err(origin: &str, reason: String) -> RuleError {
    RuleError {
        origin: origin.to_string(),
        reason,
    }
}

/// Whether a parsed YAML document is a correlation rule.
pub fn is_correlation(doc: &Value) -> bool {
    doc.get("correlation").is_some()
}

/// `10m`, `1h`, `30s`, `2d`.
pub fn parse_timespan(s: &str) -> Result<i64, String> {
    let s = s.trim();
    let (num, unit) = s.split_at(s.len().saturating_sub(1));
    let n: i64 = num
        .parse()
        .map_err(|_| format!("timespan `{s}` is not a number and a unit (s, m, h, d)"))?;
    let mul = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        _ => return Err(format!("timespan `{s}` has no unit s, m, h or d")),
    };
    let secs = n.saturating_mul(mul);
    if secs <= 0 || secs > MAX_TIMESPAN_SECS {
        return Err(format!("timespan `{s}` must be between 1s and 366d"));
    }
    Ok(secs)
}

/// Reads a correlation document (the rules it names are resolved later).
pub fn parse(origin: &str, doc: &Value) -> Result<Spec, RuleError> {
    let err = |r: String| yaml_err(origin, r);
    let get_str = |k: &str| doc.get(k).and_then(Value::as_str).map(str::to_string);
    let title = get_str("title").ok_or_else(|| err("no `title`".into()))?;
    let id = get_str("id").unwrap_or_else(|| title.clone());
    let level = match get_str("level").as_deref() {
        None => Severity::Medium,
        Some(l) => Severity::from_sigma(l).ok_or_else(|| err(format!("unknown level `{l}`")))?,
    };
    let tags = super::Tags::of(doc);
    let c = doc
        .get("correlation")
        .and_then(Value::as_object)
        .ok_or_else(|| err("`correlation` is not a map".into()))?;
    let kind = match c.get("type").and_then(Value::as_str) {
        Some("event_count") => Kind::EventCount,
        Some("value_count") => Kind::ValueCount,
        Some("temporal") => Kind::Temporal,
        Some("temporal_ordered") => Kind::TemporalOrdered,
        Some(other) => {
            return Err(err(format!(
                "correlation type `{other}` is not supported (event_count, value_count, temporal, temporal_ordered)"
            )));
        }
        None => return Err(err("correlation has no `type`".into())),
    };
    let strings = |v: Option<&Value>, what: &str| -> Result<Vec<String>, RuleError> {
        match v {
            None => Ok(Vec::new()),
            Some(Value::String(s)) => Ok(vec![s.clone()]),
            Some(Value::Array(a)) => a
                .iter()
                .map(|x| {
                    x.as_str()
                        .map(str::to_string)
                        .ok_or_else(|| err(format!("`{what}` holds a value that is not text")))
                })
                .collect(),
            Some(_) => Err(err(format!("`{what}` is not a list"))),
        }
    };
    let rules = strings(c.get("rules"), "rules")?;
    if rules.is_empty() {
        return Err(err("correlation names no `rules`".into()));
    }
    let group_by = strings(c.get("group-by"), "group-by")?;
    let timespan = c
        .get("timespan")
        .and_then(Value::as_str)
        .ok_or_else(|| err("correlation has no `timespan`".into()))?;
    let timespan_secs = parse_timespan(timespan).map_err(err)?;
    let mut condition = Threshold::default();
    let mut field = None;
    if let Some(cond) = c.get("condition") {
        let map = cond
            .as_object()
            .ok_or_else(|| err("`condition` is not a map of gt/gte/lt/lte/eq".into()))?;
        for (k, v) in map {
            if k == "field" {
                field = Some(
                    v.as_str()
                        .ok_or_else(|| err("`condition.field` is not text".into()))?
                        .to_string(),
                );
                continue;
            }
            let n = v
                .as_u64()
                .or_else(|| v.as_str().and_then(|s| s.parse().ok()))
                .ok_or_else(|| err(format!("`condition.{k}` is not a whole number")))?;
            let slot = match k.as_str() {
                "gt" => &mut condition.gt,
                "gte" => &mut condition.gte,
                "lt" => &mut condition.lt,
                "lte" => &mut condition.lte,
                "eq" => &mut condition.eq,
                _ => {
                    return Err(err(format!(
                        "`condition.{k}` is not gt, gte, lt, lte or eq"
                    )));
                }
            };
            *slot = Some(n);
        }
    }
    match kind {
        Kind::EventCount | Kind::ValueCount if condition.is_empty() => {
            return Err(err(
                "correlation has no `condition` (gt, gte, lt, lte, eq)".into()
            ));
        }
        Kind::ValueCount if field.is_none() => {
            return Err(err("value_count needs `condition.field`".into()));
        }
        _ => {}
    }
    let mut aliases = std::collections::BTreeMap::new();
    if let Some(a) = c.get("aliases") {
        let a = a
            .as_object()
            .ok_or_else(|| err("`aliases` is not a map".into()))?;
        for (alias, per_rule) in a {
            let per_rule = per_rule
                .as_object()
                .ok_or_else(|| err(format!("alias `{alias}` is not a map of rule → field")))?;
            let mut m = std::collections::BTreeMap::new();
            for (rule, f) in per_rule {
                let f = f
                    .as_str()
                    .ok_or_else(|| err(format!("alias `{alias}`.`{rule}` is not text")))?;
                m.insert(rule.clone(), f.to_string());
            }
            aliases.insert(alias.clone(), m);
        }
    }
    // `generate` sits in the correlation section (Sigma 2.0.2) or at the top (earlier drafts).
    let generate = c
        .get("generate")
        .or_else(|| doc.get("generate"))
        .and_then(Value::as_bool)
        .unwrap_or(false);
    Ok(Spec {
        origin: origin.to_string(),
        id: id.into(),
        title: title.into(),
        name: get_str("name").map(Arc::from),
        level,
        hunt: tags.hunt(),
        attack: tags.attack(),
        kind,
        rules,
        group_by,
        aliases,
        timespan_secs,
        condition,
        field,
        generate,
    })
}

/// What resolving a spec against the loaded rules gave.
pub enum Resolved {
    Ready(Box<Correlation>),
    /// A named rule is not loaded (yet): it may come with a later file.
    Missing(String),
}

/// Resolves `spec`'s rules by `name` or `id` among `rules`, interning the fields it groups
/// and counts by in each rule's source.
pub fn resolve(
    spec: &Spec,
    rules: &[Rule],
    correlation_names: &[&str],
    fields: &mut FieldSets,
) -> Result<Resolved, RuleError> {
    let mut idx = Vec::new();
    for r in &spec.rules {
        match rules
            .iter()
            .position(|x| x.name.as_deref() == Some(r.as_str()) || &*x.id == r.as_str())
        {
            Some(i) => idx.push(i),
            None if correlation_names.contains(&r.as_str()) => {
                return Err(yaml_err(
                    &spec.origin,
                    format!("`{r}` is a correlation: chained correlations are not supported"),
                ));
            }
            None => return Ok(Resolved::Missing(r.clone())),
        }
    }
    let mut slots = Vec::new();
    for &i in &idx {
        let rule = &rules[i];
        let set = fields.for_source(rule.source);
        let name_of = |g: &str| -> String {
            spec.aliases
                .get(g)
                .and_then(|m| {
                    rule.name
                        .as_deref()
                        .and_then(|n| m.get(n))
                        .or_else(|| m.get(&*rule.id))
                })
                .cloned()
                .unwrap_or_else(|| g.to_string())
        };
        let group = spec
            .group_by
            .iter()
            .map(|g| set.intern(rule.source.map_field(&name_of(g))))
            .collect();
        let value = spec
            .field
            .as_deref()
            .map(|f| set.intern(rule.source.map_field(&name_of(f))));
        slots.push(Slot { group, value });
    }
    Ok(Resolved::Ready(Box::new(Correlation {
        spec: spec.clone(),
        rules: idx,
        slots,
    })))
}

/// One matched record in a group: 32 bytes, no record text.
#[derive(Debug, Clone, Copy)]
struct Event {
    time: i64,
    /// Index into [`Store::values`]: the counted value, or the record's action.
    value: u32,
    /// Position of the matched rule in the correlation's `rules`.
    slot: u32,
    file: u32,
    line: u32,
    index: u32,
}

/// A group's events, and who and where it is. Small (32 bytes), the naming behind a pointer:
/// every event finds its group in a map of these, and entries three times the size were a
/// cache miss apart each.
#[derive(Debug, Default)]
struct Group {
    named: Option<Box<Naming>>,
    events: Vec<Event>,
}

/// Who a group is and where from: set by its first record, read when its bursts are reported.
#[derive(Debug)]
struct Naming {
    source: Source,
    credential: Option<Arc<str>>,
    source_ip: Option<Arc<str>>,
    /// (input, line, record) of the record the credential and address above are from: the
    /// first of the group in the inputs' order, whichever worker read it.
    at: (u32, u32, u32),
}

/// The events one worker gathered for every correlation, grouped; merged across workers.
#[derive(Debug, Default)]
pub struct Store {
    /// Per correlation (by index, as far as one was observed): group key → group. A vector,
    /// not a map: every matched record of a busy trail comes here.
    /// Keys and values inline up to 23 bytes (a credential, an action): a string behind a
    /// pointer was a cache miss of its own per event.
    groups: Vec<HashMap<SmolStr, Group>>,
    values: Vec<Arc<str>>,
    value_ids: HashMap<SmolStr, u32>,
    files: Vec<Arc<str>>,
    file_ids: HashMap<SmolStr, u32>,
    /// The input number of each file above: events of the same second are taken in the
    /// inputs' order, whichever worker read them.
    file_items: Vec<u32>,
    kept: usize,
    /// The input (its number) and file id of the previous event: records of one input come
    /// one after another.
    last_file: Option<(u32, u32)>,
    /// Matches past [`MAX_EVENTS`], per correlation.
    pub dropped: HashMap<usize, u64>,
    key: String,
}

fn intern(list: &mut Vec<Arc<str>>, ids: &mut HashMap<SmolStr, u32>, s: &str) -> u32 {
    if let Some(&i) = ids.get(s) {
        return i;
    }
    let i = u32::try_from(list.len()).unwrap_or(u32::MAX);
    list.push(Arc::from(s));
    ids.insert(SmolStr::new(s), i);
    i
}

/// What a record brings to a correlation besides its matched fields.
pub struct Seen<'a> {
    pub source: Source,
    /// The input's number among the run's inputs (see [`Store::merge`]).
    pub item: u32,
    pub time: i64,
    pub loc: &'a Loc<'a>,
    pub credential: Option<&'a str>,
    pub source_ip: Option<&'a str>,
    pub action: Option<&'a str>,
}

impl Store {
    /// A record matched rule slot `slot` of correlation `ci`.
    pub fn observe(
        &mut self,
        ci: usize,
        c: &Correlation,
        slot: usize,
        f: &Fields<'_>,
        seen: &Seen,
    ) {
        let Some(s) = c.slots.get(slot) else { return };
        if self.kept >= MAX_EVENTS {
            *self.dropped.entry(ci).or_default() += 1;
            return;
        }
        let key: &str = match s.group.as_slice() {
            // One field (the usual: the credential): its value is the key as it stands.
            &[g] => first(f, &[g]).unwrap_or(""),
            fields => {
                self.key.clear();
                for (n, &g) in fields.iter().enumerate() {
                    if n > 0 {
                        self.key.push('\u{1f}');
                    }
                    self.key.push_str(first(f, &[g]).unwrap_or(""));
                }
                &self.key
            }
        };
        let value = match s.value {
            Some(v) => first(f, &[v]),
            None => seen.action,
        };
        let value = intern(&mut self.values, &mut self.value_ids, value.unwrap_or(""));
        let file = match self.last_file {
            // One input, one name: its number is compared, not its name's bytes.
            Some((item, id)) if item == seen.item => id,
            _ => {
                let id = intern(&mut self.files, &mut self.file_ids, seen.loc.file);
                if self.file_items.len() < self.files.len() {
                    self.file_items.push(seen.item);
                }
                self.last_file = Some((seen.item, id));
                id
            }
        };
        if self.groups.len() <= ci {
            self.groups.resize_with(ci + 1, HashMap::default);
        }
        let per = &mut self.groups[ci];
        let group = match per.get_mut(key) {
            Some(g) => g,
            None => per.entry(SmolStr::new(key)).or_default(),
        };
        let line = u32::try_from(seen.loc.line).unwrap_or(u32::MAX);
        let index = u32::try_from(seen.loc.index).unwrap_or(u32::MAX);
        if group.named.is_none() {
            group.named = Some(Box::new(Naming {
                source: seen.source,
                credential: seen.credential.map(Arc::from),
                source_ip: seen.source_ip.map(Arc::from),
                at: (seen.item, line, index),
            }));
        }
        group.events.push(Event {
            time: seen.time,
            value,
            slot: u32::try_from(slot).unwrap_or(u32::MAX),
            file,
            line,
            index,
        });
        self.kept += 1;
    }

    pub fn merge(&mut self, other: Store) {
        let vmap: Vec<u32> = other
            .values
            .iter()
            .map(|v| intern(&mut self.values, &mut self.value_ids, v))
            .collect();
        let fmap: Vec<u32> = other
            .files
            .iter()
            .zip(&other.file_items)
            .map(|(v, &item)| {
                let id = intern(&mut self.files, &mut self.file_ids, v);
                if self.file_items.len() < self.files.len() {
                    self.file_items.push(item);
                }
                id
            })
            .collect();
        for (ci, n) in other.dropped {
            *self.dropped.entry(ci).or_default() += n;
        }
        if self.groups.len() < other.groups.len() {
            self.groups
                .resize_with(other.groups.len(), HashMap::default);
        }
        for (per, into) in other.groups.into_iter().zip(&mut self.groups) {
            for (key, mut g) in per {
                for e in &mut g.events {
                    e.value = vmap.get(e.value as usize).copied().unwrap_or(e.value);
                    e.file = fmap.get(e.file as usize).copied().unwrap_or(e.file);
                }
                self.kept += g.events.len();
                match into.get_mut(&key) {
                    Some(x) => {
                        x.events.extend(g.events);
                        // Named by its first record in the inputs' order, as one worker
                        // reading every input in turn names it.
                        if let Some(n) = g.named
                            && x.named.as_ref().is_none_or(|m| n.at < m.at)
                        {
                            x.named = Some(n);
                        }
                    }
                    None => {
                        into.insert(key, g);
                    }
                }
            }
        }
    }
}

/// A run of overlapping windows in which the correlation's condition held.
#[derive(Debug, Clone, PartialEq)]
pub struct Burst {
    pub correlation: usize,
    pub source: Source,
    pub group: Vec<(String, String)>,
    pub credential: Option<Arc<str>>,
    pub source_ip: Option<Arc<str>>,
    pub first: i64,
    pub last: i64,
    pub events: usize,
    /// Distinct counted values in the burst, most frequent first (at most 8), and their number.
    pub values: Vec<Arc<str>>,
    pub distinct: usize,
    pub location: String,
    /// Bursts of the same group that ended before the incident start (its baseline).
    pub before: usize,
    /// What the condition measured at its strongest: events, distinct values or rules.
    pub measure: u64,
}

impl Correlation {
    /// Why a burst fired, in words: `27 distinct eventName ≥ 20 within 10m`.
    pub fn reason(&self, measure: u64) -> String {
        let what = match self.spec.kind {
            Kind::EventCount => "event(s)".to_string(),
            Kind::ValueCount => {
                format!("distinct {}", self.spec.field.as_deref().unwrap_or("value"))
            }
            Kind::Temporal | Kind::TemporalOrdered => "of its rules".to_string(),
        };
        let cond = if self.spec.condition.is_empty() {
            format!("= all {}", self.rules.len())
        } else {
            self.spec.condition.describe()
        };
        format!(
            "{measure} {what} {cond} within {}",
            span_text(self.spec.timespan_secs)
        )
    }
}

fn span_text(secs: i64) -> String {
    match secs {
        s if s % 86_400 == 0 => format!("{}d", s / 86_400),
        s if s % 3600 == 0 => format!("{}h", s / 3600),
        s if s % 60 == 0 => format!("{}m", s / 60),
        s => format!("{s}s"),
    }
}

/// Evaluates every group of every correlation; bursts that end before `since` are the
/// baseline of their group and are returned only as counts on the later bursts.
pub fn evaluate(correlations: &[Correlation], store: &mut Store, since: i64) -> Vec<Burst> {
    let mut out = Vec::new();
    let (mut values, mut slots) = (Counts::default(), Counts::default());
    for (ci, per) in store.groups.iter_mut().enumerate() {
        let Some(c) = correlations.get(ci) else {
            continue;
        };
        // In the order of their keys (taken, not copied: a busy trail has a group per key).
        let mut groups: Vec<(&SmolStr, &mut Group)> = per.iter_mut().collect();
        groups.sort_unstable_by(|a, b| a.0.cmp(b.0));
        for (key, g) in groups {
            // Ties in time in the inputs' order (not the order files were interned in, which
            // follows which worker read what).
            let items = &store.file_items;
            g.events.sort_unstable_by_key(|e| {
                let item = items.get(e.file as usize).copied().unwrap_or(u32::MAX);
                (e.time, item, e.line, e.index)
            });
            let windows = fire_counting(c, &g.events, &mut values, &mut slots);
            let before = windows
                .iter()
                .filter(|w| g.events[w.1].time < since)
                .count();
            if before == windows.len() {
                continue;
            }
            let group: Vec<(String, String)> = c
                .spec
                .group_by
                .iter()
                .cloned()
                .zip(key.split('\u{1f}').map(str::to_string))
                .collect();
            for (start, end, measure) in windows {
                if g.events[end].time < since {
                    continue;
                }
                // A burst that began before the incident start is reported from it on: records
                // before it are the baseline, never findings.
                let start = (start..=end)
                    .find(|&i| g.events[i].time >= since)
                    .unwrap_or(end);
                let evs = &g.events[start..=end];
                let mut counts: HashMap<u32, usize> = HashMap::default();
                for e in evs {
                    *counts.entry(e.value).or_default() += 1;
                }
                let mut by: Vec<(u32, usize)> = counts.into_iter().collect();
                // Most frequent first, ties by the value itself: interned ids follow which
                // worker saw a value first.
                let text = |v: u32| store.values.get(v as usize);
                by.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| text(a.0).cmp(&text(b.0))));
                let e0 = evs[0];
                let file = store
                    .files
                    .get(e0.file as usize)
                    .cloned()
                    .unwrap_or_default();
                let location = if e0.line > 0 {
                    format!("{file}:{} (record {})", e0.line, e0.index)
                } else {
                    format!("{file} (record {})", e0.index)
                };
                out.push(Burst {
                    correlation: ci,
                    source: g.named.as_ref().map_or(Source::Cloudtrail, |n| n.source),
                    group: group.clone(),
                    credential: g.named.as_ref().and_then(|n| n.credential.clone()),
                    source_ip: g.named.as_ref().and_then(|n| n.source_ip.clone()),
                    first: e0.time,
                    last: evs[evs.len() - 1].time,
                    events: evs.len(),
                    distinct: by.len(),
                    values: by
                        .iter()
                        .take(8)
                        .filter_map(|(v, _)| store.values.get(*v as usize).cloned())
                        .collect(),
                    location,
                    before,
                    measure,
                });
            }
        }
    }
    out
}

/// [`fire_counting`] with counters of its own.
#[cfg(test)]
fn fire(c: &Correlation, events: &[Event]) -> Vec<(usize, usize, u64)> {
    fire_counting(c, events, &mut Counts::default(), &mut Counts::default())
}

/// How many of a window's events carry each id (an interned value, or a rule's slot), and how
/// many ids are present: counters by index, where a map hashed every event in and out of the
/// window. Kept from group to group and left all zero after each (see [`fire_counting`]), so
/// its size follows the largest id, once.
#[derive(Default)]
struct Counts {
    n: Vec<u32>,
    present: usize,
}

impl Counts {
    fn add(&mut self, id: u32) {
        let i = id as usize;
        if i >= self.n.len() {
            self.n.resize(i + 1, 0);
        }
        if self.n[i] == 0 {
            self.present += 1;
        }
        self.n[i] += 1;
    }

    fn remove(&mut self, id: u32) {
        if let Some(n) = self.n.get_mut(id as usize)
            && *n > 0
        {
            *n -= 1;
            if *n == 0 {
                self.present -= 1;
            }
        }
    }
}

/// The bursts of one group's sorted events: (first index, last index, strongest measure), the
/// windows where the condition held merged when they overlap. `values` and `slots` are the
/// counters to use: all zero, and so again on return.
fn fire_counting(
    c: &Correlation,
    events: &[Event],
    values: &mut Counts,
    slots: &mut Counts,
) -> Vec<(usize, usize, u64)> {
    let span = c.spec.timespan_secs;
    let needed_rules = c.rules.len() as u64;
    let holds = |n: u64| {
        if c.spec.condition.is_empty() {
            n >= needed_rules
        } else {
            c.spec.condition.holds(n)
        }
    };
    let mut bursts: Vec<(usize, usize, u64)> = Vec::new();
    let mut left = 0;
    for (right, e) in events.iter().enumerate() {
        values.add(e.value);
        slots.add(e.slot);
        while events[left].time < e.time - span {
            let old = events[left];
            values.remove(old.value);
            slots.remove(old.slot);
            left += 1;
        }
        let measure = match c.spec.kind {
            Kind::EventCount => (right - left + 1) as u64,
            Kind::ValueCount => values.present as u64,
            Kind::Temporal => slots.present as u64,
            Kind::TemporalOrdered => ordered(&events[left..=right], c.rules.len()),
        };
        if !holds(measure) {
            continue;
        }
        match bursts.last_mut() {
            Some(b) if b.1 >= left => {
                b.1 = right;
                b.2 = b.2.max(measure);
            }
            _ => bursts.push((left, right, measure)),
        }
    }
    // The window's events out again: the counters are all zero for the next group.
    for e in events.get(left..).unwrap_or_default() {
        values.remove(e.value);
        slots.remove(e.slot);
    }
    bursts
}

/// How many of the rules, in their order, appear in order among `window`'s events: the
/// window's ordered measure (`n` when all do).
fn ordered(window: &[Event], n: usize) -> u64 {
    let mut next = 0u32;
    for e in window {
        if e.slot == next {
            next += 1;
            if next as usize == n {
                break;
            }
        }
    }
    u64::from(next)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every event finds its group among these: what its doc says of its size.
    #[test]
    fn a_group_entry_stays_small() {
        assert!(std::mem::size_of::<Group>() <= 32);
    }

    fn ev(time: i64, value: u32, slot: u32) -> Event {
        Event {
            time,
            value,
            slot,
            file: 0,
            line: 0,
            index: 0,
        }
    }

    fn corr(kind: Kind, rules: usize, cond: Threshold, span: i64) -> Correlation {
        Correlation {
            spec: Spec {
                origin: "t".into(),
                id: "c".into(),
                title: "c".into(),
                name: None,
                level: Severity::High,
                hunt: None,
                attack: None,
                kind,
                rules: (0..rules).map(|i| i.to_string()).collect(),
                group_by: vec![],
                aliases: Default::default(),
                timespan_secs: span,
                condition: cond,
                field: None,
                generate: false,
            },
            rules: (0..rules).collect(),
            slots: vec![],
        }
    }

    #[test]
    fn windows_slide_and_overlapping_ones_merge() {
        let gte = |n| Threshold {
            gte: Some(n),
            ..Default::default()
        };
        let c = corr(Kind::EventCount, 1, gte(3), 60);
        // Three within a minute, then a lone one, then three spread over more than a minute.
        let evs = [
            ev(0, 0, 0),
            ev(10, 0, 0),
            ev(20, 0, 0),
            ev(30, 0, 0),
            ev(500, 0, 0),
            ev(1000, 0, 0),
            ev(1050, 0, 0),
            ev(1200, 0, 0),
        ];
        assert_eq!(fire(&c, &evs), vec![(0, 3, 4)]);
        let c = corr(Kind::ValueCount, 1, gte(3), 60);
        let evs = [
            ev(0, 1, 0),
            ev(1, 1, 0),
            ev(2, 2, 0),
            ev(70, 3, 0),
            ev(71, 4, 0),
        ];
        assert_eq!(
            fire(&c, &evs),
            vec![],
            "values 1,2 then 3,4 are never 3 at once"
        );
        let evs = [ev(0, 1, 0), ev(30, 2, 0), ev(60, 3, 0)];
        assert_eq!(fire(&c, &evs), vec![(0, 2, 3)], "the window is inclusive");
        let c = corr(Kind::Temporal, 2, Threshold::default(), 60);
        assert_eq!(fire(&c, &[ev(0, 0, 1), ev(5, 0, 0)]), vec![(0, 1, 2)]);
        let c = corr(Kind::TemporalOrdered, 2, Threshold::default(), 60);
        assert_eq!(fire(&c, &[ev(0, 0, 1), ev(5, 0, 0)]), vec![]);
        assert_eq!(fire(&c, &[ev(0, 0, 0), ev(5, 0, 1)]), vec![(0, 1, 2)]);
    }

    /// Counters kept from group to group give every group what fresh ones give: they are all
    /// zero again after each group, whatever its window held at its end.
    #[test]
    fn counters_kept_across_groups_start_each_group_at_zero() {
        let gte = |n| Threshold {
            gte: Some(n),
            ..Default::default()
        };
        let groups: Vec<Vec<Event>> = (0..40u32)
            .map(|g| {
                (0..(g % 9) as i64 + 1)
                    .map(|i| {
                        ev(
                            i * (7 + g as i64 % 5),
                            (g * 7 + i as u32) % 11,
                            (i as u32) % 3,
                        )
                    })
                    .collect()
            })
            .collect();
        for kind in [
            Kind::EventCount,
            Kind::ValueCount,
            Kind::Temporal,
            Kind::TemporalOrdered,
        ] {
            let c = corr(kind, 3, gte(3), 20);
            let (mut values, mut slots) = (Counts::default(), Counts::default());
            for evs in &groups {
                let kept = fire_counting(&c, evs, &mut values, &mut slots);
                assert_eq!(kept, fire(&c, evs), "{kind:?} {evs:?}");
                assert_eq!((values.present, slots.present), (0, 0));
                assert!(values.n.iter().chain(&slots.n).all(|&n| n == 0));
            }
        }
    }

    #[test]
    fn timespans_and_conditions() {
        assert_eq!(parse_timespan("10m"), Ok(600));
        assert_eq!(parse_timespan("1h"), Ok(3600));
        assert!(parse_timespan("10").is_err());
        assert!(parse_timespan("0s").is_err());
        assert!(parse_timespan("99999999999d").is_err());
        let t = Threshold {
            gt: Some(100),
            lte: Some(200),
            ..Default::default()
        };
        assert!(!t.holds(100) && t.holds(101) && t.holds(200) && !t.holds(201));
        assert_eq!(t.describe(), "> 100 and ≤ 200");
    }
}
