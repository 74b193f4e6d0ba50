//! `ocore mapping …`: which environment a branch deploys to (set, list, remove).

use clap::Subcommand;
use serde_json::json;

use super::client::ApiClient;
use super::output::{self, field};
use super::{CliError, Format};

#[derive(Subcommand)]
pub enum MappingCommand {
    /// Map a branch to an environment of the project (replaces an earlier mapping).
    #[command(visible_alias = "create")]
    Set {
        /// The project (id).
        #[arg(long)]
        project: String,
        /// Branch name, e.g. main or feature/x.
        #[arg(long)]
        branch: String,
        /// The environment (id).
        #[arg(long)]
        environment: String,
    },
    /// List a project's branch mappings.
    #[command(visible_alias = "ls")]
    List {
        /// The project (id).
        #[arg(long)]
        project: String,
    },
    /// Remove a branch mapping.
    #[command(visible_alias = "delete")]
    Remove {
        /// The project (id).
        #[arg(long)]
        project: String,
        /// Branch name, e.g. main or feature/x.
        #[arg(long)]
        branch: String,
    },
}

/// Percent-encodes a path segment or query value (branch names hold '/').
pub fn encode(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

pub fn run(client: &ApiClient, cmd: MappingCommand, format: Format) -> Result<(), CliError> {
    match cmd {
        MappingCommand::Set {
            project,
            branch,
            environment,
        } => {
            let answer = client.put(
                &format!(
                    "/api/projects/{project}/branch-mappings/{}",
                    encode(&branch)
                ),
                &json!({"environmentId": environment}),
            )?;
            match format {
                Format::Json => output::json(&answer),
                Format::Text => println!(
                    "branch {branch} of project {project} deploys to environment {environment}"
                ),
            }
        }
        MappingCommand::List { project } => {
            let answer = client.get(&format!(
                "/api/projects/{}/branch-mappings",
                super::mapping::encode(&project)
            ))?;
            match format {
                Format::Json => output::json(&answer),
                Format::Text => {
                    let rows: Vec<Vec<String>> = answer["mappings"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .map(|m| vec![field(m, "branch"), field(m, "environmentId")])
                        .collect();
                    output::table(&["BRANCH", "ENVIRONMENT"], &rows);
                }
            }
        }
        MappingCommand::Remove { project, branch } => {
            client.delete(&format!(
                "/api/projects/{project}/branch-mappings/{}",
                encode(&branch)
            ))?;
            match format {
                Format::Json => output::json(&json!({"removed": branch})),
                Format::Text => println!("mapping of branch {branch} removed"),
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn branch_names_are_percent_encoded() {
        assert_eq!(super::encode("feature/x-1"), "feature%2Fx-1");
        assert_eq!(super::encode("a b"), "a%20b");
    }
}
