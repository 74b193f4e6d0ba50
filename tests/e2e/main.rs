//! End-to-end suite: the real `ocore` and `ocore-agent` binaries over real sockets.
//!
//! Build the binaries first (`cargo build --workspace --bins`); the README's test command
//! does this.

mod api;
mod cli;
mod daemons;
mod dashboard;
mod faults;
mod fuzz;
mod https;
mod lifecycle;
mod openapi;
mod permissions;
mod pipeline;
mod queue;
mod repoaccess;
mod restore;
mod trust;
mod webhooks;
