//! Writing output files so that a crash or a full disk never leaves half a plan: write a
//! temporary file beside the target, flush it to disk, then rename it over the target.
//!
//! The temporary file is made safely in a directory others may write to: an unpredictable
//! name, created exclusively (`O_EXCL`: an existing file or symlink of that name is an error,
//! never followed), owner-only (0600) from the first byte.

use std::io::Write;
use std::path::Path;

pub fn write_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    write_atomically_with(path, |file| file.write_all(bytes))
}

/// Like [`write_atomically`], for content produced by `fill` as a stream (a buffered writer
/// over the temporary file), so large outputs never sit whole in memory.
pub fn write_atomically_with(
    path: &Path,
    fill: impl FnOnce(&mut dyn Write) -> std::io::Result<()>,
) -> std::io::Result<()> {
    // A device or pipe (/dev/stdout, /dev/null, a FIFO) is written in place: renaming a
    // temporary file over it would replace the device with a regular file.
    if let Ok(meta) = std::fs::metadata(path)
        && !meta.is_file()
        && !meta.is_dir()
    {
        let file = std::fs::OpenOptions::new().write(true).open(path)?;
        let mut writer = std::io::BufWriter::new(file);
        fill(&mut writer)?;
        return writer.flush();
    }
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    let file_name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = dir.join(format!(".{file_name}.{}.tmp", random_suffix()?));
    let result = (|| {
        let file = create_exclusive(&tmp)?;
        let mut writer = std::io::BufWriter::with_capacity(256 * 1024, file);
        fill(&mut writer)?;
        let file = writer.into_inner().map_err(|e| e.into_error())?;
        file.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

/// 16 random hex digits: a name nobody can prepare in advance.
fn random_suffix() -> std::io::Result<String> {
    let mut bytes = [0u8; 8];
    getrandom::fill(&mut bytes).map_err(|e| std::io::Error::other(e.to_string()))?;
    Ok(hex::encode(bytes))
}

/// A new file, owner-only, that must not exist yet (a symlink in its place is not followed).
fn create_exclusive(path: &Path) -> std::io::Result<std::fs::File> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600).custom_flags(libc::O_NOFOLLOW);
    }
    options.open(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replaces_regular_files_and_writes_devices_in_place() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("out.txt");
        write_atomically(&path, b"one").unwrap();
        write_atomically(&path, b"two").unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"two");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o077, 0, "owner-only: {mode:o}");
        }
        #[cfg(unix)]
        {
            use std::os::unix::fs::FileTypeExt;
            write_atomically(Path::new("/dev/null"), b"discarded").unwrap();
            let meta = std::fs::metadata("/dev/null").unwrap();
            assert!(
                meta.file_type().is_char_device(),
                "/dev/null must stay a device"
            );
        }
    }

    /// Someone who can write to the output's directory prepares a symlink where the old code
    /// put its temporary file (`.NAME.PID.tmp`): the victim it points to must stay untouched.
    #[cfg(unix)]
    #[test]
    fn a_prepared_symlink_is_never_followed() {
        let dir = tempfile::tempdir().unwrap();
        let victim = dir.path().join("victim");
        std::fs::write(&victim, b"precious").unwrap();
        let path = dir.path().join("report.md");
        let predictable = dir
            .path()
            .join(format!(".report.md.{}.tmp", std::process::id()));
        std::os::unix::fs::symlink(&victim, &predictable).unwrap();
        write_atomically(&path, b"the report").unwrap();
        assert_eq!(std::fs::read(&victim).unwrap(), b"precious");
        assert_eq!(std::fs::read(&path).unwrap(), b"the report");
        assert!(
            !std::fs::symlink_metadata(&path)
                .unwrap()
                .file_type()
                .is_symlink()
        );
        // An exclusive create refuses a symlink in its place.
        assert!(create_exclusive(&predictable).is_err());
        assert_eq!(std::fs::read(&victim).unwrap(), b"precious");
    }
}
