//! API tokens: stored by id with only the SHA-256 of the secret; a second tree maps the
//! hash to the id so a bearer token is found without scanning.

use serde::{Deserialize, Serialize};

use crate::auth::Permission;

/// A permission on one project.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct Grant {
    pub project: String,
    pub permission: Permission,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct TokenRecord {
    pub id: String,
    pub name: String,
    /// SHA-256 (hex) of the token text; the text itself is shown once and never stored.
    pub hash: String,
    pub admin: bool,
    #[serde(default)]
    pub grants: Vec<Grant>,
    pub created_at: i64,
    pub expires_at: Option<i64>,
    pub revoked_at: Option<i64>,
}
