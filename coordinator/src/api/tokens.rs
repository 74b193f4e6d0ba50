//! API token administration (admin only). A token's text is returned once, at creation.

use axum::extract::{Path, State};
use axum::http::{Method, StatusCode};
use axum::routing::{delete, get, post};
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};

use super::{endpoint, now_unix, rfc3339, Admin, ApiError, Body, Endpoint, SharedState};
use crate::auth::{generate_token, Permission};
use crate::store::{Grant, TokenRecord};

pub fn endpoints() -> Vec<Endpoint> {
    vec![
        endpoint(Method::GET, "/api/tokens", get(list)),
        endpoint(Method::POST, "/api/tokens", post(create)),
        endpoint(Method::DELETE, "/api/tokens/{id}", delete(revoke)),
    ]
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct CreateToken {
    name: String,
    #[serde(default)]
    admin: bool,
    #[serde(default)]
    grants: Vec<GrantBody>,
    #[serde(default, deserialize_with = "super::whole::opt")]
    expires_in_secs: Option<u64>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct GrantBody {
    project: String,
    permission: String,
}

fn view(t: &TokenRecord) -> Value {
    json!({
        "id": t.id,
        "name": t.name,
        "admin": t.admin,
        "grants": t.grants,
        "createdAt": rfc3339(t.created_at),
        "expiresAt": t.expires_at.map(rfc3339),
        "revokedAt": t.revoked_at.map(rfc3339),
    })
}

/// Creates a token record with a fresh secret; returns the record and the secret.
pub fn new_token_record(
    name: &str,
    admin: bool,
    grants: Vec<Grant>,
    expires_at: Option<i64>,
) -> (TokenRecord, String) {
    let token = generate_token();
    let record = TokenRecord {
        id: uuid::Uuid::now_v7().to_string(),
        name: name.to_owned(),
        hash: token.hash,
        admin,
        grants,
        created_at: now_unix(),
        expires_at,
        revoked_at: None,
    };
    (record, token.text)
}

async fn create(
    State(state): State<SharedState>,
    Admin(_): Admin,
    Body(body): Body<CreateToken>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    crate::domain::validate_name("name", &body.name)?;
    let name = body.name.trim();
    if !body.admin && body.grants.is_empty() {
        return Err(ApiError::bad_request(
            "a token needs admin or at least one grant {project, permission}",
        ));
    }
    let mut grants = Vec::new();
    for g in body.grants {
        let permission = Permission::parse(&g.permission).ok_or_else(|| {
            ApiError::bad_request(format!(
                "unknown permission {:?}; use one of view:deployments, manage:deployments, manage:environments",
                g.permission.chars().take(40).collect::<String>()
            ))
        })?;
        crate::domain::validate_slug("grant project", &g.project)?;
        grants.push(Grant {
            project: g.project,
            permission,
        });
    }
    let expires_at = match body.expires_in_secs {
        Some(0) => {
            return Err(ApiError::bad_request(
                "expiresInSecs must be greater than 0",
            ))
        }
        Some(s) => Some(now_unix().saturating_add(i64::try_from(s).unwrap_or(i64::MAX))),
        None => None,
    };
    let (record, secret) = new_token_record(name, body.admin, grants, expires_at);
    state.store.insert_token(&record)?;
    tracing::info!(token = %record.id, name = %record.name, "token created");
    let mut answer = view(&record);
    answer["token"] = Value::String(secret);
    Ok((StatusCode::CREATED, Json(answer)))
}

async fn list(State(state): State<SharedState>, Admin(_): Admin) -> Result<Json<Value>, ApiError> {
    let tokens: Vec<Value> = state.store.tokens()?.iter().map(view).collect();
    Ok(Json(json!({ "total": tokens.len(), "tokens": tokens })))
}

async fn revoke(
    State(state): State<SharedState>,
    Admin(_): Admin,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let record = state.store.revoke_token(&id, now_unix())?;
    tracing::info!(token = %record.id, "token revoked");
    Ok(Json(view(&record)))
}
