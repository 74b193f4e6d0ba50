//! The colour containers of an instance: how each is named, labelled and started, and the
//! one-off container that runs `odoo -u`.

use std::collections::HashMap;

use crate::config::InstanceConfig;
use crate::docker::{
    ContainerSpec, LABEL_COLOR, LABEL_COMMIT, LABEL_DEPLOYMENT, LABEL_INSTANCE, LABEL_MANAGED,
    LABEL_ROLE,
};
use crate::traffic::Color;

use super::Pipeline;

/// Where the generated Dockerfile puts the checkout inside the image.
pub const ADDONS_ROOT: &str = "/mnt/extra-addons";

pub fn container_name(instance: &str, color: Color) -> String {
    format!("ocore-{instance}-{color}")
}

pub fn update_container_name(instance: &str) -> String {
    format!("ocore-{instance}-update")
}

/// The image reference of a commit in the local registry.
pub fn image_repo(registry: &str, instance: &str) -> String {
    format!("{registry}/ocore/{instance}")
}

pub fn image_tag(commit_sha: &str) -> String {
    commit_sha.chars().take(12).collect()
}

/// What the running image needs to know beyond its configuration file.
#[derive(Debug, Clone)]
pub struct RunSettings {
    pub image: String,
    pub commit_sha: String,
    pub deployment_id: String,
    /// `--addons-path` when oCore generated the image (folders under [`ADDONS_ROOT`]).
    pub addons_path: Option<String>,
}

impl Pipeline {
    fn labels(
        &self,
        inst: &InstanceConfig,
        run: &RunSettings,
        role: &str,
    ) -> HashMap<String, String> {
        HashMap::from([
            (LABEL_MANAGED.to_owned(), "1".to_owned()),
            (LABEL_INSTANCE.to_owned(), inst.id.clone()),
            (LABEL_DEPLOYMENT.to_owned(), run.deployment_id.clone()),
            (LABEL_COMMIT.to_owned(), run.commit_sha.clone()),
            (LABEL_ROLE.to_owned(), role.to_owned()),
        ])
    }

    fn env(&self, run: &RunSettings) -> Vec<String> {
        // The official Odoo image's entrypoint reads HOST/PORT/USER/PASSWORD; passing the
        // password through the environment keeps it out of process listings.
        let mut env = vec![
            format!("HOST={}", self.pg.host),
            format!("PORT={}", self.pg.port),
            format!("USER={}", self.pg.user),
            format!("OCORE_COMMIT={}", run.commit_sha),
        ];
        if let Some(password) = self.pg.password() {
            env.push(format!("PASSWORD={password}"));
        }
        env
    }

    fn binds(&self, inst: &InstanceConfig) -> Vec<String> {
        vec![format!("{}:/var/lib/odoo", inst.data_dir.display())]
    }

    /// The serving container of `color`.
    pub fn colour_spec(
        &self,
        inst: &InstanceConfig,
        color: Color,
        run: &RunSettings,
    ) -> ContainerSpec {
        let (http, gevent) = color.ports(inst);
        let mut cmd = vec![
            "odoo".to_owned(),
            format!("--http-port={http}"),
            format!("--gevent-port={gevent}"),
            format!("--database={}", inst.database),
            format!("--db-filter=^{}$", regex_escape(&inst.database)),
            "--proxy-mode".to_owned(),
        ];
        if let Some(path) = &run.addons_path {
            cmd.push(format!("--addons-path={path}"));
        }
        let mut labels = self.labels(inst, run, "serve");
        labels.insert(LABEL_COLOR.to_owned(), color.as_str().to_owned());
        ContainerSpec {
            name: container_name(&inst.id, color),
            image: run.image.clone(),
            cmd,
            env: self.env(run),
            binds: self.binds(inst),
            labels,
            restart: true,
        }
    }

    /// The one-off container running `odoo -u modules --stop-after-init --no-http`.
    pub fn update_spec(
        &self,
        inst: &InstanceConfig,
        modules: &[String],
        run: &RunSettings,
    ) -> ContainerSpec {
        let mut cmd = vec![
            "odoo".to_owned(),
            format!("--database={}", inst.database),
            format!("--update={}", modules.join(",")),
            "--stop-after-init".to_owned(),
            "--no-http".to_owned(),
        ];
        if let Some(path) = &run.addons_path {
            cmd.push(format!("--addons-path={path}"));
        }
        ContainerSpec {
            name: update_container_name(&inst.id),
            image: run.image.clone(),
            cmd,
            env: self.env(run),
            binds: self.binds(inst),
            labels: self.labels(inst, run, "update"),
            restart: false,
        }
    }

    /// Makes sure the data directory exists and belongs to the container's odoo user.
    pub fn prepare_data_dir(&self, inst: &InstanceConfig) -> Result<(), String> {
        let dir = &inst.data_dir;
        std::fs::create_dir_all(dir)
            .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
        let meta = std::fs::metadata(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        use std::os::unix::fs::MetadataExt;
        if meta.uid() != inst.odoo_uid || meta.gid() != inst.odoo_gid {
            std::os::unix::fs::chown(dir, Some(inst.odoo_uid), Some(inst.odoo_gid)).map_err(
                |e| {
                    format!(
                        "cannot give {} to uid {}: {e}",
                        dir.display(),
                        inst.odoo_uid
                    )
                },
            )?;
        }
        Ok(())
    }
}

/// Escapes a database name for Odoo's `--db-filter` regular expression.
fn regex_escape(s: &str) -> String {
    s.chars()
        .flat_map(|c| match c {
            '.' | '-' => vec!['\\', c],
            _ => vec![c],
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_tags() {
        assert_eq!(container_name("shop", Color::Green), "ocore-shop-green");
        assert_eq!(
            image_repo("127.0.0.1:5000", "shop"),
            "127.0.0.1:5000/ocore/shop"
        );
        assert_eq!(image_tag("0123456789abcdef0123"), "0123456789ab");
        assert_eq!(regex_escape("shop.v17-prod"), "shop\\.v17\\-prod");
    }
}
