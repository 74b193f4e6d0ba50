//! Which modules a deployment updates, and why: a pure decision from what the database
//! says (installed modules, stored checksums), the checksums of the new checkout, those of
//! the commit serving now, and the new checkout's manifests.
//!
//! A module installed without a stored checksum (installed through Odoo's Apps menu, which
//! writes none) was installed from the code serving at the time, so the serving commit's
//! checksum stands in for it and is recorded.

use std::collections::{BTreeMap, BTreeSet, HashMap};

/// Why a module is in the plan.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reason {
    /// Its stored checksum differs from the new code's.
    ChecksumChanged,
    /// Installed with no stored checksum, and no serving commit to vouch for it.
    NoStoredChecksum,
    /// Installed with no stored checksum, and its code changed since the serving commit.
    ChangedSinceServing,
    /// Not installed; an updated module now depends on it, so `-u` installs it.
    NewDependency { of: String },
}

impl Reason {
    /// The wire name of the reason.
    pub fn code(&self) -> &'static str {
        match self {
            Reason::ChecksumChanged => "checksum_changed",
            Reason::NoStoredChecksum => "no_stored_checksum",
            Reason::ChangedSinceServing => "changed_since_serving_commit",
            Reason::NewDependency { .. } => "new_dependency",
        }
    }

    /// A sentence for people.
    pub fn describe(&self) -> String {
        match self {
            Reason::ChecksumChanged => {
                "its code changed since its checksum was recorded".to_owned()
            }
            Reason::NoStoredChecksum => {
                "installed without a recorded checksum and no serving commit to compare with"
                    .to_owned()
            }
            Reason::ChangedSinceServing => {
                "installed without a recorded checksum; its code changed since the serving commit"
                    .to_owned()
            }
            Reason::NewDependency { of } => format!("new dependency of {of}, installed by odoo -u"),
        }
    }
}

/// One module of the plan.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub module: String,
    pub reason: Reason,
}

/// The decision.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ModulePlan {
    /// Modules passed to `odoo -u`, sorted.
    pub update: Vec<String>,
    /// Every module of the plan with its reason: those of `update`, then new dependencies.
    pub entries: Vec<Entry>,
    /// Checksums to record for installed modules that had none (from the serving commit).
    pub adopt: BTreeMap<String, String>,
}

impl ModulePlan {
    /// Modules `-u` will install because an updated module depends on them.
    pub fn new_dependencies(&self) -> Vec<String> {
        self.entries
            .iter()
            .filter(|e| matches!(e.reason, Reason::NewDependency { .. }))
            .map(|e| e.module.clone())
            .collect()
    }
}

/// What the decision reads.
pub struct Inputs<'a> {
    /// Installed modules (also those `to upgrade`).
    pub installed: &'a BTreeSet<String>,
    /// Checksums stored in the database.
    pub stored: &'a HashMap<String, String>,
    /// Checksums of the new checkout's modules.
    pub current: &'a BTreeMap<String, String>,
    /// Checksums of the serving commit's modules, when a commit serves.
    pub serving: Option<&'a BTreeMap<String, String>>,
    /// Dependencies of the new checkout's modules, from their manifests.
    pub depends: &'a BTreeMap<String, Vec<String>>,
}

pub fn decide(inputs: &Inputs<'_>) -> ModulePlan {
    let mut plan = ModulePlan::default();
    for (name, sum) in inputs.current {
        if !inputs.installed.contains(name) {
            continue;
        }
        let reason = match inputs.stored.get(name) {
            Some(stored) if stored == sum => None,
            Some(_) => Some(Reason::ChecksumChanged),
            None => match inputs.serving.and_then(|s| s.get(name)) {
                Some(then) => {
                    plan.adopt.insert(name.clone(), then.clone());
                    (then != sum).then_some(Reason::ChangedSinceServing)
                }
                None => Some(Reason::NoStoredChecksum),
            },
        };
        if let Some(reason) = reason {
            plan.update.push(name.clone());
            plan.entries.push(Entry {
                module: name.clone(),
                reason,
            });
        }
    }
    // New dependencies, transitively through the checkout's own modules (others' manifests
    // are not known here; Odoo resolves them).
    let mut seen: BTreeSet<String> = BTreeSet::new();
    let mut queue: Vec<String> = plan.update.clone();
    while let Some(module) = queue.pop() {
        for dep in inputs.depends.get(&module).into_iter().flatten() {
            if inputs.installed.contains(dep) || !seen.insert(dep.clone()) {
                continue;
            }
            plan.entries.push(Entry {
                module: dep.clone(),
                reason: Reason::NewDependency { of: module.clone() },
            });
            queue.push(dep.clone());
        }
    }
    plan
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(names: &[&str]) -> BTreeSet<String> {
        names.iter().map(|s| (*s).to_owned()).collect()
    }

    fn sums(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    fn stored(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        sums(pairs).into_iter().collect()
    }

    fn reasons(plan: &ModulePlan) -> Vec<(String, &'static str)> {
        plan.entries
            .iter()
            .map(|e| (e.module.clone(), e.reason.code()))
            .collect()
    }

    #[test]
    fn the_table_of_reasons() {
        // (installed, stored, current, serving, expected update, expected adopt)
        struct Case {
            installed: &'static [&'static str],
            stored: &'static [(&'static str, &'static str)],
            serving: Option<&'static [(&'static str, &'static str)]>,
            update: &'static [(&'static str, &'static str)],
            adopt: &'static [(&'static str, &'static str)],
        }
        let current = sums(&[("a", "1"), ("b", "2"), ("c", "3")]);
        let cases = [
            // Stored and equal: nothing.
            Case {
                installed: &["a", "b"],
                stored: &[("a", "1"), ("b", "2")],
                serving: None,
                update: &[],
                adopt: &[],
            },
            // Stored and different.
            Case {
                installed: &["a", "b"],
                stored: &[("a", "1"), ("b", "9")],
                serving: None,
                update: &[("b", "checksum_changed")],
                adopt: &[],
            },
            // Not installed: never updated.
            Case {
                installed: &["a"],
                stored: &[("a", "1"), ("b", "9")],
                serving: None,
                update: &[],
                adopt: &[],
            },
            // Installed through Apps, no serving commit: updated.
            Case {
                installed: &["a", "c"],
                stored: &[("a", "1")],
                serving: None,
                update: &[("c", "no_stored_checksum")],
                adopt: &[],
            },
            // Installed through Apps while the same code served: adopted, not updated.
            Case {
                installed: &["a", "c"],
                stored: &[("a", "1")],
                serving: Some(&[("a", "1"), ("c", "3")]),
                update: &[],
                adopt: &[("c", "3")],
            },
            // Installed through Apps, changed since: adopted and updated.
            Case {
                installed: &["c"],
                stored: &[],
                serving: Some(&[("c", "0")]),
                update: &[("c", "changed_since_serving_commit")],
                adopt: &[("c", "0")],
            },
            // The serving commit did not have the module: no checksum to vouch for it.
            Case {
                installed: &["c"],
                stored: &[],
                serving: Some(&[("a", "1")]),
                update: &[("c", "no_stored_checksum")],
                adopt: &[],
            },
        ];
        for (i, case) in cases.iter().enumerate() {
            let installed = set(case.installed);
            let stored = stored(case.stored);
            let serving = case.serving.map(sums);
            let depends = BTreeMap::new();
            let plan = decide(&Inputs {
                installed: &installed,
                stored: &stored,
                current: &current,
                serving: serving.as_ref(),
                depends: &depends,
            });
            let expected: Vec<(String, &str)> = case
                .update
                .iter()
                .map(|(m, r)| ((*m).to_owned(), *r))
                .collect();
            assert_eq!(reasons(&plan), expected, "case {i}");
            assert_eq!(plan.adopt, sums(case.adopt), "case {i}");
            assert_eq!(
                plan.update,
                case.update
                    .iter()
                    .map(|(m, _)| (*m).to_owned())
                    .collect::<Vec<_>>(),
                "case {i}"
            );
        }
    }

    #[test]
    fn new_dependencies_are_named_with_the_module_needing_them() {
        let installed = set(&["base", "a"]);
        let stored = stored(&[("a", "old")]);
        let current = sums(&[("a", "new"), ("b", "2"), ("c", "3")]);
        let depends: BTreeMap<String, Vec<String>> = [
            ("a", vec!["base", "b"]),
            ("b", vec!["c", "sale"]),
            ("c", vec!["base"]),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.into_iter().map(str::to_owned).collect()))
        .collect();
        let plan = decide(&Inputs {
            installed: &installed,
            stored: &stored,
            current: &current,
            serving: None,
            depends: &depends,
        });
        assert_eq!(plan.update, ["a"]);
        let mut deps = plan.new_dependencies();
        deps.sort();
        assert_eq!(deps, ["b", "c", "sale"]);
        let of_b = plan
            .entries
            .iter()
            .find(|e| e.module == "c")
            .map(|e| e.reason.clone());
        assert_eq!(of_b, Some(Reason::NewDependency { of: "b".into() }));
    }
}
