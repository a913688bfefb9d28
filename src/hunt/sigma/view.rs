//! A read-only view of a loaded rule's detection — its condition with every search inlined,
//! each matcher's field and patterns as plain data — for compilers that translate a rule into
//! another language (the SQL of [`crate::hunt::athena`]). The evaluator's own types stay
//! private: they hold compiled regexes and automata, which a translator cannot read.

use super::condition::Cond;
use super::{Pattern, RefKind, Rule, Search, Seg};
use crate::hunt::fields::FieldId;

/// A detection: `Search` is a search identifier's body, matched when any of its groups is,
/// a group when all of its matchers are.
#[derive(Debug, Clone, PartialEq)]
pub enum Detection {
    Search(Vec<Vec<Matcher>>),
    And(Vec<Detection>),
    Or(Vec<Detection>),
    Not(Box<Detection>),
}

/// One `field|modifiers: values` entry.
#[derive(Debug, Clone, PartialEq)]
pub struct Matcher {
    pub field: FieldId,
    /// `|all`: every value must match (otherwise any).
    pub all: bool,
    pub values: Vec<Pat>,
}

/// One value of a matcher. Texts of case-insensitive patterns are lowercase already; the
/// evaluator compares them with the record's value ASCII-lowercased.
#[derive(Debug, Clone, PartialEq)]
pub enum Pat {
    /// Field missing or null.
    Null,
    /// `exists: true|false`.
    Exists(bool),
    Exact {
        text: String,
        cased: bool,
    },
    Contains {
        text: String,
        cased: bool,
    },
    StartsWith {
        text: String,
        cased: bool,
    },
    EndsWith {
        text: String,
        cased: bool,
    },
    /// Any of these case-insensitive substrings.
    ContainsAny(Vec<String>),
    /// Present with any value (a lone `*`).
    Any,
    /// `*` and `?` wildcards over the whole value.
    Wildcard {
        segs: Vec<WildSeg>,
        cased: bool,
    },
    /// A `re` pattern, in the syntax of the `regex` crate (flags inline).
    Regex(String),
    Cidr(ipnet::IpNet),
    /// `fieldref`: compared with another field of the same record (case-sensitive).
    FieldRef {
        field: FieldId,
        kind: RefKind,
    },
}

#[derive(Debug, Clone, PartialEq)]
pub enum WildSeg {
    Lit(String),
    Star,
    One,
}

impl Rule {
    /// The rule's detection as plain data.
    pub fn detection(&self) -> Detection {
        view_cond(&self.cond, &self.searches)
    }
}

fn view_cond(cond: &Cond, searches: &[Search]) -> Detection {
    match cond {
        Cond::Search(i) => Detection::Search(match searches.get(*i) {
            Some(Search::All(ms)) => vec![ms.iter().map(view_matcher).collect()],
            Some(Search::Any(groups)) => groups
                .iter()
                .map(|g| g.iter().map(view_matcher).collect())
                .collect(),
            // Never built (the condition names only known searches); matches nothing, as
            // the evaluator does.
            None => Vec::new(),
        }),
        Cond::And(v) => Detection::And(v.iter().map(|c| view_cond(c, searches)).collect()),
        Cond::Or(v) => Detection::Or(v.iter().map(|c| view_cond(c, searches)).collect()),
        Cond::Not(c) => Detection::Not(Box::new(view_cond(c, searches))),
    }
}

fn view_matcher(m: &super::FieldMatcher) -> Matcher {
    Matcher {
        field: m.field,
        all: m.all,
        values: m.values.iter().map(view_pattern).collect(),
    }
}

fn view_pattern(p: &Pattern) -> Pat {
    let t = |t: &super::Text| (t.s.clone(), t.cased);
    match p {
        Pattern::Null => Pat::Null,
        Pattern::Exists(b) => Pat::Exists(*b),
        Pattern::Exact(x) => {
            let (text, cased) = t(x);
            Pat::Exact { text, cased }
        }
        Pattern::Contains(x) => {
            let (text, cased) = t(x);
            Pat::Contains { text, cased }
        }
        Pattern::StartsWith(x) => {
            let (text, cased) = t(x);
            Pat::StartsWith { text, cased }
        }
        Pattern::EndsWith(x) => {
            let (text, cased) = t(x);
            Pat::EndsWith { text, cased }
        }
        Pattern::Any => Pat::Any,
        Pattern::Wildcard(r) => wildcard_of(r.as_str()),
        Pattern::Regex(r) => Pat::Regex(r.as_str().to_string()),
        Pattern::Cidr(n) => Pat::Cidr(*n),
        Pattern::FieldRef(field, kind) => Pat::FieldRef {
            field: *field,
            kind: *kind,
        },
        Pattern::AnyOf(n) => Pat::ContainsAny(n.words.clone()),
    }
}

/// The segments back from the regex [`super::wildcard_regex`] wrote: `(?s)` or `(?si)`, `\A`
/// unless the pattern began with `*`, escaped literals, `.*` and `.`, `\z` unless it ended
/// with `*`. Every literal character is escaped or not a metacharacter, so this is exact.
fn wildcard_of(re: &str) -> Pat {
    let (cased, mut rest) = match re.strip_prefix("(?si)") {
        Some(r) => (false, r),
        None => (true, re.strip_prefix("(?s)").unwrap_or(re)),
    };
    let mut segs = Vec::new();
    match rest.strip_prefix("\\A") {
        Some(r) => rest = r,
        None => segs.push(Seg::Star),
    }
    let open_end = match rest.strip_suffix("\\z") {
        Some(r) => {
            rest = r;
            false
        }
        None => true,
    };
    let mut lit = String::new();
    let mut chars = rest.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\\' => {
                if let Some(n) = chars.next() {
                    lit.push(n);
                }
            }
            '.' => {
                if !lit.is_empty() {
                    segs.push(Seg::Lit(std::mem::take(&mut lit)));
                }
                if chars.peek() == Some(&'*') {
                    chars.next();
                    segs.push(Seg::Star);
                } else {
                    segs.push(Seg::One);
                }
            }
            c => lit.push(c),
        }
    }
    if !lit.is_empty() {
        segs.push(Seg::Lit(lit));
    }
    if open_end {
        segs.push(Seg::Star);
    }
    Pat::Wildcard {
        segs: segs
            .into_iter()
            .map(|s| match s {
                Seg::Lit(l) => WildSeg::Lit(l),
                Seg::Star => WildSeg::Star,
                Seg::One => WildSeg::One,
            })
            .collect(),
        cased,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wildcards_come_back_from_their_regex() {
        for (pattern, cased) in [
            ("a*b?c", false),
            ("*Put.Object*", false),
            ("x\\*y*", true),
            ("*a-b#c~d&e", false),
            ("1.2.3.?", true),
        ] {
            let segs = super::super::segments(pattern, cased);
            let re = super::super::wildcard_regex(&segs, cased).expect("regex");
            let Pat::Wildcard {
                segs: back,
                cased: c,
            } = wildcard_of(re.as_str())
            else {
                panic!("not a wildcard");
            };
            assert_eq!(c, cased, "{pattern}");
            let want: Vec<WildSeg> = segs
                .into_iter()
                .map(|s| match s {
                    Seg::Lit(l) => WildSeg::Lit(l),
                    Seg::Star => WildSeg::Star,
                    Seg::One => WildSeg::One,
                })
                .collect();
            assert_eq!(back, want, "{pattern}");
        }
    }
}
