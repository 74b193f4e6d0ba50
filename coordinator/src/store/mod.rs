//! The coordinator's storage interface and its one implementation, sled (`store::sled`).
//!
//! The rest of the coordinator sees only [`Storage`] (the traits below, as `Store`), so a
//! PostgreSQL backend for a replicated coordinator can be added without touching the API
//! layer or the dispatcher. Methods are domain operations, each atomic on its own: a
//! backend implements them with its own transactions. They block briefly (an embedded
//! store answers in microseconds); a networked backend would run them on a blocking pool.
//!
//! Nothing but `store::sled` opens sled.

mod agents;
mod sled;
mod tokens;
mod webhooks;

use std::path::{Path, PathBuf};
use std::sync::Arc;

pub use agents::{AgentRecord, EnrolmentTokenRecord, InstanceSummary};
pub use tokens::{Grant, TokenRecord};
pub use webhooks::WebhookStore;

use crate::domain::{
    BranchMapping, DeployEvent, Deployment, Environment, Instance, Project, Snapshot,
};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("cannot open the store in {path}: {message}")]
    Open { path: PathBuf, message: String },
    #[error("store: {0}")]
    Backend(String),
    #[error("store record {key} is corrupt: {message}")]
    Corrupt { key: String, message: String },
    #[error("{0} already exists")]
    Conflict(String),
    #[error("{0} not found")]
    NotFound(String),
    /// A request the stored state refuses (in use, wrong state, …); the text says why.
    #[error("{0}")]
    Refused(String),
    /// A credential the store refuses (unknown, used or expired enrolment token).
    #[error("{0}")]
    Rejected(String),
}

/// Changes a record in place; an error aborts the write.
pub type Change<'a, T> = &'a mut dyn FnMut(&mut T) -> Result<(), StoreError>;

/// Handle to the store; cheap to clone.
pub type Store = Arc<dyn Storage>;

/// Opens (creating if needed) the sled store in `dir`. Fails clearly if another process
/// (usually a running `ocore server`) holds it.
pub fn open(dir: &Path) -> Result<Store, StoreError> {
    Ok(Arc::new(sled::SledStore::open(dir)?))
}

/// Everything the coordinator stores.
pub trait Storage:
    AgentStore
    + TokenStore
    + ProjectStore
    + DeploymentStore
    + SnapshotStore
    + WebhookStore
    + Send
    + Sync
{
    /// Makes every acknowledged write durable (on shutdown).
    fn flush(&self) -> Result<(), StoreError>;
}

pub trait AgentStore {
    fn agent(&self, name: &str) -> Result<Option<AgentRecord>, StoreError>;
    fn agents(&self) -> Result<Vec<AgentRecord>, StoreError>;
    /// Inserts a new agent; `Conflict` if the name is taken.
    fn insert_agent(&self, record: &AgentRecord) -> Result<(), StoreError>;
    /// Applies `change` to the agent's record and stores it; returns the new record.
    fn update_agent(
        &self,
        name: &str,
        change: &dyn Fn(&mut AgentRecord),
    ) -> Result<AgentRecord, StoreError>;
    /// Removes an agent and every enrolment token issued for it.
    fn remove_agent(&self, name: &str) -> Result<(), StoreError>;
    fn insert_enrolment_token(
        &self,
        token_hash: &str,
        record: &EnrolmentTokenRecord,
    ) -> Result<(), StoreError>;
    /// Marks the token used, exactly once, deciding expiry and prior use atomically.
    fn consume_enrolment_token(
        &self,
        token_hash: &str,
        now: i64,
    ) -> Result<EnrolmentTokenRecord, StoreError>;
}

pub trait TokenStore {
    fn insert_token(&self, record: &TokenRecord) -> Result<(), StoreError>;
    fn token_by_hash(&self, hash: &str) -> Result<Option<TokenRecord>, StoreError>;
    fn tokens(&self) -> Result<Vec<TokenRecord>, StoreError>;
    fn token_count(&self) -> usize;
    /// Marks a token revoked; it stays listed for the audit trail. `Refused` for the last
    /// active admin token.
    fn revoke_token(&self, id: &str, now: i64) -> Result<TokenRecord, StoreError>;
}

/// Projects, environments, branch mappings and instances, with their referential rules:
/// an environment needs its project, an instance its environment, a mapping its
/// environment; nothing is deleted while something refers to it.
pub trait ProjectStore {
    fn insert_project(&self, project: &Project) -> Result<(), StoreError>;
    fn project(&self, id: &str) -> Result<Option<Project>, StoreError>;
    fn projects(&self) -> Result<Vec<Project>, StoreError>;
    fn update_project(&self, id: &str, change: Change<'_, Project>) -> Result<Project, StoreError>;
    /// `Refused` while the project has environments.
    fn delete_project(&self, id: &str) -> Result<(), StoreError>;

    fn insert_environment(&self, environment: &Environment) -> Result<(), StoreError>;
    fn environment(&self, id: &str) -> Result<Option<Environment>, StoreError>;
    /// Every environment, or those of one project.
    fn environments(&self, project: Option<&str>) -> Result<Vec<Environment>, StoreError>;
    fn update_environment(
        &self,
        id: &str,
        change: Change<'_, Environment>,
    ) -> Result<Environment, StoreError>;
    /// `Refused` while an instance or a branch mapping refers to it.
    fn delete_environment(&self, id: &str) -> Result<(), StoreError>;

    /// Maps `branch` to an environment of the same project, replacing an earlier mapping.
    fn set_mapping(&self, mapping: &BranchMapping) -> Result<(), StoreError>;
    fn mapping(&self, project: &str, branch: &str) -> Result<Option<BranchMapping>, StoreError>;
    fn mappings(&self, project: &str) -> Result<Vec<BranchMapping>, StoreError>;
    fn remove_mapping(&self, project: &str, branch: &str) -> Result<(), StoreError>;

    /// `Conflict` if the id is taken, the environment already has an instance, or the
    /// agent's instance is already bound to another instance.
    fn insert_instance(&self, instance: &Instance) -> Result<(), StoreError>;
    fn instance(&self, id: &str) -> Result<Option<Instance>, StoreError>;
    /// Every instance, or those of one project.
    fn instances(&self, project: Option<&str>) -> Result<Vec<Instance>, StoreError>;
    fn update_instance(
        &self,
        id: &str,
        change: Change<'_, Instance>,
    ) -> Result<Instance, StoreError>;
    /// `Refused` while the instance has queued or running deployments.
    fn delete_instance(&self, id: &str) -> Result<(), StoreError>;
}

/// Deployments, their order, the per-instance queue and their event logs.
pub trait DeploymentStore {
    /// Stores a new (queued) deployment at the end of its instance's queue and of its
    /// project's history; returns it with its `order` assigned.
    fn insert_deployment(&self, deployment: &Deployment) -> Result<Deployment, StoreError>;
    fn deployment(&self, id: &str) -> Result<Option<Deployment>, StoreError>;
    /// A page of a project's deployments, newest first, and the project's total.
    fn list_deployments(
        &self,
        project: &str,
        offset: usize,
        limit: usize,
    ) -> Result<(u64, Vec<Deployment>), StoreError>;
    /// Up to `limit` of a project's deployments created before the one at `order`,
    /// newest first.
    fn deployments_before(
        &self,
        project: &str,
        order: u64,
        limit: usize,
    ) -> Result<Vec<Deployment>, StoreError>;
    /// Changes a deployment; one that becomes terminal leaves its instance's queue.
    fn update_deployment(
        &self,
        id: &str,
        change: Change<'_, Deployment>,
    ) -> Result<Deployment, StoreError>;
    /// Appends `event` to the log and folds it into the record, atomically. An event
    /// already stored (seq not above the last) is ignored; a gap is `Refused`.
    fn append_event(&self, id: &str, event: &DeployEvent) -> Result<Deployment, StoreError>;
    /// Up to `limit` events with seq above `after`, in order.
    fn events(&self, id: &str, after: u64, limit: usize) -> Result<Vec<DeployEvent>, StoreError>;
    /// Queued and running deployments of every instance, each instance's in queue order.
    fn active_deployments(&self) -> Result<Vec<Deployment>, StoreError>;
    /// The instance's queued and running deployments, in queue order.
    fn instance_queue(&self, instance: &str) -> Result<Vec<Deployment>, StoreError>;
}

/// Snapshot metadata, cached from agents, by environment.
pub trait SnapshotStore {
    fn put_snapshot(&self, snapshot: &Snapshot) -> Result<(), StoreError>;
    fn snapshot(&self, environment: &str, id: &str) -> Result<Option<Snapshot>, StoreError>;
    fn snapshots(&self, environment: &str) -> Result<Vec<Snapshot>, StoreError>;
}
