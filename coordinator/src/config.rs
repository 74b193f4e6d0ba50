//! The coordinator's configuration file (`/etc/ocore/coordinator.toml`).

use std::io::ErrorKind;
use std::net::SocketAddr;
use std::path::{Component, Path, PathBuf};

use serde::Deserialize;

/// Default location of the coordinator's configuration.
pub const DEFAULT_CONFIG_PATH: &str = "/etc/ocore/coordinator.toml";

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CoordinatorConfig {
    /// Address of the REST API, dashboard and enrolment endpoint.
    pub listen: SocketAddr,
    /// The embedded store and the CA live below this directory.
    #[serde(default = "default_state_dir")]
    pub state_dir: PathBuf,
    #[serde(default)]
    pub agents: AgentsConfig,
    #[serde(default)]
    pub pki: PkiConfig,
    /// HTTPS for the REST listener; without it the API is plain HTTP (put it behind a
    /// TLS-terminating proxy, or bind it to loopback).
    #[serde(default)]
    pub tls: Option<TlsConfig>,
    #[serde(default)]
    pub metrics: MetricsConfig,
    #[serde(default)]
    pub secrets: SecretsConfig,
}

/// Where the key that seals repository credentials and webhook secrets lives.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SecretsConfig {
    /// The key file (64 hex characters, mode 0600). Default `<state_dir>/secrets.key`,
    /// created on first start. Keep it out of store backups, or back it up separately.
    #[serde(default)]
    pub key_file: Option<PathBuf>,
}

/// Certificate files of the REST listener (PEM). Re-read on SIGHUP.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// Certificate chain, leaf first.
    pub cert: PathBuf,
    /// Private key (PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MetricsConfig {
    /// Serve `/metrics` without a token (for scrapers on a trusted network).
    #[serde(default)]
    pub public: bool,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgentsConfig {
    /// How often each agent is asked for its status.
    #[serde(default = "default_poll_interval")]
    pub poll_interval_secs: u64,
    /// TCP connect plus TLS handshake deadline.
    #[serde(default = "default_connect_timeout")]
    pub connect_timeout_secs: u64,
    /// Deadline of a unary call to an agent.
    #[serde(default = "default_request_timeout")]
    pub request_timeout_secs: u64,
}

impl Default for AgentsConfig {
    fn default() -> Self {
        Self {
            poll_interval_secs: default_poll_interval(),
            connect_timeout_secs: default_connect_timeout(),
            request_timeout_secs: default_request_timeout(),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PkiConfig {
    /// Lifetime of agent certificates.
    #[serde(default = "default_cert_validity")]
    pub agent_cert_validity_secs: u64,
    /// Lifetime of the coordinator's own client certificate.
    #[serde(default = "default_cert_validity")]
    pub coordinator_cert_validity_secs: u64,
    /// A certificate with less than this left is renewed.
    #[serde(default = "default_renew_before")]
    pub renew_before_secs: u64,
    /// Default lifetime of an enrolment token.
    #[serde(default = "default_enrolment_ttl")]
    pub enrolment_token_ttl_secs: u64,
}

impl Default for PkiConfig {
    fn default() -> Self {
        Self {
            agent_cert_validity_secs: default_cert_validity(),
            coordinator_cert_validity_secs: default_cert_validity(),
            renew_before_secs: default_renew_before(),
            enrolment_token_ttl_secs: default_enrolment_ttl(),
        }
    }
}

fn default_state_dir() -> PathBuf {
    PathBuf::from("/var/lib/ocore")
}
fn default_poll_interval() -> u64 {
    10
}
fn default_connect_timeout() -> u64 {
    5
}
fn default_request_timeout() -> u64 {
    15
}
fn default_cert_validity() -> u64 {
    30 * 24 * 3600
}
fn default_renew_before() -> u64 {
    10 * 24 * 3600
}
fn default_enrolment_ttl() -> u64 {
    3600
}

/// Why the configuration file cannot be used. Each variant names the file.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {path}: permission denied; run as the ocore user or root (the file should be mode 0640, group ocore)")]
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

impl CoordinatorConfig {
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

    pub fn parse(text: &str, path: &Path) -> Result<Self, ConfigError> {
        let config: Self = toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: path.to_owned(),
            message: e.to_string().trim_end().to_owned(),
        })?;
        let mut problems = Vec::new();
        if !config.state_dir.is_absolute()
            || config
                .state_dir
                .components()
                .any(|c| c == Component::ParentDir)
        {
            problems.push(format!(
                "state_dir {:?} must be an absolute path without '..'",
                config.state_dir
            ));
        }
        let a = &config.agents;
        for (what, v) in [
            ("agents.poll_interval_secs", a.poll_interval_secs),
            ("agents.connect_timeout_secs", a.connect_timeout_secs),
            ("agents.request_timeout_secs", a.request_timeout_secs),
            (
                "pki.agent_cert_validity_secs",
                config.pki.agent_cert_validity_secs,
            ),
            (
                "pki.coordinator_cert_validity_secs",
                config.pki.coordinator_cert_validity_secs,
            ),
            (
                "pki.enrolment_token_ttl_secs",
                config.pki.enrolment_token_ttl_secs,
            ),
        ] {
            if v == 0 {
                problems.push(format!("{what} must be greater than 0"));
            }
        }
        let p = &config.pki;
        if p.renew_before_secs >= p.agent_cert_validity_secs
            || p.renew_before_secs >= p.coordinator_cert_validity_secs
        {
            problems.push(
                "pki.renew_before_secs must be shorter than both certificate validities, \
                 or certificates would be renewed constantly"
                    .to_owned(),
            );
        }
        if let Some(key) = &config.secrets.key_file {
            if !key.is_absolute() {
                problems.push(format!("secrets.key_file {key:?} must be an absolute path"));
            }
        }
        if let Some(tls) = &config.tls {
            for (what, p) in [("tls.cert", &tls.cert), ("tls.key", &tls.key)] {
                if !p.is_absolute() {
                    problems.push(format!("{what} {p:?} must be an absolute path"));
                }
            }
        }
        if problems.is_empty() {
            Ok(config)
        } else {
            Err(ConfigError::Invalid {
                path: path.to_owned(),
                problems,
            })
        }
    }

    pub fn ca_dir(&self) -> PathBuf {
        self.state_dir.join("ca")
    }

    pub fn store_dir(&self) -> PathBuf {
        self.state_dir.join("store")
    }

    pub fn secrets_key_file(&self) -> PathBuf {
        self.secrets
            .key_file
            .clone()
            .unwrap_or_else(|| self.state_dir.join("secrets.key"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<CoordinatorConfig, ConfigError> {
        CoordinatorConfig::parse(text, Path::new("coordinator.toml"))
    }

    #[test]
    fn minimal_config_gets_defaults() {
        let c = parse("listen = \"127.0.0.1:8800\"\n").expect("valid");
        assert_eq!(c.state_dir, PathBuf::from("/var/lib/ocore"));
        assert_eq!(c.pki.enrolment_token_ttl_secs, 3600);
        assert_eq!(c.ca_dir(), PathBuf::from("/var/lib/ocore/ca"));
        assert_eq!(
            c.secrets_key_file(),
            PathBuf::from("/var/lib/ocore/secrets.key")
        );
        let err = parse("listen = \"127.0.0.1:8800\"\n[secrets]\nkey_file = \"k\"\n")
            .expect_err("relative key file");
        assert!(err.to_string().contains("secrets.key_file"), "{err}");
    }

    #[test]
    fn unknown_keys_and_bad_values_are_refused() {
        let err = parse("listen = \"127.0.0.1:8800\"\nlisten_port = 1\n").expect_err("unknown");
        assert!(err.to_string().contains("listen_port"), "{err}");
        let err = parse("listen = \"nowhere\"\n").expect_err("bad addr");
        assert!(err.to_string().contains("listen"), "{err}");
        let err = parse(
            "listen = \"127.0.0.1:1\"\nstate_dir = \"rel\"\n[pki]\nrenew_before_secs = 99999999\n",
        )
        .expect_err("invalid");
        let msg = err.to_string();
        assert!(msg.contains("state_dir"), "{msg}");
        assert!(msg.contains("renew_before_secs"), "{msg}");
    }

    #[test]
    fn tls_and_metrics_sections() {
        let c = parse(
            "listen = \"127.0.0.1:8800\"\n[tls]\ncert = \"/etc/ocore/tls/cert.pem\"\nkey = \"/etc/ocore/tls/key.pem\"\n[metrics]\npublic = true\n",
        )
        .expect("valid");
        assert!(c.metrics.public);
        assert_eq!(
            c.tls.map(|t| t.key),
            Some(PathBuf::from("/etc/ocore/tls/key.pem"))
        );
        let err = parse("listen = \"127.0.0.1:8800\"\n[tls]\ncert = \"c.pem\"\nkey = \"/k\"\n")
            .expect_err("relative");
        assert!(err.to_string().contains("tls.cert"), "{err}");
        assert!(parse("listen = \"127.0.0.1:8800\"\n[tls]\ncert = \"/c\"\n").is_err());
    }
}
