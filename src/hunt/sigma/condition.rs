//! The Sigma `condition` language: `and`, `or`, `not`, parentheses, `1 of pattern*`,
//! `all of pattern*`, `1 of them`, `all of them`. Aggregations after `|` are refused with a reason.
//!
//! The parser recurses, and so does everything that walks a [`Cond`] (evaluation, ordering,
//! dropping it): a third-party rule nesting parentheses or `not`s deeper than [`MAX_DEPTH`] is
//! refused with the reason, instead of overflowing the stack and ending the hunt.

/// The deepest nesting of parentheses and `not` a condition may have. Real rules nest a
/// handful of levels.
pub const MAX_DEPTH: usize = 64;

use super::wildcard_match;

#[derive(Debug, Clone, PartialEq)]
pub enum Cond {
    /// Index of a search identifier.
    Search(usize),
    And(Vec<Cond>),
    Or(Vec<Cond>),
    Not(Box<Cond>),
}

impl Cond {
    /// Reorders `and`/`or` operands, cheapest first by `cost` of the searches they use.
    pub fn order_by(&mut self, cost: &dyn Fn(usize) -> u32) {
        match self {
            Cond::Search(_) => {}
            Cond::Not(c) => c.order_by(cost),
            Cond::And(v) | Cond::Or(v) => {
                for c in v.iter_mut() {
                    c.order_by(cost);
                }
                v.sort_by_key(|c| c.cost(cost));
            }
        }
    }

    fn cost(&self, cost: &dyn Fn(usize) -> u32) -> u32 {
        match self {
            Cond::Search(i) => cost(*i),
            Cond::Not(c) => c.cost(cost),
            Cond::And(v) => v.iter().map(|c| c.cost(cost)).min().unwrap_or(0),
            Cond::Or(v) => v.iter().map(|c| c.cost(cost)).sum(),
        }
    }

    /// What the condition requires of a record, given what each search requires (`None`:
    /// nothing usable): a list of alternatives, one of which every matching record meets. A
    /// superset is fine: it only decides which rules are evaluated at all. `cost` ranks the
    /// requirements an `and` may choose between (the cheapest is kept).
    pub fn required<T>(
        &self,
        search: &dyn Fn(usize) -> Option<Vec<T>>,
        cost: &dyn Fn(&[T]) -> u64,
    ) -> Option<Vec<T>> {
        match self {
            Cond::Search(i) => search(*i),
            // Any operand's requirement holds for the whole; the cheapest filters best.
            Cond::And(v) => v
                .iter()
                .filter_map(|c| c.required(search, cost))
                .min_by_key(|r| cost(r)),
            // Only when every operand is constrained: then their union.
            Cond::Or(v) => {
                let mut out = Vec::new();
                for c in v {
                    out.extend(c.required(search, cost)?);
                }
                Some(out)
            }
            Cond::Not(_) => None,
        }
    }

    pub fn eval(&self, searches: &mut dyn FnMut(usize) -> bool) -> bool {
        match self {
            Cond::Search(i) => searches(*i),
            Cond::And(v) => v.iter().all(|c| c.eval(searches)),
            Cond::Or(v) => v.iter().any(|c| c.eval(searches)),
            Cond::Not(c) => !c.eval(searches),
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    Ident(String),
    And,
    Or,
    Not,
    Open,
    Close,
    OneOf,
    AllOf,
}

fn lex(text: &str) -> Result<Vec<Tok>, String> {
    if text.contains('|') {
        return Err("aggregation conditions (`| count() …`) are not supported".into());
    }
    let spaced = text.replace('(', " ( ").replace(')', " ) ");
    let words: Vec<&str> = spaced.split_whitespace().collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < words.len() {
        let w = words[i];
        let next_is_of = words
            .get(i + 1)
            .is_some_and(|n| n.eq_ignore_ascii_case("of"));
        let tok = match w.to_ascii_lowercase().as_str() {
            "and" => Tok::And,
            "or" => Tok::Or,
            "not" => Tok::Not,
            "(" => Tok::Open,
            ")" => Tok::Close,
            "1" | "any" if next_is_of => {
                i += 1;
                Tok::OneOf
            }
            "all" if next_is_of => {
                i += 1;
                Tok::AllOf
            }
            _ if next_is_of => {
                return Err(format!(
                    "`{w} of` is not supported (only `1 of` and `all of`)"
                ));
            }
            _ => Tok::Ident(w.to_string()),
        };
        out.push(tok);
        i += 1;
    }
    Ok(out)
}

/// Parses `text` against the search identifiers `names` (in the rule's order).
pub fn parse(text: &str, names: &[String]) -> Result<Cond, String> {
    let toks = lex(text)?;
    let mut p = Parser {
        toks: &toks,
        pos: 0,
        names,
        depth: 0,
    };
    let c = p.or()?;
    if p.pos != toks.len() {
        return Err(format!("unexpected `{:?}` in condition", toks[p.pos]));
    }
    Ok(c)
}

struct Parser<'a> {
    toks: &'a [Tok],
    pos: usize,
    names: &'a [String],
    /// Parentheses and `not`s open around the current token.
    depth: usize,
}

impl Parser<'_> {
    fn peek(&self) -> Option<&Tok> {
        self.toks.get(self.pos)
    }

    /// Enters one more level of nesting, or refuses a condition nested too deep.
    fn deeper(&mut self) -> Result<(), String> {
        self.depth += 1;
        if self.depth > MAX_DEPTH {
            return Err(format!(
                "the condition nests parentheses and `not` more than {MAX_DEPTH} levels deep"
            ));
        }
        Ok(())
    }

    fn or(&mut self) -> Result<Cond, String> {
        let mut items = vec![self.and()?];
        while self.peek() == Some(&Tok::Or) {
            self.pos += 1;
            items.push(self.and()?);
        }
        Ok(if items.len() == 1 {
            items.remove(0)
        } else {
            Cond::Or(items)
        })
    }

    fn and(&mut self) -> Result<Cond, String> {
        let mut items = vec![self.not()?];
        while self.peek() == Some(&Tok::And) {
            self.pos += 1;
            items.push(self.not()?);
        }
        Ok(if items.len() == 1 {
            items.remove(0)
        } else {
            Cond::And(items)
        })
    }

    fn not(&mut self) -> Result<Cond, String> {
        if self.peek() == Some(&Tok::Not) {
            self.pos += 1;
            self.deeper()?;
            let c = Cond::Not(Box::new(self.not()?));
            self.depth -= 1;
            return Ok(c);
        }
        self.atom()
    }

    fn atom(&mut self) -> Result<Cond, String> {
        let tok = self
            .peek()
            .cloned()
            .ok_or_else(|| "condition ends too early".to_string())?;
        self.pos += 1;
        match tok {
            Tok::Open => {
                self.deeper()?;
                let c = self.or()?;
                if self.peek() != Some(&Tok::Close) {
                    return Err("missing `)` in condition".into());
                }
                self.pos += 1;
                self.depth -= 1;
                Ok(c)
            }
            Tok::Ident(name) => self
                .names
                .iter()
                .position(|n| *n == name)
                .map(Cond::Search)
                .ok_or_else(|| {
                    format!("condition names `{name}`, which is not a search identifier")
                }),
            Tok::OneOf | Tok::AllOf => {
                let Some(Tok::Ident(pattern)) = self.peek().cloned() else {
                    return Err("`of` needs a pattern or `them`".into());
                };
                self.pos += 1;
                let matched: Vec<Cond> = self
                    .names
                    .iter()
                    .enumerate()
                    .filter(|(_, n)| {
                        if pattern == "them" {
                            !n.starts_with('_')
                        } else {
                            wildcard_match(&pattern, n)
                        }
                    })
                    .map(|(i, _)| Cond::Search(i))
                    .collect();
                if matched.is_empty() {
                    return Err(format!("`of {pattern}` matches no search identifier"));
                }
                Ok(if tok == Tok::OneOf {
                    Cond::Or(matched)
                } else {
                    Cond::And(matched)
                })
            }
            other => Err(format!("unexpected `{other:?}` in condition")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn precedence_and_of() {
        let n = names(&["selection", "filter_a", "filter_b"]);
        let c = parse("selection and not 1 of filter_*", &n).unwrap();
        let mut truth = |i: usize| [true, false, false][i];
        assert!(c.eval(&mut truth));
        let c = parse("(selection or filter_a) and all of them", &n).unwrap();
        assert!(!c.eval(&mut truth));
        assert!(parse("selection | count() > 5", &n).is_err());
        assert!(parse("nothere", &n).is_err());
    }

    #[test]
    fn nesting_is_bounded() {
        let n = names(&["a"]);
        let ok = format!("{}a{}", "(".repeat(MAX_DEPTH), ")".repeat(MAX_DEPTH));
        assert!(parse(&ok, &n).is_ok());
        let deep = format!("{}a{}", "(".repeat(30_000), ")".repeat(30_000));
        assert!(parse(&deep, &n).unwrap_err().contains("levels deep"));
        let nots = format!("{}a", "not ".repeat(60_000));
        assert!(parse(&nots, &n).unwrap_err().contains("levels deep"));
        let mixed = format!("{}a{}", "not (".repeat(40), ")".repeat(40));
        assert!(parse(&mixed, &n).is_err());
    }
}
