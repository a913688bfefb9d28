//! The secret type: a value that never prints, never serializes, and is wiped when dropped.
//!
//! Every credential rekey holds in memory (API tokens today, minted values later) is a
//! [`Secret`]. `Debug` and `Display` show `[redacted]`, so a secret inside an error or a log
//! line cannot leak by accident; the value is reachable only through [`Secret::expose`].
//!
//! Memory is the one place secrets live in clear, so [`forbid_core_dumps`] keeps it there: no
//! core file, and (Linux) no other process of the same user attaching to read it.

use zeroize::Zeroizing;

#[derive(Clone)]
pub struct Secret(Zeroizing<String>);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Secret(Zeroizing::new(value.into()))
    }

    /// The value itself: call only where it is sent to its owner or written to its binding.
    pub fn expose(&self) -> &str {
        &self.0
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret([redacted])")
    }
}

impl std::fmt::Display for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("[redacted]")
    }
}

/// Called first thing by the binary: no core dump may write the process's memory (its
/// secrets) to disk. Sets `RLIMIT_CORE` to 0 (inherited by the commands rekey runs) and, on
/// Linux, clears the dumpable flag (`PR_SET_DUMPABLE`), which also stops other processes of
/// the same user from attaching with ptrace or reading `/proc/PID/mem`.
pub fn forbid_core_dumps() -> std::io::Result<()> {
    #[cfg(unix)]
    {
        let zero = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: setrlimit reads the struct we pass; no memory is retained.
        if unsafe { libc::setrlimit(libc::RLIMIT_CORE, &zero) } != 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    #[cfg(target_os = "linux")]
    {
        // SAFETY: prctl(PR_SET_DUMPABLE, 0) takes plain integers.
        if unsafe { libc::prctl(libc::PR_SET_DUMPABLE, 0, 0, 0, 0) } != 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn never_prints_its_value() {
        let s = Secret::new("hunter2-very-secret");
        assert!(!format!("{s:?} {s}").contains("hunter2"));
        assert_eq!(s.expose(), "hunter2-very-secret");
    }
}
