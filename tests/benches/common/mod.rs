//! Shared by the benchmarks: driving deployments over the agent's gRPC with the
//! coordinator's identity (the minimum of `tests/e2e/pipeline.rs`'s `Driver`, plus wall-clock
//! timing of each event), a repository of addons, warming a site up until code-only deploys
//! are possible, resident-memory sampling and small statistics.
#![allow(dead_code)] // each bench uses a different part

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use ocore_proto::v1::{self, deploy_event::Kind};
use ocore_tests::fixture::{AddonsRepo, Site};
use ocore_tests::grpc;

pub const DEPLOY_TIMEOUT: Duration = Duration::from_secs(300);

/// The pipeline's step names, in order.
pub const STEPS: [&str; 7] = [
    "Pre-deploy Snapshot",
    "Clone Repository",
    "Build Image",
    "Push Image",
    "Update Container",
    "Module Update",
    "Health Check",
];

/// One deployment as the bench saw it.
#[derive(Debug, Default)]
pub struct Deployed {
    pub id: String,
    /// From sending the Deploy request to receiving the Finished event.
    pub wall: Duration,
    pub events: Vec<v1::DeployEvent>,
    pub status: i32,
    pub message: String,
    /// The agent's own figure (DeploymentFinished.duration_ms).
    pub agent_ms: u64,
    pub plan: Option<v1::DeployPlan>,
    pub image: String,
    pub commit_sha: String,
    /// Final status and duration_ms of each step.
    pub steps: BTreeMap<String, (i32, u64)>,
    pub logs: Vec<(i64, String, String)>,
}

impl Deployed {
    fn from(id: String, wall: Duration, events: Vec<v1::DeployEvent>) -> Self {
        let mut d = Deployed {
            id,
            wall,
            ..Default::default()
        };
        for e in &events {
            match &e.kind {
                Some(Kind::Step(s)) => {
                    d.steps.insert(s.name.clone(), (s.status, s.duration_ms));
                }
                Some(Kind::Log(l)) => d.logs.push((e.at, l.step.clone(), l.line.clone())),
                Some(Kind::Plan(p)) => d.plan = Some(p.clone()),
                Some(Kind::Image(i)) => d.image.clone_from(&i.image_ref),
                Some(Kind::Commit(c)) => d.commit_sha.clone_from(&c.commit_sha),
                Some(Kind::Finished(f)) => {
                    d.status = f.status;
                    d.message.clone_from(&f.message);
                    d.agent_ms = f.duration_ms;
                }
                _ => {}
            }
        }
        d.events = events;
        d
    }

    pub fn succeeded(&self) -> bool {
        self.status == v1::DeploymentStatus::Succeeded as i32
    }

    /// Whether the plan was a zero-downtime code-only switch (no module to update).
    pub fn code_only(&self) -> bool {
        self.plan
            .as_ref()
            .is_some_and(|p| p.modules_to_update.is_empty() && !p.maintenance_window)
    }

    pub fn explain(&self) -> String {
        let lines: Vec<String> = self
            .logs
            .iter()
            .map(|(_, step, line)| format!("[{step}] {line}"))
            .collect();
        format!(
            "deployment {} status {} message {:?}\n{}",
            self.id,
            self.status,
            self.message,
            lines.join("\n")
        )
    }

    pub fn ensure_succeeded(&self) -> Result<()> {
        if !self.succeeded() {
            bail!("deployment failed: {}", self.explain());
        }
        Ok(())
    }

    /// Duration of a step in ms (0 when it did not run).
    pub fn step_ms(&self, name: &str) -> u64 {
        self.steps.get(name).map(|s| s.1).unwrap_or(0)
    }

    /// The Clone step's "fetched N new objects (X)" figures.
    pub fn fetched(&self) -> Option<String> {
        self.logs.iter().find_map(|(_, step, line)| {
            if step != "Clone Repository" {
                return None;
            }
            let rest = line.split_once("fetched ")?.1;
            let end = rest.find(')')?;
            Some(rest[..=end].to_owned())
        })
    }

    /// The time (agent clock, unix ms) of the first log line containing `needle`.
    pub fn log_at(&self, needle: &str) -> Option<i64> {
        self.logs
            .iter()
            .find(|(_, _, line)| line.contains(needle))
            .map(|(at, _, _)| *at)
    }

    /// The time of the step's Running (`start`) or final transition.
    pub fn step_at(&self, name: &str, running: bool) -> Option<i64> {
        let events = self.events.iter().filter_map(|e| match &e.kind {
            Some(Kind::Step(s)) if s.name == name => Some((e.at, s.status)),
            _ => None,
        });
        let mut it = events.filter(|(_, status)| {
            (*status == v1::StepStatus::Running as i32) == running
                && *status != v1::StepStatus::Pending as i32
        });
        if running {
            it.next().map(|(at, _)| at)
        } else {
            it.next_back().map(|(at, _)| at)
        }
    }
}

/// Drives deployments of a site's instance through the agent's gRPC service.
pub struct Driver<'a> {
    pub site: &'a Site,
    pub runtime: tokio::runtime::Runtime,
    next: std::cell::Cell<u32>,
    /// One connection for every deploy, as the coordinator keeps one per agent.
    client: std::cell::RefCell<Option<ocore_proto::AgentClient<tonic::transport::Channel>>>,
}

impl<'a> Driver<'a> {
    pub fn new(site: &'a Site) -> Result<Self> {
        Ok(Self {
            site,
            runtime: tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()?,
            next: std::cell::Cell::new(1),
            client: std::cell::RefCell::new(None),
        })
    }

    async fn client(&self) -> Result<ocore_proto::AgentClient<tonic::transport::Channel>> {
        let cached = self.client.borrow().clone();
        if let Some(client) = cached {
            return Ok(client);
        }
        let client = self.site.agent_client().await?;
        *self.client.borrow_mut() = Some(client.clone());
        Ok(client)
    }

    /// Deploys branch `branch` of `repo` and waits for the end. The clock starts once the
    /// client is connected, when the Deploy request is sent, and stops at the Finished event.
    pub fn deploy(&self, repo: &AddonsRepo, branch: &str) -> Result<Deployed> {
        let n = self.next.get();
        self.next.set(n + 1);
        let id = format!("{}-bench{n}", self.site.instance);
        let request = v1::DeployRequest {
            deployment_id: id.clone(),
            instance_id: self.site.instance.clone(),
            repository: Some(v1::Repository {
                url: repo.url(),
                addons_subpath: String::new(),
                credentials: None,
                project_id: "bench".to_owned(),
            }),
            reference: Some(v1::GitReference {
                branch: branch.to_owned(),
                ..Default::default()
            }),
            from_seq: 0,
            snapshot_id: format!("snap-{id}"),
        };
        let (wall, events) = self.runtime.block_on(async {
            let mut client = self.client().await?;
            let start = Instant::now();
            let stream = client
                .deploy(request)
                .await
                .map_err(|s| anyhow::anyhow!("{s:?}"))?
                .into_inner();
            let events = grpc::collect(stream, None, DEPLOY_TIMEOUT)
                .await
                .map_err(anyhow::Error::msg)?;
            Ok::<_, anyhow::Error>((start.elapsed(), events))
        })?;
        Ok(Deployed::from(id, wall, events))
    }
}

/// A repository of two modules (mod_b depends on mod_a) and a README.
pub fn addons_repo(dir: &std::path::Path) -> Result<AddonsRepo> {
    let repo = AddonsRepo::init(dir)?;
    repo.module("mod_a", "1.0", &["base"], "A = 1\n")?;
    repo.module("mod_b", "1.0", &["mod_a"], "B = 1\n")?;
    repo.write("README.md", "shop addons\n")?;
    repo.write("mod_a/static/src/app.js", "console.log('v0');\n")?;
    // An integrator's repository: real OCA modules (from the PyPI wheels tests/env/setup.sh
    // unpacks) beside the own ones. OCORE_BENCH_REPO=small leaves them out.
    if std::env::var("OCORE_BENCH_REPO").as_deref() != Ok("small") {
        let oca = std::path::Path::new("/var/lib/ocore-testenv/oca");
        if !oca.join("17.0").is_dir() {
            anyhow::bail!(
                "the OCA module trees are missing: run tests/env/setup.sh (or set OCORE_BENCH_REPO=small)"
            );
        }
        // Odoo 17's, the test image's series.
        let mut names = std::collections::BTreeSet::new();
        for entry in std::fs::read_dir(oca.join("17.0"))?.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            copy_tree(&entry.path(), &repo.dir.join("oca").join(&name))?;
            names.insert(name);
        }
        println!("repository: mod_a, mod_b and the OCA modules {names:?}");
    }
    repo.commit("first version")?;
    Ok(repo)
}

fn copy_tree(from: &std::path::Path, to: &std::path::Path) -> Result<()> {
    std::fs::create_dir_all(to)?;
    for entry in std::fs::read_dir(from)? {
        let entry = entry?;
        let target = to.join(entry.file_name());
        if entry.file_type()?.is_dir() {
            copy_tree(&entry.path(), &target)?;
        } else {
            std::fs::copy(entry.path(), &target)?;
        }
    }
    Ok(())
}

/// Brings a fresh site to the state of a live instance: a first deploy, both modules
/// installed by the operator, then a deploy that updates them and records their checksums.
/// From then on a change to a static file is a code-only, zero-downtime deploy. Returns the
/// two warm-up deployments.
pub fn warm_up(d: &Driver, repo: &AddonsRepo) -> Result<(Deployed, Deployed)> {
    let first = d.deploy(repo, "main")?;
    first.ensure_succeeded()?;
    d.site.install_modules(&first.image, "mod_b")?;
    repo.write("mod_b/models.py", "B = 2\n")?;
    repo.commit("change mod_b")?;
    let second = d.deploy(repo, "main")?;
    second.ensure_succeeded()?;
    Ok((first, second))
}

/// A code-only change: a new version of a module's static file.
pub fn static_change(repo: &AddonsRepo, round: &str) -> Result<String> {
    repo.write(
        "mod_a/static/src/app.js",
        &format!("console.log('{round}');\n"),
    )?;
    repo.commit(&format!("static change {round}"))
}

/// Where a process's resident memory is (from /proc/PID/smaps): the heap, anonymous
/// mappings (thread stacks, malloc arenas), and files, in KiB.
pub fn memory_map(pid: u32) -> String {
    let Ok(text) = std::fs::read_to_string(format!("/proc/{pid}/smaps")) else {
        return "(gone)".to_owned();
    };
    let (mut heap, mut anon, mut anon_count, mut file) = (0u64, 0u64, 0u64, 0u64);
    let mut current = String::new();
    for line in text.lines() {
        let first = line.split_whitespace().next().unwrap_or_default();
        if first.contains('-') && first.chars().next().is_some_and(|c| c.is_ascii_hexdigit()) {
            current = line
                .split_whitespace()
                .nth(5)
                .unwrap_or_default()
                .to_owned();
            continue;
        }
        if let Some(rss) = line.strip_prefix("Rss:") {
            let kib: u64 = rss
                .trim()
                .trim_end_matches(" kB")
                .trim()
                .parse()
                .unwrap_or(0);
            match current.as_str() {
                "[heap]" => heap += kib,
                "" => {
                    anon += kib;
                    if kib > 0 {
                        anon_count += 1;
                    }
                }
                _ => file += kib,
            }
        }
    }
    format!("heap {heap} KiB, anonymous {anon} KiB in {anon_count} mappings, files {file} KiB")
}

/// Resident set size of a process in KiB (VmRSS), or None if it is gone.
pub fn rss_kib(pid: u32) -> Option<u64> {
    status_field(pid, "VmRSS:")
}

/// Peak resident set size of a process in KiB (VmHWM).
pub fn hwm_kib(pid: u32) -> Option<u64> {
    status_field(pid, "VmHWM:")
}

fn status_field(pid: u32, field: &str) -> Option<u64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
}

/// Samples a process's VmRSS every 100 ms on a thread until stopped.
pub struct RssSampler {
    stop: Arc<AtomicBool>,
    handle: Option<std::thread::JoinHandle<Vec<u64>>>,
}

impl RssSampler {
    pub fn start(pid: u32) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let handle = std::thread::spawn(move || {
            let mut samples = Vec::new();
            while !flag.load(Ordering::Relaxed) {
                if let Some(kib) = rss_kib(pid) {
                    samples.push(kib);
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            samples
        });
        Self {
            stop,
            handle: Some(handle),
        }
    }

    /// Stops sampling and returns the samples (KiB).
    pub fn finish(mut self) -> Vec<u64> {
        self.stop.store(true, Ordering::Relaxed);
        self.handle
            .take()
            .and_then(|h| h.join().ok())
            .unwrap_or_default()
    }
}

impl Drop for RssSampler {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// Resident memory of a process at rest: the median of `n` samples 100 ms apart.
pub fn rss_at_rest(pid: u32, n: usize) -> Option<u64> {
    let mut samples = Vec::new();
    for _ in 0..n {
        samples.extend(rss_kib(pid));
        std::thread::sleep(Duration::from_millis(100));
    }
    (!samples.is_empty()).then(|| median_u64(&samples))
}

pub fn median_u64(values: &[u64]) -> u64 {
    let mut v = values.to_vec();
    v.sort_unstable();
    match v.len() {
        0 => 0,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2,
    }
}

pub fn median_f64(values: &[f64]) -> f64 {
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    match v.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}

pub fn mib(kib: u64) -> String {
    format!("{:.1} MiB", kib as f64 / 1024.0)
}

/// The machine's load average (1, 5, 15 minutes), for the record.
pub fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|t| t.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

/// Runs a command and returns its trimmed stdout; fails with its stderr.
pub fn run(program: &str, args: &[&str]) -> Result<String> {
    let out = std::process::Command::new(program)
        .args(args)
        .output()
        .with_context(|| format!("running {program}"))?;
    ocore_tests::ensure_success(&format!("{program} {}", args.join(" ")), &out)?;
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
}
