//! [`Re`]: a rule's regex (a `|re` value, or a wildcard compiled to one) with the literal text
//! every match of it must hold, looked for first.
//!
//! Why: a rule is evaluated on every record its prefilter lets through, and a regex indexed on
//! nothing (SigmaHQ's `userIdentity.arn|re: '.+:assumed-role/aws:.+'`) on every record of a
//! hunt; asking the regex engine each time (its cache taken from a pool, a lazy DFA run over
//! the value) cost more than the rest of the rule. A substring search (`memmem`) for the
//! required literal rejects nearly every value first; the regex decides the rest.

use regex_syntax::hir::{Hir, HirKind};

/// A compiled regex and, when it has one, a literal every match contains.
#[derive(Debug)]
pub struct Re {
    regex: regex::Regex,
    required: Option<memchr::memmem::Finder<'static>>,
}

impl Re {
    pub fn new(regex: regex::Regex) -> Re {
        // The regex crate parsed this pattern already with the same default syntax; a pattern
        // this parser refuses (none should) simply goes without a literal.
        let required = regex_syntax::Parser::new()
            .parse(regex.as_str())
            .ok()
            .and_then(|hir| required(&hir))
            .map(|lit| memchr::memmem::Finder::new(&lit).into_owned());
        Re { regex, required }
    }

    pub fn is_match(&self, s: &str) -> bool {
        if let Some(lit) = &self.required
            && lit.find(s.as_bytes()).is_none()
        {
            return false;
        }
        self.regex.is_match(s)
    }

    /// The pattern, as written for the regex engine.
    pub fn as_str(&self) -> &str {
        self.regex.as_str()
    }
}

/// The longest literal every match of `hir` contains, if any: a literal itself, a run of
/// literals in a concatenation, or one inside a group or a repetition of at least one.
/// Alternations, classes (case-insensitive letters are classes) and optional parts give none:
/// a literal is only ever taken where a match cannot do without it.
fn required(hir: &Hir) -> Option<Vec<u8>> {
    match hir.kind() {
        HirKind::Literal(lit) => Some(lit.0.to_vec()),
        HirKind::Capture(c) => required(&c.sub),
        HirKind::Repetition(r) if r.min >= 1 => required(&r.sub),
        HirKind::Concat(subs) => {
            let mut best: Option<Vec<u8>> = None;
            let mut keep = |candidate: Vec<u8>| {
                if !candidate.is_empty() && best.as_ref().is_none_or(|b| candidate.len() > b.len())
                {
                    best = Some(candidate);
                }
            };
            // Adjacent literals match adjacent text: their run is one literal.
            let mut run = Vec::new();
            for sub in subs {
                match sub.kind() {
                    HirKind::Literal(lit) => run.extend_from_slice(&lit.0),
                    _ => {
                        keep(std::mem::take(&mut run));
                        if let Some(inner) = required(sub) {
                            keep(inner);
                        }
                    }
                }
            }
            keep(run);
            best
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn literal(pattern: &str) -> Option<String> {
        let hir = regex_syntax::Parser::new().parse(pattern).unwrap();
        required(&hir).map(|l| String::from_utf8(l).unwrap())
    }

    #[test]
    fn the_literal_is_one_no_match_can_do_without() {
        assert_eq!(
            literal(".+:assumed-role/aws:.+").as_deref(),
            Some(":assumed-role/aws:")
        );
        assert_eq!(
            literal("^arn:aws:iam::[0-9]+:root$").as_deref(),
            Some("arn:aws:iam::")
        );
        assert_eq!(literal("(?:ab)+c").as_deref(), Some("ab"));
        assert_eq!(literal("x(abc)y").as_deref(), Some("abc"));
        // Optional, alternative or case-insensitive text is not required as written.
        assert_eq!(literal("(?:abcdef)?x").as_deref(), Some("x"));
        assert_eq!(literal("abc|abd"), None);
        assert_eq!(literal("(?i)abc"), None);
        assert_eq!(literal("[a-z]+"), None);
        assert_eq!(literal(""), None);
    }

    /// Whatever the pattern, the prefilter never changes an answer of the regex alone.
    #[test]
    fn the_prefilter_never_changes_an_answer() {
        let patterns = [
            ".+:assumed-role/aws:.+",
            "^arn:aws:iam::[0-9]+:root$",
            "(?:ab)+c",
            "x(abc)y",
            "(?:abcdef)?x",
            "abc|abd",
            "(?i)ABC",
            "(?s)\\Aa.*b\\z",
            "é+ü",
            "a{2,}b",
            "a{0,3}b",
        ];
        let values = [
            "",
            "abc",
            "xabcy",
            "ababc",
            "arn:aws:iam::123:root",
            "arn:aws:sts::1:assumed-role/aws:x/i-1",
            "x",
            "abd",
            "AbC",
            "a\nb",
            "éüü",
            "aab",
            "b",
        ];
        for p in patterns {
            let plain = regex::Regex::new(p).unwrap();
            let re = Re::new(plain.clone());
            for v in values {
                assert_eq!(re.is_match(v), plain.is_match(v), "{p} on {v:?}");
            }
        }
    }
}
