//! Git webhooks. `POST /api/webhooks/{provider}/{projectId}` receives GitHub, GitLab and
//! Bitbucket Cloud deliveries, authenticated by the provider's signature or token over the
//! raw body (never a bearer token), and queues a deployment of each pushed ref a branch
//! mapping names. Under `/api/projects/{projectId}/webhooks` are the webhook's URLs, the
//! delivery log, redeliver and reconfigure (a new secret).
//!
//! Every delivery is recorded with its outcome and the reason, except those refused by
//! the rate limit before their signature verified (a forged flood must not flush the log).

use std::sync::Mutex;
use std::time::{Duration, Instant};

use axum::extract::State;
use axum::http::{header, HeaderMap, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Json;
use serde_json::{json, Value};

use super::deployments::{enqueue, mapped_instance, new_deployment, page, Mapped};
use super::{endpoint, require, ApiError, Auth, Endpoint, PathParam, QueryParams, SharedState};
use crate::auth::Permission;
use crate::config::WebhooksConfig;
use crate::domain::{
    now_ms, rfc3339_ms, shorten, validate_slug, webhook_secret_context, Delivery, DeploymentStatus,
    GitRef, KeptRequest, Outcome, Project, Provider, TriggerType, WebhookSecret,
};
use crate::webhooks::{self, Envelope, Event, Parsed, RateLimit, RateLimiter, RefKind, RefUpdate};

pub fn endpoints() -> Vec<Endpoint> {
    vec![
        endpoint(
            Method::POST,
            "/api/webhooks/{provider}/{projectId}",
            post(receive),
        ),
        endpoint(Method::GET, "/api/projects/{projectId}/webhooks", get(show)),
        endpoint(
            Method::POST,
            "/api/projects/{projectId}/webhooks/reconfigure",
            post(reconfigure),
        ),
        endpoint(
            Method::GET,
            "/api/projects/{projectId}/webhooks/deliveries",
            get(deliveries),
        ),
        endpoint(
            Method::POST,
            "/api/projects/{projectId}/webhooks/deliveries/{id}/redeliver",
            post(redeliver),
        ),
    ]
}

/// What the webhook endpoint keeps in memory: the rate limits and the lock that decides
/// deliveries one at a time.
pub struct Gate {
    /// Deliveries whose signature verified, per project.
    verified: RateLimiter,
    /// Deliveries refused at or before the signature, per project: a flood of forged
    /// requests spends this bucket, not the one real deliveries use.
    unverified: RateLimiter,
    limit: RateLimit,
    /// Held while a delivery is checked for duplicates, coalesced and recorded, so two
    /// copies of one delivery, or two quick pushes, are decided one after the other.
    serial: Mutex<()>,
}

impl Gate {
    pub fn new(config: &WebhooksConfig) -> Self {
        let limit = RateLimit {
            burst: config.rate_limit_burst,
            per_minute: config.rate_limit_per_minute,
        };
        Self {
            verified: RateLimiter::new(limit),
            unverified: RateLimiter::new(limit),
            limit,
            serial: Mutex::new(()),
        }
    }
}

/// One entry of the delivery log as the API shows it.
pub fn view(d: &Delivery) -> Value {
    json!({
        "id": d.id,
        "receivedAt": rfc3339_ms(d.received_at),
        "provider": d.provider,
        "event": d.event,
        "deliveryId": d.delivery_id,
        "branch": d.branch,
        "tag": d.tag,
        "commitSha": d.commit_sha,
        "outcome": d.outcome,
        "reason": d.reason,
        "deploymentId": d.deployment_id,
        "redeliveryOf": d.redelivery_of,
        "redeliverable": d.request_kept,
    })
}

/// The base URL providers reach the coordinator at: `public_url`, else the scheme the
/// listener serves and the request's Host.
fn base_url(state: &SharedState, headers: &HeaderMap) -> String {
    if let Some(url) = state.config.public_base_url() {
        return url.to_owned();
    }
    let scheme = if state.config.tls.is_some() {
        "https"
    } else {
        "http"
    };
    let host = headers
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .filter(|h| {
            !h.is_empty()
                && h.len() <= 255
                && h.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-.:[]_".contains(&b))
        })
        .map_or_else(|| state.config.listen.to_string(), str::to_owned);
    format!("{scheme}://{host}")
}

fn urls(state: &SharedState, headers: &HeaderMap, project: &str) -> Value {
    let base = base_url(state, headers);
    let mut urls = serde_json::Map::new();
    for p in Provider::ALL {
        urls.insert(
            p.as_str().to_owned(),
            json!(format!("{base}/api/webhooks/{}/{project}", p.as_str())),
        );
    }
    Value::Object(urls)
}

fn load_project(state: &SharedState, id: &str) -> Result<Project, ApiError> {
    state
        .store
        .project(id)?
        .ok_or_else(|| ApiError::not_found(format!("project {} not found", shorten(id))))
}

fn too_many(wait: Duration, message: String) -> Response {
    let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
    (
        [(header::RETRY_AFTER, secs.max(1).to_string())],
        ApiError::new(StatusCode::TOO_MANY_REQUESTS, "rate_limited", message),
    )
        .into_response()
}

fn rate_message(limit: RateLimit, project: &str, wait: Duration) -> String {
    format!(
        "rate limit: project {project} takes {} deliveries at once, then {} a minute \
         (webhooks.rate_limit_burst, webhooks.rate_limit_per_minute); retry in {}s",
        limit.burst,
        limit.per_minute,
        wait.as_secs().max(1)
    )
}

/// An entry for a delivery of `project`, before its outcome is known.
fn entry(
    project: &str,
    provider: Provider,
    env: &Envelope,
    redelivery_of: Option<&str>,
) -> Delivery {
    let bounded = |v: &Option<String>| v.as_deref().map_or_else(|| "-".to_owned(), shorten);
    Delivery {
        id: uuid::Uuid::now_v7().to_string(),
        order: 0,
        project_id: project.to_owned(),
        received_at: now_ms(),
        provider,
        event: bounded(&env.event),
        delivery_id: env.delivery_id.clone().unwrap_or_else(|| "-".to_owned()),
        branch: None,
        tag: None,
        commit_sha: None,
        outcome: Outcome::Ignored,
        reason: String::new(),
        deployment_id: None,
        redelivery_of: redelivery_of.map(str::to_owned),
        request_kept: false,
    }
}

fn record(
    state: &SharedState,
    d: Delivery,
    kept: Option<&KeptRequest>,
) -> Result<Delivery, ApiError> {
    let d = state.store.record_delivery(&d, kept)?;
    tracing::info!(
        project = %d.project_id,
        provider = d.provider.as_str(),
        delivery = %d.delivery_id,
        outcome = d.outcome.as_str(),
        deployment = d.deployment_id.as_deref().unwrap_or("-"),
        "webhook delivery"
    );
    Ok(d)
}

/// Records a delivery refused before it was authenticated and answers with `status`,
/// unless the project's bucket of refused deliveries is empty: then it is a 429 and is
/// not recorded.
fn refuse(
    state: &SharedState,
    provider: Provider,
    project: &str,
    headers: &HeaderMap,
    body: Option<&[u8]>,
    (status, code): (StatusCode, &'static str),
    reason: String,
) -> Result<Response, ApiError> {
    let gate = &state.webhooks;
    if let Err(wait) = gate.unverified.check(project, Instant::now()) {
        return Ok(too_many(wait, rate_message(gate.limit, project, wait)));
    }
    let mut d = entry(
        project,
        provider,
        &webhooks::envelope(provider, headers, body),
        None,
    );
    d.outcome = Outcome::Rejected;
    d.reason.clone_from(&reason);
    record(state, d, None)?;
    Ok(ApiError::new(status, code, reason).into_response())
}

/// The answer to a provider: the outcome and reason of the delivery's entries (one per
/// ref). A rejection is an error body with its 4xx status.
fn answer(status: StatusCode, entries: &[Delivery]) -> Response {
    let first = entries.first();
    if status.is_client_error() {
        let reason = first.map_or_else(String::new, |d| d.reason.clone());
        return ApiError::new(status, "bad_request", reason).into_response();
    }
    let body = json!({
        "outcome": first.map(|d| d.outcome),
        "reason": first.map(|d| d.reason.clone()),
        "deploymentId": first.and_then(|d| d.deployment_id.clone()),
        "deliveries": entries.iter().map(view).collect::<Vec<_>>(),
    });
    (status, Json(body)).into_response()
}

async fn receive(
    State(state): State<SharedState>,
    PathParam((provider, project)): PathParam<(String, String)>,
    headers: HeaderMap,
    body: axum::body::Body,
) -> Result<Response, ApiError> {
    let provider = Provider::parse(&provider).map_err(|e| ApiError::not_found(e.0))?;
    // An unknown project and a project without a webhook get the same answer, so the
    // endpoint tells an anonymous caller nothing about which projects exist.
    let not_configured = || {
        ApiError::not_found(format!(
            "no webhook is configured for project {p}; run `ocore webhook reconfigure --project {p}`",
            p = shorten(&project)
        ))
    };
    if validate_slug("project id", &project).is_err() {
        return Err(not_configured());
    }
    let Some(secret) = state.store.webhook_secret(&project)? else {
        return Err(not_configured());
    };
    let limit = state.config.webhooks.max_body_bytes;
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    let body = match declared {
        Some(n) if n > limit as u64 => None,
        _ => axum::body::to_bytes(body, limit).await.ok(),
    };
    let Some(body) = body else {
        return refuse(
            &state,
            provider,
            &project,
            &headers,
            None,
            (StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large"),
            format!("the body is larger than {limit} bytes (webhooks.max_body_bytes) or could not be read"),
        );
    };
    let verified = {
        let plain = state
            .secrets
            .open_text(&webhook_secret_context(&project), &secret.sealed)
            .map_err(|e| {
                ApiError::internal(format!(
                    "cannot open the webhook secret of project {project}: {e}"
                ))
            })?;
        webhooks::verify(provider, &headers, &body, &plain)
    };
    if let Err(e) = verified {
        return refuse(
            &state,
            provider,
            &project,
            &headers,
            Some(&body),
            (StatusCode::UNAUTHORIZED, "unauthorized"),
            e.to_string(),
        );
    }
    if let Err(message) = webhooks::require_json(provider, &headers) {
        return refuse(
            &state,
            provider,
            &project,
            &headers,
            Some(&body),
            (StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported_media_type"),
            message,
        );
    }
    let kept = KeptRequest::new(webhooks::kept_headers(provider, &headers), &body);
    let gate = &state.webhooks;
    if let Err(wait) = gate.verified.check(&project, Instant::now()) {
        let message = rate_message(gate.limit, &project, wait);
        let mut d = entry(
            &project,
            provider,
            &webhooks::envelope(provider, &headers, Some(&body)),
            None,
        );
        d.outcome = Outcome::Rejected;
        d.reason.clone_from(&message);
        record(&state, d, Some(&kept))?;
        return Ok(too_many(wait, message));
    }
    let (status, entries) = process(
        &state,
        &Incoming {
            provider,
            project: &project,
            headers: &headers,
            body: &body,
            kept,
            redelivery_of: None,
        },
    )?;
    Ok(answer(status, &entries))
}

/// An authenticated delivery (or the replay of a kept one), ready to be decided.
struct Incoming<'a> {
    provider: Provider,
    project: &'a str,
    headers: &'a HeaderMap,
    body: &'a [u8],
    kept: KeptRequest,
    /// For a replay: the entry replayed. A replay is not a duplicate of its original.
    redelivery_of: Option<&'a Delivery>,
}

impl Incoming<'_> {
    fn entry(&self, env: &Envelope) -> Delivery {
        entry(
            self.project,
            self.provider,
            env,
            self.redelivery_of.map(|d| d.id.as_str()),
        )
    }

    fn record(&self, state: &SharedState, mut d: Delivery) -> Result<Delivery, ApiError> {
        if let Some(original) = self.redelivery_of {
            d.reason = format!("replay of entry {}: {}", original.id, d.reason);
        }
        record(state, d, Some(&self.kept))
    }
}

/// Parses, detects duplicates, and queues a deployment of each mapped ref; returns the
/// HTTP status (202 when something was queued) and the entries recorded.
fn process(
    state: &SharedState,
    inc: &Incoming<'_>,
) -> Result<(StatusCode, Vec<Delivery>), ApiError> {
    let _serial = state
        .webhooks
        .serial
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let parsed = match webhooks::parse(inc.provider, inc.headers, inc.body) {
        Ok(p) => p,
        Err(e) => {
            let mut d = inc.entry(&webhooks::envelope(
                inc.provider,
                inc.headers,
                Some(inc.body),
            ));
            d.outcome = Outcome::Rejected;
            d.reason = e.to_string();
            return Ok((StatusCode::BAD_REQUEST, vec![inc.record(state, d)?]));
        }
    };
    let env = Envelope {
        event: Some(parsed.event.clone()),
        delivery_id: Some(parsed.delivery_id.clone()),
    };
    let title = inc.provider.title();
    if inc.redelivery_of.is_none() {
        if let Some(prev) =
            state
                .store
                .accepted_delivery(inc.project, inc.provider, &parsed.delivery_id)?
        {
            let mut d = inc.entry(&env);
            d.branch.clone_from(&prev.branch);
            d.tag.clone_from(&prev.tag);
            d.commit_sha.clone_from(&prev.commit_sha);
            d.reason = format!(
                "duplicate of delivery {} received at {} (entry {}, {}): a redelivered delivery is \
                 not acted on twice; to replay it on purpose run `ocore webhook redeliver`",
                parsed.delivery_id,
                rfc3339_ms(prev.received_at),
                prev.id,
                prev.outcome.as_str()
            );
            return Ok((StatusCode::OK, vec![inc.record(state, d)?]));
        }
    }
    let ignored = |reason: String| -> Result<(StatusCode, Vec<Delivery>), ApiError> {
        let mut d = inc.entry(&env);
        d.reason = reason;
        Ok((StatusCode::OK, vec![inc.record(state, d)?]))
    };
    match &parsed.kind {
        Event::Ping => ignored(format!(
            "ping: {title} reached oCore and the signature is valid; pushes to mapped branches will deploy"
        )),
        Event::Other => ignored(format!(
            "event {} is not a push; oCore deploys on push events only",
            shorten(&parsed.event)
        )),
        Event::Push { updates, .. } if updates.is_empty() => {
            ignored("the push changed no branch or tag".to_owned())
        }
        Event::Push { updates, pusher } => {
            let mut entries = Vec::new();
            for u in updates {
                entries.push(push_update(state, inc, &parsed, &env, u, pusher.as_deref())?);
            }
            let status = if entries.iter().any(|d| d.outcome == Outcome::Deployed) {
                StatusCode::ACCEPTED
            } else if entries.iter().all(|d| d.outcome == Outcome::Rejected) {
                StatusCode::BAD_REQUEST
            } else {
                StatusCode::OK
            };
            Ok((status, entries))
        }
    }
}

/// A pushed ref name as the log keeps it: Git ref names are at most 255 bytes (longer
/// ones are refused), and control characters (refused too) never reach a terminal.
fn bounded_name(name: &str) -> String {
    name.chars()
        .take(255)
        .map(|c| if c.is_control() { '?' } else { c })
        .collect()
}

/// Decides one pushed ref: ignored (deleted, not a branch or tag, unmapped), rejected
/// (an invalid name or commit), or deployed. A deployment of the same ref to the same
/// instance that an earlier push queued and that has not started is superseded: only the
/// newest commit is deployed, and both entries stay in the log.
fn push_update(
    state: &SharedState,
    inc: &Incoming<'_>,
    parsed: &Parsed,
    env: &Envelope,
    u: &RefUpdate,
    pusher: Option<&str>,
) -> Result<Delivery, ApiError> {
    let mut d = inc.entry(env);
    let what = format!("{} {}", u.kind.as_str(), shorten(&bounded_name(&u.name)));
    match u.kind {
        RefKind::Branch => d.branch = Some(bounded_name(&u.name)),
        RefKind::Tag => d.tag = Some(bounded_name(&u.name)),
        RefKind::Other => {}
    }
    d.commit_sha = u
        .commit_sha
        .as_deref()
        .map(|s| s.chars().take(64).collect());
    if u.kind == RefKind::Other {
        d.reason = format!("{what} is neither a branch nor a tag; nothing to deploy");
        return inc.record(state, d);
    }
    let Some(sha) = &u.commit_sha else {
        d.reason = format!("{what} was deleted; nothing to deploy");
        return inc.record(state, d);
    };
    let reference = match GitRef::new(d.branch.clone(), Some(sha.clone()), d.tag.clone()) {
        Ok(r) => r,
        Err(e) => {
            d.outcome = Outcome::Rejected;
            d.reason = format!("cannot deploy {what}: {e}");
            return inc.record(state, d);
        }
    };
    let instance = match mapped_instance(state, inc.project, &u.name)? {
        Mapped::Instance(i) => *i,
        Mapped::NoInstance(environment) => {
            d.reason = format!(
                "{what} maps to environment {environment}, which has no instance yet; nothing deployed"
            );
            return inc.record(state, d);
        }
        Mapped::Unmapped => {
            let mapped: Vec<String> = state
                .store
                .mappings(inc.project)?
                .into_iter()
                .map(|m| m.branch)
                .collect();
            let mapped = if mapped.is_empty() {
                "none yet".to_owned()
            } else {
                mapped.join(", ")
            };
            d.reason =
                format!(
                "{what} has no mapping to an environment (mapped: {mapped}); nothing deployed. \
                 Map it with `ocore mapping set --project {} --{} {} --environment ENV`",
                inc.project,
                if u.kind == RefKind::Tag { "tag" } else { "branch" },
                shorten(&bounded_name(&u.name))
            );
            return inc.record(state, d);
        }
    };
    // Older pushes of this ref whose deployments wait unstarted, found before the new
    // one is queued so it is never among them.
    let older: Vec<String> = state
        .store
        .instance_queue(&instance.id)?
        .into_iter()
        .filter(|q| {
            q.trigger_type == TriggerType::Webhook
                && q.status == DeploymentStatus::Queued
                && !q.dispatched
                && !q.cancel_requested
                && q.branch == reference.branch
                && q.tag == reference.tag
        })
        .map(|q| q.id)
        .collect();
    let provider = inc.provider.as_str();
    let requested_by = match pusher.map(str::trim).filter(|p| !p.is_empty()) {
        Some(p) => format!("{provider} webhook ({})", shorten(p)),
        None => format!("{provider} webhook"),
    };
    let mut new = new_deployment(
        &instance,
        TriggerType::Webhook,
        &reference,
        &requested_by,
        None,
    );
    new.commit_message.clone_from(&u.message);
    new.commit_author.clone_from(&u.author);
    let new = enqueue(state, &new)?;
    let short: String = sha.chars().take(12).collect();
    let mut superseded = Vec::new();
    for id in older {
        let why = format!(
            "superseded before it started by a newer push to {what}: commit {short} of {provider} delivery {} (deployment {})",
            parsed.delivery_id, new.id
        );
        if let Some(cancelled) = state.dispatcher.supersede(&id, why)? {
            superseded.push(cancelled.id);
        }
    }
    d.outcome = Outcome::Deployed;
    d.deployment_id = Some(new.id.clone());
    d.reason = format!(
        "{what} maps to environment {}: queued deployment {} of commit {short} to instance {}",
        instance.environment_id, new.id, instance.id
    );
    if !superseded.is_empty() {
        d.reason.push_str(&format!(
            "; it supersedes the unstarted deployment(s) {} of older pushes",
            superseded.join(", ")
        ));
    }
    inc.record(state, d)
}

async fn show(
    State(state): State<SharedState>,
    Auth(p): Auth,
    PathParam(project): PathParam<String>,
    headers: HeaderMap,
) -> Result<Json<Value>, ApiError> {
    require(&p, Permission::ViewDeployments, &project)?;
    load_project(&state, &project)?;
    let secret = state.store.webhook_secret(&project)?;
    Ok(Json(json!({
        "projectId": project,
        "secretSet": secret.is_some(),
        "secretCreatedAt": secret.map(|s| rfc3339_ms(s.created_at)),
        "urls": urls(&state, &headers, &project),
        "contentType": "application/json",
        "events": {
            "github": "push",
            "gitlab": "Push events, Tag push events",
            "bitbucket": "repo:push",
        },
    })))
}

/// A new secret; the old one stops working at once. `manage:deployments` suffices (not
/// admin): the secret lets its holder queue deployments of the project's mapped refs,
/// which `manage:deployments` may do anyway through `POST /deploy`, so showing it grants
/// nothing more, and whoever deploys a project can repair its webhook without an admin.
async fn reconfigure(
    State(state): State<SharedState>,
    Auth(p): Auth,
    PathParam(project): PathParam<String>,
    headers: HeaderMap,
) -> Result<Json<Value>, ApiError> {
    require(&p, Permission::ManageDeployments, &project)?;
    load_project(&state, &project)?;
    let secret_error = |e: crate::secrets::SecretsError| {
        ApiError::internal(format!("cannot make a webhook secret: {e}"))
    };
    let random: [u8; 32] = state
        .secrets
        .random_bytes(32)
        .map_err(secret_error)?
        .try_into()
        .map_err(|_| ApiError::internal("the random source returned a short read"))?;
    let secret = webhooks::new_secret(&random);
    let record = WebhookSecret {
        project_id: project.clone(),
        sealed: state
            .secrets
            .seal(&webhook_secret_context(&project), secret.as_bytes())
            .map_err(secret_error)?,
        created_at: now_ms(),
    };
    state.store.set_webhook_secret(&record)?;
    tracing::info!(project = %project, by = %p.name, "webhook secret regenerated");
    Ok(Json(json!({
        "projectId": project,
        "secret": secret,
        "secretCreatedAt": rfc3339_ms(record.created_at),
        "urls": urls(&state, &headers, &project),
    })))
}

async fn deliveries(
    State(state): State<SharedState>,
    Auth(p): Auth,
    PathParam(project): PathParam<String>,
    q: QueryParams,
) -> Result<Json<Value>, ApiError> {
    require(&p, Permission::ViewDeployments, &project)?;
    let (offset, limit) = page(&q)?;
    load_project(&state, &project)?;
    let (total, page) = state.store.deliveries(&project, offset, limit)?;
    Ok(Json(json!({
        "total": total,
        "limit": limit,
        "offset": offset,
        "deliveries": page.iter().map(view).collect::<Vec<_>>(),
    })))
}

/// Replays a kept delivery through the same decisions as a new one. It is authorised by
/// the caller's token, and its request was verified when it arrived, so it is not checked
/// against the current secret (which may have been rotated since). It is recorded as a
/// new entry that names the one replayed, and is never refused as its duplicate.
async fn redeliver(
    State(state): State<SharedState>,
    Auth(p): Auth,
    PathParam((project, id)): PathParam<(String, String)>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    require(&p, Permission::ManageDeployments, &project)?;
    load_project(&state, &project)?;
    let original = state.store.delivery(&project, &id)?.ok_or_else(|| {
        ApiError::not_found(format!(
            "webhook delivery {} not found in project {project}",
            shorten(&id)
        ))
    })?;
    let Some(kept) = state.store.kept_request(&project, &id)? else {
        return Err(ApiError::conflict(format!(
            "the request of delivery {id} is not kept: oCore keeps only the requests whose \
             signature verified, for the newest {} deliveries of a project; redeliver it from \
             {}'s webhook log instead",
            crate::domain::MAX_KEPT_REQUESTS,
            original.provider.title()
        )));
    };
    let headers = webhooks::headers_from(&kept.headers);
    let body = kept
        .body()
        .map_err(|e| ApiError::internal(format!("delivery {id}: {e}")))?;
    tracing::info!(project = %project, entry = %id, by = %p.name, "webhook delivery replayed");
    let (status, entries) = process(
        &state,
        &Incoming {
            provider: original.provider,
            project: &project,
            headers: &headers,
            body: &body,
            kept: kept.clone(),
            redelivery_of: Some(&original),
        },
    )?;
    let first = entries.first();
    let status = if status == StatusCode::ACCEPTED {
        StatusCode::ACCEPTED
    } else {
        StatusCode::OK
    };
    Ok((
        status,
        Json(json!({
            "outcome": first.map(|d| d.outcome),
            "reason": first.map(|d| d.reason.clone()),
            "deploymentId": first.and_then(|d| d.deployment_id.clone()),
            "deliveries": entries.iter().map(view).collect::<Vec<_>>(),
        })),
    ))
}
