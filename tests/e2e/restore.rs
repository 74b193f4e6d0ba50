//! Restoring any snapshot (`POST …/snapshots/{id}/restore`, `ocore snapshot restore`) on
//! the real pipeline, with one coordinator and one agent holding two instances: a manual
//! snapshot comes back with its rows, every filestore file and the image that served when
//! it was taken; a snapshot exported from production with the CLI and imported into
//! staging is refused while staging has no image, then restored there keeping the image
//! staging serves, and the next deploy updates exactly the modules whose code differs
//! from the checksums the restored database holds.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Command, Output};

use anyhow::{bail, Context, Result};
use ocore_tests::fixture::{http_get, AddonsRepo, Site, SiteOptions};
use ocore_tests::{step_status, wait_deployment};
use serde_json::{json, Value};

const LONG: std::time::Duration = std::time::Duration::from_secs(300);

fn text(o: &Output) -> String {
    format!(
        "{}\n{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

fn ok(what: &str, o: &Output) -> Result<String> {
    if !o.status.success() {
        bail!("{what} exited {:?}:\n{}", o.status.code(), text(o));
    }
    Ok(String::from_utf8_lossy(&o.stdout).into_owned())
}

/// Every file under `root` (relative path → sha1 of its content).
fn sha1_tree(root: &Path) -> Result<BTreeMap<String, String>> {
    fn walk(root: &Path, dir: &Path, out: &mut BTreeMap<String, String>) -> Result<()> {
        for entry in std::fs::read_dir(dir).with_context(|| dir.display().to_string())? {
            let path = entry?.path();
            if path.is_dir() {
                walk(root, &path, out)?;
            } else {
                let digest = ring::digest::digest(
                    &ring::digest::SHA1_FOR_LEGACY_USE_ONLY,
                    &std::fs::read(&path)?,
                );
                let rel = path.strip_prefix(root)?.to_string_lossy().into_owned();
                out.insert(rel, hex::encode(digest.as_ref()));
            }
        }
        Ok(())
    }
    let mut out = BTreeMap::new();
    walk(root, root, &mut out)?;
    Ok(out)
}

/// The commit and colour the instance's public port serves, and that colour's image.
fn serving(port: u16, agent_instance: &str) -> Result<(String, String, String)> {
    let (status, body, color) = http_get(&format!("http://127.0.0.1:{port}/"))?;
    if status != 200 {
        bail!("port {port} answered {status}: {body}");
    }
    let commit = body
        .lines()
        .find_map(|l| l.trim().strip_prefix("commit "))
        .unwrap_or_default()
        .to_owned();
    let out = Command::new("docker")
        .args(["inspect", "--format", "{{.Config.Image}}"])
        .arg(format!("ocore-{agent_instance}-{color}"))
        .output()?;
    ocore_tests::ensure_success("docker inspect", &out)?;
    let image = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    Ok((commit, color, image))
}

/// Stores `content` as an attachment through the instance (file in the filestore, row in
/// `ir_attachment`), as Odoo does when a user uploads one.
fn attach(port: u16, database: &str, name: &str, content: &str) -> Result<()> {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .into();
    let mut r = agent
        .post(format!(
            "http://127.0.0.1:{port}/ocore-test/attachment?name={name}&db={database}"
        ))
        .header("Content-Type", "text/plain")
        .send(content)?;
    let status = r.status().as_u16();
    let body = r.body_mut().read_to_string()?;
    if status != 200 {
        bail!("attachment {name}: {status} {body}");
    }
    Ok(())
}

/// What the restore must bring back: the probe rows, the attachments and every file.
#[derive(Debug, PartialEq)]
struct DataState {
    rows: String,
    attachments: String,
    files: BTreeMap<String, String>,
}

fn data_state(site: &Site, database: &str, data_dir: &Path) -> Result<DataState> {
    Ok(DataState {
        rows: site
            .env
            .psql(database, "SELECT id, note FROM restore_probe ORDER BY id")?,
        attachments: site.env.psql(
            database,
            "SELECT name, store_fname, checksum FROM ir_attachment ORDER BY name",
        )?,
        files: sha1_tree(&data_dir.join("filestore").join(database))?,
    })
}

fn deploy(site: &Site, instance: &str) -> Result<Value> {
    let c = &site.coordinator;
    let queued = c.cli_json(&[
        "deploy",
        "--project",
        "shop",
        "--branch",
        "main",
        "--instance",
        instance,
    ])?;
    let id = queued["id"].as_str().context("id")?;
    let d = wait_deployment(c, "shop", id, &["succeeded", "failed", "cancelled"], LONG)?;
    if d["status"] != "succeeded" {
        bail!("deployment to {instance} did not succeed: {d}");
    }
    Ok(d)
}

fn restore_path(environment: &str, snapshot: &str) -> String {
    format!("/api/environments/{environment}/snapshots/{snapshot}/restore")
}

#[test]
fn manual_and_imported_snapshots_are_restored_with_the_image_of_their_time() -> Result<()> {
    let started = std::time::Instant::now();
    let dir = tempfile::tempdir()?;
    let site = Site::start(
        dir.path(),
        &SiteOptions {
            second_instance: true,
            ..Default::default()
        },
    )?;
    let staging = site.second.as_ref().context("second instance")?;
    let c = &site.coordinator;
    let repo = AddonsRepo::init(dir.path())?;
    repo.module("shop_base", "1.0", &["base"], "A = 1\n")?;
    repo.module("shop_extra", "1.0", &["base"], "E = 1\n")?;
    let v1 = repo.commit("first version")?;
    c.cli_json(&["project", "create", "shop", "--repository", &repo.url()])?;
    for (env, agent_instance) in [
        ("shop-prod", site.instance.as_str()),
        ("shop-staging", staging.instance.as_str()),
    ] {
        c.cli_json(&["environment", "create", env, "--project", "shop"])?;
        c.cli_json(&[
            "instance",
            "create",
            env,
            "--environment",
            env,
            "--agent",
            "web1",
            "--agent-instance",
            agent_instance,
        ])?;
    }

    // Production: v1 deployed, both modules installed (through Apps: no checksums), and
    // deployed again: they were installed from v1's code, so the database records v1's
    // checksums for them and nothing updates.
    let first = deploy(&site, "shop-prod")?;
    let image_v1 = first["imageRef"].as_str().context("imageRef")?.to_owned();
    site.install_modules(&image_v1, "shop_base,shop_extra")?;
    let second = deploy(&site, "shop-prod")?;
    assert_eq!(second["plan"]["modulesToUpdate"], json!([]), "{second}");
    let stored = site.env.psql(
        &site.database,
        "SELECT value FROM ir_config_parameter WHERE key = 'module_auto_update.installed_checksums'",
    )?;
    assert!(
        stored.contains("shop_base") && stored.contains("shop_extra"),
        "{stored}"
    );
    let image_at_snapshot = second["imageRef"].as_str().context("imageRef")?.to_owned();
    let second_id = second["id"].as_str().context("id")?.to_owned();

    // Data at the snapshot: probe rows, two attachments (rows and filestore files).
    let db = site.database.as_str();
    site.env.psql(
        db,
        "CREATE TABLE restore_probe (id int PRIMARY KEY, note text); \
         INSERT INTO restore_probe VALUES (1, 'one'), (2, 'two'), (3, 'three')",
    )?;
    attach(site.public_port, db, "alpha.txt", "alpha content")?;
    attach(site.public_port, db, "beta.txt", "beta content")?;
    let at_snapshot = data_state(&site, db, &site.data_dir)?;
    assert!(at_snapshot.files.len() >= 2, "{at_snapshot:?}");
    let taken = c.cli_json(&["snapshot", "create", "--environment", "shop-prod", "--wait"])?;
    assert_eq!(taken["state"], "ready", "{taken}");
    assert_eq!(taken["kind"], "manual");
    assert!(taken["importedAt"].is_null(), "{taken}");
    let snapshot = taken["id"].as_str().context("id")?.to_owned();

    // Then everything changes: rows, files (one added, one removed by hand), and the code.
    site.env.psql(
        db,
        "DELETE FROM restore_probe WHERE id = 2; UPDATE restore_probe SET note = 'changed' \
         WHERE id = 1; INSERT INTO restore_probe VALUES (4, 'four')",
    )?;
    attach(site.public_port, db, "gamma.txt", "gamma content")?;
    let filestore = site.data_dir.join("filestore").join(db);
    let removed = at_snapshot
        .files
        .keys()
        .find(|p| !p.starts_with("checklist"))
        .context("a filestore file")?;
    std::fs::remove_file(filestore.join(removed))?;
    repo.write("shop_base/models.py", "A = 2\n")?;
    let v2 = repo.commit("second version")?;
    let third = deploy(&site, "shop-prod")?;
    assert_eq!(third["plan"]["modulesToUpdate"], json!(["shop_base"]));
    assert_ne!(data_state(&site, db, &site.data_dir)?, at_snapshot);
    assert_eq!(serving(site.public_port, &site.instance)?.0, v2);

    // The plan: the snapshot, and the image that served when it was taken (deployment 2).
    let total = |c: &ocore_tests::Coordinator| -> Result<Value> {
        Ok(c.get_ok("/api/projects/shop/deployments?limit=1")?["total"].clone())
    };
    let history_before = total(c)?;
    let plan = c.cli_json(&[
        "snapshot",
        "restore",
        "--environment",
        "shop-prod",
        "--snapshot",
        &snapshot,
        "--dry-run",
    ])?;
    assert_eq!(plan["imageSource"], "snapshot-time", "{plan}");
    assert_eq!(
        plan["returnsTo"]["deploymentId"],
        json!(second_id),
        "{plan}"
    );
    assert_eq!(plan["returnsTo"]["imageRef"], json!(image_at_snapshot));
    assert_eq!(plan["returnsTo"]["commitSha"], json!(v1));
    assert_eq!(plan["snapshot"]["id"], json!(snapshot));
    let words = ok(
        "restore --dry-run",
        &c.cli(&[
            "snapshot",
            "restore",
            &snapshot,
            "--environment",
            "shop-prod",
            "--dry-run",
        ]),
    )?;
    assert!(
        words.contains(&format!("restore of snapshot {snapshot}"))
            && words.contains(&format!("returns to image {image_at_snapshot}")),
        "{words}"
    );
    assert_eq!(total(c)?, history_before, "a dry run queues nothing");
    // Without a terminal and without --yes, nothing happens.
    let refused = c.cli(&[
        "snapshot",
        "restore",
        &snapshot,
        "--environment",
        "shop-prod",
    ]);
    assert_eq!(refused.status.code(), Some(64), "{}", text(&refused));
    assert!(
        text(&refused).contains("refusing to restore"),
        "{}",
        text(&refused)
    );

    let restored = c.cli(&[
        "snapshot",
        "restore",
        &snapshot,
        "--environment",
        "shop-prod",
        "--yes",
        "--follow",
    ]);
    ok("snapshot restore --yes --follow", &restored)?;
    assert_eq!(
        data_state(&site, db, &site.data_dir)?,
        at_snapshot,
        "rows and every filestore file are those of the snapshot"
    );
    let (commit, _, image) = serving(site.public_port, &site.instance)?;
    assert_eq!((commit, image), (v1.clone(), image_at_snapshot.clone()));
    // The history shows the restore, with its steps.
    let list = c.get_ok("/api/projects/shop/deployments?limit=1")?;
    let r = &list["deployments"][0];
    let rid = r["id"].as_str().context("id")?;
    let r = c.get_ok(&format!("/api/projects/shop/deployments/{rid}"))?;
    assert_eq!(r["triggerType"], "rollback", "{r}");
    assert_eq!(r["status"], "succeeded", "{r}");
    assert_eq!(r["restoredSnapshotId"], json!(snapshot), "{r}");
    assert!(r["rollbackOf"].is_null(), "{r}");
    assert_eq!(r["commitSha"], json!(v1));
    assert_eq!(r["imageRef"], json!(image_at_snapshot));
    for step in [
        "Pre-deploy Snapshot",
        "Update Container",
        "Restore Snapshot",
        "Health Check",
    ] {
        assert_eq!(step_status(&r, step), Some("completed"), "{step}: {r}");
    }
    let shown = ok("deploy show", &c.cli(&["deploy", "show", rid]))?;
    assert!(
        shown.contains(&format!("restores:     snapshot {snapshot}")),
        "{shown}"
    );

    // Export the snapshot from production with the CLI and import it into staging.
    let archive = dir.path().join("prod.tar.zst");
    let archive_arg = archive.display().to_string();
    c.cli_json(&[
        "snapshot",
        "export",
        &snapshot,
        "--environment",
        "shop-prod",
        "--file",
        &archive_arg,
    ])?;
    let imported = c.cli_json(&[
        "snapshot",
        "import",
        "--environment",
        "shop-staging",
        "--file",
        &archive_arg,
    ])?;
    let imported_id = imported["id"].as_str().context("id")?.to_owned();
    assert!(imported["importedAt"].is_string(), "{imported}");
    assert_eq!(imported["originalId"], json!(snapshot), "{imported}");
    // Staging has never been deployed: no image to run the database with.
    let (status, refusal) = c.api(
        "POST",
        &restore_path("shop-staging", &imported_id),
        Some(&c.admin_token),
        Some(&json!({"dryRun": true})),
    )?;
    assert_eq!(status, 409, "{refusal}");
    assert_eq!(refusal["error"]["code"], "no_image", "{refusal}");
    let cli_refusal = c.cli(&[
        "snapshot",
        "restore",
        &imported_id,
        "--environment",
        "shop-staging",
        "--yes",
    ]);
    assert_eq!(cli_refusal.status.code(), Some(3), "{}", text(&cli_refusal));
    assert!(
        text(&cli_refusal).contains("has no image yet"),
        "{}",
        text(&cli_refusal)
    );
    // An unknown snapshot is a 404 (the body may be empty); a malformed body a 400.
    let (status, _) = c.api_raw(
        "POST",
        &restore_path("shop-staging", "0190a0a0-0000-7000-8000-000000000000"),
        Some(&c.admin_token),
        Some(("", "")),
    )?;
    assert_eq!(status, 404);
    let (status, _) = c.api(
        "POST",
        &restore_path("shop-staging", &imported_id),
        Some(&c.admin_token),
        Some(&json!({"dryRun": "yes"})),
    )?;
    assert_eq!(status, 400);

    let staged = deploy(&site, "shop-staging")?;
    let staging_image = staged["imageRef"].as_str().context("imageRef")?.to_owned();
    assert_eq!(staged["commitSha"], json!(v2));
    // An imported snapshot keeps the image serving now, and the plan says why and what
    // follows.
    let plan = c.cli_json(&[
        "snapshot",
        "restore",
        &imported_id,
        "--environment",
        "shop-staging",
        "--dry-run",
    ])?;
    assert_eq!(plan["imageSource"], "current", "{plan}");
    assert_eq!(
        plan["returnsTo"]["imageRef"],
        json!(staging_image),
        "{plan}"
    );
    let notes = plan["notes"].to_string();
    assert!(
        notes.contains("imported") && notes.contains("odoo -u"),
        "{notes}"
    );
    let restored = c.cli(&[
        "snapshot",
        "restore",
        &imported_id,
        "--environment",
        "shop-staging",
        "--yes",
        "--follow",
    ]);
    ok("restore of the imported snapshot", &restored)?;
    assert!(
        text(&restored).contains("keeps image"),
        "{}",
        text(&restored)
    );
    let in_staging = data_state(&site, &staging.database, &staging.data_dir)?;
    assert_eq!(
        in_staging, at_snapshot,
        "staging now holds production's rows and files as they were at the snapshot"
    );
    let (commit, _, image) = serving(staging.public_port, &staging.instance)?;
    assert_eq!((commit, image), (v2.clone(), staging_image));
    // The restored database carries v1's module checksums: the next deploy of v2 updates
    // shop_base, whose code differs, and not shop_extra, whose code is the same.
    let after = deploy(&site, "shop-staging")?;
    assert_eq!(
        after["plan"]["modulesToUpdate"],
        json!(["shop_base"]),
        "{after}"
    );
    assert_eq!(after["plan"]["maintenanceWindow"], true);
    eprintln!("restore test took {:?}", started.elapsed());
    Ok(())
}
