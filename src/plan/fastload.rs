//! A fast reader for the YAML subset that plans are written in, used before serde-saphyr.
//!
//! serde-saphyr reads about 15 MB/s; a 190,000-target plan is 125 MB. This reader is a serde
//! `Deserializer` straight over the text for the shapes the planner writes and reviewers keep:
//! block mappings and sequences, one-line flow mappings and sequences, and one-line plain,
//! single- and double-quoted scalars, with comments and blank lines anywhere.
//!
//! It never decides anything on its own: the same `Deserialize` impls (defaults, unknown fields,
//! durations, timestamps) run as with serde-saphyr. Whatever it is not sure of — anchors, tags,
//! block scalars, multi-line scalars, documents, null-like or untyped plain scalars, duplicate
//! keys, tabs, control characters, and every error — makes it decline, and [`super::load`]
//! parses the whole text again with serde-saphyr, whose answer (value or located error) is the
//! one that counts. So the fast path can only ever return what serde-saphyr would.

use serde::de::{self, DeserializeSeed, IntoDeserializer, Visitor};
use std::borrow::Cow;

/// The newtype name [`super::Located`] deserializes through: this reader answers it with the
/// node's position followed by the value; any other deserializer sees a plain newtype.
pub const LOCATED: &str = "__rekey_located";

/// Why the fast path gave up: nothing more, since serde-saphyr then reads the text again.
#[derive(Debug)]
pub struct Decline;

impl std::fmt::Display for Decline {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("outside the fast reader's subset")
    }
}
impl std::error::Error for Decline {}
impl de::Error for Decline {
    fn custom<T: std::fmt::Display>(_: T) -> Self {
        Decline
    }
}

type Res<T> = Result<T, Decline>;

/// Deepest nesting read (a plan needs about eight levels); deeper declines, bounding the stack.
const MAX_DEPTH: u32 = 48;
/// Most keys in one mapping (plans have a dozen): duplicate detection stays a short scan.
const MAX_KEYS: usize = 64;

/// Parses `text` as a `T`, or declines.
pub fn from_str<T: de::DeserializeOwned>(text: &str) -> Res<T> {
    from_str_releasing(text, &mut |_| {})
}

/// Bytes read between two calls of a [`from_str_releasing`] callback.
const RELEASE_EVERY: usize = 8 << 20;

/// As [`from_str`], calling `release(offset)` every few megabytes with an offset before which
/// the reader needs no more text, so a mapped text's pages can go back to the page cache
/// (see [`super::text::PlanText`]). The reader may still look back (a mapping's earlier keys,
/// to refuse duplicates): what it reads after a release is the same text, faulted in again.
pub fn from_str_releasing<T: de::DeserializeOwned>(
    text: &str,
    release: &mut dyn FnMut(usize),
) -> Res<T> {
    if text.starts_with('\u{feff}') || text.len() > u32::MAX as usize {
        return Err(Decline);
    }
    let mut r = Reader {
        s: text,
        b: text.as_bytes(),
        i: 0,
        line: 1,
        line_start: 0,
        mid: false,
        depth: 0,
        released: 0,
        release,
    };
    let value = T::deserialize(Val {
        r: &mut r,
        ctx: Ctx::Top,
        kind: None,
    })?;
    // Only comments and blank lines may follow the document.
    r.end_value()?;
    match r.skip_blank()? {
        None => Ok(value),
        Some(_) => Err(Decline),
    }
}

struct Reader<'a> {
    s: &'a str,
    b: &'a [u8],
    i: usize,
    /// 1-based line of `i`, and the byte offset where that line starts.
    line: u32,
    line_start: usize,
    /// True after an inline value: the rest of its line is still to be checked.
    mid: bool,
    /// Offset last handed to `release`.
    released: usize,
    release: &'a mut dyn FnMut(usize),
    depth: u32,
}

impl<'a> Reader<'a> {
    fn peek(&self) -> Option<u8> {
        self.b.get(self.i).copied()
    }

    fn peek_at(&self, k: usize) -> Option<u8> {
        self.b.get(self.i + k).copied()
    }

    fn skip_spaces(&mut self) {
        while self.peek() == Some(b' ') {
            self.i += 1;
        }
    }

    /// At the end of a line's content: end of input or a newline.
    fn at_eol(&self) -> bool {
        matches!(self.peek(), None | Some(b'\n'))
    }

    /// The position of `i` as serde-saphyr counts it: 1-based line and character column.
    fn pos(&self) -> u64 {
        let before = &self.s[self.line_start..self.i];
        let column = if before.is_ascii() {
            before.len()
        } else {
            before.chars().count()
        };
        ((self.line as u64) << 32) | (column as u64 + 1)
    }

    /// After an inline value: only spaces and a comment may end its line.
    fn finish_line(&mut self) -> Res<()> {
        let start = self.i;
        self.skip_spaces();
        if self.peek() == Some(b'#') {
            if self.i == start && self.i > self.line_start {
                return Err(Decline);
            }
            self.skip_comment()?;
        }
        match self.peek() {
            None => {}
            Some(b'\n') => self.newline(),
            Some(_) => return Err(Decline),
        }
        self.mid = false;
        Ok(())
    }

    fn skip_comment(&mut self) -> Res<()> {
        let rest = &self.b[self.i..];
        let end = memchr_newline(rest);
        check_printable(&self.s[self.i..self.i + end])?;
        self.i += end;
        Ok(())
    }

    fn newline(&mut self) {
        self.i += 1;
        self.line += 1;
        self.line_start = self.i;
        if self.line_start - self.released >= RELEASE_EVERY {
            self.released = self.line_start;
            (self.release)(self.line_start);
        }
    }

    /// Ends the value just read: the rest of its line when it was inline.
    fn end_value(&mut self) -> Res<()> {
        if self.mid {
            self.finish_line()?;
        }
        Ok(())
    }

    /// From a line start, skips blank and comment lines; the indentation of the next content
    /// line (its start stays unconsumed), or `None` at the end of input.
    fn skip_blank(&mut self) -> Res<Option<usize>> {
        debug_assert!(!self.mid);
        loop {
            let mut n = 0;
            while self.b.get(self.i + n) == Some(&b' ') {
                n += 1;
            }
            match self.b.get(self.i + n) {
                None => {
                    self.i += n;
                    return Ok(None);
                }
                Some(b'\n') => {
                    self.i += n;
                    self.newline();
                }
                Some(b'#') => {
                    self.i += n;
                    self.skip_comment()?;
                    if self.peek() == Some(b'\n') {
                        self.newline();
                    }
                }
                Some(b'\t' | b'\r') => return Err(Decline),
                Some(c) => {
                    if n == 0 {
                        let rest = &self.b[self.i..];
                        if *c == b'%' || rest.starts_with(b"---") || rest.starts_with(b"...") {
                            return Err(Decline);
                        }
                    }
                    return Ok(Some(n));
                }
            }
        }
    }

    /// `-` followed by a space or the end of the line: a block sequence entry.
    fn at_dash(&self) -> bool {
        self.peek() == Some(b'-') && matches!(self.peek_at(1), None | Some(b' ' | b'\n'))
    }

    /// Scans the scalar at `i` (not consuming it): its text and where it ends.
    fn scan_scalar(&self, flow: bool) -> Res<Scalar<'a>> {
        let start = self.i;
        let pos = self.pos();
        match self.peek() {
            Some(b'"') => {
                let mut j = start + 1;
                let mut escaped = false;
                loop {
                    match self.b.get(j) {
                        None | Some(b'\n' | b'\r') => return Err(Decline),
                        Some(b'"') => break,
                        Some(b'\\') => {
                            if matches!(self.b.get(j + 1), None | Some(b'\n' | b'\r')) {
                                return Err(Decline);
                            }
                            escaped = true;
                            j += 2;
                        }
                        Some(_) => j += 1,
                    }
                }
                let raw = &self.s[start + 1..j];
                check_printable(raw)?;
                let text = if escaped {
                    Cow::Owned(unescape_double(raw)?)
                } else {
                    Cow::Borrowed(raw)
                };
                Ok(Scalar {
                    text,
                    plain: false,
                    end: j + 1,
                    pos,
                })
            }
            Some(b'\'') => {
                let mut j = start + 1;
                let mut quotes = false;
                loop {
                    match self.b.get(j) {
                        None | Some(b'\n' | b'\r') => return Err(Decline),
                        Some(b'\'') if self.b.get(j + 1) == Some(&b'\'') => {
                            quotes = true;
                            j += 2;
                        }
                        Some(b'\'') => break,
                        Some(_) => j += 1,
                    }
                }
                let raw = &self.s[start + 1..j];
                check_printable(raw)?;
                let text = if quotes {
                    Cow::Owned(raw.replace("''", "'"))
                } else {
                    Cow::Borrowed(raw)
                };
                Ok(Scalar {
                    text,
                    plain: false,
                    end: j + 1,
                    pos,
                })
            }
            Some(c) if !is_indicator(c) => {
                let mut j = start;
                let mut end = start;
                while let Some(&c) = self.b.get(j) {
                    match c {
                        b'\n' => break,
                        b'\r' | b'\t' => return Err(Decline),
                        b':' if matches!(self.b.get(j + 1), None | Some(b' ' | b'\n'))
                            || (flow
                                && matches!(
                                    self.b.get(j + 1),
                                    Some(b',' | b'[' | b']' | b'{' | b'}')
                                )) =>
                        {
                            break;
                        }
                        b'#' if self.b[j - 1] == b' ' => break,
                        b',' | b'[' | b']' | b'{' | b'}' if flow => break,
                        b' ' => j += 1,
                        _ => {
                            j += 1;
                            end = j;
                        }
                    }
                }
                let text = &self.s[start..end];
                check_printable(text)?;
                if text.contains("${") {
                    return Err(Decline);
                }
                Ok(Scalar {
                    text: Cow::Borrowed(text),
                    plain: true,
                    end,
                    pos,
                })
            }
            _ => Err(Decline),
        }
    }

    /// A scalar that a `:` (then a space or the line's end) follows: a mapping key. Consumes
    /// both; the cursor is then after the `:`.
    fn take_key(&mut self, flow: bool) -> Res<Scalar<'a>> {
        let key = self.scan_scalar(flow)?;
        // YAML bounds implicit keys; a longer one is serde-saphyr's to judge.
        if key.end - self.i > 1024 {
            return Err(Decline);
        }
        self.i = key.end;
        if self.peek() != Some(b':') {
            return Err(Decline);
        }
        self.i += 1;
        match self.peek() {
            None | Some(b'\n') if !flow => {}
            Some(b' ') => {}
            _ => return Err(Decline),
        }
        Ok(key)
    }
}

fn memchr_newline(b: &[u8]) -> usize {
    b.iter().position(|&c| c == b'\n').unwrap_or(b.len())
}

/// Characters that may not start a plain scalar (or that this reader leaves to serde-saphyr).
fn is_indicator(c: u8) -> bool {
    matches!(
        c,
        b'-' | b'?'
            | b':'
            | b','
            | b'['
            | b']'
            | b'{'
            | b'}'
            | b'#'
            | b'&'
            | b'*'
            | b'!'
            | b'|'
            | b'>'
            | b'\''
            | b'"'
            | b'%'
            | b'@'
            | b'`'
            | b' '
    )
}

/// Declines text holding anything YAML does not let stand unescaped (or may read as a break).
fn check_printable(text: &str) -> Res<()> {
    // Every scalar and comment of a plan passes here (10% of reading a 125 MB plan byte by
    // byte): eight bytes at a time first, for the common text of printable ASCII alone.
    let (words, tail) = text.as_bytes().as_chunks::<8>();
    if words
        .iter()
        .all(|w| printable_ascii_word(u64::from_le_bytes(*w)))
        && tail.iter().all(|&c| (0x20..0x7f).contains(&c))
    {
        return Ok(());
    }
    let ok = text.bytes().all(|c| c >= 0x20 && c != 0x7f || c == b'\t')
        && (text.is_ascii()
            || text.chars().all(|c| {
                !matches!(
                    c,
                    '\u{80}'
                        ..='\u{9f}'
                            | '\u{2028}'
                            | '\u{2029}'
                            | '\u{feff}'
                            | '\u{fffe}'
                            | '\u{ffff}'
                )
            }));
    if ok { Ok(()) } else { Err(Decline) }
}

/// Whether all eight bytes of `w` are printable ASCII (0x20 to 0x7e). Exact, not a filter:
/// `(x - 0x01..) & !x & 0x80..` is non-zero exactly when some byte of `x` is zero, and
/// likewise `(w - 0x20..) & !w & 0x80..` when some byte is below 0x20 (Bit Twiddling Hacks,
/// "haszero" and "hasless", n ≤ 128).
fn printable_ascii_word(w: u64) -> bool {
    const ONES: u64 = u64::from_le_bytes([0x01; 8]);
    const HIGH: u64 = u64::from_le_bytes([0x80; 8]);
    let below_space = w.wrapping_sub(ONES * 0x20) & !w & HIGH;
    let del = w ^ (ONES * 0x7f);
    let has_del = del.wrapping_sub(ONES) & !del & HIGH;
    (w & HIGH) | below_space | has_del == 0
}

/// The value of a one-line double-quoted scalar's body.
fn unescape_double(raw: &str) -> Res<String> {
    let mut out = String::with_capacity(raw.len());
    let mut chars = raw.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        let hex = |chars: &mut std::str::Chars, n: usize| -> Res<char> {
            let digits: String = chars.by_ref().take(n).collect();
            if digits.len() != n || !digits.bytes().all(|d| d.is_ascii_hexdigit()) {
                return Err(Decline);
            }
            u32::from_str_radix(&digits, 16)
                .ok()
                .and_then(char::from_u32)
                .ok_or(Decline)
        };
        let decoded = match chars.next().ok_or(Decline)? {
            '0' => '\0',
            'a' => '\u{7}',
            'b' => '\u{8}',
            't' | '\t' => '\t',
            'n' => '\n',
            'v' => '\u{b}',
            'f' => '\u{c}',
            'r' => '\r',
            'e' => '\u{1b}',
            ' ' => ' ',
            '"' => '"',
            '/' => '/',
            '\\' => '\\',
            'N' => '\u{85}',
            '_' => '\u{a0}',
            'L' => '\u{2028}',
            'P' => '\u{2029}',
            'x' => hex(&mut chars, 2)?,
            'u' => hex(&mut chars, 4)?,
            'U' => hex(&mut chars, 8)?,
            _ => return Err(Decline),
        };
        out.push(decoded);
    }
    Ok(out)
}

/// One scanned scalar.
struct Scalar<'a> {
    text: Cow<'a, str>,
    plain: bool,
    /// Byte offset just after it (after the closing quote).
    end: usize,
    pos: u64,
}

/// Where a value is read from, which decides the forms it may take.
#[derive(Clone, Copy)]
enum Ctx {
    /// The document itself.
    Top,
    /// After `key:` of a block mapping whose keys are at this indentation.
    MapValue(usize),
    /// After `-` of a block sequence at this indentation.
    SeqItem(usize),
    /// Inside a flow collection.
    Flow,
}

/// What the value is, found by [`Val::locate`].
enum Kind<'a> {
    BlockMap(usize),
    BlockSeq(usize),
    FlowMap,
    FlowSeq,
    Scalar(Scalar<'a>),
}

/// The deserializer of one value.
struct Val<'r, 'a> {
    r: &'r mut Reader<'a>,
    ctx: Ctx,
    /// Set once located, with the node's position.
    kind: Option<(Kind<'a>, u64)>,
}

impl<'r, 'a> Val<'r, 'a> {
    /// Moves to the start of the value and says what it is.
    fn locate(&mut self) -> Res<()> {
        if self.kind.is_some() {
            return Ok(());
        }
        let r = &mut *self.r;
        let (allow_map, allow_seq) = match self.ctx {
            Ctx::Top => {
                if r.skip_blank()? != Some(0) {
                    return Err(Decline);
                }
                (true, false)
            }
            Ctx::Flow => {
                r.skip_spaces();
                let kind = match r.peek() {
                    Some(b'[') => Kind::FlowSeq,
                    Some(b'{') => Kind::FlowMap,
                    _ => Kind::Scalar(r.scan_scalar(true)?),
                };
                let pos = r.pos();
                self.kind = Some((kind, pos));
                return Ok(());
            }
            Ctx::MapValue(parent) | Ctx::SeqItem(parent) => {
                let is_map_value = matches!(self.ctx, Ctx::MapValue(_));
                let before = r.i;
                r.skip_spaces();
                if r.at_eol() || (r.peek() == Some(b'#') && r.i > before) {
                    r.i = before;
                    r.mid = true;
                    r.finish_line()?;
                    let Some(n) = r.skip_blank()? else {
                        return Err(Decline);
                    };
                    r.i += n;
                    let seq_here = is_map_value && n == parent && r.at_dash();
                    if n <= parent && !seq_here {
                        r.i -= n;
                        return Err(Decline);
                    }
                    (true, true)
                } else if is_map_value {
                    (false, false)
                } else {
                    (true, false)
                }
            }
        };
        let column = r.i - r.line_start;
        let pos = r.pos();
        let kind = match r.peek() {
            Some(b'[') => Kind::FlowSeq,
            Some(b'{') => Kind::FlowMap,
            _ if r.at_dash() => {
                if !allow_seq {
                    return Err(Decline);
                }
                Kind::BlockSeq(column)
            }
            _ => {
                let scalar = r.scan_scalar(false)?;
                if r.b.get(scalar.end) == Some(&b':')
                    && matches!(r.b.get(scalar.end + 1), None | Some(b' ' | b'\n'))
                {
                    if !allow_map
                        || !r.s[r.line_start..r.i]
                            .bytes()
                            .all(|c| c == b' ' || c == b'-')
                    {
                        return Err(Decline);
                    }
                    Kind::BlockMap(column)
                } else {
                    Kind::Scalar(scalar)
                }
            }
        };
        self.kind = Some((kind, pos));
        Ok(())
    }

    fn take(mut self) -> Res<(Kind<'a>, u64, &'r mut Reader<'a>)> {
        self.locate()?;
        let (kind, pos) = self.kind.take().ok_or(Decline)?;
        Ok((kind, pos, self.r))
    }

    /// The value as a scalar, consumed.
    fn scalar(self) -> Res<Scalar<'a>> {
        match self.take()? {
            (Kind::Scalar(s), _, r) => {
                r.i = s.end;
                r.mid = true;
                Ok(s)
            }
            _ => Err(Decline),
        }
    }

    fn nested<T>(r: &mut Reader<'a>, f: impl FnOnce(&mut Reader<'a>) -> Res<T>) -> Res<T> {
        r.depth += 1;
        if r.depth > MAX_DEPTH {
            return Err(Decline);
        }
        let out = f(r);
        r.depth -= 1;
        out
    }
}

macro_rules! via_scalar {
    ($($name:ident)*) => {
        $(fn $name<V: Visitor<'de>>(self, visitor: V) -> Res<V::Value> {
            Sc(self.scalar()?).$name(visitor)
        })*
    };
}

macro_rules! decline {
    ($($name:ident)*) => {
        $(fn $name<V: Visitor<'de>>(self, _: V) -> Res<V::Value> {
            Err(Decline)
        })*
    };
}

impl<'de, 'r, 'a> de::Deserializer<'de> for Val<'r, 'a> {
    type Error = Decline;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Res<V::Value> {
        match self.take()? {
            (Kind::BlockMap(n), _, r) => Val::nested(r, |r| {
                visitor.visit_map(BlockMap {
                    r,
                    indent: n,
                    first: true,
                    keys: Vec::new(),
                })
            }),
            (Kind::BlockSeq(n), _, r) => Val::nested(r, |r| {
                visitor.visit_seq(BlockSeq {
                    r,
                    indent: n,
                    first: true,
                })
            }),
            (Kind::FlowMap, _, r) => Val::nested(r, |r| {
                r.i += 1;
                let out = visitor.visit_map(FlowMap {
                    r: &mut *r,
                    first: true,
                    keys: Vec::new(),
                })?;
                r.mid = true;
                Ok(out)
            }),
            (Kind::FlowSeq, _, r) => Val::nested(r, |r| {
                r.i += 1;
                let out = visitor.visit_seq(FlowSeq {
                    r: &mut *r,
                    first: true,
                })?;
                r.mid = true;
                Ok(out)
            }),
            (Kind::Scalar(s), _, r) => {
                r.i = s.end;
                r.mid = true;
                Sc(s).deserialize_any(visitor)
            }
        }
    }

    fn deserialize_map<V: Visitor<'de>>(mut self, visitor: V) -> Res<V::Value> {
        self.locate()?;
        match self.kind {
            Some((Kind::BlockMap(_) | Kind::FlowMap, _)) => self.deserialize_any(visitor),
            _ => Err(Decline),
        }
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        _: &'static str,
        _: &'static [&'static str],
        visitor: V,
    ) -> Res<V::Value> {
        self.deserialize_map(visitor)
    }

    fn deserialize_seq<V: Visitor<'de>>(mut self, visitor: V) -> Res<V::Value> {
        self.locate()?;
        match self.kind {
            Some((Kind::BlockSeq(_) | Kind::FlowSeq, _)) => self.deserialize_any(visitor),
            _ => Err(Decline),
        }
    }

    fn deserialize_tuple<V: Visitor<'de>>(self, _: usize, visitor: V) -> Res<V::Value> {
        self.deserialize_seq(visitor)
    }

    fn deserialize_tuple_struct<V: Visitor<'de>>(
        self,
        _: &'static str,
        _: usize,
        visitor: V,
    ) -> Res<V::Value> {
        self.deserialize_seq(visitor)
    }

    fn deserialize_option<V: Visitor<'de>>(mut self, visitor: V) -> Res<V::Value> {
        self.locate()?;
        if let Some((Kind::Scalar(s), _)) = &self.kind
            && s.plain
            && is_nullish(&s.text)
        {
            return Err(Decline);
        }
        visitor.visit_some(self)
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(
        mut self,
        name: &'static str,
        visitor: V,
    ) -> Res<V::Value> {
        if name != LOCATED {
            return visitor.visit_newtype_struct(self);
        }
        self.locate()?;
        let pos = self.kind.as_ref().map(|k| k.1).ok_or(Decline)?;
        visitor.visit_seq(LocatedSeq {
            pos: Some(pos),
            value: Some(self),
        })
    }

    fn deserialize_enum<V: Visitor<'de>>(
        self,
        _: &'static str,
        _: &'static [&'static str],
        visitor: V,
    ) -> Res<V::Value> {
        Sc(self.scalar()?).deserialize_enum("", &[], visitor)
    }

    via_scalar! {
        deserialize_bool deserialize_i8 deserialize_i16 deserialize_i32 deserialize_i64
        deserialize_u8 deserialize_u16 deserialize_u32 deserialize_u64
        deserialize_str deserialize_string deserialize_identifier
    }
    decline! {
        deserialize_f32 deserialize_f64 deserialize_char deserialize_bytes deserialize_byte_buf
        deserialize_unit deserialize_ignored_any
    }

    fn deserialize_unit_struct<V: Visitor<'de>>(self, _: &'static str, _: V) -> Res<V::Value> {
        Err(Decline)
    }
}

/// A `Located<T>`'s two parts: the node's position, then its value.
struct LocatedSeq<D> {
    pos: Option<u64>,
    value: Option<D>,
}

impl<'de, D: de::Deserializer<'de, Error = Decline>> de::SeqAccess<'de> for LocatedSeq<D> {
    type Error = Decline;

    fn next_element_seed<T: DeserializeSeed<'de>>(&mut self, seed: T) -> Res<Option<T::Value>> {
        if let Some(pos) = self.pos.take() {
            return seed.deserialize(pos.into_deserializer()).map(Some);
        }
        match self.value.take() {
            Some(d) => seed.deserialize(d).map(Some),
            None => Ok(None),
        }
    }
}

/// Plain null-like text, which serde-saphyr reads as null: left to it.
fn is_nullish(text: &str) -> bool {
    matches!(text, "" | "~" | "null" | "Null" | "NULL")
}

/// A scalar as the value of whatever type asks for it.
struct Sc<'a>(Scalar<'a>);

impl<'a> Sc<'a> {
    fn text(self) -> Res<Cow<'a, str>> {
        if self.0.plain && is_nullish(&self.0.text) {
            return Err(Decline);
        }
        Ok(self.0.text)
    }

    /// A plain decimal integer without sign or leading zero.
    fn integer(&self) -> Res<u64> {
        let t = &self.0.text;
        let simple = self.0.plain
            && !t.is_empty()
            && t.len() <= 19
            && t.bytes().all(|c| c.is_ascii_digit())
            && (t.len() == 1 || !t.starts_with('0'));
        if !simple {
            return Err(Decline);
        }
        t.parse().map_err(|_| Decline)
    }
}

macro_rules! via_integer {
    ($($name:ident)*) => {
        $(fn $name<V: Visitor<'de>>(self, visitor: V) -> Res<V::Value> {
            visitor.visit_u64(self.integer()?)
        })*
    };
}

impl<'de, 'a> de::Deserializer<'de> for Sc<'a> {
    type Error = Decline;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Res<V::Value> {
        // A plain scalar's type is the schema's guess (`1`, `true`, `1e3`): left to serde-saphyr.
        if self.0.plain {
            return Err(Decline);
        }
        self.deserialize_str(visitor)
    }

    fn deserialize_str<V: Visitor<'de>>(self, visitor: V) -> Res<V::Value> {
        match self.text()? {
            Cow::Borrowed(s) => visitor.visit_str(s),
            Cow::Owned(s) => visitor.visit_string(s),
        }
    }

    fn deserialize_string<V: Visitor<'de>>(self, visitor: V) -> Res<V::Value> {
        self.deserialize_str(visitor)
    }

    fn deserialize_identifier<V: Visitor<'de>>(self, visitor: V) -> Res<V::Value> {
        self.deserialize_str(visitor)
    }

    fn deserialize_bool<V: Visitor<'de>>(self, visitor: V) -> Res<V::Value> {
        match (self.0.plain, &*self.0.text) {
            (true, "true") => visitor.visit_bool(true),
            (true, "false") => visitor.visit_bool(false),
            _ => Err(Decline),
        }
    }

    fn deserialize_option<V: Visitor<'de>>(self, visitor: V) -> Res<V::Value> {
        if self.0.plain && is_nullish(&self.0.text) {
            return Err(Decline);
        }
        visitor.visit_some(self)
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(
        self,
        name: &'static str,
        visitor: V,
    ) -> Res<V::Value> {
        if name != LOCATED {
            return visitor.visit_newtype_struct(self);
        }
        let pos = self.0.pos;
        visitor.visit_seq(LocatedSeq {
            pos: Some(pos),
            value: Some(self),
        })
    }

    fn deserialize_enum<V: Visitor<'de>>(
        self,
        _: &'static str,
        _: &'static [&'static str],
        visitor: V,
    ) -> Res<V::Value> {
        if !self.0.plain {
            return Err(Decline);
        }
        let text = self.text()?;
        visitor.visit_enum(de::value::StrDeserializer::<Decline>::new(&text))
    }

    via_integer! {
        deserialize_i8 deserialize_i16 deserialize_i32 deserialize_i64
        deserialize_u8 deserialize_u16 deserialize_u32 deserialize_u64
    }
    decline! {
        deserialize_f32 deserialize_f64 deserialize_char deserialize_bytes deserialize_byte_buf
        deserialize_unit deserialize_ignored_any deserialize_map deserialize_seq
    }

    fn deserialize_unit_struct<V: Visitor<'de>>(self, _: &'static str, _: V) -> Res<V::Value> {
        Err(Decline)
    }
    fn deserialize_tuple<V: Visitor<'de>>(self, _: usize, _: V) -> Res<V::Value> {
        Err(Decline)
    }
    fn deserialize_tuple_struct<V: Visitor<'de>>(
        self,
        _: &'static str,
        _: usize,
        _: V,
    ) -> Res<V::Value> {
        Err(Decline)
    }
    fn deserialize_struct<V: Visitor<'de>>(
        self,
        _: &'static str,
        _: &'static [&'static str],
        _: V,
    ) -> Res<V::Value> {
        Err(Decline)
    }
}

/// Remembers a mapping's keys: a duplicate declines (serde-saphyr reports it).
// The key is kept as it came (borrowed from the text where it can be), hence the `&Cow`.
#[allow(clippy::ptr_arg)]
fn note_key<'a>(keys: &mut Vec<Cow<'a, str>>, key: &Cow<'a, str>) -> Res<()> {
    if keys.len() >= MAX_KEYS || keys.iter().any(|k| k == key) {
        return Err(Decline);
    }
    keys.push(key.clone());
    Ok(())
}

struct BlockMap<'r, 'a> {
    r: &'r mut Reader<'a>,
    indent: usize,
    first: bool,
    keys: Vec<Cow<'a, str>>,
}

impl<'de, 'r, 'a> de::MapAccess<'de> for BlockMap<'r, 'a> {
    type Error = Decline;

    fn next_key_seed<K: DeserializeSeed<'de>>(&mut self, seed: K) -> Res<Option<K::Value>> {
        let r = &mut *self.r;
        if self.first {
            self.first = false;
        } else {
            r.end_value()?;
            match r.skip_blank()? {
                Some(n) if n == self.indent => {
                    r.i += n;
                    if r.at_dash() {
                        return Err(Decline);
                    }
                }
                Some(n) if n < self.indent => return Ok(None),
                Some(_) => return Err(Decline),
                None => return Ok(None),
            }
        }
        let key = r.take_key(false)?;
        if key.plain && (is_nullish(&key.text) || key.text == "<<") {
            return Err(Decline);
        }
        note_key(&mut self.keys, &key.text)?;
        seed.deserialize(Sc(key)).map(Some)
    }

    fn next_value_seed<V: DeserializeSeed<'de>>(&mut self, seed: V) -> Res<V::Value> {
        seed.deserialize(Val {
            r: &mut *self.r,
            ctx: Ctx::MapValue(self.indent),
            kind: None,
        })
    }
}

struct BlockSeq<'r, 'a> {
    r: &'r mut Reader<'a>,
    indent: usize,
    first: bool,
}

impl<'de, 'r, 'a> de::SeqAccess<'de> for BlockSeq<'r, 'a> {
    type Error = Decline;

    fn next_element_seed<T: DeserializeSeed<'de>>(&mut self, seed: T) -> Res<Option<T::Value>> {
        let r = &mut *self.r;
        if self.first {
            self.first = false;
        } else {
            r.end_value()?;
            match r.skip_blank()? {
                Some(n) if n == self.indent => {
                    r.i += n;
                    if !r.at_dash() {
                        r.i -= n;
                        return Ok(None);
                    }
                }
                Some(n) if n < self.indent => return Ok(None),
                Some(_) => return Err(Decline),
                None => return Ok(None),
            }
        }
        r.i += 1;
        seed.deserialize(Val {
            r,
            ctx: Ctx::SeqItem(self.indent),
            kind: None,
        })
        .map(Some)
    }
}

struct FlowMap<'r, 'a> {
    r: &'r mut Reader<'a>,
    first: bool,
    keys: Vec<Cow<'a, str>>,
}

/// Moves past `,` to the next entry of a flow collection, or past its `close`: `false` then.
fn flow_next(r: &mut Reader, first: &mut bool, close: u8) -> Res<bool> {
    r.skip_spaces();
    if *first {
        *first = false;
        if r.peek() == Some(close) {
            r.i += 1;
            return Ok(false);
        }
        return Ok(true);
    }
    match r.peek() {
        Some(c) if c == close => {
            r.i += 1;
            Ok(false)
        }
        Some(b',') => {
            r.i += 1;
            r.skip_spaces();
            if matches!(r.peek(), Some(b',' | b']' | b'}')) {
                return Err(Decline);
            }
            Ok(true)
        }
        _ => Err(Decline),
    }
}

impl<'de, 'r, 'a> de::MapAccess<'de> for FlowMap<'r, 'a> {
    type Error = Decline;

    fn next_key_seed<K: DeserializeSeed<'de>>(&mut self, seed: K) -> Res<Option<K::Value>> {
        let r = &mut *self.r;
        if !flow_next(r, &mut self.first, b'}')? {
            return Ok(None);
        }
        let key = r.take_key(true)?;
        if key.plain && (is_nullish(&key.text) || key.text == "<<") {
            return Err(Decline);
        }
        note_key(&mut self.keys, &key.text)?;
        seed.deserialize(Sc(key)).map(Some)
    }

    fn next_value_seed<V: DeserializeSeed<'de>>(&mut self, seed: V) -> Res<V::Value> {
        let out = seed.deserialize(Val {
            r: &mut *self.r,
            ctx: Ctx::Flow,
            kind: None,
        })?;
        self.r.mid = false;
        Ok(out)
    }
}

struct FlowSeq<'r, 'a> {
    r: &'r mut Reader<'a>,
    first: bool,
}

impl<'de, 'r, 'a> de::SeqAccess<'de> for FlowSeq<'r, 'a> {
    type Error = Decline;

    fn next_element_seed<T: DeserializeSeed<'de>>(&mut self, seed: T) -> Res<Option<T::Value>> {
        let r = &mut *self.r;
        if !flow_next(r, &mut self.first, b']')? {
            return Ok(None);
        }
        let out = seed.deserialize(Val {
            r: &mut *r,
            ctx: Ctx::Flow,
            kind: None,
        })?;
        r.mid = false;
        Ok(Some(out))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::Plan;
    use crate::plan::load::disagreement;

    fn fast(text: &str) -> Res<Plan> {
        from_str::<Plan>(text)
    }

    /// The word-at-a-time test agrees with the byte-wise one for every byte value at every
    /// place in a word, and beside every other byte value (borrows cross byte boundaries).
    #[test]
    fn the_word_test_of_printable_ascii_is_exact() {
        let printable = |b: u8| (0x20..0x7f).contains(&b);
        for place in 0..8 {
            for b in 0..=255u8 {
                for other in [b' ', b'~', 0x00, 0x1f, 0x7f, 0x80, 0xff, b] {
                    let mut word = [b'a'; 8];
                    word[place] = b;
                    word[(place + 1) % 8] = other;
                    assert_eq!(
                        printable_ascii_word(u64::from_le_bytes(word)),
                        word.iter().all(|&c| printable(c)),
                        "{word:?}"
                    );
                }
            }
        }
        // And check_printable still declines what it declined, wherever it sits.
        for bad in ["\u{7f}", "\u{1b}", "\u{85}", "\u{2028}", "\u{feff}", "\r"] {
            for at in 0..20 {
                let text = format!("{}{bad}{}", "x".repeat(at), "y".repeat(20 - at));
                assert!(check_printable(&text).is_err(), "{text:?}");
            }
        }
        assert!(check_printable("tab\tand é and plain text of some length").is_ok());
    }

    /// The fast reader agrees with serde-saphyr on `text`, or declines it; whether it read it.
    fn agrees(text: &str) -> bool {
        match fast(text) {
            Ok(plan) => {
                if let Some(why) = disagreement(text, &plan) {
                    panic!("{why}\n--- text ---\n{text}");
                }
                true
            }
            Err(Decline) => false,
        }
    }

    const HEAD: &str = "apiVersion: rekey/v1\nkind: RotationPlan\nmetadata:\n  name: NAME\n";

    fn with_name(name: &str) -> String {
        HEAD.replace("NAME", name)
    }

    #[test]
    fn the_example_plan_is_read_fast_and_the_same() {
        let text = std::fs::read_to_string(
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("plans/circleci-incident.yaml"),
        )
        .unwrap_or_default();
        assert!(text.contains("targets:"));
        assert!(agrees(&text), "the example plan must be in the fast subset");
    }

    #[test]
    fn every_spelling_of_a_hostile_name_agrees_or_declines() {
        let names = [
            "plain",
            "a: b",
            "a:b",
            "a #b",
            "a#b",
            "#a",
            "-a",
            "- a",
            "*a",
            "&a",
            "!a",
            "?a",
            "|a",
            ">a",
            "%a",
            "@a",
            "`a",
            "null",
            "Null",
            "NULL",
            "~",
            "",
            "true",
            "false",
            "yes",
            "no",
            "on",
            "1e3",
            "0x1f",
            "012",
            "1",
            "-1",
            ".5",
            ".inf",
            ".nan",
            "2023-01-05",
            "a\nb",
            "a\tb",
            "a\u{0}b",
            "a\u{7f}b",
            "a\u{85}b",
            "a\u{2028}b",
            "a\u{feff}b",
            "é ü 日本",
            "😀",
            "a'b",
            "a\"b",
            "a\\b",
            "a b ",
            " a",
            "a  b",
            "{a}",
            "[a]",
            "a,b",
            "a}b",
            "${HOME}",
            "<<",
            "a: b: c",
            "'",
            "\"",
            "\\",
            "x".repeat(1100).leak(),
        ];
        let mut read = 0;
        for name in names {
            let escaped: String = name
                .chars()
                .map(|c| match c {
                    '"' => "\\\"".to_string(),
                    '\\' => "\\\\".to_string(),
                    c if (c as u32) < 0x20 || c == '\u{7f}' => format!("\\x{:02x}", c as u32),
                    c if matches!(c, '\u{85}' | '\u{2028}' | '\u{feff}') => {
                        format!("\\u{:04x}", c as u32)
                    }
                    c => c.to_string(),
                })
                .collect();
            for spelled in [
                name.to_string(),
                format!("\"{escaped}\""),
                format!("'{}'", name.replace('\'', "''")),
                format!("{name} # comment"),
            ] {
                read += agrees(&with_name(&spelled)) as usize;
                read += agrees(&format!(
                    "{HEAD}targets:\n  - id: x\n    provider: exec\n    bindings:\n      - project: p\n        vars: {{{spelled}: V}}\n"
                )) as usize;
                read += agrees(&format!("{HEAD}hunts:\n  pre: [{spelled}]\n")) as usize;
            }
        }
        assert!(read > 200, "only {read} spellings were read fast");
    }

    #[test]
    fn positions_match_serde_saphyr_in_every_form() {
        let text = "# c\napiVersion: rekey/v1\nkind:   RotationPlan   # k\nmetadata:\n  name: \"é\"\n\
                    defaults:\n  grace: 1h\nhunts:\n  pre:\n  - a\n  -   b\n  post: ['c', \"d\"]\n\
                    allow_cidrs:\n    - 10.0.0.0/8\ntargets:\n\n  # t\n  - id: é1\n    provider: exec\n\
                    \x20   principal: {service: 'x y', key_id: \"k\"}\n    exec: {mint: [a], verify: [b, \"c\"], revoke: [d]}\n\
                    \x20   bindings:\n    - context: c\n      vars: {é: V, \"b\": W}\n  -\n    id: t2\n    provider: aws-iam\n\
                    errors:\n  - {scope: project, name: p, status: 404, message: m}\n";
        assert!(agrees(text), "every form above is in the subset");
    }

    #[test]
    fn constructs_outside_the_subset_decline() {
        for text in [
            "apiVersion: &a rekey/v1\nkind: *a\nmetadata: {name: n}\n",
            "apiVersion: !!str rekey/v1\nkind: RotationPlan\nmetadata: {name: n}\n",
            "apiVersion: |\n  rekey/v1\nkind: RotationPlan\nmetadata: {name: n}\n",
            "---\napiVersion: rekey/v1\nkind: RotationPlan\nmetadata: {name: n}\n",
            "apiVersion: rekey/v1\nkind: RotationPlan\nmetadata: {name: n}\n---\n",
            "apiVersion: rekey/v1\nkind: RotationPlan\nkind: RotationPlan\nmetadata: {name: n}\n",
            "apiVersion: rekey/v1\nkind: RotationPlan\nmetadata: {name: a\n  b}\n",
            "apiVersion: rekey/v1\nkind: RotationPlan\nmetadata:\n  name: a\n   b\n",
            "apiVersion: rekey/v1\nkind: RotationPlan\nmetadata:\n  name: \"a\n  b\"\n",
            "apiVersion: rekey/v1\nkind: RotationPlan\nmetadata:\n\tname: n\n",
            "apiVersion: rekey/v1\r\nkind: RotationPlan\r\nmetadata: {name: n}\r\n",
            "apiVersion: rekey/v1\nkind: RotationPlan\nmetadata: {name: n}\nunknown: 1\n",
            "apiVersion: rekey/v1\nkind: RotationPlan\nmetadata: {name: ~}\n",
            "apiVersion: rekey/v1\nkind: RotationPlan\nmetadata: {name: n}\ntargets:\n  - ? id\n    : x\n",
        ] {
            assert!(fast(text).is_err(), "read fast: {text}");
            let _ = agrees(text);
        }
    }

    #[test]
    fn nesting_deeper_than_the_bound_declines_without_overflow() {
        let deep = format!(
            "apiVersion: rekey/v1\nkind: RotationPlan\nmetadata: {{name: n}}\nhunts: {{pre: {}{}}}\n",
            "[".repeat(100_000),
            "]".repeat(100_000)
        );
        assert!(fast(&deep).is_err());
    }
}
