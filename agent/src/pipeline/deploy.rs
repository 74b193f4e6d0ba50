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
    container_name, image_repo, image_tag, update_container_name, InitSettings, RunSettings,
};
use super::events::{self, EventKind, StepRun};
use super::{image, modules, plan};
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

/// What the build step hands on.
pub(super) struct Built {
    pub settings: RunSettings,
    pub plan: plan::ModulePlan,
    /// Set when the database must be created.
    pub init: Option<InitSettings>,
    /// Checksums of the new checkout's modules, recorded after a successful `-u`.
    pub checksums: BTreeMap<String, String>,
    /// Module -> manifest version that `-u` must leave installed.
    pub expected: BTreeMap<String, String>,
    /// The database did not exist: Odoo creates it, and undoing the run drops it.
    pub created_database: bool,
}

/// What the blocking preparation of the build reads from the checkout.
struct Prepared {
    addons: Addons,
    manifests: BTreeMap<String, crate::manifest::Manifest>,
    sums: BTreeMap<String, String>,
    serving_sums: ServingSums,
    context: build::Context,
}

/// Checksums of the commit serving now, for modules installed without a recorded one.
enum ServingSums {
    /// Every installed module has a recorded checksum.
    NotNeeded,
    /// The serving commit is the one being deployed.
    Same,
    Computed {
        commit: String,
        sums: BTreeMap<String, String>,
    },
    Unavailable(String),
}

/// How to check the serving commit out of the mirror.
struct ServingCheckout {
    /// The serving commit, if one serves.
    commit: Option<String>,
    /// The commit being deployed.
    deploying: String,
    mirror: PathBuf,
    url: String,
    target: PathBuf,
    modules_dir: PathBuf,
    auth: git::GitAuth,
}

impl ServingCheckout {
    /// Checks the serving commit out (with its submodules) beside the new one and computes
    /// its modules' checksums with the database's rules; the checkout is removed after.
    fn checksums(
        &self,
        subpath: &str,
        rules: &addons::ChecksumRules,
        current: &BTreeMap<String, String>,
    ) -> ServingSums {
        let Some(commit) = &self.commit else {
            // Nothing served: no code vouches for the modules installed without a checksum.
            return ServingSums::NotNeeded;
        };
        if *commit == self.deploying || current.is_empty() {
            return ServingSums::Same;
        }
        let _ = std::fs::remove_dir_all(&self.target);
        let result = (|| -> Result<BTreeMap<String, String>, String> {
            git::checkout(&self.mirror, commit, &self.target).map_err(|e| e.to_string())?;
            git::checkout_submodules(
                &self.mirror,
                commit,
                &self.url,
                &self.target,
                &self.modules_dir,
                &self.auth,
                &mut |_| {},
            )
            .map_err(|e| e.to_string())?;
            let addons = addons::discover(&self.target, subpath).map_err(|e| e.to_string())?;
            addons::checksums(&self.target, &addons, rules).map_err(|e| e.to_string())
        })();
        let _ = std::fs::remove_dir_all(&self.target);
        match result {
            Ok(sums) => ServingSums::Computed {
                commit: commit.clone(),
                sums,
            },
            Err(e) => ServingSums::Unavailable(e),
        }
    }
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
        match self.guarded_typed(step, work).await {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => Err(e.to_string()),
            Err(e) => Err(e),
        }
    }

    /// [`Deploy::guarded`] keeping the work's own error: the outer error is the deadline
    /// or the cancellation.
    pub async fn guarded_typed<T, E>(
        &self,
        step: &str,
        work: impl Future<Output = Result<T, E>>,
    ) -> Result<Result<T, E>, String> {
        let deadline = self.p.step_timeout();
        tokio::select! {
            result = tokio::time::timeout(deadline, work) => match result {
                Ok(r) => Ok(r),
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
        let built = self.build_step(order, &commit, target).await?;
        let settings = self.push_step(built.settings.clone()).await?;
        if built.init.is_none() && built.plan.update.is_empty() {
            self.code_only(target, &settings).await
        } else {
            self.with_maintenance(target, &settings, &built, order)
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

    async fn build_step(
        &mut self,
        order: &DeployOrder,
        commit: &git::ResolvedCommit,
        target: Color,
    ) -> Result<Built, Failure> {
        let step = self.run.log.start(events::BUILD_IMAGE);
        self.enter(Phase::Preparing, step.name);
        match self.build_inner(&step, order, commit, target).await {
            Ok(out) => {
                step.complete(format!("built {}", out.settings.image));
                Ok(out)
            }
            Err(message) => {
                step.fail(&message);
                Err(format!("Build Image failed: {message}").into())
            }
        }
    }

    async fn build_inner(
        &self,
        step: &StepRun,
        order: &DeployOrder,
        commit: &git::ResolvedCommit,
        target: Color,
    ) -> Result<Built, String> {
        // What the database holds decides how checksums are computed (its languages and
        // exclude patterns) and whether it must be created.
        let phase = Instant::now();
        let facts = self
            .guarded(
                step.name,
                modules::database_facts(&self.p.pg, &self.inst.database),
            )
            .await?;
        let work = self.p.work_dir(&order.deployment_id);
        let subpath = order.addons_subpath.clone();
        let base_image = self.inst.base_image.clone();
        let root = work.clone();
        let rules = facts.rules();
        let installed = facts.installed();
        // The same for every build of the instance, so the build cache keeps their step;
        // the commit is in the image's tag (and on its containers).
        let labels = BTreeMap::from([
            (crate::docker::LABEL_MANAGED.to_owned(), "1".to_owned()),
            (
                crate::docker::LABEL_INSTANCE.to_owned(),
                self.inst.id.clone(),
            ),
        ]);
        let context_file = self
            .p
            .config
            .state_dir
            .join("work")
            .join(format!("{}.context.tar", order.deployment_id));
        let serving = ServingCheckout {
            commit: self.previous.commit_sha.clone(),
            deploying: commit.sha.clone(),
            mirror: self.p.mirror_dir(&order.project_id),
            url: order.repo_url.clone(),
            target: self
                .p
                .config
                .state_dir
                .join("work")
                .join(format!("{}.serving", order.deployment_id)),
            modules_dir: self.p.config.state_dir.join("mirrors").join("submodules"),
            auth: order.auth.clone(),
        };
        let stored_for = facts.stored.clone();
        let tar_path = context_file.clone();
        let (rules_for, installed_for) = (rules.clone(), installed.clone());
        // Addons, manifests, checksums and the build context are read from disk on a
        // blocking thread.
        let prepared = tokio::task::spawn_blocking(move || -> Result<Prepared, String> {
            let addons = addons::discover(&root, &subpath).map_err(|e| e.to_string())?;
            let mut manifests = BTreeMap::new();
            for (name, dir) in &addons.modules {
                let m = crate::manifest::load(&root.join(dir)).map_err(|e| e.to_string())?;
                manifests.insert(name.clone(), m);
            }
            let sums = addons::checksums(&root, &addons, &rules_for).map_err(|e| e.to_string())?;
            let missing: Vec<&String> = sums
                .keys()
                .filter(|m| installed_for.contains(*m) && !stored_for.contains_key(*m))
                .collect();
            let serving_sums = if missing.is_empty() {
                ServingSums::NotNeeded
            } else {
                serving.checksums(&subpath, &rules_for, &sums)
            };
            let sub = addons::validate_subpath(&subpath).map_err(|e| e.to_string())?;
            let context = build::pack(&root, &tar_path, &base_image, &addons, &sub, &labels)
                .map_err(|e| e.to_string())?;
            Ok(Prepared {
                addons,
                manifests,
                sums,
                serving_sums,
                context,
            })
        });
        let read_database_ms = phase.elapsed().as_millis();
        let phase = Instant::now();
        let prepared = self
            .guarded(step.name, async {
                prepared.await.map_err(|e| e.to_string())?
            })
            .await;
        let prepared_ms = phase.elapsed().as_millis();
        let Prepared {
            addons,
            manifests,
            sums: checksums,
            serving_sums,
            context,
        } = match prepared {
            Ok(p) => p,
            Err(e) => {
                let _ = std::fs::remove_file(&context_file);
                return Err(e);
            }
        };
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
        step.line(&format!(
            "checksums as click-odoo-update computes them for this database: languages {}, exclude patterns {}",
            if facts.languages.is_empty() {
                "(none active: every translation counts)".to_owned()
            } else {
                facts.languages.join(", ")
            },
            rules.exclude.join(",")
        ));

        // The plan: decided before anything on the host changes.
        let serving_map = match &serving_sums {
            ServingSums::Computed { commit, sums } => {
                step.line(&format!(
                    "modules installed without a recorded checksum are compared with the serving commit {}",
                    image_tag(commit)
                ));
                Some(sums)
            }
            ServingSums::Unavailable(why) => {
                step.line(&format!(
                    "warning: the serving commit's checksums are unavailable ({why}); modules installed without a recorded checksum will be updated"
                ));
                None
            }
            ServingSums::Same => Some(&checksums),
            ServingSums::NotNeeded => None,
        };
        let depends: BTreeMap<String, Vec<String>> = manifests
            .iter()
            .map(|(n, m)| (n.clone(), m.depends.clone()))
            .collect();
        let module_plan = plan::decide(&plan::Inputs {
            installed: &installed,
            stored: &facts.stored,
            current: &checksums,
            serving: serving_map,
            depends: &depends,
        });
        let init = (!facts.exists || !facts.initialized).then(|| InitSettings {
            demo: self.inst.demo,
            language: self.inst.language.clone(),
        });
        if !module_plan.update.is_empty() && self.record.safety_snapshot.is_none() {
            // A module update is never started without a snapshot to return to.
            let _ = std::fs::remove_file(&context_file);
            return Err(format!(
                "modules {} need updating but no pre-deploy snapshot was taken",
                module_plan.update.join(", ")
            ));
        }
        let maintenance = init.is_some() || !module_plan.update.is_empty();
        self.run.log.emit(EventKind::Plan {
            modules: module_plan.update.clone(),
            maintenance,
            target_color: target,
            initialize: init.as_ref().map(|i| events::InitPlan {
                demo: i.demo,
                language: i.language.clone(),
            }),
            entries: module_plan
                .entries
                .iter()
                .map(|e| events::PlanModule {
                    name: e.module.clone(),
                    reason: e.reason.code().to_owned(),
                    detail: e.reason.describe(),
                })
                .collect(),
        });
        if let Some(init) = &init {
            step.line(&format!(
                "plan: initialize database {} ({}, language {}) with odoo -i base before any colour starts, then start {target}",
                self.inst.database,
                if init.demo { "WITH demo data" } else { "without demo data" },
                init.language
            ));
        } else if module_plan.update.is_empty() {
            step.line(&format!(
                "plan: no installed module changed; zero-downtime switch to {target}"
            ));
        } else {
            step.line(&format!(
                "plan: update {} with odoo -u in a maintenance window (traffic paused), then switch to {target}",
                module_plan.update.join(", ")
            ));
        }
        for entry in &module_plan.entries {
            step.line(&format!("  {}: {}", entry.module, entry.reason.describe()));
        }
        if !module_plan.adopt.is_empty() {
            // Installed while the serving commit served, from its code: its checksum is
            // theirs. Recorded now, so the next deployment has it whatever this one does.
            match modules::record_checksums(&self.p.pg, &self.inst.database, &module_plan.adopt)
                .await
            {
                Ok(n) => step.line(&format!(
                    "recorded the serving commit's checksums of {n} modules installed without one: {}",
                    module_plan.adopt.keys().cloned().collect::<Vec<_>>().join(", ")
                )),
                Err(e) => step.line(&format!("warning: cannot record checksums: {e}")),
            }
        }

        step.line(&format!(
            "database read in {read_database_ms} ms; modules, checksums and build context in {prepared_ms} ms"
        ));
        step.line(&format!(
            "build context: {} files, {} ({} as tar, streamed to the engine; {} Dockerfile{})",
            context.files,
            human_bytes(context.content_bytes),
            human_bytes(context.tar_bytes),
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
        let run = self.run.clone();
        let mut on_line = move |l: &str| run.log.log(events::BUILD_IMAGE, l);
        let phase = Instant::now();
        let built = self
            .guarded_typed(
                step.name,
                self.p.engine.build(
                    &context.tar,
                    &context.dockerfile,
                    &image,
                    &mut on_line,
                    &self.run.cancel,
                ),
            )
            .await;
        let _ = std::fs::remove_file(&context_file);
        match built {
            Ok(Ok(())) => {}
            Ok(Err(e)) => return Err(e.to_string()),
            Err(e) => return Err(e),
        }

        let build_ms = phase.elapsed().as_millis();
        // How to run it: the addons path and the workers mode, from the image itself.
        let phase = Instant::now();
        let serving = self
            .guarded(
                step.name,
                image::inspect(
                    &self.p.engine,
                    &self.p.image_confs,
                    &self.inst,
                    &image,
                    &image::Ask {
                        generated: context
                            .addons_path
                            .as_deref()
                            .map(|path| (path, self.inst.base_image.as_str())),
                        modules: Some(&addons),
                        require_path: true,
                    },
                ),
            )
            .await?;
        for note in &serving.notes {
            step.line(note);
        }
        step.line(&format!(
            "docker build in {build_ms} ms; image read in {} ms",
            phase.elapsed().as_millis()
        ));
        // What `-u` must leave behind: each module it updates or installs from the
        // repository at its manifest's version.
        let mut expected = BTreeMap::new();
        for name in module_plan
            .update
            .iter()
            .chain(module_plan.new_dependencies().iter())
        {
            if let Some(m) = manifests.get(name) {
                expected.insert(name.clone(), m.version.clone());
            }
        }
        let settings = RunSettings {
            image,
            commit_sha: commit.sha.clone(),
            deployment_id: order.deployment_id.clone(),
            addons_path: serving.addons_path,
            websocket: serving.websocket,
            command: serving.command,
        };
        Ok(Built {
            settings,
            plan: module_plan,
            init,
            checksums,
            expected,
            created_database: !facts.exists,
        })
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
        if let Err(e) = self.check_colour(&step, target, settings).await {
            self.remove_container(&name).await;
            step.fail(&e);
            return Err(
                format!("Health Check failed: {e}; the previous version keeps serving").into(),
            );
        }
        if let Err(e) = self.switch_to(&step, target, settings).await {
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

    /// Refuses to start a colour on a database that is missing or has no Odoo tables:
    /// Odoo serving `-d DB` would create it, with demo data, or refuse to load it.
    pub(super) async fn ensure_database_ready(&self) -> Result<(), String> {
        let facts = modules::database_facts(&self.p.pg, &self.inst.database)
            .await
            .map_err(|e| e.to_string())?;
        if !facts.exists {
            return Err(format!(
                "database {} does not exist; no colour is started on it (a serving Odoo would create it with demo data)",
                self.inst.database
            ));
        }
        if !facts.initialized {
            return Err(format!(
                "database {} has no Odoo tables; no colour is started on it",
                self.inst.database
            ));
        }
        Ok(())
    }

    /// Creates and starts a colour container (restart policy set once it is healthy).
    async fn start_colour(
        &self,
        step: &StepRun,
        color: Color,
        settings: &RunSettings,
    ) -> Result<(), String> {
        self.p.prepare_data_dir(&self.inst)?;
        self.guarded(step.name, self.ensure_database_ready())
            .await?;
        let mut spec = self.p.colour_spec(&self.inst, color, settings);
        spec.restart = false;
        self.guarded(step.name, self.p.engine.create(&spec)).await?;
        self.guarded(step.name, self.p.engine.start(&spec.name))
            .await?;
        let (http, _) = color.ports(&self.inst);
        step.line(&format!(
            "started {} from {} (http {}:{http}, websocket port {})",
            spec.name,
            settings.image,
            self.inst.http_interface,
            settings.websocket.port(color, &self.inst)
        ));
        Ok(())
    }

    /// Waits until the colour answers its health checks; fails early if its container died.
    pub(super) async fn check_colour(
        &self,
        step: &StepRun,
        color: Color,
        settings: &RunSettings,
    ) -> Result<(), String> {
        let (http, _) = color.ports(&self.inst);
        let name = container_name(&self.inst.id, color);
        let timeout = Duration::from_secs(self.p.config.pipeline.health_timeout_secs);
        let run = self.run.clone();
        let mut on_line = move |l: &str| run.log.log(events::HEALTH_CHECK, l);
        let host = colour_host(&self.inst);
        let health = health::wait_healthy(
            &host,
            http,
            settings.websocket.port(color, &self.inst),
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
    pub(super) async fn switch_to(
        &mut self,
        step: &StepRun,
        color: Color,
        settings: &RunSettings,
    ) -> Result<(), String> {
        self.guarded(
            step.name,
            self.p
                .traffic
                .route(&self.inst, Route::Color(color, settings.websocket)),
        )
        .await?;
        step.line(&format!(
            "traffic switched to {color} on port {}",
            self.inst.public_port
        ));
        // From here the new colour serves: a crash now finishes forwards, not backwards.
        self.record.phase = Phase::Switched;
        self.record.websocket = Some(settings.websocket);
        self.save();
        let state = InstanceState {
            active_color: Some(color),
            image: self.record.image.clone(),
            commit_sha: self.record.commit_sha.clone(),
            deployment_id: Some(self.record.id.clone()),
            websocket: settings.websocket,
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
            Some(color) => {
                self.p
                    .traffic
                    .route(&self.inst, Route::Color(color, self.previous.websocket))
                    .await
            }
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

    /// The module-update flow: maintenance, `-u` (or the creation of the database), new
    /// colour, switch.
    async fn with_maintenance(
        &mut self,
        target: Color,
        settings: &RunSettings,
        built: &Built,
        order: &DeployOrder,
    ) -> Result<String, Failure> {
        let step = self.run.log.start(events::UPDATE_CONTAINER);
        self.enter(Phase::Maintenance, step.name);
        let mut safety: Option<Box<dyn SafetyCopyPort>> = None;
        let prepared = self
            .enter_maintenance(&step, target, settings, built, order, &mut safety)
            .await;
        if let Err(e) = prepared {
            step.fail(&e);
            let restored = self
                .leave_maintenance(events::UPDATE_CONTAINER, safety, false)
                .await;
            return Err(format!("Update Container failed: {e}; {restored}").into());
        }
        step.complete(if built.init.is_some() {
            "new colour created; it starts once the database exists".to_owned()
        } else {
            "maintenance window open; new colour created".to_owned()
        });

        let step = self.run.log.start(events::MODULE_UPDATE);
        self.enter(Phase::ModulesUpdating, step.name);
        let updated = match &built.init {
            Some(init) => self.initialize_database(&step, init, settings, built).await,
            None => self.update_modules(&step, settings, built).await,
        };
        let summary = match updated {
            Ok(summary) => summary,
            Err(e) => {
                self.remove_container(&update_container_name(&self.inst.id))
                    .await;
                step.fail(&e);
                // A database this run created is dropped; one that existed (empty) is
                // put back from the pre-deploy snapshot, as after a failed -u.
                let touched = built.init.is_none() || !built.created_database;
                let restored = self
                    .leave_maintenance(events::MODULE_UPDATE, safety, touched)
                    .await;
                return Err(format!("Module Update failed: {e}; {restored}").into());
            }
        };
        step.complete(summary.clone());

        let step = self.run.log.start(events::HEALTH_CHECK);
        self.enter(Phase::ModulesUpdating, step.name);
        let name = container_name(&self.inst.id, target);
        let checked = async {
            self.guarded(step.name, self.ensure_database_ready())
                .await?;
            self.guarded(step.name, self.p.engine.start(&name)).await?;
            step.line(&format!("started {name}"));
            self.check_colour(&step, target, settings).await
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
        if let Err(e) = self.switch_to(&step, target, settings).await {
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
            "{target} serves {}; {summary}",
            image_tag(&settings.commit_sha)
        ));
        Ok(format!(
            "deployed {} on {target}; {summary}",
            image_tag(&settings.commit_sha)
        ))
    }

    /// `odoo -u`, then the proof that it happened: every updated module installed at its
    /// manifest's version, nothing left pending. Odoo exits 0 when it skips modules it
    /// cannot find, so the exit code alone does not say.
    async fn update_modules(
        &self,
        step: &StepRun,
        settings: &RunSettings,
        built: &Built,
    ) -> Result<String, String> {
        let changed = &built.plan.update;
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
            .await?;
        if code != 0 {
            return Err(format!("odoo -u exited with code {code}"));
        }
        let facts = modules::database_facts(&self.p.pg, &self.inst.database)
            .await
            .map_err(|e| format!("cannot check the update: {e}"))?;
        let problems = modules::update_problems(&facts, &built.expected);
        if !problems.is_empty() {
            return Err(format!(
                "odoo -u exited 0 but did not update the modules: {} (is every module on Odoo's addons path?)",
                problems.join("; ")
            ));
        }
        step.line(&format!(
            "{} at their manifest versions; nothing left to install, upgrade or remove",
            built
                .expected
                .keys()
                .cloned()
                .collect::<Vec<_>>()
                .join(", ")
        ));
        let n = modules::record_checksums(&self.p.pg, &self.inst.database, &built.checksums)
            .await
            .map_err(|e| format!("cannot record module checksums: {e}"))?;
        step.line(&format!("recorded checksums of {n} installed modules"));
        let mut summary = format!("updated {}", changed.join(", "));
        let new = built.plan.new_dependencies();
        if !new.is_empty() {
            summary.push_str(&format!("; installed {}", new.join(", ")));
        }
        Ok(summary)
    }

    /// Creates the database deliberately: `odoo -i base --without-demo=all`, the
    /// instance's language and country, checked afterwards.
    async fn initialize_database(
        &mut self,
        step: &StepRun,
        init: &InitSettings,
        settings: &RunSettings,
        built: &Built,
    ) -> Result<String, String> {
        if built.created_database {
            // Journaled first: an interrupted run drops what it created.
            self.record.created_database = true;
            self.save();
        }
        let spec = self.p.init_spec(&self.inst, init, settings);
        step.line(&format!(
            "initialize database {}: odoo {}",
            self.inst.database,
            spec.cmd
                .iter()
                .filter(|a| !a.starts_with("--db_"))
                .cloned()
                .collect::<Vec<_>>()
                .join(" ")
        ));
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
            .await?;
        if code != 0 {
            return Err(format!("odoo -i base exited with code {code}"));
        }
        let settled = modules::settle_new_database(
            &self.p.pg,
            &self.inst.database,
            &init.language,
            self.inst.country.as_deref(),
        )
        .await
        .map_err(|e| format!("database {} was created but {e}", self.inst.database))?;
        for line in &settled {
            step.line(line);
        }
        let facts = modules::database_facts(&self.p.pg, &self.inst.database)
            .await
            .map_err(|e| format!("cannot check the new database: {e}"))?;
        let base = facts.modules.get("base").map(|r| r.state.as_str());
        if base != Some("installed") {
            return Err(format!(
                "odoo -i base exited 0 but base is {}",
                base.unwrap_or("missing")
            ));
        }
        let problems = modules::update_problems(&facts, &BTreeMap::new());
        if !problems.is_empty() {
            return Err(problems.join("; "));
        }
        let n = modules::record_checksums(&self.p.pg, &self.inst.database, &built.checksums)
            .await
            .map_err(|e| format!("cannot record module checksums: {e}"))?;
        if n > 0 {
            step.line(&format!("recorded checksums of {n} installed modules"));
        }
        Ok(format!(
            "database {} created {} ({} modules installed, language {})",
            self.inst.database,
            if init.demo {
                "WITH demo data"
            } else {
                "without demo data"
            },
            facts
                .modules
                .values()
                .filter(|r| r.state == "installed")
                .count(),
            init.language
        ))
    }

    async fn enter_maintenance(
        &mut self,
        step: &StepRun,
        target: Color,
        settings: &RunSettings,
        built: &Built,
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
        if built.init.is_some() {
            step.line("no safety copy: there is no database yet");
        } else if self.p.snapshots.unavailable_reason().is_none() {
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
    /// pre-deploy snapshot, if `-u` may have run; dropped if this run created it), old
    /// colour started, traffic back. Returns a sentence saying what now serves.
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
        if self.record.created_database {
            match self.p.pg.drop_database(&self.inst.database).await {
                Ok(()) => log(&format!(
                    "database {} dropped again (this deployment created it)",
                    self.inst.database
                )),
                Err(e) => log(&format!(
                    "error: cannot drop the database {} this deployment created: {e}",
                    self.inst.database
                )),
            }
        }
        let mut restored = true;
        if let Some(copy) = safety {
            match copy.swap_back().await {
                Ok(()) => log("database and filestore put back from the safety copy"),
                Err(e) => {
                    log(&format!("error: swapping the safety copy back failed: {e}"));
                    restored = self.restore_snapshot(step).await;
                }
            }
        } else if database_touched && !self.record.created_database {
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
        if let Err(e) = self.ensure_database_ready().await {
            log(&format!("error: {e}"));
            return format!("the previous colour {old} was not restarted: {e}");
        }
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
        if let Err(e) = health::wait_healthy(
            &colour_host(&self.inst),
            http,
            self.previous.websocket.port(old, &self.inst),
            &self.inst.database,
            timeout,
            &cancel,
            &mut on_line,
        )
        .await
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

/// The address the colours are reached on from this host: their `http_interface`, or
/// loopback when they listen on every address.
pub fn colour_host(inst: &InstanceConfig) -> String {
    match inst.http_interface {
        addr if addr.is_unspecified() => "127.0.0.1".to_owned(),
        std::net::IpAddr::V6(v6) => format!("[{v6}]"),
        std::net::IpAddr::V4(v4) => v4.to_string(),
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
