//! Helpers for the coordinator's deployment API tests: a Git repository, a project wired
//! to an agent's instance, project tokens, waiting on a deployment, and reading its
//! Server-Sent Events.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{Context, Result};
use serde_json::Value;

use crate::{ensure_success, wait_for, Coordinator};

/// Creates a real Git repository in `dir/name` with one commit holding an addon, and
/// returns its path (agents accept absolute paths as repository URLs).
pub fn git_repo(dir: &Path, name: &str) -> Result<PathBuf> {
    let repo = dir.join(name);
    std::fs::create_dir_all(repo.join("addons/shop_custom"))?;
    std::fs::write(
        repo.join("addons/shop_custom/__manifest__.py"),
        "{'name': 'Shop custom', 'version': '17.0.1.0.0', 'depends': ['base']}\n",
    )?;
    std::fs::write(repo.join("addons/shop_custom/__init__.py"), "")?;
    let git = |args: &[&str]| -> Result<()> {
        let out = Command::new("git")
            .args(args)
            .current_dir(&repo)
            .env("GIT_AUTHOR_NAME", "Test Author")
            .env("GIT_AUTHOR_EMAIL", "author@example.invalid")
            .env("GIT_COMMITTER_NAME", "Test Author")
            .env("GIT_COMMITTER_EMAIL", "author@example.invalid")
            .output()?;
        ensure_success(&format!("git {}", args.join(" ")), &out)
    };
    git(&["init", "-q", "-b", "main"])?;
    git(&["add", "."])?;
    git(&["commit", "-q", "-m", "Add shop_custom"])?;
    Ok(repo)
}

/// A project `project` with environment `<project>-prod`, mapped from branch `main`, whose
/// instance `<project>-prod` is the agent's declared instance `<agent>-prod`.
pub fn configure_project(
    coordinator: &Coordinator,
    project: &str,
    repository: &str,
    agent: &str,
) -> Result<()> {
    configure_project_on(
        coordinator,
        project,
        repository,
        agent,
        &format!("{agent}-prod"),
    )
}

/// Like [`configure_project`], on the agent's declared instance `agent_instance`.
pub fn configure_project_on(
    coordinator: &Coordinator,
    project: &str,
    repository: &str,
    agent: &str,
    agent_instance: &str,
) -> Result<()> {
    let env = format!("{project}-prod");
    coordinator.cli_json(&["project", "create", project, "--repository", repository])?;
    coordinator.cli_json(&[
        "environment",
        "create",
        &env,
        "--project",
        project,
        "--name",
        "production",
    ])?;
    coordinator.cli_json(&[
        "instance",
        "create",
        &env,
        "--environment",
        &env,
        "--agent",
        agent,
        "--agent-instance",
        agent_instance,
    ])?;
    coordinator.cli_json(&[
        "mapping",
        "set",
        "--project",
        project,
        "--branch",
        "main",
        "--environment",
        &env,
    ])?;
    Ok(())
}

impl crate::fixture::Site {
    /// Project `shop` on `repo`, environment and instance `shop-prod` on this site's
    /// agent instance, branch `main` mapped to it.
    pub fn configure_shop(&self, repo: &crate::fixture::AddonsRepo) -> Result<()> {
        let c = &self.coordinator;
        c.cli_json(&["project", "create", "shop", "--repository", &repo.url()])?;
        c.cli_json(&["environment", "create", "shop-prod", "--project", "shop"])?;
        c.cli_json(&[
            "instance",
            "create",
            "shop-prod",
            "--environment",
            "shop-prod",
            "--agent",
            &self.agent.name,
            "--agent-instance",
            &self.instance,
        ])?;
        c.cli_json(&[
            "mapping",
            "set",
            "--project",
            "shop",
            "--branch",
            "main",
            "--environment",
            "shop-prod",
        ])?;
        Ok(())
    }

    /// Queues a deployment of `shop`'s branch `main` through the API; returns its id.
    pub fn deploy_main(&self) -> Result<String> {
        let c = &self.coordinator;
        let (status, body) = c.api(
            "POST",
            "/api/projects/shop/deploy",
            Some(&c.admin_token),
            Some(&serde_json::json!({"branch": "main"})),
        )?;
        anyhow::ensure!(status == 202, "deploy answered {status}: {body}");
        Ok(body["id"]
            .as_str()
            .context("id of the deployment")?
            .to_owned())
    }
}

/// Creates a token with `permissions` on `project` and returns its secret.
pub fn project_token(
    coordinator: &Coordinator,
    project: &str,
    permissions: &[&str],
) -> Result<String> {
    let mut args = vec!["token", "create", "--name", "t", "--project", project];
    for p in permissions {
        args.extend(["--permission", p]);
    }
    let created = coordinator.cli_json(&args)?;
    Ok(created["token"]
        .as_str()
        .context("token secret")?
        .to_owned())
}

/// Waits until the deployment's status is one of `statuses`; returns the deployment.
pub fn wait_deployment(
    coordinator: &Coordinator,
    project: &str,
    id: &str,
    statuses: &[&str],
    deadline: Duration,
) -> Result<Value> {
    let path = format!("/api/projects/{project}/deployments/{id}");
    wait_for(
        &format!("deployment {id} to be one of {statuses:?}"),
        deadline,
        || {
            coordinator
                .get_ok(&path)
                .ok()
                .filter(|d| statuses.iter().any(|s| d["status"] == *s))
        },
    )
    .with_context(|| format!("deployment now: {:?}", coordinator.get_ok(&path).ok()))
}

/// One Server-Sent Event: `(id, event name, data)`.
pub type Sse = (u64, String, Value);

/// Reads a Server-Sent Events response to its end. A non-200 answer comes back as its
/// status with the error body as the only "event".
pub fn read_sse(
    base: &str,
    path: &str,
    token: &str,
    last_event_id: Option<&str>,
) -> Result<(u16, Vec<Sse>)> {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(120)))
        .build()
        .into();
    let mut req = agent
        .get(format!("{base}{path}"))
        .header("Authorization", format!("Bearer {token}"));
    if let Some(id) = last_event_id {
        req = req.header("Last-Event-ID", id);
    }
    let response = req.call()?;
    let status = response.status().as_u16();
    let text = response.into_body().read_to_string()?;
    if status != 200 {
        let body = serde_json::from_str(&text).unwrap_or(Value::String(text));
        return Ok((status, vec![(0, String::new(), body)]));
    }
    let mut events = Vec::new();
    for block in text.split("\n\n") {
        let (mut id, mut event, mut data) = (None, String::new(), String::new());
        for line in block.lines() {
            if let Some(v) = line.strip_prefix("id:") {
                id = v.trim().parse().ok();
            } else if let Some(v) = line.strip_prefix("event:") {
                event = v.trim().to_owned();
            } else if let Some(v) = line.strip_prefix("data:") {
                data.push_str(v.trim_start());
            }
        }
        if let Some(id) = id {
            events.push((
                id,
                event,
                serde_json::from_str(&data).unwrap_or(Value::Null),
            ));
        }
    }
    Ok((status, events))
}

impl Coordinator {
    /// Kills the coordinator (SIGKILL, no drain) and starts it again on the same state.
    pub fn crash_and_restart(&mut self) -> Result<()> {
        self.daemon.signal("KILL")?;
        let mut command = Command::new(crate::bin("ocore"));
        command.arg("server").arg("--config").arg(&self.config_path);
        // Reaped, not merely a zombie: a multi-threaded process's leader shows as a zombie
        // while its other threads still exit holding the store's lock, and the parent can
        // reap it only once they are gone.
        let child = &mut self.daemon.child;
        wait_for("the killed coordinator to exit", crate::DEADLINE, || {
            child.try_wait().ok().flatten()
        })?;
        let fresh =
            Coordinator::spawn_with(command, self.config_path.clone(), self.state_dir.clone())?;
        *self = fresh;
        Ok(())
    }
}

/// The status of the named step of a deployment as JSON shows it.
pub fn step_status<'a>(deployment: &'a Value, name: &str) -> Option<&'a str> {
    deployment["steps"]
        .as_array()?
        .iter()
        .find(|s| s["name"] == name)?["status"]
        .as_str()
}
