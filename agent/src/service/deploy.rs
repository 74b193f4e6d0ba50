//! Deployment RPCs (Deploy, Attach, Cancel, Rollback, instance status): protobuf in,
//! validated orders to `crate::pipeline`, pipeline events out as protobuf.

use ocore_proto::v1;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Response, Status};

use crate::git::{validate_reference, GitAuth, Reference};
use crate::journal::{JournalError, RunStatus};
use crate::pipeline::events::{Event, EventKind, StepStatus};
use crate::pipeline::{DeployOrder, PipelineError, RollbackOrder};
use crate::traffic::Color;

use super::{AgentService, EventStream};

/// Ids coming from the coordinator name directories and containers: keep them plain.
pub(super) fn check_id(what: &str, id: &str) -> Result<(), Status> {
    let ok = !id.is_empty()
        && id.len() <= 64
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        && id.as_bytes()[0].is_ascii_alphanumeric();
    if ok {
        Ok(())
    } else {
        Err(Status::invalid_argument(format!(
            "{what} must be 1-64 characters of letters, digits, '-' or '_' (got {:?})",
            id.chars().take(80).collect::<String>()
        )))
    }
}

fn pipeline_status(e: PipelineError) -> Status {
    match e {
        PipelineError::UnknownRun(_) | PipelineError::UnknownInstance(_) => {
            Status::not_found(e.to_string())
        }
        PipelineError::Conflict { .. } => Status::already_exists(e.to_string()),
        // A failed journal write stops the agent; the coordinator retries after its restart.
        PipelineError::ShuttingDown
        | PipelineError::Journal(
            JournalError::Broken | JournalError::Io(_) | JournalError::NoSpace { .. },
        ) => Status::unavailable(e.to_string()),
        PipelineError::Journal(_) => Status::internal(e.to_string()),
    }
}

fn opt(s: &str) -> Option<String> {
    let s = s.trim();
    (!s.is_empty()).then(|| s.to_owned())
}

fn color(c: Option<Color>) -> i32 {
    match c {
        Some(Color::Blue) => v1::Color::Blue as i32,
        Some(Color::Green) => v1::Color::Green as i32,
        None => v1::Color::Unspecified as i32,
    }
}

fn step_status(s: StepStatus) -> i32 {
    (match s {
        StepStatus::Pending => v1::StepStatus::Pending,
        StepStatus::Running => v1::StepStatus::Running,
        StepStatus::Completed => v1::StepStatus::Completed,
        StepStatus::Failed => v1::StepStatus::Failed,
        StepStatus::Skipped => v1::StepStatus::Skipped,
    }) as i32
}

fn run_status(s: RunStatus) -> i32 {
    (match s {
        RunStatus::Running => v1::DeploymentStatus::Running,
        RunStatus::Succeeded => v1::DeploymentStatus::Succeeded,
        RunStatus::Failed => v1::DeploymentStatus::Failed,
        RunStatus::Cancelled => v1::DeploymentStatus::Cancelled,
    }) as i32
}

/// The one conversion of pipeline events to the wire.
pub(super) fn to_proto(event: Event) -> v1::DeployEvent {
    use v1::deploy_event::Kind;
    let kind = match event.kind {
        EventKind::Step {
            name,
            status,
            started_at,
            completed_at,
            duration_ms,
            message,
        } => Kind::Step(v1::StepChanged {
            name,
            status: step_status(status),
            started_at: started_at.unwrap_or(0),
            completed_at: completed_at.unwrap_or(0),
            duration_ms: duration_ms.unwrap_or(0),
            message: message.unwrap_or_default(),
        }),
        EventKind::Log { step, line } => Kind::Log(v1::LogLine { step, line }),
        EventKind::Commit {
            sha,
            message,
            author,
            host_key,
        } => Kind::Commit(v1::CommitResolved {
            commit_sha: sha,
            commit_message: message,
            commit_author: author,
            ssh_host_key: host_key.unwrap_or_default(),
        }),
        EventKind::Plan {
            modules,
            maintenance,
            target_color,
            initialize,
            entries,
        } => Kind::Plan(v1::DeployPlan {
            modules_to_update: modules,
            maintenance_window: maintenance,
            target_color: color(Some(target_color)),
            initialize_database: initialize.is_some(),
            demo_data: initialize.as_ref().is_some_and(|i| i.demo),
            language: initialize.map(|i| i.language).unwrap_or_default(),
            modules: entries
                .into_iter()
                .map(|e| v1::PlanModule {
                    name: e.name,
                    reason: e.reason,
                    detail: e.detail,
                })
                .collect(),
        }),
        EventKind::Snapshot { id, size_bytes } => Kind::Snapshot(v1::SnapshotTaken {
            snapshot_id: id,
            size_bytes,
        }),
        EventKind::Image { image_ref, digest } => {
            Kind::Image(v1::ImagePushed { image_ref, digest })
        }
        EventKind::Finished {
            status,
            message,
            active_color,
            duration_ms,
        } => Kind::Finished(v1::DeploymentFinished {
            status: run_status(status),
            message,
            active_color: color(active_color),
            duration_ms,
        }),
    };
    v1::DeployEvent {
        seq: event.seq,
        at: event.at,
        kind: Some(kind),
    }
}

fn stream(
    svc: &AgentService,
    id: &str,
    from_seq: u64,
) -> Result<Response<EventStream<v1::DeployEvent>>, Status> {
    let mut events = svc
        .pipeline
        .subscribe(id, from_seq)
        .map_err(pipeline_status)?;
    let (tx, rx) = tokio::sync::mpsc::channel(256);
    tokio::spawn(async move {
        while let Some(event) = events.recv().await {
            if tx.send(Ok(to_proto(event))).await.is_err() {
                return;
            }
        }
    });
    Ok(Response::new(ReceiverStream::new(rx)))
}

pub(super) async fn deploy(
    svc: &AgentService,
    request: v1::DeployRequest,
) -> Result<Response<EventStream<v1::DeployEvent>>, Status> {
    check_id("deployment_id", &request.deployment_id)?;
    let repository = request
        .repository
        .ok_or_else(|| Status::invalid_argument("repository is required"))?;
    check_id("repository.project_id", &repository.project_id)?;
    let url = repository.url.trim().to_owned();
    if !crate::git::valid_url(&url) {
        return Err(Status::invalid_argument(
            "repository.url must be a Git URL (https://…, ssh://…, git@host:path, file://…) or an absolute path, without spaces or control characters",
        ));
    }
    crate::addons::validate_subpath(&repository.addons_subpath)
        .map_err(|e| Status::invalid_argument(e.to_string()))?;
    let r = request.reference.unwrap_or_default();
    let reference = Reference {
        branch: opt(&r.branch),
        commit_sha: opt(&r.commit_sha).map(|s| s.to_ascii_lowercase()),
        tag: opt(&r.tag),
    };
    validate_reference(&reference).map_err(|e| Status::invalid_argument(e.to_string()))?;
    let snapshot_id = match opt(&request.snapshot_id) {
        Some(id) => {
            check_id("snapshot_id", &id)?;
            id
        }
        None => format!("pre-{}", request.deployment_id),
    };
    let auth = match repository.credentials {
        None => GitAuth::default(),
        Some(c) => {
            use v1::credentials::Kind as Cred;
            let mut auth = GitAuth {
                known_host_key: opt(&c.known_host_key),
                ..Default::default()
            };
            match c.kind {
                Some(Cred::SshKey(k)) if !k.private_key_openssh.trim().is_empty() => {
                    auth.ssh_private_key = Some(k.private_key_openssh);
                }
                Some(Cred::HttpsToken(t)) if !t.token.is_empty() => {
                    let user = if t.username.is_empty() {
                        "x-access-token".to_owned()
                    } else {
                        t.username
                    };
                    auth.https = Some((user, t.token));
                }
                _ => {}
            }
            auth
        }
    };
    let order = DeployOrder {
        deployment_id: request.deployment_id.clone(),
        instance_id: request.instance_id.clone(),
        auth,
        project_id: repository.project_id,
        repo_url: url,
        addons_subpath: repository.addons_subpath,
        reference,
        snapshot_id,
    };
    svc.pipeline.deploy(order).map_err(pipeline_status)?;
    stream(svc, &request.deployment_id, request.from_seq)
}

pub(super) async fn attach(
    svc: &AgentService,
    request: v1::AttachRequest,
) -> Result<Response<EventStream<v1::DeployEvent>>, Status> {
    check_id("deployment_id", &request.deployment_id)?;
    stream(svc, &request.deployment_id, request.from_seq)
}

pub(super) async fn cancel(
    svc: &AgentService,
    request: v1::CancelRequest,
) -> Result<Response<v1::CancelResponse>, Status> {
    check_id("deployment_id", &request.deployment_id)?;
    let cancelled = svc.pipeline.cancel(&request.deployment_id);
    if cancelled {
        tracing::info!(deployment = %request.deployment_id, "cancel requested");
    }
    Ok(Response::new(v1::CancelResponse { cancelled }))
}

pub(super) async fn rollback(
    svc: &AgentService,
    request: v1::RollbackRequest,
) -> Result<Response<EventStream<v1::DeployEvent>>, Status> {
    check_id("deployment_id", &request.deployment_id)?;
    check_id("snapshot_id", &request.snapshot_id)?;
    let image = request.image_ref.trim();
    let expected = format!(
        "{}/ocore/{}:",
        svc.config.registry.address, request.instance_id
    );
    // Only images oCore pushed for this instance can be rolled back to.
    if !image.starts_with(&expected) || image.contains(char::is_whitespace) {
        return Err(Status::invalid_argument(format!(
            "image_ref must be an image oCore pushed for this instance ({expected}<tag>)"
        )));
    }
    if !request.commit_sha.bytes().all(|b| b.is_ascii_hexdigit()) || request.commit_sha.len() > 40 {
        return Err(Status::invalid_argument("commit_sha must be hexadecimal"));
    }
    // Shown in the event log; bounded like a commit's own.
    let bounded = |text: &str, max: usize| -> String { text.chars().take(max).collect() };
    let order = RollbackOrder {
        deployment_id: request.deployment_id.clone(),
        instance_id: request.instance_id.clone(),
        snapshot_id: request.snapshot_id,
        image_ref: image.to_owned(),
        commit_sha: request.commit_sha,
        commit_message: bounded(&request.commit_message, 64 * 1024),
        commit_author: bounded(&request.commit_author, 1024),
    };
    svc.pipeline.rollback(order).map_err(pipeline_status)?;
    stream(svc, &request.deployment_id, request.from_seq)
}

pub(super) async fn instance_status(
    svc: &AgentService,
    instance_id: String,
) -> Result<Response<v1::InstanceStatus>, Status> {
    let state = svc
        .pipeline
        .instance_state(&instance_id)
        .map_err(pipeline_status)?;
    let mut containers = Vec::new();
    for c in [Color::Blue, Color::Green] {
        let name = crate::pipeline::container_name(&instance_id, c);
        if let Ok(Some(s)) = svc.pipeline.engine().state(&name).await {
            containers.push(v1::ContainerState {
                color: color(Some(c)),
                container_id: s.id,
                image: s.image,
                running: s.running,
                commit_sha: s
                    .labels
                    .get(crate::docker::LABEL_COMMIT)
                    .cloned()
                    .unwrap_or_default(),
            });
        }
    }
    let current = svc
        .pipeline
        .running()
        .into_iter()
        .find(|(instance, _)| *instance == instance_id)
        .map(|(_, id)| id)
        .unwrap_or_default();
    Ok(Response::new(v1::InstanceStatus {
        instance_id,
        active_color: color(state.active_color),
        containers,
        current_deployment_id: current,
        deployed_commit_sha: state.commit_sha.unwrap_or_default(),
        deployed_image: state.image.unwrap_or_default(),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_plain() {
        assert!(check_id("id", "0192f3a4-dead-beef").is_ok());
        for bad in ["", "../x", "a b", "-x", "a;b", &"x".repeat(65)] {
            assert!(check_id("id", bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn events_convert_to_the_wire() {
        let e = to_proto(Event {
            seq: 3,
            at: 10,
            kind: EventKind::Finished {
                status: RunStatus::Failed,
                message: "x".into(),
                active_color: Some(Color::Green),
                duration_ms: 5,
            },
        });
        assert_eq!(e.seq, 3);
        match e.kind {
            Some(v1::deploy_event::Kind::Finished(f)) => {
                assert_eq!(f.status, v1::DeploymentStatus::Failed as i32);
                assert_eq!(f.active_color, v1::Color::Green as i32);
            }
            other => panic!("unexpected {other:?}"),
        }
    }
}
