//! A rollback: return an instance to an earlier deployment's image and restore that
//! deployment's pre-deploy snapshot.
//!
//! Steps: Pre-deploy Snapshot (of the state being replaced, so the rollback itself can be
//! undone), Update Container (maintenance, current colour stopped, target container created
//! from the earlier image), Restore Snapshot, Health Check (start, check, switch). A failure
//! puts the replaced state back: its snapshot restored, its colour started, traffic back.

use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::journal::Phase;
use crate::traffic::{Color, Route};

use super::containers::{container_name, RunSettings};
use super::deploy::Deploy;
use super::events::{self, EventKind};
use super::{image, Pipeline, RollbackOrder, Run};

pub(super) async fn run(p: &Pipeline, run: &Arc<Run>, order: &RollbackOrder) {
    let Some(inst) = p.config.instance(&order.instance_id).cloned() else {
        return;
    };
    let Ok(Some(record)) = p.journal.run(&run.id) else {
        return;
    };
    let previous = p.journal.instance(&inst.id).unwrap_or_default();
    let mut d = Deploy {
        p,
        run: run.clone(),
        inst,
        record,
        previous,
        started: Instant::now(),
    };
    run.log.plan_steps(&events::ROLLBACK_STEPS);
    let outcome = execute(&mut d, order).await.map_err(Into::into);
    d.finish(outcome);
}

async fn execute(d: &mut Deploy<'_>, order: &RollbackOrder) -> Result<String, String> {
    let target = d.previous.active_color.map_or(Color::Blue, Color::other);
    d.record.target_color = Some(target);
    d.record.previous_color = d.previous.active_color;
    d.record.commit_sha = Some(order.commit_sha.clone());
    d.record.image = Some(order.image_ref.clone());
    d.save();
    // The commit's own message and author, as its deployment recorded them.
    d.run.log.emit(EventKind::Commit {
        sha: order.commit_sha.clone(),
        message: if order.commit_message.is_empty() {
            format!("rollback to {}", order.image_ref)
        } else {
            order.commit_message.clone()
        },
        author: order.commit_author.clone(),
        host_key: None,
    });

    // The state being replaced, so a failed rollback can come back to it.
    let undo_snapshot = format!("pre-{}", order.deployment_id);
    let step = d.run.log.start(events::PRE_DEPLOY_SNAPSHOT);
    d.enter(Phase::Preparing, step.name);
    if let Some(reason) = d.p.snapshots.unavailable_reason() {
        step.fail(format!("snapshots are unavailable: {reason}"));
        return Err("a rollback needs snapshots, which are unavailable on this agent".to_owned());
    }
    let sink = {
        let run = d.run.clone();
        move |l: &str| run.log.log(events::PRE_DEPLOY_SNAPSHOT, l)
    };
    match d
        .guarded(
            step.name,
            d.p.snapshots.pre_deploy(
                &d.inst.id,
                &undo_snapshot,
                &order.deployment_id,
                d.previous.commit_sha.as_deref(),
                &sink,
                &d.run.cancel,
            ),
        )
        .await
    {
        Ok(size) => {
            d.run.log.emit(EventKind::Snapshot {
                id: undo_snapshot.clone(),
                size_bytes: size,
            });
            step.complete(format!(
                "snapshot {undo_snapshot} of the current state taken"
            ));
        }
        Err(e) => {
            step.fail(&e);
            return Err(format!("Pre-deploy Snapshot failed: {e}; nothing changed"));
        }
    }

    let step = d.run.log.start(events::UPDATE_CONTAINER);
    d.enter(Phase::Maintenance, step.name);
    let mut settings = RunSettings {
        image: order.image_ref.clone(),
        commit_sha: order.commit_sha.clone(),
        deployment_id: order.deployment_id.clone(),
        addons_path: None,
        websocket: Default::default(),
        command: None,
    };
    let prepared: Result<(), String> = async {
        d.guarded(step.name, d.p.engine.ensure_image(&order.image_ref))
            .await?;
        // The image says how it runs, as when it was deployed: its addons path (the label
        // oCore or the repository's Dockerfile set, else its odoo.conf) and its workers.
        let serving = d
            .guarded(
                step.name,
                image::inspect(
                    &d.p.engine,
                    &d.p.image_confs,
                    &d.inst,
                    &order.image_ref,
                    &image::Ask {
                        generated: None,
                        modules: None,
                        require_path: false,
                    },
                ),
            )
            .await?;
        for note in &serving.notes {
            step.line(note);
        }
        settings.addons_path = serving.addons_path;
        settings.websocket = serving.websocket;
        settings.command = serving.command;
        d.guarded(step.name, d.p.traffic.route(&d.inst, Route::Maintenance))
            .await?;
        step.line(&format!(
            "traffic paused: port {} answers 503 maintenance",
            d.inst.public_port
        ));
        if let Some(old) = d.previous.active_color {
            let grace = Duration::from_secs(d.p.config.pipeline.stop_grace_secs);
            d.guarded(
                step.name,
                d.p.engine.stop(&container_name(&d.inst.id, old), grace),
            )
            .await?;
            step.line(&format!("{old} stopped"));
        }
        d.p.prepare_data_dir(&d.inst)?;
        let mut spec = d.p.colour_spec(&d.inst, target, &settings);
        spec.restart = false;
        d.guarded(step.name, d.p.engine.create(&spec)).await?;
        step.line(&format!("{} created from {}", spec.name, order.image_ref));
        Ok(())
    }
    .await;
    if let Err(e) = prepared {
        step.fail(&e);
        let back = d
            .leave_maintenance(events::UPDATE_CONTAINER, None, false)
            .await;
        return Err(format!("Update Container failed: {e}; {back}"));
    }
    step.complete("maintenance window open".to_owned());

    let step = d.run.log.start(events::RESTORE_SNAPSHOT);
    d.enter(Phase::ModulesUpdating, step.name);
    // From here a failure must restore the undo snapshot, which leave_maintenance restores
    // from record.safety_snapshot.
    d.record.safety_snapshot = Some(undo_snapshot.clone());
    d.save();
    let sink = {
        let run = d.run.clone();
        move |l: &str| run.log.log(events::RESTORE_SNAPSHOT, l)
    };
    let restored = d
        .guarded(
            step.name,
            d.p.snapshots
                .restore(&d.inst.id, &order.snapshot_id, &sink, &d.run.cancel),
        )
        .await;
    if let Err(e) = restored {
        step.fail(&e);
        let back = d
            .leave_maintenance(events::RESTORE_SNAPSHOT, None, true)
            .await;
        return Err(format!("Restore Snapshot failed: {e}; {back}"));
    }
    step.complete(format!("snapshot {} restored", order.snapshot_id));

    let step = d.run.log.start(events::HEALTH_CHECK);
    d.enter(Phase::ModulesUpdating, step.name);
    let name = container_name(&d.inst.id, target);
    let checked: Result<(), String> = async {
        d.guarded(step.name, d.ensure_database_ready()).await?;
        d.guarded(step.name, d.p.engine.start(&name)).await?;
        d.check_colour(&step, target, &settings).await
    }
    .await;
    if let Err(e) = checked {
        step.fail(&e);
        let back = d.leave_maintenance(events::HEALTH_CHECK, None, true).await;
        return Err(format!("Health Check failed: {e}; {back}"));
    }
    if let Err(e) = d.switch_to(&step, target, &settings).await {
        step.fail(&e);
        let back = d.leave_maintenance(events::HEALTH_CHECK, None, true).await;
        return Err(format!("Health Check failed: {e}; {back}"));
    }
    if let Some(old) = d.previous.active_color {
        d.remove_container(&container_name(&d.inst.id, old)).await;
    }
    step.complete(format!("{target} serves {} again", order.image_ref));
    Ok(format!("rolled back to {} on {target}", order.image_ref))
}
