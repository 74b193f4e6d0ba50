//! The Docker Engine, through bollard. Only this module talks to bollard.
//!
//! Everything oCore creates carries the label `org.ocore.managed=1` plus the instance, so
//! clean-up and garbage collection never touch what oCore did not create.

use std::collections::HashMap;
use std::time::Duration;

use bollard::models::{
    ContainerCreateBody, ContainerUpdateBody, HostConfig, RestartPolicy, RestartPolicyNameEnum,
};
use bollard::query_parameters::{
    BuildImageOptionsBuilder, CreateContainerOptionsBuilder, InspectContainerOptions,
    ListContainersOptionsBuilder, LogsOptionsBuilder, PushImageOptionsBuilder,
    RemoveContainerOptionsBuilder, StopContainerOptionsBuilder,
};
use bollard::Docker;
use futures_util::StreamExt;
use std::io::Read as _;
use tokio_util::sync::CancellationToken;

pub const LABEL_MANAGED: &str = "org.ocore.managed";
pub const LABEL_INSTANCE: &str = "org.ocore.instance";
pub const LABEL_COLOR: &str = "org.ocore.color";
pub const LABEL_DEPLOYMENT: &str = "org.ocore.deployment";
pub const LABEL_COMMIT: &str = "org.ocore.commit";
pub const LABEL_ROLE: &str = "org.ocore.role";
pub const LABEL_ADDONS_PATH: &str = "org.ocore.addons-path";
/// On an image: the command oCore runs Odoo with, a JSON array (default `["odoo"]`).
pub const LABEL_ODOO_COMMAND: &str = "org.ocore.odoo-command";

#[derive(Debug, thiserror::Error)]
pub enum DockerError {
    #[error("cannot reach the Docker Engine: {0}; is dockerd running?")]
    Connect(String),
    #[error("docker: {0}")]
    Api(String),
    /// `output` holds the lines of the failing step that say why (pip's own error), each
    /// once.
    #[error("image build failed at `{step}`: {message}{}", if output.is_empty() { String::new() } else { format!("\n{}", output.join("\n")) })]
    Build {
        step: String,
        message: String,
        output: Vec<String>,
    },
    #[error("pushing {image} failed: {message}")]
    Push { image: String, message: String },
    #[error("{what} did not finish within {timeout:?}")]
    TimedOut { what: String, timeout: Duration },
    #[error("cancelled")]
    Cancelled,
}

impl From<bollard::errors::Error> for DockerError {
    fn from(e: bollard::errors::Error) -> Self {
        DockerError::Api(e.to_string())
    }
}

/// How to run an Odoo container.
#[derive(Debug, Clone)]
pub struct ContainerSpec {
    pub name: String,
    pub image: String,
    /// Replaces the image's entrypoint (oCore runs `odoo` itself, so the official
    /// entrypoint never puts the database password on a command line).
    pub entrypoint: Option<Vec<String>>,
    pub cmd: Vec<String>,
    pub env: Vec<String>,
    /// `host:container[:mode]` bind mounts.
    pub binds: Vec<String>,
    pub labels: HashMap<String, String>,
    /// Restart on failure (serving colours) or never (one-off runs).
    pub restart: bool,
}

/// State of a container as the agent needs it.
#[derive(Debug, Clone)]
pub struct ContainerState {
    pub id: String,
    pub running: bool,
    pub image: String,
    pub labels: HashMap<String, String>,
}

#[derive(Clone)]
pub struct Engine {
    docker: Docker,
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine").finish_non_exhaustive()
    }
}

fn not_found(e: &bollard::errors::Error) -> bool {
    matches!(
        e,
        bollard::errors::Error::DockerResponseServerError {
            status_code: 404,
            ..
        }
    )
}

/// A build failure: the step, the engine's message and the output that led to it.
fn build_error(
    step: String,
    message: String,
    tail: std::collections::VecDeque<String>,
) -> DockerError {
    // The engine's own progress lines say nothing about the failure.
    let lines: Vec<String> = tail
        .into_iter()
        .filter(|l| !l.starts_with("--->") && !l.starts_with("Running in "))
        .collect();
    // pip, apt and most tools start the line that says why with "error:" / "E:".
    let is_error = |l: &String| {
        let lower = l.to_ascii_lowercase();
        lower.starts_with("error:") || lower.starts_with("e: ")
    };
    let chosen: Vec<&String> = if lines.iter().any(is_error) {
        lines.iter().filter(|l| is_error(l)).collect()
    } else {
        lines.iter().rev().take(8).rev().collect()
    };
    let mut output: Vec<String> = Vec::new();
    for line in chosen {
        if !output.contains(line) {
            output.push(line.clone());
        }
    }
    DockerError::Build {
        step,
        message: strip_ansi(message.trim()),
        output,
    }
}

/// Removes terminal escape sequences (the classic builder colours a step's standard error
/// red with `ESC[91m`): step output is read in logs and browsers, not on a terminal.
pub fn strip_ansi(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        if c != '\u{1b}' {
            out.push(c);
            continue;
        }
        match chars.peek() {
            // CSI: parameters and intermediates, then one final byte in @..~.
            Some('[') => {
                chars.next();
                for c in chars.by_ref() {
                    if ('@'..='~').contains(&c) {
                        break;
                    }
                }
            }
            // OSC: up to BEL or ESC \.
            Some(']') => {
                chars.next();
                while let Some(c) = chars.next() {
                    if c == '\u{7}' {
                        break;
                    }
                    if c == '\u{1b}' && chars.peek() == Some(&'\\') {
                        chars.next();
                        break;
                    }
                }
            }
            Some(_) => {
                chars.next();
            }
            None => {}
        }
    }
    out
}

impl Engine {
    pub fn connect() -> Result<Self, DockerError> {
        let docker = Docker::connect_with_local_defaults()
            .map_err(|e| DockerError::Connect(e.to_string()))?;
        Ok(Self { docker })
    }

    pub async fn ping(&self) -> Result<(), DockerError> {
        self.docker
            .ping()
            .await
            .map(|_| ())
            .map_err(|e| DockerError::Connect(e.to_string()))
    }

    /// Builds `tag` from the tar build context in the file `context`, streamed to the
    /// engine in chunks (never held whole in memory), streaming the build output line by
    /// line. Labels are written in the Dockerfile (one instruction), not passed here: the
    /// classic builder turns each label of the API into a build step of its own.
    pub async fn build(
        &self,
        context: &std::path::Path,
        dockerfile: &str,
        tag: &str,
        on_line: &mut (dyn FnMut(&str) + Send),
        cancel: &CancellationToken,
    ) -> Result<(), DockerError> {
        let options = BuildImageOptionsBuilder::new()
            .dockerfile(dockerfile)
            .t(tag)
            .rm(true)
            .forcerm(true)
            .build();
        let file = tokio::fs::File::open(context)
            .await
            .map_err(|e| DockerError::Api(format!("opening {}: {e}", context.display())))?;
        let body = bollard::body_try_stream(tokio_util::io::ReaderStream::with_capacity(
            file,
            256 * 1024,
        ));
        let mut stream = self.docker.build_image(options, None, Some(body));
        let mut step = String::from("start of build");
        // The last lines of output go into the error: they say why a step failed (pip's
        // "Could not find a version that satisfies the requirement …").
        let mut tail: std::collections::VecDeque<String> = std::collections::VecDeque::new();
        loop {
            let item = tokio::select! {
                item = stream.next() => item,
                _ = cancel.cancelled() => return Err(DockerError::Cancelled),
            };
            let Some(item) = item else { break };
            let info = match item {
                Ok(info) => info,
                Err(e) => return Err(build_error(step, e.to_string(), tail)),
            };
            if let Some(text) = info.stream.as_deref() {
                let text = strip_ansi(text);
                for line in text.lines().filter(|l| !l.trim().is_empty()) {
                    if line.starts_with("Step ") {
                        step = line.trim().to_owned();
                        tail.clear();
                    } else {
                        tail.push_back(line.trim().to_owned());
                        if tail.len() > 40 {
                            tail.pop_front();
                        }
                    }
                    on_line(line);
                }
            }
            if let Some(detail) = info.error_detail {
                return Err(build_error(step, detail.message.unwrap_or_default(), tail));
            }
        }
        Ok(())
    }

    /// An image's labels and environment.
    pub async fn image_config(
        &self,
        image: &str,
    ) -> Result<(HashMap<String, String>, Vec<String>), DockerError> {
        let inspect = self.docker.inspect_image(image).await?;
        let config = inspect.config.unwrap_or_default();
        Ok((
            config.labels.unwrap_or_default(),
            config.env.unwrap_or_default(),
        ))
    }

    /// An image's id (`sha256:…`).
    pub async fn image_id(&self, image: &str) -> Result<String, DockerError> {
        let inspect = self.docker.inspect_image(image).await?;
        inspect
            .id
            .ok_or_else(|| DockerError::Api(format!("image {image} has no id")))
    }

    /// Creates (never starts) a container of `image` named `name`, to read files of the
    /// image with [`Engine::read_file`] and [`Engine::path_exists`]; remove it afterwards.
    pub async fn create_probe(
        &self,
        name: &str,
        image: &str,
        labels: &HashMap<String, String>,
    ) -> Result<(), DockerError> {
        let spec = ContainerSpec {
            name: name.to_owned(),
            image: image.to_owned(),
            // Never run: the command only has to be valid for the engine to create it.
            entrypoint: Some(vec!["/ocore-probe-never-started".to_owned()]),
            cmd: Vec::new(),
            env: Vec::new(),
            binds: Vec::new(),
            labels: labels.clone(),
            restart: false,
        };
        self.create(&spec).await.map(|_| ())
    }

    /// Whether `path` exists in the (created) container.
    pub async fn path_exists(&self, container: &str, path: &str) -> Result<bool, DockerError> {
        let options = bollard::query_parameters::ContainerArchiveInfoOptionsBuilder::new()
            .path(path)
            .build();
        match self
            .docker
            .get_container_archive_info(container, Some(options))
            .await
        {
            Ok(_) => Ok(true),
            Err(e) if not_found(&e) => Ok(false),
            Err(e) => Err(e.into()),
        }
    }

    /// One regular file of a (created) container, if it exists (at most `limit` bytes).
    pub async fn read_file(
        &self,
        container: &str,
        path: &str,
        limit: usize,
    ) -> Result<Option<Vec<u8>>, DockerError> {
        let options = bollard::query_parameters::DownloadFromContainerOptionsBuilder::new()
            .path(path)
            .build();
        let mut stream = self
            .docker
            .download_from_container(container, Some(options));
        let mut archive = Vec::new();
        while let Some(chunk) = stream.next().await {
            match chunk {
                Ok(bytes) => {
                    archive.extend_from_slice(&bytes);
                    if archive.len() > limit + 64 * 1024 {
                        return Ok(None);
                    }
                }
                Err(e) if not_found(&e) => return Ok(None),
                Err(e) => return Err(e.into()),
            }
        }
        let mut tar = tar::Archive::new(archive.as_slice());
        let entries = tar
            .entries()
            .map_err(|e| DockerError::Api(format!("reading {path} from the image: {e}")))?;
        for entry in entries {
            let mut entry = entry
                .map_err(|e| DockerError::Api(format!("reading {path} from the image: {e}")))?;
            if entry.header().entry_type().is_file() {
                let mut content = Vec::new();
                std::io::Read::read_to_end(&mut (&mut entry).take(limit as u64), &mut content)
                    .map_err(|e| DockerError::Api(format!("reading {path} from the image: {e}")))?;
                return Ok(Some(content));
            }
        }
        Ok(None)
    }

    /// Pushes `repo:tag` and returns the digest the registry stored.
    pub async fn push(
        &self,
        repo: &str,
        tag: &str,
        on_line: &mut (dyn FnMut(&str) + Send),
        cancel: &CancellationToken,
    ) -> Result<String, DockerError> {
        let image = format!("{repo}:{tag}");
        let options = PushImageOptionsBuilder::new().tag(tag).build();
        let mut stream = self.docker.push_image(repo, Some(options), None);
        let mut last_status = String::new();
        loop {
            let item = tokio::select! {
                item = stream.next() => item,
                _ = cancel.cancelled() => return Err(DockerError::Cancelled),
            };
            let Some(item) = item else { break };
            let info = item.map_err(|e| DockerError::Push {
                image: image.clone(),
                message: e.to_string(),
            })?;
            if let Some(detail) = info.error_detail {
                return Err(DockerError::Push {
                    image,
                    message: detail.message.unwrap_or_default(),
                });
            }
            if let Some(status) = info.status {
                // Progress lines repeat per layer; report each distinct status once.
                if status != last_status {
                    on_line(&status);
                    last_status = status;
                }
            }
        }
        let inspect = self.docker.inspect_image(&image).await?;
        let digest = inspect
            .repo_digests
            .unwrap_or_default()
            .into_iter()
            .find(|d| d.starts_with(&format!("{repo}@")))
            .and_then(|d| d.split_once('@').map(|(_, digest)| digest.to_owned()))
            .ok_or_else(|| DockerError::Push {
                image: image.clone(),
                message: "the registry returned no digest".to_owned(),
            })?;
        Ok(digest)
    }

    /// Whether an image exists locally.
    pub async fn has_image(&self, image: &str) -> Result<bool, DockerError> {
        match self.docker.inspect_image(image).await {
            Ok(_) => Ok(true),
            Err(e) if not_found(&e) => Ok(false),
            Err(e) => Err(e.into()),
        }
    }

    /// A label of an image, if the image exists and carries it.
    pub async fn image_label(&self, image: &str, key: &str) -> Result<Option<String>, DockerError> {
        match self.docker.inspect_image(image).await {
            Ok(inspect) => Ok(inspect
                .config
                .and_then(|c| c.labels)
                .and_then(|mut labels| labels.remove(key))),
            Err(e) if not_found(&e) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    fn create_body(spec: &ContainerSpec) -> ContainerCreateBody {
        ContainerCreateBody {
            image: Some(spec.image.clone()),
            entrypoint: spec.entrypoint.clone(),
            cmd: Some(spec.cmd.clone()),
            env: Some(spec.env.clone()),
            labels: Some(spec.labels.clone()),
            host_config: Some(HostConfig {
                network_mode: Some("host".to_owned()),
                binds: Some(spec.binds.clone()),
                restart_policy: Some(RestartPolicy {
                    name: Some(if spec.restart {
                        RestartPolicyNameEnum::UNLESS_STOPPED
                    } else {
                        RestartPolicyNameEnum::NO
                    }),
                    maximum_retry_count: None,
                }),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    /// Creates a container (not started). An existing container of that name is replaced.
    pub async fn create(&self, spec: &ContainerSpec) -> Result<String, DockerError> {
        self.remove(&spec.name).await?;
        let options = CreateContainerOptionsBuilder::new()
            .name(&spec.name)
            .build();
        let created = self
            .docker
            .create_container(Some(options), Self::create_body(spec))
            .await?;
        Ok(created.id)
    }

    /// Lets Docker restart the container after a crash or reboot (once it proved healthy).
    pub async fn keep_running(&self, name: &str) -> Result<(), DockerError> {
        let body = ContainerUpdateBody {
            restart_policy: Some(RestartPolicy {
                name: Some(RestartPolicyNameEnum::UNLESS_STOPPED),
                maximum_retry_count: None,
            }),
            ..Default::default()
        };
        self.docker.update_container(name, body).await?;
        Ok(())
    }

    /// Starts a container; one already running is fine.
    pub async fn start(&self, name: &str) -> Result<(), DockerError> {
        match self.docker.start_container(name, None).await {
            Ok(())
            | Err(bollard::errors::Error::DockerResponseServerError {
                status_code: 304, ..
            }) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    /// Pulls an image from a registry (the host's local one) if it is not present.
    pub async fn ensure_image(&self, image: &str) -> Result<(), DockerError> {
        if self.has_image(image).await? {
            return Ok(());
        }
        let options = bollard::query_parameters::CreateImageOptionsBuilder::new()
            .from_image(image)
            .build();
        let mut stream = self.docker.create_image(Some(options), None, None);
        while let Some(item) = stream.next().await {
            let info = item.map_err(|e| DockerError::Api(format!("pulling {image}: {e}")))?;
            if let Some(detail) = info.error_detail {
                return Err(DockerError::Api(format!(
                    "pulling {image}: {}",
                    detail.message.unwrap_or_default()
                )));
            }
        }
        Ok(())
    }

    /// Stops a container, giving it `grace` to exit after SIGTERM. Absent is fine.
    pub async fn stop(&self, name: &str, grace: Duration) -> Result<(), DockerError> {
        let secs = i32::try_from(grace.as_secs()).unwrap_or(i32::MAX);
        let options = StopContainerOptionsBuilder::new().t(secs).build();
        match self.docker.stop_container(name, Some(options)).await {
            Ok(()) => Ok(()),
            Err(e) if not_found(&e) => Ok(()),
            // 304: already stopped.
            Err(bollard::errors::Error::DockerResponseServerError {
                status_code: 304, ..
            }) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    /// Removes a container and its anonymous volumes. Absent is fine.
    pub async fn remove(&self, name: &str) -> Result<(), DockerError> {
        let options = RemoveContainerOptionsBuilder::new()
            .force(true)
            .v(true)
            .build();
        match self.docker.remove_container(name, Some(options)).await {
            Ok(()) => Ok(()),
            Err(e) if not_found(&e) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    pub async fn state(&self, name: &str) -> Result<Option<ContainerState>, DockerError> {
        match self
            .docker
            .inspect_container(name, None::<InspectContainerOptions>)
            .await
        {
            Ok(c) => Ok(Some(ContainerState {
                id: c.id.unwrap_or_default(),
                running: c.state.and_then(|s| s.running).unwrap_or(false),
                image: c
                    .config
                    .as_ref()
                    .and_then(|cfg| cfg.image.clone())
                    .unwrap_or_default(),
                labels: c.config.and_then(|cfg| cfg.labels).unwrap_or_default(),
            })),
            Err(e) if not_found(&e) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    /// Names of the containers oCore created for `instance`.
    pub async fn managed_containers(&self, instance: &str) -> Result<Vec<String>, DockerError> {
        let mut filters = HashMap::new();
        filters.insert(
            "label",
            vec![
                format!("{LABEL_MANAGED}=1"),
                format!("{LABEL_INSTANCE}={instance}"),
            ],
        );
        let options = ListContainersOptionsBuilder::new()
            .all(true)
            .filters(&filters)
            .build();
        let list = self.docker.list_containers(Some(options)).await?;
        Ok(list
            .into_iter()
            .filter_map(|c| c.names.and_then(|n| n.into_iter().next()))
            .map(|n| n.trim_start_matches('/').to_owned())
            .collect())
    }

    /// Runs a one-off container to completion, streaming its output; returns its exit code.
    /// The container is removed afterwards whatever happened.
    pub async fn run_once(
        &self,
        spec: &ContainerSpec,
        timeout: Duration,
        on_line: &mut (dyn FnMut(&str) + Send),
        cancel: &CancellationToken,
    ) -> Result<i64, DockerError> {
        self.create(spec).await?;
        let result = self.run_created(spec, timeout, on_line, cancel).await;
        let _ = self.remove(&spec.name).await;
        result
    }

    async fn run_created(
        &self,
        spec: &ContainerSpec,
        timeout: Duration,
        on_line: &mut (dyn FnMut(&str) + Send),
        cancel: &CancellationToken,
    ) -> Result<i64, DockerError> {
        self.start(&spec.name).await?;
        let options = LogsOptionsBuilder::new()
            .follow(true)
            .stdout(true)
            .stderr(true)
            .build();
        let mut logs = self.docker.logs(&spec.name, Some(options));
        let deadline = tokio::time::sleep(timeout);
        tokio::pin!(deadline);
        loop {
            tokio::select! {
                item = logs.next() => match item {
                    Some(Ok(chunk)) => {
                        let bytes = chunk.into_bytes();
                        for line in String::from_utf8_lossy(&bytes).lines() {
                            on_line(line);
                        }
                    }
                    Some(Err(e)) => return Err(e.into()),
                    None => break,
                },
                _ = &mut deadline => {
                    let _ = self.stop(&spec.name, Duration::from_secs(5)).await;
                    return Err(DockerError::TimedOut { what: spec.name.clone(), timeout });
                }
                _ = cancel.cancelled() => {
                    let _ = self.stop(&spec.name, Duration::from_secs(5)).await;
                    return Err(DockerError::Cancelled);
                }
            }
        }
        let mut wait = self.docker.wait_container(&spec.name, None);
        match wait.next().await {
            Some(Ok(status)) => Ok(status.status_code),
            // bollard reports a non-zero exit as an error carrying the code.
            Some(Err(bollard::errors::Error::DockerContainerWaitError { code, .. })) => Ok(code),
            Some(Err(e)) => Err(e.into()),
            None => Err(DockerError::Api(format!(
                "no exit status for {}",
                spec.name
            ))),
        }
    }

    /// The last lines a container logged (for failure messages).
    pub async fn tail_logs(&self, name: &str, lines: usize) -> String {
        let options = LogsOptionsBuilder::new()
            .stdout(true)
            .stderr(true)
            .tail(&lines.to_string())
            .build();
        let mut logs = self.docker.logs(name, Some(options));
        let mut text = String::new();
        while let Some(Ok(chunk)) = logs.next().await {
            text.push_str(&String::from_utf8_lossy(&chunk.into_bytes()));
        }
        text.trim_end().to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escape_sequences_are_removed() {
        assert_eq!(
            strip_ansi("\u{1b}[91merror: externally-managed-environment\n\u{1b}[0m"),
            "error: externally-managed-environment\n"
        );
        assert_eq!(strip_ansi("a\u{1b}]0;title\u{7}b"), "ab");
        assert_eq!(strip_ansi("plain"), "plain");
    }

    #[test]
    fn a_failed_build_names_the_error_once() {
        let tail: std::collections::VecDeque<String> = [
            " ---> Running in 1234",
            "Collecting nonexistent-package==1.0",
            "ERROR: Could not find a version that satisfies the requirement nonexistent-package==1.0 (from versions: none)",
            "ERROR: No matching distribution found for nonexistent-package",
            "ERROR: No matching distribution found for nonexistent-package",
        ]
        .into_iter()
        .map(str::to_owned)
        .collect();
        let e = build_error("Step 3/5 : RUN pip".into(), "returned 1".into(), tail);
        let text = e.to_string();
        assert_eq!(
            text.matches("No matching distribution").count(),
            1,
            "{text}"
        );
        assert!(!text.contains("Collecting"), "{text}");
        let plain: std::collections::VecDeque<String> =
            ["a", "b"].into_iter().map(str::to_owned).collect();
        assert!(build_error("s".into(), "m".into(), plain)
            .to_string()
            .ends_with("m\na\nb"));
    }
}
