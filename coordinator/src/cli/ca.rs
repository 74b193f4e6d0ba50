//! `ocore ca init|show`: create and inspect the oCore CA. Works on files directly, so it runs
//! on the coordinator host with the coordinator's configuration.

use std::path::PathBuf;

use clap::Subcommand;
use serde_json::json;
use time::OffsetDateTime;

use super::{output, CliError, Format};
use crate::ca::Ca;
use crate::config::{CoordinatorConfig, DEFAULT_CONFIG_PATH};
use crate::pki::secs;

#[derive(Subcommand)]
pub enum CaCommand {
    /// Create the CA and the coordinator's client certificate (once, before `ocore server`).
    Init {
        #[arg(long, short, env = "OCORE_CONFIG", default_value = DEFAULT_CONFIG_PATH)]
        config: PathBuf,
    },
    /// Show the CA's fingerprint and the coordinator certificate's expiry.
    Show {
        #[arg(long, short, env = "OCORE_CONFIG", default_value = DEFAULT_CONFIG_PATH)]
        config: PathBuf,
    },
}

fn load_config(path: &std::path::Path) -> Result<CoordinatorConfig, CliError> {
    CoordinatorConfig::load(path).map_err(|e| CliError::Usage(e.to_string()))
}

pub fn run(cmd: CaCommand, format: Format) -> Result<(), CliError> {
    let (ca, created) = match cmd {
        CaCommand::Init { config } => {
            let config = load_config(&config)?;
            let ca = Ca::init(
                &config.ca_dir(),
                OffsetDateTime::now_utc(),
                secs(config.pki.coordinator_cert_validity_secs),
            )
            .map_err(|e| CliError::Local(e.to_string()))?;
            (ca, Some(config.ca_dir()))
        }
        CaCommand::Show { config } => {
            let config = load_config(&config)?;
            let ca = Ca::load(&config.ca_dir()).map_err(|e| CliError::Local(e.to_string()))?;
            (ca, None)
        }
    };
    let identity = ca
        .load_coordinator_identity()
        .map_err(|e| CliError::Local(e.to_string()))?;
    let not_after = crate::api::rfc3339(identity.info.not_after);
    match format {
        Format::Json => output::json(&json!({
            "fingerprint": ca.fingerprint(),
            "coordinatorCertificateNotAfter": not_after,
        })),
        Format::Text => {
            if let Some(dir) = created {
                println!("created the oCore CA in {}", dir.display());
            }
            println!("CA fingerprint (sha256): {}", ca.fingerprint());
            println!("coordinator certificate valid until {not_after}");
        }
    }
    Ok(())
}
