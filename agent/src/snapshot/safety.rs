//! The maintenance window's safety copy (design §4, "Losing nothing in the maintenance
//! window"): once the old colour has stopped, a server-side copy of the database
//! (`CREATE DATABASE … TEMPLATE …`) and a copy of the filestore files added since the
//! pre-deploy snapshot hold the exact pre-update state. A failed `-u` swaps it back by
//! rename in seconds; a successful deploy discards it.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use super::catalog::{self, SnapshotError};
use super::disk::{self, CheckFreeError};
use super::dump;
use super::errors::{ErrorKind, FsError, NotEnoughSpace, PgError};
use super::filestore::{self, Source, StatIndex, Wanted};
use super::journal::{self, Marker, SafetyMarker, SafetyPhase};
use super::restore::{make_filestore_equal, swap_in};
use super::{blocking, temp_db_name, Ctx, Snapshots, UnknownInstance};
use crate::db::Pg;

#[derive(Debug, thiserror::Error)]
pub enum SafetyCopyError {
    #[error(transparent)]
    UnknownInstance(#[from] UnknownInstance),
    #[error(transparent)]
    Snapshot(#[from] SnapshotError),
    #[error("instance {instance} already has a safety copy (marker {marker}); swap it back or discard it first")]
    AlreadyExists { instance: String, marker: PathBuf },
    #[error(transparent)]
    NotEnoughSpace(#[from] NotEnoughSpace),
    #[error("safety copy of database {database}: {source}")]
    Database { database: String, source: PgError },
    #[error("safety copy of the filestore {path}: {message}")]
    Filestore { path: PathBuf, message: String },
    #[error(transparent)]
    Fs(#[from] FsError),
}

impl SafetyCopyError {
    pub fn kind(&self) -> ErrorKind {
        match self {
            Self::UnknownInstance(_) => ErrorKind::NotFound,
            Self::Snapshot(e) => e.kind(),
            Self::AlreadyExists { .. } => ErrorKind::AlreadyExists,
            Self::NotEnoughSpace(_) => ErrorKind::NoSpace,
            Self::Database { source, .. } => source.kind(),
            Self::Filestore { .. } => ErrorKind::Internal,
            Self::Fs(e) => e.kind(),
        }
    }
}

/// The pre-update state of an instance, held until the deployment decides.
#[must_use = "a safety copy must be swapped back or discarded"]
pub struct SafetyCopy {
    pg: Pg,
    ctx: Ctx,
    marker: SafetyMarker,
    marker_path: PathBuf,
}

impl std::fmt::Debug for SafetyCopy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SafetyCopy")
            .field("instance", &self.ctx.instance)
            .field("database", &self.marker.database)
            .field("copy", &self.marker.copy_db)
            .finish_non_exhaustive()
    }
}

impl Snapshots {
    /// Copies the database server-side and the filestore files added since
    /// `since_snapshot_id`. The caller has stopped the instance's Odoo containers;
    /// remaining connections are terminated.
    pub async fn safety_copy(
        &self,
        instance_id: &str,
        since_snapshot_id: &str,
    ) -> Result<SafetyCopy, SafetyCopyError> {
        let ctx = self.ctx(instance_id)?;
        let _live = ctx.locks.live.lock().await;
        let _store = ctx.locks.store.read().await;
        let (c, id) = (ctx.clone(), since_snapshot_id.to_owned());
        blocking(move || catalog::published_manifest(&c, &id)).await?;
        if let Some((path, _)) = find_marker(&ctx)? {
            return Err(SafetyCopyError::AlreadyExists {
                instance: ctx.instance.clone(),
                marker: path,
            });
        }
        let c = ctx.clone();
        let (files, to_copy) = blocking(move || {
            let scan = filestore::scan(&c.filestore())?;
            let index = StatIndex::load(&c.index_path());
            let known = c.blobs().list()?;
            Ok::<_, FsError>(split(scan, &index, &known))
        })
        .await?;
        let copy_bytes: u64 = to_copy.iter().map(|f| f.size).sum();
        let nonce = disk::unique_name();
        let copies = ctx.safety_dir().join(&nonce);
        disk::check_free(
            &ctx.safety_dir(),
            copy_bytes,
            "the safety copy of new filestore files",
        )
        .map_err(|e| match e {
            CheckFreeError::Fs(e) => SafetyCopyError::Fs(e),
            CheckFreeError::NotEnough(e) => e.into(),
        })?;
        let db_err = |source| SafetyCopyError::Database {
            database: ctx.database.clone(),
            source,
        };
        let facts = dump::facts(&self.pg, &ctx.database).await.map_err(db_err)?;
        if let Some((dir, free)) = dump::data_dir_free(&self.pg).await {
            if free < facts.size_bytes.saturating_add(disk::RESERVE_BYTES) {
                return Err(NotEnoughSpace {
                    what: format!("a copy of database {}", ctx.database),
                    path: dir,
                    estimate: facts.size_bytes,
                    reserve: disk::RESERVE_BYTES,
                    free,
                }
                .into());
            }
        }
        let marker = SafetyMarker {
            since_snapshot_id: since_snapshot_id.to_owned(),
            database: ctx.database.clone(),
            copy_db: temp_db_name(),
            trash_db: temp_db_name(),
            copies: copies.clone(),
            files,
            phase: SafetyPhase::Copying,
        };
        let marker_path = journal::write(
            &ctx.journal_dir(),
            &format!("safety-{nonce}"),
            &Marker::Safety(marker.clone()),
        )?;
        let mut copy = SafetyCopy {
            pg: self.pg.clone(),
            ctx: ctx.clone(),
            marker,
            marker_path,
        };
        let made = async {
            let (root, dest) = (ctx.filestore(), copies.clone());
            blocking(move || filestore::copy_files(&root, &to_copy, &dest)).await?;
            dump::copy_database(&self.pg, &ctx.database, &copy.marker.copy_db)
                .await
                .map_err(db_err)?;
            Ok::<_, SafetyCopyError>(())
        }
        .await;
        if let Err(e) = made {
            if let Err(cleanup) = discard(&copy.pg, &copy.marker, &copy.marker_path).await {
                tracing::warn!("cleanup after a failed safety copy: {cleanup}");
            }
            return Err(e);
        }
        copy.set_phase(SafetyPhase::Ready)?;
        tracing::info!(
            instance = %ctx.instance,
            copy = %copy.marker.copy_db,
            new_files = copy_bytes,
            "safety copy taken"
        );
        Ok(copy)
    }

    /// The safety copy a previous agent run left in the `Ready` state, for the pipeline's
    /// recovery to swap back or discard.
    pub async fn pending_safety_copy(
        &self,
        instance_id: &str,
    ) -> Result<Option<SafetyCopy>, SafetyCopyError> {
        let ctx = self.ctx(instance_id)?;
        Ok(find_marker(&ctx)?.map(|(marker_path, marker)| SafetyCopy {
            pg: self.pg.clone(),
            ctx,
            marker,
            marker_path,
        }))
    }
}

impl SafetyCopy {
    /// Name of the database copy.
    pub fn database_copy(&self) -> &str {
        &self.marker.copy_db
    }

    /// Puts the pre-update state back: the copy replaces the database by rename, and the
    /// filestore becomes what it was (files added since are removed, removed ones return).
    pub async fn swap_back(mut self) -> Result<(), SafetyCopyError> {
        let locks = self.ctx.locks.clone();
        let _live = locks.live.lock().await;
        let _store = locks.store.read().await;
        self.set_phase(SafetyPhase::SwapBack)?;
        swap_back(&self.pg, &self.ctx, &self.marker, &self.marker_path).await?;
        tracing::info!(instance = %self.ctx.instance, "safety copy swapped back");
        Ok(())
    }

    /// Drops the copy after a successful deployment.
    pub async fn discard(mut self) -> Result<(), SafetyCopyError> {
        let locks = self.ctx.locks.clone();
        let _live = locks.live.lock().await;
        self.set_phase(SafetyPhase::Discard)?;
        discard(&self.pg, &self.marker, &self.marker_path).await
    }

    fn set_phase(&mut self, phase: SafetyPhase) -> Result<(), FsError> {
        self.marker.phase = phase;
        let name = self
            .marker_path
            .file_stem()
            .and_then(|s| s.to_str())
            .unwrap_or("safety")
            .to_owned();
        journal::write(
            &self.ctx.journal_dir(),
            &name,
            &Marker::Safety(self.marker.clone()),
        )?;
        Ok(())
    }
}

/// Splits the live filestore into files the blob store holds (by their indexed stat) and
/// files to copy.
fn split(
    scan: filestore::Scan,
    index: &StatIndex,
    known: &HashSet<String>,
) -> (Vec<Wanted>, Vec<filestore::LiveFile>) {
    let mut files = Vec::with_capacity(scan.files.len());
    let mut to_copy = Vec::new();
    for f in scan.files {
        let source = match index.lookup(&f).filter(|s| known.contains(*s)) {
            Some(sha1) => Source::Blob {
                sha1: sha1.to_owned(),
            },
            None => {
                to_copy.push(f.clone());
                Source::Copy {
                    path: f.path.clone(),
                }
            }
        };
        files.push(Wanted {
            path: f.path,
            size: f.size,
            mtime_ns: Some(f.mtime_ns),
            source,
        });
    }
    (files, to_copy)
}

fn find_marker(ctx: &Ctx) -> Result<Option<(PathBuf, SafetyMarker)>, FsError> {
    Ok(journal::list(&ctx.journal_dir())?
        .into_iter()
        .find_map(|(path, m)| match m {
            Marker::Safety(s) => Some((path, s)),
            _ => None,
        }))
}

/// The swap back proper; re-running it after an interruption finishes it.
pub(super) async fn swap_back(
    pg: &Pg,
    ctx: &Ctx,
    marker: &SafetyMarker,
    marker_path: &Path,
) -> Result<(), SafetyCopyError> {
    let db_err = |source| SafetyCopyError::Database {
        database: marker.database.clone(),
        source,
    };
    swap_in(pg, &marker.database, &marker.copy_db, &marker.trash_db)
        .await
        .map_err(db_err)?;
    let (c, m) = (ctx.clone(), marker.clone());
    blocking(move || make_filestore_equal(&c, &m.files, Some(&m.copies)))
        .await
        .map_err(|e| SafetyCopyError::Filestore {
            path: ctx.filestore(),
            message: e.to_string(),
        })?;
    dump::drop_if_exists(pg, &marker.trash_db)
        .await
        .map_err(db_err)?;
    let (copies, path) = (marker.copies.clone(), marker_path.to_owned());
    blocking(move || {
        disk::remove_all(&copies)?;
        journal::remove(&path)
    })
    .await?;
    Ok(())
}

/// Drops the copy and its files; re-running it after an interruption finishes it.
pub(super) async fn discard(
    pg: &Pg,
    marker: &SafetyMarker,
    marker_path: &Path,
) -> Result<(), SafetyCopyError> {
    dump::drop_if_exists(pg, &marker.copy_db)
        .await
        .map_err(|source| SafetyCopyError::Database {
            database: marker.copy_db.clone(),
            source,
        })?;
    let (copies, path) = (marker.copies.clone(), marker_path.to_owned());
    blocking(move || {
        disk::remove_all(&copies)?;
        journal::remove(&path)
    })
    .await?;
    Ok(())
}
