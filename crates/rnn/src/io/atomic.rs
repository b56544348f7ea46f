//! Writing a file so that nothing is ever lost: the old file or the new one, never half of one.
//!
//! A save writes a temporary file of its own beside the target, syncs it, and renames it over
//! the target, the one step a file system does atomically. The invariants:
//!
//! - **One temporary file per save.** Its name is `.{target}.unroll-tmp.{pid}.{n}`, created with
//!   `create_new`, so two saves (threads or processes) never share one; two racing saves both
//!   succeed and the file holds the one that renamed last.
//! - **No temporary file outlives its save.** A save that fails removes its own; a save that
//!   dies (killed, power cut) leaves one behind, and the next save to the same target removes
//!   it. A live save holds an exclusive lock on its temporary file for its whole life, so a
//!   temporary file that can be locked belongs to a dead save. (Where the file system has no
//!   locks, nothing is removed.) The race between creating a file and locking it is closed by
//!   the creator: after locking, it checks that its file is still there, and starts over with a
//!   new name if a cleaner removed it.
//! - **The target is what a careful editor writes**: through a symbolic link, the file it
//!   points to (the link stays a link); over an existing file, with that file's permissions; a
//!   read-only file is refused, not replaced.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

/// Links followed before giving up, as Linux's `ELOOP` limit.
const MAX_LINKS: usize = 40;

/// The part of a temporary file's name after the target's name.
const TMP_MARK: &str = ".unroll-tmp.";

/// Writes `bytes` to `path` atomically (see the module doc).
///
/// # Errors
/// If the target is read-only or not a regular file, or creating, writing, syncing or renaming
/// fails; the target is unchanged then, and no temporary file is left.
pub(crate) fn write_atomically(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let target = resolve_links(path)?;
    let name = target
        .file_name()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "the path has no file name"))?
        .to_string_lossy()
        .into_owned();
    let dir = match target.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let permissions = match fs::metadata(&target) {
        Ok(m) if !m.is_file() => {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "the target exists and is not a regular file",
            ))
        }
        Ok(m) if m.permissions().readonly() => {
            return Err(io::Error::new(
                io::ErrorKind::PermissionDenied,
                "the file is read-only (make it writable to replace it)",
            ))
        }
        Ok(m) => Some(m.permissions()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => None,
        Err(e) => return Err(e),
    };
    remove_stale_temporaries(&dir, &name);
    let (tmp, mut file) = create_temporary(&dir, &name)?;
    let result = (|| {
        file.write_all(bytes)?;
        if let Some(p) = permissions {
            file.set_permissions(p)?;
        }
        file.sync_all()?;
        fs::rename(&tmp, &target)
    })();
    if let Err(e) = result {
        let _ = fs::remove_file(&tmp);
        return Err(e);
    }
    // The rename is durable once the directory is synced. The new file is in place whatever
    // this returns, so a failure here is not the save's failure.
    if let Ok(d) = File::open(&dir) {
        let _ = d.sync_all();
    }
    Ok(())
}

/// `path` with every symbolic link along its last component followed, so that a save through
/// a link writes the file it points to. A dangling link gives the path it points to.
fn resolve_links(path: &Path) -> io::Result<PathBuf> {
    let mut target = path.to_path_buf();
    for _ in 0..MAX_LINKS {
        match fs::symlink_metadata(&target) {
            Ok(m) if m.file_type().is_symlink() => {
                let link = fs::read_link(&target)?;
                // `join` keeps an absolute link as it is.
                target = match target.parent() {
                    Some(dir) => dir.join(link),
                    None => link,
                };
            }
            _ => return Ok(target),
        }
    }
    Err(io::Error::other(format!(
        "more than {MAX_LINKS} levels of symbolic links"
    )))
}

/// A new temporary file for `name` in `dir`, created by this call alone and locked.
fn create_temporary(dir: &Path, name: &str) -> io::Result<(PathBuf, File)> {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    loop {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let tmp = dir.join(format!(".{name}{TMP_MARK}{}.{n}", std::process::id()));
        let file = match OpenOptions::new().write(true).create_new(true).open(&tmp) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(e),
        };
        // Without locks (some network file systems) nobody can tell this file from a dead
        // save's, and nobody removes it: go on unlocked.
        let locked = file.lock().is_ok();
        // A cleaner may have locked and removed the file between its creation and our lock;
        // names are never reused, so if the name is still there it is still ours.
        if !locked || tmp.exists() {
            return Ok((tmp, file));
        }
    }
}

/// Removes the temporary files of saves to `name` in `dir` that died: those nobody holds a
/// lock on. Best effort: errors leave the file in place.
fn remove_stale_temporaries(dir: &Path, name: &str) {
    let prefix = format!(".{name}{TMP_MARK}");
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        if !entry.file_name().to_string_lossy().starts_with(&prefix) {
            continue;
        }
        let path = entry.path();
        let Ok(file) = File::open(&path) else {
            continue;
        };
        if file.try_lock().is_ok() {
            // Still holding the lock, so that a creator racing us sees its file gone.
            let _ = fs::remove_file(&path);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A directory of its own under the system temp dir, removed on drop.
    struct Dir(PathBuf);

    impl Dir {
        fn new(name: &str) -> Self {
            let d =
                std::env::temp_dir().join(format!("unroll-atomic-{}-{name}", std::process::id()));
            let _ = fs::remove_dir_all(&d);
            fs::create_dir_all(&d).unwrap();
            Dir(d)
        }

        fn entries(&self) -> Vec<String> {
            let mut v: Vec<String> = fs::read_dir(&self.0)
                .unwrap()
                .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect();
            v.sort();
            v
        }
    }

    impl Drop for Dir {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.0);
        }
    }

    #[test]
    fn a_dead_saves_temporary_is_removed_a_live_ones_is_kept() {
        let dir = Dir::new("stale");
        let target = dir.0.join("w.safetensors");
        // A dead save: its temporary file is there, unlocked.
        let dead = dir.0.join(format!(".w.safetensors{TMP_MARK}1.7"));
        fs::write(&dead, b"half a file").unwrap();
        // A live save: created and locked by this process, as create_temporary does.
        let (live, file) = create_temporary(&dir.0, "w.safetensors").unwrap();
        // Someone else's file of a similar name is not ours to remove.
        let other = dir.0.join(".w.safetensors.tmp-99");
        fs::write(&other, b"not ours").unwrap();
        write_atomically(&target, b"new").unwrap();
        assert!(
            !dead.exists(),
            "the dead save's temporary file is still there"
        );
        assert!(live.exists(), "a live save's temporary file was removed");
        assert!(other.exists());
        assert_eq!(fs::read(&target).unwrap(), b"new");
        drop(file);
        write_atomically(&target, b"newer").unwrap();
        assert_eq!(dir.entries(), [".w.safetensors.tmp-99", "w.safetensors"]);
    }
}
