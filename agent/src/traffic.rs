//! Where an instance's public port sends traffic: to the blue or green colour, or to a
//! maintenance response. nginx is the driver today. The [`TrafficSwitch`] trait keeps the
//! pipeline independent of it, so Caddy or Traefik drivers can follow.
//!
//! nginx: one file per instance in the configured `conf_dir`, written atomically (temporary
//! file, then rename). It is validated with `nginx -t` (the previous file comes back if that
//! fails) and applied with a graceful reload, which lets in-flight requests finish on the
//! old workers. HTTP and websocket routes always move together, because they are in the
//! same file.

use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

use crate::config::{InstanceConfig, NginxConfig};
use crate::exec::{self, Program};

/// A colour of the blue/green pair.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Color {
    Blue,
    Green,
}

impl Color {
    pub fn other(self) -> Self {
        match self {
            Color::Blue => Color::Green,
            Color::Green => Color::Blue,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Color::Blue => "blue",
            Color::Green => "green",
        }
    }

    /// The HTTP and gevent ports this colour uses for `instance`.
    pub fn ports(self, instance: &InstanceConfig) -> (u16, u16) {
        let p = match self {
            Color::Blue => instance.blue,
            Color::Green => instance.green,
        };
        (p.http, p.gevent)
    }
}

impl std::fmt::Display for Color {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Which port of a colour serves `/websocket` (and Odoo 15's `/longpolling`).
///
/// With `workers = 0` (Odoo's default) Odoo is one threaded process that serves websockets
/// on its HTTP port and never opens the gevent port; only with `workers > 0` does a
/// separate gevent process listen on `gevent_port`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Websocket {
    #[default]
    HttpPort,
    GeventPort,
}

impl Websocket {
    /// The mode of an Odoo running with `workers`.
    pub fn for_workers(workers: u32) -> Self {
        if workers > 0 {
            Websocket::GeventPort
        } else {
            Websocket::HttpPort
        }
    }

    /// The port of `color` that answers websockets.
    pub fn port(self, color: Color, instance: &InstanceConfig) -> u16 {
        let (http, gevent) = color.ports(instance);
        match self {
            Websocket::HttpPort => http,
            Websocket::GeventPort => gevent,
        }
    }
}

/// Where the public port points.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    Color(Color, Websocket),
    Maintenance,
}

#[derive(Debug, thiserror::Error)]
pub enum TrafficError {
    #[error("cannot write {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("nginx rejected the new configuration for instance {instance} (previous configuration kept): {message}")]
    Invalid { instance: String, message: String },
    #[error("nginx reload failed: {0}")]
    Reload(String),
}

/// Moves an instance's traffic.
#[async_trait::async_trait]
pub trait TrafficSwitch: Send + Sync {
    /// Points the instance's public port at `route`; returns once the proxy applies it.
    async fn route(&self, instance: &InstanceConfig, route: Route) -> Result<(), TrafficError>;
    /// Removes the instance's routing entirely (used only when nothing was ever deployed).
    async fn remove(&self, instance: &InstanceConfig) -> Result<(), TrafficError>;
}

/// The nginx driver.
pub struct Nginx {
    config: NginxConfig,
}

/// Upper bound of an `nginx -t` or reload.
const NGINX_TIMEOUT: Duration = Duration::from_secs(30);

impl Nginx {
    pub fn new(config: NginxConfig) -> Self {
        Self { config }
    }

    fn file(&self, instance: &InstanceConfig) -> PathBuf {
        self.config
            .conf_dir
            .join(format!("ocore-{}.conf", instance.id))
    }

    fn program(&self) -> Program {
        let mut p = Program::new(&self.config.binary);
        if let Some(prefix) = &self.config.prefix {
            p = p.arg("-p").arg(prefix);
        }
        if let Some(file) = &self.config.config_file {
            p = p.arg("-c").arg(file);
        }
        p
    }

    async fn nginx(&self, args: &[&str]) -> Result<(), String> {
        let cancel = CancellationToken::new();
        exec::run(&self.program().args(args), NGINX_TIMEOUT, &cancel)
            .await
            .map(|_| ())
            .map_err(|e| e.to_string())
    }

    async fn install(
        &self,
        instance: &InstanceConfig,
        text: Option<String>,
    ) -> Result<(), TrafficError> {
        let path = self.file(instance);
        let previous = std::fs::read_to_string(&path).ok();
        write_atomic(&path, text.as_deref())?;
        if let Err(message) = self.nginx(&["-t", "-q"]).await {
            // Put the previous file back so nginx keeps a valid configuration.
            let _ = write_atomic(&path, previous.as_deref());
            return Err(TrafficError::Invalid {
                instance: instance.id.clone(),
                message,
            });
        }
        self.nginx(&["-s", "reload"])
            .await
            .map_err(TrafficError::Reload)
    }
}

fn write_atomic(path: &std::path::Path, text: Option<&str>) -> Result<(), TrafficError> {
    let err = |source| TrafficError::Write {
        path: path.to_owned(),
        source,
    };
    match text {
        None => match std::fs::remove_file(path) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(err(e)),
            _ => Ok(()),
        },
        Some(text) => {
            let dir = path.parent().unwrap_or_else(|| std::path::Path::new("."));
            std::fs::create_dir_all(dir).map_err(err)?;
            // The temporary name does not end in .conf, so an `include *.conf` never
            // reads a half-written file.
            let tmp = dir.join(format!(
                ".{}.tmp",
                path.file_name()
                    .map(|n| n.to_string_lossy())
                    .unwrap_or_default()
            ));
            std::fs::write(&tmp, text).map_err(err)?;
            std::fs::rename(&tmp, path).map_err(err)
        }
    }
}

/// How long a reload may take to show on the public port.
const APPLY_TIMEOUT: Duration = Duration::from_secs(10);

/// The address to reach an instance's public port on from this host.
pub fn public_url_host(instance: &InstanceConfig) -> String {
    match instance.public_address {
        Some(addr) if !addr.is_unspecified() => match addr {
            std::net::IpAddr::V6(v6) => format!("[{v6}]"),
            std::net::IpAddr::V4(v4) => v4.to_string(),
        },
        Some(std::net::IpAddr::V6(_)) => "[::1]".to_owned(),
        _ => "127.0.0.1".to_owned(),
    }
}

/// Waits until the public port answers with `expected` in the colour header: nginx's reload
/// is asynchronous, and callers rely on the route being in force when `route` returns.
async fn wait_applied(host: &str, port: u16, expected: &str) -> Result<(), TrafficError> {
    let url = format!("http://{host}:{port}/web/health");
    let deadline = tokio::time::Instant::now() + APPLY_TIMEOUT;
    let mut streak = 0;
    loop {
        let target = url.clone();
        let seen = tokio::task::spawn_blocking(move || {
            let agent: ureq::Agent = ureq::Agent::config_builder()
                .http_status_as_error(false)
                .timeout_global(Some(Duration::from_secs(2)))
                .build()
                .into();
            agent.get(&target).call().ok().and_then(|r| {
                r.headers()
                    .get(COLOR_HEADER)
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_owned)
            })
        })
        .await
        .ok()
        .flatten();
        if seen.as_deref() == Some(expected) {
            streak += 1;
            // Workers of the previous generation may still accept a connection or two
            // right after the reload: several fresh connections in a row must agree.
            if streak >= 5 {
                return Ok(());
            }
            continue;
        }
        streak = 0;
        if tokio::time::Instant::now() >= deadline {
            return Err(TrafficError::Reload(format!(
                "port {port} still answers as {} {} s after the reload, not {expected}",
                seen.as_deref().unwrap_or("nothing"),
                APPLY_TIMEOUT.as_secs()
            )));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[async_trait::async_trait]
impl TrafficSwitch for Nginx {
    async fn route(&self, instance: &InstanceConfig, route: Route) -> Result<(), TrafficError> {
        self.install(instance, Some(render(instance, route)))
            .await?;
        let expected = match route {
            Route::Color(c, _) => c.as_str(),
            Route::Maintenance => "maintenance",
        };
        wait_applied(&public_url_host(instance), instance.public_port, expected).await
    }

    async fn remove(&self, instance: &InstanceConfig) -> Result<(), TrafficError> {
        self.install(instance, None).await
    }
}

/// Header naming the colour that answered, so a switch can be observed from outside.
pub const COLOR_HEADER: &str = "X-Ocore-Color";

/// The nginx `listen` parameter of an instance: its public address (all addresses when
/// unset) and port.
fn listen(instance: &InstanceConfig) -> String {
    let port = instance.public_port;
    match instance.public_address {
        None => port.to_string(),
        Some(std::net::IpAddr::V6(v6)) => format!("[{v6}]:{port}"),
        Some(std::net::IpAddr::V4(v4)) => format!("{v4}:{port}"),
    }
}

/// The nginx configuration of an instance for `route`.
pub fn render(instance: &InstanceConfig, route: Route) -> String {
    let id = instance.id.replace('-', "_");
    let listen = listen(instance);
    let head = format!(
        "# Managed by ocore-agent for instance {}: rewritten on every deployment, do not edit.\n",
        instance.id
    );
    match route {
        Route::Maintenance => format!(
            "{head}server {{\n    listen {listen};\n    location / {{\n        default_type text/html;\n        add_header Retry-After 30 always;\n        add_header {COLOR_HEADER} maintenance always;\n        return 503 '<!doctype html><title>Maintenance</title><h1>Updating, back in a moment</h1><p>This Odoo instance is being updated.</p>';\n    }}\n}}\n"
        ),
        Route::Color(color, websocket) => {
            let (http, gevent) = color.ports(instance);
            // With workers = 0 the HTTP port answers websockets itself; a gevent upstream
            // exists only when Odoo runs workers (and so opens the gevent port).
            let (gevent_upstream, ws_upstream, mode) = match websocket {
                Websocket::GeventPort => (
                    format!("upstream ocore_{id}_gevent {{\n    server 127.0.0.1:{gevent};\n}}\n"),
                    format!("ocore_{id}_gevent"),
                    "workers > 0: websockets on the gevent port",
                ),
                Websocket::HttpPort => (
                    String::new(),
                    format!("ocore_{id}_http"),
                    "workers = 0: websockets on the HTTP port",
                ),
            };
            format!(
                "{head}# active colour: {color} ({mode})\n\
upstream ocore_{id}_http {{\n    server 127.0.0.1:{http};\n    keepalive 16;\n}}\n\
{gevent_upstream}\
map $http_upgrade $ocore_{id}_connection {{\n    default upgrade;\n    ''      close;\n}}\n\
server {{\n    listen {listen};\n    client_max_body_size 512m;\n    proxy_read_timeout 720s;\n    proxy_connect_timeout 10s;\n    proxy_send_timeout 720s;\n    proxy_set_header Host $host;\n    proxy_set_header X-Real-IP $remote_addr;\n    proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;\n    proxy_set_header X-Forwarded-Host $host;\n    proxy_set_header X-Forwarded-Proto $scheme;\n    add_header {COLOR_HEADER} {color} always;\n\
    location /websocket {{\n        proxy_pass http://{ws_upstream};\n        proxy_http_version 1.1;\n        proxy_set_header Upgrade $http_upgrade;\n        proxy_set_header Connection $ocore_{id}_connection;\n    }}\n\
    location /longpolling {{\n        proxy_pass http://{ws_upstream};\n    }}\n\
    location / {{\n        proxy_pass http://ocore_{id}_http;\n        proxy_http_version 1.1;\n        proxy_set_header Connection \"\";\n        proxy_redirect off;\n    }}\n}}\n"
            )
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::ColorPorts;

    fn instance() -> InstanceConfig {
        InstanceConfig {
            id: "shop-prod".into(),
            database: "shop".into(),
            data_dir: "/var/lib/odoo".into(),
            base_image: "odoo:17.0".into(),
            public_port: 8069,
            blue: ColorPorts {
                http: 18069,
                gevent: 18072,
            },
            green: ColorPorts {
                http: 28069,
                gevent: 28072,
            },
            ..InstanceConfig::example()
        }
    }

    #[test]
    fn colour_routes_move_http_and_websocket_together() {
        let blue = render(
            &instance(),
            Route::Color(Color::Blue, Websocket::GeventPort),
        );
        assert!(blue.contains("server 127.0.0.1:18069;"));
        assert!(blue.contains("server 127.0.0.1:18072;"));
        assert!(!blue.contains("28069") && !blue.contains("28072"));
        assert!(blue.contains("listen 8069;"));
        let green = render(
            &instance(),
            Route::Color(Color::Green, Websocket::GeventPort),
        );
        assert!(
            green.contains("server 127.0.0.1:28069;") && green.contains("server 127.0.0.1:28072;")
        );
        assert!(!green.contains("18069"));
        assert!(green.contains("X-Ocore-Color green"));
    }

    #[test]
    fn websockets_follow_the_workers_mode() {
        // workers = 0: no gevent upstream at all, /websocket goes to the HTTP port.
        let threaded = render(&instance(), Route::Color(Color::Blue, Websocket::HttpPort));
        assert!(!threaded.contains("18072"), "{threaded}");
        let ws = &threaded[threaded.find("location /websocket").unwrap_or(0)..];
        assert!(
            ws.starts_with(
                "location /websocket {\n        proxy_pass http://ocore_shop_prod_http;"
            ),
            "{ws}"
        );
        let workers = render(
            &instance(),
            Route::Color(Color::Blue, Websocket::GeventPort),
        );
        let ws = &workers[workers.find("location /websocket").unwrap_or(0)..];
        assert!(
            ws.starts_with(
                "location /websocket {\n        proxy_pass http://ocore_shop_prod_gevent;"
            ),
            "{ws}"
        );
        assert_eq!(Websocket::for_workers(0), Websocket::HttpPort);
        assert_eq!(Websocket::for_workers(4), Websocket::GeventPort);
        assert_eq!(Websocket::GeventPort.port(Color::Green, &instance()), 28072);
        assert_eq!(Websocket::HttpPort.port(Color::Green, &instance()), 28069);
    }

    #[test]
    fn the_listen_address_is_configurable() {
        let mut inst = instance();
        inst.public_address = Some("10.1.2.3".parse().expect("address"));
        let text = render(&inst, Route::Color(Color::Blue, Websocket::HttpPort));
        assert!(text.contains("listen 10.1.2.3:8069;"), "{text}");
        assert!(render(&inst, Route::Maintenance).contains("listen 10.1.2.3:8069;"));
        assert_eq!(public_url_host(&inst), "10.1.2.3");
        inst.public_address = Some("::1".parse().expect("address"));
        assert!(render(&inst, Route::Maintenance).contains("listen [::1]:8069;"));
        assert_eq!(public_url_host(&inst), "[::1]");
        inst.public_address = Some("0.0.0.0".parse().expect("address"));
        assert_eq!(public_url_host(&inst), "127.0.0.1");
    }

    #[test]
    fn maintenance_answers_503() {
        let text = render(&instance(), Route::Maintenance);
        assert!(text.contains("return 503"));
        assert!(!text.contains("proxy_pass"));
    }

    #[test]
    fn colours_alternate() {
        assert_eq!(Color::Blue.other(), Color::Green);
        assert_eq!(Color::Green.other(), Color::Blue);
        assert_eq!(Color::Blue.ports(&instance()), (18069, 18072));
    }
}
