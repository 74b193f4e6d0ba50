//! Daemon behaviour: configuration checks with clear errors and exit code 64, readiness
//! notification, SIGHUP reload, graceful SIGTERM, and API authentication.

use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixDatagram;
use std::process::Command;

use anyhow::{Context, Result};
use ocore_tests::{
    bin, enrolled_agent, ensure_success, wait_for, Coordinator, CoordinatorOptions, Daemon,
    TestAgent, DEADLINE,
};

#[test]
fn check_config_explains_what_is_wrong() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let agent = TestAgent::new(dir.path(), "web1")?;
    // Valid file, not enrolled yet: the file is fine, the missing identity is named.
    let out = agent.command(&["check-config"]);
    assert_eq!(out.status.code(), Some(64));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("not enrolled"), "{err}");
    assert!(String::from_utf8_lossy(&out.stdout).contains("instance web1-prod"));

    let text = std::fs::read_to_string(&agent.config_path)?;
    std::fs::write(&agent.config_path, text.replace("base_image", "base_imag"))?;
    let out = agent.command(&["check-config"]);
    assert_eq!(out.status.code(), Some(64));
    assert!(String::from_utf8_lossy(&out.stderr).contains("base_imag"));
    // `run` refuses the same file before binding anything.
    let out = agent.command(&["run"]);
    assert_eq!(out.status.code(), Some(64));

    let bad = dir.path().join("coordinator.toml");
    std::fs::write(&bad, "listen = \"127.0.0.1:0\"\nstate_dir = \"relative\"\n")?;
    let out = Command::new(bin("ocore"))
        .args(["server", "--config"])
        .arg(&bad)
        .output()?;
    assert_eq!(out.status.code(), Some(64));
    assert!(String::from_utf8_lossy(&out.stderr).contains("state_dir"));
    let missing = Command::new(bin("ocore"))
        .args(["server", "--config", "/nonexistent.toml"])
        .output()?;
    assert_eq!(missing.status.code(), Some(64));
    assert!(String::from_utf8_lossy(&missing.stderr).contains("file not found"));

    // A secrets key other users can read is refused with the command that fixes it.
    let state = dir.path().join("state");
    std::fs::create_dir_all(&state)?;
    let key = state.join("secrets.key");
    std::fs::write(&key, format!("{}\n", "ab".repeat(32)))?;
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644))?;
    let config = dir.path().join("secrets.toml");
    std::fs::write(
        &config,
        format!(
            "listen = \"127.0.0.1:0\"\nstate_dir = {:?}\n",
            state.display().to_string()
        ),
    )?;
    let out = Command::new(bin("ocore"))
        .args(["server", "--check-config", "--config"])
        .arg(&config)
        .output()?;
    assert_eq!(out.status.code(), Some(64));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("chmod 600"), "{err}");
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600))?;
    let out = Command::new(bin("ocore"))
        .args(["server", "--check-config", "--config"])
        .arg(&config)
        .output()?;
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    Ok(())
}

#[test]
fn daemons_notify_readiness_reload_on_sighup_and_stop_on_sigterm() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let coordinator = Coordinator::start(dir.path(), &CoordinatorOptions::default())?;
    let mut agent = enrolled_agent(&coordinator, dir.path(), "web1")?;

    // Restart the agent under a NOTIFY_SOCKET: READY=1 comes only once it listens.
    agent.daemon.take().context("daemon")?.terminate()?;
    let socket_path = dir.path().join("notify.sock");
    let socket = UnixDatagram::bind(&socket_path)?;
    socket.set_read_timeout(Some(DEADLINE))?;
    let mut command = Command::new(bin("ocore-agent"));
    command
        .args(["run", "--config"])
        .arg(&agent.config_path)
        .env("NOTIFY_SOCKET", &socket_path);
    let mut daemon = Daemon::spawn("agent under systemd", command)?;
    let mut buf = [0u8; 256];
    let n = socket.recv(&mut buf)?;
    assert!(String::from_utf8_lossy(&buf[..n]).contains("READY=1"));
    let address = daemon.wait_log("listening on ")?;
    coordinator.cli_json(&["agent", "set-address", "web1", "--address", &address])?;
    coordinator.wait_agent_status("web1", "connected")?;

    // SIGHUP with a broken certificate file keeps serving the loaded one.
    let cert_path = agent.tls_dir().join("agent.crt");
    let good = std::fs::read(&cert_path)?;
    std::fs::write(&cert_path, b"not a certificate")?;
    daemon.signal("HUP")?;
    wait_for("the agent to refuse the reload", DEADLINE, || {
        daemon
            .log()
            .contains("SIGHUP: keeping the current certificate")
            .then_some(())
    })?;
    ensure_success(
        "ping after bad reload",
        &coordinator.cli(&["agent", "ping", "web1"]),
    )?;
    std::fs::write(&cert_path, good)?;
    daemon.signal("HUP")?;
    wait_for("the agent to reload", DEADLINE, || {
        daemon
            .log()
            .contains("SIGHUP: reloaded certificate")
            .then_some(())
    })?;
    ensure_success(
        "ping after reload",
        &coordinator.cli(&["agent", "ping", "web1"]),
    )?;

    let status = daemon.terminate()?;
    assert!(status.success(), "agent exit {status}");
    let mut coordinator = coordinator;
    let status = coordinator.daemon.terminate()?;
    assert!(status.success(), "coordinator exit {status}");
    Ok(())
}

#[test]
fn api_requires_a_valid_token_and_admin_for_administration() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let coordinator = Coordinator::start(dir.path(), &CoordinatorOptions::default())?;

    let none = coordinator.cli_as("", &["agent", "list"]);
    assert!(!none.status.success());
    assert!(String::from_utf8_lossy(&none.stderr).contains("missing token"));
    let wrong = coordinator.cli_as("oct_wrong", &["agent", "list"]);
    assert!(String::from_utf8_lossy(&wrong.stderr).contains("invalid token"));

    let created = coordinator.cli_json(&[
        "token",
        "create",
        "--name",
        "ci",
        "--project",
        "shop",
        "--permission",
        "manage:deployments",
    ])?;
    let secret = created["token"].as_str().context("secret")?.to_owned();
    let forbidden = coordinator.cli_as(&secret, &["agent", "list"]);
    assert!(!forbidden.status.success());
    assert!(String::from_utf8_lossy(&forbidden.stderr).contains("needs an admin token"));

    // The secret is stored only as a hash.
    let listed = coordinator.cli_json(&["token", "list"])?;
    assert!(!listed.to_string().contains(&secret));
    let id = created["id"].as_str().context("id")?;
    coordinator.cli_json(&["token", "revoke", id])?;
    let revoked = coordinator.cli_as(&secret, &["agent", "list"]);
    assert!(String::from_utf8_lossy(&revoked.stderr).contains("revoked"));

    let bad = coordinator.cli(&["agent", "add", "Bad Name", "--address", "x:1"]);
    assert!(String::from_utf8_lossy(&bad.stderr).contains("agent name"));
    let bad = coordinator.cli(&["agent", "add", "ok", "--address", "no-port"]);
    assert!(String::from_utf8_lossy(&bad.stderr).contains("host:port"));
    Ok(())
}
