//! `ocore-agent`: reads and validates its configuration, then runs, enrols or checks.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use ocore_agent::config::{AgentConfig, DEFAULT_CONFIG_PATH};
use ocore_agent::tls::TlsState;

/// Exit code for unusable configuration or arguments (EX_USAGE).
const EXIT_CONFIG: u8 = 64;

#[derive(Parser)]
#[command(
    name = "ocore-agent",
    version,
    about = "oCore agent: deploys Odoo addons on this host for the oCore coordinator",
    long_about = "The oCore agent runs on each Odoo server (as root, under systemd). It clones \
                  the project's repository, builds and pushes the image, swaps containers \
                  blue-green behind nginx, runs module updates and takes snapshots, as the \
                  coordinator asks over mutual-TLS gRPC. It only acts on the instances declared \
                  in its configuration file."
)]
struct Cli {
    /// Configuration file.
    #[arg(long, short, global = true, env = "OCORE_AGENT_CONFIG", default_value = DEFAULT_CONFIG_PATH)]
    config: PathBuf,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve the coordinator (what the systemd unit runs).
    Run,
    /// Validate the configuration file and the enrolled identity, then exit.
    CheckConfig,
    /// Obtain this agent's certificate from the coordinator with a one-time token.
    ///
    /// The key pair is generated on this host; only a certificate request is sent.
    Enroll {
        /// Coordinator base URL, e.g. https://ocore.example.com
        #[arg(long)]
        coordinator: String,
        /// Token printed by `ocore agent add` (valid once, for a limited time).
        #[arg(long, env = "OCORE_ENROL_TOKEN", hide_env_values = true)]
        token: String,
        /// Extra CA certificate (PEM) trusted for an https coordinator URL.
        #[arg(long)]
        coordinator_ca: Option<PathBuf>,
        /// Replace an existing identity.
        #[arg(long)]
        force: bool,
    },
    /// Print each module's checksum as deployments compute it (click-odoo-update's).
    ///
    /// With --database, the checksums follow that database (its active languages and
    /// module_auto_update.exclude_patterns), and each module shows its state and whether
    /// the next deployment would update it. Without it, --languages says which
    /// translations count. Needs the configuration only with --database.
    #[command(
        after_help = "Examples:\n  ocore-agent modules --addons-path /srv/addons,/srv/oca/web --languages en_US,fr_FR\n  ocore-agent modules --addons-path /srv/addons --database shop --output json"
    )]
    Modules {
        /// Folders holding modules, comma-separated (like Odoo's addons_path).
        #[arg(long, required = true)]
        addons_path: String,
        /// Active languages, comma-separated (e.g. en_US,fr_FR).
        #[arg(long, conflicts_with = "database", value_delimiter = ',')]
        languages: Vec<String>,
        /// Exclude patterns instead of click-odoo-update's defaults (comma-separated).
        #[arg(long, conflicts_with = "database")]
        exclude_patterns: Option<String>,
        /// Read languages, exclude patterns, states and stored checksums from this database.
        #[arg(long)]
        database: Option<String>,
        /// Output format.
        #[arg(long, value_enum, default_value = "text")]
        output: Output,
    },
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum Output {
    Text,
    Json,
}

fn main() -> ExitCode {
    init_logging();
    let cli = Cli::parse();
    if let Command::Modules {
        addons_path,
        languages,
        exclude_patterns,
        database,
        output,
    } = &cli.command
    {
        return modules(
            &cli.config,
            addons_path,
            languages,
            exclude_patterns.as_deref(),
            database.as_deref(),
            *output,
        );
    }
    let config = match AgentConfig::load(&cli.config) {
        Ok(config) => config,
        Err(e) => {
            eprintln!("ocore-agent: {e}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    match cli.command {
        // Handled before the configuration is read.
        Command::Modules { .. } => ExitCode::SUCCESS,
        Command::CheckConfig => check_config(&cli.config, &config),
        Command::Enroll {
            coordinator,
            token,
            coordinator_ca,
            force,
        } => {
            let result = ocore_agent::enroll::enroll(
                &coordinator,
                &token,
                &config.tls_dir(),
                coordinator_ca.as_deref(),
                force,
            );
            match result {
                Ok(enrolled) => {
                    println!(
                        "enrolled as agent {:?}; certificate valid until {}; identity stored in {}",
                        enrolled.agent_name,
                        format_time(enrolled.certificate.not_after),
                        config.tls_dir().display()
                    );
                    println!("start the agent with: systemctl enable --now ocore-agent");
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("ocore-agent: enrolment failed: {e}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::Run => {
            let runtime = match tokio::runtime::Runtime::new() {
                Ok(rt) => rt,
                Err(e) => {
                    eprintln!("ocore-agent: cannot start the runtime: {e}");
                    return ExitCode::FAILURE;
                }
            };
            match runtime.block_on(ocore_agent::server::run(config)) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    tracing::error!("{e:#}");
                    eprintln!("ocore-agent: {e:#}");
                    ExitCode::FAILURE
                }
            }
        }
    }
}

fn modules(
    config_path: &std::path::Path,
    addons_path: &str,
    languages: &[String],
    exclude: Option<&str>,
    database: Option<&str>,
    output: Output,
) -> ExitCode {
    use ocore_agent::inspect;
    let paths = inspect::split_paths(addons_path);
    for lang in languages {
        if let Err(e) = ocore_agent::config::validate_language(lang) {
            eprintln!("ocore-agent: --languages: {e}");
            return ExitCode::from(EXIT_CONFIG);
        }
    }
    let report = match database {
        None => inspect::report_offline(&paths, languages, exclude),
        Some(db) => {
            if let Err(e) = ocore_agent::config::validate_database_name(db) {
                eprintln!("ocore-agent: --database: {e}");
                return ExitCode::from(EXIT_CONFIG);
            }
            let config = match AgentConfig::load(config_path) {
                Ok(config) => config,
                Err(e) => {
                    eprintln!("ocore-agent: --database needs the agent's configuration for PostgreSQL: {e}");
                    return ExitCode::from(EXIT_CONFIG);
                }
            };
            let pg = match ocore_agent::db::Pg::from_config(&config.postgres) {
                Ok(pg) => pg,
                Err(e) => {
                    eprintln!("ocore-agent: {e}");
                    return ExitCode::FAILURE;
                }
            };
            let runtime = match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(rt) => rt,
                Err(e) => {
                    eprintln!("ocore-agent: cannot start the runtime: {e}");
                    return ExitCode::FAILURE;
                }
            };
            runtime.block_on(inspect::report_database(&pg, &paths, db))
        }
    };
    match report {
        Ok(report) => {
            match output {
                Output::Json => match serde_json::to_string_pretty(&report) {
                    Ok(text) => println!("{text}"),
                    Err(e) => {
                        eprintln!("ocore-agent: {e}");
                        return ExitCode::FAILURE;
                    }
                },
                Output::Text => print!("{}", inspect::render_text(&report)),
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("ocore-agent: {e}");
            ExitCode::FAILURE
        }
    }
}

fn check_config(path: &std::path::Path, config: &AgentConfig) -> ExitCode {
    println!("{}: valid", path.display());
    println!("  listen: {}", config.listen);
    println!("  state_dir: {}", config.state_dir.display());
    println!("  registry: {}", config.registry.address);
    for inst in &config.instances {
        println!(
            "  instance {}: database {}, data_dir {}, base image {}, port {}{} (blue {}/{}, green {}/{} on {})",
            inst.id,
            inst.database,
            inst.data_dir.display(),
            inst.base_image,
            inst.public_port,
            inst.public_address
                .map(|a| format!(" on {a}"))
                .unwrap_or_default(),
            inst.blue.http,
            inst.blue.gevent,
            inst.green.http,
            inst.green.gevent,
            inst.http_interface
        );
        println!(
            "    a database oCore creates: language {}{}, {}; workers: {}",
            inst.language,
            inst.country
                .as_deref()
                .map(|c| format!(", country {c}"))
                .unwrap_or_default(),
            if inst.demo {
                "WITH demo data"
            } else {
                "without demo data"
            },
            inst.workers
                .map_or("from the image's odoo.conf".to_owned(), |w| w.to_string())
        );
        if inst.demo {
            println!(
                "    warning: demo = true loads Odoo's demo data into a database oCore creates; it cannot be removed later"
            );
        }
        if !inst.http_interface.is_loopback() {
            println!(
                "    warning: http_interface {} exposes the colours beside nginx; Odoo runs with --proxy-mode and trusts X-Forwarded-* from whoever connects",
                inst.http_interface
            );
        }
    }
    if config.instances.is_empty() {
        println!("  no instance declared: the agent will refuse every deployment");
    }
    match TlsState::load(&config.tls_dir()) {
        Ok(tls) => {
            let id = tls.current();
            println!(
                "  identity: enrolled as {}, certificate valid until {}",
                id.name,
                format_time(id.cert.not_after)
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("ocore-agent: {e}");
            ExitCode::from(EXIT_CONFIG)
        }
    }
}

fn format_time(unix: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp(unix)
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_else(|| unix.to_string())
}

/// Logs to stderr; under systemd (JOURNAL_STREAM set) journald adds its own timestamps.
fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("OCORE_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    // Colour only for a person at a terminal; never in files, pipes or the journal.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr())
        && std::env::var_os("NO_COLOR").is_none();
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(ansi)
        .with_target(false);
    if std::env::var_os("JOURNAL_STREAM").is_some() {
        builder.without_time().with_ansi(false).init();
    } else {
        builder.init();
    }
}
