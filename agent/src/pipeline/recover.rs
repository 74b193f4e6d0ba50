//! Start-up recovery: every deployment the journal still shows as running was interrupted
//! by a crash or restart. Each is finished in the safe direction before new work starts:
//! backwards (old colour serving, new one removed, database put back) when traffic had not
//! switched yet, forwards (old colour removed) when it had.

use crate::config::InstanceConfig;
use crate::journal::{InstanceState, Phase, RunRecord, RunStatus};
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
    let status = match p.config.instance(&record.instance).cloned() {
        None => {
            notes.push("its instance is no longer declared in the configuration".to_owned());
            RunStatus::Failed
        }
        Some(inst) => {
            let state = p.journal.instance(&inst.id)?;
            match direction(&record, &state) {
                Direction::Forwards { target } => {
                    forwards(p, &inst, &record, &state, target, &mut notes).await?;
                    RunStatus::Succeeded
                }
                Direction::Backwards { started, previous } => {
                    backwards(p, &inst, &record, started, previous, &mut notes).await;
                    RunStatus::Failed
                }
            }
        }
    };
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

/// The new colour took the traffic: remove the old one, drop the safety copy, and make
/// sure the journal names the new colour as serving.
async fn forwards(
    p: &Pipeline,
    inst: &InstanceConfig,
    record: &RunRecord,
    state: &InstanceState,
    target: Color,
    notes: &mut Vec<String>,
) -> Result<(), PipelineError> {
    let _ = p
        .engine
        .remove(&container_name(&inst.id, target.other()))
        .await;
    if let Some(snapshot) = &record.safety_snapshot {
        if let Ok(Some(copy)) = p.snapshots.pending_safety_copy(&inst.id, snapshot).await {
            let _ = copy.discard().await;
        }
    }
    if state.active_color != Some(target) {
        // Interrupted between journaling the switch and the new serving state.
        p.journal.put_instance(
            &inst.id,
            &InstanceState {
                active_color: Some(target),
                image: record.image.clone(),
                commit_sha: record.commit_sha.clone(),
                deployment_id: Some(record.id.clone()),
                // The mode the run switched with.
                websocket: record.websocket.unwrap_or(state.websocket),
            },
        )?;
    }
    notes.push(format!(
        "traffic had switched to {target}; the old colour was removed"
    ));
    Ok(())
}

/// Traffic had not switched: remove what the run started, put the database back if the
/// run got to the maintenance window, and serve the previous colour again.
async fn backwards(
    p: &Pipeline,
    inst: &InstanceConfig,
    record: &RunRecord,
    started: Option<Color>,
    previous: Option<Color>,
    notes: &mut Vec<String>,
) {
    if let Some(started) = started {
        let _ = p.engine.remove(&container_name(&inst.id, started)).await;
        let _ = p.engine.remove(&update_container_name(&inst.id)).await;
    }
    // The never-started container an image inspection may have left.
    let _ = p.engine.remove(&super::image::probe_name(&inst.id)).await;
    if record.created_database {
        // The run asked Odoo to create the database: the next deployment creates it again,
        // from nothing, rather than finding a half-initialised one.
        match p.pg.drop_database(&inst.database).await {
            Ok(()) => notes.push(format!(
                "the database {} it had created was dropped",
                inst.database
            )),
            Err(e) => notes.push(format!(
                "cannot drop the database {} it had created: {e}",
                inst.database
            )),
        }
    }
    if let (true, Some(snapshot)) = (record.phase >= Phase::Maintenance, &record.safety_snapshot) {
        let mut restored = false;
        match p.snapshots.pending_safety_copy(&inst.id, snapshot).await {
            Ok(Some(copy)) => match copy.swap_back().await {
                Ok(()) => {
                    restored = true;
                    notes.push("the database was put back from the safety copy".to_owned());
                }
                Err(e) => notes.push(format!("swapping the safety copy back failed: {e}")),
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
                Ok(()) => notes.push(format!("pre-deploy snapshot {snapshot} restored")),
                Err(e) => notes.push(format!("RESTORE FAILED: {e}")),
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
            let websocket = p
                .journal
                .instance(&inst.id)
                .map(|s| s.websocket)
                .unwrap_or_default();
            if let Err(e) = p.traffic.route(inst, Route::Color(old, websocket)).await {
                notes.push(format!("cannot route traffic to {old}: {e}"));
            }
        }
        None => {
            let _ = p.traffic.remove(inst).await;
        }
    }
}

/// Which way an interrupted run is finished.
#[derive(Debug, PartialEq)]
enum Direction {
    /// Traffic had switched to `target`: the old colour goes.
    Forwards { target: Color },
    /// It had not: the colour the run was bringing up goes (if it had chosen one; it
    /// creates containers only after), and `previous` serves again (nothing if none did).
    Backwards {
        started: Option<Color>,
        previous: Option<Color>,
    },
}

fn direction(record: &RunRecord, state: &InstanceState) -> Direction {
    if record.phase == Phase::Switched {
        let target = record
            .target_color
            .or(state.active_color)
            .unwrap_or(Color::Blue);
        return Direction::Forwards { target };
    }
    // The instance's state changes only at a switch, so for a run that did not switch it
    // names what served before, also when the run recorded nothing of its own (it was
    // waiting for its turn, or its first writes were lost with a broken journal).
    // The colour the journal says serves is never removed.
    Direction::Backwards {
        started: record
            .target_color
            .filter(|t| Some(*t) != state.active_color),
        previous: state.active_color,
    }
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
    use crate::journal::RunKind;

    fn record(phase: Phase, target: Option<Color>, previous: Option<Color>) -> RunRecord {
        RunRecord {
            id: "d1".into(),
            instance: "shop".into(),
            kind: RunKind::Deploy,
            status: RunStatus::Running,
            phase,
            step: None,
            target_color: target,
            previous_color: previous,
            image: None,
            commit_sha: None,
            safety_snapshot: None,
            created_database: false,
            websocket: None,
            started_at: 1,
            finished_at: None,
            next_seq: 1,
            message: None,
        }
    }

    fn serving(color: Color) -> InstanceState {
        InstanceState {
            active_color: Some(color),
            ..Default::default()
        }
    }

    #[test]
    fn runs_are_finished_in_the_safe_direction() {
        use Color::{Blue, Green};
        // Interrupted mid-way: the colour it brought up goes, the serving one stays.
        assert_eq!(
            direction(
                &record(Phase::Maintenance, Some(Green), Some(Blue)),
                &serving(Blue)
            ),
            Direction::Backwards {
                started: Some(Green),
                previous: Some(Blue)
            }
        );
        // Interrupted before it recorded anything (waiting for its turn, or a broken
        // journal): nothing of it to remove, and the journaled serving colour serves on.
        assert_eq!(
            direction(&record(Phase::Preparing, None, None), &serving(Green)),
            Direction::Backwards {
                started: None,
                previous: Some(Green)
            }
        );
        // Whatever the record says, the colour the journal names as serving stays.
        assert_eq!(
            direction(
                &record(Phase::Preparing, Some(Green), Some(Blue)),
                &serving(Green)
            ),
            Direction::Backwards {
                started: None,
                previous: Some(Green)
            }
        );
        // Switched: finished forwards, even if the new serving state was not journaled.
        assert_eq!(
            direction(
                &record(Phase::Switched, Some(Green), Some(Blue)),
                &serving(Blue)
            ),
            Direction::Forwards { target: Green }
        );
    }

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
