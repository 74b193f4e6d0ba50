//! One deployment's event log: step transitions, log lines and milestones, numbered by the
//! agent with a dense `seq` starting at 1. The coordinator appends its own closing
//! `finished` event only when the agent never ran the deployment (cancelled while queued,
//! refused, or lost), so the log always ends with exactly one `finished` event.

use serde::{Deserialize, Serialize};

use super::{Color, DeploymentStatus, StepStatus};

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct DeployEvent {
    pub seq: u64,
    /// Unix milliseconds, as the agent stamped it.
    pub at: i64,
    #[serde(flatten)]
    pub kind: EventKind,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(tag = "type", rename_all = "camelCase")]
pub enum EventKind {
    #[serde(rename_all = "camelCase")]
    Step {
        name: String,
        status: StepStatus,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        started_at: Option<i64>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        completed_at: Option<i64>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        duration_ms: Option<u64>,
        /// Why a step failed or was skipped.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        message: Option<String>,
    },
    #[serde(rename_all = "camelCase")]
    Log { step: String, line: String },
    #[serde(rename_all = "camelCase")]
    Commit {
        commit_sha: String,
        commit_message: String,
        commit_author: String,
        /// The SSH host key the remote presented (public; pinned for the project on first
        /// use). Absent for other transports.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        ssh_host_key: Option<String>,
    },
    #[serde(rename_all = "camelCase")]
    Plan {
        modules_to_update: Vec<String>,
        maintenance_window: bool,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        target_color: Option<Color>,
        /// The deployment creates the database (`odoo -i base`) before any colour starts.
        #[serde(default)]
        initialize_database: bool,
        /// With Odoo's demo data (only when the instance asks for it).
        #[serde(default)]
        demo_data: bool,
        /// Language the new database gets.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        language: Option<String>,
        /// Why each module is in the plan.
        #[serde(default)]
        modules: Vec<crate::domain::PlanModule>,
    },
    #[serde(rename_all = "camelCase")]
    Snapshot {
        snapshot_id: String,
        size_bytes: u64,
    },
    #[serde(rename_all = "camelCase")]
    Image { image_ref: String, digest: String },
    #[serde(rename_all = "camelCase")]
    Finished {
        status: DeploymentStatus,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        message: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        active_color: Option<Color>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        duration_ms: Option<u64>,
        /// True when the coordinator closed the log itself (the agent never ran it).
        #[serde(default)]
        by_coordinator: bool,
    },
}

impl EventKind {
    /// The SSE event name.
    pub fn name(&self) -> &'static str {
        match self {
            EventKind::Step { .. } => "step",
            EventKind::Log { .. } => "log",
            EventKind::Commit { .. } => "commit",
            EventKind::Plan { .. } => "plan",
            EventKind::Snapshot { .. } => "snapshot",
            EventKind::Image { .. } => "image",
            EventKind::Finished { .. } => "finished",
        }
    }

    pub fn is_finished(&self) -> bool {
        matches!(self, EventKind::Finished { .. })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_serialize_flat_and_camel_case() -> Result<(), serde_json::Error> {
        let e = DeployEvent {
            seq: 3,
            at: 5,
            kind: EventKind::Step {
                name: "Build Image".into(),
                status: StepStatus::Running,
                started_at: Some(5),
                completed_at: None,
                duration_ms: None,
                message: None,
            },
        };
        let v = serde_json::to_value(&e)?;
        assert_eq!(v["type"], "step");
        assert_eq!(v["seq"], 3);
        assert_eq!(v["startedAt"], 5);
        assert_eq!(v["status"], "running");
        let back: DeployEvent = serde_json::from_value(v)?;
        assert_eq!(back, e);
        Ok(())
    }
}
