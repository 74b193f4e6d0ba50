//! The deployment pipeline: runs deployments and rollbacks one at a time per instance,
//! journals how far each got, streams its events, and after a restart finishes the clean-up
//! of whatever was interrupted before accepting new work.
//!
//! One file per concern: `deploy.rs` (the seven steps and the failure rules),
//! `rollback.rs`, `containers.rs` (the colour containers), `build.rs` (build context and
//! Dockerfile), `plan.rs` (which modules to update, and why), `modules.rs` (what the
//! database holds, and the checks after `-u`), `image.rs` (how a built image runs),
//! `recover.rs`, `events.rs`.

mod build;
mod containers;
mod deploy;
pub mod events;
pub mod image;
pub mod modules;
pub mod plan;
mod recover;
mod rollback;
mod snapshots_port;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::AgentConfig;
use crate::db::Pg;
use crate::docker::Engine;
use crate::git::Reference;
use crate::journal::{InstanceState, Journal, JournalError, Phase, RunKind, RunRecord, RunStatus};
use crate::traffic::TrafficSwitch;
use events::{Event, EventLog};

pub use containers::container_name;

/// What the coordinator asked to deploy, validated.
#[derive(Debug, Clone)]
pub struct DeployOrder {
    pub deployment_id: String,
    pub instance_id: String,
    pub project_id: String,
    pub repo_url: String,
    pub addons_subpath: String,
    pub reference: Reference,
    /// Id for the pre-deploy snapshot (the coordinator assigns it).
    pub snapshot_id: String,
    /// Repository credentials, in memory only.
    pub auth: crate::git::GitAuth,
}

/// What the coordinator asked to roll back to, validated.
#[derive(Debug, Clone)]
pub struct RollbackOrder {
    pub deployment_id: String,
    pub instance_id: String,
    pub snapshot_id: String,
    pub image_ref: String,
    pub commit_sha: String,
    /// The commit's message and author as its deployment recorded them (may be empty).
    pub commit_message: String,
    pub commit_author: String,
}

#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    #[error("deployment {0} is unknown to this agent")]
    UnknownRun(String),
    #[error("instance {0} is not declared in this agent's configuration")]
    UnknownInstance(String),
    #[error("deployment {id} exists for instance {existing}, not {requested}")]
    Conflict {
        id: String,
        existing: String,
        requested: String,
    },
    #[error("the agent is shutting down")]
    ShuttingDown,
    #[error(transparent)]
    Journal(#[from] JournalError),
}

/// A sink for log lines. An alias, so `async_trait` keeps it higher-ranked.
pub type LineFn = dyn Fn(&str) + Send + Sync;

/// The snapshot operations the pipeline needs; implemented by `crate::snapshot`.
#[async_trait::async_trait]
pub trait SnapshotPort: Send + Sync {
    /// Why snapshots cannot be taken on this agent, if they cannot.
    fn unavailable_reason(&self) -> Option<String> {
        None
    }

    /// Takes a pre-deploy snapshot; returns its stored size.
    async fn pre_deploy(
        &self,
        instance: &str,
        snapshot_id: &str,
        deployment_id: &str,
        commit_sha: Option<&str>,
        on_line: &LineFn,
        cancel: &CancellationToken,
    ) -> Result<u64, String>;

    /// Copies the database and new filestore files server-side before `-u`.
    async fn safety_copy(
        &self,
        instance: &str,
        since_snapshot: &str,
    ) -> Result<Box<dyn SafetyCopyPort>, String>;

    /// The safety copy left by an interrupted deployment, if any.
    async fn pending_safety_copy(
        &self,
        instance: &str,
        since_snapshot: &str,
    ) -> Result<Option<Box<dyn SafetyCopyPort>>, String>;

    /// Restores a snapshot over the instance's database and filestore.
    async fn restore(
        &self,
        instance: &str,
        snapshot_id: &str,
        on_line: &LineFn,
        cancel: &CancellationToken,
    ) -> Result<(), String>;
}

/// A safety copy: swapped back when `-u` or the new colour fails, discarded on success.
#[async_trait::async_trait]
pub trait SafetyCopyPort: Send {
    async fn swap_back(self: Box<Self>) -> Result<(), String>;
    async fn discard(self: Box<Self>) -> Result<(), String>;
}

/// A deployment the agent is running now.
pub struct Run {
    pub id: String,
    pub instance: String,
    pub log: Arc<EventLog>,
    pub cancel: CancellationToken,
}

/// The pipeline component of an agent.
pub struct Pipeline {
    pub(crate) config: Arc<AgentConfig>,
    pub(crate) journal: Journal,
    pub(crate) engine: Engine,
    pub(crate) traffic: Arc<dyn TrafficSwitch>,
    pub(crate) pg: Pg,
    pub(crate) snapshots: Arc<dyn SnapshotPort>,
    /// Base images' `odoo.conf`, read once each.
    pub(crate) image_confs: image::ConfCache,
    runs: Mutex<HashMap<String, Arc<Run>>>,
    locks: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    tracker: TaskTracker,
    shutdown: CancellationToken,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Pipeline {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        config: Arc<AgentConfig>,
        journal: Journal,
        engine: Engine,
        traffic: Arc<dyn TrafficSwitch>,
        pg: Pg,
        snapshots: Arc<dyn SnapshotPort>,
        tracker: TaskTracker,
        shutdown: CancellationToken,
    ) -> Arc<Self> {
        Arc::new(Self {
            config,
            journal,
            engine,
            traffic,
            pg,
            snapshots,
            image_confs: image::ConfCache::default(),
            runs: Mutex::new(HashMap::new()),
            locks: Mutex::new(HashMap::new()),
            tracker,
            shutdown,
        })
    }

    pub(crate) fn step_timeout(&self) -> Duration {
        Duration::from_secs(self.config.pipeline.step_timeout_secs)
    }

    pub(crate) fn mirror_dir(&self, project_id: &str) -> PathBuf {
        self.config
            .state_dir
            .join("mirrors")
            .join(format!("{project_id}.git"))
    }

    pub(crate) fn work_dir(&self, deployment_id: &str) -> PathBuf {
        self.config.state_dir.join("work").join(deployment_id)
    }

    fn instance_lock(&self, instance: &str) -> Arc<tokio::sync::Mutex<()>> {
        lock(&self.locks)
            .entry(instance.to_owned())
            .or_default()
            .clone()
    }

    /// Starts a deployment, or does nothing if one with this id exists (idempotent).
    pub fn deploy(self: &Arc<Self>, order: DeployOrder) -> Result<(), PipelineError> {
        let Some(run) = self.register(&order.deployment_id, &order.instance_id, RunKind::Deploy)?
        else {
            return Ok(());
        };
        let pipeline = self.clone();
        self.tracker.spawn(async move {
            let lock = pipeline.instance_lock(&order.instance_id);
            let _guard = pipeline.wait_turn(&run, &lock).await;
            deploy::run(&pipeline, &run, &order).await;
            pipeline.finish_run(&run.id);
        });
        Ok(())
    }

    /// Starts a rollback, idempotent like [`Pipeline::deploy`].
    pub fn rollback(self: &Arc<Self>, order: RollbackOrder) -> Result<(), PipelineError> {
        let Some(run) =
            self.register(&order.deployment_id, &order.instance_id, RunKind::Rollback)?
        else {
            return Ok(());
        };
        let pipeline = self.clone();
        self.tracker.spawn(async move {
            let lock = pipeline.instance_lock(&order.instance_id);
            let _guard = pipeline.wait_turn(&run, &lock).await;
            rollback::run(&pipeline, &run, &order).await;
            pipeline.finish_run(&run.id);
        });
        Ok(())
    }

    async fn wait_turn<'a>(
        &self,
        run: &Run,
        lock: &'a tokio::sync::Mutex<()>,
    ) -> tokio::sync::MutexGuard<'a, ()> {
        match lock.try_lock() {
            Ok(guard) => guard,
            Err(_) => {
                run.log.log(
                    events::PRE_DEPLOY_SNAPSHOT,
                    &format!(
                        "waiting: another deployment of instance {} is running",
                        run.instance
                    ),
                );
                lock.lock().await
            }
        }
    }

    /// Journals a new run and makes it visible; `None` if the id already exists.
    fn register(
        &self,
        id: &str,
        instance: &str,
        kind: RunKind,
    ) -> Result<Option<Arc<Run>>, PipelineError> {
        if self.shutdown.is_cancelled() {
            return Err(PipelineError::ShuttingDown);
        }
        if self.journal.is_broken() {
            return Err(JournalError::Broken.into());
        }
        if self.config.instance(instance).is_none() {
            return Err(PipelineError::UnknownInstance(instance.to_owned()));
        }
        let record = RunRecord {
            id: id.to_owned(),
            instance: instance.to_owned(),
            kind,
            status: RunStatus::Running,
            phase: Phase::Preparing,
            step: None,
            target_color: None,
            previous_color: None,
            image: None,
            commit_sha: None,
            safety_snapshot: None,
            created_database: false,
            websocket: None,
            started_at: events::now_ms(),
            finished_at: None,
            next_seq: 1,
            message: None,
        };
        // Hold the registry lock across the check so two identical requests cannot both
        // start a run.
        let mut runs = lock(&self.runs);
        if !self.journal.insert_run_if_absent(&record)? {
            let existing = self
                .journal
                .run(id)?
                .map(|r| r.instance)
                .unwrap_or_default();
            if existing != instance {
                return Err(PipelineError::Conflict {
                    id: id.to_owned(),
                    existing,
                    requested: instance.to_owned(),
                });
            }
            return Ok(None);
        }
        let run = Arc::new(Run {
            id: id.to_owned(),
            instance: instance.to_owned(),
            log: Arc::new(EventLog::new(id, self.journal.clone(), 0)),
            cancel: self.shutdown.child_token(),
        });
        runs.insert(id.to_owned(), run.clone());
        Ok(Some(run))
    }

    fn finish_run(&self, id: &str) {
        let run = lock(&self.runs).remove(id);
        if let Some(run) = run {
            let keep = self.config.pipeline.journal_keep_runs;
            match self.journal.prune_runs(&run.instance, keep) {
                Ok(0) => {}
                Ok(n) => {
                    tracing::debug!(instance = %run.instance, "journal: forgot {n} old runs")
                }
                Err(e) => {
                    tracing::warn!(instance = %run.instance, "journal: cannot forget old runs: {e}")
                }
            }
        }
    }

    /// Cancels a running deployment; false if it is not running here.
    pub fn cancel(&self, id: &str) -> bool {
        match lock(&self.runs).get(id) {
            Some(run) => {
                run.cancel.cancel();
                true
            }
            None => false,
        }
    }

    /// Deployment ids running now, by instance.
    pub fn running(&self) -> Vec<(String, String)> {
        lock(&self.runs)
            .values()
            .map(|r| (r.instance.clone(), r.id.clone()))
            .collect()
    }

    /// Events of a run from `from_seq` on: the stored ones, then live ones until it ends.
    pub fn subscribe(
        &self,
        id: &str,
        from_seq: u64,
    ) -> Result<mpsc::Receiver<Event>, PipelineError> {
        let from = from_seq.max(1);
        // A broken journal may hold writes it will lose: serve nothing from it.
        if self.journal.is_broken() {
            return Err(JournalError::Broken.into());
        }
        // Subscribe before reading the journal so no event falls between the two.
        let live = lock(&self.runs).get(id).map(|r| r.log.subscribe());
        if live.is_none() && self.journal.run(id)?.is_none() {
            return Err(PipelineError::UnknownRun(id.to_owned()));
        }
        let journal = self.journal.clone();
        let id = id.to_owned();
        let (tx, rx) = mpsc::channel(256);
        let shutdown = self.shutdown.clone();
        self.tracker.spawn(async move {
            let mut next = from;
            let stored: Vec<Event> = journal.events(&id, next).unwrap_or_default();
            for event in stored {
                next = event.seq + 1;
                let finished = event.is_finished();
                if tx.send(event).await.is_err() || finished {
                    return;
                }
            }
            let Some(mut live) = live else { return };
            loop {
                let received = tokio::select! {
                    r = live.recv() => r,
                    _ = shutdown.cancelled() => return,
                };
                match received {
                    Ok(event) if event.seq < next => continue,
                    Ok(event) => {
                        next = event.seq + 1;
                        let finished = event.is_finished();
                        if tx.send(event).await.is_err() || finished {
                            return;
                        }
                    }
                    Err(_) if journal.is_broken() => return,
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {
                        // Too slow for the live channel: catch up from the journal.
                        for event in journal.events::<Event>(&id, next).unwrap_or_default() {
                            next = event.seq + 1;
                            let finished = event.is_finished();
                            if tx.send(event).await.is_err() || finished {
                                return;
                            }
                        }
                    }
                    Err(tokio::sync::broadcast::error::RecvError::Closed) => {
                        // The run ended between reads: deliver the remainder from the journal.
                        for event in journal.events::<Event>(&id, next).unwrap_or_default() {
                            if tx.send(event).await.is_err() {
                                return;
                            }
                        }
                        return;
                    }
                }
            }
        });
        Ok(rx)
    }

    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    /// What serves an instance.
    pub fn instance_state(&self, instance: &str) -> Result<InstanceState, PipelineError> {
        Ok(self.journal.instance(instance)?)
    }

    /// Finishes the clean-up of runs interrupted by a crash or restart. Called before the
    /// agent accepts work.
    pub async fn recover(&self) -> Result<usize, PipelineError> {
        recover::recover(self).await
    }
}

/// The snapshot component as the pipeline sees it.
pub fn snapshot_port(snapshots: Arc<crate::snapshot::Snapshots>) -> Arc<dyn SnapshotPort> {
    snapshots_port::port(snapshots)
}
