//! `ocore mapping …`: which environment a branch or tag deploys to (set, list, remove).

use clap::{Args, Subcommand};
use serde_json::json;

use super::client::ApiClient;
use super::output::{self, field};
use super::{CliError, Format};

#[derive(Subcommand)]
pub enum MappingCommand {
    /// Map a branch (or a tag) to an environment of the project (replaces an earlier
    /// mapping of that name).
    #[command(visible_alias = "create")]
    Set {
        /// The project (id).
        #[arg(long)]
        project: String,
        #[command(flatten)]
        name: MappedName,
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
    /// Remove a branch (or tag) mapping.
    #[command(visible_alias = "delete")]
    Remove {
        /// The project (id).
        #[arg(long)]
        project: String,
        #[command(flatten)]
        name: MappedName,
    },
}

/// The name a mapping matches: a branch, or a tag (pushes of that tag deploy). Both are
/// one list in the API; the flag only says which one it is meant to be.
#[derive(Args)]
#[group(required = true, multiple = false)]
pub struct MappedName {
    /// Branch name, e.g. main or feature/x.
    #[arg(long)]
    branch: Option<String>,
    /// Tag name, e.g. v1.0.0 (a push of this tag deploys).
    #[arg(long)]
    tag: Option<String>,
}

impl MappedName {
    /// The name and what it is, for messages ("branch main", "tag v1.0.0").
    fn parts(&self) -> (&str, &'static str) {
        match (&self.branch, &self.tag) {
            (_, Some(tag)) => (tag, "tag"),
            (Some(branch), None) => (branch, "branch"),
            // clap's group makes one of them required.
            (None, None) => ("", "branch"),
        }
    }
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
            name,
            environment,
        } => {
            let (branch, kind) = name.parts();
            let answer = client.put(
                &format!("/api/projects/{project}/branch-mappings/{}", encode(branch)),
                &json!({"environmentId": environment}),
            )?;
            match format {
                Format::Json => output::json(&answer),
                Format::Text => println!(
                    "{kind} {branch} of project {project} deploys to environment {environment}"
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
        MappingCommand::Remove { project, name } => {
            let (branch, kind) = name.parts();
            client.delete(&format!(
                "/api/projects/{project}/branch-mappings/{}",
                encode(branch)
            ))?;
            match format {
                Format::Json => output::json(&json!({"removed": branch})),
                Format::Text => println!("mapping of {kind} {branch} removed"),
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
