//! The CLI's HTTP client for the coordinator API: where to connect, the bearer token, and
//! turning API and network failures into one readable line.

use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// A failure the CLI reports and exits non-zero on.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    /// The API answered with an error body.
    #[error("{message}")]
    Api {
        status: u16,
        code: String,
        message: String,
    },
    #[error("cannot reach the coordinator at {url}: {message}")]
    Network { url: String, message: String },
    #[error("{0}")]
    Usage(String),
    #[error("{0}")]
    Local(String),
    /// The command worked, and what it watched ended badly (a failed deployment).
    #[error("{0}")]
    Outcome(String),
}

/// Where the CLI keeps `ocore login` settings.
pub fn login_file() -> Option<PathBuf> {
    let base = std::env::var_os("XDG_CONFIG_HOME")
        .map(PathBuf::from)
        .filter(|p| p.is_absolute())
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".config")))?;
    Some(base.join("ocore").join("cli.toml"))
}

#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LoginFile {
    pub url: Option<String>,
    pub token: Option<String>,
}

impl LoginFile {
    pub fn read() -> Result<Self, CliError> {
        let Some(path) = login_file() else {
            return Ok(Self::default());
        };
        match std::fs::read_to_string(&path) {
            Ok(text) => toml::from_str(&text)
                .map_err(|e| CliError::Local(format!("{} is not valid: {e}", path.display()))),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Self::default()),
            Err(e) => Err(CliError::Local(format!(
                "cannot read {}: {e}",
                path.display()
            ))),
        }
    }
}

pub struct ApiClient {
    base: String,
    token: Option<String>,
    agent: ureq::Agent,
    /// Without an overall deadline, for event streams (the server sends keep-alives).
    streaming: ureq::Agent,
}

/// One Server-Sent Event as received.
#[derive(Debug, Default, Clone)]
pub struct SseEvent {
    pub id: Option<String>,
    pub event: String,
    pub data: String,
}

fn tls_config(ca_file: Option<&std::path::Path>) -> Result<ureq::tls::TlsConfig, CliError> {
    let mut builder = ureq::tls::TlsConfig::builder();
    if let Some(path) = ca_file {
        let pem = std::fs::read(path)
            .map_err(|e| CliError::Usage(format!("cannot read {}: {e}", path.display())))?;
        let certs: Vec<ureq::tls::Certificate<'static>> = ureq::tls::parse_pem(&pem)
            .filter_map(|item| match item {
                Ok(ureq::tls::PemItem::Certificate(c)) => Some(c),
                _ => None,
            })
            .collect();
        if certs.is_empty() {
            return Err(CliError::Usage(format!(
                "{} holds no PEM certificate",
                path.display()
            )));
        }
        builder = builder.root_certs(ureq::tls::RootCerts::new_with_certs(&certs));
    }
    Ok(builder.build())
}

impl ApiClient {
    /// Flags and environment win over the login file.
    pub fn new(url: Option<String>, token: Option<String>) -> Result<Self, CliError> {
        Self::with_ca(url, token, None)
    }

    /// Like `new`, trusting only the CA certificates in `ca_file` for HTTPS when given.
    pub fn with_ca(
        url: Option<String>,
        token: Option<String>,
        ca_file: Option<&std::path::Path>,
    ) -> Result<Self, CliError> {
        let saved = LoginFile::read()?;
        let base = url.or(saved.url).ok_or_else(|| {
            CliError::Usage(
                "no coordinator URL: pass --url, set OCORE_URL, or run `ocore login`".to_owned(),
            )
        })?;
        let base = base.trim_end_matches('/').to_owned();
        if !(base.starts_with("http://") || base.starts_with("https://")) {
            return Err(CliError::Usage(format!(
                "coordinator URL {base:?} must start with http:// or https://"
            )));
        }
        let tls = tls_config(ca_file)?;
        let agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(60)))
            .tls_config(tls.clone())
            .build()
            .into();
        let streaming = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_connect(Some(Duration::from_secs(15)))
            // Keep-alive comments arrive every 15 s; a silent minute means a dead link.
            .timeout_recv_body(Some(Duration::from_secs(60)))
            .tls_config(tls)
            .build()
            .into();
        Ok(Self {
            streaming,
            base,
            // An empty OCORE_TOKEN means "no token", not an empty bearer.
            token: token.filter(|t| !t.trim().is_empty()).or(saved.token),
            agent,
        })
    }

    pub fn base(&self) -> &str {
        &self.base
    }

    pub fn get(&self, path: &str) -> Result<Value, CliError> {
        self.call("GET", path, None)
    }

    pub fn post(&self, path: &str, body: &Value) -> Result<Value, CliError> {
        self.call("POST", path, Some(body))
    }

    pub fn patch(&self, path: &str, body: &Value) -> Result<Value, CliError> {
        self.call("PATCH", path, Some(body))
    }

    pub fn delete(&self, path: &str) -> Result<Value, CliError> {
        self.call("DELETE", path, None)
    }

    pub fn put(&self, path: &str, body: &Value) -> Result<Value, CliError> {
        self.call("PUT", path, Some(body))
    }

    /// Reads a Server-Sent Events stream, calling `on_event` for each event until the
    /// stream ends or `on_event` returns false. Resumes after `last_id` when given.
    pub fn events(
        &self,
        path: &str,
        last_id: Option<&str>,
        on_event: &mut dyn FnMut(&SseEvent) -> bool,
    ) -> Result<(), CliError> {
        use std::io::BufRead;
        let url = format!("{}{path}", self.base);
        let network = |e: ureq::Error| CliError::Network {
            url: self.base.clone(),
            message: e.to_string(),
        };
        let mut req = self
            .streaming
            .get(&url)
            .header("Accept", "text/event-stream");
        if let Some(t) = &self.token {
            req = req.header("Authorization", format!("Bearer {t}"));
        }
        if let Some(id) = last_id {
            req = req.header("Last-Event-ID", id);
        }
        let response = req.call().map_err(network)?;
        let status = response.status().as_u16();
        if !(200..300).contains(&status) {
            let mut response = response;
            let text = response.body_mut().read_to_string().unwrap_or_default();
            let value: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
            return Err(CliError::Api {
                status,
                code: value["error"]["code"]
                    .as_str()
                    .unwrap_or("error")
                    .to_owned(),
                message: value["error"]["message"]
                    .as_str()
                    .map(str::to_owned)
                    .unwrap_or_else(|| format!("HTTP {status} from {url}")),
            });
        }
        let reader = std::io::BufReader::new(response.into_body().into_reader());
        let mut current = SseEvent::default();
        for line in reader.lines() {
            let line = line.map_err(|e| CliError::Network {
                url: self.base.clone(),
                message: e.to_string(),
            })?;
            if line.is_empty() {
                let has_event = !current.data.is_empty() || !current.event.is_empty();
                if has_event && !on_event(&current) {
                    return Ok(());
                }
                current = SseEvent::default();
                continue;
            }
            if line.starts_with(':') {
                continue;
            }
            let (field, value) = line.split_once(':').unwrap_or((line.as_str(), ""));
            let value = value.strip_prefix(' ').unwrap_or(value);
            match field {
                "id" => current.id = Some(value.to_owned()),
                "event" => current.event = value.to_owned(),
                "data" => {
                    if !current.data.is_empty() {
                        current.data.push('\n');
                    }
                    current.data.push_str(value);
                }
                _ => {}
            }
        }
        Ok(())
    }

    fn call(&self, method: &str, path: &str, body: Option<&Value>) -> Result<Value, CliError> {
        let url = format!("{}{path}", self.base);
        let network = |e: ureq::Error| CliError::Network {
            url: self.base.clone(),
            message: e.to_string(),
        };
        let auth = self.token.as_ref().map(|t| format!("Bearer {t}"));
        let response = match (method, body) {
            ("GET", _) | ("DELETE", None) => {
                let mut req = if method == "GET" {
                    self.agent.get(&url)
                } else {
                    self.agent.delete(&url)
                };
                if let Some(a) = &auth {
                    req = req.header("Authorization", a);
                }
                req.call()
            }
            (_, body) => {
                let mut req = match method {
                    "PATCH" => self.agent.patch(&url),
                    "PUT" => self.agent.put(&url),
                    _ => self.agent.post(&url),
                };
                if let Some(a) = &auth {
                    req = req.header("Authorization", a);
                }
                req.send_json(body.cloned().unwrap_or(Value::Null))
            }
        };
        let mut response = response.map_err(network)?;
        let status = response.status().as_u16();
        let text = response.body_mut().read_to_string().map_err(network)?;
        let value: Value = if text.trim().is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).unwrap_or(Value::String(text))
        };
        if (200..300).contains(&status) {
            return Ok(value);
        }
        let code = value["error"]["code"]
            .as_str()
            .unwrap_or("error")
            .to_owned();
        let mut message = value["error"]["message"]
            .as_str()
            .map(str::to_owned)
            .unwrap_or_else(|| format!("HTTP {status} from {url}"));
        if status == 401 && self.token.is_none() {
            message.push_str(" (pass --token, set OCORE_TOKEN, or run `ocore login`)");
        }
        Err(CliError::Api {
            status,
            code,
            message,
        })
    }
}
