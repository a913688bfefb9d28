//! Which of a source's rules a record could match, decided per record by a few lookups instead
//! of evaluating every rule: the [`Prefilter`].
//!
//! Each rule is reduced, at load, to what it *needs*: a list of atoms — a field equal to one
//! of some literals, starting with one of some prefixes, or merely holding text — at least one
//! of which every record it matches satisfies (derived from the detection: an `and` needs what
//! any operand needs, an `or` what all of them need together, a `not` nothing). Atoms are
//! indexed per field; a record is evaluated against the rules one of whose atoms it satisfies,
//! plus the few that need nothing. A superset is harmless (the rule is evaluated in full), a
//! missed rule would be a lost finding: the derivation only ever widens (see the tests, and
//! tests/hunt_dispatch.rs which compares with evaluating every rule on real datasets).
//!
//! Why: with the grown pack and SigmaHQ's rules, a dozen rules were indexed on nothing
//! (`errorCode` lists, `1 of` over several fields, `eventName|startswith`) and evaluated on
//! every record of a hunt.

use super::{FieldMatcher, Pattern, Rule, Search};
use crate::hunt::fields::{FieldId, FieldVal, Fields};
use std::collections::HashMap;

/// What one field of a record must hold (values ASCII-lowercased).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
enum Need {
    Exact(String),
    Prefix(String),
    /// Any text (a substring, suffix, pattern, CIDR, … is checked by the rule itself).
    Present,
}

/// A rule's needs: it can match a record only when the record satisfies one of them.
type Needs = Vec<(FieldId, Need)>;

impl Need {
    fn of(p: &Pattern) -> Option<Need> {
        Some(match p {
            Pattern::Exact(t) => Need::Exact(t.s.to_ascii_lowercase()),
            Pattern::StartsWith(t) => Need::Prefix(t.s.to_ascii_lowercase()),
            // Everything else but these compares text (see `Pattern::matches`).
            Pattern::Null | Pattern::Exists(false) => return None,
            _ => Need::Present,
        })
    }

    /// How many records it lets through, roughly: an exact value fewest, mere presence most.
    fn weight(&self) -> u64 {
        match self {
            Need::Exact(_) => 1,
            Need::Prefix(_) => 8,
            Need::Present => 64,
        }
    }
}

/// Needs are chosen to let the fewest records through, then on the fields most rules are
/// indexed on (each indexed field costs a lookup per record).
fn cost(needs: &[(FieldId, Need)], rank: &dyn Fn(FieldId) -> u64) -> u64 {
    needs
        .iter()
        .map(|(f, n)| n.weight() * 1024 + rank(*f))
        .sum()
}

impl FieldMatcher {
    fn needs(&self) -> Option<Needs> {
        let all = self.values.iter().map(Need::of);
        if self.all {
            // Every pattern must match: the one that filters best is enough.
            let best = all.flatten().min_by_key(Need::weight)?;
            Some(vec![(self.field, best)])
        } else {
            all.map(|n| n.map(|n| (self.field, n))).collect()
        }
    }
}

impl Search {
    fn needs(&self, rank: &dyn Fn(FieldId) -> u64) -> Option<Needs> {
        let group = |ms: &[FieldMatcher]| {
            ms.iter()
                .filter_map(FieldMatcher::needs)
                .min_by_key(|n| cost(n, rank))
        };
        match self {
            Search::All(ms) => group(ms),
            Search::Any(groups) => {
                let mut out = Vec::new();
                for g in groups {
                    out.extend(group(g)?);
                }
                Some(out)
            }
        }
    }
}

impl Rule {
    fn needs(&self, rank: &dyn Fn(FieldId) -> u64) -> Option<Needs> {
        let mut needs = self.cond.required(
            &|i| self.searches.get(i).and_then(|s| s.needs(rank)),
            &|n: &[(FieldId, Need)]| cost(n, rank),
        )?;
        needs.sort();
        needs.dedup();
        Some(needs)
    }

    /// Every field some matcher needs an exact value of.
    fn exact_fields(&self) -> Vec<FieldId> {
        let mut fields: Vec<FieldId> = self
            .searches
            .iter()
            .flat_map(Search::matchers)
            .filter(|m| m.values.iter().any(|p| matches!(p, Pattern::Exact(_))))
            .map(|m| m.field)
            .collect();
        fields.sort_unstable();
        fields.dedup();
        fields
    }
}

/// A set of rule indices, one bit each.
type Mask = Box<[u64]>;

/// The index of one field.
#[derive(Debug)]
struct Key {
    field: FieldId,
    /// Lowercased value → the rules that need it.
    exact: HashMap<Box<[u8]>, Mask, foldhash::fast::RandomState>,
    /// The longest value in `exact`: a longer one is in no entry.
    max_len: usize,
    /// Lowercased prefix → the rules that need it.
    prefixes: Vec<(Box<[u8]>, Mask)>,
    /// The rules that need the field to hold text.
    present: Option<Mask>,
}

/// One source's rules, indexed by what they need (see the module's documentation).
#[derive(Debug, Default)]
pub struct Prefilter<'r> {
    rules: Vec<&'r Rule>,
    /// The rules evaluated for every record.
    always: Mask,
    keys: Vec<Key>,
}

fn add(mask: &mut Mask, i: usize) {
    if let Some(w) = mask.get_mut(i / 64) {
        *w |= 1 << (i % 64);
    }
}

fn or_into(acc: &mut [u64], m: &[u64]) {
    for (a, b) in acc.iter_mut().zip(m) {
        *a |= b;
    }
}

impl<'r> Prefilter<'r> {
    /// How many rules it holds.
    pub fn len(&self) -> usize {
        self.rules.len()
    }

    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    pub fn new(rules: impl IntoIterator<Item = &'r Rule>) -> Prefilter<'r> {
        let rules: Vec<&Rule> = rules.into_iter().collect();
        let words = rules.len().div_ceil(64);
        let empty = || vec![0u64; words].into_boxed_slice();
        // Fields ranked by how many rules need an exact value of them (most first).
        let mut counts: HashMap<FieldId, u64> = HashMap::new();
        for r in &rules {
            for f in r.exact_fields() {
                *counts.entry(f).or_default() += 1;
            }
        }
        let mut ranked: Vec<(FieldId, u64)> = counts.into_iter().collect();
        ranked.sort_by_key(|&(f, n)| (std::cmp::Reverse(n), f));
        let rank = |f: FieldId| {
            ranked
                .iter()
                .position(|&(r, _)| r == f)
                .unwrap_or(ranked.len()) as u64
        };
        let mut p = Prefilter {
            always: empty(),
            ..Default::default()
        };
        for (i, r) in rules.iter().enumerate() {
            let Some(needs) = r.needs(&rank) else {
                add(&mut p.always, i);
                continue;
            };
            for (field, need) in needs {
                let key = match p.keys.iter().position(|k| k.field == field) {
                    Some(k) => &mut p.keys[k],
                    None => {
                        p.keys.push(Key {
                            field,
                            exact: HashMap::default(),
                            max_len: 0,
                            prefixes: Vec::new(),
                            present: None,
                        });
                        let last = p.keys.len() - 1;
                        &mut p.keys[last]
                    }
                };
                match need {
                    Need::Exact(v) => {
                        key.max_len = key.max_len.max(v.len());
                        add(
                            key.exact.entry(v.into_bytes().into()).or_insert_with(empty),
                            i,
                        );
                    }
                    Need::Prefix(v) => {
                        let v: Box<[u8]> = v.into_bytes().into();
                        match key.prefixes.iter_mut().find(|(pv, _)| *pv == v) {
                            Some((_, m)) => add(m, i),
                            None => {
                                let mut m = empty();
                                add(&mut m, i);
                                key.prefixes.push((v, m));
                            }
                        }
                    }
                    Need::Present => add(key.present.get_or_insert_with(empty), i),
                }
            }
        }
        p.rules = rules;
        p
    }

    /// The rules that could match this record, in rule order.
    pub fn candidates<'p>(&'p self, f: &Fields<'_>) -> Candidates<'p, 'r> {
        let mut acc = Bits::new(&self.always);
        for k in &self.keys {
            let Some(v) = f.get(k.field).and_then(FieldVal::as_str) else {
                continue;
            };
            if let Some(m) = &k.present {
                or_into(acc.as_mut(), m);
            }
            let v = v.as_bytes();
            if v.len() <= k.max_len
                && let Some(m) = lookup(&k.exact, v)
            {
                or_into(acc.as_mut(), m);
            }
            for (prefix, m) in &k.prefixes {
                if v.get(..prefix.len())
                    .is_some_and(|head| head.eq_ignore_ascii_case(prefix))
                {
                    or_into(acc.as_mut(), m);
                }
            }
        }
        Candidates {
            rules: &self.rules,
            bits: acc,
            word: 0,
        }
    }
}

/// The entry of `v` ASCII-lowercased (on the stack for values of usual length).
fn lookup<'m>(
    map: &'m HashMap<Box<[u8]>, Mask, foldhash::fast::RandomState>,
    v: &[u8],
) -> Option<&'m Mask> {
    super::with_lowercase(v, &mut [0u8; 128], |lower| map.get(lower))
}

/// A mask being built for one record, inline for up to 256 rules.
enum Bits {
    Inline([u64; 4]),
    Heap(Vec<u64>),
}

impl Bits {
    fn new(init: &[u64]) -> Bits {
        let mut inline = [0u64; 4];
        match inline.get_mut(..init.len()) {
            Some(head) => {
                head.copy_from_slice(init);
                Bits::Inline(inline)
            }
            None => Bits::Heap(init.to_vec()),
        }
    }

    fn as_mut(&mut self) -> &mut [u64] {
        match self {
            Bits::Inline(a) => a,
            Bits::Heap(v) => v,
        }
    }
}

/// The candidates of one record, in rule order.
pub struct Candidates<'p, 'r> {
    rules: &'p [&'r Rule],
    bits: Bits,
    word: usize,
}

impl<'r> Candidates<'_, 'r> {
    /// The next candidate and its position among the prefilter's rules (below
    /// [`Prefilter::len`]): what a caller keeps per rule is found by it, not by a lookup.
    pub fn next_positioned(&mut self) -> Option<(usize, &'r Rule)> {
        let words = self.bits.as_mut();
        while let Some(w) = words.get_mut(self.word) {
            if *w != 0 {
                let bit = w.trailing_zeros() as usize;
                *w &= *w - 1;
                let at = self.word * 64 + bit;
                return self.rules.get(at).map(|&r| (at, r));
            }
            self.word += 1;
        }
        None
    }
}

impl<'r> Iterator for Candidates<'_, 'r> {
    type Item = &'r Rule;

    fn next(&mut self) -> Option<&'r Rule> {
        self.next_positioned().map(|(_, r)| r)
    }
}

#[cfg(test)]
mod tests {
    use super::super::load;
    use super::*;
    use crate::hunt::source::{FieldSets, Source};

    fn rule(fields: &mut FieldSets, detection: &str) -> Rule {
        let text = format!(
            "title: t\nlogsource: {{product: aws, service: cloudtrail}}\ndetection:\n{detection}"
        );
        load("t", &text, fields).unwrap()
    }

    /// What each shape of detection needs, and that the index hands a record exactly the
    /// rules whose needs it meets.
    #[test]
    fn needs_follow_the_condition() {
        let mut fields = FieldSets::new();
        let rules = [
            // 0: an exact list.
            rule(
                &mut fields,
                "  s: {eventName: [ListUsers, GetUser]}\n  condition: s\n",
            ),
            // 1: `or` over two fields.
            rule(
                &mut fields,
                "  a: {errorCode: AccessDenied}\n  b: {errorMessage|contains: 'not authorized'}\n  condition: 1 of them\n",
            ),
            // 2: prefixes, minus a filter.
            rule(
                &mut fields,
                "  s: {eventName|startswith: [Delete, Terminate]}\n  f: {errorCode|exists: true}\n  condition: s and not f\n",
            ),
            // 3: only a negation: needs nothing.
            rule(
                &mut fields,
                "  f: {eventSource: iam.amazonaws.com}\n  condition: not f\n",
            ),
            // 4: `and` of two exact fields: the more popular one is indexed.
            rule(
                &mut fields,
                "  s: {eventSource: ec2.amazonaws.com, eventName: RunInstances}\n  condition: s\n",
            ),
            // 5: a null is not a need.
            rule(&mut fields, "  s: {errorCode: null}\n  condition: s\n"),
            // 6: a list of maps: each map's need.
            rule(
                &mut fields,
                "  s:\n    - {eventName: A}\n    - {userAgent|endswith: x}\n  condition: s\n",
            ),
        ];
        let pre = Prefilter::new(rules.iter());
        let set = fields.for_source(Source::Cloudtrail);
        let (name, code, msg, ua, src) = (
            set.intern("eventName"),
            set.intern("errorCode"),
            set.intern("errorMessage"),
            set.intern("userAgent"),
            set.intern("eventSource"),
        );
        let ids = |f: &Fields<'_>| -> Vec<usize> {
            pre.candidates(f)
                .map(|r| rules.iter().position(|x| std::ptr::eq(x, r)).unwrap())
                .collect()
        };
        let mut f = set.empty();
        assert_eq!(ids(&f), [3, 5]);
        f[name] = FieldVal::Text("getuser".into());
        assert_eq!(ids(&f), [0, 3, 5]);
        f[name] = FieldVal::Text("DELETEBucket".into());
        assert_eq!(ids(&f), [2, 3, 5]);
        f[name] = FieldVal::Text("a".into());
        f[msg] = FieldVal::Null;
        assert_eq!(ids(&f), [3, 5, 6]);
        f[msg] = FieldVal::Text("".into());
        assert_eq!(ids(&f), [1, 3, 5, 6]);
        f[msg] = FieldVal::Missing;
        f[code] = FieldVal::Text("accessdenied".into());
        f[ua] = FieldVal::Text("z".into());
        assert_eq!(ids(&f), [1, 3, 5, 6]);
        f[name] = FieldVal::Text("RunInstances".into());
        f[src] = FieldVal::Text("s3.amazonaws.com".into());
        assert_eq!(
            ids(&f),
            [1, 3, 4, 5, 6],
            "indexed on eventName, not eventSource"
        );
    }

    /// Random records built from the rules' own literals (in mixed case, cut short, extended):
    /// every rule that matches is among the candidates, in rule order.
    #[test]
    fn candidates_hold_every_match() {
        let mut fields = FieldSets::new();
        let rules: Vec<Rule> = crate::hunt::pack::BUILTIN
            .iter()
            .filter_map(|(name, text)| load(name, text, &mut fields).ok())
            .filter(|r| r.source == Source::Cloudtrail)
            .collect();
        assert!(rules.len() > 30);
        let pre = Prefilter::new(rules.iter());
        let set = fields.set(Source::Cloudtrail);
        let mut words: Vec<String> = vec![String::new(), "x".into()];
        for r in &rules {
            for s in &r.searches {
                for p in s.matchers().flat_map(|m| &m.values) {
                    if let Pattern::Exact(t)
                    | Pattern::StartsWith(t)
                    | Pattern::EndsWith(t)
                    | Pattern::Contains(t) = p
                    {
                        words.push(t.s.clone());
                    }
                }
            }
        }
        let mut seed = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed as usize
        };
        let mut matched = 0;
        for _ in 0..20_000 {
            let mut f = set.empty();
            for slot in f.iter_mut() {
                let w = &words[next() % words.len()];
                let mut v = match next() % 5 {
                    0 => continue,
                    1 => w.to_ascii_uppercase(),
                    2 => format!("{w}{}", words[next() % words.len()]),
                    3 => w.chars().take(next() % 6).collect(),
                    _ => w.clone(),
                };
                if next() % 7 == 0 {
                    v = format!("x{v}");
                }
                *slot = if next() % 9 == 0 {
                    FieldVal::Null
                } else {
                    FieldVal::Text(v.into())
                };
            }
            let want: Vec<&Rule> = rules.iter().filter(|r| r.matches(&f)).collect();
            let got: Vec<&Rule> = pre.candidates(&f).filter(|r| r.matches(&f)).collect();
            matched += want.len();
            assert!(
                want.iter().zip(&got).all(|(a, b)| std::ptr::eq(*a, *b)) && want.len() == got.len(),
                "dispatch lost a match: {:?} vs {:?}",
                want.iter().map(|r| &r.id).collect::<Vec<_>>(),
                got.iter().map(|r| &r.id).collect::<Vec<_>>()
            );
        }
        assert!(matched > 1000, "{matched}");
    }
}
