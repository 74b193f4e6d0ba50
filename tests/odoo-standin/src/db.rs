//! Everything the stand-in does in PostgreSQL: creating the database and Odoo's module tables,
//! applying an install/update plan in one transaction, and the queries the HTTP pages run.

use std::collections::BTreeSet;
use std::fmt;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use postgres::{Client, NoTls};

use crate::addons::Addons;
use crate::config::{DbParams, WithoutDemo};
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
    latest_version varchar,
    demo boolean DEFAULT false
);
CREATE TABLE IF NOT EXISTS ir_config_parameter (
    id serial PRIMARY KEY,
    key varchar NOT NULL UNIQUE,
    value text,
    create_date timestamp,
    write_date timestamp
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
CREATE TABLE IF NOT EXISTS ir_model_data (
    id serial PRIMARY KEY,
    module varchar NOT NULL,
    name varchar NOT NULL,
    model varchar NOT NULL,
    res_id int,
    UNIQUE (module, name)
);
CREATE TABLE IF NOT EXISTS res_lang (
    id serial PRIMARY KEY,
    code varchar NOT NULL UNIQUE,
    name varchar NOT NULL,
    active boolean DEFAULT false
);
CREATE TABLE IF NOT EXISTS res_currency (
    id serial PRIMARY KEY,
    name varchar NOT NULL UNIQUE
);
CREATE TABLE IF NOT EXISTS res_country (
    id serial PRIMARY KEY,
    code varchar NOT NULL UNIQUE,
    name varchar NOT NULL,
    currency_id int REFERENCES res_currency (id)
);
CREATE TABLE IF NOT EXISTS res_partner (
    id serial PRIMARY KEY,
    name varchar,
    lang varchar,
    country_id int REFERENCES res_country (id),
    active boolean DEFAULT true
);
CREATE TABLE IF NOT EXISTS res_company (
    id serial PRIMARY KEY,
    name varchar NOT NULL,
    partner_id int REFERENCES res_partner (id),
    currency_id int REFERENCES res_currency (id)
);
CREATE TABLE IF NOT EXISTS res_users (
    id serial PRIMARY KEY,
    login varchar NOT NULL UNIQUE,
    password varchar,
    partner_id int REFERENCES res_partner (id),
    active boolean DEFAULT true
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

/// Languages `base` knows (en_US active), as `res.lang` rows: `(code, name)`.
const LANGUAGES: &[(&str, &str)] = &[
    ("en_US", "English (US)"),
    ("en_GB", "English (UK)"),
    ("fr_FR", "French / Français"),
    ("fr_BE", "French (BE) / Français (BE)"),
    ("nl_BE", "Dutch (BE) / Nederlands (BE)"),
    ("nl_NL", "Dutch / Nederlands"),
    ("de_DE", "German / Deutsch"),
    ("es_ES", "Spanish / Español"),
    ("it_IT", "Italian / Italiano"),
];

/// Countries `base` loads: `(code, name, currency)`.
const COUNTRIES: &[(&str, &str, &str)] = &[
    ("BE", "Belgium", "EUR"),
    ("FR", "France", "EUR"),
    ("DE", "Germany", "EUR"),
    ("NL", "Netherlands", "EUR"),
    ("ES", "Spain", "EUR"),
    ("IT", "Italy", "EUR"),
    ("GB", "United Kingdom", "GBP"),
    ("US", "United States", "USD"),
];

/// Loads `base`'s data, as `odoo -i base` does on a new database: languages (en_US
/// active), currencies, countries, the main company and its partner, the superuser and
/// the administrator; with demo data also the demo user and partners, which cannot be told
/// apart from real ones later.
fn load_base_data(tx: &mut postgres::Transaction<'_>, demo: bool) -> Result<(), postgres::Error> {
    let xmlid = |tx: &mut postgres::Transaction<'_>, name: &str, model: &str, id: i32| {
        tx.execute(
            "INSERT INTO ir_model_data (module, name, model, res_id) VALUES ('base', $1, $2, $3)
             ON CONFLICT (module, name) DO NOTHING",
            &[&name, &model, &id],
        )
    };
    for (code, name) in LANGUAGES {
        let row = tx.query_one(
            "INSERT INTO res_lang (code, name, active) VALUES ($1, $2, $3)
             ON CONFLICT (code) DO UPDATE SET name = EXCLUDED.name RETURNING id",
            &[code, name, &(*code == "en_US")],
        )?;
        let id: i32 = row.get(0);
        xmlid(tx, &format!("lang_{}", code.to_lowercase()), "res.lang", id)?;
    }
    for currency in ["EUR", "USD", "GBP"] {
        let row = tx.query_one(
            "INSERT INTO res_currency (name) VALUES ($1)
             ON CONFLICT (name) DO UPDATE SET name = EXCLUDED.name RETURNING id",
            &[&currency],
        )?;
        let id: i32 = row.get(0);
        xmlid(tx, currency, "res.currency", id)?;
    }
    for (code, name, currency) in COUNTRIES {
        let row = tx.query_one(
            "INSERT INTO res_country (code, name, currency_id)
             VALUES ($1, $2, (SELECT id FROM res_currency WHERE name = $3))
             ON CONFLICT (code) DO UPDATE SET name = EXCLUDED.name RETURNING id",
            &[code, name, currency],
        )?;
        let id: i32 = row.get(0);
        xmlid(tx, &code.to_lowercase(), "res.country", id)?;
    }
    let partner =
        |tx: &mut postgres::Transaction<'_>, name: &str| -> Result<i32, postgres::Error> {
            Ok(tx
                .query_one(
                    "INSERT INTO res_partner (name, lang) VALUES ($1, 'en_US') RETURNING id",
                    &[&name],
                )?
                .get(0))
        };
    let main_partner = partner(tx, "My Company")?;
    xmlid(tx, "main_partner", "res.partner", main_partner)?;
    let company: i32 = tx
        .query_one(
            "INSERT INTO res_company (name, partner_id, currency_id)
             VALUES ('My Company', $1, (SELECT id FROM res_currency WHERE name = 'USD')) RETURNING id",
            &[&main_partner],
        )?
        .get(0);
    xmlid(tx, "main_company", "res.company", company)?;
    let user = |tx: &mut postgres::Transaction<'_>,
                login: &str,
                password: &str,
                partner_id: i32,
                active: bool|
     -> Result<i32, postgres::Error> {
        Ok(tx
            .query_one(
                "INSERT INTO res_users (login, password, partner_id, active) VALUES ($1, $2, $3, $4) RETURNING id",
                &[&login, &password, &partner_id, &active],
            )?
            .get(0))
    };
    let root_partner = partner(tx, "OdooBot")?;
    xmlid(tx, "partner_root", "res.partner", root_partner)?;
    let root = user(tx, "__system__", "", root_partner, false)?;
    xmlid(tx, "user_root", "res.users", root)?;
    // Odoo names the administrator "Mitchell Admin" in its demo data.
    let admin_partner = partner(
        tx,
        if demo {
            "Mitchell Admin"
        } else {
            "Administrator"
        },
    )?;
    xmlid(tx, "partner_admin", "res.partner", admin_partner)?;
    let admin = user(tx, "admin", "admin", admin_partner, true)?;
    xmlid(tx, "user_admin", "res.users", admin)?;
    if demo {
        let demo_partner = partner(tx, "Marc Demo")?;
        xmlid(tx, "partner_demo", "res.partner", demo_partner)?;
        let demo_user = user(tx, "demo", "demo", demo_partner, true)?;
        xmlid(tx, "user_demo", "res.users", demo_user)?;
        for (i, name) in ["Azure Interior", "Deco Addict", "Gemini Furniture"]
            .into_iter()
            .enumerate()
        {
            let id = partner(tx, name)?;
            xmlid(tx, &format!("res_partner_{}", 12 + i), "res.partner", id)?;
        }
    }
    Ok(())
}

#[derive(Debug)]
pub enum RunError {
    Db(postgres::Error),
    Plan(PlanError),
    /// A module carrying the `OCORE_FAIL_UPDATE` marker (a module that fails to import)
    /// was to be loaded: installed, installed now or updated.
    Injected {
        module: String,
        path: String,
    },
    /// `--load-language` named a language Odoo does not know.
    UnknownLanguage(String),
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
            RunError::UnknownLanguage(code) => {
                write!(f, "Unable to get information for locale {code}")
            }
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
    /// Modules left `to install`, `to upgrade` or `to remove` after the run.
    pub inconsistent: Vec<String>,
}

/// What a run is asked.
pub struct RunRequest<'a> {
    pub init: &'a [String],
    pub update: &'a [String],
    pub without_demo: &'a WithoutDemo,
    pub load_language: &'a [String],
    pub run_id: &'a str,
}

/// Creates the tables and `base` if needed (with demo data unless `--without-demo`), then
/// applies `-i`/`-u` in one transaction, so a failure leaves the database exactly as it
/// was, as Odoo's rollback of a failed update does.
pub fn initialize_and_run(
    client: &mut Client,
    db: &str,
    addons: &Addons,
    request: &RunRequest<'_>,
) -> Result<RunOutcome, RunError> {
    let (init, update, run_id) = (request.init, request.update, request.run_id);
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
    // Whether the database has demo data decides it for every module installed later.
    let database_demo: bool;
    if base_state.as_deref() != Some("installed") {
        database_demo = request.without_demo.demo_for(BASE);
        if database_demo {
            log::info(Some(db), LOADING, "Module base: loading demo");
        }
        record(&mut tx, run_id, BASE, Action::Install, BASE_VERSION)?;
        tx.execute(
            "UPDATE ir_module_module SET demo = $2 WHERE name = $1",
            &[&BASE, &database_demo],
        )?;
        load_base_data(&mut tx, database_demo)?;
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
                "INSERT INTO ir_config_parameter (key, value, create_date, write_date)
                 VALUES ($1, $2, now() AT TIME ZONE 'UTC', now() AT TIME ZONE 'UTC')
                 ON CONFLICT (key) DO NOTHING",
                &[&key, &value],
            )?;
        }
    } else {
        database_demo = tx
            .query_one(
                "SELECT coalesce(demo, false) FROM ir_module_module WHERE name = $1",
                &[&BASE],
            )?
            .get(0);
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
            "SELECT name FROM ir_module_module WHERE state IN ('installed', 'to upgrade')",
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
    // The registry imports every installed module it can find: one that fails to import
    // fails the whole run, whatever was asked (so every later -u fails too).
    let loaded = installed
        .iter()
        .filter_map(|m| addons.get(m))
        .chain(plan.steps.iter().filter_map(|s| addons.get(&s.module)));
    for module in loaded {
        if module.markers.fail_update {
            return Err(RunError::Injected {
                module: module.name.clone(),
                path: module.path.display().to_string(),
            });
        }
    }
    for name in &plan.skipped {
        // button_upgrade marks it; the loader then cannot find it.
        tx.execute(
            "UPDATE ir_module_module SET state = 'to upgrade' WHERE name = $1",
            &[name],
        )?;
        log::warning(
            Some(db),
            "odoo.modules.graph",
            &format!("module {name}: not installable, skipped"),
        );
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
        log::info(
            Some(db),
            "odoo.modules.registry",
            &format!(
                "module {}: creating or updating database tables",
                step.module
            ),
        );
        record(&mut tx, run_id, &step.module, step.action, &step.version)?;
        if step.action == Action::Install {
            let demo = database_demo && request.without_demo.demo_for(&step.module);
            tx.execute(
                "UPDATE ir_module_module SET demo = $2 WHERE name = $1",
                &[&step.module, &demo],
            )?;
            if demo {
                log::info(
                    Some(db),
                    LOADING,
                    &format!("Module {}: loading demo", step.module),
                );
            }
        }
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
    for code in request.load_language {
        let activated = tx.execute("UPDATE res_lang SET active = true WHERE code = $1", &[code])?;
        if activated == 0 {
            return Err(RunError::UnknownLanguage(code.clone()));
        }
        log::info(
            Some(db),
            "odoo.tools.translate",
            &format!("loading translation file for language '{code}'"),
        );
    }
    let inconsistent: Vec<String> = tx
        .query(
            "SELECT name FROM ir_module_module WHERE state IN ('to install', 'to upgrade', 'to remove') ORDER BY name",
            &[],
        )?
        .iter()
        .map(|row| row.get(0))
        .collect();
    tx.commit()?;
    Ok(RunOutcome {
        steps: steps_done,
        missing_installed,
        inconsistent,
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
