//! Markers for work that must not be left half-done: a restore's swap, a safety copy, an
//! import's temporary database. Each is written (atomically) before the step it guards, so
//! `Snapshots::recover` at agent start knows every temporary database and directory and
//! whether to finish or roll back.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::disk;
use super::errors::{fs_err, FsError};
use super::filestore::{Source, Wanted};

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Marker {
    Restore(RestoreMarker),
    Safety(SafetyMarker),
    /// A database created to convert an imported plain-SQL dump.
    Import {
        tmp_db: String,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RestorePhase {
    /// The dump is going into `tmp_db` and files into `staging`; nothing live has changed.
    Prepare,
    /// Everything is verified and staged; the databases are being swapped by rename.
    Swap,
    /// The database is swapped in; the filestore is being made equal to the manifest.
    Filestore,
    /// Done; only the previous database (`old_db`) remains to be dropped.
    DropOld,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RestoreMarker {
    pub snapshot_id: String,
    pub database: String,
    pub tmp_db: String,
    /// Name the live database gets during the swap, dropped once the swap is done.
    pub old_db: String,
    pub staging: PathBuf,
    pub phase: RestorePhase,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SafetyPhase {
    /// The copy is being made; roll back on recovery.
    Copying,
    /// The copy is complete; the deployment decides (swap back or discard).
    Ready,
    /// Swapping back; recovery finishes it.
    SwapBack,
    /// Discarding; recovery finishes it.
    Discard,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SafetyMarker {
    pub since_snapshot_id: String,
    pub database: String,
    pub copy_db: String,
    /// Name the updated database gets during a swap back, before it is dropped.
    pub trash_db: String,
    /// Plain copies of the files added since the snapshot.
    pub copies: PathBuf,
    /// The filestore as it was when the copy was taken.
    pub files: Vec<Wanted>,
    pub phase: SafetyPhase,
}

impl Marker {
    /// Blobs the marker may still need: garbage collection keeps them.
    pub fn blob_ids(&self) -> Vec<&str> {
        match self {
            Marker::Safety(s) => s
                .files
                .iter()
                .filter_map(|w| match &w.source {
                    Source::Blob { sha1 } => Some(sha1.as_str()),
                    Source::Copy { .. } => None,
                })
                .collect(),
            _ => Vec::new(),
        }
    }
}

pub fn write(dir: &Path, name: &str, marker: &Marker) -> Result<PathBuf, FsError> {
    disk::create_dir_all(dir)?;
    let path = dir.join(format!("{name}.json"));
    let bytes = serde_json::to_vec(marker).map_err(|e| FsError {
        action: "encode",
        path: path.clone(),
        source: std::io::Error::other(e),
    })?;
    disk::write_atomic(&path, &bytes)?;
    Ok(path)
}

/// Every marker in `dir` with its path.
pub fn list(dir: &Path) -> Result<Vec<(PathBuf, Marker)>, FsError> {
    let mut out = Vec::new();
    for path in disk::list_dir(dir)? {
        if path.extension().and_then(|e| e.to_str()) != Some("json") {
            continue;
        }
        let bytes = std::fs::read(&path).map_err(fs_err("read", &path))?;
        let marker = serde_json::from_slice(&bytes).map_err(|e| FsError {
            action: "parse the marker",
            path: path.clone(),
            source: std::io::Error::other(e),
        })?;
        out.push((path, marker));
    }
    out.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(out)
}

pub fn remove(path: &Path) -> Result<(), FsError> {
    disk::remove_all(path)?;
    if let Some(dir) = path.parent() {
        disk::fsync_dir(dir)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn markers_round_trip_and_name_their_blobs() -> Result<(), FsError> {
        let dir = tempfile::tempdir().map_err(fs_err("create", Path::new("tmp")))?;
        let m = Marker::Safety(SafetyMarker {
            since_snapshot_id: "s1".into(),
            database: "db".into(),
            copy_db: "ocore_tmp_1".into(),
            trash_db: "ocore_tmp_2".into(),
            copies: "/x".into(),
            files: vec![
                Wanted {
                    path: "ab/1".into(),
                    size: 1,
                    mtime_ns: Some(5),
                    source: Source::Blob { sha1: "b1".into() },
                },
                Wanted {
                    path: "ab/2".into(),
                    size: 1,
                    mtime_ns: Some(5),
                    source: Source::Copy {
                        path: "ab/2".into(),
                    },
                },
            ],
            phase: SafetyPhase::Ready,
        });
        let path = write(dir.path(), "safety", &m)?;
        let all = list(dir.path())?;
        assert_eq!(all.len(), 1);
        assert_eq!(all[0].1.blob_ids(), vec!["b1"]);
        remove(&path)?;
        assert!(list(dir.path())?.is_empty());
        Ok(())
    }
}
