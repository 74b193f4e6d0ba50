//! The coordinator's live PKI state: the CA that signs, and the client identity presented
//! to agents, renewed before it expires and reloadable on SIGHUP.

use std::path::PathBuf;
use std::sync::Arc;

use arc_swap::ArcSwap;
use time::{Duration, OffsetDateTime};

use crate::ca::{Ca, CaError, ClientIdentity};
use crate::config::PkiConfig;

pub struct Pki {
    dir: PathBuf,
    ca: ArcSwap<Ca>,
    client: ArcSwap<ClientIdentity>,
    settings: PkiConfig,
}

impl Pki {
    pub fn load(dir: PathBuf, settings: PkiConfig) -> Result<Self, CaError> {
        let ca = Ca::load(&dir)?;
        let client = ca.load_coordinator_identity()?;
        Ok(Self {
            dir,
            ca: ArcSwap::from_pointee(ca),
            client: ArcSwap::from_pointee(client),
            settings,
        })
    }

    /// Re-reads the CA and the client identity from disk (SIGHUP).
    pub fn reload(&self) -> Result<(), CaError> {
        let ca = Ca::load(&self.dir)?;
        let client = ca.load_coordinator_identity()?;
        self.ca.store(Arc::new(ca));
        self.client.store(Arc::new(client));
        Ok(())
    }

    pub fn ca(&self) -> Arc<Ca> {
        self.ca.load_full()
    }

    pub fn client_identity(&self) -> Arc<ClientIdentity> {
        self.client.load_full()
    }

    pub fn settings(&self) -> &PkiConfig {
        &self.settings
    }

    pub fn agent_validity(&self) -> Duration {
        secs(self.settings.agent_cert_validity_secs)
    }

    /// True when a certificate ending at `not_after` (Unix seconds) must be renewed at `now`.
    pub fn needs_renewal(&self, not_after: i64, now: OffsetDateTime) -> bool {
        now + secs(self.settings.renew_before_secs) >= unix(not_after)
    }

    /// Renews the coordinator's own client certificate if it is due. Returns whether it did.
    pub fn renew_client_if_due(&self, now: OffsetDateTime) -> Result<bool, CaError> {
        if !self.needs_renewal(self.client.load().info.not_after, now) {
            return Ok(false);
        }
        let renewed = self
            .ca()
            .renew_coordinator_identity(now, secs(self.settings.coordinator_cert_validity_secs))?;
        self.client.store(Arc::new(renewed));
        Ok(true)
    }
}

pub fn secs(s: u64) -> Duration {
    Duration::seconds(i64::try_from(s).unwrap_or(i64::MAX))
}

fn unix(t: i64) -> OffsetDateTime {
    OffsetDateTime::from_unix_timestamp(t).unwrap_or(OffsetDateTime::UNIX_EPOCH)
}
