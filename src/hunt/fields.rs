//! Lazy field extraction from one JSON record: only the dotted paths that some rule or check
//! references are captured, everything else is skipped without building a DOM.
//!
//! Why: an audit record is mostly fields no rule looks at (CloudTrail's `additionalEventData`,
//! `tlsDetails`, …). Walking the record once with serde's [`IgnoredAny`] for unreferenced keys
//! and borrowing strings from the input buffer keeps the per-record cost close to a JSON skim.

pub mod scan;

use serde::de::{self, DeserializeSeed, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde_json::value::RawValue;
use std::borrow::Cow;
use std::collections::HashMap;
use std::fmt;

/// Index of a field path in a [`FieldSet`].
pub type FieldId = usize;

/// One captured value. Strings borrow from the record when they have no escapes; numbers and
/// booleans keep their JSON text; objects and arrays keep their raw JSON text, which is what
/// Sigma backends match `contains` against when a rule names a whole object.
#[derive(Debug, Clone, PartialEq, Default)]
pub enum FieldVal<'a> {
    #[default]
    Missing,
    Null,
    Text(Cow<'a, str>),
    Raw(&'a str),
}

impl<'a> FieldVal<'a> {
    /// The value as text, when it has one (`Raw` gives its JSON text).
    pub fn as_str(&self) -> Option<&str> {
        match self {
            FieldVal::Text(t) => Some(t),
            FieldVal::Raw(r) => Some(r),
            _ => None,
        }
    }

    pub fn is_present(&self) -> bool {
        !matches!(self, FieldVal::Missing | FieldVal::Null)
    }
}

/// The values of one record, indexed by [`FieldId`].
pub type Fields<'a> = Vec<FieldVal<'a>>;

/// The dotted paths referenced for one source, and the trie the extractor walks.
#[derive(Debug, Default, Clone)]
pub struct FieldSet {
    paths: Vec<String>,
    by_path: HashMap<String, FieldId>,
    root: Node,
}

#[derive(Debug, Default, Clone)]
struct Node {
    /// Capture this node's whole value under this id.
    id: Option<FieldId>,
    children: Vec<(String, Node)>,
    /// `heads[i]`: the first 8 bytes of child `i`'s key (zero-padded), compared as one word
    /// before the rest: keys of one length mostly differ there, and a `memcmp` call per key of
    /// every record was a tenth of a hunt.
    heads: Vec<u64>,
    /// `mids[i]`: bytes 8 to 16 of child `i`'s key, likewise: most keys are shorter than 17
    /// bytes and then need no `memcmp` call at all.
    mids: Vec<u64>,
    /// `by_len[n]`: the range of `children` whose keys are `n` bytes long.
    by_len: Vec<(usize, usize)>,
    /// The children's keys in quotes (`"userName"`): a value captured whole is descended into
    /// (parsed a second time) only when its text holds one of them, see [`Node::may_hold`].
    /// Built on first use: rebuilt after each child added while rules load, the automata were
    /// most of the start of a hunt (quadratic in the children).
    quoted: std::sync::OnceLock<Option<aho_corasick::AhoCorasick>>,
}

/// The first 8 bytes of `key`, zero-padded, as one word. Loaded as two overlapping words of
/// the largest size that fits, their shared bytes equal (a copy into a padded array was a
/// `memcpy` call per key of every record).
fn head(key: &[u8]) -> u64 {
    let n = key.len();
    if let Some(b) = key.first_chunk::<8>() {
        return u64::from_le_bytes(*b);
    }
    if let (Some(lo), Some(hi)) = (key.first_chunk::<4>(), key.last_chunk::<4>()) {
        let (lo, hi) = (u32::from_le_bytes(*lo), u32::from_le_bytes(*hi));
        return u64::from(lo) | u64::from(hi) << (8 * (n - 4));
    }
    if let (Some(lo), Some(hi)) = (key.first_chunk::<2>(), key.last_chunk::<2>()) {
        let (lo, hi) = (u16::from_le_bytes(*lo), u16::from_le_bytes(*hi));
        return u64::from(lo) | u64::from(hi) << (8 * (n - 2));
    }
    key.first().map_or(0, |&b| u64::from(b))
}

impl Node {
    /// Children are kept sorted by length, then bytes, and ranged by length: every key of every
    /// record is looked up here, and most keys differ from every child's in length, which then
    /// costs one bounds check and no byte comparison (a binary search cost ~10% of a hunt).
    fn child(&self, key: &str) -> Option<&Node> {
        let &(start, end) = self.by_len.get(key.len())?;
        let key = key.as_bytes();
        let h = head(key);
        let mid = head(key.get(8..).unwrap_or(&[]));
        let tail = key.get(16..).unwrap_or(&[]);
        let heads = self.heads.get(start..end)?;
        let mids = self.mids.get(start..end)?;
        self.children
            .get(start..end)?
            .iter()
            .zip(heads.iter().zip(mids))
            // Keys of one length with equal (zero-padded) words are equal up to 16 bytes long.
            .find(|((k, _), (kh, km))| {
                **kh == h
                    && **km == mid
                    && (tail.is_empty() || k.as_bytes().get(16..).unwrap_or(&[]) == tail)
            })
            .map(|((_, n), _)| n)
    }

    /// Whether `raw` (the JSON text of this node's value) may hold one of its children: an
    /// object (or an array of them) whose text names a child's key verbatim, or holds an
    /// escape (a key may be spelled with escapes, which the parse decodes). Exact: an
    /// unescaped key equal to a child's appears in the text in quotes. Most captured
    /// `requestParameters` hold none of the keys rules read, and skip the second parse.
    fn may_hold(&self, raw: &str) -> bool {
        if self.children.is_empty() || !matches!(raw.as_bytes().first(), Some(b'{') | Some(b'[')) {
            return false;
        }
        if memchr::memchr(b'\\', raw.as_bytes()).is_some() {
            return true;
        }
        let quoted = self.quoted.get_or_init(|| {
            // A failure to build (never for a few short keys) leaves `None`: always descend.
            aho_corasick::AhoCorasick::new(self.children.iter().map(|(k, _)| format!("\"{k}\"")))
                .ok()
        });
        match quoted {
            Some(ac) => ac.is_match(raw),
            None => true,
        }
    }

    /// Rebuilds `heads` and `by_len` after a child was added, and forgets `quoted`.
    fn range_by_len(&mut self) {
        self.quoted = std::sync::OnceLock::new();
        self.heads = self
            .children
            .iter()
            .map(|(k, _)| head(k.as_bytes()))
            .collect();
        self.mids = self
            .children
            .iter()
            .map(|(k, _)| head(k.as_bytes().get(8..).unwrap_or(&[])))
            .collect();
        let longest = self.children.last().map_or(0, |(k, _)| k.len());
        self.by_len = vec![(0, 0); longest + 1];
        for (i, (k, _)) in self.children.iter().enumerate() {
            let r = &mut self.by_len[k.len()];
            if r.0 == r.1 {
                *r = (i, i + 1);
            } else {
                r.1 = i + 1;
            }
        }
    }
}

fn by_len(a: &str, b: &str) -> std::cmp::Ordering {
    a.len().cmp(&b.len()).then_with(|| a.cmp(b))
}

impl FieldSet {
    /// The id of `path` (dot-separated), registering it on first use.
    pub fn intern(&mut self, path: &str) -> FieldId {
        if let Some(&id) = self.by_path.get(path) {
            return id;
        }
        let id = self.paths.len();
        self.paths.push(path.to_string());
        self.by_path.insert(path.to_string(), id);
        let mut node = &mut self.root;
        for part in path.split('.') {
            let pos = match node.children.binary_search_by(|(k, _)| by_len(k, part)) {
                Ok(p) => p,
                Err(p) => {
                    node.children.insert(p, (part.to_string(), Node::default()));
                    node.range_by_len();
                    p
                }
            };
            node = &mut node.children[pos].1;
        }
        node.id = Some(id);
        id
    }

    pub fn len(&self) -> usize {
        self.paths.len()
    }

    pub fn is_empty(&self) -> bool {
        self.paths.is_empty()
    }

    pub fn path(&self, id: FieldId) -> &str {
        self.paths.get(id).map(String::as_str).unwrap_or("")
    }

    /// Fresh, empty values for one record.
    pub fn empty(&self) -> Fields<'static> {
        vec![FieldVal::Missing; self.len()]
    }

    /// Extracts the value of top-level `key` (the map's next value) into `out`, as the record
    /// seed would; lets a caller that is walking an object itself decide per key.
    pub fn next_value_into<'de, A: MapAccess<'de>>(
        &self,
        key: &str,
        map: &mut A,
        out: &mut Fields<'de>,
    ) -> Result<(), A::Error> {
        match self.root.child(key) {
            Some(child) => map.next_value_seed(NodeSeed { node: child, out }),
            None => map.next_value::<IgnoredAny>().map(|_| ()),
        }
    }

    /// A seed that extracts this set's fields from one JSON value (which must be an object).
    pub fn seed(&self) -> RecordSeed<'_> {
        RecordSeed { set: self }
    }
}

/// The place of one path in a [`FieldSet`]: for a caller that holds the value at that path
/// apart from any record (a table's column) and fills the fields at and below it.
#[derive(Debug, Clone, Copy)]
pub struct Place<'s> {
    node: &'s Node,
}

impl FieldSet {
    /// Where `path` (dot-separated) stands, when some field is at or below it.
    pub fn place(&self, path: &str) -> Option<Place<'_>> {
        let mut node = &self.root;
        for part in path.split('.') {
            node = node.child(part)?;
        }
        Some(Place { node })
    }
}

impl<'s> Place<'s> {
    /// The field at this path itself, when one is referenced.
    pub fn id(&self) -> Option<FieldId> {
        self.node.id
    }

    /// Whether fields below this path are referenced.
    pub fn descends(&self) -> bool {
        !self.node.children.is_empty()
    }

    /// Every field at and below this path.
    pub fn ids(&self) -> Vec<FieldId> {
        fn walk(n: &Node, out: &mut Vec<FieldId>) {
            out.extend(n.id);
            for (_, c) in &n.children {
                walk(c, out);
            }
        }
        let mut out = Vec::new();
        walk(self.node, &mut out);
        out
    }

    /// Fills the fields at and below this path from `json`, the text of the value at this
    /// path, exactly as they are filled when that value is read inside a record. `Err` when
    /// `json` is not one JSON value (some fields may then be set: the caller resets them).
    pub fn fill<'de>(&self, json: &'de str, out: &mut Fields<'de>) -> serde_json::Result<()> {
        let mut de = serde_json::Deserializer::from_str(json);
        NodeSeed {
            node: self.node,
            out,
        }
        .deserialize(&mut de)?;
        de.end()
    }
}

/// What extracting one value gave: the fields, or why the value is not a record.
pub enum Extracted<'a> {
    Record(Fields<'a>),
    NotAnObject(&'static str),
}

/// Deserializes one record (an object) into its referenced fields.
pub struct RecordSeed<'s> {
    set: &'s FieldSet,
}

impl<'de> DeserializeSeed<'de> for RecordSeed<'_> {
    type Value = Extracted<'de>;

    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        let mut out = vec![FieldVal::Missing; self.set.len()];
        let shape = d.deserialize_any(NodeVisitor {
            node: &self.set.root,
            out: &mut out,
        })?;
        Ok(match shape {
            Shape::Object => Extracted::Record(out),
            Shape::Other(kind) => Extracted::NotAnObject(kind),
        })
    }
}

enum Shape {
    Object,
    Other(&'static str),
}

struct NodeSeed<'n, 'o, 'de> {
    node: &'n Node,
    out: &'o mut Fields<'de>,
}

impl<'de> DeserializeSeed<'de> for NodeSeed<'_, '_, 'de> {
    type Value = ();
    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        if let Some(id) = self.node.id {
            // Captured whole (and possibly descended into as well).
            let raw: &'de RawValue = de::Deserialize::deserialize(d)?;
            let val = classify_raw(raw.get());
            if !self.node.may_hold(raw.get()) {
                set(self.out, id, val);
            } else {
                set(self.out, id, val);
                let mut inner = serde_json::Deserializer::from_str(raw.get());
                // The raw text came from a parser that accepted it; a second parse cannot fail
                // in a way that matters to the caller, so a failure just leaves children unset.
                let _ = de::Deserializer::deserialize_any(
                    &mut inner,
                    NodeVisitor {
                        node: self.node,
                        out: self.out,
                    },
                );
            }
            Ok(())
        } else {
            d.deserialize_any(NodeVisitor {
                node: self.node,
                out: self.out,
            })
            .map(|_| ())
        }
    }
}

/// Sets field `id` unless the record already has it: whether it did.
fn set<'de>(out: &mut Fields<'de>, id: FieldId, val: FieldVal<'de>) -> bool {
    // Inside arrays the first element that has the field wins.
    if let Some(slot) = out.get_mut(id)
        && matches!(slot, FieldVal::Missing)
    {
        *slot = val;
        return true;
    }
    false
}

/// A raw JSON value turned into a [`FieldVal`], borrowing when the string has no escapes.
fn classify_raw(raw: &str) -> FieldVal<'_> {
    match raw.as_bytes().first() {
        Some(b'"') => {
            let inner = raw.get(1..raw.len().saturating_sub(1)).unwrap_or("");
            if !inner.contains('\\') {
                FieldVal::Text(Cow::Borrowed(inner))
            } else {
                match serde_json::from_str::<String>(raw) {
                    Ok(s) => FieldVal::Text(Cow::Owned(s)),
                    Err(_) => FieldVal::Raw(raw),
                }
            }
        }
        Some(b'n') => FieldVal::Null,
        Some(b'{') | Some(b'[') => FieldVal::Raw(raw),
        Some(_) => FieldVal::Text(Cow::Borrowed(raw)),
        None => FieldVal::Missing,
    }
}

struct NodeVisitor<'n, 'o, 'de> {
    node: &'n Node,
    out: &'o mut Fields<'de>,
}

impl<'de> Visitor<'de> for NodeVisitor<'_, '_, 'de> {
    type Value = Shape;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Shape, A::Error> {
        while let Some(key) = map.next_key::<Key<'de>>()? {
            match self.node.child(&key.0) {
                Some(child) => map.next_value_seed(NodeSeed {
                    node: child,
                    out: self.out,
                })?,
                None => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        Ok(Shape::Object)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Shape, A::Error> {
        // Sigma: a path through an array matches when any element does.
        while seq
            .next_element_seed(NodeSeed {
                node: self.node,
                out: self.out,
            })?
            .is_some()
        {}
        Ok(Shape::Other("an array"))
    }

    fn visit_str<E>(self, _: &str) -> Result<Shape, E> {
        Ok(Shape::Other("a string"))
    }
    fn visit_bool<E>(self, _: bool) -> Result<Shape, E> {
        Ok(Shape::Other("a boolean"))
    }
    fn visit_i64<E>(self, _: i64) -> Result<Shape, E> {
        Ok(Shape::Other("a number"))
    }
    fn visit_u64<E>(self, _: u64) -> Result<Shape, E> {
        Ok(Shape::Other("a number"))
    }
    fn visit_f64<E>(self, _: f64) -> Result<Shape, E> {
        Ok(Shape::Other("a number"))
    }
    fn visit_unit<E>(self) -> Result<Shape, E> {
        Ok(Shape::Other("null"))
    }
}

/// A map key, borrowed when it has no escapes.
pub struct Key<'de>(pub Cow<'de, str>);

impl<'de> de::Deserialize<'de> for Key<'de> {
    fn deserialize<D: de::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Key<'de>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a key")
            }
            fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Key<'de>, E> {
                Ok(Key(Cow::Borrowed(v)))
            }
            fn visit_str<E>(self, v: &str) -> Result<Key<'de>, E> {
                Ok(Key(Cow::Owned(v.to_string())))
            }
        }
        d.deserialize_str(V)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The overlapping loads give the zero-padded word, for every length and every byte.
    #[test]
    fn head_is_the_first_eight_bytes_zero_padded() {
        for len in 0..=12 {
            for fill in [0x00u8, 0x01, 0x7f, 0x80, 0xff] {
                let key: Vec<u8> = (0..len)
                    .map(|i| fill ^ (i as u8).wrapping_mul(37))
                    .collect();
                let mut padded = [0u8; 8];
                let n = len.min(8);
                padded[..n].copy_from_slice(&key[..n]);
                assert_eq!(head(&key), u64::from_le_bytes(padded), "{key:?}");
            }
        }
    }

    #[test]
    fn extracts_only_referenced_paths() {
        let mut set = FieldSet::default();
        let name = set.intern("eventName");
        let key = set.intern("userIdentity.accessKeyId");
        let req = set.intern("requestParameters");
        let user = set.intern("requestParameters.userName");
        let num = set.intern("n");
        let text = r#"{"eventName":"ListUsers","n":3,"userIdentity":{"type":"IAMUser","accessKeyId":"AKIA\u0041"},"requestParameters":{"userName":"bob"},"x":[1,2]}"#;
        let mut de = serde_json::Deserializer::from_str(text);
        let Extracted::Record(f) = set.seed().deserialize(&mut de).unwrap() else {
            panic!("object")
        };
        assert_eq!(f[name].as_str(), Some("ListUsers"));
        assert_eq!(f[key].as_str(), Some("AKIAA"));
        assert_eq!(f[req].as_str(), Some(r#"{"userName":"bob"}"#));
        assert_eq!(f[user].as_str(), Some("bob"));
        assert_eq!(f[num].as_str(), Some("3"));
    }

    /// A value captured whole is descended into only when its text may hold a child: the
    /// skip must never lose a child, however the key is spelled or nested.
    #[test]
    fn captured_values_still_give_their_children() {
        let mut set = FieldSet::default();
        let req = set.intern("requestParameters");
        let user = set.intern("requestParameters.userName");
        let deep = set.intern("requestParameters.policy.arn");
        fn get<'t>(set: &FieldSet, text: &'t str) -> Fields<'t> {
            let mut de = serde_json::Deserializer::from_str(text);
            match set.seed().deserialize(&mut de).unwrap() {
                Extracted::Record(f) => f,
                Extracted::NotAnObject(k) => panic!("{k}"),
            }
        }
        for (text, want_user, want_arn) in [
            (r#"{"requestParameters":{"bucketName":"b"}}"#, None, None),
            (
                r#"{"requestParameters":{"userName":"bob"}}"#,
                Some("bob"),
                None,
            ),
            // Spelled with escapes: the text does not hold `"userName"`, the key is it.
            (
                r#"{"requestParameters":{"userName":"eve"}}"#,
                Some("eve"),
                None,
            ),
            (
                r#"{"requestParameters":[{"x":1},{"userName":"ann"}]}"#,
                Some("ann"),
                None,
            ),
            (
                r#"{"requestParameters":{"policy":{"arn":"a:b"}}}"#,
                None,
                Some("a:b"),
            ),
            (r#"{"requestParameters":"userName"}"#, None, None),
        ] {
            let f = get(&set, text);
            assert!(f[req].is_present(), "{text}");
            assert_eq!(f[user].as_str(), want_user, "{text}");
            assert_eq!(f[deep].as_str(), want_arn, "{text}");
        }
    }
}
