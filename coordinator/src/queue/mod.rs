//! The durable deployment queue and its dispatcher.
//!
//! The store holds the queue: every queued or running deployment, per instance, in
//! creation order. The dispatcher runs the head of each instance's queue, one at a time:
//! a tracked task per running deployment sends the request to the instance's agent,
//! consumes the event stream, and stores every event (record and event atomically). When
//! the stream breaks, or after a coordinator restart, it re-attaches with
//! `Attach(deployment_id, last stored seq + 1)`, so the history ends complete. While the
//! agent is unreachable the deployment waits and its `statusReason` says why.

mod live;

pub use live::Live;

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::StreamExt;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::agents::{
    AgentCallError, AgentHub, DeployCommand, EventStream, LinkState, Refusal, RollbackCommand,
};
use crate::credentials::RepoAccess;
use crate::domain::{
    now_ms, Deployment, DeploymentStatus, EventKind, GitRef, Instance, Snapshot, SnapshotKind,
    SnapshotState,
};
use crate::metrics::Metrics;
use crate::secrets::SecretBox;
use crate::store::{Store, StoreError};

/// How long a waiting deployment waits before trying its agent again.
#[derive(Debug, Clone, Copy)]
pub struct Backoff {
    pub min: Duration,
    pub max: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Self {
            min: Duration::from_millis(500),
            max: Duration::from_secs(15),
        }
    }
}

impl Backoff {
    fn next(&self, current: Duration) -> Duration {
        (current * 2).min(self.max)
    }
}

/// Why a cancel could not be accepted.
#[derive(Debug, thiserror::Error)]
pub enum CancelError {
    #[error("deployment {id} already finished ({status})")]
    Finished { id: String, status: &'static str },
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// How a consumed stream ended.
enum Ended {
    Finished(Box<Deployment>),
    Broken(String),
    Shutdown,
}

pub struct Dispatcher {
    store: Store,
    hub: Arc<AgentHub>,
    live: Arc<Live>,
    metrics: Arc<Metrics>,
    /// Opens a project's repository secret for each Deploy request, and only then.
    secrets: Arc<SecretBox>,
    backoff: Backoff,
    cancel: CancellationToken,
    tracker: TaskTracker,
    wake: Notify,
    /// Deployments with a run task, each with the handle that pokes it (cancel requests).
    runs: Mutex<HashMap<String, Arc<Notify>>>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Dispatcher {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        store: Store,
        hub: Arc<AgentHub>,
        live: Arc<Live>,
        metrics: Arc<Metrics>,
        secrets: Arc<SecretBox>,
        backoff: Backoff,
        cancel: CancellationToken,
        tracker: TaskTracker,
    ) -> Arc<Self> {
        Arc::new(Self {
            store,
            hub,
            live,
            metrics,
            secrets,
            backoff,
            cancel,
            tracker,
            wake: Notify::new(),
            runs: Mutex::new(HashMap::new()),
        })
    }

    pub fn live(&self) -> &Arc<Live> {
        &self.live
    }

    /// Starts the scheduler: it picks up what the store holds (after a restart: running
    /// deployments are re-attached, queued ones wait their turn).
    pub fn start(self: &Arc<Self>) {
        let me = self.clone();
        self.tracker.spawn(async move { me.scheduler().await });
    }

    /// Asks the scheduler to look at the queues now (a deployment was queued).
    pub fn wake(&self) {
        self.wake.notify_one();
    }

    async fn scheduler(self: Arc<Self>) {
        loop {
            if let Err(e) = self.schedule() {
                tracing::error!("cannot read the deployment queue: {e}");
            }
            tokio::select! {
                _ = self.cancel.cancelled() => return,
                _ = self.wake.notified() => {}
                _ = tokio::time::sleep(Duration::from_secs(5)) => {}
            }
        }
    }

    /// Starts a run task for the head of every instance's queue that has none.
    fn schedule(self: &Arc<Self>) -> Result<(), StoreError> {
        let active = self.store.active_deployments()?;
        let mut heads = HashSet::new();
        for d in active {
            if !heads.insert(d.instance_id.clone()) {
                continue;
            }
            let poke = {
                let mut runs = lock(&self.runs);
                if runs.contains_key(&d.id) {
                    continue;
                }
                let poke = Arc::new(Notify::new());
                runs.insert(d.id.clone(), poke.clone());
                poke
            };
            let me = self.clone();
            let id = d.id.clone();
            self.tracker.spawn(async move {
                if let Err(e) = me.drive(&id, &poke).await {
                    tracing::error!(deployment = %id, "deployment run stopped: {e}");
                }
                lock(&me.runs).remove(&id);
                me.wake();
            });
        }
        Ok(())
    }

    /// Cancels a deployment. A queued one the agent never received ends at once; for one
    /// the agent has, the agent's Cancel RPC is called and the agent's own final event
    /// ends it. Returns the deployment as it is now.
    pub fn cancel(&self, id: &str, by: &str) -> Result<Deployment, CancelError> {
        let mut finished: Option<DeploymentStatus> = None;
        let d = self.store.update_deployment(id, &mut |d| {
            if d.status.is_terminal() {
                finished = Some(d.status);
                return Err(StoreError::Refused(String::new()));
            }
            d.cancel_requested = true;
            Ok(())
        });
        let d = match (d, finished) {
            (_, Some(status)) => {
                return Err(CancelError::Finished {
                    id: id.to_owned(),
                    status: status.as_str(),
                })
            }
            (d, None) => d?,
        };
        if d.status == DeploymentStatus::Queued && !d.dispatched {
            // The run task checks `cancel_requested` before it dispatches, so the agent
            // will never see this deployment: it ends here.
            let closed = self.close(
                &d,
                DeploymentStatus::Cancelled,
                format!("cancelled by {by} before it started"),
            )?;
            self.wake();
            return Ok(closed);
        }
        match lock(&self.runs).get(id) {
            Some(poke) => poke.notify_one(),
            None => self.wake(),
        }
        Ok(d)
    }

    /// Cancels a deployment that a newer one makes pointless (a newer push to the same
    /// branch), but only while it is queued and was never sent to its agent: a deployment
    /// that started runs to its end. Returns the cancelled deployment, or `None` when it
    /// had already started, finished or been cancelled.
    pub fn supersede(&self, id: &str, reason: String) -> Result<Option<Deployment>, StoreError> {
        let marked = self.store.update_deployment(id, &mut |d| {
            if d.status != DeploymentStatus::Queued || d.dispatched || d.cancel_requested {
                return Err(StoreError::Refused(String::new()));
            }
            d.cancel_requested = true;
            Ok(())
        });
        let d = match marked {
            Ok(d) => d,
            Err(StoreError::Refused(_) | StoreError::NotFound(_)) => return Ok(None),
            Err(e) => return Err(e),
        };
        // The run task checks `cancel_requested` before it dispatches, so the agent never
        // sees this deployment.
        let closed = self.close(&d, DeploymentStatus::Cancelled, reason)?;
        self.wake();
        Ok(Some(closed))
    }

    /// Ends a deployment the agent will send nothing more for.
    fn close(
        &self,
        d: &Deployment,
        status: DeploymentStatus,
        message: String,
    ) -> Result<Deployment, StoreError> {
        tracing::info!(deployment = %d.id, status = status.as_str(), "{message}");
        let event = d.closing_event(status, message, now_ms());
        let closed = self.store.append_event(&d.id, &event)?;
        self.live.publish(&d.id, closed.last_seq);
        if closed.status.is_terminal() && closed.last_seq == event.seq {
            self.metrics.deployment_finished(closed.status);
        }
        Ok(closed)
    }

    fn set_reason(&self, id: &str, reason: Option<String>) -> Result<(), StoreError> {
        let current = self.store.deployment(id)?;
        if current.is_some_and(|d| d.status_reason == reason || d.status.is_terminal()) {
            return Ok(());
        }
        self.store.update_deployment(id, &mut |d| {
            if !d.status.is_terminal() {
                d.status_reason.clone_from(&reason);
            }
            Ok(())
        })?;
        Ok(())
    }

    /// Waits before the next attempt; a poke (cancel) or shutdown cuts it short.
    async fn pause(&self, poke: &Notify, delay: Duration) {
        tokio::select! {
            _ = self.cancel.cancelled() => {}
            _ = poke.notified() => {}
            _ = tokio::time::sleep(delay) => {}
        }
    }

    /// Runs one deployment to its end (or until shutdown; it is picked up again on start).
    async fn drive(&self, id: &str, poke: &Notify) -> Result<(), StoreError> {
        let mut delay = self.backoff.min;
        let mut cancel_sent = false;
        loop {
            if self.cancel.is_cancelled() {
                return Ok(());
            }
            let Some(d) = self.store.deployment(id)? else {
                return Ok(());
            };
            if d.status.is_terminal() {
                return Ok(());
            }
            if d.cancel_requested && !d.dispatched {
                // Cancelled while undispatched (usually closed by the cancel request
                // itself; this covers a cancel that raced with a failed send).
                self.close(
                    &d,
                    DeploymentStatus::Cancelled,
                    "cancelled before it started".to_owned(),
                )?;
                return Ok(());
            }
            let Some(instance) = self.store.instance(&d.instance_id)? else {
                self.close(
                    &d,
                    DeploymentStatus::Failed,
                    format!("instance {} no longer exists", d.instance_id),
                )?;
                return Ok(());
            };
            let agent = instance.agent.clone();

            if d.cancel_requested && !cancel_sent {
                match self.hub.cancel(&agent, id, "cancelled by a user").await {
                    Ok(_) => cancel_sent = true,
                    Err(AgentCallError::Refused {
                        reason: Refusal::NotFound,
                        ..
                    }) if d.status == DeploymentStatus::Queued => {
                        // Dispatched, but the request never reached the agent.
                        self.close(
                            &d,
                            DeploymentStatus::Cancelled,
                            "cancelled before the agent started it".to_owned(),
                        )?;
                        return Ok(());
                    }
                    Err(e) if e.is_retryable() => {
                        self.set_reason(
                            id,
                            Some(format!("cancel requested; waiting for agent {agent}: {e}")),
                        )?;
                        self.pause(poke, delay).await;
                        delay = self.backoff.next(delay);
                        continue;
                    }
                    Err(e) => {
                        cancel_sent = true;
                        self.set_reason(id, Some(format!("the agent could not cancel: {e}")))?;
                    }
                }
            }

            // A deployment is sent only over a link known to be up: then a failed send
            // means the request may have arrived, and only the agent can end it. While the
            // link is down it waits undispatched, so it can still be cancelled at once.
            if !d.dispatched && d.status == DeploymentStatus::Queued {
                if let Some(link) = self.hub.status(&agent) {
                    if link.state != LinkState::Connected {
                        let why = link
                            .last_error
                            .unwrap_or_else(|| "not connected yet".to_owned());
                        self.set_reason(id, Some(format!("waiting for agent {agent}: {why}")))?;
                        self.pause(poke, delay).await;
                        delay = self.backoff.next(delay);
                        continue;
                    }
                }
            }

            let opened = if d.status == DeploymentStatus::Running {
                self.hub.attach(&agent, id, d.last_seq + 1).await
            } else {
                let access = match self.repository_access(&d) {
                    Ok(access) => access,
                    Err(e) => {
                        // Retrying cannot help: the key file or the stored record is wrong.
                        self.close(&d, DeploymentStatus::Failed, e.to_string())?;
                        return Ok(());
                    }
                };
                if !d.dispatched {
                    let marked = self.store.update_deployment(id, &mut |d| {
                        if d.status != DeploymentStatus::Queued || d.cancel_requested {
                            return Err(StoreError::Refused("cancelled".to_owned()));
                        }
                        d.dispatched = true;
                        Ok(())
                    });
                    match marked {
                        Ok(_) => {}
                        Err(StoreError::Refused(_)) => continue,
                        Err(e) => return Err(e),
                    }
                }
                self.send(&agent, &instance, &d, access).await?
            };
            match opened {
                Ok(stream) => {
                    delay = self.backoff.min;
                    let started = self.store.update_deployment(id, &mut |d| {
                        if d.status == DeploymentStatus::Queued {
                            d.status = DeploymentStatus::Running;
                            d.started_at.get_or_insert_with(now_ms);
                        }
                        d.status_reason = None;
                        Ok(())
                    })?;
                    if started.status.is_terminal() {
                        return Ok(());
                    }
                    self.live.publish(id, started.last_seq);
                    match self
                        .consume(id, &agent, stream, poke, &mut cancel_sent)
                        .await?
                    {
                        Ended::Finished(d) => {
                            self.finished(&d, &instance);
                            return Ok(());
                        }
                        Ended::Shutdown => return Ok(()),
                        Ended::Broken(why) => {
                            tracing::warn!(deployment = %id, "event stream broke: {why}; re-attaching");
                            self.set_reason(
                                id,
                                Some(format!(
                                    "lost the event stream of agent {agent} ({why}); re-attaching"
                                )),
                            )?;
                            self.pause(poke, delay).await;
                            delay = self.backoff.next(delay);
                        }
                    }
                }
                Err(e) if e.is_retryable() => {
                    if matches!(e, AgentCallError::NotConnected { .. })
                        && d.status == DeploymentStatus::Queued
                    {
                        // Nothing reached the agent: the deployment is undispatched again,
                        // so a cancel ends it at once.
                        self.store.update_deployment(id, &mut |d| {
                            if d.status == DeploymentStatus::Queued {
                                d.dispatched = false;
                            }
                            Ok(())
                        })?;
                    }
                    let reason = if d.status == DeploymentStatus::Running {
                        format!(
                            "lost contact with agent {agent}; re-attaching when it answers: {e}"
                        )
                    } else {
                        format!("waiting for agent {agent}: {e}")
                    };
                    self.set_reason(id, Some(reason))?;
                    self.pause(poke, delay).await;
                    delay = self.backoff.next(delay);
                }
                Err(AgentCallError::Unknown(_)) => {
                    self.close(
                        &d,
                        DeploymentStatus::Failed,
                        format!("agent {agent} is not registered any more"),
                    )?;
                    return Ok(());
                }
                Err(
                    e @ AgentCallError::Refused {
                        reason: Refusal::NotFound,
                        ..
                    },
                ) if d.status == DeploymentStatus::Running => {
                    self.close(
                        &d,
                        DeploymentStatus::Failed,
                        format!("agent {agent} no longer knows this deployment: {e}"),
                    )?;
                    return Ok(());
                }
                Err(e) => {
                    self.close(
                        &d,
                        DeploymentStatus::Failed,
                        format!("the agent refused the deployment: {e}"),
                    )?;
                    return Ok(());
                }
            }
        }
    }

    /// Sends the deployment (or rollback) request from `from_seq = last stored + 1`. The
    /// agent treats a repeated id as a re-attach, so sending twice is harmless.
    async fn send(
        &self,
        agent: &str,
        instance: &Instance,
        d: &Deployment,
        access: Option<RepoAccess>,
    ) -> Result<Result<EventStream, AgentCallError>, StoreError> {
        if let Some(target) = &d.rollback {
            let cmd = RollbackCommand {
                deployment_id: d.id.clone(),
                agent_instance_id: instance.agent_instance_id.clone(),
                snapshot_id: target.snapshot_id.clone(),
                image_ref: target.image_ref.clone(),
                commit_sha: target.commit_sha.clone().unwrap_or_default(),
                commit_message: d.commit_message.clone().unwrap_or_default(),
                commit_author: d.commit_author.clone().unwrap_or_default(),
                from_seq: d.last_seq + 1,
            };
            return Ok(self.hub.rollback(agent, &cmd).await);
        }
        let Some(project) = self.store.project(&d.project_id)? else {
            return Ok(Err(AgentCallError::Refused {
                name: agent.to_owned(),
                reason: Refusal::NotFound,
                message: format!("project {} no longer exists", d.project_id),
            }));
        };
        let cmd = DeployCommand {
            deployment_id: d.id.clone(),
            agent_instance_id: instance.agent_instance_id.clone(),
            project_id: project.id.clone(),
            repository_url: project.repository_url.clone(),
            addons_subpath: project.addons_subpath.clone(),
            reference: GitRef {
                branch: d.branch.clone(),
                commit_sha: d.commit_sha.clone(),
                tag: d.tag.clone(),
            },
            snapshot_id: d.planned_snapshot_id.clone(),
            from_seq: d.last_seq + 1,
            access,
        };
        Ok(self.hub.deploy(agent, &cmd).await)
    }

    /// The project's repository access for one Deploy request (nothing for a rollback,
    /// which fetches nothing). The plaintext lives only until the request is sent.
    fn repository_access(
        &self,
        d: &Deployment,
    ) -> Result<Option<RepoAccess>, crate::credentials::CredentialsError> {
        if d.rollback.is_some() {
            return Ok(None);
        }
        match self.store.project(&d.project_id) {
            Ok(Some(project)) => crate::credentials::open_for_deploy(&self.secrets, &project),
            // A missing project is reported by `send`; a store error by the next read.
            _ => Ok(None),
        }
    }

    /// Pins the SSH host key the agent reports for the project, on first use only: while
    /// a key is pinned the agent refuses any other, so a different key here means an
    /// operator forgot the pin meanwhile, and the next deploy pins afresh.
    fn pin_host_key(&self, d: &Deployment, key: &str) {
        let Some(fingerprint) = crate::domain::host_key_fingerprint(key) else {
            tracing::warn!(deployment = %d.id, "agent reported a malformed SSH host key; not pinned");
            return;
        };
        let mut pinned = false;
        let result = self.store.update_project(&d.project_id, &mut |p| {
            pinned = false;
            if p.ssh_host_key.is_none() {
                p.ssh_host_key = Some(crate::domain::PinnedHostKey {
                    key: key.to_owned(),
                    fingerprint: fingerprint.clone(),
                    pinned_at: now_ms(),
                });
                pinned = true;
            }
            Ok(())
        });
        match result {
            Ok(_) if pinned => tracing::info!(
                project = %d.project_id,
                "pinned the SSH host key of the repository on first use: {fingerprint}"
            ),
            Ok(p) => {
                if let Some(other) = p.ssh_host_key.filter(|k| k.fingerprint != fingerprint) {
                    tracing::warn!(
                        project = %d.project_id,
                        "deployment {} reported SSH host key {fingerprint}, but {} is pinned; the pin stays",
                        d.id,
                        other.fingerprint
                    );
                }
            }
            Err(e) => tracing::warn!(project = %d.project_id, "cannot pin the SSH host key: {e}"),
        }
    }

    /// Stores the stream's events until the deployment finishes or the stream breaks.
    async fn consume(
        &self,
        id: &str,
        agent: &str,
        mut stream: EventStream,
        poke: &Notify,
        cancel_sent: &mut bool,
    ) -> Result<Ended, StoreError> {
        loop {
            tokio::select! {
                _ = self.cancel.cancelled() => return Ok(Ended::Shutdown),
                _ = poke.notified() => {
                    let wants_cancel = self.store.deployment(id)?.is_some_and(|d| d.cancel_requested);
                    if wants_cancel && !*cancel_sent {
                        match self.hub.cancel(agent, id, "cancelled by a user").await {
                            Ok(_) => *cancel_sent = true,
                            Err(e) if e.is_retryable() => {
                                // Retried by the outer loop once the stream is re-opened.
                                return Ok(Ended::Broken(format!("cannot send the cancel: {e}")));
                            }
                            Err(e) => {
                                *cancel_sent = true;
                                self.set_reason(id, Some(format!("the agent could not cancel: {e}")))?;
                            }
                        }
                    }
                }
                item = stream.next() => match item {
                    None => return Ok(Ended::Broken("the stream ended before the deployment finished".to_owned())),
                    Some(Err(e)) => return Ok(Ended::Broken(e.to_string())),
                    Some(Ok(event)) => {
                        let d = match self.store.append_event(id, &event) {
                            Ok(d) => d,
                            Err(StoreError::Refused(why)) => return Ok(Ended::Broken(why)),
                            Err(e) => return Err(e),
                        };
                        self.live.publish(id, d.last_seq);
                        self.observe(&d, &event.kind);
                        if event.kind.is_finished() && d.status.is_terminal() {
                            return Ok(Ended::Finished(Box::new(d)));
                        }
                    }
                }
            }
        }
    }

    /// Side effects of one stored event: metrics and the snapshot cache.
    fn observe(&self, d: &Deployment, kind: &EventKind) {
        match kind {
            EventKind::Step {
                name,
                status,
                duration_ms: Some(ms),
                ..
            } if status.is_done() => self.metrics.step_finished(name, *ms),
            EventKind::Snapshot {
                snapshot_id,
                size_bytes,
            } => {
                let snapshot = Snapshot {
                    id: snapshot_id.clone(),
                    environment_id: d.environment_id.clone(),
                    kind: SnapshotKind::PreDeploy,
                    state: SnapshotState::Ready,
                    pinned: false,
                    size_bytes: *size_bytes,
                    created_at: now_ms(),
                    deployment_id: Some(d.id.clone()),
                    commit_sha: d.commit_sha.clone(),
                    error: None,
                    imported_at: None,
                    original_id: None,
                };
                if let Err(e) = self.store.put_snapshot(&snapshot) {
                    tracing::warn!(deployment = %d.id, "cannot record snapshot {snapshot_id}: {e}");
                }
            }
            EventKind::Commit {
                ssh_host_key: Some(key),
                ..
            } => self.pin_host_key(d, key),
            _ => {}
        }
    }

    /// After the agent's final event: metrics, the instance's colour, and retention.
    fn finished(&self, d: &Deployment, instance: &Instance) {
        self.metrics.deployment_finished(d.status);
        tracing::info!(deployment = %d.id, status = d.status.as_str(), "deployment finished");
        if let Some(color) = d.active_color {
            let result = self.store.update_instance(&instance.id, &mut |i| {
                i.active_color = Some(color);
                i.active_color_at = Some(now_ms());
                Ok(())
            });
            if let Err(e) = result {
                tracing::warn!(instance = %instance.id, "cannot record the active colour: {e}");
            }
        }
        if d.snapshot_id.is_some() {
            self.apply_retention_later(instance.clone());
        }
    }

    /// Applies the environment's retention on its agent, in the background.
    pub fn apply_retention_later(&self, instance: Instance) {
        let store = self.store.clone();
        let hub = self.hub.clone();
        self.tracker.spawn(async move {
            let settings = match store.environment(&instance.environment_id) {
                Ok(Some(e)) => e.snapshot_settings,
                _ => return,
            };
            match hub
                .apply_retention(&instance.agent, &instance.agent_instance_id, settings)
                .await
            {
                Ok((deleted, freed)) => {
                    for id in &deleted {
                        if let Ok(Some(mut s)) = store.snapshot(&instance.environment_id, id) {
                            s.state = SnapshotState::Deleted;
                            let _ = store.put_snapshot(&s);
                        }
                    }
                    if !deleted.is_empty() {
                        tracing::info!(environment = %instance.environment_id, freed, "retention deleted {} snapshot(s)", deleted.len());
                    }
                }
                Err(e) => tracing::debug!(environment = %instance.environment_id, "retention not applied: {e}"),
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_the_maximum() {
        let b = Backoff {
            min: Duration::from_millis(500),
            max: Duration::from_secs(2),
        };
        assert_eq!(b.next(b.min), Duration::from_secs(1));
        assert_eq!(b.next(Duration::from_secs(1)), Duration::from_secs(2));
        assert_eq!(b.next(Duration::from_secs(2)), Duration::from_secs(2));
    }
}
