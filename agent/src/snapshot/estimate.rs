//! Size estimates before a snapshot: database size plus the filestore bytes the blob store
//! does not hold yet, times the compression ratios observed on this instance (defaults
//! before any history).

use std::collections::HashSet;

use tokio_util::sync::CancellationToken;

use super::blobs::odoo_expected_sha1;
use super::catalog::{self, SnapshotError};
use super::disk;
use super::dump::{self, DbFacts};
use super::errors::{ErrorKind, FsError, PgError};
use super::filestore::{self, Scan, StatIndex};
use super::manifest::Summary;
use super::{blocking, Ctx, Snapshots, UnknownInstance};

/// Dump bytes per byte of `pg_database_size` before any history: indexes are not dumped and
/// the data compresses, so dumps are usually far smaller than the database.
/// How long an estimate waits for a database swap to end.
const SWAP_WAIT: std::time::Duration = std::time::Duration::from_secs(5);

pub const DEFAULT_DB_RATIO: f64 = 0.25;
/// Stored bytes per new filestore byte before any history: attachments are mostly images
/// and PDFs that do not shrink.
pub const DEFAULT_FS_RATIO: f64 = 1.0;
/// How many recent snapshots the observed ratios come from.
const HISTORY: usize = 5;

#[derive(Debug, Clone, PartialEq)]
pub struct Estimate {
    pub database_bytes: u64,
    pub new_filestore_bytes: u64,
    /// Estimated bytes ÷ (database bytes + new filestore bytes).
    pub compression_ratio: f64,
    pub estimated_bytes: u64,
    /// Free bytes where the snapshot store lives.
    pub free_disk_bytes: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum EstimateError {
    #[error(transparent)]
    UnknownInstance(#[from] UnknownInstance),
    #[error(transparent)]
    Pg(#[from] PgError),
    #[error(transparent)]
    Fs(#[from] FsError),
    #[error(transparent)]
    Store(#[from] SnapshotError),
}

impl EstimateError {
    pub fn kind(&self) -> ErrorKind {
        match self {
            EstimateError::UnknownInstance(_) => ErrorKind::NotFound,
            EstimateError::Pg(e) => e.kind(),
            EstimateError::Fs(e) => e.kind(),
            EstimateError::Store(e) => e.kind(),
        }
    }
}

/// Ratios observed over the most recent snapshots (newest first): (database, filestore).
pub fn observed_ratios(history: &[Summary]) -> (f64, f64) {
    let recent = &history[..history.len().min(HISTORY)];
    let db_size: u64 = recent.iter().map(|s| s.database_size).sum();
    let dump: u64 = recent.iter().map(|s| s.dump_bytes).sum();
    let new: u64 = recent.iter().map(|s| s.new_bytes).sum();
    let stored: u64 = recent.iter().map(|s| s.new_stored_bytes).sum();
    let db = if db_size > 0 && dump > 0 {
        dump as f64 / db_size as f64
    } else {
        DEFAULT_DB_RATIO
    };
    let fs = if new > 0 {
        stored as f64 / new as f64
    } else {
        DEFAULT_FS_RATIO
    };
    (db, fs)
}

/// Bytes the filestore would add: files neither known by their stat nor by their name.
pub fn new_filestore_bytes(scan: &Scan, index: &StatIndex, known: &HashSet<String>) -> u64 {
    scan.files
        .iter()
        .filter(|f| {
            let by_stat = index.lookup(f).is_some_and(|s| known.contains(s));
            let by_name = odoo_expected_sha1(&f.path).is_some_and(|s| known.contains(s));
            !(by_stat || by_name)
        })
        .map(|f| f.size)
        .sum()
}

pub fn combine(db_bytes: u64, new_fs: u64, (db_ratio, fs_ratio): (f64, f64)) -> (u64, f64) {
    let estimated = (db_bytes as f64 * db_ratio + new_fs as f64 * fs_ratio).ceil() as u64;
    let raw = db_bytes + new_fs;
    let ratio = if raw == 0 {
        db_ratio
    } else {
        estimated as f64 / raw as f64
    };
    (estimated, ratio)
}

/// Everything a snapshot needs to know before it starts.
pub(super) struct Prepared {
    pub facts: DbFacts,
    pub scan: Scan,
    pub index: StatIndex,
    pub known: HashSet<String>,
    pub estimate: Estimate,
}

pub(super) async fn prepare(
    ctx: &Ctx,
    snapshots: &Snapshots,
    _cancel: &CancellationToken,
) -> Result<Prepared, EstimateError> {
    let facts = dump::facts(&snapshots.pg, &ctx.database).await?;
    let c = ctx.clone();
    let (scan, index, known, history) = blocking(move || {
        let scan = filestore::scan(&c.filestore())?;
        let index = StatIndex::load(&c.index_path());
        let known = c.blobs().list()?;
        let history = catalog::summaries_sync(&c)?;
        Ok::<_, EstimateError>((scan, index, known, history))
    })
    .await?;
    let new_fs = new_filestore_bytes(&scan, &index, &known);
    let (estimated_bytes, compression_ratio) =
        combine(facts.size_bytes, new_fs, observed_ratios(&history));
    let free_disk_bytes = disk::free_bytes(&ctx.root)?;
    Ok(Prepared {
        estimate: Estimate {
            database_bytes: facts.size_bytes,
            new_filestore_bytes: new_fs,
            compression_ratio,
            estimated_bytes,
            free_disk_bytes,
        },
        facts,
        scan,
        index,
        known,
    })
}

impl Snapshots {
    /// What a snapshot taken now would add to the store, and the free disk there.
    pub async fn estimate(&self, instance_id: &str) -> Result<Estimate, EstimateError> {
        let ctx = self.ctx(instance_id)?;
        // It reads the published snapshots: not while one is being deleted.
        let _store = ctx.locks.store.read().await;
        // It reads the live database without the instance's lock, so a restore may swap
        // the database under it: try again for a few seconds, as long as the swap lasts.
        let deadline = tokio::time::Instant::now() + SWAP_WAIT;
        loop {
            match prepare(&ctx, self, &CancellationToken::new()).await {
                Err(EstimateError::Pg(PgError::Db(e)))
                    if e.is_transient() && tokio::time::Instant::now() < deadline =>
                {
                    tracing::debug!(instance = instance_id, "estimate: {e}; trying again");
                    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
                }
                result => return Ok(result?.estimate),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::snapshot::manifest::SnapshotKind;

    fn summary(database_size: u64, dump_bytes: u64, new_bytes: u64, stored: u64) -> Summary {
        Summary {
            id: "s".into(),
            instance_id: "i".into(),
            kind: SnapshotKind::Manual,
            created_at: time::OffsetDateTime::UNIX_EPOCH,
            deployment_id: None,
            commit_sha: None,
            database: "db".into(),
            stored_bytes: 0,
            estimated_bytes: 0,
            file_count: 0,
            filestore_bytes: 0,
            database_size,
            dump_bytes,
            new_bytes,
            new_stored_bytes: stored,
            imported: None,
        }
    }

    #[test]
    fn ratios_come_from_history_or_defaults() {
        assert_eq!(observed_ratios(&[]), (DEFAULT_DB_RATIO, DEFAULT_FS_RATIO));
        let h = [summary(1000, 100, 0, 0), summary(1000, 300, 400, 200)];
        assert_eq!(observed_ratios(&h), (0.2, 0.5));
        let (est, ratio) = combine(1000, 400, (0.2, 0.5));
        assert_eq!(est, 400);
        assert!((ratio - 400.0 / 1400.0).abs() < 1e-9);
        assert_eq!(combine(0, 0, (0.2, 0.5)), (0, 0.2));
    }

    #[test]
    fn known_files_cost_nothing_in_the_estimate() {
        let sha = "0123456789abcdef0123456789abcdef01234567";
        let f = |path: &str, size| filestore::LiveFile {
            path: path.into(),
            size,
            mtime_ns: 1,
            uid: 0,
            gid: 0,
        };
        let scan = Scan {
            files: vec![
                f(&format!("01/{sha}"), 10),
                f("other/x", 5),
                f("indexed", 7),
            ],
            warnings: vec![],
        };
        let mut index = StatIndex::default();
        index.insert(&f("indexed", 7), "ffffffffffffffffffffffffffffffffffffffff");
        let known = HashSet::from([
            sha.to_owned(),
            "ffffffffffffffffffffffffffffffffffffffff".to_owned(),
        ]);
        assert_eq!(new_filestore_bytes(&scan, &index, &known), 5);
        assert_eq!(new_filestore_bytes(&scan, &index, &HashSet::new()), 22);
    }
}
