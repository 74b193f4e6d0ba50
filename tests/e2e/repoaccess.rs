//! Private repositories end to end: the real coordinator and agent deploying from real Git
//! servers on loopback that the tests start (`sshd` restricted to git commands, and
//! git-http-backend behind nginx with basic authentication, over HTTPS with a test CA).
//! Covered: the coordinator's deploy key and HTTPS token, "authentication failed for
//! <remote>" without the secret, host-key pinning on first use and a loud failure on
//! change, a repository with a public and a private submodule and modules at the root and
//! in a subfolder, a submodule bump that updates exactly its changed module, a key
//! rotation, and that no secret is left in the agent's state, the coordinator's store or
//! either daemon's log.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use ocore_tests::fixture::{unique, AddonsRepo, Site, SiteOptions};
use ocore_tests::remotes::{
    cli_with_stdin, files_containing, stored_repository_secret, HttpGitServer, SshGitServer,
    TestTls,
};
use ocore_tests::{configure_project_on, ensure_success, wait_deployment, Coordinator};
use serde_json::Value;

const LONG: Duration = Duration::from_secs(300);
const PROJECT: &str = "shop";

/// Project `shop` on `url`, with environment and instance `shop-prod` (the site's
/// instance), mapped from `main`.
fn configure(site: &Site, url: &str) -> Result<()> {
    configure_project_on(&site.coordinator, PROJECT, url, "web1", &site.instance)
}

/// Deploys `main` through the CLI and waits for the end; returns the deployment.
fn deploy(c: &Coordinator) -> Result<Value> {
    let queued = c.cli_json(&["deploy", "--project", PROJECT, "--branch", "main"])?;
    let id = queued["id"].as_str().context("deployment id")?.to_owned();
    wait_deployment(c, PROJECT, &id, &["succeeded", "failed", "cancelled"], LONG)
}

fn step<'a>(d: &'a Value, name: &str) -> Result<&'a Value> {
    d["steps"]
        .as_array()
        .and_then(|s| s.iter().find(|s| s["name"] == name))
        .with_context(|| format!("no step {name} in {d}"))
}

fn assert_succeeded(d: &Value) -> Result<()> {
    if d["status"] != "succeeded" {
        bail!("deployment did not succeed: {d:#}");
    }
    Ok(())
}

/// The Clone Repository step failed; returns its output.
fn clone_failure(d: &Value) -> Result<String> {
    let clone = step(d, "Clone Repository")?;
    if d["status"] != "failed" || clone["status"] != "failed" {
        bail!("expected the Clone step to fail: {d:#}");
    }
    Ok(clone["output"].as_str().unwrap_or_default().to_owned())
}

fn project(c: &Coordinator) -> Result<Value> {
    c.cli_json(&["project", "show", PROJECT])
}

/// `ssh-keygen -l` of a public key file: the `SHA256:…` fingerprint.
fn ssh_fingerprint(public_key: &str, dir: &Path) -> Result<String> {
    let file = dir.join(format!("{}.pub", unique("fp")));
    std::fs::write(&file, format!("{public_key}\n"))?;
    let out = Command::new("ssh-keygen").arg("-lf").arg(&file).output()?;
    ensure_success("ssh-keygen -lf", &out)?;
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .nth(1)
        .map(str::to_owned)
        .context("ssh-keygen output")
}

/// Fails if any of `secrets` is in the agent's state directory (mirrors, journal, work
/// trees), in the coordinator's store, or in `logs`; and checks that the store holds
/// sealed values.
fn assert_nowhere(site: &Site, logs: &str, secrets: &[&str]) -> Result<()> {
    let agent_state = site.agent.dir.join("state");
    let store = site.coordinator.state_dir.join("store");
    assert!(
        agent_state.join("mirrors").is_dir(),
        "the agent kept its mirrors"
    );
    let sealed = files_containing(&store, "\"secret\":\"ocs1.")?;
    assert!(!sealed.is_empty(), "the store holds the sealed credentials");
    for secret in secrets {
        assert!(secret.len() >= 16, "needle too short to mean anything");
        for dir in [&agent_state, &store] {
            let found = files_containing(dir, secret)?;
            assert!(found.is_empty(), "a secret is in plain text in {found:?}");
        }
        assert!(!logs.contains(secret), "a secret is in a daemon's log");
    }
    Ok(())
}

/// The base64 lines of an OpenSSH private key: any one of them found means a leak.
fn key_lines(private_key: &str) -> Vec<String> {
    let lines: Vec<String> = private_key
        .lines()
        .filter(|l| !l.starts_with("-----") && l.len() >= 16)
        .map(str::to_owned)
        .collect();
    assert!(lines.len() >= 3, "an OpenSSH key has several body lines");
    lines
}

fn deploy_key(c: &Coordinator, extra: &[&str]) -> Result<String> {
    let mut args = vec!["project", "deploy-key", "--project", PROJECT];
    args.extend(extra);
    let out = c.cli(&args);
    ensure_success("ocore project deploy-key", &out)?;
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

#[test]
fn private_ssh_repository_with_submodules_pins_the_host_key_and_survives_a_key_rotation(
) -> Result<()> {
    let dir = tempfile::tempdir()?;
    let mut site = Site::start(dir.path(), &SiteOptions::default())?;
    let mut sshd = SshGitServer::start(dir.path())?;

    // A public OCA-like submodule (a local path: another server, fetched anonymously) and
    // a private one next to the superproject on the SSH server (a relative URL, so it is
    // fetched with the project's deploy key).
    let oca = AddonsRepo::init(&dir.path().join("oca"))?;
    oca.module("web_x", "1.0", &["base"], "X = 1\n")?;
    oca.module("web_y", "1.0", &["base"], "Y = 1\n")?;
    oca.commit("oca 1")?;
    let tools = AddonsRepo::init(&dir.path().join("tools"))?;
    tools.module("tool_p", "1.0", &["base"], "P = 1\n")?;
    tools.module("tool_q", "1.0", &["base"], "Q = 1\n")?;
    tools.commit("tools 1")?;
    let repo = AddonsRepo::init(dir.path())?;
    repo.module("mod_a", "1.0", &["base"], "A = 1\n")?;
    repo.module("custom/mod_b", "1.0", &["mod_a"], "B = 1\n")?;
    for (url, path) in [
        (oca.url(), "oca/web"),
        ("../tools/repo".to_owned(), "private/tools"),
    ] {
        repo.git(&[
            "-c",
            "protocol.file.allow=always",
            "submodule",
            "add",
            "-q",
            &url,
            path,
        ])?;
    }
    repo.commit("shop with two submodules")?;
    let url = sshd.url(&repo.dir);
    let remote = url.replace(&format!("{}@", sshd.user), "");
    configure(&site, &url)?;

    // Without a key the server refuses: the message names the remote.
    let refused = deploy(&site.coordinator)?;
    let output = clone_failure(&refused)?;
    assert!(
        output.contains(&format!("authentication failed for {remote}")),
        "{output}"
    );
    assert!(project(&site.coordinator)?["sshHostKey"].is_null());

    // The deploy key, to paste into the provider; here into sshd's authorized_keys.
    let public = deploy_key(&site.coordinator, &[])?;
    assert!(
        public.starts_with("ssh-ed25519 AAAA") && public.ends_with(" ocore-deploy-shop"),
        "{public}"
    );
    assert_eq!(
        deploy_key(&site.coordinator, &[])?,
        public,
        "asking again shows the same key"
    );
    sshd.authorize(&[&public])?;
    let first = deploy(&site.coordinator)?;
    assert_succeeded(&first)?;
    let clone = step(&first, "Clone Repository")?["output"].to_string();
    assert!(
        clone.contains("submodule oca/web @") && clone.contains("submodule private/tools @"),
        "{clone}"
    );
    let build = step(&first, "Build Image")?["output"].to_string();
    assert!(
        build.contains("addons path: ., custom, oca/web, private/tools"),
        "{build}"
    );
    assert!(
        build.contains("6 modules: mod_a, mod_b, tool_p, tool_q, web_x, web_y"),
        "{build}"
    );

    // The host key was pinned on first use, and is shown by the CLI and the API.
    let shown = project(&site.coordinator)?;
    assert_eq!(
        shown["sshHostKey"]["key"],
        Value::from(sshd.host_key()),
        "{shown}"
    );
    let fingerprint = ssh_fingerprint(&sshd.host_public_key, dir.path())?;
    assert_eq!(
        shown["sshHostKey"]["fingerprint"],
        Value::from(fingerprint.clone())
    );
    assert_eq!(shown["credentials"]["kind"], "ssh-key");
    assert_eq!(
        shown["credentials"]["publicKey"],
        Value::from(public.clone())
    );
    let text = site.coordinator.cli(&["project", "show", PROJECT]);
    let text = String::from_utf8_lossy(&text.stdout).into_owned();
    assert!(
        text.contains(&fingerprint) && text.contains(&public),
        "{text}"
    );
    let (first_key, mut logs) = stored_repository_secret(&mut site.coordinator, PROJECT)?;
    assert!(first_key.starts_with("-----BEGIN OPENSSH PRIVATE KEY-----"));

    // Record the modules' checksums, then bump the private submodule to a commit that
    // changes tool_q only: exactly that module is updated.
    let image = first["imageRef"].as_str().context("imageRef")?;
    site.install_modules(image, "mod_a,mod_b,web_x,web_y,tool_p,tool_q")?;
    repo.write("mod_a/static/touch.txt", "1")?;
    repo.commit("record checksums")?;
    assert_succeeded(&deploy(&site.coordinator)?)?;
    tools.write("tool_q/models.py", "Q = 2\n")?;
    let bumped = tools.commit("tools 2")?;
    repo.bump_submodule("private/tools", &bumped)?;
    let third = deploy(&site.coordinator)?;
    assert_succeeded(&third)?;
    assert_eq!(
        third["plan"]["modulesToUpdate"],
        serde_json::json!(["tool_q"]),
        "{third:#}"
    );
    assert_eq!(site.last_updated_modules()?, ["tool_q"]);

    // Rotation: a new key; until the provider has it, the server refuses (and the message
    // holds no secret); with the old key removed and the new one added, deploys work.
    let rotated = deploy_key(&site.coordinator, &["--rotate"])?;
    assert!(rotated.starts_with("ssh-ed25519 AAAA") && rotated != public);
    let refused = deploy(&site.coordinator)?;
    let output = clone_failure(&refused)?;
    assert!(
        output.contains(&format!("authentication failed for {remote}")),
        "{output}"
    );
    sshd.authorize(&[&rotated])?;
    assert_succeeded(&deploy(&site.coordinator)?)?;

    // The server is re-keyed: the Clone step fails loudly, naming both keys, until an
    // operator forgets the pin; the next deploy pins the new key.
    let old_host_key = sshd.host_key();
    sshd.rekey()?;
    let changed = deploy(&site.coordinator)?;
    let output = clone_failure(&changed)?;
    assert!(
        output.contains(&format!("the SSH host key of {remote} changed"))
            && output.contains(&old_host_key)
            && output.contains(&sshd.host_key()),
        "{output}"
    );
    assert_eq!(
        project(&site.coordinator)?["sshHostKey"]["key"],
        Value::from(old_host_key),
        "a changed key is not pinned by itself"
    );
    deploy_key(&site.coordinator, &["--forget-host-key"])?;
    assert!(project(&site.coordinator)?["sshHostKey"].is_null());
    assert_succeeded(&deploy(&site.coordinator)?)?;
    assert_eq!(
        project(&site.coordinator)?["sshHostKey"]["key"],
        Value::from(sshd.host_key())
    );

    // Neither private key is anywhere in plain text, and no answer carried one.
    let (rotated_key, log) = stored_repository_secret(&mut site.coordinator, PROJECT)?;
    logs.push_str(&log);
    logs.push_str(&site.coordinator.daemon.log());
    logs.push_str(&site.agent.daemon()?.log());
    let mut needles = key_lines(&first_key);
    needles.extend(key_lines(&rotated_key));
    let needles: Vec<&str> = needles.iter().map(String::as_str).collect();
    assert_nowhere(&site, &logs, &needles)?;
    let credentials = site.coordinator.get_ok("/api/projects/shop/credentials")?;
    assert_eq!(
        credentials["credentials"]["publicKey"],
        Value::from(rotated)
    );
    assert!(!credentials.to_string().contains("PRIVATE"));
    Ok(())
}

#[test]
fn https_token_deploys_and_a_wrong_token_fails_without_showing_it() -> Result<()> {
    let dir = tempfile::tempdir()?;
    // The server's certificate comes from a test CA that only the agent trusts (OpenSSL,
    // under libgit2, reads SSL_CERT_FILE): the chain is really checked.
    let tls = TestTls::issue(dir.path())?;
    let options = SiteOptions {
        agent_env: vec![("SSL_CERT_FILE".to_owned(), tls.ca.display().to_string())],
        ..Default::default()
    };
    let mut site = Site::start(dir.path(), &options)?;
    let repo = AddonsRepo::init(dir.path())?;
    repo.module("mod_a", "1.0", &["base"], "A = 1\n")?;
    repo.commit("first")?;
    let token = format!("glpat-{}", unique("good"));
    let wrong = format!("glpat-{}", unique("wrong"));
    let http = HttpGitServer::start(
        dir.path(),
        &site.env.nginx,
        dir.path(),
        "ci",
        &token,
        Some(&tls),
    )?;
    let url = http.url("repo");
    assert!(url.starts_with("https://127.0.0.1:"), "{url}");
    configure(&site, &url)?;
    let c = &site.coordinator;

    // The token is never taken from the command line.
    let argv = c.cli(&[
        "project",
        "set-token",
        "--project",
        PROJECT,
        "--token",
        &token,
    ]);
    assert!(!argv.status.success());

    let set = |secret: &str| -> Result<Value> {
        let out = cli_with_stdin(
            c,
            &[
                "project",
                "set-token",
                "--project",
                PROJECT,
                "--username",
                "ci",
                "--output",
                "json",
            ],
            &format!("{secret}\n"),
        )?;
        ensure_success("ocore project set-token", &out)?;
        let shown = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(!shown.contains(secret), "{shown}");
        Ok(serde_json::from_str(&shown)?)
    };
    let answer = set(&wrong)?;
    assert_eq!(answer["credentials"]["kind"], "https-token");
    assert_eq!(answer["credentials"]["username"], "ci");
    let refused = deploy(c)?;
    let output = clone_failure(&refused)?;
    assert!(
        output.contains(&format!("authentication failed for {url}")),
        "{output}"
    );
    assert!(!refused.to_string().contains(&wrong), "{refused}");

    set(&token)?;
    let first = deploy(c)?;
    assert_succeeded(&first)?;
    assert!(project(c)?["sshHostKey"].is_null(), "no host key over HTTP");
    for shown in [
        project(c)?,
        c.get_ok("/api/projects/shop/credentials")?,
        first.clone(),
    ] {
        assert!(!shown.to_string().contains(&token), "{shown}");
    }

    let (stored, log) = stored_repository_secret(&mut site.coordinator, PROJECT)?;
    assert_eq!(stored, token, "the token is stored sealed and opens");
    let mut logs = log;
    logs.push_str(&site.coordinator.daemon.log());
    logs.push_str(&site.agent.daemon()?.log());
    assert_nowhere(&site, &logs, &[&token, &wrong])?;
    drop(http);
    Ok(())
}

#[test]
fn credentials_api_validates_input_and_never_answers_with_a_secret() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let c = Coordinator::start(dir.path(), &ocore_tests::CoordinatorOptions::default())?;
    let admin = Some(c.admin_token.as_str());
    let created = c.cli_json(&[
        "project",
        "create",
        PROJECT,
        "--repository",
        "git@git.example:acme/shop.git",
    ])?;
    assert!(created["credentials"].is_null() && created["sshHostKey"].is_null());
    let base = "/api/projects/shop/credentials";

    // The placeholder field is gone, and a URL carrying a token is refused unrepeated.
    let (status, body) = c.api(
        "POST",
        "/api/projects",
        admin,
        Some(&serde_json::json!({"id": "p2", "repositoryUrl": "/srv/x", "credentialsRef": "k"})),
    )?;
    assert_eq!(status, 400, "{body}");
    assert!(body.to_string().contains("credentialsRef"), "{body}");
    let (status, body) = c.api(
        "POST",
        "/api/projects",
        admin,
        Some(&serde_json::json!({"id": "p3", "repositoryUrl": "https://ci:hunter2-token@git.example/a.git"})),
    )?;
    assert_eq!(status, 400, "{body}");
    assert!(!body.to_string().contains("hunter2"), "{body}");

    // Bad tokens and bodies are 4xx, and the answer never repeats the token.
    for bad in [
        serde_json::json!({"token": ""}),
        serde_json::json!({"token": "has space-s3cret"}),
        serde_json::json!({"token": "line\nbreak-s3cret"}),
        serde_json::json!({"username": "a:b", "token": "fine-s3cret"}),
        serde_json::json!({"token": "fine-s3cret", "extra": 1}),
        serde_json::json!({"username": "ci"}),
    ] {
        let (status, body) = c.api("PUT", &format!("{base}/https-token"), admin, Some(&bad))?;
        assert_eq!(status, 400, "{bad} -> {body}");
        assert!(!body.to_string().contains("s3cret"), "{body}");
    }
    let (status, _) = c.api_raw(
        "PUT",
        &format!("{base}/https-token"),
        admin,
        Some(("application/json", "{not json")),
    )?;
    assert_eq!(status, 400);
    let (status, _) = c.api(
        "POST",
        "/api/projects/ghost/credentials/deploy-key",
        admin,
        Some(&serde_json::json!({})),
    )?;
    assert_eq!(status, 404);
    let (status, _) = c.api(
        "POST",
        &format!("{base}/deploy-key"),
        admin,
        Some(&serde_json::json!({"rotate": "yes"})),
    )?;
    assert_eq!(status, 400);

    // Generate (201), show again (200, same key), rotate (201, another key).
    let key = |body: &Value| body["credentials"]["publicKey"].as_str().map(str::to_owned);
    let (status, first) = c.api(
        "POST",
        &format!("{base}/deploy-key"),
        admin,
        Some(&serde_json::json!({})),
    )?;
    assert_eq!(status, 201, "{first}");
    let (status, again) = c.api(
        "POST",
        &format!("{base}/deploy-key"),
        admin,
        Some(&serde_json::json!({})),
    )?;
    assert_eq!((status, key(&again)), (200, key(&first)));
    let (status, rotated) = c.api(
        "POST",
        &format!("{base}/deploy-key"),
        admin,
        Some(&serde_json::json!({"rotate": true})),
    )?;
    assert_eq!(status, 201);
    assert_ne!(key(&rotated), key(&first));
    for answer in [
        &first,
        &again,
        &rotated,
        &c.get_ok(base)?,
        &c.get_ok("/api/projects/shop")?,
    ] {
        assert!(!answer.to_string().contains("PRIVATE"), "{answer}");
    }

    // A token replaces the key; a deploy key then needs rotate.
    let (status, body) = c.api(
        "PUT",
        &format!("{base}/https-token"),
        admin,
        Some(&serde_json::json!({"token": "glpat-0123456789abcdef"})),
    )?;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["credentials"]["username"], "x-access-token");
    assert!(!body.to_string().contains("glpat-0123456789abcdef"));
    let (status, _) = c.api(
        "POST",
        &format!("{base}/deploy-key"),
        admin,
        Some(&serde_json::json!({})),
    )?;
    assert_eq!(status, 409);

    let (status, removed) = c.api("DELETE", base, admin, None)?;
    assert_eq!(status, 200);
    assert!(removed["credentials"].is_null());
    let (status, forgot) = c.api("DELETE", &format!("{base}/host-key"), admin, None)?;
    assert_eq!(status, 200);
    assert!(forgot["sshHostKey"].is_null());
    Ok(())
}
