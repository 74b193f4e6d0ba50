//! The live filestore (`<data_dir>/filestore/<db>`): scanning it, the stat index that lets
//! unchanged files cost a `stat` instead of a read, capturing it into the blob store, and
//! making it equal to a list of files (restore and safety-copy swap-back).
//!
//! Everything here is blocking filesystem work; callers run it on the blocking pool.

use std::collections::{HashMap, HashSet};
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Mutex;

use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

use super::blobs::{self, odoo_expected_sha1, BlobError, BlobStore, KnownBlobs, Worker};
use super::disk::{self, mtime_ns};
use super::errors::{fs_err, FsError};
use super::manifest::{path_to_manifest, safe_relative_path, FileEntry};

/// One regular file of the live filestore.
#[derive(Debug, Clone)]
pub struct LiveFile {
    /// Manifest form: relative, '/'-separated.
    pub path: String,
    pub size: u64,
    pub mtime_ns: i64,
    pub uid: u32,
    pub gid: u32,
}

#[derive(Debug, Default)]
pub struct Scan {
    /// Sorted by path.
    pub files: Vec<LiveFile>,
    /// Entries that were skipped (links, devices, odd names), for the progress log.
    pub warnings: Vec<String>,
}

/// Lists the regular files below `root` with their stat. Symbolic links are never followed
/// (a link could make a snapshot carry any file of the host) and are reported instead.
pub fn scan(root: &Path) -> Result<Scan, FsError> {
    let mut out = Scan::default();
    if !root.exists() {
        return Ok(out);
    }
    for entry in walkdir::WalkDir::new(root).follow_links(false) {
        let entry = entry.map_err(|e| FsError {
            action: "scan",
            path: e.path().unwrap_or(root).to_owned(),
            source: e
                .into_io_error()
                .unwrap_or_else(|| std::io::Error::other("filesystem loop")),
        })?;
        let ft = entry.file_type();
        if ft.is_dir() {
            continue;
        }
        let rel = entry.path().strip_prefix(root).unwrap_or(entry.path());
        if !ft.is_file() {
            out.warnings.push(format!(
                "skipped {}: not a regular file",
                entry.path().display()
            ));
            continue;
        }
        let Some(path) = path_to_manifest(rel) else {
            out.warnings.push(format!(
                "skipped {}: the name is not plain UTF-8",
                entry.path().display()
            ));
            continue;
        };
        let meta = match entry.metadata() {
            Ok(m) => m,
            // Removed since listed (Odoo's garbage collection): it is simply not part of it.
            Err(e) if e.io_error().map(|e| e.kind()) == Some(std::io::ErrorKind::NotFound) => {
                continue
            }
            Err(e) => {
                return Err(FsError {
                    action: "stat",
                    path: entry.path().to_owned(),
                    source: e
                        .into_io_error()
                        .unwrap_or_else(|| std::io::Error::other("stat failed")),
                })
            }
        };
        out.files.push(LiveFile {
            path,
            size: meta.len(),
            mtime_ns: mtime_ns(&meta),
            uid: meta.uid(),
            gid: meta.gid(),
        });
    }
    out.files.sort_by(|a, b| a.path.cmp(&b.path));
    Ok(out)
}

/// (size, mtime) → sha1 of the live filestore as last captured or restored.
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct StatIndex {
    files: HashMap<String, IndexEntry>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct IndexEntry {
    size: u64,
    mtime_ns: i64,
    sha1: String,
}

impl StatIndex {
    /// The index at `path`; a missing or unreadable one is empty (everything gets read).
    pub fn load(path: &Path) -> Self {
        std::fs::read(path)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_default()
    }

    pub fn save(&self, path: &Path) -> Result<(), FsError> {
        let bytes = serde_json::to_vec(self).map_err(|e| FsError {
            action: "encode",
            path: path.to_owned(),
            source: std::io::Error::other(e),
        })?;
        disk::write_atomic(path, &bytes)
    }

    /// The sha1 of `file` when its size and mtime are those last seen.
    pub fn lookup(&self, file: &LiveFile) -> Option<&str> {
        self.files
            .get(&file.path)
            .filter(|e| e.size == file.size && e.mtime_ns == file.mtime_ns)
            .map(|e| e.sha1.as_str())
    }

    pub fn insert(&mut self, file: &LiveFile, sha1: &str) {
        self.files.insert(
            file.path.clone(),
            IndexEntry {
                size: file.size,
                mtime_ns: file.mtime_ns,
                sha1: sha1.to_owned(),
            },
        );
    }
}

/// The filestore part of a snapshot.
#[derive(Debug, Default)]
pub struct Captured {
    pub files: Vec<FileEntry>,
    pub total_bytes: u64,
    pub new_blob_ids: Vec<String>,
    pub new_bytes: u64,
    pub new_stored_bytes: u64,
    pub index: StatIndex,
    pub warnings: Vec<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum CaptureError {
    #[error(transparent)]
    Fs(#[from] FsError),
    #[error("capturing the filestore {0} was cancelled")]
    Cancelled(PathBuf),
}

/// Stores every file of `scan` that the blob store lacks. Files whose size and mtime match
/// the stat index and whose blob exists are not read at all.
#[allow(clippy::too_many_arguments)]
pub fn capture(
    root: &Path,
    scan: Scan,
    index: &StatIndex,
    store: &BlobStore,
    known: HashSet<String>,
    threads: usize,
    progress: &(dyn Fn(u64, u64) + Sync),
    cancel: &CancellationToken,
) -> Result<Captured, CaptureError> {
    let total = scan.files.len() as u64;
    let mut out = Captured {
        warnings: scan.warnings,
        ..Default::default()
    };
    let mut resolved: Vec<Option<String>> = Vec::with_capacity(scan.files.len());
    let mut work = Vec::new();
    for (i, f) in scan.files.iter().enumerate() {
        match index.lookup(f).filter(|s| known.contains(*s)) {
            Some(sha1) => resolved.push(Some(sha1.to_owned())),
            None => {
                resolved.push(None);
                work.push(i);
            }
        }
    }
    let known: KnownBlobs = Mutex::new(known);
    let done = AtomicU64::new(total - work.len() as u64);
    progress(done.load(Ordering::Relaxed), total);
    let next = AtomicUsize::new(0);
    let failed = AtomicBool::new(false);
    let results: Mutex<Vec<(usize, Option<blobs::Stored>)>> = Mutex::new(Vec::new());
    let first_error: Mutex<Option<CaptureError>> = Mutex::new(None);
    let files = &scan.files;
    std::thread::scope(|s| {
        for _ in 0..threads.max(1) {
            s.spawn(|| {
                let mut worker = Worker::default();
                let mut local = Vec::new();
                loop {
                    if failed.load(Ordering::Relaxed) {
                        break;
                    }
                    if cancel.is_cancelled() {
                        set_error(&first_error, &failed, CaptureError::Cancelled(root.into()));
                        break;
                    }
                    let k = next.fetch_add(1, Ordering::Relaxed);
                    let Some(&i) = work.get(k) else { break };
                    let f = &files[i];
                    let abs = root.join(&f.path);
                    match store.store_file(&mut worker, &abs, odoo_expected_sha1(&f.path), &known) {
                        Ok(stored) => local.push((i, Some(stored))),
                        // Deleted since the scan: not part of this snapshot.
                        Err(e) if e.source.kind() == std::io::ErrorKind::NotFound => {
                            local.push((i, None))
                        }
                        Err(e) => {
                            set_error(&first_error, &failed, e.into());
                            break;
                        }
                    }
                    let d = done.fetch_add(1, Ordering::Relaxed) + 1;
                    if d % 256 == 0 {
                        progress(d, total);
                    }
                }
                lock(&results).extend(local);
            });
        }
    });
    if let Some(e) = lock(&first_error).take() {
        return Err(e);
    }
    let mut stored: HashMap<usize, Option<blobs::Stored>> = lock(&results).drain(..).collect();
    for (i, f) in scan.files.iter().enumerate() {
        let sha1 = match resolved[i].take() {
            Some(sha1) => sha1,
            None => match stored.remove(&i).flatten() {
                Some(st) => {
                    if let Some(expected) = odoo_expected_sha1(&f.path) {
                        if expected != st.sha1 {
                            out.warnings.push(format!(
                                "{} holds content with sha1 {}, not the one its name says (stored as it is)",
                                root.join(&f.path).display(),
                                st.sha1
                            ));
                        }
                    }
                    if let Some(n) = st.new_stored {
                        out.new_blob_ids.push(st.sha1.clone());
                        out.new_bytes += st.size;
                        out.new_stored_bytes += n;
                    }
                    if st.size != f.size {
                        // Written to since the scan: record what was stored.
                        out.files.push(FileEntry {
                            path: f.path.clone(),
                            sha1: st.sha1,
                            size: st.size,
                        });
                        out.total_bytes += st.size;
                        continue;
                    }
                    st.sha1
                }
                None => continue,
            },
        };
        out.index.insert(f, &sha1);
        out.total_bytes += f.size;
        out.files.push(FileEntry {
            path: f.path.clone(),
            sha1,
            size: f.size,
        });
    }
    progress(total, total);
    Ok(out)
}

fn set_error<E>(slot: &Mutex<Option<E>>, failed: &AtomicBool, e: E) {
    let mut slot = lock(slot);
    if slot.is_none() {
        *slot = Some(e);
    }
    failed.store(true, Ordering::Relaxed);
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Where a wanted file's content comes from.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "snake_case")]
pub enum Source {
    /// A blob of the store, verified against its sha1 while it is written.
    Blob { sha1: String },
    /// A plain copy made by the safety copy, relative to its directory.
    Copy { path: String },
}

/// One file the filestore must hold.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Wanted {
    pub path: String,
    pub size: u64,
    /// The stat the file had when it was recorded: unchanged files are kept without a read.
    pub mtime_ns: Option<i64>,
    pub source: Source,
}

impl Wanted {
    pub fn from_manifest(f: &FileEntry) -> Self {
        Wanted {
            path: f.path.clone(),
            size: f.size,
            mtime_ns: None,
            source: Source::Blob {
                sha1: f.sha1.clone(),
            },
        }
    }
}

/// What making the filestore equal to a list takes.
#[derive(Debug, Default)]
pub struct Plan {
    pub keep: Vec<(LiveFile, Option<String>)>,
    pub write: Vec<Wanted>,
    pub remove: Vec<LiveFile>,
    /// Files read (hashed) because their stat did not tell.
    pub hashed: u64,
}

impl Plan {
    pub fn write_bytes(&self) -> u64 {
        self.write.iter().map(|w| w.size).sum()
    }
}

/// Compares the live filestore with `wanted`. Files whose recorded stat or indexed sha1
/// match are kept unread; a same-sized file of unknown content is hashed.
pub fn plan(
    root: &Path,
    wanted: &[Wanted],
    live: Scan,
    index: &StatIndex,
) -> Result<Plan, FsError> {
    let mut by_path: HashMap<&str, LiveFile> = live
        .files
        .iter()
        .map(|f| (f.path.as_str(), f.clone()))
        .collect();
    let mut out = Plan::default();
    for w in wanted {
        safe_relative_path(&w.path).map_err(|e| FsError {
            action: "use",
            path: root.join(&w.path),
            source: std::io::Error::other(e),
        })?;
        let Some(f) = by_path.remove(w.path.as_str()) else {
            out.write.push(w.clone());
            continue;
        };
        let sha1 = match &w.source {
            Source::Blob { sha1 } => Some(sha1.as_str()),
            Source::Copy { .. } => None,
        };
        let same = if f.size != w.size {
            false
        } else if w.mtime_ns == Some(f.mtime_ns) {
            true
        } else if let Some(sha1) = sha1 {
            if index.lookup(&f) == Some(sha1) {
                true
            } else {
                out.hashed += 1;
                match blobs::hash_file(&root.join(&f.path)) {
                    Ok((got, _)) => got == sha1,
                    Err(e) if e.source.kind() == std::io::ErrorKind::NotFound => false,
                    Err(e) => return Err(e),
                }
            }
        } else {
            false
        };
        if same {
            out.keep.push((f, sha1.map(str::to_owned)));
        } else {
            out.write.push(w.clone());
        }
    }
    out.remove = by_path.into_values().collect();
    out.remove.sort_by(|a, b| a.path.cmp(&b.path));
    Ok(out)
}

#[derive(Debug, thiserror::Error)]
pub enum StageError {
    #[error(transparent)]
    Blob(#[from] BlobError),
    #[error(transparent)]
    Fs(#[from] FsError),
    #[error("staging filestore files in {0} was cancelled")]
    Cancelled(PathBuf),
}

/// Writes every file of `write` below `staging`, from its blob (verified) or its copy.
/// Nothing outside `staging` is touched, so a failure leaves the live filestore as it was.
pub fn stage(
    staging: &Path,
    write: &[Wanted],
    store: &BlobStore,
    copies: Option<&Path>,
    threads: usize,
    progress: &(dyn Fn(u64, u64) + Sync),
    cancel: &CancellationToken,
) -> Result<(), StageError> {
    disk::create_dir_all(staging)?;
    let total = write.len() as u64;
    let next = AtomicUsize::new(0);
    let done = AtomicU64::new(0);
    let failed = AtomicBool::new(false);
    let first_error: Mutex<Option<StageError>> = Mutex::new(None);
    let dirs: Mutex<HashSet<PathBuf>> = Mutex::new(HashSet::new());
    progress(0, total);
    std::thread::scope(|s| {
        for _ in 0..threads.max(1) {
            s.spawn(|| loop {
                if failed.load(Ordering::Relaxed) {
                    break;
                }
                if cancel.is_cancelled() {
                    set_error(&first_error, &failed, StageError::Cancelled(staging.into()));
                    break;
                }
                let k = next.fetch_add(1, Ordering::Relaxed);
                let Some(w) = write.get(k) else { break };
                if let Err(e) = stage_one(staging, w, store, copies, &dirs) {
                    set_error(&first_error, &failed, e);
                    break;
                }
                let d = done.fetch_add(1, Ordering::Relaxed) + 1;
                if d % 256 == 0 {
                    progress(d, total);
                }
            });
        }
    });
    if let Some(e) = lock(&first_error).take() {
        return Err(e);
    }
    progress(total, total);
    Ok(())
}

fn stage_one(
    staging: &Path,
    w: &Wanted,
    store: &BlobStore,
    copies: Option<&Path>,
    dirs: &Mutex<HashSet<PathBuf>>,
) -> Result<(), StageError> {
    let dest = staging.join(&w.path);
    if let Some(parent) = dest.parent() {
        if !lock(dirs).contains(parent) {
            disk::create_dir_all(parent)?;
            lock(dirs).insert(parent.to_owned());
        }
    }
    match &w.source {
        Source::Blob { sha1 } => {
            let mut out = new_file(&dest)?;
            store.read_to(sha1, w.size, &mut out)?;
        }
        Source::Copy { path } => {
            let dir = copies.ok_or_else(|| FsError {
                action: "find the copy of",
                path: dest.clone(),
                source: std::io::Error::other("no copy directory"),
            })?;
            let src = dir.join(safe_relative_path(path).map_err(|e| FsError {
                action: "use",
                path: dir.join(path),
                source: std::io::Error::other(e),
            })?);
            let mut input = File::open(&src).map_err(fs_err("open", &src))?;
            let mut out = new_file(&dest)?;
            std::io::copy(&mut input, &mut out).map_err(fs_err("copy", &src))?;
        }
    }
    Ok(())
}

fn new_file(path: &Path) -> Result<File, FsError> {
    OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o644)
        .open(path)
        .map_err(fs_err("create", path))
}

/// Moves the staged files into `root`, removes the extra ones and gives everything to
/// `uid:gid`. Returns the stat index of the result. Idempotent: a staged file that is
/// already gone was moved by an earlier, interrupted run.
pub fn apply(
    root: &Path,
    staging: &Path,
    plan: &Plan,
    owner: (u32, u32),
) -> Result<StatIndex, FsError> {
    let (uid, gid) = owner;
    ensure_dir(root, owner)?;
    let mut made: HashSet<PathBuf> = HashSet::new();
    for w in &plan.write {
        let dest = root.join(&w.path);
        if let Some(parent) = dest.parent() {
            if !made.contains(parent) {
                let mut chain = Vec::new();
                let mut p = parent;
                while p != root && !p.is_dir() {
                    chain.push(p.to_owned());
                    match p.parent() {
                        Some(up) => p = up,
                        None => break,
                    }
                }
                for dir in chain.iter().rev() {
                    ensure_dir(dir, owner)?;
                }
                made.insert(parent.to_owned());
            }
        }
        let src = staging.join(&w.path);
        match std::fs::rename(&src, &dest) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && dest.exists() => {}
            Err(e) => return Err(fs_err("move into the filestore", &src)(e)),
        }
        std::os::unix::fs::lchown(&dest, Some(uid), Some(gid)).map_err(fs_err("chown", &dest))?;
    }
    for f in &plan.remove {
        let path = root.join(&f.path);
        disk::remove_all(&path)?;
    }
    // Directories that were already there belong to odoo too (Odoo creates new ones).
    for entry in walkdir::WalkDir::new(root).min_depth(1) {
        let entry = entry.map_err(|e| FsError {
            action: "scan",
            path: root.to_owned(),
            source: e
                .into_io_error()
                .unwrap_or_else(|| std::io::Error::other("filesystem loop")),
        })?;
        if entry.file_type().is_dir() {
            ensure_dir(entry.path(), owner)?;
        }
    }
    let mut index = StatIndex::default();
    for (f, sha1) in &plan.keep {
        if f.uid != uid || f.gid != gid {
            let path = root.join(&f.path);
            std::os::unix::fs::lchown(&path, Some(uid), Some(gid))
                .map_err(fs_err("chown", &path))?;
        }
        if let Some(sha1) = sha1 {
            index.insert(f, sha1);
        }
    }
    for w in &plan.write {
        if let Source::Blob { sha1 } = &w.source {
            let path = root.join(&w.path);
            let meta = std::fs::metadata(&path).map_err(fs_err("stat", &path))?;
            let live = LiveFile {
                path: w.path.clone(),
                size: meta.len(),
                mtime_ns: mtime_ns(&meta),
                uid,
                gid,
            };
            index.insert(&live, sha1);
        }
    }
    Ok(index)
}

fn ensure_dir(dir: &Path, (uid, gid): (u32, u32)) -> Result<(), FsError> {
    if !dir.is_dir() {
        disk::create_dir_all(dir)?;
    }
    let meta = std::fs::metadata(dir).map_err(fs_err("stat", dir))?;
    if meta.uid() != uid || meta.gid() != gid {
        std::os::unix::fs::chown(dir, Some(uid), Some(gid)).map_err(fs_err("chown", dir))?;
    }
    Ok(())
}

/// Copies `files` (relative to `root`) into `dest` as they are, for the safety copy.
pub fn copy_files(root: &Path, files: &[LiveFile], dest: &Path) -> Result<u64, FsError> {
    let mut bytes = 0;
    for f in files {
        let src = root.join(&f.path);
        let to = dest.join(&f.path);
        if let Some(parent) = to.parent() {
            disk::create_dir_all(parent)?;
        }
        let mut input = File::open(&src).map_err(fs_err("open", &src))?;
        let mut out = new_file(&to)?;
        bytes += std::io::copy(&mut input, &mut out).map_err(fs_err("copy", &src))?;
        out.flush().map_err(fs_err("write", &to))?;
    }
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn live(path: &str, size: u64, mtime_ns: i64) -> LiveFile {
        LiveFile {
            path: path.into(),
            size,
            mtime_ns,
            uid: 0,
            gid: 0,
        }
    }

    #[test]
    fn the_stat_index_answers_only_for_unchanged_files() {
        let mut index = StatIndex::default();
        index.insert(&live("ab/x", 10, 5), "s1");
        assert_eq!(index.lookup(&live("ab/x", 10, 5)), Some("s1"));
        assert_eq!(index.lookup(&live("ab/x", 10, 6)), None);
        assert_eq!(index.lookup(&live("ab/x", 11, 5)), None);
        assert_eq!(index.lookup(&live("ab/y", 10, 5)), None);
    }

    #[test]
    fn plans_keep_write_and_remove() -> Result<(), FsError> {
        let dir = tempfile::tempdir().map_err(fs_err("create", Path::new("tmp")))?;
        let root = dir.path();
        std::fs::create_dir_all(root.join("ab")).map_err(fs_err("create", root))?;
        for (name, body) in [
            ("ab/keep", "same"),
            ("ab/changed", "new!"),
            ("ab/extra", "x"),
        ] {
            std::fs::write(root.join(name), body).map_err(fs_err("write", root))?;
        }
        let scan = scan(root)?;
        assert_eq!(scan.files.len(), 3);
        let sha = |b: &[u8]| {
            use sha1::Digest;
            hex::encode(sha1::Sha1::digest(b))
        };
        let wanted: Vec<Wanted> = [("ab/keep", "same"), ("ab/changed", "old!"), ("cd/new", "n")]
            .iter()
            .map(|(p, b)| {
                Wanted::from_manifest(&FileEntry {
                    path: (*p).into(),
                    sha1: sha(b.as_bytes()),
                    size: b.len() as u64,
                })
            })
            .collect();
        let plan = plan(root, &wanted, scan, &StatIndex::default())?;
        let names = |v: Vec<&str>| v.into_iter().map(str::to_owned).collect::<Vec<_>>();
        assert_eq!(
            plan.keep
                .iter()
                .map(|k| k.0.path.clone())
                .collect::<Vec<_>>(),
            names(vec!["ab/keep"])
        );
        assert_eq!(
            plan.write
                .iter()
                .map(|w| w.path.clone())
                .collect::<Vec<_>>(),
            names(vec!["ab/changed", "cd/new"])
        );
        assert_eq!(
            plan.remove
                .iter()
                .map(|r| r.path.clone())
                .collect::<Vec<_>>(),
            names(vec!["ab/extra"])
        );
        assert_eq!(plan.hashed, 2);
        Ok(())
    }

    #[cfg(unix)]
    #[test]
    fn scans_skip_links() -> Result<(), FsError> {
        let dir = tempfile::tempdir().map_err(fs_err("create", Path::new("tmp")))?;
        let root = dir.path();
        std::fs::write(root.join("f"), "x").map_err(fs_err("write", root))?;
        std::os::unix::fs::symlink("/etc/passwd", root.join("l")).map_err(fs_err("link", root))?;
        let s = scan(root)?;
        assert_eq!(s.files.len(), 1);
        assert_eq!(s.warnings.len(), 1);
        assert!(
            s.warnings[0].contains("not a regular file"),
            "{:?}",
            s.warnings
        );
        Ok(())
    }
}
