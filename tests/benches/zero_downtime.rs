//! Zero downtime: failed requests under continuous HTTP load through the instance's nginx
//! public port during a code-only oCore deploy (a module's static file changes, so no module
//! update and no maintenance window), then, in the same run, during a naive stop-then-start
//! swap done by hand (docker stop/rm of the serving container, docker run of a new image with
//! the arguments, environment, binds and labels copied from `docker inspect`, wait for health).
//!
//!     CARGO_TARGET_DIR=/work/target-bench cargo build --release --workspace --bins
//!     CARGO_TARGET_DIR=/work/target-bench cargo bench -p ocore-tests --bench zero_downtime
//!
//! Load: `OCORE_BENCH_CLIENTS` threads (default 8), each with its own keep-alive connection
//! pool (one ureq agent), GET / on 127.0.0.1:<public port> back to back with
//! `OCORE_BENCH_PAUSE_MS` (default 5) between requests, 10 s per request. A window runs at
//! least 1.5 s before the swap and 2 s after it, and until `OCORE_BENCH_MIN_REQUESTS`
//! (default 2000) requests were made, at most 120 s after the swap ended.

mod common;

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use common::{addons_repo, load_average, run, static_change, warm_up, Driver};
use ocore_tests::fixture::{AddonsRepo, Site, SiteOptions, BASE_IMAGE};
use serde_json::Value;

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn unix_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// One request of the load.
struct Sample {
    /// Unix ms when the request was sent.
    at: i64,
    /// None when it answered 200; else what went wrong.
    error: Option<String>,
    colour: String,
}

/// Clients hammering a URL until stopped.
struct Load {
    stop: Arc<AtomicBool>,
    count: Arc<AtomicU64>,
    handles: Vec<std::thread::JoinHandle<Vec<Sample>>>,
}

impl Load {
    fn start(url: &str, clients: usize, pause: Duration) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let count = Arc::new(AtomicU64::new(0));
        let handles = (0..clients)
            .map(|_| {
                let (stop, count, url) = (stop.clone(), count.clone(), url.to_owned());
                std::thread::spawn(move || {
                    // One agent per client: its own pool of keep-alive connections.
                    let agent: ureq::Agent = ureq::Agent::config_builder()
                        .http_status_as_error(false)
                        .timeout_global(Some(Duration::from_secs(10)))
                        .build()
                        .into();
                    let mut samples = Vec::new();
                    while !stop.load(Ordering::Relaxed) {
                        let at = unix_ms();
                        let (error, colour) = match agent.get(&url).call() {
                            Ok(mut response) => {
                                let status = response.status().as_u16();
                                let colour = response
                                    .headers()
                                    .get("X-Ocore-Color")
                                    .and_then(|v| v.to_str().ok())
                                    .unwrap_or_default()
                                    .to_owned();
                                // Read the body whole, so the connection goes back to the pool.
                                let body = response.body_mut().read_to_string();
                                let error = match (status, body) {
                                    (200, Ok(_)) => None,
                                    (200, Err(e)) => Some(format!("reading body: {e}")),
                                    (s, _) => Some(format!("HTTP {s}")),
                                };
                                (error, colour)
                            }
                            Err(e) => (Some(format!("transport: {e}")), String::new()),
                        };
                        samples.push(Sample { at, error, colour });
                        count.fetch_add(1, Ordering::Relaxed);
                        std::thread::sleep(pause);
                    }
                    samples
                })
            })
            .collect();
        Self {
            stop,
            count,
            handles,
        }
    }

    fn count(&self) -> u64 {
        self.count.load(Ordering::Relaxed)
    }

    fn finish(self) -> Vec<Sample> {
        self.stop.store(true, Ordering::Relaxed);
        let mut all: Vec<Sample> = self
            .handles
            .into_iter()
            .flat_map(|h| h.join().unwrap_or_default())
            .collect();
        all.sort_by_key(|s| s.at);
        all
    }
}

struct Settings {
    url: String,
    clients: usize,
    pause: Duration,
    min_requests: u64,
}

/// What one window of load saw; `marks` are named instants (unix ms) of the swap.
struct Window {
    samples: Vec<Sample>,
    marks: Vec<(String, i64)>,
    swap_ms: u128,
}

impl Window {
    fn failures(&self) -> usize {
        self.samples.iter().filter(|s| s.error.is_some()).count()
    }

    fn ratio(&self) -> f64 {
        self.failures() as f64 / self.samples.len().max(1) as f64
    }

    fn print(&self, name: &str) {
        let n = self.samples.len();
        let failures = self.failures();
        println!("-- {name} --");
        println!(
            "requests {n}, failures {failures}, failure ratio {:.4} ({:.2} %), swap took {} ms",
            self.ratio(),
            self.ratio() * 100.0,
            self.swap_ms
        );
        if let (Some(first), Some(last)) = (self.samples.first(), self.samples.last()) {
            let secs = (last.at - first.at) as f64 / 1000.0;
            println!(
                "load ran {secs:.1} s ({:.0} requests/s)",
                n as f64 / secs.max(0.001)
            );
            for (mark, at) in &self.marks {
                let before = self.samples.iter().filter(|s| s.at < *at).count();
                println!(
                    "  {mark:<34} at +{:>6} ms: {before:>5} requests before, {:>5} after",
                    at - first.at,
                    n - before
                );
            }
        }
        let mut colours: std::collections::BTreeMap<&str, usize> = Default::default();
        for s in self.samples.iter().filter(|s| s.error.is_none()) {
            *colours.entry(s.colour.as_str()).or_default() += 1;
        }
        println!("  answered by colour: {colours:?}");
        let mut kinds: std::collections::BTreeMap<String, usize> = Default::default();
        for e in self.samples.iter().filter_map(|s| s.error.as_deref()) {
            let kind: String = e.chars().take(90).collect();
            *kinds.entry(kind).or_default() += 1;
        }
        for (kind, count) in &kinds {
            println!("  failure x{count}: {kind}");
        }
        let failed: Vec<i64> = self
            .samples
            .iter()
            .filter(|s| s.error.is_some())
            .map(|s| s.at)
            .collect();
        if let (Some(a), Some(b), Some(first)) =
            (failed.first(), failed.last(), self.samples.first())
        {
            println!(
                "  failures between +{} ms and +{} ms ({} ms of disruption)",
                a - first.at,
                b - first.at,
                b - a
            );
        }
    }
}

/// Runs the load around `swap`: pre-roll, the swap, post-roll until enough requests.
fn window(
    settings: &Settings,
    swap: impl FnOnce() -> Result<Vec<(String, i64)>>,
) -> Result<Window> {
    let load = Load::start(&settings.url, settings.clients, settings.pause);
    let pre = Instant::now();
    while pre.elapsed() < Duration::from_millis(1500) || load.count() < 100 {
        if pre.elapsed() > Duration::from_secs(30) {
            let count = load.count();
            load.finish();
            bail!("the load made only {count} requests in 30 s");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let started = Instant::now();
    let swapped = swap();
    let swap_ms = started.elapsed().as_millis();
    let marks = match swapped {
        Ok(m) => m,
        Err(e) => {
            load.finish();
            return Err(e);
        }
    };
    let post = Instant::now();
    while post.elapsed() < Duration::from_secs(2)
        || (load.count() < settings.min_requests && post.elapsed() < Duration::from_secs(120))
    {
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok(Window {
        samples: load.finish(),
        marks,
        swap_ms,
    })
}

/// The page's commit, through the public port.
fn serving(site: &Site) -> Result<(String, String)> {
    let (status, body, colour) = site.public_page()?;
    if status != 200 {
        bail!("public port answered {status}: {body}");
    }
    let commit = body
        .lines()
        .find_map(|l| l.trim().strip_prefix("commit "))
        .unwrap_or_default()
        .to_owned();
    Ok((commit, colour))
}

/// Polls the colour's own port like the agent does: /web/health must pass, then
/// /web/login?db= must answer 200; every 250 ms, at most `timeout`.
fn wait_healthy(port: u16, database: &str, timeout: Duration) -> Result<()> {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(5)))
        .build()
        .into();
    let start = Instant::now();
    for (path, want_pass) in [
        ("/web/health".to_owned(), true),
        (format!("/web/login?db={database}"), false),
    ] {
        loop {
            let ok = agent
                .get(&format!("http://127.0.0.1:{port}{path}"))
                .call()
                .ok()
                .and_then(|mut r| {
                    let status = r.status().as_u16();
                    let body = r.body_mut().read_to_string().ok()?;
                    Some(status == 200 && (!want_pass || body.contains("pass")))
                })
                .unwrap_or(false);
            if ok {
                break;
            }
            if start.elapsed() > timeout {
                bail!("port {port} did not answer {path} healthily within {timeout:?}");
            }
            std::thread::sleep(Duration::from_millis(250));
        }
    }
    Ok(())
}

/// Builds the image of the repository's HEAD by hand, with the Dockerfile oCore generates.
fn build_image(repo: &AddonsRepo, dir: &Path, image: &str, instance: &str) -> Result<()> {
    let context = dir.join("naive-context");
    let _ = std::fs::remove_dir_all(&context);
    let context_arg = context.display().to_string();
    run("git", &["clone", "--quiet", &repo.url(), &context_arg])?;
    std::fs::remove_dir_all(context.join(".git"))?;
    let dockerfile = context.join(".ocore.Dockerfile");
    std::fs::write(
        &dockerfile,
        format!("# Generated by oCore.\nFROM {BASE_IMAGE}\nUSER root\nCOPY --chown=odoo:odoo . /mnt/extra-addons\nUSER odoo\n"),
    )?;
    let out = Command::new("docker")
        .env("DOCKER_BUILDKIT", "0")
        .args(["build", "--quiet", "--force-rm", "--tag", image, "--label"])
        .arg(format!("org.ocore.instance={instance}"))
        .arg("--file")
        .arg(&dockerfile)
        .arg(&context)
        .output()?;
    ocore_tests::ensure_success("docker build (naive image)", &out)
}

/// `docker run` arguments that recreate `inspect`'s container from `image`, with the
/// commit environment variable and label set to `commit`. Secrets go to `env_file`.
fn run_args(inspect: &Value, image: &str, commit: &str, env_file: &Path) -> Result<Vec<String>> {
    let name = inspect["Name"]
        .as_str()
        .context("no Name")?
        .trim_start_matches('/');
    let config = &inspect["Config"];
    let host = &inspect["HostConfig"];
    let mut args: Vec<String> = vec![
        "run".into(),
        "--detach".into(),
        "--name".into(),
        name.into(),
    ];
    if let Some(mode) = host["NetworkMode"].as_str() {
        args.extend(["--network".into(), mode.into()]);
    }
    if let Some(policy) = host["RestartPolicy"]["Name"]
        .as_str()
        .filter(|p| !p.is_empty())
    {
        args.extend(["--restart".into(), policy.into()]);
    }
    for bind in host["Binds"].as_array().into_iter().flatten() {
        args.extend(["--volume".into(), bind.as_str().context("bind")?.into()]);
    }
    let mut env = String::new();
    for var in config["Env"].as_array().into_iter().flatten() {
        let var = var.as_str().context("env")?;
        if var.starts_with("OCORE_COMMIT=") {
            env.push_str(&format!("OCORE_COMMIT={commit}\n"));
        } else {
            env.push_str(var);
            env.push('\n');
        }
    }
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(env_file)?;
    file.write_all(env.as_bytes())?;
    args.extend(["--env-file".into(), env_file.display().to_string()]);
    if let Some(labels) = config["Labels"].as_object() {
        for (k, v) in labels {
            let v = if k == "org.ocore.commit" {
                commit
            } else {
                v.as_str().unwrap_or_default()
            };
            args.extend(["--label".into(), format!("{k}={v}")]);
        }
    }
    args.push(image.into());
    for arg in config["Cmd"].as_array().into_iter().flatten() {
        args.push(arg.as_str().context("cmd")?.into());
    }
    Ok(args)
}

fn docker(args: &[String]) -> Result<()> {
    let out = Command::new("docker")
        .args(args)
        .stdin(Stdio::null())
        .output()?;
    ocore_tests::ensure_success(&format!("docker {}", args.join(" ")), &out)
}

fn main() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let site = Site::start(dir.path(), &SiteOptions::default())?;
    let instance = site.instance.clone();
    let result = bench(&site, dir.path());
    drop(site);
    if let Ok(ids) = run(
        "docker",
        &[
            "images",
            "-q",
            "--filter",
            &format!("label=org.ocore.instance={instance}"),
        ],
    ) {
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
    result
}

fn bench(site: &Site, dir: &Path) -> Result<()> {
    let settings = Settings {
        url: format!("http://127.0.0.1:{}/", site.public_port),
        clients: env_or("OCORE_BENCH_CLIENTS", 8usize).max(1),
        pause: Duration::from_millis(env_or("OCORE_BENCH_PAUSE_MS", 5u64)),
        min_requests: env_or("OCORE_BENCH_MIN_REQUESTS", 2000u64),
    };
    let d = Driver::new(site)?;
    let repo = addons_repo(dir)?;
    warm_up(&d, &repo)?;
    println!(
        "zero_downtime: {} clients, {} ms pause, at least {} requests per window; load average {}",
        settings.clients,
        settings.pause.as_millis(),
        settings.min_requests,
        load_average()
    );

    // ------------------------------------------------------------ oCore code-only deploy
    let (_, before_colour) = serving(site)?;
    let sha = static_change(&repo, "zero-downtime")?;
    let mut deployed = None;
    let ocore = window(&settings, || {
        let dep = d.deploy(&repo, "main")?;
        dep.ensure_succeeded()?;
        let marks = [
            ("new colour started", "started ocore-"),
            ("new colour healthy", " is healthy"),
            ("traffic switched (nginx reloaded)", "traffic switched to"),
            ("old colour draining", "draining "),
            ("old colour stopped", "stopped and removed"),
        ]
        .into_iter()
        .filter_map(|(name, needle)| dep.log_at(needle).map(|at| (name.to_owned(), at)))
        .collect();
        deployed = Some(dep);
        Ok(marks)
    })?;
    let dep = deployed.context("no deployment")?;
    if !dep.code_only() {
        bail!(
            "the static change was not planned as a code-only deploy: {}",
            dep.explain()
        );
    }
    let (now, after_colour) = serving(site)?;
    if now != sha || after_colour == before_colour {
        bail!("after the deploy the public port serves {now} on {after_colour}, expected {sha} on the other colour than {before_colour}");
    }

    // ------------------------------------------------------------ naive stop-then-start
    let name = format!("ocore-{}-{after_colour}", site.instance);
    let inspect: Value = serde_json::from_str(&run("docker", &["inspect", &name])?)?;
    let inspect = inspect.get(0).context("docker inspect gave no container")?;
    let http_port: u16 = inspect["Config"]["Cmd"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .find_map(|a| a.strip_prefix("--http-port="))
        .context("no --http-port in the container's command")?
        .parse()?;
    let naive_sha = static_change(&repo, "naive")?;
    let image = format!(
        "{}/ocore/{}:naive-{}",
        site.env.registry,
        site.instance,
        &naive_sha[..12]
    );
    build_image(&repo, dir, &image, &site.instance)?;
    let args = run_args(inspect, &image, &naive_sha, &dir.join("naive.env"))?;
    let naive = window(&settings, || {
        let mut marks = vec![("docker stop".to_owned(), unix_ms())];
        docker(&["stop".into(), "--time".into(), "5".into(), name.clone()])?;
        docker(&["rm".into(), "--volumes".into(), name.clone()])?;
        marks.push(("docker run".to_owned(), unix_ms()));
        docker(&args)?;
        wait_healthy(http_port, &site.database, Duration::from_secs(60))?;
        marks.push(("healthy again".to_owned(), unix_ms()));
        Ok(marks)
    })?;
    let (now, _) = serving(site)?;
    if now != naive_sha {
        bail!("after the naive swap the public port serves {now}, expected {naive_sha}");
    }

    // ------------------------------------------------------------ report
    println!();
    println!("== zero downtime: GET / through nginx during a swap ==");
    ocore.print(&format!(
        "oCore code-only deploy ({} ms, {before_colour} -> {after_colour})",
        dep.wall.as_millis()
    ));
    naive.print("naive stop-then-start (docker stop/rm, docker run, wait for health)");
    println!();
    println!(
        "oCore:  {} requests, {} failed, failure ratio {:.5}",
        ocore.samples.len(),
        ocore.failures(),
        ocore.ratio()
    );
    println!(
        "naive:  {} requests, {} failed, failure ratio {:.5}",
        naive.samples.len(),
        naive.failures(),
        naive.ratio()
    );
    if naive.failures() > 0 {
        println!(
            "failure ratio oCore / naive: {:.5}  (goal: oCore 0 failures)",
            ocore.ratio() / naive.ratio()
        );
    } else {
        println!("failure ratio oCore / naive: n/a (the naive swap had no failure)");
    }
    println!("load average after {}", load_average());
    Ok(())
}
