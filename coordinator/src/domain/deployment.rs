//! A deployment: one run of the pipeline (or a rollback) for one instance. Its record is a
//! fold of its event log (`Deployment::apply`), so the record can always be rebuilt from
//! the events the agent sent.

use serde::{Deserialize, Serialize};

use super::{shorten, Color, DeployEvent, EventKind, Invalid};
use crate::domain::project::validate_ref_name;

/// The pipeline's steps, in the order users see them.
pub const PIPELINE_STEPS: [&str; 7] = [
    "Pre-deploy Snapshot",
    "Clone Repository",
    "Build Image",
    "Push Image",
    "Update Container",
    "Module Update",
    "Health Check",
];

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, Hash)]
#[serde(rename_all = "lowercase")]
pub enum DeploymentStatus {
    Queued,
    Running,
    Succeeded,
    Failed,
    Cancelled,
}

impl DeploymentStatus {
    pub const ALL: [DeploymentStatus; 5] = [
        DeploymentStatus::Queued,
        DeploymentStatus::Running,
        DeploymentStatus::Succeeded,
        DeploymentStatus::Failed,
        DeploymentStatus::Cancelled,
    ];

    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            DeploymentStatus::Succeeded | DeploymentStatus::Failed | DeploymentStatus::Cancelled
        )
    }

    pub fn as_str(self) -> &'static str {
        match self {
            DeploymentStatus::Queued => "queued",
            DeploymentStatus::Running => "running",
            DeploymentStatus::Succeeded => "succeeded",
            DeploymentStatus::Failed => "failed",
            DeploymentStatus::Cancelled => "cancelled",
        }
    }
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum StepStatus {
    Pending,
    Running,
    Completed,
    Failed,
    Skipped,
}

impl StepStatus {
    pub fn is_done(self) -> bool {
        matches!(
            self,
            StepStatus::Completed | StepStatus::Failed | StepStatus::Skipped
        )
    }

    pub fn as_str(self) -> &'static str {
        match self {
            StepStatus::Pending => "pending",
            StepStatus::Running => "running",
            StepStatus::Completed => "completed",
            StepStatus::Failed => "failed",
            StepStatus::Skipped => "skipped",
        }
    }
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum TriggerType {
    Manual,
    Webhook,
    Rollback,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Step {
    pub name: String,
    pub status: StepStatus,
    #[serde(default)]
    pub started_at: Option<i64>,
    #[serde(default)]
    pub completed_at: Option<i64>,
    #[serde(default)]
    pub duration_ms: Option<u64>,
    /// Why the step failed or was skipped. The step's output is its log lines plus this
    /// message, read from the event log (log lines are never copied into the record).
    #[serde(default)]
    pub message: Option<String>,
}

impl Step {
    pub fn pending(name: &str) -> Self {
        Self {
            name: name.to_owned(),
            status: StepStatus::Pending,
            started_at: None,
            completed_at: None,
            duration_ms: None,
            message: None,
        }
    }
}

/// What the agent said it would do before it did it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Plan {
    pub modules_to_update: Vec<String>,
    pub maintenance_window: bool,
    pub target_color: Option<Color>,
    /// The deployment creates the database before any colour starts.
    #[serde(default)]
    pub initialize_database: bool,
    #[serde(default)]
    pub demo_data: bool,
    #[serde(default)]
    pub language: Option<String>,
    /// Why each module is in the plan.
    #[serde(default)]
    pub modules: Vec<PlanModule>,
}

/// A module of a deployment's plan and why it is there.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct PlanModule {
    pub name: String,
    /// `checksum_changed`, `no_stored_checksum`, `changed_since_serving_commit` or
    /// `new_dependency`.
    pub reason: String,
    /// The reason as a sentence.
    pub detail: String,
}

/// For a rollback or a restore: what is restored, and the image that comes back. Both run
/// as the agent's Rollback.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct RollbackTarget {
    /// The deployment rolled back; `None` for the restore of a snapshot named by id.
    #[serde(default)]
    pub deployment_id: Option<String>,
    /// The snapshot restored: a rollback's target's pre-deploy snapshot, or the one named.
    pub snapshot_id: String,
    /// The image that served when the snapshot was taken (or, when that is unknown, the
    /// one serving when the restore was asked for).
    pub image_ref: String,
    pub commit_sha: Option<String>,
}

/// The reference a deploy asks for: at least one of the three.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GitRef {
    pub branch: Option<String>,
    pub commit_sha: Option<String>,
    pub tag: Option<String>,
}

impl GitRef {
    /// Empty strings count as absent. A commit SHA is 4 to 40 hexadecimal characters
    /// (a prefix is allowed) and is kept lower-case.
    pub fn new(
        branch: Option<String>,
        commit_sha: Option<String>,
        tag: Option<String>,
    ) -> Result<Self, Invalid> {
        let clean = |v: Option<String>| v.map(|s| s.trim().to_owned()).filter(|s| !s.is_empty());
        let r = GitRef {
            branch: clean(branch),
            commit_sha: clean(commit_sha).map(|s| s.to_ascii_lowercase()),
            tag: clean(tag),
        };
        if r.branch.is_none() && r.commit_sha.is_none() && r.tag.is_none() {
            return Err(Invalid(
                "give at least one of branch, commitSha or tag".to_owned(),
            ));
        }
        if let Some(b) = &r.branch {
            validate_ref_name("branch", b)?;
        }
        if let Some(t) = &r.tag {
            validate_ref_name("tag", t)?;
        }
        if let Some(sha) = &r.commit_sha {
            if !(4..=40).contains(&sha.len()) || !sha.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(Invalid(format!(
                    "commitSha {:?} must be 4 to 40 hexadecimal characters",
                    shorten(sha)
                )));
            }
        }
        Ok(r)
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Deployment {
    pub id: String,
    /// Position in creation order, assigned by the store; orders queues and history.
    #[serde(default)]
    pub order: u64,
    pub project_id: String,
    pub environment_id: String,
    pub instance_id: String,
    pub status: DeploymentStatus,
    /// Why the deployment waits, failed or was cancelled, in words.
    #[serde(default)]
    pub status_reason: Option<String>,
    pub trigger_type: TriggerType,
    pub branch: Option<String>,
    pub tag: Option<String>,
    pub commit_sha: Option<String>,
    pub commit_message: Option<String>,
    pub commit_author: Option<String>,
    /// The pre-deploy snapshot, once the agent reported it taken.
    pub snapshot_id: Option<String>,
    /// The snapshot id the coordinator assigned and sent with the request.
    pub planned_snapshot_id: String,
    /// The image the deployment pushed (what a later rollback returns to).
    #[serde(default)]
    pub image_ref: Option<String>,
    #[serde(default)]
    pub rollback: Option<RollbackTarget>,
    pub steps: Vec<Step>,
    #[serde(default)]
    pub plan: Option<Plan>,
    /// Active colour when the deployment finished.
    #[serde(default)]
    pub active_color: Option<Color>,
    pub duration_ms: Option<u64>,
    pub created_at: i64,
    pub started_at: Option<i64>,
    pub finished_at: Option<i64>,
    pub requested_by: String,
    /// Id of the API token that asked for it (none for webhooks): that token may read and
    /// follow this deployment even without `view:deployments`.
    #[serde(default)]
    pub requested_by_token: Option<String>,
    /// Set just before the request is first sent to the agent: from then on only the
    /// agent can end the deployment (a cancel goes through its Cancel RPC).
    #[serde(default)]
    pub dispatched: bool,
    #[serde(default)]
    pub cancel_requested: bool,
    /// Seq of the last event stored; re-attaching asks for `last_seq + 1`.
    #[serde(default)]
    pub last_seq: u64,
}

impl Deployment {
    /// Applies one event from the log. Returns false (and changes nothing) for an event
    /// already applied, so a replay after re-attaching is harmless.
    pub fn apply(&mut self, event: &DeployEvent) -> bool {
        if event.seq <= self.last_seq {
            return false;
        }
        self.last_seq = event.seq;
        match &event.kind {
            EventKind::Step {
                name,
                status,
                started_at,
                completed_at,
                duration_ms,
                message,
            } => {
                if self.status == DeploymentStatus::Queued {
                    self.status = DeploymentStatus::Running;
                }
                self.started_at.get_or_insert(event.at);
                let step = match self.steps.iter_mut().position(|s| s.name == *name) {
                    Some(i) => &mut self.steps[i],
                    None => {
                        self.steps.push(Step::pending(name));
                        let last = self.steps.len() - 1;
                        &mut self.steps[last]
                    }
                };
                step.status = *status;
                if *status == StepStatus::Running {
                    step.started_at = Some(started_at.unwrap_or(event.at));
                } else if let Some(s) = started_at {
                    step.started_at = Some(*s);
                }
                if status.is_done() {
                    step.completed_at = Some(completed_at.unwrap_or(event.at));
                    step.duration_ms = duration_ms.or_else(|| {
                        step.started_at
                            .zip(step.completed_at)
                            .map(|(s, c)| u64::try_from(c - s).unwrap_or(0))
                    });
                }
                if message.is_some() {
                    step.message.clone_from(message);
                }
            }
            EventKind::Log { .. } => {}
            EventKind::Commit {
                commit_sha,
                commit_message,
                commit_author,
                ..
            } => {
                self.commit_sha = Some(commit_sha.clone());
                // A rollback's agent knows only the image ("rollback to <image>"); the
                // coordinator recorded the real commit's message and author when it
                // queued the rollback, and those stay.
                if self.rollback.is_none() || self.commit_message.is_none() {
                    self.commit_message = Some(commit_message.clone());
                    self.commit_author = Some(commit_author.clone());
                }
            }
            EventKind::Plan {
                modules_to_update,
                maintenance_window,
                target_color,
                initialize_database,
                demo_data,
                language,
                modules,
            } => {
                self.plan = Some(Plan {
                    modules_to_update: modules_to_update.clone(),
                    maintenance_window: *maintenance_window,
                    target_color: *target_color,
                    initialize_database: *initialize_database,
                    demo_data: *demo_data,
                    language: language.clone(),
                    modules: modules.clone(),
                });
            }
            EventKind::Snapshot { snapshot_id, .. } => {
                self.snapshot_id = Some(snapshot_id.clone());
            }
            EventKind::Image { image_ref, .. } => self.image_ref = Some(image_ref.clone()),
            EventKind::Finished {
                status,
                message,
                active_color,
                duration_ms,
                by_coordinator,
            } => {
                // A finished event without a terminal status would leave the queue stuck.
                self.status = if status.is_terminal() {
                    *status
                } else {
                    DeploymentStatus::Failed
                };
                self.status_reason = message.clone().filter(|m| !m.is_empty());
                self.finished_at = Some(event.at);
                self.active_color = *active_color;
                self.duration_ms = duration_ms.filter(|_| !by_coordinator).or_else(|| {
                    self.started_at
                        .map(|s| u64::try_from(event.at - s).unwrap_or(0))
                });
                // Steps the agent never reached did not run.
                for step in &mut self.steps {
                    match step.status {
                        StepStatus::Pending => step.status = StepStatus::Skipped,
                        StepStatus::Running => {
                            step.status = StepStatus::Failed;
                            step.completed_at = Some(event.at);
                        }
                        _ => {}
                    }
                }
            }
        }
        true
    }

    /// The image this deployment left serving if it succeeded: the one it pushed, or for a
    /// rollback or restore the one it returned to.
    pub fn served_image(&self) -> Option<&str> {
        self.image_ref
            .as_deref()
            .or_else(|| self.rollback.as_ref().map(|r| r.image_ref.as_str()))
            .filter(|i| !i.is_empty())
    }

    /// The closing event the coordinator appends when the agent will never send one.
    pub fn closing_event(&self, status: DeploymentStatus, message: String, at: i64) -> DeployEvent {
        DeployEvent {
            seq: self.last_seq + 1,
            at,
            kind: EventKind::Finished {
                status,
                message: Some(message),
                active_color: None,
                duration_ms: None,
                by_coordinator: true,
            },
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub fn queued(id: &str) -> Deployment {
        Deployment {
            id: id.to_owned(),
            order: 0,
            project_id: "shop".into(),
            environment_id: "shop-prod".into(),
            instance_id: "shop-prod-1".into(),
            status: DeploymentStatus::Queued,
            status_reason: None,
            trigger_type: TriggerType::Manual,
            branch: Some("main".into()),
            tag: None,
            commit_sha: None,
            commit_message: None,
            commit_author: None,
            snapshot_id: None,
            planned_snapshot_id: "snap-1".into(),
            image_ref: None,
            rollback: None,
            steps: PIPELINE_STEPS.iter().map(|s| Step::pending(s)).collect(),
            plan: None,
            active_color: None,
            duration_ms: None,
            created_at: 1000,
            started_at: None,
            finished_at: None,
            requested_by: "ci".into(),
            requested_by_token: None,
            dispatched: false,
            cancel_requested: false,
            last_seq: 0,
        }
    }

    fn step(seq: u64, at: i64, name: &str, status: StepStatus) -> DeployEvent {
        DeployEvent {
            seq,
            at,
            kind: EventKind::Step {
                name: name.into(),
                status,
                started_at: None,
                completed_at: None,
                duration_ms: None,
                message: None,
            },
        }
    }

    #[test]
    fn refs_need_one_of_three_and_valid_values() {
        let err = GitRef::new(None, Some(" ".into()), None).expect_err("none");
        for field in ["branch", "commitSha", "tag"] {
            assert!(err.0.contains(field), "{err}");
        }
        assert!(GitRef::new(None, Some("abc".into()), None).is_err());
        assert!(GitRef::new(None, Some("g123".into()), None).is_err());
        assert!(GitRef::new(None, Some("a".repeat(41)), None).is_err());
        let r = GitRef::new(None, Some("ABCD".into()), None).expect("valid");
        assert_eq!(r.commit_sha.as_deref(), Some("abcd"));
        assert!(GitRef::new(None, None, Some("v1.0".into())).is_ok());
        assert!(GitRef::new(Some("bad name".into()), None, None).is_err());
    }

    #[test]
    fn a_rollback_keeps_the_commit_facts_it_was_queued_with() {
        let commit = |seq| DeployEvent {
            seq,
            at: 2000,
            kind: EventKind::Commit {
                commit_sha: "abc".into(),
                commit_message: "rollback to reg/ocore/i:abc".into(),
                commit_author: String::new(),
                ssh_host_key: None,
            },
        };
        let mut d = queued("r1");
        d.commit_message = Some("first version".into());
        d.commit_author = Some("Ann".into());
        d.rollback = Some(RollbackTarget {
            deployment_id: None,
            snapshot_id: "s".into(),
            image_ref: "reg/ocore/i:abc".into(),
            commit_sha: Some("abc".into()),
        });
        assert!(d.apply(&commit(1)));
        assert_eq!(d.commit_message.as_deref(), Some("first version"));
        assert_eq!(d.commit_author.as_deref(), Some("Ann"));
        // A deploy takes what the agent resolved.
        let mut d = queued("d1");
        assert!(d.apply(&commit(1)));
        assert_eq!(
            d.commit_message.as_deref(),
            Some("rollback to reg/ocore/i:abc")
        );
    }

    #[test]
    fn events_fold_into_the_record_once() {
        let mut d = queued("d1");
        assert!(d.apply(&step(1, 2000, "Pre-deploy Snapshot", StepStatus::Running)));
        assert_eq!(d.status, DeploymentStatus::Running);
        assert_eq!(d.started_at, Some(2000));
        assert!(d.apply(&DeployEvent {
            seq: 2,
            at: 2100,
            kind: EventKind::Snapshot {
                snapshot_id: "snap-1".into(),
                size_bytes: 10
            }
        }));
        assert!(d.apply(&step(3, 2500, "Pre-deploy Snapshot", StepStatus::Completed)));
        assert_eq!(d.steps[0].duration_ms, Some(500));
        assert_eq!(d.snapshot_id.as_deref(), Some("snap-1"));
        // A replayed event changes nothing.
        assert!(!d.apply(&step(3, 9999, "Pre-deploy Snapshot", StepStatus::Failed)));
        assert_eq!(d.steps[0].status, StepStatus::Completed);
        assert!(d.apply(&step(4, 2600, "Clone Repository", StepStatus::Running)));
        assert!(d.apply(&DeployEvent {
            seq: 5,
            at: 3000,
            kind: EventKind::Finished {
                status: DeploymentStatus::Failed,
                message: Some("Clone Repository failed: no such branch".into()),
                active_color: Some(Color::Blue),
                duration_ms: Some(1000),
                by_coordinator: false,
            }
        }));
        assert_eq!(d.status, DeploymentStatus::Failed);
        assert_eq!(d.duration_ms, Some(1000));
        assert_eq!(d.finished_at, Some(3000));
        assert_eq!(d.steps[1].status, StepStatus::Failed, "running step failed");
        assert_eq!(
            d.steps[2].status,
            StepStatus::Skipped,
            "pending step skipped"
        );
        assert_eq!(d.last_seq, 5);
    }

    #[test]
    fn unknown_steps_are_appended_and_closing_event_follows_the_log() {
        let mut d = queued("d1");
        d.steps.clear();
        d.apply(&step(1, 10, "Restore Snapshot", StepStatus::Running));
        assert_eq!(d.steps.len(), 1);
        let close = d.closing_event(DeploymentStatus::Cancelled, "cancelled".into(), 20);
        assert_eq!(close.seq, 2);
        d.apply(&close);
        assert_eq!(d.status, DeploymentStatus::Cancelled);
        assert_eq!(d.status_reason.as_deref(), Some("cancelled"));
    }
}
