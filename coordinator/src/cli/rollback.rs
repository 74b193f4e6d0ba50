//! `ocore deploy rollback`: asks the coordinator what a rollback of a deployment would
//! restore (`dryRun`: the snapshot, and the image and commit it returns to), shows it,
//! asks for confirmation on a terminal (`--yes` for scripts; refused without a terminal),
//! then queues it and optionally follows it.

use std::io::{BufRead, IsTerminal, Write};

use clap::Args;
use serde_json::{json, Value};

use super::client::ApiClient;
use super::deploy::DeploymentRef;
use super::follow::{follow, FollowOptions};
use super::mapping::encode;
use super::output::{self, field};
use super::term::{self, Color, Style};
use super::{CliError, Format};

#[derive(Args)]
pub struct RollbackArgs {
    #[command(flatten)]
    target: DeploymentRef,
    /// Do not ask for confirmation (for scripts; needed when stdin is not a terminal).
    #[arg(long, short = 'y')]
    yes: bool,
    /// Only show what the rollback would restore.
    #[arg(long, conflicts_with_all = ["yes", "follow"])]
    dry_run: bool,
    /// Follow the rollback live; exit 0 only if it succeeds.
    #[arg(long)]
    follow: bool,
    /// With --follow: print every output line.
    #[arg(long, requires = "follow")]
    logs: bool,
}

/// The plan in words, one line each.
fn describe(plan: &Value) -> Vec<String> {
    let now = time::OffsetDateTime::now_utc();
    let s = &plan["snapshot"];
    let r = &plan["returnsTo"];
    let taken = match s["createdAt"].as_str() {
        Some(t) => format!(", taken {t} ({})", term::age(t, now)),
        None => String::new(),
    };
    let size = s["sizeBytes"]
        .as_u64()
        .map(|b| format!(", {}", term::bytes(b)))
        .unwrap_or_default();
    let kind = s["kind"]
        .as_str()
        .map(|k| format!(" ({k}"))
        .map(|k| format!("{k}{taken}{size})"))
        .unwrap_or_default();
    let reference = r["branch"]
        .as_str()
        .map(|b| format!("branch {b}, "))
        .or_else(|| r["tag"].as_str().map(|t| format!("tag {t}, ")))
        .unwrap_or_default();
    vec![
        format!(
            "rollback of deployment {} (project {}, environment {}, instance {}):",
            field(plan, "deploymentId"),
            field(plan, "projectId"),
            field(plan, "environmentId"),
            field(plan, "instanceId")
        ),
        format!(
            "  restores snapshot {}{kind} over the database and filestore",
            field(s, "id")
        ),
        format!("  returns to image  {}", field(r, "imageRef")),
        format!(
            "  which is commit   {} ({reference}{:?}, deployment {})",
            term::short_sha(r["commitSha"].as_str().unwrap_or("-")),
            field(r, "commitMessage").lines().next().unwrap_or(""),
            field(r, "deploymentId")
        ),
        "  changes made to the database since that snapshot are lost".to_owned(),
    ]
}

/// Asks on the terminal; refuses (usage error) when stdin is not one.
fn confirm(environment: &str) -> Result<(), CliError> {
    if !std::io::stdin().is_terminal() {
        return Err(CliError::Usage(
            "refusing to roll back without confirmation: stdin is not a terminal; add --yes to roll back without asking".to_owned(),
        ));
    }
    let style = Style::stderr();
    eprint!(
        "{} ",
        style.paint(
            Color::Bold,
            &format!("Roll back environment {environment}? [y/N]")
        )
    );
    let _ = std::io::stderr().flush();
    let mut answer = String::new();
    std::io::stdin()
        .lock()
        .read_line(&mut answer)
        .map_err(|e| CliError::Local(format!("cannot read the answer: {e}")))?;
    if matches!(answer.trim().to_ascii_lowercase().as_str(), "y" | "yes") {
        Ok(())
    } else {
        Err(CliError::Outcome(
            "rollback not started (not confirmed)".to_owned(),
        ))
    }
}

pub fn run(client: &ApiClient, args: RollbackArgs, format: Format) -> Result<(), CliError> {
    let (id, project) = args.target.resolve(client)?;
    let path = format!("/api/projects/{}/rollback", encode(&project));
    let plan = client.post(&path, &json!({"deploymentId": id, "dryRun": true}))?;
    if args.dry_run {
        match format {
            Format::Json => output::json(&plan),
            Format::Text => describe(&plan).iter().for_each(|l| println!("{l}")),
        }
        return Ok(());
    }
    // Scripts read JSON from stdout: the plan goes to stderr for them.
    for line in describe(&plan) {
        match format {
            Format::Json => eprintln!("{line}"),
            Format::Text => println!("{line}"),
        }
    }
    if !args.yes {
        confirm(&field(&plan, "environmentId"))?;
    }
    let d = client.post(&path, &json!({"deploymentId": id}))?;
    let rollback = field(&d, "id");
    match format {
        Format::Json if !args.follow => output::json(&d),
        Format::Json => {}
        Format::Text => println!("rollback {rollback} of deployment {id} queued"),
    }
    if args.follow {
        follow(
            client,
            &project,
            &rollback,
            FollowOptions {
                logs: args.logs,
                format,
            },
        )?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_plan_names_the_snapshot_the_image_and_the_commit() {
        let plan = json!({
            "dryRun": true, "deploymentId": "d2", "projectId": "shop", "environmentId": "shop-prod",
            "instanceId": "shop-prod",
            "snapshot": {"id": "s1", "kind": "pre-deploy", "createdAt": "2000-01-01T00:00:00.000Z", "sizeBytes": 2048},
            "returnsTo": {"deploymentId": "d1", "imageRef": "127.0.0.1:5000/shop@sha256:ab", "commitSha": "0123456789", "commitMessage": "first\n\nbody", "branch": "main", "tag": null}
        });
        let text = describe(&plan).join("\n");
        assert!(
            text.contains("snapshot s1 (pre-deploy, taken 2000-01-01T00:00:00.000Z"),
            "{text}"
        );
        assert!(text.contains("2.0 KiB"), "{text}");
        assert!(
            text.contains("image  127.0.0.1:5000/shop@sha256:ab"),
            "{text}"
        );
        assert!(
            text.contains("0123456 (branch main, \"first\", deployment d1)"),
            "{text}"
        );
    }
}
