//! Snapshots of an instance's database and filestore: create, restore, manage, export.

use std::sync::Arc;

use crate::config::AgentConfig;
use crate::db::Pg;

/// The snapshot component of an agent.
pub struct Snapshots {
    pub config: Arc<AgentConfig>,
    pub pg: Pg,
}

impl Snapshots {
    pub fn new(config: Arc<AgentConfig>, pg: Pg) -> Self {
        Self { config, pg }
    }
}
