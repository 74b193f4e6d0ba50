//! The `ocore` command line: `ocore server` runs the coordinator, `ocore ca` manages the CA
//! on the coordinator host, every other subcommand talks to the coordinator's REST API.

mod agent;
mod ca;
pub mod client;
mod deploy;
mod environment;
mod instance;
mod login;
mod mapping;
mod output;
mod project;
mod snapshot;
mod token;
mod webhook;

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use client::ApiClient;
pub use client::CliError;
pub use output::Format;

use crate::config::DEFAULT_CONFIG_PATH;

#[derive(Parser)]
#[command(
    name = "ocore",
    version,
    about = "oCore: deploy custom Odoo modules from Git to your own servers",
    long_about = "oCore ships a Git repository of Odoo addons to running Odoo instances: \
                  blue-green container swaps behind nginx, module updates, and pre-deploy \
                  snapshots for rollback.\n\n`ocore server` runs the coordinator; the other \
                  commands talk to it (set OCORE_URL and OCORE_TOKEN, or run `ocore login`).",
    propagate_version = true
)]
pub struct Cli {
    #[command(flatten)]
    pub global: Global,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Args)]
pub struct Global {
    /// Coordinator URL, e.g. https://ocore.example.com
    #[arg(long, global = true, env = "OCORE_URL")]
    pub url: Option<String>,
    /// API token (prefer the environment variable or `ocore login` over this flag).
    #[arg(long, global = true, env = "OCORE_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// Trust only the CA certificate(s) in this PEM file for an https:// coordinator
    /// (for a coordinator whose certificate comes from a private CA).
    #[arg(long, global = true, env = "OCORE_CA_FILE")]
    pub ca_file: Option<PathBuf>,
    /// Output format of read commands.
    #[arg(long, short, global = true, value_enum, default_value_t = Format::Text)]
    pub output: Format,
}

#[derive(Subcommand)]
pub enum Command {
    /// Run the coordinator (what the systemd unit runs).
    Server(ServerArgs),
    /// Manage the oCore certificate authority (on the coordinator host).
    #[command(subcommand)]
    Ca(ca::CaCommand),
    /// Register, list, inspect and remove agents.
    #[command(subcommand)]
    Agent(agent::AgentCommand),
    /// Create, list and revoke API tokens.
    #[command(subcommand)]
    Token(token::TokenCommand),
    /// Create, list, show, change and delete projects.
    #[command(subcommand)]
    Project(project::ProjectCommand),
    /// Create, list, show, change and delete environments; snapshot retention settings.
    #[command(subcommand)]
    Environment(environment::EnvironmentCommand),
    /// Bind instances declared on agents to environments.
    #[command(subcommand)]
    Instance(instance::InstanceCommand),
    /// Map branches to environments.
    #[command(subcommand)]
    Mapping(mapping::MappingCommand),
    /// Deploy (`ocore deploy --project P --branch main --follow`), list, show, follow,
    /// cancel and roll back deployments.
    Deploy(deploy::DeployArgs),
    /// List, take, pin, unpin, delete and estimate an environment's snapshots.
    #[command(subcommand)]
    Snapshot(snapshot::SnapshotCommand),
    /// A project's Git webhook: URLs, a new secret, the delivery log, redeliver.
    #[command(subcommand)]
    Webhook(webhook::WebhookCommand),
    /// Save the coordinator URL and token for later commands (file mode 0600).
    Login(login::LoginArgs),
    /// Print a shell completion script (bash, zsh, fish, elvish, powershell).
    Completions {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Print the manual page (roff) generated from these definitions.
    #[command(hide = true)]
    Manpage,
}

#[derive(Args)]
pub struct ServerArgs {
    /// Configuration file.
    #[arg(long, short, env = "OCORE_CONFIG", default_value = DEFAULT_CONFIG_PATH)]
    pub config: PathBuf,
    /// Validate the configuration and exit.
    #[arg(long)]
    pub check_config: bool,
}

/// Runs a client-side command (anything but `server`).
pub fn run(global: &Global, command: Command) -> Result<(), CliError> {
    let client = || {
        ApiClient::with_ca(
            global.url.clone(),
            global.token.clone(),
            global.ca_file.as_deref(),
        )
    };
    match command {
        Command::Server(_) => Err(CliError::Usage(
            "`ocore server` is handled by the binary's entry point".to_owned(),
        )),
        Command::Ca(cmd) => ca::run(cmd, global.output),
        Command::Agent(cmd) => agent::run(&client()?, cmd, global.output),
        Command::Token(cmd) => token::run(&client()?, cmd, global.output),
        Command::Project(cmd) => project::run(&client()?, cmd, global.output),
        Command::Environment(cmd) => environment::run(&client()?, cmd, global.output),
        Command::Instance(cmd) => instance::run(&client()?, cmd, global.output),
        Command::Mapping(cmd) => mapping::run(&client()?, cmd, global.output),
        Command::Deploy(args) => deploy::run(&client()?, args, global.output),
        Command::Snapshot(cmd) => snapshot::run(&client()?, cmd, global.output),
        Command::Webhook(cmd) => webhook::run(&client()?, cmd, global.output),
        Command::Login(args) => login::run(global, args),
        Command::Completions { shell } => {
            let mut command = <Cli as clap::CommandFactory>::command();
            let mut script = Vec::new();
            clap_complete::generate(shell, &mut command, "ocore", &mut script);
            write_stdout(&script)
        }
        Command::Manpage => {
            let command = <Cli as clap::CommandFactory>::command();
            let mut page = Vec::new();
            clap_mangen::Man::new(command)
                .render(&mut page)
                .map_err(|e| CliError::Local(format!("cannot render the manual page: {e}")))?;
            write_stdout(&page)
        }
    }
}

/// Writes generated text to stdout; a closed pipe (`| head`) is not an error.
fn write_stdout(bytes: &[u8]) -> Result<(), CliError> {
    use std::io::Write;
    match std::io::stdout().lock().write_all(bytes) {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => {
            Err(CliError::Local(format!("cannot write to stdout: {e}")))
        }
        _ => Ok(()),
    }
}
