//! HTTPS on the REST listener: certificate files from `[tls]`, a real HTTPS request through
//! the CLI, plain HTTP refused, SIGHUP swapping the certificate (and keeping the old one
//! when the new files are broken), and bad files refused at start with exit code 64.

use std::path::Path;
use std::process::Command;

use anyhow::Result;
use ocore_tests::{bin, wait_for, Coordinator, CoordinatorOptions, DEADLINE};
use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};

/// Writes a fresh CA (`<prefix>ca.pem`) and a certificate for 127.0.0.1 signed by it
/// (`cert.pem`, `key.pem`) into `dir`.
fn issue(dir: &Path, prefix: &str) -> Result<()> {
    let ca_key = KeyPair::generate()?;
    let mut ca = CertificateParams::new(Vec::<String>::new())?;
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca_cert = ca.self_signed(&ca_key)?;
    let issuer = Issuer::new(ca, &ca_key);
    let key = KeyPair::generate()?;
    let leaf = CertificateParams::new(vec!["127.0.0.1".to_owned(), "localhost".to_owned()])?
        .signed_by(&key, &issuer)?;
    std::fs::write(dir.join(format!("{prefix}ca.pem")), ca_cert.pem())?;
    std::fs::write(dir.join("cert.pem"), leaf.pem())?;
    std::fs::write(dir.join("key.pem"), key.serialize_pem())?;
    Ok(())
}

fn stderr(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn rest_listener_serves_https_and_reloads_its_certificate() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let tls = dir.path().join("tls");
    std::fs::create_dir_all(&tls)?;
    issue(&tls, "first-")?;
    let options = CoordinatorOptions {
        extra_config: format!(
            "\n[tls]\ncert = \"{}\"\nkey = \"{}\"\n",
            tls.join("cert.pem").display(),
            tls.join("key.pem").display()
        ),
        ..CoordinatorOptions::default()
    };
    let coordinator = Coordinator::start(dir.path(), &options)?;
    assert!(
        coordinator.url.starts_with("https://"),
        "{}",
        coordinator.url
    );
    let first_ca = tls.join("first-ca.pem").display().to_string();
    let with_ca =
        |ca: &str| coordinator.cli(&["--ca-file", ca, "project", "list", "--output", "json"]);

    let out = with_ca(&first_ca);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(String::from_utf8_lossy(&out.stdout).contains("\"projects\""));
    let untrusted = coordinator.cli(&["project", "list"]);
    assert!(
        !untrusted.status.success(),
        "a certificate from an unknown CA is refused"
    );
    let plain = ocore_tests::http_call(
        &coordinator.url.replace("https://", "http://"),
        "GET",
        "/api/health",
        None,
        None,
        &[],
    );
    assert!(
        plain.is_err() || plain.is_ok_and(|(s, _)| s >= 400),
        "plain HTTP is not served"
    );

    // SIGHUP with a new certificate: new connections get it.
    issue(&tls, "second-")?;
    coordinator.daemon.signal("HUP")?;
    let second_ca = tls.join("second-ca.pem").display().to_string();
    wait_for("the new certificate to be served", DEADLINE, || {
        with_ca(&second_ca).status.success().then_some(())
    })?;
    assert!(
        !with_ca(&first_ca).status.success(),
        "the old certificate is gone"
    );

    // Broken files on SIGHUP keep the running certificate.
    std::fs::write(tls.join("cert.pem"), "not a certificate")?;
    coordinator.daemon.signal("HUP")?;
    wait_for("the broken reload to be refused", DEADLINE, || {
        coordinator
            .daemon
            .log()
            .contains("keeping the REST listener's certificate")
            .then_some(())
    })?;
    assert!(with_ca(&second_ca).status.success());

    // And refused before binding at start, with the configuration exit code.
    let check = Command::new(bin("ocore"))
        .args(["server", "--check-config", "--config"])
        .arg(&coordinator.config_path)
        .output()?;
    assert_eq!(check.status.code(), Some(64), "{}", stderr(&check));
    assert!(stderr(&check).contains("cert.pem"), "{}", stderr(&check));
    Ok(())
}
