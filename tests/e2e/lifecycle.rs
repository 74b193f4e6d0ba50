//! A whole deployment life through the coordinator's API, on the real agent pipeline
//! (Docker, registry, nginx, PostgreSQL from `tests/env/setup.sh`): a first deploy, a code
//! change deployed with `--follow`, the record and event log that result, and a rollback
//! to the second deployment's pre-deploy snapshot.

use anyhow::{Context, Result};
use ocore_tests::fixture::{AddonsRepo, Site, SiteOptions};
use ocore_tests::{history, read_sse, wait_deployment};
use serde_json::Value;

const LONG: std::time::Duration = std::time::Duration::from_secs(300);

fn stdout(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn deploy_follow_and_roll_back_through_the_api() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let site = Site::start(dir.path(), &SiteOptions::default())?;
    let c = &site.coordinator;
    let repo = AddonsRepo::init(dir.path())?;
    repo.module("shop_base", "1.0", &["base"], "A = 1\n")?;
    let v1 = repo.commit("first version")?;
    site.configure_shop(&repo)?;

    let first = c.cli(&[
        "deploy",
        "--project",
        "shop",
        "--branch",
        "main",
        "--follow",
    ]);
    assert!(
        first.status.success(),
        "{}\n{}",
        stdout(&first),
        String::from_utf8_lossy(&first.stderr)
    );
    assert!(
        stdout(&first).contains("ok Build Image"),
        "{}",
        stdout(&first)
    );

    // Business data written while v1 serves: rows and filestore files, as Odoo keeps them
    // (files named by the sha1 of their content under <data_dir>/filestore/<db>/<ab>/).
    let db = &site.database;
    site.env.psql(
        db,
        "CREATE TABLE shop_order (id int PRIMARY KEY, note text); \
         INSERT INTO shop_order VALUES (1, 'kept'), (2, 'changed later');",
    )?;
    let store = site.data_dir.join("filestore").join(db);
    let kept = put_filestore_file(&store, b"an invoice PDF before v2")?;
    let replaced = put_filestore_file(&store, b"a picture that v2's era deletes")?;
    let before_v2 = filestore_sha1s(&store)?;

    repo.write("shop_base/models.py", "A = 2\n")?;
    let v2 = repo.commit("second version")?;
    let queued = c.cli_json(&["deploy", "--project", "shop", "--commit", &v2[..12]])?;
    let id = queued["id"].as_str().context("id")?.to_owned();
    // A reader attached while the deployment is queued follows it live to the end.
    let live = {
        let (url, token) = (c.url.clone(), c.admin_token.clone());
        let path = format!("/api/projects/shop/deployments/{id}/events");
        std::thread::spawn(move || read_sse(&url, &path, &token, None))
    };
    let d = wait_deployment(c, "shop", &id, &["succeeded", "failed", "cancelled"], LONG)?;
    assert_eq!(d["status"], "succeeded", "{d}");
    assert_eq!(
        d["commitSha"],
        Value::String(v2.clone()),
        "the prefix resolves to the full SHA"
    );
    assert_eq!(
        d["commitMessage"].as_str().map(str::trim),
        Some("second version")
    );
    assert!(d["commitAuthor"].is_string());
    assert!(d["imageRef"].is_string(), "{d}");
    assert!(
        matches!(d["activeColor"].as_str(), Some("blue" | "green")),
        "{d}"
    );
    for step in d["steps"].as_array().context("steps")? {
        assert!(
            matches!(step["status"].as_str(), Some("completed" | "skipped")),
            "{step}"
        );
        assert!(step["durationMs"].is_u64(), "{step}");
    }
    let (_, events) = read_sse(
        &c.url,
        &format!("/api/projects/shop/deployments/{id}/events"),
        &c.admin_token,
        None,
    )?;
    let seqs: Vec<u64> = events.iter().map(|e| e.0).collect();
    assert_eq!(seqs, (1..=seqs.len() as u64).collect::<Vec<_>>());
    let (status, followed) = live
        .join()
        .map_err(|_| anyhow::anyhow!("live reader panicked"))??;
    assert_eq!(status, 200);
    assert_eq!(
        followed, events,
        "the live reader saw the same log as a replay"
    );
    assert!(
        events.iter().any(|e| e.1 == "log"),
        "build output is streamed"
    );
    assert_eq!(
        events.last().map(|e| e.2["status"].clone()),
        Some(Value::from("succeeded"))
    );
    // Roll back the second deployment: its snapshot, and the first deployment's image.
    let snapshot_step = &d["steps"][0];
    assert_eq!(snapshot_step["name"], "Pre-deploy Snapshot");
    assert_eq!(snapshot_step["status"], "completed", "{d}");
    let snapshot = d["snapshotId"]
        .as_str()
        .context("snapshotId of a completed snapshot step")?;
    let listed = c.cli_json(&["snapshot", "list", "--environment", "shop-prod"])?;
    assert!(listed.to_string().contains(snapshot), "{listed}");
    // After v2: rows change and go, a new one arrives; a file goes and another arrives.
    site.env.psql(
        db,
        "UPDATE shop_order SET note = 'edited under v2' WHERE id = 2; \
         DELETE FROM shop_order WHERE id = 1; INSERT INTO shop_order VALUES (3, 'new under v2');",
    )?;
    std::fs::remove_file(&replaced)?;
    put_filestore_file(&store, b"an attachment uploaded under v2")?;
    assert_ne!(filestore_sha1s(&store)?, before_v2);

    let rollback = c.cli(&[
        "deploy",
        "rollback",
        "--deployment",
        &id,
        "--yes",
        "--follow",
    ]);
    assert!(
        rollback.status.success(),
        "{}\n{}",
        stdout(&rollback),
        String::from_utf8_lossy(&rollback.stderr)
    );
    let list = c.cli_json(&["deploy", "list", "--project", "shop", "--limit", "1"])?;
    let r = &list["deployments"][0];
    assert_eq!(r["triggerType"], "rollback");
    assert_eq!(r["rollbackOf"], Value::String(id));
    assert_eq!(r["status"], "succeeded");
    assert_eq!(r["commitSha"], Value::String(v1.clone()));
    // The database rows and every filestore file are those of v2's pre-deploy snapshot,
    // and v1's image serves again.
    assert_eq!(
        site.env
            .psql(db, "SELECT id || ':' || note FROM shop_order ORDER BY id")?,
        "1:kept\n2:changed later"
    );
    assert_eq!(filestore_sha1s(&store)?, before_v2);
    assert!(kept.exists() && replaced.exists());
    let (status, body, color) = site.public_page()?;
    assert_eq!(status, 200);
    assert!(body.contains(&v1[..12]), "v1 serves again: {body}");
    let detail = c.get_ok(&format!(
        "/api/projects/shop/deployments/{}",
        r["id"].as_str().context("id")?
    ))?;
    assert_eq!(
        detail["activeColor"].as_str(),
        Some(color.as_str()),
        "activeColor names the colour nginx serves: {detail}"
    );
    Ok(())
}

/// Writes `content` into an Odoo filestore the way Odoo does (`<sha1[..2]>/<sha1>`).
fn put_filestore_file(store: &std::path::Path, content: &[u8]) -> Result<std::path::PathBuf> {
    use sha1::Digest as _;
    let sha = hex::encode(sha1::Sha1::digest(content));
    let path = store.join(&sha[..2]).join(&sha);
    std::fs::create_dir_all(path.parent().context("parent")?)?;
    std::fs::write(&path, content)?;
    Ok(path)
}

/// Every file of a filestore, relative path → sha1 of its content.
fn filestore_sha1s(store: &std::path::Path) -> Result<std::collections::BTreeMap<String, String>> {
    use sha1::Digest as _;
    let mut files = std::collections::BTreeMap::new();
    let mut stack = vec![store.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir)? {
            let path = entry?.path();
            if path.is_dir() {
                stack.push(path);
            } else {
                let rel = path.strip_prefix(store)?.display().to_string();
                files.insert(rel, hex::encode(sha1::Sha1::digest(std::fs::read(&path)?)));
            }
        }
    }
    Ok(files)
}
/// Waits until the deployment's "Build Image" step runs (it takes seconds).
fn wait_building(c: &ocore_tests::Coordinator, id: &str) -> Result<Value> {
    ocore_tests::wait_for("the image build to start", LONG, || {
        c.get_ok(&format!("/api/projects/shop/deployments/{id}"))
            .ok()
            .filter(|d| {
                ocore_tests::step_status(d, "Build Image") == Some("running")
                    || d["status"] != "running" && d["status"] != "queued"
            })
    })
}

/// The coordinator is killed in the middle of a build: after its restart it re-attaches
/// to the agent's stream, and the deployment's history ends complete. Then a running
/// deployment is cancelled through the agent.
#[test]
fn a_coordinator_crash_mid_deploy_loses_nothing_and_running_deploys_cancel() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let mut site = Site::start(dir.path(), &SiteOptions::default())?;
    let repo = AddonsRepo::init(dir.path())?;
    repo.module("shop_base", "1.0", &["base"], "A = 1\n")?;
    repo.commit("first version")?;
    site.configure_shop(&repo)?;

    let d = site
        .coordinator
        .cli_json(&["deploy", "--project", "shop", "--branch", "main"])?;
    let id = d["id"].as_str().context("id")?.to_owned();
    let before = wait_building(&site.coordinator, &id)?;
    assert_eq!(
        before["status"], "running",
        "killed mid-deployment: {before}"
    );
    site.coordinator.crash_and_restart()?;
    let c = &site.coordinator;
    let after = wait_deployment(c, "shop", &id, &["succeeded", "failed"], LONG)?;
    assert_eq!(after["status"], "succeeded", "{after}");
    assert_eq!(
        ocore_tests::step_status(&after, "Health Check"),
        Some("completed")
    );
    // Complete: every step ended and timed, and the log is exactly what the agent
    // journaled (same events, dense from 1, one finished), none lost across the crash.
    history::assert_record_complete(&after)?;
    let events = history::coordinator_events(&site, "shop", &id)?;
    history::assert_same_history(&events, &history::agent_events(&site, &id)?)?;

    // Cancel while the image builds: the agent stops it and sends the final event.
    repo.write("shop_base/models.py", "A = 2\n")?;
    repo.commit("second version")?;
    let d = c.cli_json(&["deploy", "--project", "shop", "--branch", "main"])?;
    let id = d["id"].as_str().context("id")?.to_owned();
    let building = wait_building(c, &id)?;
    assert_eq!(building["status"], "running", "{building}");
    let (status, answer) = c.api(
        "POST",
        &format!("/api/projects/shop/deployments/{id}/cancel"),
        Some(&c.admin_token),
        Some(&serde_json::json!({})),
    )?;
    assert!(status == 202 || status == 200, "{status} {answer}");
    let done = wait_deployment(c, "shop", &id, &["cancelled", "failed", "succeeded"], LONG)?;
    assert_eq!(done["status"], "cancelled", "{done}");
    let (_, events) = read_sse(
        &c.url,
        &format!("/api/projects/shop/deployments/{id}/events"),
        &c.admin_token,
        None,
    )?;
    let last = events.last().context("events")?;
    assert_eq!(last.2["status"], "cancelled");
    assert_eq!(last.2["byCoordinator"], false, "the agent ended it");
    Ok(())
}

/// Snapshots through the coordinator, on the agent's real snapshot store: estimate, take
/// by hand, list, pin and unpin, retention settings applied on the agent, delete.
#[test]
fn snapshots_are_managed_through_the_coordinator() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let site = Site::start(dir.path(), &SiteOptions::default())?;
    let repo = AddonsRepo::init(dir.path())?;
    repo.module("shop_base", "1.0", &["base"], "A = 1\n")?;
    repo.commit("first version")?;
    site.configure_shop(&repo)?;
    let c = &site.coordinator;
    // A first deployment starts the instance, which creates its database.
    let first = c.cli(&[
        "deploy",
        "--project",
        "shop",
        "--branch",
        "main",
        "--follow",
    ]);
    assert!(first.status.success(), "{}", stdout(&first));

    let estimate = c.cli_json(&["snapshot", "estimate", "--environment", "shop-prod"])?;
    assert!(estimate["estimatedBytes"].is_u64(), "{estimate}");
    let taken = c.cli_json(&["snapshot", "create", "--environment", "shop-prod", "--wait"])?;
    assert_eq!(taken["state"], "ready", "{taken}");
    assert_eq!(taken["kind"], "manual");
    let id = taken["id"].as_str().context("id")?.to_owned();
    let listed = c.cli_json(&["snapshot", "list", "--environment", "shop-prod"])?;
    assert_eq!(listed["source"], "agent", "{listed}");
    assert!(listed["snapshots"]
        .as_array()
        .into_iter()
        .flatten()
        .any(|s| s["id"] == id.as_str()));
    let pinned = c.cli_json(&["snapshot", "pin", &id, "--environment", "shop-prod"])?;
    assert_eq!(pinned["pinned"], true);
    let second = c.cli_json(&["snapshot", "create", "--environment", "shop-prod", "--wait"])?;
    let second_id = second["id"].as_str().context("id")?.to_owned();
    // Keep one: the pinned snapshot stays whatever the policy says.
    let settings = c.cli_json(&[
        "environment",
        "settings",
        "shop-prod",
        "--keep-last",
        "1",
        "--keep-days",
        "0",
    ])?;
    assert_eq!(settings["keepLast"], 1);
    assert_eq!(settings["retention"]["applied"], true, "{settings}");
    let unpinned = c.cli_json(&["snapshot", "unpin", &id, "--environment", "shop-prod"])?;
    assert_eq!(unpinned["pinned"], false);
    let deleted = c.cli_json(&[
        "snapshot",
        "delete",
        &second_id,
        "--environment",
        "shop-prod",
    ])?;
    assert!(deleted["freedBytes"].is_u64(), "{deleted}");
    let listed = c.cli_json(&["snapshot", "list", "--environment", "shop-prod"])?;
    assert!(
        !listed.to_string().contains(&second_id),
        "a deleted snapshot is not listed: {listed}"
    );
    let (status, _) = c.api(
        "POST",
        "/api/environments/shop-prod/snapshots/ghost/pin",
        Some(&c.admin_token),
        Some(&serde_json::json!({})),
    )?;
    assert_eq!(status, 404, "the agent's not-found stays a 404");
    Ok(())
}
