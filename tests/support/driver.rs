//! Driving deployments through the agent's gRPC service with the coordinator's identity,
//! and what their events add up to.

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::{bail, Result};
use ocore_proto::v1::{self, deploy_event::Kind};

use crate::fixture::{AddonsRepo, Site};
use crate::grpc;

pub const DEPLOY_TIMEOUT: Duration = Duration::from_secs(240);

/// What a deployment's events add up to.
#[derive(Debug, Default)]
pub struct Outcome {
    pub status: i32,
    pub message: String,
    pub active_color: i32,
    pub steps: BTreeMap<String, (i32, String)>,
    pub step_order: Vec<String>,
    pub commit_sha: String,
    pub commit_message: String,
    pub commit_author: String,
    pub plan: Option<v1::DeployPlan>,
    pub image: String,
    pub logs: Vec<String>,
    pub seqs: Vec<u64>,
}

impl Outcome {
    pub fn from(events: &[v1::DeployEvent]) -> Self {
        let mut o = Outcome::default();
        for e in events {
            o.seqs.push(e.seq);
            match &e.kind {
                Some(Kind::Step(s)) => {
                    if !o.step_order.contains(&s.name) {
                        o.step_order.push(s.name.clone());
                    }
                    o.steps
                        .insert(s.name.clone(), (s.status, s.message.clone()));
                }
                Some(Kind::Log(l)) => o.logs.push(format!("[{}] {}", l.step, l.line)),
                Some(Kind::Commit(c)) => {
                    o.commit_sha.clone_from(&c.commit_sha);
                    o.commit_message.clone_from(&c.commit_message);
                    o.commit_author.clone_from(&c.commit_author);
                }
                Some(Kind::Plan(p)) => o.plan = Some(p.clone()),
                Some(Kind::Image(i)) => o.image.clone_from(&i.image_ref),
                Some(Kind::Finished(f)) => {
                    o.status = f.status;
                    o.message.clone_from(&f.message);
                    o.active_color = f.active_color;
                }
                _ => {}
            }
        }
        o
    }

    pub fn step(&self, name: &str) -> i32 {
        self.steps.get(name).map(|s| s.0).unwrap_or(-1)
    }

    pub fn succeeded(&self) -> bool {
        self.status == v1::DeploymentStatus::Succeeded as i32
    }

    pub fn explain(&self) -> String {
        format!(
            "status {} message {:?}\n{}",
            self.status,
            self.message,
            self.logs.join("\n")
        )
    }
}

pub const COMPLETED: i32 = v1::StepStatus::Completed as i32;
pub const FAILED: i32 = v1::StepStatus::Failed as i32;
pub const SKIPPED: i32 = v1::StepStatus::Skipped as i32;
pub const BLUE: i32 = v1::Color::Blue as i32;
pub const GREEN: i32 = v1::Color::Green as i32;

pub struct Driver<'a> {
    pub site: &'a Site,
    pub runtime: tokio::runtime::Runtime,
}

impl<'a> Driver<'a> {
    pub fn new(site: &'a Site) -> Result<Self> {
        Ok(Self {
            site,
            runtime: tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()?,
        })
    }

    /// A fresh deployment id (unique across drivers: a reused id would re-attach).
    pub fn next_id(&self) -> String {
        static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(1);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        format!("{}-d{n}", self.site.instance)
    }

    pub async fn client(&self) -> Result<ocore_proto::AgentClient<tonic::transport::Channel>> {
        self.site.agent_client().await
    }

    pub fn request(
        &self,
        id: &str,
        repo: &AddonsRepo,
        reference: v1::GitReference,
    ) -> v1::DeployRequest {
        v1::DeployRequest {
            deployment_id: id.to_owned(),
            instance_id: self.site.instance.clone(),
            repository: Some(v1::Repository {
                url: repo.url(),
                addons_subpath: String::new(),
                credentials: None,
                project_id: "shop".to_owned(),
            }),
            reference: Some(reference),
            from_seq: 0,
            snapshot_id: format!("snap-{id}"),
        }
    }

    /// Deploys and waits for the end; returns the deployment id and its outcome.
    pub fn deploy(
        &self,
        repo: &AddonsRepo,
        reference: v1::GitReference,
    ) -> Result<(String, Outcome)> {
        let id = self.next_id();
        let request = self.request(&id, repo, reference);
        let events = self.runtime.block_on(async {
            let mut client = self.client().await?;
            let stream = client
                .deploy(request)
                .await
                .map_err(|s| anyhow::anyhow!("{s:?}"))?
                .into_inner();
            grpc::collect(stream, None, DEPLOY_TIMEOUT)
                .await
                .map_err(anyhow::Error::msg)
        })?;
        Ok((id, Outcome::from(&events)))
    }

    pub fn attach(&self, id: &str, from_seq: u64) -> Result<Vec<v1::DeployEvent>> {
        self.runtime.block_on(async {
            let mut client = self.client().await?;
            let stream = client
                .attach(v1::AttachRequest {
                    deployment_id: id.to_owned(),
                    from_seq,
                })
                .await
                .map_err(|s| anyhow::anyhow!("{s:?}"))?
                .into_inner();
            grpc::collect(stream, None, DEPLOY_TIMEOUT)
                .await
                .map_err(anyhow::Error::msg)
        })
    }

    pub fn status(&self) -> Result<v1::InstanceStatus> {
        self.runtime.block_on(async {
            let mut client = self.client().await?;
            Ok(client
                .get_instance_status(v1::InstanceStatusRequest {
                    instance_id: self.site.instance.clone(),
                })
                .await
                .map_err(|s| anyhow::anyhow!("{s:?}"))?
                .into_inner())
        })
    }
}

pub fn branch(name: &str) -> v1::GitReference {
    v1::GitReference {
        branch: name.to_owned(),
        ..Default::default()
    }
}

/// The commit shown by the page the public port serves, and the colour that served it.
pub fn serving(site: &Site) -> Result<(String, String)> {
    let (status, body, color) = site.public_page()?;
    if status != 200 {
        bail!("public port answered {status}: {body}");
    }
    let commit = body
        .lines()
        .find_map(|l| l.trim().strip_prefix("commit "))
        .unwrap_or_default()
        .to_owned();
    Ok((commit, color))
}
