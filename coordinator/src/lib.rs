//! oCore coordinator: history, tokens and permissions, the REST API, and the agent links
//! over mutual-TLS gRPC. It never touches a host itself; agents do.

pub mod agents;
pub mod api;
pub mod auth;
pub mod ca;
pub mod cli;
pub mod config;
pub mod pki;
pub mod server;
pub mod store;
