//! `ocore project …`: create, list, show, update and delete projects (a Git repository of
//! Odoo addons).

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
}

fn print(p: &Value) {
    println!("id:          {}", field(p, "id"));
    println!("name:        {}", field(p, "name"));
    println!("repository:  {}", field(p, "repositoryUrl"));
    println!("addons path: {}", field(p, "addonsSubpath"));
    println!("created at:  {}", field(p, "createdAt"));
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
