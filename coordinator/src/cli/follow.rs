//! Following a deployment live (`--follow`, `ocore deploy follow`, `ocore deploy logs
//! --follow`): each step as it starts and ends with its status and time, a spinner with the
//! running step's elapsed time and latest output line on a terminal, log lines with
//! `--logs`, and the tail of a failed step's output. Ctrl-C stops following, never the
//! deployment, and says how to come back or cancel.
//!
//! Three threads share the screen: the event reader, a ticker redrawing the spinner (on a
//! terminal only), and the caller, which waits for the first of "the deployment ended" and
//! "Ctrl-C".

use std::collections::VecDeque;
use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use serde_json::Value;

use super::client::{ApiClient, SseEvent};
use super::output::field;
use super::term::{self, Color, Style};
use super::{CliError, Format};

/// Log lines of the current step kept to show when it fails.
const TAIL: usize = 12;
/// Times the event stream may break in a row before following gives up.
const MAX_RECONNECTS: u32 = 30;

#[derive(Debug, Clone, Copy)]
pub struct FollowOptions {
    /// Print every log line of the steps.
    pub logs: bool,
    pub format: Format,
}

enum Msg {
    Done(Result<Value, CliError>),
    Interrupted,
}

/// Follows deployment `id` of `project` to its end. Ok only if it succeeded; a failed one
/// is `Outcome`, a cancelled one `Cancelled`, Ctrl-C `Interrupted`.
pub fn follow(
    client: &ApiClient,
    project: &str,
    id: &str,
    options: FollowOptions,
) -> Result<(), CliError> {
    let screen = Arc::new(Mutex::new(Screen::new(options)));
    let (tx, rx) = mpsc::channel();
    watch_ctrl_c(tx.clone());
    let stop = Arc::new(AtomicBool::new(false));
    if lock(&screen).style.live && options.format == Format::Text {
        let (screen, stop) = (screen.clone(), stop.clone());
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                std::thread::sleep(Duration::from_millis(120));
                lock(&screen).tick();
            }
        });
    }
    {
        let (client, screen) = (client.clone(), screen.clone());
        let (project, id) = (project.to_owned(), id.to_owned());
        std::thread::spawn(move || {
            let result = read_events(&client, &project, &id, &screen);
            let _ = tx.send(Msg::Done(result));
        });
    }
    let msg = rx
        .recv()
        .unwrap_or_else(|_| Msg::Done(Err(CliError::Local("the event reader stopped".into()))));
    stop.store(true, Ordering::Relaxed);
    // From here on the reader may still receive events; nothing more is printed.
    lock(&screen).close();
    match msg {
        Msg::Interrupted => Err(CliError::Interrupted(format!(
            "stopped following deployment {id}; the deployment itself goes on (Ctrl-C does not cancel it)\n  \
             follow it again: ocore deploy follow {id} --project {project}\n  \
             cancel it:       ocore deploy cancel {id} --project {project}"
        ))),
        Msg::Done(Err(e)) => Err(e),
        Msg::Done(Ok(d)) => outcome(&d, id, options.format),
    }
}

/// Says how the deployment ended and turns it into the exit status.
fn outcome(d: &Value, id: &str, format: Format) -> Result<(), CliError> {
    let status = field(d, "status");
    let took = d["durationMs"]
        .as_u64()
        .map(term::duration_ms)
        .unwrap_or_else(|| "-".to_owned());
    let reason = d["statusReason"].as_str().unwrap_or("no reason given");
    if format == Format::Text {
        let style = Style::stdout();
        let color = term::status_color(&status).unwrap_or(Color::Bold);
        let extra = match status.as_str() {
            "succeeded" => format!(
                " (commit {}, serving {})",
                term::short_sha(d["commitSha"].as_str().unwrap_or("-")),
                field(d, "activeColor")
            ),
            _ => String::new(),
        };
        println!(
            "deployment {id} {} in {took}{extra}",
            style.paint(color, &status)
        );
    }
    match status.as_str() {
        "succeeded" => Ok(()),
        "cancelled" => Err(CliError::Cancelled(format!(
            "deployment {id} was cancelled: {reason}"
        ))),
        _ => Err(CliError::Outcome(format!(
            "deployment {id} {status}: {reason} (all output: ocore deploy logs {id})"
        ))),
    }
}

/// Reads the event stream to the `finished` event, resuming after the last seen event
/// when the stream breaks; returns the deployment as it ended.
fn read_events(
    client: &ApiClient,
    project: &str,
    id: &str,
    screen: &Mutex<Screen>,
) -> Result<Value, CliError> {
    let path = format!(
        "/api/projects/{}/deployments/{}/events",
        super::mapping::encode(project),
        super::mapping::encode(id)
    );
    let mut last: Option<String> = None;
    let mut finished = false;
    let mut breaks = 0;
    loop {
        let mut got_any = false;
        let resume = last.clone();
        let result = client.events(&path, resume.as_deref(), &mut |e| {
            if let Some(i) = &e.id {
                last = Some(i.clone());
            }
            got_any = true;
            lock(screen).event(e);
            finished = e.event == "finished";
            !finished
        });
        if finished {
            break;
        }
        match result {
            // The stream ended without its last event (a coordinator restart): resume.
            Ok(()) => {}
            Err(CliError::Network { .. }) if breaks < MAX_RECONNECTS => {}
            Err(e) => return Err(e),
        }
        breaks = if got_any { 1 } else { breaks + 1 };
        if breaks >= MAX_RECONNECTS {
            return Err(CliError::Network {
                url: client.base().to_owned(),
                message: format!("lost the event stream of deployment {id} {breaks} times"),
            });
        }
        // A pause before reconnecting, so a restarting coordinator is not hammered.
        std::thread::sleep(Duration::from_secs(1));
    }
    client.get(&format!(
        "/api/projects/{}/deployments/{}",
        super::mapping::encode(project),
        super::mapping::encode(id)
    ))
}

/// Catches SIGINT from now on and reports it on `tx`. Registered before this returns,
/// so no Ctrl-C is missed; without a runtime, Ctrl-C keeps its default (exit).
fn watch_ctrl_c(tx: mpsc::Sender<Msg>) {
    let Ok(runtime) = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .build()
    else {
        return;
    };
    let signal = {
        let _guard = runtime.enter();
        tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt())
    };
    let Ok(mut signal) = signal else {
        return;
    };
    std::thread::spawn(move || {
        if runtime.block_on(signal.recv()).is_some() {
            let _ = tx.send(Msg::Interrupted);
        }
    });
}

fn lock(screen: &Mutex<Screen>) -> MutexGuard<'_, Screen> {
    screen
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

struct Running {
    name: String,
    since: Instant,
    /// Time the step had already run when this client learnt of it (late attach).
    before_ms: u64,
    last_line: String,
}

/// What is on the terminal, and the state needed to redraw it.
struct Screen {
    style: Style,
    options: FollowOptions,
    closed: bool,
    running: Option<Running>,
    /// A spinner line is drawn and must be cleared before printing.
    transient: bool,
    frame: usize,
    tail: VecDeque<String>,
    tail_step: String,
}

impl Screen {
    fn new(options: FollowOptions) -> Self {
        Self {
            style: if options.format == Format::Json {
                Style::plain()
            } else {
                Style::stdout()
            },
            options,
            closed: false,
            running: None,
            transient: false,
            frame: 0,
            tail: VecDeque::new(),
            tail_step: String::new(),
        }
    }

    fn close(&mut self) {
        self.clear();
        self.closed = true;
    }

    fn tick(&mut self) {
        if self.closed || self.running.is_none() {
            return;
        }
        self.frame += 1;
        self.draw();
    }

    fn clear(&mut self) {
        if self.transient {
            print!("\r\x1b[2K");
            let _ = std::io::stdout().flush();
            self.transient = false;
        }
    }

    fn draw(&mut self) {
        if !self.style.live {
            return;
        }
        let Some(r) = &self.running else {
            return;
        };
        let elapsed = r.before_ms + r.since.elapsed().as_millis() as u64;
        let spinner = term::SPINNER[self.frame % term::SPINNER.len()];
        let head = format!("{spinner} {} {}", r.name, term::duration_ms(elapsed));
        let room = term::width().saturating_sub(head.chars().count() + 3);
        let line = if r.last_line.is_empty() || room < 10 {
            String::new()
        } else {
            format!("  {}", term::truncate(&r.last_line, room))
        };
        print!(
            "\r\x1b[2K{}{}",
            self.style.paint(Color::Cyan, &head),
            self.style.paint(Color::Dim, &line)
        );
        let _ = std::io::stdout().flush();
        self.transient = true;
    }

    /// Prints a permanent line above the spinner.
    fn line(&mut self, text: &str) {
        self.clear();
        println!("{text}");
    }

    fn event(&mut self, e: &SseEvent) {
        if self.closed {
            return;
        }
        if self.options.format == Format::Json {
            println!("{}", e.data);
            return;
        }
        let v: Value = serde_json::from_str(&e.data).unwrap_or(Value::Null);
        let style = self.style;
        match e.event.as_str() {
            "step" => self.step(&v),
            "log" => {
                let text = field(&v, "line");
                self.tail.push_back(text.clone());
                if self.tail.len() > TAIL {
                    self.tail.pop_front();
                }
                if self.options.logs {
                    self.line(&format!("   | {text}"));
                }
                if let Some(r) = &mut self.running {
                    r.last_line = text;
                }
            }
            "commit" => {
                let subject = field(&v, "commitMessage");
                let author = term::author_name(&field(&v, "commitAuthor"));
                self.line(&format!(
                    "   commit {}{}: {}",
                    term::short_sha(&field(&v, "commitSha")),
                    if author.is_empty() {
                        String::new()
                    } else {
                        format!(" by {author}")
                    },
                    subject.lines().next().unwrap_or("")
                ));
            }
            "plan" => {
                let modules: Vec<&str> = v["modulesToUpdate"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(Value::as_str)
                    .collect();
                let text = if v["initializeDatabase"] == Value::Bool(true) {
                    format!(
                        "   plan: initialize the database ({}, language {}), then start {}",
                        if v["demoData"] == Value::Bool(true) {
                            "WITH demo data"
                        } else {
                            "without demo data"
                        },
                        field(&v, "language"),
                        field(&v, "targetColor")
                    )
                } else if v["maintenanceWindow"] == Value::Bool(true) {
                    format!(
                        "   plan: maintenance window, modules to update: {}",
                        modules.join(", ")
                    )
                } else {
                    format!(
                        "   plan: zero-downtime switch to {} (no module to update)",
                        field(&v, "targetColor")
                    )
                };
                self.line(&text);
                for m in v["modules"].as_array().into_iter().flatten() {
                    self.line(&format!(
                        "     {}: {}",
                        field(m, "name"),
                        field(m, "detail")
                    ));
                }
            }
            "snapshot" => self.line(&format!(
                "   pre-deploy snapshot {} ({})",
                field(&v, "snapshotId"),
                term::bytes(v["sizeBytes"].as_u64().unwrap_or(0))
            )),
            "image" => self.line(&format!("   image {}", field(&v, "imageRef"))),
            "finished" => {
                self.running = None;
                let status = field(&v, "status");
                if status != "succeeded" && !self.options.logs && !self.tail.is_empty() {
                    let step = self.tail_step.clone();
                    self.line(&format!("   last output of {step}:"));
                    for l in self.tail.clone() {
                        self.line(&format!("   | {l}"));
                    }
                }
                let color = term::status_color(&status).unwrap_or(Color::Bold);
                let message = v["message"].as_str().unwrap_or("");
                let text = if message.is_empty() {
                    format!("== {status}")
                } else {
                    format!("== {status}: {message}")
                };
                self.line(&style.paint(color, &text));
            }
            _ => {}
        }
        self.draw();
    }

    fn step(&mut self, v: &Value) {
        let name = field(v, "name");
        let took = v["durationMs"]
            .as_u64()
            .map(term::duration_ms)
            .unwrap_or_else(|| "-".to_owned());
        let message = v["message"].as_str().unwrap_or("");
        let style = self.style;
        match v["status"].as_str().unwrap_or("") {
            "running" => {
                let before_ms = v["startedAt"]
                    .as_str()
                    .and_then(term::parse_time)
                    .map(|t| (time::OffsetDateTime::now_utc() - t).whole_milliseconds())
                    .and_then(|ms| u64::try_from(ms).ok())
                    .unwrap_or(0);
                self.tail.clear();
                self.tail_step = name.clone();
                if !self.style.live {
                    self.line(&format!("-> {name}"));
                }
                self.running = Some(Running {
                    name,
                    since: Instant::now(),
                    before_ms,
                    last_line: String::new(),
                });
            }
            "completed" => {
                self.running = None;
                self.line(&format!(
                    "{} {name} ({took})",
                    style.paint(Color::Green, "ok")
                ));
            }
            "skipped" => {
                self.running = None;
                let why = if message.is_empty() {
                    String::new()
                } else {
                    format!(": {message}")
                };
                self.line(&style.paint(Color::Dim, &format!("-- {name} skipped{why}")));
            }
            "failed" => {
                self.running = None;
                self.line(&style.paint(
                    Color::Red,
                    &format!("!! {name} failed after {took}: {message}"),
                ));
            }
            _ => {}
        }
    }
}
