//! The coordinator's embedded store (sled). Nothing else in the coordinator opens sled.
//!
//! Values are JSON documents in named trees; each record type has its own module. Writes
//! that must not race (consuming an enrolment token) use compare-and-swap.

mod agents;
mod tokens;

use std::path::{Path, PathBuf};

pub use agents::{AgentRecord, EnrolmentTokenRecord, InstanceSummary};
pub use tokens::{Grant, TokenRecord};

use serde::de::DeserializeOwned;
use serde::Serialize;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("cannot open the store in {path}: {message}")]
    Open { path: PathBuf, message: String },
    #[error("store: {0}")]
    Sled(#[from] sled::Error),
    #[error("store record {key} is corrupt: {message}")]
    Corrupt { key: String, message: String },
    #[error("{0} already exists")]
    Conflict(String),
    #[error("{0} not found")]
    NotFound(String),
    #[error("{0}")]
    Rejected(String),
}

/// Handle to the store; cheap to clone.
#[derive(Clone)]
pub struct Store {
    db: sled::Db,
    agents: sled::Tree,
    enrolment_tokens: sled::Tree,
    tokens: sled::Tree,
    token_hashes: sled::Tree,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store").finish_non_exhaustive()
    }
}

impl Store {
    /// Opens (creating if needed) the store in `dir`. Fails clearly if another process
    /// (usually a running `ocore server`) holds it.
    pub fn open(dir: &Path) -> Result<Self, StoreError> {
        let db = sled::Config::new().path(dir).open().map_err(|e| {
            let message = match &e {
                sled::Error::Io(io)
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
            db,
        })
    }

    /// Flushes pending writes to disk (on shutdown).
    pub fn flush(&self) -> Result<(), StoreError> {
        self.db.flush()?;
        Ok(())
    }
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
