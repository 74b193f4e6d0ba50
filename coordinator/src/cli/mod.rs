//! The `ocore` command line: `ocore server` runs the coordinator, `ocore ca` manages the CA
//! on the coordinator host, every other subcommand talks to the coordinator's REST API.

mod agent;
mod ca;
pub mod client;
mod deploy;
mod environment;
mod follow;
mod instance;
mod login;
mod manual;
mod mapping;
mod output;
mod project;
mod rollback;
mod snapshot;
mod snapshot_transfer;
mod term;
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
    after_long_help = EXIT_CODES,
    propagate_version = true
)]
pub struct Cli {
    #[command(flatten)]
    pub global: Global,
    #[command(subcommand)]
    pub command: Command,
}

/// Shown by `ocore --help` and in the manual page.
const EXIT_CODES: &str = "Output:\n  \
  --output json prints the API's own JSON (the shapes of GET /api/openapi.json), one document \
  per command; with --follow, one event per line (the data of each Server-Sent Event). Human \
  output has colour and spinners only on a terminal, and no colour when NO_COLOR is set.\n\n\
Exit codes:\n  \
  0    success (with --follow: the deployment succeeded)\n  \
  1    the deployment, rollback, snapshot or verification failed (or a prompt was declined)\n  \
  2    the deployment followed was cancelled\n  \
  3    the coordinator refused the request (bad input, permission, not found, conflict)\n  \
  4    the coordinator could not be reached\n  \
  5    a local file could not be read or written\n  \
  64   usage error: bad flags, no URL or token, a confirmation that cannot be asked\n  \
  130  Ctrl-C while following: the deployment goes on";

#[derive(Args)]
pub struct Global {
    /// Coordinator URL, e.g. https://ocore.example.com (saved by `ocore login`).
    #[arg(long, global = true, env = "OCORE_URL", help_heading = "Connection")]
    pub url: Option<String>,
    /// API token (prefer the environment variable or `ocore login` over this flag).
    #[arg(
        long,
        global = true,
        env = "OCORE_TOKEN",
        hide_env_values = true,
        help_heading = "Connection"
    )]
    pub token: Option<String>,
    /// Trust only the CA certificate(s) in this PEM file for an https:// coordinator
    /// (for a coordinator whose certificate comes from a private CA).
    #[arg(
        long,
        global = true,
        env = "OCORE_CA_FILE",
        help_heading = "Connection"
    )]
    pub ca_file: Option<PathBuf>,
    /// Output of read commands: text for people, json (the API's JSON) for scripts.
    #[arg(
        long,
        short,
        global = true,
        value_enum,
        default_value_t = Format::Text,
        help_heading = "Connection"
    )]
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
    /// Create, list, show and revoke (delete) API tokens.
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
    /// Map branches to environments: set (create), list, remove (delete).
    #[command(subcommand)]
    Mapping(mapping::MappingCommand),
    /// Deploy (`ocore deploy --project P --branch main --follow`); list, show, logs,
    /// follow, cancel and roll back deployments.
    Deploy(deploy::DeployArgs),
    /// List, take, pin, unpin, delete, estimate, verify, export and import an
    /// environment's snapshots.
    #[command(subcommand)]
    Snapshot(snapshot::SnapshotCommand),
    /// A project's Git webhook: URLs, a new secret, the delivery log, redeliver.
    #[command(subcommand)]
    Webhook(webhook::WebhookCommand),
    /// Check a coordinator URL and token and save them for later commands
    /// (`ocore login --url URL --token TOKEN`; file mode 0600).
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
        Command::Token(cmd @ token::TokenCommand::RecoverAdmin { .. }) => {
            token::recover_admin(cmd, global.output)
        }
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
            let page = manual::render(<Cli as clap::CommandFactory>::command())?;
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
