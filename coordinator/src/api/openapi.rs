//! The OpenAPI 3.1 document of the REST API, served at `GET /api/openapi.json`. A unit
//! test checks that it lists exactly the routes the router serves.

use std::sync::OnceLock;

use axum::Json;
use serde_json::{json, Map, Value};

/// Who may call an operation.
#[derive(Clone, Copy)]
enum Access {
    Public,
    /// A Git provider's signature or token over the body, never a bearer token.
    Signature,
    Token,
    Admin,
    Permission(&'static str),
}

struct Op {
    method: &'static str,
    path: &'static str,
    summary: &'static str,
    access: Access,
    body: Option<&'static str>,
    status: u16,
    response: Option<&'static str>,
    query: &'static [(&'static str, &'static str)],
}

#[allow(clippy::too_many_arguments)]
const fn op(
    method: &'static str,
    path: &'static str,
    summary: &'static str,
    access: Access,
    body: Option<&'static str>,
    status: u16,
    response: Option<&'static str>,
    query: &'static [(&'static str, &'static str)],
) -> Op {
    Op {
        method,
        path,
        summary,
        access,
        body,
        status,
        response,
        query,
    }
}

use Access::{Admin, Permission as Perm, Public, Signature, Token};

const VIEW: Access = Perm("view:deployments");
const DEPLOY: Access = Perm("manage:deployments");
const ENVS: Access = Perm("manage:environments");

/// `validate_slug` and `validate_agent_name`: 1 to 63 of a-z, 0-9 and inner '-'.
const SLUG: &str = "^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$";
/// `validate_name`: no control character, and not only white space (Rust's `trim`, the
/// Unicode White_Space set, spelled out: a pattern's `\s` is not the same set everywhere).
const NAME: &str = "^(?![\\s\\S]*[\\u0000-\\u001f\\u007f-\\u009f])[\\s\\S]*[^\\t-\\r \\u0085\\u00a0\\u1680\\u2000-\\u200a\\u2028\\u2029\\u202f\\u205f\\u3000][\\s\\S]*$";
/// `validate_ref_name` (git check-ref-format's rules, as oCore checks them).
const REF: &str = "^(?!-)(?!/)(?![\\s\\S]*/$)(?![\\s\\S]*\\.$)(?![\\s\\S]*\\.lock$)(?![\\s\\S]*\\.\\.)(?![\\s\\S]*//)(?![\\s\\S]*@\\{)(?!@$)(?!\\.)(?![\\s\\S]*/\\.)[^\\u0000-\\u001f\\u007f-\\u009f\\t-\\r \\u0085\\u00a0\\u1680\\u2000-\\u200a\\u2028\\u2029\\u202f\\u205f\\u3000~^:?*\\[\\\\]{1,255}$";
/// A deploy request's reference field: white space around it is ignored, and blank means
/// "not given".
const REF_FIELD: &str = "^[\\t-\\r \\u0085\\u00a0\\u1680\\u2000-\\u200a\\u2028\\u2029\\u202f\\u205f\\u3000]*((?!-)(?!/)(?!.*/[\\t-\\r \\u0085\\u00a0\\u1680\\u2000-\\u200a\\u2028\\u2029\\u202f\\u205f\\u3000]*$)(?!.*\\.[\\t-\\r \\u0085\\u00a0\\u1680\\u2000-\\u200a\\u2028\\u2029\\u202f\\u205f\\u3000]*$)(?!.*\\.lock[\\t-\\r \\u0085\\u00a0\\u1680\\u2000-\\u200a\\u2028\\u2029\\u202f\\u205f\\u3000]*$)(?!.*\\.\\.)(?!.*//)(?!.*@\\{)(?!@[\\t-\\r \\u0085\\u00a0\\u1680\\u2000-\\u200a\\u2028\\u2029\\u202f\\u205f\\u3000]*$)(?!\\.)(?!.*/\\.)[^\\u0000-\\u001f\\u007f-\\u009f\\t-\\r \\u0085\\u00a0\\u1680\\u2000-\\u200a\\u2028\\u2029\\u202f\\u205f\\u3000~^:?*\\[\\\\]{1,255})?[\\t-\\r \\u0085\\u00a0\\u1680\\u2000-\\u200a\\u2028\\u2029\\u202f\\u205f\\u3000]*$";
/// A deploy request's commitSha: 4 to 40 hex digits; white space around ignored.
const SHA_FIELD: &str = "^[\\t-\\r \\u0085\\u00a0\\u1680\\u2000-\\u200a\\u2028\\u2029\\u202f\\u205f\\u3000]*([0-9a-fA-F]{4,40})?[\\t-\\r \\u0085\\u00a0\\u1680\\u2000-\\u200a\\u2028\\u2029\\u202f\\u205f\\u3000]*$";
/// A field that counts as given: something besides white space.
const GIVEN: &str =
    "[^\\t-\\r \\u0085\\u00a0\\u1680\\u2000-\\u200a\\u2028\\u2029\\u202f\\u205f\\u3000]";
/// `validate_repository_url`: a URL with a scheme, scp-like user@host:path, or an absolute
/// path; no white space or control character, no leading '-', no password in the URL.
const REPO_URL: &str = "^(?![\\s\\S]*[\\u0000-\\u001f\\u007f-\\u009f\\t-\\r \\u0085\\u00a0\\u1680\\u2000-\\u200a\\u2028\\u2029\\u202f\\u205f\\u3000])(?!-)(?!https?://[^/]*:[^/]*@)((https?|ssh|git|file)://[\\s\\S]+|[^:/]*@[^:/]*:[\\s\\S]+|/[\\s\\S]*)$";
/// `validate_addons_subpath`: relative, no '.' or '..' component, no control character.
const SUBPATH: &str = "^(?!/)(?!([^/]*/)*\\.\\.?(/|$))[^\\u0000-\\u001f\\u007f-\\u009f]*$";
/// `validate_address`: host:port, the host without white space, control characters, '/'
/// or '@', the port 1 to 65535.
const ADDRESS: &str = "^[^\\u0000-\\u001f\\u007f-\\u009f\\t-\\r \\u0085\\u00a0\\u1680\\u2000-\\u200a\\u2028\\u2029\\u202f\\u205f\\u3000/@]+:\\+?0*([1-9][0-9]{0,3}|[1-5][0-9]{4}|6[0-4][0-9]{3}|65[0-4][0-9]{2}|655[0-2][0-9]|6553[0-5])$";
/// `validate_token`'s user name and token.
const TOKEN_USER: &str = "^[^\\u0000-\\u001f\\u007f-\\u009f\\t-\\r \\u0085\\u00a0\\u1680\\u2000-\\u200a\\u2028\\u2029\\u202f\\u205f\\u3000:]{0,255}$";
const TOKEN_SECRET: &str = "^[^\\u0000-\\u001f\\u007f-\\u009f ]{1,4096}$";

const OPS: &[Op] = &[
    op("get", "/api/health", "Liveness and version", Public, None, 200, Some("Health"), &[]),
    op("get", "/api/me", "The calling token", Token, None, 200, Some("Me"), &[]),
    op("get", "/api/openapi.json", "This document", Public, None, 200, None, &[]),
    op("get", "/metrics", "Prometheus metrics (text format); a token unless [metrics] public = true", Token, None, 200, None, &[]),
    op("post", "/api/agents/enroll", "Trade a one-time enrolment token and a CSR for the agent's certificate", Public, Some("EnrolRequest"), 200, Some("EnrolResponse"), &[]),
    op("get", "/api/agents", "List agents with their link status", Admin, None, 200, Some("AgentList"), &[]),
    op("post", "/api/agents", "Register an agent; returns its enrolment token", Admin, Some("AgentCreate"), 201, Some("AgentToken"), &[]),
    op("get", "/api/agents/{name}", "Show an agent", Admin, None, 200, Some("Agent"), &[]),
    op("patch", "/api/agents/{name}", "Change an agent's address", Admin, Some("AgentUpdate"), 200, Some("Agent"), &[]),
    op("delete", "/api/agents/{name}", "Remove an agent; its certificate is refused from then on", Admin, None, 204, None, &[]),
    op("post", "/api/agents/{name}/enrolment-token", "Issue a new enrolment token", Admin, Some("EnrolmentTokenOptions"), 201, Some("AgentToken"), &[]),
    op("get", "/api/agents/{name}/info", "Ask the agent for its live information", Admin, None, 200, Some("AgentInfo"), &[]),
    op("get", "/api/tokens", "List API tokens (never their secrets)", Admin, None, 200, Some("TokenList"), &[]),
    op("post", "/api/tokens", "Create an API token; its secret is returned once", Admin, Some("TokenCreate"), 201, Some("Token"), &[]),
    op("delete", "/api/tokens/{id}", "Revoke a token", Admin, None, 200, Some("Token"), &[]),
    op("get", "/api/projects", "List the projects the token has a permission on", Token, None, 200, Some("ProjectList"), &[]),
    op("post", "/api/projects", "Create a project", Admin, Some("ProjectCreate"), 201, Some("Project"), &[]),
    op("get", "/api/projects/{projectId}", "Show a project", Token, None, 200, Some("Project"), &[]),
    op("patch", "/api/projects/{projectId}", "Change a project", Admin, Some("ProjectUpdate"), 200, Some("Project"), &[]),
    op("delete", "/api/projects/{projectId}", "Delete a project without environments", Admin, None, 204, None, &[]),
    op("get", "/api/projects/{projectId}/credentials", "Show the project's repository credentials (public half) and pinned SSH host key", Admin, None, 200, Some("ProjectCredentials"), &[]),
    op("delete", "/api/projects/{projectId}/credentials", "Remove the deploy key or token (fetch anonymously)", Admin, None, 200, Some("ProjectCredentials"), &[]),
    op("post", "/api/projects/{projectId}/credentials/deploy-key", "Generate the project's ed25519 deploy key (200 with the existing one), or rotate it", Admin, Some("DeployKeyRequest"), 201, Some("ProjectCredentials"), &[]),
    op("put", "/api/projects/{projectId}/credentials/https-token", "Store an HTTPS token (sealed; never returned)", Admin, Some("HttpsTokenSet"), 200, Some("ProjectCredentials"), &[]),
    op("delete", "/api/projects/{projectId}/credentials/host-key", "Forget the pinned SSH host key; the next deploy pins the key then presented", Admin, None, 200, Some("ProjectCredentials"), &[]),
    op("get", "/api/projects/{projectId}/branch-mappings", "List branch mappings", Token, None, 200, Some("BranchMappingList"), &[]),
    op("put", "/api/projects/{projectId}/branch-mappings/{branch}", "Map a branch (percent-encode '/') to an environment", Admin, Some("BranchMappingSet"), 200, Some("BranchMapping"), &[]),
    op("delete", "/api/projects/{projectId}/branch-mappings/{branch}", "Remove a branch mapping", Admin, None, 204, None, &[]),
    op("get", "/api/environments", "List environments", Token, None, 200, Some("EnvironmentList"), &[("projectId", "only this project's")]),
    op("post", "/api/environments", "Create an environment", Admin, Some("EnvironmentCreate"), 201, Some("Environment"), &[]),
    op("get", "/api/environments/{environmentId}", "Show an environment", Token, None, 200, Some("Environment"), &[]),
    op("patch", "/api/environments/{environmentId}", "Rename an environment", Admin, Some("EnvironmentUpdate"), 200, Some("Environment"), &[]),
    op("delete", "/api/environments/{environmentId}", "Delete an environment without instance or mapping", Admin, None, 204, None, &[]),
    op("get", "/api/environments/{environmentId}/snapshot-settings", "Snapshot retention settings", ENVS, None, 200, Some("SnapshotSettings"), &[]),
    op("put", "/api/environments/{environmentId}/snapshot-settings", "Change retention and apply it on the agent now", ENVS, Some("SnapshotSettingsSet"), 200, Some("SnapshotSettings"), &[]),
    op("get", "/api/environments/{environmentId}/snapshots", "List snapshots (from the agent; from the cache when it is away)", ENVS, None, 200, Some("SnapshotList"), &[]),
    op("post", "/api/environments/{environmentId}/snapshots", "Take a manual snapshot (202; taken in the background)", ENVS, None, 202, Some("Snapshot"), &[]),
    op("get", "/api/environments/{environmentId}/snapshots/estimate", "Estimate the size of the next snapshot", ENVS, None, 200, Some("SnapshotEstimate"), &[]),
    op("get", "/api/environments/{environmentId}/snapshots/{snapshotId}", "Show a snapshot as the coordinator knows it", ENVS, None, 200, Some("Snapshot"), &[]),
    op("delete", "/api/environments/{environmentId}/snapshots/{snapshotId}", "Delete a snapshot", ENVS, None, 200, Some("SnapshotDeleted"), &[]),
    op("post", "/api/environments/{environmentId}/snapshots/{snapshotId}/pin", "Pin a snapshot (retention never deletes it)", ENVS, None, 200, Some("Snapshot"), &[]),
    op("post", "/api/environments/{environmentId}/snapshots/{snapshotId}/unpin", "Unpin a snapshot", ENVS, None, 200, Some("Snapshot"), &[]),
    op("get", "/api/environments/{environmentId}/snapshots/{snapshotId}/export", "Download a snapshot as one archive (streamed; Content-Length set)", ENVS, None, 200, None, &[("format", "tar.zst (default: manifest, dump and filestore, for import) or odoo-zip (Odoo's backup zip)")]),
    op("post", "/api/environments/{environmentId}/snapshots/{snapshotId}/verify", "Read every stored part of a snapshot back and check it against its manifest", ENVS, None, 200, Some("SnapshotVerification"), &[]),
    op("post", "/api/environments/{environmentId}/snapshots/{snapshotId}/restore", "Queue a restore of the snapshot over the live database and filestore, with the image that served when it was taken (an imported one keeps the image serving now); triggerType rollback. dryRun: 200 with the plan", ENVS, Some("RestoreRequest"), 202, Some("Deployment"), &[]),
    op("post", "/api/environments/{environmentId}/snapshots/import", "Import an archive (the body: a tar.zst export or an Odoo backup zip, streamed) as a new snapshot", ENVS, Some("SnapshotArchive"), 201, Some("Snapshot"), &[]),
    op("get", "/api/instances", "List instances", Token, None, 200, Some("InstanceList"), &[("projectId", "only this project's"), ("environmentId", "only this environment's")]),
    op("post", "/api/instances", "Bind an instance declared on an agent to an environment", Admin, Some("InstanceCreate"), 201, Some("Instance"), &[]),
    op("get", "/api/instances/{instanceId}", "Show an instance and its active colour", Token, None, 200, Some("Instance"), &[]),
    op("patch", "/api/instances/{instanceId}", "Change an instance's agent binding", Admin, Some("InstanceUpdate"), 200, Some("Instance"), &[]),
    op("delete", "/api/instances/{instanceId}", "Delete an instance without active deployments", Admin, None, 204, None, &[]),
    op("post", "/api/projects/{projectId}/deploy", "Queue a deployment", DEPLOY, Some("DeployRequest"), 202, Some("Deployment"), &[]),
    op("get", "/api/projects/{projectId}/deployments", "Deployment history, newest first", VIEW, None, 200, Some("DeploymentList"), &[("limit", "page size, 1 to 100 (default 20)"), ("offset", "deployments to skip (default 0)")]),
    op("get", "/api/projects/{projectId}/deployments/{deploymentId}", "A deployment with its steps and the instance's active colour", VIEW, None, 200, Some("Deployment"), &[]),
    op("get", "/api/projects/{projectId}/deployments/{deploymentId}/events", "Server-Sent Events of the deployment (id = seq; resumable with Last-Event-ID); ends after the finished event", VIEW, None, 200, None, &[("lastEventId", "resume after this seq (the Last-Event-ID header wins)")]),
    op("post", "/api/projects/{projectId}/deployments/{deploymentId}/cancel", "Cancel a queued (200) or running (202) deployment", DEPLOY, None, 200, Some("DeploymentSummary"), &[]),
    op("post", "/api/projects/{projectId}/rollback", "Queue a rollback to a deployment's pre-deploy snapshot and the image before it (dryRun: 200 with what it would restore)", ENVS, Some("RollbackRequest"), 202, Some("Deployment"), &[]),
    op("get", "/api/deployments/{deploymentId}", "Find a deployment by id alone (view:deployments, or the token that queued it)", VIEW, None, 200, Some("Deployment"), &[]),
    op("post", "/api/deployments/{deploymentId}/rollback", "Queue a rollback to this deployment's pre-deploy snapshot, for clients that know only its id (dryRun: 200 with what it would restore)", ENVS, Some("RollbackOfRequest"), 202, Some("Deployment"), &[]),
    op("post", "/api/webhooks/{provider}/{projectId}", "Receive a GitHub, GitLab or Bitbucket Cloud delivery (provider: github, gitlab, bitbucket); a push to a mapped branch queues a deployment (202), anything else is recorded and ignored (200)", Signature, Some("WebhookPayload"), 202, Some("WebhookReceipt"), &[]),
    op("get", "/api/projects/{projectId}/webhooks", "The webhook URLs to paste into each provider and whether a secret is set (never the secret)", VIEW, None, 200, Some("WebhookConfig"), &[]),
    op("post", "/api/projects/{projectId}/webhooks/reconfigure", "Generate a new webhook secret (the old one stops working at once); returns it with the URLs", DEPLOY, None, 200, Some("WebhookReconfigured"), &[]),
    op("get", "/api/projects/{projectId}/webhooks/deliveries", "The webhook delivery log, newest first (the newest 1000 are kept)", VIEW, None, 200, Some("WebhookDeliveryList"), &[("limit", "page size, 1 to 100 (default 20)"), ("offset", "entries to skip (default 0)")]),
    op("post", "/api/projects/{projectId}/webhooks/deliveries/{id}/redeliver", "Replay a kept delivery through the same decisions; recorded as a new entry with redeliveryOf", DEPLOY, None, 200, Some("WebhookReceipt"), &[]),
];

/// Statuses particular to some operations (method, path, status, when), besides the ones
/// every operation of its kind answers (added in [`operation`]).
const ERRORS: &[(&str, &str, u16, &str)] = &[
    ("post", "/api/agents/enroll", 401, "the enrolment token is malformed, unknown, used, expired or its signature is wrong"),
    ("post", "/api/projects/{projectId}/deploy", 409, "the branch maps to an environment with no instance, the project has no instance, or several and nothing says which (pass instanceId)"),
    ("post", "/api/projects/{projectId}/deployments/{deploymentId}/cancel", 409, "the deployment has already finished"),
    ("post", "/api/projects/{projectId}/rollback", 409, "the deployment has no pre-deploy snapshot (code snapshot_missing), its snapshot was deleted, its instance is gone, or no earlier deployment left an image to return to"),
    ("post", "/api/deployments/{deploymentId}/rollback", 409, "the deployment has no pre-deploy snapshot (code snapshot_missing), its snapshot was deleted, its instance is gone, or no earlier deployment left an image to return to"),
    ("delete", "/api/tokens/{id}", 409, "the token is the last active admin token (revoking it would lock administration out; create another admin token first)"),
];

/// Operations the coordinator answers by asking an agent, with the statuses that brings.
fn calls_an_agent(path: &str) -> bool {
    path.starts_with("/api/environments/{environmentId}/snapshot")
        || path.ends_with("/rollback")
        || path == "/api/agents/{name}/info"
}

fn schema_ref(name: &str) -> Value {
    json!({"$ref": format!("#/components/schemas/{name}")})
}

fn obj(required: &[&str], props: Value) -> Value {
    json!({"type": "object", "required": required, "properties": props})
}

/// A request body's object: exactly these properties (the server refuses unknown ones).
fn req(required: &[&str], props: Value) -> Value {
    json!({"type": "object", "required": required, "properties": props, "additionalProperties": false})
}

/// An optional request field: absent and `null` both mean "not given".
fn opt(schema: Value) -> Value {
    json!({"anyOf": [schema, {"type": "null"}]})
}

/// Ids of projects, environments, instances and agents (`validate_slug`).
fn slug() -> Value {
    json!({"type": "string", "pattern": SLUG})
}

/// A display name (`validate_name`): 1 to 100 characters, no control characters, not blank.
fn name() -> Value {
    json!({"type": "string", "maxLength": 100, "pattern": NAME})
}

/// A Git branch or tag name (`validate_ref_name`), in the subset a pattern can say.
fn ref_name() -> Value {
    json!({"type": "string", "minLength": 1, "maxLength": 255, "pattern": REF})
}

/// An instance id as an agent declares it: 1 to 100 characters, no control characters.
fn agent_instance() -> Value {
    json!({"type": "string", "minLength": 1, "maxLength": 100, "pattern": "^[^\\u0000-\\u001f\\u007f-\\u009f]*$"})
}

fn nullable(t: &str) -> Value {
    json!({"type": [t, "null"]})
}

fn list_of(key: &str, item: &str) -> Value {
    obj(
        &["total", key],
        json!({"total": {"type": "integer"}, key: {"type": "array", "items": schema_ref(item)}}),
    )
}

fn schemas() -> Value {
    let time = || nullable("string");
    let deployment_summary = json!({
        "id": {"type": "string", "format": "uuid"},
        "projectId": {"type": "string"},
        "environmentId": {"type": "string"},
        "instanceId": {"type": "string"},
        "status": {"enum": ["queued", "running", "succeeded", "failed", "cancelled"]},
        "statusReason": nullable("string"),
        "triggerType": {"enum": ["manual", "webhook", "rollback"]},
        "branch": nullable("string"),
        "tag": nullable("string"),
        "commitSha": nullable("string"),
        "commitMessage": nullable("string"),
        "commitAuthor": nullable("string"),
        "snapshotId": nullable("string"),
        "imageRef": nullable("string"),
        "rollbackOf": nullable("string"),
        "restoredSnapshotId": nullable("string"),
        "durationMs": nullable("integer"),
        "createdAt": {"type": "string", "format": "date-time"},
        "startedAt": time(),
        "finishedAt": time(),
        "requestedBy": {"type": "string"},
        "cancelRequested": {"type": "boolean"},
    });
    let mut deployment = deployment_summary.clone();
    if let Value::Object(m) = &mut deployment {
        m.insert(
            "steps".into(),
            json!({"type": "array", "items": schema_ref("Step")}),
        );
        m.insert(
            "activeColor".into(),
            json!({"enum": ["blue", "green", null]}),
        );
        m.insert("plan".into(), json!({"type": ["object", "null"]}));
    }
    json!({
        "Error": obj(&["error"], json!({"error": obj(&["code", "message"], json!({"code": {"type": "string"}, "message": {"type": "string"}}))})),
        "Health": obj(&["status"], json!({"status": {"type": "string"}, "version": {"type": "string"}})),
        "Me": obj(&["tokenId"], json!({"tokenId": {"type": "string"}, "name": {"type": "string"}, "admin": {"type": "boolean"}, "grants": {"type": "array", "items": schema_ref("Grant")}})),
        "Grant": obj(&["project", "permission"], json!({"project": {"type": "string"}, "permission": {"enum": ["view:deployments", "manage:deployments", "manage:environments"]}})),
        "EnrolRequest": req(&["token", "csrPem"], json!({"token": {"type": "string"}, "csrPem": {"type": "string"}})),
        "EnrolResponse": obj(&["agentName", "certificatePem", "caCertificatePem"], json!({"agentName": {"type": "string"}, "certificatePem": {"type": "string"}, "caCertificatePem": {"type": "string"}})),
        "Agent": obj(&["name", "address", "status"], json!({"name": {"type": "string"}, "address": {"type": "string"}, "status": {"enum": ["pending-enrolment", "connecting", "connected", "unreachable", "refused"]}, "lastError": nullable("string"), "instances": {"type": "array"}})),
        "AgentList": list_of("agents", "Agent"),
        "AgentCreate": req(&["name", "address"], json!({"name": slug(), "address": {"type": "string", "maxLength": 255, "pattern": ADDRESS}, "tokenTtlSecs": opt(json!({"type": "integer", "minimum": 1, "maximum": super::agents::MAX_TOKEN_TTL_SECS}))})),
        "AgentUpdate": req(&[], json!({"address": opt(json!({"type": "string", "maxLength": 255, "pattern": ADDRESS}))})),
        "EnrolmentTokenOptions": req(&[], json!({"tokenTtlSecs": opt(json!({"type": "integer", "minimum": 1, "maximum": super::agents::MAX_TOKEN_TTL_SECS}))})),
        "AgentToken": obj(&["enrolmentToken", "expiresAt"], json!({"enrolmentToken": {"type": "string"}, "expiresAt": {"type": "string"}, "enrolCommand": {"type": "string"}, "agent": schema_ref("Agent")})),
        "AgentInfo": obj(&["name", "version"], json!({"name": {"type": "string"}, "version": {"type": "string"}, "hostname": {"type": "string"}, "instances": {"type": "array"}})),
        "Token": obj(&["id", "name", "admin"], json!({"id": {"type": "string"}, "name": {"type": "string"}, "admin": {"type": "boolean"}, "grants": {"type": "array", "items": schema_ref("Grant")}, "token": {"type": "string", "description": "only in the answer to a create"}, "expiresAt": time(), "revokedAt": time()})),
        "TokenList": list_of("tokens", "Token"),
        "GrantRequest": req(&["project", "permission"], json!({"project": slug(), "permission": {"enum": ["view:deployments", "manage:deployments", "manage:environments"]}})),
        "TokenCreate": json!({
            "type": "object",
            "required": ["name"],
            "additionalProperties": false,
            "description": "An admin token, or one with at least one grant.",
            "properties": {"name": name(), "admin": {"type": "boolean"}, "grants": {"type": "array", "items": schema_ref("GrantRequest")}, "expiresInSecs": opt(json!({"type": "integer", "minimum": 1, "maximum": u64::MAX}))},
            "anyOf": [{"required": ["admin"], "properties": {"admin": {"const": true}}}, {"required": ["grants"], "properties": {"grants": {"minItems": 1}}}],
        }),
        "Project": obj(&["id", "name", "repositoryUrl"], json!({"id": {"type": "string"}, "name": {"type": "string"}, "repositoryUrl": {"type": "string"}, "addonsSubpath": {"type": "string"}, "credentials": {"oneOf": [schema_ref("RepositoryCredentials"), {"type": "null"}]}, "sshHostKey": {"oneOf": [schema_ref("PinnedHostKey"), {"type": "null"}]}, "createdAt": {"type": "string"}, "updatedAt": {"type": "string"}})),
        "RepositoryCredentials": obj(&["kind", "createdAt"], json!({"kind": {"enum": ["ssh-key", "https-token"]}, "publicKey": {"type": "string", "description": "ssh-key: the OpenSSH public key to add as a read-only deploy key"}, "fingerprint": {"type": "string", "description": "ssh-key: SHA256 fingerprint"}, "username": {"type": "string", "description": "https-token: the user name sent with the token"}, "createdAt": {"type": "string"}})),
        "PinnedHostKey": obj(&["key", "fingerprint", "pinnedAt"], json!({"key": {"type": "string", "description": "<type> <base64>, as in known_hosts"}, "fingerprint": {"type": "string"}, "pinnedAt": {"type": "string"}})),
        "ProjectCredentials": obj(&["projectId", "credentials", "sshHostKey"], json!({"projectId": {"type": "string"}, "credentials": {"oneOf": [schema_ref("RepositoryCredentials"), {"type": "null"}]}, "sshHostKey": {"oneOf": [schema_ref("PinnedHostKey"), {"type": "null"}]}})),
        "DeployKeyRequest": req(&[], json!({"rotate": {"type": "boolean", "description": "replace an existing key or token with a new key"}})),
        "HttpsTokenSet": req(&["token"], json!({"username": opt(json!({"type": "string", "pattern": TOKEN_USER, "description": "default x-access-token; empty means the default"})), "token": {"type": "string", "pattern": TOKEN_SECRET, "writeOnly": true}})),
        "ProjectList": list_of("projects", "Project"),
        "ProjectCreate": req(&["id", "repositoryUrl"], json!({"id": slug(), "name": opt(name()), "repositoryUrl": {"type": "string", "maxLength": 2048, "pattern": REPO_URL}, "addonsSubpath": {"type": "string", "maxLength": 1024, "pattern": SUBPATH}})),
        "ProjectUpdate": req(&[], json!({"name": opt(name()), "repositoryUrl": opt(json!({"type": "string", "maxLength": 2048, "pattern": REPO_URL})), "addonsSubpath": opt(json!({"type": "string", "maxLength": 1024, "pattern": SUBPATH}))})),
        "BranchMapping": obj(&["projectId", "branch", "environmentId"], json!({"projectId": {"type": "string"}, "branch": {"type": "string"}, "environmentId": {"type": "string"}})),
        "BranchMappingList": list_of("mappings", "BranchMapping"),
        "BranchMappingSet": req(&["environmentId"], json!({"environmentId": slug()})),
        "SnapshotSettingsSet": req(&["keepLast", "keepDays"], json!({"keepLast": {"type": "integer", "minimum": 0, "maximum": 10000, "description": "0: no count limit"}, "keepDays": {"type": "integer", "minimum": 0, "maximum": 36500, "description": "0: no age limit"}})),
        "SnapshotSettings": obj(&["keepLast", "keepDays"], json!({"environmentId": {"type": "string"}, "keepLast": {"type": "integer"}, "keepDays": {"type": "integer"}, "retention": {"type": "object", "description": "outcome of applying the settings on the agent (PUT only)"}})),
        "Environment": obj(&["id", "projectId", "name"], json!({"id": {"type": "string"}, "projectId": {"type": "string"}, "name": {"type": "string"}, "branches": {"type": "array", "items": {"type": "string"}}, "instanceId": nullable("string"), "snapshotSettings": schema_ref("SnapshotSettingsSet")})),
        "EnvironmentList": list_of("environments", "Environment"),
        "EnvironmentCreate": req(&["id", "projectId"], json!({"id": slug(), "projectId": slug(), "name": opt(name()), "snapshotSettings": opt(schema_ref("SnapshotSettingsSet"))})),
        "EnvironmentUpdate": req(&[], json!({"name": opt(name())})),
        "Instance": obj(&["id", "projectId", "environmentId", "agent", "agentInstanceId"], json!({"id": {"type": "string"}, "projectId": {"type": "string"}, "environmentId": {"type": "string"}, "agent": {"type": "string"}, "agentInstanceId": {"type": "string"}, "activeColor": {"enum": ["blue", "green", null]}, "activeColorAt": time()})),
        "InstanceList": list_of("instances", "Instance"),
        "InstanceCreate": req(&["id", "environmentId", "agent", "agentInstanceId"], json!({"id": slug(), "environmentId": {"type": "string"}, "agent": slug(), "agentInstanceId": agent_instance()})),
        "InstanceUpdate": req(&[], json!({"agent": opt(slug()), "agentInstanceId": opt(agent_instance())})),
        "DeployRequest": {
            "type": "object",
            "additionalProperties": false,
            "description": "At least one of branch, commitSha and tag (white space around them is ignored).",
            "properties": {"branch": opt(json!({"type": "string", "pattern": REF_FIELD})), "commitSha": opt(json!({"type": "string", "pattern": SHA_FIELD})), "tag": opt(json!({"type": "string", "pattern": REF_FIELD})), "instanceId": opt(json!({"type": "string"}))},
            "anyOf": [
                {"required": ["branch"], "properties": {"branch": {"type": "string", "pattern": GIVEN}}},
                {"required": ["commitSha"], "properties": {"commitSha": {"type": "string", "pattern": GIVEN}}},
                {"required": ["tag"], "properties": {"tag": {"type": "string", "pattern": GIVEN}}},
            ],
        },
        "RollbackOfRequest": req(&[], json!({"dryRun": {"type": "boolean", "description": "answer 200 with a RollbackPlan and queue nothing"}})),
        "RollbackRequest": req(&["deploymentId"], json!({"deploymentId": {"type": "string"}, "dryRun": {"type": "boolean", "description": "answer 200 with a RollbackPlan and queue nothing"}})),
        "RollbackPlan": obj(&["dryRun", "deploymentId", "snapshot", "returnsTo"], json!({"dryRun": {"const": true}, "deploymentId": {"type": "string"}, "projectId": {"type": "string"}, "environmentId": {"type": "string"}, "instanceId": {"type": "string"}, "snapshotId": {"type": "string"}, "snapshot": schema_ref("Snapshot"), "imageSource": {"const": "snapshot-time"}, "returnsTo": schema_ref("ReturnsTo"), "notes": {"type": "array", "items": {"type": "string"}}})),
        "ReturnsTo": obj(&["deploymentId", "imageRef"], json!({"deploymentId": {"type": "string", "description": "the deployment whose image comes back"}, "imageRef": {"type": "string"}, "commitSha": nullable("string"), "commitMessage": nullable("string"), "branch": nullable("string"), "tag": nullable("string"), "triggerType": {"enum": ["manual", "webhook", "rollback"]}, "finishedAt": time()})),
        "RestoreRequest": req(&[], json!({"dryRun": {"type": "boolean", "description": "answer 200 with a RestorePlan and queue nothing; the body may be empty"}})),
        "RestorePlan": obj(&["dryRun", "snapshotId", "snapshot", "imageSource", "returnsTo", "notes"], json!({"dryRun": {"const": true}, "snapshotId": {"type": "string"}, "projectId": {"type": "string"}, "environmentId": {"type": "string"}, "instanceId": {"type": "string"}, "snapshot": schema_ref("Snapshot"), "imageSource": {"enum": ["snapshot-time", "current"], "description": "snapshot-time: the image that served when the snapshot was taken; current: the image serving now stays (an imported snapshot, or nothing had been deployed then)"}, "returnsTo": schema_ref("ReturnsTo"), "notes": {"type": "array", "items": {"type": "string"}, "description": "why the image was chosen, and what follows from it"}})),
        "Step": obj(&["name", "status", "output"], json!({"name": {"type": "string"}, "status": {"enum": ["pending", "running", "completed", "failed", "skipped"]}, "output": {"type": "string"}, "durationMs": nullable("integer"), "startedAt": time(), "completedAt": time()})),
        "DeploymentSummary": obj(&["id", "projectId", "status", "triggerType", "createdAt"], deployment_summary),
        "Deployment": obj(&["id", "projectId", "status", "triggerType", "steps"], deployment),
        "DeploymentList": obj(&["total", "deployments"], json!({"total": {"type": "integer"}, "limit": {"type": "integer"}, "offset": {"type": "integer"}, "deployments": {"type": "array", "items": schema_ref("DeploymentSummary")}})),
        "DeployEvent": {
            "type": "object",
            "description": "The data of one Server-Sent Event; its SSE event name is `type`.",
            "required": ["seq", "at", "type"],
            "properties": {"seq": {"type": "integer"}, "at": {"type": "string"}, "type": {"enum": ["step", "log", "commit", "plan", "snapshot", "image", "finished"]}},
        },
        "DeployEventMessage": obj(&["id", "event", "data"], json!({"id": {"type": "string", "pattern": "^[0-9]+$", "description": "the event's seq (for Last-Event-ID)"}, "event": {"enum": ["step", "log", "commit", "plan", "snapshot", "image", "finished"]}, "data": {"type": "string", "contentMediaType": "application/json", "contentSchema": schema_ref("DeployEvent")}})),
        "Snapshot": obj(&["id", "environmentId", "kind", "state", "pinned"], json!({"id": {"type": "string"}, "environmentId": {"type": "string"}, "kind": {"enum": ["pre-deploy", "manual", "scheduled"]}, "state": {"enum": ["creating", "ready", "failed", "deleted"]}, "pinned": {"type": "boolean"}, "sizeBytes": {"type": "integer"}, "createdAt": {"type": "string"}, "deploymentId": nullable("string"), "commitSha": nullable("string"), "error": nullable("string"), "importedAt": {"type": ["string", "null"], "description": "when it was imported from an archive; null for a snapshot taken here"}, "originalId": {"type": ["string", "null"], "description": "an imported oCore export's id where it was first taken"}})),
        "SnapshotList": obj(&["total", "snapshots", "source"], json!({"environmentId": {"type": "string"}, "total": {"type": "integer"}, "snapshots": {"type": "array", "items": schema_ref("Snapshot")}, "source": {"enum": ["agent", "cache"]}, "agentError": nullable("string")})),
        "SnapshotEstimate": obj(&["estimatedBytes"], json!({"databaseBytes": {"type": "integer"}, "newFilestoreBytes": {"type": "integer"}, "compressionRatio": {"type": "number"}, "estimatedBytes": {"type": "integer"}, "freeDiskBytes": {"type": "integer"}})),
        "SnapshotVerification": obj(&["id", "verified"], json!({"id": {"type": "string"}, "environmentId": {"type": "string"}, "verified": {"type": "boolean"}, "parts": {"type": "integer"}, "blobs": {"type": "integer"}, "bytes": {"type": "integer"}, "problem": nullable("string")})),
        "SnapshotArchive": {"type": "string", "contentMediaType": "application/octet-stream", "description": "the archive's bytes"},
        "WebhookPayload": {"type": "object", "description": "The provider's own JSON payload, unchanged: GitHub (X-GitHub-Event, X-GitHub-Delivery, X-Hub-Signature-256), GitLab (X-Gitlab-Event, X-Gitlab-Event-UUID, X-Gitlab-Token) or Bitbucket Cloud (X-Event-Key, X-Request-UUID, X-Hub-Signature)."},
        "WebhookDelivery": obj(&["id", "receivedAt", "provider", "event", "deliveryId", "outcome", "reason"], json!({"id": {"type": "string", "format": "uuid"}, "receivedAt": {"type": "string", "format": "date-time"}, "provider": {"enum": ["github", "gitlab", "bitbucket"]}, "event": {"type": "string"}, "deliveryId": {"type": "string"}, "branch": nullable("string"), "tag": nullable("string"), "commitSha": nullable("string"), "outcome": {"enum": ["deployed", "ignored", "rejected"]}, "reason": {"type": "string"}, "deploymentId": nullable("string"), "redeliveryOf": nullable("string"), "redeliverable": {"type": "boolean"}})),
        "WebhookDeliveryList": obj(&["total", "deliveries"], json!({"total": {"type": "integer"}, "limit": {"type": "integer"}, "offset": {"type": "integer"}, "deliveries": {"type": "array", "items": schema_ref("WebhookDelivery")}})),
        "WebhookReceipt": obj(&["outcome", "reason", "deliveries"], json!({"outcome": {"enum": ["deployed", "ignored", "rejected"]}, "reason": {"type": "string"}, "deploymentId": nullable("string"), "deliveries": {"type": "array", "items": schema_ref("WebhookDelivery")}})),
        "WebhookUrls": obj(&["github", "gitlab", "bitbucket"], json!({"github": {"type": "string"}, "gitlab": {"type": "string"}, "bitbucket": {"type": "string"}})),
        "WebhookConfig": obj(&["projectId", "secretSet", "urls"], json!({"projectId": {"type": "string"}, "secretSet": {"type": "boolean"}, "secretCreatedAt": nullable("string"), "urls": schema_ref("WebhookUrls"), "contentType": {"type": "string"}, "events": {"type": "object"}})),
        "WebhookReconfigured": obj(&["projectId", "secret", "urls"], json!({"projectId": {"type": "string"}, "secret": {"type": "string", "description": "shown only in this answer"}, "secretCreatedAt": {"type": "string"}, "urls": schema_ref("WebhookUrls")})),
        "SnapshotDeleted": obj(&["id", "freedBytes"], json!({"id": {"type": "string"}, "deleted": {"type": "boolean"}, "freedBytes": {"type": "integer"}})),
    })
}

fn error_response(description: &str) -> Value {
    json!({"description": description, "content": {"application/json": {"schema": schema_ref("Error")}}})
}

fn operation(o: &Op) -> Value {
    let mut params: Vec<Value> = o
        .path
        .split('/')
        .filter_map(|seg| seg.strip_prefix('{').and_then(|s| s.strip_suffix('}')))
        .map(|name| {
            // The server checks these two before looking anything up (400 otherwise).
            let schema = match name {
                "name" => slug(),
                "branch" => ref_name(),
                "snapshotId" => json!({"type": "string", "pattern": "^[A-Za-z0-9-]{1,64}$"}),
                _ => json!({"type": "string"}),
            };
            json!({"name": name, "in": "path", "required": true, "schema": schema})
        })
        .collect();
    params.extend(o.query.iter().map(|(name, description)| {
        let schema = match *name {
            "limit" => json!({"type": "integer", "minimum": 1, "maximum": 100}),
            "offset" => json!({"type": "integer", "minimum": 0, "maximum": 100_000_000}),
            "lastEventId" => json!({"type": "integer", "minimum": 0, "maximum": u64::MAX}),
            "format" => json!({"enum": ["tar.zst", "odoo-zip"]}),
            _ => json!({"type": "string"}),
        };
        json!({"name": name, "in": "query", "required": false, "description": description, "schema": schema})
    }));
    let mut responses = Map::new();
    let ok = match (o.response, o.path.ends_with("/events"), o.path) {
        (_, true, _) => {
            json!({"description": "text/event-stream: one event per DeployEvent", "content": {"text/event-stream": {"schema": schema_ref("DeployEventMessage")}}})
        }
        (_, _, p) if p.ends_with("/export") => {
            json!({"description": "the archive", "content": {"application/zstd": {"schema": {"type": "string", "contentMediaType": "application/zstd"}}, "application/zip": {"schema": {"type": "string", "contentMediaType": "application/zip"}}}})
        }
        (_, _, "/metrics") => {
            json!({"description": "Prometheus text format", "content": {"text/plain": {"schema": {"type": "string"}}}})
        }
        (Some(schema), _, _) => {
            json!({"description": "success", "content": {"application/json": {"schema": schema_ref(schema)}}})
        }
        (None, _, _) => json!({"description": "success"}),
    };
    responses.insert(o.status.to_string(), ok);
    if o.path.ends_with("/rollback") {
        responses.insert("200".into(), json!({"description": "dryRun: what the rollback would restore; nothing is queued", "content": {"application/json": {"schema": schema_ref("RollbackPlan")}}}));
    }
    if o.path.ends_with("/restore") {
        responses.insert("200".into(), json!({"description": "dryRun: what the restore would do; nothing is queued", "content": {"application/json": {"schema": schema_ref("RestorePlan")}}}));
        responses.insert(
            "409".into(),
            error_response(
                "the instance has no image yet (code no_image), or the snapshot is not ready",
            ),
        );
    }
    if matches!(o.access, Signature) {
        responses.insert("200".into(), json!({"description": "recorded and ignored (ping, another event, a deleted, unmapped or duplicate ref)", "content": {"application/json": {"schema": schema_ref("WebhookReceipt")}}}));
        responses.insert(
            "401".into(),
            error_response("missing or bad signature or token; recorded as rejected"),
        );
        responses.insert(
            "413".into(),
            error_response("body larger than webhooks.max_body_bytes"),
        );
        responses.insert(
            "429".into(),
            error_response("rate limit of the project; see Retry-After"),
        );
    }
    if o.path.ends_with("/cancel") {
        responses.insert("202".into(), json!({"description": "cancel sent to the agent; the deployment ends with its next events", "content": {"application/json": {"schema": schema_ref("DeploymentSummary")}}}));
    }
    responses.insert("400".into(), error_response("malformed or invalid input"));
    if o.body.is_some_and(|b| b != "SnapshotArchive") && !matches!(o.access, Signature) {
        responses.insert(
            "415".into(),
            error_response("a body sent without Content-Type: application/json (checked after the token and its permission)"),
        );
        responses.insert(
            "413".into(),
            error_response("request body larger than 1 MiB"),
        );
    }
    if o.method == "post" && o.status == 201 {
        responses.insert(
            "409".into(),
            error_response("it already exists, or what it refers to is taken"),
        );
    }
    if o.method == "delete" {
        responses.insert("409".into(), error_response("something still refers to it"));
    }
    if o.method == "patch" {
        responses.insert(
            "409".into(),
            error_response(
                "the change conflicts with another object (e.g. an agent instance bound elsewhere)",
            ),
        );
    }
    if calls_an_agent(o.path) {
        responses.insert("409".into(), error_response("the environment has no instance, the agent is not enrolled, or the snapshot is busy, not ready or corrupt"));
        responses.insert(
            "501".into(),
            error_response("the agent's version does not do this"),
        );
        responses.insert(
            "502".into(),
            error_response(
                "the agent cannot be reached, or failed (code agent_unreachable or agent_error)",
            ),
        );
        responses.insert(
            "507".into(),
            error_response("the agent has not enough disk for it"),
        );
    }
    if o.path.ends_with("/credentials/deploy-key") {
        responses.insert("200".into(), json!({"description": "the existing deploy key (rotate: false)", "content": {"application/json": {"schema": schema_ref("ProjectCredentials")}}}));
    }
    for (method, path, status, when) in ERRORS {
        if *method == o.method && *path == o.path {
            responses.insert(status.to_string(), error_response(when));
        }
    }
    let access = match o.access {
        Public => "public",
        Signature => "signature",
        Token => "token",
        Admin => "admin",
        Perm(p) => p,
    };
    let (security, description) = match o.access {
        Public => (json!([]), "No token needed.".to_owned()),
        Signature => (json!([]), "No bearer token: authenticated by the provider's signature (X-Hub-Signature-256, X-Hub-Signature) or token (X-Gitlab-Token) made with the project's webhook secret, checked in constant time over the raw body.".to_owned()),
        Token => (json!([{"bearer": []}]), "Any valid token; project data only for tokens with a permission on that project.".to_owned()),
        Admin => (json!([{"bearer": []}]), "Admin token.".to_owned()),
        Perm(p) => (json!([{"bearer": []}]), format!("Needs `{p}` on the project (admins may do everything). Without it: 403, whether or not the resource exists.")),
    };
    if !matches!(o.access, Public | Signature) {
        responses.insert(
            "401".into(),
            error_response("missing, invalid, expired or revoked token"),
        );
        responses.insert(
            "403".into(),
            error_response("the token lacks the permission"),
        );
    }
    responses.insert("404".into(), error_response("not found"));
    json!({
        "summary": o.summary,
        "description": description,
        "operationId": format!("{}{}", o.method, o.path.replace(['/', '{', '}', '.', '-'], "_")),
        "parameters": params,
        "security": security,
        "x-ocore-access": access,
        "requestBody": o.body.map(|b| {
            let media = if b == "SnapshotArchive" { "application/octet-stream" } else { "application/json" };
            // Every field of a restore request is optional, and so is the body.
            json!({"required": !matches!(b, "RestoreRequest" | "RollbackOfRequest" | "EnrolmentTokenOptions"), "content": {media: {"schema": schema_ref(b)}}})
        }),
        "responses": responses,
    })
}

/// The whole document.
pub fn document() -> Value {
    let mut paths = Map::new();
    for o in OPS {
        let entry = paths
            .entry(o.path.to_owned())
            .or_insert_with(|| Value::Object(Map::new()));
        let mut op = operation(o);
        if op["requestBody"].is_null() {
            if let Value::Object(m) = &mut op {
                m.remove("requestBody");
            }
        }
        entry[o.method] = op;
    }
    json!({
        "openapi": "3.1.0",
        "info": {
            "title": "oCore coordinator API",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "Deploy Odoo addons from Git to your own servers. JSON in and out; errors are {error: {code, message}}. Send `Authorization: Bearer <token>`. Permissions are scoped per project; a token without the permission a request needs gets 403, whether or not the resource exists.",
        },
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
            "schemas": schemas(),
        },
        "paths": paths,
    })
}

pub async fn serve() -> Json<Value> {
    static DOC: OnceLock<Value> = OnceLock::new();
    Json(DOC.get_or_init(document).clone())
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;

    /// Every route the router serves is documented, and the document lists nothing else.
    #[test]
    fn document_matches_the_router() {
        let doc = document();
        let served: BTreeSet<(String, String)> = crate::api::endpoints()
            .iter()
            .map(|e| (e.method.as_str().to_ascii_lowercase(), e.path.to_owned()))
            .collect();
        let mut documented = BTreeSet::new();
        for (path, ops) in doc["paths"].as_object().into_iter().flatten() {
            for method in ops.as_object().into_iter().flatten().map(|(m, _)| m) {
                documented.insert((method.clone(), path.clone()));
            }
        }
        let undocumented: Vec<_> = served.difference(&documented).collect();
        let phantom: Vec<_> = documented.difference(&served).collect();
        assert!(
            undocumented.is_empty(),
            "routes missing from the document: {undocumented:?}"
        );
        assert!(
            phantom.is_empty(),
            "documented routes the router lacks: {phantom:?}"
        );
    }

    /// Each particular status belongs to a documented operation (a typo would drop it).
    #[test]
    fn every_particular_status_names_an_operation() {
        for (method, path, status, _) in ERRORS {
            assert!(
                OPS.iter().any(|o| o.method == *method && o.path == *path),
                "{status} for {method} {path}: no such operation"
            );
        }
        let doc = document();
        let statuses = |method: &str, path: &str| -> Vec<String> {
            doc["paths"][path][method]["responses"]
                .as_object()
                .map(|r| r.keys().cloned().collect())
                .unwrap_or_default()
        };
        let cancel = statuses(
            "post",
            "/api/projects/{projectId}/deployments/{deploymentId}/cancel",
        );
        assert!(cancel.contains(&"409".to_owned()), "{cancel:?}");
        let deploy = statuses("post", "/api/projects/{projectId}/deploy");
        for s in ["400", "401", "403", "404", "409", "413", "415"] {
            assert!(
                deploy.contains(&s.to_owned()),
                "deploy lacks {s}: {deploy:?}"
            );
        }
        let enroll = statuses("post", "/api/agents/enroll");
        assert!(enroll.contains(&"401".to_owned()), "{enroll:?}");
        let revoke = statuses("delete", "/api/tokens/{id}");
        assert!(revoke.contains(&"409".to_owned()), "{revoke:?}");
    }

    #[test]
    fn every_schema_reference_resolves() {
        let doc = document();
        let text = doc.to_string();
        let schemas = doc["components"]["schemas"]
            .as_object()
            .cloned()
            .unwrap_or_default();
        for part in text.split("#/components/schemas/").skip(1) {
            let name: String = part
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric())
                .collect();
            assert!(schemas.contains_key(&name), "unresolved schema {name}");
        }
    }
}
