//! A project's repository access (admin only): generate or rotate its deploy key, store an
//! HTTPS token, remove them, and forget the pinned SSH host key. Answers carry only the
//! public half: no endpoint ever returns a private key or a token.

use axum::extract::State;
use axum::http::{Method, StatusCode};
use axum::routing::{delete, get, post, put};
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};

use super::{endpoint, Admin, ApiError, Body, Endpoint, PathParam, SharedState};
use crate::domain::{now_ms, rfc3339_ms, validate_token, Project, RepositoryCredentials};
use crate::domain::{PinnedHostKey, DEFAULT_TOKEN_USERNAME};

pub fn endpoints() -> Vec<Endpoint> {
    vec![
        endpoint(
            Method::GET,
            "/api/projects/{projectId}/credentials",
            get(show),
        ),
        endpoint(
            Method::DELETE,
            "/api/projects/{projectId}/credentials",
            delete(remove),
        ),
        endpoint(
            Method::POST,
            "/api/projects/{projectId}/credentials/deploy-key",
            post(deploy_key),
        ),
        endpoint(
            Method::PUT,
            "/api/projects/{projectId}/credentials/https-token",
            put(set_token),
        ),
        endpoint(
            Method::DELETE,
            "/api/projects/{projectId}/credentials/host-key",
            delete(forget_host_key),
        ),
    ]
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct DeployKeyRequest {
    /// Replace an existing deploy key (or token) with a new key.
    #[serde(default)]
    rotate: bool,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct TokenRequest {
    username: Option<String>,
    token: String,
}

/// The public facts of a project's credentials, as the project view also shows them.
pub fn summary(credentials: Option<&RepositoryCredentials>) -> Value {
    match credentials {
        None => Value::Null,
        Some(RepositoryCredentials::SshKey {
            public_key,
            fingerprint,
            created_at,
            ..
        }) => json!({
            "kind": "ssh-key",
            "publicKey": public_key,
            "fingerprint": fingerprint,
            "createdAt": rfc3339_ms(*created_at),
        }),
        Some(RepositoryCredentials::HttpsToken {
            username,
            created_at,
            ..
        }) => json!({
            "kind": "https-token",
            "username": username,
            "createdAt": rfc3339_ms(*created_at),
        }),
    }
}

pub fn host_key_view(key: Option<&PinnedHostKey>) -> Value {
    match key {
        None => Value::Null,
        Some(k) => json!({
            "key": k.key,
            "fingerprint": k.fingerprint,
            "pinnedAt": rfc3339_ms(k.pinned_at),
        }),
    }
}

fn view(p: &Project) -> Value {
    json!({
        "projectId": p.id,
        "credentials": summary(p.credentials.as_ref()),
        "sshHostKey": host_key_view(p.ssh_host_key.as_ref()),
    })
}

fn project(state: &SharedState, id: &str) -> Result<Project, ApiError> {
    state
        .store
        .project(id)?
        .ok_or_else(|| ApiError::not_found(format!("project {id} not found")))
}

async fn show(
    State(state): State<SharedState>,
    Admin(_): Admin,
    PathParam(id): PathParam<String>,
) -> Result<Json<Value>, ApiError> {
    Ok(Json(view(&project(&state, &id)?)))
}

/// Generates the project's deploy key, or returns the existing one. `rotate` replaces it
/// (and a token) with a fresh key: the old key stops working here at once; remove it
/// from the Git provider too.
async fn deploy_key(
    State(state): State<SharedState>,
    Admin(_): Admin,
    PathParam(id): PathParam<String>,
    Body(body): Body<DeployKeyRequest>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let current = project(&state, &id)?;
    match (&current.credentials, body.rotate) {
        (Some(RepositoryCredentials::SshKey { .. }), false) => {
            return Ok((StatusCode::OK, Json(view(&current))));
        }
        (Some(RepositoryCredentials::HttpsToken { .. }), false) => {
            return Err(ApiError::conflict(format!(
                "project {id} uses an HTTPS token; pass rotate: true to replace it with a deploy key"
            )));
        }
        _ => {}
    }
    let fresh = crate::credentials::generate_deploy_key(&state.secrets, &id, now_ms())?;
    let updated = state.store.update_project(&id, &mut |p| {
        p.credentials = Some(fresh.clone());
        p.updated_at = now_ms();
        Ok(())
    })?;
    let verb = if current.credentials.is_some() {
        "rotated"
    } else {
        "generated"
    };
    tracing::info!(project = %id, "deploy key {verb}");
    Ok((StatusCode::CREATED, Json(view(&updated))))
}

async fn set_token(
    State(state): State<SharedState>,
    Admin(_): Admin,
    PathParam(id): PathParam<String>,
    Body(body): Body<TokenRequest>,
) -> Result<Json<Value>, ApiError> {
    let username = body
        .username
        .filter(|u| !u.is_empty())
        .unwrap_or_else(|| DEFAULT_TOKEN_USERNAME.to_owned());
    validate_token(&username, &body.token)?;
    project(&state, &id)?;
    let sealed =
        crate::credentials::seal_token(&state.secrets, &id, &username, &body.token, now_ms())?;
    let updated = state.store.update_project(&id, &mut |p| {
        p.credentials = Some(sealed.clone());
        p.updated_at = now_ms();
        Ok(())
    })?;
    tracing::info!(project = %id, "HTTPS token stored");
    Ok(Json(view(&updated)))
}

/// Removes the deploy key or token: the repository is fetched anonymously from now on.
async fn remove(
    State(state): State<SharedState>,
    Admin(_): Admin,
    PathParam(id): PathParam<String>,
) -> Result<Json<Value>, ApiError> {
    let updated = state.store.update_project(&id, &mut |p| {
        p.credentials = None;
        p.updated_at = now_ms();
        Ok(())
    })?;
    tracing::info!(project = %id, "repository credentials removed");
    Ok(Json(view(&updated)))
}

/// Forgets the pinned host key; the next deploy pins the key the server then presents.
async fn forget_host_key(
    State(state): State<SharedState>,
    Admin(_): Admin,
    PathParam(id): PathParam<String>,
) -> Result<Json<Value>, ApiError> {
    let updated = state.store.update_project(&id, &mut |p| {
        p.ssh_host_key = None;
        p.updated_at = now_ms();
        Ok(())
    })?;
    tracing::info!(project = %id, "pinned SSH host key forgotten");
    Ok(Json(view(&updated)))
}
