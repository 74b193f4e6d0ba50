//! `ocore login`: checks the URL and token against the coordinator, then saves them.

use clap::Args;

use super::client::{login_file, ApiClient, LoginFile};
use super::{CliError, Global};

#[derive(Args)]
pub struct LoginArgs {}

pub fn run(global: &Global, _args: LoginArgs) -> Result<(), CliError> {
    let url = global
        .url
        .clone()
        .ok_or_else(|| CliError::Usage("pass --url (or set OCORE_URL)".to_owned()))?;
    let token = global
        .token
        .clone()
        .ok_or_else(|| CliError::Usage("pass --token (or set OCORE_TOKEN)".to_owned()))?;
    let client = ApiClient::new(Some(url.clone()), Some(token.clone()))?;
    let me = client.get("/api/me")?;
    let path = login_file()
        .ok_or_else(|| CliError::Local("HOME is not set; cannot store the login".to_owned()))?;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)
            .map_err(|e| CliError::Local(format!("cannot create {}: {e}", dir.display())))?;
    }
    let text = toml::to_string(&LoginFile {
        url: Some(client.base().to_owned()),
        token: Some(token),
    })
    .map_err(|e| CliError::Local(e.to_string()))?;
    ocore_proto::tls::write_file_atomic(&path, text.as_bytes(), 0o600)
        .map_err(|e| CliError::Local(e.to_string()))?;
    println!(
        "logged in to {} as token {:?}; saved in {}",
        client.base(),
        me["name"].as_str().unwrap_or("?"),
        path.display()
    );
    Ok(())
}
