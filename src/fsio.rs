//! Writing output files so that a crash or a full disk never leaves half a plan: write a
//! temporary file beside the target, flush it to disk, then rename it over the target.

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
    if let Ok(meta) = std::fs::metadata(path) {
        if !meta.is_file() && !meta.is_dir() {
            let file = std::fs::OpenOptions::new().write(true).open(path)?;
            let mut writer = std::io::BufWriter::new(file);
            fill(&mut writer)?;
            return writer.flush();
        }
    }
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    let file_name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = dir.join(format!(".{file_name}.{}.tmp", std::process::id()));
    let result = (|| {
        let file = std::fs::File::create(&tmp)?;
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
            use std::os::unix::fs::FileTypeExt;
            write_atomically(Path::new("/dev/null"), b"discarded").unwrap();
            let meta = std::fs::metadata("/dev/null").unwrap();
            assert!(
                meta.file_type().is_char_device(),
                "/dev/null must stay a device"
            );
        }
    }
}
