//! `ocore instance …`: bind an instance declared on an agent to an environment, list,
//! show (with its active colour), rebind and delete.

use clap::Subcommand;
use serde_json::{json, Map, Value};

use super::client::ApiClient;
use super::output::{self, field};
use super::{CliError, Format};

#[derive(Subcommand)]
pub enum InstanceCommand {
    /// Create an instance: the environment's blue/green pair on an agent.
    Create {
        /// Instance id, e.g. shop-prod.
        id: String,
        /// The environment (id).
        #[arg(long)]
        environment: String,
        /// The agent holding it.
        #[arg(long)]
        agent: String,
        /// The instance id as declared in that agent's agent.toml.
        #[arg(long)]
        agent_instance: String,
    },
    /// List instances.
    #[command(visible_alias = "ls")]
    List {
        /// The project (id).
        #[arg(long)]
        project: Option<String>,
        /// The environment (id).
        #[arg(long)]
        environment: Option<String>,
    },
    /// Show one instance.
    Show {
        /// Instance id.
        id: String,
    },
    /// Bind an instance to another agent or agent instance.
    Update {
        /// Instance id.
        id: String,
        /// The agent holding the instance.
        #[arg(long)]
        agent: Option<String>,
        /// The instance id as declared in that agent's agent.toml.
        #[arg(long)]
        agent_instance: Option<String>,
    },
    /// Delete an instance without queued or running deployments.
    Delete {
        /// Instance id.
        id: String,
    },
}

fn print(i: &Value) {
    println!("id:             {}", field(i, "id"));
    println!("project:        {}", field(i, "projectId"));
    println!("environment:    {}", field(i, "environmentId"));
    println!("agent:          {}", field(i, "agent"));
    println!("agent instance: {}", field(i, "agentInstanceId"));
    println!("active colour:  {}", field(i, "activeColor"));
}

pub fn run(client: &ApiClient, cmd: InstanceCommand, format: Format) -> Result<(), CliError> {
    let answer = match cmd {
        InstanceCommand::Create {
            id,
            environment,
            agent,
            agent_instance,
        } => client.post(
            "/api/instances",
            &json!({"id": id, "environmentId": environment, "agent": agent, "agentInstanceId": agent_instance}),
        )?,
        InstanceCommand::List {
            project,
            environment,
        } => {
            let mut query = Vec::new();
            if let Some(p) = project {
                query.push(format!("projectId={}", super::mapping::encode(&p)));
            }
            if let Some(e) = environment {
                query.push(format!("environmentId={}", super::mapping::encode(&e)));
            }
            let path = if query.is_empty() {
                "/api/instances".to_owned()
            } else {
                format!("/api/instances?{}", query.join("&"))
            };
            let answer = client.get(&path)?;
            if format == Format::Text {
                let rows: Vec<Vec<String>> = answer["instances"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|i| {
                        vec![
                            field(i, "id"),
                            field(i, "environmentId"),
                            field(i, "agent"),
                            field(i, "agentInstanceId"),
                            field(i, "activeColor"),
                        ]
                    })
                    .collect();
                output::table(&["ID", "ENVIRONMENT", "AGENT", "AGENT INSTANCE", "ACTIVE"], &rows);
                return Ok(());
            }
            answer
        }
        InstanceCommand::Show { id } => client.get(&format!("/api/instances/{}", super::mapping::encode(&id)))?,
        InstanceCommand::Update {
            id,
            agent,
            agent_instance,
        } => {
            let mut body = Map::new();
            if let Some(a) = agent {
                body.insert("agent".into(), json!(a));
            }
            if let Some(a) = agent_instance {
                body.insert("agentInstanceId".into(), json!(a));
            }
            client.patch(&format!("/api/instances/{}", super::mapping::encode(&id)), &Value::Object(body))?
        }
        InstanceCommand::Delete { id } => {
            client.delete(&format!("/api/instances/{}", super::mapping::encode(&id)))?;
            match format {
                Format::Json => output::json(&json!({"deleted": id})),
                Format::Text => println!("instance {id} deleted"),
            }
            return Ok(());
        }
    };
    match format {
        Format::Json => output::json(&answer),
        Format::Text => print(&answer),
    }
    Ok(())
}
