//! Module checksums equal click-odoo-contrib's `addon_hash` (installed from PyPI by
//! `tests/env/setup.sh`) on real OCA module trees from PyPI wheels of Odoo 16, 17 and 18,
//! with one and two active languages and with a database's own exclude patterns; the
//! database decides the languages and patterns; and a translation of a language the
//! database does not use changes nothing in a deployment.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};
use ocore_tests::driver::{branch, Driver, COMPLETED, SKIPPED};
use ocore_tests::fixture::{unique, AddonsRepo, Site, SiteOptions, TestEnv, BASE_IMAGE};
use ocore_tests::{bin, ensure_success};
use serde_json::Value;

const SERIES: [&str; 3] = ["16.0", "17.0", "18.0"];
const DEFAULT_EXCLUDES: &str = "*.pyc,*.pyo,i18n/*.pot,i18n_extra/*.pot,static/*,tests/*";

/// The reference data from `tests/env/setup.sh`: click-odoo-contrib's Python, and the
/// folder of OCA module trees by series.
fn reference() -> Result<(PathBuf, PathBuf)> {
    let text = std::fs::read_to_string("/var/lib/ocore-testenv/env")
        .context("the test environment is not set up: run tests/env/setup.sh")?;
    let get = |key: &str| -> Result<PathBuf> {
        text.lines()
            .find_map(|l| l.strip_prefix(&format!("export {key}=")))
            .map(PathBuf::from)
            .with_context(|| format!("{key} missing from the env file: run tests/env/setup.sh"))
    };
    let (python, oca) = (get("OCORE_TEST_PYREF")?, get("OCORE_TEST_OCA")?);
    if !python.exists() || !oca.join("18.0").is_dir() {
        bail!("click-odoo-contrib or the OCA module trees are missing: run tests/env/setup.sh");
    }
    Ok((python, oca))
}

/// click-odoo-contrib's `addon_hash` of every module in `dir`.
fn addon_hash(
    python: &Path,
    dir: &Path,
    exclude: &str,
    languages: &[&str],
) -> Result<BTreeMap<String, String>> {
    let script = r#"
import json, os, sys
from click_odoo_contrib._addon_hash import addon_hash
top, exclude, langs = sys.argv[1], sys.argv[2], sys.argv[3]
patterns = [p.strip() for p in exclude.split(",")]
keep = [l for l in langs.split(",") if l]
out = {}
for name in sorted(os.listdir(top)):
    path = os.path.join(top, name)
    if os.path.isfile(os.path.join(path, "__manifest__.py")):
        out[name] = addon_hash(path, patterns, keep)
print(json.dumps(out))
"#;
    let out = Command::new(python)
        .args(["-c", script])
        .arg(dir)
        .arg(exclude)
        .arg(languages.join(","))
        .output()?;
    ensure_success("addon_hash", &out)?;
    Ok(serde_json::from_slice(&out.stdout)?)
}

/// `ocore-agent modules … --output json`, as name -> checksum, with the whole answer.
fn agent_modules(args: &[&str]) -> Result<(BTreeMap<String, String>, Value)> {
    let out = Command::new(bin("ocore-agent"))
        .arg("modules")
        .args(args)
        .args(["--output", "json"])
        .output()?;
    ensure_success("ocore-agent modules", &out)?;
    let report: Value = serde_json::from_slice(&out.stdout)?;
    let sums = report["modules"]
        .as_array()
        .context("modules")?
        .iter()
        .map(|m| {
            (
                m["name"].as_str().unwrap_or_default().to_owned(),
                m["checksum"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect();
    Ok((sums, report))
}

#[test]
fn checksums_equal_click_odoo_contrib_on_real_oca_modules() -> Result<()> {
    let (python, oca) = reference()?;
    let mut compared = 0;
    let mut language_mattered = false;
    for series in SERIES {
        let dir = oca.join(series);
        let path = dir.display().to_string();
        let mut by_languages = Vec::new();
        for languages in [vec!["en_US"], vec!["en_US", "fr_FR"]] {
            let expected = addon_hash(&python, &dir, DEFAULT_EXCLUDES, &languages)?;
            let (got, _) =
                agent_modules(&["--addons-path", &path, "--languages", &languages.join(",")])?;
            assert!(!expected.is_empty(), "no module in {path}");
            assert_eq!(got, expected, "series {series}, languages {languages:?}");
            compared += got.len();
            by_languages.push(got);
        }
        language_mattered |= by_languages[0] != by_languages[1];
        // A database's own exclude patterns.
        let exclude = format!("{DEFAULT_EXCLUDES},README.rst,readme/*");
        let expected = addon_hash(&python, &dir, &exclude, &["en_US"])?;
        let (got, _) = agent_modules(&[
            "--addons-path",
            &path,
            "--languages",
            "en_US",
            "--exclude-patterns",
            &exclude,
        ])?;
        assert_eq!(got, expected, "series {series}, exclude {exclude}");
        assert_ne!(got, by_languages[0], "README.rst is in every OCA module");
        compared += got.len();
    }
    assert!(language_mattered, "fr.po must count once fr_FR is active");
    eprintln!("{compared} checksums equal click-odoo-contrib's addon_hash");
    Ok(())
}

/// Drops a database on teardown.
struct DropDb<'a>(&'a TestEnv, String);

impl Drop for DropDb<'_> {
    fn drop(&mut self) {
        let _ = self.0.psql(
            "postgres",
            &format!("DROP DATABASE IF EXISTS \"{}\" WITH (FORCE)", self.1),
        );
    }
}

#[test]
fn the_database_decides_the_languages_the_patterns_and_what_the_next_deploy_updates() -> Result<()>
{
    let env = TestEnv::load()?;
    let (python, oca) = reference()?;
    let dir = tempfile::tempdir()?;
    let db = unique("sums_");
    let _drop = DropDb(&env, db.clone());
    // A database as Odoo creates it, then what Apps and click-odoo-update leave: two OCA
    // modules installed, French active, the database's exclude patterns, and checksums
    // written by click-odoo-update (its `false` for a module it could not find).
    let out = Command::new("docker")
        .args(["run", "--rm", "--network", "host"])
        .args(["-e", &format!("HOST={}", env.pg_host)])
        .args(["-e", &format!("PORT={}", env.pg_port)])
        .args(["-e", &format!("USER={}", env.pg_user)])
        .args(["-e", &format!("PASSWORD={}", env.pg_password)])
        .args([
            BASE_IMAGE,
            "odoo",
            "-d",
            &db,
            "-i",
            "base",
            "--without-demo=all",
        ])
        .args(["--load-language=fr_FR", "--stop-after-init", "--no-http"])
        .output()?;
    ensure_success("odoo -i base", &out)?;
    let addons = oca.join("17.0");
    let exclude = format!("{DEFAULT_EXCLUDES},README.rst");
    let truth = addon_hash(&python, &addons, &exclude, &["en_US", "fr_FR"])?;
    let stored = serde_json::json!({
        "auditlog": truth["auditlog"],
        "date_range": "0000000000000000000000000000000000000000",
        "gone_module": false,
    });
    env.psql(
        &db,
        &format!(
            "INSERT INTO ir_module_module (name, state, latest_version) VALUES
               ('auditlog', 'installed', '17.0.1.1.1'), ('date_range', 'installed', '17.0.1.2.1.5'),
               ('web_responsive', 'installed', '17.0.1.1.11'), ('web_dialog_size', 'uninstalled', NULL);
             INSERT INTO ir_config_parameter (key, value) VALUES
               ('module_auto_update.installed_checksums', '{stored}'),
               ('module_auto_update.exclude_patterns', '{exclude}')"
        ),
    )?;
    let password_file = dir.path().join("pg-password");
    std::fs::write(&password_file, &env.pg_password)?;
    let config = dir.path().join("agent.toml");
    std::fs::write(
        &config,
        format!(
            "listen = \"127.0.0.1:0\"\nstate_dir = \"{}\"\n[postgres]\nhost = \"{}\"\nport = {}\nuser = \"{}\"\npassword_file = \"{}\"\n",
            dir.path().join("state").display(),
            env.pg_host,
            env.pg_port,
            env.pg_user,
            password_file.display()
        ),
    )?;
    let path = addons.display().to_string();
    let (sums, report) = agent_modules(&[
        "--config",
        &config.display().to_string(),
        "--addons-path",
        &path,
        "--database",
        &db,
    ])?;
    assert_eq!(sums, truth, "the database's languages and patterns");
    assert_eq!(report["languages"], serde_json::json!(["en_US", "fr_FR"]));
    let module = |name: &str| -> Value {
        report["modules"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|m| m["name"] == name)
            .cloned()
            .unwrap_or(Value::Null)
    };
    assert_eq!(module("auditlog")["update"], false, "{report}");
    assert_eq!(module("date_range")["update"], true, "{report}");
    assert!(module("date_range")["reason"]
        .as_str()
        .unwrap_or_default()
        .contains("changed since its checksum was recorded"));
    assert_eq!(
        module("web_responsive")["update"],
        true,
        "no stored checksum"
    );
    assert_eq!(module("web_dialog_size")["update"], false, "not installed");
    assert_eq!(module("web_dialog_size")["state"], "uninstalled");
    // The text form says the same for people.
    let text = Command::new(bin("ocore-agent"))
        .args(["modules", "--config", &config.display().to_string()])
        .args(["--addons-path", &path, "--database", &db])
        .output()?;
    ensure_success("ocore-agent modules (text)", &text)?;
    let text = String::from_utf8_lossy(&text.stdout).into_owned();
    assert!(text.contains("languages: en_US, fr_FR"), "{text}");
    assert!(
        text.lines()
            .any(|l| l.starts_with("auditlog ") && l.ends_with("unchanged")),
        "{text}"
    );
    // Bad input: a clear error, exit 64.
    let bad = Command::new(bin("ocore-agent"))
        .args(["modules", "--addons-path", &path, "--languages", "french"])
        .output()?;
    assert_eq!(bad.status.code(), Some(64));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("language \"french\""));
    Ok(())
}

fn copy_tree(from: &Path, to: &Path) -> Result<()> {
    std::fs::create_dir_all(to)?;
    for entry in std::fs::read_dir(from)? {
        let entry = entry?;
        let target = to.join(entry.file_name());
        if entry.file_type()?.is_dir() {
            copy_tree(&entry.path(), &target)?;
        } else {
            std::fs::copy(entry.path(), &target)?;
        }
    }
    Ok(())
}

#[test]
fn a_translation_of_a_language_the_database_does_not_use_updates_nothing() -> Result<()> {
    let (_, oca) = reference()?;
    let dir = tempfile::tempdir()?;
    let site = Site::start(dir.path(), &SiteOptions::default())?;
    let d = Driver::new(&site)?;
    let repo = AddonsRepo::init(dir.path())?;
    copy_tree(&oca.join("17.0/auditlog"), &repo.dir.join("oca/auditlog"))?;
    repo.module("shop", "1.0", &["auditlog"], "S = 1\n")?;
    repo.commit("OCA auditlog and our module")?;
    let (_, first) = d.deploy(&repo, branch("main"))?;
    assert!(first.succeeded(), "{}", first.explain());
    site.install_modules(&first.image, "shop")?;

    // Weblate touches German, which the database does not use: a zero-downtime deploy.
    let de = repo.dir.join("oca/auditlog/i18n/de.po");
    let mut text = std::fs::read_to_string(&de)?;
    text.push_str("\n# weblate\n");
    std::fs::write(&de, text)?;
    repo.commit("Translated using Weblate (German)")?;
    let (_, german) = d.deploy(&repo, branch("main"))?;
    assert!(german.succeeded(), "{}", german.explain());
    assert_eq!(
        german.plan.as_ref().map(|p| p.maintenance_window),
        Some(false)
    );
    assert_eq!(german.step("Module Update"), SKIPPED);

    // English (en_GB counts for en_US): auditlog updates, and shop, which depends on it.
    let gb = repo.dir.join("oca/auditlog/i18n/en_GB.po");
    let mut text = std::fs::read_to_string(&gb)?;
    text.push_str("\n# weblate\n");
    std::fs::write(&gb, text)?;
    repo.commit("Translated using Weblate (English (United Kingdom))")?;
    let (_, english) = d.deploy(&repo, branch("main"))?;
    assert!(english.succeeded(), "{}", english.explain());
    assert_eq!(
        english.plan.as_ref().map(|p| p.modules_to_update.clone()),
        Some(vec!["auditlog".to_owned()])
    );
    assert_eq!(english.step("Module Update"), COMPLETED);
    assert_eq!(site.last_updated_modules()?, ["auditlog", "shop"]);
    Ok(())
}
