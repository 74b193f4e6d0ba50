//! Snapshot RPCs: protobuf in, `crate::snapshot` calls, protobuf out.

use ocore_proto::v1;
use tonic::{Response, Status};

use super::{not_yet, AgentService, EventStream};

pub(super) async fn create_snapshot(
    _svc: &AgentService,
    _request: v1::CreateSnapshotRequest,
) -> Result<Response<EventStream<v1::SnapshotEvent>>, Status> {
    Err(not_yet("snapshots"))
}

pub(super) async fn list_snapshots(
    _svc: &AgentService,
    _request: v1::ListSnapshotsRequest,
) -> Result<Response<v1::ListSnapshotsResponse>, Status> {
    Err(not_yet("snapshots"))
}

pub(super) async fn pin_snapshot(
    _svc: &AgentService,
    _request: v1::PinSnapshotRequest,
) -> Result<Response<v1::Snapshot>, Status> {
    Err(not_yet("snapshots"))
}

pub(super) async fn delete_snapshot(
    _svc: &AgentService,
    _request: v1::DeleteSnapshotRequest,
) -> Result<Response<v1::DeleteSnapshotResponse>, Status> {
    Err(not_yet("snapshots"))
}

pub(super) async fn estimate_snapshot(
    _svc: &AgentService,
    _request: v1::EstimateSnapshotRequest,
) -> Result<Response<v1::SnapshotEstimate>, Status> {
    Err(not_yet("snapshots"))
}

pub(super) async fn apply_retention(
    _svc: &AgentService,
    _request: v1::ApplyRetentionRequest,
) -> Result<Response<v1::ApplyRetentionResponse>, Status> {
    Err(not_yet("snapshots"))
}

pub(super) async fn export_snapshot(
    _svc: &AgentService,
    _request: v1::ExportSnapshotRequest,
) -> Result<Response<EventStream<v1::ExportChunk>>, Status> {
    Err(not_yet("snapshots"))
}
