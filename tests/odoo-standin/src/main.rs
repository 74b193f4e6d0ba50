//! `odoo`: a stand-in for Odoo 17 and its official image's entrypoint, for oCore's tests.
//!
//! It reads `odoo.conf` and Odoo's command line, keeps Odoo's module tables in a real
//! PostgreSQL database, serves Odoo's health and page routes, writes filestore files, and fails
//! on demand when deployed modules carry marker files. See `server` for the start-up order.

#![forbid(unsafe_code)]

mod addons;
mod cli;
mod config;
mod db;
mod http;
mod log;
mod manifest;
mod plan;
mod server;
mod sha1;

use std::os::unix::process::CommandExt;
use std::process::{Command, ExitCode};

use cli::Invocation;
use config::ConfigError;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args_os()
        .skip(1)
        .map(|a| a.to_string_lossy().into_owned())
        .collect();
    let options = match cli::parse(&args) {
        Ok(Invocation::Server(options)) => options,
        Ok(Invocation::Version) => {
            println!("Odoo Server 17.0");
            return ExitCode::SUCCESS;
        }
        Ok(Invocation::Help) => {
            print!("{}", cli::HELP);
            return ExitCode::SUCCESS;
        }
        Ok(Invocation::Exec(command)) => return exec(&command),
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(2);
        }
    };
    let settings = match config::resolve(&options, &|name| std::env::var(name).ok()) {
        Ok(settings) => settings,
        Err(ConfigError::Usage(e)) => {
            eprintln!("{e}");
            return ExitCode::from(2);
        }
        Err(e) => {
            log::critical(None, "odoo.tools.config", &e.to_string());
            return ExitCode::from(1);
        }
    };
    server::run(settings)
}

/// Replaces the process with `command`, as the official entrypoint's `exec "$@"` does.
fn exec(command: &[String]) -> ExitCode {
    let Some((program, args)) = command.split_first() else {
        return ExitCode::from(2);
    };
    let error = Command::new(program).args(args).exec();
    eprintln!("exec: {program}: {error}");
    if error.kind() == std::io::ErrorKind::NotFound {
        ExitCode::from(127)
    } else {
        ExitCode::from(126)
    }
}
