//! What real Odoo does where oCore depends on it (`shared/odoo-facts.md`), and oCore doing
//! the right thing there: the database created deliberately, without demo data; an update
//! that Odoo skips is a failure; a repository's own Dockerfile must say where its modules
//! are; requirements on an externally managed Python; websockets on the port the workers
//! mode serves them on; colours on loopback and no password in any process listing;
//! repositories with broken refs; one build step for oCore's labels.
//!
//! `the_stand_in_behaves_like_odoo` checks the stand-in itself, so that none of these tests
//! passes because the stand-in is kinder than Odoo.

use std::io::{Read, Write};
use std::process::Command;
use std::time::Duration;

use anyhow::{ensure, Context, Result};
use ocore_proto::v1;
use ocore_tests::driver::{branch, serving, Driver, FAILED};
use ocore_tests::ensure_success;
use ocore_tests::fixture::{unique, AddonsRepo, Site, SiteOptions, TestEnv, BASE_IMAGE};

fn shop_repo(dir: &std::path::Path) -> Result<AddonsRepo> {
    let repo = AddonsRepo::init(dir)?;
    repo.module("mod_a", "1.0", &["base"], "A = 1\n")?;
    repo.module("mod_b", "1.0", &["mod_a"], "B = 1\n")?;
    Ok(repo)
}

fn site(dir: &std::path::Path, settings: &[&str]) -> Result<Site> {
    Site::start(
        dir,
        &SiteOptions {
            health_timeout_secs: 20,
            instance_settings: settings.iter().map(|s| (*s).to_owned()).collect(),
            ..Default::default()
        },
    )
}

/// A websocket handshake on `127.0.0.1:port`: the status line of the answer.
fn websocket_status(port: u16) -> Result<String> {
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port))?;
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    write!(
        stream,
        "GET /websocket HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nOrigin: http://127.0.0.1:{port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    )?;
    let mut answer = Vec::new();
    let mut byte = [0u8; 1];
    while !answer.ends_with(b"\r\n") && answer.len() < 4096 {
        if stream.read(&mut byte)? == 0 {
            break;
        }
        answer.push(byte[0]);
    }
    Ok(String::from_utf8_lossy(&answer).trim().to_owned())
}

/// Runs the test image's `odoo` through its official entrypoint, as `docker run IMAGE ...`
/// with the database server in HOST/PORT/USER/PASSWORD.
fn run_image(env: &TestEnv, mounts: &[String], args: &[&str]) -> Result<std::process::Output> {
    let mut command = Command::new("docker");
    command
        .args(["run", "--rm", "--network", "host"])
        .args(["-e", &format!("HOST={}", env.pg_host)])
        .args(["-e", &format!("PORT={}", env.pg_port)])
        .args(["-e", &format!("USER={}", env.pg_user)])
        .args(["-e", &format!("PASSWORD={}", env.pg_password)]);
    for m in mounts {
        command.args(["-v", m]);
    }
    command.arg(BASE_IMAGE).args(args);
    Ok(command.output()?)
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
fn the_stand_in_behaves_like_odoo() -> Result<()> {
    let env = TestEnv::load()?;
    let dir = tempfile::tempdir()?;
    let addons = dir.path().join("addons");
    std::fs::create_dir_all(addons.join("broken"))?;
    std::fs::write(
        addons.join("broken/__manifest__.py"),
        "{'name': 'broken', 'version': '1.0', 'depends': ['base']}",
    )?;
    std::fs::write(addons.join("broken/__init__.py"), "")?;
    let mount = format!("{}:/mnt/extra-addons", addons.display());

    // `-d` on a database that does not exist creates it with demo data...
    let demo_db = unique("standin_demo_");
    let _drop = DropDb(&env, demo_db.clone());
    let out = run_image(&env, &[], &["odoo", "-d", &demo_db, "--stop-after-init"])?;
    ensure_success("odoo -d new", &out)?;
    assert_eq!(
        env.psql(&demo_db, "SELECT login FROM res_users WHERE login = 'demo'")?,
        "demo"
    );
    assert_eq!(
        env.psql(
            &demo_db,
            "SELECT demo FROM ir_module_module WHERE name = 'base'"
        )?,
        "t"
    );
    assert!(!env
        .psql(
            &demo_db,
            "SELECT name FROM res_partner WHERE name = 'Azure Interior'"
        )?
        .is_empty());
    // ...and `--without-demo=all` without.
    let clean_db = unique("standin_clean_");
    let _drop2 = DropDb(&env, clean_db.clone());
    let out = run_image(
        &env,
        &[],
        &[
            "odoo",
            "-d",
            &clean_db,
            "-i",
            "base",
            "--without-demo=all",
            "--stop-after-init",
        ],
    )?;
    ensure_success("odoo -i base --without-demo=all", &out)?;
    assert_eq!(
        env.psql(
            &clean_db,
            "SELECT count(*) FROM res_users WHERE login = 'demo'"
        )?,
        "0"
    );

    // `-u` of an installed module that is not on the addons path: skipped, left
    // `to upgrade`, exit 0.
    env.psql(
        &clean_db,
        "INSERT INTO ir_module_module (name, state, latest_version) VALUES ('gone', 'installed', '17.0.1.0')",
    )?;
    let out = run_image(
        &env,
        &[],
        &[
            "odoo",
            "-d",
            &clean_db,
            "-u",
            "gone",
            "--stop-after-init",
            "--no-http",
        ],
    )?;
    ensure_success("odoo -u gone", &out)?;
    let log =
        String::from_utf8_lossy(&out.stderr).into_owned() + &String::from_utf8_lossy(&out.stdout);
    assert!(
        log.contains("module gone: not installable, skipped"),
        "{log}"
    );
    assert!(
        log.contains("Some modules have inconsistent states"),
        "{log}"
    );
    assert_eq!(
        env.psql(
            &clean_db,
            "SELECT state FROM ir_module_module WHERE name = 'gone'"
        )?,
        "to upgrade"
    );
    env.psql(
        &clean_db,
        "DELETE FROM ir_module_module WHERE name = 'gone'",
    )?;
    // `-u` of a name that is no module: a warning, exit 0.
    let out = run_image(
        &env,
        &[],
        &[
            "odoo",
            "-d",
            &clean_db,
            "-u",
            "nonexistent_x",
            "--stop-after-init",
            "--no-http",
        ],
    )?;
    ensure_success("odoo -u nonexistent", &out)?;

    // A module that fails to import: exit 255, and every later `-u` of the database too.
    let out = run_image(
        &env,
        std::slice::from_ref(&mount),
        &[
            "odoo",
            "-d",
            &clean_db,
            "-i",
            "broken",
            "--stop-after-init",
            "--no-http",
        ],
    )?;
    ensure_success("odoo -i broken", &out)?;
    std::fs::write(addons.join("broken/OCORE_FAIL_UPDATE"), "")?;
    for args in [["-u", "broken"], ["-u", "base"]] {
        let out = run_image(
            &env,
            std::slice::from_ref(&mount),
            &[
                "odoo",
                "-d",
                &clean_db,
                args[0],
                args[1],
                "--stop-after-init",
                "--no-http",
            ],
        )?;
        assert_eq!(out.status.code(), Some(255), "odoo {args:?}: {out:?}");
    }

    // pip refuses on the externally managed Python unless told to break system packages.
    let out = run_image(&env, &[], &["sh", "-c", "pip install six"])?;
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("externally-managed-environment"));
    let out = run_image(
        &env,
        &[],
        &["sh", "-c", "PIP_BREAK_SYSTEM_PACKAGES=1 pip install six"],
    )?;
    ensure_success("pip with PIP_BREAK_SYSTEM_PACKAGES", &out)?;

    // Serving: workers = 0 answers websockets on the HTTP port, binds every interface
    // without --http-interface, and the entrypoint puts the password on the command line.
    let http = ocore_tests::fixture::free_port();
    let gevent = ocore_tests::fixture::free_port();
    let name = format!("ocore-standin-{}", unique(""));
    let out = Command::new("docker")
        .args(["run", "-d", "--name", &name, "--network", "host"])
        .args(["-e", &format!("HOST={}", env.pg_host)])
        .args(["-e", &format!("PORT={}", env.pg_port)])
        .args(["-e", &format!("USER={}", env.pg_user)])
        .args(["-e", &format!("PASSWORD={}", env.pg_password)])
        .arg(BASE_IMAGE)
        .args(["odoo", "-d", &clean_db])
        .arg(format!("--http-port={http}"))
        .arg(format!("--gevent-port={gevent}"))
        .output()?;
    ensure_success("docker run (serve)", &out)?;
    let served = (|| -> Result<()> {
        ocore_tests::wait_for("the stand-in to listen", Duration::from_secs(30), || {
            websocket_status(http).ok()
        })?;
        assert!(
            websocket_status(http)?.starts_with("HTTP/1.1 101"),
            "threaded Odoo serves websockets on its HTTP port"
        );
        assert!(
            std::net::TcpStream::connect(("127.0.0.1", gevent)).is_err(),
            "no gevent port with workers = 0"
        );
        let listening = String::from_utf8_lossy(
            &Command::new("ss")
                .args(["-Hltn", &format!("sport = :{http}")])
                .output()?
                .stdout,
        )
        .into_owned();
        assert!(
            listening.contains(&format!("0.0.0.0:{http}")),
            "{listening}"
        );
        let top = Command::new("docker")
            .args(["top", &name, "-eo", "pid,args"])
            .output()?;
        assert!(
            String::from_utf8_lossy(&top.stdout)
                .contains(&format!("--db_password {}", env.pg_password)),
            "the official entrypoint passes the password as a flag"
        );
        Ok(())
    })();
    let _ = Command::new("docker").args(["rm", "-f", &name]).output();
    served?;

    // workers > 0: the gevent port serves websockets, the HTTP port refuses them.
    let out = Command::new("docker")
        .args(["run", "-d", "--name", &name, "--network", "host"])
        .args(["-e", &format!("HOST={}", env.pg_host)])
        .args(["-e", &format!("PORT={}", env.pg_port)])
        .args(["-e", &format!("USER={}", env.pg_user)])
        .args(["-e", &format!("PASSWORD={}", env.pg_password)])
        .arg(BASE_IMAGE)
        .args([
            "odoo",
            "-d",
            &clean_db,
            "--workers=2",
            "--http-interface=127.0.0.1",
        ])
        .arg(format!("--http-port={http}"))
        .arg(format!("--gevent-port={gevent}"))
        .output()?;
    ensure_success("docker run (workers)", &out)?;
    let workers = (|| -> Result<()> {
        ocore_tests::wait_for("the gevent port", Duration::from_secs(30), || {
            websocket_status(gevent).ok()
        })?;
        assert!(websocket_status(gevent)?.starts_with("HTTP/1.1 101"));
        assert!(websocket_status(http)?.starts_with("HTTP/1.1 400"));
        let listening = String::from_utf8_lossy(
            &Command::new("ss")
                .args(["-Hltn", &format!("sport = :{http}")])
                .output()?
                .stdout,
        )
        .into_owned();
        assert!(
            listening.contains(&format!("127.0.0.1:{http}")),
            "{listening}"
        );
        Ok(())
    })();
    let _ = Command::new("docker").args(["rm", "-f", &name]).output();
    workers
}

#[test]
fn the_first_deploy_creates_the_database_without_demo_data_in_the_instances_language() -> Result<()>
{
    let dir = tempfile::tempdir()?;
    let site = site(dir.path(), &["language = \"fr_FR\"", "country = \"BE\""])?;
    let d = Driver::new(&site)?;
    let repo = shop_repo(dir.path())?;
    repo.commit("first")?;
    let (_, first) = d.deploy(&repo, branch("main"))?;
    assert!(first.succeeded(), "{}", first.explain());
    let plan = first.plan.clone().context("plan")?;
    assert!(plan.initialize_database && !plan.demo_data, "{plan:?}");
    assert_eq!(plan.language, "fr_FR");
    assert!(
        first
            .logs
            .iter()
            .any(|l| l.contains("--load-language=fr_FR")),
        "{}",
        first.explain()
    );
    let db = &site.database;
    let q = |sql: &str| site.env.psql(db, sql);
    assert_eq!(q("SELECT count(*) FROM ir_module_module WHERE demo")?, "0");
    assert_eq!(
        q("SELECT count(*) FROM res_users WHERE login = 'demo'")?,
        "0"
    );
    assert_eq!(q("SELECT active FROM res_lang WHERE code = 'fr_FR'")?, "t");
    assert_eq!(
        q("SELECT p.lang FROM res_users u JOIN res_partner p ON p.id = u.partner_id WHERE u.login = 'admin'")?,
        "fr_FR"
    );
    assert_eq!(
        q("SELECT c.code || ' ' || cur.name FROM res_company co JOIN res_partner p ON p.id = co.partner_id \
           JOIN res_country c ON c.id = p.country_id JOIN res_currency cur ON cur.id = co.currency_id")?,
        "BE EUR"
    );

    // The database is lost (dropped by hand): the next deploy creates it again, never a
    // serving colour (which would load demo data).
    site.env
        .psql("postgres", &format!("DROP DATABASE \"{db}\" WITH (FORCE)"))?;
    repo.write("mod_a/static/x.js", "1")?;
    repo.commit("static")?;
    let (_, again) = d.deploy(&repo, branch("main"))?;
    assert!(again.succeeded(), "{}", again.explain());
    assert!(again.plan.as_ref().is_some_and(|p| p.initialize_database));
    assert_eq!(
        q("SELECT count(*) FROM res_users WHERE login = 'demo'")?,
        "0"
    );
    Ok(())
}

#[test]
fn demo_data_only_when_asked_and_a_failed_creation_leaves_no_database() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let demo = site(&dir.path().join("demo"), &["demo = true"])?;
    let repo = shop_repo(dir.path())?;
    repo.commit("first")?;
    let (_, first) = Driver::new(&demo)?.deploy(&repo, branch("main"))?;
    assert!(first.succeeded(), "{}", first.explain());
    assert!(first.plan.as_ref().is_some_and(|p| p.demo_data));
    assert_eq!(
        demo.env.psql(
            &demo.database,
            "SELECT login FROM res_users WHERE login = 'demo'"
        )?,
        "demo"
    );
    drop(demo);

    // A language Odoo does not know: `-i base` fails; the database it created is dropped
    // and nothing serves.
    let bad = site(&dir.path().join("bad"), &["language = \"xx_XX\""])?;
    let (_, failed) = Driver::new(&bad)?.deploy(&repo, branch("main"))?;
    assert!(!failed.succeeded(), "{}", failed.explain());
    assert_eq!(failed.step("Module Update"), FAILED, "{}", failed.explain());
    assert!(
        failed.message.contains("odoo -i base exited with code"),
        "{}",
        failed.explain()
    );
    assert_eq!(
        bad.env.psql(
            "postgres",
            &format!(
                "SELECT count(*) FROM pg_database WHERE datname = '{}'",
                bad.database
            )
        )?,
        "0",
        "{}",
        failed.explain()
    );
    assert!(bad.containers()?.is_empty(), "{:?}", bad.containers()?);
    Ok(())
}

#[test]
fn an_update_odoo_skips_is_a_failure_and_is_undone() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let site = site(dir.path(), &[])?;
    let d = Driver::new(&site)?;
    let repo = shop_repo(dir.path())?;
    let good = repo.commit("good")?;
    let (_, first) = d.deploy(&repo, branch("main"))?;
    assert!(first.succeeded(), "{}", first.explain());
    site.install_modules(&first.image, "mod_b")?;
    let before = site.env.psql(
        &site.database,
        "SELECT name || ' ' || state || ' ' || latest_version FROM ir_module_module ORDER BY name",
    )?;
    // mod_b changes and can no longer be installed: Odoo marks it for upgrade, skips it as
    // "not installable" and exits 0.
    repo.write(
        "mod_b/__manifest__.py",
        "{'name': 'mod_b', 'version': '1.1', 'depends': ['mod_a'], 'installable': False}\n",
    )?;
    repo.write("mod_b/models.py", "B = 2\n")?;
    repo.commit("mod_b not installable")?;
    let (_, skipped) = d.deploy(&repo, branch("main"))?;
    assert!(!skipped.succeeded(), "{}", skipped.explain());
    assert_eq!(
        skipped.step("Module Update"),
        FAILED,
        "{}",
        skipped.explain()
    );
    let why = &skipped.steps["Module Update"].1;
    assert!(why.contains("did not update the modules"), "{why}");
    assert!(why.contains("mod_b"), "{why}");
    assert!(
        skipped.message.contains("serves again on blue"),
        "{}",
        skipped.explain()
    );
    assert_eq!(serving(&site)?, (good, "blue".to_owned()));
    let after = site.env.psql(
        &site.database,
        "SELECT name || ' ' || state || ' ' || latest_version FROM ir_module_module ORDER BY name",
    )?;
    assert_eq!(before, after, "the database was put back");
    Ok(())
}

#[test]
fn an_own_dockerfile_must_say_where_its_modules_are() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let site = site(dir.path(), &[])?;
    let d = Driver::new(&site)?;
    let repo = AddonsRepo::init(dir.path())?;
    repo.module("custom/mod_a", "1.0", &["base"], "A = 1\n")?;
    // The modules go to /opt/custom, which the image's odoo.conf does not name.
    repo.write(
        "Dockerfile",
        "FROM ocore/odoo-test:17.0\nCOPY --chown=odoo:odoo custom /opt/custom\n",
    )?;
    repo.commit("own Dockerfile")?;
    let (_, lost) = d.deploy(&repo, branch("main"))?;
    assert_eq!(lost.step("Build Image"), FAILED, "{}", lost.explain());
    let why = &lost.steps["Build Image"].1;
    assert!(
        why.contains("mod_a")
            && why.contains("/mnt/extra-addons")
            && why.contains("org.ocore.addons-path"),
        "{why}"
    );
    assert_eq!(
        lost.step("Push Image"),
        v1::StepStatus::Pending as i32,
        "nothing after the build ran"
    );
    assert!(site.containers()?.is_empty());

    // With the label, the colours run with that addons path, and -u finds the module.
    repo.write(
        "Dockerfile",
        "FROM ocore/odoo-test:17.0\nCOPY --chown=odoo:odoo custom /opt/custom\nLABEL org.ocore.addons-path=/opt/custom\n",
    )?;
    repo.commit("labelled")?;
    let (_, first) = d.deploy(&repo, branch("main"))?;
    assert!(first.succeeded(), "{}", first.explain());
    // One LABEL instruction of oCore's (the classic builder makes a step of each), after
    // the FROM, where the build cache keeps it.
    let history = Command::new("docker")
        .args([
            "history",
            "--no-trunc",
            "--format",
            "{{.CreatedBy}}",
            &first.image,
        ])
        .output()?;
    let history = String::from_utf8_lossy(&history.stdout).into_owned();
    assert_eq!(
        history
            .lines()
            .filter(|l| l.contains("org.ocore.managed"))
            .count(),
        1,
        "{history}"
    );
    site.install_modules(&first.image, "mod_a")?;
    repo.write("custom/mod_a/models.py", "A = 2\n")?;
    repo.commit("change")?;
    let (_, second) = d.deploy(&repo, branch("main"))?;
    assert!(second.succeeded(), "{}", second.explain());
    assert_eq!(site.last_updated_modules()?, ["mod_a"]);
    // The labels' step came from the build cache: only the changed COPY ran.
    let label_step = second
        .logs
        .iter()
        .position(|l| l.contains("LABEL \"org.ocore.instance\""))
        .context("no LABEL step in the build output")?;
    assert!(
        second.logs[label_step + 1].contains("Using cache"),
        "{}",
        second.explain()
    );
    Ok(())
}

#[test]
fn requirements_install_on_an_externally_managed_python_and_pip_errors_read_once() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let site = site(dir.path(), &[])?;
    let d = Driver::new(&site)?;
    let repo = shop_repo(dir.path())?;
    repo.write("requirements.txt", "six==1.16.0\n")?;
    repo.commit("with requirements")?;
    let (_, first) = d.deploy(&repo, branch("main"))?;
    assert!(first.succeeded(), "{}", first.explain());
    assert!(
        first
            .logs
            .iter()
            .any(|l| l.contains("Successfully installed six-1.16.0")),
        "{}",
        first.explain()
    );
    repo.write("requirements.txt", "nonexistent-package==1.0\n")?;
    repo.commit("bad requirement")?;
    let (_, bad) = d.deploy(&repo, branch("main"))?;
    assert_eq!(bad.step("Build Image"), FAILED, "{}", bad.explain());
    let why = &bad.steps["Build Image"].1;
    assert_eq!(
        why.matches("No matching distribution found for nonexistent-package")
            .count(),
        1,
        "{why}"
    );
    assert!(!why.contains('\u{1b}'), "{why:?}");
    assert!(
        !bad.logs.iter().any(|l| l.contains('\u{1b}')),
        "escape codes in the step output"
    );
    Ok(())
}

#[test]
fn websockets_reach_odoo_through_nginx_in_both_workers_modes() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let repo = shop_repo(dir.path())?;
    repo.commit("first")?;
    for (name, settings) in [("threaded", vec![]), ("workers", vec!["workers = 2"])] {
        let site = site(&dir.path().join(name), &settings)?;
        let (_, first) = Driver::new(&site)?.deploy(&repo, branch("main"))?;
        assert!(first.succeeded(), "{name}: {}", first.explain());
        assert!(
            first
                .logs
                .iter()
                .any(|l| l.contains("websocket upgrade of") && l.contains("ok after")),
            "{name}: the health check probes the websocket route: {}",
            first.explain()
        );
        let status = websocket_status(site.public_port)?;
        assert!(status.starts_with("HTTP/1.1 101"), "{name}: {status}");
        let conf = std::fs::read_to_string(
            site.nginx
                .conf_dir
                .join(format!("ocore-{}.conf", site.instance)),
        )?;
        let (http, gevent) = site.ports[0];
        if settings.is_empty() {
            assert!(!conf.contains(&format!(":{gevent};")), "{conf}");
        } else {
            assert!(
                conf.contains(&format!("server 127.0.0.1:{gevent};")),
                "{conf}"
            );
            assert!(websocket_status(http)?.starts_with("HTTP/1.1 400"));
        }
    }
    Ok(())
}

#[test]
fn colours_listen_on_loopback_and_no_process_shows_the_password() -> Result<()> {
    let env = TestEnv::load()?;
    // A role of this test's own, so its password is a string nothing else contains.
    let role = unique("pw_");
    let password = format!("Pw{}", unique(""));
    env.psql(
        "postgres",
        &format!("CREATE ROLE {role} LOGIN SUPERUSER PASSWORD '{password}'"),
    )?;
    let result = (|| -> Result<()> {
        let dir = tempfile::tempdir()?;
        let site = Site::start(
            dir.path(),
            &SiteOptions {
                postgres: Some((env.pg_port, role.clone(), password.clone())),
                instance_settings: vec!["public_address = \"127.0.0.1\"".to_owned()],
                ..Default::default()
            },
        )?;
        let repo = shop_repo(dir.path())?;
        repo.commit("first")?;
        let (_, first) = Driver::new(&site)?.deploy(&repo, branch("main"))?;
        assert!(first.succeeded(), "{}", first.explain());
        let (http, _) = site.ports[0];
        let listen = |port: u16| -> Result<String> {
            Ok(String::from_utf8_lossy(
                &Command::new("ss")
                    .args(["-Hltn", &format!("sport = :{port}")])
                    .output()?
                    .stdout,
            )
            .into_owned())
        };
        // The local address of each listening socket (`ss`'s fourth column).
        let local = |port: u16| -> Result<Vec<String>> {
            Ok(listen(port)?
                .lines()
                .filter_map(|l| l.split_whitespace().nth(3).map(str::to_owned))
                .collect())
        };
        assert_eq!(local(http)?, [format!("127.0.0.1:{http}")]);
        let public = local(site.public_port)?;
        assert!(
            !public.is_empty()
                && public
                    .iter()
                    .all(|a| *a == format!("127.0.0.1:{}", site.public_port)),
            "{public:?}"
        );
        // Every process of the colour, and its container's configuration.
        let name = format!("ocore-{}-blue", site.instance);
        let top = Command::new("docker")
            .args(["top", &name, "-eo", "pid,args"])
            .output()?;
        ensure_success("docker top", &top)?;
        let args = String::from_utf8_lossy(&top.stdout).into_owned();
        assert!(
            args.contains("--db_user"),
            "the colour's command line: {args}"
        );
        assert!(
            !args.contains(&password),
            "password on a command line: {args}"
        );
        let inspect = Command::new("docker").args(["inspect", &name]).output()?;
        assert!(!String::from_utf8_lossy(&inspect.stdout).contains(&password));
        // Nor in any other process on the host that oCore started.
        for entry in std::fs::read_dir("/proc")?.flatten() {
            if let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) {
                let text = String::from_utf8_lossy(&cmdline).replace('\0', " ");
                ensure!(
                    !text.contains(&password),
                    "process {:?} shows the password: {text}",
                    entry.file_name()
                );
            }
        }
        Ok(())
    })();
    let _ = env.psql("postgres", &format!("DROP ROLE IF EXISTS {role}"));
    result
}

/// Deploys `url` (as project `project`) with optional credentials; the outcome.
fn deploy_url(
    d: &Driver<'_>,
    url: &str,
    project: &str,
    credentials: Option<v1::Credentials>,
) -> Result<ocore_tests::driver::Outcome> {
    let site = d.site;
    let id = d.next_id();
    let events = d.runtime.block_on(async {
        let mut client = d.client().await?;
        let stream = client
            .deploy(v1::DeployRequest {
                deployment_id: id.clone(),
                instance_id: site.instance.clone(),
                repository: Some(v1::Repository {
                    url: url.to_owned(),
                    addons_subpath: String::new(),
                    credentials,
                    project_id: project.to_owned(),
                }),
                reference: Some(branch("main")),
                from_seq: 0,
                snapshot_id: format!("snap-{id}"),
            })
            .await
            .map_err(|s| anyhow::anyhow!("{s:?}"))?
            .into_inner();
        ocore_tests::grpc::collect(stream, None, Duration::from_secs(240))
            .await
            .map_err(anyhow::Error::msg)
    })?;
    Ok(ocore_tests::driver::Outcome::from(&events))
}

#[test]
fn a_repository_with_broken_refs_deploys_and_a_failed_first_clone_leaves_nothing() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let site = site(dir.path(), &[])?;
    let d = Driver::new(&site)?;
    let work = shop_repo(dir.path())?;
    work.commit("first")?;
    // A bare repository served as GitHub serves pull requests: refs/pull/* next to the
    // branches, one pointing at an object the server does not have.
    let served = dir.path().join("served");
    std::fs::create_dir_all(&served)?;
    let bare = served.join("shop.git");
    let out = Command::new("git")
        .args(["clone", "-q", "--bare"])
        .arg(&work.dir)
        .arg(&bare)
        .output()?;
    ensure_success("git clone --bare", &out)?;
    std::fs::create_dir_all(bare.join("refs/pull/1"))?;
    std::fs::write(
        bare.join("refs/pull/1/head"),
        "0123456789abcdef0123456789abcdef01234567\n",
    )?;
    // Over smart HTTP (git-http-backend), and from the local path.
    let http = ocore_tests::remotes::HttpGitServer::start(
        dir.path(),
        &site.env.nginx,
        &served,
        "ci",
        "token",
        None,
    )?;
    let token = v1::Credentials {
        kind: Some(v1::credentials::Kind::HttpsToken(v1::HttpsToken {
            username: "ci".to_owned(),
            token: "token".to_owned(),
        })),
        known_host_key: String::new(),
    };
    let over_http = deploy_url(&d, &http.url("shop.git"), "shop-http", Some(token))?;
    assert!(over_http.succeeded(), "over HTTP: {}", over_http.explain());
    let local = deploy_url(&d, &bare.display().to_string(), "shop-local", None)?;
    assert!(local.succeeded(), "from a path: {}", local.explain());

    // A first clone that fails leaves no mirror behind.
    let mirrors = site.agent.dir.join("state/mirrors");
    let names = || -> Result<Vec<std::ffi::OsString>> {
        let mut names: Vec<_> = std::fs::read_dir(&mirrors)?
            .flatten()
            .map(|e| e.file_name())
            .collect();
        names.sort();
        Ok(names)
    };
    let before = names()?;
    let missing = dir.path().join("no-such-repo.git").display().to_string();
    let failed = deploy_url(&d, &missing, "ghost", None)?;
    assert_eq!(
        failed.step("Clone Repository"),
        FAILED,
        "{}",
        failed.explain()
    );
    assert_eq!(before, names()?, "the failed clone left a mirror behind");
    Ok(())
}
