//! `ocore deploy rollback` and `ocore snapshot restore`: both ask the coordinator what they
//! would restore (`dryRun`: the snapshot, the image and commit that come back, and why),
//! show it, ask for confirmation on a terminal (`--yes` for scripts; refused without a
//! terminal), then queue it and optionally follow it. The two differ only in the request.

use std::io::{BufRead, IsTerminal, Write};

use clap::Args;
use serde_json::{json, Value};

use super::client::ApiClient;
use super::deploy::DeploymentRef;
use super::follow::{follow, FollowOptions};
use super::mapping::encode;
use super::output::{self, field};
use super::snapshot::SnapshotRef;
use super::term::{self, Color, Style};
use super::{CliError, Format};

/// The flags of every command that restores a snapshot.
#[derive(Args)]
pub struct ConfirmArgs {
    /// Do not ask for confirmation (for scripts; needed when stdin is not a terminal).
    #[arg(long, short = 'y')]
    yes: bool,
    /// Only show what would be restored.
    #[arg(long, conflicts_with_all = ["yes", "follow"])]
    dry_run: bool,
    /// Follow it live; exit 0 only if it succeeds.
    #[arg(long)]
    follow: bool,
    /// With --follow: print every output line.
    #[arg(long, requires = "follow")]
    logs: bool,
}

#[derive(Args)]
pub struct RollbackArgs {
    #[command(flatten)]
    target: DeploymentRef,
    #[command(flatten)]
    confirm: ConfirmArgs,
}

#[derive(Args)]
pub struct RestoreArgs {
    #[command(flatten)]
    target: SnapshotRef,
    #[command(flatten)]
    confirm: ConfirmArgs,
}

/// The plan in words, one line each. A rollback's plan names its deployment; a restore's
/// only the snapshot.
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
    let imported = s["importedAt"]
        .as_str()
        .map(|t| format!(", imported {t}"))
        .unwrap_or_default();
    let kind = s["kind"]
        .as_str()
        .map(|k| format!(" ({k}{taken}{size}{imported})"))
        .unwrap_or_default();
    let reference = r["branch"]
        .as_str()
        .map(|b| format!("branch {b}, "))
        .or_else(|| r["tag"].as_str().map(|t| format!("tag {t}, ")))
        .unwrap_or_default();
    let place = format!(
        "project {}, environment {}, instance {}",
        field(plan, "projectId"),
        field(plan, "environmentId"),
        field(plan, "instanceId")
    );
    let heading = if plan["deploymentId"].is_string() {
        format!(
            "rollback of deployment {} ({place}):",
            field(plan, "deploymentId")
        )
    } else {
        format!("restore of snapshot {} ({place}):", field(s, "id"))
    };
    let image = if plan["imageSource"] == json!("current") {
        format!("  keeps image      {} (serving now)", field(r, "imageRef"))
    } else {
        format!("  returns to image {}", field(r, "imageRef"))
    };
    let mut lines = vec![
        heading,
        format!(
            "  restores snapshot {}{kind} over the database and filestore",
            field(s, "id")
        ),
        image,
        format!(
            "  which is commit  {} ({reference}{:?}, deployment {})",
            term::short_sha(r["commitSha"].as_str().unwrap_or("-")),
            field(r, "commitMessage").lines().next().unwrap_or(""),
            field(r, "deploymentId")
        ),
    ];
    for note in plan["notes"].as_array().into_iter().flatten() {
        if let Some(n) = note.as_str() {
            lines.push(format!("  note: {n}"));
        }
    }
    lines.push("  changes made to the database since that snapshot are lost".to_owned());
    lines
}

/// Asks `question` on the terminal; refuses (usage error) when stdin is not one.
fn confirm(question: &str, what: &str, noun: &str) -> Result<(), CliError> {
    if !std::io::stdin().is_terminal() {
        return Err(CliError::Usage(format!(
            "refusing to {what} without confirmation: stdin is not a terminal; add --yes to {what} without asking"
        )));
    }
    let style = Style::stderr();
    eprint!(
        "{} ",
        style.paint(Color::Bold, &format!("{question} [y/N]"))
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
        Err(CliError::Outcome(format!(
            "{noun} not started (not confirmed)"
        )))
    }
}

/// One restoring request: where it goes and what it sends besides `dryRun`.
struct Request {
    path: String,
    body: Value,
    /// "roll back" or "restore", and "rollback" or "restore", for the messages.
    verb: &'static str,
    noun: &'static str,
}

/// Asks for the plan, shows it, confirms, queues, follows; returns nothing on a dry run.
fn plan_and_run(
    client: &ApiClient,
    req: &Request,
    args: ConfirmArgs,
    format: Format,
    question: impl FnOnce(&Value) -> String,
    queued: impl FnOnce(&Value, &str) -> String,
) -> Result<(), CliError> {
    let mut dry = req.body.clone();
    dry["dryRun"] = json!(true);
    let plan = client.post(&req.path, &dry)?;
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
        confirm(&question(&plan), req.verb, req.noun)?;
    }
    let d = client.post(&req.path, &req.body)?;
    let id = field(&d, "id");
    match format {
        Format::Json if !args.follow => output::json(&d),
        Format::Json => {}
        Format::Text if args.follow => println!("{}", queued(&plan, &id)),
        Format::Text => println!(
            "{} (follow it with `ocore deploy follow {id}`)",
            queued(&plan, &id)
        ),
    }
    if args.follow {
        follow(
            client,
            &field(&plan, "projectId"),
            &id,
            FollowOptions {
                logs: args.logs,
                format,
            },
        )?;
    }
    Ok(())
}

pub fn run(client: &ApiClient, args: RollbackArgs, format: Format) -> Result<(), CliError> {
    // By id alone unless the project is given: looking the project up would need
    // view:deployments, which a rollback does not (it needs manage:environments).
    let id = args.target.id();
    let (path, body) = match &args.target.project {
        Some(project) => (
            format!("/api/projects/{}/rollback", encode(project)),
            json!({"deploymentId": id}),
        ),
        None => (
            format!("/api/deployments/{}/rollback", encode(&id)),
            json!({}),
        ),
    };
    let req = Request {
        path,
        body,
        verb: "roll back",
        noun: "rollback",
    };
    plan_and_run(
        client,
        &req,
        args.confirm,
        format,
        |plan| format!("Roll back environment {}?", field(plan, "environmentId")),
        |_, rollback| format!("rollback {rollback} of deployment {id} queued"),
    )
}

pub fn restore(client: &ApiClient, args: RestoreArgs, format: Format) -> Result<(), CliError> {
    let snapshot = args.target.id();
    let req = Request {
        path: format!(
            "/api/environments/{}/snapshots/{}/restore",
            encode(&args.target.environment),
            encode(&snapshot)
        ),
        body: json!({}),
        verb: "restore",
        noun: "restore",
    };
    plan_and_run(
        client,
        &req,
        args.confirm,
        format,
        |plan| {
            format!(
                "Restore snapshot {snapshot} over environment {}?",
                field(plan, "environmentId")
            )
        },
        |_, d| format!("restore {d} of snapshot {snapshot} queued"),
    )
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
            "imageSource": "snapshot-time",
            "returnsTo": {"deploymentId": "d1", "imageRef": "127.0.0.1:5000/shop@sha256:ab", "commitSha": "0123456789", "commitMessage": "first\n\nbody", "branch": "main", "tag": null},
            "notes": []
        });
        let text = describe(&plan).join("\n");
        assert!(text.starts_with("rollback of deployment d2"), "{text}");
        assert!(
            text.contains("snapshot s1 (pre-deploy, taken 2000-01-01T00:00:00.000Z"),
            "{text}"
        );
        assert!(text.contains("2.0 KiB"), "{text}");
        assert!(
            text.contains("returns to image 127.0.0.1:5000/shop@sha256:ab"),
            "{text}"
        );
        assert!(
            text.contains("0123456 (branch main, \"first\", deployment d1)"),
            "{text}"
        );
        assert!(!text.contains("note:"), "{text}");
    }

    #[test]
    fn a_restore_plan_says_when_the_current_image_stays_and_why() {
        let plan = json!({
            "dryRun": true, "snapshotId": "s9", "projectId": "shop", "environmentId": "shop-staging",
            "instanceId": "shop-staging",
            "snapshot": {"id": "s9", "kind": "manual", "createdAt": "2000-01-01T00:00:00.000Z", "sizeBytes": 10, "importedAt": "2000-01-02T00:00:00.000Z"},
            "imageSource": "current",
            "returnsTo": {"deploymentId": "d7", "imageRef": "127.0.0.1:5000/ocore/x:abc", "commitSha": "abcdef0123", "commitMessage": "v2", "branch": "main"},
            "notes": ["snapshot s9 was imported", "the next deploy runs odoo -u"]
        });
        let text = describe(&plan).join("\n");
        assert!(
            text.starts_with("restore of snapshot s9 (project shop, environment shop-staging"),
            "{text}"
        );
        assert!(text.contains("imported 2000-01-02"), "{text}");
        assert!(
            text.contains("keeps image      127.0.0.1:5000/ocore/x:abc (serving now)"),
            "{text}"
        );
        assert!(text.contains("note: snapshot s9 was imported"), "{text}");
        assert!(
            text.contains("note: the next deploy runs odoo -u"),
            "{text}"
        );
    }
}
