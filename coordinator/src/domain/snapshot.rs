//! Snapshot metadata as the coordinator shows and caches it. The agent holding the
//! environment is the source of truth; the coordinator keeps what it last learned so a
//! rollback can say clearly when a snapshot is gone.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum SnapshotKind {
    PreDeploy,
    Manual,
    Scheduled,
}

/// Where a snapshot is in its life, as far as the coordinator knows.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum SnapshotState {
    /// Being taken (a manual snapshot the coordinator asked for).
    Creating,
    Ready,
    Failed,
    Deleted,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Snapshot {
    pub id: String,
    pub environment_id: String,
    pub kind: SnapshotKind,
    pub state: SnapshotState,
    #[serde(default)]
    pub pinned: bool,
    #[serde(default)]
    pub size_bytes: u64,
    pub created_at: i64,
    #[serde(default)]
    pub deployment_id: Option<String>,
    #[serde(default)]
    pub commit_sha: Option<String>,
    /// Why it failed, for a failed manual snapshot.
    #[serde(default)]
    pub error: Option<String>,
    /// When it was imported from an archive (Unix ms); `None` for one taken here.
    #[serde(default)]
    pub imported_at: Option<i64>,
    /// For an imported oCore export: the id it had where it was first taken.
    #[serde(default)]
    pub original_id: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct SnapshotEstimate {
    pub database_bytes: u64,
    pub new_filestore_bytes: u64,
    pub compression_ratio: f64,
    pub estimated_bytes: u64,
    pub free_disk_bytes: u64,
}
