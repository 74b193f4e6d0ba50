//! End-to-end suite: the real `ocore` and `ocore-agent` binaries over real sockets.
//!
//! Build the binaries first (`cargo build --workspace --bins`); the README's test command
//! does this.

mod api;
mod daemons;
mod faults;
mod fuzz;
mod https;
mod lifecycle;
mod openapi;
mod permissions;
mod pipeline;
mod queue;
mod trust;
