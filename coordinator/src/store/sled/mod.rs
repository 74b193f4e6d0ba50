//! The sled implementation of [`Storage`]: JSON documents in named trees, big-endian
//! numbers in index keys so key order is numeric order.
//!
//! Trees:
//! - `agents` (name), `enrolment_tokens` (token hash), `tokens` (id), `token_hashes`
//!   (hash -> id);
//! - `projects`, `environments`, `instances` (id); `branch_mappings` (`project\0branch`);
//! - `deployments` (id); `deployments_by_project` (`project\0order` -> id, the history,
//!   read backwards for newest first); `deployment_counts` (project -> total);
//!   `queue` (`instance\0order` -> id, queued and running only);
//! - `events` (`deployment\0seq` -> event);
//! - `snapshots` (`environment\0snapshot`);
//! - `webhook_secrets` (project); `webhook_deliveries` (`project\0order`, the delivery
//!   log); `webhook_delivery_ids` (entry id -> `project\0order`); `webhook_delivery_keys`
//!   (`project\0provider\0deliveryId\0order` -> entry id, for duplicates);
//!   `webhook_requests` (`project\0order` -> the raw request kept for a redeliver).

mod agents;
mod deployments;
mod projects;
mod snapshots;
mod tokens;
mod webhooks;

use std::path::Path;
use std::sync::Mutex;

use serde::de::DeserializeOwned;
use serde::Serialize;
use sled::transaction::{ConflictableTransactionError, TransactionError};

use super::{Storage, StoreError};

pub struct SledStore {
    db: sled::Db,
    agents: sled::Tree,
    enrolment_tokens: sled::Tree,
    tokens: sled::Tree,
    token_hashes: sled::Tree,
    projects: sled::Tree,
    environments: sled::Tree,
    instances: sled::Tree,
    branch_mappings: sled::Tree,
    deployments: sled::Tree,
    deployments_by_project: sled::Tree,
    deployment_counts: sled::Tree,
    queue: sled::Tree,
    events: sled::Tree,
    snapshots: sled::Tree,
    webhook_secrets: sled::Tree,
    webhook_deliveries: sled::Tree,
    webhook_delivery_ids: sled::Tree,
    webhook_delivery_keys: sled::Tree,
    webhook_requests: sled::Tree,
    /// Serialises the check-then-write administration operations (referential checks
    /// across trees); they are rare, so one lock is enough.
    admin: Mutex<()>,
}

impl From<sled::Error> for StoreError {
    fn from(e: sled::Error) -> Self {
        StoreError::Backend(e.to_string())
    }
}

impl From<TransactionError<StoreError>> for StoreError {
    fn from(e: TransactionError<StoreError>) -> Self {
        match e {
            TransactionError::Abort(e) => e,
            TransactionError::Storage(e) => e.into(),
        }
    }
}

/// Aborts a sled transaction with a store error.
fn abort(e: StoreError) -> ConflictableTransactionError<StoreError> {
    ConflictableTransactionError::Abort(e)
}

/// Upper bound of sled's page cache. Its default (1 GiB) is more than a coordinator
/// needs: history pages are read rarely and are cheap to read again from disk.
const CACHE_BYTES: u64 = 128 * 1024 * 1024;

impl SledStore {
    pub fn open(dir: &Path) -> Result<Self, StoreError> {
        let db = ::sled::Config::new()
            .path(dir)
            .cache_capacity(CACHE_BYTES)
            .open()
            .map_err(|e| {
                let message = match &e {
                    ::sled::Error::Io(io)
                        if io.kind() == std::io::ErrorKind::WouldBlock
                            || io.raw_os_error() == Some(11) =>
                    {
                        "it is in use by another process (is `ocore server` running?)".to_owned()
                    }
                    other => other.to_string(),
                };
                StoreError::Open {
                    path: dir.to_owned(),
                    message,
                }
            })?;
        Ok(Self {
            agents: db.open_tree("agents")?,
            enrolment_tokens: db.open_tree("enrolment_tokens")?,
            tokens: db.open_tree("tokens")?,
            token_hashes: db.open_tree("token_hashes")?,
            projects: db.open_tree("projects")?,
            environments: db.open_tree("environments")?,
            instances: db.open_tree("instances")?,
            branch_mappings: db.open_tree("branch_mappings")?,
            deployments: db.open_tree("deployments")?,
            deployments_by_project: db.open_tree("deployments_by_project")?,
            deployment_counts: db.open_tree("deployment_counts")?,
            queue: db.open_tree("queue")?,
            events: db.open_tree("events")?,
            snapshots: db.open_tree("snapshots")?,
            webhook_secrets: db.open_tree("webhook_secrets")?,
            webhook_deliveries: db.open_tree("webhook_deliveries")?,
            webhook_delivery_ids: db.open_tree("webhook_delivery_ids")?,
            webhook_delivery_keys: db.open_tree("webhook_delivery_keys")?,
            webhook_requests: db.open_tree("webhook_requests")?,
            admin: Mutex::new(()),
            db,
        })
    }

    fn admin_lock(&self) -> std::sync::MutexGuard<'_, ()> {
        self.admin
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

impl Storage for SledStore {
    fn flush(&self) -> Result<(), StoreError> {
        self.db.flush()?;
        Ok(())
    }
}

/// `a\0b`: a composite key whose first part cannot contain NUL (ids are slugs or UUIDs).
fn key2(a: &str, b: &[u8]) -> Vec<u8> {
    let mut k = Vec::with_capacity(a.len() + 1 + b.len());
    k.extend_from_slice(a.as_bytes());
    k.push(0);
    k.extend_from_slice(b);
    k
}

fn prefix(a: &str) -> Vec<u8> {
    key2(a, &[])
}

fn encode<T: Serialize>(value: &T) -> Result<Vec<u8>, StoreError> {
    serde_json::to_vec(value).map_err(|e| StoreError::Corrupt {
        key: "<new>".to_owned(),
        message: e.to_string(),
    })
}

fn decode<T: DeserializeOwned>(key: &[u8], bytes: &[u8]) -> Result<T, StoreError> {
    serde_json::from_slice(bytes).map_err(|e| StoreError::Corrupt {
        key: String::from_utf8_lossy(key).into_owned(),
        message: e.to_string(),
    })
}

fn get<T: DeserializeOwned>(tree: &sled::Tree, key: &str) -> Result<Option<T>, StoreError> {
    tree.get(key.as_bytes())?
        .map(|v| decode(key.as_bytes(), &v))
        .transpose()
}

fn put<T: Serialize>(tree: &sled::Tree, key: &str, value: &T) -> Result<(), StoreError> {
    tree.insert(key.as_bytes(), encode(value)?)?;
    Ok(())
}

fn all<T: DeserializeOwned>(tree: &sled::Tree) -> Result<Vec<T>, StoreError> {
    tree.iter()
        .map(|kv| {
            let (k, v) = kv?;
            decode(&k, &v)
        })
        .collect()
}

fn all_prefixed<T: DeserializeOwned>(tree: &sled::Tree, p: &[u8]) -> Result<Vec<T>, StoreError> {
    tree.scan_prefix(p)
        .map(|kv| {
            let (k, v) = kv?;
            decode(&k, &v)
        })
        .collect()
}

/// Inserts `value` under `key` only if the key is free.
fn insert_new<T: Serialize>(
    tree: &sled::Tree,
    key: &str,
    value: &T,
    what: String,
) -> Result<(), StoreError> {
    tree.compare_and_swap(key.as_bytes(), None as Option<&[u8]>, Some(encode(value)?))?
        .map_err(|_| StoreError::Conflict(what))
}

/// Read-modify-write with compare-and-swap, retried on a concurrent change.
fn update<T: Serialize + DeserializeOwned>(
    tree: &sled::Tree,
    key: &str,
    what: &str,
    change: &mut dyn FnMut(&mut T) -> Result<(), StoreError>,
) -> Result<T, StoreError> {
    loop {
        let old = tree
            .get(key.as_bytes())?
            .ok_or_else(|| StoreError::NotFound(what.to_owned()))?;
        let mut record: T = decode(key.as_bytes(), &old)?;
        change(&mut record)?;
        let new = encode(&record)?;
        if tree
            .compare_and_swap(key.as_bytes(), Some(&old), Some(new))?
            .is_ok()
        {
            return Ok(record);
        }
    }
}
