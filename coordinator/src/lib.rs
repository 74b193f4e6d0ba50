//! oCore coordinator: history, tokens and permissions, the REST API, and the agent links
//! over mutual-TLS gRPC. It never touches a host itself; agents do.

// The OpenAPI document is one large `json!` literal.
#![recursion_limit = "512"]

pub mod agents;
pub mod api;
pub mod auth;
pub mod ca;
pub mod cli;
pub mod config;
pub mod credentials;
pub mod dashboard;
pub mod domain;
pub mod https;
pub mod metrics;
pub mod pki;
pub mod queue;
pub mod recovery;
pub mod secrets;
pub mod server;
pub mod store;
pub mod webhooks;
