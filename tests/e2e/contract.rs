//! The API contract where operators and CI scripts meet it: administration cannot be
//! locked out (and the break-glass recovery works with the server up or down), a CI token
//! follows the deployment it started, the CLI needs exactly the permissions the API
//! needs, authorization comes before body checks, and a closed pipe ends a command quietly.

use std::os::unix::fs::PermissionsExt;
use std::process::{Command, Stdio};
use std::time::Duration;

use anyhow::{ensure, Context, Result};
use ocore_tests::fixture::{AddonsRepo, Site, SiteOptions};
use ocore_tests::{bin, project_token, wait_deployment, wait_for, Coordinator, CoordinatorOptions};
use serde_json::{json, Value};

const LONG: Duration = Duration::from_secs(300);
const TERMINAL: [&str; 3] = ["succeeded", "failed", "cancelled"];

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Runs `ocore token recover-admin` against the coordinator's configuration.
fn recover_admin(c: &Coordinator, token_file: &std::path::Path) -> Result<Value> {
    let out = Command::new(bin("ocore"))
        .args(["token", "recover-admin", "--output", "json", "--config"])
        .arg(&c.config_path)
        .arg("--token-file")
        .arg(token_file)
        .env_remove("OCORE_URL")
        .env_remove("OCORE_TOKEN")
        .output()?;
    ensure!(
        out.status.success(),
        "recover-admin exited {}: {}",
        out.status,
        text(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).context("recover-admin --output json")
}

fn read_token(path: &std::path::Path) -> Result<String> {
    let mode = std::fs::metadata(path)?.permissions().mode() & 0o777;
    ensure!(mode == 0o600, "{} has mode {mode:o}", path.display());
    Ok(std::fs::read_to_string(path)?.trim().to_owned())
}

/// The last active admin token cannot be revoked (409, through the API and the CLI), not
/// even by two revocations at once; `ocore token recover-admin` creates a new admin token
/// while the server runs (applied within seconds, logged, secret in a 0600 file and never
/// in the log) and while it is stopped (applied when it starts); a request file others
/// could read is refused.
#[test]
fn administration_cannot_be_locked_out_and_recovery_breaks_glass() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let c = Coordinator::start(dir.path(), &CoordinatorOptions::default())?;
    let tokens = c.get_ok("/api/tokens")?;
    let first = tokens["tokens"][0]["id"]
        .as_str()
        .context("token id")?
        .to_owned();

    // Alone, the caller's own admin token cannot go.
    let (status, body) = c.api(
        "DELETE",
        &format!("/api/tokens/{first}"),
        Some(&c.admin_token),
        None,
    )?;
    ensure!(status == 409, "{status} {body}");
    ensure!(
        body["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("last active admin token") && m.contains("recover-admin")),
        "{body}"
    );
    let cli = c.cli(&["token", "revoke", &first]);
    ensure!(cli.status.code() == Some(3), "{cli:?}");
    ensure!(
        text(&cli.stderr).contains("last active admin token"),
        "{}",
        text(&cli.stderr)
    );

    // Two admins: revoking both at once leaves one.
    let second = c.cli_json(&["token", "create", "--name", "second-admin", "--admin"])?;
    let second_id = second["id"].as_str().context("id")?.to_owned();
    let second_secret = second["token"].as_str().context("token")?.to_owned();
    let answers: Vec<u16> = std::thread::scope(|s| {
        let a = s.spawn(|| {
            c.api(
                "DELETE",
                &format!("/api/tokens/{first}"),
                Some(&second_secret),
                None,
            )
        });
        let b = s.spawn(|| {
            c.api(
                "DELETE",
                &format!("/api/tokens/{second_id}"),
                Some(&c.admin_token),
                None,
            )
        });
        [a, b]
            .into_iter()
            .map(|h| h.join().expect("request thread").map(|(s, _)| s))
            .collect::<Result<Vec<u16>>>()
    })?;
    let mut sorted = answers.clone();
    sorted.sort_unstable();
    // One wins (200); the other is refused (409), or finds its caller revoked (401).
    ensure!(
        sorted[0] == 200 && (sorted[1] == 409 || sorted[1] == 401),
        "{answers:?}"
    );
    let active: Vec<Value> = c_tokens(&c, &[&c.admin_token, &second_secret])?
        .into_iter()
        .filter(|t| t["admin"] == true && t["revokedAt"].is_null())
        .collect();
    ensure!(
        active.len() == 1,
        "one admin token stays active: {active:?}"
    );

    // Say the secret of the admin token left is lost: break glass on the host.
    let token_file = dir.path().join("recovered");
    let done = recover_admin(&c, &token_file)?;
    ensure!(
        done["serverRunning"] == true && done["applied"] == true,
        "{done}"
    );
    let recovered = read_token(&token_file)?;
    let (status, me) = c.api("GET", "/api/me", Some(&recovered), None)?;
    ensure!(status == 200 && me["admin"] == true, "{status} {me}");
    let log = c.daemon.log();
    ensure!(
        log.contains("break-glass"),
        "the server logs the recovery: {log}"
    );
    ensure!(!log.contains(&recovered), "the secret is never logged");

    // An unsafe request (readable by others) is refused and never applied.
    let requests = c.state_dir.join("admin-recovery");
    let forged = json!({
        "id": "forged", "name": "forged", "hash": "a".repeat(64), "admin": true,
        "grants": [], "createdAt": 0, "expiresAt": null, "revokedAt": null,
    });
    let forged_path = requests.join("forged.json");
    std::fs::write(&forged_path, forged.to_string())?;
    std::fs::set_permissions(&forged_path, std::fs::Permissions::from_mode(0o644))?;
    wait_for(
        "the unsafe request to be refused",
        Duration::from_secs(15),
        || requests.join("forged.refused").exists().then_some(()),
    )?;
    let listed = c_tokens(&c, &[&recovered])?;
    ensure!(!listed.iter().any(|t| t["id"] == "forged"), "{listed:?}");

    // The server stopped: the request waits, and the token works once it starts.
    let mut c = c;
    c.daemon.terminate()?;
    let offline_file = dir.path().join("recovered-offline");
    let done = recover_admin(&c, &offline_file)?;
    ensure!(
        done["serverRunning"] == false && done["applied"] == false,
        "{done}"
    );
    let offline = read_token(&offline_file)?;
    let mut command = Command::new(bin("ocore"));
    command.arg("server").arg("--config").arg(&c.config_path);
    let c = Coordinator::spawn_with(command, c.config_path.clone(), c.state_dir.clone())?;
    let (status, me) = c.api("GET", "/api/me", Some(&offline), None)?;
    ensure!(status == 200 && me["admin"] == true, "{status} {me}");
    ensure!(
        std::fs::read_dir(&requests)?
            .flatten()
            .all(|e| e.path().extension().is_some_and(|x| x == "refused")),
        "applied requests are removed"
    );
    Ok(())
}

/// The token list as the first of `tokens` that is still an admin sees it.
fn c_tokens(c: &Coordinator, tokens: &[&str]) -> Result<Vec<Value>> {
    for t in tokens {
        let (status, body) = c.api("GET", "/api/tokens", Some(t), None)?;
        if status == 200 {
            return Ok(body["tokens"].as_array().cloned().unwrap_or_default());
        }
    }
    anyhow::bail!("no admin token left among those given")
}

/// A CI token with only `manage:deployments` deploys and follows its deployment to the
/// end (exit 0) but reads no other; a token with only `manage:environments` plans, runs and
/// follows a rollback from the CLI by deployment id; a token lacking a permission gets 403
/// before any complaint about its body; `ocore … | head -1` ends quietly.
#[test]
fn cli_commands_need_exactly_the_permissions_of_their_api_calls() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let site = Site::start(dir.path(), &SiteOptions::default())?;
    let c = &site.coordinator;
    let repo = AddonsRepo::init(dir.path())?;
    repo.module("shop_base", "1.0", &["base"], "A = 1\n")?;
    repo.commit("first version")?;
    site.configure_shop(&repo)?;
    let admin_deploy = site.deploy_main()?;
    let d = wait_deployment(c, "shop", &admin_deploy, &TERMINAL, LONG)?;
    ensure!(d["status"] == "succeeded", "{d}");

    // The README's CI job: deploy and follow with manage:deployments alone.
    let ci = project_token(c, "shop", &["manage:deployments"])?;
    repo.module("shop_base", "1.1", &["base"], "A = 2\n")?;
    repo.commit("second version")?;
    let followed = c.cli_as(
        &ci,
        &[
            "deploy",
            "--project",
            "shop",
            "--branch",
            "main",
            "--follow",
        ],
    );
    ensure!(
        followed.status.code() == Some(0),
        "deploy --follow with manage:deployments: {}\n{}",
        text(&followed.stdout),
        text(&followed.stderr)
    );
    let out = text(&followed.stdout);
    ensure!(out.contains("== succeeded"), "{out}");
    let ci_deploy = out
        .lines()
        .find_map(|l| l.strip_prefix("deployment ")?.split_whitespace().next())
        .context("deployment id")?
        .to_owned();
    let shown = c.cli_as(&ci, &["deploy", "show", &ci_deploy, "--project", "shop"]);
    ensure!(shown.status.success(), "{}", text(&shown.stderr));
    // Not someone else's deployment, nor the history.
    for args in [
        vec!["deploy", "show", admin_deploy.as_str(), "--project", "shop"],
        vec!["deploy", "list", "--project", "shop"],
    ] {
        let o = c.cli_as(&ci, &args);
        ensure!(o.status.code() == Some(3), "{args:?}: {o:?}");
    }
    let (status, _) = c.api(
        "GET",
        &format!("/api/projects/shop/deployments/{admin_deploy}/events"),
        Some(&ci),
        None,
    )?;
    ensure!(status == 403, "events of another's deployment: {status}");

    // Rollback with manage:environments alone, by id as the README shows it.
    let envs = project_token(c, "shop", &["manage:environments"])?;
    let dry = c.cli_as(
        &envs,
        &[
            "deploy",
            "rollback",
            "--deployment",
            &ci_deploy,
            "--dry-run",
            "--output",
            "json",
        ],
    );
    ensure!(
        dry.status.success(),
        "rollback --dry-run: {}",
        text(&dry.stderr)
    );
    let plan: Value = serde_json::from_slice(&dry.stdout)?;
    ensure!(
        plan["dryRun"] == true && plan["deploymentId"] == ci_deploy.as_str(),
        "{plan}"
    );
    let rolled = c.cli_as(
        &envs,
        &[
            "deploy",
            "rollback",
            "--deployment",
            &ci_deploy,
            "--yes",
            "--follow",
        ],
    );
    ensure!(
        rolled.status.code() == Some(0),
        "rollback --yes --follow: {}\n{}",
        text(&rolled.stdout),
        text(&rolled.stderr)
    );
    // With view:deployments only, the same rollback is refused before anything is done.
    let viewer = project_token(c, "shop", &["view:deployments"])?;
    let refused = c.cli_as(
        &viewer,
        &["deploy", "rollback", "--deployment", &ci_deploy, "--yes"],
    );
    ensure!(refused.status.code() == Some(3), "{refused:?}");

    // Authorization before the body: no body, no content type, a token without the
    // permission gets 403; the token with it gets 415.
    for (method, path, holder) in [
        ("POST", "/api/projects/shop/deploy", &ci),
        ("POST", "/api/projects/shop/rollback", &envs),
        (
            "PUT",
            "/api/environments/shop-prod/snapshot-settings",
            &envs,
        ),
    ] {
        let (status, body) = c.api_raw(method, path, Some(&viewer), Some(("text/plain", "x")))?;
        ensure!(
            status == 403,
            "{method} {path} without the permission: {status} {body}"
        );
        let (status, body) = c.api_raw(method, path, Some(holder), Some(("text/plain", "x")))?;
        ensure!(status == 415, "{method} {path} with it: {status} {body}");
    }

    // Without --follow: the 202 already carries the steps, and the text says how to
    // follow, which the CI token may then do.
    let queued = c.cli_as(
        &ci,
        &[
            "deploy",
            "--project",
            "shop",
            "--branch",
            "main",
            "--output",
            "json",
        ],
    );
    ensure!(queued.status.success(), "{queued:?}");
    let queued: Value = serde_json::from_slice(&queued.stdout)?;
    let steps = queued["steps"].as_array().context("steps in the 202")?;
    ensure!(
        !steps.is_empty()
            && steps
                .iter()
                .all(|s| s["status"] == "pending" && s["name"].is_string()),
        "{queued}"
    );
    let queued_id = queued["id"].as_str().context("id")?;
    wait_deployment(c, "shop", queued_id, &TERMINAL, LONG)?;
    let plain = c.cli_as(&ci, &["deploy", "--project", "shop", "--branch", "main"]);
    let plain_out = text(&plain.stdout);
    let plain_id = plain_out
        .strip_prefix("deployment ")
        .and_then(|l| l.split_whitespace().next())
        .context("deployment id")?;
    ensure!(
        plain_out.contains(&format!("follow it with `ocore deploy follow {plain_id}`")),
        "{plain_out}"
    );
    let follow = c.cli_as(&ci, &["deploy", "follow", plain_id]);
    ensure!(
        follow.status.code() == Some(0),
        "the hint works: {}\n{}",
        text(&follow.stdout),
        text(&follow.stderr)
    );

    // A reader that goes away: no panic, no backtrace, the exit of a closed pipe.
    let mut child = Command::new(bin("ocore"))
        .args(["deploy", "list", "--project", "shop"])
        .env("OCORE_URL", &c.url)
        .env("OCORE_TOKEN", &c.admin_token)
        .env("RUST_BACKTRACE", "1")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    drop(child.stdout.take());
    let out = child.wait_with_output()?;
    let err = text(&out.stderr);
    ensure!(
        out.status.code() == Some(141),
        "exit {:?}: {err}",
        out.status
    );
    ensure!(err.is_empty(), "quiet: {err}");
    Ok(())
}

/// `sha256=<hex>` of `body` under `secret`, as GitHub signs a delivery.
fn github_signature(secret: &str, body: &[u8]) -> String {
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, secret.as_bytes());
    format!("sha256={}", hex::encode(ring::hmac::sign(&key, body)))
}

/// The smaller points where the API and CLI met users badly: the bearer scheme in any
/// case; `--limit -1` refused as a value; no token at all is a usage error (64); token
/// times have milliseconds like every other time; a tag mapping says "tag"; replaying a
/// delivery that is rejected again exits 1.
#[test]
fn the_small_contract_points_hold() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let c = Coordinator::start(dir.path(), &CoordinatorOptions::default())?;

    for scheme in ["bearer", "BEARER", "Bearer"] {
        let auth = format!("{scheme} {}", c.admin_token);
        let (status, body) = ocore_tests::http_call(
            &c.url,
            "GET",
            "/api/tokens",
            None,
            None,
            &[("Authorization", auth.as_str())],
        )?;
        ensure!(status == 200, "{scheme}: {status} {body}");
        // Every token time has exactly three fraction digits, as deployment times do.
        let created = body["tokens"][0]["createdAt"].as_str().unwrap_or_default();
        ensure!(
            created.len() == 24 && created.ends_with('Z') && created.as_bytes()[19] == b'.',
            "createdAt {created:?}"
        );
    }

    c.cli_json(&[
        "project",
        "create",
        "shop",
        "--repository",
        "https://example.com/shop.git",
    ])?;
    c.cli_json(&["environment", "create", "shop-prod", "--project", "shop"])?;

    let negative = c.cli(&["deploy", "list", "--project", "shop", "--limit", "-1"]);
    let err = text(&negative.stderr);
    ensure!(
        negative.status.code() == Some(64) && err.contains("-1") && err.contains("1..=100"),
        "--limit -1: {negative:?}"
    );
    ensure!(!err.contains("unexpected argument"), "{err}");

    let anonymous = c.cli_as("", &["deploy", "list", "--project", "shop"]);
    ensure!(
        anonymous.status.code() == Some(64) && text(&anonymous.stderr).contains("OCORE_TOKEN"),
        "no token: {anonymous:?}"
    );

    let tag = c.cli(&[
        "mapping",
        "set",
        "--project",
        "shop",
        "--tag",
        "v1.0.0",
        "--environment",
        "shop-prod",
    ]);
    ensure!(tag.status.success(), "{tag:?}");
    ensure!(
        text(&tag.stdout)
            .starts_with("tag v1.0.0 of project shop deploys to environment shop-prod"),
        "{}",
        text(&tag.stdout)
    );
    let both = c.cli(&[
        "mapping",
        "set",
        "--project",
        "shop",
        "--tag",
        "v1",
        "--branch",
        "main",
        "--environment",
        "shop-prod",
    ]);
    ensure!(
        both.status.code() == Some(64),
        "--tag with --branch: {both:?}"
    );

    // A signed delivery that cannot be read is rejected and kept; its replay is rejected
    // again, and the CLI says so with exit 1.
    let conf = c.cli_json(&["webhook", "reconfigure", "--project", "shop"])?;
    let secret = conf["secret"].as_str().context("secret")?;
    let body = br#"{"ref": 7}"#;
    let signature = github_signature(secret, body);
    let (status, answer) = ocore_tests::http_call(
        &c.url,
        "POST",
        "/api/webhooks/github/shop",
        None,
        Some(("application/json", std::str::from_utf8(body)?)),
        &[
            ("X-GitHub-Event", "push"),
            ("X-GitHub-Delivery", "bad-1"),
            ("X-Hub-Signature-256", signature.as_str()),
        ],
    )?;
    ensure!(status == 400, "{status} {answer}");
    let log = c.cli_json(&["webhook", "deliveries", "--project", "shop"])?;
    let entry = log["deliveries"][0]["id"].as_str().context("entry")?;
    ensure!(log["deliveries"][0]["redeliverable"] == true, "{log}");
    let replay = c.cli(&[
        "webhook",
        "redeliver",
        "--project",
        "shop",
        "--delivery",
        entry,
    ]);
    ensure!(
        replay.status.code() == Some(1) && text(&replay.stderr).contains("rejected"),
        "redeliver of a rejected delivery: {replay:?}"
    );
    Ok(())
}
