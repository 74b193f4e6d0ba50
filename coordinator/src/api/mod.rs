//! The REST API under `/api`: routing, authentication, JSON bodies and the one place where
//! errors become `{error: {code, message}}` responses.

mod agents;
mod credentials;
mod deployments;
mod enroll;
mod environments;
mod events;
mod instances;
mod metrics;
pub mod openapi;
mod projects;
mod restore;
mod snapshot_transfer;
mod snapshots;
pub mod tokens;
mod webhooks;

pub use webhooks::Gate as WebhookGate;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use axum::extract::rejection::JsonRejection;
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{header, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, MethodRouter};
use axum::{Json, Router};
use serde::de::DeserializeOwned;
use serde_json::json;
use time::OffsetDateTime;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::agents::{AgentCallError, AgentHub, Refusal};
use crate::auth::{hash_token, Permission, Principal, TokenRejection};
use crate::config::CoordinatorConfig;
use crate::metrics::Metrics;
use crate::pki::Pki;
use crate::queue::{CancelError, Dispatcher};
use crate::secrets::SecretBox;
use crate::store::{Store, StoreError};

/// Largest JSON body accepted anywhere in the API.
const MAX_BODY_BYTES: usize = 1024 * 1024;

/// Everything handlers share.
pub struct AppState {
    pub store: Store,
    pub hub: Arc<AgentHub>,
    pub pki: Arc<Pki>,
    pub config: Arc<CoordinatorConfig>,
    pub dispatcher: Arc<Dispatcher>,
    pub metrics: Arc<Metrics>,
    /// Seals and opens repository credentials and webhook secrets (`crate::secrets`).
    pub secrets: Arc<SecretBox>,
    /// The webhook endpoint's rate limits and decision lock.
    pub webhooks: Arc<WebhookGate>,
    /// Background work started by requests (manual snapshots) and long responses (event
    /// streams) end on this token at shutdown.
    pub cancel: CancellationToken,
    pub tracker: TaskTracker,
}

pub type SharedState = Arc<AppState>;

/// One route of the API: what the router serves and what the OpenAPI document must list.
pub struct Endpoint {
    pub method: Method,
    pub path: &'static str,
    pub route: MethodRouter<SharedState>,
}

pub fn endpoint(method: Method, path: &'static str, route: MethodRouter<SharedState>) -> Endpoint {
    Endpoint {
        method,
        path,
        route,
    }
}

/// Every route of the API. The router is built from this list alone, so a test of the
/// list against the OpenAPI document is a test of the router.
pub fn endpoints() -> Vec<Endpoint> {
    let mut all = vec![
        endpoint(Method::GET, "/api/health", get(health)),
        endpoint(Method::GET, "/api/me", get(me)),
        endpoint(Method::GET, "/api/openapi.json", get(openapi::serve)),
        endpoint(Method::GET, "/metrics", get(metrics::serve)),
    ];
    all.extend(enroll::endpoints());
    all.extend(agents::endpoints());
    all.extend(tokens::endpoints());
    all.extend(projects::endpoints());
    all.extend(credentials::endpoints());
    all.extend(environments::endpoints());
    all.extend(instances::endpoints());
    all.extend(deployments::endpoints());
    all.extend(events::endpoints());
    all.extend(snapshots::endpoints());
    all.extend(snapshot_transfer::endpoints());
    all.extend(restore::endpoints());
    all.extend(webhooks::endpoints());
    all
}

pub fn router(state: SharedState) -> Router {
    let mut router = Router::new();
    for e in endpoints() {
        router = router.route(e.path, e.route);
    }
    router
        .merge(crate::dashboard::routes())
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(axum::extract::DefaultBodyLimit::max(MAX_BODY_BYTES))
        .layer(axum::middleware::from_fn(log_request))
        .with_state(state)
}

async fn health() -> Json<serde_json::Value> {
    Json(json!({"status": "ok", "version": env!("CARGO_PKG_VERSION")}))
}

async fn me(Auth(principal): Auth) -> Json<serde_json::Value> {
    Json(json!({
        "tokenId": principal.token_id,
        "name": principal.name,
        "admin": principal.admin,
        "grants": principal.grants,
    }))
}

/// Unknown paths under `/api` are JSON errors like every API answer; others are the
/// dashboard's.
async fn not_found(uri: axum::http::Uri) -> Response {
    let path = uri.path();
    if path == "/api" || path.starts_with("/api/") {
        ApiError::not_found("no such API path").into_response()
    } else {
        crate::dashboard::not_found()
    }
}

async fn method_not_allowed() -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        "this method is not allowed on this path",
    )
}

/// Logs method, path, status and duration; never headers or bodies (they carry secrets).
async fn log_request(request: Request, next: Next) -> Response {
    let method = request.method().clone();
    let path = request.uri().path().to_owned();
    let started = Instant::now();
    let response = next.run(request).await;
    tracing::info!(
        %method,
        path = %path,
        status = response.status().as_u16(),
        ms = started.elapsed().as_millis() as u64,
        "request"
    );
    response
}

/// An API error; the only conversion to the `{error: {code, message}}` body.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
        }
    }
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "bad_request", message)
    }
    pub fn unauthorized(message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, "unauthorized", message)
    }
    pub fn forbidden(message: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, "forbidden", message)
    }
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found", message)
    }
    pub fn conflict(message: impl Into<String>) -> Self {
        Self::new(StatusCode::CONFLICT, "conflict", message)
    }
    pub fn conflict_code(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::CONFLICT, code, message)
    }
    pub fn unavailable(message: impl Into<String>) -> Self {
        Self::new(StatusCode::SERVICE_UNAVAILABLE, "unavailable", message)
    }
    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", message)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        if self.status.is_server_error() {
            tracing::error!(code = self.code, "{}", self.message);
        }
        let body = json!({"error": {"code": self.code, "message": self.message}});
        (self.status, Json(body)).into_response()
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::NotFound(what) => ApiError::not_found(format!("{what} not found")),
            StoreError::Conflict(what) => ApiError::conflict(format!("{what} already exists")),
            StoreError::Refused(why) => ApiError::conflict(why),
            StoreError::Rejected(why) => ApiError::unauthorized(why),
            other => ApiError::internal(other.to_string()),
        }
    }
}

impl From<crate::domain::Invalid> for ApiError {
    fn from(e: crate::domain::Invalid) -> Self {
        ApiError::bad_request(e.0)
    }
}

/// Generating or sealing a secret fails only on the coordinator's side (no randomness,
/// a wrong key file): never the caller's fault.
impl From<crate::credentials::CredentialsError> for ApiError {
    fn from(e: crate::credentials::CredentialsError) -> Self {
        ApiError::internal(e.to_string())
    }
}

impl From<CancelError> for ApiError {
    fn from(e: CancelError) -> Self {
        match e {
            CancelError::Finished { .. } => ApiError::conflict(e.to_string()),
            CancelError::Store(e) => e.into(),
        }
    }
}

/// How a failed agent call shows to API clients: the agent's own refusals keep their
/// meaning (404, 409, 400, 501); an agent that cannot be reached is a 502.
impl From<AgentCallError> for ApiError {
    fn from(e: AgentCallError) -> Self {
        let message = e.to_string();
        match e {
            AgentCallError::Unknown(_) => ApiError::not_found(message),
            AgentCallError::NotEnrolled(_) => ApiError::conflict(message),
            AgentCallError::Failed { .. } | AgentCallError::NotConnected { .. } => {
                ApiError::new(StatusCode::BAD_GATEWAY, "agent_unreachable", message)
            }
            AgentCallError::Refused { reason, .. } => match reason {
                Refusal::NotFound => ApiError::not_found(message),
                Refusal::Invalid => ApiError::bad_request(message),
                Refusal::Conflict => ApiError::conflict(message),
                Refusal::Exhausted => ApiError::new(
                    StatusCode::INSUFFICIENT_STORAGE,
                    "insufficient_storage",
                    message,
                ),
                Refusal::Unimplemented => ApiError::new(
                    StatusCode::NOT_IMPLEMENTED,
                    "agent_not_implemented",
                    message,
                ),
                Refusal::Corrupt => ApiError::conflict_code("snapshot_corrupt", message),
                Refusal::Internal => ApiError::new(StatusCode::BAD_GATEWAY, "agent_error", message),
            },
        }
    }
}

/// Checks a project-scoped permission. A caller without it gets 403 whether or not the
/// project exists, so a token for project A learns nothing about project B; only callers
/// holding the permission get to see a 404.
pub fn require(
    principal: &Principal,
    permission: Permission,
    project: &str,
) -> Result<(), ApiError> {
    if principal.may(permission, project) {
        Ok(())
    } else {
        Err(ApiError::forbidden(format!(
            "this token lacks {permission} on project {project}"
        )))
    }
}

/// A path parameter; a parameter that cannot be decoded is a 400.
pub struct PathParam<T>(pub T);

impl<S, T> FromRequestParts<S> for PathParam<T>
where
    T: DeserializeOwned + Send,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        axum::extract::Path::<T>::from_request_parts(parts, state)
            .await
            .map(|axum::extract::Path(v)| PathParam(v))
            .map_err(|e| ApiError::bad_request(format!("invalid path: {}", e.body_text())))
    }
}

/// The query string as name/value pairs; a malformed one is a 400.
pub struct QueryParams(pub HashMap<String, String>);

impl<S: Send + Sync> FromRequestParts<S> for QueryParams {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        let axum::extract::Query(pairs) =
            axum::extract::Query::<Vec<(String, String)>>::from_request_parts(parts, state)
                .await
                .map_err(|e| {
                    ApiError::bad_request(format!("invalid query string: {}", e.body_text()))
                })?;
        let mut q = HashMap::new();
        for (name, value) in pairs {
            if q.contains_key(&name) {
                return Err(ApiError::bad_request(format!(
                    "query parameter {:?} is given more than once",
                    crate::domain::shorten(&name)
                )));
            }
            q.insert(name, value);
        }
        Ok(QueryParams(q))
    }
}

impl QueryParams {
    /// Refuses parameters other than `allowed` (a typo would otherwise be ignored).
    pub fn only(&self, allowed: &[&str]) -> Result<(), ApiError> {
        match self.0.keys().find(|k| !allowed.contains(&k.as_str())) {
            Some(k) => Err(ApiError::bad_request(format!(
                "unknown query parameter {:?}; allowed: {}",
                crate::domain::shorten(k),
                allowed.join(", ")
            ))),
            None => Ok(()),
        }
    }
}

/// Serde helpers for integer fields of request bodies. JSON has one number type, and
/// JSON Schema's `integer` includes `1.0`, so a whole number written with a fraction part
/// is that integer; anything else (negative, fractional, too large) is refused.
pub mod whole {
    use serde::de::Error;
    use serde::{Deserialize, Deserializer};

    fn from_number<E: Error>(n: &serde_json::Number) -> Result<u64, E> {
        if let Some(v) = n.as_u64() {
            return Ok(v);
        }
        match n.as_f64() {
            Some(f) if f.fract() == 0.0 && (0.0..18_446_744_073_709_551_616.0).contains(&f) => {
                // Whole and in range: the conversion is exact for every such value.
                #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
                Ok(f as u64)
            }
            _ => Err(E::custom(format!(
                "expected a non-negative whole number, not {n}"
            ))),
        }
    }

    fn narrow<T: TryFrom<u64>, E: Error>(v: u64) -> Result<T, E> {
        T::try_from(v).map_err(|_| E::custom(format!("{v} is too large")))
    }

    /// A required integer field.
    pub fn int<'de, D: Deserializer<'de>, T: TryFrom<u64>>(d: D) -> Result<T, D::Error> {
        let n = serde_json::Number::deserialize(d)?;
        narrow(from_number(&n)?)
    }

    /// An optional integer field (with `#[serde(default)]`): absent or null is `None`.
    pub fn opt<'de, D: Deserializer<'de>, T: TryFrom<u64>>(d: D) -> Result<Option<T>, D::Error> {
        match Option::<serde_json::Number>::deserialize(d)? {
            Some(n) => narrow(from_number(&n)?).map(Some),
            None => Ok(None),
        }
    }
}

/// A JSON body whose rejections (malformed JSON, wrong types, missing fields, size) are
/// 4xx API errors naming the problem.
pub struct Body<T>(pub T);

impl<S, T> FromRequest<S> for Body<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        // Every request body is a JSON object: serde would also read a struct from an
        // array of its fields (`[null, null]`), which no client means.
        let value = match Json::<serde_json::Value>::from_request(req, state).await {
            Ok(Json(value)) => value,
            Err(rejection) => return Err(json_rejection(rejection)),
        };
        if !value.is_object() {
            return Err(ApiError::bad_request(
                "invalid JSON body: it must be a JSON object ({...})",
            ));
        }
        serde_json::from_value(value)
            .map(Body)
            .map_err(|e| ApiError::bad_request(format!("invalid JSON body: {e}")))
    }
}

/// Like [`Body`], but an empty request body stands for `T::default()` (for requests whose
/// every field is optional, so `curl -X POST` works without `-d '{}'`).
pub struct OptionalBody<T>(pub T);

impl<S, T> FromRequest<S> for OptionalBody<T>
where
    T: DeserializeOwned + Default,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        let (parts, body) = req.into_parts();
        let bytes = axum::body::to_bytes(body, MAX_BODY_BYTES)
            .await
            .map_err(|_| {
                ApiError::new(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "payload_too_large",
                    format!("request body is larger than {MAX_BODY_BYTES} bytes or unreadable"),
                )
            })?;
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return Ok(OptionalBody(T::default()));
        }
        let req = Request::from_parts(parts, axum::body::Body::from(bytes));
        Body::<T>::from_request(req, state)
            .await
            .map(|Body(v)| OptionalBody(v))
    }
}

/// A body extractor (`Body`, `OptionalBody`) whose rejection waits until the handler asks
/// for the body, so a handler can authorize first: a caller without the permission gets
/// 403, not a 415 or 400 about a body it was never allowed to send.
pub struct Deferred<E>(Result<E, ApiError>);

impl<E> Deferred<E> {
    /// The body, or its rejection; call after authorizing.
    pub fn get(self) -> Result<E, ApiError> {
        self.0
    }
}

impl<S, E> FromRequest<S> for Deferred<E>
where
    E: FromRequest<S, Rejection = ApiError>,
    S: Send + Sync,
{
    type Rejection = std::convert::Infallible;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        Ok(Deferred(E::from_request(req, state).await))
    }
}

fn json_rejection(rejection: JsonRejection) -> ApiError {
    match rejection {
        JsonRejection::MissingJsonContentType(_) => ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            "send the body as JSON with Content-Type: application/json",
        ),
        JsonRejection::BytesRejection(_) => ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
            format!("request body is larger than {MAX_BODY_BYTES} bytes or unreadable"),
        ),
        other => ApiError::bad_request(format!("invalid JSON body: {}", other.body_text())),
    }
}

/// The token of an `Authorization: Bearer <token>` header. The scheme is case-insensitive
/// (RFC 9110 section 11.1); one or more spaces separate it from the token.
fn bearer_token(header: &str) -> Option<&str> {
    let (scheme, rest) = header.split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("bearer") {
        return None;
    }
    Some(rest.trim()).filter(|t| !t.is_empty() && !t.contains(' '))
}

/// The authenticated caller (any valid, unrevoked, unexpired token).
pub struct Auth(pub Principal);

impl FromRequestParts<SharedState> for Auth {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &SharedState) -> Result<Self, ApiError> {
        let header = parts
            .headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .ok_or_else(|| {
                ApiError::unauthorized("missing token: send Authorization: Bearer <token>")
            })?;
        let token = bearer_token(header).ok_or_else(|| {
            ApiError::unauthorized("Authorization header must be: Bearer <token>")
        })?;
        let record = state
            .store
            .token_by_hash(&hash_token(token))?
            .ok_or_else(|| ApiError::unauthorized("invalid token"))?;
        let principal = Principal::from_record(record, now_unix()).map_err(|e| match e {
            TokenRejection::Revoked => ApiError::unauthorized("token has been revoked"),
            TokenRejection::Expired => ApiError::unauthorized("token has expired"),
        })?;
        Ok(Auth(principal))
    }
}

/// An authenticated caller holding the admin role.
pub struct Admin(pub Principal);

impl FromRequestParts<SharedState> for Admin {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &SharedState) -> Result<Self, ApiError> {
        let Auth(principal) = Auth::from_request_parts(parts, state).await?;
        if principal.admin {
            Ok(Admin(principal))
        } else {
            Err(ApiError::forbidden("this action needs an admin token"))
        }
    }
}

pub fn now_unix() -> i64 {
    OffsetDateTime::now_utc().unix_timestamp()
}

/// RFC 3339 text for Unix seconds, in the one form every timestamp in the API has
/// (UTC, three fraction digits).
pub fn rfc3339(unix: i64) -> String {
    crate::domain::rfc3339_ms(unix.saturating_mul(1000))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Grant;

    #[test]
    fn project_permissions_are_403_without_looking_anything_up() {
        let p = Principal {
            token_id: "t".into(),
            name: "ci".into(),
            admin: false,
            grants: vec![Grant {
                project: "shop".into(),
                permission: Permission::ViewDeployments,
            }],
        };
        assert!(require(&p, Permission::ViewDeployments, "shop").is_ok());
        let other = require(&p, Permission::ViewDeployments, "other").expect_err("other");
        assert_eq!(other.status, StatusCode::FORBIDDEN);
        let deploy = require(&p, Permission::ManageDeployments, "shop").expect_err("deploy");
        assert_eq!(deploy.status, StatusCode::FORBIDDEN);
        assert!(
            deploy.message.contains("manage:deployments"),
            "{}",
            deploy.message
        );
    }

    #[test]
    fn the_bearer_scheme_is_case_insensitive() {
        let cases = [
            ("Bearer abc", Some("abc")),
            ("bearer abc", Some("abc")),
            ("BEARER   abc ", Some("abc")),
            ("Bearerabc", None),
            ("Basic abc", None),
            ("Bearer ", None),
            ("Bearer a b", None),
            ("abc", None),
        ];
        for (header, want) in cases {
            assert_eq!(bearer_token(header), want, "{header:?}");
        }
    }

    #[test]
    fn unreachable_agents_are_502_and_refusals_keep_their_meaning() {
        let e: ApiError = AgentCallError::Failed {
            name: "web1".into(),
            message: "refused".into(),
        }
        .into();
        assert_eq!(e.status, StatusCode::BAD_GATEWAY);
        let e: ApiError = AgentCallError::Refused {
            name: "web1".into(),
            reason: Refusal::NotFound,
            message: "no snapshot".into(),
        }
        .into();
        assert_eq!(e.status, StatusCode::NOT_FOUND);
    }
}
