//! The agent's TLS identity: key, certificate and pinned CA on disk under `<state_dir>/tls`,
//! the live server configuration built from them, and certificate renewal.
//!
//! The private key is generated here and never leaves the host. Renewal keeps the pending
//! key in memory until the coordinator returns a certificate for it; then key and
//! certificate are written atomically and new connections use them at once.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use arc_swap::ArcSwap;
use ocore_proto::identity::{agent_dns_name, agent_name_from_dns};
use ocore_proto::tls::{self as wire_tls, CertInfo, TlsError};
use rcgen::{CertificateParams, KeyPair, PublicKeyData};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use rustls::ServerConfig;

/// File names inside the TLS directory.
pub const KEY_FILE: &str = "agent.key";
pub const CERT_FILE: &str = "agent.crt";
pub const CA_FILE: &str = "ca.crt";

/// Why the agent's identity could not be loaded, created or renewed.
#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    #[error("agent is not enrolled: {path} is missing; run `ocore-agent enroll --coordinator URL --token TOKEN` first")]
    NotEnrolled { path: PathBuf },
    #[error(transparent)]
    Tls(#[from] TlsError),
    #[error("key generation: {0}")]
    KeyGen(#[from] rcgen::Error),
    #[error("agent certificate {path} names no agent ({names:?})")]
    NoAgentName { path: PathBuf, names: Vec<String> },
    #[error("no renewal is pending: request a renewal before installing a certificate")]
    NoPendingRenewal,
    #[error("cannot create {path}: {source}")]
    CreateDir {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// A freshly generated key pair and the CSR asking the CA to certify it for an agent name.
pub struct KeyRequest {
    pub key: KeyPair,
    pub csr_pem: String,
}

/// Generates a key pair on this host and a CSR for agent `name`.
pub fn new_key_request(name: &str) -> Result<KeyRequest, IdentityError> {
    let key = KeyPair::generate()?;
    let params = CertificateParams::new(vec![agent_dns_name(name)])?;
    let csr_pem = params.serialize_request(&key)?.pem()?;
    Ok(KeyRequest { key, csr_pem })
}

/// Paths of the identity files.
#[derive(Debug, Clone)]
pub struct IdentityFiles {
    pub dir: PathBuf,
}

impl IdentityFiles {
    pub fn new(dir: &Path) -> Self {
        Self {
            dir: dir.to_owned(),
        }
    }
    pub fn key(&self) -> PathBuf {
        self.dir.join(KEY_FILE)
    }
    pub fn cert(&self) -> PathBuf {
        self.dir.join(CERT_FILE)
    }
    pub fn ca(&self) -> PathBuf {
        self.dir.join(CA_FILE)
    }

    /// Creates the directory with mode 0700.
    pub fn create_dir(&self) -> Result<(), IdentityError> {
        use std::os::unix::fs::DirBuilderExt;
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&self.dir)
            .map_err(|source| IdentityError::CreateDir {
                path: self.dir.clone(),
                source,
            })
    }

    /// Stores a verified identity: key first (0600), then CA, then certificate, each atomic.
    pub fn store(
        &self,
        key: &KeyPair,
        cert: &CertificateDer<'static>,
        ca: Option<&CertificateDer<'static>>,
    ) -> Result<(), IdentityError> {
        self.create_dir()?;
        wire_tls::write_file_atomic(&self.key(), key.serialize_pem().as_bytes(), 0o600)?;
        if let Some(ca) = ca {
            wire_tls::write_file_atomic(&self.ca(), wire_tls::cert_to_pem(ca).as_bytes(), 0o644)?;
        }
        wire_tls::write_file_atomic(&self.cert(), wire_tls::cert_to_pem(cert).as_bytes(), 0o644)?;
        Ok(())
    }
}

/// What the agent currently presents.
#[derive(Debug, Clone)]
pub struct LoadedIdentity {
    pub name: String,
    pub cert: CertInfo,
    ca: CertificateDer<'static>,
    config: Arc<ServerConfig>,
}

impl LoadedIdentity {
    fn load(files: &IdentityFiles) -> Result<Self, IdentityError> {
        for path in [files.key(), files.cert(), files.ca()] {
            if !path.exists() {
                return Err(IdentityError::NotEnrolled { path });
            }
        }
        let chain = wire_tls::load_certs(&files.cert())?;
        let key = wire_tls::load_key(&files.key())?;
        let ca = wire_tls::load_certs(&files.ca())?
            .into_iter()
            .next()
            .ok_or_else(|| IdentityError::NotEnrolled { path: files.ca() })?;
        let cert = wire_tls::cert_info(&chain[0])?;
        let name = cert
            .dns_names
            .iter()
            .find_map(|n| agent_name_from_dns(n))
            .map(str::to_owned)
            .ok_or_else(|| IdentityError::NoAgentName {
                path: files.cert(),
                names: cert.dns_names.clone(),
            })?;
        let config = Arc::new(wire_tls::agent_server_config(chain, key, &ca)?);
        Ok(Self {
            name,
            cert,
            ca,
            config,
        })
    }
}

/// The identity in force, swappable while connections are being accepted.
pub struct TlsState {
    files: IdentityFiles,
    current: ArcSwap<LoadedIdentity>,
    /// Key generated for a renewal the coordinator has not completed yet.
    pending: Mutex<Option<KeyPair>>,
}

impl TlsState {
    /// Loads the identity from `dir`; fails if the agent was never enrolled.
    pub fn load(dir: &Path) -> Result<Self, IdentityError> {
        let files = IdentityFiles::new(dir);
        let current = LoadedIdentity::load(&files)?;
        Ok(Self {
            files,
            current: ArcSwap::from_pointee(current),
            pending: Mutex::new(None),
        })
    }

    /// Re-reads key, certificate and CA from disk (SIGHUP). On error the old identity stays.
    pub fn reload(&self) -> Result<Arc<LoadedIdentity>, IdentityError> {
        let loaded = Arc::new(LoadedIdentity::load(&self.files)?);
        self.current.store(loaded.clone());
        Ok(loaded)
    }

    pub fn current(&self) -> Arc<LoadedIdentity> {
        self.current.load_full()
    }

    /// Server configuration for the next handshake.
    pub fn server_config(&self) -> Arc<ServerConfig> {
        self.current.load().config.clone()
    }

    /// Starts a renewal: a new key pair kept in memory, and its CSR for the coordinator.
    pub fn begin_renewal(&self) -> Result<String, IdentityError> {
        let name = self.current.load().name.clone();
        let request = new_key_request(&name)?;
        *lock(&self.pending) = Some(request.key);
        Ok(request.csr_pem)
    }

    /// Completes a renewal with the certificate the coordinator issued for the pending key:
    /// verifies it, stores key and certificate atomically and serves them from now on.
    pub fn install(&self, cert_pem: &str) -> Result<CertInfo, IdentityError> {
        let mut pending = lock(&self.pending);
        let key = pending.as_ref().ok_or(IdentityError::NoPendingRenewal)?;
        let cert = wire_tls::parse_cert_pem(cert_pem)?;
        let current = self.current.load_full();
        let info =
            wire_tls::verify_agent_certificate(&cert, &current.ca, &current.name, key.der_bytes())?;
        // Build the new server config before touching disk, so a bad key never gets stored.
        let key_der = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
        let config = Arc::new(wire_tls::agent_server_config(
            vec![cert.clone()],
            key_der,
            &current.ca,
        )?);
        self.files.store(key, &cert, None)?;
        self.current.store(Arc::new(LoadedIdentity {
            name: current.name.clone(),
            cert: info.clone(),
            ca: current.ca.clone(),
            config,
        }));
        *pending = None;
        Ok(info)
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // A panic while holding this lock cannot leave the Option half-written.
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}
