//! Deciding what `-i` and `-u` do: which modules to install or update, in dependency order.
//!
//! The rules follow Odoo 17's `button_install` / `button_upgrade`: installing pulls in the
//! dependency closure and any auto-install module whose triggers are all there; updating a module
//! also updates every installed module that depends on it, transitively; updating `base` updates
//! everything; new dependencies of updated modules get installed. Pure logic, no database.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use crate::addons::Addons;
use crate::manifest::AutoInstall;

/// Odoo's own module, always present and never on the addons path.
pub const BASE: &str = "base";
/// The `latest_version` Odoo 17 records for `base`.
pub const BASE_VERSION: &str = "17.0.1.3";

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    Install,
    Update,
}

impl Action {
    /// The word recorded in `ocore_test_update_log.action`.
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Install => "install",
            Action::Update => "update",
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Step {
    pub module: String,
    pub action: Action,
    /// The normalised manifest version the module ends up with.
    pub version: String,
}

#[derive(Debug, Default, PartialEq, Eq)]
pub struct Plan {
    pub steps: Vec<Step>,
    /// Things Odoo would log as warnings and carry on.
    pub warnings: Vec<String>,
    /// Installed modules marked for upgrade that are not on the addons path: Odoo logs
    /// "not installable, skipped" for each and leaves them `to upgrade`.
    pub skipped: Vec<String>,
}

#[derive(Debug, PartialEq, Eq)]
pub enum PlanError {
    NotFound {
        module: String,
        option: &'static str,
    },
    UnmetDependency {
        module: String,
        dependency: String,
    },
    Cycle {
        modules: Vec<String>,
    },
}

impl fmt::Display for PlanError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PlanError::NotFound { module, option } => write!(
                f,
                "module {module} given to {option} was not found on the addons path"
            ),
            PlanError::UnmetDependency { module, dependency } => write!(
                f,
                "You try to install module '{module}' that depends on module '{dependency}'.\nBut the latter module is not available in your system."
            ),
            PlanError::Cycle { modules } => write!(
                f,
                "Some modules have inconsistent dependency cycles: {}",
                modules.join(", ")
            ),
        }
    }
}

impl std::error::Error for PlanError {}

/// What the planner needs to know about one available module.
struct Node<'a> {
    depends: &'a [String],
    version: &'a str,
    installable: bool,
    auto_install: &'a AutoInstall,
}

const NO_DEPENDS: &[String] = &[];
const NO_AUTO: AutoInstall = AutoInstall::No;

fn nodes(addons: &Addons) -> BTreeMap<&str, Node<'_>> {
    let mut nodes: BTreeMap<&str, Node<'_>> = addons
        .modules
        .values()
        .map(|m| {
            (
                m.name.as_str(),
                Node {
                    depends: &m.manifest.depends,
                    version: &m.version,
                    installable: m.manifest.installable,
                    auto_install: &m.manifest.auto_install,
                },
            )
        })
        .collect();
    nodes.insert(
        BASE,
        Node {
            depends: NO_DEPENDS,
            version: BASE_VERSION,
            installable: true,
            auto_install: &NO_AUTO,
        },
    );
    nodes
}

/// Plans one run of `-i init` and `-u update` against the modules installed now.
///
/// `installed` holds the modules in state `installed`.
pub fn plan(
    addons: &Addons,
    installed: &BTreeSet<String>,
    init: &[String],
    update: &[String],
) -> Result<Plan, PlanError> {
    let nodes = nodes(addons);
    let mut warnings = Vec::new();
    let mut to_install = BTreeSet::new();

    let init_names: Vec<String> = if init.iter().any(|m| m == "all") {
        nodes
            .iter()
            .filter(|(_, n)| n.installable)
            .map(|(name, _)| (*name).to_string())
            .collect()
    } else {
        init.to_vec()
    };
    // Odoo's `_check_module_names`: names it does not know are ignored with a warning.
    let mut invalid: Vec<String> = Vec::new();
    for name in &init_names {
        let Some(node) = nodes.get(name.as_str()) else {
            if !installed.contains(name) {
                invalid.push(name.clone());
            }
            continue;
        };
        if !node.installable {
            warnings.push(format!("module {name}: not installable, skipped"));
            continue;
        }
        add_with_dependencies(&nodes, installed, name, &mut to_install)?;
    }

    let mut to_update = BTreeSet::new();
    let update_all = update.iter().any(|m| m == "all" || m == BASE);
    for name in update.iter().filter(|m| *m != "all") {
        if !nodes.contains_key(name.as_str()) && !installed.contains(name) {
            invalid.push(name.clone());
            continue;
        }
        if !installed.contains(name) {
            warnings.push(format!("module {name} is not installed, -u ignores it"));
            continue;
        }
        to_update.insert(name.clone());
    }
    if update_all {
        to_update.extend(installed.iter().cloned());
    }
    // Installed dependants of updated modules, transitively.
    loop {
        let before = to_update.len();
        for name in installed {
            if to_update.contains(name) {
                continue;
            }
            if let Some(node) = nodes.get(name.as_str()) {
                if node.depends.iter().any(|d| to_update.contains(d)) {
                    to_update.insert(name.clone());
                }
            }
        }
        if to_update.len() == before {
            break;
        }
    }
    if !invalid.is_empty() {
        warnings.push(format!(
            "invalid module names, ignored: {}",
            invalid.join(", ")
        ));
    }
    // Installed modules that are not on the addons path are marked for upgrade, then
    // skipped by the loader: they stay `to upgrade`.
    // So are installed modules whose manifest now says `installable: False`.
    let skipped: Vec<String> = to_update
        .iter()
        .filter(|m| nodes.get(m.as_str()).is_none_or(|n| !n.installable))
        .cloned()
        .collect();
    for name in &skipped {
        to_update.remove(name);
    }
    // An updated module may have gained dependencies: Odoo installs them.
    for name in to_update.clone() {
        if let Some(node) = nodes.get(name.as_str()) {
            for dependency in node.depends {
                add_with_dependencies(&nodes, installed, dependency, &mut to_install).map_err(
                    |e| match e {
                        PlanError::NotFound { module, .. } => PlanError::UnmetDependency {
                            module: name.clone(),
                            dependency: module,
                        },
                        other => other,
                    },
                )?;
            }
        }
    }

    add_auto_installs(&nodes, installed, &mut to_install, &mut warnings)?;

    let order = topological_order(&nodes)?;
    let steps = order
        .into_iter()
        .filter_map(|name| {
            let action = if to_install.contains(name) {
                Action::Install
            } else if to_update.contains(name) {
                Action::Update
            } else {
                return None;
            };
            let version = nodes.get(name).map_or("", |n| n.version).to_string();
            Some(Step {
                module: name.to_string(),
                action,
                version,
            })
        })
        .collect();
    Ok(Plan {
        steps,
        warnings,
        skipped,
    })
}

/// Adds `name` and its uninstalled dependencies to `to_install`.
fn add_with_dependencies(
    nodes: &BTreeMap<&str, Node<'_>>,
    installed: &BTreeSet<String>,
    name: &str,
    to_install: &mut BTreeSet<String>,
) -> Result<(), PlanError> {
    let mut stack = vec![name.to_string()];
    while let Some(current) = stack.pop() {
        if installed.contains(&current) || to_install.contains(&current) {
            continue;
        }
        let node = nodes
            .get(current.as_str())
            .filter(|n| n.installable)
            .ok_or_else(|| PlanError::NotFound {
                module: current.clone(),
                option: "-i",
            })?;
        to_install.insert(current.clone());
        for dependency in node.depends {
            if !nodes
                .get(dependency.as_str())
                .is_some_and(|n| n.installable)
            {
                return Err(PlanError::UnmetDependency {
                    module: current.clone(),
                    dependency: dependency.clone(),
                });
            }
            stack.push(dependency.clone());
        }
    }
    Ok(())
}

/// Adds auto-install modules whose triggers are all installed or being installed, as long as
/// at least one trigger is new in this run (that is when Odoo checks them).
fn add_auto_installs(
    nodes: &BTreeMap<&str, Node<'_>>,
    installed: &BTreeSet<String>,
    to_install: &mut BTreeSet<String>,
    warnings: &mut Vec<String>,
) -> Result<(), PlanError> {
    if to_install.is_empty() {
        return Ok(());
    }
    loop {
        let mut added = false;
        for (name, node) in nodes {
            if !node.installable
                || installed.contains(*name)
                || to_install.contains(*name)
                || *node.auto_install == AutoInstall::No
            {
                continue;
            }
            let triggers: &[String] = match node.auto_install {
                AutoInstall::When(list) => list,
                _ => node.depends,
            };
            let present = |m: &String| installed.contains(m) || to_install.contains(m);
            let triggered = if triggers.is_empty() {
                to_install.contains(BASE)
            } else {
                triggers.iter().all(present) && triggers.iter().any(|m| to_install.contains(m))
            };
            if !triggered {
                continue;
            }
            let mut candidate = to_install.clone();
            match add_with_dependencies(nodes, installed, name, &mut candidate) {
                Ok(()) => {
                    *to_install = candidate;
                    added = true;
                }
                Err(e) => warnings.push(format!("module {name}: not auto-installed: {e}")),
            }
        }
        if !added {
            return Ok(());
        }
    }
}

/// Orders every known module after its dependencies the way Odoo's module graph does: by depth
/// (`base` first, then what depends only on it, ...), alphabetically within a depth.
fn topological_order<'a>(nodes: &BTreeMap<&'a str, Node<'_>>) -> Result<Vec<&'a str>, PlanError> {
    let mut depth: BTreeMap<&'a str, usize> = BTreeMap::new();
    while depth.len() < nodes.len() {
        let before = depth.len();
        for (name, node) in nodes {
            if depth.contains_key(name) {
                continue;
            }
            let known: Vec<&str> = node
                .depends
                .iter()
                .map(String::as_str)
                .filter(|d| nodes.contains_key(d))
                .collect();
            if let Some(levels) = known
                .iter()
                .map(|d| depth.get(d).copied())
                .collect::<Option<Vec<usize>>>()
            {
                depth.insert(name, levels.into_iter().max().map_or(0, |l| l + 1));
            }
        }
        if depth.len() == before {
            return Err(PlanError::Cycle {
                modules: nodes
                    .keys()
                    .filter(|m| !depth.contains_key(*m))
                    .map(|m| (*m).to_string())
                    .collect(),
            });
        }
    }
    let mut order: Vec<&'a str> = depth.keys().copied().collect();
    order.sort_by_key(|name| (depth.get(name).copied().unwrap_or(0), *name));
    Ok(order)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::addons::{Markers, Module};
    use crate::manifest::Manifest;
    use std::path::PathBuf;

    fn module(name: &str, depends: &[&str]) -> Module {
        Module {
            name: name.to_string(),
            path: PathBuf::from(format!("/mnt/extra-addons/{name}")),
            manifest: Manifest {
                name: name.to_string(),
                version: "1.0".to_string(),
                depends: depends.iter().map(|d| (*d).to_string()).collect(),
                installable: true,
                auto_install: AutoInstall::No,
            },
            version: "17.0.1.0".to_string(),
            markers: Markers::default(),
        }
    }

    fn addons(modules: Vec<Module>) -> Addons {
        Addons {
            modules: modules.into_iter().map(|m| (m.name.clone(), m)).collect(),
            missing_paths: Vec::new(),
        }
    }

    fn set(names: &[&str]) -> BTreeSet<String> {
        names.iter().map(|n| (*n).to_string()).collect()
    }

    fn list(names: &[&str]) -> Vec<String> {
        names.iter().map(|n| (*n).to_string()).collect()
    }

    fn steps(plan: &Plan) -> Vec<(String, Action)> {
        plan.steps
            .iter()
            .map(|s| (s.module.clone(), s.action))
            .collect()
    }

    fn named(pairs: &[(&str, Action)]) -> Vec<(String, Action)> {
        pairs.iter().map(|(m, a)| ((*m).to_string(), *a)).collect()
    }

    /// base <- core <- {sale_ext, stock_ext}; sale_ext <- report; lonely has no dependants.
    fn tree() -> Addons {
        addons(vec![
            module("core", &["base"]),
            module("sale_ext", &["core"]),
            module("stock_ext", &["core"]),
            module("report", &["sale_ext"]),
            module("lonely", &["base"]),
        ])
    }

    #[test]
    fn install_pulls_in_dependencies_in_order() {
        let plan = plan(&tree(), &set(&["base"]), &list(&["report"]), &[]).expect("plans");
        assert_eq!(
            steps(&plan),
            named(&[
                ("core", Action::Install),
                ("sale_ext", Action::Install),
                ("report", Action::Install)
            ])
        );
        assert_eq!(plan.steps[0].version, "17.0.1.0");
    }

    #[test]
    fn install_skips_what_is_installed() {
        let installed = set(&["base", "core", "sale_ext"]);
        let plan = plan(&tree(), &installed, &list(&["sale_ext", "report"]), &[]).expect("plans");
        assert_eq!(steps(&plan), named(&[("report", Action::Install)]));
    }

    #[test]
    fn update_reaches_installed_dependants_transitively() {
        let installed = set(&["base", "core", "sale_ext", "report", "lonely"]);
        let plan = plan(&tree(), &installed, &[], &list(&["core"])).expect("plans");
        assert_eq!(
            steps(&plan),
            named(&[
                ("core", Action::Update),
                ("sale_ext", Action::Update),
                ("report", Action::Update)
            ])
        );
        // stock_ext depends on core but is not installed, so it is left alone.
    }

    #[test]
    fn update_of_a_leaf_touches_only_it() {
        let installed = set(&["base", "core", "sale_ext", "report", "lonely"]);
        let plan = plan(&tree(), &installed, &[], &list(&["lonely"])).expect("plans");
        assert_eq!(steps(&plan), named(&[("lonely", Action::Update)]));
    }

    #[test]
    fn update_all_and_update_base_touch_every_installed_module() {
        let installed = set(&["base", "core", "lonely"]);
        for update in [list(&["all"]), list(&["base"])] {
            let plan = plan(&tree(), &installed, &[], &update).expect("plans");
            assert_eq!(
                steps(&plan),
                named(&[
                    ("base", Action::Update),
                    ("core", Action::Update),
                    ("lonely", Action::Update)
                ])
            );
        }
    }

    #[test]
    fn update_ignores_uninstalled_modules_with_a_warning() {
        let plan = plan(&tree(), &set(&["base"]), &[], &list(&["lonely"])).expect("plans");
        assert!(plan.steps.is_empty());
        assert_eq!(plan.warnings.len(), 1);
    }

    #[test]
    fn unknown_names_are_ignored_with_a_warning_and_missing_modules_skipped() {
        for (init, update) in [(list(&["nope"]), vec![]), (vec![], list(&["nope"]))] {
            let plan = plan(&tree(), &set(&["base"]), &init, &update).expect("plans");
            assert!(plan.steps.is_empty());
            assert_eq!(plan.warnings, ["invalid module names, ignored: nope"]);
        }
        // Installed, but not on the addons path: marked, then skipped.
        let installed = set(&["base", "gone", "core"]);
        let skipped =
            super::plan(&tree(), &installed, &[], &list(&["gone", "core"])).expect("plans");
        assert_eq!(skipped.skipped, ["gone"]);
        assert_eq!(steps(&skipped), named(&[("core", Action::Update)]));
        let broken = addons(vec![module("needs", &["missing_dep"])]);
        assert_eq!(
            plan(&broken, &set(&["base"]), &list(&["needs"]), &[]),
            Err(PlanError::UnmetDependency {
                module: "needs".into(),
                dependency: "missing_dep".into()
            })
        );
    }

    #[test]
    fn updated_modules_install_new_dependencies() {
        let installed = set(&["base", "sale_ext"]);
        let mut addons = tree();
        if let Some(m) = addons.modules.get_mut("sale_ext") {
            m.manifest.depends = list(&["core", "lonely"]);
        }
        let plan = plan(&addons, &installed, &[], &list(&["sale_ext"])).expect("plans");
        assert_eq!(
            steps(&plan),
            named(&[
                ("core", Action::Install),
                ("lonely", Action::Install),
                ("sale_ext", Action::Update)
            ])
        );
    }

    #[test]
    fn auto_install_follows_its_triggers() {
        let mut glue = module("glue", &["sale_ext", "stock_ext"]);
        glue.manifest.auto_install = AutoInstall::All;
        let mut modules = tree().modules.into_values().collect::<Vec<_>>();
        modules.push(glue);
        let addons = addons(modules);
        let plan = plan(
            &addons,
            &set(&["base", "core", "sale_ext"]),
            &list(&["stock_ext"]),
            &[],
        )
        .expect("plans");
        assert_eq!(
            steps(&plan),
            named(&[("stock_ext", Action::Install), ("glue", Action::Install)])
        );
        let plan = super::plan(&addons, &set(&["base", "core"]), &list(&["stock_ext"]), &[])
            .expect("plans");
        assert_eq!(steps(&plan), named(&[("stock_ext", Action::Install)]));
    }

    #[test]
    fn orders_deterministically_and_detects_cycles() {
        let addons = addons(vec![module("b", &["a"]), module("a", &["b"])]);
        assert!(matches!(
            plan(&addons, &set(&["base"]), &list(&["a"]), &[]),
            Err(PlanError::Cycle { .. })
        ));
        let addons = addons_with_siblings();
        let plan = plan(
            &addons,
            &set(&["base"]),
            &list(&["zeta", "alpha", "mid"]),
            &[],
        )
        .expect("plans");
        let order: Vec<&str> = plan.steps.iter().map(|s| s.module.as_str()).collect();
        assert_eq!(order, ["alpha", "mid", "zeta"]);
    }

    #[test]
    fn orders_by_depth_like_odoo() {
        let installed = set(&["base", "core", "sale_ext", "stock_ext", "report", "lonely"]);
        let plan = plan(&tree(), &installed, &[], &list(&["base"])).expect("plans");
        let order: Vec<&str> = plan.steps.iter().map(|s| s.module.as_str()).collect();
        assert_eq!(
            order,
            ["base", "core", "lonely", "sale_ext", "stock_ext", "report"]
        );
    }

    fn addons_with_siblings() -> Addons {
        addons(vec![
            module("zeta", &["mid"]),
            module("alpha", &[]),
            module("mid", &["alpha"]),
        ])
    }
}
