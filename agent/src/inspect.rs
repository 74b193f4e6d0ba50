//! `ocore-agent modules`: the checksum of each module of an addons path, computed as the
//! agent computes it for a deployment (click-odoo-update's `addon_hash`), and, with a
//! database, each module's state and whether the next deployment would update it. What
//! `click-odoo-update --list-only` tells, without Odoo.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::addons::{self, ChecksumRules};
use crate::db::Pg;
use crate::pipeline::modules::{self, DatabaseFacts};
use crate::pipeline::plan;

#[derive(Debug, thiserror::Error)]
pub enum InspectError {
    #[error("{0} is not a folder")]
    NotAFolder(PathBuf),
    #[error(transparent)]
    Addons(#[from] addons::AddonsError),
    #[error(transparent)]
    Modules(#[from] modules::ModulesError),
    #[error(transparent)]
    Db(#[from] crate::db::DbError),
    #[error("database {0} does not exist")]
    NoDatabase(String),
}

/// One module of the report.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ModuleReport {
    pub name: String,
    pub path: PathBuf,
    pub checksum: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub state: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stored_checksum: Option<String>,
    /// With a database: whether the next deployment would update the module.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub update: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// The whole report.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Report {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub database: Option<String>,
    pub languages: Vec<String>,
    pub exclude_patterns: Vec<String>,
    pub modules: Vec<ModuleReport>,
}

/// Every module directly in the folders of `addons_path`, the first of a name winning as
/// on Odoo's addons path.
pub fn modules_on_path(addons_path: &[PathBuf]) -> Result<BTreeMap<String, PathBuf>, InspectError> {
    let mut found = BTreeMap::new();
    for dir in addons_path {
        if !dir.is_dir() {
            return Err(InspectError::NotAFolder(dir.clone()));
        }
        let mut names: Vec<(String, PathBuf)> = std::fs::read_dir(dir)
            .map_err(|source| addons::AddonsError::Io {
                path: dir.clone(),
                source,
            })?
            .flatten()
            .filter(|e| e.path().join("__manifest__.py").is_file())
            .map(|e| (e.file_name().to_string_lossy().into_owned(), e.path()))
            .collect();
        names.sort();
        for (name, path) in names {
            found.entry(name).or_insert(path);
        }
    }
    Ok(found)
}

/// The report for `addons_path` with `languages` active (no database).
pub fn report_offline(
    addons_path: &[PathBuf],
    languages: &[String],
    exclude: Option<&str>,
) -> Result<Report, InspectError> {
    let rules = ChecksumRules::new(exclude, languages);
    let modules = checksums(addons_path, &rules)?
        .into_iter()
        .map(|(name, (path, checksum))| ModuleReport {
            name,
            path,
            checksum,
            state: None,
            stored_checksum: None,
            update: None,
            reason: None,
        })
        .collect();
    Ok(Report {
        database: None,
        languages: languages.to_vec(),
        exclude_patterns: rules.exclude,
        modules,
    })
}

fn checksums(
    addons_path: &[PathBuf],
    rules: &ChecksumRules,
) -> Result<BTreeMap<String, (PathBuf, String)>, InspectError> {
    let mut out = BTreeMap::new();
    for (name, path) in modules_on_path(addons_path)? {
        let sum = addons::module_checksum(&path, rules)?;
        out.insert(name, (path, sum));
    }
    Ok(out)
}

/// The report for `addons_path` against `database`: its languages and exclude patterns,
/// each module's state and stored checksum, and what the next deployment would update.
pub async fn report_database(
    pg: &Pg,
    addons_path: &[PathBuf],
    database: &str,
) -> Result<Report, InspectError> {
    let facts: DatabaseFacts = modules::database_facts(pg, database).await?;
    if !facts.exists {
        return Err(InspectError::NoDatabase(database.to_owned()));
    }
    let rules = facts.rules();
    let sums = checksums(addons_path, &rules)?;
    let current: BTreeMap<String, String> = sums
        .iter()
        .map(|(n, (_, s))| (n.clone(), s.clone()))
        .collect();
    let installed: BTreeSet<String> = facts.installed();
    let depends = BTreeMap::new();
    // The serving commit is the agent's to know; without it, a module installed with no
    // stored checksum counts as to be updated (the agent may adopt the serving commit's).
    let decided = plan::decide(&plan::Inputs {
        installed: &installed,
        stored: &facts.stored,
        current: &current,
        serving: None,
        depends: &depends,
    });
    let reasons: BTreeMap<&str, &plan::Reason> = decided
        .entries
        .iter()
        .map(|e| (e.module.as_str(), &e.reason))
        .collect();
    let modules = sums
        .into_iter()
        .map(|(name, (path, checksum))| {
            let row = facts.modules.get(&name);
            let reason = reasons.get(name.as_str()).map(|r| match r {
                plan::Reason::NoStoredChecksum => {
                    "no stored checksum (a deployment first compares with the serving commit's)"
                        .to_owned()
                }
                other => other.describe(),
            });
            ModuleReport {
                update: Some(reasons.contains_key(name.as_str())),
                reason,
                state: Some(row.map_or("unknown".to_owned(), |r| r.state.clone())),
                stored_checksum: facts.stored.get(&name).cloned(),
                name,
                path,
                checksum,
            }
        })
        .collect();
    Ok(Report {
        database: Some(database.to_owned()),
        languages: facts.languages.clone(),
        exclude_patterns: rules.exclude,
        modules,
    })
}

/// The report as a table for people.
pub fn render_text(report: &Report) -> String {
    let mut out = String::new();
    if let Some(db) = &report.database {
        out.push_str(&format!("database: {db}\n"));
    }
    out.push_str(&format!(
        "languages: {}\nexclude patterns: {}\n",
        if report.languages.is_empty() {
            "(none: every translation counts)".to_owned()
        } else {
            report.languages.join(", ")
        },
        report.exclude_patterns.join(",")
    ));
    let width = report
        .modules
        .iter()
        .map(|m| m.name.len())
        .max()
        .unwrap_or(6)
        .max(6);
    for m in &report.modules {
        out.push_str(&format!("{:width$}  {}", m.name, m.checksum));
        if let Some(state) = &m.state {
            out.push_str(&format!("  {state:<12}"));
            match (&m.update, &m.reason) {
                (Some(true), Some(reason)) => out.push_str(&format!("  update: {reason}")),
                (Some(false), _) if state == "installed" || state == "to upgrade" => {
                    out.push_str("  unchanged")
                }
                (Some(false), _) => out.push_str("  not installed"),
                _ => {}
            }
        }
        out.push('\n');
    }
    out
}

/// Splits `a,b` lists of paths.
pub fn split_paths(value: &str) -> Vec<PathBuf> {
    value
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| Path::new(s).to_owned())
        .collect()
}
