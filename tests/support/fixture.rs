//! Fixtures for pipeline tests: the real services from `tests/env/setup.sh` (PostgreSQL,
//! the registry, nginx, Docker), a private nginx per test, Git repositories of Odoo addons,
//! and an agent configured to deploy one instance (or two) with its own ports and database.
//!
//! Everything a fixture creates (containers, databases, nginx) is removed when it drops.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};

use crate::{ensure_success, Coordinator, Daemon, TestAgent};

/// Values written by `tests/env/setup.sh`.
pub struct TestEnv {
    pub pg_host: String,
    pub pg_port: u16,
    pub pg_user: String,
    pub pg_password: String,
    pub registry: String,
    pub nginx: PathBuf,
}

/// The test image every instance deploys on.
pub const BASE_IMAGE: &str = "ocore/odoo-test:17.0";

impl TestEnv {
    /// Reads the environment file and checks every service answers; fails saying what to
    /// start otherwise.
    pub fn load() -> Result<Self> {
        let text = std::fs::read_to_string("/var/lib/ocore-testenv/env").context(
            "the test environment is not set up: run tests/env/setup.sh (it installs and starts PostgreSQL, nginx and the registry)",
        )?;
        let vars: HashMap<String, String> = text
            .lines()
            .filter_map(|l| l.trim().strip_prefix("export "))
            .filter_map(|l| l.split_once('='))
            .map(|(k, v)| {
                (
                    k.to_owned(),
                    v.trim_matches('"').trim_matches('\'').to_owned(),
                )
            })
            .collect();
        let get = |k: &str| {
            vars.get(k)
                .cloned()
                .with_context(|| format!("{k} missing from /var/lib/ocore-testenv/env"))
        };
        let env = Self {
            pg_host: get("OCORE_TEST_PGHOST")?,
            pg_port: get("OCORE_TEST_PGPORT")?.parse()?,
            pg_user: get("OCORE_TEST_PGUSER")?,
            pg_password: get("OCORE_TEST_PGPASSWORD")?,
            registry: get("OCORE_TEST_REGISTRY")?,
            nginx: PathBuf::from(get("OCORE_TEST_NGINX")?),
        };
        let check = env.psql("postgres", "SELECT 1");
        if check.is_err() {
            bail!(
                "PostgreSQL does not answer on {}:{}: run tests/env/setup.sh",
                env.pg_host,
                env.pg_port
            );
        }
        let registry = Command::new("curl")
            .args([
                "-fsS",
                "--max-time",
                "5",
                &format!("http://{}/v2/", env.registry),
            ])
            .output()?;
        if !registry.status.success() {
            bail!(
                "the registry does not answer on {}: run tests/env/setup.sh",
                env.registry
            );
        }
        let image = Command::new("docker")
            .args(["image", "inspect", BASE_IMAGE])
            .output()?;
        if !image.status.success() {
            bail!("the Odoo test image {BASE_IMAGE} is missing: build it with tests/odoo-image/build.sh");
        }
        Ok(env)
    }

    /// Runs SQL with psql and returns its unaligned output.
    pub fn psql(&self, database: &str, sql: &str) -> Result<String> {
        let out = Command::new("psql")
            .args([
                "-h",
                &self.pg_host,
                "-p",
                &self.pg_port.to_string(),
                "-U",
                &self.pg_user,
            ])
            .args(["-d", database, "-AtqX", "-v", "ON_ERROR_STOP=1", "-c", sql])
            .env("PGPASSWORD", &self.pg_password)
            .output()?;
        ensure_success(&format!("psql {sql}"), &out)?;
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
    }
}

/// A port free right now on 127.0.0.1.
///
/// Ports come from below the kernel's ephemeral range (32768-60999 by default): a port taken
/// from that range can be handed out again as the source port of an outgoing connection
/// (to PostgreSQL, say) before the test's server binds it. Ports already returned to this
/// test process are never returned twice: two ports of one agent configuration that
/// collide make the agent refuse it.
pub fn free_port() -> u16 {
    static GIVEN: std::sync::Mutex<Vec<u16>> = std::sync::Mutex::new(Vec::new());
    let mut given = GIVEN.lock().unwrap_or_else(|p| p.into_inner());
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0)
        ^ std::process::id().rotate_left(16);
    let mut x = u64::from(seed) | 1;
    for _ in 0..1000 {
        // xorshift: cheap, and different per process and call.
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let port = 15000 + (x % 17000) as u16;
        if given.contains(&port) {
            continue;
        }
        let free = std::net::TcpListener::bind(("127.0.0.1", port)).is_ok()
            && std::net::TcpListener::bind(("0.0.0.0", port)).is_ok();
        if free {
            given.push(port);
            return port;
        }
    }
    0
}

/// A unique, lower-case name for databases, instances and images of one test.
pub fn unique(prefix: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    format!("{prefix}{:x}{:x}", std::process::id(), nanos % 0xffff_ffff)
}

/// A private nginx (`-p prefix -c conf`) that includes `conf.d/*.conf`.
pub struct TestNginx {
    pub prefix: PathBuf,
    pub config_file: PathBuf,
    pub conf_dir: PathBuf,
    daemon: Option<Daemon>,
}

impl TestNginx {
    pub fn start(dir: &Path, binary: &Path) -> Result<Self> {
        let prefix = dir.join("nginx");
        let conf_dir = prefix.join("conf.d");
        std::fs::create_dir_all(&conf_dir)?;
        std::fs::create_dir_all(prefix.join("logs"))?;
        let config_file = prefix.join("nginx.conf");
        std::fs::write(
            &config_file,
            format!(
                "daemon off;\nworker_processes 2;\npid {p}/nginx.pid;\nerror_log {p}/logs/error.log warn;\nevents {{ worker_connections 1024; }}\nhttp {{\n    access_log off;\n    client_body_temp_path {p}/body;\n    proxy_temp_path {p}/proxy;\n    fastcgi_temp_path {p}/fastcgi;\n    uwsgi_temp_path {p}/uwsgi;\n    scgi_temp_path {p}/scgi;\n    include {c}/*.conf;\n}}\n",
                p = prefix.display(),
                c = conf_dir.display()
            ),
        )?;
        let mut command = Command::new(binary);
        command.arg("-p").arg(&prefix).arg("-c").arg(&config_file);
        let daemon = Daemon::spawn("nginx", command)?;
        let pid = prefix.join("nginx.pid");
        crate::wait_for("nginx to write its pid file", crate::DEADLINE, || {
            pid.exists().then_some(())
        })?;
        Ok(Self {
            prefix,
            config_file,
            conf_dir,
            daemon: Some(daemon),
        })
    }
}

impl Drop for TestNginx {
    fn drop(&mut self) {
        if let Some(mut d) = self.daemon.take() {
            let _ = d.signal("QUIT");
            let _ = d.terminate();
        }
    }
}

/// A Git repository of Odoo addons, changed and committed by the test.
pub struct AddonsRepo {
    pub dir: PathBuf,
}

impl AddonsRepo {
    pub fn init(dir: &Path) -> Result<Self> {
        let dir = dir.join("repo");
        std::fs::create_dir_all(&dir)?;
        let repo = Self { dir };
        repo.git(&["init", "-q", "-b", "main"])?;
        Ok(repo)
    }

    pub fn git(&self, args: &[&str]) -> Result<String> {
        let out = Command::new("git")
            .args(args)
            .current_dir(&self.dir)
            .env("GIT_AUTHOR_NAME", "Test Author")
            .env("GIT_AUTHOR_EMAIL", "author@example.com")
            .env("GIT_COMMITTER_NAME", "Test Author")
            .env("GIT_COMMITTER_EMAIL", "author@example.com")
            .output()?;
        ensure_success(&format!("git {args:?}"), &out)?;
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
    }

    pub fn write(&self, rel: &str, text: &str) -> Result<()> {
        let path = self.dir.join(rel);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)?;
        }
        std::fs::write(path, text)?;
        Ok(())
    }

    pub fn remove(&self, rel: &str) -> Result<()> {
        std::fs::remove_file(self.dir.join(rel))?;
        Ok(())
    }

    /// Writes an Odoo module with a manifest and one Python file.
    pub fn module(&self, name: &str, version: &str, depends: &[&str], code: &str) -> Result<()> {
        let deps: Vec<String> = depends.iter().map(|d| format!("'{d}'")).collect();
        self.write(
            &format!("{name}/__manifest__.py"),
            &format!(
                "{{\n    'name': '{name}',\n    'version': '{version}',\n    'depends': [{}],\n    'installable': True,\n}}\n",
                deps.join(", ")
            ),
        )?;
        self.write(&format!("{name}/__init__.py"), "from . import models\n")?;
        self.write(&format!("{name}/models.py"), code)
    }

    /// Commits everything; returns the new commit's SHA.
    pub fn commit(&self, message: &str) -> Result<String> {
        self.git(&["add", "-A"])?;
        self.git(&["commit", "-qm", message])?;
        self.git(&["rev-parse", "HEAD"])
    }

    pub fn url(&self) -> String {
        self.dir.display().to_string()
    }

    /// Moves the submodule at `path` to `commit` (fetched from its origin) and commits
    /// the bump; returns the new commit's SHA.
    pub fn bump_submodule(&self, path: &str, commit: &str) -> Result<String> {
        let sub = AddonsRepo {
            dir: self.dir.join(path),
        };
        sub.git(&["fetch", "-q", "origin"])?;
        sub.git(&["checkout", "-q", commit])?;
        self.commit(&format!("bump {path}"))
    }
}

/// One agent with one instance, its nginx, database and enrolment, ready to deploy.
pub struct Site {
    pub env: TestEnv,
    pub coordinator: Coordinator,
    pub agent: TestAgent,
    pub nginx: TestNginx,
    pub instance: String,
    pub database: String,
    pub public_port: u16,
    pub ports: [(u16, u16); 2],
    pub data_dir: PathBuf,
    pub dir: PathBuf,
    /// A second instance on the same agent, with `SiteOptions::second_instance`.
    pub second: Option<SecondInstance>,
}

/// Another instance declared on the site's agent: its own database, data directory and
/// ports, behind the same nginx.
pub struct SecondInstance {
    pub instance: String,
    pub database: String,
    pub public_port: u16,
    pub data_dir: PathBuf,
}

impl SecondInstance {
    fn declare(&self, ports: [(u16, u16); 2]) -> String {
        format!(
            "\n[[instance]]\nid = \"{}\"\ndatabase = \"{}\"\ndata_dir = \"{}\"\nbase_image = \"{BASE_IMAGE}\"\npublic_port = {}\nblue = {{ http = {}, gevent = {} }}\ngreen = {{ http = {}, gevent = {} }}\n",
            self.instance,
            self.database,
            self.data_dir.display(),
            self.public_port,
            ports[0].0,
            ports[0].1,
            ports[1].0,
            ports[1].1,
        )
    }
}

/// Knobs of a site's agent configuration.
pub struct SiteOptions {
    pub step_timeout_secs: u64,
    pub health_timeout_secs: u64,
    /// Extra environment of the agent process.
    pub agent_env: Vec<(String, String)>,
    /// Declare a second instance on the agent (`Site::second`).
    pub second_instance: bool,
    /// How long the old colour keeps running after traffic moved away.
    pub drain_secs: u64,
    /// A registry of the test's own (`faults::PrivateRegistry`) instead of the shared one.
    pub registry: Option<String>,
    /// A PostgreSQL server of the test's own on 127.0.0.1 (`faults::PrivatePostgres`):
    /// port, superuser and password.
    pub postgres: Option<(u16, String, String)>,
    /// Extra `key = value` lines of the (first) instance's block in `agent.toml`.
    pub instance_settings: Vec<String>,
}

impl Default for SiteOptions {
    fn default() -> Self {
        Self {
            step_timeout_secs: 300,
            health_timeout_secs: 30,
            agent_env: Vec::new(),
            second_instance: false,
            drain_secs: 1,
            registry: None,
            postgres: None,
            instance_settings: Vec::new(),
        }
    }
}

impl Site {
    pub fn start(dir: &Path, options: &SiteOptions) -> Result<Self> {
        let mut env = TestEnv::load()?;
        if let Some(registry) = &options.registry {
            env.registry.clone_from(registry);
        }
        if let Some((port, user, password)) = &options.postgres {
            env.pg_host = "127.0.0.1".to_owned();
            env.pg_port = *port;
            env.pg_user.clone_from(user);
            env.pg_password.clone_from(password);
        }
        let coordinator = Coordinator::start(dir, &crate::CoordinatorOptions::default())?;
        let nginx = TestNginx::start(dir, &env.nginx)?;
        let instance = unique("t");
        let database = format!("ocore_{instance}");
        let public_port = free_port();
        let ports = [(free_port(), free_port()), (free_port(), free_port())];
        let data_dir = dir.join("odoo-data");
        let password_file = dir.join("pg-password");
        std::fs::write(&password_file, &env.pg_password)?;
        let second = options.second_instance.then(|| {
            let instance = unique("u");
            SecondInstance {
                database: format!("ocore_{instance}"),
                instance,
                public_port: free_port(),
                data_dir: dir.join("odoo-data-2"),
            }
        });
        let second_block = second.as_ref().map_or_else(String::new, |s| {
            s.declare([(free_port(), free_port()), (free_port(), free_port())])
        });
        let mut agent = TestAgent::new(dir, "web1")?;
        agent.env.clone_from(&options.agent_env);
        let state = agent.dir.join("state");
        std::fs::write(
            &agent.config_path,
            format!(
                "listen = \"127.0.0.1:0\"\nstate_dir = \"{state}\"\n\n[registry]\naddress = \"{registry}\"\n\n[postgres]\nhost = \"{pg_host}\"\nport = {pg_port}\nuser = \"{pg_user}\"\npassword_file = \"{password}\"\n\n[nginx]\nbinary = \"{nginx}\"\nconf_dir = \"{conf_dir}\"\nconfig_file = \"{config_file}\"\nprefix = \"{prefix}\"\n\n[pipeline]\nstep_timeout_secs = {step}\nhealth_timeout_secs = {health}\ndrain_secs = {drain}\nstop_grace_secs = 5\n\n[[instance]]\nid = \"{instance}\"\ndatabase = \"{database}\"\ndata_dir = \"{data}\"\nbase_image = \"{BASE_IMAGE}\"\npublic_port = {public_port}\nblue = {{ http = {bh}, gevent = {bg} }}\ngreen = {{ http = {gh}, gevent = {gg} }}\n{extra}{second_block}",
                state = state.display(),
                registry = env.registry,
                pg_host = env.pg_host,
                pg_port = env.pg_port,
                pg_user = env.pg_user,
                password = password_file.display(),
                nginx = env.nginx.display(),
                conf_dir = nginx.conf_dir.display(),
                config_file = nginx.config_file.display(),
                prefix = nginx.prefix.display(),
                step = options.step_timeout_secs,
                health = options.health_timeout_secs,
                drain = options.drain_secs,
                data = data_dir.display(),
                bh = ports[0].0,
                bg = ports[0].1,
                gh = ports[1].0,
                gg = ports[1].1,
                extra = options
                    .instance_settings
                    .iter()
                    .map(|l| format!("{l}\n"))
                    .collect::<String>(),
            ),
        )?;
        crate::enrol_and_run(&coordinator, &mut agent)?;
        Ok(Self {
            env,
            coordinator,
            agent,
            nginx,
            instance,
            database,
            public_port,
            ports,
            data_dir,
            dir: dir.to_owned(),
            second,
        })
    }

    /// A gRPC client for the site's agent, presenting the coordinator's identity.
    pub async fn agent_client(
        &self,
    ) -> Result<ocore_proto::AgentClient<tonic::transport::Channel>> {
        let ca = ocore_proto::tls::load_certs(&self.agent.tls_dir().join("ca.crt"))?.remove(0);
        let auth = crate::grpc::coordinator_auth(&self.coordinator.state_dir)
            .map_err(anyhow::Error::msg)?;
        let address = self.agent.address.clone().context("agent address")?;
        crate::grpc::client(&address, &self.agent.name, &ca, auth)
            .await
            .map_err(anyhow::Error::msg)
    }

    /// The page the public port serves (through nginx), with its colour header.
    pub fn public_page(&self) -> Result<(u16, String, String)> {
        http_get(&format!("http://127.0.0.1:{}/", self.public_port))
    }

    /// Modules updated by the stand-in's most recent `-u` run, sorted.
    pub fn last_updated_modules(&self) -> Result<Vec<String>> {
        let text = self.env.psql(
            &self.database,
            "SELECT module FROM ocore_test_update_log WHERE action = 'update' AND run_id = \
             (SELECT run_id FROM ocore_test_update_log WHERE action = 'update' ORDER BY id DESC LIMIT 1) ORDER BY module",
        )?;
        Ok(text
            .lines()
            .map(str::to_owned)
            .filter(|l| !l.is_empty())
            .collect())
    }

    /// Number of update runs the stand-in recorded.
    pub fn update_runs(&self) -> Result<usize> {
        Ok(self
            .env
            .psql(
                &self.database,
                "SELECT count(DISTINCT run_id) FROM ocore_test_update_log WHERE action = 'update'",
            )?
            .parse()?)
    }

    /// Installs modules as an operator would, with the image now serving.
    pub fn install_modules(&self, image: &str, modules: &str) -> Result<()> {
        // The addons path oCore recorded on the image, as its containers use it.
        let label = Command::new("docker")
            .args(["image", "inspect", "--format"])
            .arg("{{index .Config.Labels \"org.ocore.addons-path\"}}")
            .arg(image)
            .output()?;
        let addons_path = String::from_utf8_lossy(&label.stdout).trim().to_owned();
        let mut command = Command::new("docker");
        // The database server as the agent passes it (an image whose odoo.conf names
        // none uses these, as the official image does).
        // Through the image's official entrypoint, whatever the repository's own Dockerfile
        // put in front of it, as an operator's `docker run` of the official image does.
        command
            .args([
                "run",
                "--rm",
                "--network",
                "host",
                "--entrypoint",
                "/entrypoint.sh",
            ])
            .args(["-e", &format!("HOST={}", self.env.pg_host)])
            .args(["-e", &format!("PORT={}", self.env.pg_port)])
            .args(["-e", &format!("USER={}", self.env.pg_user)])
            .args(["-e", &format!("PASSWORD={}", self.env.pg_password)])
            .arg("-v")
            .arg(format!("{}:/var/lib/odoo", self.data_dir.display()))
            .args([
                image,
                "odoo",
                "-d",
                &self.database,
                "-i",
                modules,
                "--stop-after-init",
            ]);
        if !addons_path.is_empty() && addons_path != "<no value>" {
            command.arg(format!("--addons-path={addons_path}"));
        }
        ensure_success("docker run … -i", &command.output()?)
    }

    /// Names of the containers of this instance.
    pub fn containers(&self) -> Result<Vec<String>> {
        containers_of(&self.instance)
    }
}

/// Names of the containers of an instance, sorted.
pub fn containers_of(instance: &str) -> Result<Vec<String>> {
    let out = Command::new("docker")
        .args(["ps", "-a", "--format", "{{.Names}}", "--filter"])
        .arg(format!("label=org.ocore.instance={instance}"))
        .output()?;
    let mut names: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_owned)
        .collect();
    names.sort();
    Ok(names)
}

impl Drop for Site {
    fn drop(&mut self) {
        let mut instances = vec![(self.instance.clone(), self.database.clone())];
        if let Some(s) = &self.second {
            instances.push((s.instance.clone(), s.database.clone()));
        }
        for (instance, database) in instances {
            for name in containers_of(&instance).unwrap_or_default() {
                let _ = Command::new("docker").args(["rm", "-fv", &name]).output();
            }
            let _ = self.env.psql(
                "postgres",
                &format!("DROP DATABASE IF EXISTS \"{database}\" WITH (FORCE)"),
            );
        }
        // The images built for this site's instances (labelled by oCore with them).
        let mut ids = Vec::new();
        for instance in
            std::iter::once(&self.instance).chain(self.second.as_ref().map(|s| &s.instance))
        {
            let images = Command::new("docker")
                .args(["images", "-q", "--filter"])
                .arg(format!("label=org.ocore.instance={instance}"))
                .output();
            if let Ok(out) = images {
                ids.extend(
                    String::from_utf8_lossy(&out.stdout)
                        .split_whitespace()
                        .map(str::to_owned),
                );
            }
        }
        ids.sort();
        ids.dedup();
        if !ids.is_empty() {
            let _ = Command::new("docker")
                .args(["rmi", "-f"])
                .args(&ids)
                .output();
        }
    }
}

/// GET a URL: status, body, and the X-Ocore-Color header.
pub fn http_get(url: &str) -> Result<(u16, String, String)> {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(std::time::Duration::from_secs(10)))
        .build()
        .into();
    let mut response = agent.get(url).call()?;
    let status = response.status().as_u16();
    let color = response
        .headers()
        .get("X-Ocore-Color")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let body = response.body_mut().read_to_string()?;
    Ok((status, body, color))
}
