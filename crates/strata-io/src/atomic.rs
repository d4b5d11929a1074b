//! Atomic file writes: the bytes go to a temporary file created in the destination's own
//! folder (so the final rename never crosses file systems), are flushed to disk, and the
//! file is renamed over the destination with tempfile's `persist`. Readers see either the
//! old file or the complete new one; a failure (full disk, read-only folder, a crash)
//! removes the temporary file and leaves the destination as it was.

use std::io::{self, Write};
use std::path::{Path, PathBuf};

/// Writes `bytes` to `path` atomically, creating missing parent folders.
pub fn write(path: &Path, bytes: &[u8]) -> io::Result<()> {
    write_with(path, |w| w.write_all(bytes))
}

/// Like [`write`], with the content produced by `fill` writing into the temporary file.
/// If `fill` fails, nothing is renamed and the temporary file is removed.
pub fn write_with(
    path: &Path,
    fill: impl FnOnce(&mut dyn Write) -> io::Result<()>,
) -> io::Result<()> {
    let dir = parent_dir(path);
    std::fs::create_dir_all(&dir)?;
    let mut tmp = tempfile::Builder::new()
        .prefix(".strata-tmp-")
        .tempfile_in(&dir)?;
    {
        let mut buf = io::BufWriter::new(tmp.as_file_mut());
        fill(&mut buf)?;
        buf.flush()?;
    }
    tmp.as_file().sync_all()?;
    tmp.persist(path).map_err(|e| e.error)?;
    Ok(())
}

fn parent_dir(path: &Path) -> PathBuf {
    match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entries(dir: &Path) -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    }

    #[test]
    fn replaces_whole_file_and_creates_parents() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("a/b/out.txt");
        write(&p, b"first version, longer").unwrap();
        write(&p, b"second").unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), b"second");
        assert_eq!(entries(&d.path().join("a/b")), vec!["out.txt"]);
    }

    #[test]
    fn failed_fill_keeps_old_file_and_leaves_no_temporary() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("out.txt");
        write(&p, b"old").unwrap();
        let err = write_with(&p, |w| {
            w.write_all(b"partial")?;
            Err(io::Error::other("generator failed"))
        })
        .unwrap_err();
        assert_eq!(err.to_string(), "generator failed");
        assert_eq!(std::fs::read(&p).unwrap(), b"old");
        assert_eq!(entries(d.path()), vec!["out.txt"]);
    }

    #[test]
    fn destination_that_is_a_folder_is_an_error() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("dir");
        std::fs::create_dir(&p).unwrap();
        assert!(write(&p, b"x").is_err());
        assert_eq!(entries(d.path()), vec!["dir"]);
    }
}
