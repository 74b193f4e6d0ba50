//! Dialling an agent: TCP, then TLS 1.3 with the coordinator's client certificate, checking
//! the agent's certificate against its enrolment (see `ocore_proto::tls`).

use std::io;
use std::sync::Arc;
use std::time::Duration;

use hyper_util::rt::TokioIo;
use ocore_proto::identity::agent_dns_name;
use ocore_proto::tls::coordinator_client_config;
use ocore_proto::AgentClient;
use rustls::pki_types::ServerName;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tonic::transport::{Channel, Endpoint, Uri};

use crate::pki::Pki;
use crate::store::AgentRecord;

/// The connection to the agent could not be established (TCP or TLS), so no request was
/// sent on it. Found in a failed call's error chain, it proves the call never arrived.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ConnectFailed(#[from] io::Error);

/// True when `status` failed because no connection could be made.
pub fn never_connected(status: &tonic::Status) -> bool {
    let mut source = std::error::Error::source(status);
    while let Some(e) = source {
        if e.is::<ConnectFailed>() {
            return true;
        }
        source = e.source();
    }
    false
}

/// Builds a lazily connecting channel to `agent`; it reconnects by itself after failures.
pub fn channel(
    pki: &Pki,
    agent: &AgentRecord,
    connect_timeout: Duration,
    request_timeout: Duration,
) -> Result<Channel, String> {
    let identity = pki.client_identity();
    let config = coordinator_client_config(
        identity.chain.clone(),
        identity.key.clone_key(),
        pki.ca().cert(),
        &agent.name,
        agent.cert_fingerprints.clone(),
    )
    .map_err(|e| e.to_string())?;
    let connector = TlsConnector::from(Arc::new(config));
    let server_name =
        ServerName::try_from(agent_dns_name(&agent.name)).map_err(|e| e.to_string())?;
    let address = agent.address.clone();
    // The URI only fills the HTTP/2 :authority header; the connector below decides where
    // the connection really goes.
    let endpoint = Endpoint::from_shared(format!("http://{}", agent_dns_name(&agent.name)))
        .map_err(|e| e.to_string())?
        .connect_timeout(connect_timeout)
        .timeout(request_timeout)
        .http2_keep_alive_interval(Duration::from_secs(20))
        .keep_alive_while_idle(true);
    let make = tower::service_fn(move |_: Uri| {
        let connector = connector.clone();
        let server_name = server_name.clone();
        let address = address.clone();
        async move {
            connect(connector, server_name, address, connect_timeout)
                .await
                .map_err(ConnectFailed)
        }
    });
    Ok(endpoint.connect_with_connector_lazy(make))
}

async fn connect(
    connector: TlsConnector,
    server_name: ServerName<'static>,
    address: String,
    connect_timeout: Duration,
) -> io::Result<TokioIo<tokio_rustls::client::TlsStream<TcpStream>>> {
    {
        {
            let tcp = tokio::time::timeout(connect_timeout, TcpStream::connect(&address))
                .await
                .map_err(|_| {
                    io::Error::new(
                        io::ErrorKind::TimedOut,
                        format!("connecting to {address} timed out"),
                    )
                })??;
            tcp.set_nodelay(true)?;
            let tls = tokio::time::timeout(connect_timeout, connector.connect(server_name, tcp))
                .await
                .map_err(|_| {
                    io::Error::new(io::ErrorKind::TimedOut, "TLS handshake timed out")
                })??;
            Ok(TokioIo::new(tls))
        }
    }
}

pub type Client = AgentClient<Channel>;

/// Readable text for a failed call: the status message and every underlying cause.
pub fn describe(status: &tonic::Status) -> String {
    let mut text = status.message().to_owned();
    let mut source = std::error::Error::source(status);
    while let Some(cause) = source {
        let part = cause.to_string();
        if !text.contains(&part) {
            text.push_str(": ");
            text.push_str(&part);
        }
        source = cause.source();
    }
    text
}
