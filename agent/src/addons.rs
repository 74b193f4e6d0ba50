//! Odoo addons in a checkout: which folders hold modules (the addons path), which modules
//! there are, and each module's content checksum with the scheme of click-odoo-update /
//! OCA module_auto_update, so the agent knows which modules changed.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Component, Path, PathBuf};

use sha1_smol::Sha1;

/// Files left out of a module's checksum, as click-odoo-update's defaults.
pub const CHECKSUM_EXCLUDES: [&str; 6] = [
    "*.pyc",
    "*.pyo",
    "i18n/*.pot",
    "i18n_extra/*.pot",
    "static/*",
    "tests/*",
];

/// Folders deeper than this below the addons root are not searched for modules.
const MAX_DEPTH: usize = 6;

#[derive(Debug, thiserror::Error)]
pub enum AddonsError {
    #[error("module {name} exists twice: {first} and {second}; remove or rename one")]
    Duplicate {
        name: String,
        first: String,
        second: String,
    },
    #[error("addons subpath {0:?} must be a relative path inside the repository")]
    BadSubpath(String),
    #[error("addons subpath {0:?} does not exist in the repository")]
    MissingSubpath(String),
    #[error("reading {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// Modules found in a checkout.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Addons {
    /// Folders (relative to the checkout, "" for its root) that directly hold modules, in
    /// a stable order: the addons path.
    pub dirs: Vec<PathBuf>,
    /// Module name -> folder of the module, relative to the checkout.
    pub modules: BTreeMap<String, PathBuf>,
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> AddonsError + '_ {
    move |source| AddonsError::Io {
        path: path.to_owned(),
        source,
    }
}

/// Checks an addons subpath from a project: relative, no `..`, no absolute parts.
pub fn validate_subpath(subpath: &str) -> Result<PathBuf, AddonsError> {
    let path = PathBuf::from(subpath.trim_matches('/'));
    let ok = path
        .components()
        .all(|c| matches!(c, Component::Normal(_) | Component::CurDir));
    if ok && subpath.len() <= 255 {
        Ok(path)
    } else {
        Err(AddonsError::BadSubpath(subpath.chars().take(80).collect()))
    }
}

/// Finds every folder below `root/subpath` that directly holds modules.
pub fn discover(root: &Path, subpath: &str) -> Result<Addons, AddonsError> {
    let sub = validate_subpath(subpath)?;
    let start = root.join(&sub);
    if !start.is_dir() {
        return Err(AddonsError::MissingSubpath(subpath.to_owned()));
    }
    let mut addons = Addons::default();
    walk(root, &sub, 0, &mut addons)?;
    Ok(addons)
}

fn is_module(dir: &Path) -> bool {
    dir.join("__manifest__.py").is_file()
}

fn walk(root: &Path, rel: &Path, depth: usize, addons: &mut Addons) -> Result<(), AddonsError> {
    let dir = root.join(rel);
    let mut children: Vec<(String, PathBuf)> = Vec::new();
    for entry in std::fs::read_dir(&dir).map_err(io(&dir))? {
        let entry = entry.map_err(io(&dir))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        // Symlinked folders are not followed: a checkout must not lead outside itself.
        if name.starts_with('.') || !entry.file_type().map_err(io(&dir))?.is_dir() {
            continue;
        }
        children.push((name, rel.join(entry.file_name())));
    }
    children.sort();
    let mut holds_modules = false;
    for (name, child) in &children {
        if is_module(&root.join(child)) {
            holds_modules = true;
            if let Some(first) = addons.modules.get(name) {
                return Err(AddonsError::Duplicate {
                    name: name.clone(),
                    first: first.display().to_string(),
                    second: child.display().to_string(),
                });
            }
            addons.modules.insert(name.clone(), child.clone());
        }
    }
    if holds_modules {
        addons.dirs.push(rel.to_owned());
    }
    if depth < MAX_DEPTH {
        for (_, child) in &children {
            if !is_module(&root.join(child)) {
                walk(root, child, depth + 1, addons)?;
            }
        }
    }
    Ok(())
}

/// Shell-style match as Python's `fnmatch`: `*` matches any run of characters including
/// `/`, `?` one character.
pub fn fnmatch(pattern: &str, text: &str) -> bool {
    let p: Vec<char> = pattern.chars().collect();
    let t: Vec<char> = text.chars().collect();
    let (mut pi, mut ti) = (0usize, 0usize);
    let mut star: Option<(usize, usize)> = None;
    while ti < t.len() {
        if pi < p.len() && (p[pi] == '?' || p[pi] == t[ti]) {
            pi += 1;
            ti += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some((pi, ti));
            pi += 1;
        } else if let Some((sp, st)) = star {
            pi = sp + 1;
            ti = st + 1;
            star = Some((sp, st + 1));
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|&c| c == '*')
}

/// sha1 over the sorted relative paths and contents of a module's files, leaving out
/// [`CHECKSUM_EXCLUDES`] (the click-odoo-update scheme).
pub fn module_checksum(module_dir: &Path) -> Result<String, AddonsError> {
    let mut files = Vec::new();
    collect_files(module_dir, Path::new(""), &mut files)?;
    files.retain(|rel| !CHECKSUM_EXCLUDES.iter().any(|p| fnmatch(p, rel)));
    files.sort();
    let mut hash = Sha1::new();
    for rel in &files {
        hash.update(rel.as_bytes());
        let path = module_dir.join(rel);
        hash.update(&std::fs::read(&path).map_err(io(&path))?);
    }
    Ok(hash.digest().to_string())
}

fn collect_files(base: &Path, rel: &Path, out: &mut Vec<String>) -> Result<(), AddonsError> {
    let dir = base.join(rel);
    for entry in std::fs::read_dir(&dir).map_err(io(&dir))? {
        let entry = entry.map_err(io(&dir))?;
        let child = rel.join(entry.file_name());
        let kind = entry.file_type().map_err(io(&dir))?;
        if kind.is_dir() {
            collect_files(base, &child, out)?;
        } else if kind.is_file() {
            out.push(child.to_string_lossy().into_owned());
        }
    }
    Ok(())
}

/// Checksums of every module of `addons` in the checkout at `root`.
pub fn checksums(root: &Path, addons: &Addons) -> Result<BTreeMap<String, String>, AddonsError> {
    addons
        .modules
        .iter()
        .map(|(name, dir)| Ok((name.clone(), module_checksum(&root.join(dir))?)))
        .collect()
}

/// Modules to update: installed in the database, present in the checkout, and whose
/// checksum differs from (or is missing in) the checksums stored in the database.
pub fn changed_modules(
    installed: &HashSet<String>,
    stored: &HashMap<String, String>,
    current: &BTreeMap<String, String>,
) -> Vec<String> {
    current
        .iter()
        .filter(|(name, sum)| installed.contains(*name) && stored.get(*name) != Some(*sum))
        .map(|(name, _)| name.clone())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(root: &Path, rel: &str, text: &str) {
        let path = root.join(rel);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).unwrap_or_default();
        }
        std::fs::write(path, text).unwrap_or_default();
    }

    #[test]
    fn fnmatch_behaves_like_python() {
        assert!(fnmatch("*.pyc", "a/b/c.pyc"));
        assert!(fnmatch("static/*", "static/src/js/x.js"));
        assert!(fnmatch("i18n/*.pot", "i18n/mod.pot"));
        assert!(!fnmatch("i18n/*.pot", "i18n/fr.po"));
        assert!(!fnmatch("tests/*", "models/tests.py"));
        assert!(fnmatch("a?c", "abc"));
        assert!(!fnmatch("a?c", "ac"));
    }

    #[test]
    fn discovery_finds_module_folders_in_stable_order() -> Result<(), AddonsError> {
        let dir = tempfile::tempdir().map_err(io(Path::new("tmp")))?;
        let root = dir.path();
        write(root, "mod_a/__manifest__.py", "{}");
        write(root, "oca/web/web_x/__manifest__.py", "{}");
        write(root, "oca/web/web_y/__manifest__.py", "{}");
        write(root, "vendor/b/mod_b/__manifest__.py", "{}");
        write(root, "mod_a/sub/inner/__manifest__.py", "{}");
        write(root, ".git/x/__manifest__.py", "{}");
        write(root, "docs/readme.md", "x");
        let addons = discover(root, "")?;
        assert_eq!(
            addons.dirs,
            vec![
                PathBuf::from(""),
                PathBuf::from("oca/web"),
                PathBuf::from("vendor/b")
            ]
        );
        let names: Vec<&str> = addons.modules.keys().map(String::as_str).collect();
        assert_eq!(names, ["mod_a", "mod_b", "web_x", "web_y"]);
        let sub = discover(root, "oca")?;
        assert_eq!(sub.dirs, vec![PathBuf::from("oca/web")]);
        assert!(discover(root, "../etc").is_err());
        assert!(discover(root, "missing").is_err());
        Ok(())
    }

    #[test]
    fn duplicate_modules_name_both_paths() -> Result<(), AddonsError> {
        let dir = tempfile::tempdir().map_err(io(Path::new("tmp")))?;
        write(dir.path(), "a/sale_x/__manifest__.py", "{}");
        write(dir.path(), "b/sale_x/__manifest__.py", "{}");
        let err = discover(dir.path(), "").expect_err("duplicate");
        let msg = err.to_string();
        assert!(
            msg.contains("a/sale_x") && msg.contains("b/sale_x"),
            "{msg}"
        );
        Ok(())
    }

    #[test]
    fn checksum_ignores_static_tests_and_compiled_files() -> Result<(), AddonsError> {
        let dir = tempfile::tempdir().map_err(io(Path::new("tmp")))?;
        let m = dir.path().join("m");
        write(&m, "__manifest__.py", "{'version': '1.0'}");
        write(&m, "models/x.py", "x = 1");
        let base = module_checksum(&m)?;
        write(&m, "static/src/app.js", "console.log(1)");
        write(&m, "tests/test_x.py", "assert True");
        write(&m, "models/x.pyc", "bytecode");
        write(&m, "i18n/m.pot", "msgid");
        assert_eq!(module_checksum(&m)?, base, "excluded files do not count");
        write(&m, "i18n/fr.po", "msgid");
        let with_po = module_checksum(&m)?;
        assert_ne!(with_po, base);
        write(&m, "models/x.py", "x = 2");
        assert_ne!(module_checksum(&m)?, with_po);
        Ok(())
    }

    #[test]
    fn checksum_matches_click_odoo_update() -> Result<(), AddonsError> {
        // sha1("__manifest__.py" + "{}" + "a.py" + "1"), as addon_hash computes it.
        let dir = tempfile::tempdir().map_err(io(Path::new("tmp")))?;
        write(dir.path(), "__manifest__.py", "{}");
        write(dir.path(), "a.py", "1");
        let expected = Sha1::from("__manifest__.py{}a.py1").digest().to_string();
        assert_eq!(module_checksum(dir.path())?, expected);
        Ok(())
    }

    #[test]
    fn only_installed_changed_modules_update() {
        let installed: HashSet<String> = ["a", "b", "c"].iter().map(|s| s.to_string()).collect();
        let stored: HashMap<String, String> = [("a", "1"), ("b", "2")]
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let current: BTreeMap<String, String> = [("a", "1"), ("b", "9"), ("c", "3"), ("d", "4")]
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        assert_eq!(changed_modules(&installed, &stored, &current), ["b", "c"]);
    }
}
