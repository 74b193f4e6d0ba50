//! `ocore snapshot …`: an environment's snapshots, through the agent holding it: list,
//! take by hand, show, pin, unpin, delete, estimate and verify; restore one over the live
//! database (`rollback.rs`, shared with `deploy rollback`); export and import
//! (`snapshot_transfer.rs`) move them between hosts. Retention is
//! `ocore environment settings`.

use std::time::{Duration, Instant};

use clap::{Args, Subcommand};
use serde_json::{json, Value};

use super::client::ApiClient;
use super::mapping::encode;
use super::output::{self, field};
use super::term;
use super::{CliError, Format};

/// A snapshot named by position or by `--snapshot`, and its environment.
#[derive(Args)]
pub struct SnapshotRef {
    /// Snapshot id.
    #[arg(value_name = "SNAPSHOT", required_unless_present = "snapshot_flag")]
    snapshot: Option<String>,
    /// Snapshot id (instead of the positional argument).
    #[arg(
        long = "snapshot",
        id = "snapshot_flag",
        value_name = "SNAPSHOT",
        conflicts_with = "snapshot"
    )]
    snapshot_flag: Option<String>,
    /// The environment holding the snapshot.
    #[arg(long)]
    pub environment: String,
}

impl SnapshotRef {
    pub fn id(&self) -> String {
        self.snapshot
            .clone()
            .or_else(|| self.snapshot_flag.clone())
            .unwrap_or_default()
    }

    fn path(&self) -> String {
        format!(
            "/api/environments/{}/snapshots/{}",
            encode(&self.environment),
            encode(&self.id())
        )
    }
}

#[derive(Subcommand)]
pub enum SnapshotCommand {
    /// List an environment's snapshots, newest first.
    #[command(visible_alias = "ls")]
    List {
        /// The environment (id).
        #[arg(long)]
        environment: String,
    },
    /// Take a manual snapshot now (in the background unless --wait).
    Create {
        /// The environment (id).
        #[arg(long)]
        environment: String,
        /// Wait until it is taken (exit 1 if it fails).
        #[arg(long)]
        wait: bool,
    },
    /// Show one snapshot.
    Show {
        #[command(flatten)]
        target: SnapshotRef,
    },
    /// Pin a snapshot: retention never deletes it.
    Pin {
        #[command(flatten)]
        target: SnapshotRef,
    },
    /// Unpin a snapshot.
    Unpin {
        #[command(flatten)]
        target: SnapshotRef,
    },
    /// Delete a snapshot (unpin it first if pinned).
    #[command(visible_alias = "rm")]
    Delete {
        #[command(flatten)]
        target: SnapshotRef,
    },
    /// Estimate the size of a snapshot taken now, and the free disk.
    Estimate {
        /// The environment (id).
        #[arg(long)]
        environment: String,
    },
    /// Read every stored part of a snapshot back and check it against its manifest
    /// (exit 1 when it is corrupt).
    Verify {
        #[command(flatten)]
        target: SnapshotRef,
    },
    /// Restore a snapshot over the environment's database and filestore, with the image
    /// that served when it was taken (an imported one keeps the image serving now): shows
    /// the plan, then asks.
    Restore(super::rollback::RestoreArgs),
    /// Download a snapshot as one archive file (written atomically: complete or absent).
    Export(super::snapshot_transfer::ExportArgs),
    /// Upload an archive (from `snapshot export`, or an Odoo backup zip) as a new
    /// snapshot of an environment, e.g. on another host.
    Import(super::snapshot_transfer::ImportArgs),
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
    let base = |env: &str| format!("/api/environments/{}/snapshots", encode(env));
    let answer = match cmd {
        SnapshotCommand::List { environment } => {
            let answer = client.get(&base(&environment))?;
            if format == Format::Text {
                let now = time::OffsetDateTime::now_utc();
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
                            if s["pinned"] == json!(true) {
                                "pinned"
                            } else {
                                "-"
                            }
                            .to_owned(),
                            term::bytes(s["sizeBytes"].as_u64().unwrap_or(0)),
                            term::age(&field(s, "createdAt"), now),
                            field(s, "deploymentId"),
                        ]
                    })
                    .collect();
                if rows.is_empty() {
                    println!("no snapshots; take one with `ocore snapshot create --environment {environment}`");
                    return Ok(());
                }
                output::table(
                    &[
                        "ID",
                        "KIND",
                        "STATE",
                        "PINNED",
                        "SIZE",
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
        SnapshotCommand::Show { target } => client.get(&target.path())?,
        SnapshotCommand::Pin { target } => {
            client.post(&format!("{}/pin", target.path()), &json!({}))?
        }
        SnapshotCommand::Unpin { target } => {
            client.post(&format!("{}/unpin", target.path()), &json!({}))?
        }
        SnapshotCommand::Verify { target } => {
            let answer = client.post(&format!("{}/verify", target.path()), &json!({}))?;
            let ok = answer["verified"] == json!(true);
            match format {
                Format::Json => output::json(&answer),
                Format::Text if ok => println!(
                    "snapshot {} verified: {} dump parts and {} filestore files, {} read back",
                    target.id(),
                    field(&answer, "parts"),
                    field(&answer, "blobs"),
                    term::bytes(answer["bytes"].as_u64().unwrap_or(0))
                ),
                Format::Text => {}
            }
            if !ok {
                return Err(CliError::Outcome(format!(
                    "snapshot {} is corrupt: {}",
                    target.id(),
                    field(&answer, "problem")
                )));
            }
            return Ok(());
        }
        SnapshotCommand::Restore(args) => return super::rollback::restore(client, args, format),
        SnapshotCommand::Export(args) => {
            return super::snapshot_transfer::export(client, args, format)
        }
        SnapshotCommand::Import(args) => {
            return super::snapshot_transfer::import(client, args, format)
        }
        SnapshotCommand::Delete { target } => {
            let snapshot = target.id();
            let answer = client.delete(&target.path())?;
            match format {
                Format::Json => output::json(&answer),
                Format::Text => println!(
                    "snapshot {snapshot} deleted, {} freed",
                    term::bytes(answer["freedBytes"].as_u64().unwrap_or(0))
                ),
            }
            return Ok(());
        }
        SnapshotCommand::Estimate { environment } => {
            let answer = client.get(&format!("{}/estimate", base(&environment)))?;
            match format {
                Format::Json => output::json(&answer),
                Format::Text => {
                    let b = |k: &str| term::bytes(answer[k].as_u64().unwrap_or(0));
                    println!(
                        "a snapshot now would take about {} (database {}, new filestore files {}, compression ratio {:.2}); {} free on the agent's disk",
                        b("estimatedBytes"),
                        b("databaseBytes"),
                        b("newFilestoreBytes"),
                        answer["compressionRatio"].as_f64().unwrap_or(0.0),
                        b("freeDiskBytes")
                    )
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
