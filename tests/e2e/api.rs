//! The REST API end to end: administration of projects, environments, instances and
//! mappings through the CLI; input validation of deploys (4xx, never 5xx); and a deploy
//! against a real agent whose history, steps and event stream end complete.

use std::time::Duration;

use anyhow::{Context, Result};
use ocore_tests::{
    configure_project, enrolled_agent, git_repo, read_sse, wait_deployment, Coordinator,
    CoordinatorOptions,
};
use serde_json::{json, Value};

fn stderr(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn admin_configures_projects_environments_instances_and_mappings() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let coordinator = Coordinator::start(dir.path(), &CoordinatorOptions::default())?;
    // The instance binding is checked against what the agent declares.
    let _agent = enrolled_agent(&coordinator, dir.path(), "web1")?;

    let p = coordinator.cli_json(&[
        "project",
        "create",
        "shop",
        "--name",
        "Shop",
        "--repository",
        "https://git.example.invalid/shop.git",
        "--addons-path",
        "addons",
    ])?;
    assert_eq!(p["id"], "shop");
    assert_eq!(p["addonsSubpath"], "addons");
    let dup = coordinator.cli(&["project", "create", "shop", "--repository", "/srv/x"]);
    assert!(stderr(&dup).contains("already exists"), "{}", stderr(&dup));
    let bad = coordinator.cli(&["project", "create", "Shop Two", "--repository", "/srv/x"]);
    assert!(stderr(&bad).contains("project id"), "{}", stderr(&bad));
    let bad = coordinator.cli(&["project", "create", "two", "--repository", "not a url"]);
    assert!(stderr(&bad).contains("repositoryUrl"), "{}", stderr(&bad));
    let p = coordinator.cli_json(&["project", "update", "shop", "--name", "Shop NL"])?;
    assert_eq!(p["name"], "Shop NL");
    assert_eq!(p["repositoryUrl"], "https://git.example.invalid/shop.git");

    coordinator.cli_json(&[
        "environment",
        "create",
        "shop-prod",
        "--project",
        "shop",
        "--name",
        "production",
        "--keep-last",
        "5",
    ])?;
    coordinator.cli_json(&["environment", "create", "shop-staging", "--project", "shop"])?;
    let missing = coordinator.cli(&["environment", "create", "x", "--project", "nope"]);
    assert!(
        stderr(&missing).contains("project nope not found"),
        "{}",
        stderr(&missing)
    );
    let undeclared = coordinator.cli(&[
        "instance",
        "create",
        "shop-prod",
        "--environment",
        "shop-prod",
        "--agent",
        "web1",
        "--agent-instance",
        "other",
    ]);
    assert!(
        stderr(&undeclared).contains("does not declare"),
        "{}",
        stderr(&undeclared)
    );
    let i = coordinator.cli_json(&[
        "instance",
        "create",
        "shop-prod",
        "--environment",
        "shop-prod",
        "--agent",
        "web1",
        "--agent-instance",
        "web1-prod",
    ])?;
    assert_eq!(i["projectId"], "shop");
    assert!(i["activeColor"].is_null());
    let twice = coordinator.cli(&[
        "instance",
        "create",
        "shop-prod-2",
        "--environment",
        "shop-staging",
        "--agent",
        "web1",
        "--agent-instance",
        "web1-prod",
    ]);
    assert!(
        stderr(&twice).contains("already exists"),
        "one agent instance, one binding: {}",
        stderr(&twice)
    );

    coordinator.cli_json(&[
        "mapping",
        "set",
        "--project",
        "shop",
        "--branch",
        "release/17.0",
        "--environment",
        "shop-staging",
    ])?;
    coordinator.cli_json(&[
        "mapping",
        "set",
        "--project",
        "shop",
        "--branch",
        "main",
        "--environment",
        "shop-prod",
    ])?;
    let mappings = coordinator.cli_json(&["mapping", "list", "--project", "shop"])?;
    assert_eq!(mappings["total"], 2);
    let e = coordinator.cli_json(&["environment", "show", "shop-staging"])?;
    assert_eq!(e["branches"], json!(["release/17.0"]));
    let e = coordinator.cli_json(&["environment", "show", "shop-prod"])?;
    assert_eq!(e["snapshotSettings"]["keepLast"], 5);
    assert_eq!(e["instanceId"], "shop-prod");
    let foreign = coordinator.cli(&[
        "mapping",
        "set",
        "--project",
        "shop",
        "--branch",
        "x",
        "--environment",
        "nope",
    ]);
    assert!(!foreign.status.success());

    // Nothing referenced can be deleted; then everything can, in order.
    let busy = coordinator.cli(&["environment", "delete", "shop-staging"]);
    assert!(stderr(&busy).contains("mapped"), "{}", stderr(&busy));
    coordinator.cli_json(&[
        "mapping",
        "remove",
        "--project",
        "shop",
        "--branch",
        "release/17.0",
    ])?;
    coordinator.cli_json(&["environment", "delete", "shop-staging"])?;
    let busy = coordinator.cli(&["project", "delete", "shop"]);
    assert!(stderr(&busy).contains("environments"), "{}", stderr(&busy));
    let listed = coordinator.cli_json(&["instance", "list", "--project", "shop"])?;
    assert_eq!(listed["total"], 1);
    let text = coordinator.cli(&["project", "list"]);
    assert!(String::from_utf8_lossy(&text.stdout).contains("Shop NL"));
    Ok(())
}

#[test]
fn deploy_input_is_validated_with_4xx_never_5xx() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let coordinator = Coordinator::start(dir.path(), &CoordinatorOptions::default())?;
    let _agent = enrolled_agent(&coordinator, dir.path(), "web1")?;
    configure_project(&coordinator, "shop", "/nonexistent/shop.git", "web1")?;
    let admin = coordinator.admin_token.clone();
    let deploy = |body: &str, ct: &str| {
        coordinator.api_raw(
            "POST",
            "/api/projects/shop/deploy",
            Some(&admin),
            Some((ct, body)),
        )
    };

    let (status, body) = deploy("{}", "application/json")?;
    assert_eq!(status, 400);
    let message = body["error"]["message"].as_str().unwrap_or_default();
    for field in ["branch", "commitSha", "tag"] {
        assert!(message.contains(field), "{message}");
    }
    assert_eq!(body["error"]["code"], "bad_request");
    let cases: &[(&str, &str, u16)] = &[
        ("{\"commitSha\": \"abc\"}", "application/json", 400),
        ("{\"commitSha\": \"xyz123\"}", "application/json", 400),
        (
            "{\"commitSha\": \"0123456789012345678901234567890123456789a\"}",
            "application/json",
            400,
        ),
        ("{\"branch\": 12}", "application/json", 400),
        ("{\"branch\": [\"main\"]}", "application/json", 400),
        ("{\"branch\": \"main\"", "application/json", 400),
        ("not json", "application/json", 400),
        ("", "application/json", 400),
        ("[]", "application/json", 400),
        (
            "{\"branch\": \"main\", \"force\": true}",
            "application/json",
            400,
        ),
        ("{\"branch\": \"bad name\"}", "application/json", 400),
        ("{\"branch\": \"main\"}", "text/plain", 415),
        (
            "{\"branch\": \"main\", \"instanceId\": \"nope\"}",
            "application/json",
            404,
        ),
        (
            "{\"branch\": \"main\", \"instanceId\": 5}",
            "application/json",
            400,
        ),
    ];
    for (body, ct, expected) in cases {
        let (status, answer) = deploy(body, ct)?;
        assert_eq!(status, *expected, "{body} -> {answer}");
        assert!(answer["error"]["message"].is_string(), "{body} -> {answer}");
    }
    let (status, _) = coordinator.api(
        "POST",
        "/api/projects/nope/deploy",
        Some(&admin),
        Some(&json!({"branch": "main"})),
    )?;
    assert_eq!(status, 404);

    // Without instanceId: the branch mapping decides; with two instances and no mapping,
    // the caller must choose.
    coordinator.cli_json(&["environment", "create", "shop-staging", "--project", "shop"])?;
    let _agent2 = enrolled_agent(&coordinator, dir.path(), "web2")?;
    coordinator.cli_json(&[
        "instance",
        "create",
        "shop-staging",
        "--environment",
        "shop-staging",
        "--agent",
        "web2",
        "--agent-instance",
        "web2-prod",
    ])?;
    let (status, d) = coordinator.api(
        "POST",
        "/api/projects/shop/deploy",
        Some(&admin),
        Some(&json!({"branch": "main"})),
    )?;
    assert_eq!(status, 202, "{d}");
    assert_eq!(d["instanceId"], "shop-prod");
    let (status, d) = coordinator.api(
        "POST",
        "/api/projects/shop/deploy",
        Some(&admin),
        Some(&json!({"tag": "v1.0"})),
    )?;
    // A well-formed request the project's state cannot decide: 409, saying what to pass.
    assert_eq!(status, 409, "{d}");
    assert!(
        d["error"]["message"]
            .as_str()
            .unwrap_or_default()
            .contains("instanceId"),
        "{d}"
    );
    let (status, d) = coordinator.api(
        "POST",
        "/api/projects/shop/deploy",
        Some(&admin),
        Some(&json!({"commitSha": "ABCDEF1", "instanceId": "shop-staging"})),
    )?;
    assert_eq!(status, 202, "{d}");
    assert_eq!(d["commitSha"], "abcdef1");
    assert_eq!(d["triggerType"], "manual");
    assert_eq!(d["status"], "queued");

    for query in ["limit=0", "limit=101", "limit=x", "offset=-1", "limt=5"] {
        let (status, body) = coordinator.api(
            "GET",
            &format!("/api/projects/shop/deployments?{query}"),
            Some(&admin),
            None,
        )?;
        assert_eq!(status, 400, "{query}: {body}");
    }
    let (status, _) = coordinator.api(
        "GET",
        "/api/projects/shop/deployments/nope",
        Some(&admin),
        None,
    )?;
    assert_eq!(status, 404);
    let (status, body) = coordinator.api(
        "POST",
        "/api/projects/shop/rollback",
        Some(&admin),
        Some(&json!({"deploymentId": d["id"]})),
    )?;
    assert_eq!(status, 409, "no snapshot yet: {body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap_or_default()
            .contains("snapshot"),
        "{body}"
    );
    let (status, _) = coordinator.api(
        "POST",
        "/api/projects/shop/rollback",
        Some(&admin),
        Some(&json!({"deploymentId": "nope"})),
    )?;
    assert_eq!(status, 404);
    Ok(())
}

/// A deploy of a branch that does not exist reaches the real agent and fails there: the
/// record, its steps and its event log end complete and agree.
#[test]
fn a_deploy_the_agent_fails_ends_with_a_complete_history() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let coordinator = Coordinator::start(dir.path(), &CoordinatorOptions::default())?;
    let _agent = enrolled_agent(&coordinator, dir.path(), "web1")?;
    let repo = git_repo(dir.path(), "shop.git")?;
    configure_project(&coordinator, "shop", &repo.display().to_string(), "web1")?;

    let queued =
        coordinator.cli_json(&["deploy", "--project", "shop", "--branch", "no-such-branch"])?;
    let id = queued["id"].as_str().context("id")?.to_owned();
    assert_eq!(queued["status"], "queued");
    let d = wait_deployment(
        &coordinator,
        "shop",
        &id,
        &["failed"],
        Duration::from_secs(120),
    )?;
    assert!(
        d["statusReason"].as_str().is_some_and(|r| !r.is_empty()),
        "{d}"
    );
    assert!(d["finishedAt"].is_string(), "{d}");
    assert!(d["durationMs"].is_u64(), "{d}");
    assert_eq!(d["branch"], "no-such-branch");
    assert_eq!(d["requestedBy"], "initial-admin");
    for step in d["steps"].as_array().context("steps")? {
        let status = step["status"].as_str().unwrap_or_default();
        assert!(
            ["completed", "failed", "skipped"].contains(&status),
            "no step left pending or running: {d}"
        );
        for key in ["name", "output", "durationMs", "startedAt", "completedAt"] {
            assert!(step.get(key).is_some(), "step lacks {key}: {step}");
        }
    }

    // The event stream replays everything and ends after the finished event.
    let path = format!("/api/projects/shop/deployments/{id}/events");
    let (status, events) = read_sse(&coordinator.url, &path, &coordinator.admin_token, None)?;
    assert_eq!(status, 200);
    let seqs: Vec<u64> = events.iter().map(|e| e.0).collect();
    assert_eq!(
        seqs,
        (1..=seqs.len() as u64).collect::<Vec<_>>(),
        "dense seq from 1"
    );
    let last = events.last().context("events")?;
    assert_eq!(last.1, "finished");
    assert_eq!(last.2["status"], "failed");
    assert_eq!(events.iter().filter(|e| e.1 == "finished").count(), 1);
    // Resuming after an event gives exactly the rest.
    if events.len() > 1 {
        let (_, rest) = read_sse(&coordinator.url, &path, &coordinator.admin_token, Some("1"))?;
        assert_eq!(rest.first().map(|e| e.0), Some(2));
        assert_eq!(rest.len(), events.len() - 1);
    }
    let (_, none) = read_sse(
        &coordinator.url,
        &path,
        &coordinator.admin_token,
        Some(&last.0.to_string()),
    )?;
    assert!(none.is_empty(), "nothing after the last event");

    // History: newest first with the total; the CLI exit code says it failed.
    let second =
        coordinator.cli_json(&["deploy", "--project", "shop", "--branch", "no-such-branch"])?;
    let list = coordinator.cli_json(&["deploy", "list", "--project", "shop", "--limit", "1"])?;
    assert_eq!(list["total"], 2);
    assert_eq!(list["deployments"][0]["id"], second["id"]);
    assert!(
        list["deployments"][0].get("steps").is_none(),
        "summaries have no steps"
    );
    let page2 = coordinator.cli_json(&[
        "deploy",
        "list",
        "--project",
        "shop",
        "--limit",
        "1",
        "--offset",
        "1",
    ])?;
    assert_eq!(page2["deployments"][0]["id"], Value::String(id.clone()));
    let follow = coordinator.cli(&[
        "deploy",
        "follow",
        second["id"].as_str().unwrap_or_default(),
    ]);
    assert_eq!(
        follow.status.code(),
        Some(1),
        "follow of a failed deployment exits 1: {}",
        String::from_utf8_lossy(&follow.stdout)
    );
    assert!(String::from_utf8_lossy(&follow.stdout).contains("failed"));
    let shown = coordinator.cli_json(&["deploy", "show", &id])?;
    assert_eq!(shown["id"], Value::String(id.clone()));
    let (status, _) = coordinator.api(
        "POST",
        &format!("/api/projects/shop/deployments/{id}/cancel"),
        Some(&coordinator.admin_token),
        Some(&json!({})),
    )?;
    assert_eq!(status, 409, "a finished deployment cannot be cancelled");
    Ok(())
}
