//! Agent records and their one-time enrolment tokens.

use serde::{Deserialize, Serialize};

/// An agent as the coordinator knows it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct AgentRecord {
    pub name: String,
    /// `host:port` of the agent's gRPC listener.
    pub address: String,
    pub created_at: i64,
    pub enrolled_at: Option<i64>,
    /// Fingerprints of the certificates accepted from this agent: the current one, plus a
    /// renewed one between issuing it and the agent confirming it installed it.
    #[serde(default)]
    pub cert_fingerprints: Vec<String>,
    pub cert_not_after: Option<i64>,
    pub last_seen: Option<i64>,
    pub version: Option<String>,
    pub hostname: Option<String>,
    #[serde(default)]
    pub instances: Vec<InstanceSummary>,
}

/// An instance an agent declared, as last reported.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct InstanceSummary {
    pub id: String,
    pub database: String,
    pub base_image: String,
    pub public_port: u32,
}

/// A pending enrolment token, keyed by the SHA-256 of the whole token text.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct EnrolmentTokenRecord {
    pub agent: String,
    pub expires_at: i64,
    pub used_at: Option<i64>,
}
