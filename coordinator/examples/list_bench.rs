//! Benchmark of the deployment history API (a command, not a timed test).
//!
//! Seeds a store with N finished deployments of one project (7 steps and 9 events each),
//! starts the real `ocore server` on it, then measures over loopback:
//! - median and p99 latency of `GET /api/projects/bench/deployments?limit=20` (first page
//!   and a deep page) and of `GET …/deployments/{id}` (random ids), one request at a time;
//! - requests per second of the list endpoint from C concurrent keep-alive clients;
//! - the coordinator's resident memory at rest and its peak under that load.
//!
//! ```sh
//! cargo build --release -p ocore --bins --examples
//! target/release/examples/list_bench [--deployments 100000] [--seconds 10] [--concurrency 8]
//! ```
//! The `ocore` binary is taken from beside the example's directory (`--ocore PATH` to
//! choose another).

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use ocore::domain::{
    DeployEvent, Deployment, DeploymentStatus, Environment, EventKind, Instance, Project,
    SnapshotSettings, Step, StepStatus, TriggerType, PIPELINE_STEPS,
};

struct Args {
    deployments: usize,
    seconds: u64,
    concurrency: usize,
    ocore: PathBuf,
}

fn args() -> Result<Args> {
    let mut a = Args {
        deployments: 100_000,
        seconds: 10,
        concurrency: 8,
        ocore: std::env::current_exe()?
            .parent()
            .and_then(Path::parent)
            .map(|p| p.join("ocore"))
            .context("cannot locate the ocore binary")?,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let value = it.next().with_context(|| format!("{flag} needs a value"))?;
        match flag.as_str() {
            "--deployments" => a.deployments = value.parse()?,
            "--seconds" => a.seconds = value.parse()?,
            "--concurrency" => a.concurrency = value.parse()?,
            "--ocore" => a.ocore = PathBuf::from(value),
            other => bail!("unknown flag {other}"),
        }
    }
    Ok(a)
}

fn step_event(seq: u64, at: i64, name: &str, status: StepStatus) -> DeployEvent {
    DeployEvent {
        seq,
        at,
        kind: EventKind::Step {
            name: name.to_owned(),
            status,
            started_at: None,
            completed_at: None,
            duration_ms: None,
            message: None,
        },
    }
}

/// Writes the project, environment, instance and `n` finished deployments.
fn seed(store_dir: &Path, n: usize) -> Result<Vec<String>> {
    let store = ocore::store::open(store_dir)?;
    let now = ocore::domain::now_ms();
    store.insert_project(&Project {
        id: "bench".into(),
        name: "Bench".into(),
        repository_url: "https://git.example.invalid/bench.git".into(),
        addons_subpath: String::new(),
        credentials: None,
        ssh_host_key: None,
        created_at: now,
        updated_at: now,
    })?;
    store.insert_environment(&Environment {
        id: "bench-prod".into(),
        project_id: "bench".into(),
        name: "production".into(),
        snapshot_settings: SnapshotSettings::default(),
        created_at: now,
        updated_at: now,
    })?;
    store.insert_instance(&Instance {
        id: "bench-prod".into(),
        project_id: "bench".into(),
        environment_id: "bench-prod".into(),
        agent: "web1".into(),
        agent_instance_id: "web1-prod".into(),
        active_color: None,
        active_color_at: None,
        created_at: now,
        updated_at: now,
    })?;
    let mut ids = Vec::with_capacity(n);
    let started = Instant::now();
    for i in 0..n {
        let at = now - (n - i) as i64 * 60_000;
        let d = Deployment {
            id: uuid::Uuid::now_v7().to_string(),
            order: 0,
            project_id: "bench".into(),
            environment_id: "bench-prod".into(),
            instance_id: "bench-prod".into(),
            status: DeploymentStatus::Queued,
            status_reason: None,
            trigger_type: TriggerType::Manual,
            branch: Some("main".into()),
            tag: None,
            commit_sha: None,
            commit_message: None,
            commit_author: None,
            snapshot_id: None,
            planned_snapshot_id: uuid::Uuid::now_v7().to_string(),
            image_ref: None,
            rollback: None,
            steps: PIPELINE_STEPS.iter().map(|s| Step::pending(s)).collect(),
            plan: None,
            active_color: None,
            duration_ms: None,
            created_at: at,
            started_at: None,
            finished_at: None,
            requested_by: "bench".into(),
            requested_by_token: None,
            dispatched: true,
            cancel_requested: false,
            last_seq: 0,
        };
        let d = store.insert_deployment(&d)?;
        let mut events = vec![DeployEvent {
            seq: 1,
            at,
            kind: EventKind::Commit {
                commit_sha: format!("{:040x}", i),
                commit_message: format!("Change number {i}"),
                commit_author: "Bench Author".into(),
                ssh_host_key: None,
            },
        }];
        for (k, name) in PIPELINE_STEPS.iter().enumerate() {
            let status = if k == 5 {
                StepStatus::Skipped
            } else {
                StepStatus::Completed
            };
            events.push(step_event(
                events.len() as u64 + 1,
                at + k as i64 * 1000 + 999,
                name,
                status,
            ));
        }
        events.push(DeployEvent {
            seq: events.len() as u64 + 1,
            at: at + 7000,
            kind: EventKind::Finished {
                status: DeploymentStatus::Succeeded,
                message: None,
                active_color: None,
                duration_ms: Some(7000),
                by_coordinator: false,
            },
        });
        for e in &events {
            store.append_event(&d.id, e)?;
        }
        ids.push(d.id);
        if (i + 1) % 20_000 == 0 {
            eprintln!(
                "  seeded {} deployments ({:.0} s)",
                i + 1,
                started.elapsed().as_secs_f64()
            );
        }
    }
    store.flush()?;
    Ok(ids)
}

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1).and_then(|v| v.parse().ok()))
        })
        .unwrap_or(0)
}

fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(30)))
        .build()
        .into()
}

fn get(agent: &ureq::Agent, url: &str, token: &str) -> Result<usize> {
    let mut r = agent
        .get(url)
        .header("Authorization", format!("Bearer {token}"))
        .call()?;
    if r.status() != 200 {
        bail!("{url}: HTTP {}", r.status());
    }
    Ok(r.body_mut().read_to_string()?.len())
}

fn percentiles(mut samples: Vec<Duration>) -> (f64, f64) {
    samples.sort();
    let at = |q: f64| {
        let i = ((samples.len() as f64 - 1.0) * q).round() as usize;
        samples[i].as_secs_f64() * 1000.0
    };
    (at(0.5), at(0.99))
}

fn latency(agent: &ureq::Agent, token: &str, urls: &[String]) -> Result<(f64, f64)> {
    let mut samples = Vec::with_capacity(urls.len());
    for url in urls {
        let t = Instant::now();
        get(agent, url, token)?;
        samples.push(t.elapsed());
    }
    Ok(percentiles(samples))
}

fn main() -> Result<()> {
    let args = args()?;
    let dir = tempfile::tempdir()?;
    let state = dir.path().join("state");
    std::fs::create_dir_all(&state)?;
    let config = dir.path().join("coordinator.toml");
    std::fs::write(
        &config,
        format!(
            "listen = \"127.0.0.1:0\"\nstate_dir = \"{}\"\n",
            state.display()
        ),
    )?;
    let init = Command::new(&args.ocore)
        .args(["ca", "init", "--config"])
        .arg(&config)
        .output()?;
    if !init.status.success() {
        bail!(
            "ocore ca init failed: {}",
            String::from_utf8_lossy(&init.stderr)
        );
    }
    eprintln!("seeding {} deployments …", args.deployments);
    let seed_started = Instant::now();
    let ids = seed(&state.join("store"), args.deployments)?;
    let seed_secs = seed_started.elapsed().as_secs_f64();

    let mut server = Command::new(&args.ocore)
        .args(["server", "--config"])
        .arg(&config)
        .env("OCORE_LOG", "warn,ocore=info")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()?;
    let stderr = server.stderr.take().context("stderr")?;
    let mut lines = BufReader::new(stderr).lines();
    let base = loop {
        let line = lines.next().context("server exited before listening")??;
        if let Some((_, rest)) = line.split_once("REST API listening on ") {
            break rest
                .split_whitespace()
                .next()
                .unwrap_or_default()
                .to_owned();
        }
    };
    // Keep draining the log so the server never blocks on a full pipe.
    std::thread::spawn(move || for _ in lines {});
    let token = std::fs::read_to_string(state.join("initial-admin-token"))?
        .trim()
        .to_owned();
    let pid = server.id();
    let client = agent();
    let list = format!("{base}/api/projects/bench/deployments?limit=20&offset=0");
    let bytes = get(&client, &list, &token)?;
    std::thread::sleep(Duration::from_secs(2));
    let rss_rest = rss_kib(pid);

    let n = ids.len();
    let first_page: Vec<String> = (0..2000).map(|_| list.clone()).collect();
    let deep_page: Vec<String> = (0..500)
        .map(|i| {
            format!(
                "{base}/api/projects/bench/deployments?limit=20&offset={}",
                (i * 7919) % n.max(1)
            )
        })
        .collect();
    let details: Vec<String> = (0..2000)
        .map(|i| {
            format!(
                "{base}/api/projects/bench/deployments/{}",
                ids[(i * 104_729) % n]
            )
        })
        .collect();
    let (list_p50, list_p99) = latency(&client, &token, &first_page)?;
    let (deep_p50, deep_p99) = latency(&client, &token, &deep_page)?;
    let (show_p50, show_p99) = latency(&client, &token, &details)?;

    let done = Arc::new(AtomicBool::new(false));
    let count = Arc::new(AtomicU64::new(0));
    let errors = Arc::new(AtomicU64::new(0));
    let peak = Arc::new(AtomicU64::new(rss_rest));
    let sampler = {
        let (done, peak) = (done.clone(), peak.clone());
        std::thread::spawn(move || {
            while !done.load(Ordering::Relaxed) {
                peak.fetch_max(rss_kib(pid), Ordering::Relaxed);
                std::thread::sleep(Duration::from_millis(50));
            }
        })
    };
    let load_started = Instant::now();
    let workers: Vec<_> = (0..args.concurrency)
        .map(|_| {
            let (done, count, errors) = (done.clone(), count.clone(), errors.clone());
            let (url, token) = (list.clone(), token.clone());
            std::thread::spawn(move || {
                let client = agent();
                while !done.load(Ordering::Relaxed) {
                    match get(&client, &url, &token) {
                        Ok(_) => count.fetch_add(1, Ordering::Relaxed),
                        Err(_) => errors.fetch_add(1, Ordering::Relaxed),
                    };
                }
            })
        })
        .collect();
    std::thread::sleep(Duration::from_secs(args.seconds));
    done.store(true, Ordering::Relaxed);
    for w in workers {
        let _ = w.join();
    }
    let _ = sampler.join();
    let elapsed = load_started.elapsed().as_secs_f64();
    let requests = count.load(Ordering::Relaxed);
    let rss_load = peak.load(Ordering::Relaxed);

    let _ = Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status();
    let _ = server.wait();

    println!("oCore coordinator history API benchmark");
    println!("  deployments stored:          {n} (seeded in {seed_secs:.1} s)");
    println!("  list page of 20 (offset 0):  median {list_p50:.2} ms, p99 {list_p99:.2} ms ({bytes} bytes)");
    println!("  list page of 20 (random offset): median {deep_p50:.2} ms, p99 {deep_p99:.2} ms");
    println!("  one deployment (detail):     median {show_p50:.2} ms, p99 {show_p99:.2} ms");
    println!(
        "  list throughput:             {:.0} requests/s ({} clients, {:.1} s, {} errors)",
        requests as f64 / elapsed,
        args.concurrency,
        elapsed,
        errors.load(Ordering::Relaxed)
    );
    println!(
        "  coordinator RSS at rest:     {:.1} MiB",
        rss_rest as f64 / 1024.0
    );
    println!(
        "  coordinator RSS under load:  {:.1} MiB (peak)",
        rss_load as f64 / 1024.0
    );
    Ok(())
}
