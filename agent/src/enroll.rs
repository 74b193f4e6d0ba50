//! `ocore-agent enroll`: obtains the agent's certificate from the coordinator with a one-time
//! token, generating the key pair here so the private key never leaves the host.

use std::path::{Path, PathBuf};
use std::time::Duration;

use ocore_proto::enrolment::{EnrolRequest, EnrolResponse, EnrolmentToken, MalformedToken};
use ocore_proto::identity::fingerprint;
use ocore_proto::tls::{self as wire_tls, CertInfo, TlsError};
use rcgen::PublicKeyData;

use crate::tls::{new_key_request, IdentityError, IdentityFiles};

/// Why enrolment failed. Nothing is written to disk unless every check passed.
#[derive(Debug, thiserror::Error)]
pub enum EnrolError {
    #[error(transparent)]
    Token(#[from] MalformedToken),
    #[error(
        "this agent is already enrolled ({path} exists); pass --force to replace its identity"
    )]
    AlreadyEnrolled { path: PathBuf },
    #[error("coordinator URL {0:?} must start with http:// or https://")]
    BadUrl(String),
    #[error("cannot reach the coordinator at {url}: {message}")]
    Unreachable { url: String, message: String },
    #[error("the coordinator refused the enrolment: {0}")]
    Refused(String),
    #[error("the coordinator sent a CA whose fingerprint {got} differs from the one in the token ({expected}); the connection may be intercepted, enrolment aborted")]
    CaMismatch { expected: String, got: String },
    #[error("the certificate sent by the coordinator is not acceptable: {0}")]
    BadCertificate(TlsError),
    #[error("cannot read {path}: {source}")]
    ReadCa {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(transparent)]
    Identity(#[from] IdentityError),
}

/// What enrolment produced.
#[derive(Debug)]
pub struct Enrolled {
    pub agent_name: String,
    pub certificate: CertInfo,
}

/// Enrols this host: the token names the agent and pins the CA.
///
/// `coordinator_ca` is an extra trust root for an `https://` coordinator URL whose REST
/// certificate is not publicly trusted.
pub fn enroll(
    coordinator_url: &str,
    token_text: &str,
    tls_dir: &Path,
    coordinator_ca: Option<&Path>,
    force: bool,
) -> Result<Enrolled, EnrolError> {
    let token = EnrolmentToken::decode(token_text)?;
    let files = IdentityFiles::new(tls_dir);
    if !force && files.cert().exists() {
        return Err(EnrolError::AlreadyEnrolled { path: files.cert() });
    }
    let base = coordinator_url.trim_end_matches('/');
    if !(base.starts_with("http://") || base.starts_with("https://")) {
        return Err(EnrolError::BadUrl(coordinator_url.to_owned()));
    }
    let request = new_key_request(&token.agent)?;
    let body = EnrolRequest {
        token: token_text.trim().to_owned(),
        csr_pem: request.csr_pem.clone(),
    };
    let url = format!("{base}/api/agents/enroll");
    let response = post_json(&url, &body, coordinator_ca)?;

    let ca = wire_tls::parse_cert_pem(&response.ca_certificate_pem)
        .map_err(EnrolError::BadCertificate)?;
    let got = fingerprint(&ca);
    if got != token.ca_fingerprint {
        return Err(EnrolError::CaMismatch {
            expected: token.ca_fingerprint,
            got,
        });
    }
    let cert =
        wire_tls::parse_cert_pem(&response.certificate_pem).map_err(EnrolError::BadCertificate)?;
    let info =
        wire_tls::verify_agent_certificate(&cert, &ca, &token.agent, request.key.der_bytes())
            .map_err(EnrolError::BadCertificate)?;
    files.store(&request.key, &cert, Some(&ca))?;
    Ok(Enrolled {
        agent_name: token.agent,
        certificate: info,
    })
}

fn post_json(
    url: &str,
    body: &EnrolRequest,
    coordinator_ca: Option<&Path>,
) -> Result<EnrolResponse, EnrolError> {
    let mut builder = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(30)));
    if let Some(path) = coordinator_ca {
        let pem = std::fs::read(path).map_err(|source| EnrolError::ReadCa {
            path: path.to_owned(),
            source,
        })?;
        let certs: Vec<_> = ureq::tls::parse_pem(&pem)
            .filter_map(|item| match item {
                Ok(ureq::tls::PemItem::Certificate(c)) => Some(c),
                _ => None,
            })
            .collect();
        builder = builder.tls_config(
            ureq::tls::TlsConfig::builder()
                .root_certs(ureq::tls::RootCerts::new_with_certs(&certs))
                .build(),
        );
    }
    let agent: ureq::Agent = builder.build().into();
    let unreachable = |e: ureq::Error| EnrolError::Unreachable {
        url: url.to_owned(),
        message: e.to_string(),
    };
    let mut response = agent.post(url).send_json(body).map_err(unreachable)?;
    let status = response.status();
    if status.is_success() {
        return response
            .body_mut()
            .read_json::<EnrolResponse>()
            .map_err(unreachable);
    }
    let text = response.body_mut().read_to_string().unwrap_or_default();
    let message = serde_json::from_str::<serde_json::Value>(&text)
        .ok()
        .and_then(|v| v["error"]["message"].as_str().map(str::to_owned))
        .unwrap_or_else(|| format!("HTTP {status}: {}", text.trim()));
    Err(EnrolError::Refused(message))
}
