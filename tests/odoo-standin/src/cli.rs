//! The command line, parsed the way Odoo 17's `optparse` parser and the official image's
//! entrypoint do: long options with `=` or a separate value, unambiguous abbreviations,
//! clustered short options, and optparse's error messages with exit status 2.

use std::fmt;

/// What the process was asked to do.
#[derive(Debug, PartialEq, Eq)]
pub enum Invocation {
    /// Run the Odoo server with these options.
    Server(Box<Options>),
    /// `--version`: print the version and exit.
    Version,
    /// `--help`: print usage and exit.
    Help,
    /// A command odoo-bin does not have: it exits with `Unknown command 'x'`.
    UnknownCommand(String),
}

/// Options given on the command line. `None` means "not given", so the configuration file or
/// the environment may supply the value.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Options {
    pub config: Option<String>,
    pub init: Option<String>,
    pub update: Option<String>,
    pub without_demo: Option<String>,
    pub addons_path: Option<String>,
    pub data_dir: Option<String>,
    pub http_interface: Option<String>,
    pub http_port: Option<u16>,
    pub gevent_port: Option<u16>,
    /// `Some(false)` after `--no-http`.
    pub http_enable: Option<bool>,
    pub stop_after_init: bool,
    pub log_level: Option<String>,
    pub db_name: Option<String>,
    pub db_user: Option<String>,
    pub db_password: Option<String>,
    pub db_host: Option<String>,
    pub db_port: Option<u16>,
    pub workers: Option<u32>,
    pub load_language: Option<String>,
}

/// A command-line error, printed as optparse does before exiting with status 2.
#[derive(Debug, PartialEq, Eq)]
pub struct UsageError(pub String);

impl fmt::Display for UsageError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Usage: odoo [options]\n\nodoo: error: {}", self.0)
    }
}

impl std::error::Error for UsageError {}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Flag,
    Text,
    Int,
    Choice(&'static [&'static str]),
}

/// Where a recognised option's value goes. Options the stand-in has no use for are accepted
/// (so command lines written for real Odoo work) and dropped.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Dest {
    Config,
    Init,
    Update,
    WithoutDemo,
    AddonsPath,
    DataDir,
    HttpInterface,
    HttpPort,
    GeventPort,
    LongpollingPort,
    NoHttp,
    StopAfterInit,
    LogLevel,
    DbName,
    DbUser,
    DbPassword,
    DbHost,
    DbPort,
    Workers,
    LoadLanguage,
    Version,
    Help,
    Ignored,
}

struct Spec {
    names: &'static [&'static str],
    kind: Kind,
    dest: Dest,
}

const LOG_LEVELS: &[&str] = &[
    "info",
    "debug_rpc",
    "warn",
    "test",
    "critical",
    "runbot",
    "debug_sql",
    "error",
    "debug",
    "debug_rpc_answer",
    "notset",
];

const SSL_MODES: &[&str] = &[
    "disable",
    "allow",
    "prefer",
    "require",
    "verify-ca",
    "verify-full",
];

/// Odoo 17's options (odoo/tools/config.py), plus `-v` for the version as the brief asks.
const SPECS: &[Spec] = &[
    spec(&["-h", "--help"], Kind::Flag, Dest::Help),
    spec(&["--version", "-v"], Kind::Flag, Dest::Version),
    spec(&["-c", "--config"], Kind::Text, Dest::Config),
    spec(&["-s", "--save"], Kind::Flag, Dest::Ignored),
    spec(&["-i", "--init"], Kind::Text, Dest::Init),
    spec(&["-u", "--update"], Kind::Text, Dest::Update),
    spec(&["--without-demo"], Kind::Text, Dest::WithoutDemo),
    spec(&["-P", "--import-partial"], Kind::Text, Dest::Ignored),
    spec(&["--pidfile"], Kind::Text, Dest::Ignored),
    spec(&["--addons-path"], Kind::Text, Dest::AddonsPath),
    spec(&["--upgrade-path"], Kind::Text, Dest::Ignored),
    spec(&["--load"], Kind::Text, Dest::Ignored),
    spec(&["-D", "--data-dir"], Kind::Text, Dest::DataDir),
    spec(
        &["--http-interface", "--xmlrpc-interface"],
        Kind::Text,
        Dest::HttpInterface,
    ),
    spec(
        &["-p", "--http-port", "--xmlrpc-port"],
        Kind::Int,
        Dest::HttpPort,
    ),
    spec(&["--longpolling-port"], Kind::Int, Dest::LongpollingPort),
    spec(&["--gevent-port"], Kind::Int, Dest::GeventPort),
    spec(&["--no-http", "--no-xmlrpc"], Kind::Flag, Dest::NoHttp),
    spec(&["--proxy-mode"], Kind::Flag, Dest::Ignored),
    spec(&["--x-sendfile"], Kind::Flag, Dest::Ignored),
    spec(&["--db-filter"], Kind::Text, Dest::Ignored),
    spec(&["--test-file"], Kind::Text, Dest::Ignored),
    spec(&["--test-enable"], Kind::Flag, Dest::Ignored),
    spec(&["--test-tags"], Kind::Text, Dest::Ignored),
    spec(&["--screencasts"], Kind::Text, Dest::Ignored),
    spec(&["--screenshots"], Kind::Text, Dest::Ignored),
    spec(&["--logfile"], Kind::Text, Dest::Ignored),
    spec(&["--syslog"], Kind::Flag, Dest::Ignored),
    spec(&["--log-handler"], Kind::Text, Dest::Ignored),
    spec(&["--log-web"], Kind::Flag, Dest::Ignored),
    spec(&["--log-sql"], Kind::Flag, Dest::Ignored),
    spec(&["--log-db"], Kind::Text, Dest::Ignored),
    spec(&["--log-db-level"], Kind::Text, Dest::Ignored),
    spec(&["--log-level"], Kind::Choice(LOG_LEVELS), Dest::LogLevel),
    spec(&["--email-from"], Kind::Text, Dest::Ignored),
    spec(&["--from-filter"], Kind::Text, Dest::Ignored),
    spec(&["--smtp"], Kind::Text, Dest::Ignored),
    spec(&["--smtp-port"], Kind::Int, Dest::Ignored),
    spec(&["--smtp-ssl"], Kind::Flag, Dest::Ignored),
    spec(&["--smtp-user"], Kind::Text, Dest::Ignored),
    spec(&["--smtp-password"], Kind::Text, Dest::Ignored),
    spec(
        &["--smtp-ssl-certificate-filename"],
        Kind::Text,
        Dest::Ignored,
    ),
    spec(
        &["--smtp-ssl-private-key-filename"],
        Kind::Text,
        Dest::Ignored,
    ),
    spec(&["-d", "--database"], Kind::Text, Dest::DbName),
    spec(&["-r", "--db_user"], Kind::Text, Dest::DbUser),
    spec(&["-w", "--db_password"], Kind::Text, Dest::DbPassword),
    spec(&["--pg_path"], Kind::Text, Dest::Ignored),
    spec(&["--db_host"], Kind::Text, Dest::DbHost),
    spec(&["--db_port"], Kind::Int, Dest::DbPort),
    spec(&["--db_sslmode"], Kind::Choice(SSL_MODES), Dest::Ignored),
    spec(&["--db_sslrootcert"], Kind::Text, Dest::Ignored),
    spec(&["--db_maxconn"], Kind::Int, Dest::Ignored),
    spec(&["--db_maxconn_gevent"], Kind::Int, Dest::Ignored),
    spec(&["--db-template"], Kind::Text, Dest::Ignored),
    spec(&["--load-language"], Kind::Text, Dest::LoadLanguage),
    spec(&["-l", "--language"], Kind::Text, Dest::Ignored),
    spec(&["--i18n-export"], Kind::Text, Dest::Ignored),
    spec(&["--i18n-import"], Kind::Text, Dest::Ignored),
    spec(&["--i18n-overwrite"], Kind::Flag, Dest::Ignored),
    spec(&["--modules"], Kind::Text, Dest::Ignored),
    spec(&["--no-database-list"], Kind::Flag, Dest::Ignored),
    spec(&["--dev"], Kind::Text, Dest::Ignored),
    spec(&["--shell-interface"], Kind::Text, Dest::Ignored),
    spec(&["--stop-after-init"], Kind::Flag, Dest::StopAfterInit),
    spec(&["--osv-memory-count-limit"], Kind::Int, Dest::Ignored),
    spec(&["--transient-age-limit"], Kind::Text, Dest::Ignored),
    spec(&["--max-cron-threads"], Kind::Int, Dest::Ignored),
    spec(&["--unaccent"], Kind::Flag, Dest::Ignored),
    spec(
        &["--geoip-city-db", "--geoip-db"],
        Kind::Text,
        Dest::Ignored,
    ),
    spec(&["--geoip-country-db"], Kind::Text, Dest::Ignored),
    spec(&["--workers"], Kind::Int, Dest::Workers),
    spec(&["--limit-memory-soft"], Kind::Int, Dest::Ignored),
    spec(&["--limit-memory-hard"], Kind::Int, Dest::Ignored),
    spec(&["--limit-time-cpu"], Kind::Int, Dest::Ignored),
    spec(&["--limit-time-real"], Kind::Int, Dest::Ignored),
    spec(&["--limit-time-real-cron"], Kind::Int, Dest::Ignored),
    spec(&["--limit-request"], Kind::Int, Dest::Ignored),
];

const fn spec(names: &'static [&'static str], kind: Kind, dest: Dest) -> Spec {
    Spec { names, kind, dest }
}

/// Odoo commands other than `server` that the stand-in does not implement.
const OTHER_COMMANDS: &[&str] = &[
    "cloc",
    "db",
    "deploy",
    "genproxytoken",
    "help",
    "neutralize",
    "obfuscate",
    "populate",
    "scaffold",
    "shell",
    "start",
    "tsconfig",
    "upgrade_code",
];

/// Interprets the arguments after the program name, as odoo-bin does: a first argument
/// that is not an option names a command (`server` is the default one). The image's
/// entrypoint script, not this program, handles `odoo`/`--` and other programs.
pub fn parse(args: &[String]) -> Result<Invocation, UsageError> {
    let mut args = args;
    if let Some(first) = args.first() {
        if first == "server" {
            args = &args[1..];
        } else if !first.starts_with('-') {
            if OTHER_COMMANDS.contains(&first.as_str()) {
                return Err(UsageError(format!(
                    "the odoo stand-in implements only the server command, not '{first}'"
                )));
            }
            return Ok(Invocation::UnknownCommand(first.clone()));
        }
    }
    parse_options(args)
}

fn parse_options(args: &[String]) -> Result<Invocation, UsageError> {
    let mut options = Options::default();
    let mut positional = Vec::new();
    let mut i = 0;
    while i < args.len() {
        let arg = &args[i];
        i += 1;
        if arg == "--" {
            positional.extend(args[i..].iter().cloned());
            break;
        }
        if let Some(long) = arg.strip_prefix("--") {
            let (name, inline) = match long.split_once('=') {
                Some((name, value)) => (format!("--{name}"), Some(value.to_string())),
                None => (arg.clone(), None),
            };
            let spec = lookup_long(&name)?;
            let canonical = spec_name(spec, &name);
            let value = match (spec.kind, inline) {
                (Kind::Flag, Some(_)) => {
                    return Err(UsageError(format!(
                        "{canonical} option does not take a value"
                    )))
                }
                (Kind::Flag, None) => None,
                (_, Some(value)) => Some(value),
                (_, None) => {
                    let value = args.get(i).cloned().ok_or_else(|| {
                        UsageError(format!("{canonical} option requires 1 argument"))
                    })?;
                    i += 1;
                    Some(value)
                }
            };
            if let Some(done) = apply(&mut options, spec, &canonical, value)? {
                return Ok(done);
            }
        } else if arg.len() > 1 && arg.starts_with('-') {
            // Clustered short options: `-sd db`, `-ddb`.
            let letters: Vec<char> = arg.chars().skip(1).collect();
            let mut j = 0;
            while j < letters.len() {
                let name = format!("-{}", letters[j]);
                let spec = SPECS
                    .iter()
                    .find(|s| s.names.contains(&name.as_str()))
                    .ok_or_else(|| UsageError(format!("no such option: {name}")))?;
                j += 1;
                let value = if spec.kind == Kind::Flag {
                    None
                } else if j < letters.len() {
                    let rest: String = letters[j..].iter().collect();
                    j = letters.len();
                    Some(rest)
                } else {
                    let value = args
                        .get(i)
                        .cloned()
                        .ok_or_else(|| UsageError(format!("{name} option requires 1 argument")))?;
                    i += 1;
                    Some(value)
                };
                if let Some(done) = apply(&mut options, spec, &name, value)? {
                    return Ok(done);
                }
            }
        } else {
            positional.push(arg.clone());
        }
    }
    if !positional.is_empty() {
        return Err(UsageError(format!(
            "unrecognized parameters: '{}'",
            positional.join(" ")
        )));
    }
    Ok(Invocation::Server(Box::new(options)))
}

/// Finds a long option by exact name or, as optparse allows, by an unambiguous prefix.
fn lookup_long(name: &str) -> Result<&'static Spec, UsageError> {
    if let Some(spec) = SPECS.iter().find(|s| s.names.contains(&name)) {
        return Ok(spec);
    }
    let mut matches: Vec<&'static str> = SPECS
        .iter()
        .flat_map(|s| s.names.iter().copied())
        .filter(|n| n.starts_with("--") && n.starts_with(name))
        .collect();
    matches.sort_unstable();
    match matches.as_slice() {
        [] => Err(UsageError(format!("no such option: {name}"))),
        [only] => SPECS
            .iter()
            .find(|s| s.names.contains(only))
            .ok_or_else(|| UsageError(format!("no such option: {name}"))),
        many => Err(UsageError(format!(
            "ambiguous option: {name} ({}?)",
            many.join(", ")
        ))),
    }
}

/// The full spelling of a possibly abbreviated long option, for messages.
fn spec_name(spec: &Spec, given: &str) -> String {
    spec.names
        .iter()
        .find(|n| n.starts_with(given))
        .map_or_else(|| given.to_string(), |n| (*n).to_string())
}

fn apply(
    options: &mut Options,
    spec: &Spec,
    name: &str,
    value: Option<String>,
) -> Result<Option<Invocation>, UsageError> {
    let value = match (spec.kind, value) {
        (Kind::Flag, _) => None,
        (Kind::Int, Some(v)) => {
            if v.trim().parse::<i64>().is_err() {
                return Err(UsageError(format!(
                    "option {name}: invalid integer value: '{v}'"
                )));
            }
            Some(v.trim().to_string())
        }
        (Kind::Choice(choices), Some(v)) => {
            if !choices.contains(&v.as_str()) {
                let quoted: Vec<String> = choices.iter().map(|c| format!("'{c}'")).collect();
                return Err(UsageError(format!(
                    "option {name}: invalid choice: '{v}' (choose from {})",
                    quoted.join(", ")
                )));
            }
            Some(v)
        }
        (_, v) => v,
    };
    let text = || value.clone().unwrap_or_default();
    let port = || -> Result<u16, UsageError> {
        text()
            .parse::<u16>()
            .map_err(|_| UsageError(format!("option {name}: port out of range: '{}'", text())))
    };
    match spec.dest {
        Dest::Help => return Ok(Some(Invocation::Help)),
        Dest::Version => return Ok(Some(Invocation::Version)),
        Dest::Config => options.config = Some(text()),
        Dest::Init => options.init = Some(text()),
        Dest::Update => options.update = Some(text()),
        Dest::WithoutDemo => options.without_demo = Some(text()),
        Dest::AddonsPath => options.addons_path = Some(text()),
        Dest::DataDir => options.data_dir = Some(text()),
        Dest::HttpInterface => options.http_interface = Some(text()),
        Dest::HttpPort => options.http_port = Some(port()?),
        // `--longpolling-port` is Odoo's deprecated alias of `--gevent-port`.
        Dest::GeventPort | Dest::LongpollingPort => options.gevent_port = Some(port()?),
        Dest::NoHttp => options.http_enable = Some(false),
        Dest::StopAfterInit => options.stop_after_init = true,
        Dest::LogLevel => options.log_level = Some(text()),
        Dest::DbName => options.db_name = Some(text()),
        Dest::DbUser => options.db_user = Some(text()),
        Dest::DbPassword => options.db_password = Some(text()),
        Dest::DbHost => options.db_host = Some(text()),
        Dest::DbPort => options.db_port = Some(port()?),
        Dest::Workers => {
            options.workers = Some(text().parse::<u32>().map_err(|_| {
                UsageError(format!(
                    "option {name}: invalid integer value: '{}'",
                    text()
                ))
            })?)
        }
        Dest::LoadLanguage => options.load_language = Some(text()),
        Dest::Ignored => {}
    }
    Ok(None)
}

/// The text `--help` prints: the options the stand-in acts on.
pub const HELP: &str = "Usage: odoo [options]

Options the stand-in acts on (all other Odoo 17 options are accepted and ignored):
  --version, -v            show program's version number and exit
  -c, --config FILE        specify alternate config file (default /etc/odoo/odoo.conf)
  -i, --init MODULES       install modules (comma-separated, \"all\" for all)
  -u, --update MODULES     update modules and their installed dependants (\"all\" for all)
  --stop-after-init        stop the server after its initialization
  --no-http                disable the HTTP and gevent services
  -p, --http-port PORT     listen port for the main HTTP service (default 8069)
  --gevent-port PORT       listen port for the gevent service (default 8072)
  --http-interface ADDR    listen interface (default all)
  --addons-path PATHS      comma-separated addons folders
  -D, --data-dir DIR       where the filestore lives (default /var/lib/odoo)
  -d, --database NAME      database name
  -r, --db_user USER       database user
  -w, --db_password PASS   database password
  --db_host HOST           database host
  --db_port PORT           database port
  --without-demo MODULES   no demo data for these modules (\"all\" for none)
  --load-language LANGS    activate these languages (e.g. fr_FR)
  --workers N              0 (default): websockets on the HTTP port; > 0: on the gevent port
  --log-level LEVEL        info, warn, error, critical, debug, ...
";

#[cfg(test)]
mod tests {
    use super::*;

    fn args(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| (*s).to_string()).collect()
    }

    fn server(list: &[&str]) -> Options {
        match parse(&args(list)) {
            Ok(Invocation::Server(options)) => *options,
            other => panic!("expected server options, got {other:?}"),
        }
    }

    #[test]
    fn reads_the_options_an_update_run_uses() {
        let options = server(&[
            "-d",
            "prod",
            "-u",
            "sale,stock",
            "--stop-after-init",
            "--no-http",
        ]);
        assert_eq!(options.db_name.as_deref(), Some("prod"));
        assert_eq!(options.update.as_deref(), Some("sale,stock"));
        assert!(options.stop_after_init);
        assert_eq!(options.http_enable, Some(false));
    }

    #[test]
    fn accepts_equals_attached_and_clustered_forms() {
        let options = server(&["--database=db1", "-i", "a"]);
        assert_eq!(options.db_name.as_deref(), Some("db1"));
        assert!(matches!(
            parse(&args(&["-ptest"])),
            Err(UsageError(m)) if m == "option -p: invalid integer value: 'test'"
        ));
        let options = server(&["-p8070", "--gevent-port", "8073", "-ddb2", "--db_port=5433"]);
        assert_eq!(options.http_port, Some(8070));
        assert_eq!(options.gevent_port, Some(8073));
        assert_eq!(options.db_name.as_deref(), Some("db2"));
        assert_eq!(options.db_port, Some(5433));
        let options = server(&["-sdclustered"]);
        assert_eq!(options.db_name.as_deref(), Some("clustered"));
    }

    #[test]
    fn accepts_unambiguous_abbreviations() {
        let options = server(&["--stop", "--data-d=/srv/odoo"]);
        assert!(options.stop_after_init);
        assert_eq!(options.data_dir.as_deref(), Some("/srv/odoo"));
        let err = parse(&args(&["--data", "x"])).expect_err("ambiguous");
        assert_eq!(err.0, "ambiguous option: --data (--data-dir, --database?)");
    }

    #[test]
    fn rejects_like_optparse() {
        let err = parse(&args(&["--frobnicate"])).expect_err("unknown");
        assert_eq!(err.0, "no such option: --frobnicate");
        assert_eq!(
            err.to_string(),
            "Usage: odoo [options]\n\nodoo: error: no such option: --frobnicate"
        );
        let err = parse(&args(&["-d"])).expect_err("missing value");
        assert_eq!(err.0, "-d option requires 1 argument");
        let err = parse(&args(&["--stop-after-init=1"])).expect_err("flag with value");
        assert_eq!(err.0, "--stop-after-init option does not take a value");
        let err = parse(&args(&["-d", "x", "extra"])).expect_err("positional");
        assert_eq!(err.0, "unrecognized parameters: 'extra'");
        let err = parse(&args(&["--log-level", "loud"])).expect_err("choice");
        assert!(
            err.0
                .starts_with("option --log-level: invalid choice: 'loud'"),
            "{err}"
        );
        let err = parse(&args(&["-p", "70000"])).expect_err("port");
        assert!(err.0.contains("port out of range"), "{err}");
    }

    #[test]
    fn behaves_like_odoo_bin() {
        assert_eq!(parse(&args(&[])), Ok(Invocation::Server(Box::default())));
        let options = server(&["server", "-d", "y"]);
        assert_eq!(options.db_name.as_deref(), Some("y"));
        assert_eq!(
            parse(&args(&["sh", "-c", "id"])),
            Ok(Invocation::UnknownCommand("sh".into()))
        );
        assert!(parse(&args(&["shell"])).is_err());
        assert_eq!(parse(&args(&["--version"])), Ok(Invocation::Version));
        assert_eq!(parse(&args(&["-v"])), Ok(Invocation::Version));
        let options = server(&["--workers=3", "--load-language", "fr_FR"]);
        assert_eq!(options.workers, Some(3));
        assert_eq!(options.load_language.as_deref(), Some("fr_FR"));
    }

    #[test]
    fn maps_deprecated_aliases_and_ignores_unused_options() {
        let options = server(&[
            "--longpolling-port=9000",
            "--xmlrpc-port",
            "9001",
            "--workers=2",
            "--proxy-mode",
            "--without-demo=all",
            "--db-filter=^x$",
        ]);
        assert_eq!(options.gevent_port, Some(9000));
        assert_eq!(options.http_port, Some(9001));
        assert_eq!(options.without_demo.as_deref(), Some("all"));
    }
}
