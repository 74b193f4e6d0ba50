//! Restoring any snapshot of an environment over its live database and filestore
//! (`manage:environments`): `POST /api/environments/{environmentId}/snapshots/{snapshotId}/restore`,
//! with `dryRun: true` for the plan. A restore is queued like a rollback (`triggerType:
//! rollback`, the same durable queue and the agent's Rollback RPC), and so is undoable the
//! same way: the agent snapshots the state it replaces first.
//!
//! This file also owns the rule for which image comes back, which rollbacks share
//! ([`serving`]): the image that served when the snapshot was taken, found in the
//! instance's history; for a snapshot taken elsewhere (imported), the image serving now.

use axum::extract::State;
use axum::http::{Method, StatusCode};
use axum::routing::post;
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};

use super::deployments::{detail, enqueue, new_deployment};
use super::snapshots::{target, view};
use super::{endpoint, ApiError, Auth, Deferred, Endpoint, OptionalBody, PathParam, SharedState};
use crate::domain::{
    rfc3339_ms, shorten, Deployment, DeploymentStatus, Environment, GitRef, Instance,
    RollbackTarget, Snapshot, SnapshotKind, SnapshotState, TriggerType,
};
use crate::store::StoreError;

/// How far back the history is read to find an image (deployments of the project).
const MAX_HISTORY: usize = 100_000;
const PAGE: usize = 500;

pub fn endpoints() -> Vec<Endpoint> {
    vec![endpoint(
        Method::POST,
        "/api/environments/{environmentId}/snapshots/{snapshotId}/restore",
        post(restore),
    )]
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct RestoreBody {
    /// Answer 200 with what the restore would do, and queue nothing.
    #[serde(default)]
    dry_run: bool,
}

/// Which earlier deployment's image counts as "serving then".
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Then {
    /// The last one created before the deployment at this `order` (a pre-deploy snapshot's).
    Before(u64),
    /// The last one finished before this time (Unix ms; a manual or scheduled snapshot's).
    FinishedBefore(i64),
}

/// What served `instance` now and then: the newest succeeded deployment that left an
/// image, and the newest one that matches `then`. `history` is the project's, newest
/// first; it is read only as far as needed.
pub(super) fn serving<E>(
    history: impl IntoIterator<Item = Result<Deployment, E>>,
    instance: &str,
    then: Option<Then>,
) -> Result<(Option<Deployment>, Option<Deployment>), E> {
    let mut now = None;
    for d in history {
        let d = d?;
        if d.instance_id != instance
            || d.status != DeploymentStatus::Succeeded
            || d.served_image().is_none()
        {
            continue;
        }
        let matches = match then {
            None => false,
            Some(Then::Before(order)) => d.order < order,
            Some(Then::FinishedBefore(at)) => d.finished_at.is_some_and(|f| f < at),
        };
        if now.is_none() {
            now = Some(d.clone());
        }
        if matches {
            return Ok((now, Some(d)));
        }
        if then.is_none() {
            break;
        }
    }
    Ok((now, None))
}

/// A project's deployments, newest first, read from the store a page at a time.
pub(super) fn history(
    state: &SharedState,
    project: &str,
) -> impl Iterator<Item = Result<Deployment, StoreError>> {
    let store = state.store.clone();
    let project = project.to_owned();
    let mut before = u64::MAX;
    let mut read = 0usize;
    let mut page: std::vec::IntoIter<Deployment> = Vec::new().into_iter();
    let mut done = false;
    std::iter::from_fn(move || loop {
        if let Some(d) = page.next() {
            before = d.order;
            return Some(Ok(d));
        }
        if done || read >= MAX_HISTORY {
            return None;
        }
        match store.deployments_before(&project, before, PAGE) {
            Ok(next) => {
                done = next.len() < PAGE;
                read += next.len();
                page = next.into_iter();
            }
            Err(e) => {
                done = true;
                return Some(Err(e));
            }
        }
    })
}

/// The facts of a deployment whose image comes back, as plans show them.
pub(super) fn returns_to(d: &Deployment) -> Value {
    json!({
        "deploymentId": d.id,
        "imageRef": d.served_image(),
        "commitSha": d.commit_sha,
        "commitMessage": d.commit_message,
        "branch": d.branch,
        "tag": d.tag,
        "triggerType": d.trigger_type,
        "finishedAt": d.finished_at.map(rfc3339_ms),
    })
}

/// The snapshot as the agent lists it now (the source of truth), else as the coordinator
/// last knew it while the agent is away. Only a complete snapshot can be restored.
async fn find_snapshot(
    state: &SharedState,
    environment: &Environment,
    instance: &Instance,
    id: &str,
) -> Result<Snapshot, ApiError> {
    let missing = |why: String| ApiError::new(StatusCode::NOT_FOUND, "snapshot_missing", why);
    let cached = state.store.snapshot(&environment.id, id)?;
    let listed = state
        .hub
        .list_snapshots(
            &instance.agent,
            &instance.agent_instance_id,
            &environment.id,
        )
        .await;
    let known = match listed {
        Ok(list) => match list.into_iter().find(|s| s.id == id) {
            Some(s) => {
                state.store.put_snapshot(&s)?;
                Some(s)
            }
            None => {
                return Err(match cached.map(|c| c.state) {
                    Some(SnapshotState::Creating) => ApiError::conflict(format!(
                        "snapshot {id} is still being taken; restore it once it is ready"
                    )),
                    Some(SnapshotState::Failed) => ApiError::conflict(format!(
                        "snapshot {id} failed and holds nothing to restore"
                    )),
                    _ => missing(format!(
                        "snapshot {} is not on agent {} for environment {}",
                        shorten(id),
                        instance.agent,
                        environment.id
                    )),
                })
            }
        },
        Err(e) => {
            tracing::info!(agent = %instance.agent, "restore plan from the cache: {e}");
            cached
        }
    };
    match known {
        Some(s) if s.state == SnapshotState::Ready => Ok(s),
        Some(s) if s.state == SnapshotState::Deleted => Err(missing(format!(
            "snapshot {id} of environment {} was deleted (by retention or by hand)",
            environment.id
        ))),
        Some(s) if s.state == SnapshotState::Creating => Err(ApiError::conflict(format!(
            "snapshot {id} is still being taken; restore it once it is ready"
        ))),
        Some(_) => Err(ApiError::conflict(format!(
            "snapshot {id} failed and holds nothing to restore"
        ))),
        None => Err(missing(format!(
            "snapshot {} not found in environment {}",
            shorten(id),
            environment.id
        ))),
    }
}

/// Whether the snapshot was taken on this environment: not imported, or an import of a
/// snapshot this environment itself once had (its original id is known here).
fn taken_here(state: &SharedState, environment: &str, s: &Snapshot) -> Result<bool, ApiError> {
    if s.imported_at.is_none() {
        return Ok(true);
    }
    let Some(original) = &s.original_id else {
        return Ok(false);
    };
    Ok(state
        .store
        .snapshot(environment, original)?
        .is_some_and(|o| o.imported_at.is_none()))
}

/// When the snapshot's state was serving: before its deployment (a pre-deploy snapshot of
/// a deployment of this instance), else at its creation time.
fn then_of(state: &SharedState, instance: &Instance, s: &Snapshot) -> Result<Then, ApiError> {
    if s.kind == SnapshotKind::PreDeploy {
        if let Some(id) = &s.deployment_id {
            if let Some(d) = state.store.deployment(id)? {
                if d.instance_id == instance.id {
                    return Ok(Then::Before(d.order));
                }
            }
        }
    }
    Ok(Then::FinishedBefore(s.created_at))
}

/// The plan's explanation when the image serving now stays.
fn keeps_current(s: &Snapshot, instance: &Instance, here: bool, now: &Deployment) -> Vec<String> {
    let image = now.served_image().unwrap_or("-");
    let why = if here {
        format!(
            "no deployment of instance {} that left an image had finished when snapshot {} was taken, so the image serving now stays: {image}",
            instance.id, s.id
        )
    } else {
        let from = match &s.original_id {
            Some(o) => format!("an oCore export of snapshot {o} taken elsewhere"),
            None => "an Odoo backup".to_owned(),
        };
        format!(
            "snapshot {} was imported from {from}; which code served it is not known here, so the image serving now stays: {image}",
            s.id
        )
    };
    vec![
        why,
        "the database comes back with the module checksums it stored \
         (ir_config_parameter module_auto_update.installed_checksums), so the next deploy \
         runs odoo -u for every installed module whose code differs from the snapshot's; \
         until then the code serving now runs on the snapshot's schema"
            .to_owned(),
    ]
}

async fn restore(
    State(state): State<SharedState>,
    Auth(p): Auth,
    PathParam((environment_id, snapshot_id)): PathParam<(String, String)>,
    body: Deferred<OptionalBody<RestoreBody>>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let (environment, instance) = target(&state, &p, &environment_id)?;
    let OptionalBody(body) = body.get()?;
    let snapshot = find_snapshot(&state, &environment, &instance, &snapshot_id).await?;
    let here = taken_here(&state, &environment.id, &snapshot)?;
    let then = if here {
        Some(then_of(&state, &instance, &snapshot)?)
    } else {
        None
    };
    let (now, then) = serving(history(&state, &environment.project_id), &instance.id, then)?;
    let Some(now) = now else {
        return Err(ApiError::conflict_code(
            "no_image",
            format!(
                "instance {} has no image yet: no deployment of it has succeeded, so there is \
                 no code to run the restored database with; deploy once (e.g. `ocore deploy \
                 --project {} --branch main`), then restore",
                instance.id, environment.project_id
            ),
        ));
    };
    let (chosen, source, notes) = match then {
        Some(d) => (d, "snapshot-time", Vec::new()),
        None => {
            let notes = keeps_current(&snapshot, &instance, here, &now);
            (now, "current", notes)
        }
    };
    let image_ref = chosen
        .served_image()
        .ok_or_else(|| ApiError::internal("the chosen deployment has no image"))?
        .to_owned();
    if body.dry_run {
        return Ok((
            StatusCode::OK,
            Json(json!({
                "dryRun": true,
                "snapshotId": snapshot.id,
                "projectId": environment.project_id,
                "environmentId": environment.id,
                "instanceId": instance.id,
                "snapshot": view(&snapshot),
                "imageSource": source,
                "returnsTo": returns_to(&chosen),
                "notes": notes,
            })),
        ));
    }
    let reference = GitRef {
        branch: chosen.branch.clone(),
        commit_sha: chosen.commit_sha.clone(),
        tag: chosen.tag.clone(),
    };
    let mut d = new_deployment(
        &instance,
        TriggerType::Rollback,
        &reference,
        &p.name,
        Some(&p.token_id),
    );
    d.steps.clear();
    d.commit_message.clone_from(&chosen.commit_message);
    d.commit_author.clone_from(&chosen.commit_author);
    d.image_ref = Some(image_ref.clone());
    d.rollback = Some(RollbackTarget {
        deployment_id: None,
        snapshot_id: snapshot.id.clone(),
        image_ref,
        commit_sha: chosen.commit_sha.clone(),
    });
    let d = enqueue(&state, &d)?;
    tracing::info!(deployment = %d.id, snapshot = %snapshot.id, image = source, "restore queued");
    Ok((StatusCode::ACCEPTED, Json(detail(&state, &d)?)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::deployment_tests::queued;

    fn done(
        id: &str,
        order: u64,
        instance: &str,
        status: DeploymentStatus,
        finished: i64,
    ) -> Deployment {
        let mut d = queued(id);
        d.order = order;
        d.instance_id = instance.to_owned();
        d.status = status;
        d.finished_at = Some(finished);
        d.image_ref = Some(format!("reg/ocore/{instance}:{id}"));
        d
    }

    /// Newest first, as the store reads it.
    fn history(list: &[Deployment]) -> impl Iterator<Item = Result<Deployment, ()>> + '_ {
        list.iter().rev().cloned().map(Ok)
    }

    fn ids(found: (Option<Deployment>, Option<Deployment>)) -> (Option<String>, Option<String>) {
        (found.0.map(|d| d.id), found.1.map(|d| d.id))
    }

    #[test]
    fn the_image_serving_then_is_the_last_success_of_the_instance_before() {
        use DeploymentStatus::{Failed, Succeeded};
        let list = vec![
            done("a1", 1, "a", Succeeded, 100),
            done("b1", 2, "b", Succeeded, 150),
            done("a2", 3, "a", Succeeded, 200),
            done("a3", 4, "a", Failed, 300),
            done("a4", 5, "a", Succeeded, 400),
        ];
        let some = |s: &str| Some(s.to_owned());
        // A manual snapshot at 250: a2 served (a3 failed, a4 came later); a4 serves now.
        assert_eq!(
            ids(
                serving(history(&list), "a", Some(Then::FinishedBefore(250)))
                    .expect("no error in the history")
            ),
            (some("a4"), some("a2"))
        );
        // A pre-deploy snapshot of a4: the image before it, past the failed a3.
        assert_eq!(
            ids(serving(history(&list), "a", Some(Then::Before(5)))
                .expect("no error in the history")),
            (some("a4"), some("a2"))
        );
        // Taken before anything finished: nothing served then.
        assert_eq!(
            ids(serving(history(&list), "a", Some(Then::FinishedBefore(50)))
                .expect("no error in the history")),
            (some("a4"), None)
        );
        // Other instances never count; without a time only "now" is found.
        assert_eq!(
            ids(serving(history(&list), "b", None).expect("no error in the history")),
            (some("b1"), None)
        );
        assert_eq!(
            ids(serving(history(&list), "c", None).expect("no error in the history")),
            (None, None)
        );
    }

    #[test]
    fn a_rollback_counts_with_the_image_it_returned_to() {
        let mut list = vec![done("a1", 1, "a", DeploymentStatus::Succeeded, 100)];
        // A rollback recorded before rollbacks carried imageRef: its target's image counts.
        let mut r = done("r", 2, "a", DeploymentStatus::Succeeded, 200);
        r.image_ref = None;
        r.rollback = Some(RollbackTarget {
            deployment_id: None,
            snapshot_id: "s".into(),
            image_ref: "reg/ocore/a:a0".into(),
            commit_sha: None,
        });
        list.push(r);
        let (now, then) = serving(history(&list), "a", Some(Then::FinishedBefore(250)))
            .expect("no error in the history");
        assert_eq!(
            now.as_ref().and_then(|d| d.served_image()),
            Some("reg/ocore/a:a0")
        );
        assert_eq!(then.map(|d| d.id), Some("r".to_owned()));
    }

    #[test]
    fn the_history_is_read_only_as_far_as_needed() {
        let list = [done("a1", 1, "a", DeploymentStatus::Succeeded, 100)];
        // An error past the answer is never reached.
        let items = history(&list).chain(std::iter::once(Err(())));
        assert!(serving(items, "a", None).is_ok());
        let items = history(&list).chain(std::iter::once(Err(())));
        assert!(serving(items, "a", Some(Then::FinishedBefore(10))).is_err());
    }
}
