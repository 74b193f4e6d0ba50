//! `ocore-agent run`: binds the gRPC listener behind mutual TLS, serves until SIGTERM, and
//! reloads its certificate on SIGHUP.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use ocore_proto::AgentServer;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::mpsc;
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tonic::transport::server::Connected;

use crate::config::AgentConfig;
use crate::service::AgentService;
use crate::tls::TlsState;

/// A handshake that takes longer than this is dropped, so idle sockets cannot pile up.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Time in-flight RPCs get to finish after SIGTERM.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(20);

/// Runs the agent until SIGTERM or SIGINT.
pub async fn run(config: AgentConfig) -> anyhow::Result<()> {
    let config = Arc::new(config);
    let tls = Arc::new(TlsState::load(&config.tls_dir())?);
    let identity = tls.current();
    let cancel = CancellationToken::new();
    let tracker = TaskTracker::new();

    // Everything the service needs, and the clean-up of interrupted deployments, before
    // the listener exists: no new work is accepted until the host is consistent.
    let pg = crate::db::Pg::from_config(&config.postgres)?;
    let snapshots = Arc::new(crate::snapshot::Snapshots::new(config.clone(), pg.clone()));
    let journal_dir = config.state_dir.join("journal");
    let journal = crate::journal::Journal::open(&journal_dir)?;
    let journal_broken = journal.broken();
    let engine = crate::docker::Engine::connect()?;
    let traffic = Arc::new(crate::traffic::Nginx::new(config.nginx.clone()));
    let pipeline = crate::pipeline::Pipeline::new(
        config.clone(),
        journal,
        engine,
        traffic,
        pg,
        crate::pipeline::snapshot_port(snapshots.clone()),
        tracker.clone(),
        cancel.child_token(),
    );
    // Snapshot work first (half-done swaps and restores), then deployments, which may swap
    // a safety copy back.
    let report = snapshots.recover().await?;
    tracing::debug!("snapshot recovery: {report:?}");
    let recovered = pipeline.recover().await?;
    if recovered > 0 {
        tracing::warn!("finished the clean-up of {recovered} interrupted deployment(s)");
    }

    let listener = TcpListener::bind(config.listen)
        .await
        .map_err(|e| anyhow::anyhow!("cannot listen on {}: {e}", config.listen))?;
    let local = listener.local_addr()?;
    tracing::info!(
        agent = %identity.name,
        instances = config.instances.len(),
        "gRPC (mutual TLS 1.3) listening on {local}"
    );

    let (conn_tx, conn_rx) = mpsc::channel::<io::Result<TlsConn>>(64);
    tracker.spawn(accept_loop(
        listener,
        tls.clone(),
        conn_tx,
        cancel.clone(),
        tracker.clone(),
    ));

    let started_at = time::OffsetDateTime::now_utc().unix_timestamp() * 1000;
    let service = AgentService::new(config.clone(), tls.clone(), started_at, snapshots, pipeline);
    let server = tonic::transport::Server::builder()
        .add_service(AgentServer::new(service))
        .serve_with_incoming_shutdown(
            ReceiverStream::new(conn_rx),
            cancel.clone().cancelled_owned(),
        );
    let server = tracker.spawn(server);

    notify_ready();
    let stop = wait_for_shutdown(&tls, &journal_broken).await?;
    tracing::info!("shutting down; waiting up to {SHUTDOWN_GRACE:?} for in-flight requests");
    let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Stopping]);
    cancel.cancel();
    tracker.close();
    if tokio::time::timeout(SHUTDOWN_GRACE, tracker.wait())
        .await
        .is_err()
    {
        tracing::warn!("grace period over; exiting with requests still in flight");
    } else {
        // Every tracked task has ended, so the server's result is ready.
        server.await??;
    }
    match stop {
        Stop::Signal => Ok(()),
        // A failure exit: systemd restarts the agent, which reopens the journal and
        // finishes the interrupted deployments (once the disk has room again).
        Stop::JournalBroken => Err(anyhow::anyhow!(
            "stopped because the journal in {} cannot be written (see the error above; a full disk?); \
             interrupted deployments are finished when the agent starts again",
            journal_dir.display()
        )),
    }
}

/// Why the agent stops.
enum Stop {
    /// SIGTERM or SIGINT.
    Signal,
    /// A journal write failed; the agent cannot keep its crash-safety promise any more.
    JournalBroken,
}

fn notify_ready() {
    if let Err(e) = sd_notify::notify(false, &[sd_notify::NotifyState::Ready]) {
        tracing::warn!("cannot notify systemd of readiness: {e}");
    }
}

/// Waits for SIGTERM, SIGINT or a broken journal; SIGHUP reloads the TLS identity from
/// disk meanwhile.
async fn wait_for_shutdown(
    tls: &TlsState,
    journal_broken: &CancellationToken,
) -> anyhow::Result<Stop> {
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let mut hup = signal(SignalKind::hangup())?;
    loop {
        tokio::select! {
            _ = term.recv() => return Ok(Stop::Signal),
            _ = int.recv() => return Ok(Stop::Signal),
            _ = journal_broken.cancelled() => return Ok(Stop::JournalBroken),
            _ = hup.recv() => {
                let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Reloading]);
                match tls.reload() {
                    Ok(identity) => tracing::info!(
                        agent = %identity.name,
                        not_after = identity.cert.not_after,
                        "SIGHUP: reloaded certificate"
                    ),
                    Err(e) => tracing::error!("SIGHUP: keeping the current certificate: {e}"),
                }
                notify_ready();
            }
        }
    }
}

async fn accept_loop(
    listener: TcpListener,
    tls: Arc<TlsState>,
    conns: mpsc::Sender<io::Result<TlsConn>>,
    cancel: CancellationToken,
    tracker: TaskTracker,
) {
    loop {
        let (tcp, peer) = tokio::select! {
            _ = cancel.cancelled() => return,
            accepted = listener.accept() => match accepted {
                Ok(pair) => pair,
                Err(e) => {
                    // Typically EMFILE: back off instead of spinning.
                    tracing::warn!("accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        // Each handshake uses the configuration in force now, so a renewed or reloaded
        // certificate applies to the very next connection.
        let acceptor = TlsAcceptor::from(tls.server_config());
        let conns = conns.clone();
        tracker.spawn(async move {
            match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                Ok(Ok(stream)) => {
                    let _ = conns.send(Ok(TlsConn(stream))).await;
                }
                Ok(Err(e)) => tracing::warn!(%peer, "refused connection: {e}"),
                Err(_) => tracing::warn!(%peer, "refused connection: TLS handshake timed out"),
            }
        });
    }
}

/// A TLS connection accepted from an authenticated coordinator.
pub struct TlsConn(TlsStream<TcpStream>);

/// Peer address of a connection, available to RPC handlers as a request extension.
#[derive(Debug, Clone)]
pub struct PeerAddr(pub Option<std::net::SocketAddr>);

impl Connected for TlsConn {
    type ConnectInfo = PeerAddr;

    fn connect_info(&self) -> PeerAddr {
        PeerAddr(self.0.get_ref().0.peer_addr().ok())
    }
}

impl AsyncRead for TlsConn {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().0).poll_read(cx, buf)
    }
}

impl AsyncWrite for TlsConn {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().0).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().0).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().0).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().0).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.0.is_write_vectored()
    }
}
