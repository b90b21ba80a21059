//! Writing models atomically: a randomly named temporary created exclusively (`O_EXCL`)
//! in the target folder, renamed over the target only once complete, and only when the
//! target is absent or a regular file that is none of the files the model was read from.
//! Temporaries still pending when the process is interrupted are removed by
//! [`exit_removing_temporaries`]. A reader, an error or an interruption never sees a
//! partial file. Like `cp`, it does not wait for the disk; with [`Durability::Fsync`] the
//! file is fsynced before the rename and its folder after.

use std::fs;
use std::io::Write;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use prost::Message;

use crate::io::{folder_of, kind_of, write_model, IoError, MAX_MODEL_BYTES};
use crate::proto::ModelProto;

/// Temporaries being written, removed by [`exit_removing_temporaries`] on interruption.
static PENDING: Mutex<Vec<PathBuf>> = Mutex::new(Vec::new());

fn pending() -> std::sync::MutexGuard<'static, Vec<PathBuf>> {
    PENDING.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Removes the temporary files of writes still in progress and exits with `code`,
/// holding the lock that [`save`] renames under, so no write completes afterwards. A
/// command-line tool calls it on SIGINT/SIGTERM, so an interrupted write leaves nothing.
pub fn exit_removing_temporaries(code: i32) -> ! {
    let mut registered = pending();
    for p in registered.drain(..) {
        let _ = fs::remove_file(p);
    }
    std::process::exit(code)
}

/// Checks that `path` may be written: it is absent or a regular file, and it is none of
/// `protected` (the model being converted and the files it reads, or anything else the
/// caller must not lose). Called by [`save`] before and after writing; callers can call it
/// up front to fail before any work.
pub fn check_output(path: &Path, protected: &[PathBuf]) -> Result<(), IoError> {
    let refused = |what: String| IoError::Refused { path: path.into(), what };
    if path.file_name().is_none() {
        return Err(refused("not a file name".into()));
    }
    match fs::metadata(path) {
        Ok(meta) => {
            if !meta.is_file() {
                return Err(refused(format!("{}, not a regular file", kind_of(&meta))));
            }
            for p in protected {
                if let Ok(other) = fs::metadata(p) {
                    if other.dev() == meta.dev() && other.ino() == meta.ino() {
                        return Err(refused(format!("a file the input model is read from ({})", p.display())));
                    }
                }
            }
            Ok(())
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            // A dangling symbolic link would be replaced, not followed: that is safe, but
            // say what the folder is if it does not exist.
            let folder = folder_of(path);
            if !folder.is_dir() {
                return Err(IoError::Write {
                    path: path.into(),
                    cause: std::io::Error::other("its folder does not exist"),
                });
            }
            Ok(())
        }
        Err(cause) => Err(IoError::Write { path: path.into(), cause }),
    }
}

/// Whether [`save_as`] waits for the disk.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Durability {
    /// Atomic against readers, errors and interruptions; the kernel writes the file back
    /// when it will (as `cp` leaves it).
    #[default]
    Atomic,
    /// Also fsync the file before the rename and the folder after it.
    Fsync,
}

/// Writes a model atomically to `path`; see the module documentation. `protected` lists
/// files that must not be overwritten ([`crate::LoadedModel::sources`] of the input).
pub fn save(model: &ModelProto, path: &Path, protected: &[PathBuf]) -> Result<(), IoError> {
    save_as(model, path, protected, Durability::Atomic)
}

/// [`save`], with the durability asked for.
pub fn save_as(model: &ModelProto, path: &Path, protected: &[PathBuf], durability: Durability) -> Result<(), IoError> {
    let size = model.encoded_len() as u64;
    if size > MAX_MODEL_BYTES {
        return Err(IoError::TooLarge { what: format!("the model for {}", path.display()), size });
    }
    save_with(path, protected, durability, &mut |f| {
        let mut w = std::io::BufWriter::with_capacity(1 << 20, f);
        write_model(model, &mut w)?;
        w.flush()
    })
}

/// Writes bytes atomically; see [`save`].
pub fn save_bytes(bytes: &[u8], path: &Path, protected: &[PathBuf]) -> Result<(), IoError> {
    save_with(path, protected, Durability::Atomic, &mut |mut f| f.write_all(bytes))
}

/// Writes a file atomically with `write`; see [`save`].
fn save_with(
    path: &Path,
    protected: &[PathBuf],
    durability: Durability,
    write: &mut dyn FnMut(&fs::File) -> std::io::Result<()>,
) -> Result<(), IoError> {
    check_output(path, protected)?;
    let werr = |cause| IoError::Write { path: path.into(), cause };
    let prefix = temporary_prefix(path);
    // The name is registered before the file exists, so an interruption at any point
    // finds it; the rename happens under the same lock, so an interruption either
    // removes the temporary or comes after a complete write.
    let mut names = Vec::new();
    let tmp = tempfile::Builder::new().prefix(&prefix).suffix(".tmp").make_in(folder_of(path), |p| {
        pending().push(p.to_path_buf());
        names.push(p.to_path_buf());
        fs::OpenOptions::new().write(true).create_new(true).mode(0o644).open(p)
    });
    let tmp = match tmp {
        Ok(t) => t,
        Err(e) => {
            pending().retain(|p| !names.contains(p));
            return Err(werr(e));
        }
    };
    let result = write(tmp.as_file()).and_then(|()| match durability {
        Durability::Fsync => tmp.as_file().sync_all(),
        Durability::Atomic => Ok(()),
    });
    let mut registered = pending();
    let outcome = match result {
        Err(e) => Err(werr(e)),
        Ok(()) => match check_output(path, protected) {
            Err(e) => Err(e),
            // On failure the temporary is removed when dropped (inside `persist`'s error too).
            Ok(()) => tmp.persist(path).map(|_| ()).map_err(|e| werr(e.error)),
        },
    };
    registered.retain(|p| !names.contains(p));
    drop(registered);
    if outcome.is_ok() && durability == Durability::Fsync {
        // The rename is on disk once the folder is.
        fs::File::open(folder_of(path)).and_then(|d| d.sync_all()).map_err(werr)?;
    }
    outcome
}

/// The prefix of a temporary beside `path`: `.`, the file name's first bytes and `.`,
/// short enough that the prefix, the random part and `.tmp` fit in a file name (255
/// bytes) whatever OUT's name, UTF-8 or not.
fn temporary_prefix(path: &Path) -> std::ffi::OsString {
    use std::os::unix::ffi::{OsStrExt, OsStringExt};
    const KEPT: usize = 200;
    let name = path.file_name().map(OsStrExt::as_bytes).unwrap_or_default();
    let mut prefix = Vec::with_capacity(KEPT + 2);
    prefix.push(b'.');
    prefix.extend_from_slice(&name[..name.len().min(KEPT)]);
    prefix.push(b'.');
    std::ffi::OsString::from_vec(prefix)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn models_with_the_longest_names_are_written_utf8_or_not() {
        use std::os::unix::ffi::OsStringExt;
        let dir = tempfile::tempdir().unwrap();
        let long_utf8 = "é".repeat(127) + "x";
        let non_utf8 = std::ffi::OsString::from_vec(vec![0xff; 255]);
        for name in [std::ffi::OsString::from(long_utf8), non_utf8] {
            let path = dir.path().join(&name);
            save_bytes(b"model", &path, &[]).unwrap();
            assert_eq!(fs::read(&path).unwrap(), b"model");
        }
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 2, "no temporary is left behind");
    }
}
