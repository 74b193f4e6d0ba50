//! Deployments of a project: start one (`manage:deployments`), list the history and show
//! one (`view:deployments`), cancel (`manage:deployments`), and roll back to a deployment's
//! pre-deploy snapshot (`manage:environments`). Webhook pushes queue their deployments
//! through the same [`new_deployment`] and [`enqueue`].

use axum::extract::State;
use axum::http::{Method, StatusCode};
use axum::routing::{get, post};
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};

use super::{
    endpoint, require, ApiError, Auth, Body, Deferred, Endpoint, OptionalBody, PathParam,
    QueryParams, SharedState,
};
use crate::auth::{Permission, Principal};
use crate::domain::{
    now_ms, rfc3339_ms, shorten, Deployment, DeploymentStatus, EventKind, GitRef, Project,
    RollbackTarget, SnapshotState, Step, TriggerType, PIPELINE_STEPS,
};

/// Largest page of the history.
pub const MAX_LIMIT: usize = 100;
pub const DEFAULT_LIMIT: usize = 20;
/// Most output kept per step in a response (the newest part is kept).
const MAX_STEP_OUTPUT: usize = 1024 * 1024;

pub fn endpoints() -> Vec<Endpoint> {
    vec![
        endpoint(
            Method::POST,
            "/api/projects/{projectId}/deploy",
            post(deploy),
        ),
        endpoint(
            Method::GET,
            "/api/projects/{projectId}/deployments",
            get(list),
        ),
        endpoint(
            Method::GET,
            "/api/projects/{projectId}/deployments/{deploymentId}",
            get(show),
        ),
        endpoint(
            Method::POST,
            "/api/projects/{projectId}/deployments/{deploymentId}/cancel",
            post(cancel),
        ),
        endpoint(
            Method::POST,
            "/api/projects/{projectId}/rollback",
            post(rollback),
        ),
        endpoint(Method::GET, "/api/deployments/{deploymentId}", get(lookup)),
        endpoint(
            Method::POST,
            "/api/deployments/{deploymentId}/rollback",
            post(rollback_of),
        ),
    ]
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct DeployBody {
    branch: Option<String>,
    commit_sha: Option<String>,
    tag: Option<String>,
    instance_id: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct RollbackBody {
    deployment_id: String,
    /// Answer 200 with what the rollback would restore, and queue nothing.
    #[serde(default)]
    dry_run: bool,
}

/// `limit` (1..=100, default 20) and `offset` (default 0) of a history page.
pub fn page(q: &QueryParams) -> Result<(usize, usize), ApiError> {
    q.only(&["limit", "offset"])?;
    let number = |name: &str, default: usize| -> Result<usize, ApiError> {
        match q.0.get(name) {
            None => Ok(default),
            Some(v) => v.parse::<usize>().map_err(|_| {
                ApiError::bad_request(format!(
                    "{name} must be a non-negative integer, not {:?}",
                    shorten(v)
                ))
            }),
        }
    };
    let limit = number("limit", DEFAULT_LIMIT)?;
    if !(1..=MAX_LIMIT).contains(&limit) {
        return Err(ApiError::bad_request(format!(
            "limit must be between 1 and {MAX_LIMIT}"
        )));
    }
    let offset = number("offset", 0)?;
    if offset > 100_000_000 {
        return Err(ApiError::bad_request("offset is too large"));
    }
    Ok((offset, limit))
}

pub fn summary(d: &Deployment) -> Value {
    json!({
        "id": d.id,
        "projectId": d.project_id,
        "environmentId": d.environment_id,
        "instanceId": d.instance_id,
        "status": d.status,
        "statusReason": d.status_reason,
        "triggerType": d.trigger_type,
        "branch": d.branch,
        "tag": d.tag,
        "commitSha": d.commit_sha,
        "commitMessage": d.commit_message,
        "commitAuthor": d.commit_author,
        "snapshotId": d.snapshot_id,
        "imageRef": d.image_ref,
        "rollbackOf": d.rollback.as_ref().and_then(|r| r.deployment_id.clone()),
        "restoredSnapshotId": d.rollback.as_ref().map(|r| r.snapshot_id.clone()),
        "durationMs": d.duration_ms,
        "createdAt": rfc3339_ms(d.created_at),
        "startedAt": d.started_at.map(rfc3339_ms),
        "finishedAt": d.finished_at.map(rfc3339_ms),
        "requestedBy": d.requested_by,
        "cancelRequested": d.cancel_requested,
    })
}

/// Each step's output: its log lines from the event log, then its failure message.
fn step_outputs(state: &SharedState, d: &Deployment) -> Result<Vec<String>, ApiError> {
    let mut outputs = vec![String::new(); d.steps.len()];
    let mut after = 0;
    loop {
        let batch = state.store.events(&d.id, after, 1000)?;
        let Some(last) = batch.last() else { break };
        after = last.seq;
        for e in &batch {
            if let EventKind::Log { step, line } = &e.kind {
                if let Some(i) = d.steps.iter().position(|s| s.name == *step) {
                    let out = &mut outputs[i];
                    out.push_str(line);
                    out.push('\n');
                    if out.len() > 2 * MAX_STEP_OUTPUT {
                        let cut = out.len() - MAX_STEP_OUTPUT;
                        let cut = (cut..out.len())
                            .find(|c| out.is_char_boundary(*c))
                            .unwrap_or(0);
                        out.replace_range(..cut, "…\n");
                    }
                }
            }
        }
        if batch.len() < 1000 {
            break;
        }
    }
    for (out, step) in outputs.iter_mut().zip(&d.steps) {
        if out.len() > MAX_STEP_OUTPUT {
            let cut = out.len() - MAX_STEP_OUTPUT;
            let cut = (cut..out.len())
                .find(|c| out.is_char_boundary(*c))
                .unwrap_or(0);
            out.replace_range(..cut, "…\n");
        }
        // The closing message often repeats the step's last log line; show it once.
        if let Some(m) = &step.message {
            if out.trim_end().lines().next_back() != Some(m.trim_end()) {
                out.push_str(m);
            }
        }
    }
    Ok(outputs)
}

fn step_view(s: &Step, output: String) -> Value {
    json!({
        "name": s.name,
        "status": s.status,
        "output": output,
        "durationMs": s.duration_ms,
        "startedAt": s.started_at.map(rfc3339_ms),
        "completedAt": s.completed_at.map(rfc3339_ms),
    })
}

/// Every field of a deployment, its steps with their output, and its instance's colour.
pub fn detail(state: &SharedState, d: &Deployment) -> Result<Value, ApiError> {
    let outputs = step_outputs(state, d)?;
    let mut v = summary(d);
    v["steps"] = d
        .steps
        .iter()
        .zip(outputs)
        .map(|(s, o)| step_view(s, o))
        .collect();
    let instance = state.store.instance(&d.instance_id)?;
    v["activeColor"] = json!(instance.and_then(|i| i.active_color));
    v["plan"] = json!(d.plan);
    if d.status == DeploymentStatus::Queued && d.status_reason.is_none() {
        let queue = state.store.instance_queue(&d.instance_id)?;
        if let Some(head) = queue.first().filter(|h| h.id != d.id) {
            let ahead = queue.iter().take_while(|q| q.id != d.id).count();
            v["statusReason"] = json!(format!(
                "waiting for {ahead} earlier deployment(s) of instance {}; {} is {}",
                d.instance_id,
                head.id,
                head.status.as_str()
            ));
        }
    }
    Ok(v)
}

fn load_project(state: &SharedState, id: &str) -> Result<Project, ApiError> {
    state
        .store
        .project(id)?
        .ok_or_else(|| ApiError::not_found(format!("project {} not found", shorten(id))))
}

/// The deployment, if it belongs to the project.
fn load_deployment(state: &SharedState, project: &str, id: &str) -> Result<Deployment, ApiError> {
    match state.store.deployment(id)? {
        Some(d) if d.project_id == project => Ok(d),
        _ => Err(ApiError::not_found(format!(
            "deployment {} not found in project {project}",
            shorten(id)
        ))),
    }
}

/// Where a branch mapping sends a ref.
pub(super) enum Mapped {
    Unmapped,
    /// Mapped to this environment, which has no instance yet.
    NoInstance(String),
    Instance(Box<crate::domain::Instance>),
}

/// The instance of the environment `name` (a branch, or a tag for webhook tag pushes) is
/// mapped to.
pub(super) fn mapped_instance(
    state: &SharedState,
    project: &str,
    name: &str,
) -> Result<Mapped, ApiError> {
    let Some(m) = state.store.mapping(project, name)? else {
        return Ok(Mapped::Unmapped);
    };
    Ok(state
        .store
        .instances(Some(project))?
        .into_iter()
        .find(|i| i.environment_id == m.environment_id)
        .map_or(Mapped::NoInstance(m.environment_id), |i| {
            Mapped::Instance(Box::new(i))
        }))
}

/// Which instance a deploy goes to: the one named; else the instance of the environment
/// the branch maps to; else the project's only instance.
fn resolve_instance(
    state: &SharedState,
    project: &str,
    instance_id: Option<&str>,
    reference: &GitRef,
) -> Result<crate::domain::Instance, ApiError> {
    if let Some(id) = instance_id {
        return match state.store.instance(id)? {
            Some(i) if i.project_id == project => Ok(i),
            _ => Err(ApiError::not_found(format!(
                "instance {} not found in project {project}",
                shorten(id)
            ))),
        };
    }
    if let Some(branch) = &reference.branch {
        match mapped_instance(state, project, branch)? {
            Mapped::Instance(i) => return Ok(*i),
            Mapped::NoInstance(environment) => {
                return Err(ApiError::conflict(format!(
                    "branch {branch} maps to environment {environment}, which has no instance yet"
                )))
            }
            Mapped::Unmapped => {}
        }
    }
    let instances = state.store.instances(Some(project))?;
    match instances.len() {
        0 => Err(ApiError::conflict(format!(
            "project {project} has no instance yet; create one with `ocore instance create`"
        ))),
        1 => Ok(instances
            .into_iter()
            .next()
            .ok_or_else(|| ApiError::internal("instance vanished"))?),
        n => {
            let ids: Vec<&str> = instances.iter().map(|i| i.id.as_str()).collect();
            Err(ApiError::conflict(format!(
                "project {project} has {n} instances ({}) and no branch mapping decides; pass instanceId",
                ids.join(", ")
            )))
        }
    }
}

/// A new queued deployment of `reference` to `instance`. Manual deploys, rollbacks and
/// webhook pushes all start here and are queued by [`enqueue`].
pub(super) fn new_deployment(
    instance: &crate::domain::Instance,
    trigger: TriggerType,
    reference: &GitRef,
    requested_by: &str,
    requested_by_token: Option<&str>,
) -> Deployment {
    Deployment {
        id: uuid::Uuid::now_v7().to_string(),
        order: 0,
        project_id: instance.project_id.clone(),
        environment_id: instance.environment_id.clone(),
        instance_id: instance.id.clone(),
        status: DeploymentStatus::Queued,
        status_reason: None,
        trigger_type: trigger,
        branch: reference.branch.clone(),
        tag: reference.tag.clone(),
        commit_sha: reference.commit_sha.clone(),
        commit_message: None,
        commit_author: None,
        snapshot_id: None,
        planned_snapshot_id: uuid::Uuid::now_v7().to_string(),
        image_ref: None,
        rollback: None,
        steps: PIPELINE_STEPS.iter().map(|s| Step::pending(s)).collect(),
        plan: None,
        active_color: None,
        duration_ms: None,
        created_at: now_ms(),
        started_at: None,
        finished_at: None,
        requested_by: requested_by.to_owned(),
        requested_by_token: requested_by_token.map(str::to_owned),
        dispatched: false,
        cancel_requested: false,
        last_seq: 0,
    }
}

async fn deploy(
    State(state): State<SharedState>,
    Auth(p): Auth,
    PathParam(project): PathParam<String>,
    body: Deferred<Body<DeployBody>>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    require(&p, Permission::ManageDeployments, &project)?;
    let Body(body) = body.get()?;
    load_project(&state, &project)?;
    let reference = GitRef::new(body.branch, body.commit_sha, body.tag)?;
    let instance = resolve_instance(&state, &project, body.instance_id.as_deref(), &reference)?;
    let d = new_deployment(
        &instance,
        TriggerType::Manual,
        &reference,
        &p.name,
        Some(&p.token_id),
    );
    let d = enqueue(&state, &d)?;
    Ok((StatusCode::ACCEPTED, Json(detail(&state, &d)?)))
}

/// Stores a new deployment at the end of its instance's queue and wakes the dispatcher;
/// returns it with its place in the queue.
pub(super) fn enqueue(state: &SharedState, d: &Deployment) -> Result<Deployment, ApiError> {
    let d = state.store.insert_deployment(d)?;
    tracing::info!(
        deployment = %d.id,
        project = %d.project_id,
        instance = %d.instance_id,
        trigger = ?d.trigger_type,
        "deployment queued"
    );
    state.dispatcher.wake();
    Ok(d)
}

async fn list(
    State(state): State<SharedState>,
    Auth(p): Auth,
    PathParam(project): PathParam<String>,
    q: QueryParams,
) -> Result<Json<Value>, ApiError> {
    require(&p, Permission::ViewDeployments, &project)?;
    let (offset, limit) = page(&q)?;
    load_project(&state, &project)?;
    let (total, page) = state.store.list_deployments(&project, offset, limit)?;
    let deployments: Vec<Value> = page.iter().map(summary).collect();
    Ok(Json(json!({
        "total": total,
        "limit": limit,
        "offset": offset,
        "deployments": deployments,
    })))
}

async fn show(
    State(state): State<SharedState>,
    Auth(p): Auth,
    PathParam((project, id)): PathParam<(String, String)>,
) -> Result<Json<Value>, ApiError> {
    let d = readable(&state, &p, &project, &id)?;
    Ok(Json(detail(&state, &d)?))
}

/// True when `p` may read deployment `d`: with `view:deployments` on its project, or as
/// the token that asked for it (a CI token holding only `manage:deployments` follows the
/// deployment it started).
pub(super) fn may_read(p: &Principal, d: &Deployment) -> bool {
    p.may(Permission::ViewDeployments, &d.project_id)
        || d.requested_by_token.as_deref() == Some(p.token_id.as_str())
}

/// Deployment `id` of `project`, if `p` may read it. A caller who may not gets 403
/// whether or not the project or the deployment exists.
pub(super) fn readable(
    state: &SharedState,
    p: &Principal,
    project: &str,
    id: &str,
) -> Result<Deployment, ApiError> {
    if p.may(Permission::ViewDeployments, project) {
        load_project(state, project)?;
        return load_deployment(state, project, id);
    }
    match state.store.deployment(id)? {
        Some(d) if d.project_id == project && may_read(p, &d) => Ok(d),
        _ => Err(ApiError::forbidden(format!(
            "this token lacks {} on project {project}",
            Permission::ViewDeployments
        ))),
    }
}

/// Finds a deployment by id alone (for clients that know only the id).
async fn lookup(
    State(state): State<SharedState>,
    Auth(p): Auth,
    PathParam(id): PathParam<String>,
) -> Result<Json<Value>, ApiError> {
    match state.store.deployment(&id)? {
        Some(d) if may_read(&p, &d) => Ok(Json(detail(&state, &d)?)),
        None if p.admin => Err(ApiError::not_found(format!("deployment {} not found", shorten(&id)))),
        _ => Err(ApiError::forbidden(format!(
            "this token lacks view:deployments on the project of deployment {} (or it does not exist)",
            shorten(&id)
        ))),
    }
}

async fn cancel(
    State(state): State<SharedState>,
    Auth(p): Auth,
    PathParam((project, id)): PathParam<(String, String)>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    require(&p, Permission::ManageDeployments, &project)?;
    load_project(&state, &project)?;
    load_deployment(&state, &project, &id)?;
    let d = state.dispatcher.cancel(&id, &p.name)?;
    let status = if d.status.is_terminal() {
        StatusCode::OK
    } else {
        StatusCode::ACCEPTED
    };
    Ok((status, Json(summary(&d))))
}

async fn rollback(
    State(state): State<SharedState>,
    Auth(p): Auth,
    PathParam(project): PathParam<String>,
    body: Deferred<Body<RollbackBody>>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    require(&p, Permission::ManageEnvironments, &project)?;
    let Body(body) = body.get()?;
    load_project(&state, &project)?;
    let target = load_deployment(&state, &project, &body.deployment_id)?;
    roll_back(&state, &p, target, body.dry_run).await
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct RollbackOfBody {
    #[serde(default)]
    dry_run: bool,
}

/// `POST /api/deployments/{id}/rollback`: the same rollback for clients that know only
/// the deployment's id (the CLI's `ocore deploy rollback --deployment ID`), with the same
/// permission, `manage:environments` on its project, and nothing else.
async fn rollback_of(
    State(state): State<SharedState>,
    Auth(p): Auth,
    PathParam(id): PathParam<String>,
    body: Deferred<OptionalBody<RollbackOfBody>>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let target = match state.store.deployment(&id)? {
        Some(d) if p.may(Permission::ManageEnvironments, &d.project_id) => d,
        None if p.admin => {
            return Err(ApiError::not_found(format!(
                "deployment {} not found",
                shorten(&id)
            )))
        }
        _ => {
            return Err(ApiError::forbidden(format!(
                "this token lacks manage:environments on the project of deployment {} (or it does not exist)",
                shorten(&id)
            )))
        }
    };
    let OptionalBody(body) = body.get()?;
    roll_back(&state, &p, target, body.dry_run).await
}

/// Plans (`dry_run`) or queues the rollback to the pre-deploy snapshot of `target`.
async fn roll_back(
    state: &SharedState,
    p: &Principal,
    target: Deployment,
    dry_run: bool,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let project = target.project_id.clone();
    let no_snapshot = |why: String| ApiError::new(StatusCode::CONFLICT, "snapshot_missing", why);
    let Some(snapshot_id) = target.snapshot_id.clone() else {
        return Err(no_snapshot(format!(
            "deployment {} has no pre-deploy snapshot to restore (it ended before the snapshot was taken)",
            target.id
        )));
    };
    if let Some(s) = state.store.snapshot(&target.environment_id, &snapshot_id)? {
        if s.state == SnapshotState::Deleted {
            return Err(no_snapshot(format!(
                "snapshot {snapshot_id} of deployment {} was deleted (by retention or by hand)",
                target.id
            )));
        }
    }
    let instance = state.store.instance(&target.instance_id)?.ok_or_else(|| {
        ApiError::conflict(format!(
            "instance {} of deployment {} no longer exists",
            target.instance_id, target.id
        ))
    })?;
    // The agent is the source of truth for snapshots: when it answers, the snapshot must
    // be among its own. When it cannot answer now, the rollback is queued and the agent
    // decides when it runs it.
    let mut known = state.store.snapshot(&target.environment_id, &snapshot_id)?;
    if let Ok(list) = state
        .hub
        .list_snapshots(
            &instance.agent,
            &instance.agent_instance_id,
            &instance.environment_id,
        )
        .await
    {
        match list.into_iter().find(|s| s.id == snapshot_id) {
            Some(s) => known = Some(s),
            None => {
                return Err(no_snapshot(format!(
                    "snapshot {snapshot_id} of deployment {} no longer exists on agent {}",
                    target.id, instance.agent
                )))
            }
        }
    }
    // The image to return to is the one that served before the target deployment.
    let (_, previous) = super::restore::serving(
        super::restore::history(state, &project),
        &target.instance_id,
        Some(super::restore::Then::Before(target.order)),
    )?;
    let previous = previous.ok_or_else(|| {
        ApiError::conflict(format!(
            "no successful deployment of instance {} before {} left an image to return to",
            target.instance_id, target.id
        ))
    })?;
    let image_ref = previous
        .served_image()
        .ok_or_else(|| ApiError::internal("the deployment returned to has no image"))?
        .to_owned();
    if dry_run {
        let snapshot = known
            .as_ref()
            .map(super::snapshots::view)
            .unwrap_or_else(|| json!({"id": snapshot_id}));
        return Ok((
            StatusCode::OK,
            Json(json!({
                "dryRun": true,
                "deploymentId": target.id,
                "projectId": target.project_id,
                "environmentId": target.environment_id,
                "instanceId": target.instance_id,
                "snapshotId": snapshot_id,
                "snapshot": snapshot,
                "imageSource": "snapshot-time",
                "returnsTo": super::restore::returns_to(&previous),
                "notes": [],
            })),
        ));
    }
    let reference = GitRef {
        branch: previous.branch.clone(),
        commit_sha: previous.commit_sha.clone(),
        tag: previous.tag.clone(),
    };
    let mut d = new_deployment(
        &instance,
        TriggerType::Rollback,
        &reference,
        &p.name,
        Some(&p.token_id),
    );
    d.steps.clear();
    d.commit_message.clone_from(&previous.commit_message);
    d.commit_author.clone_from(&previous.commit_author);
    d.image_ref = Some(image_ref.clone());
    d.rollback = Some(RollbackTarget {
        deployment_id: Some(target.id.clone()),
        snapshot_id: snapshot_id.clone(),
        image_ref,
        commit_sha: previous.commit_sha.clone(),
    });
    d.snapshot_id = None;
    let d = enqueue(state, &d)?;
    tracing::info!(deployment = %d.id, target = %target.id, "rollback queued");
    Ok((StatusCode::ACCEPTED, Json(detail(state, &d)?)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn q(pairs: &[(&str, &str)]) -> QueryParams {
        QueryParams(
            pairs
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
        )
    }

    #[test]
    fn pages_are_bounded_and_validated() {
        assert_eq!(page(&q(&[])).ok(), Some((0, 20)));
        assert_eq!(
            page(&q(&[("limit", "100"), ("offset", "40")])).ok(),
            Some((40, 100))
        );
        for bad in [
            vec![("limit", "0")],
            vec![("limit", "101")],
            vec![("limit", "-1")],
            vec![("limit", "ten")],
            vec![("offset", "-5")],
            vec![("offset", "1.5")],
            vec![("limt", "5")],
        ] {
            let err = page(&q(&bad)).expect_err("invalid");
            assert_eq!(err.status, StatusCode::BAD_REQUEST, "{bad:?}");
        }
    }
}
