//! Which modules a deployment updates, and recording what the database now holds.
//!
//! The checksums of installed modules live in the database itself
//! (`ir_config_parameter`, key `module_auto_update.installed_checksums`, as
//! click-odoo-update keeps them), so they always describe the database they are in, also
//! after a snapshot is restored.

use std::collections::{BTreeMap, HashMap, HashSet};

use crate::db::{DbError, Pg};

/// The `ir_config_parameter` key holding the checksums.
pub const CHECKSUMS_KEY: &str = "module_auto_update.installed_checksums";

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
        message: e.to_string(),
    }
}

/// What the database says: installed modules and their stored checksums. A database that
/// does not exist yet, or has no Odoo tables, has nothing installed.
pub async fn database_modules(
    pg: &Pg,
    database: &str,
) -> Result<(HashSet<String>, HashMap<String, String>), ModulesError> {
    let admin = pg.connect("postgres").await?;
    let exists = admin
        .query_opt("SELECT 1 FROM pg_database WHERE datname = $1", &[&database])
        .await
        .map_err(query(database))?
        .is_some();
    drop(admin);
    if !exists {
        return Ok((HashSet::new(), HashMap::new()));
    }
    let client = pg.connect(database).await?;
    let has_tables = client
        .query_one(
            "SELECT to_regclass('ir_module_module') IS NOT NULL AND to_regclass('ir_config_parameter') IS NOT NULL",
            &[],
        )
        .await
        .map_err(query(database))?
        .get::<_, bool>(0);
    if !has_tables {
        return Ok((HashSet::new(), HashMap::new()));
    }
    let installed = client
        .query(
            "SELECT name FROM ir_module_module WHERE state IN ('installed', 'to upgrade')",
            &[],
        )
        .await
        .map_err(query(database))?
        .into_iter()
        .map(|row| row.get::<_, String>(0))
        .collect();
    let stored = client
        .query_opt(
            "SELECT value FROM ir_config_parameter WHERE key = $1",
            &[&CHECKSUMS_KEY],
        )
        .await
        .map_err(query(database))?
        .and_then(|row| row.get::<_, Option<String>>(0))
        .and_then(|text| serde_json::from_str::<HashMap<String, String>>(&text).ok())
        .unwrap_or_default();
    Ok((installed, stored))
}

/// Stores the checksums of every installed module after a successful update.
pub async fn save_checksums(
    pg: &Pg,
    database: &str,
    current: &BTreeMap<String, String>,
) -> Result<usize, ModulesError> {
    let client = pg.connect(database).await?;
    let installed: HashSet<String> = client
        .query(
            "SELECT name FROM ir_module_module WHERE state = 'installed'",
            &[],
        )
        .await
        .map_err(query(database))?
        .into_iter()
        .map(|row| row.get::<_, String>(0))
        .collect();
    let sums: BTreeMap<&String, &String> = current
        .iter()
        .filter(|(name, _)| installed.contains(*name))
        .collect();
    let text = serde_json::to_string(&sums).unwrap_or_else(|_| "{}".to_owned());
    let updated = client
        .execute(
            "UPDATE ir_config_parameter SET value = $2 WHERE key = $1",
            &[&CHECKSUMS_KEY, &text],
        )
        .await
        .map_err(query(database))?;
    if updated == 0 {
        client
            .execute(
                "INSERT INTO ir_config_parameter (key, value) VALUES ($1, $2)",
                &[&CHECKSUMS_KEY, &text],
            )
            .await
            .map_err(query(database))?;
    }
    Ok(sums.len())
}
