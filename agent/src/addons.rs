//! Odoo addons in a checkout: which folders hold modules (the addons path), which modules
//! there are, and each module's content checksum with the scheme of click-odoo-update /
//! OCA module_auto_update, so the agent knows which modules changed.

use std::collections::BTreeMap;
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

/// Shell-style match as Python's `fnmatch.fnmatch` on POSIX: `*` matches any run of
/// characters including `/`, `?` one character, `[seq]` / `[!seq]` one character in (or not
/// in) the set, with `a-z` ranges; a `[` without its `]` is an ordinary character.
pub fn fnmatch(pattern: &str, text: &str) -> bool {
    let p: Vec<char> = pattern.chars().collect();
    let t: Vec<char> = text.chars().collect();
    match_from(&p, &t)
}

/// One element of a pattern: a literal, `?`, `*` or a bracket set.
enum Token {
    Literal(char),
    Any,
    Star,
    Set {
        negated: bool,
        items: Vec<(char, char)>,
    },
}

fn tokens(p: &[char]) -> Vec<Token> {
    let mut out = Vec::new();
    let mut i = 0;
    while i < p.len() {
        match p[i] {
            '*' => {
                // Consecutive stars match like one.
                if !matches!(out.last(), Some(Token::Star)) {
                    out.push(Token::Star);
                }
                i += 1;
            }
            '?' => {
                out.push(Token::Any);
                i += 1;
            }
            '[' => {
                // Python: `]` right after `[` or `[!` is a member; the set ends at the next `]`.
                let mut j = i + 1;
                if j < p.len() && p[j] == '!' {
                    j += 1;
                }
                if j < p.len() && p[j] == ']' {
                    j += 1;
                }
                while j < p.len() && p[j] != ']' {
                    j += 1;
                }
                if j >= p.len() {
                    out.push(Token::Literal('['));
                    i += 1;
                    continue;
                }
                let mut k = i + 1;
                let negated = p[k] == '!';
                if negated {
                    k += 1;
                }
                let mut items = Vec::new();
                let mut first = true;
                while k < j {
                    let c = p[k];
                    if c == ']' && !first {
                        break;
                    }
                    first = false;
                    if k + 2 < j && p[k + 1] == '-' {
                        items.push((c, p[k + 2]));
                        k += 3;
                    } else {
                        items.push((c, c));
                        k += 1;
                    }
                }
                out.push(Token::Set { negated, items });
                i = j + 1;
            }
            c => {
                out.push(Token::Literal(c));
                i += 1;
            }
        }
    }
    out
}

fn match_from(p: &[char], t: &[char]) -> bool {
    let toks = tokens(p);
    let one = |tok: &Token, c: char| match tok {
        Token::Literal(l) => *l == c,
        Token::Any => true,
        Token::Set { negated, items } => {
            items.iter().any(|(lo, hi)| *lo <= c && c <= *hi) != *negated
        }
        Token::Star => false,
    };
    let (mut pi, mut ti) = (0usize, 0usize);
    let mut star: Option<(usize, usize)> = None;
    while ti < t.len() {
        if pi < toks.len() && !matches!(toks[pi], Token::Star) && one(&toks[pi], t[ti]) {
            pi += 1;
            ti += 1;
        } else if pi < toks.len() && matches!(toks[pi], Token::Star) {
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
    toks[pi..].iter().all(|t| matches!(t, Token::Star))
}

/// What a module checksum leaves out, as click-odoo-update decides it for a database: the
/// exclude patterns (`module_auto_update.exclude_patterns`, else [`CHECKSUM_EXCLUDES`]) and
/// the languages whose translations count (the database's active ones).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChecksumRules {
    pub exclude: Vec<String>,
    /// Language prefixes (the part of a code before `_`); `.po` files of `i18n/` and
    /// `i18n_extra/` in other languages are left out. Empty keeps every `.po` file.
    pub keep_langs: std::collections::BTreeSet<String>,
}

impl ChecksumRules {
    /// The rules for a database whose exclude parameter is `exclude` (None when unset) and
    /// whose active languages are `languages` (codes such as `en_US`).
    pub fn new(exclude: Option<&str>, languages: &[String]) -> Self {
        let exclude = match exclude {
            // click-odoo-update splits on commas and strips, keeping empty entries.
            Some(text) => text.split(',').map(|p| p.trim().to_owned()).collect(),
            None => CHECKSUM_EXCLUDES.iter().map(|p| (*p).to_owned()).collect(),
        };
        let keep_langs = languages
            .iter()
            .map(|l| l.split('_').next().unwrap_or_default().to_owned())
            .collect();
        Self {
            exclude,
            keep_langs,
        }
    }

    fn keeps(&self, reldir: &str, filename: &str, filepath: &str) -> bool {
        if self.exclude.iter().any(|p| fnmatch(p, filepath)) {
            return false;
        }
        if !self.keep_langs.is_empty() && (reldir == "i18n" || reldir == "i18n_extra") {
            let (base, ext) = split_ext(filename);
            if ext == ".po"
                && !self
                    .keep_langs
                    .contains(base.split('_').next().unwrap_or(""))
            {
                return false;
            }
        }
        true
    }
}

/// Python's `os.path.splitext` on a file name: the extension starts at the last dot, unless
/// the dots only lead the name (`.po` has none).
fn split_ext(name: &str) -> (&str, &str) {
    let leading = name.len() - name.trim_start_matches('.').len();
    match name[leading..].rfind('.') {
        Some(i) => name.split_at(leading + i),
        None => (name, ""),
    }
}

/// The module checksum of click-odoo-contrib's `addon_hash`: sha1 over the relative path and
/// the content of each kept file, walked as `os.walk` does (a folder's own files in sorted
/// order, then each subfolder in sorted order; symlinked folders are not entered).
pub fn module_checksum(module_dir: &Path, rules: &ChecksumRules) -> Result<String, AddonsError> {
    let mut hash = Sha1::new();
    walk_hash(module_dir, "", rules, &mut hash)?;
    Ok(hash.digest().to_string())
}

fn walk_hash(
    top: &Path,
    reldir: &str,
    rules: &ChecksumRules,
    hash: &mut Sha1,
) -> Result<(), AddonsError> {
    let dir = if reldir.is_empty() {
        top.to_owned()
    } else {
        top.join(reldir)
    };
    let mut files = Vec::new();
    let mut dirs = Vec::new();
    let entries = match std::fs::read_dir(&dir) {
        Ok(entries) => entries,
        // os.walk ignores folders it cannot list.
        Err(_) if !reldir.is_empty() => return Ok(()),
        Err(e) => return Err(io(&dir)(e)),
    };
    for entry in entries {
        let entry = entry.map_err(io(&dir))?;
        let name = entry
            .file_name()
            .into_string()
            .map_err(|name| AddonsError::Io {
                path: dir.join(name),
                source: std::io::Error::new(
                    std::io::ErrorKind::InvalidData,
                    "file name is not UTF-8",
                ),
            })?;
        let kind = entry.file_type().map_err(io(&dir))?;
        // os.walk sorts entries with `is_dir()`, which follows symlinks; a symlinked folder
        // is listed as a folder but not walked (followlinks=False).
        let is_dir = kind.is_dir()
            || (kind.is_symlink() && std::fs::metadata(entry.path()).is_ok_and(|m| m.is_dir()));
        if is_dir {
            dirs.push((name, kind.is_symlink()));
        } else {
            files.push(name);
        }
    }
    files.sort();
    dirs.sort();
    for name in &files {
        let filepath = if reldir.is_empty() {
            name.clone()
        } else {
            format!("{reldir}/{name}")
        };
        if !rules.keeps(reldir, name, &filepath) {
            continue;
        }
        hash.update(filepath.as_bytes());
        let path = top.join(&filepath);
        hash.update(&std::fs::read(&path).map_err(io(&path))?);
    }
    for (name, symlink) in &dirs {
        if *symlink {
            continue;
        }
        let child = if reldir.is_empty() {
            name.clone()
        } else {
            format!("{reldir}/{name}")
        };
        walk_hash(top, &child, rules, hash)?;
    }
    Ok(())
}

/// Checksums of every module of `addons` in the checkout at `root`.
pub fn checksums(
    root: &Path,
    addons: &Addons,
    rules: &ChecksumRules,
) -> Result<BTreeMap<String, String>, AddonsError> {
    addons
        .modules
        .iter()
        .map(|(name, dir)| Ok((name.clone(), module_checksum(&root.join(dir), rules)?)))
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

    fn defaults() -> ChecksumRules {
        ChecksumRules::new(None, &[])
    }

    #[test]
    fn checksum_ignores_static_tests_and_compiled_files() -> Result<(), AddonsError> {
        let dir = tempfile::tempdir().map_err(io(Path::new("tmp")))?;
        let m = dir.path().join("m");
        write(&m, "__manifest__.py", "{'version': '1.0'}");
        write(&m, "models/x.py", "x = 1");
        let base = module_checksum(&m, &defaults())?;
        write(&m, "static/src/app.js", "console.log(1)");
        write(&m, "tests/test_x.py", "assert True");
        write(&m, "models/x.pyc", "bytecode");
        write(&m, "i18n/m.pot", "msgid");
        assert_eq!(
            module_checksum(&m, &defaults())?,
            base,
            "excluded files do not count"
        );
        write(&m, "i18n/fr.po", "msgid");
        let with_po = module_checksum(&m, &defaults())?;
        assert_ne!(with_po, base);
        write(&m, "models/x.py", "x = 2");
        assert_ne!(module_checksum(&m, &defaults())?, with_po);
        Ok(())
    }

    #[test]
    fn checksum_walks_like_os_walk() -> Result<(), AddonsError> {
        // os.walk hashes a folder's own files before its subfolders: `z.py` at the top
        // comes before `a/b.py`, which a flat sorted list would put first.
        let dir = tempfile::tempdir().map_err(io(Path::new("tmp")))?;
        write(dir.path(), "__manifest__.py", "{}");
        write(dir.path(), "z.py", "1");
        write(dir.path(), "a/b.py", "2");
        write(dir.path(), "a/c/d.py", "3");
        write(dir.path(), "b/e.py", "4");
        let expected = Sha1::from("__manifest__.py{}z.py1a/b.py2a/c/d.py3b/e.py4")
            .digest()
            .to_string();
        assert_eq!(module_checksum(dir.path(), &defaults())?, expected);
        Ok(())
    }

    #[test]
    fn checksum_keeps_only_translations_of_active_languages() -> Result<(), AddonsError> {
        let dir = tempfile::tempdir().map_err(io(Path::new("tmp")))?;
        let m = dir.path();
        write(m, "__manifest__.py", "{}");
        write(m, "i18n/en_GB.po", "gb");
        write(m, "i18n/fr.po", "fr");
        write(m, "i18n/fr_BE.po", "be");
        write(m, "i18n_extra/de.po", "de");
        write(m, "i18n/notes.txt", "kept");
        write(m, "data/fr.po", "not a translation folder");
        // With only en_US active, en_GB.po counts (same language) and fr.po does not; .po
        // files outside i18n/ and i18n_extra/ always count.
        let en = ChecksumRules::new(None, &["en_US".to_owned()]);
        let expected =
            "__manifest__.py{}data/fr.ponot a translation folderi18n/en_GB.pogbi18n/notes.txtkept";
        assert_eq!(
            module_checksum(m, &en)?,
            Sha1::from(expected).digest().to_string()
        );
        let en_fr = ChecksumRules::new(None, &["en_US".to_owned(), "fr_FR".to_owned()]);
        let with_fr = "__manifest__.py{}data/fr.ponot a translation folderi18n/en_GB.pogbi18n/fr.pofri18n/fr_BE.pobei18n/notes.txtkept";
        assert_eq!(
            module_checksum(m, &en_fr)?,
            Sha1::from(with_fr).digest().to_string()
        );
        Ok(())
    }

    #[test]
    fn exclude_patterns_come_from_the_database_when_set() -> Result<(), AddonsError> {
        let dir = tempfile::tempdir().map_err(io(Path::new("tmp")))?;
        let m = dir.path();
        write(m, "__manifest__.py", "{}");
        write(m, "README.rst", "readme");
        write(m, "static/x.js", "js");
        let rules = ChecksumRules::new(Some(" README.rst , *.pyc"), &[]);
        assert_eq!(rules.exclude, ["README.rst", "*.pyc"]);
        assert_eq!(
            module_checksum(m, &rules)?,
            Sha1::from("__manifest__.py{}static/x.jsjs")
                .digest()
                .to_string()
        );
        Ok(())
    }

    #[test]
    fn fnmatch_sets_follow_python() {
        assert!(fnmatch("i18n/[ab]*.po", "i18n/a.po"));
        assert!(!fnmatch("i18n/[!ab]*.po", "i18n/a.po"));
        assert!(fnmatch("[a-c]x", "bx"));
        assert!(fnmatch("[]]", "]"));
        assert!(fnmatch("a[", "a["), "an unclosed bracket is literal");
        assert!(fnmatch("[a-]", "-"));
        assert!(fnmatch("**/x", "a/b/x"));
    }

    #[test]
    fn splitext_follows_python() {
        assert_eq!(split_ext("fr.po"), ("fr", ".po"));
        assert_eq!(split_ext(".po"), (".po", ""));
        assert_eq!(split_ext("a.b.po"), ("a.b", ".po"));
        assert_eq!(split_ext("README"), ("README", ""));
    }
}
