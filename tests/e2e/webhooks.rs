//! Git webhooks end to end, with the providers' documented payloads
//! (`tests/fixtures/webhooks/`) rewritten to real commits of a test repository and signed
//! here: pushes to mapped branches deploy the pushed commit on the real pipeline for
//! GitHub, GitLab and Bitbucket; every ignore and reject case; quick pushes coalescing to
//! the newest commit; redeliver; secret rotation; the rate limit; the delivery log.

use std::cell::Cell;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use ocore_tests::fixture::{AddonsRepo, Site, SiteOptions};
use ocore_tests::{
    configure_project, enrolled_agent, wait_deployment, Coordinator, CoordinatorOptions,
};
use ring::hmac;
use serde_json::{json, Value};

const LONG: Duration = Duration::from_secs(300);
const ENDED: &[&str] = &["succeeded", "failed", "cancelled"];

/// A fixture payload as JSON.
fn fixture(name: &str) -> Result<Value> {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures/webhooks")
        .join(name);
    let text = std::fs::read_to_string(&path).with_context(|| path.display().to_string())?;
    Ok(serde_json::from_str(&text)?)
}

/// `sha256=<hex>`: the HMAC-SHA256 of `body` under `secret`, as GitHub and Bitbucket sign.
fn sign(secret: &str, body: &[u8]) -> String {
    let key = hmac::Key::new(hmac::HMAC_SHA256, secret.as_bytes());
    let tag = hmac::sign(&key, body);
    let hex: String = tag.as_ref().iter().map(|b| format!("{b:02x}")).collect();
    format!("sha256={hex}")
}

/// A commit as a payload describes it; `None` fields keep the fixture's values.
#[derive(Default, Clone)]
struct Pushed<'a> {
    sha: &'a str,
    message: Option<&'a str>,
    author: Option<(&'a str, &'a str)>,
}

fn github_push(branch: &str, c: &Pushed) -> Result<Vec<u8>> {
    let mut v = fixture("github-push.json")?;
    v["ref"] = json!(format!("refs/heads/{branch}"));
    v["after"] = json!(c.sha);
    let set = |commit: &mut Value| {
        commit["id"] = json!(c.sha);
        if let Some(m) = c.message {
            commit["message"] = json!(m);
        }
        if let Some((name, email)) = c.author {
            commit["author"]["name"] = json!(name);
            commit["author"]["email"] = json!(email);
        }
    };
    set(&mut v["head_commit"]);
    set(&mut v["commits"][0]);
    Ok(serde_json::to_vec_pretty(&v)?)
}

fn gitlab_push(fixture_name: &str, git_ref: &str, c: &Pushed) -> Result<Vec<u8>> {
    let mut v = fixture(fixture_name)?;
    v["ref"] = json!(git_ref);
    v["after"] = json!(c.sha);
    v["checkout_sha"] = json!(c.sha);
    if let Some(last) = v["commits"].as_array_mut().and_then(|a| a.last_mut()) {
        last["id"] = json!(c.sha);
        if let Some(m) = c.message {
            last["message"] = json!(m);
        }
        if let Some((name, email)) = c.author {
            last["author"] = json!({"name": name, "email": email});
        }
    }
    Ok(serde_json::to_vec_pretty(&v)?)
}

fn bitbucket_push(branch: &str, c: &Pushed) -> Result<Vec<u8>> {
    let mut v = fixture("bitbucket-push.json")?;
    let new = &mut v["push"]["changes"][0]["new"];
    new["name"] = json!(branch);
    new["target"]["hash"] = json!(c.sha);
    if let Some(m) = c.message {
        new["target"]["message"] = json!(m);
    }
    if let Some((name, email)) = c.author {
        new["target"]["author"]["raw"] = json!(format!("{name} <{email}>"));
    }
    Ok(serde_json::to_vec_pretty(&v)?)
}

/// What the webhook endpoint answered.
#[derive(Debug)]
struct Answer {
    status: u16,
    retry_after: Option<String>,
    body: Value,
}

/// Sends deliveries to one project's webhook as the providers do.
struct Hook<'a> {
    c: &'a Coordinator,
    project: String,
    secret: String,
    /// Deliveries sent that the coordinator records (for the log's total).
    recorded: Cell<u64>,
}

impl<'a> Hook<'a> {
    fn new(c: &'a Coordinator, project: &str, secret: &str) -> Self {
        Self {
            c,
            project: project.to_owned(),
            secret: secret.to_owned(),
            recorded: Cell::new(0),
        }
    }

    fn send(&self, provider: &str, headers: &[(&str, String)], body: &[u8]) -> Result<Answer> {
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(30)))
            .build()
            .into();
        let url = format!("{}/api/webhooks/{provider}/{}", self.c.url, self.project);
        // JSON unless the caller names another Content-Type ("" for none at all).
        let mut req = agent.post(&url);
        if !headers
            .iter()
            .any(|(k, _)| k.eq_ignore_ascii_case("content-type"))
        {
            req = req.header("Content-Type", "application/json");
        }
        for (k, v) in headers.iter().filter(|(_, v)| !v.is_empty()) {
            req = req.header(*k, v.as_str());
        }
        let mut response = req.send(body).with_context(|| format!("POST {url}"))?;
        let status = response.status().as_u16();
        let retry_after = response
            .headers()
            .get("Retry-After")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let text = response.body_mut().read_to_string()?;
        if status != 429 {
            self.recorded.set(self.recorded.get() + 1);
        }
        Ok(Answer {
            status,
            retry_after,
            body: serde_json::from_str(&text).unwrap_or(Value::String(text)),
        })
    }

    fn github_with(
        &self,
        event: &str,
        delivery: &str,
        body: &[u8],
        secret: &str,
    ) -> Result<Answer> {
        self.send(
            "github",
            &[
                ("X-GitHub-Event", event.to_owned()),
                ("X-GitHub-Delivery", delivery.to_owned()),
                ("X-GitHub-Hook-ID", "109948940".to_owned()),
                ("X-Hub-Signature-256", sign(secret, body)),
                ("User-Agent", "GitHub-Hookshot/044aadd".to_owned()),
            ],
            body,
        )
    }

    fn github(&self, event: &str, delivery: &str, body: &[u8]) -> Result<Answer> {
        self.github_with(event, delivery, body, &self.secret)
    }

    fn gitlab_with(&self, event: &str, delivery: &str, body: &[u8], token: &str) -> Result<Answer> {
        self.send(
            "gitlab",
            &[
                ("X-Gitlab-Event", event.to_owned()),
                ("X-Gitlab-Event-UUID", delivery.to_owned()),
                ("X-Gitlab-Instance", "https://gitlab.example.com".to_owned()),
                ("X-Gitlab-Token", token.to_owned()),
                ("User-Agent", "GitLab/17.4.0".to_owned()),
            ],
            body,
        )
    }

    fn gitlab(&self, event: &str, delivery: &str, body: &[u8]) -> Result<Answer> {
        self.gitlab_with(event, delivery, body, &self.secret)
    }

    fn bitbucket_with(&self, delivery: &str, body: &[u8], secret: &str) -> Result<Answer> {
        self.send(
            "bitbucket",
            &[
                ("X-Event-Key", "repo:push".to_owned()),
                ("X-Request-UUID", delivery.to_owned()),
                (
                    "X-Hook-UUID",
                    "{a7e3d9c1-5b2f-4e8a-9c6d-0f1e2d3c4b5a}".to_owned(),
                ),
                ("X-Attempt-Number", "1".to_owned()),
                ("X-Hub-Signature", sign(secret, body)),
                ("User-Agent", "Bitbucket-Webhooks/2.0".to_owned()),
            ],
            body,
        )
    }

    fn bitbucket(&self, delivery: &str, body: &[u8]) -> Result<Answer> {
        self.bitbucket_with(delivery, body, &self.secret)
    }

    /// The whole delivery log, newest first.
    fn log(&self) -> Result<Value> {
        self.c.cli_json(&[
            "webhook",
            "deliveries",
            "--project",
            &self.project,
            "--limit",
            "100",
        ])
    }
}

fn expect(answer: &Answer, status: u16, outcome: &str, reason: &str) -> Result<()> {
    if answer.status != status {
        bail!("expected {status} {outcome}, got {answer:?}");
    }
    let text = if outcome == "rejected" {
        answer.body["error"]["message"].as_str()
    } else {
        if answer.body["outcome"] != outcome {
            bail!("expected outcome {outcome}: {answer:?}");
        }
        answer.body["reason"].as_str()
    };
    if !text.is_some_and(|t| t.contains(reason)) {
        bail!("expected a reason containing {reason:?}: {answer:?}");
    }
    Ok(())
}

fn deployment_id(answer: &Answer) -> Result<String> {
    Ok(answer.body["deploymentId"]
        .as_str()
        .with_context(|| format!("no deploymentId: {answer:?}"))?
        .to_owned())
}

#[test]
fn pushes_of_each_provider_deploy_the_pushed_commit_on_the_real_pipeline() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let site = Site::start(dir.path(), &SiteOptions::default())?;
    let c = &site.coordinator;
    let repo = AddonsRepo::init(dir.path())?;
    repo.module("shop_base", "1.0", &["base"], "A = 1\n")?;
    let v1 = repo.commit("first version")?;
    site.configure_shop(&repo)?;
    let conf = c.cli_json(&["webhook", "reconfigure", "--project", "shop"])?;
    let secret = conf["secret"].as_str().context("secret")?;
    for p in ["github", "gitlab", "bitbucket"] {
        assert_eq!(
            conf["urls"][p],
            json!(format!("{}/api/webhooks/{p}/shop", c.url)),
            "the URL is built from the request's Host without public_url"
        );
    }
    let hook = Hook::new(c, "shop", secret);
    let author = ("Test Author", "author@example.com");

    // One push per provider, each a new commit; each deploys exactly the pushed commit.
    let mut deployed = Vec::new();
    let gh = hook.github(
        "push",
        "8f2a6c3e-1111-11ef-8000-000000000001",
        &github_push(
            "main",
            &Pushed {
                sha: &v1,
                message: Some("first version"),
                author: Some(author),
            },
        )?,
    )?;
    expect(&gh, 202, "deployed", "maps to environment shop-prod")?;
    deployed.push((
        deployment_id(&gh)?,
        v1.clone(),
        "first version",
        "github webhook (Codertocat)",
    ));
    let d = wait_deployment(c, "shop", &deployed[0].0, ENDED, LONG)?;
    assert_eq!(d["status"], "succeeded", "{d}");

    repo.write("shop_base/models.py", "A = 2\n")?;
    let v2 = repo.commit("second version")?;
    let gl = hook.gitlab(
        "Push Hook",
        "13792a34-cac6-4fda-95a8-c58e00a39501",
        &gitlab_push(
            "gitlab-push.json",
            "refs/heads/main",
            &Pushed {
                sha: &v2,
                message: Some("second version"),
                author: Some(author),
            },
        )?,
    )?;
    expect(&gl, 202, "deployed", "queued deployment")?;
    deployed.push((
        deployment_id(&gl)?,
        v2.clone(),
        "second version",
        "gitlab webhook (John Smith)",
    ));
    wait_deployment(c, "shop", &deployed[1].0, ENDED, LONG)?;

    repo.write("shop_base/models.py", "A = 3\n")?;
    let v3 = repo.commit("third version")?;
    let bb = hook.bitbucket(
        "9a0e7c3c-6f6e-4d4b-9b8a-1c2d3e4f5a01",
        &bitbucket_push(
            "main",
            &Pushed {
                sha: &v3,
                message: Some("third version"),
                author: Some(author),
            },
        )?,
    )?;
    expect(&bb, 202, "deployed", "queued deployment")?;
    deployed.push((
        deployment_id(&bb)?,
        v3.clone(),
        "third version",
        "bitbucket webhook (Stephen Connolly)",
    ));

    for (id, sha, message, by) in &deployed {
        let d = wait_deployment(c, "shop", id, ENDED, LONG)?;
        assert_eq!(d["status"], "succeeded", "{d}");
        assert_eq!(d["triggerType"], "webhook");
        assert_eq!(d["branch"], "main");
        assert_eq!(d["commitSha"], json!(sha));
        assert_eq!(d["commitMessage"], json!(message));
        assert_eq!(d["commitAuthor"], "Test Author <author@example.com>");
        assert_eq!(d["requestedBy"], json!(by));
    }

    // Three quick pushes: the newest commit is deployed; an older one still waiting is
    // superseded (it names the newer delivery); every push stays in the log.
    let mut quick = Vec::new();
    for n in 4..=6 {
        repo.write("shop_base/models.py", &format!("A = {n}\n"))?;
        quick.push(repo.commit(&format!("version {n}"))?);
    }
    let mut answers = Vec::new();
    for (i, sha) in quick.iter().enumerate() {
        let delivery = format!("5c1d0e7a-2222-11ef-8000-00000000000{i}");
        let a = hook.github(
            "push",
            &delivery,
            &github_push(
                "main",
                &Pushed {
                    sha,
                    message: Some("quick"),
                    author: Some(author),
                },
            )?,
        )?;
        expect(&a, 202, "deployed", "queued deployment")?;
        answers.push((delivery, deployment_id(&a)?));
    }
    let mut superseded = 0;
    for (i, (_, id)) in answers.iter().enumerate() {
        let d = wait_deployment(c, "shop", id, ENDED, LONG)?;
        if i == answers.len() - 1 {
            assert_eq!(d["status"], "succeeded", "the newest push deploys: {d}");
            assert_eq!(d["commitSha"], json!(quick[i]));
        } else if d["status"] == "cancelled" {
            let reason = d["statusReason"].as_str().unwrap_or_default();
            assert!(reason.contains("superseded"), "{d}");
            assert!(
                answers[i + 1..]
                    .iter()
                    .any(|(delivery, _)| reason.contains(delivery.as_str())),
                "the reason names a newer delivery: {reason}"
            );
            superseded += 1;
        } else {
            assert_eq!(
                d["status"], "succeeded",
                "an older push already running ends: {d}"
            );
        }
    }
    assert!(
        superseded >= 1,
        "one of the quick pushes was still waiting when a newer came"
    );
    let log = hook.log()?;
    for (delivery, id) in &answers {
        let entry = log["deliveries"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|e| e["deliveryId"] == json!(delivery))
            .with_context(|| format!("delivery {delivery} in the log: {log}"))?;
        assert_eq!(entry["outcome"], "deployed");
        assert_eq!(entry["deploymentId"], json!(id));
    }
    assert_eq!(log["total"], json!(hook.recorded.get()));
    let providers: Vec<&str> = log["deliveries"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|e| e["provider"].as_str())
        .collect();
    for p in ["github", "gitlab", "bitbucket"] {
        assert!(providers.contains(&p), "{providers:?}");
    }
    Ok(())
}

/// Finds a deployment of `project` by id.
fn deployment(c: &Coordinator, project: &str, id: &str) -> Result<Value> {
    c.get_ok(&format!("/api/projects/{project}/deployments/{id}"))
}

fn deployment_count(c: &Coordinator, project: &str) -> Result<u64> {
    c.get_ok(&format!("/api/projects/{project}/deployments"))?["total"]
        .as_u64()
        .context("total")
}

#[test]
fn deliveries_are_verified_decided_coalesced_logged_and_bounded() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let options = CoordinatorOptions {
        extra_config: "\n[webhooks]\nmax_body_bytes = 65536\nrate_limit_burst = 30\nrate_limit_per_minute = 1\n"
            .to_owned(),
        ..CoordinatorOptions::default()
    };
    let c = Coordinator::start(dir.path(), &options)?;
    let mut agent = enrolled_agent(&c, dir.path(), "web1")?;
    let repo = AddonsRepo::init(dir.path())?;
    repo.module("shop_base", "1.0", &["base"], "A = 1\n")?;
    let sha1 = repo.commit("first")?;
    repo.write("shop_base/models.py", "A = 2\n")?;
    let sha2 = repo.commit("second")?;
    repo.write("shop_base/models.py", "A = 3\n")?;
    let sha3 = repo.commit("third")?;
    configure_project(&c, "shop", &repo.url(), "web1")?;
    c.cli_json(&["project", "create", "flood", "--repository", &repo.url()])?;
    // With the agent away, queued deployments wait undispatched: coalescing is exact.
    agent.daemon.take().context("daemon")?.terminate()?;
    c.wait_agent_status("web1", "unreachable")?;

    // No webhook yet: an unknown project and a project without a secret look the same.
    let none = Hook::new(&c, "shop", "x").github("ping", "p-0", b"{}")?;
    assert_eq!(none.status, 404, "{none:?}");
    let ghost = Hook::new(&c, "ghost", "x").github("ping", "p-0", b"{}")?;
    assert_eq!(ghost.status, 404);
    assert_eq!(
        ghost.body["error"]["message"]
            .as_str()
            .map(|m| m.replace("ghost", "shop")),
        none.body["error"]["message"].as_str().map(str::to_owned)
    );
    let unknown = Hook::new(&c, "shop", "x").send("gitea", &[], b"{}")?;
    assert_eq!(unknown.status, 404);
    assert!(
        unknown
            .body
            .to_string()
            .contains("github, gitlab or bitbucket"),
        "{unknown:?}"
    );

    let conf = c.cli_json(&["webhook", "reconfigure", "--project", "shop"])?;
    let secret = conf["secret"].as_str().context("secret")?.to_owned();
    assert_eq!(secret.len(), 64, "256 bits as hex");
    let show = c.cli_json(&["webhook", "show", "--project", "shop"])?;
    assert_eq!(show["secretSet"], true);
    assert!(
        !show.to_string().contains(&secret),
        "show never shows the secret"
    );
    assert_eq!(
        show["urls"]["gitlab"],
        json!(format!("{}/api/webhooks/gitlab/shop", c.url))
    );
    let hook = Hook::new(&c, "shop", &secret);

    // A mapped push queues a webhook deployment of the pushed commit, with the
    // payload's message and author (the agent is away, so nothing overwrites them).
    let push1 = github_push(
        "main",
        &Pushed {
            sha: &sha1,
            ..Pushed::default()
        },
    )?;
    // Authentic, but not declared as JSON (GitHub's form-encoded setting, or no type at
    // all): 415 saying what to set, recorded, nothing queued.
    for content_type in ["application/x-www-form-urlencoded", ""] {
        let form = hook.send(
            "github",
            &[
                ("Content-Type", content_type.to_owned()),
                ("X-GitHub-Event", "push".to_owned()),
                (
                    "X-GitHub-Delivery",
                    format!("gh-form-{}", content_type.len()),
                ),
                ("X-Hub-Signature-256", sign(&secret, &push1)),
            ],
            &push1,
        )?;
        assert_eq!(form.status, 415, "{form:?}");
        let message = form.body["error"]["message"].as_str().unwrap_or_default();
        assert!(
            message.contains("must be sent as application/json")
                && message.contains("Content type"),
            "{form:?}"
        );
    }
    let log = hook.log()?;
    assert_eq!(log["deliveries"][0]["outcome"], "rejected", "{log}");
    assert_eq!(
        c.get_ok("/api/projects/shop/deployments")?["total"],
        0,
        "a refused delivery queues nothing"
    );

    let a = hook.github("push", "gh-1", &push1)?;
    expect(&a, 202, "deployed", "maps to environment shop-prod")?;
    let d1 = deployment_id(&a)?;
    let d = deployment(&c, "shop", &d1)?;
    assert_eq!(d["status"], "queued");
    assert_eq!(d["triggerType"], "webhook");
    assert_eq!(d["branch"], "main");
    assert_eq!(d["commitSha"], json!(sha1));
    assert_eq!(d["commitMessage"], "Update the sale order report");
    assert_eq!(
        d["commitAuthor"],
        "Codertocat <21031067+Codertocat@users.noreply.github.com>"
    );
    assert_eq!(d["requestedBy"], "github webhook (Codertocat)");
    assert_eq!(deployment_count(&c, "shop")?, 1);

    // Ignored, each saying why, none deploying.
    expect(
        &hook.github("push", "gh-1", &push1)?,
        200,
        "ignored",
        "duplicate of delivery gh-1",
    )?;
    let deleted = serde_json::to_vec(&fixture("github-delete-branch.json")?)?;
    expect(
        &hook.github("push", "gh-2", &deleted)?,
        200,
        "ignored",
        "was deleted",
    )?;
    let feature = github_push(
        "feature/x",
        &Pushed {
            sha: &sha2,
            ..Pushed::default()
        },
    )?;
    let unmapped = hook.github("push", "gh-3", &feature)?;
    expect(
        &unmapped,
        200,
        "ignored",
        "branch feature/x has no mapping to an environment (mapped: main)",
    )?;
    let issues = serde_json::to_vec(&fixture("github-issues.json")?)?;
    expect(
        &hook.github("issues", "gh-4", &issues)?,
        200,
        "ignored",
        "event issues is not a push",
    )?;
    let issue = serde_json::to_vec(&fixture("gitlab-issue.json")?)?;
    expect(
        &hook.gitlab("Issue Hook", "gl-0", &issue)?,
        200,
        "ignored",
        "not a push",
    )?;
    let ping = serde_json::to_vec(&fixture("github-ping.json")?)?;
    expect(
        &hook.github("ping", "gh-5", &ping)?,
        200,
        "ignored",
        "ping: GitHub reached oCore",
    )?;
    let bb_deleted = serde_json::to_vec(&fixture("bitbucket-branch-deleted.json")?)?;
    expect(
        &hook.bitbucket("bb-0", &bb_deleted)?,
        200,
        "ignored",
        "branch feature/test was deleted",
    )?;
    let v2_tag = gitlab_push(
        "gitlab-tag-push.json",
        "refs/tags/v2.0",
        &Pushed {
            sha: &sha2,
            ..Pushed::default()
        },
    )?;
    expect(
        &hook.gitlab("Tag Push Hook", "gl-t0", &v2_tag)?,
        200,
        "ignored",
        "tag v2.0 has no mapping",
    )?;
    assert_eq!(deployment_count(&c, "shop")?, 1);

    // Rejected: 401 for a bad or missing signature or token, 413 oversized, 400 malformed.
    let bad = hook.github_with("push", "gh-6", &push1, "not-the-secret")?;
    expect(&bad, 401, "rejected", "X-Hub-Signature-256 does not match")?;
    let unsigned = hook.send(
        "github",
        &[
            ("X-GitHub-Event", "push".into()),
            ("X-GitHub-Delivery", "gh-7".into()),
        ],
        &push1,
    )?;
    expect(
        &unsigned,
        401,
        "rejected",
        "missing header X-Hub-Signature-256",
    )?;
    let gl_push = gitlab_push(
        "gitlab-push.json",
        "refs/heads/main",
        &Pushed {
            sha: &sha2,
            ..Pushed::default()
        },
    )?;
    expect(
        &hook.gitlab_with("Push Hook", "gl-1", &gl_push, "wrong-token")?,
        401,
        "rejected",
        "X-Gitlab-Token is not",
    )?;
    let bb_push = bitbucket_push(
        "main",
        &Pushed {
            sha: &sha3,
            ..Pushed::default()
        },
    )?;
    expect(
        &hook.bitbucket_with("bb-1", &bb_push, "wrong")?,
        401,
        "rejected",
        "X-Hub-Signature does not match",
    )?;
    let mut huge = fixture("github-push.json")?;
    huge["padding"] = json!("x".repeat(70_000));
    let huge = serde_json::to_vec(&huge)?;
    expect(
        &hook.github("push", "gh-8", &huge)?,
        413,
        "rejected",
        "larger than 65536 bytes",
    )?;
    expect(
        &hook.github("push", "gh-9", b"{\"ref\": \"refs/heads/main\",")?,
        400,
        "rejected",
        "not a valid GitHub payload",
    )?;
    let bad_name = github_push(
        "bad..name",
        &Pushed {
            sha: &sha1,
            ..Pushed::default()
        },
    )?;
    expect(
        &hook.github("push", "gh-10", &bad_name)?,
        400,
        "rejected",
        "not a valid Git branch name",
    )?;
    assert_eq!(
        deployment_count(&c, "shop")?,
        1,
        "nothing rejected deployed"
    );

    // Quick pushes to main coalesce: each newer push supersedes the unstarted older one,
    // naming the newer delivery; the newest commit is the one left to deploy.
    let a2 = hook.gitlab("Push Hook", "gl-1", &gl_push)?;
    expect(
        &a2,
        202,
        "deployed",
        &format!("supersedes the unstarted deployment(s) {d1}"),
    )?;
    let d2 = deployment_id(&a2)?;
    let old = deployment(&c, "shop", &d1)?;
    assert_eq!(old["status"], "cancelled", "{old}");
    let reason = old["statusReason"].as_str().unwrap_or_default();
    assert!(
        reason.contains("superseded") && reason.contains("gitlab delivery gl-1"),
        "{reason}"
    );
    let a3 = hook.bitbucket("bb-1", &bb_push)?;
    expect(&a3, 202, "deployed", &d2)?;
    let d3 = deployment_id(&a3)?;
    let old = deployment(&c, "shop", &d2)?;
    assert_eq!(old["status"], "cancelled");
    assert!(
        old["statusReason"]
            .as_str()
            .unwrap_or_default()
            .contains("bitbucket delivery bb-1"),
        "{old}"
    );
    let newest = deployment(&c, "shop", &d3)?;
    assert_eq!(newest["status"], "queued");
    assert_eq!(newest["commitSha"], json!(sha3));
    assert_eq!(
        newest["commitAuthor"],
        "Stephen Connolly <stephen.alan.connolly@gmail.com>"
    );
    assert_eq!(deployment_count(&c, "shop")?, 3);

    // A tag push deploys when a mapping names the tag.
    c.cli_json(&[
        "mapping",
        "set",
        "--project",
        "shop",
        "--branch",
        "v1.0.0",
        "--environment",
        "shop-prod",
    ])?;
    let tag = gitlab_push(
        "gitlab-tag-push.json",
        "refs/tags/v1.0.0",
        &Pushed {
            sha: &sha2,
            ..Pushed::default()
        },
    )?;
    let t = hook.gitlab("Tag Push Hook", "gl-t1", &tag)?;
    expect(
        &t,
        202,
        "deployed",
        "tag v1.0.0 maps to environment shop-prod",
    )?;
    let dt = deployment(&c, "shop", &deployment_id(&t)?)?;
    assert_eq!(dt["tag"], "v1.0.0");
    assert_eq!(dt["branch"], Value::Null);
    assert_eq!(dt["commitSha"], json!(sha2));
    assert_eq!(
        deployment(&c, "shop", &d3)?["status"],
        "queued",
        "a tag does not supersede a branch"
    );

    // Redeliver replays the kept request: a new entry naming the original, not a
    // duplicate of it; it supersedes what is still waiting for main.
    let log = hook.log()?;
    let entry = |delivery: &str, outcome: &str| -> Result<Value> {
        log["deliveries"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|e| e["deliveryId"] == delivery && e["outcome"] == outcome)
            .cloned()
            .with_context(|| format!("{outcome} entry of {delivery} in {log}"))
    };
    let original = entry("gh-1", "deployed")?;
    assert_eq!(original["redeliverable"], true);
    let replay = c.cli_json(&[
        "webhook",
        "redeliver",
        "--project",
        "shop",
        "--delivery",
        original["id"].as_str().context("id")?,
    ])?;
    assert_eq!(replay["outcome"], "deployed", "{replay}");
    assert_eq!(replay["deliveries"][0]["redeliveryOf"], original["id"]);
    assert_eq!(replay["deliveries"][0]["deliveryId"], "gh-1");
    let d4 = replay["deploymentId"]
        .as_str()
        .context("deploymentId")?
        .to_owned();
    assert_eq!(deployment(&c, "shop", &d4)?["commitSha"], json!(sha1));
    assert_eq!(deployment(&c, "shop", &d3)?["status"], "cancelled");
    hook.recorded.set(hook.recorded.get() + 1);
    // A delivery refused at its signature has no kept request to replay.
    let refused = entry("gh-6", "rejected")?;
    assert_eq!(refused["redeliverable"], false);
    let out = c.cli(&[
        "webhook",
        "redeliver",
        "--project",
        "shop",
        "--delivery",
        refused["id"].as_str().context("id")?,
    ]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("is not kept"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // Rotation: the old secret stops working at once, the new one works.
    let out = c.cli(&[
        "webhook",
        "reconfigure",
        "--project",
        "shop",
        "--provider",
        "github",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let new_secret = text
        .lines()
        .find_map(|l| l.trim().strip_prefix("secret"))
        .map(str::trim)
        .context("the secret line")?
        .to_owned();
    assert_ne!(new_secret, secret);
    assert!(
        text.contains(&format!("{}/api/webhooks/github/shop", c.url)),
        "{text}"
    );
    assert!(
        !text.contains("/api/webhooks/gitlab/"),
        "only the asked provider: {text}"
    );
    assert!(text.contains("application/json"), "{text}");
    expect(
        &hook.github("ping", "gh-11", &ping)?,
        401,
        "rejected",
        "does not match",
    )?;
    let rotated = Hook::new(&c, "shop", &new_secret);
    expect(
        &rotated.github("ping", "gh-12", &ping)?,
        200,
        "ignored",
        "ping",
    )?;
    hook.recorded
        .set(hook.recorded.get() + rotated.recorded.get());

    // The log: every delivery, newest first, with the promised fields.
    let log = hook.log()?;
    assert_eq!(log["total"], json!(hook.recorded.get()), "{log}");
    let entries = log["deliveries"].as_array().context("deliveries")?;
    let times: Vec<&str> = entries
        .iter()
        .filter_map(|e| e["receivedAt"].as_str())
        .collect();
    assert!(
        times.windows(2).all(|w| w[0] >= w[1]),
        "newest first: {times:?}"
    );
    for e in entries {
        for field in [
            "id",
            "receivedAt",
            "provider",
            "event",
            "deliveryId",
            "branch",
            "tag",
            "commitSha",
            "outcome",
            "reason",
            "deploymentId",
        ] {
            assert!(e.get(field).is_some(), "{field} missing from {e}");
        }
    }
    for outcome in ["deployed", "ignored", "rejected"] {
        assert!(entries.iter().any(|e| e["outcome"] == outcome), "{outcome}");
    }
    assert_eq!(entries[0]["deliveryId"], "gh-12");
    let page = c.get_ok("/api/projects/shop/webhooks/deliveries?limit=2&offset=1")?;
    assert_eq!(page["deliveries"].as_array().map(Vec::len), Some(2));
    assert_eq!(page["deliveries"][0]["id"], entries[1]["id"]);
    let (status, _) = c.api(
        "GET",
        "/api/projects/shop/webhooks/deliveries?limit=0",
        Some(&c.admin_token),
        None,
    )?;
    assert_eq!(status, 400);
    let table = c.cli(&["webhook", "deliveries", "--project", "shop", "--limit", "5"]);
    let table = String::from_utf8_lossy(&table.stdout).into_owned();
    assert!(
        table.contains("OUTCOME") && table.contains("gh-12"),
        "{table}"
    );

    // The flood bound: forged deliveries spend their own bucket and are no longer
    // recorded once it is empty; real deliveries still pass, up to their own limit.
    let flood_conf = c.cli_json(&["webhook", "reconfigure", "--project", "flood"])?;
    let flood = Hook::new(
        &c,
        "flood",
        flood_conf["secret"].as_str().context("secret")?,
    );
    for i in 0..30 {
        let a = flood.github_with("ping", &format!("f-{i}"), &ping, "forged")?;
        assert_eq!(a.status, 401, "{a:?}");
    }
    let limited = flood.github_with("ping", "f-30", &ping, "forged")?;
    assert_eq!(limited.status, 429, "{limited:?}");
    let wait: u64 = limited
        .retry_after
        .as_deref()
        .context("Retry-After")?
        .parse()?;
    assert!((1..=60).contains(&wait), "{wait}");
    for i in 0..30 {
        let a = flood.github("ping", &format!("r-{i}"), &ping)?;
        assert_eq!(
            a.status, 200,
            "real deliveries have their own bucket: {a:?}"
        );
    }
    let limited = flood.github("ping", "r-30", &ping)?;
    expect(&limited, 429, "rejected", "rate limit")?;
    assert!(limited.retry_after.is_some());
    let flood_log = flood.log()?;
    assert_eq!(
        flood_log["total"], 61,
        "30 forged + 30 real + the limited real one"
    );
    assert_eq!(flood_log["deliveries"][0]["outcome"], "rejected");
    assert!(flood_log["deliveries"][0]["reason"]
        .as_str()
        .unwrap_or_default()
        .contains("rate limit"));
    assert_eq!(
        flood_log["deliveries"][0]["redeliverable"], true,
        "a verified delivery is kept"
    );

    // Nothing logged the secrets.
    let coordinator_log = c.daemon.log();
    assert!(!coordinator_log.contains(&secret) && !coordinator_log.contains(&new_secret));
    Ok(())
}
