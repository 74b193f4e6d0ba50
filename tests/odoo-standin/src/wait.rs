//! `wait-for-psql.py`: what the official image's entrypoint runs before Odoo, waiting until
//! PostgreSQL accepts connections (`--db_host H --db_port P --db_user U --db_password W
//! --timeout=30`), exit 1 when it never does.

use std::process::ExitCode;
use std::time::Duration;

use crate::config::DbParams;
use crate::db;

pub fn run(args: &[String]) -> ExitCode {
    let mut params = DbParams {
        host: "db".to_string(),
        port: 5432,
        user: "odoo".to_string(),
        password: None,
    };
    let mut timeout = 5u64;
    let mut i = 0;
    while i < args.len() {
        let (name, inline) = match args[i].split_once('=') {
            Some((n, v)) => (n.to_string(), Some(v.to_string())),
            None => (args[i].clone(), None),
        };
        let value = match inline {
            Some(v) => v,
            None => {
                i += 1;
                args.get(i).cloned().unwrap_or_default()
            }
        };
        match name.as_str() {
            "--db_host" => params.host = value,
            "--db_port" => params.port = value.parse().unwrap_or(5432),
            "--db_user" => params.user = value,
            "--db_password" => params.password = Some(value),
            "--timeout" => timeout = value.parse().unwrap_or(5),
            other => {
                eprintln!("wait-for-psql.py: error: unrecognized arguments: {other}");
                return ExitCode::from(2);
            }
        }
        i += 1;
    }
    match db::wait_for_server(&params, Duration::from_secs(timeout)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("Database connection failure: {}", db::describe(&e));
            ExitCode::from(1)
        }
    }
}
