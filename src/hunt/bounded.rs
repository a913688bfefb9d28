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

use std::io::{self, Read};

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

/// The lines of an input, read straight into one buffer and handed out as ranges of it.
///
/// Why not `BufRead::read_line`-style copying: a CloudTrail delivery is one line of megabytes,
/// and copying every byte from the reader's buffer into a line buffer (with a `memchr` per
/// chunk) was a few percent of a hunt. Here the reader fills this buffer directly (a
/// `BufReader` passes large reads through), and only the unfinished tail of a buffer is moved
/// to its front before the next read.
///
/// Bounds: a line (its `\n` included) of more than `max` bytes is [`OverLimit::Record`], and
/// the buffer never grows past `max + 1` bytes whatever the input.
pub struct Lines<'r> {
    reader: &'r mut dyn Read,
    /// Zero-filled once as it grows and kept initialized: `buf[start..end]` is read and not yet
    /// handed out.
    buf: Vec<u8>,
    start: usize,
    end: usize,
    /// Where the search for the next `\n` resumes (the bytes before it hold none).
    scanned: usize,
    eof: bool,
    max: usize,
}

/// Bytes asked of the reader at least per read, so that a `BufReader` passes the read through.
const CHUNK: usize = 512 * 1024;

impl<'r> Lines<'r> {
    /// Lines of `reader` of at most `max` bytes, read into `buf` (a buffer kept from a
    /// previous input: its contents are dropped, its memory reused).
    pub fn new(reader: &'r mut dyn Read, mut buf: Vec<u8>, max: usize) -> Lines<'r> {
        // Its initialized part is reused as is (only what is read into it is ever handed out);
        // the rest of its capacity is initialized as reads need it (see [`Self::fill`]).
        buf.truncate(max + 1);
        Lines {
            reader,
            buf,
            start: 0,
            end: 0,
            scanned: 0,
            eof: false,
            max,
        }
    }

    /// The buffer, for the next input.
    pub fn into_buffer(self) -> Vec<u8> {
        self.buf
    }

    /// The bytes of a range handed out by [`Self::next_line`] or [`Self::rest`].
    pub fn get(&self, range: std::ops::Range<usize>) -> &[u8] {
        &self.buf[range]
    }

    /// The next line (its `\n` included when there is one), `None` at the end of the input.
    pub fn next_line(&mut self) -> io::Result<Option<std::ops::Range<usize>>> {
        loop {
            if let Some(i) = memchr::memchr(b'\n', &self.buf[self.scanned..self.end]) {
                let line = self.start..self.scanned + i + 1;
                if line.len() > self.max {
                    return Err(OverLimit::Record.into());
                }
                self.start = line.end;
                self.scanned = line.end;
                return Ok(Some(line));
            }
            self.scanned = self.end;
            if self.end - self.start > self.max {
                return Err(OverLimit::Record.into());
            }
            if self.eof {
                if self.start == self.end {
                    return Ok(None);
                }
                let line = self.start..self.end;
                self.start = self.end;
                return Ok(Some(line));
            }
            self.fill()?;
        }
    }

    /// Everything from the start of the line last handed out to the end of the input, as one
    /// range (a document spread over lines), at most `max` bytes in all.
    pub fn rest(&mut self, line: std::ops::Range<usize>) -> io::Result<std::ops::Range<usize>> {
        self.start = line.start;
        while !self.eof {
            if self.end - self.start > self.max {
                return Err(OverLimit::Record.into());
            }
            self.fill()?;
        }
        if self.end - self.start > self.max {
            return Err(OverLimit::Record.into());
        }
        let all = self.start..self.end;
        self.start = self.end;
        self.scanned = self.end;
        Ok(all)
    }

    /// Reads once more: the unfinished tail moved to the front first, the buffer grown (up to
    /// `max + 1` bytes) when full.
    fn fill(&mut self) -> io::Result<()> {
        if self.start > 0 {
            self.buf.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.scanned -= self.start;
            self.start = 0;
        }
        // Initialized one chunk ahead of the data only: the capacity grows by doubling, but
        // zero-filling all of it touched (and kept resident) up to twice the largest line.
        if self.buf.len() - self.end < CHUNK && self.buf.len() <= self.max {
            let mut len = (self.end + CHUNK).min(self.max + 1);
            // The capacity left is filled before the buffer grows: one sized for the input
            // (see `source::read_json`) never grows, nor is copied.
            if len > self.buf.capacity() && self.buf.capacity() > self.end {
                len = self.buf.capacity();
            }
            self.buf.resize(len, 0);
        }
        // Never past `max + 1` bytes of one line: one more than a line may hold proves it over.
        let room = (self.max + 1 - self.end).min(self.buf.len() - self.end);
        loop {
            match self.reader.read(&mut self.buf[self.end..self.end + room]) {
                Ok(0) => {
                    self.eof = true;
                    return Ok(());
                }
                Ok(n) => {
                    self.end += n;
                    return Ok(());
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
        }
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

    /// A reader that returns at most `n` bytes per read.
    struct Trickle<'a>(&'a [u8], usize);
    impl Read for Trickle<'_> {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            let n = self.1.min(buf.len()).min(self.0.len());
            buf[..n].copy_from_slice(&self.0[..n]);
            self.0 = &self.0[n..];
            Ok(n)
        }
    }

    #[test]
    fn lines_are_bounded() {
        let mut r = &b"ab\ncdefgh\nij"[..];
        let mut lines = Lines::new(&mut r, Vec::new(), 5);
        let first = lines.next_line().unwrap().unwrap();
        assert_eq!(lines.get(first), b"ab\n");
        let e = lines.next_line().unwrap_err();
        assert_eq!(over_limit(&e), Some(OverLimit::Record));
        assert!(lines.into_buffer().len() <= 6);
    }

    /// Lines of any length across reads of any size, a last line without `\n`, lines exactly
    /// at the bound, and a buffer kept from a longer input: each line whole and in order.
    #[test]
    fn lines_come_whole_across_reads() {
        let mut text = Vec::new();
        for i in 0..300usize {
            text.extend(std::iter::repeat_n(b'a' + (i % 26) as u8, (i * 7919) % 700));
            text.push(b'\n');
        }
        text.extend_from_slice(b"last");
        let want: Vec<&[u8]> = text.split_inclusive(|&b| b == b'\n').collect();
        let mut kept = vec![9u8; 4096];
        for step in [1, 3, 64, 1000, 1 << 20] {
            let mut r = Trickle(&text, step);
            let mut lines = Lines::new(&mut r, std::mem::take(&mut kept), 700);
            let mut got = Vec::new();
            while let Some(l) = lines.next_line().unwrap() {
                got.push(lines.get(l).to_vec());
            }
            assert_eq!(got, want, "reads of {step}");
            kept = lines.into_buffer();
            assert!(kept.len() <= 701);
        }
        // The rest of the input after the first line, as one document, bounded too.
        let mut r = Trickle(b"[\n1,\n2]\n", 2);
        let mut lines = Lines::new(&mut r, Vec::new(), 64);
        let first = lines.next_line().unwrap().unwrap();
        let all = lines.rest(first).unwrap();
        assert_eq!(lines.get(all), b"[\n1,\n2]\n");
        let mut r = Trickle(b"[\n1,\n2]\n", 2);
        let mut lines = Lines::new(&mut r, Vec::new(), 6);
        let first = lines.next_line().unwrap().unwrap();
        let e = lines.rest(first).unwrap_err();
        assert_eq!(over_limit(&e), Some(OverLimit::Record));
    }

    /// A buffer with room for the whole input is filled, never grown (no copy, no second
    /// allocation), whatever the size of the reads; one with less room grows as before.
    #[test]
    fn a_buffer_sized_for_the_input_never_grows() {
        let text: Vec<u8> = (0..3_000_000u32).map(|i| b'a' + (i % 26) as u8).collect();
        for step in [1 << 20, 777_777, usize::MAX] {
            let mut r = Trickle(&text, step);
            let buf = Vec::with_capacity(text.len() + 1);
            let at = buf.as_ptr();
            let mut lines = Lines::new(&mut r, buf, 4 << 20);
            let line = lines.next_line().unwrap().unwrap();
            assert_eq!(lines.get(line), &text[..]);
            assert!(lines.next_line().unwrap().is_none());
            let buf = lines.into_buffer();
            assert_eq!(
                (buf.as_ptr(), buf.capacity()),
                (at, text.len() + 1),
                "reads of {step}"
            );
        }
        let mut r = Trickle(&text, 1 << 20);
        let mut lines = Lines::new(&mut r, Vec::with_capacity(1000), 4 << 20);
        let line = lines.next_line().unwrap().unwrap();
        assert_eq!(lines.get(line), &text[..]);
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
