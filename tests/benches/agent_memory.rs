//! Agent memory over many deploys: the agent's resident memory at rest after 10 code-only
//! deploys and after N (default 100), and their ratio (target ≤ 1.1: memory stays flat).
//! Also the peak during the run and the resident memory after the warm-up.
//!
//!     CARGO_TARGET_DIR=/work/target-bench cargo build --release --workspace --bins
//!     CARGO_TARGET_DIR=/work/target-bench cargo bench -p ocore-tests --bench agent_memory
//!
//! Needs the services of `tests/env/setup.sh` and the image of `tests/odoo-image/build.sh`.
//! `OCORE_BENCH_DEPLOYS` sets N. The repository holds real OCA modules beside its own
//! (`OCORE_BENCH_REPO=small`: only its own).

mod common;

use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use common::{addons_repo, hwm_kib, mib, rss_at_rest, static_change, warm_up, Driver};
use ocore_tests::fixture::{Site, SiteOptions};

fn main() -> Result<()> {
    let deploys: usize = std::env::var("OCORE_BENCH_DEPLOYS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100)
        .max(11);
    let dir = tempfile::tempdir()?;
    // OCORE_BENCH_AGENT_ENV="K=V K2=V2": extra environment of the agent (an allocator
    // setting, a log level), for experiments.
    let agent_env = std::env::var("OCORE_BENCH_AGENT_ENV")
        .unwrap_or_default()
        .split_whitespace()
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
    let site = Site::start(
        dir.path(),
        &SiteOptions {
            agent_env,
            ..Default::default()
        },
    )?;
    let d = Driver::new(&site)?;
    let repo = addons_repo(dir.path())?;
    warm_up(&d, &repo)?;
    let agent = site.agent.daemon()?.pid();
    let settle = || {
        // Memory at rest: after the work of the last deploy has settled.
        std::thread::sleep(Duration::from_secs(3));
        rss_at_rest(agent, 20).context("the agent is gone")
    };
    let after_warm_up = settle()?;
    let started = Instant::now();
    let mut at_10 = 0;
    for n in 1..=deploys {
        static_change(&repo, &format!("deploy {n}"))?;
        let deployed = d.deploy(&repo, "main")?;
        deployed.ensure_succeeded()?;
        if !deployed.code_only() {
            bail!("deploy {n} was not code-only: {}", deployed.explain());
        }
        if n == 10 {
            at_10 = settle()?;
            println!(
                "after 10 deploys: agent at rest {} ({})",
                mib(at_10),
                common::memory_map(agent)
            );
        }
        if n % 10 == 0 {
            println!(
                "{n}/{deploys} deploys in {:.0} s; agent now {}",
                started.elapsed().as_secs_f64(),
                mib(common::rss_kib(agent).unwrap_or(0))
            );
        }
    }
    let at_n = settle()?;
    println!("after {deploys} deploys: {}", common::memory_map(agent));
    let peak = hwm_kib(agent).unwrap_or(0);
    println!("agent_memory: resident memory of the agent at rest");
    println!("  after the warm-up:     {}", mib(after_warm_up));
    println!("  after 10 deploys:      {}", mib(at_10));
    println!("  after {deploys} deploys:     {}", mib(at_n));
    println!("  peak (VmHWM):          {}", mib(peak));
    println!(
        "  ratio after {deploys} / after 10: {:.3} (target ≤ 1.1)",
        at_n as f64 / at_10.max(1) as f64
    );
    Ok(())
}
