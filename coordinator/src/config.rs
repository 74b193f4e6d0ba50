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
    /// The URL Git providers and users reach the coordinator at, e.g.
    /// `https://ocore.example.com` (behind a proxy it is not `listen`). Webhook URLs are
    /// built from it; without it, from the Host header of the request that asks.
    #[serde(default)]
    pub public_url: Option<String>,
    #[serde(default)]
    pub webhooks: WebhooksConfig,
}

/// Bounds on webhook deliveries, which arrive without a token.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhooksConfig {
    /// Largest delivery body accepted (413 above it). GitHub caps payloads at 25 MB; a push
    /// of thousands of commits can exceed the 5 MiB default.
    #[serde(default = "default_webhook_body")]
    pub max_body_bytes: usize,
    /// Deliveries a project may receive at once, then `rate_limit_per_minute` (429 above
    /// it). Deliveries with a bad signature have a bucket of their own, so a flood of
    /// forged requests cannot starve the real ones.
    #[serde(default = "default_webhook_burst")]
    pub rate_limit_burst: u32,
    #[serde(default = "default_webhook_rate")]
    pub rate_limit_per_minute: u32,
}

impl Default for WebhooksConfig {
    fn default() -> Self {
        Self {
            max_body_bytes: default_webhook_body(),
            rate_limit_burst: default_webhook_burst(),
            rate_limit_per_minute: default_webhook_rate(),
        }
    }
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
fn default_webhook_body() -> usize {
    5 * 1024 * 1024
}
fn default_webhook_burst() -> u32 {
    30
}
fn default_webhook_rate() -> u32 {
    30
}

/// Checks `public_url`: an http(s) URL of a host (and optional port and path prefix),
/// without credentials, query or fragment.
fn check_public_url(url: &str) -> Result<(), String> {
    let rest = url
        .strip_prefix("https://")
        .or_else(|| url.strip_prefix("http://"))
        .ok_or("it must start with https:// or http://")?;
    let host = rest.split('/').next().unwrap_or_default();
    if host.is_empty() {
        return Err("it names no host".to_owned());
    }
    if url.len() > 512
        || url
            .chars()
            .any(|c| c.is_whitespace() || c.is_control() || matches!(c, '?' | '#' | '@' | '\\'))
    {
        return Err(
            "it must be a plain URL without spaces, credentials, query or fragment".to_owned(),
        );
    }
    Ok(())
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
        if let Some(url) = &config.public_url {
            if let Err(why) = check_public_url(url) {
                problems.push(format!(
                    "public_url {:?}: {why} (e.g. https://ocore.example.com)",
                    crate::domain::shorten(url)
                ));
            }
        }
        let w = &config.webhooks;
        if !(1024..=64 * 1024 * 1024).contains(&w.max_body_bytes) {
            problems.push("webhooks.max_body_bytes must be between 1024 and 67108864".to_owned());
        }
        if w.rate_limit_burst == 0 || w.rate_limit_per_minute == 0 {
            problems.push(
                "webhooks.rate_limit_burst and webhooks.rate_limit_per_minute must be greater than 0"
                    .to_owned(),
            );
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

    /// `public_url` without a trailing slash.
    pub fn public_base_url(&self) -> Option<&str> {
        self.public_url.as_deref().map(|u| u.trim_end_matches('/'))
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
    fn public_url_and_webhook_bounds() {
        let c = parse("listen = \"127.0.0.1:8800\"\npublic_url = \"https://ocore.example.com/\"\n")
            .expect("valid");
        assert_eq!(c.public_base_url(), Some("https://ocore.example.com"));
        assert_eq!(c.webhooks.max_body_bytes, 5 * 1024 * 1024);
        assert_eq!(c.webhooks.rate_limit_burst, 30);
        assert!(parse(
            "listen = \"127.0.0.1:8800\"\npublic_url = \"http://10.0.0.1:8800/ocore\"\n"
        )
        .is_ok());
        for bad in [
            "ocore.example.com",
            "ftp://x",
            "https://",
            "https://user:pw@x",
            "https://x/?a=1",
            "https://x y",
        ] {
            let err = parse(&format!(
                "listen = \"127.0.0.1:8800\"\npublic_url = \"{bad}\"\n"
            ))
            .expect_err(bad);
            assert!(err.to_string().contains("public_url"), "{err}");
        }
        let err = parse(
            "listen = \"127.0.0.1:8800\"\n[webhooks]\nmax_body_bytes = 10\nrate_limit_burst = 0\n",
        )
        .expect_err("bounds");
        let msg = err.to_string();
        assert!(
            msg.contains("max_body_bytes") && msg.contains("rate_limit_burst"),
            "{msg}"
        );
        assert!(parse("listen = \"127.0.0.1:8800\"\n[webhooks]\nburst = 1\n").is_err());
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
