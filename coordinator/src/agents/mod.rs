//! The coordinator's side of every agent link: one tracked task per enrolled agent that
//! keeps a mutual-TLS channel, polls the agent's status, renews its certificate before
//! expiry, and drops the link the moment the agent is removed.

mod connect;
mod rpc;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ocore_proto::identity::fingerprint;
use ocore_proto::tls::cert_to_pem;
use ocore_proto::v1::{AgentInfo, GetInfoRequest, InstallCertificateRequest, RenewalRequest};
use serde::Serialize;
use time::OffsetDateTime;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tonic::transport::Channel;

pub use connect::{describe, Client};
pub use rpc::{
    ArchiveFormat, ByteStream, DeployCommand, EventStream, RollbackCommand, SnapshotProgress,
    SnapshotStream, SnapshotVerification,
};

use crate::config::AgentsConfig;
use crate::domain::now_ms;
use crate::pki::Pki;
use crate::store::{AgentRecord, InstanceSummary, Store};

/// How the coordinator currently sees an agent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum LinkState {
    /// Registered, waiting for `ocore-agent enroll`.
    PendingEnrolment,
    Connecting,
    Connected,
    /// Network or service failure; retried at every poll.
    Unreachable,
    /// The TLS handshake failed on identity: wrong agent, unknown or revoked certificate.
    Refused,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct LinkStatus {
    pub state: LinkState,
    pub last_error: Option<String>,
}

/// Why a call to an agent could not be made.
#[derive(Debug, thiserror::Error)]
pub enum AgentCallError {
    #[error("agent {0} not found")]
    Unknown(String),
    #[error("agent {0} is not enrolled yet; run `ocore-agent enroll` on its host")]
    NotEnrolled(String),
    /// No connection to the agent could be made: the call certainly did not arrive.
    #[error("agent {name} is unreachable: {message}")]
    NotConnected { name: String, message: String },
    /// The agent could not be reached, or the link broke; worth retrying later.
    #[error("agent {name} is unreachable: {message}")]
    Failed { name: String, message: String },
    /// The agent answered and refused the call.
    #[error("agent {name}: {message}")]
    Refused {
        name: String,
        reason: Refusal,
        message: String,
    },
}

/// Why an agent refused a call (from its gRPC status code).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    NotFound,
    Invalid,
    Conflict,
    Unimplemented,
    Exhausted,
    /// A stored part failed its checksum (a corrupt snapshot).
    Corrupt,
    Internal,
}

impl AgentCallError {
    /// True when trying again later may succeed (the agent was not reached).
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            AgentCallError::Failed { .. }
                | AgentCallError::NotConnected { .. }
                | AgentCallError::NotEnrolled(_)
        )
    }
}

struct Link {
    wake: Notify,
    cancel: CancellationToken,
    status: Mutex<LinkStatus>,
    /// The channel and what it was built from; rebuilt when any of that changes.
    channel: Mutex<Option<(String, Channel)>>,
}

pub struct AgentHub {
    store: Store,
    pki: Arc<Pki>,
    settings: AgentsConfig,
    links: Mutex<HashMap<String, Arc<Link>>>,
    cancel: CancellationToken,
    tracker: TaskTracker,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn now() -> OffsetDateTime {
    OffsetDateTime::now_utc()
}

impl AgentHub {
    pub fn new(
        store: Store,
        pki: Arc<Pki>,
        settings: AgentsConfig,
        cancel: CancellationToken,
        tracker: TaskTracker,
    ) -> Arc<Self> {
        Arc::new(Self {
            store,
            pki,
            settings,
            links: Mutex::new(HashMap::new()),
            cancel,
            tracker,
        })
    }

    /// Starts a link for every stored agent and the coordinator certificate's renewal check.
    pub fn start(self: &Arc<Self>) {
        match self.store.agents() {
            Ok(agents) => {
                for agent in agents {
                    self.sync(&agent.name);
                }
            }
            Err(e) => tracing::error!("cannot list agents: {e}"),
        }
        let hub = self.clone();
        self.tracker
            .spawn(async move { hub.renew_own_certificate().await });
    }

    /// Brings the link of `name` in line with the store: starts it, wakes it, or stops it
    /// when the agent was removed.
    pub fn sync(self: &Arc<Self>, name: &str) {
        let exists = matches!(self.store.agent(name), Ok(Some(_)));
        let mut links = lock(&self.links);
        match (exists, links.get(name)) {
            (true, Some(link)) => {
                *lock(&link.channel) = None;
                link.wake.notify_one();
            }
            (true, None) => {
                let link = Arc::new(Link {
                    wake: Notify::new(),
                    cancel: self.cancel.child_token(),
                    status: Mutex::new(LinkStatus {
                        state: LinkState::Connecting,
                        last_error: None,
                    }),
                    channel: Mutex::new(None),
                });
                links.insert(name.to_owned(), link.clone());
                let hub = self.clone();
                let name = name.to_owned();
                self.tracker
                    .spawn(async move { hub.run_link(name, link).await });
            }
            (false, Some(_)) => {
                if let Some(link) = links.remove(name) {
                    link.cancel.cancel();
                }
            }
            (false, None) => {}
        }
    }

    fn wake_all(&self) {
        for link in lock(&self.links).values() {
            *lock(&link.channel) = None;
            link.wake.notify_one();
        }
    }

    /// Forgets cached channels and re-polls every agent (after SIGHUP or a renewal).
    pub fn reconnect_all(&self) {
        self.wake_all();
    }

    pub fn status(&self, name: &str) -> Option<LinkStatus> {
        lock(&self.links)
            .get(name)
            .map(|link| lock(&link.status).clone())
    }

    /// A client for `name`, sharing the link's channel.
    pub fn client(&self, name: &str) -> Result<Client, AgentCallError> {
        let record = self
            .store
            .agent(name)
            .map_err(|e| AgentCallError::Failed {
                name: name.to_owned(),
                message: e.to_string(),
            })?
            .ok_or_else(|| AgentCallError::Unknown(name.to_owned()))?;
        if record.cert_fingerprints.is_empty() {
            return Err(AgentCallError::NotEnrolled(name.to_owned()));
        }
        let link = lock(&self.links).get(name).cloned();
        match link {
            Some(link) => self.link_client(&record, &link),
            None => connect::channel(
                &self.pki,
                &record,
                self.connect_timeout(),
                self.request_timeout(),
            )
            .map(Client::new)
            .map_err(|message| AgentCallError::Failed {
                name: name.to_owned(),
                message,
            }),
        }
    }

    /// Asks the agent for its information now.
    pub async fn info(&self, name: &str) -> Result<AgentInfo, AgentCallError> {
        let mut client = self.client(name)?;
        client
            .get_info(GetInfoRequest {})
            .await
            .map(tonic::Response::into_inner)
            .map_err(|status| rpc::call_error(name, &status))
    }

    /// Names of agents and whether each is connected now (for metrics).
    pub fn link_states(&self) -> Vec<(String, LinkState)> {
        lock(&self.links)
            .iter()
            .map(|(name, link)| (name.clone(), lock(&link.status).state))
            .collect()
    }

    fn connect_timeout(&self) -> Duration {
        Duration::from_secs(self.settings.connect_timeout_secs)
    }

    fn request_timeout(&self) -> Duration {
        Duration::from_secs(self.settings.request_timeout_secs)
    }

    fn link_client(&self, record: &AgentRecord, link: &Link) -> Result<Client, AgentCallError> {
        let key = format!(
            "{}|{}|{}",
            record.address,
            record.cert_fingerprints.join(","),
            self.pki.client_identity().info.fingerprint
        );
        let mut cached = lock(&link.channel);
        if let Some((k, channel)) = cached.as_ref() {
            if *k == key {
                return Ok(Client::new(channel.clone()));
            }
        }
        let channel = connect::channel(
            &self.pki,
            record,
            self.connect_timeout(),
            self.request_timeout(),
        )
        .map_err(|message| AgentCallError::Failed {
            name: record.name.clone(),
            message,
        })?;
        *cached = Some((key, channel.clone()));
        Ok(Client::new(channel))
    }

    fn set_status(link: &Link, state: LinkState, last_error: Option<String>) {
        *lock(&link.status) = LinkStatus { state, last_error };
    }

    async fn run_link(self: Arc<Self>, name: String, link: Arc<Link>) {
        let poll = Duration::from_secs(self.settings.poll_interval_secs);
        loop {
            if link.cancel.is_cancelled() {
                break;
            }
            match self.store.agent(&name) {
                Ok(Some(record)) if record.cert_fingerprints.is_empty() => {
                    Self::set_status(&link, LinkState::PendingEnrolment, None);
                }
                Ok(Some(record)) => self.poll(&record, &link).await,
                Ok(None) => break,
                Err(e) => Self::set_status(&link, LinkState::Unreachable, Some(e.to_string())),
            }
            tokio::select! {
                _ = link.cancel.cancelled() => break,
                _ = link.wake.notified() => {}
                _ = tokio::time::sleep(poll) => {}
            }
        }
        tracing::debug!(agent = %name, "agent link stopped");
    }

    async fn poll(&self, record: &AgentRecord, link: &Link) {
        let name = &record.name;
        let result = match self.link_client(record, link) {
            Ok(mut client) => client
                .get_info(GetInfoRequest {})
                .await
                .map(tonic::Response::into_inner)
                .map(|info| (client, info))
                .map_err(|s| describe(&s)),
            Err(e) => Err(e.to_string()),
        };
        let (mut client, info) = match result {
            Ok(ok) => ok,
            Err(message) => {
                let state = if is_identity_failure(&message) {
                    LinkState::Refused
                } else {
                    LinkState::Unreachable
                };
                let previous = lock(&link.status).state;
                if previous != state {
                    tracing::warn!(agent = %name, "agent {}: {message}", state_word(state));
                }
                Self::set_status(link, state, Some(message));
                return;
            }
        };
        if lock(&link.status).state != LinkState::Connected {
            tracing::info!(agent = %name, version = %info.version, "agent connected");
        }
        Self::set_status(link, LinkState::Connected, None);
        let not_after = info.certificate_not_after / 1000;
        let updated = self.store.update_agent(name, &|a| {
            a.last_seen = Some(now().unix_timestamp());
            a.version = Some(info.version.clone());
            a.hostname = Some(info.hostname.clone());
            a.cert_not_after = Some(not_after);
            a.instances = info
                .instances
                .iter()
                .map(|i| InstanceSummary {
                    id: i.id.clone(),
                    database: i.database.clone(),
                    base_image: i.base_image.clone(),
                    public_port: i.public_port,
                })
                .collect();
        });
        if let Err(e) = updated {
            tracing::error!(agent = %name, "cannot record agent status: {e}");
        }
        self.refresh_colors(name).await;
        if self.pki.needs_renewal(not_after, now()) {
            match self.renew(name, &mut client).await {
                Ok(new_not_after) => tracing::info!(
                    agent = %name,
                    not_after = new_not_after,
                    "renewed the agent's certificate"
                ),
                Err(e) => tracing::error!(agent = %name, "certificate renewal failed: {e}"),
            }
        }
    }

    /// Records the active colour of every instance bound to this agent, as it reports it.
    async fn refresh_colors(&self, agent: &str) {
        let instances = match self.store.instances(None) {
            Ok(list) => list,
            Err(e) => {
                tracing::error!("cannot list instances: {e}");
                return;
            }
        };
        for instance in instances.into_iter().filter(|i| i.agent == agent) {
            match self.active_color(agent, &instance.agent_instance_id).await {
                Ok(color) if color != instance.active_color => {
                    let result = self.store.update_instance(&instance.id, &mut |i| {
                        i.active_color = color;
                        i.active_color_at = Some(now_ms());
                        Ok(())
                    });
                    if let Err(e) = result {
                        tracing::warn!(instance = %instance.id, "cannot record colour: {e}");
                    }
                }
                Ok(_) => {}
                Err(e) => {
                    tracing::debug!(instance = %instance.id, "no instance status: {e}");
                }
            }
        }
    }

    /// Renewal over the live link: the agent makes a key and CSR, the CA signs, the agent
    /// installs. The new certificate is accepted before it is sent, so a lost answer cannot
    /// lock the agent out.
    async fn renew(&self, name: &str, client: &mut Client) -> Result<i64, String> {
        let csr = client
            .request_certificate_renewal(RenewalRequest {})
            .await
            .map_err(|s| describe(&s))?
            .into_inner()
            .csr_pem;
        let cert = self
            .pki
            .ca()
            .sign_agent(&csr, name, now(), self.pki.agent_validity())
            .map_err(|e| e.to_string())?;
        let fp = fingerprint(&cert);
        self.store
            .update_agent(name, &|a| {
                if !a.cert_fingerprints.contains(&fp) {
                    a.cert_fingerprints.push(fp.clone());
                }
            })
            .map_err(|e| e.to_string())?;
        let installed = client
            .install_certificate(InstallCertificateRequest {
                certificate_pem: cert_to_pem(&cert),
            })
            .await
            .map_err(|s| describe(&s))?
            .into_inner();
        let not_after = installed.not_after / 1000;
        self.store
            .update_agent(name, &|a| {
                a.cert_fingerprints = vec![fp.clone()];
                a.cert_not_after = Some(not_after);
            })
            .map_err(|e| e.to_string())?;
        Ok(not_after)
    }

    async fn renew_own_certificate(self: Arc<Self>) {
        loop {
            match self.pki.renew_client_if_due(now()) {
                Ok(true) => {
                    tracing::info!("renewed the coordinator's client certificate");
                    self.wake_all();
                }
                Ok(false) => {}
                Err(e) => tracing::error!("cannot renew the coordinator's certificate: {e}"),
            }
            tokio::select! {
                _ = self.cancel.cancelled() => return,
                _ = tokio::time::sleep(Duration::from_secs(60)) => {}
            }
        }
    }
}

fn state_word(state: LinkState) -> &'static str {
    match state {
        LinkState::Refused => "refused",
        _ => "unreachable",
    }
}

/// Handshake failures on identity (as opposed to the network) mention the certificate.
fn is_identity_failure(message: &str) -> bool {
    let m = message.to_ascii_lowercase();
    m.contains("certificate") || m.contains("invalid peer")
}
