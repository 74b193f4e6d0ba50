//! Start-up recovery: every deployment the journal still shows as running was interrupted
//! by a crash or restart. Each is finished in the safe direction before new work starts:
//! backwards (old colour serving, new one removed, database put back) when traffic had not
//! switched yet, forwards (old colour removed) when it had.

use crate::journal::{Phase, RunRecord, RunStatus};
use crate::traffic::{Color, Route};

use super::containers::{container_name, update_container_name};
use super::events::{self, EventKind, EventLog, StepStatus};
use super::{Pipeline, PipelineError};

pub(super) async fn recover(p: &Pipeline) -> Result<usize, PipelineError> {
    let runs = p.journal.unfinished_runs()?;
    let count = runs.len();
    for record in runs {
        tracing::warn!(
            deployment = %record.id,
            instance = %record.instance,
            "finishing a deployment interrupted during {:?}",
            record.step.as_deref().unwrap_or("start-up")
        );
        recover_one(p, record).await?;
    }
    // Work trees of finished or interrupted deployments are disposable.
    let _ = std::fs::remove_dir_all(p.config.state_dir.join("work"));
    Ok(count)
}

async fn recover_one(p: &Pipeline, mut record: RunRecord) -> Result<(), PipelineError> {
    let log = EventLog::new(
        &record.id,
        p.journal.clone(),
        p.journal.last_seq(&record.id)?,
    );
    let step = record
        .step
        .clone()
        .unwrap_or_else(|| events::PRE_DEPLOY_SNAPSHOT.to_owned());
    let mut notes: Vec<String> = Vec::new();
    let status;
    match p.config.instance(&record.instance).cloned() {
        None => {
            notes.push("its instance is no longer declared in the configuration".to_owned());
            status = RunStatus::Failed;
        }
        Some(inst) => {
            let state = p.journal.instance(&inst.id)?;
            let target = record.target_color.unwrap_or(Color::Blue);
            let previous = record.previous_color;
            if record.phase == Phase::Switched {
                // The new colour took the traffic: finish the clean-up.
                let old = container_name(&inst.id, target.other());
                let _ = p.engine.remove(&old).await;
                if let Some(snapshot) = &record.safety_snapshot {
                    if let Ok(Some(copy)) =
                        p.snapshots.pending_safety_copy(&inst.id, snapshot).await
                    {
                        let _ = copy.discard().await;
                    }
                }
                notes.push(format!(
                    "traffic had switched to {target}; the old colour was removed"
                ));
                status = RunStatus::Succeeded;
            } else {
                let _ = p.engine.remove(&container_name(&inst.id, target)).await;
                let _ = p.engine.remove(&update_container_name(&inst.id)).await;
                if record.phase >= Phase::Maintenance {
                    let mut restored = false;
                    if let Some(snapshot) = &record.safety_snapshot {
                        match p.snapshots.pending_safety_copy(&inst.id, snapshot).await {
                            Ok(Some(copy)) => match copy.swap_back().await {
                                Ok(()) => {
                                    restored = true;
                                    notes.push(
                                        "the database was put back from the safety copy".to_owned(),
                                    );
                                }
                                Err(e) => {
                                    notes.push(format!("swapping the safety copy back failed: {e}"))
                                }
                            },
                            Ok(None) => {}
                            Err(e) => notes.push(format!("safety copy: {e}")),
                        }
                        if !restored && record.phase >= Phase::ModulesUpdating {
                            let cancel = tokio_util::sync::CancellationToken::new();
                            let sink = |_: &str| {};
                            match p
                                .snapshots
                                .restore(&inst.id, snapshot, &sink, &cancel)
                                .await
                            {
                                Ok(()) => {
                                    notes.push(format!("pre-deploy snapshot {snapshot} restored"))
                                }
                                Err(e) => notes.push(format!("RESTORE FAILED: {e}")),
                            }
                        }
                    }
                }
                match previous {
                    Some(old) => {
                        let name = container_name(&inst.id, old);
                        match p.engine.start(&name).await {
                            Ok(()) => notes.push(format!("{old} serves again")),
                            Err(e) => notes.push(format!("cannot restart {name}: {e}")),
                        }
                        if let Err(e) = p.traffic.route(&inst, Route::Color(old)).await {
                            notes.push(format!("cannot route traffic to {old}: {e}"));
                        }
                    }
                    None => {
                        let _ = p.traffic.remove(&inst).await;
                    }
                }
                // The journal's instance state only changes at the switch, so it already
                // names the previous colour.
                debug_assert_eq!(state.active_color, previous);
                status = RunStatus::Failed;
            }
        }
    }
    let message = format!(
        "interrupted: the agent restarted during {step}; {}",
        notes.join("; ")
    );
    let now = events::now_ms();
    if status == RunStatus::Failed {
        log.emit(EventKind::Step {
            name: step.clone(),
            status: StepStatus::Failed,
            started_at: None,
            completed_at: Some(now),
            duration_ms: None,
            message: Some(message.clone()),
        });
    } else {
        log.emit(EventKind::Step {
            name: step.clone(),
            status: StepStatus::Completed,
            started_at: None,
            completed_at: Some(now),
            duration_ms: None,
            message: Some(message.clone()),
        });
    }
    log.log(&step, &message);
    let active = p.journal.instance(&record.instance)?.active_color;
    log.emit(EventKind::Finished {
        status,
        message: message.clone(),
        active_color: active,
        duration_ms: u64::try_from(now - record.started_at).unwrap_or(0),
    });
    record.status = status;
    record.phase = Phase::Done;
    record.finished_at = Some(now);
    record.message = Some(message);
    p.journal.put_run(&record)?;
    Ok(())
}
