//! The agent's journal (sled, `<state_dir>/journal`): every deployment's record and its
//! numbered events, and each instance's serving state (active colour, image, commit).
//!
//! The journal is what makes the agent crash-safe: a deployment records how far it got
//! (its [`Phase`]) before each irreversible action, so after a restart the agent knows what
//! to undo or finish. Events are stored before they are published, so a client re-attaching
//! with a sequence number misses nothing. Only this module opens the agent's sled database.
//!
//! A write that fails breaks the journal for the rest of the process: sled refuses every
//! later write once one failed, and forgets unflushed writes when reopened.
//! [`Journal::broken`] trips then, and the agent stops; it finishes the interrupted work
//! after its restart, on the journal as it was last flushed. A full disk is not left to
//! come to that: once a write ran out of space, sled was seen to lose writes it had
//! already flushed, so the journal stops writing while it still has
//! [`JOURNAL_RESERVE_BYTES`] free.

use std::path::{Path, PathBuf};

use tokio_util::sync::CancellationToken;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::traffic::Color;

#[derive(Debug, thiserror::Error)]
pub enum JournalError {
    #[error("cannot open the journal in {path}: {message}")]
    Open { path: String, message: String },
    #[error("journal: {0}")]
    Sled(#[from] sled::Error),
    #[error("journal record {key} is corrupt: {message}")]
    Corrupt { key: String, message: String },
    #[error(
        "the journal cannot be written any more (an earlier write failed); the agent restarts"
    )]
    Broken,
    #[error("only {free} bytes are free on the file system of the journal {path}; it stops below {reserve}: free some space")]
    NoSpace {
        path: String,
        free: u64,
        reserve: u64,
    },
}

/// The journal stops writing when its file system has less than this free.
pub const JOURNAL_RESERVE_BYTES: u64 = 8 << 20;

/// The kind of run a deployment is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RunKind {
    Deploy,
    Rollback,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RunStatus {
    Running,
    Succeeded,
    Failed,
    Cancelled,
}

/// How far a deployment got, recorded before each step that changes the host.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Phase {
    /// Nothing on the host changed yet (snapshot, clone, build, push).
    Preparing,
    /// The new colour's container may exist; the old colour still serves.
    NewColorStarting,
    /// Traffic goes to the maintenance response; the old colour may be stopped.
    Maintenance,
    /// The safety copy of the database exists; `-u` may have changed the live database.
    ModulesUpdating,
    /// The new colour serves; only cleaning up the old colour remains.
    Switched,
    Done,
}

/// A deployment as the agent journals it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RunRecord {
    pub id: String,
    pub instance: String,
    pub kind: RunKind,
    pub status: RunStatus,
    pub phase: Phase,
    /// The step running now, for messages after a crash.
    pub step: Option<String>,
    /// Colour being brought up.
    pub target_color: Option<Color>,
    /// Colour that served when the deployment started.
    pub previous_color: Option<Color>,
    pub image: Option<String>,
    pub commit_sha: Option<String>,
    /// Snapshot whose safety copy may be in place (maintenance window).
    pub safety_snapshot: Option<String>,
    pub started_at: i64,
    pub finished_at: Option<i64>,
    /// Sequence number the next event gets.
    pub next_seq: u64,
    pub message: Option<String>,
}

/// What serves an instance now.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct InstanceState {
    pub active_color: Option<Color>,
    pub image: Option<String>,
    pub commit_sha: Option<String>,
    pub deployment_id: Option<String>,
}

#[derive(Clone)]
pub struct Journal {
    db: sled::Db,
    runs: sled::Tree,
    events: sled::Tree,
    instances: sled::Tree,
    /// Cancelled by the first failed write; shared by every clone.
    broken: CancellationToken,
    dir: PathBuf,
    /// Free bytes below which writes stop (`JOURNAL_RESERVE_BYTES`; tests change it).
    reserve: u64,
}

impl std::fmt::Debug for Journal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Journal").finish_non_exhaustive()
    }
}

fn encode<T: Serialize>(v: &T) -> Result<Vec<u8>, JournalError> {
    serde_json::to_vec(v).map_err(|e| JournalError::Corrupt {
        key: "<new>".into(),
        message: e.to_string(),
    })
}

fn decode<T: DeserializeOwned>(key: &[u8], v: &[u8]) -> Result<T, JournalError> {
    serde_json::from_slice(v).map_err(|e| JournalError::Corrupt {
        key: String::from_utf8_lossy(key).into_owned(),
        message: e.to_string(),
    })
}

fn event_key(run: &str, seq: u64) -> Vec<u8> {
    let mut key = run.as_bytes().to_vec();
    key.push(0);
    key.extend_from_slice(&seq.to_be_bytes());
    key
}

impl Journal {
    pub fn open(dir: &Path) -> Result<Self, JournalError> {
        let db = sled::Config::new()
            .path(dir)
            .open()
            .map_err(|e| JournalError::Open {
                path: dir.display().to_string(),
                message: e.to_string(),
            })?;
        Ok(Self {
            runs: db.open_tree("runs")?,
            events: db.open_tree("events")?,
            instances: db.open_tree("instances")?,
            db,
            broken: CancellationToken::new(),
            dir: dir.to_owned(),
            reserve: JOURNAL_RESERVE_BYTES,
        })
    }

    /// A journal that stops writing below `reserve` free bytes.
    pub fn with_reserve(mut self, reserve: u64) -> Self {
        self.reserve = reserve;
        self
    }

    /// Fails when the journal's file system has less than the reserve free.
    fn check_space(&self) -> Result<(), JournalError> {
        let Ok(st) = nix::sys::statvfs::statvfs(&self.dir) else {
            // Unknown: the write itself will tell.
            return Ok(());
        };
        let free = st.blocks_available().saturating_mul(st.fragment_size());
        if free < self.reserve {
            return Err(JournalError::NoSpace {
                path: self.dir.display().to_string(),
                free,
                reserve: self.reserve,
            });
        }
        Ok(())
    }

    /// Trips when a write fails. What was not flushed before is lost at the next open, so
    /// nothing written since may be shown to anyone.
    pub fn broken(&self) -> CancellationToken {
        self.broken.clone()
    }

    pub fn is_broken(&self) -> bool {
        self.broken.is_cancelled()
    }

    /// Runs one write, refusing it on a broken journal and breaking the journal if it fails.
    fn write<T>(&self, write: impl FnOnce() -> Result<T, JournalError>) -> Result<T, JournalError> {
        if self.is_broken() {
            return Err(JournalError::Broken);
        }
        let result = self.check_space().and_then(|()| write());
        if let Err(e @ (JournalError::Sled(_) | JournalError::NoSpace { .. })) = &result {
            tracing::error!("cannot write the journal: {e}; stopping the agent");
            self.broken.cancel();
        }
        result
    }

    /// Makes every write so far durable. Called before irreversible host changes.
    pub fn flush(&self) -> Result<(), JournalError> {
        self.write(|| {
            self.db.flush()?;
            Ok(())
        })
    }

    pub fn run(&self, id: &str) -> Result<Option<RunRecord>, JournalError> {
        self.runs
            .get(id.as_bytes())?
            .map(|v| decode(id.as_bytes(), &v))
            .transpose()
    }

    /// Stores `record` (insert or replace) durably.
    pub fn put_run(&self, record: &RunRecord) -> Result<(), JournalError> {
        self.write(|| {
            self.runs.insert(record.id.as_bytes(), encode(record)?)?;
            Ok(())
        })?;
        self.flush()
    }

    /// Inserts `record` unless a run with that id exists; returns whether it was inserted.
    pub fn insert_run_if_absent(&self, record: &RunRecord) -> Result<bool, JournalError> {
        let inserted = self.write(|| {
            Ok(self
                .runs
                .compare_and_swap(
                    record.id.as_bytes(),
                    None as Option<&[u8]>,
                    Some(encode(record)?),
                )?
                .is_ok())
        })?;
        self.flush()?;
        Ok(inserted)
    }

    /// Runs still marked running (interrupted if found at start-up).
    pub fn unfinished_runs(&self) -> Result<Vec<RunRecord>, JournalError> {
        let mut out = Vec::new();
        for kv in self.runs.iter() {
            let (k, v) = kv?;
            let record: RunRecord = decode(&k, &v)?;
            if record.status == RunStatus::Running {
                out.push(record);
            }
        }
        Ok(out)
    }

    /// Appends an event (already numbered by the caller) to a run's log.
    pub fn put_event<E: Serialize>(
        &self,
        run: &str,
        seq: u64,
        event: &E,
    ) -> Result<(), JournalError> {
        self.write(|| {
            self.events.insert(event_key(run, seq), encode(event)?)?;
            Ok(())
        })
    }

    /// A run's events with `seq >= from`, in order.
    pub fn events<E: DeserializeOwned>(
        &self,
        run: &str,
        from: u64,
    ) -> Result<Vec<E>, JournalError> {
        let start = event_key(run, from);
        let end = event_key(run, u64::MAX);
        self.events
            .range(start..=end)
            .map(|kv| {
                let (k, v) = kv?;
                decode(&k, &v)
            })
            .collect()
    }

    /// The highest event number stored for a run (0 when it has none).
    pub fn last_seq(&self, run: &str) -> Result<u64, JournalError> {
        let start = event_key(run, 0);
        let end = event_key(run, u64::MAX);
        match self.events.range(start..=end).next_back() {
            Some(kv) => {
                let (k, _) = kv?;
                let tail: [u8; 8] = k[k.len() - 8..].try_into().unwrap_or([0; 8]);
                Ok(u64::from_be_bytes(tail))
            }
            None => Ok(0),
        }
    }

    pub fn instance(&self, id: &str) -> Result<InstanceState, JournalError> {
        Ok(self
            .instances
            .get(id.as_bytes())?
            .map(|v| decode(id.as_bytes(), &v))
            .transpose()?
            .unwrap_or_default())
    }

    pub fn put_instance(&self, id: &str, state: &InstanceState) -> Result<(), JournalError> {
        self.write(|| {
            self.instances.insert(id.as_bytes(), encode(state)?)?;
            Ok(())
        })?;
        self.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(id: &str) -> RunRecord {
        RunRecord {
            id: id.into(),
            instance: "shop".into(),
            kind: RunKind::Deploy,
            status: RunStatus::Running,
            phase: Phase::Preparing,
            step: None,
            target_color: Some(Color::Green),
            previous_color: Some(Color::Blue),
            image: None,
            commit_sha: None,
            safety_snapshot: None,
            started_at: 1,
            finished_at: None,
            next_seq: 1,
            message: None,
        }
    }

    #[test]
    fn the_journal_stops_writing_before_its_disk_is_full() -> Result<(), JournalError> {
        let dir = tempfile::tempdir().map_err(|e| JournalError::Open {
            path: "tempdir".into(),
            message: e.to_string(),
        })?;
        let j = Journal::open(dir.path())?;
        j.put_event("d1", 1, &"stored".to_owned())?;
        // As if the file system had less free than the reserve.
        let full = j.clone().with_reserve(u64::MAX);
        assert!(matches!(
            full.put_event("d1", 2, &"refused".to_owned()),
            Err(JournalError::NoSpace { .. })
        ));
        assert!(j.is_broken(), "every clone sees the journal broken");
        assert!(matches!(
            j.put_event("d1", 2, &"refused too".to_owned()),
            Err(JournalError::Broken)
        ));
        assert_eq!(j.events::<String>("d1", 1)?, ["stored"]);
        Ok(())
    }

    #[test]
    fn runs_events_and_instances_survive_reopening() -> Result<(), JournalError> {
        let dir = tempfile::tempdir().map_err(|e| JournalError::Open {
            path: "tmp".into(),
            message: e.to_string(),
        })?;
        {
            let j = Journal::open(dir.path())?;
            assert!(j.insert_run_if_absent(&record("d1"))?);
            assert!(!j.insert_run_if_absent(&record("d1"))?, "idempotent by id");
            for seq in 1..=12u64 {
                j.put_event("d1", seq, &format!("event {seq}"))?;
            }
            j.put_event("d10", 1, &"other run".to_owned())?;
            j.put_instance(
                "shop",
                &InstanceState {
                    active_color: Some(Color::Blue),
                    ..Default::default()
                },
            )?;
            let mut done = record("d2");
            done.status = RunStatus::Succeeded;
            j.put_run(&done)?;
        }
        let j = Journal::open(dir.path())?;
        let from_ten: Vec<String> = j.events("d1", 10)?;
        assert_eq!(from_ten, ["event 10", "event 11", "event 12"]);
        assert_eq!(
            j.events::<String>("d1", 1)?.len(),
            12,
            "other runs' events excluded"
        );
        assert_eq!(j.last_seq("d1")?, 12);
        assert_eq!(j.last_seq("nothing")?, 0);
        assert_eq!(j.instance("shop")?.active_color, Some(Color::Blue));
        assert_eq!(j.instance("unknown")?, InstanceState::default());
        let unfinished: Vec<String> = j.unfinished_runs()?.into_iter().map(|r| r.id).collect();
        assert_eq!(unfinished, ["d1"]);
        assert!(Phase::Preparing < Phase::Switched);
        Ok(())
    }
}
