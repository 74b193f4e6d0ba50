//! The agent's gRPC service: the `ocore.agent.v1.Agent` contract as this agent version
//! implements it. Requests are converted from protobuf here and nowhere else.

use std::sync::Arc;

use ocore_proto::v1::{
    self, AgentInfo, InstallCertificateResponse, InstanceDecl, InstanceStatus, RenewalCsr,
};
use ocore_proto::Agent;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};

use crate::config::AgentConfig;
use crate::pipeline::Pipeline;
use crate::snapshot::Snapshots;
use crate::tls::{IdentityError, TlsState};

mod deploy;
mod snapshots;

/// Shared state behind every RPC.
pub struct AgentService {
    config: Arc<AgentConfig>,
    tls: Arc<TlsState>,
    started_at: i64,
    snapshots: Arc<Snapshots>,
    pipeline: Arc<Pipeline>,
}

impl AgentService {
    pub fn new(
        config: Arc<AgentConfig>,
        tls: Arc<TlsState>,
        started_at: i64,
        snapshots: Arc<Snapshots>,
        pipeline: Arc<Pipeline>,
    ) -> Self {
        Self {
            config,
            tls,
            started_at,
            snapshots,
            pipeline,
        }
    }

    pub fn snapshots(&self) -> &Arc<Snapshots> {
        &self.snapshots
    }

    fn declared(&self, instance_id: &str) -> Result<(), Status> {
        match self.config.instance(instance_id) {
            Some(_) => Ok(()),
            None => Err(Status::not_found(format!(
                "instance {:?} is not declared in this agent's configuration",
                truncate(instance_id)
            ))),
        }
    }
}

/// Bounds identifiers echoed back in errors, so hostile input cannot inflate responses.
fn truncate(s: &str) -> String {
    s.chars().take(80).collect()
}

fn identity_status(e: IdentityError) -> Status {
    match e {
        IdentityError::NoPendingRenewal => Status::failed_precondition(e.to_string()),
        IdentityError::Tls(_) => Status::invalid_argument(e.to_string()),
        other => Status::internal(other.to_string()),
    }
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_owned())
        .unwrap_or_default()
}

pub(crate) type EventStream<T> = ReceiverStream<Result<T, Status>>;

#[tonic::async_trait]
impl Agent for AgentService {
    async fn get_info(
        &self,
        _request: Request<v1::GetInfoRequest>,
    ) -> Result<Response<AgentInfo>, Status> {
        let identity = self.tls.current();
        let instances = self
            .config
            .instances
            .iter()
            .map(|i| InstanceDecl {
                id: i.id.clone(),
                database: i.database.clone(),
                data_dir: i.data_dir.display().to_string(),
                base_image: i.base_image.clone(),
                public_port: u32::from(i.public_port),
            })
            .collect();
        Ok(Response::new(AgentInfo {
            name: identity.name.clone(),
            version: env!("CARGO_PKG_VERSION").to_owned(),
            hostname: hostname(),
            instances,
            started_at: self.started_at,
            certificate_not_after: identity.cert.not_after.saturating_mul(1000),
            running: self
                .pipeline
                .running()
                .into_iter()
                .map(|(instance_id, deployment_id)| v1::RunningDeployment {
                    instance_id,
                    deployment_id,
                })
                .collect(),
        }))
    }

    async fn get_instance_status(
        &self,
        request: Request<v1::InstanceStatusRequest>,
    ) -> Result<Response<InstanceStatus>, Status> {
        let id = request.into_inner().instance_id;
        self.declared(&id)?;
        deploy::instance_status(self, id).await
    }

    type DeployStream = EventStream<v1::DeployEvent>;
    async fn deploy(
        &self,
        request: Request<v1::DeployRequest>,
    ) -> Result<Response<Self::DeployStream>, Status> {
        self.declared(&request.get_ref().instance_id)?;
        deploy::deploy(self, request.into_inner()).await
    }

    type AttachStream = EventStream<v1::DeployEvent>;
    async fn attach(
        &self,
        request: Request<v1::AttachRequest>,
    ) -> Result<Response<Self::AttachStream>, Status> {
        deploy::attach(self, request.into_inner()).await
    }

    async fn cancel(
        &self,
        request: Request<v1::CancelRequest>,
    ) -> Result<Response<v1::CancelResponse>, Status> {
        deploy::cancel(self, request.into_inner()).await
    }

    type RollbackStream = EventStream<v1::DeployEvent>;
    async fn rollback(
        &self,
        request: Request<v1::RollbackRequest>,
    ) -> Result<Response<Self::RollbackStream>, Status> {
        self.declared(&request.get_ref().instance_id)?;
        deploy::rollback(self, request.into_inner()).await
    }

    type CreateSnapshotStream = EventStream<v1::SnapshotEvent>;
    async fn create_snapshot(
        &self,
        request: Request<v1::CreateSnapshotRequest>,
    ) -> Result<Response<Self::CreateSnapshotStream>, Status> {
        self.declared(&request.get_ref().instance_id)?;
        snapshots::create_snapshot(self, request.into_inner()).await
    }

    async fn list_snapshots(
        &self,
        request: Request<v1::ListSnapshotsRequest>,
    ) -> Result<Response<v1::ListSnapshotsResponse>, Status> {
        self.declared(&request.get_ref().instance_id)?;
        snapshots::list_snapshots(self, request.into_inner()).await
    }

    async fn pin_snapshot(
        &self,
        request: Request<v1::PinSnapshotRequest>,
    ) -> Result<Response<v1::Snapshot>, Status> {
        self.declared(&request.get_ref().instance_id)?;
        snapshots::pin_snapshot(self, request.into_inner()).await
    }

    async fn delete_snapshot(
        &self,
        request: Request<v1::DeleteSnapshotRequest>,
    ) -> Result<Response<v1::DeleteSnapshotResponse>, Status> {
        self.declared(&request.get_ref().instance_id)?;
        snapshots::delete_snapshot(self, request.into_inner()).await
    }

    async fn estimate_snapshot(
        &self,
        request: Request<v1::EstimateSnapshotRequest>,
    ) -> Result<Response<v1::SnapshotEstimate>, Status> {
        self.declared(&request.get_ref().instance_id)?;
        snapshots::estimate_snapshot(self, request.into_inner()).await
    }

    async fn apply_retention(
        &self,
        request: Request<v1::ApplyRetentionRequest>,
    ) -> Result<Response<v1::ApplyRetentionResponse>, Status> {
        self.declared(&request.get_ref().instance_id)?;
        snapshots::apply_retention(self, request.into_inner()).await
    }

    type ExportSnapshotStream = EventStream<v1::ExportChunk>;
    async fn export_snapshot(
        &self,
        request: Request<v1::ExportSnapshotRequest>,
    ) -> Result<Response<Self::ExportSnapshotStream>, Status> {
        self.declared(&request.get_ref().instance_id)?;
        snapshots::export_snapshot(self, request.into_inner()).await
    }

    type VerifySnapshotStream = EventStream<v1::VerifySnapshotEvent>;
    async fn verify_snapshot(
        &self,
        request: Request<v1::VerifySnapshotRequest>,
    ) -> Result<Response<Self::VerifySnapshotStream>, Status> {
        self.declared(&request.get_ref().instance_id)?;
        snapshots::verify_snapshot(self, request.into_inner()).await
    }

    type ImportSnapshotStream = EventStream<v1::SnapshotEvent>;
    async fn import_snapshot(
        &self,
        request: Request<tonic::Streaming<v1::ImportChunk>>,
    ) -> Result<Response<Self::ImportSnapshotStream>, Status> {
        snapshots::import_snapshot(self, request.into_inner()).await
    }

    async fn request_certificate_renewal(
        &self,
        _request: Request<v1::RenewalRequest>,
    ) -> Result<Response<RenewalCsr>, Status> {
        let csr_pem = self.tls.begin_renewal().map_err(identity_status)?;
        tracing::info!("generated a new key pair for certificate renewal");
        Ok(Response::new(RenewalCsr { csr_pem }))
    }

    async fn install_certificate(
        &self,
        request: Request<v1::InstallCertificateRequest>,
    ) -> Result<Response<InstallCertificateResponse>, Status> {
        let info = self
            .tls
            .install(&request.into_inner().certificate_pem)
            .map_err(identity_status)?;
        tracing::info!(
            not_after = info.not_after,
            fingerprint = %info.fingerprint,
            "installed renewed certificate"
        );
        Ok(Response::new(InstallCertificateResponse {
            not_after: info.not_after.saturating_mul(1000),
        }))
    }
}
