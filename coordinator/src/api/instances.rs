//! Instances: the blue/green pair serving an environment, bound to an instance declared
//! on one agent. Admin to create, change and delete; readable with any permission on the
//! project.

use axum::extract::State;
use axum::http::{Method, StatusCode};
use axum::routing::{delete, get, patch, post};
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};

use super::{endpoint, Admin, ApiError, Auth, Body, Endpoint, PathParam, QueryParams, SharedState};
use crate::domain::{now_ms, rfc3339_ms, shorten, validate_slug, Instance};

pub fn endpoints() -> Vec<Endpoint> {
    vec![
        endpoint(Method::GET, "/api/instances", get(list)),
        endpoint(Method::POST, "/api/instances", post(create)),
        endpoint(Method::GET, "/api/instances/{instanceId}", get(show)),
        endpoint(Method::PATCH, "/api/instances/{instanceId}", patch(update)),
        endpoint(
            Method::DELETE,
            "/api/instances/{instanceId}",
            delete(remove),
        ),
    ]
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct CreateInstance {
    id: String,
    environment_id: String,
    agent: String,
    agent_instance_id: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct UpdateInstance {
    agent: Option<String>,
    agent_instance_id: Option<String>,
}

pub fn view(i: &Instance) -> Value {
    json!({
        "id": i.id,
        "projectId": i.project_id,
        "environmentId": i.environment_id,
        "agent": i.agent,
        "agentInstanceId": i.agent_instance_id,
        "activeColor": i.active_color,
        "activeColorAt": i.active_color_at.map(rfc3339_ms),
        "createdAt": rfc3339_ms(i.created_at),
        "updatedAt": rfc3339_ms(i.updated_at),
    })
}

/// The agent must be registered and, once it has reported its configuration, declare the
/// instance: the coordinator can only name instances the agent itself declares.
fn check_binding(state: &SharedState, agent: &str, agent_instance: &str) -> Result<(), ApiError> {
    if agent_instance.is_empty()
        || agent_instance.chars().count() > 100
        || agent_instance.chars().any(char::is_control)
    {
        return Err(ApiError::bad_request(
            "agentInstanceId must be 1 to 100 characters without control characters",
        ));
    }
    let record = state.store.agent(agent)?.ok_or_else(|| {
        ApiError::not_found(format!("agent {:?} is not registered", shorten(agent)))
    })?;
    if !record.instances.is_empty() && !record.instances.iter().any(|i| i.id == agent_instance) {
        let declared: Vec<&str> = record.instances.iter().map(|i| i.id.as_str()).collect();
        return Err(ApiError::conflict(format!(
            "agent {agent} does not declare instance {:?}; it declares: {}",
            shorten(agent_instance),
            declared.join(", ")
        )));
    }
    Ok(())
}

async fn list(
    State(state): State<SharedState>,
    Auth(p): Auth,
    q: QueryParams,
) -> Result<Json<Value>, ApiError> {
    q.only(&["projectId", "environmentId"])?;
    let env = q.0.get("environmentId");
    let list: Vec<Value> = state
        .store
        .instances(q.0.get("projectId").map(String::as_str))?
        .iter()
        .filter(|i| p.sees(&i.project_id) && env.is_none_or(|e| *e == i.environment_id))
        .map(view)
        .collect();
    Ok(Json(json!({"total": list.len(), "instances": list})))
}

async fn create(
    State(state): State<SharedState>,
    Admin(_): Admin,
    Body(body): Body<CreateInstance>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    validate_slug("instance id", &body.id)?;
    let environment = state
        .store
        .environment(&body.environment_id)?
        .ok_or_else(|| {
            ApiError::not_found(format!(
                "environment {} not found",
                shorten(&body.environment_id)
            ))
        })?;
    check_binding(&state, &body.agent, &body.agent_instance_id)?;
    let now = now_ms();
    let instance = Instance {
        id: body.id,
        project_id: environment.project_id,
        environment_id: environment.id,
        agent: body.agent,
        agent_instance_id: body.agent_instance_id,
        active_color: None,
        active_color_at: None,
        created_at: now,
        updated_at: now,
    };
    state.store.insert_instance(&instance)?;
    tracing::info!(instance = %instance.id, agent = %instance.agent, "instance created");
    Ok((StatusCode::CREATED, Json(view(&instance))))
}

async fn show(
    State(state): State<SharedState>,
    Auth(p): Auth,
    PathParam(id): PathParam<String>,
) -> Result<Json<Value>, ApiError> {
    match state.store.instance(&id)? {
        Some(i) if p.sees(&i.project_id) => Ok(Json(view(&i))),
        None if p.admin => Err(ApiError::not_found(format!("instance {id} not found"))),
        _ => Err(ApiError::forbidden(format!(
            "this token has no permission on the project of instance {id} (or it does not exist)"
        ))),
    }
}

async fn update(
    State(state): State<SharedState>,
    Admin(_): Admin,
    PathParam(id): PathParam<String>,
    Body(body): Body<UpdateInstance>,
) -> Result<Json<Value>, ApiError> {
    let current = state
        .store
        .instance(&id)?
        .ok_or_else(|| ApiError::not_found(format!("instance {id} not found")))?;
    let agent = body.agent.clone().unwrap_or(current.agent);
    let agent_instance = body
        .agent_instance_id
        .clone()
        .unwrap_or(current.agent_instance_id);
    check_binding(&state, &agent, &agent_instance)?;
    let clash = state
        .store
        .instances(None)?
        .into_iter()
        .find(|i| i.id != id && i.agent == agent && i.agent_instance_id == agent_instance);
    if let Some(other) = clash {
        return Err(ApiError::conflict(format!(
            "agent {agent} instance {agent_instance} is already bound to instance {}",
            other.id
        )));
    }
    let instance = state.store.update_instance(&id, &mut |i| {
        i.agent.clone_from(&agent);
        i.agent_instance_id.clone_from(&agent_instance);
        i.updated_at = now_ms();
        Ok(())
    })?;
    Ok(Json(view(&instance)))
}

async fn remove(
    State(state): State<SharedState>,
    Admin(_): Admin,
    PathParam(id): PathParam<String>,
) -> Result<StatusCode, ApiError> {
    state.store.delete_instance(&id)?;
    tracing::info!(instance = %id, "instance deleted");
    Ok(StatusCode::NO_CONTENT)
}
