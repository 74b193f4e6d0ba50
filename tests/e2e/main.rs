//! End-to-end suite: the real `ocore` and `ocore-agent` binaries over real sockets.
//!
//! Build the binaries first (`cargo build --workspace --bins`); the README's test command
//! does this.

mod api;
mod checksums;
mod cli;
mod contract;
mod daemons;
mod dashboard;
mod faults;
mod fuzz;
mod https;
mod lifecycle;
mod odoo;
mod openapi;
mod permissions;
mod pipeline;
mod queue;
mod repoaccess;
mod restore;
mod trust;
mod webhooks;
