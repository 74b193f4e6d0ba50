//! Git servers with authentication on loopback, for the private-repository tests: Debian's
//! `sshd` with its own configuration, host key and port, letting only git commands through
//! (`git-shell`) for the keys in its own `authorized_keys`; and git's `git-http-backend`
//! (CGI, through `fcgiwrap`) behind a private nginx with basic authentication.
//!
//! Nothing here touches a system service: every server runs from a temporary directory
//! and stops when its handle drops. Both serve the test's working repositories in place.

use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};

use crate::fixture::free_port;
use crate::{ensure_success, wait_for, Coordinator, Daemon, DEADLINE};

const SSHD: &str = "/usr/sbin/sshd";
const FCGIWRAP: &str = "/usr/sbin/fcgiwrap";
const GIT_HTTP_BACKEND: &str = "/usr/lib/git-core/git-http-backend";
const SSHD_PRIVSEP: &str = "/run/sshd";

fn require(path: &str, package: &str) -> Result<()> {
    if !Path::new(path).exists() {
        bail!("{path} is missing: run tests/env/setup.sh (it installs the {package} package)");
    }
    Ok(())
}

fn current_user() -> Result<String> {
    let out = Command::new("id").arg("-un").output()?;
    ensure_success("id -un", &out)?;
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

fn wait_listening(what: &str, port: u16, daemon: &mut Daemon) -> Result<()> {
    wait_for(
        &format!("{what} to listen on port {port}"),
        DEADLINE,
        || TcpStream::connect(("127.0.0.1", port)).ok().map(|_| ()),
    )
    .with_context(|| format!("{what} log:\n{}", daemon.log()))
}

/// Generates an ed25519 key pair with `ssh-keygen`; returns the public key line.
pub fn ssh_keygen(path: &Path, comment: &str) -> Result<String> {
    let _ = std::fs::remove_file(path);
    let _ = std::fs::remove_file(path.with_extension("pub"));
    let out = Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-C", comment, "-f"])
        .arg(path)
        .output()?;
    ensure_success("ssh-keygen", &out)?;
    Ok(std::fs::read_to_string(path.with_extension("pub"))?
        .trim()
        .to_owned())
}

/// `sshd` on a free loopback port, serving git over SSH to the keys it is given.
pub struct SshGitServer {
    pub dir: PathBuf,
    pub port: u16,
    pub user: String,
    /// The host key sshd presents now (`ssh-ed25519 AAAA… comment`).
    pub host_public_key: String,
    generation: u32,
    daemon: Option<Daemon>,
}

impl SshGitServer {
    pub fn start(dir: &Path) -> Result<Self> {
        require(SSHD, "openssh-server")?;
        require("/usr/bin/git-shell", "git")?;
        if !Path::new(SSHD_PRIVSEP).is_dir() {
            bail!("{SSHD_PRIVSEP} (sshd's privilege separation directory) is missing: run tests/env/setup.sh");
        }
        let dir = dir.join("sshd");
        std::fs::create_dir_all(&dir)?;
        std::fs::write(dir.join("authorized_keys"), "")?;
        let mut server = Self {
            dir,
            port: free_port(),
            user: current_user()?,
            host_public_key: String::new(),
            generation: 0,
            daemon: None,
        };
        server.new_host_key()?;
        server.run()?;
        Ok(server)
    }

    fn host_key_path(&self) -> PathBuf {
        self.dir.join(format!("host_key_{}", self.generation))
    }

    fn new_host_key(&mut self) -> Result<()> {
        self.generation += 1;
        self.host_public_key = ssh_keygen(&self.host_key_path(), "test-host")?;
        Ok(())
    }

    fn run(&mut self) -> Result<()> {
        let config = self.dir.join("sshd_config");
        // Only git commands (git-shell), only public keys, only this user, no forwarding.
        std::fs::write(
            &config,
            format!(
                "Port {port}\nListenAddress 127.0.0.1\nHostKey {key}\nPidFile {dir}/sshd.pid\nAuthorizedKeysFile {dir}/authorized_keys\nStrictModes no\nPubkeyAuthentication yes\nPasswordAuthentication no\nKbdInteractiveAuthentication no\nUsePAM no\nPermitRootLogin prohibit-password\nAllowUsers {user}\nForceCommand git-shell -c \"$SSH_ORIGINAL_COMMAND\"\nAllowTcpForwarding no\nAllowAgentForwarding no\nX11Forwarding no\nPermitTTY no\nLogLevel VERBOSE\n",
                port = self.port,
                key = self.host_key_path().display(),
                dir = self.dir.display(),
                user = self.user,
            ),
        )?;
        let mut command = Command::new(SSHD);
        command.args(["-D", "-e", "-f"]).arg(&config);
        let mut daemon = Daemon::spawn("sshd", command)?;
        wait_listening("sshd", self.port, &mut daemon)?;
        self.daemon = Some(daemon);
        Ok(())
    }

    /// Lets exactly these public keys in (the file is replaced).
    pub fn authorize(&self, public_keys: &[&str]) -> Result<()> {
        let lines: String = public_keys
            .iter()
            .map(|k| format!("restrict {}\n", k.trim()))
            .collect();
        std::fs::write(self.dir.join("authorized_keys"), lines)?;
        Ok(())
    }

    /// Restarts sshd on the same port with a newly generated host key.
    pub fn rekey(&mut self) -> Result<()> {
        if let Some(mut d) = self.daemon.take() {
            d.terminate()?;
        }
        self.new_host_key()?;
        self.run()
    }

    /// The `ssh://` URL of a repository at `path` on this machine.
    pub fn url(&self, path: &Path) -> String {
        format!(
            "ssh://{}@127.0.0.1:{}{}",
            self.user,
            self.port,
            path.display()
        )
    }

    /// The host key as the coordinator pins it (`<type> <base64>`).
    pub fn host_key(&self) -> String {
        self.host_public_key
            .split_whitespace()
            .take(2)
            .collect::<Vec<_>>()
            .join(" ")
    }

    pub fn log(&self) -> String {
        self.daemon.as_ref().map(Daemon::log).unwrap_or_default()
    }
}

/// A test CA and a certificate for 127.0.0.1 it signed, as PEM files.
pub struct TestTls {
    pub ca: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
}

impl TestTls {
    pub fn issue(dir: &Path) -> Result<Self> {
        use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
        let dir = dir.join("test-tls");
        std::fs::create_dir_all(&dir)?;
        let ca_key = KeyPair::generate()?;
        let mut ca = CertificateParams::new(Vec::<String>::new())?;
        ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        // Distinct names: OpenSSL takes a leaf whose issuer equals its subject for a root.
        ca.distinguished_name
            .push(DnType::CommonName, "oCore test Git CA");
        let ca_cert = ca.self_signed(&ca_key)?;
        let issuer = Issuer::new(ca, &ca_key);
        let key = KeyPair::generate()?;
        let mut leaf = CertificateParams::new(vec!["127.0.0.1".to_owned()])?;
        leaf.distinguished_name
            .push(DnType::CommonName, "127.0.0.1");
        let leaf = leaf.signed_by(&key, &issuer)?;
        let tls = Self {
            ca: dir.join("ca.pem"),
            cert: dir.join("cert.pem"),
            key: dir.join("key.pem"),
        };
        std::fs::write(&tls.ca, ca_cert.pem())?;
        std::fs::write(&tls.cert, leaf.pem())?;
        std::fs::write(&tls.key, key.serialize_pem())?;
        Ok(tls)
    }
}

/// git-http-backend behind nginx with basic authentication for one user and token,
/// serving the repositories under `root`; over HTTPS when given a certificate.
pub struct HttpGitServer {
    pub port: u16,
    scheme: &'static str,
    _fcgiwrap: Daemon,
    nginx: Option<Daemon>,
}

impl HttpGitServer {
    pub fn start(
        dir: &Path,
        nginx: &Path,
        root: &Path,
        username: &str,
        token: &str,
        tls: Option<&TestTls>,
    ) -> Result<Self> {
        require(FCGIWRAP, "fcgiwrap")?;
        require(GIT_HTTP_BACKEND, "git")?;
        let dir = dir.join("git-http");
        std::fs::create_dir_all(dir.join("logs"))?;
        let socket = dir.join("fcgiwrap.sock");
        let mut command = Command::new(FCGIWRAP);
        command.arg("-s").arg(format!("unix:{}", socket.display()));
        let fcgiwrap = Daemon::spawn("fcgiwrap", command)?;
        wait_for("fcgiwrap to create its socket", DEADLINE, || {
            socket.exists().then_some(())
        })
        .with_context(|| format!("fcgiwrap log:\n{}", fcgiwrap.log()))?;
        // nginx reads `{PLAIN}` entries; this file belongs to the test's server only.
        std::fs::write(
            dir.join("htpasswd"),
            format!("{username}:{{PLAIN}}{token}\n"),
        )?;
        let port = free_port();
        let listen = match tls {
            None => format!("listen 127.0.0.1:{port};"),
            Some(t) => format!(
                "listen 127.0.0.1:{port} ssl;\n    ssl_certificate {};\n    ssl_certificate_key {};",
                t.cert.display(),
                t.key.display()
            ),
        };
        let config = dir.join("nginx.conf");
        std::fs::write(
            &config,
            format!(
                "daemon off;\nuser {user};\nworker_processes 1;\npid {d}/nginx.pid;\nerror_log {d}/logs/error.log warn;\nevents {{ worker_connections 64; }}\nhttp {{\n  access_log off;\n  client_body_temp_path {d}/body;\n  proxy_temp_path {d}/proxy;\n  fastcgi_temp_path {d}/fastcgi;\n  uwsgi_temp_path {d}/uwsgi;\n  scgi_temp_path {d}/scgi;\n  server {{\n    {listen}\n    auth_basic \"git\";\n    auth_basic_user_file {d}/htpasswd;\n    location / {{\n      client_max_body_size 0;\n      fastcgi_pass unix:{socket};\n      fastcgi_param SCRIPT_FILENAME {backend};\n      fastcgi_param GIT_PROJECT_ROOT {root};\n      fastcgi_param GIT_HTTP_EXPORT_ALL \"\";\n      fastcgi_param PATH_INFO $uri;\n      fastcgi_param REMOTE_USER $remote_user;\n      fastcgi_param QUERY_STRING $query_string;\n      fastcgi_param REQUEST_METHOD $request_method;\n      fastcgi_param CONTENT_TYPE $content_type;\n      fastcgi_param CONTENT_LENGTH $content_length;\n    }}\n  }}\n}}\n",
                user = current_user()?,
                d = dir.display(),
                socket = socket.display(),
                backend = GIT_HTTP_BACKEND,
                root = root.display(),
            ),
        )?;
        let mut command = Command::new(nginx);
        command.arg("-p").arg(&dir).arg("-c").arg(&config);
        let mut daemon = Daemon::spawn("nginx (git)", command)?;
        wait_listening("nginx (git)", port, &mut daemon)?;
        Ok(Self {
            port,
            scheme: if tls.is_some() { "https" } else { "http" },
            _fcgiwrap: fcgiwrap,
            nginx: Some(daemon),
        })
    }

    /// The URL of the repository at `root/<name>`.
    pub fn url(&self, name: &str) -> String {
        format!("{}://127.0.0.1:{}/{name}", self.scheme, self.port)
    }
}

impl Drop for HttpGitServer {
    fn drop(&mut self) {
        if let Some(mut d) = self.nginx.take() {
            let _ = d.signal("QUIT");
            let _ = d.terminate();
        }
    }
}

/// Every file under `dir` whose bytes contain `needle` (for secret-leak checks).
pub fn files_containing(dir: &Path, needle: &str) -> Result<Vec<PathBuf>> {
    let mut found = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            let Ok(kind) = entry.file_type() else {
                continue;
            };
            if kind.is_dir() {
                stack.push(path);
            } else if kind.is_file() {
                let bytes = std::fs::read(&path).unwrap_or_default();
                if bytes
                    .windows(needle.len().max(1))
                    .any(|w| w == needle.as_bytes())
                {
                    found.push(path);
                }
            }
        }
    }
    Ok(found)
}

/// Runs `ocore ARGS` with `input` on its standard input (how secrets reach the CLI).
pub fn cli_with_stdin(
    coordinator: &Coordinator,
    args: &[&str],
    input: &str,
) -> Result<std::process::Output> {
    use std::io::Write as _;
    let mut child = Command::new(crate::bin("ocore"))
        .args(args)
        .env("OCORE_URL", &coordinator.url)
        .env("OCORE_TOKEN", &coordinator.admin_token)
        .env("HOME", &coordinator.state_dir)
        .env("NO_COLOR", "1")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()?;
    child
        .stdin
        .take()
        .context("stdin")?
        .write_all(input.as_bytes())?;
    Ok(child.wait_with_output()?)
}

/// The plaintext repository secret the coordinator holds for `project`, read the way the
/// dispatcher does (store + secrets key). sled allows one process at a time, so the
/// coordinator is stopped for the read and started again on the same state. Returns the
/// secret and the log of the coordinator process that was stopped.
pub fn stored_repository_secret(
    coordinator: &mut Coordinator,
    project: &str,
) -> Result<(String, String)> {
    coordinator.daemon.terminate()?;
    let log = coordinator.daemon.log();
    let secret = (|| -> Result<String> {
        let store = ocore::store::open(&coordinator.state_dir.join("store"))?;
        let secrets =
            ocore::secrets::SecretBox::load_or_create(&coordinator.state_dir.join("secrets.key"))?;
        let record = store.project(project)?.context("project not stored")?;
        let credentials = record.credentials.context("project has no credentials")?;
        Ok(secrets.open_text(
            &ocore::domain::repository_secret_context(project),
            credentials.secret(),
        )?)
    })();
    let mut command = Command::new(crate::bin("ocore"));
    command
        .arg("server")
        .arg("--config")
        .arg(&coordinator.config_path);
    *coordinator = Coordinator::spawn_with(
        command,
        coordinator.config_path.clone(),
        coordinator.state_dir.clone(),
    )?;
    Ok((secret?, log))
}
