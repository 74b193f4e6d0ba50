//! Permissions, checked on every route the OpenAPI document lists, against what the
//! document declares (`x-ocore-access`): no or bad token 401; a token of project B on
//! project A 403, whether or not the resource exists; a token with exactly the declared
//! permission gets past authorisation; the two other permissions do not. The webhook
//! endpoint (`signature`) takes no token at all: without the provider's signature, 401.

use anyhow::{Context, Result};
use ocore_tests::{
    configure_project, enrolled_agent, project_token, Coordinator, CoordinatorOptions,
};
use serde_json::{json, Value};

const PERMISSIONS: [&str; 3] = [
    "view:deployments",
    "manage:deployments",
    "manage:environments",
];

fn body_for(path: &str, deployment: &str) -> Value {
    if path.ends_with("/deploy") {
        json!({"branch": "main"})
    } else if path.ends_with("/rollback") {
        json!({"deploymentId": deployment})
    } else if path.ends_with("/restore") {
        json!({"dryRun": true})
    } else if path.ends_with("/snapshot-settings") {
        json!({"keepLast": 3, "keepDays": 0})
    } else {
        json!({})
    }
}

#[test]
fn every_route_enforces_the_access_it_documents() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let coordinator = Coordinator::start(dir.path(), &CoordinatorOptions::default())?;
    let mut agent = enrolled_agent(&coordinator, dir.path(), "web1")?;
    let _other_agent = enrolled_agent(&coordinator, dir.path(), "web2")?;
    configure_project(&coordinator, "shop", "/srv/git/shop.git", "web1")?;
    configure_project(&coordinator, "other", "/srv/git/other.git", "web2")?;
    // The agent stays away, so deployments wait and a cancelled one is a finished one.
    agent.daemon.take().context("daemon")?.terminate()?;
    let d = coordinator.cli_json(&["deploy", "--project", "shop", "--branch", "main"])?;
    let deployment = d["id"].as_str().context("id")?.to_owned();
    let cancelled = coordinator.cli_json(&["deploy", "cancel", &deployment])?;
    assert_eq!(cancelled["status"], "cancelled", "{cancelled}");
    // A webhook secret, so the webhook endpoint answers for its signature, not 404.
    coordinator.cli_json(&["webhook", "reconfigure", "--project", "shop"])?;

    let with = |p: &str| project_token(&coordinator, "shop", &[p]);
    let tokens: Vec<(&str, String)> = PERMISSIONS
        .iter()
        .map(|p| Ok((*p, with(p)?)))
        .collect::<Result<_>>()?;
    let foreign = project_token(&coordinator, "other", &PERMISSIONS)?;

    let (status, doc) = coordinator.api("GET", "/api/openapi.json", None, None)?;
    assert_eq!(status, 200);
    let mut checked = 0;
    for (path, ops) in doc["paths"].as_object().context("paths")? {
        for (method, op) in ops.as_object().context("ops")? {
            let access = op["x-ocore-access"].as_str().context("x-ocore-access")?;
            let concrete = path
                .replace("{projectId}", "shop")
                .replace("{environmentId}", "shop-prod")
                .replace("{instanceId}", "shop-prod")
                .replace("{deploymentId}", &deployment)
                .replace("{snapshotId}", "ghost")
                .replace("{branch}", "main")
                .replace("{provider}", "github")
                .replace("{name}", "ghost")
                .replace("{id}", "ghost");
            let method = method.to_ascii_uppercase();
            let body = body_for(path, &deployment);
            let what = format!("{method} {concrete} ({access})");
            let call = |token: Option<&str>| -> Result<u16> {
                let body = (method != "GET" && method != "DELETE").then_some(&body);
                Ok(coordinator
                    .api(&method, &concrete, token, body)
                    .with_context(|| what.clone())?
                    .0)
            };
            if access == "public" {
                continue;
            }
            if access == "signature" {
                // Only the provider's signature authenticates a delivery: no token, any
                // token, even an admin's, is a 401.
                assert_eq!(call(None)?, 401, "{what} unsigned");
                assert_eq!(
                    call(Some(&coordinator.admin_token))?,
                    401,
                    "{what} with a token"
                );
                checked += 1;
                continue;
            }
            assert_eq!(call(None)?, 401, "{what} without a token");
            assert_eq!(call(Some("oct_0000"))?, 401, "{what} with an unknown token");
            if path == "/metrics" {
                assert_eq!(call(Some(&foreign))?, 200, "{what}");
                continue;
            }
            // Project-scoped and admin routes: project B's token learns nothing about A.
            // (Lists answer everyone, filtered: checked below.)
            let is_list = access == "token" && !path.contains('{');
            let expected = if is_list { 200 } else { 403 };
            assert_eq!(
                call(Some(&foreign))?,
                expected,
                "{what} with project other's token"
            );
            for (permission, token) in &tokens {
                let status = call(Some(token))?;
                let allowed = access == *permission || access == "token";
                if allowed {
                    assert!(
                        status != 401 && status != 403,
                        "{what} with {permission}: {status}"
                    );
                } else {
                    assert_eq!(status, 403, "{what} with {permission}");
                }
            }
            checked += 1;
        }
    }
    assert!(checked >= 40, "only {checked} operations checked");
    // The snapshot transfer and restore routes are among those walked (manage:environments).
    for path in [
        "/api/environments/{environmentId}/snapshots/{snapshotId}/export",
        "/api/environments/{environmentId}/snapshots/{snapshotId}/verify",
        "/api/environments/{environmentId}/snapshots/import",
        "/api/environments/{environmentId}/snapshots/{snapshotId}/restore",
    ] {
        let access = doc["paths"][path]
            .as_object()
            .and_then(|ops| ops.values().next())
            .map(|op| op["x-ocore-access"].clone());
        assert_eq!(access, Some(json!("manage:environments")), "{path}");
    }

    // 403 does not depend on existence; 404 only for callers holding the permission.
    let ghost_viewer = project_token(&coordinator, "ghost", &["view:deployments"])?;
    let (status, _) = coordinator.api(
        "GET",
        "/api/projects/ghost/deployments",
        Some(&ghost_viewer),
        None,
    )?;
    assert_eq!(status, 404);
    let (status, _) = coordinator.api(
        "GET",
        "/api/projects/ghost/deployments",
        Some(&foreign),
        None,
    )?;
    assert_eq!(status, 403);
    let (status, _) = coordinator.api(
        "GET",
        "/api/environments/ghost/snapshots",
        Some(&foreign),
        None,
    )?;
    assert_eq!(status, 403);
    let (status, _) = coordinator.api(
        "GET",
        "/api/environments/ghost/snapshots",
        Some(&coordinator.admin_token),
        None,
    )?;
    assert_eq!(status, 404);
    // Listing shows only the projects a token has a permission on.
    let (_, projects) = coordinator.api("GET", "/api/projects", Some(&foreign), None)?;
    let ids: Vec<&str> = projects["projects"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|p| p["id"].as_str())
        .collect();
    assert_eq!(ids, ["other"]);
    let (_, envs) = coordinator.api(
        "GET",
        "/api/environments?projectId=shop",
        Some(&foreign),
        None,
    )?;
    assert_eq!(envs["total"], 0);
    // A deployment of project A is not found under project B's path, even for an admin.
    let (status, _) = coordinator.api(
        "GET",
        &format!("/api/projects/other/deployments/{deployment}"),
        Some(&coordinator.admin_token),
        None,
    )?;
    assert_eq!(status, 404);
    Ok(())
}
