//! Agents and enrolment tokens in sled.

use super::{all, decode, encode, get, put, SledStore};
use crate::store::{AgentRecord, AgentStore, EnrolmentTokenRecord, StoreError};

impl AgentStore for SledStore {
    fn agent(&self, name: &str) -> Result<Option<AgentRecord>, StoreError> {
        get(&self.agents, name)
    }

    fn agents(&self) -> Result<Vec<AgentRecord>, StoreError> {
        all(&self.agents)
    }

    /// Inserts a new agent; fails if the name is taken.
    fn insert_agent(&self, record: &AgentRecord) -> Result<(), StoreError> {
        let swapped = self.agents.compare_and_swap(
            record.name.as_bytes(),
            None as Option<&[u8]>,
            Some(encode(record)?),
        )?;
        swapped.map_err(|_| StoreError::Conflict(format!("agent {}", record.name)))
    }

    /// Applies `change` to the agent's record and stores it; returns the new record.
    fn update_agent(
        &self,
        name: &str,
        change: &dyn Fn(&mut AgentRecord),
    ) -> Result<AgentRecord, StoreError> {
        loop {
            let old = self
                .agents
                .get(name.as_bytes())?
                .ok_or_else(|| StoreError::NotFound(format!("agent {name}")))?;
            let mut record: AgentRecord = decode(name.as_bytes(), &old)?;
            change(&mut record);
            let new = encode(&record)?;
            if self
                .agents
                .compare_and_swap(name.as_bytes(), Some(&old), Some(new))?
                .is_ok()
            {
                return Ok(record);
            }
        }
    }

    /// Removes an agent and every enrolment token issued for it.
    fn remove_agent(&self, name: &str) -> Result<(), StoreError> {
        if self.agents.remove(name.as_bytes())?.is_none() {
            return Err(StoreError::NotFound(format!("agent {name}")));
        }
        for entry in self.enrolment_tokens.iter() {
            let (k, v) = entry?;
            let record: EnrolmentTokenRecord = decode(&k, &v)?;
            if record.agent == name {
                self.enrolment_tokens.remove(k)?;
            }
        }
        Ok(())
    }

    fn insert_enrolment_token(
        &self,
        token_hash: &str,
        record: &EnrolmentTokenRecord,
    ) -> Result<(), StoreError> {
        put(&self.enrolment_tokens, token_hash, record)
    }

    /// Marks the token as used, exactly once, and returns its record. The caller has
    /// checked nothing yet: expiry and prior use are decided here atomically.
    fn consume_enrolment_token(
        &self,
        token_hash: &str,
        now: i64,
    ) -> Result<EnrolmentTokenRecord, StoreError> {
        let old = self
            .enrolment_tokens
            .get(token_hash.as_bytes())?
            .ok_or_else(|| {
                StoreError::Rejected(
                    "enrolment token is not valid (unknown, altered or revoked)".to_owned(),
                )
            })?;
        let mut record: EnrolmentTokenRecord = decode(token_hash.as_bytes(), &old)?;
        if record.used_at.is_some() {
            return Err(StoreError::Rejected(
                "enrolment token was already used; issue a new one with `ocore agent token NAME`"
                    .to_owned(),
            ));
        }
        if now >= record.expires_at {
            return Err(StoreError::Rejected(
                "enrolment token has expired; issue a new one with `ocore agent token NAME`"
                    .to_owned(),
            ));
        }
        record.used_at = Some(now);
        let swapped = self.enrolment_tokens.compare_and_swap(
            token_hash.as_bytes(),
            Some(&old),
            Some(encode(&record)?),
        )?;
        match swapped {
            Ok(()) => Ok(record),
            Err(_) => Err(StoreError::Rejected(
                "enrolment token was already used".to_owned(),
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn agent(name: &str) -> AgentRecord {
        AgentRecord {
            name: name.to_owned(),
            address: "127.0.0.1:7700".to_owned(),
            created_at: 1,
            enrolled_at: None,
            cert_fingerprints: vec![],
            cert_not_after: None,
            last_seen: None,
            version: None,
            hostname: None,
            instances: vec![],
        }
    }

    #[test]
    fn tokens_are_single_use_and_expire() -> Result<(), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        let store = SledStore::open(dir.path())?;
        store.insert_agent(&agent("web1"))?;
        assert!(matches!(
            store.insert_agent(&agent("web1")),
            Err(StoreError::Conflict(_))
        ));
        let rec = EnrolmentTokenRecord {
            agent: "web1".into(),
            expires_at: 100,
            used_at: None,
        };
        store.insert_enrolment_token("h1", &rec)?;
        store.insert_enrolment_token("h2", &rec)?;
        assert!(store.consume_enrolment_token("nope", 10).is_err());
        assert_eq!(store.consume_enrolment_token("h1", 10)?.used_at, Some(10));
        let again = store.consume_enrolment_token("h1", 11).expect_err("reuse");
        assert!(again.to_string().contains("already used"), "{again}");
        let late = store
            .consume_enrolment_token("h2", 100)
            .expect_err("expired");
        assert!(late.to_string().contains("expired"), "{late}");
        store.remove_agent("web1")?;
        assert!(store.agent("web1")?.is_none());
        assert!(
            store.consume_enrolment_token("h2", 10).is_err(),
            "tokens go with the agent"
        );
        Ok(())
    }

    #[test]
    fn update_changes_only_what_it_touches() -> Result<(), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        let store = SledStore::open(dir.path())?;
        store.insert_agent(&agent("web1"))?;
        let updated = store.update_agent("web1", &|a| a.address = "10.0.0.1:1".into())?;
        assert_eq!(updated.address, "10.0.0.1:1");
        assert_eq!(store.agent("web1")?, Some(updated));
        assert!(store.update_agent("nope", &|_| {}).is_err());
        Ok(())
    }
}
