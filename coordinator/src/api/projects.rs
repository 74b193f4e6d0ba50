//! Projects and their branch mappings. Creating, changing and deleting is for admins;
//! any token with a permission on a project may read it.

use axum::extract::State;
use axum::http::{Method, StatusCode};
use axum::routing::{delete, get, patch, post, put};
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};

use super::{endpoint, Admin, ApiError, Auth, Body, Endpoint, PathParam, SharedState};
use crate::domain::{now_ms, rfc3339_ms, validate_name, validate_slug, BranchMapping, Project};
use crate::domain::{validate_addons_subpath, validate_ref_name, validate_repository_url};
use crate::store::StoreError;
use ocore_proto::git_url;

pub fn endpoints() -> Vec<Endpoint> {
    vec![
        endpoint(Method::GET, "/api/projects", get(list)),
        endpoint(Method::POST, "/api/projects", post(create)),
        endpoint(Method::GET, "/api/projects/{projectId}", get(show)),
        endpoint(Method::PATCH, "/api/projects/{projectId}", patch(update)),
        endpoint(Method::DELETE, "/api/projects/{projectId}", delete(remove)),
        endpoint(
            Method::GET,
            "/api/projects/{projectId}/branch-mappings",
            get(mappings),
        ),
        endpoint(
            Method::PUT,
            "/api/projects/{projectId}/branch-mappings/{branch}",
            put(set_mapping),
        ),
        endpoint(
            Method::DELETE,
            "/api/projects/{projectId}/branch-mappings/{branch}",
            delete(remove_mapping),
        ),
    ]
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct CreateProject {
    id: String,
    name: Option<String>,
    repository_url: String,
    #[serde(default)]
    addons_subpath: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct UpdateProject {
    name: Option<String>,
    repository_url: Option<String>,
    addons_subpath: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct SetMapping {
    environment_id: String,
}

pub fn view(p: &Project) -> Value {
    json!({
        "id": p.id,
        "name": p.name,
        "repositoryUrl": p.repository_url,
        "addonsSubpath": p.addons_subpath,
        // Only public halves: see `credentials.rs`.
        "credentials": super::credentials::summary(p.credentials.as_ref()),
        "sshHostKey": super::credentials::host_key_view(p.ssh_host_key.as_ref()),
        "createdAt": rfc3339_ms(p.created_at),
        "updatedAt": rfc3339_ms(p.updated_at),
    })
}

fn mapping_view(m: &BranchMapping) -> Value {
    json!({"projectId": m.project_id, "branch": m.branch, "environmentId": m.environment_id})
}

/// The project, for a caller allowed to see it: 403 for others whether or not it exists.
pub fn visible_project(
    state: &SharedState,
    principal: &crate::auth::Principal,
    id: &str,
) -> Result<Project, ApiError> {
    if !principal.sees(id) {
        return Err(ApiError::forbidden(format!(
            "this token has no permission on project {id}"
        )));
    }
    state
        .store
        .project(id)?
        .ok_or_else(|| ApiError::not_found(format!("project {id} not found")))
}

async fn list(State(state): State<SharedState>, Auth(p): Auth) -> Result<Json<Value>, ApiError> {
    let projects: Vec<Value> = state
        .store
        .projects()?
        .iter()
        .filter(|project| p.sees(&project.id))
        .map(view)
        .collect();
    Ok(Json(json!({"total": projects.len(), "projects": projects})))
}

async fn create(
    State(state): State<SharedState>,
    Admin(_): Admin,
    Body(body): Body<CreateProject>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    validate_slug("project id", &body.id)?;
    let name = body.name.unwrap_or_else(|| body.id.clone());
    validate_name("name", &name)?;
    validate_repository_url(&body.repository_url)?;
    validate_addons_subpath(&body.addons_subpath)?;
    let now = now_ms();
    let project = Project {
        id: body.id,
        name,
        repository_url: body.repository_url,
        addons_subpath: body.addons_subpath.trim_end_matches('/').to_owned(),
        credentials: None,
        ssh_host_key: None,
        created_at: now,
        updated_at: now,
    };
    state.store.insert_project(&project)?;
    tracing::info!(project = %project.id, "project created");
    Ok((StatusCode::CREATED, Json(view(&project))))
}

async fn show(
    State(state): State<SharedState>,
    Auth(p): Auth,
    PathParam(id): PathParam<String>,
) -> Result<Json<Value>, ApiError> {
    Ok(Json(view(&visible_project(&state, &p, &id)?)))
}

async fn update(
    State(state): State<SharedState>,
    Admin(_): Admin,
    PathParam(id): PathParam<String>,
    Body(body): Body<UpdateProject>,
) -> Result<Json<Value>, ApiError> {
    if let Some(n) = &body.name {
        validate_name("name", n)?;
    }
    if let Some(u) = &body.repository_url {
        validate_repository_url(u)?;
    }
    if let Some(s) = &body.addons_subpath {
        validate_addons_subpath(s)?;
    }
    let project = state.store.update_project(&id, &mut |p| {
        if let Some(n) = &body.name {
            p.name.clone_from(n);
        }
        if let Some(u) = &body.repository_url {
            // A key pinned for one server says nothing about another.
            if git_url::server(u) != git_url::server(&p.repository_url) {
                p.ssh_host_key = None;
            }
            p.repository_url.clone_from(u);
        }
        if let Some(s) = &body.addons_subpath {
            p.addons_subpath = s.trim_end_matches('/').to_owned();
        }
        p.updated_at = now_ms();
        Ok(())
    })?;
    Ok(Json(view(&project)))
}

async fn remove(
    State(state): State<SharedState>,
    Admin(_): Admin,
    PathParam(id): PathParam<String>,
) -> Result<StatusCode, ApiError> {
    state.store.delete_project(&id)?;
    tracing::info!(project = %id, "project deleted");
    Ok(StatusCode::NO_CONTENT)
}

async fn mappings(
    State(state): State<SharedState>,
    Auth(p): Auth,
    PathParam(id): PathParam<String>,
) -> Result<Json<Value>, ApiError> {
    visible_project(&state, &p, &id)?;
    let list: Vec<Value> = state
        .store
        .mappings(&id)?
        .iter()
        .map(mapping_view)
        .collect();
    Ok(Json(json!({"total": list.len(), "mappings": list})))
}

async fn set_mapping(
    State(state): State<SharedState>,
    Admin(_): Admin,
    PathParam((id, branch)): PathParam<(String, String)>,
    Body(body): Body<SetMapping>,
) -> Result<Json<Value>, ApiError> {
    validate_ref_name("branch", &branch)?;
    if state.store.project(&id)?.is_none() {
        return Err(ApiError::not_found(format!("project {id} not found")));
    }
    let mapping = BranchMapping {
        project_id: id,
        branch,
        environment_id: body.environment_id,
    };
    state.store.set_mapping(&mapping).map_err(|e| match e {
        StoreError::NotFound(_) => ApiError::not_found(format!(
            "environment {} is not an environment of project {}",
            crate::domain::shorten(&mapping.environment_id),
            mapping.project_id
        )),
        other => other.into(),
    })?;
    Ok(Json(mapping_view(&mapping)))
}

async fn remove_mapping(
    State(state): State<SharedState>,
    Admin(_): Admin,
    PathParam((id, branch)): PathParam<(String, String)>,
) -> Result<StatusCode, ApiError> {
    state.store.remove_mapping(&id, &branch)?;
    Ok(StatusCode::NO_CONTENT)
}
