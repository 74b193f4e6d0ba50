//! oCore agent: the privileged daemon on each Odoo host. It owns everything that happens on
//! its host and serves the coordinator over mutual-TLS gRPC.

pub mod config;
pub mod enroll;
pub mod server;
pub mod service;
pub mod tls;
