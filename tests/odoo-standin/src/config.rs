//! The effective settings: `odoo.conf`'s `[options]` section, overridden by the command line.
//! Database parameters neither gives are left to libpq, as Odoo leaves them: `PGHOST`,
//! `PGPORT`, `PGUSER`, `PGPASSWORD`, then the password file (`PGPASSFILE`, else
//! `~/.pgpass`), which libpq ignores when group or others can read it. (The official image's
//! `HOST`/`PORT`/`USER`/`PASSWORD` variables are read by its entrypoint script, which turns
//! them into command-line options.)

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use crate::cli::{Options, UsageError};
use crate::log::Level;

/// Where the stand-in looks for its configuration when neither `-c` nor `ODOO_RC` says.
pub const DEFAULT_CONFIG: &str = "/etc/odoo/odoo.conf";
const DEFAULT_DATA_DIR: &str = "/var/lib/odoo";

/// Connection parameters for PostgreSQL.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DbParams {
    /// A host name, an address, or a socket directory (starting with `/`).
    pub host: String,
    pub port: u16,
    pub user: String,
    pub password: Option<String>,
}

/// Everything the server needs, resolved once at start.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Settings {
    /// The configuration file that was read, if one existed.
    pub config_file: Option<PathBuf>,
    pub db_name: Option<String>,
    pub db: DbParams,
    pub addons_path: Vec<PathBuf>,
    pub data_dir: PathBuf,
    pub http_enable: bool,
    pub http_interface: String,
    pub http_port: u16,
    pub gevent_port: u16,
    pub stop_after_init: bool,
    pub init: Vec<String>,
    pub update: Vec<String>,
    pub log_level: Level,
    /// Odoo's `workers`: 0 serves everything, websockets included, on the HTTP port.
    pub workers: u32,
    /// `--without-demo`: `None` loads demo data for installed modules, `all` for none, else
    /// the modules listed.
    pub without_demo: WithoutDemo,
    /// `--load-language` codes.
    pub load_language: Vec<String>,
}

/// Which modules get no demo data.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum WithoutDemo {
    None,
    All,
    Modules(Vec<String>),
}

impl WithoutDemo {
    /// Odoo's reading of the option: empty or `False` means demo for all.
    fn parse(value: Option<&str>) -> Self {
        match value.map(str::trim) {
            None | Some("" | "False" | "false" | "None") => WithoutDemo::None,
            Some("all" | "True" | "true" | "1") => WithoutDemo::All,
            Some(list) => WithoutDemo::Modules(split_list(list)),
        }
    }

    /// Whether `module`, installed now, gets demo data.
    pub fn demo_for(&self, module: &str) -> bool {
        match self {
            WithoutDemo::None => true,
            WithoutDemo::All => false,
            WithoutDemo::Modules(list) => !list.iter().any(|m| m == module),
        }
    }
}

#[derive(Debug)]
pub enum ConfigError {
    /// Reported as optparse does, with exit status 2.
    Usage(UsageError),
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    Syntax {
        path: PathBuf,
        line: usize,
        message: String,
    },
    Value {
        path: PathBuf,
        key: String,
        value: String,
    },
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConfigError::Usage(e) => write!(f, "{e}"),
            ConfigError::Read { path, source } => {
                write!(f, "cannot read config file {}: {source}", path.display())
            }
            ConfigError::Syntax {
                path,
                line,
                message,
            } => write!(
                f,
                "While reading from '{}' [line {line:2}]: {message}",
                path.display()
            ),
            ConfigError::Value { path, key, value } => write!(
                f,
                "invalid value for option {key} in {}: '{value}'",
                path.display()
            ),
        }
    }
}

impl std::error::Error for ConfigError {}

impl From<UsageError> for ConfigError {
    fn from(e: UsageError) -> Self {
        ConfigError::Usage(e)
    }
}

/// Parses the `[options]` section of an INI file as Python's `RawConfigParser` does: `key = value`
/// or `key: value`, keys lower-cased, `#`/`;` comment lines, indented continuation lines, and an
/// error for a repeated key.
pub fn parse_ini(path: &Path, text: &str) -> Result<BTreeMap<String, String>, ConfigError> {
    let mut options = BTreeMap::new();
    let mut section: Option<String> = None;
    let mut last_key: Option<String> = None;
    for (index, raw) in text.lines().enumerate() {
        let line_no = index + 1;
        let syntax = |message: String| ConfigError::Syntax {
            path: path.to_path_buf(),
            line: line_no,
            message,
        };
        let trimmed = raw.trim();
        if trimmed.is_empty() || trimmed.starts_with('#') || trimmed.starts_with(';') {
            continue;
        }
        if raw.starts_with([' ', '\t']) {
            if let (Some("options"), Some(key)) = (section.as_deref(), last_key.as_ref()) {
                if let Some(value) = options.get_mut(key) {
                    let value: &mut String = value;
                    value.push('\n');
                    value.push_str(trimmed);
                }
            }
            continue;
        }
        if let Some(name) = trimmed.strip_prefix('[') {
            let name = name
                .strip_suffix(']')
                .ok_or_else(|| syntax(format!("malformed section header {trimmed:?}")))?;
            section = Some(name.to_string());
            last_key = None;
            continue;
        }
        let Some(section) = section.as_deref() else {
            return Err(syntax("File contains no section headers.".to_string()));
        };
        let split = trimmed
            .find(['=', ':'])
            .ok_or_else(|| syntax(format!("Source contains parsing errors: {trimmed:?}")))?;
        let key = trimmed[..split].trim().to_lowercase();
        let value = trimmed[split + 1..].trim().to_string();
        if section != "options" {
            continue;
        }
        if options.contains_key(&key) {
            return Err(syntax(format!(
                "option '{key}' in section 'options' already exists"
            )));
        }
        options.insert(key.clone(), value);
        last_key = Some(key);
    }
    Ok(options)
}

/// A config value Odoo treats as unset.
fn present(value: Option<&String>) -> Option<String> {
    value
        .filter(|v| !matches!(v.as_str(), "" | "False" | "false" | "None"))
        .cloned()
}

/// Splits a comma-separated module or path list, dropping blanks.
pub fn split_list(value: &str) -> Vec<String> {
    value
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .collect()
}

/// Combines the command line, the configuration file and the environment.
///
/// `env` reads an environment variable; tests pass a fake.
pub fn resolve(
    options: &Options,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Settings, ConfigError> {
    let (path, explicit) = match &options.config {
        Some(path) => (PathBuf::from(path), true),
        None => match env("ODOO_RC").or_else(|| env("OPENERP_SERVER")) {
            Some(path) => (PathBuf::from(path), false),
            None => (PathBuf::from(DEFAULT_CONFIG), false),
        },
    };
    let (file, config_file) = match std::fs::read_to_string(&path) {
        Ok(text) => (parse_ini(&path, &text)?, Some(path.clone())),
        Err(_) if explicit => {
            return Err(UsageError(format!(
                "The config file '{}' selected with -c/--config doesn't exist or is not readable, use -s/--save if you want to generate it",
                path.display()
            ))
            .into())
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => (BTreeMap::new(), None),
        Err(source) => return Err(ConfigError::Read { path, source }),
    };
    resolve_with(options, &file, config_file, env)
}

fn resolve_with(
    options: &Options,
    file: &BTreeMap<String, String>,
    config_file: Option<PathBuf>,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Settings, ConfigError> {
    let path = config_file.clone().unwrap_or_default();
    let file_port = |key: &str| -> Result<Option<u16>, ConfigError> {
        match present(file.get(key)) {
            None => Ok(None),
            Some(value) => value
                .parse::<u16>()
                .map(Some)
                .map_err(|_| ConfigError::Value {
                    path: path.clone(),
                    key: key.to_string(),
                    value,
                }),
        }
    };
    // What neither the command line nor the file gives is libpq's to find, as psycopg2
    // leaves it (Odoo passes only the parameters it has).
    let db_host = options
        .db_host
        .clone()
        .or_else(|| present(file.get("db_host")))
        .or_else(|| env("PGHOST").filter(|h| !h.is_empty()))
        .unwrap_or_else(|| "/var/run/postgresql".to_string());
    let env_port = match env("PGPORT").filter(|p| !p.is_empty()) {
        Some(value) => Some(value.parse::<u16>().map_err(|_| ConfigError::Value {
            path: PathBuf::from("environment variable PGPORT"),
            key: "db_port".to_string(),
            value,
        })?),
        None => None,
    };
    let db_port = match options.db_port {
        Some(port) => port,
        None => file_port("db_port")?.or(env_port).unwrap_or(5432),
    };
    let db_user = options
        .db_user
        .clone()
        .or_else(|| present(file.get("db_user")))
        .or_else(|| env("PGUSER").filter(|u| !u.is_empty()))
        // libpq's default: the operating-system user (odoo in the image).
        .unwrap_or_else(|| "odoo".to_string());
    let db_password = options
        .db_password
        .clone()
        .or_else(|| present(file.get("db_password")))
        .or_else(|| env("PGPASSWORD").filter(|p| !p.is_empty()))
        .or_else(|| {
            let file = env("PGPASSFILE")
                .filter(|f| !f.is_empty())
                .or_else(|| env("HOME").map(|h| format!("{h}/.pgpass")))?;
            passfile_password(Path::new(&file), &db_host, db_port, &db_user)
        });
    let workers = match options.workers {
        Some(w) => w,
        None => match present(file.get("workers")) {
            Some(value) => value.parse::<u32>().map_err(|_| ConfigError::Value {
                path: path.clone(),
                key: "workers".to_string(),
                value,
            })?,
            None => 0,
        },
    };
    let without_demo = WithoutDemo::parse(
        options
            .without_demo
            .as_deref()
            .or(file.get("without_demo").map(String::as_str)),
    );
    let load_language = options
        .load_language
        .as_deref()
        .or(file.get("load_language").map(String::as_str))
        .map(split_list)
        .unwrap_or_default();

    let addons_path = match &options.addons_path {
        Some(value) => check_addons_path(value)?,
        None => present(file.get("addons_path"))
            .map(|v| split_list(&v).into_iter().map(PathBuf::from).collect())
            .unwrap_or_default(),
    };

    let http_enable = match options.http_enable {
        Some(enable) => enable,
        None => !matches!(
            file.get("http_enable").map(String::as_str),
            Some("False" | "false")
        ),
    };
    let log_level_name = options
        .log_level
        .clone()
        .or_else(|| present(file.get("log_level")))
        .unwrap_or_else(|| "info".to_string());
    let log_level = Level::from_odoo_option(&log_level_name).ok_or_else(|| ConfigError::Value {
        path: path.clone(),
        key: "log_level".to_string(),
        value: log_level_name.clone(),
    })?;
    let db_name = options
        .db_name
        .clone()
        .or_else(|| present(file.get("db_name")));
    let init = options.init.as_deref().map(split_list).unwrap_or_default();
    let update = options
        .update
        .as_deref()
        .map(split_list)
        .unwrap_or_default();
    if db_name.as_deref().is_some_and(|n| n.contains(','))
        && !(init.is_empty() && update.is_empty())
    {
        return Err(UsageError(
            "Cannot use -i/--init or -u/--update with multiple databases in the -d/--database/db_name"
                .to_string(),
        )
        .into());
    }

    Ok(Settings {
        config_file,
        db_name,
        db: DbParams {
            host: db_host,
            port: db_port,
            user: db_user,
            password: db_password,
        },
        addons_path,
        data_dir: options
            .data_dir
            .clone()
            .or_else(|| present(file.get("data_dir")))
            .map_or_else(|| PathBuf::from(DEFAULT_DATA_DIR), PathBuf::from),
        http_enable,
        http_interface: options
            .http_interface
            .clone()
            .or_else(|| present(file.get("http_interface")))
            .unwrap_or_default(),
        http_port: match options.http_port {
            Some(port) => port,
            None => file_port("http_port")?
                .or(file_port("xmlrpc_port")?)
                .unwrap_or(8069),
        },
        gevent_port: match options.gevent_port {
            Some(port) => port,
            None => file_port("gevent_port")?
                .or(file_port("longpolling_port")?.filter(|p| *p != 0))
                .unwrap_or(8072),
        },
        stop_after_init: options.stop_after_init,
        init,
        update,
        log_level,
        workers,
        without_demo,
        load_language,
    })
}

/// The password libpq finds for `host:port:*:user` in a password file, as libpq reads one:
/// `host:port:database:user:password` lines, `*` matching anything, `\:` and `\\` escaped;
/// a file that group or others can read is ignored with libpq's warning.
pub fn passfile_password(path: &Path, host: &str, port: u16, user: &str) -> Option<String> {
    use std::os::unix::fs::PermissionsExt;
    let meta = std::fs::metadata(path).ok()?;
    if !meta.is_file() {
        return None;
    }
    if meta.permissions().mode() & 0o077 != 0 {
        eprintln!(
            "WARNING: password file \"{}\" has group or world access; permissions should be u=rw (0600) or less",
            path.display()
        );
        return None;
    }
    let text = std::fs::read_to_string(path).ok()?;
    // libpq matches a socket directory as "localhost".
    let host = if host.starts_with('/') {
        "localhost"
    } else {
        host
    };
    let port = port.to_string();
    for line in text.lines() {
        if line.starts_with('#') || line.trim().is_empty() {
            continue;
        }
        let fields = split_passfile_line(line);
        let [h, p, _db, u, password] = fields.as_slice() else {
            continue;
        };
        let matches = |field: &str, value: &str| field == "*" || field == value;
        if matches(h, host) && matches(p, &port) && matches(u, user) {
            return Some(password.clone());
        }
    }
    None
}

fn split_passfile_line(line: &str) -> Vec<String> {
    let mut fields = vec![String::new()];
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => {
                if let Some(next) = chars.next() {
                    if let Some(last) = fields.last_mut() {
                        last.push(next);
                    }
                }
            }
            ':' if fields.len() < 5 => fields.push(String::new()),
            c => {
                if let Some(last) = fields.last_mut() {
                    last.push(c);
                }
            }
        }
    }
    fields
}

/// Odoo checks `--addons-path` folders when parsing the command line (not those of the file).
fn check_addons_path(value: &str) -> Result<Vec<PathBuf>, UsageError> {
    let mut paths = Vec::new();
    for entry in split_list(value) {
        let path = PathBuf::from(&entry);
        if !path.is_dir() {
            return Err(UsageError(format!(
                "option --addons-path: no such directory: '{entry}'"
            )));
        }
        let holds_module = std::fs::read_dir(&path)
            .map(|entries| {
                entries
                    .flatten()
                    .any(|e| e.path().join("__manifest__.py").is_file())
            })
            .unwrap_or(false);
        if !holds_module {
            return Err(UsageError(format!(
                "option --addons-path: the path '{entry}' is not a valid addons directory"
            )));
        }
        paths.push(path);
    }
    Ok(paths)
}

#[cfg(test)]
mod tests {
    use super::*;

    const IMAGE_CONF: &str = "[options]
; written by the test image
db_host = 127.0.0.1
db_port = 5432
db_user = ocore
db_password = ocore
addons_path = /mnt/extra-addons, /opt/more
data_dir = /var/lib/odoo
workers = 0
proxy_mode = True
";

    fn no_env(_: &str) -> Option<String> {
        None
    }

    fn settings(options: &Options, conf: &str, env: &dyn Fn(&str) -> Option<String>) -> Settings {
        let path = PathBuf::from("/etc/odoo/odoo.conf");
        let file = parse_ini(&path, conf).expect("config parses");
        resolve_with(options, &file, Some(path), env).expect("settings resolve")
    }

    #[test]
    fn reads_the_image_config_with_odoo_defaults() {
        let s = settings(&Options::default(), IMAGE_CONF, &no_env);
        assert_eq!(s.db.host, "127.0.0.1");
        assert_eq!(s.db.port, 5432);
        assert_eq!(s.db.user, "ocore");
        assert_eq!(s.db.password.as_deref(), Some("ocore"));
        assert_eq!(
            s.addons_path,
            vec![
                PathBuf::from("/mnt/extra-addons"),
                PathBuf::from("/opt/more")
            ]
        );
        assert_eq!(s.http_port, 8069);
        assert_eq!(s.gevent_port, 8072);
        assert!(s.http_enable);
        assert_eq!(s.db_name, None);
        assert_eq!(s.log_level, Level::Info);
    }

    #[test]
    fn command_line_overrides_the_file() {
        let options = Options {
            db_host: Some("10.0.0.9".into()),
            db_port: Some(6543),
            db_user: Some("other".into()),
            http_port: Some(18069),
            gevent_port: Some(18072),
            db_name: Some("prod".into()),
            data_dir: Some("/srv/data".into()),
            http_enable: Some(false),
            update: Some("a, b,,c".into()),
            ..Options::default()
        };
        let s = settings(&options, IMAGE_CONF, &no_env);
        assert_eq!(s.db.host, "10.0.0.9");
        assert_eq!(s.db.port, 6543);
        assert_eq!(s.db.user, "other");
        assert_eq!(s.http_port, 18069);
        assert_eq!(s.gevent_port, 18072);
        assert_eq!(s.db_name.as_deref(), Some("prod"));
        assert_eq!(s.data_dir, PathBuf::from("/srv/data"));
        assert!(!s.http_enable);
        assert_eq!(s.update, vec!["a", "b", "c"]);
    }

    #[test]
    fn libpq_environment_fills_what_options_and_file_lack() {
        let env = |name: &str| match name {
            "PGHOST" => Some("pg.internal".to_string()),
            "PGPORT" => Some("5433".to_string()),
            "PGUSER" => Some("envuser".to_string()),
            "PGPASSWORD" => Some("envpass".to_string()),
            // The official image's variables mean nothing to Odoo itself.
            "PASSWORD" => Some("entrypoint-only".to_string()),
            _ => None,
        };
        let s = settings(&Options::default(), "[options]\ndb_user = fromfile\n", &env);
        assert_eq!(s.db.host, "pg.internal");
        assert_eq!(s.db.port, 5433);
        assert_eq!(s.db.user, "fromfile");
        assert_eq!(s.db.password.as_deref(), Some("envpass"));
        let s = settings(&Options::default(), "[options]\n", &no_env);
        assert_eq!(s.db.host, "/var/run/postgresql");
        assert_eq!(s.db.user, "odoo");
        assert_eq!(s.db.password, None);
    }

    #[test]
    fn the_password_file_is_read_as_libpq_reads_it() -> Result<(), Box<dyn std::error::Error>> {
        use std::os::unix::fs::PermissionsExt;
        let dir = std::env::temp_dir().join(format!("standin-pgpass-{}", std::process::id()));
        std::fs::create_dir_all(&dir)?;
        let file = dir.join("pgpass");
        std::fs::write(
            &file,
            "# comment\nother:*:*:*:no\n*:5432:*:ocore:se\\:cr\\\\et\n",
        )?;
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600))?;
        assert_eq!(
            passfile_password(&file, "127.0.0.1", 5432, "ocore").as_deref(),
            Some("se:cr\\et")
        );
        assert_eq!(passfile_password(&file, "127.0.0.1", 5433, "ocore"), None);
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644))?;
        assert_eq!(passfile_password(&file, "127.0.0.1", 5432, "ocore"), None);
        let path = file.display().to_string();
        let env = |name: &str| (name == "PGPASSFILE").then(|| path.clone());
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600))?;
        let s = settings(
            &Options::default(),
            "[options]\ndb_host = 127.0.0.1\ndb_user = ocore\n",
            &env,
        );
        assert_eq!(s.db.password.as_deref(), Some("se:cr\\et"));
        std::fs::remove_dir_all(&dir)?;
        Ok(())
    }

    #[test]
    fn workers_demo_and_languages() {
        let s = settings(&Options::default(), IMAGE_CONF, &no_env);
        assert_eq!(s.workers, 0);
        assert_eq!(s.without_demo, WithoutDemo::None);
        let options = Options {
            workers: Some(4),
            without_demo: Some("all".into()),
            load_language: Some("fr_FR,de_DE".into()),
            ..Options::default()
        };
        let s = settings(&options, IMAGE_CONF, &no_env);
        assert_eq!(s.workers, 4);
        assert!(!s.without_demo.demo_for("base"));
        assert_eq!(s.load_language, ["fr_FR", "de_DE"]);
        let s = settings(
            &Options::default(),
            "[options]\nworkers = 2\nwithout_demo = sale\n",
            &no_env,
        );
        assert_eq!(s.workers, 2);
        assert!(s.without_demo.demo_for("base") && !s.without_demo.demo_for("sale"));
    }

    #[test]
    fn false_values_mean_unset() {
        let conf = "[options]\ndb_host = False\ndb_port = False\ndb_name = False\nhttp_enable = False\nlongpolling_port = 0\n";
        let s = settings(&Options::default(), conf, &no_env);
        assert_eq!(s.db.host, "/var/run/postgresql");
        assert_eq!(s.db.port, 5432);
        assert_eq!(s.db_name, None);
        assert!(!s.http_enable);
        assert_eq!(s.gevent_port, 8072);
    }

    #[test]
    fn ini_parser_follows_configparser() {
        let path = PathBuf::from("x.conf");
        let parsed = parse_ini(
            &path,
            "# comment\n[other]\ndb_host = ignored\n[options]\nDB_Name: mixed\naddons_path = /a,\n  /b\n",
        )
        .expect("parses");
        assert_eq!(parsed.get("db_name").map(String::as_str), Some("mixed"));
        assert_eq!(
            parsed.get("addons_path").map(String::as_str),
            Some("/a,\n/b")
        );
        assert!(!parsed.contains_key("db_host"));
        let err = parse_ini(&path, "[options]\na = 1\na = 2\n").expect_err("duplicate");
        assert!(err
            .to_string()
            .contains("option 'a' in section 'options' already exists"));
        assert!(parse_ini(&path, "a = 1\n").is_err());
        assert!(parse_ini(&path, "[options]\nnot a pair\n").is_err());
    }

    #[test]
    fn rejects_bad_values() {
        let path = PathBuf::from("x.conf");
        let file = parse_ini(&path, "[options]\nhttp_port = eighty\n").expect("parses");
        assert!(matches!(
            resolve_with(&Options::default(), &file, Some(path.clone()), &no_env),
            Err(ConfigError::Value { key, .. }) if key == "http_port"
        ));
        let options = Options {
            db_name: Some("a,b".into()),
            update: Some("x".into()),
            ..Options::default()
        };
        let file = BTreeMap::new();
        assert!(matches!(
            resolve_with(&options, &file, None, &no_env),
            Err(ConfigError::Usage(_))
        ));
    }

    #[test]
    fn missing_explicit_config_is_a_usage_error() {
        let options = Options {
            config: Some("/nonexistent/odoo.conf".into()),
            ..Options::default()
        };
        assert!(matches!(
            resolve(&options, &no_env),
            Err(ConfigError::Usage(_))
        ));
    }

    #[test]
    fn checks_addons_path_folders_given_on_the_command_line() {
        let options = Options {
            addons_path: Some("/nonexistent-addons".into()),
            ..Options::default()
        };
        let file = BTreeMap::new();
        match resolve_with(&options, &file, None, &no_env) {
            Err(ConfigError::Usage(UsageError(message))) => {
                assert_eq!(
                    message,
                    "option --addons-path: no such directory: '/nonexistent-addons'"
                )
            }
            other => panic!("expected a usage error, got {other:?}"),
        }
    }
}
