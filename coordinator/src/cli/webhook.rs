//! `ocore webhook …`: a project's Git webhook: its URLs (show), a new secret to paste into
//! the provider (reconfigure), the delivery log (deliveries) and replaying a delivery
//! (redeliver).

use clap::{Subcommand, ValueEnum};
use serde_json::Value;

use super::client::ApiClient;
use super::mapping::encode;
use super::output::{self, field};
use super::{CliError, Format};

#[derive(Clone, Copy, ValueEnum)]
pub enum ProviderArg {
    Github,
    Gitlab,
    Bitbucket,
}

impl ProviderArg {
    fn key(self) -> &'static str {
        match self {
            ProviderArg::Github => "github",
            ProviderArg::Gitlab => "gitlab",
            ProviderArg::Bitbucket => "bitbucket",
        }
    }
}

#[derive(Subcommand)]
pub enum WebhookCommand {
    /// The webhook URL for each provider and whether a secret is set.
    Show {
        #[arg(long)]
        project: String,
    },
    /// Generate a new secret (the old one stops working at once) and print it with the
    /// URL to paste into the provider's webhook settings.
    Reconfigure {
        #[arg(long)]
        project: String,
        /// Print the instructions of this provider only.
        #[arg(long, value_enum)]
        provider: Option<ProviderArg>,
    },
    /// The delivery log, newest first: what each delivery was and why it did or did not
    /// deploy.
    Deliveries {
        #[arg(long)]
        project: String,
        /// Deliveries per page (1 to 100).
        #[arg(long, default_value_t = 20, allow_negative_numbers = true,
              value_parser = clap::value_parser!(u32).range(1..=100))]
        limit: u32,
        /// Deliveries to skip (the newest first).
        #[arg(long, default_value_t = 0, allow_negative_numbers = true)]
        offset: u64,
    },
    /// Replay a recorded delivery (its request as the provider sent it).
    Redeliver {
        #[arg(long)]
        project: String,
        /// The entry's id (the ID column of `ocore webhook deliveries`).
        #[arg(long)]
        delivery: String,
    },
}

/// Where each provider takes the URL and the secret.
fn instructions(provider: &str) -> &'static str {
    match provider {
        "github" => "GitHub: Settings > Webhooks > Add webhook. Payload URL: the URL; Content type: application/json; Secret: the secret; events: Just the push event.",
        "gitlab" => "GitLab: Settings > Webhooks > Add new webhook. URL: the URL; Secret token: the secret; Trigger: Push events (and Tag push events to deploy tags).",
        _ => "Bitbucket: Repository settings > Webhooks > Add webhook. URL: the URL; Secret: the secret; Triggers: Repository push.",
    }
}

fn print_urls(answer: &Value, only: Option<ProviderArg>) {
    for p in ["github", "gitlab", "bitbucket"] {
        if only.is_some_and(|o| o.key() != p) {
            continue;
        }
        println!("  {:<10} {}", p, field(&answer["urls"], p));
    }
}

pub fn run(client: &ApiClient, cmd: WebhookCommand, format: Format) -> Result<(), CliError> {
    match cmd {
        WebhookCommand::Show { project } => {
            let answer = client.get(&format!("/api/projects/{}/webhooks", encode(&project)))?;
            match format {
                Format::Json => output::json(&answer),
                Format::Text => {
                    println!("webhook URLs of project {project}:");
                    print_urls(&answer, None);
                    if answer["secretSet"] == true {
                        println!(
                            "secret: set on {} (shown only by `ocore webhook reconfigure`)",
                            field(&answer, "secretCreatedAt")
                        );
                    } else {
                        println!(
                            "secret: none yet; run `ocore webhook reconfigure --project {project}`"
                        );
                    }
                }
            }
        }
        WebhookCommand::Reconfigure { project, provider } => {
            let answer = client.post(
                &format!("/api/projects/{}/webhooks/reconfigure", encode(&project)),
                &serde_json::json!({}),
            )?;
            match format {
                Format::Json => output::json(&answer),
                Format::Text => {
                    println!(
                        "new webhook secret of project {project} (the old one no longer works):"
                    );
                    println!();
                    println!("  secret     {}", field(&answer, "secret"));
                    print_urls(&answer, provider);
                    println!();
                    for p in ["github", "gitlab", "bitbucket"] {
                        if provider.is_none_or(|o| o.key() == p) {
                            println!("{}", instructions(p));
                        }
                    }
                    println!(
                        "The secret is not shown again; run this command again to replace it."
                    );
                }
            }
        }
        WebhookCommand::Deliveries {
            project,
            limit,
            offset,
        } => {
            let answer = client.get(&format!(
                "/api/projects/{}/webhooks/deliveries?limit={limit}&offset={offset}",
                encode(&project)
            ))?;
            match format {
                Format::Json => output::json(&answer),
                Format::Text => {
                    let rows: Vec<Vec<String>> = answer["deliveries"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .map(|d| {
                            let reference = ["branch", "tag"]
                                .iter()
                                .find_map(|k| d[*k].as_str().map(str::to_owned))
                                .unwrap_or_else(|| "-".to_owned());
                            let sha: String = field(d, "commitSha").chars().take(10).collect();
                            vec![
                                field(d, "id"),
                                field(d, "receivedAt"),
                                field(d, "provider"),
                                field(d, "event"),
                                field(d, "deliveryId"),
                                reference,
                                sha,
                                field(d, "outcome"),
                                field(d, "deploymentId"),
                                field(d, "reason"),
                            ]
                        })
                        .collect();
                    output::table(
                        &[
                            "ID",
                            "RECEIVED",
                            "PROVIDER",
                            "EVENT",
                            "DELIVERY",
                            "REF",
                            "COMMIT",
                            "OUTCOME",
                            "DEPLOYMENT",
                            "REASON",
                        ],
                        &rows,
                    );
                    println!(
                        "{} of {} deliveries (the newest 1000 are kept)",
                        rows.len(),
                        field(&answer, "total")
                    );
                }
            }
        }
        WebhookCommand::Redeliver { project, delivery } => {
            let answer = client.post(
                &format!(
                    "/api/projects/{}/webhooks/deliveries/{}/redeliver",
                    encode(&project),
                    encode(&delivery)
                ),
                &serde_json::json!({}),
            )?;
            match format {
                Format::Json => output::json(&answer),
                Format::Text => {
                    println!(
                        "replayed delivery {delivery}: {} ({})",
                        field(&answer, "outcome"),
                        field(&answer, "reason")
                    );
                    if let Some(d) = answer["deploymentId"].as_str() {
                        println!("follow it with: ocore deploy follow {d}");
                    }
                }
            }
            // A replay the coordinator refused did not do what was asked (exit 1).
            if answer["outcome"] == "rejected" {
                return Err(CliError::Outcome(format!(
                    "the replay of delivery {delivery} was rejected: {}",
                    field(&answer, "reason")
                )));
            }
        }
    }
    Ok(())
}
