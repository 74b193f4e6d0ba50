//! Projects, environments, branch mappings and instances in sled.

use super::{all, all_prefixed, get, insert_new, key2, prefix, update, SledStore};
use crate::domain::{BranchMapping, Environment, Instance, Project};
use crate::store::{Change, ProjectStore, StoreError};

impl ProjectStore for SledStore {
    fn insert_project(&self, project: &Project) -> Result<(), StoreError> {
        insert_new(
            &self.projects,
            &project.id,
            project,
            format!("project {}", project.id),
        )
    }

    fn project(&self, id: &str) -> Result<Option<Project>, StoreError> {
        get(&self.projects, id)
    }

    fn projects(&self) -> Result<Vec<Project>, StoreError> {
        all(&self.projects)
    }

    fn update_project(&self, id: &str, change: Change<'_, Project>) -> Result<Project, StoreError> {
        update(&self.projects, id, &format!("project {id}"), change)
    }

    fn delete_project(&self, id: &str) -> Result<(), StoreError> {
        let _guard = self.admin_lock();
        if self.project(id)?.is_none() {
            return Err(StoreError::NotFound(format!("project {id}")));
        }
        let environments = self.environments(Some(id))?;
        if !environments.is_empty() {
            let ids: Vec<&str> = environments.iter().map(|e| e.id.as_str()).collect();
            return Err(StoreError::Refused(format!(
                "project {id} still has environments ({}); delete them first",
                ids.join(", ")
            )));
        }
        if self.queue.iter().values().any(|v| {
            v.ok()
                .and_then(|dep| self.deployments.get(&dep).ok().flatten())
                .and_then(|r| serde_json::from_slice::<crate::domain::Deployment>(&r).ok())
                .is_some_and(|d| d.project_id == id)
        }) {
            return Err(StoreError::Refused(format!(
                "project {id} has queued or running deployments; cancel them first"
            )));
        }
        // The history goes with the project, so a project created again with the same id
        // starts empty.
        for entry in self.deployments_by_project.scan_prefix(prefix(id)) {
            let (key, dep) = entry?;
            for event in self
                .events
                .scan_prefix(key2(&String::from_utf8_lossy(&dep), &[]))
                .keys()
            {
                self.events.remove(event?)?;
            }
            self.deployments.remove(&dep)?;
            self.deployments_by_project.remove(key)?;
        }
        self.deployment_counts.remove(id.as_bytes())?;
        self.purge_webhooks(id)?;
        self.projects.remove(id.as_bytes())?;
        Ok(())
    }

    fn insert_environment(&self, environment: &Environment) -> Result<(), StoreError> {
        let _guard = self.admin_lock();
        if self.project(&environment.project_id)?.is_none() {
            return Err(StoreError::NotFound(format!(
                "project {}",
                environment.project_id
            )));
        }
        insert_new(
            &self.environments,
            &environment.id,
            environment,
            format!("environment {}", environment.id),
        )
    }

    fn environment(&self, id: &str) -> Result<Option<Environment>, StoreError> {
        get(&self.environments, id)
    }

    fn environments(&self, project: Option<&str>) -> Result<Vec<Environment>, StoreError> {
        let mut list: Vec<Environment> = all(&self.environments)?;
        if let Some(p) = project {
            list.retain(|e| e.project_id == p);
        }
        Ok(list)
    }

    fn update_environment(
        &self,
        id: &str,
        change: Change<'_, Environment>,
    ) -> Result<Environment, StoreError> {
        update(&self.environments, id, &format!("environment {id}"), change)
    }

    fn delete_environment(&self, id: &str) -> Result<(), StoreError> {
        let _guard = self.admin_lock();
        let environment = self
            .environment(id)?
            .ok_or_else(|| StoreError::NotFound(format!("environment {id}")))?;
        let instances = self.instances(Some(&environment.project_id))?;
        if let Some(i) = instances.iter().find(|i| i.environment_id == id) {
            return Err(StoreError::Refused(format!(
                "environment {id} still has instance {}; delete it first",
                i.id
            )));
        }
        let mappings = self.mappings(&environment.project_id)?;
        if let Some(m) = mappings.iter().find(|m| m.environment_id == id) {
            return Err(StoreError::Refused(format!(
                "branch {} is mapped to environment {id}; remove the mapping first",
                m.branch
            )));
        }
        for key in self.snapshots.scan_prefix(prefix(id)).keys() {
            self.snapshots.remove(key?)?;
        }
        self.environments.remove(id.as_bytes())?;
        Ok(())
    }

    fn set_mapping(&self, mapping: &BranchMapping) -> Result<(), StoreError> {
        let _guard = self.admin_lock();
        match self.environment(&mapping.environment_id)? {
            Some(e) if e.project_id == mapping.project_id => {}
            _ => {
                return Err(StoreError::NotFound(format!(
                    "environment {} in project {}",
                    mapping.environment_id, mapping.project_id
                )))
            }
        }
        let key = key2(&mapping.project_id, mapping.branch.as_bytes());
        self.branch_mappings.insert(key, super::encode(mapping)?)?;
        Ok(())
    }

    fn mapping(&self, project: &str, branch: &str) -> Result<Option<BranchMapping>, StoreError> {
        let key = key2(project, branch.as_bytes());
        self.branch_mappings
            .get(&key)?
            .map(|v| super::decode(&key, &v))
            .transpose()
    }

    fn mappings(&self, project: &str) -> Result<Vec<BranchMapping>, StoreError> {
        all_prefixed(&self.branch_mappings, &prefix(project))
    }

    fn remove_mapping(&self, project: &str, branch: &str) -> Result<(), StoreError> {
        match self
            .branch_mappings
            .remove(key2(project, branch.as_bytes()))?
        {
            Some(_) => Ok(()),
            None => Err(StoreError::NotFound(format!(
                "mapping of branch {branch} in project {project}"
            ))),
        }
    }

    fn insert_instance(&self, instance: &Instance) -> Result<(), StoreError> {
        let _guard = self.admin_lock();
        match self.environment(&instance.environment_id)? {
            Some(e) if e.project_id == instance.project_id => {}
            _ => {
                return Err(StoreError::NotFound(format!(
                    "environment {}",
                    instance.environment_id
                )))
            }
        }
        for other in self.instances(None)? {
            if other.environment_id == instance.environment_id {
                return Err(StoreError::Conflict(format!(
                    "an instance of environment {} ({})",
                    instance.environment_id, other.id
                )));
            }
            if other.agent == instance.agent
                && other.agent_instance_id == instance.agent_instance_id
            {
                return Err(StoreError::Conflict(format!(
                    "a binding of agent {} instance {} ({})",
                    instance.agent, instance.agent_instance_id, other.id
                )));
            }
        }
        insert_new(
            &self.instances,
            &instance.id,
            instance,
            format!("instance {}", instance.id),
        )
    }

    fn instance(&self, id: &str) -> Result<Option<Instance>, StoreError> {
        get(&self.instances, id)
    }

    fn instances(&self, project: Option<&str>) -> Result<Vec<Instance>, StoreError> {
        let mut list: Vec<Instance> = all(&self.instances)?;
        if let Some(p) = project {
            list.retain(|i| i.project_id == p);
        }
        Ok(list)
    }

    fn update_instance(
        &self,
        id: &str,
        change: Change<'_, Instance>,
    ) -> Result<Instance, StoreError> {
        update(&self.instances, id, &format!("instance {id}"), change)
    }

    fn delete_instance(&self, id: &str) -> Result<(), StoreError> {
        let _guard = self.admin_lock();
        if self.instance(id)?.is_none() {
            return Err(StoreError::NotFound(format!("instance {id}")));
        }
        if self.queue.scan_prefix(prefix(id)).next().is_some() {
            return Err(StoreError::Refused(format!(
                "instance {id} has queued or running deployments; cancel them first"
            )));
        }
        self.instances.remove(id.as_bytes())?;
        Ok(())
    }
}
