//! oCore agent: the privileged daemon on each Odoo host. It owns everything that happens on
//! its host and serves the coordinator over mutual-TLS gRPC.

pub mod config;
pub mod db;
pub mod enroll;
pub mod exec;
pub mod server;
pub mod service;
pub mod snapshot;
pub mod tls;
