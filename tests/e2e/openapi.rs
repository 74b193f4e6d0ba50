//! The OpenAPI document served by the coordinator describes what it serves: every
//! documented operation reaches a handler (never the router's "no such path" or 405).

use anyhow::{Context, Result};
use ocore_tests::{Coordinator, CoordinatorOptions};
use serde_json::json;

#[test]
fn every_documented_operation_is_served() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let coordinator = Coordinator::start(dir.path(), &CoordinatorOptions::default())?;
    let (status, doc) = coordinator.api("GET", "/api/openapi.json", None, None)?;
    assert_eq!(status, 200);
    assert_eq!(doc["openapi"], "3.1.0");
    let mut operations = 0;
    for (path, ops) in doc["paths"].as_object().context("paths")? {
        let concrete = path
            .split('/')
            .map(|seg| if seg.starts_with('{') { "ghost" } else { seg })
            .collect::<Vec<_>>()
            .join("/");
        for method in ops.as_object().context("ops")?.keys() {
            let method = method.to_ascii_uppercase();
            let body = (method != "GET" && method != "DELETE").then(|| json!({}));
            let (status, answer) = coordinator.api(
                &method,
                &concrete,
                Some(&coordinator.admin_token),
                body.as_ref(),
            )?;
            assert_ne!(status, 405, "{method} {concrete}: {answer}");
            assert!(
                !(status == 404 && answer["error"]["message"] == "no such API path"),
                "{method} {concrete} is documented but not routed"
            );
            assert!(
                status < 500 || status == 502 || status == 501,
                "{method} {concrete}: {status} {answer}"
            );
            operations += 1;
        }
    }
    assert!(operations >= 40, "{operations}");
    // And an undocumented path is the router's fallback.
    let (status, answer) = coordinator.api(
        "GET",
        "/api/nothing-here",
        Some(&coordinator.admin_token),
        None,
    )?;
    assert_eq!(status, 404);
    assert_eq!(answer["error"]["message"], "no such API path");
    Ok(())
}
