//! `ocore token …`: create (the secret is shown once), list and revoke API tokens.

use std::path::PathBuf;
use std::time::Duration;

use clap::Subcommand;
use serde_json::json;

use super::client::ApiClient;
use super::output::{self, field};
use super::{CliError, Format};
use crate::config::{CoordinatorConfig, DEFAULT_CONFIG_PATH};

#[derive(Subcommand)]
pub enum TokenCommand {
    /// Create a token; prints its secret once.
    Create {
        /// A name saying who or what uses the token, e.g. "ci-shop".
        #[arg(long)]
        name: String,
        /// Grant every permission on everything, including administration.
        #[arg(long)]
        admin: bool,
        /// Project the --permission flags apply to.
        #[arg(long)]
        project: Option<String>,
        /// view:deployments, manage:deployments or manage:environments (repeatable).
        #[arg(long = "permission")]
        permissions: Vec<String>,
        /// Expire the token after this many seconds.
        #[arg(long)]
        expires_in: Option<u64>,
    },
    /// List tokens (never their secrets).
    #[command(visible_alias = "ls")]
    List,
    /// Show one token (never its secret).
    Show {
        /// Token id (from `ocore token list`).
        id: String,
    },
    /// Revoke a token by id: it is refused from then on. The last active admin token
    /// cannot be revoked.
    #[command(visible_alias = "delete")]
    Revoke {
        /// Token id (from `ocore token list`).
        id: String,
    },
    /// Break glass: create a new admin token on the coordinator host, when no admin
    /// token is left. Needs write access to the coordinator's state directory (run it as
    /// the `ocore` user or root); works whether `ocore server` runs or not, and the server
    /// logs it. The secret goes to a file readable by you only, never to the terminal.
    #[command(name = "recover-admin")]
    RecoverAdmin {
        /// The coordinator's configuration file (for its state directory).
        #[arg(long, short, env = "OCORE_CONFIG", default_value = DEFAULT_CONFIG_PATH)]
        config: PathBuf,
        /// Name of the new token.
        #[arg(long, default_value = "recovered-admin")]
        name: String,
        /// File the token's secret is written to (mode 0600) [default:
        /// <state_dir>/recovered-admin-token].
        #[arg(long)]
        token_file: Option<PathBuf>,
        /// Seconds to wait for a running server to take the new token.
        #[arg(long, default_value_t = 15)]
        wait: u64,
    },
}

/// `ocore token recover-admin`: runs on the coordinator host, without the API.
pub fn recover_admin(cmd: TokenCommand, format: Format) -> Result<(), CliError> {
    let TokenCommand::RecoverAdmin {
        config,
        name,
        token_file: secret_file,
        wait,
    } = cmd
    else {
        return Err(CliError::Usage("not a recover-admin command".to_owned()));
    };
    let name = name.trim().to_owned();
    if name.is_empty() || name.len() > 100 {
        return Err(CliError::Usage(
            "--name must be 1 to 100 characters".to_owned(),
        ));
    }
    let config = CoordinatorConfig::load(&config).map_err(|e| CliError::Usage(e.to_string()))?;
    let secret_file =
        secret_file.unwrap_or_else(|| config.state_dir.join(crate::recovery::SECRET_FILE));
    let done = crate::recovery::request(
        &config.state_dir,
        &config.store_dir(),
        &name,
        &secret_file,
        Duration::from_secs(wait),
    )
    .map_err(|e| CliError::Local(e.to_string()))?;
    if format == Format::Json {
        output::json(&json!({
            "id": done.token_id,
            "name": name,
            "tokenFile": done.secret_file,
            "serverRunning": done.server_running,
            "applied": done.applied,
        }));
    }
    let file = done.secret_file.display();
    let said = match (done.server_running, done.applied) {
        (_, true) => format!(
            "admin token {name} (id {}) is active; its secret is in {file} (mode 0600). Log in with it, then revoke the tokens you no longer trust.",
            done.token_id
        ),
        (false, _) => format!(
            "admin token {name} (id {}) is queued: `ocore server` is not running, and it becomes active when the server starts. Its secret is in {file} (mode 0600).",
            done.token_id
        ),
        (true, false) => {
            return Err(CliError::Outcome(format!(
                "the running coordinator did not take the new admin token within {wait} s (its log says why: journalctl -u ocore); the request stays in {} and is applied when it can be; the secret is in {file}",
                done.request_file.display()
            )))
        }
    };
    match format {
        Format::Json => eprintln!("{said}"),
        Format::Text => println!("{said}"),
    }
    Ok(())
}

pub fn run(client: &ApiClient, cmd: TokenCommand, format: Format) -> Result<(), CliError> {
    match cmd {
        TokenCommand::Create {
            name,
            admin,
            project,
            permissions,
            expires_in,
        } => {
            let grants = match (&project, permissions.is_empty()) {
                (Some(p), false) => permissions
                    .iter()
                    .map(|perm| json!({"project": p, "permission": perm}))
                    .collect(),
                (None, false) => {
                    return Err(CliError::Usage("--permission needs --project".to_owned()))
                }
                (Some(_), true) => {
                    return Err(CliError::Usage(
                        "--project needs at least one --permission".to_owned(),
                    ))
                }
                (None, true) => Vec::new(),
            };
            let answer = client.post(
                "/api/tokens",
                &json!({"name": name, "admin": admin, "grants": grants, "expiresInSecs": expires_in}),
            )?;
            if format == Format::Json {
                output::json(&answer);
            } else {
                println!(
                    "token {} created (id {}); it is shown only now:",
                    field(&answer, "name"),
                    field(&answer, "id")
                );
                println!("{}", field(&answer, "token"));
            }
        }
        TokenCommand::List => {
            let answer = client.get("/api/tokens")?;
            if format == Format::Json {
                output::json(&answer);
                return Ok(());
            }
            let rows: Vec<Vec<String>> = answer["tokens"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|t| {
                    let scope = if t["admin"].as_bool() == Some(true) {
                        "admin".to_owned()
                    } else {
                        t["grants"]
                            .as_array()
                            .into_iter()
                            .flatten()
                            .map(|g| format!("{}@{}", field(g, "permission"), field(g, "project")))
                            .collect::<Vec<_>>()
                            .join(",")
                    };
                    let state = if t["revokedAt"].is_null() {
                        "active"
                    } else {
                        "revoked"
                    };
                    vec![
                        field(t, "id"),
                        field(t, "name"),
                        scope,
                        state.to_owned(),
                        field(t, "expiresAt"),
                    ]
                })
                .collect();
            output::table(&["ID", "NAME", "SCOPE", "STATE", "EXPIRES"], &rows);
        }
        TokenCommand::Show { id } => {
            let answer = client.get("/api/tokens")?;
            let token = answer["tokens"]
                .as_array()
                .into_iter()
                .flatten()
                .find(|t| t["id"] == json!(id))
                .cloned()
                .ok_or_else(|| CliError::Api {
                    status: 404,
                    code: "not_found".to_owned(),
                    message: format!("token {id} not found; `ocore token list` shows them"),
                })?;
            match format {
                Format::Json => output::json(&token),
                Format::Text => {
                    println!("id:       {}", field(&token, "id"));
                    println!("name:     {}", field(&token, "name"));
                    println!("admin:    {}", field(&token, "admin"));
                    for g in token["grants"].as_array().into_iter().flatten() {
                        println!(
                            "grant:    {} on project {}",
                            field(g, "permission"),
                            field(g, "project")
                        );
                    }
                    println!("created:  {}", field(&token, "createdAt"));
                    println!("expires:  {}", field(&token, "expiresAt"));
                    println!("revoked:  {}", field(&token, "revokedAt"));
                }
            }
        }
        cmd @ TokenCommand::RecoverAdmin { .. } => return recover_admin(cmd, format),
        TokenCommand::Revoke { id } => {
            let answer = client.delete(&format!("/api/tokens/{}", super::mapping::encode(&id)))?;
            if format == Format::Json {
                output::json(&answer);
            } else {
                println!("token {id} revoked");
            }
        }
    }
    Ok(())
}
