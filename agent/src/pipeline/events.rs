//! A deployment's event log: numbered events (step transitions, log lines, facts), written
//! to the journal before they are broadcast, so a subscriber can re-attach from any sequence
//! number and miss nothing.

use std::sync::{Arc, Mutex};
use std::time::Instant;

use serde::{Deserialize, Serialize};
use tokio::sync::broadcast;

use crate::journal::{Journal, RunStatus};
use crate::traffic::Color;

/// Step names, in the order users see them.
pub const PRE_DEPLOY_SNAPSHOT: &str = "Pre-deploy Snapshot";
pub const CLONE_REPOSITORY: &str = "Clone Repository";
pub const BUILD_IMAGE: &str = "Build Image";
pub const PUSH_IMAGE: &str = "Push Image";
pub const UPDATE_CONTAINER: &str = "Update Container";
pub const MODULE_UPDATE: &str = "Module Update";
pub const HEALTH_CHECK: &str = "Health Check";
pub const RESTORE_SNAPSHOT: &str = "Restore Snapshot";

pub const DEPLOY_STEPS: [&str; 7] = [
    PRE_DEPLOY_SNAPSHOT,
    CLONE_REPOSITORY,
    BUILD_IMAGE,
    PUSH_IMAGE,
    UPDATE_CONTAINER,
    MODULE_UPDATE,
    HEALTH_CHECK,
];

pub const ROLLBACK_STEPS: [&str; 4] = [
    PRE_DEPLOY_SNAPSHOT,
    UPDATE_CONTAINER,
    RESTORE_SNAPSHOT,
    HEALTH_CHECK,
];

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StepStatus {
    Pending,
    Running,
    Completed,
    Failed,
    Skipped,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum EventKind {
    Step {
        name: String,
        status: StepStatus,
        started_at: Option<i64>,
        completed_at: Option<i64>,
        duration_ms: Option<u64>,
        message: Option<String>,
    },
    Log {
        step: String,
        line: String,
    },
    Commit {
        sha: String,
        message: String,
        author: String,
        /// The SSH host key the remote presented, for the coordinator to pin.
        #[serde(default)]
        host_key: Option<String>,
    },
    Plan {
        modules: Vec<String>,
        maintenance: bool,
        target_color: Color,
        /// Set when the deployment creates the database.
        #[serde(default)]
        initialize: Option<InitPlan>,
        /// Why each module is in the plan.
        #[serde(default)]
        entries: Vec<PlanModule>,
    },
    Snapshot {
        id: String,
        size_bytes: u64,
    },
    Image {
        image_ref: String,
        digest: String,
    },
    Finished {
        status: RunStatus,
        message: String,
        active_color: Option<Color>,
        duration_ms: u64,
    },
}

/// How a deployment creates the database.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InitPlan {
    pub demo: bool,
    pub language: String,
}

/// A module of the plan and why it is there.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlanModule {
    pub name: String,
    pub reason: String,
    pub detail: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Event {
    pub seq: u64,
    /// Unix milliseconds.
    pub at: i64,
    pub kind: EventKind,
}

impl Event {
    pub fn is_finished(&self) -> bool {
        matches!(self.kind, EventKind::Finished { .. })
    }
}

pub fn now_ms() -> i64 {
    let now = time::OffsetDateTime::now_utc();
    now.unix_timestamp() * 1000 + i64::from(now.millisecond())
}

/// Numbers, journals and broadcasts a run's events.
pub struct EventLog {
    run: String,
    journal: Journal,
    next_seq: Mutex<u64>,
    tx: broadcast::Sender<Event>,
}

impl EventLog {
    /// A log continuing after `last_seq` (0 for a new run).
    pub fn new(run: &str, journal: Journal, last_seq: u64) -> Self {
        let (tx, _) = broadcast::channel(4096);
        Self {
            run: run.to_owned(),
            journal,
            next_seq: Mutex::new(last_seq + 1),
            tx,
        }
    }

    pub fn subscribe(&self) -> broadcast::Receiver<Event> {
        self.tx.subscribe()
    }

    pub fn emit(&self, kind: EventKind) -> Event {
        // Numbering, storing and sending happen under one lock so subscribers see events
        // in sequence order.
        let mut next = self
            .next_seq
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let event = Event {
            seq: *next,
            at: now_ms(),
            kind,
        };
        // Durable before anyone sees it: a client must never hold an event that a crash
        // could take back (its number would then be reused for something else). An event
        // that cannot be stored is withheld, and keeps its number for the event the agent
        // journals once it restarts.
        let stored = self
            .journal
            .put_event(&self.run, event.seq, &event)
            .and_then(|()| self.journal.flush());
        match stored {
            Ok(()) => {
                *next += 1;
                let _ = self.tx.send(event.clone());
            }
            Err(e) => {
                tracing::error!(deployment = %self.run, "event {} withheld: {e}", event.seq);
            }
        }
        event
    }

    pub fn log(&self, step: &str, line: &str) {
        self.emit(EventKind::Log {
            step: step.to_owned(),
            line: line.to_owned(),
        });
    }

    /// Announces every step as pending.
    pub fn plan_steps(&self, steps: &[&str]) {
        for name in steps {
            self.emit(EventKind::Step {
                name: (*name).to_owned(),
                status: StepStatus::Pending,
                started_at: None,
                completed_at: None,
                duration_ms: None,
                message: None,
            });
        }
    }

    /// Marks `name` running and returns a handle that ends it.
    pub fn start(self: &Arc<Self>, name: &'static str) -> StepRun {
        let started_at = now_ms();
        self.emit(EventKind::Step {
            name: name.to_owned(),
            status: StepStatus::Running,
            started_at: Some(started_at),
            completed_at: None,
            duration_ms: None,
            message: None,
        });
        StepRun {
            log: self.clone(),
            name,
            started: Instant::now(),
            started_at,
        }
    }

    /// Marks a step skipped without running it.
    pub fn skip(&self, name: &str, reason: &str) {
        let at = now_ms();
        self.emit(EventKind::Step {
            name: name.to_owned(),
            status: StepStatus::Skipped,
            started_at: Some(at),
            completed_at: Some(at),
            duration_ms: Some(0),
            message: Some(reason.to_owned()),
        });
        self.log(name, &format!("skipped: {reason}"));
    }
}

/// A running step.
pub struct StepRun {
    log: Arc<EventLog>,
    pub name: &'static str,
    started: Instant,
    started_at: i64,
}

impl StepRun {
    pub fn line(&self, line: &str) {
        self.log.log(self.name, line);
    }

    fn end(self, status: StepStatus, message: Option<String>) {
        self.log.emit(EventKind::Step {
            name: self.name.to_owned(),
            status,
            started_at: Some(self.started_at),
            completed_at: Some(now_ms()),
            duration_ms: Some(
                u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX),
            ),
            message,
        });
    }

    pub fn complete(self, message: impl Into<String>) {
        let message = message.into();
        if !message.is_empty() {
            self.line(&message);
        }
        self.end(
            StepStatus::Completed,
            Some(message).filter(|m| !m.is_empty()),
        );
    }

    pub fn fail(self, message: impl Into<String>) {
        let message = message.into();
        self.line(&format!("error: {message}"));
        self.end(StepStatus::Failed, Some(message));
    }

    pub fn skip(self, reason: impl Into<String>) {
        let reason = reason.into();
        self.line(&format!("skipped: {reason}"));
        self.end(StepStatus::Skipped, Some(reason));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_are_numbered_journaled_and_broadcast_in_order(
    ) -> Result<(), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        let journal = Journal::open(dir.path())?;
        let log = Arc::new(EventLog::new("d1", journal.clone(), 0));
        let mut rx = log.subscribe();
        log.plan_steps(&DEPLOY_STEPS);
        let step = log.start(CLONE_REPOSITORY);
        step.line("fetching");
        step.fail("reference \"nope\" not found");
        let stored: Vec<Event> = journal.events("d1", 1)?;
        // pending x7, running, the line, the error line, failed.
        assert_eq!(stored.len(), 7 + 4);
        assert!(stored
            .iter()
            .enumerate()
            .all(|(i, e)| e.seq == i as u64 + 1));
        let last = stored.last().map(|e| e.kind.clone());
        assert!(matches!(
            last,
            Some(EventKind::Step { status: StepStatus::Failed, ref message, .. }) if message.as_deref() == Some("reference \"nope\" not found")
        ));
        assert_eq!(rx.try_recv()?.seq, 1);
        // A log reopened after a restart continues the numbering.
        let resumed = EventLog::new("d1", journal.clone(), journal.last_seq("d1")?);
        assert_eq!(
            resumed
                .emit(EventKind::Log {
                    step: "x".into(),
                    line: "y".into()
                })
                .seq,
            12
        );
        Ok(())
    }

    #[test]
    fn a_broken_journal_withholds_events_and_keeps_their_numbers(
    ) -> Result<(), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        let journal = Journal::open(dir.path())?;
        let log = EventLog::new("d1", journal.clone(), 0);
        let mut rx = log.subscribe();
        let line = || EventKind::Log {
            step: "x".into(),
            line: "y".into(),
        };
        assert_eq!(log.emit(line()).seq, 1);
        // A failed write (a full disk) breaks the journal.
        journal.broken().cancel();
        assert_eq!(log.emit(line()).seq, 2);
        assert_eq!(log.emit(line()).seq, 2, "a withheld event keeps its number");
        assert_eq!(rx.try_recv()?.seq, 1);
        assert!(rx.try_recv().is_err(), "nothing unstored is broadcast");
        assert_eq!(journal.events::<Event>("d1", 1)?.len(), 1);
        Ok(())
    }
}
