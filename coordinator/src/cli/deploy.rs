//! `ocore deploy …`: start a deployment (`--follow` shows its steps live and exits non-zero
//! unless it succeeds), list the history, show, follow, cancel, and roll back.

use std::time::Duration;

use clap::{Args, Subcommand};
use serde_json::{json, Value};

use super::client::{ApiClient, SseEvent};
use super::mapping::encode;
use super::output::{self, field};
use super::{CliError, Format};

#[derive(Args)]
#[command(args_conflicts_with_subcommands = true, subcommand_negates_reqs = true)]
pub struct DeployArgs {
    #[command(subcommand)]
    pub command: Option<DeployCommand>,
    #[command(flatten)]
    pub start: StartArgs,
}

#[derive(Args)]
pub struct StartArgs {
    /// Project to deploy.
    #[arg(long, required = true)]
    project: Option<String>,
    /// Deploy the latest commit of this branch.
    #[arg(long)]
    branch: Option<String>,
    /// Deploy this commit (4 to 40 hexadecimal characters).
    #[arg(long = "commit")]
    commit_sha: Option<String>,
    /// Deploy this tag.
    #[arg(long)]
    tag: Option<String>,
    /// Target instance (default: from the branch mapping, or the project's only instance).
    #[arg(long)]
    instance: Option<String>,
    /// Show the steps live and exit non-zero unless the deployment succeeds.
    #[arg(long)]
    follow: bool,
}

#[derive(Subcommand)]
pub enum DeployCommand {
    /// The project's deployments, newest first.
    List {
        #[arg(long)]
        project: String,
        #[arg(long, default_value_t = 20)]
        limit: u32,
        #[arg(long, default_value_t = 0)]
        offset: u64,
    },
    /// Show a deployment with its steps.
    Show {
        deployment: String,
        /// The deployment's project (looked up when omitted).
        #[arg(long)]
        project: Option<String>,
    },
    /// Follow a deployment's steps live until it ends.
    Follow {
        deployment: String,
        #[arg(long)]
        project: Option<String>,
    },
    /// Cancel a queued or running deployment.
    Cancel {
        deployment: String,
        #[arg(long)]
        project: Option<String>,
    },
    /// Roll back to a deployment's pre-deploy snapshot and the image before it.
    Rollback {
        #[arg(long)]
        deployment: String,
        #[arg(long)]
        project: Option<String>,
        #[arg(long)]
        follow: bool,
    },
}

fn project_of(
    client: &ApiClient,
    deployment: &str,
    project: Option<String>,
) -> Result<String, CliError> {
    match project {
        Some(p) => Ok(p),
        None => {
            let d = client.get(&format!("/api/deployments/{}", encode(deployment)))?;
            Ok(field(&d, "projectId"))
        }
    }
}

fn summary_rows(list: &Value) -> Vec<Vec<String>> {
    list["deployments"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|d| {
            let reference = ["branch", "tag"]
                .iter()
                .find_map(|k| d[*k].as_str().map(str::to_owned))
                .unwrap_or_default();
            let sha: String = field(d, "commitSha").chars().take(10).collect();
            vec![
                field(d, "id"),
                field(d, "status"),
                field(d, "triggerType"),
                reference,
                sha,
                field(d, "instanceId"),
                field(d, "createdAt"),
                field(d, "durationMs"),
            ]
        })
        .collect()
}

fn print_detail(d: &Value) {
    println!("deployment:   {}", field(d, "id"));
    println!(
        "project:      {} (instance {}, environment {})",
        field(d, "projectId"),
        field(d, "instanceId"),
        field(d, "environmentId")
    );
    println!("status:       {}", field(d, "status"));
    if !d["statusReason"].is_null() {
        println!("reason:       {}", field(d, "statusReason"));
    }
    println!(
        "trigger:      {} by {}",
        field(d, "triggerType"),
        field(d, "requestedBy")
    );
    println!(
        "reference:    branch {}, tag {}, commit {}",
        field(d, "branch"),
        field(d, "tag"),
        field(d, "commitSha")
    );
    if !d["commitMessage"].is_null() {
        println!(
            "commit:       {} ({})",
            field(d, "commitMessage").lines().next().unwrap_or(""),
            field(d, "commitAuthor")
        );
    }
    println!("snapshot:     {}", field(d, "snapshotId"));
    println!("active color: {}", field(d, "activeColor"));
    println!("created:      {}", field(d, "createdAt"));
    println!("duration:     {} ms", field(d, "durationMs"));
    for s in d["steps"].as_array().into_iter().flatten() {
        println!(
            "  {:<10} {:<22} {} ms",
            field(s, "status"),
            field(s, "name"),
            field(s, "durationMs")
        );
        for line in s["output"]
            .as_str()
            .unwrap_or("")
            .lines()
            .rev()
            .take(5)
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
        {
            println!("             | {line}");
        }
    }
}

/// Prints one live event in a line or two.
fn print_event(e: &SseEvent, format: Format) {
    if format == Format::Json {
        println!("{}", e.data);
        return;
    }
    let v: Value = serde_json::from_str(&e.data).unwrap_or(Value::Null);
    match e.event.as_str() {
        "step" => {
            let status = field(&v, "status");
            let name = field(&v, "name");
            match status.as_str() {
                "running" => println!("-> {name}"),
                "completed" => println!("ok {name} ({} ms)", field(&v, "durationMs")),
                "skipped" => println!("-- {name} skipped"),
                "failed" => println!("!! {name} failed: {}", field(&v, "message")),
                other => println!(".. {name} {other}"),
            }
        }
        "log" => println!("   | {}", field(&v, "line")),
        "commit" => println!(
            "   commit {} by {}: {}",
            field(&v, "commitSha"),
            field(&v, "commitAuthor"),
            field(&v, "commitMessage").lines().next().unwrap_or("")
        ),
        "plan" => println!(
            "   plan: maintenance window {}, modules to update: {}",
            field(&v, "maintenanceWindow"),
            v["modulesToUpdate"]
        ),
        "finished" => println!("== {}: {}", field(&v, "status"), field(&v, "message")),
        _ => {}
    }
}

/// Follows the event stream to the finished event (reconnecting with Last-Event-ID), then
/// fails unless the deployment succeeded.
fn follow(client: &ApiClient, project: &str, id: &str, format: Format) -> Result<(), CliError> {
    let path = format!("/api/projects/{project}/deployments/{id}/events");
    let mut last: Option<String> = None;
    let mut finished = false;
    let mut attempts = 0;
    while !finished {
        let resume = last.clone();
        let result = client.events(&path, resume.as_deref(), &mut |e| {
            if let Some(i) = &e.id {
                last = Some(i.clone());
            }
            print_event(e, format);
            finished = e.event == "finished";
            !finished
        });
        match result {
            Ok(()) if finished => break,
            Ok(()) => {}
            Err(CliError::Network { .. }) if attempts < 30 => {}
            Err(e) => return Err(e),
        }
        // The stream ended without the final event (coordinator restart, network): resume.
        attempts += 1;
        if attempts > 30 {
            return Err(CliError::Local(
                "lost the event stream too often; giving up".to_owned(),
            ));
        }
        let d = client.get(&format!("/api/projects/{project}/deployments/{id}"))?;
        if !matches!(d["status"].as_str(), Some("queued" | "running")) && last.is_none() {
            break;
        }
        std::thread::sleep(Duration::from_secs(1));
    }
    let d = client.get(&format!("/api/projects/{project}/deployments/{id}"))?;
    let status = field(&d, "status");
    if format == Format::Text {
        println!("deployment {id} {status} in {} ms", field(&d, "durationMs"));
    }
    if status == "succeeded" {
        Ok(())
    } else {
        Err(CliError::Outcome(format!(
            "deployment {id} {status}: {}",
            field(&d, "statusReason")
        )))
    }
}

pub fn run(client: &ApiClient, args: DeployArgs, format: Format) -> Result<(), CliError> {
    let Some(cmd) = args.command else {
        let s = args.start;
        let project = s
            .project
            .ok_or_else(|| CliError::Usage("--project is required".to_owned()))?;
        let d = client.post(
            &format!("/api/projects/{project}/deploy"),
            &json!({"branch": s.branch, "commitSha": s.commit_sha, "tag": s.tag, "instanceId": s.instance}),
        )?;
        let id = field(&d, "id");
        if !s.follow {
            match format {
                Format::Json => output::json(&d),
                Format::Text => println!(
                    "deployment {id} queued on instance {}",
                    field(&d, "instanceId")
                ),
            }
            return Ok(());
        }
        if format == Format::Text {
            println!(
                "deployment {id} queued on instance {}",
                field(&d, "instanceId")
            );
        }
        return follow(client, &project, &id, format);
    };
    match cmd {
        DeployCommand::List {
            project,
            limit,
            offset,
        } => {
            let answer = client.get(&format!(
                "/api/projects/{project}/deployments?limit={limit}&offset={offset}"
            ))?;
            match format {
                Format::Json => output::json(&answer),
                Format::Text => {
                    output::table(
                        &[
                            "ID", "STATUS", "TRIGGER", "REF", "COMMIT", "INSTANCE", "CREATED", "MS",
                        ],
                        &summary_rows(&answer),
                    );
                    println!(
                        "({} of {} deployments)",
                        answer["deployments"].as_array().map_or(0, Vec::len),
                        field(&answer, "total")
                    );
                }
            }
        }
        DeployCommand::Show {
            deployment,
            project,
        } => {
            let project = project_of(client, &deployment, project)?;
            let d = client.get(&format!(
                "/api/projects/{project}/deployments/{}",
                encode(&deployment)
            ))?;
            match format {
                Format::Json => output::json(&d),
                Format::Text => print_detail(&d),
            }
        }
        DeployCommand::Follow {
            deployment,
            project,
        } => {
            let project = project_of(client, &deployment, project)?;
            follow(client, &project, &deployment, format)?;
        }
        DeployCommand::Cancel {
            deployment,
            project,
        } => {
            let project = project_of(client, &deployment, project)?;
            let d = client.post(
                &format!(
                    "/api/projects/{project}/deployments/{}/cancel",
                    encode(&deployment)
                ),
                &json!({}),
            )?;
            match format {
                Format::Json => output::json(&d),
                Format::Text if field(&d, "status") == "cancelled" => {
                    println!("deployment {deployment} cancelled")
                }
                Format::Text => println!("cancel of deployment {deployment} sent to its agent"),
            }
        }
        DeployCommand::Rollback {
            deployment,
            project,
            follow: follow_it,
        } => {
            let project = project_of(client, &deployment, project)?;
            let d = client.post(
                &format!("/api/projects/{project}/rollback"),
                &json!({"deploymentId": deployment}),
            )?;
            let id = field(&d, "id");
            if format == Format::Json && !follow_it {
                output::json(&d);
            } else if format == Format::Text {
                println!("rollback {id} of deployment {deployment} queued");
            }
            if follow_it {
                follow(client, &project, &id, format)?;
            }
        }
    }
    Ok(())
}
