//! Snapshot RPCs: protobuf in, `crate::snapshot` calls, protobuf out. Snapshot errors
//! become `tonic::Status` here and nowhere else (`status`).

use std::sync::Arc;

use ocore_proto::v1;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tonic::{Response, Status};

use super::{AgentService, EventStream};
use crate::snapshot::{
    validate_snapshot_id, CreateSnapshot, ErrorKind, ExportFormat, RetentionPolicy, SnapshotKind,
    SnapshotMeta, SnapshotProgress, Snapshots,
};

/// Export streams send the file in chunks of this size.
const EXPORT_CHUNK: usize = 256 * 1024;

/// The one mapping from snapshot error kinds to gRPC codes.
fn status(kind: ErrorKind, e: impl std::fmt::Display) -> Status {
    let message = e.to_string();
    match kind {
        ErrorKind::NotFound => Status::not_found(message),
        ErrorKind::InvalidArgument => Status::invalid_argument(message),
        ErrorKind::AlreadyExists => Status::already_exists(message),
        ErrorKind::NoSpace => Status::resource_exhausted(message),
        ErrorKind::Corrupt => Status::data_loss(message),
        ErrorKind::Cancelled => Status::cancelled(message),
        ErrorKind::Busy | ErrorKind::Precondition => Status::failed_precondition(message),
        ErrorKind::Internal => Status::internal(message),
    }
}

fn kind_from_proto(kind: v1::SnapshotKind) -> SnapshotKind {
    match kind {
        v1::SnapshotKind::PreDeploy => SnapshotKind::PreDeploy,
        v1::SnapshotKind::Scheduled => SnapshotKind::Scheduled,
        v1::SnapshotKind::Manual | v1::SnapshotKind::Unspecified => SnapshotKind::Manual,
    }
}

fn kind_to_proto(kind: SnapshotKind) -> v1::SnapshotKind {
    match kind {
        SnapshotKind::PreDeploy => v1::SnapshotKind::PreDeploy,
        SnapshotKind::Manual => v1::SnapshotKind::Manual,
        SnapshotKind::Scheduled => v1::SnapshotKind::Scheduled,
    }
}

fn snapshot_to_proto(m: &SnapshotMeta) -> v1::Snapshot {
    v1::Snapshot {
        id: m.id.clone(),
        instance_id: m.instance_id.clone(),
        kind: kind_to_proto(m.kind) as i32,
        pinned: m.pinned,
        size_bytes: m.size_bytes,
        created_at: (m.created_at.unix_timestamp_nanos() / 1_000_000) as i64,
        deployment_id: m.deployment_id.clone().unwrap_or_default(),
        commit_sha: m.commit_sha.clone().unwrap_or_default(),
        imported_at: m
            .imported
            .as_ref()
            .map_or(0, |i| (i.at.unix_timestamp_nanos() / 1_000_000) as i64),
        original_id: m
            .imported
            .as_ref()
            .and_then(|i| i.original_id.clone())
            .unwrap_or_default(),
    }
}

fn non_empty(s: String) -> Option<String> {
    (!s.is_empty()).then_some(s)
}

fn now_ms() -> i64 {
    (time::OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000_000) as i64
}

fn check_snapshot_id(id: &str) -> Result<(), Status> {
    validate_snapshot_id(id).map_err(Status::invalid_argument)
}

pub(super) async fn create_snapshot(
    svc: &AgentService,
    request: v1::CreateSnapshotRequest,
) -> Result<Response<EventStream<v1::SnapshotEvent>>, Status> {
    check_snapshot_id(&request.snapshot_id)?;
    // Both land in the snapshot's manifest: plain ids only, like everywhere else.
    if !request.deployment_id.is_empty() {
        super::deploy::check_id("deployment_id", &request.deployment_id)?;
    }
    if request.commit_sha.len() > 40 || !request.commit_sha.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(Status::invalid_argument(
            "commit_sha must be hexadecimal, up to 40 characters",
        ));
    }
    let req = CreateSnapshot {
        id: request.snapshot_id.clone(),
        kind: kind_from_proto(request.kind()),
        deployment_id: non_empty(request.deployment_id),
        commit_sha: non_empty(request.commit_sha),
    };
    let instance = request.instance_id;
    let snapshots: Arc<Snapshots> = svc.snapshots().clone();
    let (tx, rx) = mpsc::channel(64);
    let (events_tx, mut events_rx) = mpsc::unbounded_channel::<v1::snapshot_event::Kind>();
    // The forwarder numbers events as it sends them, so `seq` is dense whatever the pace.
    let forward = async move {
        let mut seq = 0u64;
        while let Some(kind) = events_rx.recv().await {
            seq += 1;
            let ev = v1::SnapshotEvent {
                seq,
                at: now_ms(),
                kind: Some(kind),
            };
            if tx.send(Ok(ev)).await.is_err() {
                // The caller went away; the snapshot still completes for the next listing.
                while events_rx.recv().await.is_some() {}
                break;
            }
        }
        tx
    };
    // The snapshot runs to its end even if the caller disconnects: the snapshot is useful
    // on its own, and a half-taken one is never kept anyway.
    tokio::spawn(async move {
        let progress_tx = events_tx.clone();
        let progress = move |p: SnapshotProgress| {
            let kind = match p {
                SnapshotProgress::Phase { phase, done, total } => {
                    v1::snapshot_event::Kind::Progress(v1::Progress {
                        phase: phase.to_owned(),
                        done,
                        total,
                    })
                }
                SnapshotProgress::Log(line) => v1::snapshot_event::Kind::Log(v1::LogLine {
                    step: "snapshot".to_owned(),
                    line,
                }),
            };
            let _ = progress_tx.send(kind);
        };
        let forwarder = tokio::spawn(forward);
        let result = snapshots
            .create(&instance, req, &progress, &CancellationToken::new())
            .await;
        drop(progress);
        let final_error = match result {
            Ok(meta) => {
                let _ = events_tx.send(v1::snapshot_event::Kind::Done(snapshot_to_proto(&meta)));
                None
            }
            Err(e) => Some(status(e.kind(), &e)),
        };
        drop(events_tx);
        if let (Ok(tx), Some(err)) = (forwarder.await, final_error) {
            let _ = tx.send(Err(err)).await;
        }
    });
    Ok(Response::new(ReceiverStream::new(rx)))
}

pub(super) async fn list_snapshots(
    svc: &AgentService,
    request: v1::ListSnapshotsRequest,
) -> Result<Response<v1::ListSnapshotsResponse>, Status> {
    let list = svc
        .snapshots()
        .list(&request.instance_id)
        .await
        .map_err(|e| status(e.kind(), &e))?;
    Ok(Response::new(v1::ListSnapshotsResponse {
        snapshots: list.iter().map(snapshot_to_proto).collect(),
    }))
}

pub(super) async fn pin_snapshot(
    svc: &AgentService,
    request: v1::PinSnapshotRequest,
) -> Result<Response<v1::Snapshot>, Status> {
    check_snapshot_id(&request.snapshot_id)?;
    let meta = svc
        .snapshots()
        .pin(&request.instance_id, &request.snapshot_id, request.pinned)
        .await
        .map_err(|e| status(e.kind(), &e))?;
    Ok(Response::new(snapshot_to_proto(&meta)))
}

pub(super) async fn delete_snapshot(
    svc: &AgentService,
    request: v1::DeleteSnapshotRequest,
) -> Result<Response<v1::DeleteSnapshotResponse>, Status> {
    check_snapshot_id(&request.snapshot_id)?;
    let freed_bytes = svc
        .snapshots()
        .delete(&request.instance_id, &request.snapshot_id)
        .await
        .map_err(|e| status(e.kind(), &e))?;
    Ok(Response::new(v1::DeleteSnapshotResponse { freed_bytes }))
}

pub(super) async fn estimate_snapshot(
    svc: &AgentService,
    request: v1::EstimateSnapshotRequest,
) -> Result<Response<v1::SnapshotEstimate>, Status> {
    let e = svc
        .snapshots()
        .estimate(&request.instance_id)
        .await
        .map_err(|e| status(e.kind(), &e))?;
    Ok(Response::new(v1::SnapshotEstimate {
        database_bytes: e.database_bytes,
        new_filestore_bytes: e.new_filestore_bytes,
        compression_ratio: e.compression_ratio,
        estimated_bytes: e.estimated_bytes,
        free_disk_bytes: e.free_disk_bytes,
    }))
}

pub(super) async fn apply_retention(
    svc: &AgentService,
    request: v1::ApplyRetentionRequest,
) -> Result<Response<v1::ApplyRetentionResponse>, Status> {
    let policy = request.policy.unwrap_or_default();
    let outcome = svc
        .snapshots()
        .apply_retention(
            &request.instance_id,
            RetentionPolicy {
                keep_last: policy.keep_last,
                keep_days: policy.keep_days,
            },
        )
        .await
        .map_err(|e| status(e.kind(), &e))?;
    Ok(Response::new(v1::ApplyRetentionResponse {
        deleted_snapshot_ids: outcome.deleted,
        freed_bytes: outcome.freed_bytes,
    }))
}

pub(super) async fn export_snapshot(
    svc: &AgentService,
    request: v1::ExportSnapshotRequest,
) -> Result<Response<EventStream<v1::ExportChunk>>, Status> {
    check_snapshot_id(&request.snapshot_id)?;
    let format = match request.format() {
        v1::ExportFormat::OdooZip => ExportFormat::OdooZip,
        v1::ExportFormat::TarZst | v1::ExportFormat::Unspecified => ExportFormat::TarZst,
    };
    let snapshots = svc.snapshots().clone();
    let dir = snapshots
        .export_dir(&request.instance_id)
        .map_err(|e| Status::not_found(e.to_string()))?;
    std::fs::create_dir_all(&dir)
        .map_err(|e| Status::internal(format!("cannot create {}: {e}", dir.display())))?;
    let dest = dir.join(format!(
        "export-{}-{}.{}",
        request.snapshot_id,
        now_ms(),
        format.extension()
    ));
    let (tx, rx) = mpsc::channel(8);
    // The answer starts at once (a large export takes longer than a request deadline);
    // the file is written completely and verified before its first byte is sent, so a
    // corrupt snapshot ends the stream with an error instead of truncating the archive.
    tokio::spawn(async move {
        use tokio::io::AsyncReadExt;
        let exported = match snapshots
            .export(
                &request.instance_id,
                &request.snapshot_id,
                format,
                &dest,
                &CancellationToken::new(),
            )
            .await
        {
            Ok(exported) => exported,
            Err(e) => {
                let _ = tx.send(Err(status(e.kind(), &e))).await;
                return;
            }
        };
        let mut total_bytes = exported.bytes;
        let result = async {
            let mut f = tokio::fs::File::open(&exported.path).await?;
            loop {
                let mut buf = vec![0u8; EXPORT_CHUNK];
                let n = f.read(&mut buf).await?;
                if n == 0 && total_bytes == 0 {
                    return Ok(());
                }
                buf.truncate(n);
                let chunk = v1::ExportChunk {
                    data: buf,
                    total_bytes: std::mem::take(&mut total_bytes),
                };
                if tx.send(Ok(chunk)).await.is_err() || n == 0 {
                    return Ok(());
                }
            }
        }
        .await;
        if let Err(e) = result {
            let e: std::io::Error = e;
            let _ = tx
                .send(Err(Status::internal(format!(
                    "reading {}: {e}",
                    exported.path.display()
                ))))
                .await;
        }
        let _ = tokio::fs::remove_file(&exported.path).await;
    });
    Ok(Response::new(ReceiverStream::new(rx)))
}

pub(super) async fn verify_snapshot(
    svc: &AgentService,
    request: v1::VerifySnapshotRequest,
) -> Result<Response<EventStream<v1::VerifySnapshotEvent>>, Status> {
    check_snapshot_id(&request.snapshot_id)?;
    let snapshots = svc.snapshots().clone();
    let (tx, rx) = mpsc::channel(2);
    // Reading a large snapshot back takes longer than a request deadline: the answer
    // starts at once and its one event comes at the end.
    tokio::spawn(async move {
        let item = match snapshots
            .verify(&request.instance_id, &request.snapshot_id)
            .await
        {
            Ok(report) => Ok(v1::VerifySnapshotEvent {
                seq: 1,
                at: now_ms(),
                kind: Some(v1::verify_snapshot_event::Kind::Verified(
                    v1::SnapshotVerified {
                        parts: report.parts,
                        blobs: report.blobs,
                        bytes: report.bytes,
                    },
                )),
            }),
            Err(e) => Err(status(e.kind(), &e)),
        };
        let _ = tx.send(item).await;
    });
    Ok(Response::new(ReceiverStream::new(rx)))
}

/// Receives an uploaded archive into the instance's store (`tmp/`), then imports it. The
/// upload is written as it arrives, never held in memory.
pub(super) async fn import_snapshot(
    svc: &AgentService,
    mut inbound: tonic::Streaming<v1::ImportChunk>,
) -> Result<Response<EventStream<v1::SnapshotEvent>>, Status> {
    use tokio::io::AsyncWriteExt;
    let first = inbound
        .message()
        .await?
        .ok_or_else(|| Status::invalid_argument("the import stream is empty"))?;
    check_snapshot_id(&first.snapshot_id)?;
    if svc.config.instance(&first.instance_id).is_none() {
        return Err(Status::not_found(format!(
            "instance {:?} is not declared in this agent's configuration",
            super::truncate(&first.instance_id)
        )));
    }
    let snapshots = svc.snapshots().clone();
    let dir = snapshots
        .export_dir(&first.instance_id)
        .map_err(|e| Status::not_found(e.to_string()))?;
    std::fs::create_dir_all(&dir)
        .map_err(|e| Status::internal(format!("cannot create {}: {e}", dir.display())))?;
    let upload = dir.join(format!("upload-{}-{}", first.snapshot_id, now_ms()));
    let (tx, rx) = mpsc::channel(64);
    tokio::spawn(async move {
        let (instance, id) = (first.instance_id.clone(), first.snapshot_id.clone());
        let received = async {
            let mut file = tokio::fs::File::create(&upload).await.map_err(|e| {
                Status::internal(format!("cannot create {}: {e}", upload.display()))
            })?;
            let write_err = |e: std::io::Error| {
                let message = format!("writing {}: {e}", upload.display());
                if e.raw_os_error() == Some(28) {
                    Status::resource_exhausted(message)
                } else {
                    Status::internal(message)
                }
            };
            file.write_all(&first.data).await.map_err(write_err)?;
            let mut bytes = first.data.len() as u64;
            while let Some(chunk) = inbound.message().await? {
                file.write_all(&chunk.data).await.map_err(write_err)?;
                bytes += chunk.data.len() as u64;
            }
            file.sync_all().await.map_err(write_err)?;
            Ok::<u64, Status>(bytes)
        }
        .await;
        let bytes = match received {
            Ok(bytes) => bytes,
            Err(e) => {
                let _ = tokio::fs::remove_file(&upload).await;
                let _ = tx.send(Err(e)).await;
                return;
            }
        };
        let seq = std::sync::atomic::AtomicU64::new(0);
        let event = |kind| v1::SnapshotEvent {
            seq: seq.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1,
            at: now_ms(),
            kind: Some(kind),
        };
        let _ = tx
            .send(Ok(event(v1::snapshot_event::Kind::Log(v1::LogLine {
                step: "import".to_owned(),
                line: format!("received {bytes} bytes"),
            }))))
            .await;
        let result = snapshots
            .import(
                &instance,
                &id,
                &upload,
                &crate::snapshot::no_progress,
                &CancellationToken::new(),
            )
            .await;
        let _ = tokio::fs::remove_file(&upload).await;
        let item = match result {
            Ok(meta) => Ok(event(v1::snapshot_event::Kind::Done(snapshot_to_proto(
                &meta,
            )))),
            Err(e) => {
                tracing::warn!(instance = %instance, snapshot = %id, "import failed: {e}");
                Err(status(e.kind(), &e))
            }
        };
        let _ = tx.send(item).await;
    });
    Ok(Response::new(ReceiverStream::new(rx)))
}
