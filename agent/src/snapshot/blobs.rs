//! The content-addressed blob store of one instance: each filestore file stored once,
//! zstd-compressed, at `blobs/<first two hex>/<sha1>`.
//!
//! A blob is written to a temporary file (`blobs/<prefix>/.tmp-<unique>`, or `blobs/.tmp/`
//! when the prefix is not known in advance) and renamed into place only once its sha1 is
//! known, so a blob's name always matches its content when it was stored; readers verify it
//! again. `sweep` removes temporary files an interrupted writer left.

use std::collections::HashSet;
use std::fs::File;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use sha1::{Digest, Sha1};

use super::disk::{self, unique_name};
use super::errors::{fs_err, CorruptError, FsError};
use super::manifest::is_hex;

/// Files up to this size are read whole and compressed with a reused context.
const SMALL_FILE: u64 = 8 * 1024 * 1024;
const CHUNK: usize = 1024 * 1024;

/// Where the blob with content `sha1` lives, relative to the store.
pub fn blob_rel_path(sha1: &str) -> PathBuf {
    let prefix = sha1.get(..2).unwrap_or("00");
    PathBuf::from(prefix).join(sha1)
}

/// The sha1 Odoo's file name promises for a filestore path: `ab/abcdef…` (Odoo ≥ 8) or the
/// legacy `abc/abcdef…`. Files under `checklist/` are garbage-collection markers named after
/// other files, so they promise nothing.
pub fn odoo_expected_sha1(rel: &str) -> Option<&str> {
    let (dir, name) = rel.rsplit_once('/')?;
    if dir.contains('/') || !(dir.len() == 2 || dir.len() == 3) {
        return None;
    }
    if is_hex(name, 40) && name.starts_with(dir) {
        Some(name)
    } else {
        None
    }
}

#[derive(Debug, thiserror::Error)]
pub enum BlobError {
    #[error(transparent)]
    Fs(#[from] FsError),
    #[error(transparent)]
    Corrupt(#[from] CorruptError),
}

/// What storing one file did.
#[derive(Debug, Clone)]
pub struct Stored {
    pub sha1: String,
    pub size: u64,
    /// Compressed size when this call stored the blob first; `None` when it already existed.
    pub new_stored: Option<u64>,
}

/// The blobs known to exist, shared by the workers of one operation.
pub type KnownBlobs = Mutex<HashSet<String>>;

#[derive(Debug, Clone)]
pub struct BlobStore {
    dir: PathBuf,
    level: i32,
}

impl BlobStore {
    pub fn new(dir: PathBuf, level: i32) -> Self {
        Self { dir, level }
    }

    pub fn path(&self, sha1: &str) -> PathBuf {
        self.dir.join(blob_rel_path(sha1))
    }

    pub fn tmp_dir(&self) -> PathBuf {
        self.dir.join(".tmp")
    }

    /// Every blob in the store, by sha1: one directory listing instead of a stat per file.
    pub fn list(&self) -> Result<HashSet<String>, FsError> {
        let mut out = HashSet::new();
        for sub in disk::list_dir(&self.dir)? {
            let name = sub.file_name().and_then(|n| n.to_str()).unwrap_or("");
            if !is_hex(name, 2) {
                continue;
            }
            for blob in disk::list_dir(&sub)? {
                if let Some(n) = blob.file_name().and_then(|n| n.to_str()) {
                    if is_hex(n, 40) {
                        out.insert(n.to_owned());
                    }
                }
            }
        }
        Ok(out)
    }

    /// Stores the content of `src` unless a blob with its sha1 exists. `expected` is the sha1
    /// the file's name promises: when that blob exists already, the file is only read and
    /// hashed. The sha1 returned is always the content's.
    ///
    /// The temporary file is written in the directory the blob will live in whenever its
    /// sha1 is known (or promised) before writing: a rename within one directory takes only
    /// that directory's lock, while one across directories takes the filesystem-wide rename
    /// lock, which the workers of a capture then queue on.
    pub fn store_file(
        &self,
        worker: &mut Worker,
        src: &Path,
        expected: Option<&str>,
        known: &KnownBlobs,
    ) -> Result<Stored, FsError> {
        let mut file = File::open(src).map_err(fs_err("open", src))?;
        let len = file.metadata().map_err(fs_err("stat", src))?.len();
        if len <= SMALL_FILE {
            return self.store_small(worker, &mut file, src, known);
        }
        if expected.is_some_and(|e| locked(known).contains(e)) {
            let (sha1, size) = hash_reader(&mut file, &mut worker.buf, src)?;
            if locked(known).contains(&sha1) {
                return Ok(Stored {
                    sha1,
                    size,
                    new_stored: None,
                });
            }
            // The name lied about the content: store what is really there.
            file = File::open(src).map_err(fs_err("open", src))?;
        }
        let dir = match expected {
            Some(e) => self.prefix_dir(e),
            None => self.tmp_dir(),
        };
        let tmp = worker.tmp_in(&dir)?;
        let (sha1, size, stored) = self
            .compress_stream(worker, &mut file, src, &tmp)
            .inspect_err(|_| {
                let _ = std::fs::remove_file(&tmp);
            })?;
        self.publish(worker, &tmp, sha1, size, stored, known)
    }

    /// A file read whole: hashed first, so an existing blob costs no compression and a new
    /// one is written next to where it will live.
    fn store_small(
        &self,
        worker: &mut Worker,
        file: &mut File,
        src: &Path,
        known: &KnownBlobs,
    ) -> Result<Stored, FsError> {
        let mut buf = std::mem::take(&mut worker.buf);
        buf.clear();
        let result = (|| {
            file.read_to_end(&mut buf).map_err(fs_err("read", src))?;
            let sha1 = hex::encode(Sha1::digest(&buf));
            let size = buf.len() as u64;
            if locked(known).contains(&sha1) {
                return Ok(Stored {
                    sha1,
                    size,
                    new_stored: None,
                });
            }
            let tmp = worker.tmp_in(&self.prefix_dir(&sha1))?;
            let written = (|| {
                let compressed = worker
                    .compressor(self.level)
                    .and_then(|c| c.compress(&buf))
                    .map_err(fs_err("compress", src))?;
                let mut out = File::create(&tmp).map_err(fs_err("create", &tmp))?;
                out.write_all(&compressed).map_err(fs_err("write", &tmp))?;
                Ok(compressed.len() as u64)
            })();
            match written {
                Ok(stored) => self.publish(worker, &tmp, sha1, size, stored, known),
                Err(e) => {
                    let _ = std::fs::remove_file(&tmp);
                    Err(e)
                }
            }
        })();
        worker.buf = buf;
        result
    }

    /// Renames a fully written temporary file to its blob name, unless another worker
    /// stored the same content meanwhile.
    fn publish(
        &self,
        worker: &mut Worker,
        tmp: &Path,
        sha1: String,
        size: u64,
        stored: u64,
        known: &KnownBlobs,
    ) -> Result<Stored, FsError> {
        if !locked(known).insert(sha1.clone()) {
            let _ = std::fs::remove_file(tmp);
            return Ok(Stored {
                sha1,
                size,
                new_stored: None,
            });
        }
        let dest = self.path(&sha1);
        let placed = worker
            .ensure_dir(&self.prefix_dir(&sha1))
            .and_then(|()| std::fs::rename(tmp, &dest).map_err(fs_err("store the blob", &dest)));
        if let Err(e) = placed {
            locked(known).remove(&sha1);
            let _ = std::fs::remove_file(tmp);
            return Err(e);
        }
        Ok(Stored {
            sha1,
            size,
            new_stored: Some(stored),
        })
    }

    fn prefix_dir(&self, sha1: &str) -> PathBuf {
        self.dir.join(sha1.get(..2).unwrap_or("00"))
    }

    /// Compresses a large file in chunks: (sha1, size, compressed size).
    fn compress_stream(
        &self,
        worker: &mut Worker,
        src: &mut File,
        src_path: &Path,
        tmp: &Path,
    ) -> Result<(String, u64, u64), FsError> {
        let out = File::create(tmp).map_err(fs_err("create", tmp))?;
        let mut hasher = Sha1::new();
        let mut size = 0u64;
        let mut enc = zstd::stream::write::Encoder::new(CountingWriter::new(out), self.level)
            .map_err(fs_err("compress", src_path))?;
        worker.buf.resize(CHUNK, 0);
        loop {
            let n = src
                .read(&mut worker.buf)
                .map_err(fs_err("read", src_path))?;
            if n == 0 {
                break;
            }
            hasher.update(&worker.buf[..n]);
            size += n as u64;
            enc.write_all(&worker.buf[..n])
                .map_err(fs_err("write", tmp))?;
        }
        let counted = enc.finish().map_err(fs_err("write", tmp))?;
        Ok((hex::encode(hasher.finalize()), size, counted.count))
    }

    /// Decompresses blob `sha1` into `out`, checking its size and sha1 against the manifest.
    pub fn read_to(&self, sha1: &str, size: u64, out: &mut dyn Write) -> Result<(), BlobError> {
        thread_local! {
            // One buffer per thread: a fresh megabyte per file costs a memset each time.
            static BUF: std::cell::RefCell<Vec<u8>> = std::cell::RefCell::new(vec![0u8; CHUNK]);
        }
        BUF.with(|buf| self.read_with(sha1, size, out, &mut buf.borrow_mut()))
    }

    fn read_with(
        &self,
        sha1: &str,
        size: u64,
        out: &mut dyn Write,
        buf: &mut [u8],
    ) -> Result<(), BlobError> {
        let mut reader = self.open(sha1, size)?;
        loop {
            let n = match reader.read(buf) {
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(reader.failure(e)),
            };
            if n == 0 {
                return Ok(());
            }
            out.write_all(&buf[..n]).map_err(|e| FsError {
                action: "write the content of",
                path: reader.path.clone(),
                source: e,
            })?;
        }
    }

    /// A reader of blob `sha1`'s content that fails at the end unless the content has
    /// `size` bytes and that sha1.
    pub fn open(&self, sha1: &str, size: u64) -> Result<BlobReader, BlobError> {
        let path = self.path(sha1);
        let file = File::open(&path).map_err(|e| {
            if e.kind() == std::io::ErrorKind::NotFound {
                BlobError::Corrupt(CorruptError {
                    path: path.clone(),
                    reason: "the blob is missing".to_owned(),
                })
            } else {
                BlobError::Fs(fs_err("open", &path)(e))
            }
        })?;
        let dec = zstd::stream::read::Decoder::new(file).map_err(fs_err("read", &path))?;
        Ok(BlobReader {
            dec,
            hasher: Sha1::new(),
            expected: sha1.to_owned(),
            size,
            read: 0,
            path,
            corrupt: None,
        })
    }

    /// Removes every blob not in `keep` and any leftover temporary file. Returns the count
    /// and bytes removed. Callers hold the store's exclusive lock, so no writer is running.
    pub fn sweep(&self, keep: &HashSet<String>) -> Result<(u64, u64), FsError> {
        disk::remove_all(&self.tmp_dir())?;
        let mut count = 0;
        let mut bytes = 0;
        for sub in disk::list_dir(&self.dir)? {
            let name = sub.file_name().and_then(|n| n.to_str()).unwrap_or("");
            if !is_hex(name, 2) {
                continue;
            }
            for path in disk::list_dir(&sub)? {
                let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
                if name.starts_with(TMP_PREFIX) {
                    // Left by a writer that was interrupted: never a blob anyone needs.
                    disk::remove_all(&path)?;
                } else if is_hex(name, 40) && !keep.contains(name) {
                    let len = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
                    disk::remove_all(&path)?;
                    count += 1;
                    bytes += len;
                }
            }
        }
        Ok((count, bytes))
    }
}

/// Streams a blob's content and verifies it at the end (see `BlobStore::open`).
pub struct BlobReader {
    dec: zstd::stream::read::Decoder<'static, std::io::BufReader<File>>,
    hasher: Sha1,
    expected: String,
    size: u64,
    read: u64,
    pub path: PathBuf,
    corrupt: Option<String>,
}

impl BlobReader {
    /// The error for a failed read: the corruption found, else the I/O error.
    pub fn failure(&mut self, e: std::io::Error) -> BlobError {
        match self.corrupt.take() {
            Some(reason) => BlobError::Corrupt(CorruptError {
                path: self.path.clone(),
                reason,
            }),
            None => BlobError::Fs(fs_err("read", &self.path)(e)),
        }
    }

    fn fail(&mut self, reason: String) -> std::io::Error {
        let e = std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("{} is corrupt: {reason}", self.path.display()),
        );
        self.corrupt = Some(reason);
        e
    }
}

impl Read for BlobReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        let n = match self.dec.read(buf) {
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => return Err(e),
            Err(e) => return Err(self.fail(format!("cannot decompress: {e}"))),
        };
        self.read += n as u64;
        if self.read > self.size {
            return Err(self.fail(format!("holds more than the {} bytes expected", self.size)));
        }
        self.hasher.update(&buf[..n]);
        if n == 0 {
            if self.read != self.size {
                return Err(self.fail(format!("holds {} bytes, {} expected", self.read, self.size)));
            }
            let got = hex::encode(self.hasher.clone().finalize());
            if got != self.expected {
                return Err(self.fail(format!("content sha1 is {got}")));
            }
        }
        Ok(n)
    }
}

/// Per-thread buffers and the reused zstd context.
#[derive(Default)]
pub struct Worker {
    buf: Vec<u8>,
    compressor: Option<zstd::bulk::Compressor<'static>>,
    /// Directories this worker already made, so each costs one `mkdir`.
    dirs: HashSet<PathBuf>,
}

/// The name prefix of temporary files inside the prefix directories.
const TMP_PREFIX: &str = ".tmp-";

impl Worker {
    fn ensure_dir(&mut self, dir: &Path) -> Result<(), FsError> {
        if !self.dirs.contains(dir) {
            disk::create_dir_all(dir)?;
            self.dirs.insert(dir.to_owned());
        }
        Ok(())
    }

    /// A fresh temporary file name in `dir`, which is created if needed.
    fn tmp_in(&mut self, dir: &Path) -> Result<PathBuf, FsError> {
        self.ensure_dir(dir)?;
        Ok(dir.join(format!("{TMP_PREFIX}{}", unique_name())))
    }

    fn compressor(&mut self, level: i32) -> std::io::Result<&mut zstd::bulk::Compressor<'static>> {
        if self.compressor.is_none() {
            self.compressor = Some(zstd::bulk::Compressor::new(level)?);
        }
        self.compressor
            .as_mut()
            .ok_or_else(|| std::io::Error::other("no zstd context"))
    }
}

/// Hashes a whole file: (sha1 hex, size).
pub fn hash_reader(
    file: &mut dyn Read,
    buf: &mut Vec<u8>,
    path: &Path,
) -> Result<(String, u64), FsError> {
    let mut hasher = Sha1::new();
    buf.resize(CHUNK, 0);
    let mut size = 0u64;
    loop {
        let n = match file.read(buf) {
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(fs_err("read", path)(e)),
        };
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        size += n as u64;
    }
    Ok((hex::encode(hasher.finalize()), size))
}

pub fn hash_file(path: &Path) -> Result<(String, u64), FsError> {
    let mut f = File::open(path).map_err(fs_err("open", path))?;
    hash_reader(&mut f, &mut Vec::new(), path)
}

fn locked(known: &KnownBlobs) -> std::sync::MutexGuard<'_, HashSet<String>> {
    // A worker that panicked cannot leave the set half-updated (insert/remove are atomic).
    known.lock().unwrap_or_else(|p| p.into_inner())
}

struct CountingWriter<W> {
    inner: W,
    count: u64,
}

impl<W> CountingWriter<W> {
    fn new(inner: W) -> Self {
        Self { inner, count: 0 }
    }
}

impl<W: Write> Write for CountingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.count += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sha1_hex(data: &[u8]) -> String {
        hex::encode(Sha1::digest(data))
    }

    #[test]
    fn blobs_are_addressed_by_content() {
        let sha = "0123456789abcdef0123456789abcdef01234567";
        assert_eq!(blob_rel_path(sha), PathBuf::from("01").join(sha));
        assert_eq!(odoo_expected_sha1(&format!("01/{sha}")), Some(sha));
        assert_eq!(odoo_expected_sha1(&format!("012/{sha}")), Some(sha));
        assert_eq!(odoo_expected_sha1(&format!("ff/{sha}")), None);
        assert_eq!(odoo_expected_sha1(&format!("checklist/01/{sha}")), None);
        assert_eq!(odoo_expected_sha1("01/notasha"), None);
        assert_eq!(odoo_expected_sha1(sha), None);
    }

    #[test]
    fn store_dedups_verifies_and_sweeps() -> Result<(), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        let store = BlobStore::new(dir.path().join("blobs"), 3);
        let fs = dir.path().join("fs");
        std::fs::create_dir_all(&fs)?;
        let small = b"hello filestore".repeat(100);
        let big: Vec<u8> = (0..(SMALL_FILE as usize + 1000))
            .map(|i| (i * 7 % 251) as u8)
            .collect();
        let (s1, s2) = (sha1_hex(&small), sha1_hex(&big));
        std::fs::write(fs.join("a"), &small)?;
        std::fs::write(fs.join("b"), &big)?;
        std::fs::write(fs.join("c"), &small)?;
        let known = Mutex::new(store.list()?);
        let mut w = Worker::default();
        let a = store.store_file(&mut w, &fs.join("a"), None, &known)?;
        let b = store.store_file(&mut w, &fs.join("b"), None, &known)?;
        let c = store.store_file(&mut w, &fs.join("c"), Some(&s1), &known)?;
        assert_eq!(
            (a.sha1.as_str(), b.sha1.as_str()),
            (s1.as_str(), s2.as_str())
        );
        assert!(a.new_stored.is_some() && b.new_stored.is_some());
        assert!(c.new_stored.is_none(), "same content is stored once");
        // A name that lies about the content is stored under the real sha1.
        let liar = store.store_file(&mut w, &fs.join("b"), Some(&s1), &known)?;
        assert_eq!(liar.sha1, s2);
        assert_eq!(store.list()?, HashSet::from([s1.clone(), s2.clone()]));

        let mut out = Vec::new();
        store.read_to(&s2, big.len() as u64, &mut out)?;
        assert_eq!(out, big);
        let err = store
            .read_to(&s1, 3, &mut Vec::new())
            .expect_err("wrong size");
        assert!(err.to_string().contains(&s1), "{err}");

        // Flip a byte in the compressed blob: reading names the blob.
        let path = store.path(&s1);
        let mut bytes = std::fs::read(&path)?;
        let mid = bytes.len() / 2;
        bytes[mid] ^= 0x55;
        std::fs::write(&path, &bytes)?;
        let err = store
            .read_to(&s1, small.len() as u64, &mut Vec::new())
            .expect_err("corrupt");
        assert!(matches!(err, BlobError::Corrupt(_)), "{err}");
        assert!(
            err.to_string().contains(&path.display().to_string()),
            "{err}"
        );

        // A large file whose name promises another prefix is written there first, then
        // moved to its real place.
        let big2: Vec<u8> = big.iter().map(|b| b.wrapping_add(1)).collect();
        let s3 = sha1_hex(&big2);
        std::fs::write(fs.join("d"), &big2)?;
        let promised = "ff".to_owned() + &"0".repeat(38);
        let moved = store.store_file(&mut w, &fs.join("d"), Some(&promised), &known)?;
        assert_eq!(moved.sha1, s3);
        let mut out = Vec::new();
        store.read_to(&s3, big2.len() as u64, &mut out)?;
        assert_eq!(out, big2);
        // Storing leaves no temporary file behind.
        let leftovers = |store: &BlobStore| -> Vec<PathBuf> {
            walkdir::WalkDir::new(&store.dir)
                .into_iter()
                .filter_map(|e| e.ok())
                .filter(|e| e.file_type().is_file())
                .filter(|e| !is_hex(e.file_name().to_str().unwrap_or(""), 40))
                .map(|e| e.into_path())
                .collect()
        };
        assert_eq!(leftovers(&store), Vec::<PathBuf>::new());

        // What an interrupted writer leaves is swept with the unreferenced blobs.
        let half_written = store.prefix_dir(&s2).join(format!("{TMP_PREFIX}1234"));
        std::fs::write(&half_written, b"partial")?;
        std::fs::create_dir_all(store.tmp_dir())?;
        std::fs::write(store.tmp_dir().join("x"), b"partial")?;
        let (count, _) = store.sweep(&HashSet::from([s2.clone()]))?;
        assert_eq!(count, 2, "s1 and s3 were not kept");
        assert_eq!(store.list()?, HashSet::from([s2]));
        assert_eq!(leftovers(&store), Vec::<PathBuf>::new());
        Ok(())
    }
}
