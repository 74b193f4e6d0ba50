//! Snapshots of an instance's database and filestore: create, restore, manage, export.
//!
//! Each declared instance has a store at `<state_dir>/snapshots/<instance>/`:
//!
//! ```text
//! blobs/<ab>/<sha1>        filestore files, zstd, content-addressed, shared by snapshots
//! snaps/<id>/              published snapshots: manifest.json, meta.json, db/ (pg_dump -Fd),
//!                          and `pinned` when pinned
//! tmp/                     snapshots, imports and exports being written (never visible)
//! journal/                 markers of half-done restores and safety copies
//! safety/                  copies of new filestore files for the maintenance window
//! stat-index.json          (path, size, mtime) → sha1 of the live filestore
//! ```
//!
//! A snapshot becomes visible by one rename of its finished directory. Blobs are only
//! removed by garbage collection, which keeps every blob a manifest or marker names.
//!
//! Two locks per instance order the work: `live` serialises everything that reads or writes
//! the live database and filestore or stores blobs; `store` is held shared by readers of
//! published snapshots and exclusively by deletion.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use time::OffsetDateTime;

use crate::config::{AgentConfig, SnapshotsConfig};
use crate::db::Pg;

mod blobs;
mod catalog;
mod create;
mod disk;
mod dump;
mod errors;
mod estimate;
mod export;
mod filestore;
mod import;
mod journal;
mod manifest;
mod recover;
mod restore;
mod retention;
mod safety;

pub use catalog::{SnapshotError, VerifyReport};
pub use create::{CreateSnapshot, CreateSnapshotError};
pub use errors::{fmt_bytes, CorruptError, ErrorKind, FsError, NotEnoughSpace, PgError};
pub use estimate::{Estimate, EstimateError};
pub use export::{ExportError, ExportFormat, Exported};
pub use import::ImportError;
pub use manifest::{validate_snapshot_id, Imported, Manifest, SnapshotKind};
pub use recover::{RecoverError, RecoveryReport};
pub use restore::RestoreError;
pub use retention::{select_expired, RetentionOutcome, RetentionPolicy};
pub use safety::{SafetyCopy, SafetyCopyError};

/// The snapshot component of an agent.
pub struct Snapshots {
    pub config: Arc<AgentConfig>,
    pub pg: Pg,
    locks: Mutex<HashMap<String, Arc<InstanceLocks>>>,
    /// Clean-up that need not delay the caller (dropping a database replaced by a restore,
    /// whose forced checkpoint can take seconds). Journal markers cover it across restarts.
    background: tokio_util::task::TaskTracker,
}

/// A snapshot as listed.
#[derive(Debug, Clone, PartialEq)]
pub struct SnapshotMeta {
    pub id: String,
    pub instance_id: String,
    pub kind: SnapshotKind,
    pub pinned: bool,
    /// Bytes the snapshot added to the store when it was taken (its dump and new blobs).
    pub size_bytes: u64,
    /// The estimate made before it was taken, to report beside `size_bytes`.
    pub estimated_bytes: u64,
    pub created_at: OffsetDateTime,
    pub deployment_id: Option<String>,
    pub commit_sha: Option<String>,
    pub database: String,
    pub file_count: u64,
    pub filestore_bytes: u64,
    /// When and from where the snapshot was imported; `None` for one taken here.
    pub imported: Option<Imported>,
}

/// Progress of a long operation, streamed to the caller as it happens.
#[derive(Debug, Clone, PartialEq)]
pub enum SnapshotProgress {
    /// `done` of `total` units of a phase (`database`: tables; `filestore`: files; other
    /// phases: steps).
    Phase {
        phase: &'static str,
        done: u64,
        total: u64,
    },
    /// A line for the log: a warning or a summary.
    Log(String),
}

/// The progress callback every long operation takes.
pub type Progress<'a> = &'a (dyn Fn(SnapshotProgress) + Send + Sync);

/// A progress callback that drops everything.
pub fn no_progress(_: SnapshotProgress) {}

#[derive(Debug, Default)]
struct InstanceLocks {
    live: tokio::sync::Mutex<()>,
    store: tokio::sync::RwLock<()>,
}

/// One instance's store and live data, resolved from the configuration.
#[derive(Clone)]
struct Ctx {
    instance: String,
    database: String,
    /// `<data_dir>/filestore`.
    filestore_parent: PathBuf,
    root: PathBuf,
    owner: (u32, u32),
    settings: SnapshotsConfig,
    locks: Arc<InstanceLocks>,
}

impl Ctx {
    /// `<data_dir>/filestore/<db>`.
    fn filestore(&self) -> PathBuf {
        self.filestore_parent.join(&self.database)
    }
    fn blobs(&self) -> blobs::BlobStore {
        blobs::BlobStore::new(self.root.join("blobs"), self.settings.blob_zstd_level)
    }
    fn snaps_dir(&self) -> PathBuf {
        self.root.join("snaps")
    }
    fn snap_dir(&self, id: &str) -> PathBuf {
        self.snaps_dir().join(id)
    }
    fn tmp_dir(&self) -> PathBuf {
        self.root.join("tmp")
    }
    fn journal_dir(&self) -> PathBuf {
        self.root.join("journal")
    }
    fn safety_dir(&self) -> PathBuf {
        self.root.join("safety")
    }
    fn index_path(&self) -> PathBuf {
        self.root.join("stat-index.json")
    }
    /// Staging beside the filestore, so staged files move in by rename.
    fn staging_dir(&self, nonce: &str) -> PathBuf {
        self.filestore_parent
            .join(format!(".ocore-staging-{}-{nonce}", self.database))
    }
    fn threads(&self) -> usize {
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(2)
            .clamp(1, 8)
    }
}

/// A database name for temporary work that no Odoo database uses.
fn temp_db_name() -> String {
    let n = disk::unique_name();
    format!("ocore_tmp_{}", &n[n.len().saturating_sub(20)..])
}

/// Runs blocking filesystem work on the blocking pool; a panic there resumes here.
async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    match tokio::task::spawn_blocking(f).await {
        Ok(v) => v,
        Err(e) => std::panic::resume_unwind(e.into_panic()),
    }
}

/// The instance named by a request is not in `agent.toml`.
#[derive(Debug, thiserror::Error)]
#[error("instance {0:?} is not declared in this agent's configuration")]
pub struct UnknownInstance(pub String);

impl Snapshots {
    pub fn new(config: Arc<AgentConfig>, pg: Pg) -> Self {
        Self {
            config,
            pg,
            locks: Mutex::new(HashMap::new()),
            background: tokio_util::task::TaskTracker::new(),
        }
    }

    /// Waits until background clean-up started so far has finished.
    pub async fn settle(&self) {
        self.background.close();
        self.background.wait().await;
        self.background.reopen();
    }

    fn ctx(&self, instance_id: &str) -> Result<Ctx, UnknownInstance> {
        let inst = self
            .config
            .instance(instance_id)
            .ok_or_else(|| UnknownInstance(instance_id.chars().take(80).collect()))?;
        let locks = self
            .locks
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(inst.id.clone())
            .or_default()
            .clone();
        Ok(Ctx {
            instance: inst.id.clone(),
            database: inst.database.clone(),
            filestore_parent: inst.data_dir.join("filestore"),
            root: self.config.snapshots_dir().join(&inst.id),
            owner: (inst.odoo_uid, inst.odoo_gid),
            settings: self.config.snapshots.clone(),
            locks,
        })
    }
}
