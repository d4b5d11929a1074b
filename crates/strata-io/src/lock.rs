//! One writer per output folder: a command that writes a folder (a training run, a demo, an
//! eval, generated images) holds an exclusive advisory lock on `FOLDER/.strata.lock` for as
//! long as it runs. A second command aimed at the same folder fails at once with a message
//! naming the folder and the process that holds it, instead of both writing checkpoints,
//! manifests and images over each other.
//!
//! The lock is the operating system's (`flock` on Unix, `LockFileEx` on Windows, through
//! `std::fs::File::try_lock`): it is released when the process ends, however it ends, so a
//! killed run never leaves a stale lock behind. The lock file itself stays (it is empty but
//! for the holder's process id) and is harmless.

use std::fs::{File, OpenOptions, TryLockError};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

/// Name of the lock file inside a locked folder.
pub const LOCK_FILE: &str = ".strata.lock";

/// An exclusive lock on a folder, held until dropped (or the process ends).
#[derive(Debug)]
pub struct FolderLock {
    _file: File,
    path: PathBuf,
}

/// Why a folder could not be locked.
#[derive(Debug)]
pub enum LockError {
    /// Another process holds it; `holder` is the process id it wrote, when readable.
    Busy {
        dir: PathBuf,
        holder: Option<u32>,
    },
    Io {
        dir: PathBuf,
        source: io::Error,
    },
}

impl std::fmt::Display for LockError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            LockError::Busy { dir, holder } => {
                write!(f, "{} is in use by another strata process", dir.display())?;
                if let Some(pid) = holder {
                    write!(f, " (pid {pid})")?;
                }
                write!(
                    f,
                    "; wait for it to finish or stop it, or choose another output folder"
                )
            }
            LockError::Io { dir, source } => write!(
                f,
                "cannot lock {} ({}): {source}; check the folder is writable",
                dir.display(),
                LOCK_FILE
            ),
        }
    }
}

impl std::error::Error for LockError {}

impl FolderLock {
    /// Creates `dir` if missing and locks it, failing at once if another process holds it.
    pub fn acquire(dir: &Path) -> Result<FolderLock, LockError> {
        let io = |source| LockError::Io {
            dir: dir.to_path_buf(),
            source,
        };
        std::fs::create_dir_all(dir).map_err(io)?;
        let path = dir.join(LOCK_FILE);
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(io)?;
        match file.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => {
                let mut s = String::new();
                let holder = file
                    .read_to_string(&mut s)
                    .ok()
                    .and_then(|_| s.trim().parse().ok());
                return Err(LockError::Busy {
                    dir: dir.to_path_buf(),
                    holder,
                });
            }
            Err(TryLockError::Error(e)) => return Err(io(e)),
        }
        // best effort: the pid only improves the message of a second process
        let _ = file.set_len(0).and_then(|_| {
            file.seek(SeekFrom::Start(0))?;
            write!(file, "{}", std::process::id())?;
            file.flush()
        });
        Ok(FolderLock { _file: file, path })
    }

    /// The lock file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_lock_on_the_same_folder_is_refused_until_the_first_is_dropped() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("run");
        let first = FolderLock::acquire(&dir).unwrap();
        let e = FolderLock::acquire(&dir).unwrap_err();
        let msg = e.to_string();
        assert!(msg.contains("in use by another strata process"), "{msg}");
        assert!(
            msg.contains(&format!("pid {}", std::process::id())),
            "{msg}"
        );
        drop(first);
        FolderLock::acquire(&dir).expect("free again after the holder is gone");
    }
}
