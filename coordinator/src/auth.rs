//! Who may do what: API tokens (generated, hashed, checked) and per-project permissions.

use rand::RngCore;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::store::{Grant, TokenRecord};

/// Prefix of API tokens, so leaked tokens are recognisable by secret scanners.
pub const TOKEN_PREFIX: &str = "oct_";

/// Permissions scoped to a project.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Permission {
    #[serde(rename = "view:deployments")]
    ViewDeployments,
    #[serde(rename = "manage:deployments")]
    ManageDeployments,
    #[serde(rename = "manage:environments")]
    ManageEnvironments,
}

impl Permission {
    pub const ALL: [Permission; 3] = [
        Permission::ViewDeployments,
        Permission::ManageDeployments,
        Permission::ManageEnvironments,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Permission::ViewDeployments => "view:deployments",
            Permission::ManageDeployments => "manage:deployments",
            Permission::ManageEnvironments => "manage:environments",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|p| p.as_str() == s)
    }
}

impl std::fmt::Display for Permission {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A new token: the text to show once, and the hash to store.
pub struct NewToken {
    pub text: String,
    pub hash: String,
}

pub fn generate_token() -> NewToken {
    let mut secret = [0u8; 32];
    rand::rng().fill_bytes(&mut secret);
    let text = format!("{TOKEN_PREFIX}{}", hex::encode(secret));
    let hash = hash_token(&text);
    NewToken { text, hash }
}

/// Tokens carry 256 random bits, so a plain SHA-256 is enough to make the stored hash
/// useless to an attacker (no dictionary to try); a slow KDF would only slow every request.
pub fn hash_token(text: &str) -> String {
    hex::encode(Sha256::digest(text.trim().as_bytes()))
}

/// The caller of a request, once its token was found valid.
#[derive(Debug, Clone)]
pub struct Principal {
    pub token_id: String,
    pub name: String,
    pub admin: bool,
    pub grants: Vec<Grant>,
}

/// Why a token does not authenticate.
#[derive(Debug, PartialEq, Eq)]
pub enum TokenRejection {
    Revoked,
    Expired,
}

impl Principal {
    /// Accepts `record` if it is neither revoked nor expired at `now`.
    pub fn from_record(record: TokenRecord, now: i64) -> Result<Self, TokenRejection> {
        if record.revoked_at.is_some() {
            return Err(TokenRejection::Revoked);
        }
        if record.expires_at.is_some_and(|at| now >= at) {
            return Err(TokenRejection::Expired);
        }
        Ok(Self {
            token_id: record.id,
            name: record.name,
            admin: record.admin,
            grants: record.grants,
        })
    }

    /// True when the caller holds any permission on the project (or is an admin): enough
    /// to read the project's configuration.
    pub fn sees(&self, project: &str) -> bool {
        self.admin || self.grants.iter().any(|g| g.project == project)
    }

    /// Admins may do everything; others need the permission granted on that project.
    pub fn may(&self, permission: Permission, project: &str) -> bool {
        self.admin
            || self
                .grants
                .iter()
                .any(|g| g.permission == permission && g.project == project)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(admin: bool, grants: Vec<Grant>) -> TokenRecord {
        TokenRecord {
            id: "t1".into(),
            name: "ci".into(),
            hash: "h".into(),
            admin,
            grants,
            created_at: 0,
            expires_at: Some(100),
            revoked_at: None,
        }
    }

    #[test]
    fn permissions_are_per_project() {
        let p = Principal::from_record(
            record(
                false,
                vec![Grant {
                    project: "shop".into(),
                    permission: Permission::ManageDeployments,
                }],
            ),
            0,
        )
        .expect("valid");
        assert!(p.may(Permission::ManageDeployments, "shop"));
        assert!(!p.may(Permission::ViewDeployments, "shop"));
        assert!(!p.may(Permission::ManageDeployments, "other"));
        assert!(p.sees("shop"));
        assert!(!p.sees("other"));
        let admin = Principal::from_record(record(true, vec![]), 0).expect("valid");
        assert!(admin.may(Permission::ManageEnvironments, "anything"));
    }

    #[test]
    fn expired_and_revoked_tokens_are_refused() {
        assert_eq!(
            Principal::from_record(record(true, vec![]), 100).err(),
            Some(TokenRejection::Expired)
        );
        let mut revoked = record(true, vec![]);
        revoked.revoked_at = Some(5);
        assert_eq!(
            Principal::from_record(revoked, 0).err(),
            Some(TokenRejection::Revoked)
        );
    }

    #[test]
    fn tokens_are_random_and_hashed() {
        let a = generate_token();
        let b = generate_token();
        assert_ne!(a.text, b.text);
        assert!(a.text.starts_with(TOKEN_PREFIX));
        assert_eq!(a.hash, hash_token(&a.text));
        assert_ne!(a.hash, a.text);
        assert_eq!(
            Permission::parse("view:deployments"),
            Some(Permission::ViewDeployments)
        );
        assert_eq!(Permission::parse("admin"), None);
    }
}
