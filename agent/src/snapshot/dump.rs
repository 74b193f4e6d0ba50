//! The database side of snapshots: finding the PostgreSQL client of the right major version,
//! `pg_dump -Fd` / `pg_restore` / `psql` runs through `crate::exec`, and the SQL around them
//! (facts about a database, temporary databases, terminating connections, rename swaps).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

use super::errors::{query_err, PgError};
use crate::db::{quote_ident, Pg};
use crate::exec::{self, Program};

/// A stuck dump or restore fails here rather than holding the instance forever.
const TOOL_TIMEOUT: Duration = Duration::from_secs(6 * 3600);
/// How long a rename or template copy keeps retrying while connections drain.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(30);

/// The PostgreSQL client programs of one installation.
#[derive(Debug, Clone)]
pub struct PgTools {
    pub pg_dump: PathBuf,
    pub pg_restore: PathBuf,
    pub psql: PathBuf,
    /// e.g. `15.18`.
    pub version: String,
    pub major: u32,
}

impl PgTools {
    /// The `--compress` value for `pg_dump -Fd`: zstd from PostgreSQL 16 on, else gzip at a
    /// fast level (the dump runs beside the filestore on shared cores).
    pub fn compression(&self) -> String {
        if self.major >= 16 {
            "zstd:1".to_owned()
        } else {
            "1".to_owned()
        }
    }

    /// Finds the client: `pg_bin_dir` when configured; else the installed
    /// `/usr/lib/postgresql/<major>/bin` matching the server, else the oldest newer one, else
    /// the newest; else `/usr/bin`. The version is read from `pg_dump --version`.
    pub async fn discover(
        pg_bin_dir: Option<&Path>,
        server_major: u32,
        cancel: &CancellationToken,
    ) -> Result<Self, PgError> {
        let dir = match pg_bin_dir {
            Some(d) => d.to_owned(),
            None => pick_bin_dir(Path::new("/usr/lib/postgresql"), server_major)
                .unwrap_or_else(|| PathBuf::from("/usr/bin")),
        };
        let pg_dump = dir.join("pg_dump");
        let out = exec::run(
            &Program::new(&pg_dump).arg("--version"),
            Duration::from_secs(30),
            cancel,
        )
        .await?;
        let text = String::from_utf8_lossy(&out.stdout);
        let (version, major) = parse_version(&text).ok_or_else(|| {
            PgError::Client(format!(
                "cannot read the version of {} from {:?}",
                pg_dump.display(),
                text.trim()
            ))
        })?;
        if major < server_major {
            return Err(PgError::Client(format!(
                "{} is version {version}, older than the server ({server_major}); install the PostgreSQL {server_major} client or set snapshots.pg_bin_dir",
                pg_dump.display()
            )));
        }
        Ok(Self {
            pg_restore: dir.join("pg_restore"),
            psql: dir.join("psql"),
            pg_dump,
            version,
            major,
        })
    }
}

fn pick_bin_dir(base: &Path, server_major: u32) -> Option<PathBuf> {
    let mut majors: Vec<u32> = std::fs::read_dir(base)
        .ok()?
        .filter_map(Result::ok)
        .filter_map(|e| e.file_name().to_str()?.parse().ok())
        .filter(|m: &u32| base.join(m.to_string()).join("bin/pg_dump").is_file())
        .collect();
    majors.sort_unstable();
    let chosen = choose_major(&majors, server_major)?;
    Some(base.join(chosen.to_string()).join("bin"))
}

/// The client major for a server: the same, else the oldest newer, else the newest.
fn choose_major(installed: &[u32], server: u32) -> Option<u32> {
    if installed.contains(&server) {
        return Some(server);
    }
    installed
        .iter()
        .copied()
        .filter(|m| *m > server)
        .min()
        .or_else(|| installed.iter().copied().max())
}

/// `pg_dump (PostgreSQL) 15.18 (Debian 15.18-0+deb12u1)` → ("15.18", 15).
fn parse_version(text: &str) -> Option<(String, u32)> {
    let version = text
        .split_whitespace()
        .find(|w| w.chars().next().is_some_and(|c| c.is_ascii_digit()))?;
    let version: String = version
        .chars()
        .take_while(|c| c.is_ascii_digit() || *c == '.')
        .collect();
    let version = version.trim_end_matches('.');
    let major = version.split('.').next()?.parse().ok()?;
    Some((version.to_owned(), major))
}

/// Facts about a database recorded in the manifest.
#[derive(Debug, Clone)]
pub struct DbFacts {
    pub server_version: String,
    pub server_version_num: u32,
    pub size_bytes: u64,
    pub encoding: String,
    pub collate: String,
    pub ctype: String,
    pub owner: String,
    pub table_count: u64,
    pub modules: BTreeMap<String, Option<String>>,
}

pub async fn server_version(pg: &Pg) -> Result<(String, u32), PgError> {
    let client = pg.connect("postgres").await?;
    let row = client
        .query_one(
            "SELECT current_setting('server_version'), current_setting('server_version_num')::int4",
            &[],
        )
        .await
        .map_err(query_err("postgres"))?;
    let version: String = row.get(0);
    let num: i32 = row.get(1);
    Ok((short_version(&version), num.max(0) as u32))
}

/// `15.18 (Debian 15.18-0+deb12u1)` → `15.18`.
fn short_version(v: &str) -> String {
    v.split_whitespace().next().unwrap_or(v).to_owned()
}

/// Size, encoding, owner, table count and installed modules of `database`.
pub async fn facts(pg: &Pg, database: &str) -> Result<DbFacts, PgError> {
    let (server_version, server_version_num) = server_version(pg).await?;
    let admin = pg.connect("postgres").await?;
    let row = admin
        .query_opt(
            "SELECT pg_database_size(d.oid), pg_encoding_to_char(d.encoding), d.datcollate, \
                    d.datctype, pg_get_userbyid(d.datdba) \
             FROM pg_database d WHERE d.datname = $1",
            &[&database],
        )
        .await
        .map_err(query_err(database))?
        .ok_or_else(|| PgError::State {
            database: database.to_owned(),
            message: "does not exist".to_owned(),
        })?;
    let size: i64 = row.get(0);
    let client = pg.connect(database).await?;
    let tables: i64 = client
        .query_one(
            "SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
             WHERE c.relkind IN ('r', 'p', 'm') \
               AND n.nspname NOT IN ('pg_catalog', 'information_schema') \
               AND n.nspname NOT LIKE 'pg_toast%'",
            &[],
        )
        .await
        .map_err(query_err(database))?
        .get(0);
    Ok(DbFacts {
        server_version,
        server_version_num,
        size_bytes: size.max(0) as u64,
        encoding: row.get(1),
        collate: row.get(2),
        ctype: row.get(3),
        owner: row.get(4),
        table_count: tables.max(0) as u64,
        modules: modules(&client, database).await?,
    })
}

/// Installed modules and versions, when the database is an Odoo one.
pub async fn modules(
    client: &tokio_postgres::Client,
    database: &str,
) -> Result<BTreeMap<String, Option<String>>, PgError> {
    let exists: bool = client
        .query_one("SELECT to_regclass('ir_module_module') IS NOT NULL", &[])
        .await
        .map_err(query_err(database))?
        .get(0);
    if !exists {
        return Ok(BTreeMap::new());
    }
    let rows = client
        .query(
            "SELECT name::text, latest_version::text FROM ir_module_module \
             WHERE state = 'installed' ORDER BY name",
            &[],
        )
        .await
        .map_err(query_err(database))?;
    Ok(rows.iter().map(|r| (r.get(0), r.get(1))).collect())
}

/// `pg_dump -Fd -j N` of `database` into `dir`, reporting tables as they finish.
pub async fn dump(
    pg: &Pg,
    tools: &PgTools,
    database: &str,
    dir: &Path,
    jobs: u32,
    on_table: &mut (dyn FnMut() + Send),
    cancel: &CancellationToken,
) -> Result<(), PgError> {
    let program = Program::new(&tools.pg_dump)
        .envs(pg.tool_env())
        .arg("--format=directory")
        .arg(format!("--jobs={jobs}"))
        .arg(format!("--compress={}", tools.compression()))
        .arg("--verbose")
        .arg("--file")
        .arg(dir)
        .arg("--dbname")
        .arg(database);
    exec::run_streaming(&program, TOOL_TIMEOUT, cancel, |line| {
        if line.contains("dumping contents of table") {
            on_table();
        }
    })
    .await?;
    Ok(())
}

/// `pg_restore -j N` of the dump in `dir` into the existing, empty `database`.
#[allow(clippy::too_many_arguments)]
pub async fn restore(
    pg: &Pg,
    tools: &PgTools,
    dir: &Path,
    database: &str,
    jobs: u32,
    as_role: Option<&str>,
    on_table: &mut (dyn FnMut() + Send),
    cancel: &CancellationToken,
) -> Result<(), PgError> {
    let mut program = Program::new(&tools.pg_restore)
        .envs(pg.tool_env())
        .arg(format!("--jobs={jobs}"))
        .arg("--verbose");
    if let Some(role) = as_role {
        // A dump without owners: every object belongs to the database owner, as when
        // Odoo itself restores a backup.
        program = program.arg("--no-owner").arg(format!("--role={role}"));
    }
    let program = program.arg("--dbname").arg(database).arg(dir);
    exec::run_streaming(&program, TOOL_TIMEOUT, cancel, |line| {
        if line.contains("processing data for table") {
            on_table();
        }
    })
    .await?;
    Ok(())
}

/// The dump in `dir` as plain SQL (what Odoo's backup zip carries), without owners.
pub async fn to_plain_sql(
    tools: &PgTools,
    dir: &Path,
    out: &Path,
    cancel: &CancellationToken,
) -> Result<(), PgError> {
    let program = Program::new(&tools.pg_restore)
        .arg("--no-owner")
        .arg("--file")
        .arg(out)
        .arg(dir);
    exec::run(&program, TOOL_TIMEOUT, cancel).await?;
    Ok(())
}

/// Loads a plain SQL file into `database` with `psql`, stopping at the first error.
pub async fn load_plain_sql(
    pg: &Pg,
    tools: &PgTools,
    file: &Path,
    database: &str,
    cancel: &CancellationToken,
) -> Result<(), PgError> {
    let program = Program::new(&tools.psql)
        .envs(pg.tool_env())
        .args(["-X", "-q", "-v", "ON_ERROR_STOP=1", "--dbname"])
        .arg(database)
        .arg("--file")
        .arg(file);
    exec::run(&program, TOOL_TIMEOUT, cancel).await?;
    Ok(())
}

/// The owner of `database`, when it exists.
pub async fn owner_of(pg: &Pg, database: &str) -> Result<Option<String>, PgError> {
    let client = pg.connect("postgres").await?;
    Ok(client
        .query_opt(
            "SELECT pg_get_userbyid(datdba)::text FROM pg_database WHERE datname = $1",
            &[&database],
        )
        .await
        .map_err(query_err(database))?
        .map(|r| r.get(0)))
}

/// Creates an empty UTF-8 database with the server's default locale.
pub async fn create_default(pg: &Pg, database: &str) -> Result<(), PgError> {
    let client = pg.connect("postgres").await?;
    let sql = format!(
        "CREATE DATABASE {} WITH TEMPLATE template0 ENCODING 'UTF8'",
        quote_ident(database)
    );
    client
        .batch_execute(&sql)
        .await
        .map_err(query_err(database))
}

pub async fn exists(pg: &Pg, database: &str) -> Result<bool, PgError> {
    let client = pg.connect("postgres").await?;
    Ok(client
        .query_opt("SELECT 1 FROM pg_database WHERE datname = $1", &[&database])
        .await
        .map_err(query_err(database))?
        .is_some())
}

/// Creates an empty `database` like the one described (encoding, collation, owner). An
/// owner role that does not exist here is replaced by the connecting user.
pub async fn create_empty(
    pg: &Pg,
    database: &str,
    encoding: &str,
    collate: &str,
    ctype: &str,
    owner: &str,
) -> Result<(), PgError> {
    let client = pg.connect("postgres").await?;
    let owner_exists = client
        .query_opt("SELECT 1 FROM pg_roles WHERE rolname = $1", &[&owner])
        .await
        .map_err(query_err(database))?
        .is_some();
    let owner_sql = if owner_exists {
        format!(" OWNER {}", quote_ident(owner))
    } else {
        String::new()
    };
    let sql = format!(
        "CREATE DATABASE {} WITH TEMPLATE template0 ENCODING {} LC_COLLATE {} LC_CTYPE {}{owner_sql}",
        quote_ident(database),
        quote_literal(encoding),
        quote_literal(collate),
        quote_literal(ctype),
    );
    client
        .batch_execute(&sql)
        .await
        .map_err(query_err(database))
}

/// `CREATE DATABASE copy TEMPLATE source`, terminating connections to `source` until the
/// copy can start.
pub async fn copy_database(pg: &Pg, source: &str, copy: &str) -> Result<(), PgError> {
    let client = pg.connect("postgres").await?;
    let sql = format!(
        "CREATE DATABASE {} WITH TEMPLATE {}",
        quote_ident(copy),
        quote_ident(source)
    );
    retry_while_busy(&client, &[source], || client.batch_execute(&sql)).await
}

pub async fn drop_if_exists(pg: &Pg, database: &str) -> Result<(), PgError> {
    let client = pg.connect("postgres").await?;
    let sql = format!("DROP DATABASE IF EXISTS {}", quote_ident(database));
    retry_while_busy(&client, &[database], || client.batch_execute(&sql)).await
}

/// Renames `from` to `to`, terminating connections to `from` until it can.
pub async fn rename(pg: &Pg, from: &str, to: &str) -> Result<(), PgError> {
    let client = pg.connect("postgres").await?;
    let sql = format!(
        "ALTER DATABASE {} RENAME TO {}",
        quote_ident(from),
        quote_ident(to)
    );
    retry_while_busy(&client, &[from], || client.batch_execute(&sql)).await
}

/// Terminates every other session connected to `database`; returns how many there were.
pub async fn terminate(client: &tokio_postgres::Client, database: &str) -> Result<u64, PgError> {
    let rows = client
        .query(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
             WHERE datname = $1 AND pid <> pg_backend_pid()",
            &[&database],
        )
        .await
        .map_err(query_err(database))?;
    Ok(rows.len() as u64)
}

/// Runs `op`, and while it fails because other sessions use `databases` (SQLSTATE 55006),
/// terminates them and tries again, until `DRAIN_TIMEOUT`.
async fn retry_while_busy<F, Fut>(
    client: &tokio_postgres::Client,
    databases: &[&str],
    mut op: F,
) -> Result<(), PgError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<(), tokio_postgres::Error>>,
{
    let deadline = Instant::now() + DRAIN_TIMEOUT;
    loop {
        for db in databases {
            terminate(client, db).await?;
        }
        match op().await {
            Ok(()) => return Ok(()),
            Err(e)
                if e.code() == Some(&tokio_postgres::error::SqlState::OBJECT_IN_USE)
                    && Instant::now() < deadline =>
            {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => return Err(query_err(databases.first().copied().unwrap_or(""))(e)),
        }
    }
}

/// Free bytes where the server keeps its data, when that directory is on this host and the
/// agent may read the setting; `None` otherwise (the check is then PostgreSQL's own).
pub async fn data_dir_free(pg: &Pg) -> Option<(PathBuf, u64)> {
    let client = pg.connect("postgres").await.ok()?;
    let row = client
        .query_opt(
            "SELECT setting FROM pg_settings WHERE name = 'data_directory'",
            &[],
        )
        .await
        .ok()??;
    let dir = PathBuf::from(row.get::<_, String>(0));
    let free = super::disk::free_bytes(&dir).ok()?;
    dir.is_dir().then_some((dir, free))
}

/// A SQL string literal (standard_conforming_strings, on since PostgreSQL 9.1).
fn quote_literal(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_versions_are_read_and_chosen() {
        assert_eq!(
            parse_version("pg_dump (PostgreSQL) 15.18 (Debian 15.18-0+deb12u1)\n"),
            Some(("15.18".to_owned(), 15))
        );
        assert_eq!(
            parse_version("pg_dump (PostgreSQL) 17beta1"),
            Some(("17".to_owned(), 17))
        );
        assert_eq!(parse_version("nonsense"), None);
        assert_eq!(choose_major(&[13, 15, 16], 15), Some(15));
        assert_eq!(choose_major(&[13, 16, 17], 15), Some(16));
        assert_eq!(choose_major(&[12, 13], 15), Some(13));
        assert_eq!(choose_major(&[], 15), None);
        assert_eq!(short_version("15.18 (Debian 15.18-0+deb12u1)"), "15.18");
    }

    #[test]
    fn compression_follows_the_client() {
        let mut t = PgTools {
            pg_dump: "/x".into(),
            pg_restore: "/x".into(),
            psql: "/x".into(),
            version: "15.1".into(),
            major: 15,
        };
        assert_eq!(t.compression(), "1");
        t.major = 16;
        assert_eq!(t.compression(), "zstd:1");
        assert_eq!(quote_literal("C'x"), "'C''x'");
    }
}
