//! `GET /metrics`: Prometheus text format. Any valid API token may scrape (the figures
//! name agents and instances, so they are not for the whole network), unless
//! `[metrics] public = true` opens it for scrapers that cannot send a token.

use std::collections::BTreeMap;

use axum::extract::{FromRequestParts, State};
use axum::http::header;
use axum::http::request::Parts;
use axum::response::IntoResponse;

use super::{ApiError, Auth, SharedState};
use crate::domain::DeploymentStatus;
use crate::metrics::Gauges;

pub async fn serve(
    State(state): State<SharedState>,
    parts: Parts,
) -> Result<impl IntoResponse, ApiError> {
    if !state.config.metrics.public {
        let mut parts = parts;
        Auth::from_request_parts(&mut parts, &state).await?;
    }
    let active = state.store.active_deployments()?;
    let mut gauges = Gauges {
        queued: 0,
        running: 0,
        queue_by_instance: BTreeMap::new(),
        agents: state.hub.link_states(),
    };
    gauges.agents.sort_by(|a, b| a.0.cmp(&b.0));
    for d in &active {
        match d.status {
            DeploymentStatus::Queued => {
                gauges.queued += 1;
                *gauges
                    .queue_by_instance
                    .entry(d.instance_id.clone())
                    .or_default() += 1;
            }
            DeploymentStatus::Running => gauges.running += 1,
            _ => {}
        }
    }
    Ok((
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        state.metrics.render(&gauges),
    ))
}
