//! `ocore snapshot …`: an environment's snapshots, through the agent holding it: list,
//! take by hand, show, pin, unpin, delete and estimate. Retention is
//! `ocore environment settings`.

use std::time::{Duration, Instant};

use clap::Subcommand;
use serde_json::{json, Value};

use super::client::ApiClient;
use super::output::{self, field};
use super::{CliError, Format};

#[derive(Subcommand)]
pub enum SnapshotCommand {
    /// List an environment's snapshots.
    List {
        #[arg(long)]
        environment: String,
    },
    /// Take a manual snapshot now.
    Create {
        #[arg(long)]
        environment: String,
        /// Wait until it is taken (or failed).
        #[arg(long)]
        wait: bool,
    },
    /// Show one snapshot.
    Show {
        snapshot: String,
        #[arg(long)]
        environment: String,
    },
    /// Pin a snapshot: retention never deletes it.
    Pin {
        snapshot: String,
        #[arg(long)]
        environment: String,
    },
    /// Unpin a snapshot.
    Unpin {
        snapshot: String,
        #[arg(long)]
        environment: String,
    },
    /// Delete a snapshot.
    Delete {
        snapshot: String,
        #[arg(long)]
        environment: String,
    },
    /// Estimate the size of a snapshot taken now.
    Estimate {
        #[arg(long)]
        environment: String,
    },
}

fn print(s: &Value) {
    println!(
        "snapshot {} ({}, {}{}), {} bytes, created {}",
        field(s, "id"),
        field(s, "kind"),
        field(s, "state"),
        if s["pinned"] == json!(true) {
            ", pinned"
        } else {
            ""
        },
        field(s, "sizeBytes"),
        field(s, "createdAt")
    );
    if !s["error"].is_null() {
        println!("  error: {}", field(s, "error"));
    }
}

pub fn run(client: &ApiClient, cmd: SnapshotCommand, format: Format) -> Result<(), CliError> {
    let base = |env: &str| format!("/api/environments/{env}/snapshots");
    let answer = match cmd {
        SnapshotCommand::List { environment } => {
            let answer = client.get(&base(&environment))?;
            if format == Format::Text {
                if let Some(e) = answer["agentError"].as_str() {
                    println!("(the agent did not answer, showing what the coordinator knows: {e})");
                }
                let rows: Vec<Vec<String>> = answer["snapshots"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|s| {
                        vec![
                            field(s, "id"),
                            field(s, "kind"),
                            field(s, "state"),
                            field(s, "pinned"),
                            field(s, "sizeBytes"),
                            field(s, "createdAt"),
                            field(s, "deploymentId"),
                        ]
                    })
                    .collect();
                output::table(
                    &[
                        "ID",
                        "KIND",
                        "STATE",
                        "PINNED",
                        "BYTES",
                        "CREATED",
                        "DEPLOYMENT",
                    ],
                    &rows,
                );
                return Ok(());
            }
            answer
        }
        SnapshotCommand::Create { environment, wait } => {
            let started = client.post(&base(&environment), &json!({}))?;
            if !wait {
                started
            } else {
                let path = format!("{}/{}", base(&environment), field(&started, "id"));
                let deadline = Instant::now() + Duration::from_secs(6 * 3600);
                loop {
                    let s = client.get(&path)?;
                    if s["state"] != json!("creating") || Instant::now() > deadline {
                        if s["state"] == json!("failed") {
                            return Err(CliError::Outcome(format!(
                                "snapshot {} failed: {}",
                                field(&s, "id"),
                                field(&s, "error")
                            )));
                        }
                        break s;
                    }
                    std::thread::sleep(Duration::from_secs(1));
                }
            }
        }
        SnapshotCommand::Show {
            snapshot,
            environment,
        } => client.get(&format!("{}/{snapshot}", base(&environment)))?,
        SnapshotCommand::Pin {
            snapshot,
            environment,
        } => client.post(
            &format!("{}/{snapshot}/pin", base(&environment)),
            &json!({}),
        )?,
        SnapshotCommand::Unpin {
            snapshot,
            environment,
        } => client.post(
            &format!("{}/{snapshot}/unpin", base(&environment)),
            &json!({}),
        )?,
        SnapshotCommand::Delete {
            snapshot,
            environment,
        } => {
            let answer = client.delete(&format!("{}/{snapshot}", base(&environment)))?;
            match format {
                Format::Json => output::json(&answer),
                Format::Text => println!(
                    "snapshot {snapshot} deleted, {} bytes freed",
                    field(&answer, "freedBytes")
                ),
            }
            return Ok(());
        }
        SnapshotCommand::Estimate { environment } => {
            let answer = client.get(&format!("{}/estimate", base(&environment)))?;
            match format {
                Format::Json => output::json(&answer),
                Format::Text => println!(
                    "estimated {} bytes (database {} bytes, new filestore {} bytes, ratio {}); {} bytes free",
                    field(&answer, "estimatedBytes"),
                    field(&answer, "databaseBytes"),
                    field(&answer, "newFilestoreBytes"),
                    field(&answer, "compressionRatio"),
                    field(&answer, "freeDiskBytes")
                ),
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
