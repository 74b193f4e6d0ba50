//! Snapshot metadata in sled, keyed `environment\0snapshot`.

use super::{all_prefixed, decode, encode, key2, prefix, SledStore};
use crate::domain::Snapshot;
use crate::store::{SnapshotStore, StoreError};

impl SnapshotStore for SledStore {
    fn put_snapshot(&self, snapshot: &Snapshot) -> Result<(), StoreError> {
        self.snapshots.insert(
            key2(&snapshot.environment_id, snapshot.id.as_bytes()),
            encode(snapshot)?,
        )?;
        Ok(())
    }

    fn snapshot(&self, environment: &str, id: &str) -> Result<Option<Snapshot>, StoreError> {
        let key = key2(environment, id.as_bytes());
        self.snapshots
            .get(&key)?
            .map(|v| decode(&key, &v))
            .transpose()
    }

    fn snapshots(&self, environment: &str) -> Result<Vec<Snapshot>, StoreError> {
        all_prefixed(&self.snapshots, &prefix(environment))
    }
}
