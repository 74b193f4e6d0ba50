//! The colour containers of an instance: how each is named, labelled and started, and the
//! one-off container that runs `odoo -u`.

use std::collections::HashMap;
use std::path::PathBuf;

use crate::config::InstanceConfig;
use crate::docker::{
    ContainerSpec, LABEL_COLOR, LABEL_COMMIT, LABEL_DEPLOYMENT, LABEL_INSTANCE, LABEL_MANAGED,
    LABEL_ROLE,
};
use crate::traffic::{Color, Websocket};

use super::Pipeline;

/// Where the generated Dockerfile puts the checkout inside the image.
pub const ADDONS_ROOT: &str = "/mnt/extra-addons";

/// The program oCore runs in Odoo images (on `PATH` in the official image, as
/// `/usr/bin/odoo`).
pub const ODOO_COMMAND: &str = "odoo";

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

/// Where the PostgreSQL password file is mounted in Odoo containers.
pub const PASSFILE_IN_CONTAINER: &str = "/run/ocore/pgpass";

/// What the running image needs to know beyond its configuration file.
#[derive(Debug, Clone)]
pub struct RunSettings {
    pub image: String,
    pub commit_sha: String,
    pub deployment_id: String,
    /// `--addons-path` when oCore knows it (generated images, or the image's
    /// `org.ocore.addons-path` label); `None` leaves it to the image's `odoo.conf`.
    pub addons_path: Option<String>,
    /// Which port serves websockets, from the image's or the instance's `workers`.
    pub websocket: Websocket,
    /// The command Odoo runs as (the image's `org.ocore.odoo-command`), else `odoo`.
    pub command: Option<Vec<String>>,
}

/// How a database oCore creates is initialised.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InitSettings {
    pub demo: bool,
    pub language: String,
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

    /// The environment of an Odoo container. libpq reads the password from the mounted
    /// file: it is on no command line (the official entrypoint would put it there) and
    /// not in the container's configuration either.
    fn env(&self, run: &RunSettings) -> Vec<String> {
        let mut env = vec![format!("OCORE_COMMIT={}", run.commit_sha)];
        if self.pg.password().is_some() {
            env.push(format!("PGPASSFILE={PASSFILE_IN_CONTAINER}"));
        }
        env
    }

    /// Odoo's database options (no password: see [`Pipeline::env`]).
    fn db_args(&self) -> Vec<String> {
        vec![
            format!("--db_host={}", self.pg.host),
            format!("--db_port={}", self.pg.port),
            format!("--db_user={}", self.pg.user),
        ]
    }

    /// The password file of an instance's containers on the host.
    pub fn passfile(&self, inst: &InstanceConfig) -> PathBuf {
        self.config
            .state_dir
            .join("pgpass")
            .join(format!("{}.pgpass", inst.id))
    }

    fn binds(&self, inst: &InstanceConfig) -> Vec<String> {
        let mut binds = vec![format!("{}:/var/lib/odoo", inst.data_dir.display())];
        if self.pg.password().is_some() {
            binds.push(format!(
                "{}:{PASSFILE_IN_CONTAINER}:ro",
                self.passfile(inst).display()
            ));
        }
        binds
    }

    fn spec(
        &self,
        inst: &InstanceConfig,
        run: &RunSettings,
        name: String,
        role: &str,
        mut args: Vec<String>,
    ) -> ContainerSpec {
        args.extend(self.db_args());
        if let Some(path) = &run.addons_path {
            args.push(format!("--addons-path={path}"));
        }
        ContainerSpec {
            name,
            image: run.image.clone(),
            // `odoo` itself, not the image's entrypoint.
            entrypoint: Some(
                run.command
                    .clone()
                    .unwrap_or_else(|| vec![ODOO_COMMAND.to_owned()]),
            ),
            cmd: args,
            env: self.env(run),
            binds: self.binds(inst),
            labels: self.labels(inst, run, role),
            restart: false,
        }
    }

    /// The serving container of `color`.
    pub fn colour_spec(
        &self,
        inst: &InstanceConfig,
        color: Color,
        run: &RunSettings,
    ) -> ContainerSpec {
        let (http, gevent) = color.ports(inst);
        let mut args = vec![
            format!("--http-port={http}"),
            format!("--gevent-port={gevent}"),
            format!("--http-interface={}", inst.http_interface),
            format!("--database={}", inst.database),
            format!("--db-filter=^{}$", regex_escape(&inst.database)),
            "--proxy-mode".to_owned(),
        ];
        if let Some(workers) = inst.workers {
            args.push(format!("--workers={workers}"));
        }
        let mut spec = self.spec(inst, run, container_name(&inst.id, color), "serve", args);
        spec.labels
            .insert(LABEL_COLOR.to_owned(), color.as_str().to_owned());
        spec.restart = true;
        spec
    }

    /// The one-off container running `odoo -u modules --stop-after-init --no-http`.
    pub fn update_spec(
        &self,
        inst: &InstanceConfig,
        modules: &[String],
        run: &RunSettings,
    ) -> ContainerSpec {
        let args = vec![
            format!("--database={}", inst.database),
            format!("--update={}", modules.join(",")),
            "--stop-after-init".to_owned(),
            "--no-http".to_owned(),
        ];
        self.spec(inst, run, update_container_name(&inst.id), "update", args)
    }

    /// The one-off container creating the database:
    /// `odoo -d DB -i base --without-demo=all --stop-after-init --no-http`, with the
    /// instance's language loaded.
    pub fn init_spec(
        &self,
        inst: &InstanceConfig,
        init: &InitSettings,
        run: &RunSettings,
    ) -> ContainerSpec {
        let mut args = vec![
            format!("--database={}", inst.database),
            "--init=base".to_owned(),
        ];
        if !init.demo {
            args.push("--without-demo=all".to_owned());
        }
        if init.language != "en_US" {
            args.push(format!("--load-language={}", init.language));
        }
        args.push("--stop-after-init".to_owned());
        args.push("--no-http".to_owned());
        self.spec(inst, run, update_container_name(&inst.id), "init", args)
    }

    /// Writes the instance's PostgreSQL password file (libpq's format, mode 0600, owned by
    /// the container's odoo user), when the agent has a password.
    pub fn write_passfile(&self, inst: &InstanceConfig) -> Result<(), String> {
        let Some(password) = self.pg.password() else {
            return Ok(());
        };
        let path = self.passfile(inst);
        let dir = path.parent().unwrap_or(&self.config.state_dir);
        std::fs::create_dir_all(dir)
            .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
        let escape = |s: &str| s.replace('\\', "\\\\").replace(':', "\\:");
        let text = format!("*:*:*:{}:{}\n", escape(&self.pg.user), escape(password));
        ocore_proto::tls::write_file_atomic(&path, text.as_bytes(), 0o600)
            .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
        std::os::unix::fs::chown(&path, Some(inst.odoo_uid), Some(inst.odoo_gid)).map_err(|e| {
            format!(
                "cannot give {} to uid {}: {e}",
                path.display(),
                inst.odoo_uid
            )
        })
    }

    /// Makes sure the data directory exists and belongs to the container's odoo user, and
    /// that the password file is in place.
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
        self.write_passfile(inst)
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
    fn passfile_fields_are_escaped_as_libpq_reads_them() {
        let escape = |s: &str| s.replace('\\', "\\\\").replace(':', "\\:");
        assert_eq!(escape("a:b\\c"), "a\\:b\\\\c");
    }

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
