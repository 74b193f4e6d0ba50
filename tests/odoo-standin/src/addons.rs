//! Finding the modules on the addons path, and the failure-injection marker files they carry.
//!
//! A module is a folder holding `__manifest__.py` directly under an addons-path folder. Tests
//! make the stand-in misbehave by committing marker files into a module, so the failure travels
//! with the deployed code exactly as a real bug would.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::manifest::{self, Manifest, ManifestError};

/// Where Odoo's own `base` module would live; named in duplicate-module errors.
pub const BASE_PATH: &str = "/usr/lib/python3/dist-packages/odoo/addons/base";

/// Marker: the server exits with status 1 before listening.
pub const FAIL_START: &str = "OCORE_FAIL_START";
/// Marker: any `-i`/`-u` that touches the module fails and changes nothing.
pub const FAIL_UPDATE: &str = "OCORE_FAIL_UPDATE";
/// Marker: `/web/health` answers 500.
pub const FAIL_HEALTH: &str = "OCORE_FAIL_HEALTH";
/// Marker whose content is a number of seconds to wait before listening.
pub const SLOW_START: &str = "OCORE_SLOW_START";

/// Failure injection requested by one module's marker files.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Markers {
    pub fail_start: bool,
    pub fail_update: bool,
    pub fail_health: bool,
    pub slow_start: Option<Duration>,
}

/// One module found on the addons path.
#[derive(Clone, Debug, PartialEq)]
pub struct Module {
    pub name: String,
    pub path: PathBuf,
    pub manifest: Manifest,
    /// The manifest version normalised as Odoo stores it in `latest_version`.
    pub version: String,
    pub markers: Markers,
}

#[derive(Debug)]
pub enum DiscoverError {
    ReadDir {
        path: PathBuf,
        source: std::io::Error,
    },
    ReadManifest {
        path: PathBuf,
        source: std::io::Error,
    },
    Manifest {
        module: String,
        path: PathBuf,
        source: ManifestError,
    },
    Version {
        module: String,
        message: String,
    },
    Duplicate {
        module: String,
        first: PathBuf,
        second: PathBuf,
    },
    SlowStart {
        path: PathBuf,
        content: String,
    },
}

impl fmt::Display for DiscoverError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DiscoverError::ReadDir { path, source } => {
                write!(f, "cannot list addons folder {}: {source}", path.display())
            }
            DiscoverError::ReadManifest { path, source } => {
                write!(f, "cannot read manifest {}: {source}", path.display())
            }
            DiscoverError::Manifest {
                module,
                path,
                source,
            } => write!(
                f,
                "module {module}: invalid manifest {}: {source}",
                path.display()
            ),
            DiscoverError::Version { module, message } => {
                write!(f, "module {module}: invalid manifest: {message}")
            }
            DiscoverError::Duplicate {
                module,
                first,
                second,
            } => write!(
                f,
                "module {module} found twice on the addons path: {} and {}",
                first.display(),
                second.display()
            ),
            DiscoverError::SlowStart { path, content } => write!(
                f,
                "{} must hold a number of seconds, not {content:?}",
                path.display()
            ),
        }
    }
}

impl std::error::Error for DiscoverError {}

/// Every module on the addons path, by technical name.
#[derive(Debug, Default)]
pub struct Addons {
    pub modules: BTreeMap<String, Module>,
    /// Addons-path folders that do not exist; Odoo skips them with a warning.
    pub missing_paths: Vec<PathBuf>,
}

impl Addons {
    pub fn get(&self, name: &str) -> Option<&Module> {
        self.modules.get(name)
    }

    /// Whether any module asks for this kind of failure.
    pub fn any(&self, marker: impl Fn(&Markers) -> bool) -> Option<&Module> {
        self.modules.values().find(|m| marker(&m.markers))
    }

    /// The longest start delay any module asks for.
    pub fn slow_start(&self) -> Option<(Duration, &Module)> {
        self.modules
            .values()
            .filter_map(|m| m.markers.slow_start.map(|d| (d, m)))
            .max_by_key(|(d, _)| *d)
    }
}

/// Scans the addons-path folders in order.
pub fn discover(paths: &[PathBuf]) -> Result<Addons, DiscoverError> {
    let mut addons = Addons::default();
    for folder in paths {
        if !folder.is_dir() {
            addons.missing_paths.push(folder.clone());
            continue;
        }
        let entries = std::fs::read_dir(folder).map_err(|source| DiscoverError::ReadDir {
            path: folder.clone(),
            source,
        })?;
        let mut names = Vec::new();
        for entry in entries {
            let entry = entry.map_err(|source| DiscoverError::ReadDir {
                path: folder.clone(),
                source,
            })?;
            names.push(entry.file_name().to_string_lossy().into_owned());
        }
        names.sort();
        for name in names {
            let path = folder.join(&name);
            let manifest_path = path.join("__manifest__.py");
            if !manifest_path.is_file() {
                continue;
            }
            if name == "base" {
                return Err(DiscoverError::Duplicate {
                    module: name,
                    first: PathBuf::from(BASE_PATH),
                    second: path,
                });
            }
            if let Some(existing) = addons.modules.get(&name) {
                return Err(DiscoverError::Duplicate {
                    module: name,
                    first: existing.path.clone(),
                    second: path,
                });
            }
            let module = load_module(&name, &path, &manifest_path)?;
            addons.modules.insert(name, module);
        }
    }
    Ok(addons)
}

fn load_module(name: &str, path: &Path, manifest_path: &Path) -> Result<Module, DiscoverError> {
    let text =
        std::fs::read_to_string(manifest_path).map_err(|source| DiscoverError::ReadManifest {
            path: manifest_path.to_path_buf(),
            source,
        })?;
    let manifest = manifest::parse(&text).map_err(|source| DiscoverError::Manifest {
        module: name.to_string(),
        path: manifest_path.to_path_buf(),
        source,
    })?;
    // Odoo only refuses a bad version for modules that could be installed.
    let version = match manifest::adapt_version(&manifest.version) {
        Ok(version) => version,
        Err(_) if !manifest.installable => manifest.version.clone(),
        Err(message) => {
            return Err(DiscoverError::Version {
                module: name.to_string(),
                message,
            })
        }
    };
    let slow_path = path.join(SLOW_START);
    let slow_start = if slow_path.is_file() {
        let content = std::fs::read_to_string(&slow_path).unwrap_or_default();
        let seconds = content
            .trim()
            .parse::<f64>()
            .ok()
            .filter(|s| s.is_finite() && *s >= 0.0)
            .ok_or_else(|| DiscoverError::SlowStart {
                path: slow_path.clone(),
                content: content.clone(),
            })?;
        Some(Duration::from_secs_f64(seconds))
    } else {
        None
    };
    Ok(Module {
        name: name.to_string(),
        path: path.to_path_buf(),
        version,
        markers: Markers {
            fail_start: path.join(FAIL_START).exists(),
            fail_update: path.join(FAIL_UPDATE).exists(),
            fail_health: path.join(FAIL_HEALTH).exists(),
            slow_start,
        },
        manifest,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A scratch folder removed when dropped.
    struct Scratch(PathBuf);

    impl Scratch {
        fn new(tag: &str) -> Scratch {
            let dir = std::env::temp_dir().join(format!(
                "odoo-standin-{tag}-{}-{:?}",
                std::process::id(),
                std::thread::current().id()
            ));
            let _ = std::fs::remove_dir_all(&dir);
            std::fs::create_dir_all(&dir).expect("create scratch dir");
            Scratch(dir)
        }

        fn module(&self, folder: &str, name: &str, manifest: &str) -> PathBuf {
            let dir = self.0.join(folder).join(name);
            std::fs::create_dir_all(&dir).expect("create module dir");
            std::fs::write(dir.join("__manifest__.py"), manifest).expect("write manifest");
            dir
        }
    }

    impl Drop for Scratch {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    #[test]
    fn finds_modules_and_markers() {
        let scratch = Scratch::new("discover");
        scratch.module(
            "a",
            "sale_x",
            "{'name': 'Sale X', 'version': '1.2', 'depends': ['base']}",
        );
        let slow = scratch.module("b", "slow", "{'version': '17.0.1.0.0'}");
        std::fs::write(slow.join(SLOW_START), "2.5\n").expect("write marker");
        std::fs::write(slow.join(FAIL_HEALTH), "").expect("write marker");
        std::fs::create_dir_all(scratch.0.join("b/not_a_module")).expect("mkdir");
        let addons = discover(&[
            scratch.0.join("a"),
            scratch.0.join("b"),
            scratch.0.join("missing"),
        ])
        .expect("discovers");
        let names: Vec<&String> = addons.modules.keys().collect();
        assert_eq!(names, ["sale_x", "slow"]);
        assert_eq!(
            addons.get("sale_x").map(|m| m.version.as_str()),
            Some("17.0.1.2")
        );
        assert_eq!(addons.missing_paths, vec![scratch.0.join("missing")]);
        assert_eq!(
            addons.slow_start().map(|(d, m)| (d, m.name.as_str())),
            Some((Duration::from_millis(2500), "slow"))
        );
        assert!(addons.any(|m| m.fail_health).is_some());
        assert!(addons.any(|m| m.fail_start).is_none());
    }

    #[test]
    fn duplicate_names_are_an_error_naming_both_paths() {
        let scratch = Scratch::new("dup");
        let first = scratch.module("a", "same", "{}");
        let second = scratch.module("b", "same", "{}");
        let err = discover(&[scratch.0.join("a"), scratch.0.join("b")]).expect_err("duplicate");
        let message = err.to_string();
        assert!(message.contains(&first.display().to_string()), "{message}");
        assert!(message.contains(&second.display().to_string()), "{message}");
        let scratch = Scratch::new("dupbase");
        scratch.module("a", "base", "{}");
        assert!(discover(&[scratch.0.join("a")]).is_err());
    }

    #[test]
    fn bad_manifests_and_versions_are_errors() {
        let scratch = Scratch::new("bad");
        scratch.module("a", "broken", "{'name': ");
        assert!(matches!(
            discover(&[scratch.0.join("a")]),
            Err(DiscoverError::Manifest { .. })
        ));
        let scratch = Scratch::new("badversion");
        scratch.module("a", "future", "{'version': '18.0.1.0.0'}");
        assert!(matches!(
            discover(&[scratch.0.join("a")]),
            Err(DiscoverError::Version { .. })
        ));
        scratch.module(
            "b",
            "future",
            "{'version': '18.0.1.0.0', 'installable': False}",
        );
        assert!(discover(&[scratch.0.join("b")]).is_ok());
    }
}
