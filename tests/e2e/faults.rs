//! Fault tests on the real binaries and services. Each fault hits a real deployment driven
//! through the coordinator's API; afterwards nothing is lost (database rows, filestore
//! files, the event history), the old version serves or the new one has fully switched
//! (never neither, checked through nginx and in Docker), and the next deployment succeeds.
//!
//! - The agent is killed (SIGKILL, with its process group, as systemd cleans up a crashed
//!   unit) in each pipeline step in turn, and once after the traffic switch.
//! - The coordinator–agent link is cut mid-deployment, silently and with resets.
//! - The registry goes down, PostgreSQL goes down during the pre-deploy snapshot, and the
//!   agent's disk fills up.
//!
//! Steps too fast to hit are made slower by what a repository or an operator could really
//! do: a ballast table in the database, a large file in the repository, a slow or large
//! `RUN` in the repository's Dockerfile, an entry point that lingers after `odoo -u`, the
//! Odoo stand-in's `OCORE_SLOW_START`. Nothing in the agent knows about these tests.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{ensure, Context, Result};
use ocore_proto::v1;
use ocore_tests::faults::{LinkCut, PrivatePostgres, PrivateRegistry, Tmpfs};
use ocore_tests::fixture::{http_get, AddonsRepo, Site, SiteOptions};
use ocore_tests::history::{
    agent_events, assert_record_complete, assert_same_history, coordinator_events, STEPS,
};
use ocore_tests::{http_call, step_status, wait_deployment, wait_for};
use serde_json::Value;

const LONG: Duration = Duration::from_secs(300);
const TERMINAL: [&str; 3] = ["succeeded", "failed", "cancelled"];

/// The repository's Dockerfile. Marker files under `faults/` switch on its slow paths; a
/// user's Dockerfile may do any of this.
const DOCKERFILE: &str = "FROM ocore/odoo-test:17.0
COPY --chown=odoo:odoo . /mnt/extra-addons
COPY --chown=odoo:odoo faults/odoo.conf /etc/odoo/odoo.conf
RUN if [ -e /mnt/extra-addons/faults/slow-build ]; then sleep $(cat /mnt/extra-addons/faults/slow-build); fi; \
    if [ -e /mnt/extra-addons/faults/big-layer ]; then head -c 134217728 /dev/urandom > /mnt/extra-addons/faults/layer.bin; fi
LABEL org.ocore.odoo-command=\"[\\\"/bin/sh\\\", \\\"/mnt/extra-addons/faults/entrypoint.sh\\\"]\"
";

/// The command oCore runs Odoo with (the image's `org.ocore.odoo-command`); with
/// `faults/slow-update`, a `--stop-after-init` run lingers after its work is committed (as
/// a slow `-u` would), so the agent can be killed mid-step.
const ENTRYPOINT: &str = "#!/bin/sh
if [ -e /mnt/extra-addons/faults/slow-update ]; then
  case \" $* \" in *\" --stop-after-init \"*)
    /usr/bin/odoo \"$@\" || exit $?
    sleep 120
    exit 0;;
  esac
fi
exec /usr/bin/odoo \"$@\"
";

/// Odoo's configuration as the official image has it: no database settings, so the
/// agent's `[postgres]` (passed as `--db_host`, `--db_port`, `--db_user`, and the password
/// file) decides.
const ODOO_CONF: &str = "[options]
addons_path = /mnt/extra-addons
data_dir = /var/lib/odoo
";

/// One site (coordinator, agent, nginx, database, a private registry) with project `shop`
/// deployed once from its first commit and its two modules installed.
struct Rig {
    site: Site,
    repo: AddonsRepo,
    registry: PrivateRegistry,
    /// Keeps the site's files until the site has dropped.
    _dir: tempfile::TempDir,
}

impl Rig {
    fn start(options: SiteOptions) -> Result<Self> {
        Self::start_with(options, |_| Ok(()))
    }

    /// `before` runs on the site's directory before the site starts (a mount, a server).
    fn start_with(options: SiteOptions, before: impl FnOnce(&Path) -> Result<()>) -> Result<Self> {
        let rig = Self::prepare(options, before)?;
        let d = rig.deploy_and_wait()?;
        ensure!(d["status"] == "succeeded", "first deployment: {d}");
        let image = d["imageRef"].as_str().context("imageRef")?;
        rig.site.install_modules(image, "mod_b")?;
        Ok(rig)
    }

    /// The site and its repository, nothing deployed yet.
    fn prepare(mut options: SiteOptions, before: impl FnOnce(&Path) -> Result<()>) -> Result<Self> {
        let dir = tempfile::tempdir()?;
        let registry = PrivateRegistry::start(dir.path())?;
        options.registry = Some(registry.address.clone());
        before(dir.path())?;
        let site = Site::start(dir.path(), &options)?;
        let repo = AddonsRepo::init(dir.path())?;
        repo.module("mod_a", "1.0", &["base"], "A = 1\n")?;
        repo.module("mod_b", "1.0", &["mod_a"], "B = 1\n")?;
        repo.write("Dockerfile", DOCKERFILE)?;
        repo.write("faults/entrypoint.sh", ENTRYPOINT)?;
        repo.write("faults/odoo.conf", ODOO_CONF)?;
        repo.write(".dockerignore", ".git\nballast\n")?;
        repo.commit("first version")?;
        site.configure_shop(&repo)?;
        Ok(Self {
            site,
            repo,
            registry,
            _dir: dir,
        })
    }

    fn deploy(&self) -> Result<String> {
        self.site.deploy_main()
    }

    fn show(&self, id: &str) -> Result<Value> {
        self.site
            .coordinator
            .get_ok(&format!("/api/projects/shop/deployments/{id}"))
    }

    fn wait(&self, id: &str) -> Result<Value> {
        wait_deployment(&self.site.coordinator, "shop", id, &TERMINAL, LONG)
    }

    fn deploy_and_wait(&self) -> Result<Value> {
        let id = self.deploy()?;
        self.wait(&id)
    }

    /// Polls the deployment until `ready` says the fault may strike; fails if it ends first.
    fn wait_until(
        &self,
        id: &str,
        what: &str,
        mut ready: impl FnMut(&Value) -> bool,
    ) -> Result<Value> {
        let found = wait_for(what, LONG, || {
            let d = self.show(id).ok()?;
            if TERMINAL.contains(&d["status"].as_str().unwrap_or_default()) {
                return Some(Err(anyhow::anyhow!(
                    "the deployment ended before {what}: {d}"
                )));
            }
            ready(&d).then_some(Ok(d))
        })?;
        found
    }

    /// Starts the agent again on its state and points the coordinator at it.
    fn restart_agent(&mut self) -> Result<()> {
        let address = self.site.agent.run()?;
        let c = &self.site.coordinator;
        c.cli_json(&[
            "agent",
            "set-address",
            &self.site.agent.name,
            "--address",
            &address,
        ])?;
        c.wait_agent_status(&self.site.agent.name, "connected")?;
        Ok(())
    }

    /// The commit and colour the public port serves through nginx.
    fn serving(&self) -> Result<(String, String)> {
        let (status, body, color) = self.site.public_page()?;
        ensure!(status == 200, "the public port answered {status}: {body}");
        let commit = body
            .lines()
            .find_map(|l| l.trim().strip_prefix("commit "))
            .unwrap_or_default()
            .to_owned();
        Ok((commit, color))
    }

    /// Fails unless exactly one colour runs, `color`, serving `commit` through nginx, and
    /// nothing else of the instance is left in Docker.
    fn assert_serving(&self, commit: &str, color: &str) -> Result<()> {
        let serving = self.serving()?;
        ensure!(
            serving == (commit.to_owned(), color.to_owned()),
            "nginx serves {serving:?}, expected {commit} on {color}"
        );
        let name = format!("ocore-{}-{color}", self.site.instance);
        let containers = self.site.containers()?;
        ensure!(
            containers == [name.clone()],
            "containers of the instance: {containers:?}, expected only {name}"
        );
        let running = std::process::Command::new("docker")
            .args(["inspect", "-f", "{{.State.Running}}", &name])
            .output()?;
        ensure!(
            String::from_utf8_lossy(&running.stdout).trim() == "true",
            "{name} is not running"
        );
        let route = std::fs::read_to_string(
            self.site
                .nginx
                .conf_dir
                .join(format!("ocore-{}.conf", self.site.instance)),
        )?;
        ensure!(
            route.contains(&format!("active colour: {color}")),
            "nginx route: {route}"
        );
        Ok(())
    }

    fn module_versions(&self) -> Result<String> {
        self.site.env.psql(
            &self.site.database,
            "SELECT name || ' ' || latest_version FROM ir_module_module ORDER BY name",
        )
    }

    /// Stores an attachment through the serving colour, as a user would; returns its
    /// filestore name.
    fn attach(&self, name: &str) -> Result<String> {
        let (status, body) = http_call(
            &format!("http://127.0.0.1:{}", self.site.public_port),
            "POST",
            &format!("/ocore-test/attachment?name={name}"),
            None,
            Some(("text/plain", &format!("written before the fault: {name}"))),
            &[],
        )?;
        ensure!(status == 200, "attachment: {status} {body}");
        Ok(body["store_fname"]
            .as_str()
            .context("store_fname")?
            .to_owned())
    }

    /// Fails unless the attachment's row and filestore file are both there.
    fn assert_attachment(&self, store_fname: &str) -> Result<()> {
        let rows = self.site.env.psql(
            &self.site.database,
            &format!("SELECT count(*) FROM ir_attachment WHERE store_fname = '{store_fname}'"),
        )?;
        ensure!(rows == "1", "attachment row {store_fname}: {rows}");
        let file = self
            .site
            .data_dir
            .join("filestore")
            .join(&self.site.database)
            .join(store_fname);
        ensure!(file.exists(), "filestore file {} is gone", file.display());
        Ok(())
    }

    /// The history of `id` is complete and the same on the coordinator and the agent.
    fn assert_history(&self, id: &str) -> Result<Value> {
        let d = self.wait(id)?;
        assert_record_complete(&d)?;
        let events = coordinator_events(&self.site, "shop", id)?;
        assert_same_history(&events, &agent_events(&self.site, id)?)?;
        Ok(d)
    }

    /// A deployment of a fresh commit succeeds and serves; returns the colour it serves on.
    fn assert_next_deploy_succeeds(&self, change: &str) -> Result<String> {
        self.repo
            .write("mod_b/models.py", &format!("B = {change:?}\n"))?;
        let sha = self.repo.commit(&format!("after the fault: {change}"))?;
        let d = self.deploy_and_wait()?;
        ensure!(
            d["status"] == "succeeded",
            "the next deployment failed: {d}"
        );
        let color = d["activeColor"].as_str().context("activeColor")?.to_owned();
        self.assert_serving(&sha, &color)?;
        Ok(color)
    }

    fn step_durations(d: &Value) -> String {
        d["steps"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|s| format!("{} {} {}ms", s["name"], s["status"], s["durationMs"]))
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// Where the agent is killed, and what makes that moment last long enough to hit.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Kill {
    Snapshot,
    Clone,
    Build,
    Push,
    UpdateContainer,
    ModuleUpdate,
    HealthCheck,
    /// In the Health Check step of a code-only deployment, after the traffic switched,
    /// while the old colour drains.
    AfterSwitch,
}

/// Agent settings that let every kill point be reached: a health check that waits for a
/// slow start, and a drain long enough to be hit.
fn kill_options() -> SiteOptions {
    SiteOptions {
        health_timeout_secs: 200,
        drain_secs: 120,
        ..Default::default()
    }
}

impl Kill {
    fn step(self) -> &'static str {
        match self {
            Kill::Snapshot => "Pre-deploy Snapshot",
            Kill::Clone => "Clone Repository",
            Kill::Build => "Build Image",
            Kill::Push => "Push Image",
            Kill::UpdateContainer => "Update Container",
            Kill::ModuleUpdate => "Module Update",
            Kill::HealthCheck | Kill::AfterSwitch => "Health Check",
        }
    }

    /// Changes the repository (and the database) for the deployment that is hit.
    fn prepare(self, rig: &Rig, round: usize) -> Result<()> {
        let repo = &rig.repo;
        if self == Kill::AfterSwitch {
            // A code-only deployment: zero downtime, the old colour drains after the switch.
            return repo.write("mod_a/static/app.js", &format!("console.log({round});\n"));
        }
        // A module change: the deployment runs `odoo -u mod_a` in a maintenance window.
        repo.module(
            "mod_a",
            &format!("1.{round}"),
            &["base"],
            &format!("A = {round}\n"),
        )?;
        match self {
            Kill::Snapshot => {
                rig.site.env.psql(
                    &rig.site.database,
                    "CREATE TABLE ocore_fault_ballast AS SELECT g AS id, md5(g::text) || md5((g * 7)::text) AS a FROM generate_series(1, 300000) g",
                )?;
            }
            Kill::Clone => {
                // A large new file: fetching and checking it out takes a while.
                let mut data = vec![0u8; 64 << 20];
                let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
                for chunk in data.chunks_mut(8) {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    chunk.copy_from_slice(&x.to_le_bytes()[..chunk.len()]);
                }
                std::fs::create_dir_all(repo.dir.join("ballast"))?;
                std::fs::write(repo.dir.join("ballast/data.bin"), data)?;
            }
            Kill::Build => repo.write("faults/slow-build", "120")?,
            Kill::Push => repo.write("faults/big-layer", "")?,
            Kill::ModuleUpdate => repo.write("faults/slow-update", "")?,
            Kill::HealthCheck => repo.write("mod_a/OCORE_SLOW_START", "150")?,
            Kill::UpdateContainer | Kill::AfterSwitch => {}
        }
        Ok(())
    }

    /// Undoes `prepare`'s slow paths, so the next deployment runs at its normal pace.
    fn unprepare(self, rig: &Rig) -> Result<()> {
        let repo = &rig.repo;
        for marker in [
            "faults/slow-build",
            "faults/big-layer",
            "faults/slow-update",
            "mod_a/OCORE_SLOW_START",
            "ballast/data.bin",
        ] {
            if repo.dir.join(marker).exists() {
                repo.remove(marker)?;
            }
        }
        if self == Kill::Snapshot {
            rig.site
                .env
                .psql(&rig.site.database, "DROP TABLE ocore_fault_ballast")?;
        }
        Ok(())
    }

    /// True once the deployment is where this fault strikes.
    fn ready(self, rig: &Rig, d: &Value, updates_before: usize) -> bool {
        if step_status(d, self.step()) != Some("running") {
            return false;
        }
        match self {
            // Strike once `odoo -u` has committed: the database really changed.
            Kill::ModuleUpdate => rig.site.update_runs().unwrap_or(0) > updates_before,
            // Strike once the switch is journaled and the old colour drains.
            Kill::AfterSwitch => step_output(d, self.step()).contains("draining"),
            _ => true,
        }
    }
}

fn step_output<'a>(d: &'a Value, name: &str) -> &'a str {
    d["steps"]
        .as_array()
        .and_then(|steps| steps.iter().find(|s| s["name"] == name))
        .and_then(|s| s["output"].as_str())
        .unwrap_or_default()
}

/// Kills the agent at each of `kills` in turn, in deployments on one site; after each,
/// restarts it, checks the outcome, and deploys again.
fn agent_killed(kills: &[Kill]) -> Result<()> {
    let mut rig = Rig::start(kill_options())?;
    for (round, kill) in kills.iter().copied().enumerate() {
        let started = Instant::now();
        kill_once(&mut rig, kill, round + 2)
            .with_context(|| format!("agent killed during {kill:?}"))?;
        eprintln!(
            "agent killed during {kill:?}: survived, {:?}",
            started.elapsed()
        );
    }
    Ok(())
}

fn kill_once(rig: &mut Rig, kill: Kill, round: usize) -> Result<()> {
    let (old_commit, old_color) = rig.serving()?;
    let new_color = if old_color == "blue" { "green" } else { "blue" };
    let versions_before = rig.module_versions()?;
    let attachment = rig.attach(&format!("before-{round}"))?;
    let updates_before = rig.site.update_runs()?;
    kill.prepare(rig, round)?;
    let commit = rig
        .repo
        .commit(&format!("hit by a kill during {}", kill.step()))?;

    let id = rig.deploy()?;
    let at_kill = rig.wait_until(&id, &format!("{kill:?}"), |d| {
        kill.ready(rig, d, updates_before)
    })?;
    // During the build, a second deployment waits its turn on the agent when it dies.
    let waiting = if kill == Kill::Build {
        Some(queue_on_agent(rig)?)
    } else {
        None
    };
    rig.site.agent.crash()?;
    rig.restart_agent()?;

    if let Some(waiting) = waiting {
        let events = agent_events(&rig.site, &waiting)?;
        let finished = events.last().and_then(|e| match &e.kind {
            Some(v1::deploy_event::Kind::Finished(f)) => Some(f.clone()),
            _ => None,
        });
        ensure!(
            finished
                .as_ref()
                .is_some_and(|f| f.status == v1::DeploymentStatus::Failed as i32
                    && f.message.contains("interrupted")),
            "the waiting deployment ended with {finished:?}"
        );
    }
    let d = rig.assert_history(&id)?;
    eprintln!(
        "agent killed during {kill:?}: {}; steps: {}",
        d["statusReason"],
        Rig::step_durations(&d)
    );
    let reason = d["statusReason"].as_str().unwrap_or_default();
    ensure!(
        reason.contains(&format!(
            "interrupted: the agent restarted during {}",
            kill.step()
        )),
        "the agent was killed in {} (deployment then: {at_kill}), but the record says: {d}",
        kill.step()
    );
    let position = STEPS
        .iter()
        .position(|s| *s == kill.step())
        .context("step")?;
    // The interrupted step is timed from its start to the recovery.
    let hit = &d["steps"][position];
    ensure!(
        hit["durationMs"].as_u64().is_some_and(|ms| ms > 0),
        "the interrupted step has no duration: {hit}"
    );
    if kill == Kill::AfterSwitch {
        // The new colour had the traffic: the agent finished forwards.
        ensure!(d["status"] == "succeeded", "{d}");
        ensure!(d["activeColor"] == new_color, "{d}");
        rig.assert_serving(&commit, new_color)?;
    } else {
        ensure!(d["status"] == "failed", "{d}");
        for (i, step) in d["steps"].as_array().context("steps")?.iter().enumerate() {
            let want = match i.cmp(&position) {
                std::cmp::Ordering::Less => "completed",
                std::cmp::Ordering::Equal => "failed",
                std::cmp::Ordering::Greater => "skipped",
            };
            ensure!(step["status"] == want, "step {i} should be {want}: {d}");
        }
        ensure!(d["activeColor"] == old_color.as_str(), "{d}");
        rig.assert_serving(&old_commit, &old_color)?;
        // Whatever `-u` did to the database was undone.
        ensure!(
            rig.module_versions()? == versions_before,
            "module versions changed by an interrupted deployment"
        );
    }
    rig.assert_attachment(&attachment)?;
    if kill == Kill::Snapshot {
        // A half-taken snapshot is never visible, and its temporary files are gone.
        let listed = rig
            .site
            .coordinator
            .get_ok("/api/environments/shop-prod/snapshots")?;
        let half_taken: Vec<&Value> = listed["snapshots"]
            .as_array()
            .context("snapshots")?
            .iter()
            .filter(|s| s["deploymentId"] == id.as_str())
            .collect();
        ensure!(
            half_taken.is_empty(),
            "a half-taken snapshot is listed: {half_taken:?}"
        );
        let tmp = rig
            .site
            .agent
            .dir
            .join("state/snapshots")
            .join(&rig.site.instance)
            .join("tmp");
        let left: Vec<_> = std::fs::read_dir(&tmp)
            .map(|r| r.filter_map(|e| e.ok().map(|e| e.file_name())).collect())
            .unwrap_or_default();
        ensure!(left.is_empty(), "left in {}: {left:?}", tmp.display());
    }
    kill.unprepare(rig)?;
    rig.assert_next_deploy_succeeds(&format!("after {kill:?}"))?;
    Ok(())
}

/// Sends a second deployment of the instance straight to the agent (as a coordinator
/// that lost track might) and returns its id once the agent holds it, waiting its turn.
fn queue_on_agent(rig: &Rig) -> Result<String> {
    let id = ocore_tests::fixture::unique("waiting-");
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let mut client = rig.site.agent_client().await?;
        client
            .deploy(v1::DeployRequest {
                deployment_id: id.clone(),
                instance_id: rig.site.instance.clone(),
                repository: Some(v1::Repository {
                    url: rig.repo.url(),
                    addons_subpath: String::new(),
                    credentials: None,
                    project_id: "shop".to_owned(),
                }),
                reference: Some(v1::GitReference {
                    branch: "main".to_owned(),
                    ..Default::default()
                }),
                from_seq: 0,
                snapshot_id: String::new(),
            })
            .await
            .map_err(|s| anyhow::anyhow!("Deploy: {s:?}"))?;
        let deadline = Instant::now() + LONG;
        loop {
            let info = client
                .get_info(v1::GetInfoRequest {})
                .await
                .map_err(|s| anyhow::anyhow!("GetInfo: {s:?}"))?
                .into_inner();
            if info.running.iter().any(|r| r.deployment_id == id) {
                return Ok(id);
            }
            ensure!(Instant::now() < deadline, "the agent never held {id}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
}

// Two kill points per site: the second deployment hit starts from what the first fault
// and the deployment after it left.

#[test]
fn agent_killed_in_pre_deploy_snapshot_then_update_container() -> Result<()> {
    agent_killed(&[Kill::Snapshot, Kill::UpdateContainer])
}

#[test]
fn agent_killed_in_clone_then_build() -> Result<()> {
    agent_killed(&[Kill::Clone, Kill::Build])
}

#[test]
fn agent_killed_in_push_then_module_update() -> Result<()> {
    agent_killed(&[Kill::Push, Kill::ModuleUpdate])
}

#[test]
fn agent_killed_in_health_check_then_after_the_switch() -> Result<()> {
    agent_killed(&[Kill::HealthCheck, Kill::AfterSwitch])
}

/// The agent is killed while the first deployment creates the database: on restart it
/// drops the database it had Odoo create, nothing serves, and the next deployment creates
/// it again from nothing.
#[test]
fn agent_killed_while_creating_the_database_drops_it_on_restart() -> Result<()> {
    let mut rig = Rig::prepare(SiteOptions::default(), |_| Ok(()))?;
    // The init run lingers after its work is committed.
    rig.repo.write("faults/slow-update", "")?;
    rig.repo.commit("first version, slow init")?;
    let id = rig.deploy()?;
    rig.wait_until(&id, "the database's creation", |d| {
        step_status(d, "Module Update") == Some("running")
    })?;
    let update = format!("ocore-{}-update", rig.site.instance);
    let exists = |rig: &Rig| -> Result<bool> {
        Ok(rig.site.env.psql(
            "postgres",
            &format!(
                "SELECT count(*) FROM pg_database WHERE datname = '{}'",
                rig.site.database
            ),
        )? == "1")
    };
    wait_for("Odoo to create the database", LONG, || {
        let tables = rig
            .site
            .env
            .psql(
                &rig.site.database,
                "SELECT count(*) FROM ir_module_module WHERE state = 'installed'",
            )
            .ok()?;
        (tables != "0").then_some(())
    })?;
    rig.site.agent.crash()?;
    rig.restart_agent()?;
    let d = rig.wait(&id)?;
    ensure!(d["status"] == "failed", "{d}");
    let reason = d["statusReason"].as_str().unwrap_or_default();
    ensure!(
        reason.contains("interrupted") && reason.contains("dropped"),
        "{d}"
    );
    ensure!(!exists(&rig)?, "the half-created database is still there");
    let containers = rig.site.containers()?;
    ensure!(
        containers.is_empty(),
        "{update} and every other container go: {containers:?}"
    );
    rig.repo.remove("faults/slow-update")?;
    rig.repo.commit("first version")?;
    let d = rig.deploy_and_wait()?;
    ensure!(d["status"] == "succeeded", "{d}");
    ensure!(d["plan"]["initializeDatabase"] == true, "{d}");
    Ok(())
}

/// The agent's port, from the address it listens on.
fn agent_port(rig: &Rig) -> Result<u16> {
    let address = rig.site.agent.address.as_deref().context("agent address")?;
    Ok(address
        .rsplit_once(':')
        .context("agent address")?
        .1
        .parse()?)
}

/// True once the private registry holds the tag of `commit`.
fn pushed(rig: &Rig, commit: &str) -> bool {
    http_get(&format!(
        "http://{}/v2/ocore/{}/tags/list",
        rig.registry.address, rig.site.instance
    ))
    .is_ok_and(|(_, body, _)| body.contains(&commit[..12]))
}

/// The coordinator–agent link is cut twice during one deployment: with resets (both ends
/// see the connection die, and the coordinator re-attaches once it can) and silently
/// (packets dropped, as a lost route does). The agent goes on meanwhile, and the
/// coordinator's history ends exactly as the agent journaled it.
#[test]
fn a_cut_link_loses_no_event() -> Result<()> {
    let rig = Rig::start(SiteOptions::default())?;
    let port = agent_port(&rig)?;
    rig.repo.write("faults/slow-build", "6")?;
    rig.repo.write("mod_a/OCORE_SLOW_START", "6")?;
    rig.repo.module("mod_a", "1.5", &["base"], "A = 5\n")?;
    let commit = rig.repo.commit("deployed over a bad link")?;
    let id = rig.deploy()?;

    // Resets, from the build until the image is pushed: the coordinator loses the stream.
    rig.wait_until(&id, "the build", |d| {
        step_status(d, "Build Image") == Some("running")
    })?;
    let cut = LinkCut::cut(port, true)?;
    wait_for("the coordinator to lose the stream", LONG, || {
        rig.show(&id).ok().filter(|d| {
            d["statusReason"]
                .as_str()
                .is_some_and(|r| r.contains("agent"))
        })
    })?;
    wait_for("the push behind the cut", LONG, || {
        pushed(&rig, &commit).then_some(())
    })?;
    let seen = rig.show(&id)?;
    cut.restore()?;
    ensure!(
        step_status(&seen, "Push Image") != Some("completed"),
        "the coordinator learnt of the push through a cut link: {seen}"
    );

    // Silent, from the new colour's start until traffic has switched to it.
    let green = format!("ocore-{}-green", rig.site.instance);
    wait_for("the new colour to start", LONG, || {
        let out = std::process::Command::new("docker")
            .args(["inspect", "-f", "{{.State.Running}}", &green])
            .output()
            .ok()?;
        (String::from_utf8_lossy(&out.stdout).trim() == "true").then_some(())
    })?;
    let cut = LinkCut::cut(port, false)?;
    wait_for("the switch behind the cut", LONG, || {
        rig.serving()
            .ok()
            .filter(|(serving, color)| *serving == commit && color == "green")
    })?;
    cut.restore()?;

    let d = rig.assert_history(&id)?;
    ensure!(d["status"] == "succeeded", "{d}");
    rig.assert_serving(&commit, "green")?;
    Ok(())
}

/// The registry is down when the image is pushed: the Push step fails, the old version
/// keeps serving, and once the registry is back the next deployment goes through.
#[test]
fn the_registry_down_fails_the_push_and_keeps_the_old_version() -> Result<()> {
    let mut rig = Rig::start(SiteOptions::default())?;
    let (old_commit, old_color) = rig.serving()?;
    rig.repo.write("faults/slow-build", "3")?;
    rig.repo.module("mod_a", "1.6", &["base"], "A = 6\n")?;
    rig.repo.commit("pushed to a dead registry")?;
    let id = rig.deploy()?;
    rig.wait_until(&id, "the build", |d| {
        step_status(d, "Build Image") == Some("running")
    })?;
    rig.registry.stop()?;
    let d = rig.assert_history(&id)?;
    ensure!(d["status"] == "failed", "{d}");
    ensure!(step_status(&d, "Push Image") == Some("failed"), "{d}");
    ensure!(
        step_output(&d, "Push Image").contains(&rig.registry.address),
        "the failure names the registry: {d}"
    );
    for step in ["Update Container", "Module Update", "Health Check"] {
        ensure!(step_status(&d, step) == Some("skipped"), "{step}: {d}");
    }
    rig.assert_serving(&old_commit, &old_color)?;
    rig.registry.resume()?;
    rig.repo.remove("faults/slow-build")?;
    rig.assert_next_deploy_succeeds("registry back")?;
    Ok(())
}

/// PostgreSQL goes down while the pre-deploy snapshot dumps the database: the snapshot
/// fails, nothing else is touched, no half snapshot is kept, and once the server is back
/// the old version serves again and the next deployment goes through.
#[test]
fn postgresql_down_during_the_snapshot_fails_it_and_touches_nothing() -> Result<()> {
    let pg = PrivatePostgres::start()?;
    let rig = Rig::start(SiteOptions {
        postgres: Some((pg.port, pg.user.clone(), pg.password.clone())),
        ..Default::default()
    })?;
    let (old_commit, old_color) = rig.serving()?;
    let attachment = rig.attach("before-pg")?;
    rig.site.env.psql(
        &rig.site.database,
        "CREATE TABLE ocore_fault_ballast AS SELECT g AS id, md5(g::text) || md5((g * 7)::text) AS a FROM generate_series(1, 300000) g",
    )?;
    rig.repo.module("mod_a", "1.7", &["base"], "A = 7\n")?;
    rig.repo.commit("snapshot without a database server")?;
    let id = rig.deploy()?;
    rig.wait_until(&id, "the dump", |d| {
        step_output(d, "Pre-deploy Snapshot").contains("database: ")
    })?;
    pg.stop()?;
    let d = rig.wait(&id)?;
    pg.resume()?;
    let d = {
        assert_record_complete(&d)?;
        rig.assert_history(&id)?
    };
    ensure!(d["status"] == "failed", "{d}");
    ensure!(
        step_status(&d, "Pre-deploy Snapshot") == Some("failed"),
        "{d}"
    );
    for step in &STEPS[1..] {
        ensure!(step_status(&d, step) == Some("skipped"), "{step}: {d}");
    }
    ensure!(d["snapshotId"].is_null(), "{d}");
    let listed = rig
        .site
        .coordinator
        .get_ok("/api/environments/shop-prod/snapshots")?;
    ensure!(
        !listed["snapshots"]
            .as_array()
            .context("snapshots")?
            .iter()
            .any(|s| s["deploymentId"] == id.as_str()),
        "a half-taken snapshot is listed: {listed}"
    );
    wait_for("the old version to serve again", LONG, || {
        rig.assert_serving(&old_commit, &old_color).ok()
    })?;
    rig.assert_attachment(&attachment)?;
    rig.site
        .env
        .psql(&rig.site.database, "DROP TABLE ocore_fault_ballast")?;
    rig.assert_next_deploy_succeeds("database back")?;
    Ok(())
}

/// The agent's disk fills up.
///
/// - Nearly full: the pre-deploy snapshot's disk check refuses before anything is
///   written; the old version keeps serving.
/// - Full before a deployment, then full during one: the journal stops writing while it
///   still has a reserve (sled loses acknowledged writes once it hits a full disk), and
///   the agent stops (a failure exit, for systemd to restart it) without showing the
///   coordinator any event it did not store. Once space is freed and the agent restarts,
///   the deployment ends, its history is the agent's, and a colour serves.
///
/// After each, the next deployment goes through.
#[test]
fn a_full_disk_stops_deployments_cleanly_and_loses_nothing() -> Result<()> {
    let mut disk: Option<Tmpfs> = None;
    let mut rig = Rig::start_with(SiteOptions::default(), |dir| {
        // The agent's whole state directory: journal, mirrors, work trees, snapshots.
        disk = Some(Tmpfs::mount(&dir.join("agent-web1/state"), 320)?);
        Ok(())
    })?;
    let disk = disk.context("tmpfs")?;

    let (old_commit, old_color) = rig.serving()?;
    let ballast = disk.fill(24 << 20)?;
    rig.repo.module("mod_a", "1.8", &["base"], "A = 8\n")?;
    rig.repo.commit("deployed on a nearly full disk")?;
    let id = rig.deploy()?;
    let d = rig.wait(&id);
    std::fs::remove_file(&ballast)?;
    let d = d?;
    ensure!(d["status"] == "failed", "{d}");
    rig.assert_history(&id)?;
    ensure!(
        step_status(&d, "Pre-deploy Snapshot") == Some("failed"),
        "{d}"
    );
    ensure!(
        step_output(&d, "Pre-deploy Snapshot").contains("not enough free disk"),
        "{d}"
    );
    rig.assert_serving(&old_commit, &old_color)?;
    rig.assert_next_deploy_succeeds("space freed")?;

    for (round, during) in [(9, false), (10, true)] {
        let (old_commit, old_color) = rig.serving()?;
        if during {
            rig.repo.write("faults/slow-build", "6")?;
        }
        rig.repo.module(
            "mod_a",
            &format!("1.{round}"),
            &["base"],
            &format!("A = {round}\n"),
        )?;
        let commit = rig
            .repo
            .commit(&format!("deployed on a full disk ({round})"))?;
        let ballast = if during {
            let id = rig.deploy()?;
            rig.wait_until(&id, "the build", |d| {
                step_status(d, "Build Image") == Some("running")
            })?;
            (id, disk.fill(0)?)
        } else {
            let ballast = disk.fill(0)?;
            (rig.deploy()?, ballast)
        };
        let (id, ballast) = ballast;
        let (status, log) = rig.site.agent.wait_exit(LONG)?;
        ensure!(!status.success(), "the agent exited with {status}");
        ensure!(
            log.contains("cannot write the journal") && log.contains("free some space"),
            "the agent says why it stopped: {log}"
        );
        std::fs::remove_file(&ballast)?;
        rig.restart_agent()?;
        // The coordinator's log is the agent's journal: an event shown before the stop and
        // lost with it would differ from the one journaled in its place.
        let d = rig.assert_history(&id)?;
        eprintln!("disk full (round {round}): {}", d["statusReason"]);
        match d["status"].as_str() {
            Some("failed") => {
                ensure!(
                    d["statusReason"]
                        .as_str()
                        .is_some_and(|r| r.contains("interrupted")),
                    "{d}"
                );
                rig.assert_serving(&old_commit, &old_color)?;
            }
            // Refused before it started, it was sent again after the restart.
            Some("succeeded") if !during => {
                let color = d["activeColor"].as_str().context("activeColor")?;
                rig.assert_serving(&commit, color)?;
            }
            _ => anyhow::bail!("round {round}: {d}"),
        }
        if during {
            rig.repo.remove("faults/slow-build")?;
        }
        rig.assert_next_deploy_succeeds(&format!("journal back {round}"))?;
    }
    drop(rig);
    drop(disk);
    Ok(())
}

/// Conflicting snapshot requests at once (two deletes and a pin of one snapshot, with
/// listings and estimates beside them) each get a clean answer: one delete wins, the other
/// requests find the snapshot gone or pinned, nothing answers 5xx, and the store is intact.
/// Estimates and listings during a rollback (which swaps the database) answer cleanly too.
#[test]
fn conflicting_snapshot_requests_get_clean_answers() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let site = Site::start(dir.path(), &SiteOptions::default())?;
    let repo = AddonsRepo::init(dir.path())?;
    repo.module("shop_base", "1.0", &["base"], "A = 1\n")?;
    repo.commit("first version")?;
    site.configure_shop(&repo)?;
    let c = &site.coordinator;
    let first = site.deploy_main()?;
    let d = wait_deployment(c, "shop", &first, &TERMINAL, LONG)?;
    ensure!(d["status"] == "succeeded", "{d}");
    let base = "/api/environments/shop-prod/snapshots";
    for round in 0..6 {
        let taken = c.cli_json(&["snapshot", "create", "--environment", "shop-prod", "--wait"])?;
        let id = taken["id"].as_str().context("snapshot id")?.to_owned();
        let path = format!("{base}/{id}");
        let requests: Vec<(&str, String)> = vec![
            ("DELETE", path.clone()),
            ("DELETE", path.clone()),
            ("POST", format!("{path}/pin")),
            ("GET", base.to_owned()),
            ("GET", format!("{base}/estimate")),
            ("GET", path.clone()),
        ];
        let answers: Vec<(String, u16, Value)> = std::thread::scope(|s| {
            let handles: Vec<_> = requests
                .iter()
                .map(|(method, path)| {
                    s.spawn(move || {
                        let body = (*method == "POST").then_some(("application/json", "{}"));
                        let answer =
                            http_call(&c.url, method, path, Some(&c.admin_token), body, &[]);
                        (format!("{method} {path}"), answer)
                    })
                })
                .collect();
            handles
                .into_iter()
                .map(|h| {
                    let (what, answer) = h
                        .join()
                        .map_err(|_| anyhow::anyhow!("a request panicked"))?;
                    let (status, body) = answer?;
                    Ok((what, status, body))
                })
                .collect::<Result<Vec<_>>>()
        })?;
        for (what, status, body) in &answers {
            ensure!(
                *status < 500,
                "round {round}: {what} answered {status}: {body}"
            );
        }
        let deleted = answers[..2].iter().filter(|a| a.1 == 200).count();
        let pinned = answers[2].1 == 200;
        ensure!(
            (deleted == 1 && !pinned) || (deleted == 0 && pinned),
            "round {round}: one delete wins, or the pin came first and both were refused: {answers:?}"
        );
        // Whatever the order, the snapshot is gone or pinned, and the store lists cleanly.
        let listed = c.get_ok(base)?;
        let left: Vec<&Value> = listed["snapshots"]
            .as_array()
            .context("snapshots")?
            .iter()
            .filter(|s| s["id"] == id.as_str())
            .collect();
        ensure!(
            (deleted == 1 && left.is_empty())
                || (deleted == 0 && left.len() == 1 && left[0]["pinned"] == true),
            "round {round}: {left:?} after {answers:?}"
        );
        if deleted == 0 {
            let (status, body) = c.api(
                "POST",
                &format!("{path}/unpin"),
                Some(&c.admin_token),
                Some(&serde_json::json!({})),
            )?;
            ensure!(status == 200, "{status} {body}");
        }
    }

    // Estimates and listings while a rollback swaps the database under them.
    repo.module("shop_base", "1.1", &["base"], "A = 2\n")?;
    repo.commit("second version")?;
    let second = site.deploy_main()?;
    let d = wait_deployment(c, "shop", &second, &TERMINAL, LONG)?;
    ensure!(d["status"] == "succeeded", "{d}");
    let (status, rollback) = c.api(
        "POST",
        "/api/projects/shop/rollback",
        Some(&c.admin_token),
        Some(&serde_json::json!({ "deploymentId": second })),
    )?;
    ensure!(status == 202, "rollback: {status} {rollback}");
    let rollback = rollback["id"].as_str().context("rollback id")?.to_owned();
    let mut reads = 0;
    loop {
        for path in [format!("{base}/estimate"), base.to_owned()] {
            let (status, body) = c.api("GET", &path, Some(&c.admin_token), None)?;
            ensure!(
                status < 500,
                "GET {path} during the rollback: {status} {body}"
            );
            reads += 1;
        }
        let d = c.get_ok(&format!("/api/projects/shop/deployments/{rollback}"))?;
        if TERMINAL.contains(&d["status"].as_str().unwrap_or_default()) {
            ensure!(d["status"] == "succeeded", "{d}");
            break;
        }
    }
    eprintln!("{reads} reads during the rollback");
    Ok(())
}
