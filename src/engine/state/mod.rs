//! Where a run's state lives: a local directory (`.rekey/`, the default) or an S3 prefix
//! (`s3://BUCKET/PREFIX`), for CI runners that come and go (DESIGN.md, "Shared state").
//!
//! The journal, the stash and the lock keep their APIs whatever the backend: a state location is
//! named by the same `state_dir` path everywhere (`ApplyOptions::state_dir`, `--state-dir`), and
//! a path spelled `s3://…` is the S3 backend. [`StateLocation::of`] is the one place that tells
//! them apart.
//!
//! - [`s3`]: the S3 store (conditional writes), the write-through journal cache and the
//!   per-target ordered write chains;
//! - [`lease`]: the lock on S3, a lease its holder renews and another runner may take over only
//!   after it expired;
//! - [`admin`]: `rekey state list | show | unlock | migrate`.
//!
//! On S3, under the prefix:
//!
//! ```text
//! lock.json                                  the lease (If-None-Match: * to take, If-Match to renew)
//! runs/<run>/run.json                        the run and its plan text (written once)
//! runs/<run>/status.json                     the run's status
//! runs/<run>/events/<target>/<n>.json        a target's batch n of journal records and its
//!                                            displayed state, If-None-Match: * (never two writers)
//! runs/<run>/stash/<target>.json             the stash ciphertext (XChaCha20-Poly1305, never plaintext)
//! ```

pub mod admin;
pub mod lease;
pub mod records;
pub mod s3;

use std::path::{Path, PathBuf};

/// Environment variable naming the state location (a directory or `s3://BUCKET/PREFIX`); the
/// command line wins over it.
pub const STATE_ENV: &str = "REKEY_STATE";

/// Environment variable with a KMS key id (or ARN, or alias): every object rekey writes to S3
/// state is then encrypted server-side with it (SSE-KMS), on top of the stash's own encryption.
pub const KMS_KEY_ENV: &str = "REKEY_STATE_KMS_KEY_ID";

/// Whether `name` can be an S3 bucket's: 3 to 63 lowercase letters, digits, `-` or `.` (the
/// one check for every `s3://` location rekey reads: states, Athena tables).
pub fn is_bucket_name(name: &str) -> bool {
    (3..=63).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.')
}

/// Where a state lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StateLocation {
    Local(PathBuf),
    S3(S3Location),
}

/// `s3://BUCKET/PREFIX`: the prefix is normalized to end with `/` (or to be empty).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct S3Location {
    pub bucket: String,
    pub prefix: String,
}

impl std::fmt::Display for S3Location {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "s3://{}/{}", self.bucket, self.prefix)
    }
}

impl StateLocation {
    /// The backend a `state_dir` names: `s3://BUCKET[/PREFIX]` is S3, anything else a directory.
    pub fn of(state_dir: &Path) -> Result<StateLocation, String> {
        let text = state_dir.to_string_lossy();
        let Some(rest) = text.strip_prefix("s3://") else {
            return Ok(StateLocation::Local(state_dir.to_path_buf()));
        };
        let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
        if !is_bucket_name(bucket) {
            return Err(format!(
                "{text}: {bucket:?} is not an S3 bucket name (3 to 63 lowercase letters, digits, \
                 '-' or '.'); help: name the state as s3://BUCKET/PREFIX"
            ));
        }
        let prefix = prefix.trim_matches('/');
        if prefix
            .split('/')
            .any(|part| part == "." || part == ".." || (part.is_empty() && !prefix.is_empty()))
            || prefix.chars().any(char::is_control)
        {
            return Err(format!(
                "{text}: the prefix {prefix:?} has an empty, '.' or '..' part or a control \
                 character; help: use a plain prefix such as s3://{bucket}/rekey/prod"
            ));
        }
        Ok(StateLocation::S3(S3Location {
            bucket: bucket.to_string(),
            prefix: if prefix.is_empty() {
                String::new()
            } else {
                format!("{prefix}/")
            },
        }))
    }

    /// A local directory for files that stay on this machine whatever the backend (hunt
    /// findings): the state directory itself, or `.rekey/` beside an S3 state.
    pub fn local_dir(state_dir: &Path) -> PathBuf {
        match StateLocation::of(state_dir) {
            Ok(StateLocation::Local(dir)) => dir,
            _ => PathBuf::from(super::journal::DEFAULT_STATE_DIR),
        }
    }
}

/// A target id as one S3 key segment: letters, digits, `.`, `_` and `-` as they are, every
/// other byte `%XX`, so that no id can reach another key (`/`, `..`).
pub(crate) fn key_segment(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for b in text.bytes() {
        if b.is_ascii_alphanumeric()
            || b == b'_'
            || b == b'-'
            || (b == b'.' && !text.starts_with('.'))
        {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    if out.is_empty() {
        out.push_str("%00");
    }
    out
}

/// The inverse of [`key_segment`]; `None` for text it cannot have written.
pub(crate) fn parse_key_segment(text: &str) -> Option<String> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = text.get(i + 1..i + 3)?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    if out == [0] {
        return Some(String::new());
    }
    String::from_utf8(out).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locations_parse() {
        assert_eq!(
            StateLocation::of(Path::new(".rekey")).unwrap(),
            StateLocation::Local(PathBuf::from(".rekey"))
        );
        let StateLocation::S3(s3) = StateLocation::of(Path::new("s3://my-bucket/a/b/")).unwrap()
        else {
            panic!("not s3")
        };
        assert_eq!(
            (s3.bucket.as_str(), s3.prefix.as_str()),
            ("my-bucket", "a/b/")
        );
        assert_eq!(s3.to_string(), "s3://my-bucket/a/b/");
        let StateLocation::S3(s3) = StateLocation::of(Path::new("s3://my-bucket")).unwrap() else {
            panic!("not s3")
        };
        assert_eq!(s3.prefix, "");
        for bad in [
            "s3://",
            "s3://UPPER/x",
            "s3://b/../x",
            "s3://bucket/a//b",
            "s3://bu",
        ] {
            assert!(StateLocation::of(Path::new(bad)).is_err(), "{bad} accepted");
        }
    }

    #[test]
    fn key_segments_round_trip_and_never_escape() {
        for id in ["aws-ci-deployer", "a/b", "..", ".hidden", "x y%z", "", "é"] {
            let seg = key_segment(id);
            assert!(
                !seg.contains('/') && seg != ".." && seg != ".",
                "{id:?} → {seg}"
            );
            assert_eq!(parse_key_segment(&seg).as_deref(), Some(id));
        }
    }
}
