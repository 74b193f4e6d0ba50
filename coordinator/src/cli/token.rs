//! `ocore token …`: create (the secret is shown once), list and revoke API tokens.

use clap::Subcommand;
use serde_json::json;

use super::client::ApiClient;
use super::output::{self, field};
use super::{CliError, Format};

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
    /// Revoke a token by id: it is refused from then on.
    #[command(visible_alias = "delete")]
    Revoke {
        /// Token id (from `ocore token list`).
        id: String,
    },
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
