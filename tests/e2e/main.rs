//! End-to-end suite: the real `ocore` and `ocore-agent` binaries over real sockets.
//!
//! Build the binaries first (`cargo build --workspace --bins`); the README's test command
//! does this.

mod daemons;
mod trust;
