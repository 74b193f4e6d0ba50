//! Is an Odoo colour healthy? `GET /web/health` must answer `{"status": "pass"}` (Odoo 15+),
//! and `GET /web/login?db=<db>` must answer 200, which proves the database loads.

use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

#[derive(Debug, thiserror::Error)]
pub enum HealthError {
    #[error("{what} did not answer healthily within {timeout:?}: {last}")]
    Unhealthy {
        what: String,
        timeout: Duration,
        last: String,
    },
    #[error("health check cancelled")]
    Cancelled,
}

/// One probe of an endpoint; `Err` says what was wrong.
fn probe(url: &str, want_pass: bool) -> Result<(), String> {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(5)))
        .build()
        .into();
    let mut response = agent.get(url).call().map_err(|e| e.to_string())?;
    let status = response.status().as_u16();
    let body = response
        .body_mut()
        .with_config()
        .limit(64 * 1024)
        .read_to_string()
        .unwrap_or_default();
    if status != 200 {
        return Err(format!(
            "HTTP {status}: {}",
            body.chars().take(200).collect::<String>()
        ));
    }
    if want_pass {
        let value: serde_json::Value = serde_json::from_str(&body)
            .map_err(|_| format!("not JSON: {}", body.chars().take(200).collect::<String>()))?;
        if value["status"] != "pass" {
            return Err(format!("status is {}", value["status"]));
        }
    }
    Ok(())
}

/// Polls the colour on `http_port` until both checks pass or `timeout` runs out.
pub async fn wait_healthy(
    http_port: u16,
    database: &str,
    timeout: Duration,
    cancel: &CancellationToken,
    on_line: &mut (dyn FnMut(&str) + Send),
) -> Result<(), HealthError> {
    let started = Instant::now();
    let checks = [
        (format!("http://127.0.0.1:{http_port}/web/health"), true),
        (
            format!(
                "http://127.0.0.1:{http_port}/web/login?db={}",
                urlencode(database)
            ),
            false,
        ),
    ];
    for (url, want_pass) in checks {
        let what = url
            .split_once("127.0.0.1")
            .map(|(_, rest)| format!("127.0.0.1{rest}"))
            .unwrap_or_else(|| url.clone());
        let mut reported = String::new();
        loop {
            let target = url.clone();
            let result = tokio::task::spawn_blocking(move || probe(&target, want_pass))
                .await
                .unwrap_or_else(|e| Err(e.to_string()));
            let last = match result {
                Ok(()) => {
                    on_line(&format!(
                        "{what}: ok after {} ms",
                        started.elapsed().as_millis()
                    ));
                    break;
                }
                Err(e) => e,
            };
            if last != reported {
                on_line(&format!("{what}: {last}"));
                reported.clone_from(&last);
            }
            if started.elapsed() >= timeout {
                return Err(HealthError::Unhealthy {
                    what,
                    timeout,
                    last,
                });
            }
            tokio::select! {
                _ = cancel.cancelled() => return Err(HealthError::Cancelled),
                _ = tokio::time::sleep(Duration::from_millis(250)) => {}
            }
        }
    }
    Ok(())
}

/// Percent-encodes a database name for a query string.
fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn database_names_are_encoded() {
        assert_eq!(urlencode("shop-prod.v17"), "shop-prod.v17");
        assert_eq!(urlencode("a b&c"), "a%20b%26c");
    }

    #[tokio::test]
    async fn a_closed_port_is_reported_unhealthy_with_the_url() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = listener.local_addr().expect("addr").port();
        drop(listener);
        let cancel = CancellationToken::new();
        let mut lines = Vec::new();
        let err = wait_healthy(port, "db", Duration::from_millis(600), &cancel, &mut |l| {
            lines.push(l.to_owned())
        })
        .await
        .expect_err("nothing listens");
        assert!(
            err.to_string()
                .contains(&format!("127.0.0.1:{port}/web/health")),
            "{err}"
        );
        assert!(!lines.is_empty());
    }
}
