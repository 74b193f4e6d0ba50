//! What a built image says about how to run it: where its modules are (the addons path)
//! and whether Odoo runs workers there (which decides the port websockets are served on).
//!
//! A generated image's addons path is oCore's own. An image built from the repository's
//! Dockerfile says it with the label `org.ocore.addons-path` or in its `odoo.conf`
//! (`ODOO_RC`, else `/etc/odoo/odoo.conf`); with neither, or when a module of the
//! repository is not on that path in the image, the deployment fails before the switch:
//! Odoo would otherwise skip every module as "not installable" and still exit 0.

use std::collections::HashMap;

use crate::addons::Addons;
use crate::config::InstanceConfig;
use crate::docker::{
    Engine, LABEL_ADDONS_PATH, LABEL_INSTANCE, LABEL_MANAGED, LABEL_ODOO_COMMAND, LABEL_ROLE,
};
use crate::traffic::Websocket;

/// Where Odoo images keep their configuration file unless `ODOO_RC` says otherwise.
pub const DEFAULT_ODOO_RC: &str = "/etc/odoo/odoo.conf";

/// The `[options]` keys of an `odoo.conf` the agent reads.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OdooConf {
    pub addons_path: Option<String>,
    pub workers: Option<u32>,
}

/// Reads `odoo.conf` as Python's configparser does for the keys oCore needs: section
/// `[options]`, `key = value` or `key: value`, `;` and `#` comment lines, continuation
/// lines indented; Odoo treats `False`, `None` and empty values as unset.
pub fn parse_odoo_conf(text: &str) -> OdooConf {
    let mut values: HashMap<String, String> = HashMap::new();
    let mut in_options = false;
    let mut last: Option<String> = None;
    for raw in text.lines() {
        let trimmed = raw.trim();
        if trimmed.is_empty() || trimmed.starts_with(';') || trimmed.starts_with('#') {
            continue;
        }
        if raw.starts_with(char::is_whitespace) {
            if let (true, Some(key)) = (in_options, &last) {
                if let Some(v) = values.get_mut(key) {
                    v.push_str(trimmed);
                }
            }
            continue;
        }
        if let Some(section) = trimmed.strip_prefix('[').and_then(|t| t.strip_suffix(']')) {
            in_options = section == "options";
            last = None;
            continue;
        }
        let Some(split) = trimmed.find(['=', ':']) else {
            continue;
        };
        if !in_options {
            continue;
        }
        let key = trimmed[..split].trim().to_lowercase();
        let value = trimmed[split + 1..].trim().to_owned();
        last = Some(key.clone());
        values.insert(key, value);
    }
    let present = |key: &str| {
        values
            .get(key)
            .filter(|v| !matches!(v.as_str(), "" | "False" | "false" | "None"))
            .cloned()
    };
    OdooConf {
        addons_path: present("addons_path"),
        workers: present("workers").and_then(|w| w.parse().ok()),
    }
}

/// The configuration file an image's Odoo reads: `ODOO_RC` (or the older
/// `OPENERP_SERVER`) from the image's environment, else the default.
pub fn odoo_rc(env: &[String]) -> String {
    for var in ["ODOO_RC=", "OPENERP_SERVER="] {
        if let Some(value) = env.iter().find_map(|e| e.strip_prefix(var)) {
            if !value.is_empty() {
                return value.to_owned();
            }
        }
    }
    DEFAULT_ODOO_RC.to_owned()
}

/// How to run an image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Serving {
    /// `--addons-path` to pass (None: the image's `odoo.conf` has it).
    pub addons_path: Option<String>,
    pub workers: u32,
    pub websocket: Websocket,
    /// The command to run Odoo with, from the image's `org.ocore.odoo-command` label
    /// (None: `odoo`).
    pub command: Option<Vec<String>>,
    /// Where the facts came from, for the step's output.
    pub notes: Vec<String>,
}

/// The `odoo.conf` of base images, by image id: a generated image has its base image's
/// (the generated Dockerfile does not touch it), so it is read once per base image rather
/// than with a probe container per deployment (a few hundred milliseconds each).
#[derive(Default)]
pub struct ConfCache {
    by_base: std::sync::Mutex<HashMap<String, (String, Option<OdooConf>)>>,
}

impl ConfCache {
    fn get(&self, id: &str) -> Option<(String, Option<OdooConf>)> {
        self.by_base
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(id)
            .cloned()
    }

    fn put(&self, id: String, rc: String, conf: Option<OdooConf>) {
        let mut map = self
            .by_base
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        // Base images are few; a bound keeps a long-lived agent's map small anyway.
        if map.len() >= 64 {
            map.clear();
        }
        map.insert(id, (rc, conf));
    }
}

/// What is asked of an image.
pub struct Ask<'a> {
    /// The addons path oCore generated the image with, if it did, and the base image it
    /// was generated from (whose `odoo.conf` it has).
    pub generated: Option<(&'a str, &'a str)>,
    /// The repository's modules, which must be on the addons path in the image.
    pub modules: Option<&'a Addons>,
    /// Fail when the image names no addons path (a deployment); a rollback returns to an
    /// image that already served and only follows what it says.
    pub require_path: bool,
}

/// The command of an `org.ocore.odoo-command` label: a JSON array of non-empty strings.
pub fn parse_command(label: &str) -> Result<Vec<String>, String> {
    let bad = || {
        format!(
            "label {LABEL_ODOO_COMMAND} {label:?} must be a JSON array of strings, e.g. [\"/opt/odoo/odoo-bin\"]"
        )
    };
    let parsed: Vec<String> = serde_json::from_str(label).map_err(|_| bad())?;
    if parsed.is_empty() || parsed.iter().any(|p| p.is_empty() || p.contains('\0')) {
        return Err(bad());
    }
    Ok(parsed)
}

/// The never-started container that reads an image's files for `instance`.
pub fn probe_name(instance: &str) -> String {
    format!("ocore-{instance}-probe")
}

/// Reads the image's labels and `odoo.conf` and decides how to run it.
pub async fn inspect(
    engine: &Engine,
    cache: &ConfCache,
    inst: &InstanceConfig,
    image: &str,
    ask: &Ask<'_>,
) -> Result<Serving, String> {
    let (labels, env) = engine
        .image_config(image)
        .await
        .map_err(|e| e.to_string())?;
    let command = labels
        .get(LABEL_ODOO_COMMAND)
        .map(|l| parse_command(l))
        .transpose()?;
    let rc = odoo_rc(&env);
    let base_id = match ask.generated {
        Some((_, base)) => Some(engine.image_id(base).await.map_err(|e| e.to_string())?),
        None => None,
    };
    if let Some((cached_rc, conf)) = base_id.as_deref().and_then(|id| cache.get(id)) {
        if cached_rc == rc {
            return decide(inst, &rc, &labels, conf.as_ref(), ask, command, None);
        }
    }
    let probe = probe_name(&inst.id);
    let probe_labels = HashMap::from([
        (LABEL_MANAGED.to_owned(), "1".to_owned()),
        (LABEL_INSTANCE.to_owned(), inst.id.clone()),
        (LABEL_ROLE.to_owned(), "probe".to_owned()),
    ]);
    engine
        .create_probe(&probe, image, &probe_labels)
        .await
        .map_err(|e| e.to_string())?;
    let result = async {
        let conf = engine
            .read_file(&probe, &rc, 1024 * 1024)
            .await
            .map_err(|e| e.to_string())?
            .map(|bytes| parse_odoo_conf(&String::from_utf8_lossy(&bytes)));
        if let Some(id) = &base_id {
            cache.put(id.clone(), rc.clone(), conf.clone());
        }
        let mut present = Vec::new();
        if let (Some(modules), None) = (ask.modules, ask.generated) {
            if let Some(path) = addons_path_of(&labels, conf.as_ref()) {
                let dirs: Vec<&str> = path
                    .split(',')
                    .map(str::trim)
                    .filter(|d| !d.is_empty())
                    .collect();
                for name in modules.modules.keys() {
                    for dir in &dirs {
                        let manifest =
                            format!("{}/{name}/__manifest__.py", dir.trim_end_matches('/'));
                        if engine
                            .path_exists(&probe, &manifest)
                            .await
                            .map_err(|e| e.to_string())?
                        {
                            present.push(name.clone());
                            break;
                        }
                    }
                }
            }
        }
        Ok(decide(
            inst,
            &rc,
            &labels,
            conf.as_ref(),
            ask,
            command,
            Some(present.as_slice()),
        ))
    }
    .await;
    let _ = engine.remove(&probe).await;
    result.and_then(|r| r)
}

/// The addons path an image names: its label, else its `odoo.conf`.
fn addons_path_of(labels: &HashMap<String, String>, conf: Option<&OdooConf>) -> Option<String> {
    labels
        .get(LABEL_ADDONS_PATH)
        .filter(|v| !v.trim().is_empty())
        .cloned()
        .or_else(|| conf.and_then(|c| c.addons_path.clone()))
}

/// How to run an image, from its labels and `odoo.conf`; `present` lists the repository
/// modules found on its addons path (None: not looked for).
fn decide(
    inst: &InstanceConfig,
    rc: &str,
    labels: &HashMap<String, String>,
    conf: Option<&OdooConf>,
    ask: &Ask<'_>,
    command: Option<Vec<String>>,
    present: Option<&[String]>,
) -> Result<Serving, String> {
    let mut notes = Vec::new();
    let label = labels
        .get(LABEL_ADDONS_PATH)
        .filter(|v| !v.trim().is_empty())
        .cloned();
    let (pass, path) = match (
        ask.generated,
        &label,
        conf.and_then(|c| c.addons_path.clone()),
    ) {
        (Some((generated, _)), _, _) => (Some(generated.to_owned()), Some(generated.to_owned())),
        (None, Some(label), _) => {
            notes.push(format!(
                "addons path from the image's label {LABEL_ADDONS_PATH}: {label}"
            ));
            (Some(label.clone()), Some(label.clone()))
        }
        (None, None, Some(conf_path)) => {
            notes.push(format!("addons path from the image's {rc}: {conf_path}"));
            (None, Some(conf_path))
        }
        (None, None, None) => (None, None),
    };
    if path.is_none() && ask.require_path {
        return Err(format!(
            "the image built from the repository's Dockerfile does not say where its modules are: \
             add `LABEL {LABEL_ADDONS_PATH}=\"/mnt/extra-addons\"` (every folder holding modules, comma-separated) \
             to the Dockerfile, or set addons_path in its {rc}"
        ));
    }
    if let (Some(modules), Some(path), None, Some(present)) =
        (ask.modules, &path, ask.generated, present)
    {
        let missing: Vec<&String> = modules
            .modules
            .keys()
            .filter(|m| !present.contains(m))
            .collect();
        if !missing.is_empty() {
            return Err(format!(
                "modules {} of the repository are not on the image's addons path ({path}): \
                 copy them there in the Dockerfile, or name their folders in `LABEL {LABEL_ADDONS_PATH}=...`",
                missing
                    .iter()
                    .map(|m| m.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
        }
    }
    let (workers, source) = match (inst.workers, conf.and_then(|c| c.workers)) {
        (Some(w), _) => (w, "the instance's workers setting".to_owned()),
        (None, Some(w)) => (w, format!("the image's {rc}")),
        (None, None) => (0, "Odoo's default".to_owned()),
    };
    let websocket = Websocket::for_workers(workers);
    notes.push(format!(
        "workers = {workers} ({source}): websockets on the {} port",
        match websocket {
            Websocket::HttpPort => "HTTP",
            Websocket::GeventPort => "gevent",
        }
    ));
    if let Some(command) = &command {
        notes.push(format!(
            "Odoo runs as {} (label {LABEL_ODOO_COMMAND})",
            command.join(" ")
        ));
    }
    Ok(Serving {
        addons_path: pass,
        workers,
        websocket,
        command,
        notes,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_official_images_conf() {
        let conf = parse_odoo_conf(
            "[options]\naddons_path = /mnt/extra-addons\ndata_dir = /var/lib/odoo\n; admin_passwd = admin\n; workers = 4\n",
        );
        assert_eq!(
            conf,
            OdooConf {
                addons_path: Some("/mnt/extra-addons".into()),
                workers: None
            }
        );
    }

    #[test]
    fn reads_keys_as_configparser_does() {
        let conf = parse_odoo_conf(
            "# c\n[other]\nworkers = 9\n[options]\nADDONS_PATH: /a,\n    /b\nworkers = 4\n",
        );
        assert_eq!(conf.addons_path.as_deref(), Some("/a,/b"));
        assert_eq!(conf.workers, Some(4));
        assert_eq!(
            parse_odoo_conf("[options]\nworkers = False\n").workers,
            None
        );
        assert_eq!(parse_odoo_conf("workers = 2\n").workers, None);
    }

    #[test]
    fn the_odoo_command_label_is_a_json_array() {
        assert_eq!(
            parse_command(r#"["/bin/sh", "/x/entrypoint.sh"]"#),
            Ok(vec!["/bin/sh".to_owned(), "/x/entrypoint.sh".to_owned()])
        );
        assert!(parse_command("/opt/odoo/odoo-bin").is_err());
        assert!(parse_command("[]").is_err());
        assert!(parse_command(r#"[""]"#).is_err());
    }

    #[test]
    fn the_config_file_follows_odoo_rc() {
        assert_eq!(odoo_rc(&[]), DEFAULT_ODOO_RC);
        assert_eq!(
            odoo_rc(&["PATH=/bin".into(), "ODOO_RC=/srv/odoo.conf".into()]),
            "/srv/odoo.conf"
        );
        assert_eq!(
            odoo_rc(&["OPENERP_SERVER=/etc/openerp.conf".into()]),
            "/etc/openerp.conf"
        );
    }
}
