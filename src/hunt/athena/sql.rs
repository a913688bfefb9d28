//! Sigma detections compiled to SQL over the CloudTrail table (Athena's dialect, Trino).
//!
//! The SQL is a filter in front of the evaluator, not a replacement for it: every row a query
//! returns is evaluated again by the same rules as a record read from a file. So a compiled
//! rule must never miss a record the evaluator matches (it may return a few more). Each
//! detection is compiled twice: `over`, a condition true for every record the rule matches
//! (and perhaps a few others), and `under`, true only for records it matches; `not` swaps
//! them. A leaf the SQL cannot decide exactly (a path through JSON that may cross an array, a
//! regex whose syntax differs between engines, an IPv6 CIDR) is over-approximated (`TRUE` at
//! worst) and under-approximated (`FALSE` at worst). A rule is *exact* when both agree; a rule
//! whose `over` is `TRUE` cannot narrow a query at all: it runs locally on a broad query, and
//! the report says why.
//!
//! Every condition is two-valued (never SQL NULL): comparisons are wrapped in `coalesce(…,
//! false)`, as a missing field matches nothing in Sigma. Rules are hostile input: literals are
//! SQL string literals with quotes doubled (and LIKE patterns escaped), never spliced.

use super::columns::{FieldSql, field_sql};
use crate::hunt::fields::FieldSet;
use crate::hunt::sigma::view::{Detection, Matcher, Pat, WildSeg};
use crate::hunt::sigma::{RefKind, Rule};

/// One rule compiled.
#[derive(Debug, Clone, PartialEq)]
pub struct Compiled {
    /// True for every record the rule matches.
    pub over: String,
    /// True only for records the rule matches.
    pub under: String,
    /// Why `over` and `under` differ (empty: the SQL decides exactly as the evaluator).
    pub inexact: Vec<String>,
}

impl Compiled {
    pub fn exact(&self) -> bool {
        self.inexact.is_empty()
    }

    /// Whether the SQL narrows nothing: the rule needs every row.
    pub fn broad(&self) -> bool {
        self.over == TRUE
    }
}

pub const TRUE: &str = "TRUE";
pub const FALSE: &str = "FALSE";

/// Compiles `rule` (a CloudTrail rule; `fields` the CloudTrail field set it was loaded with).
pub fn compile_rule(rule: &Rule, fields: &FieldSet) -> Compiled {
    let mut c = Ctx {
        fields,
        inexact: Vec::new(),
    };
    let d = rule.detection();
    let over = c.detection(&d, Mode::Over);
    let under = c.detection(&d, Mode::Under);
    let mut inexact = c.inexact;
    inexact.sort();
    inexact.dedup();
    Compiled {
        over,
        under,
        inexact,
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Over,
    Under,
}

impl Mode {
    fn flip(self) -> Mode {
        match self {
            Mode::Over => Mode::Under,
            Mode::Under => Mode::Over,
        }
    }

    /// What an undecidable leaf becomes.
    fn unknown(self) -> String {
        match self {
            Mode::Over => TRUE.into(),
            Mode::Under => FALSE.into(),
        }
    }
}

struct Ctx<'a> {
    fields: &'a FieldSet,
    inexact: Vec<String>,
}

/// A leaf's two approximations.
struct Leaf {
    over: String,
    under: String,
}

impl Leaf {
    fn exact(sql: String) -> Leaf {
        Leaf {
            over: sql.clone(),
            under: sql,
        }
    }

    fn pick(self, mode: Mode) -> String {
        match mode {
            Mode::Over => self.over,
            Mode::Under => self.under,
        }
    }
}

impl Ctx<'_> {
    fn detection(&mut self, d: &Detection, mode: Mode) -> String {
        match d {
            Detection::Search(groups) => {
                let parts: Vec<String> = groups
                    .iter()
                    .map(|g| {
                        let ms: Vec<String> = g.iter().map(|m| self.matcher(m, mode)).collect();
                        and(ms)
                    })
                    .collect();
                or(parts)
            }
            Detection::And(v) => and(v.iter().map(|x| self.detection(x, mode)).collect()),
            Detection::Or(v) => or(v.iter().map(|x| self.detection(x, mode)).collect()),
            Detection::Not(x) => not(self.detection(x, mode.flip())),
        }
    }

    fn matcher(&mut self, m: &Matcher, mode: Mode) -> String {
        let path = self.fields.path(m.field).to_string();
        let parts: Vec<String> = m
            .values
            .iter()
            .map(|p| match self.leaf(&path, p) {
                Ok(leaf) => leaf.pick(mode),
                Err(why) => {
                    self.inexact.push(why);
                    mode.unknown()
                }
            })
            .collect();
        if m.all { and(parts) } else { or(parts) }
    }

    /// One pattern on one field. `Err`: no SQL form at all.
    fn leaf(&mut self, path: &str, p: &Pat) -> Result<Leaf, String> {
        let field = field_sql(path)?;
        let (value, json) = match &field {
            FieldSql::Column(c) => ((*c).to_string(), None),
            FieldSql::JsonWhole(c) => ((*c).to_string(), None),
            FieldSql::JsonPath {
                column,
                path: jp,
                last_key,
            } => (
                format!("json_extract_scalar({column}, {})", literal(jp)?),
                Some((*column, last_key.as_str())),
            ),
        };
        // Presence: a column is present when not NULL; a JSON path's scalar is NULL for an
        // object or array too, which the evaluator counts as present.
        let key_absent = |col: &str, key: &str| -> Result<String, String> {
            Ok(format!(
                "({col} IS NULL OR strpos({col}, {}) = 0)",
                literal(&format!("\"{key}\""))?
            ))
        };
        let null = |v: &str| -> Result<Leaf, String> {
            Ok(match json {
                None => Leaf::exact(format!("{v} IS NULL")),
                Some((col, key)) => Leaf {
                    over: format!("{v} IS NULL"),
                    under: key_absent(col, key)?,
                },
            })
        };
        let present = |v: &str| -> Result<Leaf, String> {
            let n = null(v)?;
            Ok(Leaf {
                over: not(n.under),
                under: not(n.over),
            })
        };
        if json.is_some() {
            self.inexact.push(format!(
                "`{path}` is read inside JSON text: objects, arrays and values inside arrays are matched locally"
            ));
        }
        let leaf = match p {
            Pat::Null | Pat::Exists(false) => return null(&value),
            Pat::Exists(true) | Pat::Any => return present(&value),
            Pat::Exact { text, cased } => cmp(&value, text, *cased, |v, t| {
                Ok(format!("{v} = {}", literal(t)?))
            })?,
            Pat::Contains { text, cased } => {
                cmp(&value, text, *cased, |v, t| like(v, &["%", t, "%"]))?
            }
            Pat::StartsWith { text, cased } => {
                cmp(&value, text, *cased, |v, t| like(v, &[t, "%"]))?
            }
            Pat::EndsWith { text, cased } => cmp(&value, text, *cased, |v, t| like(v, &["%", t]))?,
            Pat::ContainsAny(words) => {
                let mut over = Vec::new();
                let mut under = Vec::new();
                for w in words {
                    let l = cmp(&value, w, false, |v, t| like(v, &["%", t, "%"]))?;
                    over.push(l.over);
                    under.push(l.under);
                }
                Leaf {
                    over: or(over),
                    under: or(under),
                }
            }
            Pat::Wildcard { segs, cased } => {
                let mut pattern = String::new();
                for s in segs {
                    match s {
                        WildSeg::Lit(l) => pattern.push_str(&like_escape(l)),
                        WildSeg::Star => pattern.push('%'),
                        WildSeg::One => pattern.push('_'),
                    }
                }
                cmp(&value, "", *cased, |v, _| {
                    Ok(format!("{v} LIKE {} ESCAPE '\\'", literal(&pattern)?))
                })?
            }
            Pat::Regex(re) => {
                if !portable_regex(re) {
                    return Err(format!(
                        "regex `{}` uses syntax that differs between the regex crate and Trino",
                        re.chars().take(60).collect::<String>()
                    ));
                }
                // Java's `$` also matches before a final newline: `under` leaves those out.
                let m = format!("regexp_like({value}, {})", literal(re)?);
                Leaf {
                    over: coalesce(m.clone()),
                    under: coalesce(format!("{m} AND strpos({value}, chr(10)) = 0")),
                }
            }
            Pat::Cidr(net) => match net {
                ipnet::IpNet::V4(n) => Leaf::exact(ipv4_in(&value, n)?),
                ipnet::IpNet::V6(_) => {
                    return Err(format!("IPv6 CIDR {net}: no portable SQL form"));
                }
            },
            Pat::FieldRef { field, kind } => {
                let other = match field_sql(self.fields.path(*field))? {
                    FieldSql::Column(c) if json.is_none() => c,
                    _ => return Err("fieldref over JSON text is not exact in SQL".into()),
                };
                let v = &value;
                Leaf::exact(coalesce(match kind {
                    RefKind::Equals => format!("{v} = {other}"),
                    RefKind::Contains => format!("strpos({v}, {other}) > 0"),
                    RefKind::StartsWith => format!("substr({v}, 1, length({other})) = {other}"),
                    RefKind::EndsWith => format!(
                        "length({v}) >= length({other}) AND substr({v}, length({v}) - length({other}) + 1) = {other}"
                    ),
                }))
            }
        };
        Ok(match json {
            None => leaf,
            // The evaluator also matches an object's or array's text, or a value inside an
            // array: the scalar is NULL then, and the key is somewhere in the column's text.
            Some((col, key)) => Leaf {
                over: or(vec![
                    leaf.over,
                    format!("({value} IS NULL AND {})", not(key_absent(col, key)?)),
                ]),
                under: leaf.under,
            },
        })
    }
}

/// A string comparison, case-insensitive unless `cased`. The evaluator lowers ASCII only;
/// SQL's `lower` lowers every letter, which can only add matches (fine for `over`); `under`
/// also requires the value to be ASCII, where both agree.
fn cmp(
    value: &str,
    text: &str,
    cased: bool,
    test: impl Fn(&str, &str) -> Result<String, String>,
) -> Result<Leaf, String> {
    if cased {
        return Ok(Leaf::exact(coalesce(test(value, text)?)));
    }
    let lowered = format!("lower({value})");
    let over = coalesce(test(&lowered, text)?);
    let under = coalesce(format!(
        "regexp_like({value}, '^[\\x00-\\x7F]*$') AND {}",
        test(&lowered, text)?
    ));
    Ok(Leaf { over, under })
}

/// `value LIKE pattern` from pieces that are either `%` or literal text.
fn like(value: &str, pieces: &[&str]) -> Result<String, String> {
    let pattern: String = pieces
        .iter()
        .map(|p| {
            if *p == "%" {
                "%".into()
            } else {
                like_escape(p)
            }
        })
        .collect();
    Ok(format!("{value} LIKE {} ESCAPE '\\'", literal(&pattern)?))
}

fn like_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for ch in s.chars() {
        if matches!(ch, '%' | '_' | '\\') {
            out.push('\\');
        }
        out.push(ch);
    }
    out
}

/// A SQL string literal: quotes doubled. A NUL or other control character other than tab and
/// newline has no reliable spelling in every engine: refused (the rule runs locally).
pub fn literal(s: &str) -> Result<String, String> {
    if s.chars().any(|c| c.is_control() && c != '\t' && c != '\n') {
        return Err("a value with control characters has no portable SQL literal".into());
    }
    Ok(format!("'{}'", s.replace('\'', "''")))
}

/// A quoted identifier (`"name"`), for names given on the command line.
pub fn identifier(s: &str) -> Result<String, String> {
    if s.is_empty()
        || !s
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
    {
        return Err(format!(
            "`{s}`: Athena database and table names are letters, digits, `_` and `-`"
        ));
    }
    Ok(format!("\"{s}\""))
}

fn coalesce(x: String) -> String {
    format!("coalesce({x}, false)")
}

pub fn and(parts: Vec<String>) -> String {
    if parts.iter().any(|p| p == FALSE) {
        return FALSE.into();
    }
    let parts: Vec<String> = parts.into_iter().filter(|p| p != TRUE).collect();
    match parts.len() {
        0 => TRUE.into(),
        1 => parts.into_iter().next().unwrap_or_default(),
        _ => format!("({})", parts.join(" AND ")),
    }
}

pub fn or(parts: Vec<String>) -> String {
    if parts.iter().any(|p| p == TRUE) {
        return TRUE.into();
    }
    let parts: Vec<String> = parts.into_iter().filter(|p| p != FALSE).collect();
    match parts.len() {
        0 => FALSE.into(),
        1 => parts.into_iter().next().unwrap_or_default(),
        _ => format!("({})", parts.join(" OR ")),
    }
}

fn not(x: String) -> String {
    match x.as_str() {
        TRUE => FALSE.into(),
        FALSE => TRUE.into(),
        _ => format!("(NOT {x})"),
    }
}

/// Whether a `re` pattern means the same to the regex crate and to Trino's (Java-style) and
/// DuckDB's (RE2) engines: ASCII, none of the classes whose meaning differs (`\d`, `\w`, `\s`,
/// `\b` are Unicode-aware in the regex crate), no named groups, no POSIX classes, no
/// case-insensitive flag (Unicode-aware in the regex crate).
fn portable_regex(re: &str) -> bool {
    re.is_ascii()
        && ![
            "\\d", "\\D", "\\w", "\\W", "\\s", "\\S", "\\b", "\\B", "\\p", "\\P", "(?P", "[[:",
            "(?i", "(?x", "(?u", "(?U",
        ]
        .iter()
        .any(|x| re.contains(x))
        && !re.contains("(?") // any other inline flag group
}

/// An IPv4 address text inside `net`: four dotted numbers whose value is in the range.
fn ipv4_in(value: &str, net: &ipnet::Ipv4Net) -> Result<String, String> {
    let lo = u32::from(net.network()) as u64;
    let hi = u32::from(net.broadcast()) as u64;
    let octet = |i: u8| format!("try_cast(split_part({value}, '.', {i}) AS BIGINT)");
    Ok(coalesce(format!(
        "regexp_like({value}, '^[0-9]{{1,3}}\\.[0-9]{{1,3}}\\.[0-9]{{1,3}}\\.[0-9]{{1,3}}$') AND {} * 16777216 + {} * 65536 + {} * 256 + {} BETWEEN {lo} AND {hi}",
        octet(1),
        octet(2),
        octet(3),
        octet(4)
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_quote_in_a_value_stays_inside_its_literal() {
        assert_eq!(literal("x' OR '1'='1").as_deref(), Ok("'x'' OR ''1''=''1'"));
        assert!(literal("a\u{0}b").is_err());
        assert_eq!(like_escape("50%_a\\"), "50\\%\\_a\\\\");
    }

    #[test]
    fn and_or_not_fold_constants() {
        assert_eq!(and(vec![TRUE.into(), "a".into()]), "a");
        assert_eq!(and(vec![FALSE.into(), "a".into()]), FALSE);
        assert_eq!(or(vec![TRUE.into(), "a".into()]), TRUE);
        assert_eq!(or(vec![]), FALSE);
        assert_eq!(not(TRUE.into()), FALSE);
    }

    #[test]
    fn identifiers_are_checked() {
        assert_eq!(
            identifier("cloudtrail_logs").as_deref(),
            Ok("\"cloudtrail_logs\"")
        );
        assert!(identifier("a\"; DROP TABLE x; --").is_err());
        assert!(identifier("").is_err());
    }
}
