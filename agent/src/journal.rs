//! The agent's journal (`<state_dir>/journal`): every deployment's record and its
//! numbered events, and each instance's serving state (active colour, image, commit).
//!
//! The journal is what makes the agent crash-safe: a deployment records how far it got
//! (its [`Phase`]) before each irreversible action, so after a restart the agent knows what
//! to undo or finish. Events are stored before they are published, so a client re-attaching
//! with a sequence number misses nothing.
//!
//! It is plain files, each written the way that survives a crash:
//! - `runs/<id>.json` and `instances/<id>.json`: one record each, replaced atomically
//!   (written beside, fsynced, renamed, the folder fsynced);
//! - `events/<id>.log`: one line per event, `<seq> <json>`, appended; [`Journal::flush`]
//!   fsyncs what was appended. A line cut short by a crash has no newline: it is ignored,
//!   and cut off before the next append. A later line with the same number replaces an
//!   earlier one.
//! - `lock`: held (`flock`) while an agent has the journal open.
//!
//! It was a sled database until it was measured holding about 190 KiB more heap after
//! every deployment (sled's replaced log buffers, freed through epoch-based reclamation
//! that does not keep up); a sled journal left by an older agent is read once into these
//! files at start, then moved to `sled-migrated/`.
//!
//! A write that fails breaks the journal for the rest of the process: nothing written
//! after it could be trusted to be on disk. [`Journal::broken`] trips then, and the agent
//! stops; it finishes the interrupted work after its restart, on the journal as it was
//! last flushed. A full disk is not left to come to that: the journal stops writing while
//! it still has [`JOURNAL_RESERVE_BYTES`] free, so the host's other work fails first.

use std::collections::{BTreeMap, HashSet};
use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};

use tokio_util::sync::CancellationToken;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::traffic::Color;

#[derive(Debug, thiserror::Error)]
pub enum JournalError {
    #[error("cannot open the journal in {path}: {message}")]
    Open { path: String, message: String },
    #[error("journal: {0}")]
    Io(#[from] std::io::Error),
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
    /// The run asked Odoo to create the instance's database (it did not exist): undoing
    /// the run drops it again, so the next deployment starts from nothing.
    #[serde(default)]
    pub created_database: bool,
    /// Which port of the new colour answers websockets, once the image is known.
    #[serde(default)]
    pub websocket: Option<crate::traffic::Websocket>,
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
    /// Which port of the serving colour answers websockets (from its `workers`).
    #[serde(default)]
    pub websocket: crate::traffic::Websocket,
}

struct Files {
    dir: PathBuf,
    /// Held for the journal's life: one agent per state directory.
    _lock: nix::fcntl::Flock<File>,
    /// Event files appended to since the last flush. Its lock also orders every change
    /// of the files, so an insert-if-absent or a prune is atomic within the agent.
    dirty: Mutex<HashSet<PathBuf>>,
}

#[derive(Clone)]
pub struct Journal {
    files: Arc<Files>,
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

fn decode<T: DeserializeOwned>(key: &str, v: &[u8]) -> Result<T, JournalError> {
    serde_json::from_slice(v).map_err(|e| JournalError::Corrupt {
        key: key.to_owned(),
        message: e.to_string(),
    })
}

const RUNS: &str = "runs";
const EVENTS: &str = "events";
const INSTANCES: &str = "instances";

/// The file name for an id: the id itself when it is plainly safe, else `~` and its hex
/// (`~` never starts a plain one, so the two cannot collide).
fn file_stem(id: &str) -> String {
    let plain = !id.is_empty()
        && id.len() <= 128
        && !id.starts_with('.')
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
    if plain {
        id.to_owned()
    } else {
        format!("~{}", hex::encode(id.as_bytes()))
    }
}

/// Makes a folder's entries (a rename, a new or removed file) durable.
fn sync_dir(dir: &Path) -> std::io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Replaces `path` with `bytes` so that a crash leaves the old or the new content.
fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let dir = path.parent().unwrap_or_else(|| Path::new("."));
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy())
        .unwrap_or_default();
    let tmp = dir.join(format!(".{name}.tmp"));
    let written = (|| {
        let mut f = File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        fs::rename(&tmp, path)?;
        sync_dir(dir)
    })();
    if written.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    written
}

fn read_optional(path: &Path) -> std::io::Result<Option<Vec<u8>>> {
    match fs::read(path) {
        Ok(bytes) => Ok(Some(bytes)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

/// The complete lines of an event log, by number (a later line wins); a last line
/// without its newline (cut short by a crash) is left out.
fn parse_events(key: &str, bytes: &[u8]) -> Result<BTreeMap<u64, Vec<u8>>, JournalError> {
    let mut out = BTreeMap::new();
    let complete = match bytes.iter().rposition(|&b| b == b'\n') {
        Some(end) => &bytes[..=end],
        None => &[][..],
    };
    for line in complete.split(|&b| b == b'\n').filter(|l| !l.is_empty()) {
        let corrupt = || JournalError::Corrupt {
            key: key.to_owned(),
            message: format!(
                "bad event line {:?}",
                String::from_utf8_lossy(&line[..line.len().min(80)])
            ),
        };
        let space = line.iter().position(|&b| b == b' ').ok_or_else(corrupt)?;
        let seq: u64 = std::str::from_utf8(&line[..space])
            .ok()
            .and_then(|s| s.parse().ok())
            .ok_or_else(corrupt)?;
        out.insert(seq, line[space + 1..].to_vec());
    }
    Ok(out)
}

impl Journal {
    pub fn open(dir: &Path) -> Result<Self, JournalError> {
        let open_err = |message: String| JournalError::Open {
            path: dir.display().to_string(),
            message,
        };
        for sub in [RUNS, EVENTS, INSTANCES] {
            fs::create_dir_all(dir.join(sub)).map_err(|e| open_err(e.to_string()))?;
        }
        let lock_file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(dir.join("lock"))
            .map_err(|e| open_err(e.to_string()))?;
        let lock = nix::fcntl::Flock::lock(lock_file, nix::fcntl::FlockArg::LockExclusiveNonblock)
            .map_err(|(_, errno)| {
                open_err(format!(
                    "it is in use by another process (is another ocore-agent running on this state directory?): {errno}"
                ))
            })?;
        let journal = Self {
            files: Arc::new(Files {
                dir: dir.to_owned(),
                _lock: lock,
                dirty: Mutex::new(HashSet::new()),
            }),
            broken: CancellationToken::new(),
            dir: dir.to_owned(),
            reserve: JOURNAL_RESERVE_BYTES,
        };
        legacy::migrate(&journal)
            .map_err(|e| open_err(format!("reading the sled journal of an older agent: {e}")))?;
        Ok(journal)
    }

    /// A journal that stops writing below `reserve` free bytes.
    pub fn with_reserve(mut self, reserve: u64) -> Self {
        self.reserve = reserve;
        self
    }

    fn path(&self, kind: &str, id: &str) -> PathBuf {
        let ext = if kind == EVENTS { "log" } else { "json" };
        self.files
            .dir
            .join(kind)
            .join(format!("{}.{ext}", file_stem(id)))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashSet<PathBuf>> {
        self.files
            .dirty
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
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

    /// Trips when a write fails. What was not flushed before may be lost, so nothing
    /// written since may be shown to anyone.
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
        if let Err(e @ (JournalError::Io(_) | JournalError::NoSpace { .. })) = &result {
            tracing::error!("cannot write the journal: {e}; stopping the agent");
            self.broken.cancel();
        }
        result
    }

    /// Makes every write so far durable. Called before irreversible host changes.
    pub fn flush(&self) -> Result<(), JournalError> {
        self.write(|| {
            let mut dirty = self.lock();
            for path in dirty.iter() {
                File::open(path)?.sync_data()?;
            }
            if !dirty.is_empty() {
                sync_dir(&self.files.dir.join(EVENTS))?;
            }
            dirty.clear();
            Ok(())
        })
    }

    pub fn run(&self, id: &str) -> Result<Option<RunRecord>, JournalError> {
        read_optional(&self.path(RUNS, id))?
            .map(|v| decode(id, &v))
            .transpose()
    }

    /// Stores `record` (insert or replace) durably.
    pub fn put_run(&self, record: &RunRecord) -> Result<(), JournalError> {
        self.write(|| {
            let _order = self.lock();
            write_atomic(&self.path(RUNS, &record.id), &encode(record)?)?;
            Ok(())
        })?;
        self.flush()
    }

    /// Inserts `record` unless a run with that id exists; returns whether it was inserted.
    pub fn insert_run_if_absent(&self, record: &RunRecord) -> Result<bool, JournalError> {
        let inserted = self.write(|| {
            let _order = self.lock();
            let path = self.path(RUNS, &record.id);
            if path.exists() {
                return Ok(false);
            }
            write_atomic(&path, &encode(record)?)?;
            Ok(true)
        })?;
        self.flush()?;
        Ok(inserted)
    }

    /// Every run record, oldest first.
    fn runs(&self) -> Result<Vec<RunRecord>, JournalError> {
        let mut out = Vec::new();
        for entry in fs::read_dir(self.files.dir.join(RUNS))? {
            let path = entry?.path();
            let name = path
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            if name.starts_with('.') || !name.ends_with(".json") {
                continue;
            }
            let bytes = fs::read(&path)?;
            out.push(decode::<RunRecord>(&name, &bytes)?);
        }
        out.sort_by(|a, b| (a.started_at, &a.id).cmp(&(b.started_at, &b.id)));
        Ok(out)
    }

    /// Runs still marked running (interrupted if found at start-up).
    pub fn unfinished_runs(&self) -> Result<Vec<RunRecord>, JournalError> {
        Ok(self
            .runs()?
            .into_iter()
            .filter(|r| r.status == RunStatus::Running)
            .collect())
    }

    /// Forgets the finished runs of `instance` beyond its `keep` newest ones: their records
    /// and events. The coordinator keeps the history; the journal needs a run only until
    /// the coordinator has stored it, and it drives one run per instance at a time, so the
    /// newest few are all it can still ask for. Returns how many runs went.
    pub fn prune_runs(&self, instance: &str, keep: usize) -> Result<usize, JournalError> {
        let mut finished: Vec<(i64, String)> = self
            .runs()?
            .into_iter()
            .filter(|r| r.instance == instance && r.status != RunStatus::Running)
            .map(|r| (r.started_at, r.id))
            .collect();
        if finished.len() <= keep {
            return Ok(0);
        }
        // Newest first; ties (same millisecond) by id, for a stable choice.
        finished.sort_by(|a, b| b.cmp(a));
        let gone: Vec<String> = finished.into_iter().skip(keep).map(|(_, id)| id).collect();
        self.write(|| {
            let mut dirty = self.lock();
            for id in &gone {
                // Events first: a crash in between leaves a finished run without
                // events, which the next prune removes.
                let events = self.path(EVENTS, id);
                dirty.remove(&events);
                remove_if_present(&events)?;
                remove_if_present(&self.path(RUNS, id))?;
            }
            sync_dir(&self.files.dir.join(EVENTS))?;
            sync_dir(&self.files.dir.join(RUNS))?;
            Ok(())
        })?;
        Ok(gone.len())
    }

    /// Appends an event (already numbered by the caller) to a run's log; durable after
    /// the next [`Journal::flush`].
    pub fn put_event<E: Serialize>(
        &self,
        run: &str,
        seq: u64,
        event: &E,
    ) -> Result<(), JournalError> {
        let mut line = format!("{seq} ").into_bytes();
        line.extend(encode(event)?);
        line.push(b'\n');
        self.write(|| {
            let mut dirty = self.lock();
            let path = self.path(EVENTS, run);
            let file = OpenOptions::new()
                .read(true)
                .append(true)
                .create(true)
                .open(&path)?;
            cut_torn_tail(&file)?;
            (&file).write_all(&line)?;
            dirty.insert(path);
            Ok(())
        })
    }

    /// A run's events with `seq >= from`, in order.
    pub fn events<E: DeserializeOwned>(
        &self,
        run: &str,
        from: u64,
    ) -> Result<Vec<E>, JournalError> {
        let Some(bytes) = read_optional(&self.path(EVENTS, run))? else {
            return Ok(Vec::new());
        };
        parse_events(run, &bytes)?
            .range(from..)
            .map(|(_, v)| decode(run, v))
            .collect()
    }

    /// The highest event number stored for a run (0 when it has none).
    pub fn last_seq(&self, run: &str) -> Result<u64, JournalError> {
        let Some(bytes) = read_optional(&self.path(EVENTS, run))? else {
            return Ok(0);
        };
        Ok(parse_events(run, &bytes)?
            .keys()
            .next_back()
            .copied()
            .unwrap_or(0))
    }

    pub fn instance(&self, id: &str) -> Result<InstanceState, JournalError> {
        Ok(read_optional(&self.path(INSTANCES, id))?
            .map(|v| decode(id, &v))
            .transpose()?
            .unwrap_or_default())
    }

    pub fn put_instance(&self, id: &str, state: &InstanceState) -> Result<(), JournalError> {
        self.write(|| {
            let _order = self.lock();
            write_atomic(&self.path(INSTANCES, id), &encode(state)?)?;
            Ok(())
        })?;
        self.flush()
    }
}

fn remove_if_present(path: &Path) -> std::io::Result<()> {
    match fs::remove_file(path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

/// Cuts off a last line left without its newline by a crash, so the next line starts
/// clean (the cut line was never flushed, so never shown).
fn cut_torn_tail(file: &File) -> std::io::Result<()> {
    let len = file.metadata()?.len();
    if len == 0 {
        return Ok(());
    }
    let mut last = [0u8; 1];
    file.read_at(&mut last, len - 1)?;
    if last[0] == b'\n' {
        return Ok(());
    }
    let mut bytes = vec![0u8; usize::try_from(len).unwrap_or(usize::MAX)];
    file.read_exact_at(&mut bytes, 0)?;
    let keep = bytes.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
    file.set_len(keep as u64)
}

/// The sled journal of agents before the file journal: read once, then moved aside.
mod legacy {
    use super::*;

    /// Files sled keeps in its folder.
    const SLED_FILES: [&str; 3] = ["conf", "db", "blobs"];

    pub(super) fn migrate(journal: &Journal) -> Result<(), JournalError> {
        let dir = &journal.files.dir;
        if !dir.join("conf").exists() && !dir.join("db").exists() {
            return Ok(());
        }
        tracing::info!("journal: reading the sled journal of an older agent into files");
        let db = sled::Config::new()
            .path(dir)
            .open()
            .map_err(|e| JournalError::Open {
                path: dir.display().to_string(),
                message: e.to_string(),
            })?;
        let sled_err = |e: sled::Error| std::io::Error::other(e.to_string());
        let mut runs = 0;
        for (tree, kind) in [("runs", RUNS), ("instances", INSTANCES)] {
            for kv in db.open_tree(tree).map_err(sled_err)?.iter() {
                let (k, v) = kv.map_err(sled_err)?;
                let id = String::from_utf8_lossy(&k).into_owned();
                write_atomic(&journal.path(kind, &id), &v)?;
                runs += usize::from(kind == RUNS);
            }
        }
        // Event keys: run id, a zero byte, the seq as 8 big-endian bytes.
        let mut logs: BTreeMap<String, Vec<u8>> = BTreeMap::new();
        for kv in db.open_tree("events").map_err(sled_err)?.iter() {
            let (k, v) = kv.map_err(sled_err)?;
            if k.len() < 9 || k[k.len() - 9] != 0 {
                continue;
            }
            let run = String::from_utf8_lossy(&k[..k.len() - 9]).into_owned();
            let tail: [u8; 8] = k[k.len() - 8..].try_into().unwrap_or([0; 8]);
            let log = logs.entry(run).or_default();
            log.extend(format!("{} ", u64::from_be_bytes(tail)).into_bytes());
            log.extend_from_slice(&v);
            log.push(b'\n');
        }
        for (run, log) in &logs {
            write_atomic(&journal.path(EVENTS, run), log)?;
        }
        drop(db);
        let aside = dir.join("sled-migrated");
        fs::create_dir_all(&aside)?;
        for entry in fs::read_dir(dir)? {
            let entry = entry?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if SLED_FILES.contains(&name.as_str()) || name.starts_with("snap.") {
                fs::rename(entry.path(), aside.join(&name))?;
            }
        }
        sync_dir(dir)?;
        tracing::info!(
            "journal: took over {runs} runs and the events of {} from the sled journal (kept in {})",
            logs.len(),
            aside.display()
        );
        Ok(())
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
            created_database: false,
            websocket: None,
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
    fn pruning_keeps_the_newest_finished_runs_of_the_instance() -> Result<(), JournalError> {
        let dir = tempfile::tempdir().map_err(|e| JournalError::Open {
            path: "tmp".into(),
            message: e.to_string(),
        })?;
        let j = Journal::open(dir.path())?;
        for n in 1..=5i64 {
            let mut r = record(&format!("d{n}"));
            r.started_at = n;
            r.status = RunStatus::Succeeded;
            j.insert_run_if_absent(&r)?;
            j.put_event(&r.id, 1, &format!("event of d{n}"))?;
        }
        // A run still going and another instance's run are never pruned.
        let mut running = record("d0");
        running.started_at = 0;
        j.insert_run_if_absent(&running)?;
        let mut other = record("x1");
        other.instance = "other".into();
        other.status = RunStatus::Failed;
        j.insert_run_if_absent(&other)?;
        // "d1" must not take "d10"'s events with it.
        let mut d10 = record("d10");
        d10.started_at = 10;
        d10.status = RunStatus::Succeeded;
        j.insert_run_if_absent(&d10)?;
        j.put_event("d10", 1, &"event of d10".to_owned())?;

        assert_eq!(j.prune_runs("shop", 3)?, 3);
        for gone in ["d1", "d2", "d3"] {
            assert!(j.run(gone)?.is_none(), "{gone}");
            assert!(j.events::<String>(gone, 1)?.is_empty(), "{gone}");
        }
        for kept in ["d4", "d5", "d10", "d0"] {
            assert!(j.run(kept)?.is_some(), "{kept}");
        }
        assert_eq!(j.events::<String>("d10", 1)?, ["event of d10"]);
        assert!(j.run("x1")?.is_some());
        assert_eq!(j.prune_runs("shop", 3)?, 0, "nothing more to prune");
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

    fn tmp() -> tempfile::TempDir {
        tempfile::tempdir().expect("tempdir")
    }

    #[test]
    fn a_line_cut_short_by_a_crash_is_ignored_then_cut_off() -> Result<(), JournalError> {
        let dir = tmp();
        {
            let j = Journal::open(dir.path())?;
            j.put_event("d1", 1, &"one".to_owned())?;
            j.put_event("d1", 2, &"two".to_owned())?;
            j.flush()?;
        }
        // A crash in the middle of the third append.
        let log = dir.path().join("events/d1.log");
        let mut f = OpenOptions::new().append(true).open(&log)?;
        f.write_all(b"3 \"thr")?;
        drop(f);
        let j = Journal::open(dir.path())?;
        assert_eq!(j.events::<String>("d1", 1)?, ["one", "two"]);
        assert_eq!(j.last_seq("d1")?, 2);
        j.put_event("d1", 3, &"three".to_owned())?;
        assert_eq!(j.events::<String>("d1", 2)?, ["two", "three"]);
        // The same number again (an event withheld before a restart) replaces it.
        j.put_event("d1", 3, &"three again".to_owned())?;
        assert_eq!(j.events::<String>("d1", 3)?, ["three again"]);
        let text = fs::read_to_string(&log)?;
        assert!(
            !text.contains("\"thr\n") && text.ends_with('\n'),
            "{text:?}"
        );
        Ok(())
    }

    #[test]
    fn one_agent_per_journal_and_ids_never_leave_its_folders() -> Result<(), JournalError> {
        let dir = tmp();
        let j = Journal::open(dir.path())?;
        match Journal::open(dir.path()) {
            Err(JournalError::Open { message, .. }) => {
                assert!(message.contains("in use"), "{message}")
            }
            other => panic!("a second open must fail: {other:?}"),
        }
        let mut odd = record("../../escape");
        odd.instance = "shop/../x".into();
        j.put_run(&odd)?;
        j.put_event(&odd.id, 1, &"e".to_owned())?;
        j.put_instance("../inst", &InstanceState::default())?;
        assert!(j.run("../../escape")?.is_some());
        assert_eq!(j.events::<String>("../../escape", 1)?, ["e"]);
        for sub in [RUNS, EVENTS, INSTANCES] {
            for entry in fs::read_dir(dir.path().join(sub))? {
                let name = entry?.file_name().to_string_lossy().into_owned();
                assert!(name.starts_with('~') && !name.contains('/'), "{name}");
            }
        }
        assert!(!dir
            .path()
            .parent()
            .map(|p| p.join("escape.json").exists())
            .unwrap_or(false));
        Ok(())
    }

    #[test]
    fn the_sled_journal_of_an_older_agent_is_taken_over() -> Result<(), JournalError> {
        let dir = tmp();
        {
            let db = sled::open(dir.path()).expect("sled");
            let runs = db.open_tree("runs").expect("tree");
            let mut r = record("d1");
            r.phase = Phase::Maintenance;
            runs.insert("d1", encode(&r)?).expect("insert");
            let events = db.open_tree("events").expect("tree");
            for seq in [1u64, 2, 300] {
                let mut key = b"d1".to_vec();
                key.push(0);
                key.extend_from_slice(&seq.to_be_bytes());
                events
                    .insert(key, encode(&format!("event {seq}"))?)
                    .expect("insert");
            }
            let instances = db.open_tree("instances").expect("tree");
            let state = InstanceState {
                active_color: Some(Color::Green),
                ..Default::default()
            };
            instances.insert("shop", encode(&state)?).expect("insert");
            db.flush().expect("flush");
        }
        let j = Journal::open(dir.path())?;
        let unfinished = j.unfinished_runs()?;
        assert_eq!(unfinished.len(), 1);
        assert_eq!(unfinished[0].phase, Phase::Maintenance);
        assert_eq!(j.events::<String>("d1", 2)?, ["event 2", "event 300"]);
        assert_eq!(j.last_seq("d1")?, 300);
        assert_eq!(j.instance("shop")?.active_color, Some(Color::Green));
        assert!(!dir.path().join("db").exists() && !dir.path().join("conf").exists());
        assert!(dir.path().join("sled-migrated/conf").exists());
        drop(j);
        // Once only: a second start finds nothing to take over, and keeps what it has.
        let j = Journal::open(dir.path())?;
        assert_eq!(j.last_seq("d1")?, 300);
        Ok(())
    }
}
