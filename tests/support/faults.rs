//! Fault injection for the fault tests: a private registry and a private PostgreSQL
//! cluster that a test may stop (the shared ones from `tests/env/setup.sh` serve other
//! tests at the same time and are never stopped), a small tmpfs that fills up, and a
//! firewall rule that cuts the coordinator–agent link.
//!
//! Each one undoes itself when it drops, so a failing test leaves nothing behind.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};

use crate::fixture::free_port;
use crate::{ensure_success, wait_for, Daemon, DEADLINE};

/// Runs `program args`, failing with its output unless it succeeds.
fn run(program: &str, args: &[&str]) -> Result<String> {
    let out = Command::new(program)
        .args(args)
        .output()
        .with_context(|| format!("running {program}"))?;
    ensure_success(&format!("{program} {}", args.join(" ")), &out)?;
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// A Debian `docker-registry` of this test's own, on a free port, storing in the test's
/// directory. Stop and start it to take the registry away.
pub struct PrivateRegistry {
    pub address: String,
    config: PathBuf,
    daemon: Option<Daemon>,
}

impl PrivateRegistry {
    pub fn start(dir: &Path) -> Result<Self> {
        let root = dir.join("registry");
        std::fs::create_dir_all(&root)?;
        let address = format!("127.0.0.1:{}", free_port());
        let config = dir.join("registry.yml");
        std::fs::write(
            &config,
            format!(
                "version: 0.1\nlog:\n  level: warn\nstorage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\nhttp:\n  addr: {address}\n",
                root.display()
            ),
        )?;
        let mut registry = Self {
            address,
            config,
            daemon: None,
        };
        registry.resume()?;
        Ok(registry)
    }

    fn answers(&self) -> bool {
        crate::fixture::http_get(&format!("http://{}/v2/", self.address))
            .is_ok_and(|(status, _, _)| status == 200)
    }

    /// Takes the registry down (SIGKILL: it goes away as a crashed server does).
    pub fn stop(&mut self) -> Result<()> {
        if let Some(daemon) = self.daemon.take() {
            daemon.signal("KILL")?;
        }
        wait_for("the private registry to go away", DEADLINE, || {
            (!self.answers()).then_some(())
        })
    }

    /// Starts it (again) on the same port and storage.
    pub fn resume(&mut self) -> Result<()> {
        if !Path::new("/usr/bin/docker-registry").exists() {
            bail!("/usr/bin/docker-registry is missing: run tests/env/setup.sh (it installs Debian's docker-registry)");
        }
        let mut command = Command::new("/usr/bin/docker-registry");
        command.arg("serve").arg(&self.config);
        self.daemon = Some(Daemon::spawn("docker-registry", command)?);
        wait_for("the private registry to answer", DEADLINE, || {
            self.answers().then_some(())
        })
    }
}

/// A PostgreSQL cluster of this test's own (Debian's `initdb` and `pg_ctl`, run as the
/// `postgres` user), listening on 127.0.0.1 on a free port with a superuser that logs in
/// with a password, like the shared one. `stop` takes it down as a crash would.
pub struct PrivatePostgres {
    pub port: u16,
    pub user: String,
    pub password: String,
    /// Owned by `postgres`: data, socket and log.
    root: tempfile::TempDir,
    bin: PathBuf,
}

impl PrivatePostgres {
    pub fn start() -> Result<Self> {
        let bin = std::fs::read_dir("/usr/lib/postgresql")
            .context(
                "/usr/lib/postgresql is missing: run tests/env/setup.sh (it installs PostgreSQL)",
            )?
            .filter_map(|e| e.ok().map(|e| e.path().join("bin")))
            .filter(|b| b.join("initdb").exists())
            .max()
            .context("no /usr/lib/postgresql/*/bin/initdb: run tests/env/setup.sh")?;
        // The server refuses to run as root, and `postgres` must reach its directory.
        let root = tempfile::Builder::new()
            .prefix("ocore-pg-")
            .tempdir_in("/tmp")?;
        run(
            "chown",
            &["postgres:postgres", &root.path().display().to_string()],
        )?;
        let pg = Self {
            port: free_port(),
            user: "ocore".to_owned(),
            password: "ocore-fault".to_owned(),
            root,
            bin,
        };
        let pwfile = pg.root.path().join("pwfile");
        std::fs::write(&pwfile, &pg.password)?;
        run(
            "chown",
            &["postgres:postgres", &pwfile.display().to_string()],
        )?;
        pg.as_postgres(
            "initdb",
            &[
                "-D",
                &pg.data().display().to_string(),
                "-U",
                &pg.user,
                "--pwfile",
                &pwfile.display().to_string(),
                "--auth-local=scram-sha-256",
                "--auth-host=scram-sha-256",
                "--locale=C.UTF-8",
                "-E",
                "UTF8",
            ],
        )?;
        pg.resume()?;
        Ok(pg)
    }

    fn data(&self) -> PathBuf {
        self.root.path().join("data")
    }

    fn as_postgres(&self, tool: &str, args: &[&str]) -> Result<String> {
        let program = self.bin.join(tool).display().to_string();
        let mut all = vec!["-u", "postgres", "--", program.as_str()];
        all.extend_from_slice(args);
        run("runuser", &all)
    }

    /// Starts (or restarts) the server and waits until it accepts connections.
    pub fn resume(&self) -> Result<()> {
        let options = format!(
            "-c listen_addresses=127.0.0.1 -c port={} -c unix_socket_directories={} -c fsync=off",
            self.port,
            self.root.path().display()
        );
        self.as_postgres(
            "pg_ctl",
            &[
                "-D",
                &self.data().display().to_string(),
                "-l",
                &self.root.path().join("server.log").display().to_string(),
                "-o",
                &options,
                "-w",
                "-t",
                "60",
                "start",
            ],
        )?;
        Ok(())
    }

    /// Takes the server down at once (`-m immediate`: connections are cut, as a crash does).
    pub fn stop(&self) -> Result<()> {
        self.as_postgres(
            "pg_ctl",
            &[
                "-D",
                &self.data().display().to_string(),
                "-m",
                "immediate",
                "-w",
                "stop",
            ],
        )?;
        Ok(())
    }
}

impl Drop for PrivatePostgres {
    fn drop(&mut self) {
        let _ = self.stop();
    }
}

/// A tmpfs of `size_mb` mounted on `path` (created if needed), unmounted on drop.
pub struct Tmpfs {
    pub path: PathBuf,
}

impl Tmpfs {
    pub fn mount(path: &Path, size_mb: u64) -> Result<Self> {
        std::fs::create_dir_all(path)?;
        run(
            "mount",
            &[
                "-t",
                "tmpfs",
                "-o",
                &format!("size={size_mb}m,mode=0700"),
                "ocore-test",
                &path.display().to_string(),
            ],
        )
        .context("mounting a tmpfs (the fault tests run as root)")?;
        Ok(Self {
            path: path.to_owned(),
        })
    }

    /// Bytes still free on the file system.
    pub fn free_bytes(&self) -> Result<u64> {
        let out = run(
            "df",
            &["--output=avail", "-B1", &self.path.display().to_string()],
        )?;
        out.lines()
            .nth(1)
            .and_then(|l| l.trim().parse().ok())
            .context("reading df")
    }

    /// Writes a file that leaves about `leave` bytes free. Whoever else writes to the file
    /// system meanwhile (a running agent) may take the last bytes first: a full file system
    /// is then what was asked for, so running out of space ends the filling, not the test.
    pub fn fill(&self, leave: u64) -> Result<PathBuf> {
        let ballast = self.path.join("ocore-test-ballast");
        let free = self.free_bytes()?;
        let size = free.saturating_sub(leave);
        // A tmpfs allocates on write, so the bytes are really written (not a sparse file).
        let mut file = std::fs::File::create(&ballast)?;
        let chunk = vec![0x5au8; 1 << 20];
        let mut left = size;
        while left > 0 {
            let n = left.min(chunk.len() as u64) as usize;
            match std::io::Write::write_all(&mut file, &chunk[..n]) {
                Ok(()) => left -= n as u64,
                Err(e) if e.raw_os_error() == Some(28) => break,
                Err(e) => return Err(e.into()),
            }
        }
        Ok(ballast)
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.path).output();
    }
}

/// Firewall rules that cut the TCP link to one local port (the agent's), in both
/// directions, removed on drop. `reset` answers every packet with a TCP reset, so both
/// ends see the connection die at once; otherwise packets are silently dropped, as a
/// lost route does.
pub struct LinkCut {
    rules: Vec<Vec<String>>,
}

impl LinkCut {
    pub fn cut(port: u16, reset: bool) -> Result<Self> {
        if Command::new("iptables").arg("--version").output().is_err() {
            bail!("iptables is missing: run tests/env/setup.sh (it installs iptables)");
        }
        let tag = crate::fixture::unique("ocore-cut-");
        let mut cut = Self { rules: Vec::new() };
        for direction in ["--dport", "--sport"] {
            let mut rule: Vec<String> = [
                "INPUT",
                "-i",
                "lo",
                "-p",
                "tcp",
                direction,
                &port.to_string(),
                "-m",
                "comment",
                "--comment",
                &tag,
                "-j",
            ]
            .iter()
            .map(|s| (*s).to_owned())
            .collect();
            if reset {
                rule.extend(["REJECT", "--reject-with", "tcp-reset"].map(str::to_owned));
            } else {
                rule.push("DROP".to_owned());
            }
            let mut insert = vec!["-w".to_owned(), "-I".to_owned()];
            insert.extend(rule.iter().cloned());
            let args: Vec<&str> = insert.iter().map(String::as_str).collect();
            run("iptables", &args)?;
            cut.rules.push(rule);
        }
        Ok(cut)
    }

    /// Removes the rules: the link works again.
    pub fn restore(mut self) -> Result<()> {
        self.remove()
    }

    fn remove(&mut self) -> Result<()> {
        for rule in std::mem::take(&mut self.rules) {
            let mut delete = vec!["-w".to_owned(), "-D".to_owned()];
            delete.extend(rule);
            let args: Vec<&str> = delete.iter().map(String::as_str).collect();
            run("iptables", &args)?;
        }
        Ok(())
    }
}

impl Drop for LinkCut {
    fn drop(&mut self) {
        let _ = self.remove();
    }
}
