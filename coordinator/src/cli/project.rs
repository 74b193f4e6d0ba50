//! `ocore project …`: create, list, show, update and delete projects (a Git repository of
//! Odoo addons), and their repository access: the deploy key, an HTTPS token, the pinned
//! SSH host key.

use clap::Subcommand;
use serde_json::{json, Map, Value};

use super::client::ApiClient;
use super::output::{self, field};
use super::{CliError, Format};

#[derive(Subcommand)]
pub enum ProjectCommand {
    /// Create a project.
    Create {
        /// Project id: lower-case letters, digits and hyphens (used in paths and grants).
        id: String,
        /// Display name (defaults to the id).
        #[arg(long)]
        name: Option<String>,
        /// Git repository URL (https://…, git@host:path, ssh://…, file://… or a path).
        #[arg(long)]
        repository: String,
        /// Folder of the repository holding the addons (default: the root).
        #[arg(long, default_value = "")]
        addons_path: String,
    },
    /// List projects.
    #[command(visible_alias = "ls")]
    List,
    /// Show one project.
    Show {
        /// Project id.
        id: String,
    },
    /// Change a project's name, repository or addons folder.
    Update {
        /// Project id.
        id: String,
        #[arg(long)]
        name: Option<String>,
        #[arg(long)]
        repository: Option<String>,
        #[arg(long)]
        addons_path: Option<String>,
    },
    /// Delete a project that has no environments left.
    Delete {
        /// Project id.
        id: String,
    },
    /// Print the project's deploy key (generating it on first use), to add to the
    /// repository as a read-only deploy key.
    DeployKey {
        /// Project id.
        #[arg(long)]
        project: String,
        /// Replace the key (or an HTTPS token) with a new one; remove the old key from the
        /// Git provider afterwards.
        #[arg(long)]
        rotate: bool,
        /// Forget the pinned SSH host key (after the server was re-keyed on purpose); the
        /// next deploy pins the key the server then presents.
        #[arg(long)]
        forget_host_key: bool,
    },
    /// Store an HTTPS token for the repository. The token is read from standard input
    /// (or prompted for, without echo, on a terminal); never pass it as an argument.
    SetToken {
        /// Project id.
        #[arg(long)]
        project: String,
        /// User name sent with the token (GitLab: any name for project tokens, or
        /// `oauth2`; Bitbucket: `x-token-auth`).
        #[arg(long, default_value = crate::domain::DEFAULT_TOKEN_USERNAME)]
        username: String,
    },
    /// Show the project's repository credentials (public half) and pinned host key, or
    /// remove the credentials.
    Credentials {
        /// Project id.
        #[arg(long)]
        project: String,
        /// Remove the deploy key or token: the repository is fetched anonymously.
        #[arg(long)]
        remove: bool,
    },
}

fn print(p: &Value) {
    println!("id:          {}", field(p, "id"));
    println!("name:        {}", field(p, "name"));
    println!("repository:  {}", field(p, "repositoryUrl"));
    println!("addons path: {}", field(p, "addonsSubpath"));
    print_access(p);
    println!("created at:  {}", field(p, "createdAt"));
}

/// The credentials and host key lines of a project or credentials answer.
fn print_access(p: &Value) {
    let c = &p["credentials"];
    match c["kind"].as_str() {
        Some("ssh-key") => {
            println!("credentials: deploy key {}", field(c, "fingerprint"));
            println!("public key:  {}", field(c, "publicKey"));
        }
        Some("https-token") => {
            println!("credentials: HTTPS token for user {}", field(c, "username"))
        }
        _ => println!("credentials: none (public repository)"),
    }
    let h = &p["sshHostKey"];
    if h.is_object() {
        println!(
            "host key:    {} (pinned {})",
            field(h, "fingerprint"),
            field(h, "pinnedAt")
        );
        println!("             {}", field(h, "key"));
    } else {
        println!("host key:    not pinned yet (pinned on the next deploy over SSH)");
    }
}

/// The token from standard input: prompted for without echo on a terminal, else read
/// to the end (one line; surrounding whitespace removed).
fn read_token() -> Result<String, CliError> {
    use std::io::{IsTerminal as _, Read as _};
    let text = if std::io::stdin().is_terminal() {
        rpassword::prompt_password("HTTPS token: ")
            .map_err(|e| CliError::Local(format!("cannot read the token: {e}")))?
    } else {
        let mut text = String::new();
        std::io::stdin()
            .take(64 * 1024)
            .read_to_string(&mut text)
            .map_err(|e| {
                CliError::Local(format!("cannot read the token from standard input: {e}"))
            })?;
        text
    };
    let token = text.trim().to_owned();
    if token.is_empty() {
        return Err(CliError::Usage(
            "no token on standard input; pipe it in, e.g. `ocore project set-token --project P < token-file`"
                .to_owned(),
        ));
    }
    Ok(token)
}

pub fn run(client: &ApiClient, cmd: ProjectCommand, format: Format) -> Result<(), CliError> {
    let answer = match cmd {
        ProjectCommand::Create {
            id,
            name,
            repository,
            addons_path,
        } => client.post(
            "/api/projects",
            &json!({"id": id, "name": name, "repositoryUrl": repository, "addonsSubpath": addons_path}),
        )?,
        ProjectCommand::List => {
            let answer = client.get("/api/projects")?;
            if format == Format::Text {
                let rows: Vec<Vec<String>> = answer["projects"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|p| vec![field(p, "id"), field(p, "name"), field(p, "repositoryUrl"), field(p, "addonsSubpath")])
                    .collect();
                output::table(&["ID", "NAME", "REPOSITORY", "ADDONS PATH"], &rows);
                return Ok(());
            }
            answer
        }
        ProjectCommand::Show { id } => client.get(&format!("/api/projects/{}", super::mapping::encode(&id)))?,
        ProjectCommand::Update {
            id,
            name,
            repository,
            addons_path,
        } => {
            let mut body = Map::new();
            if let Some(v) = name {
                body.insert("name".into(), json!(v));
            }
            if let Some(v) = repository {
                body.insert("repositoryUrl".into(), json!(v));
            }
            if let Some(v) = addons_path {
                body.insert("addonsSubpath".into(), json!(v));
            }
            client.patch(&format!("/api/projects/{}", super::mapping::encode(&id)), &Value::Object(body))?
        }
        ProjectCommand::Delete { id } => {
            client.delete(&format!("/api/projects/{}", super::mapping::encode(&id)))?;
            json!({"deleted": id})
        }
        ProjectCommand::DeployKey {
            project,
            rotate,
            forget_host_key,
        } => return deploy_key(client, &project, rotate, forget_host_key, format),
        ProjectCommand::SetToken { project, username } => {
            let token = read_token()?;
            let answer = client.put(
                &format!("/api/projects/{}/credentials/https-token", super::mapping::encode(&project)),
                &json!({"username": username, "token": token}),
            )?;
            return show_access(&answer, format);
        }
        ProjectCommand::Credentials { project, remove } => {
            let path = format!("/api/projects/{}/credentials", super::mapping::encode(&project));
            let answer = if remove {
                client.delete(&path)?
            } else {
                client.get(&path)?
            };
            return show_access(&answer, format);
        }
    };
    match format {
        Format::Json => output::json(&answer),
        Format::Text if answer.get("deleted").is_some() => {
            println!("project {} deleted", field(&answer, "deleted"))
        }
        Format::Text => print(&answer),
    }
    Ok(())
}

fn show_access(answer: &Value, format: Format) -> Result<(), CliError> {
    match format {
        Format::Json => output::json(answer),
        Format::Text => {
            println!("project:     {}", field(answer, "projectId"));
            print_access(answer);
        }
    }
    Ok(())
}

/// `deploy-key`: the public key alone on standard output (so it can be redirected to a
/// file), what to do with it on standard error.
fn deploy_key(
    client: &ApiClient,
    project: &str,
    rotate: bool,
    forget_host_key: bool,
    format: Format,
) -> Result<(), CliError> {
    if forget_host_key {
        let answer = client.delete(&format!(
            "/api/projects/{}/credentials/host-key",
            super::mapping::encode(project)
        ))?;
        eprintln!(
            "forgot the pinned SSH host key of project {project}; the next deploy pins the key the server presents"
        );
        if !rotate {
            return show_access(&answer, format);
        }
    }
    let answer = client.post(
        &format!(
            "/api/projects/{}/credentials/deploy-key",
            super::mapping::encode(project)
        ),
        &json!({"rotate": rotate}),
    )?;
    match format {
        Format::Json => output::json(&answer),
        Format::Text => {
            println!("{}", field(&answer["credentials"], "publicKey"));
            eprintln!(
                "add this public key to the repository as a read-only deploy key (GitHub: Settings > Deploy keys; GitLab: Settings > Repository > Deploy keys; Bitbucket: Repository settings > Access keys){}",
                if rotate {
                    "; then remove the old key there"
                } else {
                    ""
                }
            );
        }
    }
    Ok(())
}
