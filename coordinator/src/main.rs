//! `ocore`: the coordinator (`ocore server`) and the command-line client in one binary.

use std::process::ExitCode;

use clap::Parser;
use ocore::cli::{self, Cli, CliError, Command};
use ocore::config::CoordinatorConfig;

/// Exit code for unusable configuration or arguments (EX_USAGE).
const EXIT_USAGE: u8 = 64;

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            // Help and version are answers, not errors; every other parse error is a usage
            // error (64, as for bad configuration), never the 1 or 2 of a deployment.
            let code = if e.use_stderr() { EXIT_USAGE } else { 0 };
            let _ = e.print();
            return ExitCode::from(code);
        }
    };
    match cli.command {
        Command::Server(args) => {
            init_logging();
            let config = match CoordinatorConfig::load(&args.config) {
                Ok(config) => config,
                Err(e) => {
                    eprintln!("ocore: {e}");
                    return ExitCode::from(EXIT_USAGE);
                }
            };
            // The listener's certificate files are configuration too: refuse them before
            // binding anything.
            if let Some(tls) = &config.tls {
                if let Err(e) = ocore::https::load(tls) {
                    eprintln!("ocore: {e}");
                    return ExitCode::from(EXIT_USAGE);
                }
            }
            // So is an existing secrets key (a missing one is created on first start).
            let key_file = config.secrets_key_file();
            if key_file.exists() {
                if let Err(e) = ocore::secrets::SecretBox::load_or_create(&key_file) {
                    eprintln!("ocore: {e}");
                    return ExitCode::from(EXIT_USAGE);
                }
            }
            if args.check_config {
                println!("{}: valid", args.config.display());
                return ExitCode::SUCCESS;
            }
            let runtime = match tokio::runtime::Runtime::new() {
                Ok(rt) => rt,
                Err(e) => {
                    eprintln!("ocore: cannot start the runtime: {e}");
                    return ExitCode::FAILURE;
                }
            };
            match runtime.block_on(ocore::server::run(config)) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    tracing::error!("{e:#}");
                    eprintln!("ocore: {e:#}");
                    ExitCode::FAILURE
                }
            }
        }
        command => {
            quiet_on_closed_pipe();
            match cli::run(&cli.global, command) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("ocore: {e}");
                    ExitCode::from(CliError::exit_code(&e))
                }
            }
        }
    }
}

/// Exit code when the reader of our output went away (`ocore deploy list | head -1`):
/// 128 + SIGPIPE, what a shell reports for any Unix tool ended by a closed pipe.
const EXIT_CLOSED_PIPE: i32 = 141;

/// A client command whose stdout or stderr is a closed pipe ends at once and quietly,
/// as Unix tools do, instead of printing a panic. (Rust ignores SIGPIPE, so `println!`
/// panics on EPIPE; resetting the signal would need unsafe code.)
fn quiet_on_closed_pipe() {
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let payload = info.payload();
        let message = payload
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| payload.downcast_ref::<&str>().copied())
            .unwrap_or("");
        if is_closed_pipe(message) {
            std::process::exit(EXIT_CLOSED_PIPE);
        }
        default(info);
    }));
}

/// True for the panic `print!`/`eprint!` raise when the pipe they write to is closed.
fn is_closed_pipe(panic_message: &str) -> bool {
    panic_message.starts_with("failed printing to std")
        && (panic_message.contains("Broken pipe") || panic_message.contains("os error 32"))
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

#[cfg(test)]
mod tests {
    use super::is_closed_pipe;

    #[test]
    fn only_a_closed_pipe_is_quiet() {
        assert!(is_closed_pipe(
            "failed printing to stdout: Broken pipe (os error 32)"
        ));
        assert!(is_closed_pipe("failed printing to stderr: os error 32"));
        assert!(!is_closed_pipe(
            "failed printing to stdout: No space left on device (os error 28)"
        ));
        assert!(!is_closed_pipe("index out of bounds: Broken pipe"));
    }
}
