//! Webhook deliveries: what a Git provider sent to a project, what oCore did with it and
//! why, the raw request kept for a redeliver, and the project's sealed webhook secret.

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use serde::{Deserialize, Serialize};

use super::{shorten, Invalid};
use crate::secrets::Sealed;

/// Deliveries kept per project; older ones are pruned (the provider keeps its own log).
pub const MAX_DELIVERIES: usize = 1000;
/// Raw requests kept per project for redelivery, newest first, by count and by bytes.
pub const MAX_KEPT_REQUESTS: usize = 100;
pub const MAX_KEPT_REQUEST_BYTES: usize = 16 * 1024 * 1024;

/// The Git hosts whose push webhooks oCore understands.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, Hash)]
#[serde(rename_all = "lowercase")]
pub enum Provider {
    Github,
    Gitlab,
    Bitbucket,
}

impl Provider {
    pub const ALL: [Provider; 3] = [Provider::Github, Provider::Gitlab, Provider::Bitbucket];

    pub fn as_str(self) -> &'static str {
        match self {
            Provider::Github => "github",
            Provider::Gitlab => "gitlab",
            Provider::Bitbucket => "bitbucket",
        }
    }

    /// The provider named in a webhook URL.
    pub fn parse(name: &str) -> Result<Self, Invalid> {
        Self::ALL
            .into_iter()
            .find(|p| p.as_str() == name)
            .ok_or_else(|| {
                Invalid(format!(
                    "unknown webhook provider {:?}; use github, gitlab or bitbucket",
                    shorten(name)
                ))
            })
    }

    /// How people write the provider's name.
    pub fn title(self) -> &'static str {
        match self {
            Provider::Github => "GitHub",
            Provider::Gitlab => "GitLab",
            Provider::Bitbucket => "Bitbucket",
        }
    }
}

/// What oCore did with a delivery.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    /// A deployment was queued.
    Deployed,
    /// Authentic, but nothing to deploy (ping, other event, unmapped or deleted ref,
    /// duplicate delivery).
    Ignored,
    /// Refused: bad or missing signature, oversized or malformed body, rate limit.
    Rejected,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Deployed => "deployed",
            Outcome::Ignored => "ignored",
            Outcome::Rejected => "rejected",
        }
    }
}

/// One entry of a project's delivery log. A delivery that updated several refs
/// (Bitbucket can send several changes at once) has one entry per ref.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Delivery {
    /// oCore's id of this entry (a UUID).
    pub id: String,
    /// Position in the project's log, assigned by the store.
    #[serde(default)]
    pub order: u64,
    pub project_id: String,
    /// Unix milliseconds.
    pub received_at: i64,
    pub provider: Provider,
    /// The provider's event name as sent (`push`, `Push Hook`, `repo:push`, …).
    pub event: String,
    /// The provider's delivery id (`X-GitHub-Delivery`, `X-Gitlab-Event-UUID`,
    /// `X-Request-UUID`), the key duplicates are detected by.
    pub delivery_id: String,
    pub branch: Option<String>,
    pub tag: Option<String>,
    pub commit_sha: Option<String>,
    pub outcome: Outcome,
    pub reason: String,
    pub deployment_id: Option<String>,
    /// For a replay asked for through the API: the entry replayed.
    #[serde(default)]
    pub redelivery_of: Option<String>,
    /// Whether the raw request is still kept, so the entry can be redelivered. Not
    /// stored: the store fills it in when it reads the entry.
    #[serde(skip)]
    pub request_kept: bool,
}

/// The raw request of a signature-verified delivery, kept so that a redeliver replays
/// exactly what the provider sent. Only headers that carry no secret are kept (never
/// `X-Gitlab-Token`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct KeptRequest {
    pub headers: Vec<(String, String)>,
    /// The body, base64.
    body: String,
}

impl KeptRequest {
    pub fn new(headers: Vec<(String, String)>, body: &[u8]) -> Self {
        Self {
            headers,
            body: B64.encode(body),
        }
    }

    pub fn body(&self) -> Result<Vec<u8>, Invalid> {
        B64.decode(&self.body)
            .map_err(|_| Invalid("the kept request body is not base64".to_owned()))
    }

    /// Approximate stored size, for the per-project byte budget.
    pub fn stored_bytes(&self) -> usize {
        self.body.len()
            + self
                .headers
                .iter()
                .map(|(k, v)| k.len() + v.len())
                .sum::<usize>()
    }
}

/// A project's webhook secret, sealed by `secrets::SecretBox` with the context
/// [`webhook_secret_context`]. The plaintext is shown once, by reconfigure.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct WebhookSecret {
    pub project_id: String,
    pub sealed: Sealed,
    pub created_at: i64,
}

/// The sealing context of a project's webhook secret: a sealed secret copied to another
/// project does not open.
pub fn webhook_secret_context(project: &str) -> String {
    format!("project/{project}/webhook")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn providers_parse_by_their_url_name() {
        for p in Provider::ALL {
            assert_eq!(Provider::parse(p.as_str()), Ok(p));
        }
        let err = Provider::parse("GitHub").expect_err("case matters");
        assert!(err.0.contains("github, gitlab or bitbucket"), "{err}");
        assert!(Provider::parse("gitea").is_err());
    }

    #[test]
    fn kept_requests_round_trip_bytes() {
        let body = b"{\"ref\":\"refs/heads/main\"}\xff";
        let kept = KeptRequest::new(vec![("X-GitHub-Event".into(), "push".into())], body);
        assert_eq!(kept.body().expect("base64"), body);
        let json = serde_json::to_string(&kept).expect("json");
        let back: KeptRequest = serde_json::from_str(&json).expect("parse");
        assert_eq!(back, kept);
        assert!(kept.stored_bytes() > body.len());
    }
}
