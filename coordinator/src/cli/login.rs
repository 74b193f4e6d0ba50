//! `ocore login`: checks the URL and token against the coordinator (`GET /api/me`), then
//! saves them in the user's configuration directory (`$XDG_CONFIG_HOME/ocore/cli.toml`,
//! else `~/.config/ocore/cli.toml`) with mode 0600. Flags and `OCORE_*` variables still
//! win over the saved values.

use clap::Args;
use serde_json::json;

use super::client::{login_file, ApiClient, LoginFile};
use super::{output, CliError, Format, Global};

#[derive(Args)]
pub struct LoginArgs {}

pub fn run(global: &Global, _args: LoginArgs) -> Result<(), CliError> {
    let url = global
        .url
        .clone()
        .ok_or_else(|| CliError::Usage("pass --url URL (or set OCORE_URL) to log in".to_owned()))?;
    let token = global
        .token
        .clone()
        .filter(|t| !t.trim().is_empty())
        .ok_or_else(|| {
            CliError::Usage("pass --token TOKEN (or set OCORE_TOKEN) to log in".to_owned())
        })?;
    let client = ApiClient::with_ca(
        Some(url.clone()),
        Some(token.clone()),
        global.ca_file.as_deref(),
    )?;
    // Nothing is saved unless the coordinator accepts the token.
    let me = client.get("/api/me").map_err(|e| match e {
        CliError::Api { status: 401, .. } => CliError::Api {
            status: 401,
            code: "unauthorized".to_owned(),
            message: format!(
                "login failed: the coordinator at {} refused the token (invalid, expired or revoked); nothing was saved",
                client.base()
            ),
        },
        other => other,
    })?;
    let path = login_file().ok_or_else(|| {
        CliError::Local("neither XDG_CONFIG_HOME nor HOME is set; cannot store the login".into())
    })?;
    if let Some(dir) = path.parent() {
        create_private_dir(dir)?;
    }
    let ca_file = match &global.ca_file {
        Some(p) => Some(
            std::path::absolute(p)
                .map_err(|e| CliError::Local(format!("cannot resolve {}: {e}", p.display())))?,
        ),
        None => None,
    };
    let text = toml::to_string(&LoginFile {
        url: Some(client.base().to_owned()),
        token: Some(token),
        ca_file,
    })
    .map_err(|e| CliError::Local(e.to_string()))?;
    ocore_proto::tls::write_file_atomic(&path, text.as_bytes(), 0o600)
        .map_err(|e| CliError::Local(format!("cannot write {}: {e}", path.display())))?;
    match global.output {
        Format::Json => output::json(&json!({
            "url": client.base(),
            "file": path.display().to_string(),
            "token": me,
        })),
        Format::Text => println!(
            "logged in to {} as token {:?}{}; saved in {} (mode 0600)",
            client.base(),
            me["name"].as_str().unwrap_or("?"),
            if me["admin"] == json!(true) {
                " (admin)"
            } else {
                ""
            },
            path.display()
        ),
    }
    Ok(())
}

/// Creates the configuration directory readable by its owner only.
fn create_private_dir(dir: &std::path::Path) -> Result<(), CliError> {
    use std::os::unix::fs::DirBuilderExt;
    if dir.is_dir() {
        return Ok(());
    }
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|e| CliError::Local(format!("cannot create {}: {e}", dir.display())))
}
