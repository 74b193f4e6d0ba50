//! Bad input, by the thousand, through the real interfaces.
//!
//! - The agent's gRPC service, over mutual TLS with the coordinator's certificate, is fed
//!   hostile values (path-like names, shell metacharacters, NUL bytes, huge strings) in
//!   every string field of every request, then values a property-based generator
//!   (proptest) assembles from such pieces, then bytes no client would encode (invalid
//!   UTF-8, garbage, messages over the size limit). Every one must be refused with a
//!   clean gRPC status, or accepted and end cleanly; nothing may appear outside the
//!   agent's directories (canary files), nothing unexpected inside them, and the agent
//!   must keep serving and deploying afterwards.
//! - The coordinator's REST API, driven from its own OpenAPI document by schemathesis
//!   (`tests/fuzz/api.sh`) with every check, keeps its documented contract: no 5xx, only
//!   documented statuses and response bodies, schema-valid requests accepted and
//!   schema-violating ones refused.

use std::cell::Cell;
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use ocore_proto::v1;
use ocore_tests::fixture::{unique, AddonsRepo, Site, SiteOptions};
use ocore_tests::grpc;
use proptest::prelude::*;
use proptest::test_runner::{Config, TestCaseError, TestRunner};
use prost::Message;
use tonic::Code;

/// How long an accepted streaming call may take to end.
const STREAM_TIMEOUT: Duration = Duration::from_secs(120);

/// What a request needs besides the fuzzed value.
struct Base {
    instance: String,
    repo_url: String,
    registry: String,
    next: AtomicUsize,
}

impl Base {
    /// A fresh, valid deployment or snapshot id.
    fn id(&self) -> String {
        format!("fz-{}", self.next.fetch_add(1, Ordering::Relaxed))
    }

    /// A deployment that is valid but fails at its Clone step: a branch that does not exist.
    fn deploy(&self) -> v1::DeployRequest {
        v1::DeployRequest {
            deployment_id: self.id(),
            instance_id: self.instance.clone(),
            repository: Some(v1::Repository {
                url: self.repo_url.clone(),
                addons_subpath: String::new(),
                credentials: None,
                project_id: "fuzz".to_owned(),
            }),
            reference: Some(v1::GitReference {
                branch: "fuzz-no-such-branch".to_owned(),
                ..Default::default()
            }),
            from_seq: 0,
            snapshot_id: String::new(),
        }
    }

    fn rollback(&self) -> v1::RollbackRequest {
        v1::RollbackRequest {
            deployment_id: self.id(),
            instance_id: self.instance.clone(),
            snapshot_id: "fuzz-no-such-snapshot".to_owned(),
            image_ref: format!("{}/ocore/{}:fuzz", self.registry, self.instance),
            commit_sha: String::new(),
            from_seq: 0,
            commit_message: "fuzz \u{1b}[31m\0 message".to_owned(),
            commit_author: "Fuzz <fuzz@example.com>".to_owned(),
        }
    }

    fn snapshot(&self) -> v1::CreateSnapshotRequest {
        v1::CreateSnapshotRequest {
            snapshot_id: self.id(),
            instance_id: self.instance.clone(),
            kind: v1::SnapshotKind::Manual as i32,
            deployment_id: String::new(),
            commit_sha: String::new(),
        }
    }
}

/// One string field of one request: the method, whether it streams, and the encoded
/// request with `value` in that field (everything else valid).
struct Target {
    name: &'static str,
    method: &'static str,
    streaming: bool,
    build: fn(&Base, &str) -> Vec<u8>,
}

impl Target {
    /// Fields any text is valid for, by design (credentials, used in memory only, and a
    /// cancel reason): a few values show that; hundreds would only repeat runs.
    fn free_text(&self) -> bool {
        self.name.contains("credentials") || self.name == "Cancel.reason"
    }
}

fn ssh(key: &str) -> Option<v1::Credentials> {
    Some(v1::Credentials {
        kind: Some(v1::credentials::Kind::SshKey(v1::SshKey {
            private_key_openssh: key.to_owned(),
        })),
        known_host_key: String::new(),
    })
}

macro_rules! target {
    ($name:literal, $method:literal, $streaming:literal, |$b:ident, $v:ident| $body:expr) => {
        Target {
            name: $name,
            method: $method,
            streaming: $streaming,
            build: |$b: &Base, $v: &str| $body.encode_to_vec(),
        }
    };
}

fn targets() -> Vec<Target> {
    vec![
        target!("Deploy.deployment_id", "Deploy", true, |b, v| {
            v1::DeployRequest {
                deployment_id: v.into(),
                ..b.deploy()
            }
        }),
        target!("Deploy.instance_id", "Deploy", true, |b, v| {
            v1::DeployRequest {
                instance_id: v.into(),
                ..b.deploy()
            }
        }),
        target!("Deploy.snapshot_id", "Deploy", true, |b, v| {
            v1::DeployRequest {
                snapshot_id: v.into(),
                ..b.deploy()
            }
        }),
        target!("Deploy.repository.url", "Deploy", true, |b, v| {
            let mut r = b.deploy();
            if let Some(repo) = r.repository.as_mut() {
                repo.url = v.into();
            }
            r
        }),
        target!(
            "Deploy.repository.addons_subpath",
            "Deploy",
            true,
            |b, v| {
                let mut r = b.deploy();
                if let Some(repo) = r.repository.as_mut() {
                    repo.addons_subpath = v.into();
                }
                r
            }
        ),
        target!("Deploy.repository.project_id", "Deploy", true, |b, v| {
            let mut r = b.deploy();
            if let Some(repo) = r.repository.as_mut() {
                repo.project_id = v.into();
            }
            r
        }),
        target!(
            "Deploy.repository.credentials.ssh_key",
            "Deploy",
            true,
            |b, v| {
                let mut r = b.deploy();
                if let Some(repo) = r.repository.as_mut() {
                    repo.credentials = ssh(v);
                }
                r
            }
        ),
        target!(
            "Deploy.repository.credentials.https_token",
            "Deploy",
            true,
            |b, v| {
                let mut r = b.deploy();
                if let Some(repo) = r.repository.as_mut() {
                    repo.credentials = Some(v1::Credentials {
                        kind: Some(v1::credentials::Kind::HttpsToken(v1::HttpsToken {
                            username: v.into(),
                            token: v.into(),
                        })),
                        known_host_key: v.into(),
                    });
                }
                r
            }
        ),
        target!("Deploy.reference.branch", "Deploy", true, |b, v| {
            v1::DeployRequest {
                reference: Some(v1::GitReference {
                    branch: v.into(),
                    ..Default::default()
                }),
                ..b.deploy()
            }
        }),
        target!("Deploy.reference.tag", "Deploy", true, |b, v| {
            v1::DeployRequest {
                reference: Some(v1::GitReference {
                    tag: v.into(),
                    ..Default::default()
                }),
                ..b.deploy()
            }
        }),
        target!("Deploy.reference.commit_sha", "Deploy", true, |b, v| {
            v1::DeployRequest {
                reference: Some(v1::GitReference {
                    commit_sha: v.into(),
                    ..Default::default()
                }),
                ..b.deploy()
            }
        }),
        target!("Attach.deployment_id", "Attach", true, |_b, v| {
            v1::AttachRequest {
                deployment_id: v.into(),
                from_seq: 1,
            }
        }),
        target!("Cancel.deployment_id", "Cancel", false, |_b, v| {
            v1::CancelRequest {
                deployment_id: v.into(),
                reason: "fuzz".into(),
            }
        }),
        target!("Cancel.reason", "Cancel", false, |b, v| v1::CancelRequest {
            deployment_id: b.id(),
            reason: v.into()
        }),
        target!("Rollback.deployment_id", "Rollback", true, |b, v| {
            v1::RollbackRequest {
                deployment_id: v.into(),
                ..b.rollback()
            }
        }),
        target!("Rollback.instance_id", "Rollback", true, |b, v| {
            v1::RollbackRequest {
                instance_id: v.into(),
                ..b.rollback()
            }
        }),
        target!("Rollback.snapshot_id", "Rollback", true, |b, v| {
            v1::RollbackRequest {
                snapshot_id: v.into(),
                ..b.rollback()
            }
        }),
        target!("Rollback.image_ref", "Rollback", true, |b, v| {
            v1::RollbackRequest {
                image_ref: v.into(),
                ..b.rollback()
            }
        }),
        target!("Rollback.image_ref(tag)", "Rollback", true, |b, v| {
            let r = b.rollback();
            v1::RollbackRequest {
                image_ref: format!("{}/ocore/{}:{v}", b.registry, b.instance),
                ..r
            }
        }),
        target!("Rollback.commit_sha", "Rollback", true, |b, v| {
            v1::RollbackRequest {
                commit_sha: v.into(),
                ..b.rollback()
            }
        }),
        target!(
            "GetInstanceStatus.instance_id",
            "GetInstanceStatus",
            false,
            |_b, v| v1::InstanceStatusRequest {
                instance_id: v.into()
            }
        ),
        target!(
            "CreateSnapshot.snapshot_id",
            "CreateSnapshot",
            true,
            |b, v| v1::CreateSnapshotRequest {
                snapshot_id: v.into(),
                ..b.snapshot()
            }
        ),
        target!(
            "CreateSnapshot.instance_id",
            "CreateSnapshot",
            true,
            |b, v| v1::CreateSnapshotRequest {
                instance_id: v.into(),
                ..b.snapshot()
            }
        ),
        target!(
            "CreateSnapshot.deployment_id",
            "CreateSnapshot",
            true,
            |b, v| v1::CreateSnapshotRequest {
                deployment_id: v.into(),
                ..b.snapshot()
            }
        ),
        target!(
            "CreateSnapshot.commit_sha",
            "CreateSnapshot",
            true,
            |b, v| v1::CreateSnapshotRequest {
                commit_sha: v.into(),
                ..b.snapshot()
            }
        ),
        target!(
            "ListSnapshots.instance_id",
            "ListSnapshots",
            false,
            |_b, v| v1::ListSnapshotsRequest {
                instance_id: v.into()
            }
        ),
        target!("PinSnapshot.snapshot_id", "PinSnapshot", false, |b, v| {
            v1::PinSnapshotRequest {
                instance_id: b.instance.clone(),
                snapshot_id: v.into(),
                pinned: true,
            }
        }),
        target!("PinSnapshot.instance_id", "PinSnapshot", false, |b, v| {
            v1::PinSnapshotRequest {
                instance_id: v.into(),
                snapshot_id: b.id(),
                pinned: true,
            }
        }),
        target!(
            "DeleteSnapshot.snapshot_id",
            "DeleteSnapshot",
            false,
            |b, v| v1::DeleteSnapshotRequest {
                instance_id: b.instance.clone(),
                snapshot_id: v.into()
            }
        ),
        target!(
            "EstimateSnapshot.instance_id",
            "EstimateSnapshot",
            false,
            |_b, v| v1::EstimateSnapshotRequest {
                instance_id: v.into()
            }
        ),
        target!(
            "ApplyRetention.instance_id",
            "ApplyRetention",
            false,
            |_b, v| v1::ApplyRetentionRequest {
                instance_id: v.into(),
                policy: Some(v1::RetentionPolicy {
                    keep_last: 5,
                    keep_days: 30
                }),
            }
        ),
        target!(
            "ExportSnapshot.snapshot_id",
            "ExportSnapshot",
            true,
            |b, v| v1::ExportSnapshotRequest {
                instance_id: b.instance.clone(),
                snapshot_id: v.into(),
                format: v1::ExportFormat::TarZst as i32,
            }
        ),
        target!(
            "ExportSnapshot.instance_id",
            "ExportSnapshot",
            true,
            |b, v| v1::ExportSnapshotRequest {
                instance_id: v.into(),
                snapshot_id: b.id(),
                format: v1::ExportFormat::OdooZip as i32,
            }
        ),
        target!(
            "InstallCertificate.certificate_pem",
            "InstallCertificate",
            false,
            |_b, v| v1::InstallCertificateRequest {
                certificate_pem: v.into()
            }
        ),
    ]
}

/// Values an attacker would try first. `canary` is a path under /tmp that must never
/// appear: each value that could run a command or escape a directory aims at it.
fn hostile(canary: &str) -> Vec<String> {
    let c = canary;
    let mut values: Vec<String> = [
        "",
        " ",
        ".",
        "..",
        "../",
        "../../etc",
        "../../../../../../etc/passwd",
        "/etc/passwd",
        "a/../../b",
        "./x",
        "x/",
        "~root",
        "%2e%2e%2f%2e%2e%2fetc",
        "..\\..\\windows",
        "\0",
        "a\0b",
        "main\0",
        "\n",
        "main\nINJECTED: header",
        "\r\n\r\n",
        "-rf",
        "--help",
        "-oProxyCommand=x",
        "*",
        "?",
        "[a-z]",
        "{a,b}",
        "@{-1}",
        "HEAD",
        "refs/heads/main",
        "main.lock",
        "\u{202e}gnp.exe",
        "\u{1F600}",
        "ｍａｉｎ",
        "0000",
        "ffffffffffffffffffffffffffffffffffffffff",
        "ffffffffffffffffffffffffffffffffffffffff0",
        "null",
        "' OR 1=1 --",
        "\"; DROP DATABASE postgres; --",
        "%s%s%s%n",
        "${HOME}",
    ]
    .iter()
    .map(|s| (*s).to_owned())
    .collect();
    values.extend([
        format!("../../../../../../..{c}"),
        format!("..{c}"),
        c.to_owned(),
        format!("$(touch {c})"),
        format!("$(touch${{IFS}}{c})"),
        format!("`touch {c}`"),
        format!("`touch${{IFS}}{c}`"),
        format!("; touch {c}"),
        format!("x;touch${{IFS}}{c}"),
        format!("| touch {c}"),
        format!("&& touch {c}"),
        format!("x&&touch${{IFS}}{c}"),
        format!("--upload-pack=touch${{IFS}}{c}"),
        format!("ext::sh${{IFS}}-c${{IFS}}touch%20{c}"),
        format!("ssh://-oProxyCommand=touch${{IFS}}{c}/x"),
        format!("file://{c}"),
        format!("'$(touch {c})'"),
        format!("\"$(touch {c})\""),
        format!("x\n touch {c}"),
    ]);
    values
}

/// Long and huge values (the message limit is 4 MiB; these stay below it).
fn huge(canary: &str) -> Vec<String> {
    vec![
        "a".repeat(256),
        "a".repeat(65 * 1024),
        format!("{}{canary}", "../".repeat(2000)),
        "$(".repeat(300_000),
    ]
}

/// The hostile values tried on free-text fields.
fn hostile_text(canary: &str) -> Vec<String> {
    let mut values: Vec<String> = ["", "\0", "a\0b", "main\nINJECTED: header", "%s%s%s%n"]
        .iter()
        .map(|s| (*s).to_owned())
        .collect();
    values.extend([
        format!("$(touch {canary})"),
        format!("`touch {canary}`"),
        format!("; touch {canary}"),
    ]);
    values
}

/// Strings assembled from hostile pieces and arbitrary characters.
fn generated(canary: &str) -> impl Strategy<Value = String> {
    let touch = format!("touch${{IFS}}{canary}");
    let piece = prop_oneof![
        4 => "[a-z0-9]{1,4}",
        1 => Just("../".to_owned()),
        1 => Just("..".to_owned()),
        1 => Just("/".to_owned()),
        1 => Just("$(".to_owned()),
        1 => Just(")".to_owned()),
        1 => Just("`".to_owned()),
        1 => Just(";".to_owned()),
        1 => Just("|".to_owned()),
        1 => Just("&".to_owned()),
        1 => Just("\0".to_owned()),
        1 => Just("\n".to_owned()),
        1 => Just("-".to_owned()),
        1 => Just("@{".to_owned()),
        1 => Just("%2e".to_owned()),
        1 => Just(touch),
        1 => Just(canary.to_owned()),
        2 => any::<char>().prop_map(String::from),
    ];
    prop::collection::vec(piece, 0..12).prop_map(|pieces| pieces.concat())
}

/// Codes a hostile request may be refused with.
fn clean_refusal(status: &tonic::Status) -> bool {
    match status.code() {
        Code::InvalidArgument
        | Code::NotFound
        | Code::FailedPrecondition
        | Code::AlreadyExists
        | Code::OutOfRange
        | Code::ResourceExhausted => true,
        // tonic's own answer to bytes that are not a valid message of the method.
        Code::Internal => status.message().contains("decode"),
        _ => false,
    }
}

/// What the agent answered, for the tally.
fn outcome_name(result: &Result<Vec<Vec<u8>>, tonic::Status>) -> String {
    match result {
        Ok(_) => "accepted".to_owned(),
        Err(s) => format!("{:?}", s.code()),
    }
}

/// Fails unless the agent's answer to `value` in `target` is clean.
fn check(
    target: &Target,
    value: &[u8],
    result: &Result<Vec<Vec<u8>>, tonic::Status>,
) -> Result<()> {
    let shown: String = String::from_utf8_lossy(value).chars().take(60).collect();
    match result {
        Err(status) => {
            ensure!(
                clean_refusal(status),
                "{} = {shown:?}: not a clean refusal: {status:?}",
                target.name
            );
            ensure!(
                status.message().len() <= 2048,
                "{} = {shown:?}: the refusal echoes {} bytes",
                target.name,
                status.message().len()
            );
        }
        Ok(messages) if matches!(target.method, "Deploy" | "Rollback" | "Attach") => {
            let last = messages
                .last()
                .map(|m| v1::DeployEvent::decode(m.as_slice()))
                .transpose()?;
            let finished = last.and_then(|e| match e.kind {
                Some(v1::deploy_event::Kind::Finished(f)) => Some(f),
                _ => None,
            });
            ensure!(
                finished.is_some(),
                "{} = {shown:?}: the stream ended without a finished event",
                target.name
            );
        }
        Ok(_) => {}
    }
    Ok(())
}

/// Every name under `dir` is one the agent makes itself: letters, digits, `.`, `-`, `_`.
fn assert_plain_names(dir: &Path) -> Result<usize> {
    let mut count = 0;
    for entry in std::fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))? {
        let entry = entry?;
        let name = entry.file_name();
        let name = name.to_str().context("a file name that is not UTF-8")?;
        ensure!(
            !name.is_empty()
                && name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b)),
            "unexpected name {name:?} in {}",
            dir.display()
        );
        count += 1;
        if entry.file_type()?.is_dir() {
            count += assert_plain_names(&entry.path())?;
        }
    }
    Ok(count)
}

#[test]
fn the_agent_refuses_hostile_requests_cleanly() -> Result<()> {
    let started = Instant::now();
    let dir = tempfile::tempdir()?;
    let site = Site::start(dir.path(), &SiteOptions::default())?;
    let repo = AddonsRepo::init(dir.path())?;
    repo.module("fuzz_mod", "1.0", &["base"], "A = 1\n")?;
    repo.commit("the one good commit")?;
    let canary = format!("/tmp/ocore-fuzz-canary-{}", unique(""));
    let base = Base {
        instance: site.instance.clone(),
        repo_url: repo.url(),
        registry: site.env.registry.clone(),
        next: AtomicUsize::new(1),
    };
    let targets = targets();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let ca = ocore_proto::tls::load_certs(&site.agent.tls_dir().join("ca.crt"))?.remove(0);
    let auth = grpc::coordinator_auth(&site.coordinator.state_dir).map_err(anyhow::Error::msg)?;
    let address = site.agent.address.clone().context("agent address")?;
    let channel = runtime
        .block_on(grpc::channel(&address, &site.agent.name, &ca, auth))
        .map_err(anyhow::Error::msg)?;
    // Answers by kind: how many, and the time they took.
    let tally: std::cell::RefCell<BTreeMap<String, (usize, Duration)>> = Default::default();
    let call = |target: &Target, body: Vec<u8>, value: &[u8]| -> Result<()> {
        let at = Instant::now();
        let result = runtime.block_on(grpc::raw_call(
            channel.clone(),
            target.method,
            body,
            target.streaming,
            STREAM_TIMEOUT,
        ));
        let mut tally = tally.borrow_mut();
        let entry = tally.entry(outcome_name(&result)).or_default();
        entry.0 += 1;
        entry.1 += at.elapsed();
        check(target, value, &result)
    };

    // 1. Every hand-written hostile value in every string field, and huge values in
    // every field of Deploy and one field of each other request.
    let (hand, text, huge) = (hostile(&canary), hostile_text(&canary), huge(&canary));
    let mut hand_cases = 0;
    let mut methods_seen = std::collections::BTreeSet::new();
    for target in &targets {
        let mut values: Vec<&String> = if target.free_text() { &text } else { &hand }
            .iter()
            .collect();
        if methods_seen.insert(target.method) || target.method == "Deploy" {
            values.extend(&huge);
        }
        for value in values {
            call(target, (target.build)(&base, value), value.as_bytes())?;
            hand_cases += 1;
        }
    }

    // 2. Generated values: a random field, a random assembly of hostile pieces.
    let checked: Vec<&Target> = targets.iter().filter(|t| !t.free_text()).collect();
    let generated_cases = Cell::new(0usize);
    let mut runner = TestRunner::new(Config {
        cases: 256,
        failure_persistence: None,
        ..Config::default()
    });
    let strategy = (0..checked.len(), generated(&canary));
    runner
        .run(&strategy, |(i, value)| {
            generated_cases.set(generated_cases.get() + 1);
            let target = checked[i];
            call(target, (target.build)(&base, &value), value.as_bytes())
                .map_err(|e| TestCaseError::fail(format!("{e:#}")))
        })
        .map_err(|e| anyhow::anyhow!("{e}"))?;

    // 3. Bytes no client encodes: invalid UTF-8 in each string field (a placeholder of
    // the same length swapped in the encoded message), garbage, and oversized messages.
    let mut raw_cases = 0;
    let placeholder = "OCOREPLACEHOLDER";
    let invalid: &[u8] = &[
        0xff, 0xfe, 0xc3, 0x28, 0xa0, 0xa1, 0xe2, 0x28, 0xa1, 0xf0, 0x28, 0x8c, 0xbc, 0x80, 0xc0,
        0xaf,
    ];
    for target in &targets {
        let body = (target.build)(&base, placeholder);
        if let Some(at) = body
            .windows(placeholder.len())
            .position(|w| w == placeholder.as_bytes())
        {
            let mut patched = body.clone();
            patched[at..at + invalid.len()].copy_from_slice(invalid);
            call(target, patched, invalid)?;
            raw_cases += 1;
        }
    }
    let mut garbage_runner = TestRunner::new(Config {
        cases: 120,
        failure_persistence: None,
        ..Config::default()
    });
    let raw_count = Cell::new(0usize);
    garbage_runner
        .run(
            &(0..targets.len(), prop::collection::vec(any::<u8>(), 0..512)),
            |(i, bytes)| {
                raw_count.set(raw_count.get() + 1);
                call(&targets[i], bytes.clone(), &bytes)
                    .map_err(|e| TestCaseError::fail(format!("{e:#}")))
            },
        )
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    raw_cases += raw_count.get();
    for method in [
        "Deploy",
        "GetInstanceStatus",
        "CreateSnapshot",
        "InstallCertificate",
    ] {
        let target = targets
            .iter()
            .find(|t| t.method == method)
            .context("target")?;
        let huge = (target.build)(&base, &"x".repeat(5 << 20));
        let result = runtime.block_on(grpc::raw_call(
            channel.clone(),
            method,
            huge,
            target.streaming,
            STREAM_TIMEOUT,
        ));
        tally
            .borrow_mut()
            .entry(outcome_name(&result))
            .or_default()
            .0 += 1;
        match &result {
            Err(s) if matches!(s.code(), Code::OutOfRange | Code::ResourceExhausted) => {}
            other => bail!("{method} with a 5 MiB message: {other:?}"),
        }
        raw_cases += 1;
    }

    // Nothing escaped: no canary, and only the agent's own names in its state directory.
    let escaped: Vec<String> = std::fs::read_dir("/tmp")?
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with(canary.trim_start_matches("/tmp/")))
        .collect();
    ensure!(escaped.is_empty(), "created outside the agent: {escaped:?}");
    let names = assert_plain_names(&site.agent.dir.join("state"))?;
    let work = site.agent.dir.join("state/work");
    ensure!(
        !work.exists() || std::fs::read_dir(&work)?.next().is_none(),
        "work trees left behind in {}",
        work.display()
    );

    // And the agent still serves, and deploys.
    let info = runtime.block_on(async {
        let mut client = ocore_proto::AgentClient::new(channel.clone());
        client.get_info(v1::GetInfoRequest {}).await
    });
    ensure!(info.is_ok(), "GetInfo after the fuzzing: {info:?}");
    let good = v1::DeployRequest {
        reference: Some(v1::GitReference {
            branch: "main".to_owned(),
            ..Default::default()
        }),
        ..base.deploy()
    };
    let events = runtime
        .block_on(async {
            let mut client = ocore_proto::AgentClient::new(channel.clone());
            let stream = client.deploy(good).await?.into_inner();
            grpc::collect(stream, None, STREAM_TIMEOUT)
                .await
                .map_err(tonic::Status::internal)
        })
        .map_err(|s| anyhow::anyhow!("{s:?}"))?;
    let finished = events.last().and_then(|e| match &e.kind {
        Some(v1::deploy_event::Kind::Finished(f)) => Some(f.clone()),
        _ => None,
    });
    ensure!(
        finished
            .as_ref()
            .is_some_and(|f| f.status == v1::DeploymentStatus::Succeeded as i32),
        "a good deployment after the fuzzing: {finished:?}"
    );

    let total = hand_cases + generated_cases.get() + raw_cases;
    eprintln!(
        "agent fuzz: {total} requests ({hand_cases} hand-written, {} generated, {raw_cases} raw), answers {:?}, {names} names checked, in {:?}",
        generated_cases.get(),
        tally.borrow(),
        started.elapsed()
    );
    Ok(())
}

/// The coordinator's REST API, fuzzed from its OpenAPI document by schemathesis
/// (`tests/fuzz/api.sh`, every check) with an admin token, against real data: a project,
/// its environment and instance on a real agent, a finished deployment and a snapshot.
/// No check may fail (no 5xx, no undocumented status or body, no schema-valid request
/// refused, no schema-violating one accepted), and the coordinator must keep serving.
#[test]
fn the_rest_api_keeps_its_documented_contract_under_fuzzing() -> Result<()> {
    let started = Instant::now();
    let dir = tempfile::tempdir()?;
    let site = Site::start(dir.path(), &SiteOptions::default())?;
    let repo = AddonsRepo::init(dir.path())?;
    repo.module("shop_base", "1.0", &["base"], "A = 1\n")?;
    repo.commit("first version")?;
    site.configure_shop(&repo)?;
    let c = &site.coordinator;
    let deployment = site.deploy_main()?;
    let d = ocore_tests::wait_deployment(
        c,
        "shop",
        &deployment,
        &["succeeded", "failed"],
        Duration::from_secs(300),
    )?;
    ensure!(d["status"] == "succeeded", "{d}");
    let snapshot = c.cli_json(&["snapshot", "create", "--environment", "shop-prod", "--wait"])?;
    let snapshot = snapshot["id"].as_str().context("snapshot id")?.to_owned();

    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/api.sh");
    let reports = dir.path().join("fuzz-reports");
    let out = std::process::Command::new("bash")
        .arg(&script)
        .arg(&c.url)
        .arg(&reports)
        .args([
            "projectId=shop".to_owned(),
            "environmentId=shop-prod".to_owned(),
            "instanceId=shop-prod".to_owned(),
            format!("deploymentId={deployment}"),
            format!("snapshotId={snapshot}"),
            format!("name={}", site.agent.name),
            "branch=main".to_owned(),
        ])
        .env("OCORE_FUZZ_TOKEN", &c.admin_token)
        .output()
        .with_context(|| format!("running {}", script.display()))?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let summary = stdout
        .lines()
        .rev()
        .find(|l| l.starts_with("api fuzz: "))
        .with_context(|| format!("no summary from {}:\n{stdout}\n{stderr}", script.display()))?;
    // "api fuzz: N requests, M 5xx, K 2xx"
    let words: Vec<&str> = summary.split_whitespace().collect();
    let number = |i: usize| words.get(i).and_then(|w| w.parse::<u64>().ok());
    let (Some(requests), Some(server_errors), Some(successes)) = (number(2), number(4), number(6))
    else {
        bail!("cannot read {summary:?}");
    };
    let failures: Vec<&str> = stdout.lines().filter(|l| l.starts_with("5xx: ")).collect();
    if server_errors > 0 || !failures.is_empty() {
        // What the coordinator said about it.
        let log = c.daemon.log();
        let context: Vec<&str> = log
            .lines()
            .filter(|l| l.contains("WARN") || l.contains("ERROR") || l.contains(" status=5"))
            .collect();
        bail!(
            "{server_errors} requests got a 5xx:\n{}\ncoordinator warnings and errors:\n{}",
            failures.join("\n"),
            context.join("\n")
        );
    }
    ensure!(
        out.status.success(),
        "schemathesis failed ({}):\n{stdout}\n{stderr}",
        out.status
    );
    ensure!(
        requests >= 1000,
        "only {requests} requests were made: {summary}"
    );
    // The figures, for the record (`cargo test -- --nocapture` shows them).
    let cases: Vec<&str> = stdout
        .lines()
        .filter(|l| l.contains(" generated, "))
        .map(str::trim)
        .collect();
    eprintln!("{summary}; schemathesis test cases: {}", cases.join(" | "));
    // Real ids and valid bodies reached real objects, not only validation and 404s.
    ensure!(
        successes >= 100,
        "only {successes} requests succeeded: {summary}"
    );
    // The coordinator's own request log agrees, and it still answers.
    let logged_5xx = c
        .daemon
        .log()
        .lines()
        .filter(|l| l.contains(" status=5"))
        .count();
    ensure!(
        logged_5xx == 0,
        "the coordinator logged {logged_5xx} 5xx answers"
    );
    c.get_ok("/api/health")?;
    let passes = stderr
        .lines()
        .filter(|l| l.starts_with("api.sh: "))
        .collect::<Vec<_>>()
        .join("; ");
    eprintln!("{summary}, in {:?} ({passes})", started.elapsed());
    Ok(())
}
