//! Moving snapshots between hosts and checking them (`manage:environments`): export as a
//! streamed download (`.tar.zst` or Odoo's backup zip), import of an uploaded archive as a
//! new snapshot, and verification of every stored part. Archives pass through the
//! coordinator as streams, never whole in memory.

use axum::body::{Body, Bytes};
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{header, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Json;
use futures_util::StreamExt;
use serde_json::{json, Value};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

use super::snapshots::{target, view};
use super::{endpoint, ApiError, Auth, Endpoint, PathParam, QueryParams, SharedState};
use crate::agents::{AgentCallError, ArchiveFormat, Refusal};
use crate::domain::{Snapshot, SnapshotState};

pub fn endpoints() -> Vec<Endpoint> {
    vec![
        endpoint(
            Method::GET,
            "/api/environments/{environmentId}/snapshots/{snapshotId}/export",
            get(export),
        ),
        endpoint(
            Method::POST,
            "/api/environments/{environmentId}/snapshots/{snapshotId}/verify",
            post(verify),
        ),
        // The archive is streamed to the agent, so the JSON body limit does not apply.
        endpoint(
            Method::POST,
            "/api/environments/{environmentId}/snapshots/import",
            post(import).layer(DefaultBodyLimit::disable()),
        ),
    ]
}

/// `format` of an export: `tar.zst` (the default) or `odoo-zip`.
pub fn archive_format(q: &QueryParams) -> Result<ArchiveFormat, ApiError> {
    q.only(&["format"])?;
    match q.0.get("format").map(String::as_str) {
        None | Some("tar.zst") => Ok(ArchiveFormat::TarZst),
        Some("odoo-zip") => Ok(ArchiveFormat::OdooZip),
        Some(other) => Err(ApiError::bad_request(format!(
            "format must be tar.zst or odoo-zip, not {:?}",
            crate::domain::shorten(other)
        ))),
    }
}

async fn export(
    State(state): State<SharedState>,
    Auth(p): Auth,
    PathParam((id, snapshot)): PathParam<(String, String)>,
    q: QueryParams,
) -> Result<Response, ApiError> {
    let format = archive_format(&q)?;
    let (environment, instance) = target(&state, &p, &id)?;
    let (total, stream) = state
        .hub
        .export_snapshot(
            &instance.agent,
            &instance.agent_instance_id,
            &snapshot,
            format,
        )
        .await?;
    tracing::info!(environment = %environment.id, snapshot = %snapshot, bytes = total, "snapshot export started by {}", p.name);
    // A broken agent stream ends the body early; with Content-Length set, the client sees
    // a short read rather than a complete-looking archive.
    let shutdown = state.cancel.clone();
    let body = Body::from_stream(
        stream
            .map(|item| item.map(Bytes::from).map_err(std::io::Error::other))
            .take_until(async move { shutdown.cancelled().await }),
    );
    let (content_type, extension) = match format {
        ArchiveFormat::TarZst => ("application/zstd", "tar.zst"),
        ArchiveFormat::OdooZip => ("application/zip", "zip"),
    };
    let mut response = (StatusCode::OK, body).into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    if total > 0 {
        headers.insert(header::CONTENT_LENGTH, HeaderValue::from(total));
    }
    // Both ids passed validation (the agent found the snapshot), so they are plain text.
    let disposition = format!(
        "attachment; filename=\"{}-{snapshot}.{extension}\"",
        environment.id
    );
    if let Ok(v) = HeaderValue::from_str(&disposition) {
        headers.insert(header::CONTENT_DISPOSITION, v);
    }
    Ok(response)
}

async fn verify(
    State(state): State<SharedState>,
    Auth(p): Auth,
    PathParam((id, snapshot)): PathParam<(String, String)>,
) -> Result<Json<Value>, ApiError> {
    let (environment, instance) = target(&state, &p, &id)?;
    let answer = state
        .hub
        .verify_snapshot(&instance.agent, &instance.agent_instance_id, &snapshot)
        .await;
    match answer {
        Ok(v) => Ok(Json(json!({
            "id": snapshot,
            "environmentId": environment.id,
            "verified": true,
            "parts": v.parts,
            "blobs": v.blobs,
            "bytes": v.bytes,
            "problem": null,
        }))),
        // A corrupt snapshot is an answer, not a failure of the request.
        Err(AgentCallError::Refused {
            reason: Refusal::Corrupt,
            message,
            ..
        }) => Ok(Json(json!({
            "id": snapshot,
            "environmentId": environment.id,
            "verified": false,
            "problem": message,
        }))),
        Err(e) => Err(e.into()),
    }
}

/// Imports the request body (an oCore `.tar.zst` export or an Odoo backup zip) as a new
/// snapshot of the environment, and answers 201 with it once the agent has checked and
/// stored every part.
async fn import(
    State(state): State<SharedState>,
    Auth(p): Auth,
    PathParam(id): PathParam<String>,
    body: Body,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let (environment, instance) = target(&state, &p, &id)?;
    let snapshot_id = uuid::Uuid::now_v7().to_string();
    let (tx, rx) = mpsc::channel::<Vec<u8>>(4);
    let call = state.hub.import_snapshot(
        &instance.agent,
        &instance.agent_instance_id,
        &environment.id,
        &snapshot_id,
        ReceiverStream::new(rx),
    );
    let pump = async move {
        let mut body = body.into_data_stream();
        let mut bytes = 0u64;
        while let Some(chunk) = body.next().await {
            let chunk = chunk.map_err(|e| {
                ApiError::bad_request(format!("the upload broke off after {bytes} bytes: {e}"))
            })?;
            bytes += chunk.len() as u64;
            if tx.send(chunk.to_vec()).await.is_err() {
                // The call ended (the agent refused); its answer says why.
                break;
            }
        }
        Ok::<u64, ApiError>(bytes)
    };
    tokio::pin!(call, pump);
    let mut uploaded = None;
    // Until the whole body is in, a broken upload aborts the call (dropping it cancels the
    // RPC), so the agent never imports a truncated archive.
    let result = loop {
        tokio::select! {
            result = &mut call => break result,
            pumped = &mut pump, if uploaded.is_none() => uploaded = Some(pumped?),
        }
    };
    let done = result?;
    let record = Snapshot {
        state: SnapshotState::Ready,
        ..done
    };
    state.store.put_snapshot(&record)?;
    tracing::info!(environment = %environment.id, snapshot = %snapshot_id, bytes = uploaded.unwrap_or(0), "snapshot imported by {}", p.name);
    Ok((StatusCode::CREATED, Json(view(&record))))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn export_formats_are_named_and_others_refused() {
        let q = |pairs: &[(&str, &str)]| {
            QueryParams(
                pairs
                    .iter()
                    .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                    .collect(),
            )
        };
        assert_eq!(archive_format(&q(&[])).ok(), Some(ArchiveFormat::TarZst));
        assert_eq!(
            archive_format(&q(&[("format", "odoo-zip")])).ok(),
            Some(ArchiveFormat::OdooZip)
        );
        assert!(archive_format(&q(&[("format", "rar")])).is_err());
        assert!(archive_format(&q(&[("fmt", "zip")])).is_err());
    }
}
