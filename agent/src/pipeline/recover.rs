//! Start-up recovery: every deployment the journal still shows as running was interrupted
//! by a crash or restart. Each is finished in the safe direction before new work starts:
//! backwards (old colour serving, new one removed, database put back) when traffic had not
//! switched yet, forwards (old colour removed) when it had.

use crate::journal::{Phase, RunRecord, RunStatus};
use crate::traffic::{Color, Route};

use super::containers::{container_name, update_container_name};
use super::events::{self, Event, EventKind, EventLog, StepStatus};
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
    // The step ends now; it ran from the start its journaled events show.
    let journaled: Vec<Event> = p.journal.events(&record.id, 1)?;
    let started_at = step_started_at(&journaled, &step);
    log.emit(EventKind::Step {
        name: step.clone(),
        status: if status == RunStatus::Failed {
            StepStatus::Failed
        } else {
            StepStatus::Completed
        },
        started_at,
        completed_at: Some(now),
        duration_ms: started_at.map(|s| u64::try_from(now - s).unwrap_or(0)),
        message: Some(message.clone()),
    });
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

/// When the last run of `step` started, from a run's journaled events.
fn step_started_at(events: &[Event], step: &str) -> Option<i64> {
    events.iter().rev().find_map(|e| match &e.kind {
        EventKind::Step {
            name,
            status: StepStatus::Running,
            started_at,
            ..
        } if name == step => Some(started_at.unwrap_or(e.at)),
        _ => None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn step(seq: u64, name: &str, status: StepStatus, started_at: Option<i64>) -> Event {
        Event {
            seq,
            at: 1000 + seq as i64,
            kind: EventKind::Step {
                name: name.to_owned(),
                status,
                started_at,
                completed_at: None,
                duration_ms: None,
                message: None,
            },
        }
    }

    #[test]
    fn an_interrupted_step_keeps_its_start() {
        let events = vec![
            step(1, events::BUILD_IMAGE, StepStatus::Pending, None),
            step(2, events::CLONE_REPOSITORY, StepStatus::Running, Some(500)),
            step(
                3,
                events::CLONE_REPOSITORY,
                StepStatus::Completed,
                Some(500),
            ),
            step(4, events::BUILD_IMAGE, StepStatus::Running, Some(700)),
            Event {
                seq: 5,
                at: 1005,
                kind: EventKind::Log {
                    step: events::BUILD_IMAGE.to_owned(),
                    line: "Step 1/3".to_owned(),
                },
            },
        ];
        assert_eq!(step_started_at(&events, events::BUILD_IMAGE), Some(700));
        assert_eq!(
            step_started_at(&events, events::CLONE_REPOSITORY),
            Some(500)
        );
        // Never started (interrupted before its first event): no start to report.
        assert_eq!(step_started_at(&events, events::PUSH_IMAGE), None);
        // A running event without its own time: the event's time.
        let bare = vec![step(1, events::PUSH_IMAGE, StepStatus::Running, None)];
        assert_eq!(step_started_at(&bare, events::PUSH_IMAGE), Some(1001));
    }
}
