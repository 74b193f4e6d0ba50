//! `ocore environment …`: create, list, show, rename and delete environments, and show or
//! change their snapshot retention.

use clap::Subcommand;
use serde_json::{json, Value};

use super::client::ApiClient;
use super::output::{self, field};
use super::{CliError, Format};

#[derive(Subcommand)]
pub enum EnvironmentCommand {
    /// Create an environment (one database and filestore) of a project.
    Create {
        /// Environment id, e.g. shop-prod.
        id: String,
        /// The project (id).
        #[arg(long)]
        project: String,
        /// Display name, e.g. "production" (defaults to the id).
        #[arg(long)]
        name: Option<String>,
        /// Keep at most this many unpinned snapshots (0: no limit).
        #[arg(long)]
        keep_last: Option<u32>,
        /// Delete unpinned snapshots older than this many days (0: no limit).
        #[arg(long)]
        keep_days: Option<u32>,
    },
    /// List environments.
    #[command(visible_alias = "ls")]
    List {
        /// The project (id).
        #[arg(long)]
        project: Option<String>,
    },
    /// Show one environment.
    Show {
        /// Environment id.
        id: String,
    },
    /// Rename an environment.
    Update {
        /// Environment id.
        id: String,
        #[arg(long)]
        name: String,
    },
    /// Delete an environment without instance or branch mapping.
    Delete {
        /// Environment id.
        id: String,
    },
    /// Show the snapshot retention settings, or change them with --keep-last/--keep-days.
    Settings {
        /// Environment id.
        id: String,
        /// Keep at most this many unpinned snapshots (0: no limit).
        #[arg(long)]
        keep_last: Option<u32>,
        /// Delete unpinned snapshots older than this many days (0: no limit).
        #[arg(long)]
        keep_days: Option<u32>,
    },
}

fn print(e: &Value) {
    println!("id:        {}", field(e, "id"));
    println!("project:   {}", field(e, "projectId"));
    println!("name:      {}", field(e, "name"));
    println!("instance:  {}", field(e, "instanceId"));
    let branches: Vec<String> = e["branches"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|b| b.as_str().map(str::to_owned))
        .collect();
    println!(
        "branches:  {}",
        if branches.is_empty() {
            "-".to_owned()
        } else {
            branches.join(", ")
        }
    );
    let s = &e["snapshotSettings"];
    println!(
        "retention: keep last {}, keep {} days",
        field(s, "keepLast"),
        field(s, "keepDays")
    );
}

pub fn run(client: &ApiClient, cmd: EnvironmentCommand, format: Format) -> Result<(), CliError> {
    let answer = match cmd {
        EnvironmentCommand::Create {
            id,
            project,
            name,
            keep_last,
            keep_days,
        } => {
            let mut body = json!({"id": id, "projectId": project, "name": name});
            if keep_last.is_some() || keep_days.is_some() {
                body["snapshotSettings"] = json!({
                    "keepLast": keep_last.unwrap_or(crate::domain::DEFAULT_KEEP_LAST),
                    "keepDays": keep_days.unwrap_or(crate::domain::DEFAULT_KEEP_DAYS),
                });
            }
            client.post("/api/environments", &body)?
        }
        EnvironmentCommand::List { project } => {
            let path = match project {
                Some(p) => format!("/api/environments?projectId={}", super::mapping::encode(&p)),
                None => "/api/environments".to_owned(),
            };
            let answer = client.get(&path)?;
            if format == Format::Text {
                let rows: Vec<Vec<String>> = answer["environments"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|e| {
                        vec![
                            field(e, "id"),
                            field(e, "projectId"),
                            field(e, "name"),
                            field(e, "instanceId"),
                            e["branches"].as_array().map_or(0, Vec::len).to_string(),
                        ]
                    })
                    .collect();
                output::table(&["ID", "PROJECT", "NAME", "INSTANCE", "BRANCHES"], &rows);
                return Ok(());
            }
            answer
        }
        EnvironmentCommand::Show { id } => client.get(&format!(
            "/api/environments/{}",
            super::mapping::encode(&id)
        ))?,
        EnvironmentCommand::Update { id, name } => client.patch(
            &format!("/api/environments/{}", super::mapping::encode(&id)),
            &json!({"name": name}),
        )?,
        EnvironmentCommand::Delete { id } => {
            client.delete(&format!(
                "/api/environments/{}",
                super::mapping::encode(&id)
            ))?;
            let answer = json!({"deleted": id});
            match format {
                Format::Json => output::json(&answer),
                Format::Text => println!("environment {id} deleted"),
            }
            return Ok(());
        }
        EnvironmentCommand::Settings {
            id,
            keep_last,
            keep_days,
        } => {
            let path = format!(
                "/api/environments/{}/snapshot-settings",
                super::mapping::encode(&id)
            );
            let answer = if keep_last.is_none() && keep_days.is_none() {
                client.get(&path)?
            } else {
                let current = client.get(&path)?;
                let body = json!({
                    "keepLast": keep_last.or(current["keepLast"].as_u64().and_then(|v| u32::try_from(v).ok())),
                    "keepDays": keep_days.or(current["keepDays"].as_u64().and_then(|v| u32::try_from(v).ok())),
                });
                client.put(&path, &body)?
            };
            match format {
                Format::Json => output::json(&answer),
                Format::Text => {
                    println!(
                        "environment {id}: keep last {} snapshots, keep {} days (0: no limit)",
                        field(&answer, "keepLast"),
                        field(&answer, "keepDays")
                    );
                    let r = &answer["retention"];
                    if r["applied"] == json!(true) {
                        println!(
                            "retention applied: {} snapshot(s) deleted",
                            r["deletedSnapshotIds"].as_array().map_or(0, Vec::len)
                        );
                    } else if !r.is_null() {
                        println!("retention not applied now: {}", field(r, "error"));
                    }
                }
            }
            return Ok(());
        }
    };
    match format {
        Format::Json => output::json(&answer),
        Format::Text => print(&answer),
    }
    Ok(())
}
