//! Everything the stand-in does in PostgreSQL: creating the database and Odoo's module tables,
//! applying an install/update plan in one transaction, and the queries the HTTP pages run.

use std::collections::BTreeSet;
use std::fmt;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use postgres::{Client, NoTls};

use crate::addons::Addons;
use crate::config::DbParams;
use crate::log;
use crate::plan::{self, Action, PlanError, Step, BASE, BASE_VERSION};
use crate::sha1;

const LOADING: &str = "odoo.modules.loading";

/// A fixed advisory-lock key so that two stand-ins initialising one database take turns.
const INIT_LOCK_KEY: i64 = 0x0c0e_0d00;

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS ir_module_module (
    id serial PRIMARY KEY,
    name varchar NOT NULL UNIQUE,
    state varchar,
    latest_version varchar
);
CREATE TABLE IF NOT EXISTS ir_config_parameter (
    id serial PRIMARY KEY,
    key varchar NOT NULL UNIQUE,
    value text
);
CREATE TABLE IF NOT EXISTS ir_attachment (
    id serial PRIMARY KEY,
    name varchar,
    store_fname varchar,
    checksum varchar,
    file_size int,
    mimetype varchar,
    create_date timestamp DEFAULT now()
);
CREATE TABLE IF NOT EXISTS ocore_test_update_log (
    id serial PRIMARY KEY,
    run_id varchar,
    module varchar,
    action varchar,
    version varchar,
    at timestamp DEFAULT now()
);
";

#[derive(Debug)]
pub enum RunError {
    Db(postgres::Error),
    Plan(PlanError),
    /// A module carrying the `OCORE_FAIL_UPDATE` marker was installed or updated.
    Injected {
        module: String,
        path: String,
    },
}

impl fmt::Display for RunError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RunError::Db(e) => write!(f, "{}", describe(e)),
            RunError::Plan(e) => write!(f, "{e}"),
            RunError::Injected { module, .. } => write!(
                f,
                "OCORE_FAIL_UPDATE: injected failure while loading module {module}"
            ),
        }
    }
}

impl std::error::Error for RunError {}

impl From<postgres::Error> for RunError {
    fn from(e: postgres::Error) -> Self {
        RunError::Db(e)
    }
}

impl From<PlanError> for RunError {
    fn from(e: PlanError) -> Self {
        RunError::Plan(e)
    }
}

/// Opens a connection, named `odoo-<pid>` as Odoo names its connections.
pub fn connect(params: &DbParams, dbname: &str) -> Result<Client, postgres::Error> {
    let mut config = postgres::Config::new();
    config
        .host(&params.host)
        .port(params.port)
        .user(&params.user)
        .dbname(dbname)
        .application_name(&format!("odoo-{}", std::process::id()))
        .connect_timeout(Duration::from_secs(10));
    if let Some(password) = &params.password {
        config.password(password);
    }
    log::debug(
        Some(dbname),
        "odoo.sql_db",
        &format!(
            "connection to {}@{}:{}",
            params.user, params.host, params.port
        ),
    );
    config.connect(NoTls)
}

/// Waits for PostgreSQL to accept connections, as the official image's `wait-for-psql.py` does
/// before starting Odoo.
pub fn wait_for_server(params: &DbParams, timeout: Duration) -> Result<(), postgres::Error> {
    let deadline = Instant::now() + timeout;
    loop {
        match connect(params, "postgres") {
            Ok(_) => return Ok(()),
            Err(e) if Instant::now() >= deadline => return Err(e),
            Err(_) => std::thread::sleep(Duration::from_secs(1)),
        }
    }
}

/// Describes a PostgreSQL error with the server's own message when there is one (the driver's
/// `Display` says only "db error").
pub fn describe(error: &postgres::Error) -> String {
    match error.as_db_error() {
        Some(db) => format!("{}: {}", db.severity(), db.message()),
        None => match std::error::Error::source(error) {
            Some(source) => format!("{error}: {source}"),
            None => error.to_string(),
        },
    }
}

/// Quotes an SQL identifier.
pub fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// Creates the database if it does not exist, as `odoo -d new_db` does. Returns whether it did.
pub fn ensure_database(params: &DbParams, db: &str) -> Result<bool, postgres::Error> {
    let mut client = connect(params, "postgres")?;
    let exists = client
        .query_opt("SELECT 1 FROM pg_database WHERE datname = $1", &[&db])?
        .is_some();
    if exists {
        return Ok(false);
    }
    let sql = format!(
        "CREATE DATABASE {} ENCODING 'unicode' LC_COLLATE 'C' TEMPLATE \"template0\"",
        quote_ident(db)
    );
    match client.batch_execute(&sql) {
        Ok(()) => Ok(true),
        // Another process created it between the check and now.
        Err(e) if e.code() == Some(&postgres::error::SqlState::DUPLICATE_DATABASE) => Ok(false),
        Err(e) => Err(e),
    }
}

/// What a successful run did.
#[derive(Debug)]
pub struct RunOutcome {
    pub steps: Vec<Step>,
    /// Installed modules that are no longer on the addons path.
    pub missing_installed: Vec<String>,
}

/// Creates the tables and `base` if needed, then applies `-i`/`-u` in one transaction, so a
/// failure leaves the database exactly as it was.
pub fn initialize_and_run(
    client: &mut Client,
    db: &str,
    addons: &Addons,
    init: &[String],
    update: &[String],
    run_id: &str,
) -> Result<RunOutcome, RunError> {
    let started = Instant::now();
    let mut tx = client.transaction()?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&INIT_LOCK_KEY])?;
    let initialized: bool = tx
        .query_one("SELECT to_regclass('ir_module_module') IS NOT NULL", &[])?
        .get(0);
    if !initialized {
        log::info(Some(db), "odoo.modules.db", "init db");
    }
    tx.batch_execute(SCHEMA)?;

    log::info(Some(db), LOADING, "loading 1 modules...");
    let base_state: Option<String> = tx
        .query_opt(
            "SELECT state FROM ir_module_module WHERE name = $1",
            &[&BASE],
        )?
        .and_then(|row| row.get(0));
    let mut steps_done = Vec::new();
    if base_state.as_deref() != Some("installed") {
        record(&mut tx, run_id, BASE, Action::Install, BASE_VERSION)?;
        steps_done.push(Step {
            module: BASE.to_string(),
            action: Action::Install,
            version: BASE_VERSION.to_string(),
        });
        let uuid = pseudo_uuid(db);
        let created = log::timestamp(SystemTime::now());
        let created = created.split(',').next().unwrap_or_default().to_string();
        for (key, value) in [("database.uuid", uuid), ("database.create_date", created)] {
            tx.execute(
                "INSERT INTO ir_config_parameter (key, value) VALUES ($1, $2) ON CONFLICT (key) DO NOTHING",
                &[&key, &value],
            )?;
        }
    }
    log::info(
        Some(db),
        LOADING,
        &format!(
            "1 modules loaded in {:.2}s, 0 queries (+0 extra)",
            started.elapsed().as_secs_f64()
        ),
    );

    let changing = !init.is_empty() || !update.is_empty();
    if changing || !initialized {
        log::info(Some(db), LOADING, "updating modules list");
        update_list(&mut tx, addons)?;
    }

    let installed: BTreeSet<String> = tx
        .query(
            "SELECT name FROM ir_module_module WHERE state = 'installed'",
            &[],
        )?
        .iter()
        .map(|row| row.get(0))
        .collect();
    let missing_installed: Vec<String> = installed
        .iter()
        .filter(|m| m.as_str() != BASE && addons.get(m).is_none())
        .cloned()
        .collect();

    let plan = plan::plan(addons, &installed, init, update)?;
    for warning in &plan.warnings {
        log::warning(Some(db), LOADING, warning);
    }
    if !plan.steps.is_empty() {
        let total = installed.len()
            + plan
                .steps
                .iter()
                .filter(|s| s.action == Action::Install)
                .count();
        log::info(Some(db), LOADING, &format!("loading {total} modules..."));
    }
    for (index, step) in plan.steps.iter().enumerate() {
        log::info(
            Some(db),
            LOADING,
            &format!(
                "Loading module {} ({}/{})",
                step.module,
                index + 1,
                plan.steps.len()
            ),
        );
        if let Some(module) = addons.get(&step.module).filter(|m| m.markers.fail_update) {
            return Err(RunError::Injected {
                module: module.name.clone(),
                path: module.path.display().to_string(),
            });
        }
        log::info(
            Some(db),
            "odoo.modules.registry",
            &format!(
                "module {}: creating or updating database tables",
                step.module
            ),
        );
        record(&mut tx, run_id, &step.module, step.action, &step.version)?;
        log::info(
            Some(db),
            LOADING,
            &format!(
                "Module {} {} to version {}",
                step.module,
                match step.action {
                    Action::Install => "installed",
                    Action::Update => "updated",
                },
                step.version
            ),
        );
        steps_done.push(step.clone());
    }
    tx.commit()?;
    Ok(RunOutcome {
        steps: steps_done,
        missing_installed,
    })
}

/// Marks one module installed at `version` and writes it to the test log.
fn record(
    tx: &mut postgres::Transaction<'_>,
    run_id: &str,
    module: &str,
    action: Action,
    version: &str,
) -> Result<(), postgres::Error> {
    tx.execute(
        "INSERT INTO ir_module_module (name, state, latest_version) VALUES ($1, 'installed', $2)
         ON CONFLICT (name) DO UPDATE SET state = 'installed', latest_version = EXCLUDED.latest_version",
        &[&module, &version],
    )?;
    tx.execute(
        "INSERT INTO ocore_test_update_log (run_id, module, action, version) VALUES ($1, $2, $3, $4)",
        &[&run_id, &module, &action.as_str(), &version],
    )?;
    Ok(())
}

/// Registers every module on the addons path, as Odoo's `update_list` does.
fn update_list(tx: &mut postgres::Transaction<'_>, addons: &Addons) -> Result<(), postgres::Error> {
    for module in addons.modules.values() {
        let state = if module.manifest.installable {
            "uninstalled"
        } else {
            "uninstallable"
        };
        tx.execute(
            "INSERT INTO ir_module_module (name, state) VALUES ($1, $2) ON CONFLICT (name) DO NOTHING",
            &[&module.name, &state],
        )?;
        tx.execute(
            "UPDATE ir_module_module SET state = $2
             WHERE name = $1 AND state IN ('uninstalled', 'uninstallable') AND state <> $2",
            &[&module.name, &state],
        )?;
    }
    Ok(())
}

/// A random-looking UUID for `database.uuid`; uniqueness across test databases is all it needs.
fn pseudo_uuid(db: &str) -> String {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_nanos();
    let hex = sha1::hex_digest(format!("{nanos}-{}-{db}", std::process::id()).as_bytes());
    format!(
        "{}-{}-4{}-a{}-{}",
        &hex[0..8],
        &hex[8..12],
        &hex[13..16],
        &hex[17..20],
        &hex[20..32]
    )
}

/// Installed modules and their versions, by name.
pub fn installed_modules(client: &mut Client) -> Result<Vec<(String, String)>, postgres::Error> {
    Ok(client
        .query(
            "SELECT name, coalesce(latest_version, '') FROM ir_module_module
             WHERE state = 'installed' ORDER BY name",
            &[],
        )?
        .iter()
        .map(|row| (row.get(0), row.get(1)))
        .collect())
}

/// The query `/web/login` runs to prove the database loads.
pub fn count_modules(client: &mut Client) -> Result<i64, postgres::Error> {
    Ok(client
        .query_one("SELECT count(*) FROM ir_module_module", &[])?
        .get(0))
}

/// Databases the user may see, as Odoo's database selector lists them.
pub fn list_databases(params: &DbParams) -> Result<Vec<String>, postgres::Error> {
    let mut client = connect(params, "postgres")?;
    Ok(client
        .query(
            "SELECT datname FROM pg_database
             WHERE NOT datistemplate AND datname <> 'postgres' ORDER BY datname",
            &[],
        )?
        .iter()
        .map(|row| row.get(0))
        .collect())
}

/// Inserts an `ir_attachment` row for a file already in the filestore; returns its id.
pub fn insert_attachment(
    client: &mut Client,
    name: &str,
    store_fname: &str,
    checksum: &str,
    file_size: i32,
    mimetype: &str,
) -> Result<i32, postgres::Error> {
    Ok(client
        .query_one(
            "INSERT INTO ir_attachment (name, store_fname, checksum, file_size, mimetype)
             VALUES ($1, $2, $3, $4, $5) RETURNING id",
            &[&name, &store_fname, &checksum, &file_size, &mimetype],
        )?
        .get(0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quotes_identifiers() {
        assert_eq!(quote_ident("testdb"), "\"testdb\"");
        assert_eq!(quote_ident("we\"ird"), "\"we\"\"ird\"");
    }

    #[test]
    fn pseudo_uuids_look_like_uuids() {
        let uuid = pseudo_uuid("x");
        let parts: Vec<usize> = uuid.split('-').map(str::len).collect();
        assert_eq!(parts, [8, 4, 4, 4, 12]);
    }
}
