//! One deployment: the seven steps and the failure rules.
//!
//! - Code-only deploys (no installed module changed) go with zero downtime: the new colour
//!   starts beside the old one, passes its health checks, traffic switches, and the old
//!   colour is drained and stopped.
//! - Deploys that update modules go through a maintenance window: traffic goes to a
//!   maintenance response, the old colour stops, a safety copy of the database is taken,
//!   `odoo -u` runs in a one-off container, then the new colour starts, is health-checked
//!   and takes the traffic.
//! - Any failure before the switch leaves (or brings back) the old colour serving and
//!   removes the new one. After `-u` started, a failure first restores the database (safety
//!   copy, else the pre-deploy snapshot). A deployment never ends with no healthy colour
//!   unless that restore failed, and then it says so.

use std::collections::BTreeMap;
use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::addons::{self, Addons};
use crate::config::InstanceConfig;
use crate::git;
use crate::health;
use crate::journal::{InstanceState, Phase, RunRecord, RunStatus};
use crate::traffic::{Color, Route};

use super::build;
use super::containers::{
    container_name, image_repo, image_tag, update_container_name, RunSettings,
};
use super::events::{self, EventKind, StepRun};
use super::modules;
use super::{DeployOrder, Pipeline, Run, SafetyCopyPort};

pub(super) async fn run(p: &Pipeline, run: &Arc<Run>, order: &DeployOrder) {
    let Some(inst) = p.config.instance(&order.instance_id).cloned() else {
        return;
    };
    let record = match p.journal.run(&run.id) {
        Ok(Some(r)) => r,
        _ => return,
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
    run.log.plan_steps(&events::DEPLOY_STEPS);
    let outcome = d.execute(order).await;
    d.finish(outcome);
    let _ = std::fs::remove_dir_all(p.work_dir(&run.id));
}

pub(super) struct Deploy<'a> {
    pub p: &'a Pipeline,
    pub run: Arc<Run>,
    pub inst: InstanceConfig,
    pub record: RunRecord,
    pub previous: InstanceState,
    pub started: Instant,
}

/// How a failed deployment ended for the instance.
pub(super) struct Failure {
    pub message: String,
}

impl From<String> for Failure {
    fn from(message: String) -> Self {
        Self { message }
    }
}

impl Deploy<'_> {
    pub fn save(&self) {
        if let Err(e) = self.p.journal.put_run(&self.record) {
            tracing::error!(deployment = %self.record.id, "cannot journal progress: {e}");
        }
    }

    pub fn enter(&mut self, phase: Phase, step: &str) {
        self.record.phase = phase;
        self.record.step = Some(step.to_owned());
        self.save();
    }

    /// Runs a step's work under the step deadline and the deployment's cancellation.
    pub async fn guarded<T, E: std::fmt::Display>(
        &self,
        step: &str,
        work: impl Future<Output = Result<T, E>>,
    ) -> Result<T, String> {
        let deadline = self.p.step_timeout();
        tokio::select! {
            result = tokio::time::timeout(deadline, work) => match result {
                Ok(Ok(v)) => Ok(v),
                Ok(Err(e)) => Err(e.to_string()),
                Err(_) => Err(format!("{step} exceeded its deadline of {} s", deadline.as_secs())),
            },
            _ = self.run.cancel.cancelled() => Err("cancelled".to_owned()),
        }
    }

    fn line_sink(&self, step: &'static str) -> impl Fn(&str) + Send + Sync + 'static {
        let run = self.run.clone();
        move |line: &str| run.log.log(step, line)
    }

    pub fn finish(&mut self, outcome: Result<String, Failure>) {
        let cancelled = self.run.cancel.is_cancelled();
        let (status, message) = match outcome {
            Ok(message) => (RunStatus::Succeeded, message),
            Err(f) if cancelled => (RunStatus::Cancelled, f.message),
            Err(f) => (RunStatus::Failed, f.message),
        };
        self.record.status = status;
        self.record.phase = Phase::Done;
        self.record.finished_at = Some(events::now_ms());
        self.record.message = Some(message.clone());
        self.save();
        let active = self
            .p
            .journal
            .instance(&self.inst.id)
            .ok()
            .and_then(|s| s.active_color);
        self.run.log.emit(EventKind::Finished {
            status,
            message,
            active_color: active,
            duration_ms: u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX),
        });
    }

    async fn execute(&mut self, order: &DeployOrder) -> Result<String, Failure> {
        let target = self.previous.active_color.map_or(Color::Blue, Color::other);
        self.record.target_color = Some(target);
        self.record.previous_color = self.previous.active_color;
        self.save();

        self.snapshot_step(order).await?;
        let commit = self.clone_step(order).await?;
        let (work, addons, settings, changed, checksums) =
            self.build_step(order, &commit, target).await?;
        drop(work);
        let settings = self.push_step(settings).await?;
        if changed.is_empty() {
            self.code_only(target, &settings).await
        } else {
            self.with_maintenance(target, &settings, &changed, &checksums, &addons, order)
                .await
        }
    }

    async fn snapshot_step(&mut self, order: &DeployOrder) -> Result<(), Failure> {
        let step = self.run.log.start(events::PRE_DEPLOY_SNAPSHOT);
        self.enter(Phase::Preparing, step.name);
        if let Some(reason) = self.p.snapshots.unavailable_reason() {
            step.skip(reason);
            return Ok(());
        }
        match self.p.pg.database_exists(&self.inst.database).await {
            Ok(false) => {
                step.skip(format!(
                    "database {} does not exist yet: nothing to snapshot",
                    self.inst.database
                ));
                return Ok(());
            }
            Ok(true) => {}
            Err(e) => {
                step.fail(e.to_string());
                return Err(format!("Pre-deploy Snapshot failed: {e}").into());
            }
        }
        let sink = self.line_sink(step.name);
        let taken = self
            .guarded(
                step.name,
                self.p.snapshots.pre_deploy(
                    &self.inst.id,
                    &order.snapshot_id,
                    &order.deployment_id,
                    self.previous.commit_sha.as_deref(),
                    &sink,
                    &self.run.cancel,
                ),
            )
            .await;
        match taken {
            Ok(size) => {
                self.run.log.emit(EventKind::Snapshot {
                    id: order.snapshot_id.clone(),
                    size_bytes: size,
                });
                self.record.safety_snapshot = Some(order.snapshot_id.clone());
                self.save();
                step.complete(format!(
                    "snapshot {} taken ({})",
                    order.snapshot_id,
                    human_bytes(size)
                ));
                Ok(())
            }
            Err(e) => {
                step.fail(format!("pre-deploy snapshot failed: {e}"));
                Err(format!("Pre-deploy Snapshot failed: {e}").into())
            }
        }
    }

    async fn clone_step(&mut self, order: &DeployOrder) -> Result<git::ResolvedCommit, Failure> {
        let step = self.run.log.start(events::CLONE_REPOSITORY);
        self.enter(Phase::Preparing, step.name);
        let mirror = self.p.mirror_dir(&order.project_id);
        let work = self.p.work_dir(&order.deployment_id);
        let url = order.repo_url.clone();
        let reference = order.reference.clone();
        let sink = self.line_sink(step.name);
        step.line(&format!(
            "fetching {} into the mirror",
            git::redact_url(&url)
        ));
        let work_dir = work.clone();
        let modules_dir = self.p.config.state_dir.join("mirrors").join("submodules");
        let auth = order.auth.clone();
        let job = tokio::task::spawn_blocking(move || -> Result<_, git::CloneError> {
            let stats = git::fetch_mirror(&url, &mirror, &auth, |l| sink(l))?;
            let commit = git::resolve(&mirror, &reference)?;
            let _ = std::fs::remove_dir_all(&work_dir);
            let files = git::checkout(&mirror, &commit.sha, &work_dir)?;
            let subs = git::checkout_submodules(
                &mirror,
                &commit.sha,
                &url,
                &work_dir,
                &modules_dir,
                &auth,
                &mut |l| sink(l),
            )?;
            for line in &subs.checked_out {
                sink(&format!("submodule {line}"));
            }
            Ok((stats, commit, files))
        });
        let result = self
            .guarded(step.name, async {
                job.await
                    .map_err(|e| e.to_string())?
                    .map_err(|e| e.to_string())
            })
            .await;
        match result {
            Ok((stats, commit, files)) => {
                self.run.log.emit(EventKind::Commit {
                    sha: commit.sha.clone(),
                    message: commit.message.clone(),
                    author: commit.author.clone(),
                    host_key: stats.host_key.clone(),
                });
                self.record.commit_sha = Some(commit.sha.clone());
                self.save();
                step.line(&format!(
                    "fetched {} new objects ({}); {} resolves to {}",
                    stats.received_objects,
                    human_bytes(stats.received_bytes as u64),
                    order.reference.describe(),
                    commit.sha
                ));
                step.complete(format!(
                    "checked out {} ({files} files): {}",
                    image_tag(&commit.sha),
                    commit.message.lines().next().unwrap_or_default()
                ));
                Ok(commit)
            }
            Err(e) => {
                step.fail(&e);
                Err(format!("Clone Repository failed: {e}").into())
            }
        }
    }

    #[allow(clippy::type_complexity)]
    async fn build_step(
        &mut self,
        order: &DeployOrder,
        commit: &git::ResolvedCommit,
        target: Color,
    ) -> Result<
        (
            PathBuf,
            Addons,
            RunSettings,
            Vec<String>,
            BTreeMap<String, String>,
        ),
        Failure,
    > {
        let step = self.run.log.start(events::BUILD_IMAGE);
        self.enter(Phase::Preparing, step.name);
        match self.build_inner(&step, order, commit, target).await {
            Ok(out) => {
                step.complete(format!("built {}", out.2.image));
                Ok(out)
            }
            Err(e) => {
                step.fail(&e);
                Err(format!("Build Image failed: {e}").into())
            }
        }
    }

    #[allow(clippy::type_complexity)]
    async fn build_inner(
        &self,
        step: &StepRun,
        order: &DeployOrder,
        commit: &git::ResolvedCommit,
        target: Color,
    ) -> Result<
        (
            PathBuf,
            Addons,
            RunSettings,
            Vec<String>,
            BTreeMap<String, String>,
        ),
        String,
    > {
        let work = self.p.work_dir(&order.deployment_id);
        let subpath = order.addons_subpath.clone();
        let base_image = self.inst.base_image.clone();
        let root = work.clone();
        // Addons, checksums and the build context are read from disk on a blocking thread.
        let prepared = tokio::task::spawn_blocking(move || -> Result<_, String> {
            let addons = addons::discover(&root, &subpath).map_err(|e| e.to_string())?;
            let sums = addons::checksums(&root, &addons).map_err(|e| e.to_string())?;
            let sub = addons::validate_subpath(&subpath).map_err(|e| e.to_string())?;
            let context =
                build::pack(&root, &base_image, &addons, &sub).map_err(|e| e.to_string())?;
            Ok((addons, sums, context))
        });
        let (addons, checksums, context) = self
            .guarded(step.name, async {
                prepared.await.map_err(|e| e.to_string())?
            })
            .await?;
        step.line(&format!(
            "addons path: {}",
            if addons.dirs.is_empty() {
                "(no module found)".to_owned()
            } else {
                addons
                    .dirs
                    .iter()
                    .map(|d| {
                        if d.as_os_str().is_empty() {
                            ".".to_owned()
                        } else {
                            d.display().to_string()
                        }
                    })
                    .collect::<Vec<_>>()
                    .join(", ")
            }
        ));
        step.line(&format!(
            "{} modules: {}",
            addons.modules.len(),
            addons
                .modules
                .keys()
                .cloned()
                .collect::<Vec<_>>()
                .join(", ")
        ));

        // The plan: decided before anything on the host changes.
        let (installed, stored) = self
            .guarded(
                step.name,
                modules::database_modules(&self.p.pg, &self.inst.database),
            )
            .await?;
        let changed = addons::changed_modules(&installed, &stored, &checksums);
        if !changed.is_empty() && self.record.safety_snapshot.is_none() {
            // A module update is never started without a snapshot to return to.
            return Err(format!(
                "modules {} need updating but no pre-deploy snapshot was taken",
                changed.join(", ")
            ));
        }
        self.run.log.emit(EventKind::Plan {
            modules: changed.clone(),
            maintenance: !changed.is_empty(),
            target_color: target,
        });
        if changed.is_empty() {
            step.line(&format!(
                "plan: no installed module changed; zero-downtime switch to {target}"
            ));
        } else {
            step.line(&format!(
                "plan: update {} with odoo -u in a maintenance window (traffic paused), then switch to {target}",
                changed.join(", ")
            ));
        }

        step.line(&format!(
            "build context: {} files, {} ({} Dockerfile{})",
            context.files,
            human_bytes(context.content_bytes),
            if context.generated {
                "generated"
            } else {
                "repository"
            },
            if context.generated {
                format!(" FROM {}", self.inst.base_image)
            } else {
                String::new()
            },
        ));
        let repo = image_repo(&self.p.config.registry.address, &self.inst.id);
        let tag = image_tag(&commit.sha);
        let image = format!("{repo}:{tag}");
        let mut labels = std::collections::HashMap::from([
            (crate::docker::LABEL_MANAGED.to_owned(), "1".to_owned()),
            (
                crate::docker::LABEL_INSTANCE.to_owned(),
                self.inst.id.clone(),
            ),
            (crate::docker::LABEL_COMMIT.to_owned(), commit.sha.clone()),
        ]);
        if let Some(path) = &context.addons_path {
            // Recorded on the image so a rollback runs it with the same addons path.
            labels.insert(crate::docker::LABEL_ADDONS_PATH.to_owned(), path.clone());
        }
        let run = self.run.clone();
        let mut on_line = move |l: &str| run.log.log(events::BUILD_IMAGE, l);
        self.guarded(
            step.name,
            self.p.engine.build(
                context.tar,
                &context.dockerfile,
                &image,
                &labels,
                &mut on_line,
                &self.run.cancel,
            ),
        )
        .await?;
        let settings = RunSettings {
            image,
            commit_sha: commit.sha.clone(),
            deployment_id: order.deployment_id.clone(),
            addons_path: context.addons_path,
        };
        Ok((work, addons, settings, changed, checksums))
    }

    async fn push_step(&mut self, settings: RunSettings) -> Result<RunSettings, Failure> {
        let step = self.run.log.start(events::PUSH_IMAGE);
        self.enter(Phase::Preparing, step.name);
        let repo = image_repo(&self.p.config.registry.address, &self.inst.id);
        let tag = image_tag(&settings.commit_sha);
        let run = self.run.clone();
        let mut on_line = move |l: &str| run.log.log(events::PUSH_IMAGE, l);
        let pushed = self
            .guarded(
                step.name,
                self.p
                    .engine
                    .push(&repo, &tag, &mut on_line, &self.run.cancel),
            )
            .await;
        match pushed {
            Ok(digest) => {
                self.run.log.emit(EventKind::Image {
                    image_ref: settings.image.clone(),
                    digest: digest.clone(),
                });
                self.record.image = Some(settings.image.clone());
                self.save();
                step.complete(format!("pushed {} ({digest})", settings.image));
                Ok(settings)
            }
            Err(e) => {
                step.fail(&e);
                Err(format!("Push Image failed: {e}").into())
            }
        }
    }

    /// Starts the new colour beside the old one, checks it, switches, drains the old one.
    async fn code_only(
        &mut self,
        target: Color,
        settings: &RunSettings,
    ) -> Result<String, Failure> {
        let step = self.run.log.start(events::UPDATE_CONTAINER);
        self.enter(Phase::NewColorStarting, step.name);
        let name = container_name(&self.inst.id, target);
        let started = self.start_colour(&step, target, settings).await;
        if let Err(e) = started {
            self.remove_container(&name).await;
            step.fail(&e);
            return Err(format!(
                "Update Container failed: {e}; the previous version keeps serving"
            )
            .into());
        }
        step.complete(format!("{name} started beside the serving colour"));
        self.run
            .log
            .skip(events::MODULE_UPDATE, "no installed module changed");

        let step = self.run.log.start(events::HEALTH_CHECK);
        self.enter(Phase::NewColorStarting, step.name);
        if let Err(e) = self.check_colour(&step, target).await {
            self.remove_container(&name).await;
            step.fail(&e);
            return Err(
                format!("Health Check failed: {e}; the previous version keeps serving").into(),
            );
        }
        if let Err(e) = self.switch_to(&step, target).await {
            self.remove_container(&name).await;
            self.restore_route().await;
            step.fail(&e);
            return Err(
                format!("Health Check failed: {e}; the previous version keeps serving").into(),
            );
        }
        self.retire_previous(&step, target).await;
        step.complete(format!(
            "{target} serves {}",
            image_tag(&settings.commit_sha)
        ));
        Ok(format!(
            "deployed {} on {target}",
            image_tag(&settings.commit_sha)
        ))
    }

    /// Creates and starts a colour container (restart policy set once it is healthy).
    async fn start_colour(
        &self,
        step: &StepRun,
        color: Color,
        settings: &RunSettings,
    ) -> Result<(), String> {
        self.p.prepare_data_dir(&self.inst)?;
        let mut spec = self.p.colour_spec(&self.inst, color, settings);
        spec.restart = false;
        self.guarded(step.name, self.p.engine.create(&spec)).await?;
        self.guarded(step.name, self.p.engine.start(&spec.name))
            .await?;
        let (http, gevent) = color.ports(&self.inst);
        step.line(&format!(
            "started {} from {} (http {http}, websocket {gevent})",
            spec.name, settings.image
        ));
        Ok(())
    }

    /// Waits until the colour answers its health checks; fails early if its container died.
    pub(super) async fn check_colour(&self, step: &StepRun, color: Color) -> Result<(), String> {
        let (http, _) = color.ports(&self.inst);
        let name = container_name(&self.inst.id, color);
        let timeout = Duration::from_secs(self.p.config.pipeline.health_timeout_secs);
        let run = self.run.clone();
        let mut on_line = move |l: &str| run.log.log(events::HEALTH_CHECK, l);
        let health = health::wait_healthy(
            http,
            &self.inst.database,
            timeout,
            &self.run.cancel,
            &mut on_line,
        );
        let watch = async {
            loop {
                tokio::time::sleep(Duration::from_millis(500)).await;
                match self.p.engine.state(&name).await {
                    Ok(Some(s)) if s.running => {}
                    Ok(_) => {
                        let logs = self.p.engine.tail_logs(&name, 15).await;
                        return format!(
                            "container {name} exited during start-up; its last log lines:\n{logs}"
                        );
                    }
                    Err(e) => return e.to_string(),
                }
            }
        };
        tokio::select! {
            r = health => match r {
                Ok(()) => {
                    self.p.engine.keep_running(&name).await.map_err(|e| e.to_string())?;
                    step.line(&format!("{name} is healthy"));
                    Ok(())
                }
                Err(e) => {
                    let logs = self.p.engine.tail_logs(&name, 15).await;
                    Err(format!("{e}; last log lines of {name}:\n{logs}"))
                }
            },
            died = watch => Err(died),
        }
    }

    /// Points traffic at `color` and waits until the public port shows it.
    pub(super) async fn switch_to(&mut self, step: &StepRun, color: Color) -> Result<(), String> {
        self.guarded(
            step.name,
            self.p.traffic.route(&self.inst, Route::Color(color)),
        )
        .await?;
        step.line(&format!(
            "traffic switched to {color} on port {}",
            self.inst.public_port
        ));
        // From here the new colour serves: a crash now finishes forwards, not backwards.
        self.record.phase = Phase::Switched;
        self.save();
        let state = InstanceState {
            active_color: Some(color),
            image: self.record.image.clone(),
            commit_sha: self.record.commit_sha.clone(),
            deployment_id: Some(self.record.id.clone()),
        };
        self.p
            .journal
            .put_instance(&self.inst.id, &state)
            .map_err(|e| e.to_string())?;
        step.line(&format!(
            "public port {} answers from {color}",
            self.inst.public_port
        ));
        Ok(())
    }

    /// After the switch: give in-flight requests time, then stop and remove the old colour.
    async fn retire_previous(&mut self, step: &StepRun, target: Color) {
        let old = target.other();
        let name = container_name(&self.inst.id, old);
        if matches!(self.p.engine.state(&name).await, Ok(Some(_))) {
            let drain = Duration::from_secs(self.p.config.pipeline.drain_secs);
            step.line(&format!("draining {name} for {} s", drain.as_secs()));
            tokio::time::sleep(drain).await;
            let grace = Duration::from_secs(self.p.config.pipeline.stop_grace_secs);
            if let Err(e) = self.p.engine.stop(&name, grace).await {
                step.line(&format!("warning: stopping {name}: {e}"));
            }
            self.remove_container(&name).await;
            step.line(&format!("{name} stopped and removed"));
        }
    }

    pub async fn remove_container(&self, name: &str) {
        if let Err(e) = self.p.engine.remove(name).await {
            tracing::warn!(container = %name, "cannot remove container: {e}");
        }
    }

    /// Routes traffic back to the previous colour (or removes the route if there was none).
    pub async fn restore_route(&self) {
        let result = match self.previous.active_color {
            Some(color) => self.p.traffic.route(&self.inst, Route::Color(color)).await,
            None => self.p.traffic.remove(&self.inst).await,
        };
        if let Err(e) = result {
            tracing::error!(instance = %self.inst.id, "cannot restore traffic: {e}");
            self.run.log.log(
                events::HEALTH_CHECK,
                &format!("error: cannot restore traffic: {e}"),
            );
        }
    }

    /// The module-update flow: maintenance, `-u`, new colour, switch.
    async fn with_maintenance(
        &mut self,
        target: Color,
        settings: &RunSettings,
        changed: &[String],
        checksums: &BTreeMap<String, String>,
        _addons: &Addons,
        order: &DeployOrder,
    ) -> Result<String, Failure> {
        let step = self.run.log.start(events::UPDATE_CONTAINER);
        self.enter(Phase::Maintenance, step.name);
        let mut safety: Option<Box<dyn SafetyCopyPort>> = None;
        let prepared = self
            .enter_maintenance(&step, target, settings, order, &mut safety)
            .await;
        if let Err(e) = prepared {
            step.fail(&e);
            let restored = self
                .leave_maintenance(events::UPDATE_CONTAINER, safety, false)
                .await;
            return Err(format!("Update Container failed: {e}; {restored}").into());
        }
        step.complete("maintenance window open; new colour created".to_owned());

        let step = self.run.log.start(events::MODULE_UPDATE);
        self.enter(Phase::ModulesUpdating, step.name);
        step.line(&format!(
            "odoo -u {} on database {}",
            changed.join(","),
            self.inst.database
        ));
        let spec = self.p.update_spec(&self.inst, changed, settings);
        let run = self.run.clone();
        let mut on_line = move |l: &str| run.log.log(events::MODULE_UPDATE, l);
        let code = self
            .guarded(
                step.name,
                self.p.engine.run_once(
                    &spec,
                    self.p.step_timeout(),
                    &mut on_line,
                    &self.run.cancel,
                ),
            )
            .await;
        let updated = match code {
            Ok(0) => Ok(()),
            Ok(code) => Err(format!("odoo -u exited with code {code}")),
            Err(e) => Err(e),
        };
        if let Err(e) = updated {
            self.remove_container(&update_container_name(&self.inst.id))
                .await;
            step.fail(&e);
            let restored = self
                .leave_maintenance(events::MODULE_UPDATE, safety, true)
                .await;
            return Err(format!("Module Update failed: {e}; {restored}").into());
        }
        match modules::save_checksums(&self.p.pg, &self.inst.database, checksums).await {
            Ok(n) => step.line(&format!("recorded checksums of {n} installed modules")),
            Err(e) => {
                step.fail(format!("cannot record module checksums: {e}"));
                let restored = self
                    .leave_maintenance(events::MODULE_UPDATE, safety, true)
                    .await;
                return Err(format!("Module Update failed: {e}; {restored}").into());
            }
        }
        step.complete(format!("updated {}", changed.join(", ")));

        let step = self.run.log.start(events::HEALTH_CHECK);
        self.enter(Phase::ModulesUpdating, step.name);
        let name = container_name(&self.inst.id, target);
        let checked = async {
            self.guarded(step.name, self.p.engine.start(&name)).await?;
            step.line(&format!("started {name}"));
            self.check_colour(&step, target).await
        }
        .await;
        if let Err(e) = checked {
            self.remove_container(&name).await;
            step.fail(&e);
            let restored = self
                .leave_maintenance(events::HEALTH_CHECK, safety, true)
                .await;
            return Err(format!("Health Check failed: {e}; {restored}").into());
        }
        if let Err(e) = self.switch_to(&step, target).await {
            self.remove_container(&name).await;
            step.fail(&e);
            let restored = self
                .leave_maintenance(events::HEALTH_CHECK, safety, true)
                .await;
            return Err(format!("Health Check failed: {e}; {restored}").into());
        }
        if let Some(copy) = safety {
            match copy.discard().await {
                Ok(()) => step.line("safety copy of the database dropped"),
                Err(e) => step.line(&format!("warning: cannot drop the safety copy: {e}")),
            }
        }
        let old = container_name(&self.inst.id, target.other());
        self.remove_container(&old).await;
        step.complete(format!(
            "{target} serves {} with updated modules {}",
            image_tag(&settings.commit_sha),
            changed.join(", ")
        ));
        Ok(format!(
            "deployed {} on {target}; updated {}",
            image_tag(&settings.commit_sha),
            changed.join(", ")
        ))
    }

    async fn enter_maintenance(
        &mut self,
        step: &StepRun,
        target: Color,
        settings: &RunSettings,
        order: &DeployOrder,
        safety: &mut Option<Box<dyn SafetyCopyPort>>,
    ) -> Result<(), String> {
        self.p.prepare_data_dir(&self.inst)?;
        self.guarded(
            step.name,
            self.p.traffic.route(&self.inst, Route::Maintenance),
        )
        .await?;
        step.line(&format!(
            "traffic paused: port {} answers 503 maintenance",
            self.inst.public_port
        ));
        if let Some(old) = self.previous.active_color {
            let name = container_name(&self.inst.id, old);
            let grace = Duration::from_secs(self.p.config.pipeline.stop_grace_secs);
            self.guarded(step.name, self.p.engine.stop(&name, grace))
                .await?;
            step.line(&format!(
                "{name} stopped (its crons and workers must not run old code on a new schema)"
            ));
        }
        if self.p.snapshots.unavailable_reason().is_none() {
            let copy = self
                .guarded(
                    step.name,
                    self.p
                        .snapshots
                        .safety_copy(&self.inst.id, &order.snapshot_id),
                )
                .await?;
            *safety = Some(copy);
            step.line("safety copy of the database and new filestore files taken");
        } else {
            step.line(
                "warning: snapshots unavailable: no safety copy; a failed update cannot be undone",
            );
        }
        let mut spec = self.p.colour_spec(&self.inst, target, settings);
        spec.restart = false;
        self.guarded(step.name, self.p.engine.create(&spec)).await?;
        step.line(&format!("{} created from {}", spec.name, settings.image));
        Ok(())
    }

    /// Undoes a maintenance window after a failure: database back (safety copy, else the
    /// pre-deploy snapshot, if `-u` may have run), old colour started, traffic back.
    /// Returns a sentence saying what now serves.
    pub async fn leave_maintenance(
        &mut self,
        step: &'static str,
        safety: Option<Box<dyn SafetyCopyPort>>,
        database_touched: bool,
    ) -> String {
        let log = |line: &str| self.run.log.log(step, line);
        self.remove_container(&container_name(
            &self.inst.id,
            self.record.target_color.unwrap_or(Color::Blue),
        ))
        .await;
        let mut restored = true;
        if let Some(copy) = safety {
            match copy.swap_back().await {
                Ok(()) => log("database and filestore put back from the safety copy"),
                Err(e) => {
                    log(&format!("error: swapping the safety copy back failed: {e}"));
                    restored = self.restore_snapshot(step).await;
                }
            }
        } else if database_touched {
            restored = self.restore_snapshot(step).await;
        }
        if !restored {
            log("error: the database could not be restored; the maintenance page stays up");
            return "THE DATABASE RESTORE FAILED: the instance is in maintenance and needs an operator".to_owned();
        }
        let Some(old) = self.previous.active_color else {
            self.restore_route().await;
            return "nothing was serving before; no colour serves".to_owned();
        };
        let name = container_name(&self.inst.id, old);
        if let Err(e) = self.p.engine.start(&name).await {
            log(&format!("error: cannot restart {name}: {e}"));
            return format!("the previous colour {old} could not be restarted: {e}");
        }
        log(&format!("{name} started again"));
        let timeout = Duration::from_secs(self.p.config.pipeline.health_timeout_secs);
        let (http, _) = old.ports(&self.inst);
        let cancel = tokio_util::sync::CancellationToken::new();
        let run = self.run.clone();
        let mut on_line = move |l: &str| run.log.log(step, l);
        if let Err(e) =
            health::wait_healthy(http, &self.inst.database, timeout, &cancel, &mut on_line).await
        {
            log(&format!("warning: {name} is not healthy yet: {e}"));
        }
        self.restore_route().await;
        log(&format!("traffic back on {old}"));
        format!("the previous version was restored and serves again on {old}")
    }

    async fn restore_snapshot(&self, step: &'static str) -> bool {
        let Some(snapshot) = self.record.safety_snapshot.clone() else {
            self.run
                .log
                .log(step, "error: no pre-deploy snapshot to restore");
            return false;
        };
        let sink = self.line_sink(step);
        let cancel = tokio_util::sync::CancellationToken::new();
        match self
            .p
            .snapshots
            .restore(&self.inst.id, &snapshot, &sink, &cancel)
            .await
        {
            Ok(()) => {
                self.run
                    .log
                    .log(step, &format!("pre-deploy snapshot {snapshot} restored"));
                true
            }
            Err(e) => {
                self.run.log.log(
                    step,
                    &format!("error: restoring snapshot {snapshot} failed: {e}"),
                );
                false
            }
        }
    }
}

/// Bytes for people: `1.4 MB`.
pub fn human_bytes(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "kB", "MB", "GB", "TB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1000.0 && unit < UNITS.len() - 1 {
        value /= 1000.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

#[cfg(test)]
mod tests {
    use super::human_bytes;

    #[test]
    fn bytes_read_well() {
        assert_eq!(human_bytes(999), "999 B");
        assert_eq!(human_bytes(1_400_000), "1.4 MB");
        assert_eq!(human_bytes(2_000_000_000), "2.0 GB");
    }
}
