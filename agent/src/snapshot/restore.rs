//! Restoring a snapshot. Everything is verified and prepared before anything live changes:
//! dump checksums first, then the dump goes into a fresh database while the missing
//! filestore files are staged from their blobs (each verified as it is written). Only then
//! is the database swapped in by rename and the filestore made equal to the manifest.
//! A journal marker lets `recover` finish a restore interrupted after the swap started.

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};

use tokio_util::sync::CancellationToken;

use super::blobs::BlobError;
use super::catalog::{self, SnapshotError};
use super::disk::{self, CheckFreeError};
use super::dump::{self, PgTools};
use super::errors::{CorruptError, ErrorKind, FsError, NotEnoughSpace, PgError};
use super::filestore::{self, Plan, StageError, StatIndex, Wanted};
use super::journal::{self, Marker, RestoreMarker, RestorePhase};
use super::manifest::Manifest;
use super::{blocking, temp_db_name, Ctx, Progress, SnapshotProgress, Snapshots, UnknownInstance};

#[derive(Debug, thiserror::Error)]
pub enum RestoreError {
    #[error(transparent)]
    UnknownInstance(#[from] UnknownInstance),
    #[error(transparent)]
    Snapshot(#[from] SnapshotError),
    #[error("restore of snapshot {id} refused: {source}; the live database and filestore were not touched")]
    Refused { id: String, source: CorruptError },
    #[error("restore of snapshot {id} refused: {source}; the live database and filestore were not touched")]
    NotEnoughSpace { id: String, source: NotEnoughSpace },
    #[error("restore of snapshot {id}: database {database}: {source}")]
    Database {
        id: String,
        database: String,
        source: PgError,
    },
    #[error("restore of snapshot {id}: filestore: {source}")]
    Filestore { id: String, source: FsError },
    #[error("restore of snapshot {id} was cancelled before anything live changed")]
    Cancelled { id: String },
}

impl RestoreError {
    pub fn kind(&self) -> ErrorKind {
        match self {
            Self::UnknownInstance(_) => ErrorKind::NotFound,
            Self::Snapshot(e) => e.kind(),
            Self::Refused { .. } => ErrorKind::Corrupt,
            Self::NotEnoughSpace { .. } => ErrorKind::NoSpace,
            Self::Database { source, .. } => source.kind(),
            Self::Filestore { source, .. } => source.kind(),
            Self::Cancelled { .. } => ErrorKind::Cancelled,
        }
    }
}

impl Snapshots {
    /// Restores a snapshot over the instance's database and filestore. The caller has
    /// stopped the instance's Odoo containers; remaining connections are terminated.
    pub async fn restore(
        &self,
        instance_id: &str,
        snapshot_id: &str,
        progress: Progress<'_>,
        cancel: &CancellationToken,
    ) -> Result<(), RestoreError> {
        let ctx = self.ctx(instance_id)?;
        let _live = ctx.locks.live.lock().await;
        let _store = ctx.locks.store.read().await;
        let id = snapshot_id.to_owned();
        let c = ctx.clone();
        let manifest = blocking(move || catalog::published_manifest(&c, &id)).await?;
        let id = manifest.id.clone();
        let fs_err = |source: FsError| RestoreError::Filestore {
            id: id.clone(),
            source,
        };
        let db_err = |source: PgError| RestoreError::Database {
            id: id.clone(),
            database: ctx.database.clone(),
            source,
        };

        progress(SnapshotProgress::Phase {
            phase: "verify",
            done: 0,
            total: manifest.dump.parts.len() as u64,
        });
        let (c, m) = (ctx.clone(), manifest.clone());
        blocking(move || catalog::verify_parts(&c.snap_dir(&m.id), &m))
            .await
            .map_err(|e| match e {
                SnapshotError::Corrupt(source) => RestoreError::Refused {
                    id: id.clone(),
                    source,
                },
                other => other.into(),
            })?;
        progress(SnapshotProgress::Phase {
            phase: "verify",
            done: manifest.dump.parts.len() as u64,
            total: manifest.dump.parts.len() as u64,
        });

        let (_, server_num) = dump::server_version(&self.pg).await.map_err(db_err)?;
        let tools = PgTools::discover(
            ctx.settings.pg_bin_dir.as_deref(),
            server_num / 10000,
            cancel,
        )
        .await
        .map_err(db_err)?;

        let (c, wanted) = (ctx.clone(), wanted_of(&manifest));
        let plan = blocking(move || {
            let scan = filestore::scan(&c.filestore())?;
            let index = StatIndex::load(&c.index_path());
            filestore::plan(&c.filestore(), &wanted, scan, &index)
        })
        .await
        .map_err(fs_err)?;
        progress(SnapshotProgress::Log(format!(
            "filestore: {} files to write ({}), {} to remove, {} unchanged",
            plan.write.len(),
            super::fmt_bytes(plan.write_bytes()),
            plan.remove.len(),
            plan.keep.len()
        )));
        let no_space = |e: CheckFreeError| match e {
            CheckFreeError::Fs(e) => fs_err(e),
            CheckFreeError::NotEnough(source) => RestoreError::NotEnoughSpace {
                id: id.clone(),
                source,
            },
        };
        disk::check_free(
            &ctx.filestore_parent,
            plan.write_bytes(),
            &format!("the filestore files of snapshot {id}"),
        )
        .map_err(no_space)?;
        if let Some((dir, free)) = dump::data_dir_free(&self.pg).await {
            if free
                < manifest
                    .database
                    .size_bytes
                    .saturating_add(disk::RESERVE_BYTES)
            {
                return Err(RestoreError::NotEnoughSpace {
                    id: id.clone(),
                    source: NotEnoughSpace {
                        what: format!("the database of snapshot {id}"),
                        path: dir,
                        estimate: manifest.database.size_bytes,
                        reserve: disk::RESERVE_BYTES,
                        free,
                    },
                });
            }
        }

        let nonce = disk::unique_name();
        let mut marker = RestoreMarker {
            snapshot_id: id.clone(),
            database: ctx.database.clone(),
            tmp_db: temp_db_name(),
            old_db: temp_db_name(),
            staging: ctx.staging_dir(&nonce),
            phase: RestorePhase::Prepare,
        };
        let marker_name = format!("restore-{nonce}");
        let marker_path = journal::write(
            &ctx.journal_dir(),
            &marker_name,
            &Marker::Restore(marker.clone()),
        )
        .map_err(fs_err)?;

        let prepared = self
            .prepare(&ctx, &manifest, &tools, &marker, &plan, progress, cancel)
            .await;
        if let Err(e) = prepared {
            self.roll_back_prepare(&marker, &marker_path).await;
            return Err(match e {
                Prepare::Db(e) => db_err(e),
                Prepare::Stage(StageError::Blob(BlobError::Corrupt(source))) => {
                    RestoreError::Refused { id, source }
                }
                Prepare::Stage(StageError::Blob(BlobError::Fs(e)) | StageError::Fs(e)) => fs_err(e),
                Prepare::Stage(StageError::Cancelled(_)) | Prepare::Cancelled => {
                    RestoreError::Cancelled { id }
                }
            });
        }

        progress(SnapshotProgress::Log(format!(
            "database restored into {} and {} files staged",
            marker.tmp_db,
            plan.write.len()
        )));
        // From here on the restore goes forward; the marker lets recovery finish it.
        marker.phase = RestorePhase::Swap;
        journal::write(
            &ctx.journal_dir(),
            &marker_name,
            &Marker::Restore(marker.clone()),
        )
        .map_err(fs_err)?;
        progress(SnapshotProgress::Phase {
            phase: "swap",
            done: 0,
            total: 1,
        });
        swap_in(&self.pg, &ctx.database, &marker.tmp_db, &marker.old_db)
            .await
            .map_err(db_err)?;
        marker.phase = RestorePhase::Filestore;
        journal::write(
            &ctx.journal_dir(),
            &marker_name,
            &Marker::Restore(marker.clone()),
        )
        .map_err(fs_err)?;
        progress(SnapshotProgress::Phase {
            phase: "swap",
            done: 1,
            total: 1,
        });

        let (c, staging) = (ctx.clone(), marker.staging.clone());
        let (written, removed) = (plan.write.len(), plan.remove.len());
        blocking(move || {
            let index = filestore::apply(&c.filestore(), &staging, &plan, c.owner)?;
            index.save(&c.index_path())?;
            disk::remove_all(&staging)
        })
        .await
        .map_err(fs_err)?;
        progress(SnapshotProgress::Log(format!(
            "filestore equals the snapshot: {written} files written, {removed} removed"
        )));
        // The restore is complete. Dropping the previous database forces a checkpoint of
        // everything just restored, so it happens in the background; the marker stays until
        // it is done, and recovery finishes it after a restart.
        marker.phase = RestorePhase::DropOld;
        journal::write(
            &ctx.journal_dir(),
            &marker_name,
            &Marker::Restore(marker.clone()),
        )
        .map_err(fs_err)?;
        let (pg, old) = (self.pg.clone(), marker.old_db.clone());
        self.background.spawn(async move {
            match dump::drop_if_exists(&pg, &old).await {
                Ok(()) => {
                    if let Err(e) = journal::remove(&marker_path) {
                        tracing::warn!("{e}");
                    }
                }
                Err(e) => tracing::warn!(
                    "cannot drop the replaced database {old} (retried at the next start): {e}"
                ),
            }
        });
        progress(SnapshotProgress::Log(format!(
            "restored snapshot {id} into database {}",
            ctx.database
        )));
        tracing::info!(instance = %ctx.instance, snapshot = %id, "snapshot restored");
        Ok(())
    }

    /// Fills the fresh database and stages the filestore files, side by side.
    #[allow(clippy::too_many_arguments)]
    async fn prepare(
        &self,
        ctx: &Ctx,
        manifest: &Manifest,
        tools: &PgTools,
        marker: &RestoreMarker,
        plan: &Plan,
        progress: Progress<'_>,
        cancel: &CancellationToken,
    ) -> Result<(), Prepare> {
        let both = cancel.child_token();
        let db = &manifest.database;
        let db_part = async {
            let r = async {
                // The restored database belongs to whoever owns the live one (the role Odoo
                // connects as), else to the snapshot's owner.
                let owner = dump::owner_of(&self.pg, &ctx.database)
                    .await?
                    .unwrap_or_else(|| db.owner.clone());
                dump::create_empty(
                    &self.pg,
                    &marker.tmp_db,
                    &db.encoding,
                    &db.collate,
                    &db.ctype,
                    &owner,
                )
                .await?;
                let as_role = (!manifest.dump.with_owners).then_some(owner.as_str());
                let done = AtomicU64::new(0);
                let mut on_table = || {
                    let d = done.fetch_add(1, Ordering::Relaxed) + 1;
                    progress(SnapshotProgress::Phase {
                        phase: "database",
                        done: d,
                        total: 0,
                    });
                };
                dump::restore(
                    &self.pg,
                    tools,
                    &ctx.snap_dir(&manifest.id).join("db"),
                    &marker.tmp_db,
                    ctx.settings.pg_restore_jobs,
                    as_role,
                    &mut on_table,
                    &both,
                )
                .await
            }
            .await;
            if r.is_err() {
                both.cancel();
            }
            r
        };
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<(u64, u64)>();
        let stage_task = {
            let (staging, store, write, threads, both) = (
                marker.staging.clone(),
                ctx.blobs(),
                plan.write.clone(),
                ctx.threads(),
                both.clone(),
            );
            tokio::task::spawn_blocking(move || {
                let report = move |d, t| {
                    let _ = tx.send((d, t));
                };
                filestore::stage(&staging, &write, &store, None, threads, &report, &both)
            })
        };
        let fs_part = async {
            while let Some((done, total)) = rx.recv().await {
                progress(SnapshotProgress::Phase {
                    phase: "filestore",
                    done,
                    total,
                });
            }
            let r = match stage_task.await {
                Ok(r) => r,
                Err(e) => std::panic::resume_unwind(e.into_panic()),
            };
            if r.is_err() {
                both.cancel();
            }
            r
        };
        let (db_r, fs_r) = tokio::join!(db_part, fs_part);
        if cancel.is_cancelled() {
            return Err(Prepare::Cancelled);
        }
        match (db_r, fs_r) {
            (Ok(()), Ok(())) => Ok(()),
            (_, Err(e @ (StageError::Blob(_) | StageError::Fs(_)))) => Err(Prepare::Stage(e)),
            (Err(e), _) => Err(Prepare::Db(e)),
            (Ok(()), Err(e)) => Err(Prepare::Stage(e)),
        }
    }

    async fn roll_back_prepare(&self, marker: &RestoreMarker, marker_path: &Path) {
        if let Err(e) = roll_back_prepare(&self.pg, marker, marker_path).await {
            tracing::warn!(
                "cleanup after a failed restore (recovery retries at the next start): {e}"
            );
        }
    }
}

pub(super) enum Prepare {
    Db(PgError),
    Stage(StageError),
    Cancelled,
}

pub(super) fn wanted_of(m: &Manifest) -> Vec<Wanted> {
    m.filestore
        .files
        .iter()
        .map(Wanted::from_manifest)
        .collect()
}

/// Undoes the preparation of a restore: nothing live had changed.
pub(super) async fn roll_back_prepare(
    pg: &crate::db::Pg,
    marker: &RestoreMarker,
    marker_path: &Path,
) -> Result<(), String> {
    dump::drop_if_exists(pg, &marker.tmp_db)
        .await
        .map_err(|e| e.to_string())?;
    let (staging, path) = (marker.staging.clone(), marker_path.to_owned());
    blocking(move || {
        disk::remove_all(&staging)?;
        journal::remove(&path)
    })
    .await
    .map_err(|e| e.to_string())
}

/// Puts `new` in place of `live` by rename: `live` becomes `old` (when it exists), `new`
/// becomes `live`. Connections to `live` are terminated first. Re-running it after an
/// interruption finishes the same swap.
pub(super) async fn swap_in(
    pg: &crate::db::Pg,
    live: &str,
    new: &str,
    old: &str,
) -> Result<(), PgError> {
    let new_exists = dump::exists(pg, new).await?;
    if !new_exists {
        // Already swapped by an earlier, interrupted run.
        return if dump::exists(pg, live).await? {
            Ok(())
        } else {
            Err(PgError::State {
                database: live.to_owned(),
                message: format!("neither it nor the restored copy {new} exists"),
            })
        };
    }
    let moved_aside = dump::exists(pg, live).await?;
    if moved_aside {
        if dump::exists(pg, old).await? {
            return Err(PgError::State {
                database: live.to_owned(),
                message: format!("cannot move it aside: {old} exists"),
            });
        }
        dump::rename(pg, live, old).await?;
    }
    if let Err(e) = dump::rename(pg, new, live).await {
        // Put the original back so the instance keeps a database.
        if moved_aside {
            if let Err(back) = dump::rename(pg, old, live).await {
                tracing::error!("cannot put database {live} back from {old}: {back}");
            }
        }
        return Err(e);
    }
    Ok(())
}

/// Makes the live filestore equal to `wanted` from scratch (scan, plan, stage, apply): what
/// recovery and the safety copy's swap back use, where no earlier plan can be trusted.
pub(super) fn make_filestore_equal(
    ctx: &Ctx,
    wanted: &[Wanted],
    copies: Option<&Path>,
) -> Result<(), StageError> {
    let root = ctx.filestore();
    let scan = filestore::scan(&root)?;
    let index = StatIndex::load(&ctx.index_path());
    let plan = filestore::plan(&root, wanted, scan, &index)?;
    let staging = ctx.staging_dir(&disk::unique_name());
    let never = CancellationToken::new();
    let staged = filestore::stage(
        &staging,
        &plan.write,
        &ctx.blobs(),
        copies,
        ctx.threads(),
        &|_, _| {},
        &never,
    );
    let applied = staged.and_then(|()| Ok(filestore::apply(&root, &staging, &plan, ctx.owner)?));
    disk::remove_all(&staging)?;
    applied?.save(&ctx.index_path())?;
    Ok(())
}
