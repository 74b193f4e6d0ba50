//! The browser dashboard in a real headless Chromium, against a real coordinator, agent and
//! instance: sign in through the form; deploy from the Deploy form (its "at least one
//! reference" rule shown inline) and watch the steps complete live, across a coordinator
//! crash that the page's event stream survives without losing or doubling a line; open the
//! history; roll back through the confirmation that says what is restored (the API's own
//! dry run); pin a snapshot, take one by hand and restore it from its row; see the agent
//! connected. A view-only token sees no Deploy, Cancel or Rollback button (and the API
//! refuses it anyway). The webhook pages get a test of their own, against real signed
//! deliveries: the setup on the project page (URLs, secret state, Reconfigure showing the
//! new secret once) and the delivery log (outcome, reason, paging, Redeliver).
//! Screenshots of the main pages are saved in `target/test-artifacts/dashboard/`.

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use ocore_tests::browser::Browser;
use ocore_tests::fixture::{AddonsRepo, Site, SiteOptions};
use ocore_tests::{configure_project_on, project_token, read_sse, wait_deployment, Coordinator};
use serde_json::json;

const LONG: Duration = Duration::from_secs(120);

/// Makes the coordinator's next start bind the port it has now, so a page that is open
/// can reconnect to it after a restart.
fn keep_port_on_restart(c: &Coordinator) -> Result<()> {
    let address = c
        .url
        .strip_prefix("http://")
        .context("an http:// coordinator")?;
    let config = std::fs::read_to_string(&c.config_path)?;
    let pinned = config.replace(
        "listen = \"127.0.0.1:0\"",
        &format!("listen = \"{address}\""),
    );
    if pinned == config {
        bail!("coordinator.toml has no listen = \"127.0.0.1:0\" line to pin");
    }
    std::fs::write(&c.config_path, pinned)?;
    Ok(())
}

/// Each step's output as its `log` events tell it, one line each.
fn logged_output(c: &Coordinator, id: &str) -> Result<BTreeMap<String, String>> {
    let (status, events) = read_sse(
        &c.url,
        &format!("/api/projects/shop/deployments/{id}/events"),
        &c.admin_token,
        None,
    )?;
    assert_eq!(status, 200);
    let mut out = BTreeMap::<String, String>::new();
    for (_, kind, data) in &events {
        if kind == "log" {
            let step = data["step"].as_str().context("step")?.to_owned();
            let text = out.entry(step).or_default();
            text.push_str(data["line"].as_str().context("line")?);
            text.push('\n');
        }
    }
    Ok(out)
}

/// The statuses of the steps the page shows, by name.
fn page_steps(browser: &Browser) -> Result<BTreeMap<String, String>> {
    let v = browser.js(
        "return [...document.querySelectorAll('#steps .step')].map(e => [e.dataset.step, e.dataset.status]);",
        vec![],
    )?;
    Ok(v.as_array()
        .into_iter()
        .flatten()
        .filter_map(|p| Some((p[0].as_str()?.to_owned(), p[1].as_str()?.to_owned())))
        .collect())
}

/// Waits until the page shows the deployment finished with `status` and every step done.
fn wait_page_finished(browser: &Browser, status: &str) -> Result<()> {
    browser.wait_js(
        &format!("the page to show the deployment {status} with every step done"),
        "const s = document.querySelector('#status [data-status]'); \
         const steps = [...document.querySelectorAll('#steps .step')]; \
         return s && s.dataset.status === arguments[0] && steps.length > 0 && \
           steps.every(e => ['completed', 'skipped'].includes(e.dataset.status));",
        vec![json!(status)],
        LONG,
    )?;
    Ok(())
}

fn check_headers(url: &str) -> Result<()> {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .into();
    for (path, kind) in [
        ("/", "text/html; charset=utf-8"),
        ("/assets/app.js", "text/javascript; charset=utf-8"),
        ("/assets/style.css", "text/css; charset=utf-8"),
    ] {
        let r = agent.get(format!("{url}{path}")).call()?;
        assert_eq!(r.status().as_u16(), 200, "{path}");
        let header = |name: &str| {
            r.headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_owned()
        };
        assert_eq!(header("content-type"), kind, "{path}");
        assert_eq!(header("x-content-type-options"), "nosniff", "{path}");
        let csp = header("content-security-policy");
        assert!(
            csp.contains("script-src 'self'") && !csp.contains("unsafe-inline"),
            "{path}: {csp}"
        );
    }
    // The API keeps its JSON errors; other unknown paths are plain 404s.
    let (status, body) = ocore_tests::http_call(url, "GET", "/api/no-such-thing", None, None, &[])?;
    assert_eq!(status, 404);
    assert_eq!(body["error"]["code"], "not_found", "{body}");
    let (status, _) = ocore_tests::http_call(url, "GET", "/assets/missing.js", None, None, &[])?;
    assert_eq!(status, 404);
    Ok(())
}

fn sign_in(browser: &Browser, token: &str) -> Result<()> {
    browser.wait("the sign-in form", "#signin")?;
    browser.fill("#token", token)?;
    browser.click("#signin button[type=submit]")?;
    browser.wait("the projects page", "#projects [data-project='shop']")
}

#[test]
fn deploy_watch_live_and_roll_back_in_a_real_browser() -> Result<()> {
    let started = std::time::Instant::now();
    // First, so a machine without Chromium fails at once, saying what to install.
    let mut browser = Browser::start("dashboard")?;
    let dir = tempfile::tempdir()?;
    let mut site = Site::start(dir.path(), &SiteOptions::default())?;
    let repo = AddonsRepo::init(dir.path())?;
    repo.module("shop_base", "1.0", &["base"], "A = 1\n")?;
    let v1 = repo.commit("first version")?;
    let c = &site.coordinator;
    configure_project_on(c, "shop", &repo.url(), &site.agent.name, &site.instance)?;
    // A first deployment from the CLI: the rollback below returns to its image.
    let first = c.cli(&[
        "deploy",
        "--project",
        "shop",
        "--branch",
        "main",
        "--follow",
    ]);
    ocore_tests::ensure_success("the first deploy", &first)?;
    repo.write("shop_base/models.py", "A = 2\n")?;
    let v2 = repo.commit("second version")?;
    check_headers(&c.url)?;

    // Sign in: a wrong token is refused in the form, the right one kept in the tab only.
    browser.goto(&c.url)?;
    browser.wait("the sign-in form", "#signin")?;
    browser.screenshot("01-sign-in")?;
    browser.fill("#token", "not-a-token")?;
    browser.click("#signin button[type=submit]")?;
    browser.wait_text("#token-error", "refused")?;
    sign_in(&browser, &c.admin_token)?;
    assert!(!browser.url()?.contains(&c.admin_token));
    let kept = browser.js("return sessionStorage.getItem('ocore.token');", vec![])?;
    assert_eq!(kept, json!(c.admin_token), "the token is kept for the tab");
    let stored = browser.js(
        "return localStorage.length + document.cookie.length;",
        vec![],
    )?;
    assert_eq!(stored, json!(0), "and nowhere else");
    browser.screenshot("02-projects")?;

    // The Deploy form: the reference rule inline, then a deploy of branch main.
    browser.click("#projects [data-project='shop'] h2 a")?;
    browser.wait("the history", "#history tr[data-deployment]")?;
    browser.click("#deploy")?;
    browser.wait("the deploy form", "#deploy-form")?;
    browser.click("#start-deployment")?;
    browser.wait_text(
        "#reference-error",
        "Give at least one of branch, commit SHA or tag.",
    )?;
    browser.fill("#commitSha", "not-hex")?;
    browser.wait_text("#commitSha-error", "4 to 40 hexadecimal")?;
    browser.screenshot("03-deploy-form-rule")?;
    browser.fill("#commitSha", "")?;
    browser.fill("#branch", "main")?;
    browser.click("#start-deployment")?;
    browser.wait("the deployment page", "#steps .step")?;
    let url = browser.url()?;
    let id = url
        .rsplit_once("/deployments/")
        .map(|(_, id)| id.to_owned())
        .context("deployment id in the URL")?;
    // A marker that a reload would lose: the page must update itself.
    browser.js("window.ocoreNoReload = true;", vec![])?;

    keep_port_on_restart(&site.coordinator)?;
    // The steps change on the page while it runs: the build is seen running live.
    browser.wait_js(
        "the page to show Build Image running",
        "const e = document.querySelector('[data-step=\"Build Image\"]'); \
         return e && e.dataset.status === 'running';",
        vec![],
        LONG,
    )?;
    let midway = page_steps(&browser)?;
    assert_eq!(
        midway.get("Health Check").map(String::as_str),
        Some("pending"),
        "{midway:?}"
    );
    // The coordinator dies mid-build (right away: the build takes seconds) and comes back
    // on the same port: the page resumes the stream with Last-Event-ID.
    site.coordinator.crash_and_restart()?;
    let c = &site.coordinator;
    browser.screenshot("04-deployment-after-the-crash")?;
    wait_page_finished(&browser, "succeeded")?;
    assert_eq!(
        browser.js("return window.ocoreNoReload;", vec![])?,
        json!(true)
    );
    let reconnects = browser.js(
        "return Number(document.getElementById('live').dataset.reconnects);",
        vec![],
    )?;
    assert!(
        reconnects.as_u64().unwrap_or(0) >= 1,
        "the page reconnected after the crash: {reconnects}"
    );
    // Every output line on the page once, in order, as the event log has it.
    let expected = logged_output(c, &id)?;
    assert!(
        expected
            .get("Build Image")
            .is_some_and(|t| t.lines().count() > 3),
        "{expected:?}"
    );
    for (step, text) in &expected {
        let shown = browser.js(
            "const e = document.querySelector(`[data-step=\"${arguments[0]}\"] pre`); return e ? e.textContent : null;",
            vec![json!(step)],
        )?;
        assert_eq!(shown.as_str(), Some(text.as_str()), "output of {step}");
    }
    let d = wait_deployment(c, "shop", &id, &["succeeded"], LONG)?;
    assert_eq!(d["commitSha"], json!(v2));
    browser.wait_text("#deployment-facts", &v2)?;
    browser.screenshot("05-deployment-succeeded")?;

    // The history: both deployments, newest first, with their facts.
    browser.goto(&format!("{}/#/projects/shop", c.url))?;
    browser.wait(
        "two rows of history",
        "#history tr[data-deployment]:nth-child(2)",
    )?;
    assert_eq!(browser.text("#history-range")?, "Showing 1–2 of 2");
    let newest = browser.text("#history tbody tr:first-child")?;
    for fact in [
        "succeeded",
        "manual",
        "main",
        &v2[..10],
        "second version",
        "Test Author",
    ] {
        assert!(newest.contains(fact), "{fact} in {newest:?}");
    }
    browser.screenshot("06-history")?;

    // Roll back the second deployment: the confirmation names the snapshot and what code
    // comes back.
    browser.click(&format!("a.open[data-deployment='{id}']"))?;
    browser.wait("the Rollback button", "#rollback")?;
    browser.click("#rollback")?;
    let snapshot = d["snapshotId"].as_str().context("snapshotId")?;
    browser.wait_text("#rollback-restores", snapshot)?;
    let restores = browser.wait_text("#rollback-restores", &v1[..10])?;
    assert!(restores.contains("first version"), "{restores}");
    browser.screenshot("07-rollback-confirmation")?;
    browser.click("#rollback-dialog-confirm")?;
    browser.wait_js(
        "the page of the rollback",
        "return !location.hash.endsWith(arguments[0]) && document.querySelector('#steps') !== null \
           && location.hash.includes('/deployments/');",
        vec![json!(id)],
        LONG,
    )?;
    wait_page_finished(&browser, "succeeded")?;
    browser.wait_text("#deployment-facts", "rollback of")?;
    let list = c.get_ok("/api/projects/shop/deployments?limit=1")?;
    let r = &list["deployments"][0];
    assert_eq!(r["triggerType"], "rollback");
    assert_eq!(r["rollbackOf"], json!(id));
    assert_eq!(r["status"], "succeeded");
    assert_eq!(r["commitSha"], json!(v1));
    browser.screenshot("08-rollback-succeeded")?;

    // The environment: which colour serves, the snapshots, pin one.
    browser.goto(&format!("{}/#/environments/shop-prod", c.url))?;
    browser.wait(
        "the snapshot list",
        &format!("#snapshots tr[data-snapshot='{snapshot}']"),
    )?;
    browser.wait("the serving colour", "#instance-color [data-color]")?;
    browser.click(&format!(
        "button[data-action='pin'][data-snapshot='{snapshot}']"
    ))?;
    browser.wait(
        "the snapshot pinned",
        &format!("tr[data-snapshot='{snapshot}'][data-pinned='true']"),
    )?;
    let shown = c.get_ok(&format!("/api/environments/shop-prod/snapshots/{snapshot}"))?;
    assert_eq!(shown["pinned"], true, "{shown}");
    // A size estimate, a snapshot taken by hand, and retention, from the page.
    browser.click("#estimate-snapshot")?;
    browser.wait_text("#estimate", "Estimated snapshot size")?;
    browser.click("#take-snapshot")?;
    browser.wait_js(
        "the manual snapshot to be ready",
        "return document.querySelector(\"#snapshots tr[data-kind='manual'][data-state='ready']\") !== null;",
        vec![],
        LONG,
    )?;
    browser.fill("#keep-last", "5")?;
    browser.fill("#keep-days", "0")?;
    browser.click("#save-retention")?;
    browser.wait_text("#retention-result", "Saved and applied")?;
    let settings = c.get_ok("/api/environments/shop-prod/snapshot-settings")?;
    assert_eq!(
        (settings["keepLast"].clone(), settings["keepDays"].clone()),
        (json!(5), json!(0))
    );
    browser.screenshot("09-environment")?;

    // Restore the manual snapshot from its row: the confirmation shows the coordinator's
    // plan (the image serving when it was taken: the rollback's, so v1), then it runs.
    let manual = browser.js(
        "return document.querySelector(\"#snapshots tr[data-kind='manual'][data-state='ready']\").dataset.snapshot;",
        vec![],
    )?;
    let manual = manual.as_str().context("manual snapshot id")?.to_owned();
    browser.click(&format!(
        "button[data-action='restore'][data-snapshot='{manual}']"
    ))?;
    let plan = browser.wait_text("#restore-plan", &v1[..10])?;
    assert!(plan.contains(&manual), "{plan}");
    assert_eq!(
        browser.js(
            "return document.getElementById('restore-plan').dataset.imageSource;",
            vec![]
        )?,
        json!("snapshot-time")
    );
    browser.screenshot("09a-restore-confirmation")?;
    browser.click("#restore-dialog-confirm")?;
    browser.wait("the page of the restore", "#steps")?;
    wait_page_finished(&browser, "succeeded")?;
    browser.wait_text("#deployment-facts", "restore of snapshot")?;
    let list = c.get_ok("/api/projects/shop/deployments?limit=1")?;
    let r = &list["deployments"][0];
    assert_eq!(r["restoredSnapshotId"], json!(manual), "{r}");
    assert_eq!(r["status"], "succeeded", "{r}");
    assert_eq!(r["commitSha"], json!(v1), "{r}");
    browser.screenshot("09b-restore-succeeded")?;

    browser.goto(&format!("{}/#/agents", c.url))?;
    browser.wait(
        "web1 connected",
        "tr[data-agent='web1'][data-status='connected']",
    )?;
    browser.screenshot("10-agents")?;

    browser.goto(&format!("{}/#/projects/shop/webhooks", c.url))?;
    browser.wait("the delivery log", "#deliveries[data-state]")?;
    browser.screenshot("11-webhooks")?;

    // A phone-sized window.
    browser.resize(390, 844)?;
    browser.goto(&format!("{}/#/projects/shop/deployments/{id}", c.url))?;
    browser.wait("the deployment page", "#steps .step")?;
    browser.screenshot("12-phone-deployment")?;
    browser.goto(&format!("{}/#/projects/shop", c.url))?;
    browser.wait("the history", "#history tr[data-deployment]")?;
    browser.screenshot("13-phone-history")?;
    browser.resize(
        ocore_tests::browser::LAPTOP.0,
        ocore_tests::browser::LAPTOP.1,
    )?;

    // A view-only token sees the history and the steps, and no button to change anything.
    let viewer = project_token(c, "shop", &["view:deployments"])?;
    browser.click("#sign-out")?;
    sign_in(&browser, &viewer)?;
    browser.goto(&format!("{}/#/projects/shop", c.url))?;
    browser.wait("the history", "#history tr[data-deployment]")?;
    assert_eq!(browser.count("#deploy")?, 0, "no Deploy button");
    browser.wait("the reason there is none", "#no-deploy")?;
    browser.goto(&format!("{}/#/projects/shop/deployments/{id}", c.url))?;
    browser.wait("the deployment page", "#steps .step")?;
    browser.wait_text("#deployment-facts", &v2)?;
    assert_eq!(browser.count("#rollback")?, 0, "no Rollback button");
    assert_eq!(browser.count("#cancel")?, 0, "no Cancel button");
    browser.screenshot("14-view-only")?;
    // The API refuses the token anyway, from the page itself.
    let refused = browser.wait_js(
        "the API's answer to a view-only deploy",
        "return fetch('/api/projects/shop/deploy', {method: 'POST', \
           headers: {'Content-Type': 'application/json', Authorization: 'Bearer ' + sessionStorage.getItem('ocore.token')}, \
           body: JSON.stringify({branch: 'main'})}).then(r => r.status);",
        vec![],
        LONG,
    )?;
    assert_eq!(refused, json!(403));
    // The coordinator logged every request of the page, and no token.
    let log = c.daemon.log();
    assert!(log.contains("path=/api/me"), "requests are logged");
    assert!(!log.contains(&c.admin_token) && !log.contains(&viewer));
    eprintln!("dashboard test took {:?}", started.elapsed());
    Ok(())
}

/// The page's own Server-Sent Events parser (EventSource cannot send a bearer token, so
/// the dashboard parses the stream itself), fed in chunks that split lines, CRLFs and
/// fields, in the real browser.
#[test]
fn the_pages_event_stream_parser_survives_any_chunking() -> Result<()> {
    let browser = Browser::start("dashboard")?;
    let dir = tempfile::tempdir()?;
    let c = Coordinator::start(dir.path(), &ocore_tests::CoordinatorOptions::default())?;
    browser.goto(&c.url)?;
    browser.wait("the sign-in form", "#signin")?;
    let script = "return import('/assets/sse.js').then(({ SseParser }) => {
        const text = '\\ufeff: keep-alive\\r\\nid: 1\\r\\nevent: log\\r\\ndata: {\"a\":\\r\\n\\r\\n'
          + 'id: 2\\ndata: line one\\ndata:line two\\n\\n: comment\\n\\n'
          + 'id: 3\\revent: step\\rdata: x\\r\\r' + 'retry: 10\\n\\n' + 'id: 4\\ndata\\n\\n';
        const runs = [];
        for (const size of [1, 2, 3, 5, 7, 1000]) {
          const out = [];
          const p = new SseParser((e) => out.push(e));
          for (let i = 0; i < text.length; i += size) p.push(text.slice(i, i + size));
          runs.push(out);
        }
        return runs;
      });";
    let runs = browser.js(script, vec![])?;
    let expected = json!([
        {"id": "1", "event": "log", "data": "{\"a\":"},
        {"id": "2", "event": "message", "data": "line one\nline two"},
        {"id": "3", "event": "step", "data": "x"},
        {"id": "4", "event": "message", "data": ""},
    ]);
    for run in runs.as_array().context("runs")? {
        assert_eq!(run, &expected);
    }
    Ok(())
}

/// A GitHub delivery to the coordinator, signed with `secret` as GitHub signs
/// (`X-Hub-Signature-256` over the raw body); returns the HTTP status.
fn github_delivery(
    url: &str,
    secret: &str,
    event: &str,
    delivery: &str,
    body: &[u8],
) -> Result<u16> {
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, secret.as_bytes());
    let signature = format!("sha256={}", hex::encode(ring::hmac::sign(&key, body)));
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .into();
    let response = agent
        .post(format!("{url}/api/webhooks/github/shop"))
        .header("Content-Type", "application/json")
        .header("X-GitHub-Event", event)
        .header("X-GitHub-Delivery", delivery)
        .header("X-Hub-Signature-256", signature)
        .header("User-Agent", "GitHub-Hookshot/044aadd")
        .send(body)?;
    Ok(response.status().as_u16())
}

/// A fixture payload of `tests/fixtures/webhooks/`, as JSON.
fn webhook_fixture(name: &str) -> Result<serde_json::Value> {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures/webhooks")
        .join(name);
    Ok(serde_json::from_str(&std::fs::read_to_string(&path)?)?)
}

fn github_push(branch: &str, sha: &str) -> Result<Vec<u8>> {
    let mut v = webhook_fixture("github-push.json")?;
    v["ref"] = json!(format!("refs/heads/{branch}"));
    v["after"] = json!(sha);
    v["head_commit"]["id"] = json!(sha);
    v["commits"][0]["id"] = json!(sha);
    Ok(serde_json::to_vec(&v)?)
}

/// The webhook pages against the real webhook API and real signed deliveries (the agent
/// is registered but away, so a deployed push stays queued): the project page shows the
/// URLs and whether a secret is set, and Reconfigure shows the new secret once; the log
/// shows each delivery's outcome and reason, pages by 20, offers Redeliver only for kept
/// requests, and a Redeliver from the page adds a new entry.
#[test]
fn webhook_setup_and_deliveries_in_a_real_browser() -> Result<()> {
    let browser = Browser::start("dashboard")?;
    let dir = tempfile::tempdir()?;
    let c = Coordinator::start(dir.path(), &ocore_tests::CoordinatorOptions::default())?;
    c.cli_json(&["agent", "add", "web1", "--address", "127.0.0.1:9"])?;
    ocore_tests::configure_project(&c, "shop", "/srv/git/shop.git", "web1")?;

    browser.goto(&c.url)?;
    sign_in(&browser, &c.admin_token)?;
    browser.goto(&format!("{}/#/projects/shop", c.url))?;
    browser.wait("no secret yet", "#webhook-secret-state[data-set='false']")?;
    assert_eq!(
        browser.text("#webhook code[data-url='github']")?,
        format!("{}/api/webhooks/github/shop", c.url)
    );
    assert_eq!(
        browser.text("#webhook code[data-url='bitbucket']")?,
        format!("{}/api/webhooks/bitbucket/shop", c.url)
    );
    browser.click("#reconfigure-webhook")?;
    browser.wait("the confirmation", "#reconfigure-dialog-confirm")?;
    browser.click("#reconfigure-dialog-confirm")?;
    browser.wait("the new secret", "#webhook-secret")?;
    let secret = browser.text("#webhook-secret")?;
    assert!(secret.len() >= 32, "{secret:?}");
    browser.wait("the secret set", "#webhook-secret-state[data-set='true']")?;
    browser.screenshot("15-project-webhook-secret")?;
    let shown = c.get_ok("/api/projects/shop/webhooks")?;
    assert_eq!(shown["secretSet"], true, "{shown}");
    // Shown once: the page drawn again has the state, not the secret.
    browser.goto(&format!("{}/#/projects/shop/webhooks", c.url))?;
    browser.goto(&format!("{}/#/projects/shop", c.url))?;
    browser.wait("the secret set", "#webhook-secret-state[data-set='true']")?;
    assert_eq!(browser.count("#webhook-secret")?, 0);

    // 20 pings, then a push to the mapped branch, one to an unmapped branch, and one with
    // a bad signature: 23 entries, the last three on the first page.
    let ping = serde_json::to_vec(&webhook_fixture("github-ping.json")?)?;
    for i in 0..20 {
        let status = github_delivery(&c.url, &secret, "ping", &format!("ping-{i}"), &ping)?;
        assert_eq!(status, 200);
    }
    let sha = "0123456789abcdef0123456789abcdef01234567";
    let status = github_delivery(
        &c.url,
        &secret,
        "push",
        "push-main",
        &github_push("main", sha)?,
    )?;
    assert_eq!(status, 202, "a push to main queues a deployment");
    let status = github_delivery(
        &c.url,
        &secret,
        "push",
        "push-feature",
        &github_push("feature-x", sha)?,
    )?;
    assert_eq!(status, 200);
    let status = github_delivery(
        &c.url,
        "not-the-secret",
        "push",
        "push-forged",
        &github_push("main", sha)?,
    )?;
    assert_eq!(status, 401);
    let log = c.get_ok("/api/projects/shop/webhooks/deliveries?limit=3")?;
    let entry = |i: usize| -> Result<(String, String)> {
        let e = &log["deliveries"][i];
        Ok((
            e["id"].as_str().context("id")?.to_owned(),
            e["reason"].as_str().context("reason")?.to_owned(),
        ))
    };
    let (forged, forged_reason) = entry(0)?;
    let (ignored, ignored_reason) = entry(1)?;
    let (deployed, deployed_reason) = entry(2)?;
    let deployment = log["deliveries"][2]["deploymentId"]
        .as_str()
        .context("deploymentId")?
        .to_owned();

    browser.click("#webhook a[href$='/webhooks']")?;
    browser.wait("the delivery log", "#deliveries[data-state='loaded']")?;
    assert_eq!(browser.text("#deliveries-range")?, "Showing 1–20 of 23");
    assert_eq!(browser.count("#deliveries tbody tr")?, 20);
    let row = |id: &str| format!("#deliveries tr[data-delivery='{id}']");
    for (id, outcome, reason) in [
        (&forged, "rejected", &forged_reason),
        (&ignored, "ignored", &ignored_reason),
        (&deployed, "deployed", &deployed_reason),
    ] {
        let text = browser.wait_text(&row(id), reason)?;
        assert!(text.contains(outcome), "{outcome}: {text}");
        assert_eq!(
            browser.count(&format!("{}[data-outcome='{outcome}']", row(id)))?,
            1
        );
    }
    assert!(
        forged_reason.contains("X-Hub-Signature-256"),
        "{forged_reason}"
    );
    assert!(
        ignored_reason.contains("has no mapping"),
        "{ignored_reason}"
    );
    // The deployed entry links its deployment; the forged one was never kept.
    assert_eq!(
        browser.count(&format!(
            "{} a[href$='/deployments/{deployment}']",
            row(&deployed)
        ))?,
        1
    );
    assert_eq!(
        browser.count(&format!("button[data-redeliver='{forged}']"))?,
        0,
        "a rejected, unkept delivery cannot be redelivered"
    );
    assert!(browser.text(&row(&forged))?.contains("not kept"));
    browser.screenshot("16-webhook-deliveries")?;
    browser.click("#deliveries a[rel='next']")?;
    browser.wait_text("#deliveries-range", "Showing 21–23 of 23")?;
    assert_eq!(browser.count("#deliveries tbody tr")?, 3);
    browser.click("#deliveries a[rel='prev']")?;
    browser.wait_text("#deliveries-range", "Showing 1–20 of 23")?;

    // Redeliver the deployed push from the page: a new entry naming the one replayed.
    browser.wait(
        "the Redeliver button",
        &format!("button[data-redeliver='{deployed}']"),
    )?;
    browser.click(&format!("button[data-redeliver='{deployed}']"))?;
    browser.wait_text("#redeliver-result", "Delivered again: deployed")?;
    browser.wait_text("#deliveries-range", "of 24")?;
    let newest = c.get_ok("/api/projects/shop/webhooks/deliveries?limit=1")?;
    let replay = &newest["deliveries"][0];
    assert_eq!(replay["redeliveryOf"], json!(deployed), "{replay}");
    assert_eq!(replay["outcome"], "deployed", "{replay}");
    let replay_id = replay["id"].as_str().context("id")?;
    browser.wait(
        "the replay's row",
        &format!(
            "{}[data-outcome='deployed'] [data-redelivery-of='{deployed}']",
            row(replay_id)
        ),
    )?;
    browser.screenshot("17-webhook-redelivered")?;

    // A view-only token sees the setup and the log, and no button to change them.
    let viewer = project_token(&c, "shop", &["view:deployments"])?;
    browser.click("#sign-out")?;
    sign_in(&browser, &viewer)?;
    browser.goto(&format!("{}/#/projects/shop", c.url))?;
    browser.wait("the secret set", "#webhook-secret-state[data-set='true']")?;
    assert_eq!(browser.count("#reconfigure-webhook")?, 0);
    browser.goto(&format!("{}/#/projects/shop/webhooks", c.url))?;
    browser.wait("the delivery log", "#deliveries[data-state='loaded']")?;
    assert_eq!(browser.count("button[data-redeliver]")?, 0);
    Ok(())
}
