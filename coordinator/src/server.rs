//! `ocore server`: opens the store, loads the CA, serves the REST API, keeps the agent
//! links, and shuts down gracefully on SIGTERM. SIGHUP reloads certificates.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::signal::unix::{signal, SignalKind};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::agents::AgentHub;
use crate::api::{self, AppState};
use crate::config::CoordinatorConfig;
use crate::https::{Https, TlsListener};
use crate::metrics::Metrics;
use crate::pki::Pki;
use crate::queue::{Backoff, Dispatcher, Live};
use crate::secrets::SecretBox;
use crate::store::Store;

/// Time in-flight requests get to finish after SIGTERM.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(20);
/// Name of the file holding the first admin token, created when the store has no token.
pub const INITIAL_TOKEN_FILE: &str = "initial-admin-token";

pub async fn run(config: CoordinatorConfig) -> anyhow::Result<()> {
    let config = Arc::new(config);
    let https = match &config.tls {
        Some(files) => Some(Arc::new(Https::new(files.clone())?)),
        None => None,
    };
    let pki = Arc::new(Pki::load(config.ca_dir(), config.pki.clone())?);
    let secrets = Arc::new(SecretBox::load_or_create(&config.secrets_key_file())?);
    let store = crate::store::open(&config.store_dir())?;
    crate::recovery::apply_pending(&store, &config.state_dir);
    bootstrap_admin_token(&store, &config.state_dir)?;

    let listener = TcpListener::bind(config.listen)
        .await
        .map_err(|e| anyhow::anyhow!("cannot listen on {}: {e}", config.listen))?;
    let local = listener.local_addr()?;

    let cancel = CancellationToken::new();
    let tracker = TaskTracker::new();
    let hub = AgentHub::new(
        store.clone(),
        pki.clone(),
        config.agents.clone(),
        cancel.child_token(),
        tracker.clone(),
    );
    hub.start();
    tracker.spawn(crate::recovery::watch(
        store.clone(),
        config.state_dir.clone(),
        cancel.child_token(),
    ));
    let metrics = Arc::new(Metrics::default());
    let dispatcher = Dispatcher::new(
        store.clone(),
        hub.clone(),
        Arc::new(Live::default()),
        metrics.clone(),
        secrets.clone(),
        Backoff::default(),
        cancel.child_token(),
        tracker.clone(),
    );
    dispatcher.start();
    let app = api::router(Arc::new(AppState {
        store: store.clone(),
        hub: hub.clone(),
        pki: pki.clone(),
        config: config.clone(),
        dispatcher,
        metrics,
        secrets,
        webhooks: Arc::new(api::WebhookGate::new(&config.webhooks)),
        cancel: cancel.child_token(),
        tracker: tracker.clone(),
    }));
    let shutdown = cancel.clone();
    let scheme = if https.is_some() { "https" } else { "http" };
    let server = match &https {
        Some(https) => {
            let listener = TlsListener::start(
                listener,
                https.clone(),
                cancel.child_token(),
                tracker.clone(),
            )?;
            tracker.spawn(async move {
                axum::serve(listener, app)
                    .with_graceful_shutdown(shutdown.cancelled_owned())
                    .await
            })
        }
        None => tracker.spawn(async move {
            axum::serve(listener, app)
                .with_graceful_shutdown(shutdown.cancelled_owned())
                .await
        }),
    };
    tracing::info!("REST API listening on {scheme}://{local}");

    if let Err(e) = sd_notify::notify(false, &[sd_notify::NotifyState::Ready]) {
        tracing::warn!("cannot notify systemd of readiness: {e}");
    }
    wait_for_shutdown(&pki, &hub, https.as_deref()).await?;
    tracing::info!("shutting down; waiting up to {SHUTDOWN_GRACE:?} for in-flight requests");
    let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Stopping]);
    cancel.cancel();
    tracker.close();
    let drained = tokio::time::timeout(SHUTDOWN_GRACE, tracker.wait())
        .await
        .is_ok();
    store.flush()?;
    if !drained {
        tracing::warn!("grace period over; exiting with requests still in flight");
        return Ok(());
    }
    server.await??;
    Ok(())
}

async fn wait_for_shutdown(pki: &Pki, hub: &AgentHub, https: Option<&Https>) -> anyhow::Result<()> {
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let mut hup = signal(SignalKind::hangup())?;
    loop {
        tokio::select! {
            _ = term.recv() => return Ok(()),
            _ = int.recv() => return Ok(()),
            _ = hup.recv() => {
                let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Reloading]);
                match pki.reload() {
                    Ok(()) => {
                        tracing::info!("SIGHUP: reloaded the CA and the coordinator certificate");
                        hub.reconnect_all();
                    }
                    Err(e) => tracing::error!("SIGHUP: keeping the current certificates: {e}"),
                }
                if let Some(https) = https {
                    match https.reload() {
                        Ok(()) => tracing::info!("SIGHUP: reloaded the REST listener's certificate"),
                        Err(e) => tracing::error!("SIGHUP: keeping the REST listener's certificate: {e}"),
                    }
                }
                let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Ready]);
            }
        }
    }
}

/// On first start (no token at all) creates an admin token and writes it to a 0600 file
/// in the state directory, so the operator can log in once and create proper tokens.
fn bootstrap_admin_token(store: &Store, state_dir: &Path) -> anyhow::Result<()> {
    if store.token_count() > 0 {
        return Ok(());
    }
    let (record, secret) =
        crate::api::tokens::new_token_record("initial-admin", true, Vec::new(), None);
    let path = state_dir.join(INITIAL_TOKEN_FILE);
    ocore_proto::tls::write_file_atomic(&path, format!("{secret}\n").as_bytes(), 0o600)?;
    store.insert_token(&record)?;
    tracing::info!(
        "created the first admin token; it is in {} (readable by this user only)",
        path.display()
    );
    Ok(())
}
