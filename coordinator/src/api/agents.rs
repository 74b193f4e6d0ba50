//! Agent administration (admin only): register an agent and get its enrolment token, list
//! agents with their link status, change an agent's address, remove an agent, and ask an
//! agent for its live information.

use axum::extract::{Path, State};
use axum::http::{Method, StatusCode};
use axum::routing::{delete, get, patch, post};
use axum::Json;
use ocore_proto::enrolment::EnrolmentToken;
use ocore_proto::identity::validate_agent_name;
use rand::RngCore;
use serde::Deserialize;
use serde_json::{json, Value};

use super::{endpoint, now_unix, rfc3339, Admin, ApiError, Body, Endpoint, SharedState};
use crate::agents::LinkState;
use crate::auth::hash_token;
use crate::store::{AgentRecord, EnrolmentTokenRecord};

/// Longest enrolment token lifetime an operator may ask for.
pub(super) const MAX_TOKEN_TTL_SECS: u64 = 7 * 24 * 3600;

pub fn endpoints() -> Vec<Endpoint> {
    vec![
        endpoint(Method::GET, "/api/agents", get(list)),
        endpoint(Method::POST, "/api/agents", post(add)),
        endpoint(Method::GET, "/api/agents/{name}", get(show)),
        endpoint(Method::PATCH, "/api/agents/{name}", patch(update)),
        endpoint(Method::DELETE, "/api/agents/{name}", delete(remove)),
        endpoint(
            Method::POST,
            "/api/agents/{name}/enrolment-token",
            post(new_token),
        ),
        endpoint(Method::GET, "/api/agents/{name}/info", get(live_info)),
    ]
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct AddAgent {
    name: String,
    address: String,
    #[serde(default, deserialize_with = "super::whole::opt")]
    token_ttl_secs: Option<u64>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct UpdateAgent {
    address: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct NewToken {
    #[serde(default, deserialize_with = "super::whole::opt")]
    token_ttl_secs: Option<u64>,
}

/// `host:port` with a non-zero port and a host free of spaces and slashes.
pub fn validate_address(address: &str) -> Result<(), ApiError> {
    let ok = address.chars().count() <= 255
        && address.rsplit_once(':').is_some_and(|(host, port)| {
            !host.is_empty()
                && !host
                    .contains(|c: char| c.is_whitespace() || c.is_control() || c == '/' || c == '@')
                && port.parse::<u16>().is_ok_and(|p| p != 0)
        });
    if ok {
        Ok(())
    } else {
        Err(ApiError::bad_request(format!(
            "address {:?} must be host:port, e.g. 10.0.0.5:7700",
            address.chars().take(80).collect::<String>()
        )))
    }
}

fn check_name(name: &str) -> Result<(), ApiError> {
    validate_agent_name(name).map_err(|e| ApiError::bad_request(e.to_string()))
}

fn view(state: &SharedState, record: &AgentRecord) -> Value {
    let link = state.hub.status(&record.name);
    let status = match (&link, record.cert_fingerprints.is_empty()) {
        (_, true) => LinkState::PendingEnrolment,
        (Some(l), false) => l.state,
        (None, false) => LinkState::Connecting,
    };
    json!({
        "name": record.name,
        "address": record.address,
        "status": status,
        "lastError": link.and_then(|l| l.last_error),
        "enrolled": !record.cert_fingerprints.is_empty(),
        "createdAt": rfc3339(record.created_at),
        "enrolledAt": record.enrolled_at.map(rfc3339),
        "lastSeen": record.last_seen.map(rfc3339),
        "version": record.version,
        "hostname": record.hostname,
        "certificateNotAfter": record.cert_not_after.map(rfc3339),
        "instances": record.instances,
    })
}

/// Issues a one-time enrolment token for `agent` and stores only its hash.
fn issue_token(state: &SharedState, agent: &str, ttl: Option<u64>) -> Result<Value, ApiError> {
    let ttl = ttl.unwrap_or(state.config.pki.enrolment_token_ttl_secs);
    if ttl == 0 || ttl > MAX_TOKEN_TTL_SECS {
        return Err(ApiError::bad_request(format!(
            "tokenTtlSecs must be between 1 and {MAX_TOKEN_TTL_SECS}"
        )));
    }
    let mut secret = [0u8; 32];
    rand::rng().fill_bytes(&mut secret);
    let expires_at = now_unix() + i64::try_from(ttl).unwrap_or(i64::MAX);
    let token = EnrolmentToken {
        agent: agent.to_owned(),
        ca_fingerprint: state.pki.ca().fingerprint(),
        expires_at,
        secret: hex::encode(secret),
    }
    .encode();
    state.store.insert_enrolment_token(
        &hash_token(&token),
        &EnrolmentTokenRecord {
            agent: agent.to_owned(),
            expires_at,
            used_at: None,
        },
    )?;
    Ok(json!({
        "enrolmentToken": token,
        "expiresAt": rfc3339(expires_at),
        "enrolCommand": format!("ocore-agent enroll --coordinator <URL> --token {token}"),
    }))
}

async fn add(
    State(state): State<SharedState>,
    Admin(_): Admin,
    Body(body): Body<AddAgent>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    check_name(&body.name)?;
    validate_address(&body.address)?;
    let record = AgentRecord {
        name: body.name.clone(),
        address: body.address,
        created_at: now_unix(),
        enrolled_at: None,
        cert_fingerprints: Vec::new(),
        cert_not_after: None,
        last_seen: None,
        version: None,
        hostname: None,
        instances: Vec::new(),
    };
    state.store.insert_agent(&record)?;
    let mut answer = issue_token(&state, &record.name, body.token_ttl_secs)?;
    answer["agent"] = view(&state, &record);
    state.hub.sync(&record.name);
    tracing::info!(agent = %record.name, "agent registered");
    Ok((StatusCode::CREATED, Json(answer)))
}

async fn list(State(state): State<SharedState>, Admin(_): Admin) -> Result<Json<Value>, ApiError> {
    let agents: Vec<Value> = state
        .store
        .agents()?
        .iter()
        .map(|a| view(&state, a))
        .collect();
    Ok(Json(json!({ "total": agents.len(), "agents": agents })))
}

fn find(state: &SharedState, name: &str) -> Result<AgentRecord, ApiError> {
    check_name(name)?;
    state
        .store
        .agent(name)?
        .ok_or_else(|| ApiError::not_found(format!("agent {name} not found")))
}

async fn show(
    State(state): State<SharedState>,
    Admin(_): Admin,
    Path(name): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let record = find(&state, &name)?;
    Ok(Json(view(&state, &record)))
}

async fn update(
    State(state): State<SharedState>,
    Admin(_): Admin,
    Path(name): Path<String>,
    Body(body): Body<UpdateAgent>,
) -> Result<Json<Value>, ApiError> {
    find(&state, &name)?;
    if let Some(address) = &body.address {
        validate_address(address)?;
    }
    let record = state.store.update_agent(&name, &|a| {
        if let Some(address) = &body.address {
            a.address.clone_from(address);
        }
    })?;
    state.hub.sync(&name);
    Ok(Json(view(&state, &record)))
}

async fn remove(
    State(state): State<SharedState>,
    Admin(_): Admin,
    Path(name): Path<String>,
) -> Result<StatusCode, ApiError> {
    find(&state, &name)?;
    let bound: Vec<String> = state
        .store
        .instances(None)?
        .into_iter()
        .filter(|i| i.agent == name)
        .map(|i| i.id)
        .collect();
    if !bound.is_empty() {
        return Err(ApiError::conflict(format!(
            "agent {name} holds instance(s) {}; delete them or bind them to another agent first",
            bound.join(", ")
        )));
    }
    state.store.remove_agent(&name)?;
    state.hub.sync(&name);
    tracing::info!(agent = %name, "agent removed; its certificate is refused from now on");
    Ok(StatusCode::NO_CONTENT)
}

async fn new_token(
    State(state): State<SharedState>,
    Admin(_): Admin,
    Path(name): Path<String>,
    body: axum::body::Bytes,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    find(&state, &name)?;
    // The body is optional here: an empty POST asks for a token with the default lifetime.
    let options: NewToken = if body.iter().all(u8::is_ascii_whitespace) {
        NewToken::default()
    } else {
        serde_json::from_slice(&body)
            .map_err(|e| ApiError::bad_request(format!("invalid JSON body: {e}")))?
    };
    let ttl = options.token_ttl_secs;
    Ok((StatusCode::CREATED, Json(issue_token(&state, &name, ttl)?)))
}

async fn live_info(
    State(state): State<SharedState>,
    Admin(_): Admin,
    Path(name): Path<String>,
) -> Result<Json<Value>, ApiError> {
    find(&state, &name)?;
    let info = state.hub.info(&name).await?;
    let instances: Vec<Value> = info
        .instances
        .iter()
        .map(|i| {
            json!({
                "id": i.id,
                "database": i.database,
                "dataDir": i.data_dir,
                "baseImage": i.base_image,
                "publicPort": i.public_port,
            })
        })
        .collect();
    Ok(Json(json!({
        "name": info.name,
        "version": info.version,
        "hostname": info.hostname,
        "startedAt": crate::domain::rfc3339_ms(info.started_at),
        "certificateNotAfter": crate::domain::rfc3339_ms(info.certificate_not_after),
        "instances": instances,
    })))
}
