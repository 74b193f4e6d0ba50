//! Is an Odoo colour healthy? `GET /web/health` must answer `{"status": "pass"}` (Odoo 15+),
//! `GET /web/login?db=<db>` must answer 200, which proves the database loads, and a
//! websocket upgrade of `/websocket` on the port that serves websockets (the HTTP port with
//! `workers = 0`, the gevent port otherwise) must answer `101 Switching Protocols`, which
//! proves the route nginx will use for it works.

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

/// What a websocket handshake found.
#[derive(Debug, PartialEq, Eq)]
enum Handshake {
    /// 101 Switching Protocols.
    Upgraded,
    /// 404: an Odoo without the route (15 and older).
    NoRoute,
}

/// A websocket handshake on `host:port`: `Ok` when it answers 101 (or 404, an Odoo without
/// websockets). The connection is closed right after the handshake.
fn probe_websocket(host: &str, port: u16, database: &str) -> Result<Handshake, String> {
    use std::io::{Read, Write};
    let address = format!("{host}:{port}");
    let addr = std::net::ToSocketAddrs::to_socket_addrs(&address)
        .map_err(|e| e.to_string())?
        .next()
        .ok_or_else(|| format!("{address} does not resolve"))?;
    let mut stream = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(5))
        .map_err(|e| e.to_string())?;
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .map_err(|e| e.to_string())?;
    // Odoo compares the Origin with the Host it is reached on.
    let request = format!(
        "GET /websocket?db={} HTTP/1.1\r\nHost: {address}\r\nOrigin: http://{address}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: b2NvcmUtaGVhbHRoLWNoZWNrIQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
        urlencode(database)
    );
    stream
        .write_all(request.as_bytes())
        .map_err(|e| e.to_string())?;
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") && head.len() < 16 * 1024 {
        match stream.read(&mut byte) {
            Ok(0) => break,
            Ok(_) => head.push(byte[0]),
            Err(e) => return Err(e.to_string()),
        }
    }
    let text = String::from_utf8_lossy(&head);
    let status = text.lines().next().unwrap_or_default().trim().to_owned();
    if status.split_whitespace().nth(1) == Some("101") {
        Ok(Handshake::Upgraded)
    } else if status.split_whitespace().nth(1) == Some("404") {
        // Odoo 15 and older have no websocket route (they long-poll on /longpolling).
        Ok(Handshake::NoRoute)
    } else if status.is_empty() {
        Err("the connection closed without an answer".to_owned())
    } else {
        Err(format!("answered {status:?}, not 101 Switching Protocols"))
    }
}

/// What one health check probes.
enum Check {
    Http { url: String, want_pass: bool },
    Websocket { host: String, port: u16 },
}

/// Polls the colour until every check passes or `timeout` runs out: `/web/health` and
/// `/web/login` on `host:http_port`, and a websocket handshake on `host:websocket_port`.
pub async fn wait_healthy(
    host: &str,
    http_port: u16,
    websocket_port: u16,
    database: &str,
    timeout: Duration,
    cancel: &CancellationToken,
    on_line: &mut (dyn FnMut(&str) + Send),
) -> Result<(), HealthError> {
    let started = Instant::now();
    let checks = [
        Check::Http {
            url: format!("http://{host}:{http_port}/web/health"),
            want_pass: true,
        },
        Check::Http {
            url: format!(
                "http://{host}:{http_port}/web/login?db={}",
                urlencode(database)
            ),
            want_pass: false,
        },
        Check::Websocket {
            host: host.to_owned(),
            port: websocket_port,
        },
    ];
    for check in checks {
        let what = match &check {
            Check::Http { url, .. } => url.trim_start_matches("http://").to_owned(),
            Check::Websocket { host, port } => {
                format!("websocket upgrade of {host}:{port}/websocket")
            }
        };
        let mut reported = String::new();
        let check = std::sync::Arc::new(check);
        loop {
            let target = check.clone();
            let db = database.to_owned();
            let result = tokio::task::spawn_blocking(move || match &*target {
                Check::Http { url, want_pass } => probe(url, *want_pass).map(|()| None),
                Check::Websocket { host, port } => {
                    probe_websocket(host, *port, &db).map(|w| (w == Handshake::NoRoute).then_some(
                        "this Odoo has no /websocket route (Odoo 15 and older long-poll instead): not checked",
                    ))
                }
            })
            .await
            .unwrap_or_else(|e| Err(e.to_string()));
            let last = match result {
                Ok(None) => {
                    on_line(&format!(
                        "{what}: ok after {} ms",
                        started.elapsed().as_millis()
                    ));
                    break;
                }
                Ok(Some(note)) => {
                    on_line(&format!("{what}: {note}"));
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

    #[test]
    fn a_websocket_handshake_needs_101() -> Result<(), Box<dyn std::error::Error>> {
        use std::io::{Read, Write};
        let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
        let port = listener.local_addr()?.port();
        let server = std::thread::spawn(move || -> Vec<String> {
            let mut requests = Vec::new();
            for answer in [
                "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\r\n",
                "HTTP/1.1 400 BAD REQUEST\r\n\r\n",
                "HTTP/1.1 404 NOT FOUND\r\n\r\n",
            ] {
                let Ok((mut s, _)) = listener.accept() else {
                    break;
                };
                let mut buf = [0u8; 2048];
                let n = s.read(&mut buf).unwrap_or(0);
                requests.push(String::from_utf8_lossy(&buf[..n]).into_owned());
                let _ = s.write_all(answer.as_bytes());
            }
            requests
        });
        assert_eq!(
            probe_websocket("127.0.0.1", port, "shop"),
            Ok(Handshake::Upgraded)
        );
        let refused = probe_websocket("127.0.0.1", port, "shop").expect_err("400");
        assert!(refused.contains("400"), "{refused}");
        assert_eq!(
            probe_websocket("127.0.0.1", port, "shop"),
            Ok(Handshake::NoRoute)
        );
        let requests = server.join().map_err(|_| "server thread")?;
        assert!(requests[0].starts_with("GET /websocket?db=shop HTTP/1.1\r\n"));
        assert!(requests[0].contains(&format!("Origin: http://127.0.0.1:{port}\r\n")));
        assert!(requests[0].contains("Upgrade: websocket\r\n"));
        Ok(())
    }

    #[tokio::test]
    async fn a_closed_port_is_reported_unhealthy_with_the_url() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = listener.local_addr().expect("addr").port();
        drop(listener);
        let cancel = CancellationToken::new();
        let mut lines = Vec::new();
        let err = wait_healthy(
            "127.0.0.1",
            port,
            port,
            "db",
            Duration::from_millis(600),
            &cancel,
            &mut |l| lines.push(l.to_owned()),
        )
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
