//! oCore agent: the privileged daemon on each Odoo host. It owns everything that happens on
//! its host and serves the coordinator over mutual-TLS gRPC.

pub mod addons;
pub mod config;
pub mod db;
pub mod docker;
pub mod enroll;
pub mod exec;
pub mod git;
pub mod health;
pub mod inspect;
pub mod journal;
pub mod manifest;
pub mod pipeline;
pub mod server;
pub mod service;
pub mod snapshot;
pub mod tls;
pub mod traffic;
