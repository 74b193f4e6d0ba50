//! The agent's configuration file (`/etc/ocore/agent.toml`): what the agent listens on, where
//! it keeps state, and the Odoo instances it is allowed to act on.
//!
//! The instance list is the agent's authority boundary: a coordinator request names an
//! instance by id and can never widen what is declared here.

use std::collections::BTreeSet;
use std::io::ErrorKind;
use std::net::SocketAddr;
use std::path::{Component, Path, PathBuf};

use serde::Deserialize;

/// Default location of the agent's configuration.
pub const DEFAULT_CONFIG_PATH: &str = "/etc/ocore/agent.toml";

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgentConfig {
    /// Address the gRPC service binds, e.g. `0.0.0.0:7700`.
    pub listen: SocketAddr,
    /// Journal, Git mirrors, snapshots and the TLS identity live below this directory.
    #[serde(default = "default_state_dir")]
    pub state_dir: PathBuf,
    #[serde(default)]
    pub registry: RegistryConfig,
    #[serde(default)]
    pub postgres: PostgresConfig,
    #[serde(default)]
    pub nginx: NginxConfig,
    #[serde(default)]
    pub pipeline: PipelineConfig,
    #[serde(default)]
    pub snapshots: SnapshotsConfig,
    #[serde(default, rename = "instance")]
    pub instances: Vec<InstanceConfig>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegistryConfig {
    /// `host:port` of the host's local registry images are pushed to.
    #[serde(default = "default_registry")]
    pub address: String,
}

impl Default for RegistryConfig {
    fn default() -> Self {
        Self {
            address: default_registry(),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PostgresConfig {
    #[serde(default = "default_pg_host")]
    pub host: String,
    #[serde(default = "default_pg_port")]
    pub port: u16,
    #[serde(default = "default_pg_user")]
    pub user: String,
    /// File holding the password (kept out of this file so the config can be shared).
    #[serde(default)]
    pub password_file: Option<PathBuf>,
}

impl Default for PostgresConfig {
    fn default() -> Self {
        Self {
            host: default_pg_host(),
            port: default_pg_port(),
            user: default_pg_user(),
            password_file: None,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NginxConfig {
    #[serde(default = "default_nginx_binary")]
    pub binary: PathBuf,
    /// Directory included by nginx where the agent writes one file per instance.
    #[serde(default = "default_nginx_conf_dir")]
    pub conf_dir: PathBuf,
    /// Main configuration file passed as `-c` to `nginx -t` and `nginx -s reload`
    /// (nginx's compiled-in default when absent).
    #[serde(default)]
    pub config_file: Option<PathBuf>,
    /// Prefix passed as `-p` (nginx's compiled-in default when absent).
    #[serde(default)]
    pub prefix: Option<PathBuf>,
}

impl Default for NginxConfig {
    fn default() -> Self {
        Self {
            binary: default_nginx_binary(),
            conf_dir: default_nginx_conf_dir(),
            config_file: None,
            prefix: None,
        }
    }
}

/// Deadlines and pacing of the deployment pipeline (`[pipeline]`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PipelineConfig {
    /// A step running longer than this fails (per step).
    #[serde(default = "default_step_timeout")]
    pub step_timeout_secs: u64,
    /// How long a new colour may take to answer its health checks.
    #[serde(default = "default_health_timeout")]
    pub health_timeout_secs: u64,
    /// Time the old colour keeps running after traffic moved away, for in-flight requests.
    #[serde(default = "default_drain")]
    pub drain_secs: u64,
    /// Time a stopping Odoo container gets between SIGTERM and SIGKILL.
    #[serde(default = "default_stop_grace")]
    pub stop_grace_secs: u64,
    /// Finished deployments the agent's journal keeps per instance (the coordinator keeps
    /// the whole history).
    #[serde(default = "default_journal_keep_runs")]
    pub journal_keep_runs: usize,
}

impl Default for PipelineConfig {
    fn default() -> Self {
        Self {
            step_timeout_secs: default_step_timeout(),
            health_timeout_secs: default_health_timeout(),
            drain_secs: default_drain(),
            stop_grace_secs: default_stop_grace(),
            journal_keep_runs: default_journal_keep_runs(),
        }
    }
}

fn default_step_timeout() -> u64 {
    1800
}
fn default_health_timeout() -> u64 {
    120
}
fn default_drain() -> u64 {
    2
}
fn default_stop_grace() -> u64 {
    20
}
fn default_journal_keep_runs() -> usize {
    20
}

/// How snapshots are taken and restored (`[snapshots]`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SnapshotsConfig {
    /// Parallel jobs of `pg_dump -Fd` (each is one more PostgreSQL connection).
    #[serde(default = "default_pg_jobs")]
    pub pg_dump_jobs: u32,
    /// Parallel jobs of `pg_restore`.
    #[serde(default = "default_pg_jobs")]
    pub pg_restore_jobs: u32,
    /// Directory holding `pg_dump`, `pg_restore` and `psql`. Unset: the newest
    /// `/usr/lib/postgresql/<major>/bin` that can dump the server, else `/usr/bin`.
    #[serde(default)]
    pub pg_bin_dir: Option<PathBuf>,
    /// zstd level of filestore blobs (1-19); 3 is zstd's own default.
    #[serde(default = "default_blob_level")]
    pub blob_zstd_level: i32,
}

impl Default for SnapshotsConfig {
    fn default() -> Self {
        Self {
            pg_dump_jobs: default_pg_jobs(),
            pg_restore_jobs: default_pg_jobs(),
            pg_bin_dir: None,
            blob_zstd_level: default_blob_level(),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InstanceConfig {
    /// Identifier the coordinator uses to name this instance.
    pub id: String,
    /// The PostgreSQL database of this instance; the only one the agent touches for it.
    pub database: String,
    /// Odoo's data directory (holds `filestore/<database>`).
    pub data_dir: PathBuf,
    /// Image the generated Dockerfile starts from, e.g. `odoo:17.0`.
    pub base_image: String,
    /// Port nginx serves this instance on.
    pub public_port: u16,
    pub blue: ColorPorts,
    pub green: ColorPorts,
    /// Owner of restored filestore files: the container's `odoo` user (101 in the
    /// official image).
    #[serde(default = "default_odoo_id")]
    pub odoo_uid: u32,
    #[serde(default = "default_odoo_id")]
    pub odoo_gid: u32,
    /// Load Odoo's demo data when oCore creates the database (never for production).
    #[serde(default)]
    pub demo: bool,
    /// Language of a database oCore creates (loaded, and the admin's), e.g. `fr_FR`.
    #[serde(default = "default_language")]
    pub language: String,
    /// Country of the main company of a database oCore creates (ISO code, e.g. `BE`).
    #[serde(default)]
    pub country: Option<String>,
    /// Odoo's `workers`. Unset: what the image's `odoo.conf` says (Odoo's default is 0,
    /// one threaded process serving websockets on its HTTP port).
    #[serde(default)]
    pub workers: Option<u32>,
    /// Address the colours listen on. Loopback: only nginx reaches them (Odoo runs with
    /// `--proxy-mode`, which trusts `X-Forwarded-*` from whoever connects).
    #[serde(default = "default_http_interface")]
    pub http_interface: std::net::IpAddr,
    /// Address nginx listens on for `public_port`; unset, every address.
    #[serde(default)]
    pub public_address: Option<std::net::IpAddr>,
}

#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ColorPorts {
    /// Odoo's HTTP port for this colour.
    pub http: u16,
    /// Odoo's websocket / gevent port for this colour.
    pub gevent: u16,
}

fn default_state_dir() -> PathBuf {
    PathBuf::from("/var/lib/ocore-agent")
}
fn default_registry() -> String {
    "127.0.0.1:5000".to_owned()
}
fn default_pg_host() -> String {
    "127.0.0.1".to_owned()
}
fn default_pg_port() -> u16 {
    5432
}
fn default_pg_user() -> String {
    "odoo".to_owned()
}
fn default_nginx_binary() -> PathBuf {
    PathBuf::from("/usr/sbin/nginx")
}
fn default_nginx_conf_dir() -> PathBuf {
    PathBuf::from("/etc/nginx/conf.d")
}
fn default_pg_jobs() -> u32 {
    2
}
fn default_blob_level() -> i32 {
    3
}
fn default_odoo_id() -> u32 {
    101
}
fn default_language() -> String {
    "en_US".to_owned()
}
fn default_http_interface() -> std::net::IpAddr {
    std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST)
}

/// Odoo language codes: `fr`, `fr_BE`, `sr@latin`.
pub fn validate_language(code: &str) -> Result<(), String> {
    let (base, script) = match code.split_once('@') {
        Some((b, s)) => (b, Some(s)),
        None => (code, None),
    };
    let (lang, region) = match base.split_once('_') {
        Some((l, r)) => (l, Some(r)),
        None => (base, None),
    };
    let ok = (2..=3).contains(&lang.len())
        && lang.bytes().all(|b| b.is_ascii_lowercase())
        && region.is_none_or(|r| {
            (2..=3).contains(&r.len())
                && r.bytes()
                    .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit())
        })
        && script.is_none_or(|s| {
            !s.is_empty() && s.len() <= 8 && s.bytes().all(|b| b.is_ascii_lowercase())
        });
    if ok {
        Ok(())
    } else {
        Err(format!(
            "language {code:?} must be an Odoo language code such as en_US, fr_BE or sr@latin"
        ))
    }
}

/// Why a configuration file could not be used. Each variant names the file.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {path}: permission denied; run as root or give the agent's user read access (the file should be mode 0640 owned by root)")]
    PermissionDenied { path: PathBuf },
    #[error(
        "cannot read {path}: file not found; create it (see the README's configuration section)"
    )]
    NotFound { path: PathBuf },
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path} is not valid: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("{path} is not valid:\n  - {}", problems.join("\n  - "))]
    Invalid {
        path: PathBuf,
        problems: Vec<String>,
    },
}

impl AgentConfig {
    /// Reads, parses and validates the configuration at `path`.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| match source.kind() {
            ErrorKind::PermissionDenied => ConfigError::PermissionDenied {
                path: path.to_owned(),
            },
            ErrorKind::NotFound => ConfigError::NotFound {
                path: path.to_owned(),
            },
            _ => ConfigError::Read {
                path: path.to_owned(),
                source,
            },
        })?;
        Self::parse(&text, path)
    }

    /// Parses and validates configuration text; `path` only names the source in errors.
    pub fn parse(text: &str, path: &Path) -> Result<Self, ConfigError> {
        let config: AgentConfig = toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: path.to_owned(),
            message: e.to_string().trim_end().to_owned(),
        })?;
        let problems = config.problems();
        if problems.is_empty() {
            Ok(config)
        } else {
            Err(ConfigError::Invalid {
                path: path.to_owned(),
                problems,
            })
        }
    }

    /// Every reason this configuration cannot be used, in file order.
    fn problems(&self) -> Vec<String> {
        let mut problems = Vec::new();
        check_abs_path("state_dir", &self.state_dir, &mut problems);
        check_abs_path("nginx.binary", &self.nginx.binary, &mut problems);
        check_abs_path("nginx.conf_dir", &self.nginx.conf_dir, &mut problems);
        for (what, path) in [
            ("nginx.config_file", &self.nginx.config_file),
            ("nginx.prefix", &self.nginx.prefix),
        ] {
            if let Some(path) = path {
                check_abs_path(what, path, &mut problems);
            }
        }
        for (what, v) in [
            (
                "pipeline.step_timeout_secs",
                self.pipeline.step_timeout_secs,
            ),
            (
                "pipeline.health_timeout_secs",
                self.pipeline.health_timeout_secs,
            ),
            ("pipeline.stop_grace_secs", self.pipeline.stop_grace_secs),
        ] {
            if v == 0 {
                problems.push(format!("{what} must be greater than 0"));
            }
        }
        if !(1..=100_000).contains(&self.pipeline.journal_keep_runs) {
            problems.push(format!(
                "pipeline.journal_keep_runs {} must be between 1 and 100000",
                self.pipeline.journal_keep_runs
            ));
        }
        if let Some(file) = &self.postgres.password_file {
            check_abs_path("postgres.password_file", file, &mut problems);
        }
        let snap = &self.snapshots;
        for (what, jobs) in [
            ("snapshots.pg_dump_jobs", snap.pg_dump_jobs),
            ("snapshots.pg_restore_jobs", snap.pg_restore_jobs),
        ] {
            if !(1..=64).contains(&jobs) {
                problems.push(format!("{what} {jobs} must be between 1 and 64"));
            }
        }
        if let Some(dir) = &snap.pg_bin_dir {
            check_abs_path("snapshots.pg_bin_dir", dir, &mut problems);
        }
        if !(1..=19).contains(&snap.blob_zstd_level) {
            problems.push(format!(
                "snapshots.blob_zstd_level {} must be between 1 and 19",
                snap.blob_zstd_level
            ));
        }
        if !is_host_port(&self.registry.address) {
            problems.push(format!(
                "registry.address {:?} must be host:port, e.g. 127.0.0.1:5000",
                self.registry.address
            ));
        }
        let mut ids = BTreeSet::new();
        let mut databases = BTreeSet::new();
        let mut ports = BTreeSet::new();
        ports.insert(self.listen.port());
        for (i, inst) in self.instances.iter().enumerate() {
            let at = format!("instance #{} ({:?})", i + 1, inst.id);
            if let Err(e) = validate_instance_id(&inst.id) {
                problems.push(format!("{at}: {e}"));
            } else if !ids.insert(inst.id.clone()) {
                problems.push(format!("{at}: id declared twice"));
            }
            if let Err(e) = validate_database_name(&inst.database) {
                problems.push(format!("{at}: {e}"));
            } else if !databases.insert(inst.database.clone()) {
                problems.push(format!(
                    "{at}: database {:?} is already used by another instance",
                    inst.database
                ));
            }
            check_abs_path(&format!("{at}: data_dir"), &inst.data_dir, &mut problems);
            if inst.base_image.trim().is_empty() || inst.base_image.contains(char::is_whitespace) {
                problems.push(format!(
                    "{at}: base_image {:?} must be an image reference like odoo:17.0",
                    inst.base_image
                ));
            }
            if let Err(e) = validate_language(&inst.language) {
                problems.push(format!("{at}: {e}"));
            }
            if let Some(country) = &inst.country {
                if country.len() != 2 || !country.bytes().all(|b| b.is_ascii_uppercase()) {
                    problems.push(format!(
                        "{at}: country {country:?} must be a two-letter ISO code such as BE"
                    ));
                }
            }
            if let Some(workers) = inst.workers {
                if workers > 256 {
                    problems.push(format!("{at}: workers {workers} must be at most 256"));
                }
            }
            for (what, port) in [
                ("public_port", inst.public_port),
                ("blue.http", inst.blue.http),
                ("blue.gevent", inst.blue.gevent),
                ("green.http", inst.green.http),
                ("green.gevent", inst.green.gevent),
            ] {
                if port == 0 {
                    problems.push(format!("{at}: {what} must not be 0"));
                } else if !ports.insert(port) {
                    problems.push(format!(
                        "{at}: {what} {port} is already used (by listen or another port)"
                    ));
                }
            }
        }
        problems
    }

    /// The instance declared with `id`, if any.
    pub fn instance(&self, id: &str) -> Option<&InstanceConfig> {
        self.instances.iter().find(|i| i.id == id)
    }

    /// Directory holding every instance's snapshot store.
    pub fn snapshots_dir(&self) -> PathBuf {
        self.state_dir.join("snapshots")
    }

    /// Directory holding the agent's key, certificate and pinned CA.
    pub fn tls_dir(&self) -> PathBuf {
        self.state_dir.join("tls")
    }
}

fn check_abs_path(what: &str, path: &Path, problems: &mut Vec<String>) {
    if !path.is_absolute() {
        problems.push(format!("{what} {path:?} must be an absolute path"));
    } else if path.components().any(|c| c == Component::ParentDir) {
        problems.push(format!("{what} {path:?} must not contain '..'"));
    }
}

fn is_host_port(s: &str) -> bool {
    match s.rsplit_once(':') {
        Some((host, port)) => {
            !host.is_empty()
                && !host.contains(char::is_whitespace)
                && port.parse::<u16>().is_ok_and(|p| p != 0)
        }
        None => false,
    }
}

/// Instance ids appear in container names, file names and nginx configs: keep them plain.
pub fn validate_instance_id(id: &str) -> Result<(), String> {
    let ok = !id.is_empty()
        && id.len() <= 63
        && id
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
        && id.as_bytes()[0].is_ascii_alphanumeric();
    if ok {
        Ok(())
    } else {
        Err(format!(
            "instance id {id:?} must be 1-63 characters of a-z, 0-9, '-', '_' starting with a letter or digit"
        ))
    }
}

/// Odoo's own rule for database names (`[a-zA-Z0-9_.-]`), bounded by PostgreSQL's 63 bytes.
pub fn validate_database_name(name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name.len() <= 63
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
        && !name.starts_with(['.', '-']);
    if ok {
        Ok(())
    } else {
        Err(format!(
            "database {name:?} must be 1-63 characters of a-z, A-Z, 0-9, '_', '.', '-' not starting with '.' or '-'"
        ))
    }
}

/// A parsed example instance, for tests of other modules: new keys get their defaults.
#[cfg(test)]
impl InstanceConfig {
    pub fn example() -> Self {
        let text = "id = \"shop-prod\"\ndatabase = \"shop\"\ndata_dir = \"/var/lib/odoo/shop\"\n\
                    base_image = \"odoo:17.0\"\npublic_port = 8069\n\
                    blue = { http = 18069, gevent = 18072 }\ngreen = { http = 28069, gevent = 28072 }\n";
        toml::from_str(text).unwrap_or_else(|e| panic!("example instance: {e}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
listen = "127.0.0.1:7700"
state_dir = "/var/lib/ocore-agent"

[[instance]]
id = "shop-prod"
database = "shop"
data_dir = "/var/lib/odoo/shop"
base_image = "odoo:17.0"
public_port = 8069
blue = { http = 18069, gevent = 18072 }
green = { http = 28069, gevent = 28072 }
"#;

    fn parse(text: &str) -> Result<AgentConfig, ConfigError> {
        AgentConfig::parse(text, Path::new("agent.toml"))
    }

    #[test]
    fn good_config_parses_with_defaults() {
        let config = parse(GOOD).expect("valid config");
        assert_eq!(config.instances.len(), 1);
        assert_eq!(config.registry.address, "127.0.0.1:5000");
        assert_eq!(
            config.instance("shop-prod").map(|i| i.blue.http),
            Some(18069)
        );
        assert!(config.instance("other").is_none());
    }

    #[test]
    fn unknown_keys_are_rejected_with_their_name() {
        let err = parse(&format!("{GOOD}\nsurprise = 1\n")).expect_err("unknown key");
        let msg = err.to_string();
        assert!(msg.contains("surprise"), "{msg}");
        let err = parse(&GOOD.replace("base_image", "base_imag")).expect_err("typo");
        assert!(err.to_string().contains("base_imag"), "{err}");
    }

    #[test]
    fn every_problem_is_listed() {
        let bad = GOOD
            .replace("\"shop-prod\"", "\"../etc\"")
            .replace("\"shop\"", "\"shop; drop\"")
            .replace("/var/lib/odoo/shop", "relative/dir")
            .replace("28072", "18069");
        let err = parse(&bad).expect_err("invalid");
        let msg = err.to_string();
        assert!(msg.contains("instance id \"../etc\""), "{msg}");
        assert!(msg.contains("database \"shop; drop\""), "{msg}");
        assert!(msg.contains("must be an absolute path"), "{msg}");
        assert!(msg.contains("green.gevent 18069 is already used"), "{msg}");
    }

    #[test]
    fn duplicate_ids_and_databases_are_refused() {
        let second = &GOOD[GOOD.find("[[instance]]").unwrap_or(0)..]
            .replace("8069", "9069")
            .replace("8072", "9072");
        let err = parse(&format!("{GOOD}\n{second}")).expect_err("duplicate");
        let msg = err.to_string();
        assert!(msg.contains("id declared twice"), "{msg}");
        assert!(msg.contains("already used by another instance"), "{msg}");
    }

    #[test]
    fn missing_file_and_permissions_are_explained() {
        let err = AgentConfig::load(Path::new("/nonexistent/agent.toml")).expect_err("missing");
        assert!(matches!(err, ConfigError::NotFound { .. }), "{err}");
    }

    #[test]
    fn snapshot_settings_have_defaults_and_are_checked() {
        let config = parse(GOOD).expect("valid config");
        assert_eq!(config.snapshots.pg_dump_jobs, 2);
        assert_eq!(config.snapshots.blob_zstd_level, 3);
        assert!(config.snapshots.pg_bin_dir.is_none());
        assert_eq!(
            config
                .instance("shop-prod")
                .map(|i| (i.odoo_uid, i.odoo_gid)),
            Some((101, 101))
        );
        let text = format!(
            "{}\n[snapshots]\npg_dump_jobs = 0\npg_bin_dir = \"bin\"\nblob_zstd_level = 40\n",
            GOOD.replace("base_image", "odoo_uid = 1000\nbase_image")
        );
        let err = parse(&text).expect_err("invalid snapshot settings");
        let msg = err.to_string();
        assert!(msg.contains("snapshots.pg_dump_jobs 0"), "{msg}");
        assert!(msg.contains("snapshots.pg_bin_dir \"bin\""), "{msg}");
        assert!(msg.contains("snapshots.blob_zstd_level 40"), "{msg}");
        let err = parse(&format!("{GOOD}\n[snapshots]\njobs = 2\n")).expect_err("unknown");
        assert!(err.to_string().contains("jobs"), "{err}");
    }

    #[test]
    fn database_creation_and_serving_settings_are_checked() {
        let config = parse(GOOD).expect("valid config");
        let inst = config.instance("shop-prod").expect("instance");
        assert!(!inst.demo);
        assert_eq!(inst.language, "en_US");
        assert_eq!(inst.country, None);
        assert_eq!(inst.workers, None);
        assert_eq!(inst.http_interface.to_string(), "127.0.0.1");
        assert_eq!(inst.public_address, None);
        let text = GOOD.replace(
            "base_image",
            "language = \"french\"\ncountry = \"be\"\nworkers = 1000\nbase_image",
        );
        let err = parse(&text).expect_err("invalid");
        let msg = err.to_string();
        assert!(msg.contains("language \"french\""), "{msg}");
        assert!(msg.contains("country \"be\""), "{msg}");
        assert!(msg.contains("workers 1000"), "{msg}");
        let err = parse(&GOOD.replace("base_image", "http_interface = \"localhost\"\nbase_image"))
            .expect_err("not an address");
        assert!(err.to_string().contains("http_interface"), "{err}");
        assert!(validate_language("sr@latin").is_ok());
        assert!(validate_language("fr_BE").is_ok());
        assert!(validate_language("es_419").is_ok());
        assert!(validate_language("FR").is_err());
    }

    #[test]
    fn names_are_validated() {
        assert!(validate_instance_id("shop_prod-1").is_ok());
        assert!(validate_instance_id("-x").is_err());
        assert!(validate_instance_id("a/b").is_err());
        assert!(validate_database_name("shop.v17-prod_1").is_ok());
        assert!(validate_database_name("shop'").is_err());
        assert!(validate_database_name(&"d".repeat(64)).is_err());
    }
}
