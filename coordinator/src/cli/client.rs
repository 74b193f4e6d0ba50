//! The CLI's HTTP client for the coordinator API: where to connect, the bearer token, and
//! turning API and network failures into one readable line.

use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Exit codes of the client commands (documented in `ocore --help`).
pub mod exit {
    /// What the command watched failed: a deployment, rollback, snapshot or verification.
    pub const FAILED: u8 = 1;
    /// The deployment (or rollback) followed was cancelled.
    pub const CANCELLED: u8 = 2;
    /// The coordinator answered with an error (refused, not found, conflict, ...).
    pub const API: u8 = 3;
    /// The coordinator could not be reached.
    pub const NETWORK: u8 = 4;
    /// A local problem: a file could not be read or written.
    pub const LOCAL: u8 = 5;
    /// Bad flags or arguments, no URL or token, or a confirmation that cannot be asked.
    pub const USAGE: u8 = 64;
    /// Ctrl-C while following: only the following stopped, the deployment goes on.
    pub const INTERRUPTED: u8 = 130;
}

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
    #[error("cannot reach the coordinator at {url}: {message} (is `ocore server` running there? check --url / OCORE_URL)")]
    Network { url: String, message: String },
    #[error("{0}")]
    Usage(String),
    #[error("{0}")]
    Local(String),
    /// The command worked, and what it watched ended badly (a failed deployment).
    #[error("{0}")]
    Outcome(String),
    /// The deployment followed was cancelled.
    #[error("{0}")]
    Cancelled(String),
    /// The user stopped following with Ctrl-C.
    #[error("{0}")]
    Interrupted(String),
}

impl CliError {
    pub fn exit_code(&self) -> u8 {
        match self {
            CliError::Api { .. } => exit::API,
            CliError::Network { .. } => exit::NETWORK,
            CliError::Usage(_) => exit::USAGE,
            CliError::Local(_) => exit::LOCAL,
            CliError::Outcome(_) => exit::FAILED,
            CliError::Cancelled(_) => exit::CANCELLED,
            CliError::Interrupted(_) => exit::INTERRUPTED,
        }
    }
}

/// The API's error message, with what to do about it when the status says.
fn explain(status: u16, code: &str, message: &str, has_token: bool) -> String {
    match (status, code) {
        (401, _) if !has_token => format!(
            "{message}: pass --token, set OCORE_TOKEN, or run `ocore login --url URL --token TOKEN`"
        ),
        (401, _) => format!(
            "the coordinator refused the token ({message}): check OCORE_TOKEN / --token, or run `ocore login` again"
        ),
        (403, _) if message.contains("needs an admin token") => {
            format!("{message}: use an admin token (`ocore token create --admin`)")
        }
        (403, _) => format!("{message}: ask an admin for a token with it"),
        (502, "agent_unreachable") => {
            format!("{message}: check that the agent runs and `ocore agent list` shows it connected")
        }
        (500..=599, _) => format!("the coordinator failed: {message} (see its log)"),
        _ => message.to_owned(),
    }
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
    /// PEM CA certificate(s) for an https:// coordinator with a private CA.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_file: Option<PathBuf>,
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

#[derive(Clone)]
pub struct ApiClient {
    base: String,
    token: Option<String>,
    agent: ureq::Agent,
    /// Without an overall deadline, for event streams (the server sends keep-alives).
    streaming: ureq::Agent,
    /// Without an overall deadline, for archive downloads and uploads.
    transfer: ureq::Agent,
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
        // A broken login file must not stop a command that names URL and token itself
        // (such as `ocore login`, which replaces the file).
        let saved = match LoginFile::read() {
            Ok(saved) => saved,
            Err(_) if url.is_some() && token.is_some() => LoginFile::default(),
            Err(e) => return Err(e),
        };
        let ca_file = ca_file.map(std::path::Path::to_path_buf).or(saved.ca_file);
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
        let tls = tls_config(ca_file.as_deref())?;
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
            // (A per-read limit: `timeout_recv_body` would bound the whole stream.)
            .timeout_per_read(Some(Duration::from_secs(60)))
            .tls_config(tls.clone())
            .build()
            .into();
        let transfer = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_connect(Some(Duration::from_secs(15)))
            // The agent writes and verifies a whole archive before its first byte; an
            // import answers once every part is stored.
            .timeout_per_read(Some(Duration::from_secs(3600)))
            .tls_config(tls)
            .build()
            .into();
        Ok(Self {
            streaming,
            transfer,
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
            return Err(self.api_error(status, &url, &text));
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
        if !(200..300).contains(&status) {
            return Err(self.api_error(status, &url, &text));
        }
        Ok(if text.trim().is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).unwrap_or(Value::String(text))
        })
    }

    /// The one-line error of a non-2xx answer.
    fn api_error(&self, status: u16, url: &str, text: &str) -> CliError {
        let value: Value = serde_json::from_str(text).unwrap_or(Value::Null);
        let code = value["error"]["code"]
            .as_str()
            .unwrap_or("error")
            .to_owned();
        let message = value["error"]["message"]
            .as_str()
            .map(str::to_owned)
            .unwrap_or_else(|| format!("HTTP {status} from {url}"));
        let message = explain(status, &code, &message, self.token.is_some());
        if status == 401 && self.token.is_none() {
            // No token was given at all: the command line is incomplete (exit 64).
            return CliError::Usage(message);
        }
        CliError::Api {
            status,
            message,
            code,
        }
    }

    /// Downloads `path` into `sink`, calling `progress(done, total)` as bytes arrive.
    /// Returns the bytes written.
    pub fn download(
        &self,
        path: &str,
        sink: &mut dyn std::io::Write,
        progress: &mut dyn FnMut(u64, Option<u64>),
    ) -> Result<u64, CliError> {
        use std::io::Read;
        let url = format!("{}{path}", self.base);
        let network = |message: String| CliError::Network {
            url: self.base.clone(),
            message,
        };
        let mut req = self.transfer.get(&url);
        if let Some(t) = &self.token {
            req = req.header("Authorization", format!("Bearer {t}"));
        }
        let mut response = req.call().map_err(|e| network(e.to_string()))?;
        let status = response.status().as_u16();
        if !(200..300).contains(&status) {
            let text = response.body_mut().read_to_string().unwrap_or_default();
            return Err(self.api_error(status, &url, &text));
        }
        let total = response
            .headers()
            .get("content-length")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        let mut reader = response.into_body().into_reader();
        let mut buf = vec![0u8; 256 * 1024];
        let mut done = 0u64;
        progress(0, total);
        loop {
            let n = reader
                .read(&mut buf)
                .map_err(|e| network(format!("the download broke off after {done} bytes: {e}")))?;
            if n == 0 {
                break;
            }
            sink.write_all(&buf[..n])
                .map_err(|e| CliError::Local(format!("cannot write the archive: {e}")))?;
            done += n as u64;
            progress(done, total);
        }
        if let Some(total) = total.filter(|t| *t != done) {
            return Err(network(format!(
                "the download ended after {done} of {total} bytes"
            )));
        }
        Ok(done)
    }

    /// POSTs `body` (of `len` bytes) to `path` as application/octet-stream and returns
    /// the JSON answer.
    pub fn upload(
        &self,
        path: &str,
        body: &mut dyn std::io::Read,
        len: u64,
    ) -> Result<Value, CliError> {
        let url = format!("{}{path}", self.base);
        let network = |e: ureq::Error| CliError::Network {
            url: self.base.clone(),
            message: e.to_string(),
        };
        let mut req = self
            .transfer
            .post(&url)
            .header("Content-Type", "application/octet-stream")
            .header("Content-Length", len.to_string());
        if let Some(t) = &self.token {
            req = req.header("Authorization", format!("Bearer {t}"));
        }
        let mut response = req
            .send(ureq::SendBody::from_reader(body))
            .map_err(network)?;
        let status = response.status().as_u16();
        let text = response.body_mut().read_to_string().map_err(network)?;
        if !(200..300).contains(&status) {
            return Err(self.api_error(status, &url, &text));
        }
        Ok(serde_json::from_str(&text).unwrap_or(Value::String(text)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn api_errors_say_what_to_do() {
        let m = explain(
            403,
            "forbidden",
            "this token lacks manage:deployments on project shop",
            true,
        );
        assert_eq!(
            m,
            "this token lacks manage:deployments on project shop: ask an admin for a token with it"
        );
        assert!(explain(401, "unauthorized", "invalid token", true).contains("ocore login"));
        assert!(explain(401, "unauthorized", "missing token", false).contains("OCORE_TOKEN"));
        assert!(
            explain(502, "agent_unreachable", "agent web1 is unreachable", true)
                .contains("ocore agent list")
        );
        assert_eq!(
            explain(404, "not_found", "project shop not found", true),
            "project shop not found"
        );
    }

    #[test]
    fn exit_codes_are_distinct() {
        let all = [
            CliError::Api {
                status: 400,
                code: String::new(),
                message: String::new(),
            }
            .exit_code(),
            CliError::Network {
                url: String::new(),
                message: String::new(),
            }
            .exit_code(),
            CliError::Usage(String::new()).exit_code(),
            CliError::Local(String::new()).exit_code(),
            CliError::Outcome(String::new()).exit_code(),
            CliError::Cancelled(String::new()).exit_code(),
            CliError::Interrupted(String::new()).exit_code(),
        ];
        let unique: std::collections::BTreeSet<u8> = all.iter().copied().collect();
        assert_eq!(unique.len(), all.len());
        assert!(!all.contains(&0));
    }
}
