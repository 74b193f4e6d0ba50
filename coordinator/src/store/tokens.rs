//! API tokens: stored by id with only the SHA-256 of the secret; a second tree maps the
//! hash to the id so a bearer token is found without scanning.

use serde::{Deserialize, Serialize};

use super::{all, get, put, Store, StoreError};
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

impl Store {
    pub fn insert_token(&self, record: &TokenRecord) -> Result<(), StoreError> {
        put(&self.tokens, &record.id, record)?;
        self.token_hashes
            .insert(record.hash.as_bytes(), record.id.as_bytes())?;
        Ok(())
    }

    pub fn token_by_hash(&self, hash: &str) -> Result<Option<TokenRecord>, StoreError> {
        match self.token_hashes.get(hash.as_bytes())? {
            Some(id) => get(&self.tokens, &String::from_utf8_lossy(&id)),
            None => Ok(None),
        }
    }

    pub fn tokens(&self) -> Result<Vec<TokenRecord>, StoreError> {
        all(&self.tokens)
    }

    pub fn token_count(&self) -> usize {
        self.tokens.len()
    }

    /// Marks a token revoked; it stays listed for the audit trail.
    pub fn revoke_token(&self, id: &str, now: i64) -> Result<TokenRecord, StoreError> {
        let mut record: TokenRecord =
            get(&self.tokens, id)?.ok_or_else(|| StoreError::NotFound(format!("token {id}")))?;
        record.revoked_at.get_or_insert(now);
        put(&self.tokens, id, &record)?;
        Ok(record)
    }
}
