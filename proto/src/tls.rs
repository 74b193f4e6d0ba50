//! Transport security of the wire contract: TLS 1.3 only, mutual authentication against the
//! oCore CA, and the identity checks each side applies to its peer.
//!
//! - The agent (server) accepts only client certificates issued by the oCore CA that carry
//!   [`COORDINATOR_DNS_NAME`] and the client-auth usage.
//! - The coordinator (client) accepts only a server certificate issued by the oCore CA that
//!   names the agent it meant to reach *and* is one of the certificates it enrolled for that
//!   agent (pinned by fingerprint), so a removed or impersonated agent is refused.
//!
//! Both policies live here so they cannot drift apart.

use std::fs::{self, OpenOptions};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use base64::Engine as _;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::server::WebPkiClientVerifier;
use rustls::{
    CertificateError, ClientConfig, DigitallySignedStruct, DistinguishedName, OtherError,
    RootCertStore, ServerConfig, SignatureScheme,
};
use x509_parser::extensions::GeneralName;

use crate::identity::{agent_dns_name, fingerprint, COORDINATOR_DNS_NAME};

/// ALPN protocol of gRPC (HTTP/2).
const ALPN_H2: &[u8] = b"h2";

/// Why TLS material could not be loaded or used. Each variant names the file or identity.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot write {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path} holds no {what} in PEM form")]
    NoPem { path: PathBuf, what: &'static str },
    #[error("invalid certificate: {0}")]
    BadCertificate(String),
    #[error("tls configuration: {0}")]
    Rustls(#[from] rustls::Error),
    #[error("tls verifier: {0}")]
    Verifier(String),
}

/// The crypto provider every oCore TLS endpoint uses (ring).
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Reads every certificate of a PEM file.
pub fn load_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let bytes = fs::read(path).map_err(|source| TlsError::Read {
        path: path.to_owned(),
        source,
    })?;
    let certs: Vec<_> = CertificateDer::pem_slice_iter(&bytes)
        .filter_map(Result::ok)
        .collect();
    if certs.is_empty() {
        return Err(TlsError::NoPem {
            path: path.to_owned(),
            what: "certificate",
        });
    }
    Ok(certs)
}

/// Reads the private key of a PEM file.
pub fn load_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    let bytes = fs::read(path).map_err(|source| TlsError::Read {
        path: path.to_owned(),
        source,
    })?;
    PrivateKeyDer::from_pem_slice(&bytes).map_err(|_| TlsError::NoPem {
        path: path.to_owned(),
        what: "private key",
    })
}

/// Parses one PEM certificate held in memory.
pub fn parse_cert_pem(pem: &str) -> Result<CertificateDer<'static>, TlsError> {
    CertificateDer::from_pem_slice(pem.as_bytes())
        .map_err(|e| TlsError::BadCertificate(format!("not a PEM certificate: {e}")))
}

/// Encodes a DER certificate as PEM.
pub fn cert_to_pem(der: &CertificateDer<'_>) -> String {
    let b64 = base64::engine::general_purpose::STANDARD.encode(der.as_ref());
    let mut out = String::from("-----BEGIN CERTIFICATE-----\n");
    for chunk in b64.as_bytes().chunks(64) {
        out.push_str(&String::from_utf8_lossy(chunk));
        out.push('\n');
    }
    out.push_str("-----END CERTIFICATE-----\n");
    out
}

/// Facts about a certificate that the daemons report and check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertInfo {
    /// DNS subject alternative names.
    pub dns_names: Vec<String>,
    /// Unix seconds.
    pub not_before: i64,
    /// Unix seconds.
    pub not_after: i64,
    /// The raw subject public key bits (what a key pair's public half is compared with).
    pub public_key: Vec<u8>,
    pub fingerprint: String,
}

/// Reads the facts of a DER certificate.
pub fn cert_info(der: &[u8]) -> Result<CertInfo, TlsError> {
    let (_, cert) = x509_parser::parse_x509_certificate(der)
        .map_err(|e| TlsError::BadCertificate(e.to_string()))?;
    let dns_names = match cert.subject_alternative_name() {
        Ok(Some(san)) => san
            .value
            .general_names
            .iter()
            .filter_map(|n| match n {
                GeneralName::DNSName(d) => Some((*d).to_owned()),
                _ => None,
            })
            .collect(),
        _ => Vec::new(),
    };
    Ok(CertInfo {
        dns_names,
        not_before: cert.validity().not_before.timestamp(),
        not_after: cert.validity().not_after.timestamp(),
        public_key: cert.public_key().subject_public_key.data.to_vec(),
        fingerprint: fingerprint(der),
    })
}

fn roots(ca: &CertificateDer<'static>) -> Result<Arc<RootCertStore>, TlsError> {
    let mut roots = RootCertStore::empty();
    roots.add(ca.clone())?;
    Ok(Arc::new(roots))
}

fn reject(reason: String) -> rustls::Error {
    rustls::Error::InvalidCertificate(CertificateError::Other(OtherError(Arc::new(
        IdentityRejected(reason),
    ))))
}

#[derive(Debug)]
struct IdentityRejected(String);

impl std::fmt::Display for IdentityRejected {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for IdentityRejected {}

/// Server configuration of an agent: TLS 1.3 only, client certificate required, issued by
/// `ca` and carrying the coordinator identity.
pub fn agent_server_config(
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
    ca: &CertificateDer<'static>,
) -> Result<ServerConfig, TlsError> {
    let provider = provider();
    let inner = WebPkiClientVerifier::builder_with_provider(roots(ca)?, provider.clone())
        .build()
        .map_err(|e| TlsError::Verifier(e.to_string()))?;
    let verifier = Arc::new(CoordinatorClientVerifier { inner });
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_client_cert_verifier(verifier)
        .with_single_cert(chain, key)?;
    config.alpn_protocols = vec![ALPN_H2.to_vec()];
    Ok(config)
}

/// Accepts a client only if its certificate chains to the oCore CA (checked by webpki,
/// including validity dates and the client-auth usage) and names the coordinator.
#[derive(Debug)]
struct CoordinatorClientVerifier {
    inner: Arc<dyn ClientCertVerifier>,
}

impl ClientCertVerifier for CoordinatorClientVerifier {
    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        self.inner.root_hint_subjects()
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        let verified = self
            .inner
            .verify_client_cert(end_entity, intermediates, now)?;
        let info = cert_info(end_entity).map_err(|e| reject(e.to_string()))?;
        if info.dns_names.iter().any(|n| n == COORDINATOR_DNS_NAME) {
            Ok(verified)
        } else {
            Err(reject(format!(
                "client certificate names {:?}, not the coordinator",
                info.dns_names
            )))
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

/// Client configuration the coordinator uses to reach agent `agent_name`: TLS 1.3 only,
/// presenting the coordinator certificate, accepting only a server certificate whose
/// fingerprint is in `enrolled_fingerprints` and which names that agent.
pub fn coordinator_client_config(
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
    ca: &CertificateDer<'static>,
    agent_name: &str,
    enrolled_fingerprints: Vec<String>,
) -> Result<ClientConfig, TlsError> {
    let provider = provider();
    let inner = WebPkiServerVerifier::builder_with_provider(roots(ca)?, provider.clone())
        .build()
        .map_err(|e| TlsError::Verifier(e.to_string()))?;
    let verifier = Arc::new(EnrolledAgentVerifier {
        inner,
        agent_name: agent_name.to_owned(),
        enrolled_fingerprints,
    });
    let mut config = ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_client_auth_cert(chain, key)?;
    config.alpn_protocols = vec![ALPN_H2.to_vec()];
    Ok(config)
}

#[derive(Debug)]
struct EnrolledAgentVerifier {
    inner: Arc<WebPkiServerVerifier>,
    agent_name: String,
    enrolled_fingerprints: Vec<String>,
}

impl ServerCertVerifier for EnrolledAgentVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        // The name the coordinator dialled is irrelevant: what matters is which enrolled
        // agent it meant to reach, so the expected name is fixed by the configuration.
        let expected = agent_dns_name(&self.agent_name);
        let info = cert_info(end_entity).map_err(|e| reject(e.to_string()))?;
        if !info.dns_names.contains(&expected) {
            return Err(reject(format!(
                "agent certificate names {}, expected agent {}",
                describe_agents(&info.dns_names),
                self.agent_name
            )));
        }
        let name = ServerName::try_from(expected)
            .map_err(|e| reject(format!("invalid agent name: {e}")))?;
        let verified =
            self.inner
                .verify_server_cert(end_entity, intermediates, &name, ocsp_response, now)?;
        if !self.enrolled_fingerprints.contains(&info.fingerprint) {
            return Err(reject(format!(
                "agent {} presented a certificate that was not enrolled or was revoked; \
                 re-enrol the agent",
                self.agent_name
            )));
        }
        Ok(verified)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

fn describe_agents(dns_names: &[String]) -> String {
    let names: Vec<&str> = dns_names
        .iter()
        .map(|n| crate::identity::agent_name_from_dns(n).unwrap_or(n))
        .collect();
    if names.is_empty() {
        "no agent".to_owned()
    } else {
        names.join(", ")
    }
}

/// Checks that `cert` is a currently valid agent certificate for `agent_name` issued by `ca`
/// for the public key `public_key`. Used when an agent receives its certificate.
pub fn verify_agent_certificate(
    cert: &CertificateDer<'static>,
    ca: &CertificateDer<'static>,
    agent_name: &str,
    public_key: &[u8],
) -> Result<CertInfo, TlsError> {
    let verifier = WebPkiServerVerifier::builder_with_provider(roots(ca)?, provider())
        .build()
        .map_err(|e| TlsError::Verifier(e.to_string()))?;
    let name = ServerName::try_from(agent_dns_name(agent_name))
        .map_err(|e| TlsError::BadCertificate(e.to_string()))?;
    verifier
        .verify_server_cert(cert, &[], &name, &[], UnixTime::now())
        .map_err(|e| TlsError::BadCertificate(e.to_string()))?;
    let info = cert_info(cert)?;
    if info.public_key != public_key {
        return Err(TlsError::BadCertificate(
            "certificate is for another key than the one generated here".to_owned(),
        ));
    }
    Ok(info)
}

/// Writes `bytes` to `path` atomically (temporary file, fsync, rename) with `mode`.
///
/// Keys are written with 0600 so they are never readable by others, not even briefly.
pub fn write_file_atomic(path: &Path, bytes: &[u8], mode: u32) -> Result<(), TlsError> {
    let err = |source| TlsError::Write {
        path: path.to_owned(),
        source,
    };
    let dir = path.parent().unwrap_or_else(|| Path::new("."));
    let file_name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = dir.join(format!(".{file_name}.tmp-{}", std::process::id()));
    let mut file = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(mode)
        .open(&tmp)
        .map_err(err)?;
    let written = file.write_all(bytes).and_then(|()| file.sync_all());
    if let Err(e) = written {
        let _ = fs::remove_file(&tmp);
        return Err(err(e));
    }
    fs::rename(&tmp, path).map_err(err)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pem_round_trip_and_facts() -> Result<(), Box<dyn std::error::Error>> {
        let key = rcgen::KeyPair::generate()?;
        let mut params = rcgen::CertificateParams::new(vec![agent_dns_name("web1")])?;
        params.not_after = time::OffsetDateTime::from_unix_timestamp(2_000_000_000)?;
        let cert = params.self_signed(&key)?;
        let der = cert.der().clone();
        let back = parse_cert_pem(&cert_to_pem(&der))?;
        assert_eq!(back, der);
        let info = cert_info(&der)?;
        assert_eq!(info.dns_names, vec!["web1.agent.ocore.internal".to_owned()]);
        assert_eq!(info.not_after, 2_000_000_000);
        assert_eq!(info.public_key, rcgen::PublicKeyData::der_bytes(&key));
        Ok(())
    }

    #[test]
    fn atomic_write_sets_mode() -> Result<(), Box<dyn std::error::Error>> {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("k.pem");
        write_file_atomic(&path, b"one", 0o600)?;
        write_file_atomic(&path, b"two", 0o600)?;
        assert_eq!(fs::read(&path)?, b"two");
        assert_eq!(fs::metadata(&path)?.permissions().mode() & 0o777, 0o600);
        assert_eq!(
            fs::read_dir(dir.path())?.count(),
            1,
            "no temporary file left"
        );
        Ok(())
    }
}
