//! `odoo`: a stand-in for Odoo 17's `odoo` command, for oCore's tests (the image's
//! `/entrypoint.sh` plays the official entrypoint; this binary is also its
//! `wait-for-psql.py`).
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
mod wait;

use std::process::ExitCode;

use cli::Invocation;
use config::ConfigError;

fn main() -> ExitCode {
    let mut argv = std::env::args_os();
    let program = argv
        .next()
        .map(|a| a.to_string_lossy().into_owned())
        .unwrap_or_default();
    let args: Vec<String> = argv.map(|a| a.to_string_lossy().into_owned()).collect();
    // Installed also as the official image's `wait-for-psql.py`.
    if std::path::Path::new(&program)
        .file_name()
        .is_some_and(|n| n == "wait-for-psql.py")
    {
        return wait::run(&args);
    }
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
        Ok(Invocation::UnknownCommand(command)) => {
            eprintln!("Unknown command '{command}'");
            return ExitCode::from(1);
        }
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
