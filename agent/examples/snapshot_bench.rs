//! Snapshot benchmark (issue 4; design.md §10): prints, from one run on this machine, the
//! ratios of oCore snapshots against the plain tools run by hand.
//!
//! ```text
//! bash tests/env/setup.sh
//! cargo run --release -p ocore-agent --example snapshot_bench -- --db-mb 500 --files 10000 --filestore-mb 1024
//! ```
//!
//! It generates a data set (a pgbench-plus-text database of at least `--db-mb` MB, and a
//! filestore of `--files` files totalling `--filestore-mb` MiB with mixed sizes and
//! compressible / incompressible content, laid out as Odoo does), then measures:
//! - full snapshot time and size ÷ (`pg_dump -Fc` then `tar -cf - filestore | zstd -T0 -3`);
//! - after adding 1% new files: the new snapshot's filestore time and newly stored bytes ÷
//!   the full snapshot's (the dump is not incremental; its time is reported separately);
//! - full restore time ÷ (`pg_restore -j 2` + `zstd -d | tar -x`), and the time of a restore
//!   whose filestore differs by the 1% (only those files are touched).
//!
//! Everything it creates (databases, files) is removed at the end unless `--keep` is given.
//! Options: `--work-dir DIR` (default: a temporary directory in /var/tmp); `--repeat N` runs
//! the baseline and the full snapshot N times in turn (each from an empty blob store) and
//! prints every round and the median time ratio, as single runs vary on a shared machine.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use ocore_agent::config::AgentConfig;
use ocore_agent::db::{quote_ident, Pg};
use ocore_agent::snapshot::{CreateSnapshot, SnapshotKind, SnapshotProgress, Snapshots};
use sha1::{Digest, Sha1};
use tokio_util::sync::CancellationToken;

struct Args {
    db_mb: u64,
    files: u64,
    filestore_mb: u64,
    keep: bool,
    verbose: bool,
    work_dir: Option<PathBuf>,
    repeat: usize,
}

fn args() -> Result<Args> {
    let mut a = Args {
        db_mb: 500,
        files: 10_000,
        filestore_mb: 1024,
        keep: false,
        verbose: false,
        work_dir: None,
        repeat: 1,
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        let mut value = || it.next().with_context(|| format!("{arg} needs a value"));
        match arg.as_str() {
            "--db-mb" => a.db_mb = value()?.parse()?,
            "--files" => a.files = value()?.parse()?,
            "--filestore-mb" => a.filestore_mb = value()?.parse()?,
            "--work-dir" => a.work_dir = Some(value()?.into()),
            "--repeat" => {
                a.repeat = value()?.parse()?;
                ensure!(a.repeat >= 1, "--repeat needs at least 1");
            }
            "--keep" => a.keep = true,
            "--verbose" => a.verbose = true,
            other => {
                bail!("unknown argument {other}; see the comment at the top of snapshot_bench.rs")
            }
        }
    }
    Ok(a)
}

/// One round of the full-snapshot comparison.
struct Round {
    base_dump: Duration,
    base_tar: Duration,
    base_size: u64,
    time: Duration,
    meta: ocore_agent::snapshot::SnapshotMeta,
    manifest: ocore_agent::snapshot::Manifest,
}

impl Round {
    fn time_ratio(&self) -> f64 {
        secs(self.time) / secs(self.base_dump + self.base_tar)
    }
}

struct PgEnv {
    host: String,
    port: String,
    user: String,
    password: String,
}

fn pg_env() -> Result<PgEnv> {
    let text = std::fs::read_to_string("/var/lib/ocore-testenv/env")
        .context("PostgreSQL is not running on 127.0.0.1:5432: run tests/env/setup.sh")?;
    let get = |k: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(&format!("export {k}=")))
            .map(str::to_owned)
            .with_context(|| format!("the test env file has no {k}"))
    };
    Ok(PgEnv {
        host: get("OCORE_TEST_PGHOST")?,
        port: get("OCORE_TEST_PGPORT")?,
        user: get("OCORE_TEST_PGUSER")?,
        password: get("OCORE_TEST_PGPASSWORD")?,
    })
}

impl PgEnv {
    fn tool(&self, program: &str) -> Command {
        let mut c = Command::new(program);
        c.env("PGHOST", &self.host)
            .env("PGPORT", &self.port)
            .env("PGUSER", &self.user)
            .env("PGPASSWORD", &self.password);
        c
    }
}

fn run(cmd: &mut Command) -> Result<()> {
    let out = cmd.output().with_context(|| format!("{cmd:?}"))?;
    ensure!(
        out.status.success(),
        "{cmd:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(())
}

/// `a | b`, both argument vectors.
fn pipe(a: &mut Command, b: &mut Command) -> Result<()> {
    let mut first = a.stdout(Stdio::piped()).spawn()?;
    let out = first.stdout.take().context("stdout")?;
    let second = b.stdin(Stdio::from(out)).output()?;
    let status = first.wait()?;
    ensure!(
        status.success() && second.status.success(),
        "{a:?} | {b:?} failed: {}",
        String::from_utf8_lossy(&second.stderr)
    );
    Ok(())
}

fn secs(d: Duration) -> f64 {
    d.as_secs_f64()
}

fn mib(n: u64) -> f64 {
    n as f64 / (1024.0 * 1024.0)
}

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn fill(&mut self, buf: &mut [u8]) {
        for chunk in buf.chunks_mut(8) {
            let v = self.next().to_le_bytes();
            chunk.copy_from_slice(&v[..chunk.len()]);
        }
    }
}

const WORDS: &[&str] = &[
    "invoice",
    "partner",
    "order",
    "delivery",
    "quotation",
    "lorem",
    "ipsum",
    "odoo",
    "stock",
    "payment",
    "journal",
    "account",
    "product",
    "customer",
    "vendor",
    "amount",
    "total",
    "tax",
];

/// A size from a mixed distribution: most attachments small, a few large.
fn pick_size(rng: &mut Rng, mean: u64) -> usize {
    let r = rng.next() % 100;
    let base = if r < 70 {
        mean / 8 + rng.next() % (mean / 2).max(1)
    } else if r < 95 {
        mean + rng.next() % (mean * 2).max(1)
    } else {
        mean * 4 + rng.next() % (mean * 12).max(1)
    };
    base.max(64) as usize
}

/// Writes one Odoo-named file (`ab/<sha1>`) of about `size` bytes; returns its size.
fn write_file(root: &Path, rng: &mut Rng, size: usize) -> Result<u64> {
    let mut data = vec![0u8; size];
    if rng.next() % 2 == 0 {
        rng.fill(&mut data); // images, PDFs: incompressible
    } else {
        let mut text = String::with_capacity(size + 16);
        while text.len() < size {
            text.push_str(WORDS[(rng.next() % WORDS.len() as u64) as usize]);
            text.push(if rng.next() % 12 == 0 { '\n' } else { ' ' });
        }
        data.copy_from_slice(&text.as_bytes()[..size]);
    }
    let sha = hex::encode(Sha1::digest(&data));
    let dir = root.join(&sha[..2]);
    std::fs::create_dir_all(&dir)?;
    std::fs::write(dir.join(&sha), &data)?;
    Ok(data.len() as u64)
}

/// The `mean` for `pick_size` that makes `files` files total `total_mb` MiB (its sizes
/// average 1.26 × mean).
fn mean_size(total_mb: u64, files: u64) -> u64 {
    total_mb * 1024 * 1024 * 100 / (files.max(1) * 126)
}

fn generate_filestore(root: &Path, files: u64, total_mb: u64, seed: u64) -> Result<u64> {
    let mut rng = Rng(seed | 1);
    let mean = mean_size(total_mb, files);
    let mut bytes = 0;
    for _ in 0..files {
        let size = pick_size(&mut rng, mean);
        bytes += write_file(root, &mut rng, size)?;
    }
    Ok(bytes)
}

async fn generate_db(client: &tokio_postgres::Client, db: &str, target_mb: u64) -> Result<u64> {
    client
        .batch_execute(
            "CREATE TABLE pgbench_accounts (aid int PRIMARY KEY, bid int, abalance int, filler char(84));
             CREATE TABLE mail_message (id serial PRIMARY KEY, model varchar, res_id int,
                 subject text, body text, date timestamp);
             CREATE TABLE ir_module_module (id serial PRIMARY KEY, name varchar UNIQUE,
                 state varchar, latest_version varchar);
             INSERT INTO ir_module_module (name, state, latest_version)
                 VALUES ('base', 'installed', '17.0.1.3'), ('mail', 'installed', '17.0.1.1');",
        )
        .await?;
    let mut next = 1i64;
    loop {
        let size: i64 = client
            .query_one("SELECT pg_database_size($1::text)", &[&db])
            .await?
            .get(0);
        if size as u64 >= target_mb * 1_000_000 {
            return Ok(size as u64);
        }
        let end = next + 400_000;
        client
            .batch_execute(&format!(
                "INSERT INTO pgbench_accounts SELECT g, g / 100000, ((g::bigint * 7919) % 10000)::int, ''
                     FROM generate_series({next}, {end} - 1) g;
                 INSERT INTO mail_message (model, res_id, subject, body, date)
                     SELECT 'res.partner', g % 5000, 'Re: order ' || g,
                            '<p>' || repeat(md5(g::text) || ' thanks for your order ', 4) || '</p>',
                            now() - (g || ' minutes')::interval
                     FROM generate_series({next}, {next} + 150000 - 1) g;"
            ))
            .await?;
        next = end;
        eprintln!("  database: {} MB", size / 1_000_000);
    }
}

#[tokio::main]
async fn main() -> Result<()> {
    let a = args()?;
    let env = pg_env()?;
    let work = match &a.work_dir {
        Some(d) => {
            std::fs::create_dir_all(d)?;
            tempfile::tempdir_in(d)?
        }
        None => tempfile::tempdir_in("/var/tmp")?,
    };
    let w = work.path();
    let db = format!("ocore_bench_{}", std::process::id());
    let pw = w.join("pgpass");
    std::fs::write(&pw, &env.password)?;
    let config = AgentConfig::parse(
        &format!(
            r#"
listen = "127.0.0.1:7700"
state_dir = "{state}"
[postgres]
host = "{host}"
port = {port}
user = "{user}"
password_file = "{pw}"
[[instance]]
id = "bench"
database = "{db}"
data_dir = "{data}"
base_image = "odoo:17.0"
public_port = 8069
blue = {{ http = 18069, gevent = 18072 }}
green = {{ http = 28069, gevent = 28072 }}
odoo_uid = 0
odoo_gid = 0
"#,
            state = w.join("state").display(),
            host = env.host,
            port = env.port,
            user = env.user,
            pw = pw.display(),
            data = w.join("data").display(),
        ),
        Path::new("bench.toml"),
    )?;
    let pg = Pg::from_config(&config.postgres)?;
    let snaps = Arc::new(Snapshots::new(Arc::new(config), pg.clone()));
    let admin = pg.connect("postgres").await?;
    admin
        .batch_execute(&format!("CREATE DATABASE {}", quote_ident(&db)))
        .await?;
    let result = bench(&a, &env, w, &db, &pg, &snaps).await;
    if !a.keep {
        for name in [db.clone(), format!("{db}_base")] {
            let _ = admin
                .batch_execute(&format!(
                    "DROP DATABASE IF EXISTS {} WITH (FORCE)",
                    quote_ident(&name)
                ))
                .await;
        }
    } else {
        eprintln!("kept {} and database {db}", w.display());
        let _ = work.keep();
    }
    result
}

async fn bench(
    a: &Args,
    env: &PgEnv,
    w: &Path,
    db: &str,
    pg: &Pg,
    snaps: &Snapshots,
) -> Result<()> {
    let filestore = w.join("data/filestore").join(db);
    eprintln!("generating the data set in {}", w.display());
    let t = Instant::now();
    let db_size = generate_db(&pg.connect(db).await?, db, a.db_mb).await?;
    let fs_bytes = generate_filestore(&filestore, a.files, a.filestore_mb, 42)?;
    run(env
        .tool("psql")
        .args(["-X", "-q", "-d", db, "-c", "VACUUM ANALYZE"]))?;
    eprintln!(
        "  {:.0} MB database, {} files / {:.0} MiB filestore, generated in {:.0} s",
        db_size as f64 / 1e6,
        a.files,
        mib(fs_bytes),
        secs(t.elapsed())
    );
    let never = CancellationToken::new();
    let started = Instant::now();
    let verbose = a.verbose;
    let log = move |p: SnapshotProgress| {
        if !verbose {
            return;
        }
        match p {
            SnapshotProgress::Phase { phase, done, total } if done == 0 || done == total => {
                eprintln!("  [{:7.2}] {phase} {done}/{total}", secs(started.elapsed()))
            }
            SnapshotProgress::Log(line) => eprintln!("  [{:7.2}] {line}", secs(started.elapsed())),
            _ => {}
        }
    };
    let no_progress = &log;
    let req = |id: &str| CreateSnapshot {
        id: id.to_owned(),
        kind: SnapshotKind::Manual,
        deployment_id: None,
        commit_sha: None,
    };

    // Baseline (pg_dump -Fc, then tar | zstd -T0 -3, in sequence) and oCore's full snapshot,
    // `--repeat` times in turn: this machine's timings vary from run to run, so the median
    // ratio is the figure. Each round starts from an empty blob store.
    let base = w.join("baseline");
    let dump_file = base.join("db.dump");
    let tar_file = base.join("filestore.tar.zst");
    let mut rounds: Vec<Round> = Vec::new();
    for round in 0..a.repeat {
        if round > 0 {
            snaps.delete("bench", "full").await?;
            std::fs::remove_dir_all(&base)?;
        }
        std::fs::create_dir_all(&base)?;
        let t = Instant::now();
        run(env
            .tool("pg_dump")
            .arg("-Fc")
            .arg("-f")
            .arg(&dump_file)
            .arg(db))?;
        let base_dump = t.elapsed();
        let t = Instant::now();
        pipe(
            Command::new("tar")
                .arg("-cf")
                .arg("-")
                .arg("-C")
                .arg(filestore.parent().context("parent")?)
                .arg(db),
            Command::new("zstd")
                .args(["-q", "-T0", "-3", "-o"])
                .arg(&tar_file),
        )?;
        let base_tar = t.elapsed();
        let base_size = std::fs::metadata(&dump_file)?.len() + std::fs::metadata(&tar_file)?.len();
        let t = Instant::now();
        let meta = snaps
            .create("bench", req("full"), no_progress, &never)
            .await?;
        let time = t.elapsed();
        let manifest = snaps.manifest("bench", "full").await?;
        if let Some(first) = rounds.first() {
            ensure!(
                manifest.filestore.new_blobs == first.manifest.filestore.new_blobs,
                "round {round} did not start from an empty blob store"
            );
        }
        rounds.push(Round {
            base_dump,
            base_tar,
            base_size,
            time,
            meta,
            manifest,
        });
    }
    let mut ratios: Vec<f64> = rounds.iter().map(Round::time_ratio).collect();
    ratios.sort_by(f64::total_cmp);
    let median_ratio = ratios[ratios.len() / 2];
    let Some(last) = rounds.last() else {
        bail!("no round ran")
    };
    let (base_dump_time, base_tar_time, base_size) =
        (last.base_dump, last.base_tar, last.base_size);
    let base_time = base_dump_time + base_tar_time;
    let (full, full_time, m_full) = (last.meta.clone(), last.time, last.manifest.clone());

    // 1% new files.
    let mut rng = Rng(4242);
    let mean = mean_size(a.filestore_mb, a.files);
    let extra = (a.files / 100).max(1);
    let mut added = 0;
    for _ in 0..extra {
        let size = pick_size(&mut rng, mean);
        added += write_file(&filestore, &mut rng, size)?;
    }
    let t = Instant::now();
    snaps
        .create("bench", req("plus1"), no_progress, &never)
        .await?;
    let inc_time = t.elapsed();
    let m_inc = snaps.manifest("bench", "plus1").await?;

    // oCore full restore: the filestore is gone, every file is written.
    std::fs::remove_dir_all(&filestore)?;
    let t = Instant::now();
    snaps.restore("bench", "plus1", no_progress, &never).await?;
    let full_restore = t.elapsed();
    let t = Instant::now();
    snaps.settle().await;
    let drop_old = t.elapsed();
    // Back to before the 1%: only those files go.
    let t = Instant::now();
    snaps.restore("bench", "full", no_progress, &never).await?;
    let small_restore = t.elapsed();
    let files_now = walkdir::WalkDir::new(&filestore)
        .into_iter()
        .filter_map(Result::ok)
        .filter(|e| e.file_type().is_file())
        .count();
    ensure!(
        files_now as u64 == a.files,
        "the filestore is back to {} files",
        a.files
    );

    // Baseline restore: pg_restore -j 2 into a fresh database, zstd -d | tar -x. It runs
    // after oCore's so that both write their files soon after the same 10,000 deletions:
    // on ext4 without a journal, each new inode skips over recently deleted ones, so the
    // order would otherwise favour whichever ran first.
    let restored = w.join("restored");
    std::fs::create_dir_all(&restored)?;
    let base_db = format!("{db}_base");
    run(env.tool("createdb").arg(&base_db))?;
    let t = Instant::now();
    run(env
        .tool("pg_restore")
        .args(["-j", "2", "-d", &base_db])
        .arg(&dump_file))?;
    let base_restore_db = t.elapsed();
    let t = Instant::now();
    pipe(
        Command::new("zstd").args(["-q", "-d", "-c"]).arg(&tar_file),
        Command::new("tar")
            .arg("-xf")
            .arg("-")
            .arg("-C")
            .arg(&restored),
    )?;
    let base_restore_fs = t.elapsed();
    let base_restore = base_restore_db + base_restore_fs;
    std::fs::remove_dir_all(&restored)?;

    let dump_bytes: u64 = m_full.dump.parts.iter().map(|p| p.size).sum();
    let inc_dump_ms = m_inc.timings.database_ms;
    println!();
    println!(
        "data set: {:.0} MB database (pg_database_size), {} files / {:.0} MiB filestore",
        db_size as f64 / 1e6,
        a.files,
        mib(fs_bytes)
    );
    println!(
        "client: pg_dump {}; dump compression {}",
        m_full.dump.client_version, m_full.dump.compression
    );
    println!();
    println!("full snapshot");
    println!(
        "  baseline  pg_dump -Fc {:.2} s + tar|zstd -T0 -3 {:.2} s = {:.2} s, {:.1} MiB",
        secs(base_dump_time),
        secs(base_tar_time),
        secs(base_time),
        mib(base_size)
    );
    println!("  oCore     {:.2} s (database {:.2} s, filestore {:.2} s side by side), {:.1} MiB (dump {:.1} + blobs {:.1})",
        secs(full_time), m_full.timings.database_ms as f64 / 1e3, m_full.timings.filestore_ms as f64 / 1e3,
        mib(full.size_bytes), mib(dump_bytes), mib(m_full.filestore.new_stored_bytes));
    println!("  time ratio {:.2} (target <= 0.8), size ratio {:.2} (target <= 1.05); estimate was {:.1} MiB",
        secs(full_time) / secs(base_time), full.size_bytes as f64 / base_size as f64, mib(full.estimated_bytes));
    if rounds.len() > 1 {
        let each: Vec<String> = rounds
            .iter()
            .map(|r| {
                format!(
                    "{:.2} ({:.2} s / {:.2} s)",
                    r.time_ratio(),
                    secs(r.time),
                    secs(r.base_dump + r.base_tar)
                )
            })
            .collect();
        println!("  rounds    {}", each.join(", "));
        println!(
            "  median time ratio over {} rounds {:.2} (target <= 0.8)",
            rounds.len(),
            median_ratio
        );
    }
    println!();
    println!(
        "snapshot after adding 1% new files ({extra} files, {:.1} MiB)",
        mib(added)
    );
    println!(
        "  filestore part {:.3} s vs {:.2} s full: ratio {:.3} (target <= 0.10)",
        m_inc.timings.filestore_ms as f64 / 1e3,
        m_full.timings.filestore_ms as f64 / 1e3,
        m_inc.timings.filestore_ms as f64 / m_full.timings.filestore_ms.max(1) as f64
    );
    println!(
        "  new filestore bytes stored {:.2} MiB vs {:.1} MiB full: ratio {:.4} (target <= 0.02)",
        mib(m_inc.filestore.new_stored_bytes),
        mib(m_full.filestore.new_stored_bytes),
        m_inc.filestore.new_stored_bytes as f64 / m_full.filestore.new_stored_bytes.max(1) as f64
    );
    println!(
        "  database dump (not incremental) {:.2} s; whole snapshot {:.2} s",
        inc_dump_ms as f64 / 1e3,
        secs(inc_time)
    );
    println!();
    println!("restore");
    println!(
        "  baseline  pg_restore -j 2 {:.2} s + zstd -d|tar -x {:.2} s = {:.2} s",
        secs(base_restore_db),
        secs(base_restore_fs),
        secs(base_restore)
    );
    println!(
        "  oCore     full restore (database and every file) {:.2} s: ratio {:.2} (target <= 1.0)",
        secs(full_restore),
        secs(full_restore) / secs(base_restore)
    );
    println!(
        "  oCore     restore undoing the 1% new files (only those touched) {:.2} s",
        secs(small_restore)
    );
    println!(
        "  (after the full restore, dropping the replaced database in the background took {:.2} s more: its forced checkpoint)",
        secs(drop_old)
    );
    snaps.settle().await;
    Ok(())
}
