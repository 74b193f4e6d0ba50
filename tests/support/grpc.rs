//! A hand-built gRPC client for the agent: probing it with arbitrary client certificates
//! (none, another CA's, expired, wrong identity), and driving deployments with the
//! coordinator's identity, independently of the coordinator's own client code.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use hyper_util::rt::TokioIo;
use ocore_proto::identity::agent_dns_name;
use ocore_proto::tls::{load_certs, load_key};
use ocore_proto::v1::{self, AgentInfo, GetInfoRequest};
use ocore_proto::AgentClient;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::{ClientConfig, RootCertStore};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tonic::transport::{Channel, Endpoint, Uri};

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
    runtime.block_on(async {
        let mut client = client(address, agent_name, ca, client_auth).await?;
        client
            .get_info(GetInfoRequest {})
            .await
            .map(tonic::Response::into_inner)
            .map_err(|s| format!("{s:?}"))
    })
}

/// The coordinator's identity, read from its CA directory.
pub fn coordinator_auth(coordinator_state: &Path) -> Result<ClientAuth, String> {
    let ca_dir = coordinator_state.join("ca");
    let chain = load_certs(&ca_dir.join("coordinator.crt")).map_err(|e| e.to_string())?;
    let key = load_key(&ca_dir.join("coordinator.key")).map_err(|e| e.to_string())?;
    Ok(Some((chain, key)))
}

/// A connected client for the agent at `address`.
pub async fn client(
    address: &str,
    agent_name: &str,
    ca: &CertificateDer<'static>,
    client_auth: ClientAuth,
) -> Result<AgentClient<Channel>, String> {
    Ok(AgentClient::new(
        channel(address, agent_name, ca, client_auth).await?,
    ))
}

/// A connected HTTP/2 channel to the agent at `address`, over mutual TLS.
pub async fn channel(
    address: &str,
    agent_name: &str,
    ca: &CertificateDer<'static>,
    client_auth: ClientAuth,
) -> Result<Channel, String> {
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
        .connect_with_connector(tower::service_fn(move |_: Uri| {
            let connector = connector.clone();
            let server_name = server_name.clone();
            let address = address.clone();
            async move {
                let tcp = TcpStream::connect(&address).await?;
                // As the coordinator does: no Nagle delay on small frames.
                tcp.set_nodelay(true)?;
                let tls = connector.connect(server_name, tcp).await?;
                Ok::<_, std::io::Error>(TokioIo::new(tls))
            }
        }))
        .await
        .map_err(|e| format!("connect: {e:?}"))?;
    Ok(channel)
}

/// A codec that sends and receives message bodies as raw bytes, so a test can send what
/// no well-behaved client encodes (invalid UTF-8, truncated or garbage protobuf).
#[derive(Debug, Clone, Copy, Default)]
pub struct RawCodec;

pub struct RawCoder;

impl tonic::codec::Codec for RawCodec {
    type Encode = Vec<u8>;
    type Decode = Vec<u8>;
    type Encoder = RawCoder;
    type Decoder = RawCoder;

    fn encoder(&mut self) -> Self::Encoder {
        RawCoder
    }

    fn decoder(&mut self) -> Self::Decoder {
        RawCoder
    }
}

impl tonic::codec::Encoder for RawCoder {
    type Item = Vec<u8>;
    type Error = tonic::Status;

    fn encode(
        &mut self,
        item: Vec<u8>,
        dst: &mut tonic::codec::EncodeBuf<'_>,
    ) -> Result<(), Self::Error> {
        bytes::BufMut::put_slice(dst, &item);
        Ok(())
    }
}

impl tonic::codec::Decoder for RawCoder {
    type Item = Vec<u8>;
    type Error = tonic::Status;

    fn decode(
        &mut self,
        src: &mut tonic::codec::DecodeBuf<'_>,
    ) -> Result<Option<Vec<u8>>, Self::Error> {
        let n = bytes::Buf::remaining(src);
        Ok(Some(bytes::Buf::copy_to_bytes(src, n).to_vec()))
    }
}

/// Calls `method` (e.g. `Deploy`) of the agent service with `body` as the encoded request.
/// A streaming method's stream is read to its end (or `timeout`); returns the messages,
/// or the status the agent answered with.
pub async fn raw_call(
    channel: Channel,
    method: &str,
    body: Vec<u8>,
    streaming: bool,
    timeout: Duration,
) -> Result<Vec<Vec<u8>>, tonic::Status> {
    let mut grpc = tonic::client::Grpc::new(channel);
    grpc.ready()
        .await
        .map_err(|e| tonic::Status::unavailable(format!("not ready: {e}")))?;
    let path = tonic::codegen::http::uri::PathAndQuery::try_from(format!(
        "/ocore.agent.v1.Agent/{method}"
    ))
    .map_err(|e| tonic::Status::invalid_argument(e.to_string()))?;
    let request = tonic::Request::new(body);
    if !streaming {
        return grpc
            .unary(request, path, RawCodec)
            .await
            .map(|r| vec![r.into_inner()]);
    }
    let mut stream = grpc
        .server_streaming(request, path, RawCodec)
        .await?
        .into_inner();
    let mut messages = Vec::new();
    let deadline = tokio::time::Instant::now() + timeout;
    while let Some(message) = tokio::time::timeout_at(deadline, stream.message())
        .await
        .map_err(|_| tonic::Status::deadline_exceeded("the stream did not end in time"))??
    {
        messages.push(message);
    }
    Ok(messages)
}

/// Reads a deployment's event stream until it finishes (or `limit` events arrived).
pub async fn collect(
    mut stream: tonic::Streaming<v1::DeployEvent>,
    limit: Option<usize>,
    timeout: Duration,
) -> Result<Vec<v1::DeployEvent>, String> {
    let mut events = Vec::new();
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let next = tokio::time::timeout_at(deadline, stream.message())
            .await
            .map_err(|_| {
                format!(
                    "no end of stream within {timeout:?}; got {} events",
                    events.len()
                )
            })?
            .map_err(|s| format!("stream error: {s:?}"))?;
        let Some(event) = next else { break };
        let finished = matches!(event.kind, Some(v1::deploy_event::Kind::Finished(_)));
        events.push(event);
        if finished || limit.is_some_and(|l| events.len() >= l) {
            break;
        }
    }
    Ok(events)
}
