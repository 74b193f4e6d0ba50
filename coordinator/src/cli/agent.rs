//! `ocore agent …`: register agents (printing their enrolment token), list them with their
//! link status, show, change address, issue a new token, ping, and remove.

use clap::Subcommand;
use serde_json::{json, Value};

use super::client::ApiClient;
use super::output::{self, field};
use super::{CliError, Format};

#[derive(Subcommand)]
pub enum AgentCommand {
    /// Register an agent and print its one-time enrolment token.
    #[command(visible_alias = "create")]
    Add {
        /// Agent name (lower-case letters, digits, '-'), e.g. the host name.
        name: String,
        /// Where the coordinator reaches the agent's gRPC listener, HOST:PORT.
        #[arg(long)]
        address: String,
        /// Lifetime of the enrolment token in seconds (default from the coordinator, 1 h).
        #[arg(long)]
        token_ttl: Option<u64>,
    },
    /// List agents with their connection status.
    #[command(visible_alias = "ls")]
    List,
    /// Show one agent.
    Show {
        /// Agent name.
        name: String,
    },
    /// Ask the agent for its live information over mutual TLS.
    Ping {
        /// Agent name.
        name: String,
    },
    /// Change the address the coordinator uses to reach an agent.
    SetAddress {
        /// Agent name.
        name: String,
        /// Where the coordinator reaches the agent's gRPC listener, HOST:PORT.
        #[arg(long)]
        address: String,
    },
    /// Issue a new enrolment token (to re-enrol or after the first one expired).
    Token {
        /// Agent name.
        name: String,
        /// Lifetime of the enrolment token in seconds (default from the coordinator, 1 h).
        #[arg(long)]
        token_ttl: Option<u64>,
    },
    /// Remove an agent: its certificate is refused from then on.
    #[command(visible_alias = "delete")]
    Remove {
        /// Agent name.
        name: String,
    },
}

fn path(name: &str) -> String {
    format!("/api/agents/{}", super::mapping::encode(name))
}

pub fn run(client: &ApiClient, cmd: AgentCommand, format: Format) -> Result<(), CliError> {
    match cmd {
        AgentCommand::Add {
            name,
            address,
            token_ttl,
        } => {
            let answer = client.post(
                "/api/agents",
                &json!({"name": name, "address": address, "tokenTtlSecs": token_ttl}),
            )?;
            print_token(client, &answer, &name, format);
        }
        AgentCommand::Token { name, token_ttl } => {
            let answer = client.post(
                &format!("{}/enrolment-token", path(&name)),
                &json!({"tokenTtlSecs": token_ttl}),
            )?;
            print_token(client, &answer, &name, format);
        }
        AgentCommand::List => {
            let answer = client.get("/api/agents")?;
            if format == Format::Json {
                output::json(&answer);
                return Ok(());
            }
            let empty = Vec::new();
            let agents = answer["agents"].as_array().unwrap_or(&empty);
            if agents.is_empty() {
                println!("no agents; register one with `ocore agent add NAME --address HOST:PORT`");
                return Ok(());
            }
            let rows: Vec<Vec<String>> = agents
                .iter()
                .map(|a| {
                    vec![
                        field(a, "name"),
                        field(a, "status"),
                        field(a, "address"),
                        field(a, "version"),
                        field(a, "lastSeen"),
                        a["instances"].as_array().map_or(0, Vec::len).to_string(),
                    ]
                })
                .collect();
            output::table(
                &[
                    "NAME",
                    "STATUS",
                    "ADDRESS",
                    "VERSION",
                    "LAST SEEN",
                    "INSTANCES",
                ],
                &rows,
            );
        }
        AgentCommand::Show { name } => {
            let agent = client.get(&path(&name))?;
            if format == Format::Json {
                output::json(&agent);
            } else {
                print_agent(&agent);
            }
        }
        AgentCommand::Ping { name } => {
            let info = client.get(&format!("{}/info", path(&name)))?;
            if format == Format::Json {
                output::json(&info);
            } else {
                println!(
                    "agent {} answered: version {}, host {}, certificate valid until {}",
                    field(&info, "name"),
                    field(&info, "version"),
                    field(&info, "hostname"),
                    field(&info, "certificateNotAfter")
                );
                for i in info["instances"].as_array().into_iter().flatten() {
                    println!(
                        "  instance {} (database {}, port {})",
                        field(i, "id"),
                        field(i, "database"),
                        field(i, "publicPort")
                    );
                }
            }
        }
        AgentCommand::SetAddress { name, address } => {
            let agent = client.patch(&path(&name), &json!({ "address": address }))?;
            if format == Format::Json {
                output::json(&agent);
            } else {
                println!(
                    "agent {name} is now reached at {}",
                    field(&agent, "address")
                );
            }
        }
        AgentCommand::Remove { name } => {
            client.delete(&path(&name))?;
            if format == Format::Json {
                output::json(&json!({"removed": name}));
            } else {
                println!("agent {name} removed; its certificate is refused from now on");
            }
        }
    }
    Ok(())
}

fn print_token(client: &ApiClient, answer: &Value, name: &str, format: Format) {
    if format == Format::Json {
        output::json(answer);
        return;
    }
    let token = field(answer, "enrolmentToken");
    println!(
        "agent {name} registered; enrolment token (valid once, until {}):",
        field(answer, "expiresAt")
    );
    println!();
    println!("  {token}");
    println!();
    println!("on the agent host, run:");
    println!(
        "  ocore-agent enroll --coordinator {} --token {token}",
        client.base()
    );
}

fn print_agent(a: &Value) {
    println!("name:        {}", field(a, "name"));
    println!("status:      {}", field(a, "status"));
    if !a["lastError"].is_null() {
        println!("last error:  {}", field(a, "lastError"));
    }
    println!("address:     {}", field(a, "address"));
    println!("version:     {}", field(a, "version"));
    println!("hostname:    {}", field(a, "hostname"));
    println!("enrolled at: {}", field(a, "enrolledAt"));
    println!("last seen:   {}", field(a, "lastSeen"));
    println!(
        "certificate: valid until {}",
        field(a, "certificateNotAfter")
    );
    for i in a["instances"].as_array().into_iter().flatten() {
        println!(
            "instance:    {} (database {}, port {})",
            field(i, "id"),
            field(i, "database"),
            field(i, "publicPort")
        );
    }
}
