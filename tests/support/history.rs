//! A deployment's history as the coordinator serves it (record and Server-Sent Events)
//! and as the agent journaled it (gRPC `Attach` from 1), and the checks that the first is
//! complete: the same events, dense from 1, one `finished` at the end, every step ended.

use std::time::Duration;

use anyhow::{bail, ensure, Context, Result};
use ocore_proto::v1::{self, deploy_event::Kind};
use serde_json::Value;

use crate::deploy::{read_sse, Sse};
use crate::fixture::Site;

/// The seven steps, in the order users see them.
pub const STEPS: [&str; 7] = [
    "Pre-deploy Snapshot",
    "Clone Repository",
    "Build Image",
    "Push Image",
    "Update Container",
    "Module Update",
    "Health Check",
];

/// Every event the agent journaled for deployment `id`, read with `Attach` from 1.
pub fn agent_events(site: &Site, id: &str) -> Result<Vec<v1::DeployEvent>> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let mut client = site.agent_client().await?;
        let stream = client
            .attach(v1::AttachRequest {
                deployment_id: id.to_owned(),
                from_seq: 1,
            })
            .await
            .map_err(|s| anyhow::anyhow!("Attach {id}: {s:?}"))?
            .into_inner();
        crate::grpc::collect(stream, None, Duration::from_secs(60))
            .await
            .map_err(anyhow::Error::msg)
    })
}

/// The coordinator's event log of deployment `id` in project `project`, replayed.
pub fn coordinator_events(site: &Site, project: &str, id: &str) -> Result<Vec<Sse>> {
    let c = &site.coordinator;
    let (status, events) = read_sse(
        &c.url,
        &format!("/api/projects/{project}/deployments/{id}/events"),
        &c.admin_token,
        None,
    )?;
    ensure!(
        status == 200,
        "event stream of {id} answered {status}: {events:?}"
    );
    Ok(events)
}

fn step_status_name(status: i32) -> &'static str {
    match v1::StepStatus::try_from(status) {
        Ok(v1::StepStatus::Pending) => "pending",
        Ok(v1::StepStatus::Running) => "running",
        Ok(v1::StepStatus::Completed) => "completed",
        Ok(v1::StepStatus::Failed) => "failed",
        Ok(v1::StepStatus::Skipped) => "skipped",
        _ => "unspecified",
    }
}

/// What one agent event must look like in the coordinator's log: SSE name and the fields
/// that identify it.
fn expected(event: &v1::DeployEvent) -> (String, Vec<(&'static str, Value)>) {
    match &event.kind {
        Some(Kind::Step(s)) => (
            "step".into(),
            vec![
                ("name", s.name.clone().into()),
                ("status", step_status_name(s.status).into()),
            ],
        ),
        Some(Kind::Log(l)) => (
            "log".into(),
            vec![
                ("step", l.step.clone().into()),
                ("line", l.line.clone().into()),
            ],
        ),
        Some(Kind::Commit(c)) => (
            "commit".into(),
            vec![("commitSha", c.commit_sha.clone().into())],
        ),
        Some(Kind::Plan(p)) => (
            "plan".into(),
            vec![("maintenanceWindow", p.maintenance_window.into())],
        ),
        Some(Kind::Snapshot(s)) => (
            "snapshot".into(),
            vec![("snapshotId", s.snapshot_id.clone().into())],
        ),
        Some(Kind::Image(i)) => (
            "image".into(),
            vec![("imageRef", i.image_ref.clone().into())],
        ),
        Some(Kind::Finished(_)) => ("finished".into(), vec![]),
        None => ("unknown".into(), vec![]),
    }
}

/// Unix milliseconds of an RFC 3339 time as the API writes it.
fn millis(v: &Value) -> Option<i64> {
    let t =
        time::OffsetDateTime::parse(v.as_str()?, &time::format_description::well_known::Rfc3339)
            .ok()?;
    i64::try_from(t.unix_timestamp_nanos() / 1_000_000).ok()
}

/// Fails unless the coordinator's log is exactly the agent's journal: same sequence
/// numbers, times, kinds and contents, dense from 1, ending with the one `finished`.
pub fn assert_same_history(coordinator: &[Sse], agent: &[v1::DeployEvent]) -> Result<()> {
    let seqs: Vec<u64> = coordinator.iter().map(|e| e.0).collect();
    ensure!(
        seqs == (1..=seqs.len() as u64).collect::<Vec<_>>(),
        "the coordinator's log is not dense from 1: {seqs:?}"
    );
    let finished = coordinator.iter().filter(|e| e.1 == "finished").count();
    ensure!(
        finished == 1 && coordinator.last().is_some_and(|e| e.1 == "finished"),
        "the coordinator's log must end with exactly one finished event ({finished} found)"
    );
    ensure!(
        coordinator.len() == agent.len(),
        "the coordinator stored {} events, the agent journaled {}",
        coordinator.len(),
        agent.len()
    );
    for ((seq, name, data), a) in coordinator.iter().zip(agent) {
        let (want_name, fields) = expected(a);
        ensure!(
            *seq == a.seq && *name == want_name && millis(&data["at"]) == Some(a.at),
            "event {seq} differs: coordinator {name} {data}, agent {a:?}"
        );
        for (field, value) in fields {
            ensure!(
                data[field] == value,
                "event {seq} ({name}) has {field} = {}, the agent journaled {value}",
                data[field]
            );
        }
    }
    Ok(())
}

/// Fails unless the deployment record is finished and complete: all seven steps in order,
/// each ended (no step left pending or running), every completed step timed, and the
/// final fields set.
pub fn assert_record_complete(d: &Value) -> Result<()> {
    let status = d["status"].as_str().unwrap_or_default();
    if !matches!(status, "succeeded" | "failed" | "cancelled") {
        bail!("deployment is not finished: {d}");
    }
    let steps = d["steps"].as_array().context("steps")?;
    let names: Vec<&str> = steps.iter().filter_map(|s| s["name"].as_str()).collect();
    ensure!(names == STEPS, "steps {names:?}");
    for step in steps {
        let s = step["status"].as_str().unwrap_or_default();
        ensure!(
            matches!(s, "completed" | "failed" | "skipped"),
            "step left {s}: {step}"
        );
        if s != "skipped" {
            ensure!(
                step["completedAt"].is_string(),
                "step without its end: {step}"
            );
        }
        if s == "completed" {
            ensure!(
                step["startedAt"].is_string() && step["durationMs"].is_u64(),
                "completed step without its start or duration: {step}"
            );
        }
    }
    for field in ["createdAt", "startedAt", "finishedAt"] {
        ensure!(d[field].is_string(), "deployment without {field}: {d}");
    }
    ensure!(
        d["durationMs"].is_u64(),
        "deployment without durationMs: {d}"
    );
    if status == "succeeded" {
        ensure!(
            steps.iter().all(|s| s["status"] != "failed"),
            "a succeeded deployment with a failed step: {d}"
        );
        for field in ["commitSha", "imageRef"] {
            ensure!(d[field].is_string(), "succeeded without {field}: {d}");
        }
    }
    Ok(())
}
