//! The fast path of field extraction: a strict JSON scanner over a whole document's text that
//! hands each record's [`Fields`] to a callback, in one pass, without serde's visitors.
//!
//! Why: through serde a record cost a visitor call per value, a `RawValue` capture and then a
//! substring search (and sometimes a second parse) of every value that is both captured whole
//! and descended into (`requestParameters`); parsing was a third of a hunt.
//!
//! Contract: [`scan_doc`] accepts only what `serde_json` accepts, and gives the same fields
//! for every record it hands over. Anything else — malformed JSON, a non-object element, a
//! lone surrogate in a key, a number out of range where serde would parse it, nesting deeper
//! than [`MAX_DEPTH`], LookupEvents' `Events` — stops it with [`Bail`]: the caller then reads
//! the document again through serde, skipping the records already handed over, so errors and
//! their locations stay serde's. Strings are checked as serde checks them (control
//! characters, escapes, four hex digits after `\u`); the text is a `&str`, so UTF-8 already.

use super::{FieldId, FieldSet, FieldVal, Fields, Node, classify_raw, set};
use std::borrow::Cow;

/// The scan stopped: the caller falls back to serde.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Bail;

type Scan<T> = Result<T, Bail>;

/// Nesting the scanner follows (serde's limit is 128): deeper, it bails.
pub const MAX_DEPTH: u32 = 64;

/// Reads `text` — one record, a wrapper object whose `wrappers` key holds an array of
/// records, or an array of records — calling `record` with each record's fields in order and
/// where the record ends in `text`.
pub fn scan_doc<'t>(
    text: &'t str,
    set: &FieldSet,
    wrappers: &[&str],
    record: &mut dyn FnMut(&Fields<'t>, usize),
) -> Scan<()> {
    let mut s = Scanner {
        s: text,
        b: text.as_bytes(),
        i: 0,
        set_ids: Vec::new(),
    };
    s.ws();
    match s.peek() {
        Some(b'{') => {
            s.i += 1;
            let mut fields = set.empty();
            let mut wrapped = false;
            s.ws();
            if s.peek() == Some(b'}') {
                s.i += 1;
            } else {
                loop {
                    s.ws();
                    let key = s.key()?;
                    s.colon()?;
                    if wrappers.contains(&key.as_ref()) {
                        // LookupEvents' records are JSON text inside each event: serde's path.
                        if key == "Events" {
                            return Err(Bail);
                        }
                        wrapped = true;
                        s.records(set, 2, record)?;
                    } else {
                        s.member(&set.root, &key, &mut fields, 1)?;
                    }
                    if s.next_member(b'}')? {
                        break;
                    }
                }
            }
            if !wrapped {
                record(&fields, s.i);
            }
        }
        Some(b'[') => s.records(set, 1, record)?,
        _ => return Err(Bail),
    }
    s.ws();
    if s.i == s.b.len() { Ok(()) } else { Err(Bail) }
}

/// Where a wrapper document read in parts (see [`scan_part`]) stands between two parts: at a
/// boundary between its tokens, before what the name says.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Part {
    /// Before the document: `{`, the wrapper's key, `:`, `[`.
    #[default]
    Start,
    /// Before an element of the records' array (or, for the first, its closing `]`).
    Element { first: bool },
    /// After an element: `,` or `]`.
    AfterElement,
    /// After the array: the document's `}`.
    AfterArray,
    /// After the document: whitespace only.
    Done,
}

/// A wrapper prefix (`{"Records":[`) longer than this is not waited for: the document is read
/// whole instead.
const PART_START_MAX: usize = 64 << 10;

/// Reads the next part of a document whose first key is one of `wrappers` and holds an array of
/// records (a CloudTrail delivery), `text` starting where the last part's scan stopped, `at`
/// where that left the document; hands each whole record's fields to `record`. Returns how
/// much of `text` it read: up to the last boundary it reached, `at` updated to it.
///
/// `last`: nothing follows `text`. Before it, a fault may be the text's end cutting a value
/// short: the scan stops at the last boundary and the caller brings more text. At the last
/// part it is a [`Bail`], as is any document of another shape (its first key not a wrapper,
/// members after the array, anything after the document): the caller reads the whole text
/// through [`scan_doc`] and serde, skipping the records already handed over. The records and
/// fields handed over are [`scan_doc`]'s for the same text, whatever the parts.
pub fn scan_part<'t>(
    text: &'t str,
    last: bool,
    at: &mut Part,
    set: &FieldSet,
    wrappers: &[&str],
    record: &mut dyn FnMut(&Fields<'t>),
) -> Scan<usize> {
    let mut s = Scanner {
        s: text,
        b: text.as_bytes(),
        i: 0,
        set_ids: Vec::new(),
    };
    let mut fields = set.empty();
    loop {
        let boundary = s.i;
        let short = if last { Err(Bail) } else { Ok(boundary) };
        s.ws();
        let Some(c) = s.peek() else {
            // The end of the text at a boundary: the document goes on in the next part, or,
            // at the last, it is whole only when done.
            return if *at == Part::Done || !last {
                Ok(s.i)
            } else {
                Err(Bail)
            };
        };
        match *at {
            Part::Start => match s.part_start(wrappers) {
                Ok(true) => *at = Part::Element { first: true },
                Ok(false) => return Err(Bail),
                Err(Bail) if text.len() < PART_START_MAX => return short,
                Err(Bail) => return Err(Bail),
            },
            Part::Element { first } => {
                if first && c == b']' {
                    s.i += 1;
                    *at = Part::AfterArray;
                    continue;
                }
                if c != b'{' {
                    // Not a record: serde's path reports it.
                    return Err(Bail);
                }
                // Depth as in `scan_doc`: the wrapper object, its array, the record.
                let scanned = s.object(&set.root, &mut fields, 3);
                if scanned.is_ok() {
                    record(&fields);
                }
                s.empty_set_fields(&mut fields);
                if scanned.is_err() {
                    return short;
                }
                *at = Part::AfterElement;
            }
            Part::AfterElement => {
                s.i += 1;
                *at = match c {
                    b',' => Part::Element { first: false },
                    b']' => Part::AfterArray,
                    _ => return Err(Bail),
                };
            }
            Part::AfterArray => {
                // Members after the array (`,`) are read by the whole document's path.
                if c != b'}' {
                    return Err(Bail);
                }
                s.i += 1;
                *at = Part::Done;
            }
            // Anything after the document.
            Part::Done => return Err(Bail),
        }
    }
}

struct Scanner<'t> {
    s: &'t str,
    b: &'t [u8],
    i: usize,
    /// The fields the record being read has set so far: only those are emptied for the next
    /// record. Emptying every field of the set (dozens, most never present) after each record
    /// was a percent of a hunt.
    set_ids: Vec<FieldId>,
}

const ONES: u64 = u64::MAX / 255;
const HIGH: u64 = ONES * 0x80;

/// The position of the first byte at or after `i` that ends a run of plain string bytes: `"`,
/// `\` or a control character (< 0x20); `b.len()` if none. Sixteen bytes at a time with SSE2
/// (part of every x86-64): string scanning was the largest part of parsing a record, and the
/// eight-byte words of [`plain_end_words`] took twice the steps on typical values (ARNs, user
/// agents, ids of 20 to 60 bytes).
#[cfg(target_arch = "x86_64")]
pub(crate) fn plain_end(b: &[u8], mut i: usize) -> usize {
    use std::arch::x86_64::{
        __m128i, _mm_cmpeq_epi8, _mm_loadu_si128, _mm_max_epu8, _mm_movemask_epi8, _mm_or_si128,
        _mm_set1_epi8,
    };
    while let Some(chunk) = b.get(i..i + 16) {
        // SAFETY: SSE2 is part of the x86-64 baseline, enabled for every build of this
        // target; `chunk` is 16 readable bytes, and the load has no alignment requirement.
        let m = unsafe {
            let v = _mm_loadu_si128(chunk.as_ptr().cast::<__m128i>());
            let quote = _mm_cmpeq_epi8(v, _mm_set1_epi8(b'"' as i8));
            let esc = _mm_cmpeq_epi8(v, _mm_set1_epi8(b'\\' as i8));
            // A control character: max(byte, 0x1f) is 0x1f (unsigned).
            let below = _mm_set1_epi8(0x1f);
            let ctrl = _mm_cmpeq_epi8(_mm_max_epu8(v, below), below);
            _mm_movemask_epi8(_mm_or_si128(_mm_or_si128(quote, esc), ctrl)) as u32
        };
        if m != 0 {
            return i + m.trailing_zeros() as usize;
        }
        i += 16;
    }
    plain_end_words(b, i)
}

#[cfg(not(target_arch = "x86_64"))]
pub(crate) fn plain_end(b: &[u8], i: usize) -> usize {
    plain_end_words(b, i)
}

/// [`plain_end`] eight bytes at a time: for each test the lowest flagged byte is exact
/// (borrows only run upward), so the lowest of the three is the first such byte.
fn plain_end_words(b: &[u8], mut i: usize) -> usize {
    while let Some(chunk) = b.get(i..i + 8) {
        let mut word = [0u8; 8];
        word.copy_from_slice(chunk);
        let w = u64::from_le_bytes(word);
        let ctrl = w.wrapping_sub(ONES * 0x20) & !w;
        let q = w ^ (ONES * u64::from(b'"'));
        let quote = q.wrapping_sub(ONES) & !q;
        let e = w ^ (ONES * u64::from(b'\\'));
        let esc = e.wrapping_sub(ONES) & !e;
        let m = (ctrl | quote | esc) & HIGH;
        if m != 0 {
            return i + (m.trailing_zeros() / 8) as usize;
        }
        i += 8;
    }
    while let Some(&c) = b.get(i) {
        if c == b'"' || c == b'\\' || c < 0x20 {
            return i;
        }
        i += 1;
    }
    b.len()
}

impl<'t> Scanner<'t> {
    /// A wrapper document's start, `{"Records":[`: `true` when read, `false` when the document
    /// is of another shape (its first key not one of `wrappers`, or LookupEvents' `Events`,
    /// whose records are text: serde's path), a [`Bail`] when the text ends or is malformed
    /// first.
    fn part_start(&mut self, wrappers: &[&str]) -> Scan<bool> {
        self.eat(b'{')?;
        self.ws();
        if self.peek() == Some(b'}') {
            return Ok(false);
        }
        let key = self.key()?;
        if key == "Events" || !wrappers.contains(&key.as_ref()) {
            return Ok(false);
        }
        self.colon()?;
        self.ws();
        self.eat(b'[')?;
        Ok(true)
    }

    /// Empties the fields the record just read set, for the next record in the same vector.
    fn empty_set_fields(&mut self, fields: &mut Fields<'t>) {
        for id in self.set_ids.drain(..) {
            if let Some(slot) = fields.get_mut(id) {
                *slot = FieldVal::Missing;
            }
        }
    }

    /// Sets field `id` unless the record already has it ([`set`]), noting it for
    /// [`Self::empty_set_fields`].
    fn set(&mut self, out: &mut Fields<'t>, id: FieldId, val: FieldVal<'t>) {
        if set(out, id, val) {
            self.set_ids.push(id);
        }
    }

    fn peek(&self) -> Option<u8> {
        self.b.get(self.i).copied()
    }

    fn ws(&mut self) {
        while let Some(b' ' | b'\n' | b'\t' | b'\r') = self.peek() {
            self.i += 1;
        }
    }

    fn eat(&mut self, c: u8) -> Scan<()> {
        if self.peek() == Some(c) {
            self.i += 1;
            Ok(())
        } else {
            Err(Bail)
        }
    }

    fn colon(&mut self) -> Scan<()> {
        self.ws();
        self.eat(b':')
    }

    /// After a member or element: `true` at the closing `close`, `false` after a comma.
    fn next_member(&mut self, close: u8) -> Scan<bool> {
        self.ws();
        match self.peek() {
            Some(b',') => {
                self.i += 1;
                Ok(false)
            }
            Some(c) if c == close => {
                self.i += 1;
                Ok(true)
            }
            _ => Err(Bail),
        }
    }

    /// Skips a string starting at its opening quote; whether it holds an escape.
    fn string(&mut self) -> Scan<bool> {
        self.eat(b'"')?;
        let mut escaped = false;
        loop {
            let j = plain_end(self.b, self.i);
            match self.b.get(j) {
                Some(b'"') => {
                    self.i = j + 1;
                    return Ok(escaped);
                }
                Some(b'\\') => {
                    escaped = true;
                    match self.b.get(j + 1) {
                        Some(b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't') => {
                            self.i = j + 2;
                        }
                        Some(b'u') => {
                            let hex = self.b.get(j + 2..j + 6).ok_or(Bail)?;
                            if !hex.iter().all(u8::is_ascii_hexdigit) {
                                return Err(Bail);
                            }
                            self.i = j + 6;
                        }
                        _ => return Err(Bail),
                    }
                }
                // A control character, or the end of the text.
                _ => return Err(Bail),
            }
        }
    }

    /// A key, borrowed when it has no escapes; decoded (and checked as serde checks a key,
    /// surrogates included) when it has.
    fn key(&mut self) -> Scan<Cow<'t, str>> {
        let start = self.i;
        let escaped = self.string()?;
        let raw = self.s.get(start..self.i).ok_or(Bail)?;
        if !escaped {
            return raw.get(1..raw.len() - 1).map(Cow::Borrowed).ok_or(Bail);
        }
        serde_json::from_str::<String>(raw)
            .map(Cow::Owned)
            .map_err(|_| Bail)
    }

    fn literal(&mut self, word: &[u8]) -> Scan<()> {
        if self.b.get(self.i..self.i + word.len()) == Some(word) {
            self.i += word.len();
            Ok(())
        } else {
            Err(Bail)
        }
    }

    fn digits(&mut self) -> usize {
        let start = self.i;
        while let Some(b'0'..=b'9') = self.peek() {
            self.i += 1;
        }
        self.i - start
    }

    /// A number, by JSON's grammar exactly as serde reads it.
    fn number(&mut self) -> Scan<()> {
        if self.peek() == Some(b'-') {
            self.i += 1;
        }
        match self.peek() {
            Some(b'0') => {
                self.i += 1;
                if let Some(b'0'..=b'9') = self.peek() {
                    return Err(Bail);
                }
            }
            Some(b'1'..=b'9') => {
                self.digits();
            }
            _ => return Err(Bail),
        }
        if self.peek() == Some(b'.') {
            self.i += 1;
            if self.digits() == 0 {
                return Err(Bail);
            }
        }
        if let Some(b'e' | b'E') = self.peek() {
            self.i += 1;
            if let Some(b'+' | b'-') = self.peek() {
                self.i += 1;
            }
            if self.digits() == 0 {
                return Err(Bail);
            }
        }
        Ok(())
    }

    /// One scalar (string, number, literal) at the cursor.
    fn scalar(&mut self) -> Scan<()> {
        match self.peek() {
            Some(b'"') => self.string().map(|_| ()),
            Some(b't') => self.literal(b"true"),
            Some(b'f') => self.literal(b"false"),
            Some(b'n') => self.literal(b"null"),
            Some(b'-' | b'0'..=b'9') => self.number(),
            _ => Err(Bail),
        }
    }

    /// Skips one value of any nesting up to [`MAX_DEPTH`] without recursion: `open` holds one
    /// bit per open container (1: object).
    fn skip(&mut self) -> Scan<()> {
        let mut open: u64 = 0;
        let mut depth = 0u32;
        loop {
            // A value is expected here.
            self.ws();
            match self.peek() {
                Some(c @ (b'{' | b'[')) => {
                    self.i += 1;
                    self.ws();
                    let close = if c == b'{' { b'}' } else { b']' };
                    if self.peek() == Some(close) {
                        self.i += 1;
                    } else {
                        if depth == MAX_DEPTH {
                            return Err(Bail);
                        }
                        open = (open << 1) | u64::from(c == b'{');
                        depth += 1;
                        if c == b'{' {
                            self.string()?;
                            self.colon()?;
                        }
                        continue;
                    }
                }
                _ => self.scalar()?,
            }
            // After a value: close containers until a comma asks for the next value.
            loop {
                if depth == 0 {
                    return Ok(());
                }
                let object = open & 1 == 1;
                if self.next_member(if object { b'}' } else { b']' })? {
                    open >>= 1;
                    depth -= 1;
                    continue;
                }
                if object {
                    self.ws();
                    self.string()?;
                    self.colon()?;
                }
                break;
            }
        }
    }

    /// The array of records at the cursor (after a wrapper key, or the whole document).
    fn records(
        &mut self,
        set: &FieldSet,
        depth: u32,
        record: &mut dyn FnMut(&Fields<'t>, usize),
    ) -> Scan<()> {
        self.ws();
        self.eat(b'[')?;
        self.ws();
        if self.peek() == Some(b']') {
            self.i += 1;
            return Ok(());
        }
        // One vector for every record, emptied after each: allocated and freed per record, it
        // was a hundredth of a hunt.
        let mut fields = set.empty();
        loop {
            self.ws();
            if self.peek() != Some(b'{') {
                // Not a record: serde's path reports it.
                return Err(Bail);
            }
            self.object(&set.root, &mut fields, depth + 1)?;
            record(&fields, self.i);
            self.empty_set_fields(&mut fields);
            if self.next_member(b']')? {
                return Ok(());
            }
        }
    }

    /// An object's members, at the cursor on `{`, into `node`'s children.
    fn object(&mut self, node: &Node, out: &mut Fields<'t>, depth: u32) -> Scan<()> {
        if depth > MAX_DEPTH {
            return Err(Bail);
        }
        self.eat(b'{')?;
        self.ws();
        if self.peek() == Some(b'}') {
            self.i += 1;
            return Ok(());
        }
        loop {
            self.ws();
            let key = self.key()?;
            self.colon()?;
            self.member(node, &key, out, depth)?;
            if self.next_member(b'}')? {
                return Ok(());
            }
        }
    }

    /// The value of member `key` of an object read as `node`.
    fn member(&mut self, node: &Node, key: &str, out: &mut Fields<'t>, depth: u32) -> Scan<()> {
        match node.child(key) {
            Some(child) => self.value(child, out, depth),
            None => self.skip(),
        }
    }

    /// A value read as `node`: captured whole when the node is a field, and descended into
    /// when fields lie below it, in one pass.
    fn value(&mut self, node: &Node, out: &mut Fields<'t>, depth: u32) -> Scan<()> {
        self.ws();
        let start = self.i;
        let Some(id) = node.id else {
            return self.descend(node, out, depth, false);
        };
        if node.children.is_empty() {
            if self.peek() == Some(b'"') {
                // A string without escapes borrows its text as is: the scan has just seen
                // that it holds none (`classify_raw` would search it again).
                if !self.string()? {
                    let inner = self.s.get(start + 1..self.i - 1).ok_or(Bail)?;
                    self.set(out, id, FieldVal::Text(Cow::Borrowed(inner)));
                    return Ok(());
                }
            } else {
                self.skip()?;
            }
        } else {
            // serde's path sets the whole value first, so elements of an array never do.
            let unset = matches!(out.get(id), Some(FieldVal::Missing));
            self.descend(node, out, depth, true)?;
            if unset && let Some(slot) = out.get_mut(id) {
                *slot = FieldVal::Missing;
            }
        }
        let raw = self.s.get(start..self.i).ok_or(Bail)?;
        self.set(out, id, classify_raw(raw));
        Ok(())
    }

    /// Into an object's members or an array's elements (Sigma: any element may match).
    /// A scalar that is not `captured` is checked as serde's `deserialize_any` checks it: a
    /// string's escapes decoded, a number parsed.
    fn descend(
        &mut self,
        node: &Node,
        out: &mut Fields<'t>,
        depth: u32,
        captured: bool,
    ) -> Scan<()> {
        match self.peek() {
            Some(b'{') => self.object(node, out, depth + 1),
            Some(b'[') => {
                if depth + 1 > MAX_DEPTH {
                    return Err(Bail);
                }
                self.i += 1;
                self.ws();
                if self.peek() == Some(b']') {
                    self.i += 1;
                    return Ok(());
                }
                loop {
                    self.value(node, out, depth + 1)?;
                    if self.next_member(b']')? {
                        return Ok(());
                    }
                }
            }
            _ if captured => self.scalar(),
            Some(b'"') => {
                let start = self.i;
                if self.string()? {
                    let raw = self.s.get(start..self.i).ok_or(Bail)?;
                    serde_json::from_str::<String>(raw).map_err(|_| Bail)?;
                }
                Ok(())
            }
            Some(b'-' | b'0'..=b'9') => {
                let start = self.i;
                self.number()?;
                let raw = self.s.get(start..self.i).ok_or(Bail)?;
                serde_json::from_str::<serde_json::Value>(raw).map_err(|_| Bail)?;
                Ok(())
            }
            _ => self.scalar(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::Extracted;
    use super::*;
    use serde::de::DeserializeSeed;

    /// The first byte ending a plain run, as a byte-by-byte search finds it: from every start,
    /// with the stopping byte at every place of a 16- or 8-byte step and in the tail, among
    /// bytes on both sides of each test (0x1f and 0x20, 0x7f, high bytes, quote, backslash).
    #[test]
    fn plain_end_finds_the_first_stopping_byte() {
        let reference = |b: &[u8], i: usize| {
            (i..b.len())
                .find(|&j| b[j] == b'"' || b[j] == b'\\' || b[j] < 0x20)
                .unwrap_or(b.len())
        };
        let fill = [b'a', 0x20, 0x7f, 0x80, 0xff, b'!', b'#', b'[', b']'];
        for stop in [b'"', b'\\', 0x00, 0x1f, 0x0a] {
            for len in 0..48 {
                for at in 0..=len {
                    let mut b: Vec<u8> = (0..len).map(|k| fill[k % fill.len()]).collect();
                    if at < len {
                        b[at] = stop;
                    }
                    for i in 0..=len {
                        assert_eq!(plain_end(&b, i), reference(&b, i), "{b:?} from {i}");
                    }
                }
            }
        }
    }

    fn set() -> FieldSet {
        let mut set = FieldSet::default();
        for p in [
            "eventName",
            "n",
            "userIdentity.accessKeyId",
            "userIdentity.sessionContext.sessionIssuer.type",
            "requestParameters",
            "requestParameters.userName",
            "requestParameters.policy.arn",
            "resources.ARN",
            "flag",
        ] {
            set.intern(p);
        }
        set
    }

    /// serde's reading of one record, or `None` where serde refuses the text.
    fn by_serde<'t>(set: &FieldSet, text: &'t str) -> Option<Fields<'t>> {
        let mut de = serde_json::Deserializer::from_str(text);
        match set.seed().deserialize(&mut de) {
            Ok(Extracted::Record(f)) => de.end().ok().map(|()| f),
            _ => None,
        }
    }

    fn by_scan<'t>(set: &FieldSet, text: &'t str) -> Scan<Vec<Fields<'t>>> {
        let mut out = Vec::new();
        scan_doc(text, set, &[], &mut |f, _| out.push(f.clone()))?;
        Ok(out)
    }

    /// The contract: where the scan hands a record over, serde reads the same fields; where
    /// serde refuses the text, the scan bails.
    fn check(set: &FieldSet, text: &str) -> bool {
        let serde = by_serde(set, text);
        match by_scan(set, text) {
            Ok(records) => {
                assert_eq!(records.len(), 1, "{text}");
                assert_eq!(Some(&records[0]), serde.as_ref(), "{text}");
                true
            }
            Err(Bail) => false,
        }
    }

    const GOOD: &[&str] = &[
        r#"{"eventName":"ListUsers","n":-12.5e+3,"flag":true,"userIdentity":{"type":"IAMUser","accessKeyId":"AKIA\u0041","sessionContext":{"sessionIssuer":{"type":"Role"}}},"requestParameters":{"userName":"bob","x":[1,{"y":null}]},"resources":[{"ARN":"a1"},{"ARN":"a2"}],"tlsDetails":{"a":[[],{}]}}"#,
        r#" { "eventName" : "A\"b\\c\/d\b\f\n\r\t" , "requestParameters" : [ {"z":0} , {"userName":"ann","policy":{"arn":"p"}} ] } "#,
        r#"{"requestParameters":"userName","n":0,"eventName":null}"#,
        r#"{"requestParameters":{"userName":"eve"},"eventName":"x","eventName":"second"}"#,
        r#"{"userIdentity":[[{"accessKeyId":"deep"}]],"requestParameters":{"policy":[{"arn":"x"},{"arn":"y"}]}}"#,
        r#"{"userIdentity":"plain","resources":5,"requestParameters":12}"#,
        r#"{}"#,
        r#"{"a":{},"b":[],"c":"é ☃ 𝄞","d":1E5,"e":-0,"f":0.0}"#,
    ];

    #[test]
    fn good_records_read_as_serde_reads_them() {
        let set = set();
        for text in GOOD {
            assert!(check(&set, text), "the scan bailed on {text}");
        }
    }

    #[test]
    fn what_serde_refuses_the_scan_bails_on() {
        let set = set();
        let deep = format!("{{\"x\":{}1{}}}", "[".repeat(200), "]".repeat(200));
        let deep_read = format!(
            "{{\"userIdentity\":{}{{}}{}}}",
            "[".repeat(150),
            "]".repeat(150)
        );
        for text in [
            r#"{"a":1,}"#,
            r#"{"a":[1,]}"#,
            r#"{"a":01}"#,
            r#"{"a":1.}"#,
            r#"{"a":1e}"#,
            r#"{"a":-}"#,
            r#"{"a":tru}"#,
            "{\"a\":\"tab\there\"}",
            r#"{"a":"\x"}"#,
            r#"{"a":"\u12G4"}"#,
            r#"{"\ud800":1}"#,
            r#"{"userIdentity":"\ud800"}"#,
            r#"{"userIdentity":1e999}"#,
            r#"{"a":1} x"#,
            r#"{"a" 1}"#,
            r#"{"a":1"#,
            r#"{"a":"open"#,
            r#"{"eventName":"x"}}"#,
            deep.as_str(),
            deep_read.as_str(),
        ] {
            if by_serde(&set, text).is_none() {
                assert_eq!(by_scan(&set, text).err(), Some(Bail), "{text}");
            } else {
                check(&set, text);
            }
        }
    }

    /// Records in one array read each as serde reads it alone: nothing a record set is left
    /// for the next (the scan empties only the fields each record set), in any order.
    #[test]
    fn records_of_an_array_read_each_as_alone() {
        let set = set();
        let alone: Vec<Fields<'_>> = GOOD.iter().map(|t| by_serde(&set, t).unwrap()).collect();
        for shift in 0..GOOD.len() {
            let order: Vec<usize> = (0..GOOD.len() * 2)
                .map(|k| (k * (shift + 1) + shift) % GOOD.len())
                .collect();
            let texts: Vec<&str> = order.iter().map(|&k| GOOD[k]).collect();
            let doc = format!("[{}]", texts.join(","));
            let records = by_scan(&set, &doc).unwrap();
            let expected: Vec<&Fields<'_>> = order.iter().map(|&k| &alone[k]).collect();
            assert_eq!(records.iter().collect::<Vec<_>>(), expected, "{doc}");
        }
    }

    /// Every text made by corrupting good records a byte at a time: the scan either bails or
    /// reads exactly what serde reads, and never accepts what serde refuses.
    #[test]
    fn corrupted_records_never_read_differently() {
        let set = set();
        let alphabet = b"{}[]\",:\\ 0123456789.eE+-tfnulr\tx\x01a";
        let mut seed = 0x2545_f491_4f6c_dd1du64;
        let mut next = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        let mut read = 0;
        for round in 0..20_000 {
            let base = GOOD[round % GOOD.len()].as_bytes();
            let mut bytes = base.to_vec();
            for _ in 0..1 + next() % 3 {
                let at = (next() as usize) % bytes.len();
                let c = alphabet[(next() as usize) % alphabet.len()];
                match next() % 3 {
                    0 => bytes[at] = c,
                    1 => bytes.insert(at, c),
                    _ => {
                        bytes.remove(at);
                    }
                }
                if bytes.is_empty() {
                    bytes.push(b'{');
                }
            }
            let Ok(text) = std::str::from_utf8(&bytes) else {
                continue;
            };
            match (by_serde(&set, text), by_scan(&set, text)) {
                (None, Ok(_)) => panic!("the scan accepted what serde refuses: {text}"),
                (Some(f), Ok(records)) => {
                    assert_eq!(records, vec![f], "{text}");
                    read += 1;
                }
                (_, Err(Bail)) => {}
            }
        }
        assert!(read > 1000, "{read}");
    }
}
