//! The pipeline's view of `crate::snapshot`: pre-deploy snapshots, safety copies, restores.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tokio_util::sync::CancellationToken;

use crate::snapshot::{CreateSnapshot, SafetyCopy, SnapshotKind, SnapshotProgress, Snapshots};

use super::{LineFn, SafetyCopyPort, SnapshotPort};

pub fn port(snapshots: Arc<Snapshots>) -> Arc<dyn SnapshotPort> {
    Arc::new(Port { snapshots })
}

struct Port {
    snapshots: Arc<Snapshots>,
}

/// Turns snapshot progress into log lines: every message, and each phase at every tenth.
fn progress_lines(on_line: &LineFn) -> impl Fn(SnapshotProgress) + Send + Sync + '_ {
    let reported: Mutex<HashMap<&'static str, u64>> = Mutex::new(HashMap::new());
    move |p| match p {
        SnapshotProgress::Log(line) => on_line(&line),
        SnapshotProgress::Phase { phase, done, total } => {
            let tenth = done.saturating_mul(10).checked_div(total).unwrap_or(10);
            let mut seen = reported
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            let last = seen.entry(phase).or_insert(u64::MAX);
            if *last != tenth {
                *last = tenth;
                on_line(&format!("{phase}: {done}/{total}"));
            }
        }
    }
}

#[async_trait::async_trait]
impl SnapshotPort for Port {
    async fn pre_deploy(
        &self,
        instance: &str,
        snapshot_id: &str,
        deployment_id: &str,
        commit_sha: Option<&str>,
        on_line: &LineFn,
        cancel: &CancellationToken,
    ) -> Result<u64, String> {
        let request = CreateSnapshot {
            id: snapshot_id.to_owned(),
            kind: SnapshotKind::PreDeploy,
            deployment_id: Some(deployment_id.to_owned()),
            commit_sha: commit_sha.map(str::to_owned),
        };
        let progress = progress_lines(on_line);
        let meta = self
            .snapshots
            .create(instance, request, &progress, cancel)
            .await
            .map_err(|e| e.to_string())?;
        on_line(&format!(
            "{} files ({} bytes of filestore), {} bytes stored (estimated {})",
            meta.file_count, meta.filestore_bytes, meta.size_bytes, meta.estimated_bytes
        ));
        Ok(meta.size_bytes)
    }

    async fn safety_copy(
        &self,
        instance: &str,
        since: &str,
    ) -> Result<Box<dyn SafetyCopyPort>, String> {
        let copy = self
            .snapshots
            .safety_copy(instance, since)
            .await
            .map_err(|e| e.to_string())?;
        Ok(Box::new(Copy(copy)))
    }

    async fn pending_safety_copy(
        &self,
        instance: &str,
        _since: &str,
    ) -> Result<Option<Box<dyn SafetyCopyPort>>, String> {
        let copy = self
            .snapshots
            .pending_safety_copy(instance)
            .await
            .map_err(|e| e.to_string())?;
        Ok(copy.map(|c| Box::new(Copy(c)) as Box<dyn SafetyCopyPort>))
    }

    async fn restore(
        &self,
        instance: &str,
        snapshot_id: &str,
        on_line: &LineFn,
        cancel: &CancellationToken,
    ) -> Result<(), String> {
        let progress = progress_lines(on_line);
        self.snapshots
            .restore(instance, snapshot_id, &progress, cancel)
            .await
            .map_err(|e| e.to_string())
    }
}

struct Copy(SafetyCopy);

#[async_trait::async_trait]
impl SafetyCopyPort for Copy {
    async fn swap_back(self: Box<Self>) -> Result<(), String> {
        self.0.swap_back().await.map_err(|e| e.to_string())
    }

    async fn discard(self: Box<Self>) -> Result<(), String> {
        self.0.discard().await.map_err(|e| e.to_string())
    }
}
