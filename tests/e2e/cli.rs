//! The `ocore` command line as operators and CI scripts use it: the real binary against a
//! real coordinator (and, for deployments and snapshots, a real agent on Docker, nginx and
//! PostgreSQL). Each command's success path, its error paths and exit codes, `--output
//! json` parsing, live following (on a pipe and on a terminal through `script`), Ctrl-C
//! while following, rollback confirmation, and a snapshot exported from one host and
//! imported on another.

use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use ocore_tests::fixture::{AddonsRepo, Site, SiteOptions};
use ocore_tests::{
    bin, enrolled_agent, wait_deployment, wait_for, Coordinator, CoordinatorOptions,
};
use serde_json::Value;

const LONG: Duration = Duration::from_secs(300);

fn out(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn err(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn code(o: &Output) -> i32 {
    o.status.code().unwrap_or(-1)
}

/// Asserts the exit code, showing both streams when it differs.
fn expect_code(o: &Output, expected: i32, what: &str) {
    assert_eq!(
        code(o),
        expected,
        "{what}: exit code\nstdout: {}\nstderr: {}",
        out(o),
        err(o)
    );
}

fn json(o: &Output) -> Result<Value> {
    serde_json::from_slice(&o.stdout).with_context(|| format!("not JSON: {}", out(o)))
}

/// `ocore ARGS` with only the variables given (no URL or token unless passed).
fn ocore(home: &Path, env: &[(&str, &str)], args: &[&str]) -> Output {
    let mut command = Command::new(bin("ocore"));
    command
        .args(args)
        .env_remove("OCORE_URL")
        .env_remove("OCORE_TOKEN")
        .env_remove("XDG_CONFIG_HOME")
        .env("HOME", home)
        .env("NO_COLOR", "1")
        .stdin(Stdio::null());
    for (k, v) in env {
        command.env(k, v);
    }
    command
        .output()
        .unwrap_or_else(|e| panic!("running ocore {args:?}: {e}"))
}

/// Runs `ocore ARGS` on a pseudo-terminal (`script`), as a person at a terminal would,
/// feeding `input` to it. Colour is on unless `no_color`.
fn on_terminal(c: &Coordinator, args: &[&str], input: &str, no_color: bool) -> Result<Output> {
    let mut line = bin("ocore").display().to_string();
    for a in args {
        if !a
            .chars()
            .all(|ch| ch.is_ascii_alphanumeric() || "-_./:=".contains(ch))
        {
            bail!("argument {a:?} would need shell quoting");
        }
        line.push(' ');
        line.push_str(a);
    }
    let mut command = Command::new("script");
    command
        .args(["-qec", &line, "/dev/null"])
        .env("OCORE_URL", &c.url)
        .env("OCORE_TOKEN", &c.admin_token)
        .env("HOME", &c.state_dir)
        .env("TERM", "xterm")
        .env("COLUMNS", "120")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    if no_color {
        command.env("NO_COLOR", "1");
    } else {
        command.env_remove("NO_COLOR");
    }
    let mut child = command
        .spawn()
        .context("running `script` (util-linux; the bsdutils package on Debian)")?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin.write_all(input.as_bytes())?;
    }
    Ok(child.wait_with_output()?)
}

#[test]
fn login_administration_errors_and_json_output() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let c = Coordinator::start(dir.path(), &CoordinatorOptions::default())?;
    let _agent = enrolled_agent(&c, dir.path(), "web1")?;
    let home = dir.path().join("home");
    std::fs::create_dir_all(&home)?;

    // Login: a refused token saves nothing; a good one is saved 0600 and used later.
    let bad = ocore(
        &home,
        &[],
        &["login", "--url", &c.url, "--token", "oct_bogus"],
    );
    expect_code(&bad, 3, "login with a bad token");
    assert!(err(&bad).contains("refused the token"), "{}", err(&bad));
    let saved = home.join(".config/ocore/cli.toml");
    assert!(!saved.exists(), "nothing saved after a refused login");
    let no_scheme = ocore(
        &home,
        &[],
        &["login", "--url", "localhost:1", "--token", "x"],
    );
    expect_code(&no_scheme, 64, "login with a URL without scheme");
    assert!(err(&no_scheme).contains("http://"), "{}", err(&no_scheme));
    let away = ocore(
        &home,
        &[],
        &["login", "--url", "http://127.0.0.1:9", "--token", "x"],
    );
    expect_code(&away, 4, "login to nothing");
    assert!(
        err(&away).contains("cannot reach the coordinator at http://127.0.0.1:9"),
        "{}",
        err(&away)
    );
    let good = ocore(
        &home,
        &[],
        &["login", "--url", &c.url, "--token", &c.admin_token],
    );
    expect_code(&good, 0, "login");
    assert!(out(&good).contains("logged in to"), "{}", out(&good));
    let mode = std::fs::metadata(&saved)?.permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "the saved login is private");
    let dir_mode = std::fs::metadata(saved.parent().context("dir")?)?
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(dir_mode, 0o700);
    let text = std::fs::read_to_string(&saved)?;
    assert!(
        text.contains(&c.admin_token) && text.contains(&c.url),
        "{text}"
    );
    // Later commands need no URL or token.
    let me = ocore(&home, &[], &["project", "list", "--output", "json"]);
    expect_code(&me, 0, "project list after login");
    assert_eq!(json(&me)?["total"], 0);
    // Without a URL at all: a usage error saying what to do.
    let nowhere = ocore(&dir.path().join("empty-home"), &[], &["project", "list"]);
    expect_code(&nowhere, 64, "no URL");
    assert!(err(&nowhere).contains("ocore login"), "{}", err(&nowhere));

    // Projects, environments, instances, mappings: create, list, show, change, delete.
    let p = c.cli_json(&[
        "project",
        "create",
        "shop",
        "--repository",
        "/srv/git/shop.git",
    ])?;
    assert_eq!(p["id"], "shop");
    let p = c.cli_json(&["project", "update", "shop", "--name", "Shop"])?;
    assert_eq!(p["name"], "Shop");
    let list = c.cli_json(&["project", "ls"])?;
    assert_eq!(list["projects"][0]["id"], "shop", "{list}");
    let shown = c.cli(&["project", "show", "shop"]);
    assert!(out(&shown).contains("/srv/git/shop.git"), "{}", out(&shown));
    let e = c.cli_json(&[
        "environment",
        "create",
        "shop-prod",
        "--project",
        "shop",
        "--keep-last",
        "4",
    ])?;
    assert_eq!(e["snapshotSettings"]["keepLast"], 4, "{e}");
    let envs = c.cli_json(&["environment", "list", "--project", "shop"])?;
    assert_eq!(envs["total"], 1);
    let i = c.cli_json(&[
        "instance",
        "create",
        "shop-prod",
        "--environment",
        "shop-prod",
        "--agent",
        "web1",
        "--agent-instance",
        "web1-prod",
    ])?;
    assert_eq!(i["agent"], "web1");
    let instances = c.cli_json(&["instance", "list", "--environment", "shop-prod"])?;
    assert_eq!(instances["instances"][0]["id"], "shop-prod");
    let m = c.cli_json(&[
        "mapping",
        "create",
        "--project",
        "shop",
        "--branch",
        "feature/x",
        "--environment",
        "shop-prod",
    ])?;
    assert_eq!(m["branch"], "feature/x", "{m}");
    let maps = c.cli(&["mapping", "list", "--project", "shop"]);
    assert!(out(&maps).contains("feature/x"), "{}", out(&maps));
    let removed = c.cli_json(&[
        "mapping",
        "delete",
        "--project",
        "shop",
        "--branch",
        "feature/x",
    ])?;
    assert_eq!(removed["removed"], "feature/x");
    // Deleting what something still uses is refused, with the API's reason.
    let busy = c.cli(&["environment", "delete", "shop-prod"]);
    expect_code(&busy, 3, "delete an environment with an instance");
    assert_eq!(err(&busy).lines().count(), 1, "one line: {}", err(&busy));

    // Tokens: created (secret once), shown, listed, revoked; a revoked one is refused.
    let t = c.cli_json(&[
        "token",
        "create",
        "--name",
        "viewer",
        "--project",
        "shop",
        "--permission",
        "view:deployments",
    ])?;
    let (tid, secret) = (
        t["id"].as_str().context("id")?.to_owned(),
        t["token"].as_str().context("token")?.to_owned(),
    );
    let shown = c.cli_json(&["token", "show", &tid])?;
    assert_eq!(shown["name"], "viewer");
    assert!(
        shown.get("token").is_none(),
        "the secret is never shown again"
    );
    let tokens = c.cli(&["token", "list"]);
    assert!(
        out(&tokens).contains("view:deployments@shop"),
        "{}",
        out(&tokens)
    );
    // A permission missing: one clear line saying what to do.
    let denied = c.cli_as(
        &secret,
        &["deploy", "--project", "shop", "--branch", "main"],
    );
    expect_code(&denied, 3, "deploy without manage:deployments");
    assert_eq!(
        err(&denied).trim(),
        "ocore: this token lacks manage:deployments on project shop: ask an admin for a token with it"
    );
    let admin_only = c.cli_as(&secret, &["agent", "list"]);
    expect_code(&admin_only, 3, "agent list without admin");
    assert!(err(&admin_only).contains("admin"), "{}", err(&admin_only));
    let history = c.cli_as(&secret, &["deploy", "list", "--project", "shop"]);
    expect_code(&history, 0, "history with view:deployments");
    assert!(
        out(&history).contains("no deployments yet"),
        "{}",
        out(&history)
    );
    c.cli_json(&["token", "revoke", &tid])?;
    let revoked = c.cli_as(&secret, &["deploy", "list", "--project", "shop"]);
    expect_code(&revoked, 3, "a revoked token");
    assert!(err(&revoked).contains("revoked"), "{}", err(&revoked));

    // Agents.
    let agents = c.cli_json(&["agent", "list"])?;
    assert_eq!(agents["agents"][0]["status"], "connected", "{agents}");
    let ping = c.cli_json(&["agent", "ping", "web1"])?;
    assert_eq!(ping["name"], "web1");
    let text = c.cli(&["agent", "list"]);
    assert!(
        out(&text).contains("NAME") && out(&text).contains("connected"),
        "{}",
        out(&text)
    );

    // Usage errors are 64, with clap's message; help is not an error.
    let no_ref = c.cli(&["deploy", "--project", "shop"]);
    expect_code(&no_ref, 64, "deploy without a reference");
    assert!(err(&no_ref).contains("--branch"), "{}", err(&no_ref));
    expect_code(&c.cli(&["bogus"]), 64, "unknown command");
    let logs_alone = c.cli(&["deploy", "--project", "shop", "--branch", "x", "--logs"]);
    expect_code(&logs_alone, 64, "--logs needs --follow");
    let help = c.cli(&["--help"]);
    expect_code(&help, 0, "--help");
    assert!(
        out(&help).contains("Exit codes") && out(&help).contains("130"),
        "{}",
        out(&help)
    );
    let unknown = c.cli(&["deploy", "show", "0190a0a0-0000-7000-8000-000000000000"]);
    expect_code(&unknown, 3, "show an unknown deployment");
    assert!(err(&unknown).contains("not found"), "{}", err(&unknown));

    // Completions and the manual page come from the same definitions.
    for shell in ["bash", "zsh", "fish"] {
        let script = c.cli(&["completions", shell]);
        expect_code(&script, 0, shell);
        for word in ["rollback", "export", "import", "verify", "--follow"] {
            assert!(
                out(&script).contains(word),
                "{shell} completion lacks {word}"
            );
        }
    }
    let man = c.cli(&["manpage"]);
    expect_code(&man, 0, "manpage");
    assert!(
        out(&man).contains("Exit codes"),
        "the man page documents exit codes"
    );
    Ok(())
}

/// Waits until the named step of a deployment runs (or the deployment ended).
fn wait_step_running(c: &Coordinator, id: &str, step: &str) -> Result<Value> {
    wait_for(&format!("{step} of {id} to run"), LONG, || {
        c.get_ok(&format!("/api/projects/shop/deployments/{id}"))
            .ok()
            .filter(|d| {
                ocore_tests::step_status(d, step) == Some("running")
                    || !matches!(d["status"].as_str(), Some("queued" | "running"))
            })
    })
}

/// A `deploy --follow` started in the background; returns the child and the deployment id
/// read from its first line.
fn follow_in_background(c: &Coordinator) -> Result<(std::process::Child, String)> {
    use std::io::{BufRead, BufReader};
    let mut child = Command::new(bin("ocore"))
        .args([
            "deploy",
            "--project",
            "shop",
            "--branch",
            "main",
            "--follow",
        ])
        .env("OCORE_URL", &c.url)
        .env("OCORE_TOKEN", &c.admin_token)
        .env("HOME", &c.state_dir)
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    let stdout = child.stdout.take().context("stdout")?;
    let mut lines = BufReader::new(stdout);
    let mut first = String::new();
    lines.read_line(&mut first)?;
    let id = first
        .strip_prefix("deployment ")
        .and_then(|r| r.split_whitespace().next())
        .with_context(|| format!("first line: {first:?}"))?
        .to_owned();
    // Keep draining stdout so the child never blocks on a full pipe.
    std::thread::spawn(move || for _ in lines.lines() {});
    Ok((child, id))
}

fn wait_exit(child: &mut std::process::Child) -> Result<(i32, String)> {
    let status = wait_for("the CLI to exit", LONG, || child.try_wait().ok().flatten())?;
    let mut stderr = String::new();
    if let Some(mut e) = child.stderr.take() {
        std::io::Read::read_to_string(&mut e, &mut stderr)?;
    }
    Ok((status.code().unwrap_or(-1), stderr))
}

#[test]
fn deployments_are_followed_listed_interrupted_cancelled_and_rolled_back() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let site = Site::start(dir.path(), &SiteOptions::default())?;
    let c = &site.coordinator;
    let repo = AddonsRepo::init(dir.path())?;
    repo.module("shop_base", "1.0", &["base"], "A = 1\n")?;
    repo.commit("first version")?;
    site.configure_shop(&repo)?;

    // Followed on a pipe: plain lines, no colour or spinner, exit 0.
    let first = c.cli(&[
        "deploy",
        "--project",
        "shop",
        "--branch",
        "main",
        "--follow",
    ]);
    expect_code(&first, 0, "deploy --follow");
    let text = out(&first);
    for needle in [
        "-> Clone Repository",
        "ok Clone Repository (",
        "ok Build Image (",
        "ok Health Check (",
        "   commit ",
        "== succeeded",
    ] {
        assert!(text.contains(needle), "missing {needle:?} in:\n{text}");
    }
    assert!(
        !text.contains('\x1b'),
        "no escape codes on a pipe: {text:?}"
    );
    let first_id = text
        .lines()
        .find_map(|l| l.strip_prefix("deployment ")?.split_whitespace().next())
        .context("deployment id")?
        .to_owned();
    assert!(
        text.contains(&format!("deployment {first_id} succeeded in")),
        "{text}"
    );

    // History, detail and logs, as text and JSON.
    let list = c.cli(&["deploy", "list", "--project", "shop"]);
    let header = out(&list);
    for column in [
        "STATUS", "TRIGGER", "REF", "COMMIT", "AUTHOR", "AGE", "DURATION",
    ] {
        assert!(header.contains(column), "{header}");
    }
    assert!(
        header.contains("Test Author") && header.contains("main"),
        "{header}"
    );
    assert!(header.contains("showing 1-1 of 1"), "{header}");
    let page = c.cli_json(&["deploy", "list", "--project", "shop", "--limit", "5"])?;
    assert_eq!(page["total"], 1);
    assert_eq!(page["deployments"][0]["id"], first_id.as_str());
    let detail = c.cli_json(&["deploy", "show", &first_id])?;
    assert_eq!(
        detail["steps"].as_array().map(Vec::len),
        Some(7),
        "{detail}"
    );
    let shown = out(&c.cli(&["deploy", "show", "--deployment", &first_id]));
    assert!(
        shown.contains("Build Image") && shown.contains("completed"),
        "{shown}"
    );
    let logs = out(&c.cli(&["deploy", "logs", &first_id]));
    assert!(logs.contains("== Build Image (completed"), "{logs}");
    let only = c.cli_json(&["deploy", "logs", &first_id, "--step", "build image"])?;
    assert_eq!(only.as_array().map(Vec::len), Some(1), "{only}");
    assert_eq!(only[0]["name"], "Build Image");
    let replay = c.cli(&["deploy", "logs", &first_id, "--follow", "--output", "json"]);
    expect_code(&replay, 0, "logs --follow of a finished deployment");
    let events: Vec<Value> = out(&replay)
        .lines()
        .map(serde_json::from_str)
        .collect::<Result<_, _>>()?;
    assert_eq!(
        events.last().map(|e| e["type"].clone()),
        Some("finished".into())
    );
    assert!(
        events.iter().any(|e| e["type"] == "log"),
        "log lines are events"
    );

    // On a terminal: a spinner, colour, and the same steps; NO_COLOR keeps the colour off.
    repo.write("shop_base/models.py", "A = 2\n")?;
    repo.commit("second version")?;
    let tty = on_terminal(
        c,
        &[
            "deploy",
            "--project",
            "shop",
            "--branch",
            "main",
            "--follow",
        ],
        "",
        false,
    )?;
    expect_code(&tty, 0, "deploy --follow on a terminal");
    let screen = out(&tty);
    assert!(
        screen.contains("\r\x1b[2K"),
        "the spinner line is redrawn: {screen:?}"
    );
    assert!(
        screen.contains("\x1b[32mok\x1b[0m Build Image"),
        "{screen:?}"
    );
    let plain = on_terminal(c, &["deploy", "list", "--project", "shop"], "", true)?;
    assert!(out(&plain).contains("succeeded"), "{}", out(&plain));
    assert!(
        !out(&plain).contains("\x1b[3"),
        "NO_COLOR: {:?}",
        out(&plain)
    );
    let coloured = on_terminal(c, &["deploy", "list", "--project", "shop"], "", false)?;
    assert!(
        out(&coloured).contains("\x1b[32msucceeded"),
        "{:?}",
        out(&coloured)
    );
    let second_id = c.cli_json(&["deploy", "list", "--project", "shop", "--limit", "1"])?
        ["deployments"][0]["id"]
        .as_str()
        .context("id")?
        .to_owned();

    // A failed deployment: exit 1, and the failing step's last output is shown.
    repo.write(
        "Dockerfile",
        "FROM ocore/odoo-test:17.0\nRUN echo the-build-breaks && exit 3\n",
    )?;
    repo.commit("broken build")?;
    let failed = c.cli(&[
        "deploy",
        "--project",
        "shop",
        "--branch",
        "main",
        "--follow",
    ]);
    expect_code(&failed, 1, "a failed deployment");
    assert!(
        out(&failed).contains("!! Build Image failed"),
        "{}",
        out(&failed)
    );
    assert!(
        out(&failed).contains("last output of Build Image"),
        "{}",
        out(&failed)
    );
    assert!(err(&failed).contains("failed"), "{}", err(&failed));

    // Ctrl-C while following: the CLI stops (130) and says so; the deployment goes on.
    repo.write(
        "Dockerfile",
        "FROM ocore/odoo-test:17.0\nCOPY --chown=odoo:odoo . /mnt/extra-addons\nRUN sleep 6 && echo interrupted-build\n",
    )?;
    repo.commit("slow build")?;
    let (mut child, id) = follow_in_background(c)?;
    let running = wait_step_running(c, &id, "Build Image")?;
    assert_eq!(running["status"], "running", "{running}");
    let kill = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()?;
    assert!(kill.success());
    let (status, stderr) = wait_exit(&mut child)?;
    assert_eq!(status, 130, "{stderr}");
    assert!(stderr.contains("stopped following deployment"), "{stderr}");
    assert!(stderr.contains("does not cancel"), "{stderr}");
    assert!(
        stderr.contains(&format!("ocore deploy cancel {id}")),
        "{stderr}"
    );
    let after = c.get_ok(&format!("/api/projects/shop/deployments/{id}"))?;
    assert_eq!(
        after["status"], "running",
        "still running after Ctrl-C: {after}"
    );
    let done = wait_deployment(c, "shop", &id, &["succeeded", "failed", "cancelled"], LONG)?;
    assert_eq!(done["status"], "succeeded", "{done}");

    // Cancelled while followed: the follower exits 2.
    repo.write(
        "Dockerfile",
        "FROM ocore/odoo-test:17.0\nRUN sleep 20 && echo cancelled-build\n",
    )?;
    repo.commit("to cancel")?;
    let (mut child, id) = follow_in_background(c)?;
    wait_step_running(c, &id, "Build Image")?;
    let cancel = c.cli(&["deploy", "cancel", &id]);
    expect_code(&cancel, 0, "deploy cancel");
    let (status, stderr) = wait_exit(&mut child)?;
    assert_eq!(status, 2, "{stderr}");
    assert!(stderr.contains("cancelled"), "{stderr}");

    // Rollback of the second deployment: refused without a terminal or --yes, declined
    // at a terminal prompt, shown with --dry-run, and run with --yes.
    let refused = c.cli(&["deploy", "rollback", "--deployment", &second_id]);
    expect_code(&refused, 64, "rollback without a terminal or --yes");
    assert!(err(&refused).contains("add --yes"), "{}", err(&refused));
    assert!(
        out(&refused).contains("restores snapshot") && out(&refused).contains("returns to image"),
        "the plan is shown first: {}",
        out(&refused)
    );
    let plan = c.cli_json(&["deploy", "rollback", &second_id, "--dry-run"])?;
    assert_eq!(plan["dryRun"], true);
    assert_eq!(
        plan["returnsTo"]["deploymentId"],
        first_id.as_str(),
        "{plan}"
    );
    assert!(plan["snapshot"]["id"].is_string(), "{plan}");
    let declined = on_terminal(c, &["deploy", "rollback", &second_id], "n\n", true)?;
    expect_code(&declined, 1, "rollback declined at the prompt");
    assert!(out(&declined).contains("[y/N]"), "{}", out(&declined));
    let listed = c.cli_json(&["deploy", "list", "--project", "shop", "--limit", "1"])?;
    assert_ne!(listed["deployments"][0]["triggerType"], "rollback");
    let rolled = c.cli(&[
        "deploy",
        "rollback",
        "--deployment",
        &second_id,
        "--yes",
        "--follow",
    ]);
    expect_code(&rolled, 0, "rollback --yes --follow");
    // The commit line names the author of the commit it returns to, as for a deployment.
    let commit_line = out(&rolled)
        .lines()
        .find(|l| l.trim_start().starts_with("commit "))
        .map(str::to_owned)
        .unwrap_or_default();
    assert!(
        commit_line.contains(" by Test Author: "),
        "{}",
        out(&rolled)
    );
    let last = c.cli_json(&["deploy", "list", "--project", "shop", "--limit", "1"])?;
    assert_eq!(last["deployments"][0]["triggerType"], "rollback");
    assert_eq!(last["deployments"][0]["rollbackOf"], second_id.as_str());
    Ok(())
}

#[test]
fn snapshots_are_verified_exported_and_imported_on_another_host() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let site = Site::start(dir.path(), &SiteOptions::default())?;
    let c = &site.coordinator;
    let repo = AddonsRepo::init(dir.path())?;
    repo.module("shop_base", "1.0", &["base"], "A = 1\n")?;
    repo.commit("first version")?;
    site.configure_shop(&repo)?;
    let first = c.cli(&[
        "deploy",
        "--project",
        "shop",
        "--branch",
        "main",
        "--follow",
    ]);
    expect_code(&first, 0, "first deploy (creates the database)");

    let taken = c.cli_json(&["snapshot", "create", "--environment", "shop-prod", "--wait"])?;
    let id = taken["id"].as_str().context("id")?.to_owned();
    let table = out(&c.cli(&["snapshot", "list", "--environment", "shop-prod"]));
    assert!(table.contains(&id) && table.contains("manual"), "{table}");
    let verified = c.cli_json(&["snapshot", "verify", &id, "--environment", "shop-prod"])?;
    assert_eq!(verified["verified"], true, "{verified}");
    assert!(verified["parts"].as_u64().unwrap_or(0) > 0, "{verified}");
    let text = c.cli(&[
        "snapshot",
        "verify",
        "--snapshot",
        &id,
        "--environment",
        "shop-prod",
    ]);
    expect_code(&text, 0, "verify");
    assert!(out(&text).contains("verified"), "{}", out(&text));

    // Export: an atomic file with the reported size and SHA-256.
    let archive = dir.path().join("shop.tar.zst");
    let archive_arg = archive.display().to_string();
    let exported = c.cli_json(&[
        "snapshot",
        "export",
        "--snapshot",
        &id,
        "--environment",
        "shop-prod",
        "--file",
        &archive_arg,
    ])?;
    let bytes = std::fs::read(&archive)?;
    assert_eq!(exported["bytes"], bytes.len() as u64, "{exported}");
    assert_eq!(&bytes[..4], &[0x28, 0xb5, 0x2f, 0xfd], "zstd magic");
    use sha2::Digest;
    assert_eq!(
        exported["sha256"],
        hex::encode(sha2::Sha256::digest(&bytes)),
        "{exported}"
    );
    let again = c.cli(&[
        "snapshot",
        "export",
        &id,
        "--environment",
        "shop-prod",
        "--file",
        &archive_arg,
    ]);
    expect_code(&again, 64, "export over an existing file");
    assert!(err(&again).contains("--force"), "{}", err(&again));
    let zip = dir.path().join("shop.zip");
    let zipped = c.cli(&[
        "snapshot",
        "export",
        &id,
        "--environment",
        "shop-prod",
        "--format",
        "odoo-zip",
        "--file",
        &zip.display().to_string(),
    ]);
    expect_code(&zipped, 0, "export odoo-zip");
    assert_eq!(&std::fs::read(&zip)?[..2], b"PK");
    let missing = dir.path().join("ghost.tar.zst");
    let ghost = c.cli(&[
        "snapshot",
        "export",
        "0190a0a0-0000-7000-8000-000000000000",
        "--environment",
        "shop-prod",
        "--file",
        &missing.display().to_string(),
    ]);
    expect_code(&ghost, 3, "export of an unknown snapshot");
    assert!(!missing.exists(), "no file for a failed export");
    let leftovers: Vec<_> = std::fs::read_dir(dir.path())?
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().contains(".partial-"))
        .collect();
    assert!(leftovers.is_empty(), "no partial files left: {leftovers:?}");

    // Import on another host (its own coordinator and agent), then verify it there.
    let other_dir = tempfile::tempdir()?;
    let other = Site::start(other_dir.path(), &SiteOptions::default())?;
    let o = &other.coordinator;
    other.configure_shop(&repo)?;
    let imported = o.cli_json(&[
        "snapshot",
        "import",
        "--environment",
        "shop-prod",
        "--file",
        &archive_arg,
    ])?;
    let new_id = imported["id"].as_str().context("imported id")?.to_owned();
    assert_ne!(new_id, id, "an import is a new snapshot");
    assert_eq!(imported["state"], "ready", "{imported}");
    let listed = o.cli_json(&["snapshot", "list", "--environment", "shop-prod"])?;
    assert_eq!(listed["source"], "agent");
    assert!(listed.to_string().contains(&new_id), "{listed}");
    let there = o.cli_json(&["snapshot", "verify", &new_id, "--environment", "shop-prod"])?;
    assert_eq!(there["verified"], true, "{there}");
    assert_eq!(
        there["parts"], verified["parts"],
        "the same dump parts arrived"
    );
    // The Odoo backup zip imports too.
    let from_zip = o.cli_json(&[
        "snapshot",
        "import",
        "--environment",
        "shop-prod",
        "--file",
        &zip.display().to_string(),
    ])?;
    assert_eq!(from_zip["state"], "ready", "{from_zip}");
    // Something that is no archive is refused with the agent's reason, and nothing is kept.
    let junk = other_dir.path().join("junk.bin");
    std::fs::write(&junk, b"this is not an archive")?;
    let refused = o.cli(&[
        "snapshot",
        "import",
        "--environment",
        "shop-prod",
        "--file",
        &junk.display().to_string(),
    ]);
    expect_code(&refused, 3, "import of junk");
    assert!(
        err(&refused).contains("neither zstd nor zip"),
        "{}",
        err(&refused)
    );
    // A large upload streams past the API's JSON body limit (1 MiB) to the agent, which
    // judges it: a zstd header over 3 MiB of junk is refused as a bad archive, not as a
    // too-large request.
    let big = other_dir.path().join("big.tar.zst");
    let mut junk_bytes = vec![0x28, 0xb5, 0x2f, 0xfd];
    junk_bytes.resize(3 * 1024 * 1024, 7);
    std::fs::write(&big, &junk_bytes)?;
    let big_refused = o.cli(&[
        "snapshot",
        "import",
        "--environment",
        "shop-prod",
        "--file",
        &big.display().to_string(),
    ]);
    expect_code(&big_refused, 3, "import of 3 MiB of junk");
    assert!(
        err(&big_refused).contains("archive") && !err(&big_refused).contains("larger than"),
        "{}",
        err(&big_refused)
    );
    let after = o.cli_json(&["snapshot", "list", "--environment", "shop-prod"])?;
    assert_eq!(after["total"], 2, "{after}");
    Ok(())
}
