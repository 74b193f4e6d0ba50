//! Snapshots of an environment, forwarded to the agent holding it (`manage:environments`):
//! list, take by hand, show, pin and unpin, delete, and estimate. The agent is the source
//! of truth; the coordinator caches what it learns (for rollbacks and for listing while
//! the agent is away).

use axum::extract::State;
use axum::http::{Method, StatusCode};
use axum::routing::{delete, get, post};
use axum::Json;
use futures_util::StreamExt;
use serde_json::{json, Value};

use super::environments::environment_for;
use super::{endpoint, ApiError, Auth, Endpoint, PathParam, SharedState};
use crate::agents::SnapshotProgress;
use crate::auth::{Permission, Principal};
use crate::domain::{
    now_ms, rfc3339_ms, shorten, Environment, Instance, Snapshot, SnapshotKind, SnapshotState,
};

pub fn endpoints() -> Vec<Endpoint> {
    vec![
        endpoint(
            Method::GET,
            "/api/environments/{environmentId}/snapshots",
            get(list),
        ),
        endpoint(
            Method::POST,
            "/api/environments/{environmentId}/snapshots",
            post(create),
        ),
        endpoint(
            Method::GET,
            "/api/environments/{environmentId}/snapshots/estimate",
            get(estimate),
        ),
        endpoint(
            Method::GET,
            "/api/environments/{environmentId}/snapshots/{snapshotId}",
            get(show),
        ),
        endpoint(
            Method::DELETE,
            "/api/environments/{environmentId}/snapshots/{snapshotId}",
            delete(remove),
        ),
        endpoint(
            Method::POST,
            "/api/environments/{environmentId}/snapshots/{snapshotId}/pin",
            post(pin),
        ),
        endpoint(
            Method::POST,
            "/api/environments/{environmentId}/snapshots/{snapshotId}/unpin",
            post(unpin),
        ),
    ]
}

pub fn view(s: &Snapshot) -> Value {
    json!({
        "id": s.id,
        "environmentId": s.environment_id,
        "kind": s.kind,
        "state": s.state,
        "pinned": s.pinned,
        "sizeBytes": s.size_bytes,
        "createdAt": rfc3339_ms(s.created_at),
        "deploymentId": s.deployment_id,
        "commitSha": s.commit_sha,
        "error": s.error,
        "importedAt": s.imported_at.map(rfc3339_ms),
        "originalId": s.original_id,
    })
}

/// The environment (checked for `manage:environments`) and the instance serving it.
pub(super) fn target(
    state: &SharedState,
    principal: &Principal,
    id: &str,
) -> Result<(Environment, Instance), ApiError> {
    let environment = environment_for(state, principal, Some(Permission::ManageEnvironments), id)?;
    let instance = state
        .store
        .instances(Some(&environment.project_id))?
        .into_iter()
        .find(|i| i.environment_id == environment.id)
        .ok_or_else(|| {
            ApiError::conflict(format!(
                "environment {id} has no instance; create one with `ocore instance create`"
            ))
        })?;
    Ok((environment, instance))
}

async fn list(
    State(state): State<SharedState>,
    Auth(p): Auth,
    PathParam(id): PathParam<String>,
) -> Result<Json<Value>, ApiError> {
    let (environment, instance) = target(&state, &p, &id)?;
    let cached = state.store.snapshots(&environment.id)?;
    let (mut snapshots, source, agent_error) = match state
        .hub
        .list_snapshots(
            &instance.agent,
            &instance.agent_instance_id,
            &environment.id,
        )
        .await
    {
        Ok(live) => {
            for s in &live {
                state.store.put_snapshot(s)?;
            }
            // What the agent no longer has was deleted; what it does not have yet is
            // still being taken (or failed) and stays listed.
            for c in &cached {
                let gone = c.state == SnapshotState::Ready && !live.iter().any(|s| s.id == c.id);
                if gone {
                    let mut deleted = c.clone();
                    deleted.state = SnapshotState::Deleted;
                    state.store.put_snapshot(&deleted)?;
                }
            }
            let mut all = live.clone();
            all.extend(
                cached
                    .into_iter()
                    .filter(|c| matches!(c.state, SnapshotState::Creating | SnapshotState::Failed))
                    .filter(|c| !live.iter().any(|s| s.id == c.id)),
            );
            (all, "agent", None)
        }
        Err(e) => {
            let kept = cached
                .into_iter()
                .filter(|c| c.state != SnapshotState::Deleted)
                .collect();
            (kept, "cache", Some(e.to_string()))
        }
    };
    snapshots.sort_by_key(|s| std::cmp::Reverse(s.created_at));
    let list: Vec<Value> = snapshots.iter().map(view).collect();
    Ok(Json(json!({
        "environmentId": environment.id,
        "total": list.len(),
        "snapshots": list,
        "source": source,
        "agentError": agent_error,
    })))
}

/// Starts a manual snapshot and answers 202 at once; it is taken in the background and
/// its state (`creating`, `ready`, `failed`) is shown by the snapshot's own path.
async fn create(
    State(state): State<SharedState>,
    Auth(p): Auth,
    PathParam(id): PathParam<String>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let (environment, instance) = target(&state, &p, &id)?;
    let snapshot_id = uuid::Uuid::now_v7().to_string();
    let mut stream = state
        .hub
        .create_snapshot(
            &instance.agent,
            &instance.agent_instance_id,
            &environment.id,
            &snapshot_id,
        )
        .await?;
    let mut record = Snapshot {
        id: snapshot_id.clone(),
        environment_id: environment.id.clone(),
        kind: SnapshotKind::Manual,
        state: SnapshotState::Creating,
        pinned: false,
        size_bytes: 0,
        created_at: now_ms(),
        deployment_id: None,
        commit_sha: None,
        error: None,
        imported_at: None,
        original_id: None,
    };
    state.store.put_snapshot(&record)?;
    tracing::info!(environment = %environment.id, snapshot = %snapshot_id, "manual snapshot started by {}", p.name);
    let answer = view(&record);
    let store = state.store.clone();
    let cancel = state.cancel.clone();
    let dispatcher = state.dispatcher.clone();
    state.tracker.spawn(async move {
        let outcome = loop {
            let item = tokio::select! {
                _ = cancel.cancelled() => break Err("the coordinator stopped while the snapshot was being taken".to_owned()),
                item = stream.next() => item,
            };
            match item {
                None => break Err("the agent ended the stream without a result".to_owned()),
                Some(Err(e)) => break Err(e.to_string()),
                Some(Ok(SnapshotProgress::Done(s))) => break Ok(s),
                Some(Ok(_)) => {}
            }
        };
        match outcome {
            Ok(done) => {
                record = Snapshot { state: SnapshotState::Ready, ..done };
                dispatcher.apply_retention_later(instance);
            }
            Err(why) => {
                tracing::warn!(snapshot = %record.id, "manual snapshot failed: {why}");
                record.state = SnapshotState::Failed;
                record.error = Some(why);
            }
        }
        if let Err(e) = store.put_snapshot(&record) {
            tracing::error!(snapshot = %record.id, "cannot record the snapshot: {e}");
        }
    });
    Ok((StatusCode::ACCEPTED, Json(answer)))
}

async fn show(
    State(state): State<SharedState>,
    Auth(p): Auth,
    PathParam((id, snapshot)): PathParam<(String, String)>,
) -> Result<Json<Value>, ApiError> {
    let environment = environment_for(&state, &p, Some(Permission::ManageEnvironments), &id)?;
    let s = state
        .store
        .snapshot(&environment.id, &snapshot)?
        .ok_or_else(|| ApiError::not_found(format!("snapshot {} not found", shorten(&snapshot))))?;
    Ok(Json(view(&s)))
}

async fn set_pinned(
    state: &SharedState,
    p: &Principal,
    id: &str,
    snapshot: &str,
    pinned: bool,
) -> Result<Json<Value>, ApiError> {
    let (environment, instance) = target(state, p, id)?;
    let s = state
        .hub
        .pin_snapshot(
            &instance.agent,
            &instance.agent_instance_id,
            &environment.id,
            snapshot,
            pinned,
        )
        .await?;
    state.store.put_snapshot(&s)?;
    Ok(Json(view(&s)))
}

async fn pin(
    State(state): State<SharedState>,
    Auth(p): Auth,
    PathParam((id, snapshot)): PathParam<(String, String)>,
) -> Result<Json<Value>, ApiError> {
    set_pinned(&state, &p, &id, &snapshot, true).await
}

async fn unpin(
    State(state): State<SharedState>,
    Auth(p): Auth,
    PathParam((id, snapshot)): PathParam<(String, String)>,
) -> Result<Json<Value>, ApiError> {
    set_pinned(&state, &p, &id, &snapshot, false).await
}

async fn remove(
    State(state): State<SharedState>,
    Auth(p): Auth,
    PathParam((id, snapshot)): PathParam<(String, String)>,
) -> Result<Json<Value>, ApiError> {
    let (environment, instance) = target(&state, &p, &id)?;
    let freed = state
        .hub
        .delete_snapshot(&instance.agent, &instance.agent_instance_id, &snapshot)
        .await?;
    if let Some(mut s) = state.store.snapshot(&environment.id, &snapshot)? {
        s.state = SnapshotState::Deleted;
        state.store.put_snapshot(&s)?;
    }
    Ok(Json(
        json!({"id": snapshot, "deleted": true, "freedBytes": freed}),
    ))
}

async fn estimate(
    State(state): State<SharedState>,
    Auth(p): Auth,
    PathParam(id): PathParam<String>,
) -> Result<Json<Value>, ApiError> {
    let (environment, instance) = target(&state, &p, &id)?;
    let e = state
        .hub
        .estimate_snapshot(&instance.agent, &instance.agent_instance_id)
        .await?;
    let mut v = serde_json::to_value(&e).map_err(|e| ApiError::internal(e.to_string()))?;
    v["environmentId"] = json!(environment.id);
    Ok(Json(v))
}
