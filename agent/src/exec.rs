//! The one audited place where the agent runs external programs (`pg_dump`, `nginx`, …).
//!
//! Programs get an argument vector, never a shell and never a command string built from
//! user text. Secrets travel in environment variables (`PGPASSWORD`), not in arguments that
//! `ps` would show. Every run has a deadline and a cancellation token, and a child that
//! outlives either is killed.

use std::ffi::OsString;
use std::path::PathBuf;
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::Command;
use tokio_util::sync::CancellationToken;

/// A program invocation.
#[derive(Debug, Clone)]
pub struct Program {
    pub program: PathBuf,
    pub args: Vec<OsString>,
    /// Extra environment; values are never logged.
    pub env: Vec<(String, String)>,
    pub current_dir: Option<PathBuf>,
}

impl Program {
    pub fn new(program: impl Into<PathBuf>) -> Self {
        Self {
            program: program.into(),
            args: Vec::new(),
            env: Vec::new(),
            current_dir: None,
        }
    }

    pub fn arg(mut self, arg: impl Into<OsString>) -> Self {
        self.args.push(arg.into());
        self
    }

    pub fn args<I, S>(mut self, args: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<OsString>,
    {
        self.args.extend(args.into_iter().map(Into::into));
        self
    }

    pub fn env(mut self, key: &str, value: impl Into<String>) -> Self {
        self.env.push((key.to_owned(), value.into()));
        self
    }

    pub fn envs(mut self, vars: impl IntoIterator<Item = (String, String)>) -> Self {
        self.env.extend(vars);
        self
    }

    pub fn current_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.current_dir = Some(dir.into());
        self
    }

    /// The command line for messages: program and arguments, no environment.
    pub fn display(&self) -> String {
        let mut text = self.program.display().to_string();
        for a in &self.args {
            text.push(' ');
            text.push_str(&a.to_string_lossy());
        }
        text
    }

    fn command(&self) -> Command {
        let mut cmd = Command::new(&self.program);
        cmd.args(&self.args)
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .kill_on_drop(true);
        if let Some(dir) = &self.current_dir {
            cmd.current_dir(dir);
        }
        cmd
    }
}

/// Why a program did not run to a successful end.
#[derive(Debug, thiserror::Error)]
pub enum ExecError {
    #[error("cannot start {program}: {source}")]
    Spawn {
        program: String,
        source: std::io::Error,
    },
    #[error("{program} did not finish within {timeout:?} and was killed")]
    TimedOut { program: String, timeout: Duration },
    #[error("{program} was cancelled")]
    Cancelled { program: String },
    #[error("{program} failed ({status}): {stderr}")]
    Failed {
        program: String,
        status: ExitStatus,
        stderr: String,
    },
    #[error("reading the output of {program}: {source}")]
    Io {
        program: String,
        source: std::io::Error,
    },
}

/// What a finished program printed.
#[derive(Debug)]
pub struct Finished {
    pub stdout: Vec<u8>,
    pub stderr: String,
}

/// Runs `program` to completion and fails on a non-zero exit with its stderr.
pub async fn run(
    program: &Program,
    timeout: Duration,
    cancel: &CancellationToken,
) -> Result<Finished, ExecError> {
    let name = program.display();
    let child = program
        .command()
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|source| ExecError::Spawn {
            program: name.clone(),
            source,
        })?;
    let output = tokio::select! {
        out = child.wait_with_output() => out.map_err(|source| ExecError::Io { program: name.clone(), source })?,
        _ = tokio::time::sleep(timeout) => return Err(ExecError::TimedOut { program: name, timeout }),
        _ = cancel.cancelled() => return Err(ExecError::Cancelled { program: name }),
    };
    let stderr = String::from_utf8_lossy(&output.stderr).trim().to_owned();
    if !output.status.success() {
        return Err(ExecError::Failed {
            program: name,
            status: output.status,
            stderr: last_lines(&stderr, 20),
        });
    }
    Ok(Finished {
        stdout: output.stdout,
        stderr,
    })
}

/// Runs `program`, handing every line of stdout and stderr to `on_line` as it arrives.
pub async fn run_streaming(
    program: &Program,
    timeout: Duration,
    cancel: &CancellationToken,
    mut on_line: impl FnMut(&str),
) -> Result<(), ExecError> {
    let name = program.display();
    let mut child = program
        .command()
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|source| ExecError::Spawn {
            program: name.clone(),
            source,
        })?;
    let io = |source| ExecError::Io {
        program: name.clone(),
        source,
    };
    let stdout = child.stdout.take();
    let stderr = child.stderr.take();
    let mut out = stdout.map(|s| BufReader::new(s).lines());
    let mut err = stderr.map(|s| BufReader::new(s).lines());
    let mut tail: Vec<String> = Vec::new();
    let deadline = tokio::time::sleep(timeout);
    tokio::pin!(deadline);
    loop {
        tokio::select! {
            line = next_line(&mut out) => match line.map_err(io)? {
                Some(l) => on_line(&l),
                None => out = None,
            },
            line = next_line(&mut err) => match line.map_err(io)? {
                Some(l) => {
                    on_line(&l);
                    tail.push(l);
                    if tail.len() > 20 { tail.remove(0); }
                }
                None => err = None,
            },
            status = child.wait(), if out.is_none() && err.is_none() => {
                let status = status.map_err(io)?;
                if status.success() {
                    return Ok(());
                }
                return Err(ExecError::Failed { program: name, status, stderr: tail.join("\n") });
            }
            _ = &mut deadline => return Err(ExecError::TimedOut { program: name, timeout }),
            _ = cancel.cancelled() => return Err(ExecError::Cancelled { program: name }),
        }
    }
}

async fn next_line<R: tokio::io::AsyncBufRead + Unpin>(
    lines: &mut Option<tokio::io::Lines<R>>,
) -> std::io::Result<Option<String>> {
    match lines {
        Some(l) => l.next_line().await,
        None => std::future::pending().await,
    }
}

fn last_lines(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn arguments_are_never_interpreted_by_a_shell() -> Result<(), ExecError> {
        let cancel = CancellationToken::new();
        let hostile = "x; touch /tmp/ocore-exec-pwned $(id)";
        let out = run(
            &Program::new("/bin/echo").arg(hostile),
            Duration::from_secs(5),
            &cancel,
        )
        .await?;
        assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), hostile);
        assert!(!std::path::Path::new("/tmp/ocore-exec-pwned").exists());
        Ok(())
    }

    #[tokio::test]
    async fn failures_timeouts_and_streams_are_reported() {
        let cancel = CancellationToken::new();
        let err = run(
            &Program::new("/bin/sh").args(["-c", "echo boom >&2; exit 3"]),
            Duration::from_secs(5),
            &cancel,
        )
        .await
        .expect_err("fails");
        assert!(err.to_string().contains("boom"), "{err}");
        let err = run(
            &Program::new("/bin/sleep").arg("5"),
            Duration::from_millis(100),
            &cancel,
        )
        .await
        .expect_err("times out");
        assert!(matches!(err, ExecError::TimedOut { .. }), "{err}");
        let mut lines = Vec::new();
        run_streaming(
            &Program::new("/bin/sh").args(["-c", "echo one; echo two >&2; echo three"]),
            Duration::from_secs(5),
            &cancel,
            |l| lines.push(l.to_owned()),
        )
        .await
        .expect("streams");
        lines.sort();
        assert_eq!(lines, ["one", "three", "two"]);
        let err = run(
            &Program::new("/nonexistent/prog"),
            Duration::from_secs(1),
            &cancel,
        )
        .await
        .expect_err("missing");
        assert!(err.to_string().contains("/nonexistent/prog"), "{err}");
    }
}
