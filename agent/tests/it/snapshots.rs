//! Snapshots against the real PostgreSQL and real files: round trip, incremental, corruption,
//! disk full, malicious archives, retention and pins, deletion, interruption, export and
//! import, and the maintenance window's safety copy.
//!
//! Each test makes its own database (unique name) and directories and removes them at the end.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use anyhow::{bail, ensure, Context, Result};
use ocore_agent::config::AgentConfig;
use ocore_agent::db::{quote_ident, Pg};
use ocore_agent::snapshot::{
    no_progress, CreateSnapshot, CreateSnapshotError, ExportFormat, ImportError, RestoreError,
    RetentionPolicy, SnapshotError, SnapshotKind, SnapshotMeta, SnapshotProgress, Snapshots,
};
use sha1::{Digest, Sha1};
use tokio_util::sync::CancellationToken;

const ENV_FILE: &str = "/var/lib/ocore-testenv/env";
const NOT_RUNNING: &str = "PostgreSQL is not running on 127.0.0.1:5432: run tests/env/setup.sh";
const ODOO_UID: u32 = 4242;

struct PgEnv {
    host: String,
    port: u16,
    user: String,
    password: String,
}

fn pg_env() -> Result<PgEnv> {
    let text = std::fs::read_to_string(ENV_FILE)
        .with_context(|| format!("{NOT_RUNNING} ({ENV_FILE} is missing)"))?;
    let mut vars = BTreeMap::new();
    for line in text.lines() {
        if let Some((k, v)) = line
            .trim()
            .strip_prefix("export ")
            .and_then(|l| l.split_once('='))
        {
            vars.insert(k.to_owned(), v.to_owned());
        }
    }
    let get = |k: &str| {
        vars.get(k)
            .cloned()
            .with_context(|| format!("{ENV_FILE} has no {k}"))
    };
    Ok(PgEnv {
        host: get("OCORE_TEST_PGHOST")?,
        port: get("OCORE_TEST_PGPORT")?.parse()?,
        user: get("OCORE_TEST_PGUSER")?,
        password: get("OCORE_TEST_PGPASSWORD")?,
    })
}

/// One test's world: a database, a data directory, a state directory, an agent component.
struct World {
    dir: tempfile::TempDir,
    db: String,
    pg: Pg,
    env: PgEnv,
    snaps: Arc<Snapshots>,
}

static COUNTER: AtomicU64 = AtomicU64::new(0);

impl World {
    async fn new(name: &str) -> Result<Self> {
        Self::with_state_dir(name, None).await
    }

    async fn with_state_dir(name: &str, state_dir: Option<&Path>) -> Result<Self> {
        let env = pg_env()?;
        let dir = tempfile::tempdir()?;
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let db = format!("ocore_it_{name}_{}_{n}", std::process::id());
        let pw = dir.path().join("pgpass");
        std::fs::write(&pw, &env.password)?;
        let state = state_dir.map_or_else(|| dir.path().join("state"), Path::to_owned);
        let text = format!(
            r#"
listen = "127.0.0.1:7700"
state_dir = "{state}"

[postgres]
host = "{host}"
port = {port}
user = "{user}"
password_file = "{pw}"

[[instance]]
id = "shop"
database = "{db}"
data_dir = "{data}"
base_image = "odoo:17.0"
public_port = 8069
blue = {{ http = 18069, gevent = 18072 }}
green = {{ http = 28069, gevent = 28072 }}
odoo_uid = {ODOO_UID}
odoo_gid = {ODOO_UID}
"#,
            state = state.display(),
            host = env.host,
            port = env.port,
            user = env.user,
            pw = pw.display(),
            data = dir.path().join("data").display(),
        );
        let config = AgentConfig::parse(&text, Path::new("agent.toml"))?;
        let pg = Pg::from_config(&config.postgres)?;
        let admin = pg.connect("postgres").await.context(NOT_RUNNING)?;
        admin
            .batch_execute(&format!("CREATE DATABASE {}", quote_ident(&db)))
            .await?;
        let snaps = Arc::new(Snapshots::new(Arc::new(config), pg.clone()));
        Ok(Self {
            dir,
            db,
            pg,
            env,
            snaps,
        })
    }

    fn filestore(&self) -> PathBuf {
        self.dir.path().join("data/filestore").join(&self.db)
    }

    fn store(&self) -> PathBuf {
        self.snaps.config.snapshots_dir().join("shop")
    }

    async fn client(&self) -> Result<tokio_postgres::Client> {
        Ok(self.pg.connect(&self.db).await?)
    }

    async fn snapshot(&self, id: &str) -> Result<SnapshotMeta> {
        Ok(self
            .snaps
            .create(
                "shop",
                CreateSnapshot {
                    id: id.to_owned(),
                    kind: SnapshotKind::Manual,
                    deployment_id: None,
                    commit_sha: None,
                },
                &no_progress,
                &CancellationToken::new(),
            )
            .await?)
    }

    async fn restore(&self, id: &str) -> Result<(), RestoreError> {
        self.snaps
            .restore("shop", id, &no_progress, &CancellationToken::new())
            .await
    }

    fn blob_count(&self) -> usize {
        walkdir::WalkDir::new(self.store().join("blobs"))
            .into_iter()
            .filter_map(Result::ok)
            .filter(|e| e.file_type().is_file())
            .count()
    }

    /// Drops the test database and any temporary database a failure left.
    async fn cleanup(self) -> Result<()> {
        let admin = self.pg.connect("postgres").await?;
        admin
            .batch_execute(&format!(
                "DROP DATABASE IF EXISTS {} WITH (FORCE)",
                quote_ident(&self.db)
            ))
            .await?;
        let report = self.snaps.recover().await;
        ensure!(report.is_ok(), "recovery at cleanup: {report:?}");
        Ok(())
    }
}

impl Drop for World {
    fn drop(&mut self) {
        // A failed test still drops its database (explicit cleanup is async).
        let _ = std::process::Command::new("psql")
            .env("PGPASSWORD", &self.env.password)
            .args([
                "-X",
                "-q",
                "-h",
                &self.env.host,
                "-p",
                &self.env.port.to_string(),
            ])
            .args(["-U", &self.env.user, "-d", "postgres", "-c"])
            .arg(format!(
                "DROP DATABASE IF EXISTS {} WITH (FORCE)",
                quote_ident(&self.db)
            ))
            .output();
    }
}

/// Deterministic bytes: compressible text or incompressible noise.
fn content(seed: u64, len: usize, noisy: bool) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|i| {
            if noisy {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            } else {
                b"odoo attachment line "[(i + seed as usize) % 21]
            }
        })
        .collect()
}

fn sha1_hex(data: &[u8]) -> String {
    hex::encode(Sha1::digest(data))
}

/// Writes `data` where Odoo would (`ab/<sha1>`, or the legacy `abc/<sha1>`); returns the path.
fn odoo_file(root: &Path, data: &[u8], legacy: bool) -> Result<String> {
    let sha = sha1_hex(data);
    let rel = if legacy {
        format!("{}/{sha}", &sha[..3])
    } else {
        format!("{}/{sha}", &sha[..2])
    };
    let path = root.join(&rel);
    std::fs::create_dir_all(path.parent().context("parent")?)?;
    std::fs::write(&path, data)?;
    Ok(rel)
}

/// path → sha1 of every file below `root`.
fn fs_map(root: &Path) -> Result<BTreeMap<String, String>> {
    let mut out = BTreeMap::new();
    for e in walkdir::WalkDir::new(root) {
        let e = e?;
        if e.file_type().is_file() {
            let rel = e.path().strip_prefix(root)?.to_string_lossy().into_owned();
            out.insert(rel, sha1_hex(&std::fs::read(e.path())?));
        }
    }
    Ok(out)
}

/// table → md5 of its sorted rows, for every table in `public`.
async fn db_fingerprint(client: &tokio_postgres::Client) -> Result<BTreeMap<String, String>> {
    let tables = client
        .query(
            "SELECT tablename::text FROM pg_tables WHERE schemaname = 'public' ORDER BY 1",
            &[],
        )
        .await?;
    let mut out = BTreeMap::new();
    for row in tables {
        let t: String = row.get(0);
        let md5: String = client
            .query_one(
                &format!(
                    "SELECT md5(coalesce(string_agg(x::text, '|' ORDER BY x::text), '')) FROM {} x",
                    quote_ident(&t)
                ),
                &[],
            )
            .await?
            .get(0);
        out.insert(t, md5);
    }
    Ok(out)
}

/// An Odoo-like database: modules, partners with binary data, attachments.
async fn fill_db(client: &tokio_postgres::Client, rows: u32) -> Result<()> {
    client
        .batch_execute(&format!(
            "CREATE TABLE ir_module_module (id serial PRIMARY KEY, name varchar UNIQUE, state varchar, latest_version varchar);
             INSERT INTO ir_module_module (name, state, latest_version) VALUES
                ('base', 'installed', '17.0.1.3'), ('sale', 'installed', '17.0.1.2'),
                ('crm', 'uninstalled', NULL);
             CREATE TABLE res_partner (id serial PRIMARY KEY, name text, note text, blob bytea);
             INSERT INTO res_partner (name, note, blob)
                SELECT 'partner ' || g, repeat('note ', g % 50), decode(md5(g::text), 'hex')
                FROM generate_series(1, {rows}) g;
             CREATE TABLE ir_attachment (id serial PRIMARY KEY, store_fname varchar, res_id int);"
        ))
        .await?;
    Ok(())
}

/// A filestore of `n` files (a few legacy and checklist entries among them).
fn fill_filestore(root: &Path, n: u64, seed: u64) -> Result<Vec<String>> {
    let mut paths = Vec::new();
    for i in 0..n {
        let len = 200 + ((i * 7919) % 20_000) as usize;
        let data = content(seed * 1_000_000 + i, len, i % 3 == 0);
        paths.push(odoo_file(root, &data, i % 17 == 5)?);
    }
    if let Some(first) = paths.first() {
        let marker = root.join("checklist").join(first);
        std::fs::create_dir_all(marker.parent().context("parent")?)?;
        std::fs::write(marker, b"")?;
    }
    Ok(paths)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn round_trip_restores_every_row_and_file() -> Result<()> {
    use std::os::unix::fs::MetadataExt;
    let w = World::new("roundtrip").await?;
    let c = w.client().await?;
    fill_db(&c, 3000).await?;
    fill_filestore(&w.filestore(), 60, 1)?;
    let db_before = db_fingerprint(&c).await?;
    let fs_before = fs_map(&w.filestore())?;

    let phases = Mutex::new(Vec::new());
    let progress = |p: SnapshotProgress| {
        if let SnapshotProgress::Phase { phase, .. } = p {
            phases.lock().map(|mut v| v.push(phase)).ok();
        }
    };
    let meta = w
        .snaps
        .create(
            "shop",
            CreateSnapshot {
                id: "snap-a".into(),
                kind: SnapshotKind::PreDeploy,
                deployment_id: Some("dep-1".into()),
                commit_sha: Some("abc123".into()),
            },
            &progress,
            &CancellationToken::new(),
        )
        .await?;
    ensure!(meta.kind == SnapshotKind::PreDeploy && meta.file_count == fs_before.len() as u64);
    ensure!(meta.size_bytes > 0 && meta.estimated_bytes > 0, "{meta:?}");
    let seen = phases.lock().map(|v| v.clone()).unwrap_or_default();
    ensure!(
        seen.contains(&"database") && seen.contains(&"filestore"),
        "{seen:?}"
    );
    let m = w.snaps.manifest("shop", "snap-a").await?;
    ensure!(
        m.modules.get("base") == Some(&Some("17.0.1.3".into())),
        "{:?}",
        m.modules
    );
    ensure!(!m.modules.contains_key("crm"), "only installed modules");
    ensure!(m.database.name == w.db && m.database.server_version.starts_with("15"));
    ensure!(m.dump.parts.iter().any(|p| p.path == "db/toc.dat"));
    ensure!(m.dump.parts.iter().all(|p| p.sha256.len() == 64));
    ensure!(m.commit_sha.as_deref() == Some("abc123"));
    let listed: BTreeMap<_, _> = m
        .filestore
        .files
        .iter()
        .map(|f| (f.path.clone(), f.sha1.clone()))
        .collect();
    ensure!(
        listed == fs_before,
        "the manifest lists every file with its sha1"
    );
    w.snaps.verify("shop", "snap-a").await?;

    // Change everything: rows added, removed and updated, a table dropped and one created,
    // files added, removed and rewritten in place.
    c.batch_execute(
        "INSERT INTO res_partner (name) SELECT 'new ' || g FROM generate_series(1, 500) g;
         DELETE FROM res_partner WHERE id % 7 = 0;
         UPDATE res_partner SET note = 'changed' WHERE id % 5 = 0;
         DROP TABLE ir_attachment;
         CREATE TABLE extra (id int);
         INSERT INTO extra VALUES (1);
         UPDATE ir_module_module SET latest_version = '17.0.2.0' WHERE name = 'sale';",
    )
    .await?;
    fill_filestore(&w.filestore(), 10, 2)?;
    let mut victims = fs_before.keys().take(5);
    if let Some(p) = victims.next() {
        std::fs::remove_file(w.filestore().join(p))?;
    }
    if let Some(p) = victims.next() {
        std::fs::write(w.filestore().join(p), b"rewritten in place")?;
    }
    ensure!(db_fingerprint(&c).await? != db_before);
    ensure!(fs_map(&w.filestore())? != fs_before);
    drop(c);

    w.restore("snap-a").await?;
    let c = w.client().await?;
    ensure!(
        db_fingerprint(&c).await? == db_before,
        "database content equals the snapshot"
    );
    ensure!(
        fs_map(&w.filestore())? == fs_before,
        "every file's sha1 equals the snapshot"
    );
    for e in walkdir::WalkDir::new(w.filestore()) {
        let e = e?;
        ensure!(
            e.metadata()?.uid() == ODOO_UID,
            "{} is owned by odoo",
            e.path().display()
        );
    }
    // No temporary database or staging directory is left behind: markers name every
    // temporary database and go only once it is dropped (other tests run beside this one,
    // so the cluster's list of databases cannot be compared).
    w.snaps.settle().await;
    let journal = w.store().join("journal");
    let markers: Vec<_> = std::fs::read_dir(&journal)?
        .filter_map(Result::ok)
        .collect();
    ensure!(markers.is_empty(), "markers left: {markers:?}");
    let staging: Vec<_> = std::fs::read_dir(w.dir.path().join("data/filestore"))?
        .filter_map(Result::ok)
        .filter(|e| {
            e.file_name()
                .to_string_lossy()
                .starts_with(".ocore-staging")
        })
        .collect();
    ensure!(staging.is_empty(), "staging left: {staging:?}");
    drop(c);
    w.cleanup().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_percent_new_files_store_only_those_blobs() -> Result<()> {
    let w = World::new("incremental").await?;
    fill_db(&w.client().await?, 100).await?;
    fill_filestore(&w.filestore(), 300, 3)?;
    let first = w.snapshot("inc-1").await?;
    let m1 = w.snaps.manifest("shop", "inc-1").await?;
    ensure!(
        m1.filestore.new_blobs == 301,
        "300 files + the empty checklist marker: {}",
        m1.filestore.new_blobs
    );
    let blobs_before = w.blob_count();

    let mut new_bytes = 0;
    for i in 0..3 {
        let data = content(777_000 + i, 5000, false);
        new_bytes += data.len() as u64;
        odoo_file(&w.filestore(), &data, false)?;
    }
    let est = w.snaps.estimate("shop").await?;
    ensure!(
        est.new_filestore_bytes == new_bytes,
        "estimate counts only new files: {est:?}"
    );
    let second = w.snapshot("inc-2").await?;
    let m2 = w.snaps.manifest("shop", "inc-2").await?;
    ensure!(
        m2.filestore.new_blobs == 3,
        "only the 3 new files were stored: {}",
        m2.filestore.new_blobs
    );
    ensure!(m2.filestore.new_bytes == new_bytes);
    ensure!(w.blob_count() == blobs_before + 3);
    ensure!(m2.filestore.files.len() == m1.filestore.files.len() + 3);
    let dump2: u64 = m2.dump.parts.iter().map(|p| p.size).sum();
    ensure!(
        second.size_bytes == dump2 + m2.filestore.new_stored_bytes
            && second.size_bytes < first.size_bytes,
        "{second:?} vs {first:?}"
    );
    w.cleanup().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn corrupt_parts_are_refused_and_live_data_untouched() -> Result<()> {
    let w = World::new("corrupt").await?;
    let c = w.client().await?;
    fill_db(&c, 500).await?;
    let files = fill_filestore(&w.filestore(), 20, 4)?;
    w.snapshot("good").await?;
    // Live changes the restore would undo.
    c.execute("DELETE FROM res_partner WHERE id <= 100", &[])
        .await?;
    std::fs::remove_file(w.filestore().join(&files[1]))?;
    let db_live = db_fingerprint(&c).await?;
    let fs_live = fs_map(&w.filestore())?;

    // A flipped byte in the blob the restore needs.
    let sha = files[1].rsplit('/').next().context("name")?.to_owned();
    let blob = w.store().join("blobs").join(&sha[..2]).join(&sha);
    let original = std::fs::read(&blob)?;
    let mut bad = original.clone();
    let mid = bad.len() / 2;
    bad[mid] ^= 0x40;
    std::fs::write(&blob, &bad)?;
    let err = w.restore("good").await.expect_err("corrupt blob");
    ensure!(matches!(err, RestoreError::Refused { .. }), "{err}");
    ensure!(
        err.to_string().contains(&blob.display().to_string()),
        "names the blob: {err}"
    );
    ensure!(
        db_fingerprint(&c).await? == db_live,
        "live database untouched"
    );
    ensure!(
        fs_map(&w.filestore())? == fs_live,
        "live filestore untouched"
    );
    let verify = w
        .snaps
        .verify("shop", "good")
        .await
        .expect_err("verify sees it");
    ensure!(matches!(verify, SnapshotError::Corrupt(_)), "{verify}");
    std::fs::write(&blob, &original)?;

    // A flipped byte in a dump part.
    let db_dir = w.store().join("snaps/good/db");
    let part = std::fs::read_dir(&db_dir)?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .find(|p| p.extension().is_some_and(|e| e == "gz"))
        .context("a data part")?;
    let mut bytes = std::fs::read(&part)?;
    let last = bytes.len() - 1;
    bytes[last] ^= 1;
    std::fs::write(&part, &bytes)?;
    let err = w.restore("good").await.expect_err("corrupt dump");
    ensure!(
        err.to_string().contains(&part.display().to_string()),
        "names the part: {err}"
    );
    ensure!(db_fingerprint(&c).await? == db_live && fs_map(&w.filestore())? == fs_live);
    drop(c);
    w.cleanup().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_fails_early_with_the_numbers_and_leaves_nothing() -> Result<()> {
    let mnt = tempfile::tempdir()?;
    let out = std::process::Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=4m", "tmpfs"])
        .arg(mnt.path())
        .output()?;
    if !out.status.success() {
        bail!(
            "cannot mount a small tmpfs (tests run as root): {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let result = async {
        let w = World::with_state_dir("diskfull", Some(mnt.path())).await?;
        fill_db(&w.client().await?, 20_000).await?;
        fill_filestore(&w.filestore(), 50, 5)?;
        let err = w.snapshot("too-big").await.expect_err("no space");
        let e = err
            .downcast_ref::<CreateSnapshotError>()
            .context("typed error")?;
        ensure!(matches!(e, CreateSnapshotError::NotEnoughSpace(_)), "{e}");
        let msg = e.to_string();
        ensure!(
            msg.contains("not enough free disk for snapshot too-big") && msg.contains("free"),
            "{msg}"
        );
        ensure!(
            msg.contains("MiB") || msg.contains("KiB"),
            "gives the numbers: {msg}"
        );
        let leftovers: Vec<_> = walkdir::WalkDir::new(mnt.path())
            .into_iter()
            .filter_map(Result::ok)
            .filter(|e| e.file_type().is_file())
            .map(|e| e.path().to_owned())
            .collect();
        ensure!(leftovers.is_empty(), "nothing half-written: {leftovers:?}");
        ensure!(w.snaps.list("shop").await?.is_empty());
        w.cleanup().await
    }
    .await;
    let _ = std::process::Command::new("umount")
        .arg(mnt.path())
        .status();
    result
}

fn tar_zst_with(
    archive: &Path,
    build: impl FnOnce(&mut tar::Builder<Vec<u8>>) -> Result<()>,
) -> Result<()> {
    let mut b = tar::Builder::new(Vec::new());
    build(&mut b)?;
    let data = b.into_inner()?;
    std::fs::write(archive, zstd::encode_all(&data[..], 3)?)?;
    Ok(())
}

type TarCase = Box<dyn Fn(&mut tar::Builder<Vec<u8>>) -> Result<()>>;
type ZipCase = Box<dyn Fn(&mut zip::ZipWriter<std::fs::File>) -> Result<()>>;

/// A header whose name is written raw, bypassing the tar crate's own checks.
fn raw_header(name: &str, kind: tar::EntryType, size: u64) -> tar::Header {
    let mut h = tar::Header::new_old();
    {
        let old = h.as_old_mut();
        old.name.fill(0);
        old.name[..name.len()].copy_from_slice(name.as_bytes());
    }
    h.set_entry_type(kind);
    h.set_size(size);
    h.set_mode(0o644);
    h.set_cksum();
    h
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malicious_archives_are_refused() -> Result<()> {
    let w = World::new("malicious").await?;
    let dir = w.dir.path().join("archives");
    std::fs::create_dir_all(&dir)?;
    let outside = w.dir.path().join("evil");
    let cases: Vec<(&str, TarCase)> = vec![
        (
            "parent",
            Box::new(|b| {
                Ok(b.append(
                    &raw_header("../evil", tar::EntryType::Regular, 4),
                    &b"evil"[..],
                )?)
            }),
        ),
        (
            "deep-parent",
            Box::new(|b| {
                Ok(b.append(
                    &raw_header("filestore/../../../evil", tar::EntryType::Regular, 4),
                    &b"evil"[..],
                )?)
            }),
        ),
        (
            "absolute",
            Box::new(|b| {
                Ok(b.append(
                    &raw_header("/tmp/ocore-evil", tar::EntryType::Regular, 4),
                    &b"evil"[..],
                )?)
            }),
        ),
        (
            "symlink",
            Box::new(|b| {
                let mut h = raw_header("filestore/link", tar::EntryType::Symlink, 0);
                h.set_link_name("/etc/passwd")?;
                h.set_cksum();
                Ok(b.append(&h, std::io::empty())?)
            }),
        ),
        (
            "hardlink",
            Box::new(|b| {
                let mut h = raw_header("filestore/hard", tar::EntryType::Link, 0);
                h.set_link_name("/etc/passwd")?;
                h.set_cksum();
                Ok(b.append(&h, std::io::empty())?)
            }),
        ),
        (
            "device",
            Box::new(|b| {
                Ok(b.append(
                    &raw_header("filestore/dev", tar::EntryType::Char, 0),
                    std::io::empty(),
                )?)
            }),
        ),
        (
            "fifo",
            Box::new(|b| {
                Ok(b.append(
                    &raw_header("filestore/fifo", tar::EntryType::Fifo, 0),
                    std::io::empty(),
                )?)
            }),
        ),
    ];
    for (name, build) in cases {
        let archive = dir.join(format!("{name}.tar.zst"));
        tar_zst_with(&archive, |b| build(b))?;
        let err = w
            .snaps
            .import(
                "shop",
                &format!("imp-{name}"),
                &archive,
                &no_progress,
                &CancellationToken::new(),
            )
            .await
            .expect_err(name);
        ensure!(
            matches!(err, ImportError::UnsafeEntry { .. }),
            "{name}: {err}"
        );
        ensure!(
            !outside.exists() && !Path::new("/tmp/ocore-evil").exists(),
            "{name} wrote outside"
        );
    }
    // The same for Odoo zips.
    use std::io::Write;
    let zip_cases: Vec<(&str, ZipCase)> = vec![
        (
            "zip-parent",
            Box::new(|z| {
                z.start_file("../evil", zip::write::SimpleFileOptions::default())?;
                Ok(z.write_all(b"evil")?)
            }),
        ),
        (
            "zip-absolute",
            Box::new(|z| {
                z.start_file("/tmp/ocore-evil", zip::write::SimpleFileOptions::default())?;
                Ok(z.write_all(b"evil")?)
            }),
        ),
        (
            "zip-symlink",
            Box::new(|z| {
                Ok(z.add_symlink(
                    "filestore/link",
                    "/etc/passwd",
                    zip::write::SimpleFileOptions::default(),
                )?)
            }),
        ),
    ];
    for (name, build) in zip_cases {
        let archive = dir.join(format!("{name}.zip"));
        let mut z = zip::ZipWriter::new(std::fs::File::create(&archive)?);
        build(&mut z)?;
        z.finish()?;
        let err = w
            .snaps
            .import(
                "shop",
                &format!("imp-{name}"),
                &archive,
                &no_progress,
                &CancellationToken::new(),
            )
            .await
            .expect_err(name);
        ensure!(
            matches!(err, ImportError::UnsafeEntry { .. }),
            "{name}: {err}"
        );
        ensure!(
            !outside.exists() && !Path::new("/tmp/ocore-evil").exists(),
            "{name} wrote outside"
        );
    }
    ensure!(w.snaps.list("shop").await?.is_empty(), "nothing imported");
    w.cleanup().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exports_import_back_and_restore_in_both_formats() -> Result<()> {
    let w = World::new("export").await?;
    let c = w.client().await?;
    fill_db(&c, 800).await?;
    fill_filestore(&w.filestore(), 30, 6)?;
    let db_before = db_fingerprint(&c).await?;
    let fs_before = fs_map(&w.filestore())?;
    w.snapshot("orig").await?;
    let out = w.dir.path().join("exports");
    std::fs::create_dir_all(&out)?;
    let never = CancellationToken::new();

    let tar = w
        .snaps
        .export(
            "shop",
            "orig",
            ExportFormat::TarZst,
            &out.join("orig.tar.zst"),
            &never,
        )
        .await?;
    ensure!(tar.bytes > 0);
    let zip_export = w
        .snaps
        .export(
            "shop",
            "orig",
            ExportFormat::OdooZip,
            &out.join("orig.zip"),
            &never,
        )
        .await?;

    // Odoo's zip holds what Odoo's database manager restores.
    let mut zip = zip::ZipArchive::new(std::fs::File::open(&zip_export.path)?)?;
    let names: Vec<String> = zip.file_names().map(str::to_owned).collect();
    ensure!(names.contains(&"dump.sql".to_owned()) && names.contains(&"manifest.json".to_owned()));
    ensure!(names.iter().filter(|n| n.starts_with("filestore/")).count() == fs_before.len());
    let manifest: serde_json::Value = serde_json::from_reader(zip.by_name("manifest.json")?)?;
    for field in [
        "odoo_dump",
        "db_name",
        "version",
        "version_info",
        "major_version",
        "pg_version",
        "modules",
    ] {
        ensure!(
            manifest.get(field).is_some(),
            "manifest.json has {field}: {manifest}"
        );
    }
    ensure!(manifest["db_name"] == w.db.as_str() && manifest["major_version"] == "17.0");
    let mut sql = String::new();
    std::io::Read::read_to_string(&mut zip.by_name("dump.sql")?, &mut sql)?;
    ensure!(
        sql.contains("CREATE TABLE public.res_partner") && !sql.contains("OWNER TO"),
        "plain SQL without owners"
    );

    w.snaps
        .import("shop", "from-tar", &tar.path, &no_progress, &never)
        .await?;
    w.snaps
        .import("shop", "from-zip", &zip_export.path, &no_progress, &never)
        .await?;
    w.snaps.verify("shop", "from-tar").await?;
    w.snaps.verify("shop", "from-zip").await?;
    drop(c);
    for id in ["from-tar", "from-zip"] {
        // Each restore terminates the connections to the database: connect anew.
        let c = w.client().await?;
        c.batch_execute(
            "DELETE FROM res_partner WHERE id < 50; CREATE TABLE IF NOT EXISTS junk (x int)",
        )
        .await?;
        let first = fs_before.keys().next().context("a file")?;
        let _ = std::fs::remove_file(w.filestore().join(first));
        odoo_file(&w.filestore(), b"junk file", false)?;
        w.restore(id).await?;
        let c = w.client().await?;
        ensure!(
            db_fingerprint(&c).await? == db_before,
            "{id}: database equals the original"
        );
        ensure!(
            fs_map(&w.filestore())? == fs_before,
            "{id}: filestore equals the original"
        );
    }
    w.cleanup().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_keeps_pinned_and_deletion_keeps_shared_blobs() -> Result<()> {
    let w = World::new("retention").await?;
    fill_db(&w.client().await?, 50).await?;
    let shared = fill_filestore(&w.filestore(), 5, 7)?;
    let mut own = Vec::new();
    for i in 0..4 {
        own.push(odoo_file(
            &w.filestore(),
            &content(90_000 + i, 3000, true),
            false,
        )?);
        w.snapshot(&format!("r{i}")).await?;
    }
    w.snaps.pin("shop", "r0", true).await?;
    let pinned_delete = w.snaps.delete("shop", "r0").await.expect_err("pinned");
    ensure!(
        matches!(pinned_delete, SnapshotError::Pinned { .. }),
        "{pinned_delete}"
    );

    // Keep the newest only: r1 and r2 go, r0 stays because it is pinned.
    let future = time::OffsetDateTime::now_utc() + time::Duration::days(30);
    let outcome = w
        .snaps
        .apply_retention_at(
            "shop",
            RetentionPolicy {
                keep_last: 1,
                keep_days: 7,
            },
            future,
        )
        .await?;
    let mut deleted = outcome.deleted.clone();
    deleted.sort();
    ensure!(deleted == ["r1", "r2"], "{outcome:?}");
    ensure!(outcome.freed_bytes > 0);
    let left: Vec<String> = w
        .snaps
        .list("shop")
        .await?
        .into_iter()
        .map(|s| s.id)
        .collect();
    ensure!(left == ["r3", "r0"], "{left:?}");
    w.snaps.verify("shop", "r0").await?;
    w.snaps.verify("shop", "r3").await?;
    // Blobs: shared ones and those r0 and r3 need stay (files are cumulative, so r3 has all).
    ensure!(
        w.blob_count() == shared.len() + 1 + own.len(),
        "{}",
        w.blob_count()
    );

    // Deleting r3 must keep every blob r0 still needs.
    w.snaps.pin("shop", "r0", false).await?;
    w.snaps.delete("shop", "r3").await?;
    w.snaps.verify("shop", "r0").await?;
    ensure!(
        w.blob_count() == shared.len() + 1 + 1,
        "r0 needs the shared files and its own: {}",
        w.blob_count()
    );
    w.snaps.delete("shop", "r0").await?;
    ensure!(w.blob_count() == 0, "nothing references any blob");
    w.cleanup().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_interrupted_snapshot_leaves_nothing_visible() -> Result<()> {
    let w = World::new("interrupt").await?;
    fill_db(&w.client().await?, 20_000).await?;
    fill_filestore(&w.filestore(), 400, 8)?;
    let cancel = CancellationToken::new();
    let progress = |p: SnapshotProgress| {
        if let SnapshotProgress::Phase {
            phase: "filestore",
            done,
            ..
        } = p
        {
            if done > 0 {
                cancel.cancel();
            }
        }
    };
    let req = CreateSnapshot {
        id: "cut".into(),
        kind: SnapshotKind::Manual,
        deployment_id: None,
        commit_sha: None,
    };
    let err = w
        .snaps
        .create("shop", req, &progress, &cancel)
        .await
        .expect_err("cancelled");
    ensure!(
        matches!(err, CreateSnapshotError::Cancelled { .. }),
        "{err}"
    );
    ensure!(
        w.snaps.list("shop").await?.is_empty(),
        "no partial snapshot is visible"
    );
    ensure!(w.blob_count() == 0, "the blobs it stored were collected");
    let tmp = w.store().join("tmp");
    ensure!(
        !tmp.exists() || std::fs::read_dir(&tmp)?.next().is_none(),
        "no temporary directory left"
    );

    // A crash leaves a partial directory and orphan blobs: recovery removes them.
    std::fs::create_dir_all(tmp.join("crashed.123/db"))?;
    std::fs::write(tmp.join("crashed.123/db/toc.dat"), b"partial")?;
    let orphan = w.store().join("blobs/ab").join("ab".repeat(20));
    std::fs::create_dir_all(orphan.parent().context("parent")?)?;
    std::fs::write(&orphan, b"orphan")?;
    let report = w.snaps.recover().await?;
    ensure!(
        report.removed_partial >= 1 && report.blobs_removed == 1,
        "{report:?}"
    );
    ensure!(!orphan.exists() && std::fs::read_dir(&tmp)?.next().is_none());
    // And a snapshot after all that works.
    w.snapshot("after").await?;
    w.snaps.verify("shop", "after").await?;
    w.cleanup().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn safety_copy_swaps_back_the_exact_pre_update_state_or_is_discarded() -> Result<()> {
    let w = World::new("safety").await?;
    let c = w.client().await?;
    fill_db(&c, 1000).await?;
    let files = fill_filestore(&w.filestore(), 40, 9)?;
    w.snapshot("pre").await?;
    // Writes after the pre-deploy snapshot and before the old colour stopped.
    c.batch_execute("INSERT INTO res_partner (name) VALUES ('written in the window')")
        .await?;
    odoo_file(&w.filestore(), b"uploaded in the window", false)?;
    let db_pre_update = db_fingerprint(&c).await?;
    let fs_pre_update = fs_map(&w.filestore())?;
    drop(c);

    let copy = w.snaps.safety_copy("shop", "pre").await?;
    let copy_db = copy.database_copy().to_owned();
    // A failing `-u`: schema and rows changed, files added, an old one removed.
    let c = w.client().await?;
    c.batch_execute(
        "ALTER TABLE res_partner ADD COLUMN migrated boolean;
         UPDATE res_partner SET migrated = true, name = name || ' (v2)';
         INSERT INTO ir_attachment (store_fname) VALUES ('x');",
    )
    .await?;
    odoo_file(&w.filestore(), b"written by -u", false)?;
    std::fs::remove_file(w.filestore().join(&files[0]))?;
    drop(c);
    copy.swap_back().await?;
    let c = w.client().await?;
    ensure!(
        db_fingerprint(&c).await? == db_pre_update,
        "database is the pre-update state, window writes included"
    );
    ensure!(
        fs_map(&w.filestore())? == fs_pre_update,
        "filestore is the pre-update state"
    );
    let admin = w.pg.connect("postgres").await?;
    let exists = |name: String| {
        let admin = &admin;
        async move {
            Ok::<_, anyhow::Error>(
                admin
                    .query_opt("SELECT 1 FROM pg_database WHERE datname = $1", &[&name])
                    .await?
                    .is_some(),
            )
        }
    };
    ensure!(
        !exists(copy_db.clone()).await?,
        "the copy became the database"
    );
    drop(c);

    // A successful deploy discards the copy and keeps the updated database.
    let copy = w.snaps.safety_copy("shop", "pre").await?;
    let copy_db = copy.database_copy().to_owned();
    ensure!(exists(copy_db.clone()).await?);
    let again = w
        .snaps
        .safety_copy("shop", "pre")
        .await
        .expect_err("one at a time");
    ensure!(
        again.to_string().contains("already has a safety copy"),
        "{again}"
    );
    let c = w.client().await?;
    c.batch_execute("INSERT INTO res_partner (name) VALUES ('after a good -u')")
        .await?;
    let db_updated = db_fingerprint(&c).await?;
    drop(c);
    copy.discard().await?;
    ensure!(!exists(copy_db).await?, "the copy is dropped");
    ensure!(db_fingerprint(&w.client().await?).await? == db_updated);

    // A copy left complete by a crash waits for the pipeline's decision.
    let copy = w.snaps.safety_copy("shop", "pre").await?;
    drop(copy);
    let report = w.snaps.recover().await?;
    ensure!(report.safety_copies_pending == ["shop"], "{report:?}");
    let pending = w
        .snaps
        .pending_safety_copy("shop")
        .await?
        .context("pending copy")?;
    pending.discard().await?;
    ensure!(w.snaps.pending_safety_copy("shop").await?.is_none());
    drop(admin);
    w.cleanup().await
}
