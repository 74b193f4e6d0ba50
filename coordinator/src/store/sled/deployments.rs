//! Deployments, the per-instance queue, the per-project history and the event logs in sled.
//! Every write that touches more than one tree is one sled transaction.

use sled::transaction::{ConflictableTransactionError, TransactionalTree};
use sled::Transactional;

use super::{abort, decode, encode, key2, prefix, SledStore};
use crate::domain::{DeployEvent, Deployment};
use crate::store::{Change, DeploymentStore, StoreError};

fn be(n: u64) -> [u8; 8] {
    n.to_be_bytes()
}

fn queue_key(d: &Deployment) -> Vec<u8> {
    key2(&d.instance_id, &be(d.order))
}

fn event_key(id: &str, seq: u64) -> Vec<u8> {
    key2(id, &be(seq))
}

type TxResult<T> = Result<T, ConflictableTransactionError<StoreError>>;

fn tx_get(tree: &TransactionalTree, id: &str) -> TxResult<Deployment> {
    let bytes = tree
        .get(id.as_bytes())?
        .ok_or_else(|| abort(StoreError::NotFound(format!("deployment {id}"))))?;
    decode(id.as_bytes(), &bytes).map_err(abort)
}

/// Writes the record; a record that became terminal leaves the queue.
fn tx_put(
    deployments: &TransactionalTree,
    queue: &TransactionalTree,
    d: &Deployment,
) -> TxResult<()> {
    deployments.insert(d.id.as_bytes(), encode(d).map_err(abort)?)?;
    if d.status.is_terminal() {
        queue.remove(queue_key(d))?;
    }
    Ok(())
}

impl SledStore {
    fn records_of(
        &self,
        ids: impl Iterator<Item = Result<sled::IVec, StoreError>>,
    ) -> Result<Vec<Deployment>, StoreError> {
        let mut out = Vec::new();
        for id in ids {
            let id = id?;
            if let Some(v) = self.deployments.get(&id)? {
                out.push(decode(&id, &v)?);
            }
        }
        Ok(out)
    }
}

impl DeploymentStore for SledStore {
    fn insert_deployment(&self, deployment: &Deployment) -> Result<Deployment, StoreError> {
        let mut d = deployment.clone();
        d.order = self.db.generate_id()?;
        let record = encode(&d)?;
        let history_key = key2(&d.project_id, &be(d.order));
        (
            &self.deployments,
            &self.deployments_by_project,
            &self.deployment_counts,
            &self.queue,
        )
            .transaction(|(deployments, history, counts, queue)| {
                if deployments.get(d.id.as_bytes())?.is_some() {
                    return Err(abort(StoreError::Conflict(format!("deployment {}", d.id))));
                }
                deployments.insert(d.id.as_bytes(), record.clone())?;
                history.insert(history_key.clone(), d.id.as_bytes())?;
                let count = counts
                    .get(d.project_id.as_bytes())?
                    .and_then(|v| <[u8; 8]>::try_from(v.as_ref()).ok())
                    .map_or(0, u64::from_be_bytes);
                counts.insert(d.project_id.as_bytes(), &be(count + 1))?;
                if !d.status.is_terminal() {
                    queue.insert(queue_key(&d), d.id.as_bytes())?;
                }
                Ok(())
            })?;
        Ok(d)
    }

    fn deployment(&self, id: &str) -> Result<Option<Deployment>, StoreError> {
        self.deployments
            .get(id.as_bytes())?
            .map(|v| decode(id.as_bytes(), &v))
            .transpose()
    }

    fn list_deployments(
        &self,
        project: &str,
        offset: usize,
        limit: usize,
    ) -> Result<(u64, Vec<Deployment>), StoreError> {
        let total = self
            .deployment_counts
            .get(project.as_bytes())?
            .and_then(|v| <[u8; 8]>::try_from(v.as_ref()).ok())
            .map_or(0, u64::from_be_bytes);
        let history = self
            .deployments_by_project
            .scan_prefix(prefix(project))
            .values();
        let total_items = usize::try_from(total).unwrap_or(usize::MAX);
        // Skipping costs one step per entry, so walk from the nearer end: newest-first
        // offsets in the older half are read forwards from the oldest entry.
        let page: Vec<Result<sled::IVec, StoreError>> = if offset.saturating_mul(2) <= total_items {
            history
                .rev()
                .skip(offset)
                .take(limit)
                .map(|r| r.map_err(StoreError::from))
                .collect()
        } else {
            let end = total_items.saturating_sub(offset);
            let start = end.saturating_sub(limit);
            let mut forward: Vec<_> = history
                .skip(start)
                .take(end - start)
                .map(|r| r.map_err(StoreError::from))
                .collect();
            forward.reverse();
            forward
        };
        Ok((total, self.records_of(page.into_iter())?))
    }

    fn deployments_before(
        &self,
        project: &str,
        order: u64,
        limit: usize,
    ) -> Result<Vec<Deployment>, StoreError> {
        let ids = self
            .deployments_by_project
            .range(prefix(project)..key2(project, &be(order)))
            .values()
            .rev()
            .take(limit)
            .map(|r| r.map_err(StoreError::from));
        self.records_of(ids)
    }

    fn update_deployment(
        &self,
        id: &str,
        change: Change<'_, Deployment>,
    ) -> Result<Deployment, StoreError> {
        // The closure may run again if the transaction conflicts; `change` is FnMut.
        let change = std::cell::RefCell::new(change);
        let result = (&self.deployments, &self.queue).transaction(|(deployments, queue)| {
            let mut d = tx_get(deployments, id)?;
            (change.borrow_mut())(&mut d).map_err(abort)?;
            tx_put(deployments, queue, &d)?;
            Ok(d)
        })?;
        Ok(result)
    }

    fn append_event(&self, id: &str, event: &DeployEvent) -> Result<Deployment, StoreError> {
        let bytes = encode(event)?;
        let result = (&self.deployments, &self.queue, &self.events).transaction(
            |(deployments, queue, events)| {
                let mut d = tx_get(deployments, id)?;
                if event.seq <= d.last_seq {
                    return Ok(d);
                }
                if event.seq != d.last_seq + 1 {
                    return Err(abort(StoreError::Refused(format!(
                        "event {} of deployment {id} does not follow event {}",
                        event.seq, d.last_seq
                    ))));
                }
                events.insert(event_key(id, event.seq), bytes.clone())?;
                d.apply(event);
                tx_put(deployments, queue, &d)?;
                Ok(d)
            },
        )?;
        Ok(result)
    }

    fn events(&self, id: &str, after: u64, limit: usize) -> Result<Vec<DeployEvent>, StoreError> {
        let start = event_key(id, after.saturating_add(1));
        let end = event_key(id, u64::MAX);
        let mut out = Vec::new();
        for kv in self.events.range(start..=end).take(limit) {
            let (k, v) = kv?;
            out.push(decode(&k, &v)?);
        }
        Ok(out)
    }

    fn active_deployments(&self) -> Result<Vec<Deployment>, StoreError> {
        self.records_of(
            self.queue
                .iter()
                .values()
                .map(|r| r.map_err(StoreError::from)),
        )
    }

    fn instance_queue(&self, instance: &str) -> Result<Vec<Deployment>, StoreError> {
        self.records_of(
            self.queue
                .scan_prefix(prefix(instance))
                .values()
                .map(|r| r.map_err(StoreError::from)),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{DeploymentStatus, EventKind};
    use crate::store::sled::SledStore;

    fn deployment(id: &str, instance: &str) -> Deployment {
        let mut d = crate::domain::deployment_tests::queued(id);
        d.instance_id = instance.to_owned();
        d
    }

    fn log(seq: u64) -> DeployEvent {
        DeployEvent {
            seq,
            at: 1,
            kind: EventKind::Log {
                step: "Build Image".into(),
                line: format!("line {seq}"),
            },
        }
    }

    #[test]
    fn queue_keeps_creation_order_per_instance_and_drops_finished() -> Result<(), StoreError> {
        let dir = tempfile::tempdir().map_err(|e| StoreError::Backend(e.to_string()))?;
        let store = SledStore::open(dir.path())?;
        for (id, instance) in [("a", "i1"), ("b", "i2"), ("c", "i1"), ("d", "i1")] {
            store.insert_deployment(&deployment(id, instance))?;
        }
        let ids = |v: Vec<Deployment>| v.into_iter().map(|d| d.id).collect::<Vec<_>>();
        assert_eq!(ids(store.instance_queue("i1")?), ["a", "c", "d"]);
        assert_eq!(ids(store.active_deployments()?), ["a", "c", "d", "b"]);
        store.update_deployment("c", &mut |d| {
            d.status = DeploymentStatus::Cancelled;
            Ok(())
        })?;
        assert_eq!(ids(store.instance_queue("i1")?), ["a", "d"]);
        // An aborted change writes nothing.
        let err = store.update_deployment("a", &mut |_| Err(StoreError::Refused("no".into())));
        assert!(matches!(err, Err(StoreError::Refused(_))));
        assert!(matches!(
            store.update_deployment("zz", &mut |_| Ok(())),
            Err(StoreError::NotFound(_))
        ));
        Ok(())
    }

    #[test]
    fn history_pages_newest_first_with_total() -> Result<(), StoreError> {
        let dir = tempfile::tempdir().map_err(|e| StoreError::Backend(e.to_string()))?;
        let store = SledStore::open(dir.path())?;
        for i in 0..25 {
            store.insert_deployment(&deployment(&format!("d{i:02}"), "i1"))?;
        }
        let mut other = deployment("x", "i9");
        other.project_id = "other".into();
        store.insert_deployment(&other)?;
        let (total, page) = store.list_deployments("shop", 0, 10)?;
        assert_eq!(total, 25);
        assert_eq!(page.first().map(|d| d.id.as_str()), Some("d24"));
        assert_eq!(page.len(), 10);
        let (_, deep) = store.list_deployments("shop", 17, 3)?;
        assert_eq!(
            deep.iter().map(|d| d.id.as_str()).collect::<Vec<_>>(),
            ["d07", "d06", "d05"],
            "read forwards from the oldest end"
        );
        let (_, last) = store.list_deployments("shop", 20, 10)?;
        assert_eq!(
            last.iter().map(|d| d.id.as_str()).collect::<Vec<_>>(),
            ["d04", "d03", "d02", "d01", "d00"]
        );
        assert!(store.list_deployments("shop", 30, 10)?.1.is_empty());
        assert_eq!(store.list_deployments("nobody", 0, 10)?, (0, vec![]));
        Ok(())
    }

    #[test]
    fn deleting_a_project_deletes_its_history() -> Result<(), StoreError> {
        use crate::domain::{Environment, Project, SnapshotSettings};
        use crate::store::ProjectStore;
        let dir = tempfile::tempdir().map_err(|e| StoreError::Backend(e.to_string()))?;
        let store = SledStore::open(dir.path())?;
        let project = Project {
            id: "shop".into(),
            name: "Shop".into(),
            repository_url: "/srv/shop".into(),
            addons_subpath: String::new(),
            credentials: None,
            ssh_host_key: None,
            created_at: 0,
            updated_at: 0,
        };
        store.insert_project(&project)?;
        store.insert_environment(&Environment {
            id: "shop-prod".into(),
            project_id: "shop".into(),
            name: "prod".into(),
            snapshot_settings: SnapshotSettings::default(),
            created_at: 0,
            updated_at: 0,
        })?;
        store.insert_deployment(&deployment("a", "i1"))?;
        let d = store.append_event("a", &log(1))?;
        assert!(
            matches!(store.delete_project("shop"), Err(StoreError::Refused(_))),
            "environments first"
        );
        store.delete_environment("shop-prod")?;
        assert!(
            matches!(store.delete_project("shop"), Err(StoreError::Refused(_))),
            "active deployment"
        );
        store.append_event(
            "a",
            &d.closing_event(DeploymentStatus::Cancelled, "x".into(), 2),
        )?;
        store.delete_project("shop")?;
        store.insert_project(&project)?;
        assert_eq!(store.list_deployments("shop", 0, 10)?, (0, vec![]));
        assert!(store.deployment("a")?.is_none());
        assert!(store.events("a", 0, 10)?.is_empty());
        Ok(())
    }

    #[test]
    fn events_are_dense_idempotent_and_read_after_a_cursor() -> Result<(), StoreError> {
        let dir = tempfile::tempdir().map_err(|e| StoreError::Backend(e.to_string()))?;
        let store = SledStore::open(dir.path())?;
        store.insert_deployment(&deployment("a", "i1"))?;
        for seq in 1..=5 {
            store.append_event("a", &log(seq))?;
        }
        // A replay of an old event is ignored, a gap refused.
        assert_eq!(store.append_event("a", &log(3))?.last_seq, 5);
        assert!(matches!(
            store.append_event("a", &log(7)),
            Err(StoreError::Refused(_))
        ));
        let seqs = |v: Vec<DeployEvent>| v.iter().map(|e| e.seq).collect::<Vec<_>>();
        assert_eq!(seqs(store.events("a", 0, 100)?), [1, 2, 3, 4, 5]);
        assert_eq!(seqs(store.events("a", 3, 100)?), [4, 5]);
        assert_eq!(seqs(store.events("a", 1, 2)?), [2, 3]);
        assert!(store.events("a", 5, 100)?.is_empty());
        let d = store
            .deployment("a")?
            .ok_or(StoreError::NotFound("a".into()))?;
        let close = d.closing_event(DeploymentStatus::Failed, "refused".into(), 9);
        let d = store.append_event("a", &close)?;
        assert_eq!(d.status, DeploymentStatus::Failed);
        assert!(
            store.instance_queue("i1")?.is_empty(),
            "finished leaves the queue"
        );
        Ok(())
    }
}
