//! Disk facts and durable writes: free space (statvfs), sizes, fsync of files, directories
//! and whole filesystems, atomic file replacement and unique temporary names.

use std::io::Write;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use super::errors::{fs_err, FsError, NotEnoughSpace};

/// Kept free on top of every estimate: estimates are approximate and a full disk hurts
/// PostgreSQL and Odoo more than a refused snapshot.
pub const RESERVE_BYTES: u64 = 64 * 1024 * 1024;

/// Bytes available to unprivileged writers on the filesystem holding `path` (or its nearest
/// existing ancestor).
pub fn free_bytes(path: &Path) -> Result<u64, FsError> {
    let mut probe = path;
    while !probe.exists() {
        match probe.parent() {
            Some(p) => probe = p,
            None => break,
        }
    }
    let st = nix::sys::statvfs::statvfs(probe).map_err(|e| FsError {
        action: "read the free space of",
        path: probe.to_owned(),
        source: std::io::Error::from(e),
    })?;
    Ok(st.blocks_available().saturating_mul(st.fragment_size()))
}

/// Fails with the numbers when `path` has less than `estimate` plus the reserve free.
pub fn check_free(path: &Path, estimate: u64, what: &str) -> Result<u64, CheckFreeError> {
    let free = free_bytes(path)?;
    if free < estimate.saturating_add(RESERVE_BYTES) {
        return Err(CheckFreeError::NotEnough(NotEnoughSpace {
            what: what.to_owned(),
            path: path.to_owned(),
            estimate,
            reserve: RESERVE_BYTES,
            free,
        }));
    }
    Ok(free)
}

#[derive(Debug, thiserror::Error)]
pub enum CheckFreeError {
    #[error(transparent)]
    Fs(#[from] FsError),
    #[error(transparent)]
    NotEnough(#[from] NotEnoughSpace),
}

/// Total size of the regular files below `dir` (0 when it does not exist).
pub fn dir_size(dir: &Path) -> u64 {
    walkdir::WalkDir::new(dir)
        .into_iter()
        .filter_map(Result::ok)
        .filter(|e| e.file_type().is_file())
        .filter_map(|e| e.metadata().ok())
        .map(|m| m.len())
        .sum()
}

pub fn fsync_dir(dir: &Path) -> Result<(), FsError> {
    std::fs::File::open(dir)
        .and_then(|f| f.sync_all())
        .map_err(fs_err("sync the directory", dir))
}

/// Flushes the whole filesystem holding `path`: one call instead of an fsync per blob.
pub fn sync_filesystem(path: &Path) -> Result<(), FsError> {
    let dir = std::fs::File::open(path).map_err(fs_err("open", path))?;
    nix::unistd::syncfs(dir.as_raw_fd()).map_err(|e| FsError {
        action: "sync the filesystem of",
        path: path.to_owned(),
        source: std::io::Error::from(e),
    })
}

/// Writes back the filesystem holding a directory every `every` while a long write runs,
/// so the `syncfs` that must precede publishing finds little left to flush instead of
/// waiting for everything at the end. Errors are ignored here: the final `syncfs` reports
/// them.
#[derive(Debug)]
pub struct BackgroundFlush {
    stop: Arc<(Mutex<bool>, Condvar)>,
    flushes: Arc<AtomicU64>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl BackgroundFlush {
    pub fn start(dir: PathBuf, every: Duration) -> Self {
        let stop = Arc::new((Mutex::new(false), Condvar::new()));
        let flag = Arc::clone(&stop);
        let flushes = Arc::new(AtomicU64::new(0));
        let count = Arc::clone(&flushes);
        let thread = std::thread::Builder::new()
            .name("snapshot-flush".to_owned())
            .spawn(move || {
                let (lock, cv) = &*flag;
                let mut stopped = lock.lock().unwrap_or_else(|p| p.into_inner());
                loop {
                    // Checked before waiting too: a stop signalled before this thread got
                    // the lock would otherwise wait out a whole period.
                    if *stopped {
                        return;
                    }
                    let (guard, _) = cv
                        .wait_timeout(stopped, every)
                        .unwrap_or_else(|p| p.into_inner());
                    stopped = guard;
                    if *stopped {
                        return;
                    }
                    drop(stopped);
                    if sync_filesystem(&dir).is_ok() {
                        count.fetch_add(1, Ordering::Relaxed);
                    }
                    stopped = lock.lock().unwrap_or_else(|p| p.into_inner());
                }
            })
            .ok();
        Self {
            stop,
            flushes,
            thread,
        }
    }

    /// Stops and waits for a flush in progress (blocking: call it off the async threads).
    /// Returns how many flushes were done.
    pub fn finish(mut self) -> u64 {
        self.signal();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        self.flushes.load(Ordering::Relaxed)
    }

    fn signal(&self) {
        let (lock, cv) = &*self.stop;
        *lock.lock().unwrap_or_else(|p| p.into_inner()) = true;
        cv.notify_all();
    }
}

impl Drop for BackgroundFlush {
    /// Dropped without `finish` (a failure or a cancelled task): the thread ends after the
    /// flush it may be doing, without anyone waiting for it.
    fn drop(&mut self) {
        self.signal();
    }
}

/// Replaces `path` with `bytes` so readers see the old or the new content, never a mix.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), FsError> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let tmp = dir.join(format!(".{}.tmp", unique_name()));
    let result = (|| {
        let mut f = std::fs::File::create(&tmp).map_err(fs_err("create", &tmp))?;
        f.write_all(bytes).map_err(fs_err("write", &tmp))?;
        f.sync_all().map_err(fs_err("sync", &tmp))?;
        std::fs::rename(&tmp, path).map_err(fs_err("rename into place", path))?;
        fsync_dir(dir)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

/// Creates `dir` and its parents.
pub fn create_dir_all(dir: &Path) -> Result<(), FsError> {
    std::fs::create_dir_all(dir).map_err(fs_err("create the directory", dir))
}

/// Removes a file or directory tree; a missing one is fine.
pub fn remove_all(path: &Path) -> Result<(), FsError> {
    let result = match std::fs::symlink_metadata(path) {
        Ok(m) if m.is_dir() => std::fs::remove_dir_all(path),
        Ok(_) => std::fs::remove_file(path),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    };
    match result {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(fs_err("remove", path)(e)),
        _ => Ok(()),
    }
}

/// A name no other call of this process (or an earlier run) produces: time, pid, counter.
pub fn unique_name() -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = time::OffsetDateTime::now_utc().unix_timestamp_nanos() as u64;
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    format!("{nanos:x}{:x}{n:x}", std::process::id())
}

/// Modification time in nanoseconds, the stat index's change detector with the size.
pub fn mtime_ns(meta: &std::fs::Metadata) -> i64 {
    use std::os::unix::fs::MetadataExt;
    meta.mtime()
        .saturating_mul(1_000_000_000)
        .saturating_add(meta.mtime_nsec())
}

/// Lists the entries of `dir` (empty when it does not exist).
pub fn list_dir(dir: &Path) -> Result<Vec<PathBuf>, FsError> {
    match std::fs::read_dir(dir) {
        Ok(rd) => rd
            .map(|e| e.map(|e| e.path()).map_err(fs_err("list", dir)))
            .collect(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
        Err(e) => Err(fs_err("list", dir)(e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn free_space_of_a_missing_path_is_its_ancestors() -> Result<(), FsError> {
        let dir = tempfile::tempdir().map_err(fs_err("create", Path::new("tmp")))?;
        let missing = dir.path().join("a/b/c");
        assert_eq!(
            free_bytes(&missing)? / (1 << 20),
            free_bytes(dir.path())? / (1 << 20)
        );
        let err = check_free(dir.path(), u64::MAX / 2, "snapshot x").expect_err("too big");
        assert!(err.to_string().contains("snapshot x"), "{err}");
        Ok(())
    }

    #[test]
    fn background_flush_flushes_until_finished_and_a_drop_does_not_wait() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join("dirty"), vec![7u8; 1 << 20]).expect("write");
        let flush = BackgroundFlush::start(dir.path().to_owned(), Duration::from_millis(10));
        std::thread::sleep(Duration::from_millis(300));
        let started = std::time::Instant::now();
        let flushes = flush.finish();
        assert!(flushes >= 1, "no flush in 300 ms at a 10 ms period");
        assert!(started.elapsed() < Duration::from_secs(5), "finish hung");
        // Waiting a whole period is not needed to stop, nor to drop.
        let idle = BackgroundFlush::start(dir.path().to_owned(), Duration::from_secs(3600));
        let started = std::time::Instant::now();
        assert_eq!(idle.finish(), 0);
        drop(BackgroundFlush::start(
            dir.path().to_owned(),
            Duration::from_secs(3600),
        ));
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "stopping waited a period"
        );
    }

    #[test]
    fn atomic_writes_replace_and_unique_names_differ() -> Result<(), FsError> {
        let dir = tempfile::tempdir().map_err(fs_err("create", Path::new("tmp")))?;
        let f = dir.path().join("f.json");
        write_atomic(&f, b"one")?;
        write_atomic(&f, b"two")?;
        assert_eq!(std::fs::read(&f).ok().as_deref(), Some(&b"two"[..]));
        assert_eq!(list_dir(dir.path())?.len(), 1);
        assert_ne!(unique_name(), unique_name());
        remove_all(&dir.path().join("nothing"))?;
        Ok(())
    }
}
