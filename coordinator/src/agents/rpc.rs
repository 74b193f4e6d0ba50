//! The coordinator's gRPC edge for deployments, rollbacks, snapshots and instance status:
//! domain commands in, protobuf on the wire, domain events and typed errors out. Nothing
//! else in the coordinator sees these protobuf messages.

use std::pin::Pin;

use futures_util::{Stream, StreamExt};
use ocore_proto::v1;

use super::{describe, AgentCallError, AgentHub, Refusal};
use crate::credentials::{RepoAccess, RepoSecret};
use crate::domain::{
    Color, DeployEvent, DeploymentStatus, EventKind, GitRef, Snapshot, SnapshotEstimate,
    SnapshotKind, SnapshotSettings, SnapshotState, StepStatus,
};

/// A stream of a deployment's events as the agent sends them.
pub type EventStream = Pin<Box<dyn Stream<Item = Result<DeployEvent, AgentCallError>> + Send>>;

/// Progress of a snapshot being taken.
#[derive(Debug, Clone)]
pub enum SnapshotProgress {
    Log(String),
    Progress {
        phase: String,
        done: u64,
        total: u64,
    },
    Done(Snapshot),
}

pub type SnapshotStream =
    Pin<Box<dyn Stream<Item = Result<SnapshotProgress, AgentCallError>> + Send>>;

/// The bytes of an archive, as they stream from an agent.
pub type ByteStream = Pin<Box<dyn Stream<Item = Result<Vec<u8>, AgentCallError>> + Send>>;

/// The portable archive formats of a snapshot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ArchiveFormat {
    /// `.tar.zst`: manifest, dump and filestore, for `import` on any oCore agent.
    TarZst,
    /// Odoo's own backup zip (`dump.sql`, `filestore/`, `manifest.json`).
    OdooZip,
}

/// What reading a snapshot back found: every part matched its manifest.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SnapshotVerification {
    pub parts: u64,
    pub blobs: u64,
    pub bytes: u64,
}

/// What the agent needs to run a deployment.
#[derive(Debug, Clone)]
pub struct DeployCommand {
    pub deployment_id: String,
    /// The instance id as declared on the agent.
    pub agent_instance_id: String,
    pub project_id: String,
    pub repository_url: String,
    pub addons_subpath: String,
    pub reference: GitRef,
    pub snapshot_id: String,
    pub from_seq: u64,
    /// Repository access, opened for this request only (its `Debug` hides the secret).
    pub access: Option<RepoAccess>,
}

#[derive(Debug, Clone)]
pub struct RollbackCommand {
    pub deployment_id: String,
    pub agent_instance_id: String,
    pub snapshot_id: String,
    pub image_ref: String,
    pub commit_sha: String,
    /// The commit's message and author, so the agent's commit event shows them.
    pub commit_message: String,
    pub commit_author: String,
    pub from_seq: u64,
}

/// The one mapping of a gRPC status to a call error. Transport-level failures are
/// `Failed` (retry later); answers of the agent itself are `Refused`.
pub(super) fn call_error(name: &str, status: &tonic::Status) -> AgentCallError {
    use tonic::Code;
    let reason = match status.code() {
        Code::Unavailable if super::connect::never_connected(status) => {
            return AgentCallError::NotConnected {
                name: name.to_owned(),
                message: describe(status),
            }
        }
        Code::Unavailable | Code::DeadlineExceeded | Code::Cancelled | Code::Unknown => {
            return AgentCallError::Failed {
                name: name.to_owned(),
                message: describe(status),
            }
        }
        Code::NotFound => Refusal::NotFound,
        Code::InvalidArgument | Code::OutOfRange => Refusal::Invalid,
        Code::FailedPrecondition | Code::AlreadyExists | Code::Aborted => Refusal::Conflict,
        Code::Unimplemented => Refusal::Unimplemented,
        Code::ResourceExhausted => Refusal::Exhausted,
        Code::DataLoss => Refusal::Corrupt,
        _ => Refusal::Internal,
    };
    AgentCallError::Refused {
        name: name.to_owned(),
        reason,
        message: status.message().to_owned(),
    }
}

fn opt_ms(ms: i64) -> Option<i64> {
    (ms > 0).then_some(ms)
}

fn opt_text(s: String) -> Option<String> {
    (!s.is_empty()).then_some(s)
}

fn color(c: i32) -> Option<Color> {
    match v1::Color::try_from(c) {
        Ok(v1::Color::Blue) => Some(Color::Blue),
        Ok(v1::Color::Green) => Some(Color::Green),
        _ => None,
    }
}

fn step_status(s: i32) -> StepStatus {
    match v1::StepStatus::try_from(s) {
        Ok(v1::StepStatus::Running) => StepStatus::Running,
        Ok(v1::StepStatus::Completed) => StepStatus::Completed,
        Ok(v1::StepStatus::Failed) => StepStatus::Failed,
        Ok(v1::StepStatus::Skipped) => StepStatus::Skipped,
        _ => StepStatus::Pending,
    }
}

fn deployment_status(s: i32) -> DeploymentStatus {
    match v1::DeploymentStatus::try_from(s) {
        Ok(v1::DeploymentStatus::Queued) => DeploymentStatus::Queued,
        Ok(v1::DeploymentStatus::Running) => DeploymentStatus::Running,
        Ok(v1::DeploymentStatus::Succeeded) => DeploymentStatus::Succeeded,
        Ok(v1::DeploymentStatus::Cancelled) => DeploymentStatus::Cancelled,
        _ => DeploymentStatus::Failed,
    }
}

fn snapshot_kind(k: i32) -> SnapshotKind {
    match v1::SnapshotKind::try_from(k) {
        Ok(v1::SnapshotKind::PreDeploy) => SnapshotKind::PreDeploy,
        Ok(v1::SnapshotKind::Scheduled) => SnapshotKind::Scheduled,
        _ => SnapshotKind::Manual,
    }
}

/// Converts one wire event. Kinds this coordinator does not know still keep their place
/// in the log (as a log line), so sequence numbers stay dense.
pub(crate) fn event(e: v1::DeployEvent) -> DeployEvent {
    use v1::deploy_event::Kind;
    let kind = match e.kind {
        Some(Kind::Step(s)) => EventKind::Step {
            status: step_status(s.status),
            name: s.name,
            started_at: opt_ms(s.started_at),
            completed_at: opt_ms(s.completed_at),
            duration_ms: (s.duration_ms > 0 || s.completed_at > 0).then_some(s.duration_ms),
            message: opt_text(s.message),
        },
        Some(Kind::Log(l)) => EventKind::Log {
            step: l.step,
            line: l.line,
        },
        Some(Kind::Commit(c)) => EventKind::Commit {
            commit_sha: c.commit_sha,
            commit_message: c.commit_message,
            commit_author: c.commit_author,
            ssh_host_key: opt_text(c.ssh_host_key),
        },
        Some(Kind::Plan(p)) => EventKind::Plan {
            modules_to_update: p.modules_to_update,
            maintenance_window: p.maintenance_window,
            target_color: color(p.target_color),
            initialize_database: p.initialize_database,
            demo_data: p.demo_data,
            language: opt_text(p.language),
            modules: p
                .modules
                .into_iter()
                .map(|m| crate::domain::PlanModule {
                    name: m.name,
                    reason: m.reason,
                    detail: m.detail,
                })
                .collect(),
        },
        Some(Kind::Snapshot(s)) => EventKind::Snapshot {
            snapshot_id: s.snapshot_id,
            size_bytes: s.size_bytes,
        },
        Some(Kind::Image(i)) => EventKind::Image {
            image_ref: i.image_ref,
            digest: i.digest,
        },
        Some(Kind::Finished(f)) => EventKind::Finished {
            status: deployment_status(f.status),
            message: opt_text(f.message),
            active_color: color(f.active_color),
            duration_ms: Some(f.duration_ms),
            by_coordinator: false,
        },
        None => EventKind::Log {
            step: String::new(),
            line: "(an event of a kind this coordinator does not know)".to_owned(),
        },
    };
    DeployEvent {
        seq: e.seq,
        at: e.at,
        kind,
    }
}

fn snapshot(environment_id: &str, s: v1::Snapshot) -> Snapshot {
    Snapshot {
        id: s.id,
        environment_id: environment_id.to_owned(),
        kind: snapshot_kind(s.kind),
        state: SnapshotState::Ready,
        pinned: s.pinned,
        size_bytes: s.size_bytes,
        created_at: s.created_at,
        deployment_id: opt_text(s.deployment_id),
        commit_sha: opt_text(s.commit_sha),
        error: None,
        imported_at: (s.imported_at > 0).then_some(s.imported_at),
        original_id: opt_text(s.original_id),
    }
}

/// The one conversion of repository access to the wire; it travels only over mTLS.
fn credentials(access: &RepoAccess) -> v1::Credentials {
    use v1::credentials::Kind;
    v1::Credentials {
        kind: access.secret.as_ref().map(|s| match s {
            RepoSecret::SshKey {
                private_key_openssh,
            } => Kind::SshKey(v1::SshKey {
                private_key_openssh: private_key_openssh.clone(),
            }),
            RepoSecret::HttpsToken { username, token } => Kind::HttpsToken(v1::HttpsToken {
                username: username.clone(),
                token: token.clone(),
            }),
        }),
        known_host_key: access.known_host_key.clone().unwrap_or_default(),
    }
}

fn event_stream(name: &str, stream: tonic::Streaming<v1::DeployEvent>) -> EventStream {
    let name = name.to_owned();
    Box::pin(stream.map(move |item| item.map(event).map_err(|s| call_error(&name, &s))))
}

impl AgentHub {
    fn rpc_client(&self, agent: &str) -> Result<super::Client, AgentCallError> {
        self.client(agent)
    }

    /// Starts (or, the deployment id being known to the agent, re-attaches to) a deployment.
    pub async fn deploy(
        &self,
        agent: &str,
        cmd: &DeployCommand,
    ) -> Result<EventStream, AgentCallError> {
        let request = v1::DeployRequest {
            deployment_id: cmd.deployment_id.clone(),
            instance_id: cmd.agent_instance_id.clone(),
            repository: Some(v1::Repository {
                url: cmd.repository_url.clone(),
                addons_subpath: cmd.addons_subpath.clone(),
                credentials: cmd.access.as_ref().map(credentials),
                project_id: cmd.project_id.clone(),
            }),
            reference: Some(v1::GitReference {
                branch: cmd.reference.branch.clone().unwrap_or_default(),
                commit_sha: cmd.reference.commit_sha.clone().unwrap_or_default(),
                tag: cmd.reference.tag.clone().unwrap_or_default(),
            }),
            from_seq: cmd.from_seq,
            snapshot_id: cmd.snapshot_id.clone(),
        };
        let stream = self
            .rpc_client(agent)?
            .deploy(request)
            .await
            .map_err(|s| call_error(agent, &s))?
            .into_inner();
        Ok(event_stream(agent, stream))
    }

    pub async fn rollback(
        &self,
        agent: &str,
        cmd: &RollbackCommand,
    ) -> Result<EventStream, AgentCallError> {
        let request = v1::RollbackRequest {
            deployment_id: cmd.deployment_id.clone(),
            instance_id: cmd.agent_instance_id.clone(),
            snapshot_id: cmd.snapshot_id.clone(),
            image_ref: cmd.image_ref.clone(),
            commit_sha: cmd.commit_sha.clone(),
            from_seq: cmd.from_seq,
            commit_message: cmd.commit_message.clone(),
            commit_author: cmd.commit_author.clone(),
        };
        let stream = self
            .rpc_client(agent)?
            .rollback(request)
            .await
            .map_err(|s| call_error(agent, &s))?
            .into_inner();
        Ok(event_stream(agent, stream))
    }

    /// Re-attaches to a deployment the agent knows, from `from_seq` on.
    pub async fn attach(
        &self,
        agent: &str,
        deployment_id: &str,
        from_seq: u64,
    ) -> Result<EventStream, AgentCallError> {
        let stream = self
            .rpc_client(agent)?
            .attach(v1::AttachRequest {
                deployment_id: deployment_id.to_owned(),
                from_seq,
            })
            .await
            .map_err(|s| call_error(agent, &s))?
            .into_inner();
        Ok(event_stream(agent, stream))
    }

    /// Asks the agent to cancel a running deployment; false when it had already finished.
    pub async fn cancel(
        &self,
        agent: &str,
        deployment_id: &str,
        reason: &str,
    ) -> Result<bool, AgentCallError> {
        let answer = self
            .rpc_client(agent)?
            .cancel(v1::CancelRequest {
                deployment_id: deployment_id.to_owned(),
                reason: reason.to_owned(),
            })
            .await
            .map_err(|s| call_error(agent, &s))?;
        Ok(answer.into_inner().cancelled)
    }

    /// The colour serving the instance, as the agent sees it now.
    pub async fn active_color(
        &self,
        agent: &str,
        agent_instance_id: &str,
    ) -> Result<Option<Color>, AgentCallError> {
        let status = self
            .rpc_client(agent)?
            .get_instance_status(v1::InstanceStatusRequest {
                instance_id: agent_instance_id.to_owned(),
            })
            .await
            .map_err(|s| call_error(agent, &s))?;
        Ok(color(status.into_inner().active_color))
    }

    pub async fn list_snapshots(
        &self,
        agent: &str,
        agent_instance_id: &str,
        environment_id: &str,
    ) -> Result<Vec<Snapshot>, AgentCallError> {
        let answer = self
            .rpc_client(agent)?
            .list_snapshots(v1::ListSnapshotsRequest {
                instance_id: agent_instance_id.to_owned(),
            })
            .await
            .map_err(|s| call_error(agent, &s))?;
        Ok(answer
            .into_inner()
            .snapshots
            .into_iter()
            .map(|s| snapshot(environment_id, s))
            .collect())
    }

    /// Takes a manual snapshot with the id the coordinator chose.
    pub async fn create_snapshot(
        &self,
        agent: &str,
        agent_instance_id: &str,
        environment_id: &str,
        snapshot_id: &str,
    ) -> Result<SnapshotStream, AgentCallError> {
        use v1::snapshot_event::Kind;
        let stream = self
            .rpc_client(agent)?
            .create_snapshot(v1::CreateSnapshotRequest {
                snapshot_id: snapshot_id.to_owned(),
                instance_id: agent_instance_id.to_owned(),
                kind: v1::SnapshotKind::Manual as i32,
                deployment_id: String::new(),
                commit_sha: String::new(),
            })
            .await
            .map_err(|s| call_error(agent, &s))?
            .into_inner();
        let name = agent.to_owned();
        let environment = environment_id.to_owned();
        Ok(Box::pin(stream.map(move |item| {
            let e = item.map_err(|s| call_error(&name, &s))?;
            Ok(match e.kind {
                Some(Kind::Log(l)) => SnapshotProgress::Log(l.line),
                Some(Kind::Progress(p)) => SnapshotProgress::Progress {
                    phase: p.phase,
                    done: p.done,
                    total: p.total,
                },
                Some(Kind::Done(s)) => SnapshotProgress::Done(snapshot(&environment, s)),
                None => SnapshotProgress::Log(String::new()),
            })
        })))
    }

    pub async fn pin_snapshot(
        &self,
        agent: &str,
        agent_instance_id: &str,
        environment_id: &str,
        snapshot_id: &str,
        pinned: bool,
    ) -> Result<Snapshot, AgentCallError> {
        let answer = self
            .rpc_client(agent)?
            .pin_snapshot(v1::PinSnapshotRequest {
                instance_id: agent_instance_id.to_owned(),
                snapshot_id: snapshot_id.to_owned(),
                pinned,
            })
            .await
            .map_err(|s| call_error(agent, &s))?;
        Ok(snapshot(environment_id, answer.into_inner()))
    }

    /// Deletes a snapshot; returns the bytes freed.
    pub async fn delete_snapshot(
        &self,
        agent: &str,
        agent_instance_id: &str,
        snapshot_id: &str,
    ) -> Result<u64, AgentCallError> {
        let answer = self
            .rpc_client(agent)?
            .delete_snapshot(v1::DeleteSnapshotRequest {
                instance_id: agent_instance_id.to_owned(),
                snapshot_id: snapshot_id.to_owned(),
            })
            .await
            .map_err(|s| call_error(agent, &s))?;
        Ok(answer.into_inner().freed_bytes)
    }

    pub async fn estimate_snapshot(
        &self,
        agent: &str,
        agent_instance_id: &str,
    ) -> Result<SnapshotEstimate, AgentCallError> {
        let e = self
            .rpc_client(agent)?
            .estimate_snapshot(v1::EstimateSnapshotRequest {
                instance_id: agent_instance_id.to_owned(),
            })
            .await
            .map_err(|s| call_error(agent, &s))?
            .into_inner();
        Ok(SnapshotEstimate {
            database_bytes: e.database_bytes,
            new_filestore_bytes: e.new_filestore_bytes,
            compression_ratio: e.compression_ratio,
            estimated_bytes: e.estimated_bytes,
            free_disk_bytes: e.free_disk_bytes,
        })
    }

    /// Applies the retention policy now; returns the deleted snapshot ids and bytes freed.
    pub async fn apply_retention(
        &self,
        agent: &str,
        agent_instance_id: &str,
        settings: SnapshotSettings,
    ) -> Result<(Vec<String>, u64), AgentCallError> {
        let answer = self
            .rpc_client(agent)?
            .apply_retention(v1::ApplyRetentionRequest {
                instance_id: agent_instance_id.to_owned(),
                policy: Some(v1::RetentionPolicy {
                    keep_last: settings.keep_last,
                    keep_days: settings.keep_days,
                }),
            })
            .await
            .map_err(|s| call_error(agent, &s))?
            .into_inner();
        Ok((answer.deleted_snapshot_ids, answer.freed_bytes))
    }
}

impl AgentHub {
    /// Starts an export; answers once the agent has written and verified the archive, with
    /// its size and its bytes. A missing or corrupt snapshot is an error here, before any
    /// byte is streamed.
    pub async fn export_snapshot(
        &self,
        agent: &str,
        agent_instance_id: &str,
        snapshot_id: &str,
        format: ArchiveFormat,
    ) -> Result<(u64, ByteStream), AgentCallError> {
        let format = match format {
            ArchiveFormat::TarZst => v1::ExportFormat::TarZst,
            ArchiveFormat::OdooZip => v1::ExportFormat::OdooZip,
        };
        let mut stream = self
            .rpc_client(agent)?
            .export_snapshot(v1::ExportSnapshotRequest {
                instance_id: agent_instance_id.to_owned(),
                snapshot_id: snapshot_id.to_owned(),
                format: format as i32,
            })
            .await
            .map_err(|s| call_error(agent, &s))?
            .into_inner();
        let first = stream.message().await.map_err(|s| call_error(agent, &s))?;
        let Some(first) = first else {
            return Err(AgentCallError::Failed {
                name: agent.to_owned(),
                message: "the export stream ended before its first chunk".to_owned(),
            });
        };
        let total = first.total_bytes;
        let name = agent.to_owned();
        let rest = stream.map(move |item| item.map(|c| c.data).map_err(|s| call_error(&name, &s)));
        let head = futures_util::stream::once(async move { Ok(first.data) });
        Ok((total, Box::pin(head.chain(rest))))
    }

    /// Reads every part of a snapshot back on the agent. A corrupt snapshot is
    /// `Refused { reason: Corrupt }`.
    pub async fn verify_snapshot(
        &self,
        agent: &str,
        agent_instance_id: &str,
        snapshot_id: &str,
    ) -> Result<SnapshotVerification, AgentCallError> {
        use v1::verify_snapshot_event::Kind;
        let mut stream = self
            .rpc_client(agent)?
            .verify_snapshot(v1::VerifySnapshotRequest {
                instance_id: agent_instance_id.to_owned(),
                snapshot_id: snapshot_id.to_owned(),
            })
            .await
            .map_err(|s| call_error(agent, &s))?
            .into_inner();
        while let Some(event) = stream.message().await.map_err(|s| call_error(agent, &s))? {
            if let Some(Kind::Verified(v)) = event.kind {
                return Ok(SnapshotVerification {
                    parts: v.parts,
                    blobs: v.blobs,
                    bytes: v.bytes,
                });
            }
        }
        Err(AgentCallError::Failed {
            name: agent.to_owned(),
            message: "the verification stream ended without a result".to_owned(),
        })
    }

    /// Sends an archive to the agent as snapshot `snapshot_id` of the instance and waits
    /// for the import. `data` is forwarded as it comes (never gathered in memory); a
    /// caller that must abort drops this future, which cancels the call, so the agent
    /// never imports a truncated upload.
    pub async fn import_snapshot(
        &self,
        agent: &str,
        agent_instance_id: &str,
        environment_id: &str,
        snapshot_id: &str,
        data: impl Stream<Item = Vec<u8>> + Send + 'static,
    ) -> Result<Snapshot, AgentCallError> {
        use v1::snapshot_event::Kind;
        let head = v1::ImportChunk {
            instance_id: agent_instance_id.to_owned(),
            snapshot_id: snapshot_id.to_owned(),
            data: Vec::new(),
        };
        let chunks = futures_util::stream::once(async move { head }).chain(data.map(|data| {
            v1::ImportChunk {
                data,
                ..Default::default()
            }
        }));
        let mut stream = self
            .rpc_client(agent)?
            .import_snapshot(chunks)
            .await
            .map_err(|s| call_error(agent, &s))?
            .into_inner();
        while let Some(event) = stream.message().await.map_err(|s| call_error(agent, &s))? {
            if let Some(Kind::Done(s)) = event.kind {
                return Ok(snapshot(environment_id, s));
            }
        }
        Err(AgentCallError::Failed {
            name: agent.to_owned(),
            message: "the import stream ended without a result".to_owned(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wire_events_convert_and_unknown_kinds_keep_their_seq() {
        let e = event(v1::DeployEvent {
            seq: 4,
            at: 10,
            kind: Some(v1::deploy_event::Kind::Finished(v1::DeploymentFinished {
                status: v1::DeploymentStatus::Succeeded as i32,
                message: String::new(),
                active_color: v1::Color::Green as i32,
                duration_ms: 7,
            })),
        });
        assert_eq!(e.seq, 4);
        assert_eq!(
            e.kind,
            EventKind::Finished {
                status: DeploymentStatus::Succeeded,
                message: None,
                active_color: Some(Color::Green),
                duration_ms: Some(7),
                by_coordinator: false
            }
        );
        let unknown = event(v1::DeployEvent {
            seq: 5,
            at: 11,
            kind: None,
        });
        assert_eq!(unknown.seq, 5);
        assert!(matches!(unknown.kind, EventKind::Log { .. }));
    }

    #[test]
    fn transport_failures_are_retryable_and_answers_are_refusals() {
        let e = call_error("web1", &tonic::Status::unavailable("connection refused"));
        assert!(matches!(e, AgentCallError::Failed { .. }));
        let e = call_error("web1", &tonic::Status::unimplemented("not yet"));
        assert!(matches!(
            e,
            AgentCallError::Refused {
                reason: Refusal::Unimplemented,
                ..
            }
        ));
        let e = call_error("web1", &tonic::Status::not_found("no such deployment"));
        assert!(e.to_string().contains("no such deployment"), "{e}");
    }
}
