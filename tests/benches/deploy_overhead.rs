//! Deploy overhead: oCore's pipeline time for a code-only change with warm caches, divided
//! by the time of `manual_deploy.sh` doing the same steps by hand (git fetch/checkout,
//! docker build, docker push, docker run, health poll, nginx switch, stop the old colour),
//! median of 5 rounds each, interleaved. Also prints per-step medians of both, the Git
//! objects/bytes fetched by the second and later deploys, and the resident memory of the
//! agent (at rest and peak during deploys, sampled every 100 ms) and of the coordinator.
//!
//!     CARGO_TARGET_DIR=/work/target-bench cargo build --release --workspace --bins
//!     CARGO_TARGET_DIR=/work/target-bench cargo bench -p ocore-tests --bench deploy_overhead
//!
//! Needs the services of `tests/env/setup.sh` and the image of `tests/odoo-image/build.sh`.
//! `OCORE_BENCH_ROUNDS` changes the number of measured rounds (default 5). The repository
//! holds real OCA modules (from PyPI wheels) beside its own; `OCORE_BENCH_REPO=small`
//! leaves them out.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use common::{
    addons_repo, hwm_kib, load_average, median_f64, median_u64, mib, rss_at_rest, static_change,
    warm_up, Deployed, Driver, RssSampler,
};
use ocore_tests::fixture::{free_port, AddonsRepo, Site, SiteOptions, BASE_IMAGE};

/// One run of the shell baseline.
struct Manual {
    wall: Duration,
    steps: Vec<(String, u64)>,
}

impl Manual {
    fn step(&self, name: &str) -> u64 {
        self.steps
            .iter()
            .filter(|(n, _)| n == name)
            .map(|(_, ms)| *ms)
            .sum()
    }
}

/// The hand-run instance beside oCore's: its own ports, database, data directory and
/// containers, behind the same nginx, pushing to the same registry.
struct ManualSite {
    script: PathBuf,
    args: Vec<String>,
    instance: String,
    database: String,
}

impl ManualSite {
    fn new(site: &Site, dir: &Path) -> Self {
        let instance = site.instance.clone();
        let database = format!("{}_manual", site.database);
        let args: Vec<String> = [
            ("--repo", dir.join("repo").display().to_string()),
            ("--branch", "main".to_owned()),
            ("--state", dir.join("manual-state").display().to_string()),
            ("--instance", instance.clone()),
            ("--database", database.clone()),
            ("--data-dir", dir.join("manual-data").display().to_string()),
            ("--base-image", BASE_IMAGE.to_owned()),
            ("--registry", site.env.registry.clone()),
            ("--public-port", free_port().to_string()),
            ("--blue", format!("{}:{}", free_port(), free_port())),
            ("--green", format!("{}:{}", free_port(), free_port())),
            ("--pg-host", site.env.pg_host.clone()),
            ("--pg-port", site.env.pg_port.to_string()),
            ("--pg-user", site.env.pg_user.clone()),
            // Written by Site::start for the agent.
            (
                "--pg-password-file",
                dir.join("pg-password").display().to_string(),
            ),
            ("--nginx", site.env.nginx.display().to_string()),
            ("--nginx-prefix", site.nginx.prefix.display().to_string()),
            (
                "--nginx-config",
                site.nginx.config_file.display().to_string(),
            ),
            (
                "--nginx-conf-dir",
                site.nginx.conf_dir.display().to_string(),
            ),
            // The agent's settings in Site::start.
            ("--health-timeout", "30".to_owned()),
            ("--drain-secs", "1".to_owned()),
            ("--stop-grace", "5".to_owned()),
        ]
        .into_iter()
        .flat_map(|(k, v)| [k.to_owned(), v])
        .collect();
        Self {
            script: Path::new(env!("CARGO_MANIFEST_DIR")).join("benches/manual_deploy.sh"),
            args,
            instance,
            database,
        }
    }

    fn deploy(&self) -> Result<Manual> {
        let start = Instant::now();
        let out = Command::new(&self.script)
            .args(&self.args)
            .output()
            .with_context(|| format!("running {}", self.script.display()))?;
        let wall = start.elapsed();
        let stdout = String::from_utf8_lossy(&out.stdout);
        if !out.status.success() {
            bail!(
                "manual_deploy.sh failed with {}:\n{stdout}\n{}",
                out.status,
                String::from_utf8_lossy(&out.stderr)
            );
        }
        let steps = stdout
            .lines()
            .filter_map(|l| l.strip_prefix("step "))
            .filter_map(|l| l.split_once(' '))
            .filter_map(|(name, ms)| Some((name.to_owned(), ms.trim().parse().ok()?)))
            .collect();
        Ok(Manual { wall, steps })
    }

    fn cleanup(&self, site: &Site) {
        for colour in ["blue", "green"] {
            let _ = Command::new("docker")
                .args(["rm", "-fv", &format!("manual-{}-{colour}", self.instance)])
                .output();
        }
        let _ = site.env.psql(
            "postgres",
            &format!("DROP DATABASE IF EXISTS \"{}\" WITH (FORCE)", self.database),
        );
    }
}

/// oCore's time split like the script's steps (ms, agent clock).
#[derive(Default)]
struct Split {
    snapshot: u64,
    clone: u64,
    build: u64,
    /// Build Image until the daemon's first builder line: addons scan, checksums, the plan's
    /// database query, packing the context.
    build_prep: u64,
    push: u64,
    start: u64,
    health: u64,
    switch: u64,
    drain_stop: u64,
    outside: u64,
}

fn split(d: &Deployed) -> Result<Split> {
    let hc_start = d
        .step_at("Health Check", true)
        .context("no Health Check start")?;
    let hc_end = d
        .step_at("Health Check", false)
        .context("no Health Check end")?;
    let healthy = d
        .logs
        .iter()
        .find(|(_, _, l)| l.contains("/web/login") && l.contains("ok after"))
        .map(|(at, _, _)| *at)
        .context("no health line")?;
    let switched = d.log_at("answers from").context("no traffic switch line")?;
    let ms = |a: i64, b: i64| u64::try_from(b - a).unwrap_or(0);
    let build_start = d
        .step_at("Build Image", true)
        .context("no Build Image start")?;
    let builder = d
        .logs
        .iter()
        .find(|(_, step, l)| step == "Build Image" && l.starts_with("Step 1/"))
        .map(|(at, _, _)| *at)
        .context("no builder output")?;
    let in_steps: u64 = common::STEPS.iter().map(|s| d.step_ms(s)).sum();
    let wall = u64::try_from(d.wall.as_millis()).unwrap_or(u64::MAX);
    Ok(Split {
        snapshot: d.step_ms("Pre-deploy Snapshot"),
        clone: d.step_ms("Clone Repository"),
        build: d.step_ms("Build Image"),
        build_prep: ms(build_start, builder),
        push: d.step_ms("Push Image"),
        start: d.step_ms("Update Container"),
        health: ms(hc_start, healthy),
        switch: ms(healthy, switched),
        drain_stop: ms(switched, hc_end),
        outside: wall.saturating_sub(in_steps),
    })
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn main() -> Result<()> {
    let rounds: usize = std::env::var("OCORE_BENCH_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(5);
    let dir = tempfile::tempdir()?;
    let site = Site::start(dir.path(), &SiteOptions::default())?;
    let manual = ManualSite::new(&site, dir.path());
    let result = bench(&site, &manual, dir.path(), rounds);
    manual.cleanup(&site);
    let instance = site.instance.clone();
    let registry = site.env.registry.clone();
    drop(site);
    // The images this run built (oCore's and the script's), now that no container uses them.
    for filter in [
        format!("label=org.ocore.instance={instance}"),
        format!("reference={registry}/manual/{instance}"),
    ] {
        if let Ok(ids) = common::run("docker", &["images", "-q", "--filter", &filter]) {
            let mut ids: Vec<&str> = ids.lines().collect();
            ids.sort_unstable();
            ids.dedup();
            if !ids.is_empty() {
                let _ = Command::new("docker")
                    .args(["rmi", "-f"])
                    .args(&ids)
                    .output();
            }
        }
    }
    result
}

fn bench(site: &Site, manual: &ManualSite, dir: &Path, rounds: usize) -> Result<()> {
    let d = Driver::new(site)?;
    let repo: AddonsRepo = addons_repo(dir)?;
    let agent_pid = site.agent.daemon()?.pid();
    let coordinator_pid = site.coordinator.daemon.pid();
    println!("deploy_overhead: load average before {}", load_average());

    // Warm-up: oCore's first deploy, modules installed, a module-update deploy (the second
    // deploy of the repository), then a code-only one; the script twice (first clone,
    // first push of the base layers, first start of its database).
    let (_, second) = warm_up(&d, &repo)?;
    println!(
        "second oCore deploy of the repository: fetched {}",
        second.fetched().as_deref().unwrap_or("(no fetch line)")
    );
    static_change(&repo, "warm")?;
    let warm = d.deploy(&repo, "main")?;
    warm.ensure_succeeded()?;
    if !warm.code_only() {
        bail!(
            "a static change was not planned as code-only: {}",
            warm.explain()
        );
    }
    manual.deploy()?;
    manual.deploy()?;

    // Memory at rest, once the warm-up's work has settled.
    std::thread::sleep(Duration::from_secs(3));
    let agent_rest = rss_at_rest(agent_pid, 20).context("agent is gone")?;
    let coordinator_rest = rss_at_rest(coordinator_pid, 20).context("coordinator is gone")?;

    let mut ocore: Vec<Deployed> = Vec::new();
    let mut script: Vec<Manual> = Vec::new();
    let mut peaks: Vec<u64> = Vec::new();
    for round in 0..rounds {
        // Each deploy gets its own new commit: had both built the same tree, the second build
        // of a round would find the COPY layer in the build cache.
        let run_ocore = |ocore: &mut Vec<Deployed>, peaks: &mut Vec<u64>| -> Result<()> {
            let sha = static_change(&repo, &format!("round {round} oCore"))?;
            let sampler = RssSampler::start(agent_pid);
            let deployed = d.deploy(&repo, "main")?;
            let samples = sampler.finish();
            deployed.ensure_succeeded()?;
            if !deployed.code_only() || deployed.commit_sha != sha {
                bail!(
                    "round {round}: not a code-only deploy of {sha}: {}",
                    deployed.explain()
                );
            }
            peaks.push(samples.iter().copied().max().unwrap_or(0));
            ocore.push(deployed);
            Ok(())
        };
        let run_script = |script: &mut Vec<Manual>| -> Result<()> {
            static_change(&repo, &format!("round {round} script"))?;
            script.push(manual.deploy()?);
            Ok(())
        };
        // Alternate the order so drift in the machine's load hits both alike.
        if round % 2 == 0 {
            run_ocore(&mut ocore, &mut peaks)?;
            run_script(&mut script)?;
        } else {
            run_script(&mut script)?;
            run_ocore(&mut ocore, &mut peaks)?;
        }
        let (o, s) = (ocore.last(), script.last());
        if let (Some(o), Some(s)) = (o, s) {
            println!(
                "round {}: oCore {:.0} ms (agent {} ms), script {:.0} ms; oCore fetched {}",
                round + 1,
                ms(o.wall),
                o.agent_ms,
                ms(s.wall),
                o.fetched().as_deref().unwrap_or("?")
            );
            let steps: Vec<String> = common::STEPS
                .iter()
                .filter(|n| o.steps.contains_key(**n))
                .map(|n| format!("{}={}", n.split(' ').next().unwrap_or(n), o.step_ms(n)))
                .collect();
            println!("  oCore steps ms:  {}", steps.join(" "));
            // The agent's own timings inside the build step.
            for (_, step, line) in &o.logs {
                if step == "Build Image" && line.contains(" ms") && line.contains(" in ") {
                    println!("  oCore build: {line}");
                }
            }
            let steps: Vec<String> = s.steps.iter().map(|(n, v)| format!("{n}={v}")).collect();
            println!("  script steps ms: {}", steps.join(" "));
        }
    }
    let agent_peak = peaks.iter().copied().max().unwrap_or(0);
    let agent_hwm = hwm_kib(agent_pid).unwrap_or(0);
    println!("deploy_overhead: load average after {}", load_average());

    // ----------------------------------------------------------------- report
    let ocore_wall = median_f64(&ocore.iter().map(|o| ms(o.wall)).collect::<Vec<_>>());
    let script_wall = median_f64(&script.iter().map(|s| ms(s.wall)).collect::<Vec<_>>());
    let ocore_no_snapshot = median_f64(
        &ocore
            .iter()
            .map(|o| ms(o.wall) - o.step_ms("Pre-deploy Snapshot") as f64)
            .collect::<Vec<_>>(),
    );
    let splits: Vec<Split> = ocore.iter().map(split).collect::<Result<_>>()?;
    let om = |f: fn(&Split) -> u64| median_u64(&splits.iter().map(f).collect::<Vec<_>>());
    let sm = |names: &[&str]| {
        median_u64(
            &script
                .iter()
                .map(|s| names.iter().map(|n| s.step(n)).sum())
                .collect::<Vec<_>>(),
        )
    };
    let script_outside = median_u64(
        &script
            .iter()
            .map(|s| {
                let steps: u64 = s.steps.iter().map(|(_, ms)| ms).sum();
                u64::try_from(s.wall.as_millis())
                    .unwrap_or(0)
                    .saturating_sub(steps)
            })
            .collect::<Vec<_>>(),
    );
    println!();
    println!(
        "== deploy overhead: code-only change, warm caches, median of {} ==",
        ocore.len()
    );
    println!(
        "{:<44} {:>10} {:>10}",
        "step (median ms)", "oCore", "script"
    );
    let rows: [(&str, u64, Option<u64>); 10] = [
        ("Pre-deploy Snapshot", om(|s| s.snapshot), None),
        (
            "Clone Repository | git fetch + checkout",
            om(|s| s.clone),
            Some(sm(&["clone"])),
        ),
        (
            "Build Image | docker build",
            om(|s| s.build),
            Some(sm(&["build"])),
        ),
        (
            "  of which before the builder's first line",
            om(|s| s.build_prep),
            None,
        ),
        (
            "Push Image | docker push",
            om(|s| s.push),
            Some(sm(&["push"])),
        ),
        (
            "Update Container | docker run",
            om(|s| s.start),
            Some(sm(&["run"])),
        ),
        (
            "Health Check: health poll",
            om(|s| s.health),
            Some(sm(&["health"])),
        ),
        (
            "Health Check: nginx switch",
            om(|s| s.switch),
            Some(sm(&["switch"])),
        ),
        (
            "Health Check: drain 1 s + stop old",
            om(|s| s.drain_stop),
            Some(sm(&["drain", "stop"])),
        ),
        (
            "outside steps (request, queue, bash)",
            om(|s| s.outside),
            Some(script_outside),
        ),
    ];
    for (name, o, s) in rows {
        println!(
            "{name:<44} {o:>10} {:>10}",
            s.map_or("-".to_owned(), |v| v.to_string())
        );
    }
    println!(
        "{:<44} {:>10.0} {:>10.0}",
        "total (wall, request to finished)", ocore_wall, script_wall
    );
    println!(
        "per-round oCore wall ms: {:?}",
        ocore.iter().map(|o| ms(o.wall).round()).collect::<Vec<_>>()
    );
    println!(
        "per-round script wall ms: {:?}",
        script
            .iter()
            .map(|s| ms(s.wall).round())
            .collect::<Vec<_>>()
    );
    println!(
        "deploy overhead ratio (oCore / script, median wall): {:.3}  (target <= 1.05)",
        ocore_wall / script_wall
    );
    println!(
        "  without oCore's Pre-deploy Snapshot (the script takes none): {:.3}",
        ocore_no_snapshot / script_wall
    );
    println!(
        "second deploy of the repository fetched {}; code-only rounds fetched {}",
        second.fetched().as_deref().unwrap_or("?"),
        ocore
            .iter()
            .filter_map(Deployed::fetched)
            .collect::<Vec<_>>()
            .join(", ")
    );
    println!();
    println!("== resident memory (VmRSS) ==");
    println!("agent at rest:                     {}", mib(agent_rest));
    println!(
        "agent peak during {} code-only deploys (100 ms samples): {} ({:.2}x at rest)",
        ocore.len(),
        mib(agent_peak),
        agent_peak as f64 / agent_rest as f64
    );
    println!(
        "agent VmHWM over the whole run (incl. first build, -u, snapshots): {}",
        mib(agent_hwm)
    );
    println!(
        "coordinator at rest:               {}",
        mib(coordinator_rest)
    );
    Ok(())
}
