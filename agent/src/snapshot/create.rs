//! Taking a snapshot: disk check against the estimate, then `pg_dump -Fd` and the filestore
//! capture side by side into a temporary directory, checksums, the manifest, and one rename
//! that publishes it. A failed or cancelled snapshot leaves nothing visible and removes the
//! blobs it stored.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use tokio_util::sync::CancellationToken;

use super::catalog::{self, check_id, SnapshotError};
use super::disk::{self, CheckFreeError};
use super::dump::{self, PgTools};
use super::errors::{ErrorKind, FsError, NotEnoughSpace, PgError};
use super::estimate::{self, EstimateError};
use super::filestore::{self, CaptureError};
use super::manifest::{
    DatabaseInfo, DumpInfo, FilestoreInfo, Manifest, Part, SnapshotKind, Timings, MANIFEST_FORMAT,
};
use super::{blocking, Ctx, Progress, SnapshotMeta, SnapshotProgress, Snapshots, UnknownInstance};

/// How often dirty snapshot data is written back while a snapshot is taken.
const FLUSH_EVERY: std::time::Duration = std::time::Duration::from_millis(500);

/// What to snapshot and why; the id comes from the coordinator.
#[derive(Debug, Clone)]
pub struct CreateSnapshot {
    pub id: String,
    pub kind: SnapshotKind,
    pub deployment_id: Option<String>,
    pub commit_sha: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum CreateSnapshotError {
    #[error(transparent)]
    UnknownInstance(#[from] UnknownInstance),
    #[error("{0}")]
    InvalidId(String),
    #[error("snapshot {id} of instance {instance} already exists")]
    AlreadyExists { instance: String, id: String },
    #[error(transparent)]
    NotEnoughSpace(#[from] NotEnoughSpace),
    #[error("snapshot {id}: database {database}: {source}")]
    Database {
        id: String,
        database: String,
        source: PgError,
    },
    #[error("snapshot {id}: filestore: {source}")]
    Filestore { id: String, source: FsError },
    #[error("snapshot {id}: {source}")]
    Fs { id: String, source: FsError },
    #[error("snapshot {id}: {source}")]
    Store { id: String, source: SnapshotError },
    #[error("snapshot {id} was cancelled; nothing was kept")]
    Cancelled { id: String },
}

impl CreateSnapshotError {
    pub fn kind(&self) -> ErrorKind {
        match self {
            Self::UnknownInstance(_) => ErrorKind::NotFound,
            Self::InvalidId(_) => ErrorKind::InvalidArgument,
            Self::AlreadyExists { .. } => ErrorKind::AlreadyExists,
            Self::NotEnoughSpace(_) => ErrorKind::NoSpace,
            Self::Database { source, .. } => source.kind(),
            Self::Filestore { source, .. } | Self::Fs { source, .. } => source.kind(),
            Self::Store { source, .. } => source.kind(),
            Self::Cancelled { .. } => ErrorKind::Cancelled,
        }
    }
}

impl Snapshots {
    /// Takes a snapshot of the instance's database and filestore.
    pub async fn create(
        &self,
        instance_id: &str,
        req: CreateSnapshot,
        progress: Progress<'_>,
        cancel: &CancellationToken,
    ) -> Result<SnapshotMeta, CreateSnapshotError> {
        let ctx = self.ctx(instance_id)?;
        check_id(&req.id).map_err(|e| CreateSnapshotError::InvalidId(e.to_string()))?;
        let _live = ctx.locks.live.lock().await;
        let _store = ctx.locks.store.read().await;
        let id = req.id.clone();
        if ctx.snap_dir(&id).exists() {
            return Err(CreateSnapshotError::AlreadyExists {
                instance: ctx.instance.clone(),
                id,
            });
        }
        let tmp = ctx.tmp_dir().join(format!("{id}.{}", disk::unique_name()));
        let result = self.create_in(&ctx, &req, &tmp, progress, cancel).await;
        if result.is_err() {
            // Nothing half-written stays: the temporary directory and the blobs only this
            // attempt stored (no manifest names them) go.
            let c = ctx.clone();
            let t = tmp.clone();
            let cleanup = blocking(move || {
                disk::remove_all(&t)?;
                catalog::collect_garbage(&c)
            })
            .await;
            if let Err(e) = cleanup {
                tracing::warn!(snapshot = %id, "cleanup after a failed snapshot: {e}");
            }
        }
        result
    }

    async fn create_in(
        &self,
        ctx: &Ctx,
        req: &CreateSnapshot,
        tmp: &Path,
        progress: Progress<'_>,
        cancel: &CancellationToken,
    ) -> Result<SnapshotMeta, CreateSnapshotError> {
        let started = Instant::now();
        let id = req.id.clone();
        let created_at = time::OffsetDateTime::now_utc();
        let db_err = |source: PgError| CreateSnapshotError::Database {
            id: id.clone(),
            database: ctx.database.clone(),
            source,
        };
        let fs_err = |source: FsError| CreateSnapshotError::Fs {
            id: id.clone(),
            source,
        };
        progress(SnapshotProgress::Phase {
            phase: "estimate",
            done: 0,
            total: 1,
        });
        let prepared = estimate::prepare(ctx, self, cancel)
            .await
            .map_err(|e| match e {
                EstimateError::Pg(e) => db_err(e),
                EstimateError::Fs(e) => fs_err(e),
                EstimateError::Store(e) => CreateSnapshotError::Store {
                    id: id.clone(),
                    source: e,
                },
                EstimateError::UnknownInstance(e) => e.into(),
            })?;
        let est = prepared.estimate.clone();
        progress(SnapshotProgress::Log(format!(
            "estimate: {} (database {}, new filestore content {}), {} free",
            super::fmt_bytes(est.estimated_bytes),
            super::fmt_bytes(est.database_bytes),
            super::fmt_bytes(est.new_filestore_bytes),
            super::fmt_bytes(est.free_disk_bytes),
        )));
        disk::check_free(&ctx.root, est.estimated_bytes, &format!("snapshot {id}")).map_err(
            |e| match e {
                CheckFreeError::Fs(e) => fs_err(e),
                CheckFreeError::NotEnough(e) => e.into(),
            },
        )?;
        let tools = PgTools::discover(
            ctx.settings.pg_bin_dir.as_deref(),
            prepared.facts.server_version_num / 10000,
            cancel,
        )
        .await
        .map_err(db_err)?;
        disk::create_dir_all(tmp).map_err(fs_err)?;
        let facts = prepared.facts;
        let tables = facts.table_count;

        // Dirty dump and blob pages are written back while the parts run, not all at the end.
        let flush = disk::BackgroundFlush::start(tmp.to_owned(), FLUSH_EVERY);
        // The database and the filestore parts run side by side; either failing stops both.
        let both = cancel.child_token();
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<(u64, u64)>();
        let fs_task = {
            let both = both.clone();
            let root = ctx.filestore();
            let store = ctx.blobs();
            let threads = ctx.threads();
            let scan = prepared.scan;
            let index = prepared.index;
            let known = prepared.known;
            tokio::task::spawn_blocking(move || {
                let t = Instant::now();
                let report = move |done, total| {
                    let _ = tx.send((done, total));
                };
                let r =
                    filestore::capture(&root, scan, &index, &store, known, threads, &report, &both);
                (r, t.elapsed())
            })
        };
        let db_dir = tmp.join("db");
        let db_part = async {
            let t = Instant::now();
            let done = AtomicU64::new(0);
            progress(SnapshotProgress::Phase {
                phase: "database",
                done: 0,
                total: tables,
            });
            let mut on_table = || {
                let d = done.fetch_add(1, Ordering::Relaxed) + 1;
                progress(SnapshotProgress::Phase {
                    phase: "database",
                    done: d.min(tables),
                    total: tables,
                });
            };
            let r = dump::dump(
                &self.pg,
                &tools,
                &ctx.database,
                &db_dir,
                ctx.settings.pg_dump_jobs,
                &mut on_table,
                &both,
            )
            .await;
            if r.is_err() {
                both.cancel();
            }
            let r = match r {
                Ok(()) => {
                    let dir = db_dir.clone();
                    blocking(move || dump_parts_of(&dir))
                        .await
                        .map_err(PgFsError::Fs)
                }
                Err(e) => Err(PgFsError::Pg(e)),
            };
            (r, t.elapsed())
        };
        let fs_part = async {
            while let Some((done, total)) = rx.recv().await {
                progress(SnapshotProgress::Phase {
                    phase: "filestore",
                    done,
                    total,
                });
            }
            let (r, took) = match fs_task.await {
                Ok(v) => v,
                Err(e) => std::panic::resume_unwind(e.into_panic()),
            };
            if r.is_err() {
                both.cancel();
            }
            (r, took)
        };
        let ((db_result, db_took), (fs_result, fs_took)) = tokio::join!(db_part, fs_part);
        let flushes = blocking(move || flush.finish()).await;
        tracing::debug!(snapshot = %id, flushes, "written back while it was taken");
        if cancel.is_cancelled() {
            return Err(CreateSnapshotError::Cancelled { id });
        }
        // Report the failure that caused the other part's cancellation.
        let parts = match (db_result, fs_result) {
            (Ok(parts), Ok(captured)) => (parts, captured),
            (Err(PgFsError::Pg(e)), Err(CaptureError::Cancelled(_))) => return Err(db_err(e)),
            (_, Err(CaptureError::Fs(e))) => {
                return Err(CreateSnapshotError::Filestore { id, source: e })
            }
            (Err(PgFsError::Pg(e)), _) => return Err(db_err(e)),
            (Err(PgFsError::Fs(e)), _) => return Err(fs_err(e)),
            (Ok(_), Err(CaptureError::Cancelled(_))) => {
                return Err(CreateSnapshotError::Cancelled { id })
            }
        };
        let (parts, captured) = parts;
        for w in &captured.warnings {
            progress(SnapshotProgress::Log(w.clone()));
        }
        let dump_bytes: u64 = parts.iter().map(|p| p.size).sum();
        let manifest = Manifest {
            format: MANIFEST_FORMAT,
            id: id.clone(),
            instance_id: ctx.instance.clone(),
            kind: req.kind,
            created_at,
            deployment_id: req.deployment_id.clone(),
            commit_sha: req.commit_sha.clone(),
            database: DatabaseInfo {
                name: ctx.database.clone(),
                server_version: facts.server_version,
                server_version_num: facts.server_version_num,
                size_bytes: facts.size_bytes,
                encoding: facts.encoding,
                collate: facts.collate,
                ctype: facts.ctype,
                owner: facts.owner,
            },
            modules: facts.modules,
            dump: DumpInfo {
                format: "directory".to_owned(),
                compression: tools.compression(),
                client_version: tools.version.clone(),
                with_owners: true,
                parts,
            },
            filestore: FilestoreInfo {
                files: captured.files,
                total_bytes: captured.total_bytes,
                new_blobs: captured.new_blob_ids.len() as u64,
                new_bytes: captured.new_bytes,
                new_stored_bytes: captured.new_stored_bytes,
            },
            stored_bytes: dump_bytes + captured.new_stored_bytes,
            estimated_bytes: est.estimated_bytes,
            timings: Timings {
                database_ms: db_took.as_millis() as u64,
                filestore_ms: fs_took.as_millis() as u64,
                total_ms: started.elapsed().as_millis() as u64,
            },
            imported: None,
        };
        if cancel.is_cancelled() {
            return Err(CreateSnapshotError::Cancelled { id });
        }
        let index = captured.index;
        let c = ctx.clone();
        let t = tmp.to_owned();
        let m = manifest.clone();
        blocking(move || publish(&c, &t, &m, Some(&index)))
            .await
            .map_err(fs_err)?;
        progress(SnapshotProgress::Log(format!(
            "snapshot {id}: stored {} (estimate was {}): dump {} in {} ms, filestore {} new of {} in {} files in {} ms",
            super::fmt_bytes(manifest.stored_bytes),
            super::fmt_bytes(manifest.estimated_bytes),
            super::fmt_bytes(dump_bytes),
            manifest.timings.database_ms,
            super::fmt_bytes(manifest.filestore.new_stored_bytes),
            super::fmt_bytes(manifest.filestore.total_bytes),
            manifest.filestore.files.len(),
            manifest.timings.filestore_ms,
        )));
        tracing::info!(
            instance = %ctx.instance,
            snapshot = %id,
            stored_bytes = manifest.stored_bytes,
            estimated_bytes = manifest.estimated_bytes,
            "snapshot taken"
        );
        Ok(meta_from(&manifest, false))
    }
}

enum PgFsError {
    Pg(PgError),
    Fs(FsError),
}

/// Size and sha256 of every file the dump wrote.
pub(super) fn dump_parts_of(dir: &Path) -> Result<Vec<Part>, FsError> {
    let mut parts = Vec::new();
    let mut files: Vec<PathBuf> = disk::list_dir(dir)?;
    files.sort();
    for path in files {
        let Some(name) = path.file_name().and_then(|n| n.to_str()) else {
            continue;
        };
        let (sha256, size) = catalog::sha256_file(&path)?;
        parts.push(Part {
            path: format!("db/{name}"),
            size,
            sha256,
        });
    }
    Ok(parts)
}

/// Writes the manifest and summary into `tmp`, makes everything durable, and renames `tmp`
/// to the published snapshot directory; then saves the stat index.
pub(super) fn publish(
    ctx: &Ctx,
    tmp: &Path,
    manifest: &Manifest,
    index: Option<&filestore::StatIndex>,
) -> Result<(), FsError> {
    let mpath = tmp.join("manifest.json");
    let bytes = to_json(manifest, &mpath)?;
    std::fs::write(&mpath, bytes).map_err(super::errors::fs_err("write", &mpath))?;
    let spath = tmp.join("meta.json");
    let bytes = to_json(&manifest.summary(), &spath)?;
    std::fs::write(&spath, bytes).map_err(super::errors::fs_err("write", &spath))?;
    // One flush for the dump, the blobs and the manifest, before they become visible.
    disk::sync_filesystem(tmp)?;
    let dest = ctx.snap_dir(&manifest.id);
    disk::create_dir_all(&ctx.snaps_dir())?;
    std::fs::rename(tmp, &dest).map_err(super::errors::fs_err("publish", &dest))?;
    disk::fsync_dir(&ctx.snaps_dir())?;
    if let Some(index) = index {
        // The snapshot is published; a stale index only costs the next snapshot reads.
        if let Err(e) = index.save(&ctx.index_path()) {
            tracing::warn!("cannot save the stat index: {e}");
        }
    }
    Ok(())
}

pub(super) fn to_json<T: serde::Serialize>(v: &T, path: &Path) -> Result<Vec<u8>, FsError> {
    serde_json::to_vec_pretty(v).map_err(|e| FsError {
        action: "encode",
        path: path.to_owned(),
        source: std::io::Error::other(e),
    })
}

pub(super) fn meta_from(m: &Manifest, pinned: bool) -> SnapshotMeta {
    let s = m.summary();
    SnapshotMeta {
        id: s.id,
        instance_id: s.instance_id,
        kind: s.kind,
        pinned,
        size_bytes: s.stored_bytes,
        estimated_bytes: s.estimated_bytes,
        created_at: s.created_at,
        deployment_id: s.deployment_id,
        commit_sha: s.commit_sha,
        database: s.database,
        file_count: s.file_count,
        filestore_bytes: s.filestore_bytes,
        imported: s.imported,
    }
}
