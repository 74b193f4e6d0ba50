//! Start-up and shutdown in Odoo's order: announce the configuration, find the modules, load the
//! database (running `-i`/`-u`), then listen, until SIGTERM/SIGINT ends it gracefully.

use std::net::TcpListener;
use std::process::ExitCode;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use signal_hook::consts::{SIGINT, SIGTERM};
use signal_hook::iterator::Signals;

use crate::addons::{self, Addons};
use crate::config::Settings;
use crate::db::{self, RunError};
use crate::http::{self, App, InFlight, Port};
use crate::log;
use crate::plan::Action;

const SERVER: &str = "odoo.service.server";
/// Odoo's threaded server gives running requests about a second after a stop signal.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(1);

const STARTING: u8 = 0;
const UPDATING: u8 = 1;
const SERVING: u8 = 2;

/// State the signal thread needs to decide how to stop.
struct Lifecycle {
    phase: AtomicU8,
    /// Set once the HTTP service exists, so shutdown can drain its requests.
    app: OnceLock<Arc<App>>,
}

/// Runs the server with resolved settings and returns the process exit status.
pub fn run(settings: Settings) -> ExitCode {
    log::set_level(settings.log_level);
    let lifecycle = Arc::new(Lifecycle {
        phase: AtomicU8::new(STARTING),
        app: OnceLock::new(),
    });
    if let Err(e) = watch_signals(Arc::clone(&lifecycle)) {
        log::critical(
            None,
            SERVER,
            &format!("cannot install signal handlers: {e}"),
        );
        return ExitCode::from(1);
    }

    announce(&settings);
    let addons = match addons::discover(&settings.addons_path) {
        Ok(addons) => addons,
        Err(e) => {
            log::critical(None, "odoo.modules.module", &e.to_string());
            return ExitCode::from(1);
        }
    };
    for path in &addons.missing_paths {
        log::warning(
            None,
            "odoo.modules.module",
            &format!("addons path does not exist: {}", path.display()),
        );
    }

    // A failing start is the kind of crash a broken module causes when the server imports it;
    // one-off `--stop-after-init` runs (the module update) are not servers and are spared.
    if !settings.stop_after_init {
        if let Some(module) = addons.any(|m| m.fail_start) {
            let message = format!(
                "OCORE_FAIL_START: module {} refuses to start the server",
                module.name
            );
            let init = format!("{}/__init__.py", module.path.display());
            let frames = [
                (
                    "/usr/lib/python3/dist-packages/odoo/service/server.py",
                    1290,
                    "load_server_wide_modules",
                    "odoo.modules.module.load_openerp_module(m)",
                ),
                (
                    init.as_str(),
                    1,
                    "<module>",
                    "raise Exception(\"OCORE_FAIL_START\")",
                ),
            ];
            log::critical(
                None,
                SERVER,
                &traceback(
                    "Failed to load server-wide module",
                    &frames,
                    &format!("Exception: {message}"),
                ),
            );
            return ExitCode::from(1);
        }
    }

    let db_name = settings
        .db_name
        .as_deref()
        .and_then(|names| names.split(',').map(str::trim).find(|n| !n.is_empty()))
        .map(str::to_string);
    if settings.db_name.as_deref().is_some_and(|n| n.contains(',')) {
        log::warning(
            None,
            SERVER,
            "the stand-in serves only the first database of the -d list",
        );
    }
    // Held open while serving, as Odoo's registry and cron keep connections to their database.
    let mut _keeper = None;
    // Why the database's registry could not be loaded, when it could not: a server goes on
    // serving (health passes) but every request for that database fails.
    let mut registry_error = None;
    match &db_name {
        Some(db_name) => {
            lifecycle.phase.store(UPDATING, Ordering::SeqCst);
            match load_database(&settings, db_name, &addons) {
                Ok(client) => _keeper = Some(client),
                Err(Failure::Exit(code)) => return code,
                Err(Failure::Registry(reason)) if settings.stop_after_init => {
                    log::info(Some(db_name), SERVER, &reason);
                    // preload_registries returns -1: `sys.exit(-1)`.
                    return ExitCode::from(255);
                }
                Err(Failure::Registry(reason)) => registry_error = Some(reason),
                Err(Failure::NotInitialized) => {
                    registry_error = Some(format!(
                        "Database {db_name} not initialized, you can force it with `-i base`"
                    ))
                }
            }
            lifecycle.phase.store(STARTING, Ordering::SeqCst);
        }
        None if !(settings.init.is_empty() && settings.update.is_empty()) => {
            log::warning(
                None,
                SERVER,
                "-i and -u need a database (-d); nothing installed or updated",
            );
        }
        None => {}
    }

    if settings.stop_after_init {
        log::info(db_name.as_deref(), SERVER, "Initiating shutdown");
        return ExitCode::SUCCESS;
    }

    let app = Arc::new(App {
        db: settings.db.clone(),
        db_name: db_name.clone(),
        data_dir: settings.data_dir.clone(),
        fail_health: addons.any(|m| m.fail_health).is_some(),
        in_flight: InFlight::default(),
        workers: settings.workers,
        registry_error,
    });
    if app.fail_health {
        log::warning(
            None,
            SERVER,
            "OCORE_FAIL_HEALTH: /web/health will answer 500",
        );
    }
    if settings.http_enable {
        if let Some((delay, module)) = addons.slow_start() {
            log::info(
                None,
                SERVER,
                &format!(
                    "OCORE_SLOW_START: module {} delays listening by {:.1}s",
                    module.name,
                    delay.as_secs_f64()
                ),
            );
            std::thread::sleep(delay);
        }
        if let Err(code) = listen(&settings, &app) {
            return code;
        }
    }
    let _ = lifecycle.app.set(app);
    lifecycle.phase.store(SERVING, Ordering::SeqCst);
    // Everything now happens on the request threads; the signal thread ends the process.
    loop {
        std::thread::park();
    }
}

fn announce(settings: &Settings) {
    log::info(None, "odoo", "Odoo version 17.0");
    if let Some(path) = &settings.config_file {
        log::info(
            None,
            "odoo",
            &format!("Using configuration file at {}", path.display()),
        );
    }
    let mut paths = vec![format!("'{}'", addons::BASE_PATH.trim_end_matches("/base"))];
    paths.extend(
        settings
            .addons_path
            .iter()
            .map(|p| format!("'{}'", p.display())),
    );
    log::info(
        None,
        "odoo",
        &format!("addons paths: [{}]", paths.join(", ")),
    );
    log::info(
        None,
        "odoo",
        &format!(
            "database: {}@{}:{}",
            settings.db.user, settings.db.host, settings.db.port
        ),
    );
}

/// Why loading the database failed.
enum Failure {
    /// The process ends with this status (no database server, a database that cannot be
    /// created).
    Exit(ExitCode),
    /// The registry did not load (a module failed, `-i`/`-u` failed); the transaction was
    /// rolled back.
    Registry(String),
    /// An existing database without Odoo's tables, and no `-i`/`-u` to initialise it:
    /// Odoo refuses to load it.
    NotInitialized,
}

/// Creates and loads the database, applying `-i`/`-u`; returns a connection to keep open.
/// As Odoo does, a database that does not exist is created, and `base` installed in it
/// (with demo data unless `--without-demo`).
fn load_database(
    settings: &Settings,
    db_name: &str,
    addons: &Addons,
) -> Result<postgres::Client, Failure> {
    let created = match db::ensure_database(&settings.db, db_name) {
        Ok(true) => {
            log::info(
                Some(db_name),
                "odoo.service.db",
                &format!("Create database `{db_name}`."),
            );
            true
        }
        Ok(false) => false,
        Err(e) => {
            // Odoo's `_create_empty_database` raises: the process ends with the traceback.
            log::critical(
                Some(db_name),
                SERVER,
                &format!(
                    "Failed to create database `{db_name}`: {}",
                    db::describe(&e)
                ),
            );
            return Err(Failure::Exit(ExitCode::from(1)));
        }
    };
    let mut client = match db::connect(&settings.db, db_name) {
        Ok(client) => client,
        Err(e) => {
            log::critical(
                Some(db_name),
                "odoo.sql_db",
                &format!("Connection to the database failed: {}", db::describe(&e)),
            );
            return Err(Failure::Exit(ExitCode::from(1)));
        }
    };
    let changing = created || !(settings.init.is_empty() && settings.update.is_empty());
    if !changing {
        let initialized = client
            .query_one("SELECT to_regclass('ir_module_module') IS NOT NULL", &[])
            .map(|row| row.get::<_, bool>(0))
            .unwrap_or(false);
        if !initialized {
            log::error(
                Some(db_name),
                "odoo.modules.loading",
                &format!("Database {db_name} not initialized, you can force it with `-i base`"),
            );
            return Err(Failure::NotInitialized);
        }
    }
    let run_id = run_id();
    log::info(
        Some(db_name),
        "odoo.modules.loading",
        &format!("ocore test run {run_id}"),
    );
    let request = db::RunRequest {
        init: &settings.init,
        update: &settings.update,
        without_demo: &settings.without_demo,
        load_language: &settings.load_language,
        run_id: &run_id,
    };
    match db::initialize_and_run(&mut client, db_name, addons, &request) {
        Ok(outcome) => {
            if !outcome.missing_installed.is_empty() {
                let names: Vec<String> = outcome
                    .missing_installed
                    .iter()
                    .map(|m| format!("'{m}'"))
                    .collect();
                log::error(
                    Some(db_name),
                    "odoo.modules.loading",
                    &format!(
                        "Some modules are not loaded, some dependencies or manifest may be missing: [{}]",
                        names.join(", ")
                    ),
                );
            }
            if !outcome.inconsistent.is_empty() {
                let names: Vec<String> = outcome
                    .inconsistent
                    .iter()
                    .map(|m| format!("'{m}'"))
                    .collect();
                log::error(
                    Some(db_name),
                    "odoo.modules.loading",
                    &format!(
                        "Some modules have inconsistent states, some dependencies may be missing: [{}]",
                        names.join(", ")
                    ),
                );
            }
            let list = |action: Action| {
                outcome
                    .steps
                    .iter()
                    .filter(|s| s.action == action)
                    .map(|s| s.module.as_str())
                    .collect::<Vec<_>>()
                    .join(",")
            };
            log::info(Some(db_name), "odoo.modules.loading", "Modules loaded.");
            log::info(
                Some(db_name),
                "odoo.modules.loading",
                &format!(
                    "ocore test run {run_id}: installed [{}] updated [{}]",
                    list(Action::Install),
                    list(Action::Update)
                ),
            );
            log::info(Some(db_name), "odoo.modules.registry", "Registry loaded");
            Ok(client)
        }
        Err(e) => {
            let injected_init;
            let (last, exception) = match &e {
                RunError::Injected { path, module } => {
                    injected_init = format!("{path}/__init__.py");
                    log::critical(
                        Some(db_name),
                        "odoo.modules.module",
                        &format!("Couldn't load module {module}"),
                    );
                    (
                        (
                            injected_init.as_str(),
                            1,
                            "<module>",
                            "raise Exception(\"OCORE_FAIL_UPDATE\")",
                        ),
                        format!("Exception: {e}"),
                    )
                }
                RunError::Plan(plan) => (
                    (
                        "/usr/lib/python3/dist-packages/odoo/addons/base/models/ir_module.py",
                        474,
                        "button_install",
                        "raise UserError(msg % (module.name, dep.name))",
                    ),
                    format!("odoo.exceptions.UserError: {plan}"),
                ),
                RunError::UnknownLanguage(_) => (
                    (
                        "/usr/lib/python3/dist-packages/odoo/addons/base/models/res_lang.py",
                        221,
                        "_create_lang",
                        "raise UserError(_('Unable to get information for locale %s.', lang))",
                    ),
                    format!("odoo.exceptions.UserError: {e}"),
                ),
                RunError::Db(db) => (
                    (
                        "/usr/lib/python3/dist-packages/odoo/sql_db.py",
                        332,
                        "execute",
                        "res = self._obj.execute(query, params)",
                    ),
                    format!("psycopg2.Error: {}", db::describe(db)),
                ),
            };
            let frames = [
                (
                    "/usr/lib/python3/dist-packages/odoo/service/server.py",
                    1325,
                    "preload_registries",
                    "registry = Registry.new(dbname, update_module=update_module)",
                ),
                (
                    "/usr/lib/python3/dist-packages/odoo/modules/registry.py",
                    113,
                    "new",
                    "odoo.modules.load_modules(registry, force_demo, status, update_module)",
                ),
                (
                    "/usr/lib/python3/dist-packages/odoo/modules/loading.py",
                    480,
                    "load_modules",
                    "processed_modules += load_marked_modules(env, graph,",
                ),
                (
                    "/usr/lib/python3/dist-packages/odoo/modules/loading.py",
                    185,
                    "load_module_graph",
                    "load_openerp_module(package.name)",
                ),
                last,
            ];
            log::critical(
                Some(db_name),
                SERVER,
                &traceback(
                    &format!("Failed to initialize database `{db_name}`."),
                    &frames,
                    &exception,
                ),
            );
            Err(Failure::Registry(format!(
                "Failed to initialize database `{db_name}`: {e}"
            )))
        }
    }
}

/// Formats a Python-style traceback under a summary line; frames are
/// `(file, line, function, source)`, outermost first.
fn traceback(summary: &str, frames: &[(&str, u32, &str, &str)], exception: &str) -> String {
    let mut text = format!("{summary}\nTraceback (most recent call last):\n");
    for (file, line, function, code) in frames {
        text.push_str(&format!(
            "  File \"{file}\", line {line}, in {function}\n    {code}\n"
        ));
    }
    text.push_str(exception);
    text
}

/// A unique id for this process's module run, recorded in `ocore_test_update_log.run_id`.
fn run_id() -> String {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_nanos();
    format!("{nanos}-{}", std::process::id())
}

/// Binds the HTTP port, and the gevent port only with `workers > 0` (a threaded Odoo serves
/// websockets on its HTTP port and never opens the other); an address in use ends the
/// process. Without `--http-interface` Odoo binds every interface.
fn listen(settings: &Settings, app: &Arc<App>) -> Result<(), ExitCode> {
    let interface = if settings.http_interface.is_empty() {
        "0.0.0.0"
    } else {
        settings.http_interface.as_str()
    };
    let host = std::fs::read_to_string("/etc/hostname")
        .ok()
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| interface.to_string());
    let mut ports = vec![(Port::Http, settings.http_port, "HTTP service (werkzeug)")];
    if settings.workers > 0 {
        log::info(
            None,
            SERVER,
            &format!(
                "the stand-in plays {} workers in one process",
                settings.workers
            ),
        );
        ports.push((
            Port::Gevent,
            settings.gevent_port,
            "Evented Service (longpolling)",
        ));
    }
    for (port, number, label) in ports {
        let listener = match TcpListener::bind((interface, number)) {
            Ok(listener) => listener,
            Err(e) => {
                log::critical(
                    None,
                    SERVER,
                    &format!("cannot listen on {interface}:{number} for the {label}: {e}"),
                );
                return Err(ExitCode::from(1));
            }
        };
        let bound = listener.local_addr().map_or(number, |a| a.port());
        let shown = if port == Port::Http {
            host.as_str()
        } else {
            interface
        };
        log::info(None, SERVER, &format!("{label} running on {shown}:{bound}"));
        let app = Arc::clone(app);
        std::thread::Builder::new()
            .name(format!("odoo.service.{label}"))
            .spawn(move || http::serve(listener, port, app))
            .map_err(|e| {
                log::critical(None, SERVER, &format!("cannot start the {label}: {e}"));
                ExitCode::from(1)
            })?;
    }
    Ok(())
}

/// Stops on SIGTERM or SIGINT as Odoo does: running requests get a short grace period, a second
/// signal forces the exit. A stop during a module update exits with status 1 (nothing committed).
fn watch_signals(lifecycle: Arc<Lifecycle>) -> std::io::Result<()> {
    let mut signals = Signals::new([SIGTERM, SIGINT])?;
    std::thread::Builder::new()
        .name("odoo.service.signals".to_string())
        .spawn(move || {
            let mut received = 0;
            for signal in signals.forever() {
                received += 1;
                if received > 1 {
                    log::info(None, SERVER, "Forced shutdown.");
                    std::process::exit(0);
                }
                let name = if signal == SIGINT {
                    "SIGINT"
                } else {
                    "SIGTERM"
                };
                log::info(
                    None,
                    SERVER,
                    &format!("{name} received, Initiating shutdown"),
                );
                match lifecycle.phase.load(Ordering::SeqCst) {
                    UPDATING => {
                        log::error(
                            None,
                            SERVER,
                            "stopped during the module update; nothing was committed",
                        );
                        std::process::exit(1);
                    }
                    SERVING => {
                        log::info(
                            None,
                            SERVER,
                            "Hit CTRL-C again or send a second signal to force the shutdown.",
                        );
                        let lifecycle = Arc::clone(&lifecycle);
                        // Drain on another thread so a second signal can still force the exit.
                        let _ = std::thread::Builder::new()
                            .name("odoo.service.shutdown".to_string())
                            .spawn(move || {
                                let left = lifecycle
                                    .app
                                    .get()
                                    .map_or(0, |app| app.in_flight.wait_idle(SHUTDOWN_GRACE));
                                if left > 0 {
                                    log::warning(
                                        None,
                                        SERVER,
                                        &format!("{left} requests still running at shutdown"),
                                    );
                                }
                                std::process::exit(0);
                            });
                    }
                    _ => std::process::exit(0),
                }
            }
        })?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tracebacks_read_like_python() {
        let text = traceback(
            "Failed to initialize database `db`.",
            &[
                ("/a.py", 3, "f", "g()"),
                ("/m/__init__.py", 1, "<module>", "raise X"),
            ],
            "Exception: boom",
        );
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[0], "Failed to initialize database `db`.");
        assert_eq!(lines[1], "Traceback (most recent call last):");
        assert_eq!(lines[2], "  File \"/a.py\", line 3, in f");
        assert_eq!(lines[3], "    g()");
        assert_eq!(lines[5], "    raise X");
        assert_eq!(lines.last(), Some(&"Exception: boom"));
    }
}
