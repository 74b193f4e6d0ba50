//! `ocore deploy …`: start a deployment (`--follow` shows its steps live and exits
//! non-zero unless it succeeds), list the history, show one, print or follow its logs,
//! cancel, and roll back (`rollback.rs`).

use clap::{ArgGroup, Args, Subcommand};
use serde_json::{json, Value};

use super::client::ApiClient;
use super::follow::{follow, FollowOptions};
use super::mapping::encode;
use super::output::{self, field};
use super::term::{self, Color, Style};
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
#[command(group(ArgGroup::new("reference").required(true).multiple(true).args(["branch", "commit_sha", "tag"])))]
pub struct StartArgs {
    /// Project to deploy.
    #[arg(long, required = true)]
    project: Option<String>,
    /// Deploy the latest commit of this branch.
    #[arg(long)]
    branch: Option<String>,
    /// Deploy this commit (4 to 40 hexadecimal characters; a prefix is fine).
    #[arg(long = "commit", value_name = "SHA")]
    commit_sha: Option<String>,
    /// Deploy this tag.
    #[arg(long)]
    tag: Option<String>,
    /// Target instance (default: the branch mapping's, or the project's only instance).
    #[arg(long)]
    instance: Option<String>,
    /// Show the steps live; exit 0 only if the deployment succeeds (1 failed, 2
    /// cancelled). Ctrl-C stops following, not the deployment.
    #[arg(long)]
    follow: bool,
    /// With --follow: print every output line of the steps (build output, -u log).
    #[arg(long, requires = "follow")]
    logs: bool,
}

/// A deployment named by position or by `--deployment`, and its project.
#[derive(Args)]
pub struct DeploymentRef {
    /// Deployment id.
    #[arg(value_name = "DEPLOYMENT", required_unless_present = "deployment_flag")]
    deployment: Option<String>,
    /// Deployment id (instead of the positional argument).
    #[arg(
        long = "deployment",
        id = "deployment_flag",
        value_name = "DEPLOYMENT",
        conflicts_with = "deployment"
    )]
    deployment_flag: Option<String>,
    /// The deployment's project (looked up from the id when omitted).
    #[arg(long)]
    pub project: Option<String>,
}

impl DeploymentRef {
    pub fn id(&self) -> String {
        self.deployment
            .clone()
            .or_else(|| self.deployment_flag.clone())
            .unwrap_or_default()
    }

    /// The deployment id and its project.
    pub fn resolve(&self, client: &ApiClient) -> Result<(String, String), CliError> {
        let id = self.id();
        let project = match &self.project {
            Some(p) => p.clone(),
            None => {
                let d = client.get(&format!("/api/deployments/{}", encode(&id)))?;
                field(&d, "projectId")
            }
        };
        Ok((id, project))
    }
}

#[derive(Subcommand)]
pub enum DeployCommand {
    /// The project's deployments, newest first, with the total and the next page.
    #[command(visible_alias = "ls")]
    List {
        /// Project whose history to list.
        #[arg(long)]
        project: String,
        /// Deployments per page (1 to 100).
        #[arg(long, default_value_t = 20, allow_negative_numbers = true,
              value_parser = clap::value_parser!(u32).range(1..=100))]
        limit: u32,
        /// Deployments to skip (the newest first).
        #[arg(long, default_value_t = 0, allow_negative_numbers = true)]
        offset: u64,
    },
    /// Show a deployment: reference, commit, snapshot, timing and each step.
    Show {
        #[command(flatten)]
        target: DeploymentRef,
    },
    /// Print each step's output; with --follow, stream it live until the deployment ends.
    Logs {
        #[command(flatten)]
        target: DeploymentRef,
        /// Stream live until the deployment ends (exit codes as for `deploy --follow`).
        #[arg(long)]
        follow: bool,
        /// Only this step's output, e.g. "Build Image".
        #[arg(long, conflicts_with = "follow")]
        step: Option<String>,
    },
    /// Follow a deployment's steps live until it ends (exit 0 only if it succeeds).
    Follow {
        #[command(flatten)]
        target: DeploymentRef,
        /// Print every output line of the steps.
        #[arg(long)]
        logs: bool,
    },
    /// Cancel a queued or running deployment (its agent applies the failure rules).
    Cancel {
        #[command(flatten)]
        target: DeploymentRef,
    },
    /// Roll back a deployment: restore its pre-deploy snapshot and the image that served
    /// before it. Shows what will be restored and asks first (--yes for scripts).
    Rollback(super::rollback::RollbackArgs),
}

fn summary_rows(list: &Value) -> Vec<Vec<String>> {
    let now = time::OffsetDateTime::now_utc();
    list["deployments"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|d| {
            let reference = d["branch"]
                .as_str()
                .or(d["tag"].as_str())
                .unwrap_or("-")
                .to_owned();
            vec![
                field(d, "id"),
                field(d, "status"),
                field(d, "triggerType"),
                reference,
                d["commitSha"]
                    .as_str()
                    .map(term::short_sha)
                    .unwrap_or_else(|| "-".to_owned()),
                d["commitAuthor"]
                    .as_str()
                    .map(|a| term::truncate(&term::author_name(a), 20))
                    .unwrap_or_else(|| "-".to_owned()),
                term::age(&field(d, "createdAt"), now),
                d["durationMs"]
                    .as_u64()
                    .map(term::duration_ms)
                    .unwrap_or_else(|| "-".to_owned()),
            ]
        })
        .collect()
}

/// "showing 21-40 of 57; next: ocore deploy list …".
fn page_hint(project: &str, offset: u64, shown: usize, total: u64, limit: u32) -> String {
    if shown == 0 {
        return if total == 0 {
            format!(
                "no deployments yet; start one with `ocore deploy --project {project} --branch BRANCH`"
            )
        } else {
            format!("no deployments at offset {offset} (the project has {total})")
        };
    }
    let last = offset + shown as u64;
    let mut hint = format!("showing {}-{last} of {total}", offset + 1);
    if last < total {
        hint.push_str(&format!(
            "; next page: ocore deploy list --project {project} --limit {limit} --offset {last}"
        ));
    }
    hint
}

fn print_detail(d: &Value) {
    let style = Style::stdout();
    let now = time::OffsetDateTime::now_utc();
    let status = field(d, "status");
    let took = |v: &Value| {
        v["durationMs"]
            .as_u64()
            .map(term::duration_ms)
            .unwrap_or_else(|| "-".to_owned())
    };
    println!("deployment:   {}", field(d, "id"));
    println!(
        "project:      {} (environment {}, instance {})",
        field(d, "projectId"),
        field(d, "environmentId"),
        field(d, "instanceId")
    );
    println!(
        "status:       {}",
        style.paint(term::status_color(&status).unwrap_or(Color::Bold), &status)
    );
    if !d["statusReason"].is_null() {
        println!("reason:       {}", field(d, "statusReason"));
    }
    println!(
        "trigger:      {} by {}",
        field(d, "triggerType"),
        field(d, "requestedBy")
    );
    if !d["rollbackOf"].is_null() {
        println!("rolls back:   deployment {}", field(d, "rollbackOf"));
    } else if !d["restoredSnapshotId"].is_null() {
        println!("restores:     snapshot {}", field(d, "restoredSnapshotId"));
    }
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
    println!("image:        {}", field(d, "imageRef"));
    println!("active color: {}", field(d, "activeColor"));
    println!(
        "created:      {} ({})",
        field(d, "createdAt"),
        term::age(&field(d, "createdAt"), now)
    );
    println!("duration:     {}", took(d));
    println!("steps:");
    for s in d["steps"].as_array().into_iter().flatten() {
        let status = field(s, "status");
        let padded = format!("{status:<10}");
        println!(
            "  {} {:<20} {}",
            style.paint(term::status_color(&status).unwrap_or(Color::Bold), &padded),
            field(s, "name"),
            took(s)
        );
        // The end of a failed step's output says why; the rest is `ocore deploy logs`.
        if status == "failed" {
            let lines: Vec<&str> = s["output"].as_str().unwrap_or("").lines().collect();
            for line in &lines[lines.len().saturating_sub(8)..] {
                println!("             | {line}");
            }
        }
    }
}

fn print_logs(d: &Value, step: Option<&str>) -> Result<(), CliError> {
    let steps: Vec<&Value> = d["steps"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|s| step.is_none_or(|name| field(s, "name").eq_ignore_ascii_case(name)))
        .collect();
    if let (Some(name), true) = (step, steps.is_empty()) {
        let names: Vec<String> = d["steps"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|s| field(s, "name"))
            .collect();
        return Err(CliError::Usage(format!(
            "deployment {} has no step {name:?}; its steps: {}",
            field(d, "id"),
            names.join(", ")
        )));
    }
    for s in steps {
        let took = s["durationMs"]
            .as_u64()
            .map(term::duration_ms)
            .unwrap_or_else(|| "-".to_owned());
        println!("== {} ({}, {took})", field(s, "name"), field(s, "status"));
        for line in s["output"].as_str().unwrap_or("").lines() {
            println!("{line}");
        }
    }
    Ok(())
}

pub fn run(client: &ApiClient, args: DeployArgs, format: Format) -> Result<(), CliError> {
    let Some(cmd) = args.command else {
        let s = args.start;
        let project = s
            .project
            .ok_or_else(|| CliError::Usage("--project is required".to_owned()))?;
        let d = client.post(
            &format!("/api/projects/{}/deploy", encode(&project)),
            &json!({"branch": s.branch, "commitSha": s.commit_sha, "tag": s.tag, "instanceId": s.instance}),
        )?;
        let id = field(&d, "id");
        match format {
            Format::Json if !s.follow => output::json(&d),
            Format::Json => {}
            Format::Text if s.follow => println!(
                "deployment {id} queued on instance {}",
                field(&d, "instanceId")
            ),
            Format::Text => println!(
                "deployment {id} queued on instance {} (follow it with `ocore deploy follow {id}`)",
                field(&d, "instanceId")
            ),
        }
        if !s.follow {
            return Ok(());
        }
        return follow(
            client,
            &project,
            &id,
            FollowOptions {
                logs: s.logs,
                format,
            },
        );
    };
    match cmd {
        DeployCommand::List {
            project,
            limit,
            offset,
        } => {
            let answer = client.get(&format!(
                "/api/projects/{}/deployments?limit={limit}&offset={offset}",
                encode(&project)
            ))?;
            match format {
                Format::Json => output::json(&answer),
                Format::Text => {
                    let rows = summary_rows(&answer);
                    if !rows.is_empty() {
                        output::table(
                            &[
                                "ID", "STATUS", "TRIGGER", "REF", "COMMIT", "AUTHOR", "AGE",
                                "DURATION",
                            ],
                            &rows,
                        );
                    }
                    println!(
                        "{}",
                        page_hint(
                            &project,
                            offset,
                            rows.len(),
                            answer["total"].as_u64().unwrap_or(0),
                            limit
                        )
                    );
                }
            }
        }
        DeployCommand::Show { target } => {
            let (id, project) = target.resolve(client)?;
            let d = client.get(&format!(
                "/api/projects/{}/deployments/{}",
                encode(&project),
                encode(&id)
            ))?;
            match format {
                Format::Json => output::json(&d),
                Format::Text => print_detail(&d),
            }
        }
        DeployCommand::Logs {
            target,
            follow: live,
            step,
        } => {
            let (id, project) = target.resolve(client)?;
            if live {
                return follow(client, &project, &id, FollowOptions { logs: true, format });
            }
            let d = client.get(&format!(
                "/api/projects/{}/deployments/{}",
                encode(&project),
                encode(&id)
            ))?;
            match format {
                Format::Json => {
                    let steps: Vec<Value> = d["steps"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .filter(|s| {
                            step.as_deref()
                                .is_none_or(|n| field(s, "name").eq_ignore_ascii_case(n))
                        })
                        .cloned()
                        .collect();
                    output::json(&Value::Array(steps));
                }
                Format::Text => print_logs(&d, step.as_deref())?,
            }
        }
        DeployCommand::Follow { target, logs } => {
            let (id, project) = target.resolve(client)?;
            follow(client, &project, &id, FollowOptions { logs, format })?;
        }
        DeployCommand::Cancel { target } => {
            let (id, project) = target.resolve(client)?;
            let d = client.post(
                &format!(
                    "/api/projects/{}/deployments/{}/cancel",
                    encode(&project),
                    encode(&id)
                ),
                &json!({}),
            )?;
            match format {
                Format::Json => output::json(&d),
                Format::Text if field(&d, "status") == "cancelled" => {
                    println!("deployment {id} cancelled")
                }
                Format::Text => println!(
                    "cancel of deployment {id} sent to its agent; it ends once the agent has undone the steps (ocore deploy follow {id})"
                ),
            }
        }
        DeployCommand::Rollback(args) => super::rollback::run(client, args, format)?,
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_page_hint_says_where_the_next_page_is() {
        assert_eq!(
            page_hint("shop", 0, 20, 57, 20),
            "showing 1-20 of 57; next page: ocore deploy list --project shop --limit 20 --offset 20"
        );
        assert_eq!(page_hint("shop", 40, 17, 57, 20), "showing 41-57 of 57");
        assert!(page_hint("shop", 0, 0, 0, 20).contains("no deployments yet"));
        assert!(page_hint("shop", 100, 0, 57, 20).contains("has 57"));
    }

    #[test]
    fn history_rows_are_short_and_readable() {
        let list = json!({"deployments": [{
            "id": "d1", "status": "succeeded", "triggerType": "manual", "branch": "main",
            "tag": null, "commitSha": "0123456789abcdef", "commitAuthor": "Ada <ada@example.com>",
            "createdAt": "2000-01-01T00:00:00.000Z", "durationMs": 65000
        }]});
        let rows = summary_rows(&list);
        assert_eq!(
            rows[0][..6],
            ["d1", "succeeded", "manual", "main", "0123456", "Ada"]
        );
        assert!(rows[0][6].ends_with("d ago"), "{:?}", rows[0]);
        assert_eq!(rows[0][7], "1m 05s");
    }
}
