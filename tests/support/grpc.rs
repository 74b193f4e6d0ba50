//! A hand-built gRPC client for probing an agent with arbitrary client certificates (none,
//! another CA's, expired, wrong identity), independent of the coordinator's own client code.

use std::sync::Arc;
use std::time::Duration;

use hyper_util::rt::TokioIo;
use ocore_proto::identity::agent_dns_name;
use ocore_proto::v1::{AgentInfo, GetInfoRequest};
use ocore_proto::AgentClient;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::{ClientConfig, RootCertStore};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tonic::transport::{Endpoint, Uri};

/// A client certificate and key to present, or none.
pub type ClientAuth = Option<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>)>;

/// Calls `GetInfo` on the agent at `address`, trusting `ca` for the agent's certificate.
pub fn get_info(
    address: &str,
    agent_name: &str,
    ca: &CertificateDer<'static>,
    client_auth: ClientAuth,
) -> Result<AgentInfo, String> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    runtime.block_on(call(address, agent_name, ca, client_auth))
}

async fn call(
    address: &str,
    agent_name: &str,
    ca: &CertificateDer<'static>,
    client_auth: ClientAuth,
) -> Result<AgentInfo, String> {
    let mut roots = RootCertStore::empty();
    roots.add(ca.clone()).map_err(|e| e.to_string())?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots);
    let mut config = match client_auth {
        Some((chain, key)) => builder
            .with_client_auth_cert(chain, key)
            .map_err(|e| e.to_string())?,
        None => builder.with_no_client_auth(),
    };
    config.alpn_protocols = vec![b"h2".to_vec()];
    let connector = TlsConnector::from(Arc::new(config));
    let server_name =
        ServerName::try_from(agent_dns_name(agent_name)).map_err(|e| e.to_string())?;
    let address = address.to_owned();
    let channel = Endpoint::from_static("http://agent.test")
        .timeout(Duration::from_secs(10))
        .connect_with_connector(tower::service_fn(move |_: Uri| {
            let connector = connector.clone();
            let server_name = server_name.clone();
            let address = address.clone();
            async move {
                let tcp = TcpStream::connect(&address).await?;
                let tls = connector.connect(server_name, tcp).await?;
                Ok::<_, std::io::Error>(TokioIo::new(tls))
            }
        }))
        .await
        .map_err(|e| format!("connect: {e:?}"))?;
    AgentClient::new(channel)
        .get_info(GetInfoRequest {})
        .await
        .map(tonic::Response::into_inner)
        .map_err(|s| format!("{s:?}"))
}
