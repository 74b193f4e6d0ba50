//! Recovery at agent start: whatever an interrupted run left is finished or rolled back
//! before new work is accepted. Partial snapshots, imports and exports are removed;
//! restores past their point of no return are finished, earlier ones rolled back; safety
//! copies being made are dropped, ones being swapped back or discarded are finished, and
//! complete ones are left for the pipeline (`Snapshots::pending_safety_copy`); temporary
//! databases named in markers are dropped; orphan blobs are collected.

use super::catalog;
use super::disk;
use super::dump;
use super::journal::{self, Marker, RestorePhase, SafetyPhase};
use super::restore::{make_filestore_equal, roll_back_prepare, swap_in, wanted_of};
use super::safety;
use super::{blocking, Ctx, Snapshots};

#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct RecoveryReport {
    /// Partial snapshots, imports, exports and staging directories removed.
    pub removed_partial: u64,
    /// `instance/snapshot` of restores finished or rolled back.
    pub restores_finished: Vec<String>,
    pub restores_rolled_back: Vec<String>,
    /// Instances with a complete safety copy awaiting the pipeline's decision.
    pub safety_copies_pending: Vec<String>,
    /// Safety copies whose creation, swap back or discard was completed or undone.
    pub safety_copies_settled: Vec<String>,
    pub blobs_removed: u64,
}

#[derive(Debug, thiserror::Error)]
#[error("recovery of instance {instance}: {message}")]
pub struct RecoverError {
    pub instance: String,
    pub message: String,
}

impl Snapshots {
    /// Finishes or rolls back what an interrupted run left, for every declared instance.
    /// Every instance is tried; the first failure is returned after the others.
    pub async fn recover(&self) -> Result<RecoveryReport, RecoverError> {
        let mut report = RecoveryReport::default();
        let mut first_error = None;
        for inst in &self.config.instances {
            let ctx = match self.ctx(&inst.id) {
                Ok(c) => c,
                Err(e) => {
                    first_error.get_or_insert(RecoverError {
                        instance: inst.id.clone(),
                        message: e.to_string(),
                    });
                    continue;
                }
            };
            if let Err(message) = self.recover_instance(&ctx, &mut report).await {
                tracing::error!(instance = %inst.id, "recovery: {message}");
                first_error.get_or_insert(RecoverError {
                    instance: inst.id.clone(),
                    message,
                });
            }
        }
        match first_error {
            Some(e) => Err(e),
            None => Ok(report),
        }
    }

    async fn recover_instance(&self, ctx: &Ctx, report: &mut RecoveryReport) -> Result<(), String> {
        let _live = ctx.locks.live.lock().await;
        let _store = ctx.locks.store.write().await;
        let c = ctx.clone();
        let markers = blocking(move || journal::list(&c.journal_dir()))
            .await
            .map_err(|e| e.to_string())?;
        for (path, marker) in markers {
            match marker {
                Marker::Restore(m) => {
                    let name = format!("{}/{}", ctx.instance, m.snapshot_id);
                    if m.phase == RestorePhase::Prepare {
                        roll_back_prepare(&self.pg, &m, &path).await?;
                        report.restores_rolled_back.push(name);
                        continue;
                    }
                    if m.phase == RestorePhase::DropOld {
                        dump::drop_if_exists(&self.pg, &m.old_db)
                            .await
                            .map_err(|e| e.to_string())?;
                        journal::remove(&path).map_err(|e| e.to_string())?;
                        continue;
                    }
                    // Everything was verified and staged: go forward.
                    swap_in(&self.pg, &m.database, &m.tmp_db, &m.old_db)
                        .await
                        .map_err(|e| e.to_string())?;
                    let (c, id) = (ctx.clone(), m.snapshot_id.clone());
                    let staging = m.staging.clone();
                    blocking(move || {
                        let manifest =
                            catalog::published_manifest(&c, &id).map_err(|e| e.to_string())?;
                        make_filestore_equal(&c, &wanted_of(&manifest), None)
                            .map_err(|e| e.to_string())?;
                        disk::remove_all(&staging).map_err(|e| e.to_string())
                    })
                    .await?;
                    dump::drop_if_exists(&self.pg, &m.old_db)
                        .await
                        .map_err(|e| e.to_string())?;
                    journal::remove(&path).map_err(|e| e.to_string())?;
                    report.restores_finished.push(name);
                }
                Marker::Safety(m) => match m.phase {
                    SafetyPhase::Ready => report.safety_copies_pending.push(ctx.instance.clone()),
                    SafetyPhase::Copying | SafetyPhase::Discard => {
                        safety::discard(&self.pg, &m, &path)
                            .await
                            .map_err(|e| e.to_string())?;
                        report.safety_copies_settled.push(ctx.instance.clone());
                    }
                    SafetyPhase::SwapBack => {
                        safety::swap_back(&self.pg, ctx, &m, &path)
                            .await
                            .map_err(|e| e.to_string())?;
                        report.safety_copies_settled.push(ctx.instance.clone());
                    }
                },
                Marker::Import { tmp_db } => {
                    dump::drop_if_exists(&self.pg, &tmp_db)
                        .await
                        .map_err(|e| e.to_string())?;
                    journal::remove(&path).map_err(|e| e.to_string())?;
                }
            }
        }
        let c = ctx.clone();
        let (removed, blobs) = blocking(move || {
            let s = |e: super::errors::FsError| e.to_string();
            let mut removed = 0;
            for p in disk::list_dir(&c.tmp_dir()).map_err(s)? {
                disk::remove_all(&p).map_err(s)?;
                removed += 1;
            }
            let prefix = format!(".ocore-staging-{}-", c.database);
            for p in disk::list_dir(&c.filestore_parent).map_err(s)? {
                let name = p.file_name().and_then(|n| n.to_str()).unwrap_or("");
                if name.starts_with(&prefix) {
                    disk::remove_all(&p).map_err(s)?;
                    removed += 1;
                }
            }
            let (blobs, _) = catalog::collect_garbage(&c).map_err(|e| e.to_string())?;
            Ok::<_, String>((removed, blobs))
        })
        .await?;
        report.removed_partial += removed;
        report.blobs_removed += blobs;
        Ok(())
    }
}
