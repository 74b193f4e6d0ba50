//! Environments (admin to create, change and delete; readable with any permission on the
//! project) and their snapshot retention settings (`manage:environments`).

use axum::extract::State;
use axum::http::{Method, StatusCode};
use axum::routing::{delete, get, patch, post, put};
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};

use super::{
    endpoint, require, Admin, ApiError, Auth, Body, Deferred, Endpoint, PathParam, QueryParams,
    SharedState,
};
use crate::auth::{Permission, Principal};
use crate::domain::{
    now_ms, rfc3339_ms, validate_name, validate_slug, Environment, SnapshotSettings,
};
use crate::store::StoreError;

pub fn endpoints() -> Vec<Endpoint> {
    vec![
        endpoint(Method::GET, "/api/environments", get(list)),
        endpoint(Method::POST, "/api/environments", post(create)),
        endpoint(Method::GET, "/api/environments/{environmentId}", get(show)),
        endpoint(
            Method::PATCH,
            "/api/environments/{environmentId}",
            patch(update),
        ),
        endpoint(
            Method::DELETE,
            "/api/environments/{environmentId}",
            delete(remove),
        ),
        endpoint(
            Method::GET,
            "/api/environments/{environmentId}/snapshot-settings",
            get(settings),
        ),
        endpoint(
            Method::PUT,
            "/api/environments/{environmentId}/snapshot-settings",
            put(set_settings),
        ),
    ]
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct CreateEnvironment {
    id: String,
    project_id: String,
    name: Option<String>,
    snapshot_settings: Option<SettingsBody>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct UpdateEnvironment {
    name: Option<String>,
}

#[derive(Deserialize, Clone, Copy)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct SettingsBody {
    #[serde(deserialize_with = "super::whole::int")]
    keep_last: u32,
    #[serde(deserialize_with = "super::whole::int")]
    keep_days: u32,
}

fn settings_view(s: &SnapshotSettings) -> Value {
    json!({"keepLast": s.keep_last, "keepDays": s.keep_days})
}

pub fn view(state: &SharedState, e: &Environment) -> Value {
    let branches: Vec<String> = state
        .store
        .mappings(&e.project_id)
        .unwrap_or_default()
        .into_iter()
        .filter(|m| m.environment_id == e.id)
        .map(|m| m.branch)
        .collect();
    let instance = state
        .store
        .instances(Some(&e.project_id))
        .unwrap_or_default()
        .into_iter()
        .find(|i| i.environment_id == e.id)
        .map(|i| i.id);
    json!({
        "id": e.id,
        "projectId": e.project_id,
        "name": e.name,
        "branches": branches,
        "instanceId": instance,
        "snapshotSettings": settings_view(&e.snapshot_settings),
        "createdAt": rfc3339_ms(e.created_at),
        "updatedAt": rfc3339_ms(e.updated_at),
    })
}

/// The environment, for a caller holding `permission` on its project (`None`: any
/// permission). Others get 403 whether or not it exists; only admins see a 404.
pub fn environment_for(
    state: &SharedState,
    principal: &Principal,
    permission: Option<Permission>,
    id: &str,
) -> Result<Environment, ApiError> {
    let allowed = |project: &str| match permission {
        Some(p) => principal.may(p, project),
        None => principal.sees(project),
    };
    let what = permission.map_or("no permission".to_owned(), |p| format!("lacks {p}"));
    match state.store.environment(id)? {
        Some(e) if allowed(&e.project_id) => Ok(e),
        None if principal.admin => Err(ApiError::not_found(format!("environment {id} not found"))),
        _ => Err(ApiError::forbidden(format!(
            "this token {what} on the project of environment {id} (or it does not exist)"
        ))),
    }
}

async fn list(
    State(state): State<SharedState>,
    Auth(p): Auth,
    q: QueryParams,
) -> Result<Json<Value>, ApiError> {
    q.only(&["projectId"])?;
    let project = q.0.get("projectId").map(String::as_str);
    let list: Vec<Value> = state
        .store
        .environments(project)?
        .iter()
        .filter(|e| p.sees(&e.project_id))
        .map(|e| view(&state, e))
        .collect();
    Ok(Json(json!({"total": list.len(), "environments": list})))
}

async fn create(
    State(state): State<SharedState>,
    Admin(_): Admin,
    Body(body): Body<CreateEnvironment>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    validate_slug("environment id", &body.id)?;
    validate_slug("projectId", &body.project_id)?;
    let name = body.name.unwrap_or_else(|| body.id.clone());
    validate_name("name", &name)?;
    let settings = body
        .snapshot_settings
        .map_or_else(SnapshotSettings::default, |s| SnapshotSettings {
            keep_last: s.keep_last,
            keep_days: s.keep_days,
        });
    settings.validate()?;
    let now = now_ms();
    let environment = Environment {
        id: body.id,
        project_id: body.project_id,
        name,
        snapshot_settings: settings,
        created_at: now,
        updated_at: now,
    };
    state
        .store
        .insert_environment(&environment)
        .map_err(|e| match e {
            StoreError::NotFound(what) => ApiError::not_found(format!("{what} not found")),
            other => other.into(),
        })?;
    tracing::info!(environment = %environment.id, "environment created");
    Ok((StatusCode::CREATED, Json(view(&state, &environment))))
}

async fn show(
    State(state): State<SharedState>,
    Auth(p): Auth,
    PathParam(id): PathParam<String>,
) -> Result<Json<Value>, ApiError> {
    let e = environment_for(&state, &p, None, &id)?;
    Ok(Json(view(&state, &e)))
}

async fn update(
    State(state): State<SharedState>,
    Admin(_): Admin,
    PathParam(id): PathParam<String>,
    Body(body): Body<UpdateEnvironment>,
) -> Result<Json<Value>, ApiError> {
    if let Some(n) = &body.name {
        validate_name("name", n)?;
    }
    let e = state.store.update_environment(&id, &mut |e| {
        if let Some(n) = &body.name {
            e.name.clone_from(n);
        }
        e.updated_at = now_ms();
        Ok(())
    })?;
    Ok(Json(view(&state, &e)))
}

async fn remove(
    State(state): State<SharedState>,
    Admin(_): Admin,
    PathParam(id): PathParam<String>,
) -> Result<StatusCode, ApiError> {
    state.store.delete_environment(&id)?;
    tracing::info!(environment = %id, "environment deleted");
    Ok(StatusCode::NO_CONTENT)
}

async fn settings(
    State(state): State<SharedState>,
    Auth(p): Auth,
    PathParam(id): PathParam<String>,
) -> Result<Json<Value>, ApiError> {
    let e = environment_for(&state, &p, Some(Permission::ManageEnvironments), &id)?;
    let mut v = settings_view(&e.snapshot_settings);
    v["environmentId"] = json!(e.id);
    Ok(Json(v))
}

/// Saves the retention settings, then asks the agent to apply them now. The settings are
/// kept even when the agent cannot be reached; they apply after the next snapshot.
async fn set_settings(
    State(state): State<SharedState>,
    Auth(p): Auth,
    PathParam(id): PathParam<String>,
    body: Deferred<Body<SettingsBody>>,
) -> Result<Json<Value>, ApiError> {
    let e = environment_for(&state, &p, Some(Permission::ManageEnvironments), &id)?;
    require(&p, Permission::ManageEnvironments, &e.project_id)?;
    let Body(body) = body.get()?;
    let settings = SnapshotSettings {
        keep_last: body.keep_last,
        keep_days: body.keep_days,
    };
    settings.validate()?;
    let e = state.store.update_environment(&id, &mut |e| {
        e.snapshot_settings = settings;
        e.updated_at = now_ms();
        Ok(())
    })?;
    let instance = state
        .store
        .instances(Some(&e.project_id))?
        .into_iter()
        .find(|i| i.environment_id == e.id);
    let applied = match instance {
        None => json!({"applied": false, "error": "the environment has no instance yet"}),
        Some(i) => match state
            .hub
            .apply_retention(&i.agent, &i.agent_instance_id, settings)
            .await
        {
            Ok((deleted, freed)) => {
                json!({"applied": true, "deletedSnapshotIds": deleted, "freedBytes": freed})
            }
            Err(err) => json!({"applied": false, "error": err.to_string()}),
        },
    };
    let mut v = settings_view(&e.snapshot_settings);
    v["environmentId"] = json!(e.id);
    v["retention"] = applied;
    Ok(Json(v))
}
