//! [`PlanText`]: a plan file's text, mapped from the file when it is large rather than copied.
//!
//! A 190,000-target plan is 130 MB of text, and its parsed model about 350 MB: read into a
//! `String`, both stay resident together. Mapped, the text is the page cache's: the reader
//! hands back the pages it has passed ([`PlanText::release_before`]), so resident memory is
//! the model and a window of text. What comes later (a diagnostic quoting a line, `apply`
//! keeping the text for its journal) reads the same bytes again, faulted back from the file.
//!
//! The mapping is private and read-only. As with every mapped file, a process that truncates
//! the file while rekey reads it makes the read fault (SIGBUS); rekey writes plans by rename,
//! which leaves a mapped file whole.

use std::ops::Deref;
use std::path::Path;

/// Files below this are read into memory: mapping pays only for large plans (and a directory
/// of 10,000 small files would take as many mappings).
const MAP_FROM_BYTES: u64 = 4 << 20;

/// A plan's text: owned, or a read-only private mapping of its file.
pub struct PlanText {
    repr: Repr,
}

enum Repr {
    Owned(String),
    /// `len` bytes at `ptr`, mapped by `mmap` and checked to be UTF-8.
    Mapped {
        ptr: *const u8,
        len: usize,
    },
    /// Let go of once parsed; read again from `path` the first time it is needed.
    Reread {
        path: std::path::PathBuf,
        text: std::sync::OnceLock<String>,
    },
}

// SAFETY: the mapping is read-only and owned by this value alone (unmapped on drop).
unsafe impl Send for PlanText {}
unsafe impl Sync for PlanText {}

impl PlanText {
    /// Reads `path` into memory. What runs a plan reads it so: the text it journals (and
    /// resumes from) must be the bytes it parsed, whatever happens to the file meanwhile.
    pub fn read(path: &Path) -> std::io::Result<PlanText> {
        std::fs::read_to_string(path).map(PlanText::from)
    }

    /// Reads `path` for a check that only reports (`validate`): a large regular file is
    /// mapped, anything else read into memory. Fails as `read_to_string` does (including on
    /// text that is not UTF-8).
    pub fn map_or_read(path: &Path) -> std::io::Result<PlanText> {
        let file = std::fs::File::open(path)?;
        let meta = file.metadata()?;
        if !meta.is_file() || meta.len() < MAP_FROM_BYTES || meta.len() > isize::MAX as u64 {
            return std::io::read_to_string(file).map(PlanText::from);
        }
        let len = meta.len() as usize;
        // SAFETY: a fresh private read-only mapping of a regular file of `len` bytes; the
        // result is checked before use, and unmapped exactly once (drop).
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ,
                libc::MAP_PRIVATE,
                std::os::fd::AsRawFd::as_raw_fd(&file),
                0,
            )
        };
        if ptr == libc::MAP_FAILED {
            // Out of mappings or address space: the copy still works.
            return std::io::read_to_string(file).map(PlanText::from);
        }
        let text = PlanText {
            repr: Repr::Mapped {
                ptr: ptr.cast::<u8>().cast_const(),
                len,
            },
        };
        text.check_utf8()?;
        Ok(text)
    }

    /// Lets go of a text read into memory, to be read again from `path` if it is needed (a
    /// diagnostic quoting a line): a plan split into 10,000 files would otherwise hold every
    /// file's text beside its model. Should the file change meanwhile, what is quoted is the
    /// file as it is then.
    pub fn reread_later(&mut self, path: &Path) {
        if let Repr::Owned(_) = self.repr {
            self.repr = Repr::Reread {
                path: path.to_path_buf(),
                text: std::sync::OnceLock::new(),
            };
        }
    }

    /// The bytes, not yet known to be UTF-8 (for the check).
    fn bytes(&self) -> &[u8] {
        match &self.repr {
            Repr::Owned(s) => s.as_bytes(),
            Repr::Reread { .. } => self.deref().as_bytes(),
            // SAFETY: `ptr` maps `len` readable bytes for as long as `self` lives.
            Repr::Mapped { ptr, len } => unsafe { std::slice::from_raw_parts(*ptr, *len) },
        }
    }

    /// Checks a mapped text is UTF-8 a window at a time, handing each window back once read.
    fn check_utf8(&self) -> std::io::Result<()> {
        const WINDOW: usize = 8 << 20;
        let bytes = self.bytes();
        let mut at = 0;
        while at < bytes.len() {
            let end = (at + WINDOW).min(bytes.len());
            let valid = match std::str::from_utf8(&bytes[at..end]) {
                Ok(_) => end - at,
                // A character cut by the window's end is checked with the next window.
                Err(e) if e.error_len().is_none() && end < bytes.len() => e.valid_up_to(),
                Err(_) => {
                    return Err(std::io::Error::new(
                        std::io::ErrorKind::InvalidData,
                        "stream did not contain valid UTF-8",
                    ));
                }
            };
            at += valid;
            self.release_before(at);
        }
        Ok(())
    }

    /// Gives the pages wholly before byte `offset` back to the page cache: the text stays
    /// readable (a later read faults them in again), but no longer counts as this process's.
    pub fn release_before(&self, offset: usize) {
        let Repr::Mapped { ptr, len } = self.repr else {
            return;
        };
        let page = page_size();
        let end = offset.min(len) / page * page;
        if end == 0 {
            return;
        }
        // SAFETY: `[ptr, ptr + end)` lies in our page-aligned mapping. MADV_DONTNEED on a
        // private file mapping never written to drops the pages; reads fault in the file's
        // same bytes, so no reference into the text sees a change.
        unsafe {
            libc::madvise(ptr.cast_mut().cast(), end, libc::MADV_DONTNEED);
        }
    }

    /// The text as an owned `String` (a copy when mapped).
    pub fn into_string(mut self) -> String {
        if let Repr::Owned(s) = &mut self.repr {
            return std::mem::take(s);
        }
        self.deref().to_string()
    }
}

fn page_size() -> usize {
    // SAFETY: sysconf has no preconditions.
    let n = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    if n > 0 { n as usize } else { 4096 }
}

impl Deref for PlanText {
    type Target = str;
    fn deref(&self) -> &str {
        match &self.repr {
            Repr::Owned(s) => s,
            Repr::Reread { path, text } => {
                text.get_or_init(|| std::fs::read_to_string(path).unwrap_or_default())
            }
            // SAFETY: a mapped text was checked to be UTF-8 when it was read, and the
            // mapping is private and never written.
            Repr::Mapped { .. } => unsafe { std::str::from_utf8_unchecked(self.bytes()) },
        }
    }
}

impl Drop for PlanText {
    fn drop(&mut self) {
        if let Repr::Mapped { ptr, len } = self.repr {
            // SAFETY: the mapping made in `read`, unmapped once; nothing borrows it any more.
            unsafe {
                libc::munmap(ptr.cast_mut().cast(), len);
            }
        }
    }
}

impl From<String> for PlanText {
    fn from(s: String) -> Self {
        PlanText {
            repr: Repr::Owned(s),
        }
    }
}

impl Default for PlanText {
    fn default() -> Self {
        PlanText::from(String::new())
    }
}

impl std::fmt::Debug for PlanText {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PlanText")
            .field("bytes", &self.len())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file_of(bytes: &[u8]) -> (tempfile::TempDir, std::path::PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("plan.yaml");
        std::fs::write(&path, bytes).unwrap();
        (dir, path)
    }

    #[test]
    fn a_large_file_is_mapped_and_reads_the_same_after_its_pages_are_released() {
        // Two-byte characters across the 8 MB window of the UTF-8 check, at odd offsets.
        let mut text = String::from("x");
        while text.len() < 9 << 20 {
            text.push_str("é# ü\n");
        }
        let (_dir, path) = file_of(text.as_bytes());
        let read = PlanText::map_or_read(&path).unwrap();
        assert!(matches!(read.repr, Repr::Mapped { .. }));
        assert!(*read == *text);
        read.release_before(5 << 20);
        read.release_before(usize::MAX);
        assert!(*read == *text, "released pages fault back in unchanged");
        assert_eq!(read.into_string(), text);
    }

    #[test]
    fn a_large_file_that_is_not_utf8_is_refused_as_read_to_string_refuses_it() {
        let mut bytes = vec![b'a'; 5 << 20];
        bytes[(5 << 20) - 3] = 0xff;
        let (_dir, path) = file_of(&bytes);
        let err = PlanText::map_or_read(&path).unwrap_err();
        assert_eq!(err.kind(), std::io::ErrorKind::InvalidData);
        // A character cut off by the end of the file.
        let mut bytes = vec![b'a'; 9 << 20];
        let n = bytes.len();
        bytes[n - 1] = 0xc3;
        let (_dir, path) = file_of(&bytes);
        assert!(PlanText::map_or_read(&path).is_err());
    }

    #[test]
    fn a_text_let_go_of_is_read_again_when_needed() {
        let (_dir, path) = file_of(b"kind: RotationPlan\n");
        let mut read = PlanText::map_or_read(&path).unwrap();
        read.reread_later(&path);
        assert!(matches!(read.repr, Repr::Reread { .. }));
        assert_eq!(&*read, "kind: RotationPlan\n");
        assert_eq!(read.into_string(), "kind: RotationPlan\n");
    }

    #[test]
    fn a_small_file_is_read_into_memory() {
        let (_dir, path) = file_of(b"apiVersion: rekey/v1\n");
        let read = PlanText::map_or_read(&path).unwrap();
        assert!(matches!(read.repr, Repr::Owned(_)));
        read.release_before(usize::MAX);
        assert_eq!(&*read, "apiVersion: rekey/v1\n");
    }
}
