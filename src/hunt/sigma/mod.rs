//! A compact Sigma evaluator: loads Sigma YAML rules (the project's pack and third-party rules,
//! unchanged), maps each rule to a [`Source`] by its `logsource`, maps community field names to
//! the source's raw paths, and compiles the detection into matchers over [`FieldId`]s so that a
//! record is matched without allocating.
//!
//! Why not a library: the maintained Rust crate, sigma-rust (0.7), evaluates over an owned
//! event (`HashMap<String, EventValue>`) built per record and lowercases both sides of every
//! case-insensitive comparison, which cannot reach the throughput goal (a DOM per record), and
//! it has no hook for a per-source field mapping; here fields are extracted lazily
//! ([`super::fields`]) and literals are lowercased once, at load.
//!
//! Hostile rules and values cost bounded time and memory: wildcards and `re` compile to the
//! `regex` crate (linear in the value, each compiled pattern bounded in size), plain
//! `contains`/`startswith`/`endswith` stay substring searches, conditions have a nesting limit.
//!
//! Supported: selections as maps or lists of maps, value lists, `null`, wildcards `*` `?` (with
//! `\` escapes), modifiers `contains`, `startswith`, `endswith`, `all`, `re` (with `i`, `m`, `s`),
//! `cidr`, `cased`, `exists`, `fieldref`; conditions with `and`/`or`/`not`, parentheses, `1 of`,
//! `all of`, `them`. Anything else (keywords, `base64`, aggregations, …) makes the rule fail to
//! load with the reason, never a crash.

pub mod condition;
pub mod correlation;
pub mod dispatch;
mod re;
pub mod view;

pub use dispatch::Prefilter;

use super::Severity;
use super::fields::{FieldId, FieldVal, Fields};
use super::source::{FieldSets, Source};
use condition::Cond;
use serde_json::Value;

/// A rule ready to evaluate.
#[derive(Debug)]
pub struct Rule {
    pub id: std::sync::Arc<str>,
    pub title: std::sync::Arc<str>,
    pub level: Severity,
    pub source: Source,
    /// The catalogue hunt this rule belongs to (`rekey.hunt.NAME` tag), if any.
    pub hunt: Option<std::sync::Arc<str>>,
    /// Findings by an expected actor are dropped (`rekey.filter.expected-actors` tag).
    pub expected_actor_filter: bool,
    /// Where the rule came from: `builtin:FILE` or the file path.
    pub origin: String,
    /// The rule's `name` (Sigma 2), by which correlations may refer to it.
    pub name: Option<std::sync::Arc<str>>,
    /// Its ATT&CK tags (`attack.persistence`, `attack.t1098`), comma-joined; shared by findings.
    pub attack: Option<std::sync::Arc<str>>,
    /// A first use of its action by a credential after the incident start is raised to high
    /// (`rekey.severity.first-seen` tag; see [`crate::hunt::severity`]).
    pub raise_first_seen: bool,
    /// Referenced by a correlation that does not `generate` its rules: matches feed the
    /// correlation only (set when the correlation is resolved).
    pub correlation_only: bool,
    /// The correlations it feeds: (correlation index, position in its `rules`).
    pub correlations: Vec<(usize, usize)>,
    searches: Vec<Search>,
    names: Vec<String>,
    cond: Cond,
}

/// Why one rule file could not be used.
#[derive(Debug, Clone, serde::Serialize)]
pub struct RuleError {
    pub origin: String,
    pub reason: String,
}

#[derive(Debug)]
enum Search {
    /// Every matcher must match.
    All(Vec<FieldMatcher>),
    /// Any of the groups.
    Any(Vec<Vec<FieldMatcher>>),
}

#[derive(Debug)]
struct FieldMatcher {
    field: FieldId,
    all: bool,
    values: Vec<Pattern>,
}

#[derive(Debug)]
enum Pattern {
    /// Field missing or null.
    Null,
    /// `exists: true|false`.
    Exists(bool),
    Exact(Text),
    Contains(Text),
    StartsWith(Text),
    EndsWith(Text),
    /// Present (a lone `*`).
    Any,
    /// A value with `*` or `?` inside: compiled to a regex, linear in the value's length
    /// whatever the pattern (a backtracking matcher takes minutes on `a*a*a*a*a*a*b` against
    /// an attacker's 400-character user agent).
    Wildcard(re::Re),
    Regex(re::Re),
    Cidr(ipnet::IpNet),
    FieldRef(FieldId, RefKind),
    /// Any of several case-insensitive substrings (an automaton of the lowercase needles).
    AnyOf(Box<Needles>),
}

/// Lowercase needles, searched in a lowercased copy of the value: case-sensitive searchers
/// can use SIMD (Teddy), which an ASCII-case-insensitive automaton cannot (its byte-by-byte
/// scan of every record's user agent cost ~15% of a hunt).
#[derive(Debug)]
struct Needles {
    /// The needles themselves, for [`view`] (SQL compilation).
    words: Vec<String>,
    packed: Option<aho_corasick::packed::Searcher>,
    /// When Teddy is not available on this CPU (only then built: a DFA per rule field was
    /// most of loading the rules).
    ac: Option<aho_corasick::AhoCorasick>,
}

/// How a `fieldref` compares the two fields.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RefKind {
    Equals,
    Contains,
    StartsWith,
    EndsWith,
}

/// A literal and whether it compares case-sensitively (`cased`); stored lowercased otherwise.
#[derive(Debug)]
struct Text {
    s: String,
    cased: bool,
}

#[derive(Debug, Clone, PartialEq)]
enum Seg {
    Lit(String),
    Star,
    One,
}

impl Rule {
    /// Whether the record's fields match the rule's detection.
    pub fn matches(&self, f: &Fields<'_>) -> bool {
        // Most rules' condition is one search: no closure through the condition tree.
        if let Cond::Search(i) = self.cond {
            return self.searches.get(i).is_some_and(|s| s.matches(f));
        }
        let mut eval = |i: usize| match self.searches.get(i) {
            Some(s) => s.matches(f),
            None => false,
        };
        self.cond.eval(&mut eval)
    }

    pub fn search_names(&self) -> &[String] {
        &self.names
    }
}

impl Search {
    /// Every matcher of the search, whatever its shape.
    fn matchers(&self) -> impl Iterator<Item = &FieldMatcher> {
        let groups: &[Vec<FieldMatcher>] = match self {
            Search::All(ms) => std::slice::from_ref(ms),
            Search::Any(groups) => groups,
        };
        groups.iter().flatten()
    }

    /// The cost of deciding this search for a record that does not match: its cheapest
    /// required matcher, as matchers are sorted and stop at the first miss.
    fn cost(&self) -> u32 {
        match self {
            Search::All(ms) => ms.first().map(FieldMatcher::cost).unwrap_or(0),
            Search::Any(groups) => groups
                .iter()
                .map(|g| g.first().map(FieldMatcher::cost).unwrap_or(0))
                .sum(),
        }
    }

    fn matches(&self, f: &Fields<'_>) -> bool {
        match self {
            Search::All(ms) => ms.iter().all(|m| m.matches(f)),
            Search::Any(groups) => groups.iter().any(|g| g.iter().all(|m| m.matches(f))),
        }
    }
}

impl FieldMatcher {
    /// A rough relative cost, to evaluate cheap matchers first.
    fn cost(&self) -> u32 {
        self.values
            .iter()
            .map(|p| match p {
                Pattern::Null | Pattern::Exists(_) | Pattern::Any => 1,
                Pattern::Exact(_) => 2,
                Pattern::StartsWith(_) | Pattern::EndsWith(_) | Pattern::FieldRef(..) => 3,
                Pattern::Cidr(_) => 4,
                Pattern::Contains(_) => 8,
                // A scan of the whole value, however many needles: after exact comparisons
                // and prefix lists (`eventName|startswith`), which usually decide first.
                Pattern::AnyOf(_) => 20,
                Pattern::Wildcard(..) => 10,
                Pattern::Regex(_) => 12,
            })
            .sum()
    }

    fn matches(&self, f: &Fields<'_>) -> bool {
        let v = f.get(self.field).unwrap_or(&FieldVal::Missing);
        if self.all {
            self.values.iter().all(|p| p.matches(v, f))
        } else {
            self.values.iter().any(|p| p.matches(v, f))
        }
    }
}

impl Pattern {
    fn matches(&self, v: &FieldVal<'_>, f: &Fields<'_>) -> bool {
        match self {
            Pattern::Null => !v.is_present(),
            Pattern::Exists(e) => v.is_present() == *e,
            _ => {
                let Some(s) = v.as_str() else { return false };
                match self {
                    Pattern::Exact(t) => eq(s, t),
                    Pattern::Contains(t) => contains(s, &t.s, t.cased),
                    Pattern::StartsWith(t) => {
                        s.len() >= t.s.len()
                            && s.get(..t.s.len()).is_some_and(|p| eq_str(p, &t.s, t.cased))
                    }
                    Pattern::EndsWith(t) => {
                        s.len() >= t.s.len()
                            && s.get(s.len() - t.s.len()..)
                                .is_some_and(|p| eq_str(p, &t.s, t.cased))
                    }
                    Pattern::Any => true,
                    Pattern::Wildcard(r) => r.is_match(s),
                    Pattern::Regex(r) => r.is_match(s),
                    Pattern::AnyOf(n) => any_of(n, s),
                    Pattern::Cidr(net) => s
                        .parse::<std::net::IpAddr>()
                        .is_ok_and(|ip| net.contains(&ip)),
                    Pattern::FieldRef(other, kind) => {
                        let Some(o) = f.get(*other).and_then(|o| o.as_str()) else {
                            return false;
                        };
                        match kind {
                            RefKind::Equals => s == o,
                            RefKind::Contains => s.contains(o),
                            RefKind::StartsWith => s.starts_with(o),
                            RefKind::EndsWith => s.ends_with(o),
                        }
                    }
                    Pattern::Null | Pattern::Exists(_) => false,
                }
            }
        }
    }
}

/// Whether `s`, ASCII-lowercased, holds one of the (lowercase) needles.
fn any_of(n: &Needles, s: &str) -> bool {
    let find = |lower: &[u8]| match (&n.packed, &n.ac) {
        (Some(p), _) => p.find(lower).is_some(),
        (None, Some(ac)) => ac.is_match(lower),
        // Neither could be built: each needle in turn.
        (None, None) => n
            .words
            .iter()
            .any(|w| memchr::memmem::find(lower, w.as_bytes()).is_some()),
    };
    // On the stack: no allocation per record for values of usual length.
    with_lowercase(s.as_bytes(), &mut [0u8; 512], find)
}

/// `s` ASCII-lowercased, in `buf` when it fits (else in a copy of its own), handed to `then`.
/// Lowered as it is copied, in one pass: a copy followed by a pass over the copy read back
/// bytes just stored in other widths, and those stalled loads were most of matching a user
/// agent against a list.
fn with_lowercase<R>(s: &[u8], buf: &mut [u8], then: impl FnOnce(&[u8]) -> R) -> R {
    match buf.get_mut(..s.len()) {
        Some(lower) => {
            for (to, &from) in lower.iter_mut().zip(s) {
                *to = from.to_ascii_lowercase();
            }
            then(lower)
        }
        None => then(&s.to_ascii_lowercase()),
    }
}

fn eq(s: &str, t: &Text) -> bool {
    s.len() == t.s.len() && eq_str(s, &t.s, t.cased)
}

/// `lit` is already lowercased unless `cased`. ASCII case folding: audit-log field values that
/// rules compare are ASCII (API names, sources, error codes).
fn eq_str(s: &str, lit: &str, cased: bool) -> bool {
    if cased {
        s == lit
    } else {
        s.as_bytes()
            .iter()
            .zip(lit.as_bytes())
            .all(|(a, b)| a.to_ascii_lowercase() == *b)
            && s.len() == lit.len()
    }
}

/// Substring search in linear time (memchr's Two-Way), case-insensitively on an
/// ASCII-lowercased copy of the value unless `cased` (`needle` is lowercase then).
fn contains(hay: &str, needle: &str, cased: bool) -> bool {
    if cased {
        return memchr::memmem::find(hay.as_bytes(), needle.as_bytes()).is_some();
    }
    if hay.len() < needle.len() {
        return false;
    }
    let find = |lower: &[u8]| memchr::memmem::find(lower, needle.as_bytes()).is_some();
    // On the stack: no allocation per record for values of usual length.
    with_lowercase(hay.as_bytes(), &mut [0u8; 512], find)
}

/// The most memory one compiled regex (a `|re` value or a wildcard pattern) may take; a rule
/// whose pattern needs more is refused with the reason. Real Sigma patterns need kilobytes.
const REGEX_SIZE_LIMIT: usize = 2 << 20;

/// Builds a regex with the size bounds every rule's pattern gets.
fn bounded_regex(pattern: &str) -> Result<re::Re, String> {
    regex::RegexBuilder::new(pattern)
        .size_limit(REGEX_SIZE_LIMIT)
        .dfa_size_limit(REGEX_SIZE_LIMIT)
        .build()
        .map(re::Re::new)
        .map_err(|e| format!("bad regex: {e}"))
}

/// Sigma wildcards as a regex: `*` any run, `?` one character, literals escaped; anchored at
/// both ends except where the pattern starts or ends with `*` (a search is then faster).
fn wildcard_regex(segs: &[Seg], cased: bool) -> Result<re::Re, String> {
    let mut re = String::from(if cased { "(?s)" } else { "(?si)" });
    let body = match segs {
        [Seg::Star, rest @ ..] => rest,
        _ => {
            re.push_str("\\A");
            segs
        }
    };
    let (body, open_end) = match body {
        [rest @ .., Seg::Star] => (rest, true),
        _ => (body, false),
    };
    for seg in body {
        match seg {
            Seg::Lit(l) => re.push_str(&regex::escape(l)),
            Seg::Star => re.push_str(".*"),
            Seg::One => re.push('.'),
        }
    }
    if !open_end {
        re.push_str("\\z");
    }
    bounded_regex(&re)
}

/// Sigma wildcard match of an identifier pattern (`selection_*`), used by `1 of`; a pattern
/// too large to compile matches nothing.
pub fn wildcard_match(pattern: &str, name: &str) -> bool {
    wildcard_regex(&segments(pattern, true), true).is_ok_and(|r| r.is_match(name))
}

/// A Sigma string value split on unescaped `*` and `?`; `\*`, `\?`, `\\` are literals.
fn segments(value: &str, cased: bool) -> Vec<Seg> {
    let mut segs = Vec::new();
    let mut lit = String::new();
    let mut chars = value.chars().peekable();
    let flush = |lit: &mut String, segs: &mut Vec<Seg>| {
        if !lit.is_empty() {
            let l = std::mem::take(lit);
            segs.push(Seg::Lit(if cased { l } else { l.to_lowercase() }));
        }
    };
    while let Some(c) = chars.next() {
        match c {
            '\\' if matches!(chars.peek(), Some('*') | Some('?') | Some('\\')) => {
                if let Some(n) = chars.next() {
                    lit.push(n);
                }
            }
            '*' => {
                flush(&mut lit, &mut segs);
                if segs.last() != Some(&Seg::Star) {
                    segs.push(Seg::Star);
                }
            }
            '?' => {
                flush(&mut lit, &mut segs);
                segs.push(Seg::One);
            }
            c => lit.push(c),
        }
    }
    flush(&mut lit, &mut segs);
    segs
}

/// A string value with its position modifier, reduced to the cheapest pattern.
fn string_pattern(value: &str, pos: Option<&str>, cased: bool) -> Result<Pattern, String> {
    let mut segs = segments(value, cased);
    match pos {
        Some("contains") => {
            if segs.first() != Some(&Seg::Star) {
                segs.insert(0, Seg::Star);
            }
            if segs.last() != Some(&Seg::Star) {
                segs.push(Seg::Star);
            }
        }
        Some("startswith") if segs.last() != Some(&Seg::Star) => segs.push(Seg::Star),
        Some("endswith") if segs.first() != Some(&Seg::Star) => segs.insert(0, Seg::Star),
        _ => {}
    }
    let text = |s: &String| Text {
        s: s.clone(),
        cased,
    };
    Ok(match segs.as_slice() {
        [] => Pattern::Exact(Text {
            s: String::new(),
            cased,
        }),
        [Seg::Star] => Pattern::Any,
        [Seg::Lit(l)] => Pattern::Exact(text(l)),
        [Seg::Star, Seg::Lit(l), Seg::Star] => Pattern::Contains(text(l)),
        [Seg::Lit(l), Seg::Star] => Pattern::StartsWith(text(l)),
        [Seg::Star, Seg::Lit(l)] => Pattern::EndsWith(text(l)),
        _ => Pattern::Wildcard(wildcard_regex(&segs, cased)?),
    })
}

/// Loads one rule from YAML text. `origin` names it in errors and findings.
pub fn load(origin: &str, text: &str, fields: &mut FieldSets) -> Result<Rule, RuleError> {
    let err = |reason: String| RuleError {
        origin: origin.to_string(),
        reason,
    };
    let doc: Value = serde_saphyr::from_str(text).map_err(|e| err(format!("not YAML: {e}")))?;
    load_doc(origin, &doc, fields)
}

/// Loads one rule from a parsed YAML document (one of a multi-document file).
pub fn load_doc(origin: &str, doc: &Value, fields: &mut FieldSets) -> Result<Rule, RuleError> {
    let err = |reason: String| RuleError {
        origin: origin.to_string(),
        reason,
    };
    let get_str = |k: &str| doc.get(k).and_then(Value::as_str).map(str::to_string);
    let title = get_str("title").ok_or_else(|| err("no `title`".into()))?;
    let id = get_str("id").unwrap_or_else(|| title.clone());
    let level = match get_str("level").as_deref() {
        None => Severity::Medium,
        Some(l) => Severity::from_sigma(l).ok_or_else(|| err(format!("unknown level `{l}`")))?,
    };
    let logsource = doc
        .get("logsource")
        .ok_or_else(|| err("no `logsource`".into()))?;
    let ls = |k: &str| logsource.get(k).and_then(Value::as_str).unwrap_or("");
    let source =
        Source::for_logsource(ls("product"), ls("service"), ls("category")).ok_or_else(|| {
            err(format!(
                "no rekey source reads logsource product `{}` service `{}`",
                ls("product"),
                ls("service")
            ))
        })?;
    let tags = Tags::of(doc);
    let (hunt, attack) = (tags.hunt(), tags.attack());
    let expected_actor_filter = tags.0.contains(&"rekey.filter.expected-actors");
    let raise_first_seen = tags.0.contains(&"rekey.severity.first-seen");
    let detection = doc
        .get("detection")
        .and_then(Value::as_object)
        .ok_or_else(|| err("no `detection` map".into()))?;
    let condition = match detection.get("condition") {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Array(list)) if list.len() == 1 => list[0]
            .as_str()
            .map(str::to_string)
            .ok_or_else(|| err("`condition` is not text".into()))?,
        Some(Value::Array(_)) => {
            return Err(err(
                "several conditions in one rule are not supported".into()
            ));
        }
        _ => return Err(err("no `condition`".into())),
    };
    let set = fields.for_source(source);
    let mut names = Vec::new();
    let mut searches = Vec::new();
    for (name, body) in detection {
        if name == "condition" || name == "timeframe" {
            continue;
        }
        let search =
            compile_search(body, source, set).map_err(|r| err(format!("`{name}`: {r}")))?;
        names.push(name.clone());
        searches.push(search);
    }
    let mut cond = condition::parse(&condition, &names).map_err(err)?;
    // Evaluate cheap searches first (`and`/`or` do not depend on order).
    let costs: Vec<u32> = searches.iter().map(Search::cost).collect();
    cond.order_by(&|i| costs.get(i).copied().unwrap_or(u32::MAX));
    Ok(Rule {
        id: id.into(),
        title: title.into(),
        level,
        source,
        hunt,
        expected_actor_filter,
        origin: origin.to_string(),
        name: get_str("name").map(std::sync::Arc::from),
        attack,
        raise_first_seen,
        correlation_only: false,
        correlations: Vec::new(),
        searches,
        names,
        cond,
    })
}

/// A rule's (or correlation's) `tags`.
pub(crate) struct Tags<'d>(pub Vec<&'d str>);

impl<'d> Tags<'d> {
    pub fn of(doc: &'d Value) -> Tags<'d> {
        Tags(
            doc.get("tags")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .filter_map(Value::as_str)
                .collect(),
        )
    }

    /// The catalogue hunt (`rekey.hunt.NAME`).
    pub fn hunt(&self) -> Option<std::sync::Arc<str>> {
        self.0
            .iter()
            .find_map(|t| t.strip_prefix("rekey.hunt."))
            .map(std::sync::Arc::from)
    }

    /// The ATT&CK tags, comma-joined.
    pub fn attack(&self) -> Option<std::sync::Arc<str>> {
        let attack: Vec<&str> = self
            .0
            .iter()
            .copied()
            .filter(|t| t.starts_with("attack."))
            .collect();
        (!attack.is_empty()).then(|| std::sync::Arc::from(attack.join(",")))
    }
}

fn compile_search(
    body: &Value,
    source: Source,
    set: &mut super::fields::FieldSet,
) -> Result<Search, String> {
    match body {
        Value::Object(map) => Ok(Search::All(compile_map(map, source, set)?)),
        Value::Array(items) if items.iter().all(Value::is_object) => {
            let mut groups = Vec::new();
            for item in items {
                if let Value::Object(map) = item {
                    groups.push(compile_map(map, source, set)?);
                }
            }
            Ok(Search::Any(groups))
        }
        _ => Err("keyword searches (values without a field) are not supported".into()),
    }
}

fn compile_map(
    map: &serde_json::Map<String, Value>,
    source: Source,
    set: &mut super::fields::FieldSet,
) -> Result<Vec<FieldMatcher>, String> {
    let mut out = Vec::new();
    for (key, value) in map {
        let mut parts = key.split('|');
        let field_name = parts.next().unwrap_or("");
        if field_name.is_empty() {
            return Err("keyword searches (values without a field) are not supported".into());
        }
        let mut pos: Option<&str> = None;
        let (mut all, mut cased, mut re, mut cidr, mut exists, mut fieldref) =
            (false, false, false, false, false, false);
        let mut re_flags = String::new();
        for m in parts {
            match m {
                "contains" | "startswith" | "endswith" => pos = Some(m),
                "all" => all = true,
                "cased" => cased = true,
                "re" => re = true,
                "i" | "m" | "s" if re => re_flags.push_str(m),
                "cidr" => cidr = true,
                "exists" => exists = true,
                "fieldref" => fieldref = true,
                other => return Err(format!("modifier `{other}` is not supported")),
            }
        }
        let field = set.intern(source.map_field(field_name));
        let values: Vec<&Value> = match value {
            Value::Array(v) => v.iter().collect(),
            v => vec![v],
        };
        let mut patterns = Vec::new();
        for v in values {
            let p = match v {
                Value::Null => Pattern::Null,
                Value::Bool(b) if exists => Pattern::Exists(*b),
                _ if exists => return Err("`exists` needs true or false".into()),
                Value::Bool(b) => string_pattern(if *b { "true" } else { "false" }, None, false)?,
                Value::Number(n) => string_pattern(&n.to_string(), None, false)?,
                Value::String(s) if fieldref => {
                    let kind = match pos {
                        Some("contains") => RefKind::Contains,
                        Some("startswith") => RefKind::StartsWith,
                        Some("endswith") => RefKind::EndsWith,
                        _ => RefKind::Equals,
                    };
                    Pattern::FieldRef(set.intern(source.map_field(s)), kind)
                }
                Value::String(s) if re => {
                    let pattern = if re_flags.is_empty() {
                        s.clone()
                    } else {
                        format!("(?{re_flags}){s}")
                    };
                    Pattern::Regex(bounded_regex(&pattern)?)
                }
                Value::String(s) if cidr => Pattern::Cidr(
                    s.parse::<ipnet::IpNet>()
                        .map_err(|e| format!("bad CIDR `{s}`: {e}"))?,
                ),
                Value::String(s) => string_pattern(s, pos, cased)?,
                _ => return Err(format!("value of `{key}` is a nested structure")),
            };
            patterns.push(p);
        }
        if patterns.is_empty() {
            return Err(format!("`{key}` has an empty value list"));
        }
        // Several case-insensitive substrings of one field (user-agent lists): one automaton
        // scans the value once instead of once per needle.
        if !all
            && patterns.len() > 1
            && patterns
                .iter()
                .all(|p| matches!(p, Pattern::Contains(t) if !t.cased && t.s.is_ascii()))
        {
            let needles: Vec<&str> = patterns
                .iter()
                .filter_map(|p| match p {
                    Pattern::Contains(t) => Some(t.s.as_str()),
                    _ => None,
                })
                .collect();
            // Needles are lowercase (not `cased`); values are lowercased when matched.
            let packed = aho_corasick::packed::Config::new()
                .builder()
                .extend(&needles)
                .build();
            let ac = match packed {
                Some(_) => None,
                None => aho_corasick::AhoCorasick::builder()
                    .kind(Some(aho_corasick::AhoCorasickKind::DFA))
                    .build(&needles)
                    .ok(),
            };
            let words = needles.iter().map(|n| n.to_string()).collect();
            patterns = vec![Pattern::AnyOf(Box::new(Needles { words, packed, ac }))];
        }
        out.push(FieldMatcher {
            field,
            all,
            values: patterns,
        });
    }
    // Cheap comparisons first: most records fail on an exact event name.
    out.sort_by_key(FieldMatcher::cost);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patterns() {
        assert!(matches!(
            string_pattern("abc", None, false),
            Ok(Pattern::Exact(_))
        ));
        assert!(matches!(
            string_pattern("*", Some("contains"), false),
            Ok(Pattern::Any)
        ));
        assert!(matches!(
            string_pattern("a*b", None, false),
            Ok(Pattern::Wildcard(..))
        ));
        assert!(contains("Hello Boto3/1.2", "boto3", false));
        let mut fields = FieldSets::new();
        let rule = load(
            "t",
            "title: t\nlogsource: {product: aws, service: cloudtrail}\ndetection:\n  a: {eventName: [ListUsers, GetUser]}\n  b: {userAgent|contains: ['Boto3/', 'curl/']}\n  condition: a and b\n",
            &mut fields,
        )
        .unwrap();
        let set = fields.for_source(Source::Cloudtrail);
        let (name, ua) = (set.intern("eventName"), set.intern("userAgent"));
        let mut f = set.empty();
        f[name] = FieldVal::Text("listusers".into());
        f[ua] = FieldVal::Text("x Boto3/1.2 y".into());
        assert!(rule.matches(&f));
        let pre = Prefilter::new([&rule]);
        assert_eq!(pre.candidates(&f).count(), 1);
        f[ua] = FieldVal::Text("aws-cli/2".into());
        assert!(!rule.matches(&f));
        f[name] = FieldVal::Text("DeleteUser".into());
        assert_eq!(pre.candidates(&f).count(), 0);
        assert!(!contains("Hello", "boto3", false));
        assert!(wildcard_match("selection_*", "selection_a"));
        assert!(!wildcard_match("filter*", "selection"));
    }

    /// Sigma's wildcard semantics, through the regex they compile to.
    #[test]
    fn wildcards() {
        let m = |pattern: &str, pos: Option<&str>, cased: bool, value: &str| {
            let p = string_pattern(pattern, pos, cased).unwrap();
            p.matches(&FieldVal::Text(value.into()), &Vec::new())
        };
        assert!(m("a?c", None, false, "abc"));
        assert!(
            m("a?c", None, false, "aéc"),
            "`?` is one character, not one byte"
        );
        assert!(!m("a?c", None, false, "abbc"));
        assert!(m("A\\*", None, false, "a*"));
        assert!(!m("A\\*", None, false, "ab"));
        assert!(m("a\\?", None, false, "a?"));
        assert!(!m("a\\?", None, false, "ab"));
        assert!(m("a\\\\*", None, false, "a\\xyz"));
        assert!(m("a*b", None, false, "A\nzzB"), "`*` crosses lines");
        assert!(!m("a*b", None, true, "A--B"), "`cased` compares exactly");
        assert!(m("a*b", None, true, "a--b"));
        assert!(
            !m("a*b", None, false, "xa--b"),
            "anchored without `contains`"
        );
        assert!(m("a*b", Some("contains"), false, "xa--by"));
        assert!(m("a*b", Some("startswith"), false, "a--by"));
        assert!(!m("a*b", Some("startswith"), false, "xa--b"));
        assert!(m("a*b", Some("endswith"), false, "xa--b"));
        assert!(m("a.b*", None, false, "a.bc") && !m("a.b*", None, false, "axbc"));
        assert!(wildcard_match("sel_?", "sel_1") && !wildcard_match("sel_?", "sel_12"));
    }

    /// The pathological pattern of a backtracking matcher is linear here.
    #[test]
    fn wildcards_take_linear_time() {
        let p = string_pattern("a*a*a*a*a*a*a*a*b", Some("contains"), false).unwrap();
        let value = "a".repeat(100_000);
        let t = std::time::Instant::now();
        assert!(!p.matches(&FieldVal::Text(value.as_str().into()), &Vec::new()));
        assert!(t.elapsed() < std::time::Duration::from_secs(5));
    }
}
