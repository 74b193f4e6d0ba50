//! The durable deployment queue: one deployment at a time per instance, in order; waiting
//! (and saying why) while the agent is unreachable; surviving a coordinator restart;
//! cancelling queued deployments; and re-attaching after a crash without losing events.

use std::time::Duration;

use anyhow::{Context, Result};
use ocore_tests::{
    configure_project, enrolled_agent, git_repo, read_sse, wait_deployment, wait_for, Coordinator,
    CoordinatorOptions, DEADLINE,
};
use serde_json::{json, Value};

fn deploy(coordinator: &Coordinator) -> Result<String> {
    let d = coordinator.cli_json(&["deploy", "--project", "shop", "--branch", "no-such-branch"])?;
    Ok(d["id"].as_str().context("id")?.to_owned())
}

fn show(coordinator: &Coordinator, id: &str) -> Result<Value> {
    coordinator.get_ok(&format!("/api/projects/shop/deployments/{id}"))
}

#[test]
fn queue_waits_for_its_agent_survives_a_restart_and_runs_in_order() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let coordinator = Coordinator::start(dir.path(), &CoordinatorOptions::default())?;
    let mut agent = enrolled_agent(&coordinator, dir.path(), "web1")?;
    let repo = git_repo(dir.path(), "shop.git")?;
    configure_project(&coordinator, "shop", &repo.display().to_string(), "web1")?;
    agent.daemon.take().context("agent daemon")?.terminate()?;

    let first = deploy(&coordinator)?;
    let second = deploy(&coordinator)?;
    let third = deploy(&coordinator)?;
    let waiting = wait_for("the head to say it waits for its agent", DEADLINE, || {
        show(&coordinator, &first).ok().filter(|d| {
            d["statusReason"]
                .as_str()
                .is_some_and(|r| r.contains("waiting for agent web1"))
        })
    })?;
    assert_eq!(waiting["status"], "queued");
    let behind = show(&coordinator, &third)?;
    assert_eq!(behind["status"], "queued");
    assert!(
        behind["statusReason"]
            .as_str()
            .is_some_and(|r| r.contains("2 earlier")),
        "{behind}"
    );

    // A queued deployment the agent never saw is cancelled at once; its log ends too.
    let (status, cancelled) = coordinator.api(
        "POST",
        &format!("/api/projects/shop/deployments/{second}/cancel"),
        Some(&coordinator.admin_token),
        Some(&json!({})),
    )?;
    assert_eq!(status, 200, "{cancelled}");
    assert_eq!(cancelled["status"], "cancelled");
    let (_, events) = read_sse(
        &coordinator.url,
        &format!("/api/projects/shop/deployments/{second}/events"),
        &coordinator.admin_token,
        None,
    )?;
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!(events[0].1, "finished");
    assert_eq!(events[0].2["status"], "cancelled");
    assert_eq!(events[0].2["byCoordinator"], true);
    let steps = show(&coordinator, &second)?["steps"].clone();
    assert!(
        steps
            .as_array()
            .into_iter()
            .flatten()
            .all(|s| s["status"] == "skipped"),
        "{steps}"
    );

    // The queue is durable.
    let coordinator = coordinator.restart()?;
    assert_eq!(show(&coordinator, &first)?["status"], "queued");
    assert_eq!(show(&coordinator, &third)?["status"], "queued");
    assert_eq!(show(&coordinator, &second)?["status"], "cancelled");
    let (_, metrics) =
        coordinator.api_raw("GET", "/metrics", Some(&coordinator.admin_token), None)?;
    let metrics = metrics.as_str().unwrap_or_default().to_owned();
    assert!(
        metrics.contains("ocore_queue_length{instance=\"shop-prod\"} 2"),
        "{metrics}"
    );
    assert!(
        metrics.contains("ocore_agent_connected{agent=\"web1\"} 0"),
        "{metrics}"
    );

    // Once the agent is back, both run, one after the other, in creation order.
    let address = agent.run()?;
    coordinator.cli_json(&["agent", "set-address", "web1", "--address", &address])?;
    let a = wait_deployment(
        &coordinator,
        "shop",
        &first,
        &["failed", "succeeded"],
        Duration::from_secs(120),
    )?;
    let c = wait_deployment(
        &coordinator,
        "shop",
        &third,
        &["failed", "succeeded"],
        Duration::from_secs(120),
    )?;
    let finished_first = a["finishedAt"].as_str().context("finishedAt")?.to_owned();
    let started_third = c["startedAt"].as_str().context("startedAt")?.to_owned();
    assert!(
        finished_first <= started_third,
        "{finished_first} then {started_third}"
    );
    let (_, metrics) =
        coordinator.api_raw("GET", "/metrics", Some(&coordinator.admin_token), None)?;
    let metrics = metrics.as_str().unwrap_or_default().to_owned();
    assert!(
        metrics.contains("ocore_deployments_finished_total{status=\"failed\"} 2"),
        "{metrics}"
    );
    assert!(
        metrics.contains("ocore_agent_connected{agent=\"web1\"} 1"),
        "{metrics}"
    );
    Ok(())
}

/// The coordinator is killed while a deployment runs: after the restart it re-attaches
/// from the last stored event and the history ends complete (dense, one finished event).
#[test]
fn a_crash_during_a_deployment_loses_no_event() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let coordinator = Coordinator::start(dir.path(), &CoordinatorOptions::default())?;
    let _agent = enrolled_agent(&coordinator, dir.path(), "web1")?;
    let repo = git_repo(dir.path(), "shop.git")?;
    configure_project(&coordinator, "shop", &repo.display().to_string(), "web1")?;
    let id = deploy(&coordinator)?;
    wait_deployment(
        &coordinator,
        "shop",
        &id,
        &["running", "failed", "succeeded"],
        DEADLINE,
    )?;
    coordinator.daemon.signal("KILL")?;
    let coordinator = coordinator.restart_after_crash()?;
    let d = wait_deployment(
        &coordinator,
        "shop",
        &id,
        &["failed", "succeeded"],
        Duration::from_secs(120),
    )?;
    let (_, events) = read_sse(
        &coordinator.url,
        &format!("/api/projects/shop/deployments/{id}/events"),
        &coordinator.admin_token,
        None,
    )?;
    let seqs: Vec<u64> = events.iter().map(|e| e.0).collect();
    assert_eq!(seqs, (1..=seqs.len() as u64).collect::<Vec<_>>());
    assert_eq!(events.iter().filter(|e| e.1 == "finished").count(), 1);
    assert_eq!(
        events.last().map(|e| e.2["status"].clone()),
        Some(d["status"].clone())
    );
    Ok(())
}
