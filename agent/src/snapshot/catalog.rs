//! The published snapshots of an instance: list, get, pin, delete, verify, and the blob
//! garbage collection that deletion triggers.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use super::blobs::BlobError;
use super::disk;
use super::errors::{fs_err, CorruptError, ErrorKind, FsError};
use super::journal;
use super::manifest::{safe_relative_path, validate_snapshot_id, Manifest, Summary};
use super::{blocking, Ctx, SnapshotMeta, Snapshots, UnknownInstance};

#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    #[error(transparent)]
    UnknownInstance(#[from] UnknownInstance),
    #[error("{0}")]
    InvalidId(String),
    #[error("snapshot {id} of instance {instance} does not exist")]
    NotFound { instance: String, id: String },
    #[error("snapshot {id} is pinned; unpin it before deleting it")]
    Pinned { id: String },
    #[error("snapshot manifest {path} is not valid: {message}")]
    BadManifest { path: PathBuf, message: String },
    #[error(transparent)]
    Corrupt(#[from] CorruptError),
    #[error(transparent)]
    Fs(#[from] FsError),
}

impl SnapshotError {
    pub fn kind(&self) -> ErrorKind {
        match self {
            SnapshotError::UnknownInstance(_) | SnapshotError::NotFound { .. } => {
                ErrorKind::NotFound
            }
            SnapshotError::InvalidId(_) => ErrorKind::InvalidArgument,
            SnapshotError::Pinned { .. } => ErrorKind::Busy,
            SnapshotError::BadManifest { .. } | SnapshotError::Corrupt(_) => ErrorKind::Corrupt,
            SnapshotError::Fs(e) => e.kind(),
        }
    }
}

impl From<BlobError> for SnapshotError {
    fn from(e: BlobError) -> Self {
        match e {
            BlobError::Fs(e) => e.into(),
            BlobError::Corrupt(e) => e.into(),
        }
    }
}

/// What `verify` checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifyReport {
    pub parts: u64,
    pub blobs: u64,
    pub bytes: u64,
}

pub(super) fn check_id(id: &str) -> Result<(), SnapshotError> {
    validate_snapshot_id(id).map_err(SnapshotError::InvalidId)
}

/// Reads and validates `<dir>/manifest.json`.
pub(super) fn load_manifest(dir: &Path) -> Result<Manifest, SnapshotError> {
    let path = dir.join("manifest.json");
    let bytes = std::fs::read(&path).map_err(fs_err("read", &path))?;
    let manifest: Manifest =
        serde_json::from_slice(&bytes).map_err(|e| SnapshotError::BadManifest {
            path: path.clone(),
            message: e.to_string(),
        })?;
    manifest
        .validate()
        .map_err(|message| SnapshotError::BadManifest { path, message })?;
    Ok(manifest)
}

/// The manifest of a published snapshot.
pub(super) fn published_manifest(ctx: &Ctx, id: &str) -> Result<Manifest, SnapshotError> {
    check_id(id)?;
    let dir = ctx.snap_dir(id);
    if !dir.join("manifest.json").is_file() {
        return Err(SnapshotError::NotFound {
            instance: ctx.instance.clone(),
            id: id.to_owned(),
        });
    }
    load_manifest(&dir)
}

fn summary_of(dir: &Path) -> Result<Summary, SnapshotError> {
    let path = dir.join("meta.json");
    let bytes = std::fs::read(&path).map_err(fs_err("read", &path))?;
    serde_json::from_slice(&bytes).map_err(|e| SnapshotError::BadManifest {
        path: path.clone(),
        message: e.to_string(),
    })
}

/// Summaries of every published snapshot, newest first.
pub(super) fn summaries_sync(ctx: &Ctx) -> Result<Vec<Summary>, SnapshotError> {
    let mut out = Vec::new();
    for dir in disk::list_dir(&ctx.snaps_dir())? {
        let name = dir.file_name().and_then(|n| n.to_str()).unwrap_or("");
        if validate_snapshot_id(name).is_ok() {
            out.push(summary_of(&dir)?);
        }
    }
    out.sort_by(|a, b| b.created_at.cmp(&a.created_at).then(b.id.cmp(&a.id)));
    Ok(out)
}

/// The published snapshot `id`, or `NotFound`. The caller holds the store lock.
async fn published_meta(ctx: &Ctx, id: &str) -> Result<SnapshotMeta, SnapshotError> {
    let dir = ctx.snap_dir(id);
    if !dir.join("meta.json").is_file() {
        return Err(SnapshotError::NotFound {
            instance: ctx.instance.clone(),
            id: id.to_owned(),
        });
    }
    blocking(move || meta_of(&dir)).await
}

fn meta_of(dir: &Path) -> Result<SnapshotMeta, SnapshotError> {
    let s = summary_of(dir)?;
    Ok(SnapshotMeta {
        pinned: dir.join("pinned").exists(),
        id: s.id,
        instance_id: s.instance_id,
        kind: s.kind,
        size_bytes: s.stored_bytes,
        estimated_bytes: s.estimated_bytes,
        created_at: s.created_at,
        deployment_id: s.deployment_id,
        commit_sha: s.commit_sha,
        database: s.database,
        file_count: s.file_count,
        filestore_bytes: s.filestore_bytes,
        imported: s.imported,
    })
}

pub(super) fn list_sync(ctx: &Ctx) -> Result<Vec<SnapshotMeta>, SnapshotError> {
    let mut out = Vec::new();
    for dir in disk::list_dir(&ctx.snaps_dir())? {
        let name = dir.file_name().and_then(|n| n.to_str()).unwrap_or("");
        if validate_snapshot_id(name).is_err() {
            continue;
        }
        out.push(meta_of(&dir)?);
    }
    out.sort_by(|a, b| b.created_at.cmp(&a.created_at).then(b.id.cmp(&a.id)));
    Ok(out)
}

/// Removes every blob that no published manifest and no journal marker names.
/// Returns (blobs removed, bytes freed). The caller holds the instance's `live` lock.
pub(super) fn collect_garbage(ctx: &Ctx) -> Result<(u64, u64), SnapshotError> {
    let mut keep: HashSet<String> = HashSet::new();
    for dir in disk::list_dir(&ctx.snaps_dir())? {
        let name = dir.file_name().and_then(|n| n.to_str()).unwrap_or("");
        if validate_snapshot_id(name).is_err() {
            continue;
        }
        let m = load_manifest(&dir)?;
        keep.extend(m.blob_ids().map(str::to_owned));
    }
    for (_, marker) in journal::list(&ctx.journal_dir())? {
        keep.extend(marker.blob_ids().into_iter().map(str::to_owned));
    }
    Ok(ctx.blobs().sweep(&keep)?)
}

/// Removes a published snapshot directory (by first moving it out of sight) and collects
/// garbage. Returns the bytes freed. The caller holds `live` and `store` exclusively.
pub(super) fn delete_sync(ctx: &Ctx, id: &str) -> Result<u64, SnapshotError> {
    let size = remove_published(ctx, id)?;
    let (_, freed) = collect_garbage(ctx)?;
    Ok(size + freed)
}

/// Moves a published snapshot out of sight in one rename, then removes it. Returns the
/// bytes of its directory. Blobs are left to `collect_garbage`.
pub(super) fn remove_published(ctx: &Ctx, id: &str) -> Result<u64, SnapshotError> {
    let dir = ctx.snap_dir(id);
    let size = disk::dir_size(&dir);
    let tmp = ctx.tmp_dir();
    disk::create_dir_all(&tmp)?;
    let doomed = tmp.join(format!("deleting-{id}-{}", disk::unique_name()));
    std::fs::rename(&dir, &doomed).map_err(fs_err("move aside", &dir))?;
    disk::fsync_dir(&ctx.snaps_dir())?;
    disk::remove_all(&doomed)?;
    Ok(size)
}

/// Checks every dump part's sha256 and every blob's sha1 and size.
pub(super) fn verify_sync(ctx: &Ctx, m: &Manifest) -> Result<VerifyReport, SnapshotError> {
    let dir = ctx.snap_dir(&m.id);
    let mut report = verify_parts(&dir, m)?;
    let store = ctx.blobs();
    let mut seen = HashSet::new();
    for f in &m.filestore.files {
        if seen.insert(f.sha1.as_str()) {
            store.read_to(&f.sha1, f.size, &mut std::io::sink())?;
            report.blobs += 1;
            report.bytes += f.size;
        }
    }
    Ok(report)
}

/// Checks the sha256 of every dump part below `dir`.
pub(super) fn verify_parts(dir: &Path, m: &Manifest) -> Result<VerifyReport, SnapshotError> {
    let mut report = VerifyReport {
        parts: 0,
        blobs: 0,
        bytes: 0,
    };
    for part in &m.dump.parts {
        let rel = safe_relative_path(&part.path).map_err(|message| SnapshotError::BadManifest {
            path: dir.join("manifest.json"),
            message,
        })?;
        let path = dir.join(rel);
        let (sha256, size) = sha256_file(&path).map_err(|e| {
            if e.source.kind() == std::io::ErrorKind::NotFound {
                SnapshotError::Corrupt(CorruptError {
                    path: path.clone(),
                    reason: "the dump part is missing".to_owned(),
                })
            } else {
                e.into()
            }
        })?;
        if size != part.size || sha256 != part.sha256 {
            return Err(CorruptError {
                path,
                reason: format!(
                    "sha256 {sha256} and {size} bytes, the manifest says {} and {} bytes",
                    part.sha256, part.size
                ),
            }
            .into());
        }
        report.parts += 1;
        report.bytes += size;
    }
    Ok(report)
}

pub(super) fn sha256_file(path: &Path) -> Result<(String, u64), FsError> {
    use std::io::Read;
    let mut f = std::fs::File::open(path).map_err(fs_err("open", path))?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut size = 0u64;
    loop {
        let n = f.read(&mut buf).map_err(fs_err("read", path))?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        size += n as u64;
    }
    Ok((hex::encode(hasher.finalize()), size))
}

impl Snapshots {
    /// Every published snapshot of the instance, newest first.
    pub async fn list(&self, instance_id: &str) -> Result<Vec<SnapshotMeta>, SnapshotError> {
        let ctx = self.ctx(instance_id)?;
        // Deletion and retention hold the write side: a listing never sees one half gone.
        let _store = ctx.locks.store.read().await;
        let c = ctx.clone();
        blocking(move || list_sync(&c)).await
    }

    pub async fn get(
        &self,
        instance_id: &str,
        snapshot_id: &str,
    ) -> Result<SnapshotMeta, SnapshotError> {
        let ctx = self.ctx(instance_id)?;
        check_id(snapshot_id)?;
        let _store = ctx.locks.store.read().await;
        published_meta(&ctx, snapshot_id).await
    }

    /// The full manifest of a snapshot.
    pub async fn manifest(
        &self,
        instance_id: &str,
        snapshot_id: &str,
    ) -> Result<Manifest, SnapshotError> {
        let ctx = self.ctx(instance_id)?;
        let id = snapshot_id.to_owned();
        blocking(move || published_manifest(&ctx, &id)).await
    }

    /// Pins or unpins a snapshot; pinned ones are never removed by retention.
    pub async fn pin(
        &self,
        instance_id: &str,
        snapshot_id: &str,
        pinned: bool,
    ) -> Result<SnapshotMeta, SnapshotError> {
        let ctx = self.ctx(instance_id)?;
        check_id(snapshot_id)?;
        // Exclusive, like deletion: a snapshot is never deleted between its check and its pin.
        let _store = ctx.locks.store.write().await;
        let meta = published_meta(&ctx, snapshot_id).await?;
        let path = ctx.snap_dir(snapshot_id).join("pinned");
        if pinned {
            disk::write_atomic(&path, b"")?;
        } else {
            disk::remove_all(&path)?;
        }
        Ok(SnapshotMeta { pinned, ..meta })
    }

    /// Deletes an unpinned snapshot and every blob no other snapshot needs. Returns the
    /// bytes freed.
    pub async fn delete(&self, instance_id: &str, snapshot_id: &str) -> Result<u64, SnapshotError> {
        let ctx = self.ctx(instance_id)?;
        check_id(snapshot_id)?;
        let _live = ctx.locks.live.lock().await;
        let _store = ctx.locks.store.write().await;
        // Checked under the locks: a concurrent delete or pin has finished by now.
        let meta = published_meta(&ctx, snapshot_id).await?;
        if meta.pinned {
            return Err(SnapshotError::Pinned { id: meta.id });
        }
        let (c, id) = (ctx.clone(), snapshot_id.to_owned());
        let freed = blocking(move || delete_sync(&c, &id)).await?;
        tracing::info!(
            instance = instance_id,
            snapshot = snapshot_id,
            freed,
            "deleted snapshot"
        );
        Ok(freed)
    }

    /// Reads every part of a snapshot back and checks it against the manifest.
    pub async fn verify(
        &self,
        instance_id: &str,
        snapshot_id: &str,
    ) -> Result<VerifyReport, SnapshotError> {
        let ctx = self.ctx(instance_id)?;
        let _store = ctx.locks.store.read().await;
        let (c, id) = (ctx.clone(), snapshot_id.to_owned());
        blocking(move || {
            let m = published_manifest(&c, &id)?;
            verify_sync(&c, &m)
        })
        .await
    }

    /// Removes blobs no snapshot references (orphans of interrupted snapshots).
    pub async fn collect_garbage(&self, instance_id: &str) -> Result<(u64, u64), SnapshotError> {
        let ctx = self.ctx(instance_id)?;
        let _live = ctx.locks.live.lock().await;
        let c = ctx.clone();
        blocking(move || collect_garbage(&c)).await
    }
}
