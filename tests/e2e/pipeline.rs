//! The deployment pipeline on the real Docker Engine, registry, nginx and PostgreSQL, driven
//! through the agent's gRPC service with the coordinator's identity: blue-green code deploys,
//! module updates in a maintenance window, every failure rule, serialization, cancel,
//! deadlines, re-attaching, and recovery after the agent is killed.

use std::time::Duration;

use anyhow::{Context, Result};
use ocore_proto::v1::{self, deploy_event::Kind};
use ocore_tests::driver::{
    branch, serving, Driver, Outcome, BLUE, COMPLETED, DEPLOY_TIMEOUT, FAILED, GREEN, SKIPPED,
};
use ocore_tests::fixture::{AddonsRepo, Site, SiteOptions};
use ocore_tests::grpc;
use ocore_tests::wait_for;

fn addons_repo(dir: &std::path::Path) -> Result<AddonsRepo> {
    let repo = AddonsRepo::init(dir)?;
    repo.module("mod_a", "1.0", &["base"], "A = 1\n")?;
    repo.module("mod_b", "1.0", &["mod_a"], "B = 1\n")?;
    repo.write("README.md", "shop addons\n")?;
    Ok(repo)
}

#[test]
fn code_and_module_deploys_go_blue_green_and_update_exactly_what_changed() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let site = Site::start(dir.path(), &SiteOptions::default())?;
    let d = Driver::new(&site)?;
    let repo = addons_repo(dir.path())?;
    let v1 = repo.commit("first version")?;

    let (_, first) = d.deploy(&repo, branch("main"))?;
    assert!(first.succeeded(), "{}", first.explain());
    assert_eq!(
        first.step_order,
        [
            "Pre-deploy Snapshot",
            "Clone Repository",
            "Build Image",
            "Push Image",
            "Update Container",
            "Module Update",
            "Health Check"
        ]
    );
    for step in [
        "Clone Repository",
        "Build Image",
        "Push Image",
        "Update Container",
        "Health Check",
    ] {
        assert_eq!(first.step(step), COMPLETED, "{step}: {}", first.explain());
    }
    // The database does not exist before the first start: nothing to snapshot yet, and the
    // deployment creates it, without demo data, before any colour starts.
    assert_eq!(first.step("Pre-deploy Snapshot"), SKIPPED);
    assert!(first.steps["Pre-deploy Snapshot"]
        .1
        .contains("does not exist yet"));
    assert_eq!(
        first.step("Module Update"),
        COMPLETED,
        "{}",
        first.explain()
    );
    let plan = first.plan.clone().context("plan")?;
    assert!(plan.initialize_database, "{plan:?}");
    assert!(!plan.demo_data);
    assert_eq!(plan.language, "en_US");
    assert!(first.steps["Module Update"]
        .1
        .contains("created without demo data"));
    assert!(
        first
            .logs
            .iter()
            .any(|l| l.contains("--init=base --without-demo=all --stop-after-init --no-http")),
        "{}",
        first.explain()
    );
    assert_eq!(
        site.env.psql(
            &site.database,
            "SELECT count(*) FROM ir_module_module WHERE demo"
        )?,
        "0"
    );
    assert_eq!(
        site.env.psql(
            &site.database,
            "SELECT count(*) FROM res_users WHERE login = 'demo'"
        )?,
        "0"
    );
    assert_eq!(first.commit_sha, v1);
    assert_eq!(first.commit_message, "first version");
    assert_eq!(first.commit_author, "Test Author <author@example.com>");
    assert_eq!(first.active_color, BLUE);
    assert!(first
        .image
        .starts_with(&format!("{}/ocore/{}:", site.env.registry, site.instance)));
    assert_eq!(serving(&site)?, (v1.clone(), "blue".to_owned()));
    let status = d.status()?;
    assert_eq!(status.active_color, BLUE);
    assert_eq!(status.deployed_commit_sha, v1);
    // Events are numbered densely from 1.
    assert!(first
        .seqs
        .iter()
        .enumerate()
        .all(|(i, s)| *s == i as u64 + 1));

    // The operator installs both modules through Apps, which records no checksum. They were
    // installed from the serving commit's code, so its checksums stand in: only the changed
    // module updates, in a maintenance window, and the plan says why.
    site.install_modules(&first.image, "mod_b")?;
    repo.write("mod_b/models.py", "B = 2\n")?;
    let v2 = repo.commit("change mod_b")?;
    let (_, second) = d.deploy(&repo, branch("main"))?;
    assert!(second.succeeded(), "{}", second.explain());
    assert_eq!(
        second.step("Pre-deploy Snapshot"),
        COMPLETED,
        "{}",
        second.explain()
    );
    let plan = second.plan.clone().context("plan")?;
    assert_eq!(plan.modules_to_update, ["mod_b"], "{}", second.explain());
    assert!(plan.maintenance_window);
    assert!(!plan.initialize_database);
    let reasons: Vec<(String, String)> = plan
        .modules
        .iter()
        .map(|m| (m.name.clone(), m.reason.clone()))
        .collect();
    assert_eq!(
        reasons,
        [(
            "mod_b".to_owned(),
            "changed_since_serving_commit".to_owned()
        )]
    );
    assert!(
        second
            .logs
            .iter()
            .any(|l| l.contains("recorded the serving commit's checksums of 2 modules")),
        "{}",
        second.explain()
    );
    assert_eq!(
        second.step("Module Update"),
        COMPLETED,
        "{}",
        second.explain()
    );
    assert_eq!(second.active_color, GREEN);
    assert_eq!(site.last_updated_modules()?, ["mod_b"]);
    assert_eq!(serving(&site)?, (v2, "green".to_owned()));
    let stored = site.env.psql(
        &site.database,
        "SELECT value FROM ir_config_parameter WHERE key = 'module_auto_update.installed_checksums'",
    )?;
    assert!(
        stored.contains("mod_a") && stored.contains("mod_b"),
        "{stored}"
    );

    // A static-only change updates nothing and switches with zero downtime.
    let runs_before = site.update_runs()?;
    repo.write("mod_a/static/src/app.js", "console.log('v3');\n")?;
    let v3 = repo.commit("static change")?;
    let (_, third) = d.deploy(&repo, branch("main"))?;
    assert!(third.succeeded(), "{}", third.explain());
    assert_eq!(
        third.plan.as_ref().map(|p| p.modules_to_update.len()),
        Some(0)
    );
    assert_eq!(third.step("Module Update"), SKIPPED);
    assert_eq!(site.update_runs()?, runs_before, "no odoo -u ran");
    assert_eq!(serving(&site)?, (v3, "blue".to_owned()));

    // A Python change in mod_a updates mod_a; Odoo updates its dependant mod_b with it.
    repo.write("mod_a/models.py", "A = 4\n")?;
    let v4 = repo.commit("change mod_a")?;
    repo.git(&["tag", "v4"])?;
    let (_, fourth) = d.deploy(&repo, branch("main"))?;
    assert!(fourth.succeeded(), "{}", fourth.explain());
    assert_eq!(
        fourth.plan.as_ref().map(|p| p.modules_to_update.clone()),
        Some(vec!["mod_a".to_owned()])
    );
    assert_eq!(site.last_updated_modules()?, ["mod_a", "mod_b"]);
    assert_eq!(serving(&site)?, (v4.clone(), "green".to_owned()));
    // The mirror fetched only the new objects (a commit, a tree or two and one blob).
    let fetched = fourth
        .logs
        .iter()
        .find_map(|l| {
            l.split_once("fetched ")
                .and_then(|(_, r)| r.split_whitespace().next())
                .and_then(|n| n.parse::<u64>().ok())
        })
        .context("no fetch line")?;
    assert!(fetched > 0 && fetched < 10, "fetched {fetched} objects");

    // A tag and an abbreviated commit resolve to the same commit; nothing changed since.
    let (_, by_tag) = d.deploy(
        &repo,
        v1::GitReference {
            tag: "v4".into(),
            ..Default::default()
        },
    )?;
    assert!(by_tag.succeeded(), "{}", by_tag.explain());
    assert_eq!(by_tag.commit_sha, v4);
    let (_, by_sha) = d.deploy(
        &repo,
        v1::GitReference {
            commit_sha: v4[..8].to_owned(),
            ..Default::default()
        },
    )?;
    assert!(by_sha.succeeded(), "{}", by_sha.explain());
    assert_eq!(by_sha.commit_sha, v4);
    assert_eq!(by_sha.active_color, GREEN);

    // Only the serving colour's container is left.
    assert_eq!(
        site.containers()?,
        [format!("ocore-{}-green", site.instance)]
    );
    Ok(())
}

#[test]
fn failed_deploys_leave_the_old_version_serving() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let mut site = Site::start(
        dir.path(),
        &SiteOptions {
            health_timeout_secs: 8,
            ..Default::default()
        },
    )?;
    let repo = addons_repo(dir.path())?;
    let good = repo.commit("good version")?;
    let d = Driver::new(&site)?;
    let (_, first) = d.deploy(&repo, branch("main"))?;
    assert!(first.succeeded(), "{}", first.explain());
    site.install_modules(&first.image, "mod_b")?;
    let still_serving = |site: &Site, what: &str, o: &Outcome| -> Result<()> {
        assert!(!o.succeeded(), "{what} succeeded");
        let now = serving(site).with_context(|| format!("{what}: {}", o.explain()))?;
        assert_eq!(
            now,
            (good.clone(), "blue".to_owned()),
            "{what}: {}",
            o.explain()
        );
        let expected = vec![format!("ocore-{}-blue", site.instance)];
        assert_eq!(
            site.containers()?,
            expected,
            "{what}: new container removed"
        );
        assert_eq!(o.active_color, BLUE, "{what}");
        Ok(())
    };

    // Unknown reference: the Clone step names it.
    let (_, unknown) = d.deploy(&repo, branch("no-such-branch"))?;
    assert_eq!(unknown.step("Clone Repository"), FAILED);
    assert!(
        unknown.steps["Clone Repository"]
            .1
            .contains("no-such-branch"),
        "{}",
        unknown.explain()
    );
    still_serving(&site, "unknown branch", &unknown)?;

    // Build fails: the failing build line is shown.
    repo.write("requirements.txt", "nonexistent-package==1.0\n")?;
    repo.commit("bad requirement")?;
    let (_, build) = d.deploy(&repo, branch("main"))?;
    assert_eq!(build.step("Build Image"), FAILED, "{}", build.explain());
    let why = &build.steps["Build Image"].1;
    assert!(
        why.contains("pip install") && why.contains("nonexistent-package"),
        "{why}"
    );
    still_serving(&site, "build failure", &build)?;
    repo.remove("requirements.txt")?;

    // New colour unhealthy: removed, old colour untouched.
    repo.write("mod_a/static/ocore.txt", "x")?;
    repo.write("mod_a/OCORE_FAIL_HEALTH", "")?;
    repo.commit("unhealthy")?;
    let (_, health) = d.deploy(&repo, branch("main"))?;
    assert_eq!(health.step("Health Check"), FAILED, "{}", health.explain());
    assert!(
        health.steps["Health Check"].1.contains("/web/health"),
        "{}",
        health.explain()
    );
    still_serving(&site, "health failure", &health)?;
    repo.remove("mod_a/OCORE_FAIL_HEALTH")?;

    // New colour fails to start: noticed at once, not after the health timeout.
    repo.write("mod_a/OCORE_FAIL_START", "")?;
    repo.commit("does not start")?;
    let (_, start) = d.deploy(&repo, branch("main"))?;
    assert_eq!(start.step("Health Check"), FAILED, "{}", start.explain());
    assert!(
        start.steps["Health Check"]
            .1
            .contains("exited during start-up"),
        "{}",
        start.explain()
    );
    still_serving(&site, "start failure", &start)?;
    repo.remove("mod_a/OCORE_FAIL_START")?;

    // odoo -u fails: the database is put back and the old colour serves again.
    let versions_before = site.env.psql(
        &site.database,
        "SELECT name || ' ' || latest_version FROM ir_module_module ORDER BY name",
    )?;
    repo.write("mod_a/models.py", "A = 'broken'\n")?;
    repo.write("mod_a/OCORE_FAIL_UPDATE", "")?;
    repo.commit("update fails")?;
    let (_, update) = d.deploy(&repo, branch("main"))?;
    assert_eq!(update.step("Module Update"), FAILED, "{}", update.explain());
    assert!(
        update.message.contains("serves again on blue"),
        "{}",
        update.explain()
    );
    still_serving(&site, "update failure", &update)?;
    let versions_after = site.env.psql(
        &site.database,
        "SELECT name || ' ' || latest_version FROM ir_module_module ORDER BY name",
    )?;
    assert_eq!(versions_before, versions_after);
    repo.remove("mod_a/OCORE_FAIL_UPDATE")?;

    // The registry cannot be reached: Push fails, nothing changes.
    let config = std::fs::read_to_string(&site.agent.config_path)?;
    let dead = ocore_tests::fixture::free_port();
    std::fs::write(
        &site.agent.config_path,
        config.replace(&site.env.registry, &format!("127.0.0.1:{dead}")),
    )?;
    restart_agent(&mut site)?;
    let d = Driver::new(&site)?;
    repo.write("mod_a/static/push.txt", "x")?;
    repo.commit("push fails")?;
    let (_, push) = d.deploy(&repo, branch("main"))?;
    assert_eq!(push.step("Push Image"), FAILED, "{}", push.explain());
    still_serving(&site, "push failure", &push)?;
    std::fs::write(&site.agent.config_path, config)?;
    restart_agent(&mut site)?;

    // After all that, a good deploy goes through.
    let d = Driver::new(&site)?;
    let (_, fine) = d.deploy(&repo, branch("main"))?;
    assert!(fine.succeeded(), "{}", fine.explain());
    Ok(())
}

fn restart_agent(site: &mut Site) -> Result<()> {
    if let Some(mut daemon) = site.agent.daemon.take() {
        daemon.terminate()?;
    }
    let address = site.agent.run()?;
    site.coordinator
        .cli_json(&["agent", "set-address", "web1", "--address", &address])?;
    site.coordinator.wait_agent_status("web1", "connected")?;
    Ok(())
}

#[test]
fn deploys_are_serialized_cancellable_bounded_and_reattachable() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let site = Site::start(
        dir.path(),
        &SiteOptions {
            step_timeout_secs: 20,
            ..Default::default()
        },
    )?;
    let d = Driver::new(&site)?;
    let repo = addons_repo(dir.path())?;
    repo.commit("first")?;
    let (_, first) = d.deploy(&repo, branch("main"))?;
    assert!(first.succeeded(), "{}", first.explain());

    // A build slower than the step deadline fails the step.
    repo.write("Dockerfile", "FROM ocore/odoo-test:17.0\nRUN sleep 60\n")?;
    repo.commit("slow build")?;
    let (_, slow) = d.deploy(&repo, branch("main"))?;
    assert_eq!(slow.step("Build Image"), FAILED, "{}", slow.explain());
    assert!(
        slow.steps["Build Image"]
            .1
            .contains("exceeded its deadline"),
        "{}",
        slow.explain()
    );

    // Two deploys of one instance run one after the other.
    repo.write(
        "Dockerfile",
        "FROM ocore/odoo-test:17.0\nCOPY --chown=odoo:odoo . /mnt/extra-addons\nRUN sleep 3\n",
    )?;
    repo.commit("own dockerfile")?;
    let (a, b) = (d.next_id(), d.next_id());
    let (ra, rb) = (
        d.request(&a, &repo, branch("main")),
        d.request(&b, &repo, branch("main")),
    );
    let (ea, eb) = d.runtime.block_on(async {
        let mut ca = d.client().await?;
        let mut cb = d.client().await?;
        let sa = ca
            .deploy(ra)
            .await
            .map_err(|s| anyhow::anyhow!("{s:?}"))?
            .into_inner();
        let sb = cb
            .deploy(rb)
            .await
            .map_err(|s| anyhow::anyhow!("{s:?}"))?
            .into_inner();
        let (ea, eb) = tokio::join!(
            grpc::collect(sa, None, DEPLOY_TIMEOUT),
            grpc::collect(sb, None, DEPLOY_TIMEOUT)
        );
        Ok::<_, anyhow::Error>((
            ea.map_err(anyhow::Error::msg)?,
            eb.map_err(anyhow::Error::msg)?,
        ))
    })?;
    let finished_at = |events: &[v1::DeployEvent]| {
        events
            .iter()
            .find(|e| matches!(e.kind, Some(Kind::Finished(_))))
            .map(|e| e.at)
    };
    let first_running = |events: &[v1::DeployEvent]| {
        events.iter().find(|e| matches!(&e.kind, Some(Kind::Step(s)) if s.status == v1::StepStatus::Running as i32)).map(|e| e.at)
    };
    let (oa, ob) = (Outcome::from(&ea), Outcome::from(&eb));
    assert!(
        oa.succeeded() && ob.succeeded(),
        "{}\n{}",
        oa.explain(),
        ob.explain()
    );
    let (fa, sb) = (
        finished_at(&ea).context("a finished")?,
        first_running(&eb).context("b ran")?,
    );
    assert!(sb >= fa, "b started at {sb} before a finished at {fa}");
    assert!(
        ob.logs
            .iter()
            .any(|l| l.contains("waiting: another deployment")),
        "{}",
        ob.explain()
    );

    // Re-attaching from any sequence number gives the rest of the history, no gaps.
    let tail = d.attach(&b, 5)?;
    assert_eq!(tail.first().map(|e| e.seq), Some(5));
    assert_eq!(tail.len() as u64, eb.len() as u64 - 4);
    assert_eq!(tail.last(), eb.last());

    // Cancel during the build: the deployment ends cancelled, the old version serves.
    let before = serving(&site)?;
    repo.write("Dockerfile", "FROM ocore/odoo-test:17.0\nRUN sleep 15\n")?;
    repo.commit("to cancel")?;
    let c = d.next_id();
    let rc = d.request(&c, &repo, branch("main"));
    let events = d.runtime.block_on(async {
        let mut client = d.client().await?;
        let stream = client.deploy(rc).await.map_err(|s| anyhow::anyhow!("{s:?}"))?.into_inner();
        let collector = tokio::spawn(grpc::collect(stream, None, DEPLOY_TIMEOUT));
        // Cancel once the build is under way.
        let mut watcher = client
            .attach(v1::AttachRequest { deployment_id: c.clone(), from_seq: 1 })
            .await
            .map_err(|s| anyhow::anyhow!("{s:?}"))?
            .into_inner();
        while let Some(e) = watcher.message().await.map_err(|s| anyhow::anyhow!("{s:?}"))? {
            if matches!(&e.kind, Some(Kind::Log(l)) if l.step == "Build Image" && l.line.contains("RUN sleep")) {
                break;
            }
        }
        let answer = client
            .cancel(v1::CancelRequest { deployment_id: c.clone(), reason: "test".into() })
            .await
            .map_err(|s| anyhow::anyhow!("{s:?}"))?
            .into_inner();
        assert!(answer.cancelled);
        collector.await?.map_err(anyhow::Error::msg)
    })?;
    let cancelled = Outcome::from(&events);
    assert_eq!(
        cancelled.status,
        v1::DeploymentStatus::Cancelled as i32,
        "{}",
        cancelled.explain()
    );
    assert_eq!(serving(&site)?, before);
    Ok(())
}

#[test]
fn a_killed_agent_cleans_up_on_restart_and_keeps_the_history() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let mut site = Site::start(dir.path(), &SiteOptions::default())?;
    let repo = addons_repo(dir.path())?;
    let good = repo.commit("good")?;
    let (id, events_before_kill) = {
        let d = Driver::new(&site)?;
        let (_, first) = d.deploy(&repo, branch("main"))?;
        assert!(first.succeeded(), "{}", first.explain());

        repo.write("Dockerfile", "FROM ocore/odoo-test:17.0\nRUN sleep 30\n")?;
        repo.commit("slow")?;
        let id = d.next_id();
        let request = d.request(&id, &repo, branch("main"));
        let seen = d.runtime.block_on(async {
            let mut client = d.client().await?;
            let mut stream = client.deploy(request).await.map_err(|s| anyhow::anyhow!("{s:?}"))?.into_inner();
            let mut seen = Vec::new();
            while let Some(e) = stream.message().await.map_err(|s| anyhow::anyhow!("{s:?}"))? {
                let building = matches!(&e.kind, Some(Kind::Log(l)) if l.step == "Build Image" && l.line.contains("RUN sleep"));
                seen.push(e);
                if building {
                    break;
                }
            }
            Ok::<_, anyhow::Error>(seen)
        })?;
        (id, seen)
    };
    // SIGKILL in the middle of the build.
    let daemon = site.agent.daemon.take().context("daemon")?;
    daemon.signal("KILL")?;
    drop(daemon);
    let address = site.agent.run()?;
    site.coordinator
        .cli_json(&["agent", "set-address", "web1", "--address", &address])?;
    let d = Driver::new(&site)?;

    let history = d.attach(&id, 1)?;
    let outcome = Outcome::from(&history);
    assert_eq!(
        outcome.status,
        v1::DeploymentStatus::Failed as i32,
        "{}",
        outcome.explain()
    );
    assert!(
        outcome.message.contains("interrupted"),
        "{}",
        outcome.message
    );
    assert_eq!(outcome.step("Build Image"), FAILED);
    // Nothing seen before the kill was lost.
    assert_eq!(
        &history[..events_before_kill.len()],
        &events_before_kill[..]
    );
    assert_eq!(serving(&site)?, (good, "blue".to_owned()));
    assert_eq!(
        site.containers()?,
        [format!("ocore-{}-blue", site.instance)]
    );
    wait_for(
        "nginx to keep the blue route",
        Duration::from_secs(5),
        || {
            std::fs::read_to_string(
                site.nginx
                    .conf_dir
                    .join(format!("ocore-{}.conf", site.instance)),
            )
            .ok()
            .filter(|t| t.contains("active colour: blue"))
        },
    )?;

    repo.remove("Dockerfile")?;
    repo.commit("fixed")?;
    let (_, next) = d.deploy(&repo, branch("main"))?;
    assert!(next.succeeded(), "{}", next.explain());
    Ok(())
}

#[test]
fn submodules_are_deployed_and_a_bump_updates_only_their_changed_module() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let site = Site::start(dir.path(), &SiteOptions::default())?;
    let d = Driver::new(&site)?;
    // An OCA-like repository vendored as a submodule under oca/web.
    let oca = AddonsRepo::init(&dir.path().join("oca"))?;
    oca.module("web_x", "1.0", &["base"], "X = 1\n")?;
    oca.module("web_y", "1.0", &["base"], "Y = 1\n")?;
    oca.commit("oca 1")?;
    let repo = addons_repo(dir.path())?;
    repo.git(&[
        "-c",
        "protocol.file.allow=always",
        "submodule",
        "add",
        "-q",
        &oca.url(),
        "oca/web",
    ])?;
    repo.commit("vendor oca/web")?;

    let (_, first) = d.deploy(&repo, branch("main"))?;
    assert!(first.succeeded(), "{}", first.explain());
    assert!(
        first
            .logs
            .iter()
            .any(|l| l.contains("addons path: ., oca/web")),
        "{}",
        first.explain()
    );
    assert!(
        first
            .logs
            .iter()
            .any(|l| l.contains("4 modules: mod_a, mod_b, web_x, web_y")),
        "{}",
        first.explain()
    );
    site.install_modules(&first.image, "mod_b,web_x,web_y")?;
    // Record the checksums once (nothing was recorded at install time).
    repo.write("mod_a/static/touch.txt", "1")?;
    repo.commit("record checksums")?;
    let (_, second) = d.deploy(&repo, branch("main"))?;
    assert!(second.succeeded(), "{}", second.explain());

    // Bump the submodule to a commit changing web_y only.
    oca.write("web_y/models.py", "Y = 2\n")?;
    let bumped = oca.commit("oca 2")?;
    let sub = AddonsRepo {
        dir: repo.dir.join("oca/web"),
    };
    sub.git(&["fetch", "-q", "origin"])?;
    sub.git(&["checkout", "-q", &bumped])?;
    repo.commit("bump oca/web")?;
    let (_, third) = d.deploy(&repo, branch("main"))?;
    assert!(third.succeeded(), "{}", third.explain());
    assert_eq!(
        third.plan.as_ref().map(|p| p.modules_to_update.clone()),
        Some(vec!["web_y".to_owned()])
    );
    assert_eq!(site.last_updated_modules()?, ["web_y"]);

    // A superproject pinning a commit the submodule's repository does not have fails the
    // Clone step with the submodule's path named.
    let missing = "0123456789abcdef0123456789abcdef01234567";
    repo.git(&[
        "update-index",
        "--cacheinfo",
        &format!("160000,{missing},oca/web"),
    ])?;
    repo.git(&["commit", "-qm", "pin a missing commit"])?;
    let (_, broken) = d.deploy(&repo, branch("main"))?;
    assert_eq!(
        broken.step("Clone Repository"),
        FAILED,
        "{}",
        broken.explain()
    );
    let why = &broken.steps["Clone Repository"].1;
    assert!(
        why.contains("submodule oca/web") && why.contains(missing),
        "{why}"
    );
    Ok(())
}
