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
use std::sync::{Arc, Mutex};

use prost::Message;

use crate::io::{folder_of, kind_of, write_model_with, IoError, LoadedModel, MAX_MODEL_BYTES};
use crate::mapped::MappedFile;
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
    save_model(model, path, protected, &[], durability)
}

/// Writes a model converted from `loaded` atomically to `path`, as [`save_as`] does,
/// never over one of `loaded`'s source files. Tensor data that still points into one of
/// `loaded`'s mapped files is copied from that file to the output by the kernel
/// (`copy_file_range`), not through this process. Refused, with nothing written, when a
/// source file changed after it was read.
pub fn save_loaded(
    model: &ModelProto,
    path: &Path,
    loaded: &LoadedModel,
    durability: Durability,
) -> Result<(), IoError> {
    save_model(model, path, &loaded.sources, &loaded.mapped, durability)
}

/// Writes `model`, streamed; large tensor data that points into one of `mapped` is
/// copied from that file (none of them may have changed since it was mapped).
fn save_model(
    model: &ModelProto,
    path: &Path,
    protected: &[PathBuf],
    mapped: &[Arc<MappedFile>],
    durability: Durability,
) -> Result<(), IoError> {
    let size = model.encoded_len() as u64;
    if size > MAX_MODEL_BYTES {
        return Err(IoError::TooLarge { what: format!("the model for {}", path.display()), size });
    }
    let unchanged = || -> std::io::Result<()> {
        for m in mapped {
            m.unchanged().map_err(|why| std::io::Error::other(format!("the input {} {why}", m.path().display())))?;
        }
        Ok(())
    };
    unchanged().map_err(|cause| IoError::Write { path: path.into(), cause })?;
    save_with(path, protected, durability, &mut |f, _| {
        let mut w = std::io::BufWriter::with_capacity(1 << 20, f);
        write_model_with(model, &mut w, &mut |w, raw| match mapped
            .iter()
            .find_map(|m| m.offset_of(raw).map(|at| (m, at)))
        {
            Some((m, at)) => {
                w.flush()?;
                copy_range(m.file(), at, w.get_ref(), raw)
            }
            None => w.write_all(raw),
        })?;
        w.flush()?;
        // The copies read the source files again: what they wrote is what was read only
        // if nothing changed since.
        unchanged()
    })
}

/// Appends `data`, which is the bytes of `source` at `offset`, to `out` at its current
/// position: by `copy_file_range` where the system has it for these two files, from
/// memory otherwise.
fn copy_range(source: &fs::File, offset: u64, out: &fs::File, data: &[u8]) -> std::io::Result<()> {
    use std::os::fd::AsRawFd;
    use std::sync::atomic::{AtomicBool, Ordering};
    /// Set once the system refuses the call, so later copies write from memory at once.
    static UNSUPPORTED: AtomicBool = AtomicBool::new(false);
    let mut done = 0usize;
    let mut at = offset as libc::loff_t;
    while !UNSUPPORTED.load(Ordering::Relaxed) && done < data.len() {
        // SAFETY: two open descriptors; `at` is ours; the output's own position is used
        // and advanced.
        let n = unsafe {
            libc::copy_file_range(
                source.as_raw_fd(),
                &mut at,
                out.as_raw_fd(),
                std::ptr::null_mut(),
                data.len() - done,
                0,
            )
        };
        match n {
            n if n > 0 => done += n as usize,
            0 => {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::UnexpectedEof,
                    "the input ended before its tensor data",
                ))
            }
            _ => {
                let e = std::io::Error::last_os_error();
                match e.raw_os_error() {
                    Some(libc::EINTR) => {}
                    Some(libc::EXDEV | libc::ENOSYS | libc::EOPNOTSUPP | libc::EINVAL) if done == 0 => {
                        UNSUPPORTED.store(true, Ordering::Relaxed)
                    }
                    _ => return Err(e),
                }
            }
        }
    }
    let mut out = out;
    out.write_all(&data[done..])
}

/// Writes bytes atomically; see [`save`].
pub fn save_bytes(bytes: &[u8], path: &Path, protected: &[PathBuf]) -> Result<(), IoError> {
    save_with(path, protected, Durability::Atomic, &mut |mut f, _| f.write_all(bytes))
}

/// Writes a file atomically with `write`, which is given the temporary's path (for a
/// writer that opens files by name, such as another process); see [`save`]. The
/// temporary exists, empty, when `write` is called.
pub fn save_by_path(
    path: &Path,
    protected: &[PathBuf],
    write: &mut dyn FnMut(&Path) -> std::io::Result<()>,
) -> Result<(), IoError> {
    save_with(path, protected, Durability::Atomic, &mut |_, temporary| write(temporary))
}

/// Writes a file atomically with `write`; see [`save`].
fn save_with(
    path: &Path,
    protected: &[PathBuf],
    durability: Durability,
    write: &mut dyn FnMut(&fs::File, &Path) -> std::io::Result<()>,
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
    let result = write(tmp.as_file(), tmp.path()).and_then(|()| match durability {
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
