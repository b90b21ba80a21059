//! Model files mapped read-only into memory. Decoding a mapped model touches only the
//! pages it parses: tensor data stays in the page cache until something reads it, and
//! [`crate::save`] copies it from file to file (`copy_file_range`) without passing it
//! through this process. A 95 MB model then costs a conversion about what a file copy
//! costs, and its data never counts in the converter's resident memory.
//!
//! A mapped file can change under the reader. A file that shrinks makes reads past its
//! new end fault (`SIGBUS`); the handler installed here replaces the pages from the fault
//! on by zeros and marks the mapping, so the process never dies of it, and
//! [`MappedFile::unchanged`] (which the writer calls before renaming its output into
//! place) refuses a model read from a file that shrank, grew or was rewritten after it
//! was mapped. Faults outside every mapping go to the handler that was there before.

use std::fs::File;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};

use prost::bytes::Bytes;

/// Mappings the fault handler knows: the base address and length of each (0 when free),
/// and whether a read past its file's end was faulted in as zeros. Fixed-size and
/// lock-free, since the handler may read it at any instant; a process that maps more
/// files at once reads the others instead.
const SLOTS: usize = 64;
#[allow(clippy::declare_interior_mutable_const)]
const FREE: Slot = Slot { base: AtomicUsize::new(0), len: AtomicUsize::new(0), faulted: AtomicBool::new(false) };
static MAPPINGS: [Slot; SLOTS] = [FREE; SLOTS];

struct Slot {
    base: AtomicUsize,
    len: AtomicUsize,
    faulted: AtomicBool,
}

/// The `SIGBUS` action in place before ours, restored for faults that are not ours.
static PREVIOUS: OnceLock<Option<libc::sigaction>> = OnceLock::new();
static PAGE: AtomicUsize = AtomicUsize::new(4096);

/// What identifies a file's contents at the moment it was mapped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Identity {
    dev: u64,
    ino: u64,
    len: u64,
    mtime: (i64, i64),
    ctime: (i64, i64),
}

impl Identity {
    fn of(meta: &std::fs::Metadata) -> Self {
        Identity {
            dev: meta.dev(),
            ino: meta.ino(),
            len: meta.len(),
            mtime: (meta.mtime(), meta.mtime_nsec()),
            ctime: (meta.ctime(), meta.ctime_nsec()),
        }
    }
}

/// A regular file mapped read-only, with the handle it was mapped from.
pub struct MappedFile {
    path: PathBuf,
    file: File,
    base: usize,
    len: usize,
    slot: usize,
    identity: Identity,
}

// SAFETY: the mapping is read-only and private, and lives until the value is dropped;
// sharing its address between threads is as safe as sharing a `&[u8]`.
unsafe impl Send for MappedFile {}
unsafe impl Sync for MappedFile {}

impl std::fmt::Debug for MappedFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MappedFile").field("path", &self.path).field("len", &self.len).finish()
    }
}

impl MappedFile {
    /// Maps `file` (opened from `path`, a non-empty regular file described by `meta`).
    /// `None` when the system refuses the mapping or every slot is taken: the caller
    /// reads the file instead.
    pub(crate) fn map(path: &Path, file: File, meta: &std::fs::Metadata) -> Option<Arc<MappedFile>> {
        let len = usize::try_from(meta.len()).ok().filter(|&l| l > 0)?;
        install_handler();
        let slot = MAPPINGS
            .iter()
            .position(|s| s.len.compare_exchange(0, len, Ordering::AcqRel, Ordering::Acquire).is_ok())?;
        use std::os::fd::AsRawFd;
        // SAFETY: a fresh read-only private mapping of an open file; nothing else refers
        // to the range until it is registered below.
        let at =
            unsafe { libc::mmap(std::ptr::null_mut(), len, libc::PROT_READ, libc::MAP_PRIVATE, file.as_raw_fd(), 0) };
        if at == libc::MAP_FAILED {
            MAPPINGS[slot].len.store(0, Ordering::Release);
            return None;
        }
        MAPPINGS[slot].faulted.store(false, Ordering::Release);
        MAPPINGS[slot].base.store(at as usize, Ordering::Release);
        Some(Arc::new(MappedFile {
            path: path.to_path_buf(),
            file,
            base: at as usize,
            len,
            slot,
            identity: Identity::of(meta),
        }))
    }

    /// The whole file as shared bytes: slices of it (a tensor's `raw_data`) keep the
    /// mapping alive and point into it.
    pub fn bytes(self: &Arc<Self>) -> Bytes {
        Bytes::from_owner(View(self.clone()))
    }

    /// Where `data` lies in the file, if it points into this mapping.
    pub fn offset_of(&self, data: &[u8]) -> Option<u64> {
        let at = data.as_ptr() as usize;
        (at >= self.base && at + data.len() <= self.base + self.len).then(|| (at - self.base) as u64)
    }

    /// The open file the mapping was made from.
    pub fn file(&self) -> &File {
        &self.file
    }

    /// The path it was opened as.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Fails when the file is no longer what was mapped: a read past its end faulted, or
    /// its size, modification or change time differ from those it had when mapped.
    pub fn unchanged(&self) -> Result<(), String> {
        if MAPPINGS[self.slot].faulted.load(Ordering::Acquire) {
            return Err("it shrank while it was being read".into());
        }
        let now = self.file.metadata().map_err(|e| format!("it cannot be checked: {e}"))?;
        if Identity::of(&now) != self.identity {
            return Err("it was modified while it was being read".into());
        }
        Ok(())
    }

    fn as_slice(&self) -> &[u8] {
        // SAFETY: `base..base + len` is this value's own live mapping.
        unsafe { std::slice::from_raw_parts(self.base as *const u8, self.len) }
    }
}

impl Drop for MappedFile {
    fn drop(&mut self) {
        // Unregister first, so the handler never claims a range being unmapped.
        MAPPINGS[self.slot].base.store(0, Ordering::Release);
        // SAFETY: unmaps this value's own mapping; no slice of it outlives the value,
        // since every `Bytes` view holds an `Arc` to it.
        unsafe { libc::munmap(self.base as *mut libc::c_void, self.len) };
        MAPPINGS[self.slot].len.store(0, Ordering::Release);
    }
}

/// The owner behind [`MappedFile::bytes`].
struct View(Arc<MappedFile>);

impl AsRef<[u8]> for View {
    fn as_ref(&self) -> &[u8] {
        self.0.as_slice()
    }
}

/// Installs the `SIGBUS` handler once per process.
fn install_handler() {
    PREVIOUS.get_or_init(|| {
        // SAFETY: sysconf and sigaction with a fully initialised action; the handler
        // below only makes async-signal-safe calls (mmap, sigaction) and atomic reads.
        unsafe {
            let page = libc::sysconf(libc::_SC_PAGESIZE);
            if page > 0 {
                PAGE.store(page as usize, Ordering::Relaxed);
            }
            let mut action: libc::sigaction = std::mem::zeroed();
            action.sa_sigaction = on_sigbus as *const () as usize;
            action.sa_flags = libc::SA_SIGINFO | libc::SA_ONSTACK;
            libc::sigemptyset(&mut action.sa_mask);
            let mut previous: libc::sigaction = std::mem::zeroed();
            (libc::sigaction(libc::SIGBUS, &action, &mut previous) == 0).then_some(previous)
        }
    });
}

extern "C" fn on_sigbus(_signal: libc::c_int, info: *mut libc::siginfo_t, _context: *mut libc::c_void) {
    // SAFETY: the kernel passes a valid siginfo for SA_SIGINFO handlers.
    let at = unsafe { (*info).si_addr() } as usize;
    let page = PAGE.load(Ordering::Relaxed);
    for slot in &MAPPINGS {
        let base = slot.base.load(Ordering::Acquire);
        let len = slot.len.load(Ordering::Acquire);
        if base == 0 || at < base || at >= base + len {
            continue;
        }
        // The file ends before `at`: everything from its page to the mapping's end lies
        // past the end, so it all reads as zeros from now on.
        let from = at & !(page - 1);
        let end = (base + len).next_multiple_of(page);
        // SAFETY: replaces pages of our own mapping (which faulted: they have no file
        // behind them) by anonymous zero pages, in place.
        let zeros = unsafe {
            libc::mmap(
                from as *mut libc::c_void,
                end - from,
                libc::PROT_READ,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_FIXED,
                -1,
                0,
            )
        };
        if zeros != libc::MAP_FAILED {
            slot.faulted.store(true, Ordering::Release);
            return;
        }
    }
    // Not a fault of ours: put the previous action back; the faulting access repeats
    // under it (the default action ends the process, as it would have).
    // SAFETY: restores an action the system gave us, or the default.
    unsafe {
        match PREVIOUS.get().copied().flatten() {
            Some(previous) => libc::sigaction(libc::SIGBUS, &previous, std::ptr::null_mut()),
            None => {
                let mut default: libc::sigaction = std::mem::zeroed();
                default.sa_sigaction = libc::SIG_DFL;
                libc::sigaction(libc::SIGBUS, &default, std::ptr::null_mut())
            }
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn mapped(bytes: &[u8]) -> (tempfile::TempDir, PathBuf, Arc<MappedFile>) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m.bin");
        std::fs::write(&path, bytes).unwrap();
        let file = File::open(&path).unwrap();
        let meta = file.metadata().unwrap();
        let m = MappedFile::map(&path, file, &meta).unwrap();
        (dir, path, m)
    }

    #[test]
    fn bytes_are_the_file_and_offsets_point_into_it() {
        let data: Vec<u8> = (0..100_000u32).map(|i| (i % 251) as u8).collect();
        let (_dir, _path, m) = mapped(&data);
        let b = m.bytes();
        assert_eq!(&b[..], &data[..]);
        let part = b.slice(5000..6000);
        assert_eq!(m.offset_of(&part), Some(5000));
        assert_eq!(m.offset_of(&data[..10]), None);
        assert!(m.unchanged().is_ok());
    }

    #[test]
    fn a_file_that_shrinks_reads_as_zeros_and_is_reported() {
        let page = PAGE.load(Ordering::Relaxed).max(4096);
        let data = vec![7u8; page * 8];
        let (_dir, path, m) = mapped(&data);
        let b = m.bytes();
        std::fs::OpenOptions::new().write(true).open(&path).unwrap().set_len(page as u64).unwrap();
        // Past the new end: a fault, handled, not the end of the test process.
        let tail = b[page * 4..].iter().map(|&x| x as u64).sum::<u64>();
        assert_eq!(tail, 0);
        assert_eq!(b[0], 7);
        assert!(m.unchanged().unwrap_err().contains("shrank"));
    }

    #[test]
    fn a_file_rewritten_in_place_is_reported() {
        let (_dir, path, m) = mapped(&[1u8; 10_000]);
        std::thread::sleep(std::time::Duration::from_millis(20));
        let mut f = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
        f.write_all(&[2u8; 100]).unwrap();
        drop(f);
        assert!(m.unchanged().unwrap_err().contains("modified"));
    }

    #[test]
    fn slots_are_reused() {
        for _ in 0..(SLOTS * 2) {
            let (_dir, _path, m) = mapped(&[3u8; 100]);
            assert_eq!(m.bytes()[99], 3);
        }
    }
}
