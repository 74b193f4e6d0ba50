//! The mutual-TLS trust link: enrolment, refusal of every wrong client or agent, removal,
//! and renewal without a restart.

use anyhow::{Context, Result};
use ocore_proto::enrolment::EnrolmentToken;
use ocore_proto::identity::COORDINATOR_DNS_NAME;
use ocore_proto::tls::{load_certs, load_key};
use ocore_tests::grpc::{self, ClientAuth};
use ocore_tests::{
    enrolled_agent, ensure_success, wait_for, Coordinator, CoordinatorOptions, TestAgent, DEADLINE,
};
use rcgen::{CertificateParams, ExtendedKeyUsagePurpose, Issuer, KeyPair, KeyUsagePurpose};
use rustls::pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};
use time::{Duration, OffsetDateTime};

fn stderr(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Issues a client certificate for `dns` signed by `issuer`, valid between the two times.
fn client_cert(
    issuer: &Issuer<'_, &KeyPair>,
    dns: &str,
    not_before: OffsetDateTime,
    not_after: OffsetDateTime,
) -> Result<ClientAuth> {
    let key = KeyPair::generate()?;
    let mut params = CertificateParams::new(vec![dns.to_owned()])?;
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.not_before = not_before;
    params.not_after = not_after;
    let cert = params.signed_by(&key, issuer)?;
    Ok(Some((
        vec![cert.der().clone()],
        PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der())),
    )))
}

#[test]
fn agent_refuses_every_client_but_the_coordinator() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let coordinator = Coordinator::start(dir.path(), &CoordinatorOptions::default())?;
    let agent = enrolled_agent(&coordinator, dir.path(), "web1")?;
    let address = agent.address.clone().context("address")?;
    let agent_ca = load_certs(&agent.tls_dir().join("ca.crt"))?.remove(0);

    // The real coordinator identity works: proves the probe client itself is sound.
    let ca_dir = coordinator.state_dir.join("ca");
    let coordinator_auth: ClientAuth = Some((
        load_certs(&ca_dir.join("coordinator.crt"))?,
        load_key(&ca_dir.join("coordinator.key"))?,
    ));
    let info = grpc::get_info(&address, "web1", &agent_ca, coordinator_auth)
        .map_err(anyhow::Error::msg)?;
    assert_eq!(info.name, "web1");

    let now = OffsetDateTime::now_utc();
    let real_ca_key = KeyPair::from_pem(&std::fs::read_to_string(ca_dir.join("ca.key"))?)?;
    let real_ca_cert = load_certs(&ca_dir.join("ca.crt"))?.remove(0);
    let real_issuer = Issuer::from_ca_cert_der(&real_ca_cert, &real_ca_key)?;

    let other_ca_key = KeyPair::generate()?;
    let mut other_ca = CertificateParams::new(Vec::<String>::new())?;
    other_ca.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let other_issuer = Issuer::new(other_ca, &other_ca_key);

    let agent_own: ClientAuth = Some((
        load_certs(&agent.tls_dir().join("agent.crt"))?,
        load_key(&agent.tls_dir().join("agent.key"))?,
    ));
    let cases: Vec<(&str, ClientAuth)> = vec![
        ("no client certificate", None),
        (
            "certificate from another CA",
            client_cert(
                &other_issuer,
                COORDINATOR_DNS_NAME,
                now - Duration::hours(1),
                now + Duration::days(1),
            )?,
        ),
        (
            "expired certificate",
            client_cert(
                &real_issuer,
                COORDINATOR_DNS_NAME,
                now - Duration::days(2),
                now - Duration::days(1),
            )?,
        ),
        (
            "non-coordinator identity",
            client_cert(
                &real_issuer,
                "intruder.ocore.internal",
                now - Duration::hours(1),
                now + Duration::days(1),
            )?,
        ),
        ("the agent's own certificate", agent_own),
    ];
    for (case, auth) in cases {
        let result = grpc::get_info(&address, "web1", &agent_ca, auth);
        assert!(result.is_err(), "{case}: agent answered {result:?}");
    }
    let daemon = agent.daemon()?;
    let refusals = wait_for("the agent to log every refusal", DEADLINE, || {
        let log = daemon.log();
        let n = log.matches("refused connection").count();
        (n >= 5).then_some(log)
    })?;
    assert!(refusals.contains("not the coordinator"), "{refusals}");
    assert!(refusals.to_lowercase().contains("expired"), "{refusals}");
    Ok(())
}

#[test]
fn coordinator_reaches_an_enrolled_agent_over_mtls() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let coordinator = Coordinator::start(dir.path(), &CoordinatorOptions::default())?;
    let agent = enrolled_agent(&coordinator, dir.path(), "web1")?;

    let ping = coordinator.cli_json(&["agent", "ping", "web1"])?;
    assert_eq!(ping["name"], "web1");
    assert_eq!(ping["version"], env!("CARGO_PKG_VERSION"));
    assert_eq!(ping["instances"][0]["id"], "web1-prod");
    assert_eq!(ping["instances"][0]["database"], "web1_prod");

    let list = coordinator.cli_json(&["agent", "list"])?;
    assert_eq!(list["total"], 1);
    let shown = &list["agents"][0];
    assert_eq!(shown["status"], "connected");
    assert_eq!(shown["version"], env!("CARGO_PKG_VERSION"));
    assert!(shown["lastSeen"].is_string(), "{shown}");
    assert_eq!(shown["instances"][0]["id"], "web1-prod");

    // Human output names the agent and its state.
    let text = coordinator.cli(&["agent", "list"]);
    ensure_success("agent list", &text)?;
    let text = String::from_utf8_lossy(&text.stdout);
    assert!(
        text.contains("web1") && text.contains("connected"),
        "{text}"
    );

    // The private key was generated on the agent host, mode 0600, and never sent: the
    // coordinator's directory holds no copy of it.
    use std::os::unix::fs::PermissionsExt;
    let key_path = agent.tls_dir().join("agent.key");
    assert_eq!(
        std::fs::metadata(&key_path)?.permissions().mode() & 0o777,
        0o600
    );
    let key = std::fs::read(&key_path)?;
    assert!(
        !contains_bytes_under(&coordinator.state_dir, &key)?,
        "agent key found on the coordinator"
    );
    let ca_key_mode = std::fs::metadata(coordinator.state_dir.join("ca/ca.key"))?
        .permissions()
        .mode();
    assert_eq!(ca_key_mode & 0o777, 0o600);
    Ok(())
}

fn contains_bytes_under(dir: &std::path::Path, needle: &[u8]) -> Result<bool> {
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        if path.is_dir() {
            if contains_bytes_under(&path, needle)? {
                return Ok(true);
            }
        } else if std::fs::read(&path)?
            .windows(needle.len())
            .any(|w| w == needle)
        {
            return Ok(true);
        }
    }
    Ok(false)
}

#[test]
fn coordinator_refuses_impostors_and_removed_agents() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let coordinator = Coordinator::start(dir.path(), &CoordinatorOptions::default())?;
    let a = enrolled_agent(&coordinator, dir.path(), "alpha")?;
    let b = enrolled_agent(&coordinator, dir.path(), "beta")?;
    let b_address = b.address.clone().context("address")?;

    // alpha's address now leads to beta: beta's certificate names beta, not alpha.
    coordinator.cli_json(&["agent", "set-address", "alpha", "--address", &b_address])?;
    let refused = coordinator.wait_agent_status("alpha", "refused")?;
    let why = refused["lastError"].as_str().unwrap_or_default();
    assert!(why.contains("names beta, expected agent alpha"), "{why}");
    let ping = coordinator.cli(&["agent", "ping", "alpha"]);
    assert!(!ping.status.success());
    assert!(
        stderr(&ping).contains("expected agent alpha"),
        "{}",
        stderr(&ping)
    );
    // Pointing it back restores the link.
    let a_address = a.address.clone().context("address")?;
    coordinator.cli_json(&["agent", "set-address", "alpha", "--address", &a_address])?;
    coordinator.wait_agent_status("alpha", "connected")?;

    // beta is removed: the coordinator forgets it at once.
    let removed = coordinator.cli(&["agent", "remove", "beta"]);
    ensure_success("agent remove", &removed)?;
    let ping = coordinator.cli(&["agent", "ping", "beta"]);
    assert!(!ping.status.success());
    assert!(
        stderr(&ping).contains("agent beta not found"),
        "{}",
        stderr(&ping)
    );

    // Registered again under the same name and enrolled afresh elsewhere, the old beta host
    // (still running with its old certificate) is refused: its certificate was revoked.
    let added = coordinator.cli_json(&["agent", "add", "beta", "--address", &b_address])?;
    let token = added["enrolmentToken"].as_str().context("token")?;
    let replacement = TestAgent::new(&dir.path().join("replacement"), "beta")?;
    ensure_success("re-enrol", &replacement.enroll(&coordinator.url, token))?;
    let refused = coordinator.wait_agent_status("beta", "refused")?;
    let why = refused["lastError"].as_str().unwrap_or_default();
    assert!(why.contains("not enrolled or was revoked"), "{why}");
    Ok(())
}

#[test]
fn enrolment_tokens_are_single_use_expire_and_resist_tampering() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let coordinator = Coordinator::start(dir.path(), &CoordinatorOptions::default())?;

    let added = coordinator.cli_json(&["agent", "add", "web1", "--address", "127.0.0.1:9"])?;
    let token = added["enrolmentToken"]
        .as_str()
        .context("token")?
        .to_owned();
    let decoded = EnrolmentToken::decode(&token)?;
    let ca = coordinator.cli_json(&[
        "ca",
        "show",
        "--config",
        &coordinator.config_path.display().to_string(),
    ])?;
    assert_eq!(
        decoded.ca_fingerprint,
        ca["fingerprint"].as_str().unwrap_or_default()
    );
    assert_eq!(decoded.agent, "web1");

    // Tampered: another agent name, or a different CA fingerprint.
    for tampered in [
        EnrolmentToken {
            agent: "web2".into(),
            ..decoded.clone()
        },
        EnrolmentToken {
            ca_fingerprint: "00".repeat(32),
            ..decoded.clone()
        },
        EnrolmentToken {
            expires_at: decoded.expires_at + 3600,
            ..decoded.clone()
        },
    ] {
        let agent = TestAgent::new(&dir.path().join("tampered"), "web1")?;
        let out = agent.enroll(&coordinator.url, &tampered.encode());
        assert!(!out.status.success(), "tampered token accepted");
        assert!(stderr(&out).contains("not valid"), "{}", stderr(&out));
        assert!(
            !agent.tls_dir().join("agent.crt").exists(),
            "nothing written on failure"
        );
    }
    let garbage =
        TestAgent::new(&dir.path().join("garbage"), "web1")?.enroll(&coordinator.url, "hello");
    assert!(
        stderr(&garbage).contains("not an oCore enrolment token"),
        "{}",
        stderr(&garbage)
    );

    // The genuine token works once.
    let first = TestAgent::new(&dir.path().join("first"), "web1")?;
    ensure_success("enrol", &first.enroll(&coordinator.url, &token))?;
    let again =
        TestAgent::new(&dir.path().join("second"), "web1")?.enroll(&coordinator.url, &token);
    assert!(!again.status.success());
    assert!(
        stderr(&again).contains("already used"),
        "{}",
        stderr(&again)
    );
    // Enrolling over an existing identity needs --force.
    let over = first.enroll(&coordinator.url, &token);
    assert!(
        stderr(&over).contains("already enrolled"),
        "{}",
        stderr(&over)
    );

    // An expired token is refused.
    let fresh = coordinator.cli_json(&["agent", "token", "web1", "--token-ttl", "1"])?;
    let short = fresh["enrolmentToken"]
        .as_str()
        .context("token")?
        .to_owned();
    let expires = EnrolmentToken::decode(&short)?.expires_at;
    wait_for("the token to expire", DEADLINE, || {
        (OffsetDateTime::now_utc().unix_timestamp() > expires).then_some(())
    })?;
    let late = TestAgent::new(&dir.path().join("late"), "web1")?.enroll(&coordinator.url, &short);
    assert!(!late.status.success());
    assert!(stderr(&late).contains("expired"), "{}", stderr(&late));
    Ok(())
}

#[test]
fn certificates_renew_before_expiry_without_restart() -> Result<()> {
    let dir = tempfile::tempdir()?;
    // Certificates live one hour and are renewed when less than 3590 s remain, so the
    // first renewal happens about ten seconds after enrolment.
    let options = CoordinatorOptions {
        poll_interval_secs: 1,
        agent_cert_validity_secs: 3600,
        renew_before_secs: 3590,
        ..CoordinatorOptions::default()
    };
    let coordinator = Coordinator::start(dir.path(), &options)?;
    let agent = enrolled_agent(&coordinator, dir.path(), "web1")?;
    let cert_path = agent.tls_dir().join("agent.crt");
    let before = std::fs::read(&cert_path)?;
    let pid = agent.daemon()?.pid();

    wait_for(
        "the agent certificate to be renewed",
        std::time::Duration::from_secs(45),
        || std::fs::read(&cert_path).ok().filter(|now| *now != before),
    )?;
    let daemon = agent.daemon()?;
    wait_for("the agent to log the renewal", DEADLINE, || {
        daemon
            .log()
            .contains("installed renewed certificate")
            .then_some(())
    })?;
    assert_eq!(daemon.pid(), pid, "same process");
    // New connections use the renewed certificate and the coordinator accepts it.
    let ping = coordinator.cli_json(&["agent", "ping", "web1"])?;
    assert_eq!(ping["name"], "web1");
    coordinator.wait_agent_status("web1", "connected")?;
    Ok(())
}
