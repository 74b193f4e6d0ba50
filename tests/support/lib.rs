//! Test support for the end-to-end suite: starts the real `ocore` and `ocore-agent`
//! binaries in temporary directories, reads their logs, and drives the CLI.
//!
//! Processes are killed when their handle drops, so a failing test leaves nothing running.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use serde_json::Value;

pub mod browser;
pub mod deploy;
pub mod driver;
pub mod faults;
pub mod fixture;
pub mod grpc;
pub mod history;
pub mod remotes;

pub use deploy::{
    configure_project, configure_project_on, git_repo, project_token, read_sse, step_status,
    wait_deployment,
};

/// Default deadline for something the suite waits on.
pub const DEADLINE: Duration = Duration::from_secs(30);

/// Path of a workspace binary built next to the test executable.
pub fn bin(name: &str) -> PathBuf {
    let exe = std::env::current_exe().unwrap_or_default();
    // target/<profile>/deps/e2e-xxxx -> target/<profile>/<name>
    let dir = exe
        .parent()
        .and_then(Path::parent)
        .map(Path::to_path_buf)
        .unwrap_or_default();
    let path = dir.join(name);
    assert!(
        path.exists(),
        "{} is missing: build the binaries first with `cargo build --workspace --bins`",
        path.display()
    );
    path
}

/// Polls `check` until it returns `Some`, or fails after `deadline` naming `what`.
pub fn wait_for<T>(
    what: &str,
    deadline: Duration,
    mut check: impl FnMut() -> Option<T>,
) -> Result<T> {
    let start = Instant::now();
    loop {
        if let Some(v) = check() {
            return Ok(v);
        }
        if start.elapsed() > deadline {
            bail!("timed out after {deadline:?} waiting for {what}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A running daemon whose stderr is collected.
pub struct Daemon {
    pub name: String,
    child: Child,
    log: Arc<Mutex<String>>,
}

impl Daemon {
    pub fn spawn(name: &str, mut command: Command) -> Result<Self> {
        command
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .env("OCORE_LOG", "info")
            .env("NO_COLOR", "1");
        let mut child = command
            .spawn()
            .with_context(|| format!("spawning {name}"))?;
        let stderr = child.stderr.take().context("no stderr")?;
        let log = Arc::new(Mutex::new(String::new()));
        let sink = log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                let mut text = sink
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
                text.push_str(&line);
                text.push('\n');
            }
        });
        Ok(Self {
            name: name.to_owned(),
            child,
            log,
        })
    }

    pub fn log(&self) -> String {
        self.log
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Waits for a log line containing `marker` and returns the word that follows it.
    pub fn wait_log(&mut self, marker: &str) -> Result<String> {
        let found = wait_for(
            &format!("{} to log {marker:?}", self.name),
            DEADLINE,
            || {
                if let Ok(Some(status)) = self.child.try_wait() {
                    return Some(Err(anyhow!(
                        "{} exited with {status} before logging {marker:?}; log:\n{}",
                        self.name,
                        self.log()
                    )));
                }
                self.log()
                    .lines()
                    .find_map(|l| l.split_once(marker).map(|(_, rest)| Ok(first_word(rest))))
            },
        )?;
        found
    }

    pub fn signal(&self, sig: &str) -> Result<()> {
        let status = Command::new("kill")
            .args([&format!("-{sig}"), &self.pid().to_string()])
            .status()?;
        if !status.success() {
            bail!("kill -{sig} {} failed", self.pid());
        }
        Ok(())
    }

    /// Sends SIGTERM and waits for the exit status.
    pub fn terminate(&mut self) -> Result<std::process::ExitStatus> {
        self.signal("TERM")?;
        let child = &mut self.child;
        wait_for("process to exit after SIGTERM", DEADLINE, || {
            child.try_wait().ok().flatten()
        })
    }
}

fn first_word(text: &str) -> String {
    text.split_whitespace()
        .next()
        .unwrap_or_default()
        .to_owned()
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        if std::thread::panicking() {
            eprintln!("----- log of {} -----\n{}", self.name, self.log());
        }
    }
}

/// Extra settings of a test coordinator.
#[derive(Clone)]
pub struct CoordinatorOptions {
    pub poll_interval_secs: u64,
    pub agent_cert_validity_secs: u64,
    pub renew_before_secs: u64,
    /// TOML appended to coordinator.toml (e.g. `[tls]` or `[metrics]` sections).
    pub extra_config: String,
}

impl Default for CoordinatorOptions {
    fn default() -> Self {
        Self {
            poll_interval_secs: 1,
            agent_cert_validity_secs: 30 * 24 * 3600,
            renew_before_secs: 10 * 24 * 3600,
            extra_config: String::new(),
        }
    }
}

/// A running `ocore server` with its CA, store and first admin token.
pub struct Coordinator {
    pub daemon: Daemon,
    pub url: String,
    pub admin_token: String,
    pub config_path: PathBuf,
    pub state_dir: PathBuf,
}

impl Coordinator {
    pub fn start(dir: &Path, options: &CoordinatorOptions) -> Result<Self> {
        let state_dir = dir.join("coordinator");
        std::fs::create_dir_all(&state_dir)?;
        let config_path = dir.join("coordinator.toml");
        std::fs::write(
            &config_path,
            format!(
                "listen = \"127.0.0.1:0\"\nstate_dir = \"{}\"\n\n[agents]\npoll_interval_secs = {}\nconnect_timeout_secs = 3\nrequest_timeout_secs = 10\n\n[pki]\nagent_cert_validity_secs = {}\nrenew_before_secs = {}\n{}",
                state_dir.display(),
                options.poll_interval_secs,
                options.agent_cert_validity_secs,
                options.renew_before_secs,
                options.extra_config,
            ),
        )?;
        let init = Command::new(bin("ocore"))
            .args(["ca", "init", "--config"])
            .arg(&config_path)
            .output()?;
        ensure_success("ocore ca init", &init)?;
        let mut command = Command::new(bin("ocore"));
        command.arg("server").arg("--config").arg(&config_path);
        Self::spawn_with(command, config_path, state_dir)
    }

    /// Starts the server again on an existing state directory (after a stop).
    pub fn restart(self) -> Result<Self> {
        let Coordinator {
            mut daemon,
            config_path,
            state_dir,
            ..
        } = self;
        daemon.terminate()?;
        let mut command = Command::new(bin("ocore"));
        command.arg("server").arg("--config").arg(&config_path);
        Self::spawn_with(command, config_path, state_dir)
    }

    /// Starts the server again after it was killed (its process is reaped first).
    pub fn restart_after_crash(self) -> Result<Self> {
        let Coordinator {
            mut daemon,
            config_path,
            state_dir,
            ..
        } = self;
        let child = &mut daemon.child;
        wait_for("the killed coordinator to exit", DEADLINE, || {
            child.try_wait().ok().flatten()
        })?;
        let mut command = Command::new(bin("ocore"));
        command.arg("server").arg("--config").arg(&config_path);
        Self::spawn_with(command, config_path, state_dir)
    }

    pub fn spawn_with(command: Command, config_path: PathBuf, state_dir: PathBuf) -> Result<Self> {
        let mut daemon = Daemon::spawn("ocore server", command)?;
        let address = daemon.wait_log("REST API listening on ")?;
        let admin_token = std::fs::read_to_string(state_dir.join("initial-admin-token"))
            .context("reading initial-admin-token")?
            .trim()
            .to_owned();
        Ok(Self {
            daemon,
            url: address,
            admin_token,
            config_path,
            state_dir,
        })
    }

    /// Runs `ocore ARGS` against this coordinator with the admin token.
    pub fn cli(&self, args: &[&str]) -> Output {
        self.cli_as(&self.admin_token, args)
    }

    /// Runs `ocore ARGS` with `token`.
    pub fn cli_as(&self, token: &str, args: &[&str]) -> Output {
        Command::new(bin("ocore"))
            .args(args)
            .env("OCORE_URL", &self.url)
            .env("OCORE_TOKEN", token)
            .env("HOME", &self.state_dir)
            .env("NO_COLOR", "1")
            .output()
            .unwrap_or_else(|e| panic!("running ocore {args:?}: {e}"))
    }

    /// Runs `ocore ARGS --output json` and parses the answer; fails on a non-zero exit.
    pub fn cli_json(&self, args: &[&str]) -> Result<Value> {
        let mut all: Vec<&str> = args.to_vec();
        all.extend(["--output", "json"]);
        let out = self.cli(&all);
        ensure_success(&format!("ocore {}", args.join(" ")), &out)?;
        serde_json::from_slice(&out.stdout).with_context(|| {
            format!(
                "parsing JSON of ocore {args:?}: {}",
                String::from_utf8_lossy(&out.stdout)
            )
        })
    }

    /// Calls the REST API directly: `method path` with an optional bearer token and JSON
    /// body. Returns the status and the parsed body (`Null` when empty, a string when not
    /// JSON).
    pub fn api(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: Option<&Value>,
    ) -> Result<(u16, Value)> {
        let text = body.map(Value::to_string);
        self.api_raw(
            method,
            path,
            token,
            text.as_deref().map(|t| ("application/json", t)),
        )
    }

    /// Like `api`, with a raw body and content type (for malformed input).
    pub fn api_raw(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: Option<(&str, &str)>,
    ) -> Result<(u16, Value)> {
        http_call(&self.url, method, path, token, body, &[])
    }

    /// The admin token's view of `GET path`, failing unless it answers 2xx.
    pub fn get_ok(&self, path: &str) -> Result<Value> {
        let (status, body) = self.api("GET", path, Some(&self.admin_token), None)?;
        if !(200..300).contains(&status) {
            bail!("GET {path} answered {status}: {body}");
        }
        Ok(body)
    }

    /// The agent as `ocore agent show NAME --output json` reports it.
    pub fn agent(&self, name: &str) -> Result<Value> {
        self.cli_json(&["agent", "show", name])
    }

    /// Waits until the agent's link status is `status`.
    pub fn wait_agent_status(&self, name: &str, status: &str) -> Result<Value> {
        wait_for(&format!("agent {name} to be {status}"), DEADLINE, || {
            self.agent(name).ok().filter(|a| a["status"] == status)
        })
        .with_context(|| format!("agent now: {:?}", self.agent(name).ok()))
    }
}

/// One HTTP request with ureq; `headers` are extra request headers.
pub fn http_call(
    base: &str,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: Option<(&str, &str)>,
    headers: &[(&str, &str)],
) -> Result<(u16, Value)> {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(DEADLINE))
        .build()
        .into();
    let url = format!("{base}{path}");
    let auth = token.map(|t| format!("Bearer {t}"));
    let response = match body {
        None => {
            let mut req = match method {
                "GET" => agent.get(&url),
                "DELETE" => agent.delete(&url),
                other => bail!("method {other} needs a body here"),
            };
            if let Some(a) = &auth {
                req = req.header("Authorization", a);
            }
            for (k, v) in headers {
                req = req.header(*k, *v);
            }
            req.call()
        }
        Some((content_type, text)) => {
            let mut req = match method {
                "POST" => agent.post(&url),
                "PUT" => agent.put(&url),
                "PATCH" => agent.patch(&url),
                other => bail!("method {other} takes no body here"),
            };
            if let Some(a) = &auth {
                req = req.header("Authorization", a);
            }
            if !content_type.is_empty() {
                req = req.header("Content-Type", content_type);
            }
            for (k, v) in headers {
                req = req.header(*k, *v);
            }
            req.send(text)
        }
    };
    let mut response = response.with_context(|| format!("{method} {url}"))?;
    let status = response.status().as_u16();
    let text = response.body_mut().read_to_string()?;
    let value = if text.trim().is_empty() {
        Value::Null
    } else {
        serde_json::from_str(&text).unwrap_or(Value::String(text))
    };
    Ok((status, value))
}

pub fn ensure_success(what: &str, out: &Output) -> Result<()> {
    if !out.status.success() {
        bail!(
            "{what} failed with {}:\nstdout: {}\nstderr: {}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(())
}

/// A test agent: its directory, configuration and (once started) its process.
pub struct TestAgent {
    pub name: String,
    pub dir: PathBuf,
    pub config_path: PathBuf,
    pub daemon: Option<Daemon>,
    pub address: Option<String>,
    /// Extra environment of `ocore-agent run` (e.g. `SSL_CERT_FILE` for a test CA).
    pub env: Vec<(String, String)>,
}

impl TestAgent {
    /// Writes an agent configuration declaring one instance, in `dir/<name>`.
    pub fn new(dir: &Path, name: &str) -> Result<Self> {
        let dir = dir.join(format!("agent-{name}"));
        std::fs::create_dir_all(&dir)?;
        let config_path = dir.join("agent.toml");
        std::fs::write(
            &config_path,
            format!(
                "listen = \"127.0.0.1:0\"\nstate_dir = \"{state}\"\n\n[[instance]]\nid = \"{name}-prod\"\ndatabase = \"{db}\"\ndata_dir = \"{state}/odoo\"\nbase_image = \"ocore/odoo-test:17.0\"\npublic_port = 30001\nblue = {{ http = 30002, gevent = 30003 }}\ngreen = {{ http = 30004, gevent = 30005 }}\n",
                state = dir.join("state").display(),
                db = format!("{name}_prod").replace('-', "_"),
            ),
        )?;
        Ok(Self {
            name: name.to_owned(),
            dir,
            config_path,
            daemon: None,
            address: None,
            env: Vec::new(),
        })
    }

    pub fn tls_dir(&self) -> PathBuf {
        self.dir.join("state").join("tls")
    }

    /// Runs `ocore-agent ARGS --config <this agent's config>`.
    pub fn command(&self, args: &[&str]) -> Output {
        Command::new(bin("ocore-agent"))
            .args(args)
            .arg("--config")
            .arg(&self.config_path)
            .output()
            .unwrap_or_else(|e| panic!("running ocore-agent {args:?}: {e}"))
    }

    pub fn enroll(&self, coordinator_url: &str, token: &str) -> Output {
        self.command(&["enroll", "--coordinator", coordinator_url, "--token", token])
    }

    /// Starts `ocore-agent run` and returns its bound address. The agent leads a process
    /// group of its own, so `crash` can take its children with it as systemd does.
    pub fn run(&mut self) -> Result<String> {
        let mut command = Command::new(bin("ocore-agent"));
        command.arg("run").arg("--config").arg(&self.config_path);
        command.envs(self.env.iter().map(|(k, v)| (k, v)));
        std::os::unix::process::CommandExt::process_group(&mut command, 0);
        let mut daemon = Daemon::spawn(&format!("ocore-agent {}", self.name), command)?;
        let address = daemon.wait_log("listening on ")?;
        self.daemon = Some(daemon);
        self.address = Some(address.clone());
        Ok(address)
    }

    pub fn daemon(&self) -> Result<&Daemon> {
        self.daemon.as_ref().context("agent not running")
    }

    /// Waits until the agent exits by itself; returns its exit status and log.
    pub fn wait_exit(&mut self, deadline: Duration) -> Result<(std::process::ExitStatus, String)> {
        let mut daemon = self.daemon.take().context("agent not running")?;
        let child = &mut daemon.child;
        let status = wait_for("the agent to exit", deadline, || {
            child.try_wait().ok().flatten()
        })?;
        self.address = None;
        Ok((status, daemon.log()))
    }

    /// Kills the agent with SIGKILL, no clean-up, and waits until it is gone. The
    /// signal goes to its whole process group: when the main process of a unit dies,
    /// systemd kills what is left of the unit (`pg_dump`, `psql`) before it restarts it.
    pub fn crash(&mut self) -> Result<()> {
        let mut daemon = self.daemon.take().context("agent not running")?;
        let status = Command::new("kill")
            .args(["-KILL", "--", &format!("-{}", daemon.pid())])
            .status()?;
        if !status.success() {
            bail!("kill -KILL -{} failed", daemon.pid());
        }
        let child = &mut daemon.child;
        wait_for("the killed agent to exit", DEADLINE, || {
            child.try_wait().ok().flatten()
        })?;
        self.address = None;
        Ok(())
    }
}

/// Registers `agent` with the coordinator, enrols it, starts it and points the coordinator
/// at its address; returns once the coordinator reports it connected.
pub fn enrolled_agent(coordinator: &Coordinator, dir: &Path, name: &str) -> Result<TestAgent> {
    let mut agent = TestAgent::new(dir, name)?;
    enrol_and_run(coordinator, &mut agent)?;
    Ok(agent)
}

/// Enrols an agent whose configuration is written, runs it, and waits for the link.
pub fn enrol_and_run(coordinator: &Coordinator, agent: &mut TestAgent) -> Result<()> {
    let name = agent.name.clone();
    // The agent binds port 0, so its address is only known once it runs: register with a
    // placeholder and correct it after start, as an operator moving an agent would.
    let added = coordinator.cli_json(&["agent", "add", &name, "--address", "127.0.0.1:9"])?;
    let token = added["enrolmentToken"]
        .as_str()
        .context("no enrolmentToken in answer")?
        .to_owned();
    let out = agent.enroll(&coordinator.url, &token);
    ensure_success("ocore-agent enroll", &out)?;
    let address = agent.run()?;
    coordinator.cli_json(&["agent", "set-address", &name, "--address", &address])?;
    coordinator.wait_agent_status(&name, "connected")?;
    Ok(())
}
