//! What the database says about its modules, and what the agent writes back.
//!
//! The checksums of installed modules live in the database itself (`ir_config_parameter`,
//! key `module_auto_update.installed_checksums`, as click-odoo-update and OCA's
//! module_auto_update keep them), so they always describe the database they are in, also
//! after a snapshot is restored. How they are computed depends on the database too: its
//! active languages (`res_lang`) and its `module_auto_update.exclude_patterns`.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use crate::addons::ChecksumRules;
use crate::db::{DbError, Pg};
use crate::manifest;

/// The `ir_config_parameter` key holding the checksums.
pub const CHECKSUMS_KEY: &str = "module_auto_update.installed_checksums";
/// The `ir_config_parameter` key overriding the checksum's exclude patterns.
pub const EXCLUDE_KEY: &str = "module_auto_update.exclude_patterns";

#[derive(Debug, thiserror::Error)]
pub enum ModulesError {
    #[error(transparent)]
    Db(#[from] DbError),
    #[error("database {database}: {message}")]
    Query { database: String, message: String },
}

fn query(database: &str) -> impl FnOnce(tokio_postgres::Error) -> ModulesError + '_ {
    move |e| ModulesError::Query {
        database: database.to_owned(),
        message: crate::db::describe(&e),
    }
}

/// A module row of `ir_module_module`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModuleRow {
    pub state: String,
    pub version: Option<String>,
}

/// What an instance's database holds, as far as deployments care.
#[derive(Debug, Clone, Default)]
pub struct DatabaseFacts {
    pub exists: bool,
    /// Odoo's tables are there (`ir_module_module`).
    pub initialized: bool,
    /// Every module row, by name.
    pub modules: BTreeMap<String, ModuleRow>,
    /// Stored checksums; entries that are not strings (click-odoo-update stores `false` for
    /// a module it cannot find) count as none.
    pub stored: HashMap<String, String>,
    /// Codes of the active languages.
    pub languages: Vec<String>,
    /// `module_auto_update.exclude_patterns`, when set.
    pub exclude_patterns: Option<String>,
}

impl DatabaseFacts {
    /// Modules installed, or installed and marked for upgrade (as click-odoo-update counts).
    pub fn installed(&self) -> BTreeSet<String> {
        self.modules
            .iter()
            .filter(|(_, r)| r.state == "installed" || r.state == "to upgrade")
            .map(|(n, _)| n.clone())
            .collect()
    }

    /// The rules the checksums of this database are computed with.
    pub fn rules(&self) -> ChecksumRules {
        ChecksumRules::new(self.exclude_patterns.as_deref(), &self.languages)
    }

    /// The Odoo series of the database (`17.0`), from the version `base` is installed at.
    pub fn serie(&self) -> Option<String> {
        let version = self.modules.get("base")?.version.as_deref()?;
        let mut parts = version.split('.');
        Some(format!("{}.{}", parts.next()?, parts.next()?))
    }
}

/// Reads the facts of `database`. A database that does not exist, or has no Odoo tables,
/// has none.
pub async fn database_facts(pg: &Pg, database: &str) -> Result<DatabaseFacts, ModulesError> {
    let admin = pg.connect("postgres").await?;
    let exists = admin
        .query_opt("SELECT 1 FROM pg_database WHERE datname = $1", &[&database])
        .await
        .map_err(query(database))?
        .is_some();
    drop(admin);
    let mut facts = DatabaseFacts {
        exists,
        ..DatabaseFacts::default()
    };
    if !exists {
        return Ok(facts);
    }
    let client = pg.connect(database).await?;
    let row = client
        .query_one(
            "SELECT to_regclass('ir_module_module') IS NOT NULL,
                    to_regclass('ir_config_parameter') IS NOT NULL,
                    to_regclass('res_lang') IS NOT NULL",
            &[],
        )
        .await
        .map_err(query(database))?;
    let (modules, params, langs): (bool, bool, bool) = (row.get(0), row.get(1), row.get(2));
    facts.initialized = modules;
    if !modules {
        return Ok(facts);
    }
    facts.modules = client
        .query(
            "SELECT name, coalesce(state, ''), latest_version FROM ir_module_module",
            &[],
        )
        .await
        .map_err(query(database))?
        .into_iter()
        .map(|row| {
            (
                row.get::<_, String>(0),
                ModuleRow {
                    state: row.get(1),
                    version: row.get(2),
                },
            )
        })
        .collect();
    if params {
        let param = |key: &'static str| {
            let client = &client;
            async move {
                client
                    .query_opt(
                        "SELECT value FROM ir_config_parameter WHERE key = $1",
                        &[&key],
                    )
                    .await
                    .map(|row| row.and_then(|r| r.get::<_, Option<String>>(0)))
            }
        };
        let stored = param(CHECKSUMS_KEY).await.map_err(query(database))?;
        facts.stored = parse_checksums(stored.as_deref());
        facts.exclude_patterns = param(EXCLUDE_KEY)
            .await
            .map_err(query(database))?
            .filter(|v| !v.is_empty());
    }
    if langs {
        facts.languages = client
            .query("SELECT code FROM res_lang WHERE active ORDER BY code", &[])
            .await
            .map_err(query(database))?
            .into_iter()
            .map(|row| row.get::<_, String>(0))
            .collect();
    }
    Ok(facts)
}

/// The stored checksums JSON; anything unreadable counts as no checksums at all.
pub fn parse_checksums(text: Option<&str>) -> HashMap<String, String> {
    let Some(text) = text else {
        return HashMap::new();
    };
    match serde_json::from_str::<serde_json::Value>(text) {
        Ok(serde_json::Value::Object(map)) => map
            .into_iter()
            .filter_map(|(k, v)| v.as_str().map(|s| (k, s.to_owned())))
            .collect(),
        _ => HashMap::new(),
    }
}

/// Records `sums` for the modules installed now, keeping the entries of other installed
/// modules and dropping those of modules no longer installed. Returns how many of `sums`
/// were recorded.
pub async fn record_checksums(
    pg: &Pg,
    database: &str,
    sums: &BTreeMap<String, String>,
) -> Result<usize, ModulesError> {
    let mut client = pg.connect(database).await?;
    let tx = client.transaction().await.map_err(query(database))?;
    // One writer at a time (another deployment cannot run, but an operator's
    // click-odoo-update could): lock the parameter row's key.
    tx.execute(
        "SELECT pg_advisory_xact_lock(hashtext($1))",
        &[&CHECKSUMS_KEY],
    )
    .await
    .map_err(query(database))?;
    let installed: BTreeSet<String> = tx
        .query(
            "SELECT name FROM ir_module_module WHERE state = 'installed'",
            &[],
        )
        .await
        .map_err(query(database))?
        .into_iter()
        .map(|row| row.get::<_, String>(0))
        .collect();
    let existing: Option<String> = tx
        .query_opt(
            "SELECT value FROM ir_config_parameter WHERE key = $1",
            &[&CHECKSUMS_KEY],
        )
        .await
        .map_err(query(database))?
        .and_then(|row| row.get(0));
    let mut merged: BTreeMap<String, serde_json::Value> = match existing
        .as_deref()
        .map(serde_json::from_str::<serde_json::Value>)
    {
        Some(Ok(serde_json::Value::Object(map))) => map.into_iter().collect(),
        _ => BTreeMap::new(),
    };
    merged.retain(|name, _| installed.contains(name));
    let mut recorded = 0;
    for (name, sum) in sums {
        if installed.contains(name) {
            merged.insert(name.clone(), serde_json::Value::String(sum.clone()));
            recorded += 1;
        }
    }
    let text = serde_json::to_string(&merged).unwrap_or_else(|_| "{}".to_owned());
    // As click-odoo-update writes it, with Odoo's UTC timestamps.
    let updated = tx
        .execute(
            "UPDATE ir_config_parameter SET value = $2, write_date = now() AT TIME ZONE 'UTC'
             WHERE key = $1",
            &[&CHECKSUMS_KEY, &text],
        )
        .await
        .map_err(query(database))?;
    if updated == 0 {
        tx.execute(
            "INSERT INTO ir_config_parameter (key, value, create_date, write_date)
             VALUES ($1, $2, now() AT TIME ZONE 'UTC', now() AT TIME ZONE 'UTC')",
            &[&CHECKSUMS_KEY, &text],
        )
        .await
        .map_err(query(database))?;
    }
    tx.commit().await.map_err(query(database))?;
    Ok(recorded)
}

/// Gives a database oCore just created the instance's language and country, as Odoo's
/// database manager does when it creates one (`odoo/service/db.py`, `_initialize_db`):
/// the administrator speaks the language (loaded by `--load-language`), and the main
/// company is in the country with its currency. Returns what it did, for the step's log.
pub async fn settle_new_database(
    pg: &Pg,
    database: &str,
    language: &str,
    country: Option<&str>,
) -> Result<Vec<String>, ModulesError> {
    let mut client = pg.connect(database).await?;
    let tx = client.transaction().await.map_err(query(database))?;
    let mut done = Vec::new();
    let active: Option<bool> = tx
        .query_opt("SELECT active FROM res_lang WHERE code = $1", &[&language])
        .await
        .map_err(query(database))?
        .map(|row| row.get(0));
    if active != Some(true) {
        return Err(ModulesError::Query {
            database: database.to_owned(),
            message: format!("language {language} is not active after odoo --load-language; is it a language Odoo knows?"),
        });
    }
    // base.user_admin's partner; ir_model_data names Odoo's own records.
    let admin_partner = "SELECT u.partner_id FROM res_users u JOIN ir_model_data d
         ON d.model = 'res.users' AND d.res_id = u.id AND d.module = 'base' AND d.name = 'user_admin'";
    let n = tx
        .execute(
            &format!("UPDATE res_partner SET lang = $1 WHERE id IN ({admin_partner})"),
            &[&language],
        )
        .await
        .map_err(query(database))?;
    if n > 0 {
        done.push(format!("the administrator's language is {language}"));
    }
    if let Some(code) = country {
        let found = tx
            .query_opt(
                "SELECT id, currency_id FROM res_country WHERE code = $1",
                &[&code],
            )
            .await
            .map_err(query(database))?;
        let Some(row) = found else {
            return Err(ModulesError::Query {
                database: database.to_owned(),
                message: format!("country {code} is not in res_country"),
            });
        };
        let country_id: i32 = row.get(0);
        let currency_id: Option<i32> = row.get(1);
        let company = "SELECT c.id FROM res_company c JOIN ir_model_data d
             ON d.model = 'res.company' AND d.res_id = c.id AND d.module = 'base' AND d.name = 'main_company'";
        tx.execute(
            &format!(
                "UPDATE res_partner SET country_id = $1 WHERE id IN (SELECT partner_id FROM res_company WHERE id IN ({company}))"
            ),
            &[&country_id],
        )
        .await
        .map_err(query(database))?;
        if let Some(currency) = currency_id {
            tx.execute(
                &format!("UPDATE res_company SET currency_id = $1 WHERE id IN ({company})"),
                &[&currency],
            )
            .await
            .map_err(query(database))?;
        }
        done.push(format!(
            "the main company is in {code}{}",
            if currency_id.is_some() {
                ", with its currency"
            } else {
                ""
            }
        ));
    }
    tx.commit().await.map_err(query(database))?;
    Ok(done)
}

/// What a module update must leave: every module it updated or installed `installed` at
/// its manifest's version, and no module left to install, upgrade or remove. Returns the
/// problems found (empty when the update really happened).
pub fn update_problems(facts: &DatabaseFacts, expected: &BTreeMap<String, String>) -> Vec<String> {
    let mut problems = Vec::new();
    let serie = facts.serie();
    for (module, manifest_version) in expected {
        match facts.modules.get(module) {
            None => problems.push(format!("module {module} is not in the database")),
            Some(row) if row.state != "installed" => {
                problems.push(format!("module {module} is {:?}, not installed", row.state))
            }
            Some(row) => {
                let want = serie
                    .as_deref()
                    .and_then(|s| manifest::adapt_version(s, manifest_version).ok());
                if let Some(want) = want {
                    if row.version.as_deref() != Some(want.as_str()) {
                        problems.push(format!(
                            "module {module} is at version {}, not {want} as its manifest says",
                            row.version.as_deref().unwrap_or("(none)")
                        ));
                    }
                }
            }
        }
    }
    let pending: Vec<String> = facts
        .modules
        .iter()
        .filter(|(_, r)| matches!(r.state.as_str(), "to install" | "to upgrade" | "to remove"))
        .map(|(n, r)| format!("{n} ({})", r.state))
        .collect();
    if !pending.is_empty() {
        problems.push(format!("modules left pending: {}", pending.join(", ")));
    }
    problems
}

#[cfg(test)]
mod tests {
    use super::*;

    fn facts(rows: &[(&str, &str, &str)]) -> DatabaseFacts {
        DatabaseFacts {
            exists: true,
            initialized: true,
            modules: rows
                .iter()
                .map(|(n, s, v)| {
                    (
                        (*n).to_owned(),
                        ModuleRow {
                            state: (*s).to_owned(),
                            version: Some((*v).to_owned()),
                        },
                    )
                })
                .collect(),
            ..DatabaseFacts::default()
        }
    }

    #[test]
    fn stored_checksums_tolerate_click_odoo_update_false_entries() {
        let parsed = parse_checksums(Some(r#"{"a": "1", "gone": false, "b": "2"}"#));
        assert_eq!(parsed.len(), 2);
        assert_eq!(parsed.get("a").map(String::as_str), Some("1"));
        assert!(parse_checksums(Some("not json")).is_empty());
        assert!(parse_checksums(None).is_empty());
    }

    #[test]
    fn series_comes_from_base() {
        assert_eq!(
            facts(&[("base", "installed", "17.0.1.3")])
                .serie()
                .as_deref(),
            Some("17.0")
        );
        assert_eq!(DatabaseFacts::default().serie(), None);
    }

    #[test]
    fn an_update_that_did_not_happen_is_found() {
        let expected: BTreeMap<String, String> = [("a", "1.0"), ("b", "17.0.2.0.0")]
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect();
        let good = facts(&[
            ("base", "installed", "17.0.1.3"),
            ("a", "installed", "17.0.1.0"),
            ("b", "installed", "17.0.2.0.0"),
        ]);
        assert!(update_problems(&good, &expected).is_empty());
        // Odoo skipped the modules (not on its addons path): they stay `to upgrade`.
        let skipped = facts(&[
            ("base", "installed", "17.0.1.3"),
            ("a", "to upgrade", "17.0.0.9"),
            ("b", "installed", "17.0.2.0.0"),
        ]);
        let problems = update_problems(&skipped, &expected);
        assert!(
            problems.iter().any(|p| p.contains("a is \"to upgrade\"")),
            "{problems:?}"
        );
        assert!(problems
            .iter()
            .any(|p| p.contains("left pending: a (to upgrade)")));
        // Installed, but the old version.
        let stale = facts(&[
            ("base", "installed", "17.0.1.3"),
            ("a", "installed", "17.0.0.9"),
            ("b", "installed", "17.0.2.0.0"),
        ]);
        assert!(update_problems(&stale, &expected)[0].contains("not 17.0.1.0"));
    }
}
