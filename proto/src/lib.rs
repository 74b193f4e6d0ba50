//! The wire contract between coordinator and agent: generated gRPC code plus the naming
//! rules both sides use to recognise each other in certificates.
//!
//! Only this crate knows protobuf. The agent and the coordinator convert these messages to
//! their own domain types at their gRPC edge.

pub mod enrolment;
pub mod git_url;
pub mod identity;
pub mod tls;

/// Generated messages, client and server for `ocore.agent.v1`.
#[allow(clippy::all, missing_docs)]
pub mod v1 {
    tonic::include_proto!("ocore.agent.v1");
}

// Repository secrets never print, whatever logs a request.
impl std::fmt::Debug for v1::SshKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SshKey { private_key_openssh: <redacted> }")
    }
}

impl std::fmt::Debug for v1::HttpsToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpsToken")
            .field("username", &self.username)
            .field("token", &"<redacted>")
            .finish()
    }
}

pub use v1::agent_client::AgentClient;
pub use v1::agent_server::{Agent, AgentServer};
