//! What one input may cost a hunt, and the readers that hold it to that. An audit log is
//! hostile input (an attacker may write to the log bucket), so nothing read from it is
//! unbounded:
//!
//! - a **record** (a JSON line, a whole JSON document, a CSV row) is at most [`MAX_RECORD`]
//!   bytes: it is held in memory whole, because its fields borrow from it;
//! - a **gzip file** decompresses to at most [`MAX_DECOMPRESSED`] bytes: a 1.5 MB bomb would
//!   otherwise cost gigabytes of work (or memory, in one line);
//! - a **page** fetched from an API is at most [`MAX_RECORD`] bytes too: it is one document.
//!
//! Going over a bound is never a crash and never silent: the reader stops with
//! [`OverLimit`] (an `io::Error` whose text says which bound and why), the hunt reports the
//! input as not wholly read (`incomplete`, exit code 1) and goes on with the other inputs.
//!
//! Why these numbers: CloudTrail delivers one file per account and region about every five
//! minutes, one JSON line `{"Records":[…]}`; the busiest trails make files of a few tens of
//! MB decompressed. 64 MiB holds them with room to spare while a worker's buffer (at most
//! twice that while it grows) stays well under the 256 MB a hunt may use. 1 GiB decompressed
//! is more than ten times any real delivery file and costs a worker about a second.

use std::io::{self, BufRead, Read};

/// The largest record (line, document, CSV row or API page), in bytes.
pub const MAX_RECORD: usize = 64 << 20;

/// The most one compressed file may decompress to, in bytes.
pub const MAX_DECOMPRESSED: u64 = 1 << 30;

/// Which bound an input went over.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OverLimit {
    Record,
    Decompressed,
}

impl std::fmt::Display for OverLimit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            OverLimit::Record => write!(
                f,
                "a record is larger than {} MiB (the bound per record; a CloudTrail delivery file is a few tens of MB); the rest of the input skipped",
                MAX_RECORD >> 20
            ),
            OverLimit::Decompressed => write!(
                f,
                "decompresses to more than {} GiB (the bound per file; a gzip bomb?); the rest of the input skipped",
                MAX_DECOMPRESSED >> 30
            ),
        }
    }
}

impl std::error::Error for OverLimit {}

impl From<OverLimit> for io::Error {
    fn from(o: OverLimit) -> io::Error {
        io::Error::new(io::ErrorKind::InvalidData, o)
    }
}

/// The bound an I/O error reports, when it is one of these.
pub fn over_limit(e: &io::Error) -> Option<OverLimit> {
    e.get_ref()?.downcast_ref::<OverLimit>().copied()
}

/// A reader that fails with [`OverLimit::Decompressed`] once more than `left` bytes came out of
/// `inner` (put after a decompressor).
pub struct Capped<R> {
    inner: R,
    left: u64,
}

impl<R> Capped<R> {
    pub fn new(inner: R, limit: u64) -> Capped<R> {
        Capped { inner, left: limit }
    }
}

impl<R: Read> Read for Capped<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        if self.left == 0 {
            // At the bound: one more byte means the file is over it.
            let mut probe = [0u8; 1];
            return match self.inner.read(&mut probe)? {
                0 => Ok(0),
                _ => Err(OverLimit::Decompressed.into()),
            };
        }
        let room = buf
            .len()
            .min(usize::try_from(self.left).unwrap_or(usize::MAX));
        let n = self.inner.read(&mut buf[..room])?;
        self.left -= n as u64;
        Ok(n)
    }
}

/// What [`read_line`] found.
#[derive(Debug, PartialEq, Eq)]
pub enum Line {
    /// The end of the input (nothing read).
    End,
    /// A line (its `\n` included when there was one) in the buffer.
    Read,
}

/// Reads one line into `buf` (cleared first), at most `max` bytes: a longer line is
/// [`OverLimit::Record`]. Grows `buf` to no more than `max + 1` bytes whatever the input.
pub fn read_line(reader: &mut dyn BufRead, buf: &mut Vec<u8>, max: usize) -> io::Result<Line> {
    buf.clear();
    loop {
        let chunk = match reader.fill_buf() {
            Ok(c) => c,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        if chunk.is_empty() {
            return Ok(if buf.is_empty() {
                Line::End
            } else {
                Line::Read
            });
        }
        let (take, done) = match memchr::memchr(b'\n', chunk) {
            Some(i) => (i + 1, true),
            None => (chunk.len(), false),
        };
        if buf.len() + take > max {
            return Err(OverLimit::Record.into());
        }
        grow(buf, take, max);
        buf.extend_from_slice(&chunk[..take]);
        reader.consume(take);
        if done {
            return Ok(Line::Read);
        }
    }
}

/// Reads the rest of the input onto `buf`, which may hold at most `max` bytes in all.
pub fn read_rest(reader: &mut dyn BufRead, buf: &mut Vec<u8>, max: usize) -> io::Result<()> {
    loop {
        let chunk = match reader.fill_buf() {
            Ok(c) => c,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        if chunk.is_empty() {
            return Ok(());
        }
        let take = chunk.len();
        if buf.len() + take > max {
            return Err(OverLimit::Record.into());
        }
        grow(buf, take, max);
        buf.extend_from_slice(chunk);
        reader.consume(take);
    }
}

/// Makes room for `more` bytes, doubling as `Vec` does but never past `max`: the buffer of a
/// record just under the bound must not cost twice the bound.
fn grow(buf: &mut Vec<u8>, more: usize, max: usize) {
    let need = buf.len() + more;
    if need > buf.capacity() {
        let target = need
            .max(buf.capacity().saturating_mul(2))
            .min(max.max(need));
        buf.reserve_exact(target - buf.len());
    }
}

/// A reader that fails with [`OverLimit::Record`] when more than `max` bytes are read after the
/// last [`RecordBudget::mark`]: for parsers (CSV) that buffer a record themselves.
pub struct RecordBudget<R> {
    inner: R,
    since_mark: std::rc::Rc<std::cell::Cell<usize>>,
    max: usize,
}

/// Resets a [`RecordBudget`] at a record boundary.
#[derive(Clone)]
pub struct Mark(std::rc::Rc<std::cell::Cell<usize>>);

impl Mark {
    pub fn mark(&self) {
        self.0.set(0);
    }
}

impl<R> RecordBudget<R> {
    pub fn new(inner: R, max: usize) -> (RecordBudget<R>, Mark) {
        let cell = std::rc::Rc::new(std::cell::Cell::new(0));
        (
            RecordBudget {
                inner,
                since_mark: cell.clone(),
                max,
            },
            Mark(cell),
        )
    }
}

impl<R: Read> Read for RecordBudget<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let used = self.since_mark.get();
        if used >= self.max {
            return Err(OverLimit::Record.into());
        }
        let room = buf.len().min(self.max - used);
        let n = self.inner.read(&mut buf[..room])?;
        self.since_mark.set(used + n);
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_are_bounded() {
        let mut r = io::BufReader::with_capacity(4, &b"ab\ncdefgh\nij"[..]);
        let mut buf = Vec::new();
        assert_eq!(read_line(&mut r, &mut buf, 5).unwrap(), Line::Read);
        assert_eq!(buf, b"ab\n");
        let e = read_line(&mut r, &mut buf, 5).unwrap_err();
        assert_eq!(over_limit(&e), Some(OverLimit::Record));
        assert!(buf.capacity() <= 8);
    }

    #[test]
    fn decompressed_size_is_bounded() {
        let mut r = Capped::new(&[7u8; 10][..], 10);
        let mut out = Vec::new();
        assert_eq!(r.read_to_end(&mut out).unwrap(), 10);
        let mut r = Capped::new(&[7u8; 11][..], 10);
        let e = r.read_to_end(&mut Vec::new()).unwrap_err();
        assert_eq!(over_limit(&e), Some(OverLimit::Decompressed));
    }

    #[test]
    fn record_budget_resets_at_marks() {
        let (mut r, mark) = RecordBudget::new(&[1u8; 20][..], 8);
        let mut buf = [0u8; 6];
        assert_eq!(r.read(&mut buf).unwrap(), 6);
        mark.mark();
        assert_eq!(r.read(&mut buf).unwrap(), 6);
        assert_eq!(r.read(&mut buf).unwrap(), 2);
        assert!(r.read(&mut buf).is_err());
    }
}
