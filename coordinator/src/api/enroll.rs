//! `POST /api/agents/enroll`: an agent trades its one-time token and a CSR for its
//! certificate. The token is the only credential; it is checked, then consumed atomically.

use axum::extract::State;
use axum::http::Method;
use axum::routing::post;
use axum::Json;
use ocore_proto::enrolment::{EnrolRequest, EnrolResponse, EnrolmentToken};
use ocore_proto::identity::fingerprint;
use ocore_proto::tls::{cert_info, cert_to_pem};
use time::OffsetDateTime;

use super::{endpoint, ApiError, Body, Endpoint, SharedState};
use crate::auth::hash_token;

pub fn endpoints() -> Vec<Endpoint> {
    vec![endpoint(Method::POST, "/api/agents/enroll", post(enroll))]
}

async fn enroll(
    State(state): State<SharedState>,
    Body(request): Body<EnrolRequest>,
) -> Result<Json<EnrolResponse>, ApiError> {
    let token = EnrolmentToken::decode(&request.token)
        .map_err(|e| ApiError::unauthorized(e.to_string()))?;
    let ca = state.pki.ca();
    let now = OffsetDateTime::now_utc();
    // Sign before consuming so a malformed CSR does not burn the token; the certificate is
    // discarded unless the token is then consumed successfully.
    let cert = ca
        .sign_agent(
            &request.csr_pem,
            &token.agent,
            now,
            state.pki.agent_validity(),
        )
        .map_err(|e| ApiError::bad_request(e.to_string()))?;
    let record = state
        .store
        .consume_enrolment_token(&hash_token(&request.token), now.unix_timestamp())?;
    if record.agent != token.agent {
        return Err(ApiError::unauthorized("enrolment token is not valid"));
    }
    let info = cert_info(&cert).map_err(|e| ApiError::internal(e.to_string()))?;
    let fp = fingerprint(&cert);
    state.store.update_agent(&record.agent, &|a| {
        a.enrolled_at = Some(now.unix_timestamp());
        // Enrolment replaces the identity: certificates from an earlier enrolment are
        // refused from now on.
        a.cert_fingerprints = vec![fp.clone()];
        a.cert_not_after = Some(info.not_after);
    })?;
    tracing::info!(agent = %record.agent, "agent enrolled");
    state.hub.sync(&record.agent);
    Ok(Json(EnrolResponse {
        agent_name: record.agent,
        certificate_pem: cert_to_pem(&cert),
        ca_certificate_pem: ca.cert_pem(),
    }))
}
