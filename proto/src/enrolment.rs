//! Agent enrolment: the one-time token the coordinator hands out and the JSON exchanged on
//! `POST /api/agents/enroll`.
//!
//! The token is readable by the agent (it carries the agent name, the expiry and the CA
//! fingerprint the agent pins) and opaque to everyone else: the coordinator stores only its
//! SHA-256 hash, so a token that was altered in any byte matches nothing.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use serde::{Deserialize, Serialize};

/// Prefix of every enrolment token; names the format version.
pub const TOKEN_PREFIX: &str = "ocore-enrol-1.";

/// The readable part of an enrolment token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EnrolmentToken {
    /// Agent name the certificate will carry.
    #[serde(rename = "a")]
    pub agent: String,
    /// SHA-256 (hex) of the oCore CA certificate the agent must pin.
    #[serde(rename = "f")]
    pub ca_fingerprint: String,
    /// Unix seconds after which the coordinator refuses the token.
    #[serde(rename = "e")]
    pub expires_at: i64,
    /// Random secret that makes the token unguessable.
    #[serde(rename = "s")]
    pub secret: String,
}

/// Why a string is not an enrolment token.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("not an oCore enrolment token ({0}); copy the whole token printed by `ocore agent add`")]
pub struct MalformedToken(&'static str);

impl EnrolmentToken {
    pub fn encode(&self) -> String {
        // Serialising a struct of strings and integers cannot fail.
        let json = serde_json::to_vec(self).unwrap_or_default();
        format!("{TOKEN_PREFIX}{}", URL_SAFE_NO_PAD.encode(json))
    }

    pub fn decode(token: &str) -> Result<Self, MalformedToken> {
        let body = token
            .trim()
            .strip_prefix(TOKEN_PREFIX)
            .ok_or(MalformedToken("wrong prefix"))?;
        let json = URL_SAFE_NO_PAD
            .decode(body)
            .map_err(|_| MalformedToken("not base64url"))?;
        serde_json::from_slice(&json).map_err(|_| MalformedToken("unreadable content"))
    }
}

/// Body of `POST /api/agents/enroll`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct EnrolRequest {
    pub token: String,
    /// PKCS#10 request for the key the agent generated; only its public key is used.
    pub csr_pem: String,
}

/// Answer of `POST /api/agents/enroll`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EnrolResponse {
    pub agent_name: String,
    pub certificate_pem: String,
    pub ca_certificate_pem: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_round_trips_and_rejects_garbage() {
        let token = EnrolmentToken {
            agent: "web1".into(),
            ca_fingerprint: "ab".repeat(32),
            expires_at: 1_800_000_000,
            secret: "s3cret".into(),
        };
        let text = token.encode();
        assert!(text.starts_with(TOKEN_PREFIX));
        assert_eq!(EnrolmentToken::decode(&text), Ok(token));
        assert!(EnrolmentToken::decode("hello").is_err());
        assert!(EnrolmentToken::decode(&format!("{TOKEN_PREFIX}!!!")).is_err());
        assert!(EnrolmentToken::decode(&format!("{TOKEN_PREFIX}e30")).is_err());
    }
}
