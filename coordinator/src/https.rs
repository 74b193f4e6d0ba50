//! HTTPS for the REST listener: certificate files from `[tls]` in coordinator.toml, kept
//! in an `ArcSwap` so SIGHUP swaps them for the next handshake, and an axum `Listener`
//! that hands axum only connections whose TLS handshake finished. Handshakes run in their
//! own tasks with a deadline, so a slow client cannot hold up the accept loop.
//!
//! This is the public, browser-facing side (TLS 1.2 and 1.3, no client certificates);
//! the agent link's mutual TLS lives in `ocore_proto::tls`.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use ocore_proto::tls::{load_certs, load_key, provider};
use rustls::ServerConfig;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::TlsConfig;

/// Time a client gets to finish its TLS handshake.
const HANDSHAKE_DEADLINE: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
#[error("cannot use the REST listener's TLS files: {0}")]
pub struct HttpsError(String);

/// Builds the server configuration from the certificate and key files.
pub fn load(tls: &TlsConfig) -> Result<ServerConfig, HttpsError> {
    let chain = load_certs(&tls.cert).map_err(|e| HttpsError(e.to_string()))?;
    let key = load_key(&tls.key).map_err(|e| HttpsError(e.to_string()))?;
    let mut config = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| HttpsError(e.to_string()))?
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .map_err(|e| {
            HttpsError(format!(
                "{} and {} do not make a usable pair: {e}",
                tls.cert.display(),
                tls.key.display()
            ))
        })?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}

/// The live TLS configuration of the REST listener.
pub struct Https {
    files: TlsConfig,
    current: ArcSwap<ServerConfig>,
}

impl Https {
    pub fn new(files: TlsConfig) -> Result<Self, HttpsError> {
        let config = load(&files)?;
        Ok(Self {
            files,
            current: ArcSwap::from_pointee(config),
        })
    }

    /// Re-reads the files; on error the current certificate stays in use.
    pub fn reload(&self) -> Result<(), HttpsError> {
        let config = load(&self.files)?;
        self.current.store(Arc::new(config));
        Ok(())
    }
}

/// A listener yielding connections that completed their TLS handshake.
pub struct TlsListener {
    ready: mpsc::Receiver<(TlsStream<TcpStream>, SocketAddr)>,
    local: SocketAddr,
}

impl TlsListener {
    pub fn start(
        listener: TcpListener,
        https: Arc<Https>,
        cancel: CancellationToken,
        tracker: TaskTracker,
    ) -> std::io::Result<Self> {
        let local = listener.local_addr()?;
        let (tx, ready) = mpsc::channel(64);
        let handshakes = tracker.clone();
        tracker.spawn(async move {
            loop {
                let accepted = tokio::select! {
                    _ = cancel.cancelled() => return,
                    accepted = listener.accept() => accepted,
                };
                let (tcp, peer) = match accepted {
                    Ok(pair) => pair,
                    Err(e) => {
                        tracing::warn!("accepting a connection failed: {e}");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                };
                let acceptor = TlsAcceptor::from(https.current.load_full());
                let tx = tx.clone();
                handshakes.spawn(async move {
                    match tokio::time::timeout(HANDSHAKE_DEADLINE, acceptor.accept(tcp)).await {
                        Ok(Ok(tls)) => {
                            let _ = tx.send((tls, peer)).await;
                        }
                        Ok(Err(e)) => tracing::debug!(%peer, "TLS handshake failed: {e}"),
                        Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
                    }
                });
            }
        });
        Ok(Self { ready, local })
    }
}

impl axum::serve::Listener for TlsListener {
    type Io = TlsStream<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.ready.recv().await {
            Some(pair) => pair,
            // Shutting down: nothing more will be accepted.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        Ok(self.local)
    }
}
