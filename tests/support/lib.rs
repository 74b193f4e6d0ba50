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

pub mod grpc;

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
}

impl Default for CoordinatorOptions {
    fn default() -> Self {
        Self {
            poll_interval_secs: 1,
            agent_cert_validity_secs: 30 * 24 * 3600,
            renew_before_secs: 10 * 24 * 3600,
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
                "listen = \"127.0.0.1:0\"\nstate_dir = \"{}\"\n\n[agents]\npoll_interval_secs = {}\nconnect_timeout_secs = 3\nrequest_timeout_secs = 10\n\n[pki]\nagent_cert_validity_secs = {}\nrenew_before_secs = {}\n",
                state_dir.display(),
                options.poll_interval_secs,
                options.agent_cert_validity_secs,
                options.renew_before_secs,
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

    /// Starts `ocore-agent run` and returns its bound address.
    pub fn run(&mut self) -> Result<String> {
        let mut command = Command::new(bin("ocore-agent"));
        command.arg("run").arg("--config").arg(&self.config_path);
        let mut daemon = Daemon::spawn(&format!("ocore-agent {}", self.name), command)?;
        let address = daemon.wait_log("listening on ")?;
        self.daemon = Some(daemon);
        self.address = Some(address.clone());
        Ok(address)
    }

    pub fn daemon(&self) -> Result<&Daemon> {
        self.daemon.as_ref().context("agent not running")
    }
}

/// Registers `agent` with the coordinator, enrols it, starts it and points the coordinator
/// at its address; returns once the coordinator reports it connected.
pub fn enrolled_agent(coordinator: &Coordinator, dir: &Path, name: &str) -> Result<TestAgent> {
    let mut agent = TestAgent::new(dir, name)?;
    // The agent binds port 0, so its address is only known once it runs: register with a
    // placeholder and correct it after start, as an operator moving an agent would.
    let added = coordinator.cli_json(&["agent", "add", name, "--address", "127.0.0.1:9"])?;
    let token = added["enrolmentToken"]
        .as_str()
        .context("no enrolmentToken in answer")?
        .to_owned();
    let out = agent.enroll(&coordinator.url, &token);
    ensure_success("ocore-agent enroll", &out)?;
    let address = agent.run()?;
    coordinator.cli_json(&["agent", "set-address", name, "--address", &address])?;
    coordinator.wait_agent_status(name, "connected")?;
    Ok(agent)
}
