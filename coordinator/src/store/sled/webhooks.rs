//! Webhook secrets and delivery logs in sled. An entry, its id index, its duplicate-key
//! index and its kept request are written in one transaction; pruning follows it.

use sled::Transactional;

use super::{abort, decode, encode, get, key2, prefix, put, SledStore};
use crate::domain::{
    Delivery, KeptRequest, Provider, WebhookSecret, MAX_DELIVERIES, MAX_KEPT_REQUESTS,
    MAX_KEPT_REQUEST_BYTES,
};
use crate::store::{ProjectStore, StoreError, WebhookStore};

/// `project\0order`: the key of an entry and of its kept request.
fn entry_key(project: &str, order: u64) -> Vec<u8> {
    key2(project, &order.to_be_bytes())
}

/// `project\0provider\0deliveryId\0`: the duplicate index prefix of one provider
/// delivery id. Delivery ids are printable ASCII (checked when parsed), so they hold no NUL.
fn delivery_id_prefix(project: &str, provider: Provider, delivery_id: &str) -> Vec<u8> {
    let mut k = key2(project, provider.as_str().as_bytes());
    k.push(0);
    k.extend_from_slice(delivery_id.as_bytes());
    k.push(0);
    k
}

fn delivery_id_key(d: &Delivery) -> Vec<u8> {
    let mut k = delivery_id_prefix(&d.project_id, d.provider, &d.delivery_id);
    k.extend_from_slice(&d.order.to_be_bytes());
    k
}

impl SledStore {
    fn read_entry(&self, key: &[u8], bytes: &[u8]) -> Result<Delivery, StoreError> {
        let mut d: Delivery = decode(key, bytes)?;
        d.request_kept = self.webhook_requests.contains_key(key)?;
        Ok(d)
    }

    /// Removes one entry and everything indexed by it.
    fn remove_entry(&self, key: &[u8], d: &Delivery) -> Result<(), StoreError> {
        self.webhook_deliveries.remove(key)?;
        self.webhook_requests.remove(key)?;
        self.webhook_delivery_ids.remove(d.id.as_bytes())?;
        self.webhook_delivery_keys.remove(delivery_id_key(d))?;
        Ok(())
    }

    /// Keeps the newest entries and kept requests of a project within their bounds.
    fn prune_deliveries(&self, project: &str) -> Result<(), StoreError> {
        let p = prefix(project);
        let count = self.webhook_deliveries.scan_prefix(&p).count();
        if count > MAX_DELIVERIES {
            let excess: Vec<(sled::IVec, sled::IVec)> = self
                .webhook_deliveries
                .scan_prefix(&p)
                .take(count - MAX_DELIVERIES)
                .collect::<Result<_, _>>()?;
            for (k, v) in excess {
                let d: Delivery = decode(&k, &v)?;
                self.remove_entry(&k, &d)?;
            }
        }
        let (mut kept, mut bytes) = (0usize, 0usize);
        for kv in self.webhook_requests.scan_prefix(&p).rev() {
            let (k, v) = kv?;
            kept += 1;
            bytes += v.len();
            if kept > MAX_KEPT_REQUESTS || bytes > MAX_KEPT_REQUEST_BYTES {
                self.webhook_requests.remove(k)?;
            }
        }
        Ok(())
    }

    /// Deletes a project's webhook secret and delivery log (with the project).
    pub(super) fn purge_webhooks(&self, project: &str) -> Result<(), StoreError> {
        let p = prefix(project);
        for kv in self.webhook_deliveries.scan_prefix(&p) {
            let (k, v) = kv?;
            let d: Delivery = decode(&k, &v)?;
            self.remove_entry(&k, &d)?;
        }
        for k in self.webhook_requests.scan_prefix(&p).keys() {
            self.webhook_requests.remove(k?)?;
        }
        for k in self.webhook_delivery_keys.scan_prefix(&p).keys() {
            self.webhook_delivery_keys.remove(k?)?;
        }
        self.webhook_secrets.remove(project.as_bytes())?;
        Ok(())
    }
}

impl WebhookStore for SledStore {
    fn webhook_secret(&self, project: &str) -> Result<Option<WebhookSecret>, StoreError> {
        get(&self.webhook_secrets, project)
    }

    fn set_webhook_secret(&self, secret: &WebhookSecret) -> Result<(), StoreError> {
        let _guard = self.admin_lock();
        if self.project(&secret.project_id)?.is_none() {
            return Err(StoreError::NotFound(format!(
                "project {}",
                secret.project_id
            )));
        }
        put(&self.webhook_secrets, &secret.project_id, secret)
    }

    fn record_delivery(
        &self,
        delivery: &Delivery,
        request: Option<&KeptRequest>,
    ) -> Result<Delivery, StoreError> {
        let mut d = delivery.clone();
        d.order = self.db.generate_id()?;
        d.request_kept = request.is_some();
        let key = entry_key(&d.project_id, d.order);
        let record = encode(&d)?;
        let kept = request.map(encode).transpose()?;
        let by_delivery_id = delivery_id_key(&d);
        (
            &self.webhook_deliveries,
            &self.webhook_delivery_ids,
            &self.webhook_delivery_keys,
            &self.webhook_requests,
        )
            .transaction(|(entries, ids, keys, requests)| {
                if ids.get(d.id.as_bytes())?.is_some() {
                    return Err(abort(StoreError::Conflict(format!(
                        "webhook delivery {}",
                        d.id
                    ))));
                }
                entries.insert(key.clone(), record.clone())?;
                ids.insert(d.id.as_bytes(), key.clone())?;
                keys.insert(by_delivery_id.clone(), d.id.as_bytes())?;
                if let Some(kept) = &kept {
                    requests.insert(key.clone(), kept.clone())?;
                }
                Ok(())
            })?;
        self.prune_deliveries(&d.project_id)?;
        Ok(d)
    }

    fn deliveries(
        &self,
        project: &str,
        offset: usize,
        limit: usize,
    ) -> Result<(u64, Vec<Delivery>), StoreError> {
        let p = prefix(project);
        let total = self.webhook_deliveries.scan_prefix(&p).count();
        let mut page = Vec::new();
        for kv in self
            .webhook_deliveries
            .scan_prefix(&p)
            .rev()
            .skip(offset)
            .take(limit)
        {
            let (k, v) = kv?;
            page.push(self.read_entry(&k, &v)?);
        }
        Ok((u64::try_from(total).unwrap_or(u64::MAX), page))
    }

    fn delivery(&self, project: &str, id: &str) -> Result<Option<Delivery>, StoreError> {
        let Some(key) = self.webhook_delivery_ids.get(id.as_bytes())? else {
            return Ok(None);
        };
        let Some(bytes) = self.webhook_deliveries.get(&key)? else {
            return Ok(None);
        };
        let d = self.read_entry(&key, &bytes)?;
        Ok((d.project_id == project).then_some(d))
    }

    fn kept_request(&self, project: &str, id: &str) -> Result<Option<KeptRequest>, StoreError> {
        let Some(key) = self.webhook_delivery_ids.get(id.as_bytes())? else {
            return Ok(None);
        };
        if !key.starts_with(&prefix(project)) {
            return Ok(None);
        }
        self.webhook_requests
            .get(&key)?
            .map(|v| decode(&key, &v))
            .transpose()
    }

    fn accepted_delivery(
        &self,
        project: &str,
        provider: Provider,
        delivery_id: &str,
    ) -> Result<Option<Delivery>, StoreError> {
        for id in self
            .webhook_delivery_keys
            .scan_prefix(delivery_id_prefix(project, provider, delivery_id))
            .values()
        {
            let id = String::from_utf8_lossy(&id?).into_owned();
            if let Some(d) = self.delivery(project, &id)? {
                if d.outcome != crate::domain::Outcome::Rejected {
                    return Ok(Some(d));
                }
            }
        }
        Ok(None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{Outcome, Project};

    fn store() -> Result<(tempfile::TempDir, SledStore), StoreError> {
        let dir = tempfile::tempdir().map_err(|e| StoreError::Backend(e.to_string()))?;
        let store = SledStore::open(dir.path())?;
        for id in ["shop", "other"] {
            store.insert_project(&Project {
                id: id.into(),
                name: id.into(),
                repository_url: "/srv/shop".into(),
                addons_subpath: String::new(),
                credentials: None,
                ssh_host_key: None,
                created_at: 0,
                updated_at: 0,
            })?;
        }
        Ok((dir, store))
    }

    fn entry(project: &str, id: &str, delivery_id: &str, outcome: Outcome) -> Delivery {
        Delivery {
            id: id.into(),
            order: 0,
            project_id: project.into(),
            received_at: 1,
            provider: Provider::Github,
            event: "push".into(),
            delivery_id: delivery_id.into(),
            branch: Some("main".into()),
            tag: None,
            commit_sha: None,
            outcome,
            reason: "r".into(),
            deployment_id: None,
            redelivery_of: None,
            request_kept: false,
        }
    }

    #[test]
    fn log_pages_newest_first_and_prunes_the_oldest() -> Result<(), StoreError> {
        let (_dir, store) = store()?;
        for i in 0..MAX_DELIVERIES + 5 {
            store.record_delivery(
                &entry("shop", &format!("e{i}"), &format!("d{i}"), Outcome::Ignored),
                None,
            )?;
        }
        store.record_delivery(&entry("other", "x", "d1", Outcome::Ignored), None)?;
        let (total, page) = store.deliveries("shop", 0, 3)?;
        assert_eq!(total, MAX_DELIVERIES as u64);
        let ids: Vec<&str> = page.iter().map(|d| d.id.as_str()).collect();
        let newest = MAX_DELIVERIES + 4;
        assert_eq!(
            ids,
            [
                format!("e{newest}"),
                format!("e{}", newest - 1),
                format!("e{}", newest - 2)
            ]
        );
        let (_, last) = store.deliveries("shop", MAX_DELIVERIES - 1, 10)?;
        assert_eq!(last.len(), 1);
        assert_eq!(last[0].id, "e5", "the five oldest were pruned");
        assert!(store.delivery("shop", "e0")?.is_none());
        assert!(store
            .accepted_delivery("shop", Provider::Github, "d0")?
            .is_none());
        assert!(store.delivery("shop", "e5")?.is_some());
        assert!(
            store.delivery("other", "e5")?.is_none(),
            "not another project's"
        );
        Ok(())
    }

    #[test]
    fn duplicates_are_found_among_accepted_entries_only() -> Result<(), StoreError> {
        let (_dir, store) = store()?;
        store.record_delivery(&entry("shop", "a", "guid-1", Outcome::Rejected), None)?;
        assert!(store
            .accepted_delivery("shop", Provider::Github, "guid-1")?
            .is_none());
        store.record_delivery(&entry("shop", "b", "guid-1", Outcome::Deployed), None)?;
        store.record_delivery(&entry("shop", "c", "guid-1", Outcome::Ignored), None)?;
        let found = store.accepted_delivery("shop", Provider::Github, "guid-1")?;
        assert_eq!(found.map(|d| d.id), Some("b".to_owned()));
        // A delivery id that extends another is a different one.
        assert!(store
            .accepted_delivery("shop", Provider::Github, "guid-")?
            .is_none());
        assert!(store
            .accepted_delivery("shop", Provider::Gitlab, "guid-1")?
            .is_none());
        assert!(store
            .accepted_delivery("other", Provider::Github, "guid-1")?
            .is_none());
        assert!(matches!(
            store.record_delivery(&entry("shop", "b", "guid-2", Outcome::Ignored), None),
            Err(StoreError::Conflict(_))
        ));
        Ok(())
    }

    #[test]
    fn kept_requests_are_bounded_and_go_with_the_project() -> Result<(), StoreError> {
        let (_dir, store) = store()?;
        let request = KeptRequest::new(vec![("X-GitHub-Event".into(), "push".into())], b"{}");
        for i in 0..MAX_KEPT_REQUESTS + 2 {
            store.record_delivery(
                &entry("shop", &format!("e{i}"), &format!("d{i}"), Outcome::Ignored),
                Some(&request),
            )?;
        }
        assert_eq!(store.kept_request("shop", "e1")?, None, "beyond the bound");
        assert!(!store
            .delivery("shop", "e1")?
            .is_some_and(|d| d.request_kept));
        let newest = format!("e{}", MAX_KEPT_REQUESTS + 1);
        assert_eq!(store.kept_request("shop", &newest)?, Some(request.clone()));
        assert!(store
            .delivery("shop", &newest)?
            .is_some_and(|d| d.request_kept));
        assert_eq!(store.kept_request("other", &newest)?, None);

        let secret = WebhookSecret {
            project_id: "shop".into(),
            sealed: serde_json::from_str("\"ocs1.x.y\"")
                .map_err(|e| StoreError::Backend(e.to_string()))?,
            created_at: 1,
        };
        store.set_webhook_secret(&secret)?;
        assert_eq!(store.webhook_secret("shop")?, Some(secret.clone()));
        let mut ghost = secret.clone();
        ghost.project_id = "ghost".into();
        assert!(matches!(
            store.set_webhook_secret(&ghost),
            Err(StoreError::NotFound(_))
        ));
        store.delete_project("shop")?;
        assert_eq!(store.webhook_secret("shop")?, None);
        assert_eq!(store.deliveries("shop", 0, 10)?.0, 0);
        assert!(store
            .accepted_delivery("shop", Provider::Github, "d5")?
            .is_none());
        assert_eq!(store.webhook_requests.len(), 0);
        assert_eq!(store.webhook_delivery_ids.len(), 0);
        Ok(())
    }
}
