//! The oCore certificate authority: created once by `ocore ca init`, it issues the
//! coordinator's client certificate and every agent's server certificate.
//!
//! Files in `<state_dir>/ca`: `ca.key` (0600), `ca.crt`, `coordinator.key` (0600),
//! `coordinator.crt`. The CA key never leaves the coordinator host.

use std::path::{Path, PathBuf};

use ocore_proto::identity::{agent_dns_name, fingerprint, COORDINATOR_DNS_NAME};
use ocore_proto::tls::{self as wire_tls, CertInfo, TlsError};
use rcgen::{
    BasicConstraints, CertificateParams, CertificateSigningRequestParams, DistinguishedName,
    DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose, SerialNumber,
};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use time::{Duration, OffsetDateTime};

const CA_KEY: &str = "ca.key";
const CA_CERT: &str = "ca.crt";
const COORD_KEY: &str = "coordinator.key";
const COORD_CERT: &str = "coordinator.crt";
/// The CA outlives any deployment of oCore that would not re-key it deliberately.
const CA_VALIDITY: Duration = Duration::days(3650);
/// Issued certificates start slightly in the past to tolerate clock skew between hosts.
const BACKDATE: Duration = Duration::minutes(5);

#[derive(Debug, thiserror::Error)]
pub enum CaError {
    #[error("the oCore CA already exists in {dir}; refusing to overwrite it")]
    AlreadyExists { dir: PathBuf },
    #[error("no oCore CA in {dir}; create it with `ocore ca init --config <coordinator.toml>`")]
    Missing { dir: PathBuf },
    #[error("cannot create {dir}: {source}")]
    CreateDir {
        dir: PathBuf,
        source: std::io::Error,
    },
    #[error("{path} is unreadable: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(transparent)]
    Tls(#[from] TlsError),
    #[error("certificate request is not valid: {0}")]
    BadCsr(String),
    #[error("certificate generation: {0}")]
    Rcgen(#[from] rcgen::Error),
}

/// The coordinator's client identity, as presented to agents.
#[derive(Debug)]
pub struct ClientIdentity {
    pub chain: Vec<CertificateDer<'static>>,
    pub key: PrivateKeyDer<'static>,
    pub info: CertInfo,
}

impl Clone for ClientIdentity {
    fn clone(&self) -> Self {
        Self {
            chain: self.chain.clone(),
            key: self.key.clone_key(),
            info: self.info.clone(),
        }
    }
}

/// A loaded CA able to sign.
pub struct Ca {
    dir: PathBuf,
    key: KeyPair,
    cert: CertificateDer<'static>,
}

impl std::fmt::Debug for Ca {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ca")
            .field("dir", &self.dir)
            .finish_non_exhaustive()
    }
}

impl Ca {
    /// Creates a new CA and the coordinator's first client certificate in `dir`.
    pub fn init(
        dir: &Path,
        now: OffsetDateTime,
        coordinator_validity: Duration,
    ) -> Result<Self, CaError> {
        if dir.join(CA_KEY).exists() || dir.join(CA_CERT).exists() {
            return Err(CaError::AlreadyExists {
                dir: dir.to_owned(),
            });
        }
        create_private_dir(dir)?;
        let key = KeyPair::generate()?;
        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::OrganizationName, "oCore");
        dn.push(DnType::CommonName, "oCore CA");
        params.distinguished_name = dn;
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        params.not_before = now - BACKDATE;
        params.not_after = now + CA_VALIDITY;
        params.serial_number = Some(random_serial());
        let cert = params.self_signed(&key)?;
        wire_tls::write_file_atomic(&dir.join(CA_KEY), key.serialize_pem().as_bytes(), 0o600)?;
        wire_tls::write_file_atomic(&dir.join(CA_CERT), cert.pem().as_bytes(), 0o644)?;
        let ca = Self {
            dir: dir.to_owned(),
            key,
            cert: cert.der().clone(),
        };
        ca.renew_coordinator_identity(now, coordinator_validity)?;
        Ok(ca)
    }

    /// Loads the CA from `dir`.
    pub fn load(dir: &Path) -> Result<Self, CaError> {
        let key_path = dir.join(CA_KEY);
        if !key_path.exists() {
            return Err(CaError::Missing {
                dir: dir.to_owned(),
            });
        }
        let pem = std::fs::read_to_string(&key_path).map_err(|source| CaError::Read {
            path: key_path.clone(),
            source,
        })?;
        let key = KeyPair::from_pem(&pem)?;
        let cert = wire_tls::load_certs(&dir.join(CA_CERT))?
            .into_iter()
            .next()
            .ok_or_else(|| CaError::Missing {
                dir: dir.to_owned(),
            })?;
        Ok(Self {
            dir: dir.to_owned(),
            key,
            cert,
        })
    }

    pub fn cert(&self) -> &CertificateDer<'static> {
        &self.cert
    }

    pub fn cert_pem(&self) -> String {
        wire_tls::cert_to_pem(&self.cert)
    }

    /// SHA-256 of the CA certificate; enrolment tokens carry it so agents can pin the CA.
    pub fn fingerprint(&self) -> String {
        fingerprint(&self.cert)
    }

    fn issuer(&self) -> Result<Issuer<'static, &KeyPair>, CaError> {
        Ok(Issuer::from_ca_cert_der(&self.cert, &self.key)?)
    }

    /// Signs an agent's CSR. Only the CSR's public key is used: the name, usages and
    /// lifetime are decided here, so an agent cannot ask for another identity.
    pub fn sign_agent(
        &self,
        csr_pem: &str,
        agent_name: &str,
        now: OffsetDateTime,
        validity: Duration,
    ) -> Result<CertificateDer<'static>, CaError> {
        let csr = CertificateSigningRequestParams::from_pem(csr_pem)
            .map_err(|e| CaError::BadCsr(e.to_string()))?;
        let mut params = CertificateParams::new(vec![agent_dns_name(agent_name)])?;
        let mut dn = DistinguishedName::new();
        dn.push(DnType::OrganizationName, "oCore");
        dn.push(DnType::CommonName, format!("agent {agent_name}"));
        params.distinguished_name = dn;
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.not_before = now - BACKDATE;
        params.not_after = now + validity;
        params.serial_number = Some(random_serial());
        let cert = params.signed_by(&csr.public_key, &self.issuer()?)?;
        Ok(cert.der().clone())
    }

    /// Issues a fresh key and client certificate for the coordinator and stores both.
    pub fn renew_coordinator_identity(
        &self,
        now: OffsetDateTime,
        validity: Duration,
    ) -> Result<ClientIdentity, CaError> {
        let key = KeyPair::generate()?;
        let mut params = CertificateParams::new(vec![COORDINATOR_DNS_NAME.to_owned()])?;
        let mut dn = DistinguishedName::new();
        dn.push(DnType::OrganizationName, "oCore");
        dn.push(DnType::CommonName, "oCore coordinator");
        params.distinguished_name = dn;
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.not_before = now - BACKDATE;
        params.not_after = now + validity;
        params.serial_number = Some(random_serial());
        let cert = params.signed_by(&key, &self.issuer()?)?;
        wire_tls::write_file_atomic(
            &self.dir.join(COORD_KEY),
            key.serialize_pem().as_bytes(),
            0o600,
        )?;
        wire_tls::write_file_atomic(&self.dir.join(COORD_CERT), cert.pem().as_bytes(), 0o644)?;
        let der = cert.der().clone();
        Ok(ClientIdentity {
            info: wire_tls::cert_info(&der)?,
            chain: vec![der],
            key: PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der())),
        })
    }

    /// Loads the coordinator's client identity from disk.
    pub fn load_coordinator_identity(&self) -> Result<ClientIdentity, CaError> {
        let chain = wire_tls::load_certs(&self.dir.join(COORD_CERT))?;
        let key = wire_tls::load_key(&self.dir.join(COORD_KEY))?;
        let info = wire_tls::cert_info(&chain[0])?;
        Ok(ClientIdentity { chain, key, info })
    }
}

fn random_serial() -> SerialNumber {
    let mut bytes: [u8; 16] = rand::random();
    // Positive, non-zero 127-bit serial as RFC 5280 asks.
    bytes[0] = (bytes[0] & 0x7f) | 0x01;
    SerialNumber::from_slice(&bytes)
}

fn create_private_dir(dir: &Path) -> Result<(), CaError> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|source| CaError::CreateDir {
            dir: dir.to_owned(),
            source,
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use rcgen::PublicKeyData;

    #[test]
    fn issues_agent_certificates_that_agents_accept() -> Result<(), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        let now = OffsetDateTime::now_utc();
        let ca = Ca::init(dir.path(), now, Duration::days(30))?;
        assert!(matches!(
            Ca::init(dir.path(), now, Duration::days(30)),
            Err(CaError::AlreadyExists { .. })
        ));
        let loaded = Ca::load(dir.path())?;
        assert_eq!(loaded.fingerprint(), ca.fingerprint());
        let ca = loaded;

        let agent_key = KeyPair::generate()?;
        // The CSR asks for another name; the CA must ignore it.
        let csr = CertificateParams::new(vec![agent_dns_name("evil")])?
            .serialize_request(&agent_key)?
            .pem()?;
        let cert = ca.sign_agent(&csr, "web1", now, Duration::days(1))?;
        let info =
            wire_tls::verify_agent_certificate(&cert, ca.cert(), "web1", agent_key.der_bytes())?;
        assert_eq!(info.dns_names, vec![agent_dns_name("web1")]);
        assert!(wire_tls::verify_agent_certificate(
            &cert,
            ca.cert(),
            "evil",
            agent_key.der_bytes()
        )
        .is_err());
        assert!(ca
            .sign_agent("garbage", "web1", now, Duration::days(1))
            .is_err());

        let identity = ca.load_coordinator_identity()?;
        assert_eq!(
            identity.info.dns_names,
            vec![COORDINATOR_DNS_NAME.to_owned()]
        );
        Ok(())
    }

    #[test]
    fn key_files_are_private() -> Result<(), Box<dyn std::error::Error>> {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir()?;
        let ca_dir = dir.path().join("ca");
        Ca::init(&ca_dir, OffsetDateTime::now_utc(), Duration::days(30))?;
        for file in [CA_KEY, COORD_KEY] {
            let mode = std::fs::metadata(ca_dir.join(file))?.permissions().mode();
            assert_eq!(mode & 0o777, 0o600, "{file}");
        }
        assert_eq!(
            std::fs::metadata(&ca_dir)?.permissions().mode() & 0o777,
            0o700
        );
        Ok(())
    }
}
