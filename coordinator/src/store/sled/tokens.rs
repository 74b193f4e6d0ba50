//! API tokens in sled: by id, plus a hash -> id index.

use super::{all, get, put, SledStore};
use crate::store::tokens::last_admin_refusal;
use crate::store::{StoreError, TokenRecord, TokenStore};

impl TokenStore for SledStore {
    fn insert_token(&self, record: &TokenRecord) -> Result<(), StoreError> {
        put(&self.tokens, &record.id, record)?;
        self.token_hashes
            .insert(record.hash.as_bytes(), record.id.as_bytes())?;
        Ok(())
    }

    fn token_by_hash(&self, hash: &str) -> Result<Option<TokenRecord>, StoreError> {
        match self.token_hashes.get(hash.as_bytes())? {
            Some(id) => get(&self.tokens, &String::from_utf8_lossy(&id)),
            None => Ok(None),
        }
    }

    fn tokens(&self) -> Result<Vec<TokenRecord>, StoreError> {
        all(&self.tokens)
    }

    fn token_count(&self) -> usize {
        self.tokens.len()
    }

    /// Marks a token revoked; it stays listed for the audit trail. Under the admin lock,
    /// so two revocations at once cannot remove the last two admin tokens.
    fn revoke_token(&self, id: &str, now: i64) -> Result<TokenRecord, StoreError> {
        let _guard = self.admin_lock();
        if let Some(why) = last_admin_refusal(&self.tokens()?, id, now) {
            return Err(StoreError::Refused(why));
        }
        let mut record: TokenRecord =
            get(&self.tokens, id)?.ok_or_else(|| StoreError::NotFound(format!("token {id}")))?;
        record.revoked_at.get_or_insert(now);
        put(&self.tokens, id, &record)?;
        Ok(record)
    }
}
