//! Git for the pipeline: one bare mirror per project under `<state_dir>/mirrors`, fetched
//! incrementally, references resolved to a full commit, and a commit's tree checked out into
//! a fresh work directory. Only this module talks to libgit2.
//!
//! libgit2 calls block, so callers run these functions on a blocking thread.

use std::path::{Path, PathBuf};

use git2::{FetchOptions, Oid, Repository};

/// Why the Clone Repository step failed. Messages name the reference or remote.
#[derive(Debug, thiserror::Error)]
pub enum CloneError {
    #[error("reference {0:?} not found in the repository (no such branch, tag or commit)")]
    UnknownReference(String),
    #[error("reference {reference:?} is ambiguous: {message}")]
    Ambiguous { reference: String, message: String },
    #[error("invalid reference {0:?}")]
    InvalidReference(String),
    #[error("branch {branch:?} is at {branch_commit}, not at the requested commit {commit}")]
    Mismatch {
        branch: String,
        branch_commit: String,
        commit: String,
    },
    #[error("cannot fetch {remote}: {message}")]
    Fetch { remote: String, message: String },
    #[error("authentication failed for {remote}; check the project's deploy key or token")]
    AuthenticationFailed { remote: String },
    #[error("the SSH host key of {remote} changed (pinned {pinned}, offered {offered}); if the server was re-keyed on purpose, reset the project's pinned host key")]
    HostKeyChanged {
        remote: String,
        pinned: String,
        offered: String,
    },
    #[error("git: {0}")]
    Git(#[from] git2::Error),
    #[error("submodule {path}: commit {commit} not found in {url}")]
    MissingSubmoduleCommit {
        path: String,
        commit: String,
        url: String,
    },
    #[error("submodule {path}: {message}")]
    Submodule { path: String, message: String },
    #[error("cannot prepare {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// What the caller asked to deploy; at least one part is set.
#[derive(Debug, Clone, Default)]
pub struct Reference {
    pub branch: Option<String>,
    pub commit_sha: Option<String>,
    pub tag: Option<String>,
}

impl Reference {
    /// Human text for messages, e.g. `branch main`.
    pub fn describe(&self) -> String {
        let mut parts = Vec::new();
        if let Some(b) = &self.branch {
            parts.push(format!("branch {b}"));
        }
        if let Some(t) = &self.tag {
            parts.push(format!("tag {t}"));
        }
        if let Some(c) = &self.commit_sha {
            parts.push(format!("commit {c}"));
        }
        parts.join(", ")
    }
}

/// Checks a user-supplied reference before it reaches Git.
pub fn validate_reference(reference: &Reference) -> Result<(), CloneError> {
    if reference.branch.is_none() && reference.commit_sha.is_none() && reference.tag.is_none() {
        return Err(CloneError::InvalidReference(
            "one of branch, commitSha or tag is required".to_owned(),
        ));
    }
    for name in [&reference.branch, &reference.tag].into_iter().flatten() {
        let ok = !name.is_empty()
            && name.len() <= 255
            && !name.starts_with(['-', '/'])
            && !name.ends_with(['/', '.'])
            && !name.contains("..")
            && !name.contains("@{")
            && !name.contains("//")
            && !name.ends_with(".lock")
            && name
                .chars()
                .all(|c| !c.is_control() && !" ~^:?*[\\".contains(c));
        if !ok {
            return Err(CloneError::InvalidReference(
                name.chars().take(80).collect(),
            ));
        }
    }
    if let Some(sha) = &reference.commit_sha {
        if !(4..=40).contains(&sha.len()) || !sha.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(CloneError::InvalidReference(sha.chars().take(80).collect()));
        }
    }
    Ok(())
}

/// Whether `url` names a repository absolutely: a URL with a Git scheme, an scp-like
/// `user@host:path`, or an absolute path, without whitespace or control characters. A
/// relative path would resolve against the agent's working directory, which means nothing.
pub fn valid_url(url: &str) -> bool {
    let schemes = ["https://", "http://", "ssh://", "git://", "file://"];
    let scp_like = url
        .split_once(':')
        .is_some_and(|(host, path)| host.contains('@') && !host.contains('/') && !path.is_empty());
    !url.is_empty()
        && url.len() <= 2048
        && !url.chars().any(|c| c.is_whitespace() || c.is_control())
        && !url.starts_with('-')
        && (schemes
            .iter()
            .any(|s| url.starts_with(s) && url.len() > s.len())
            || scp_like
            || url.starts_with('/'))
}

/// The commit a reference resolved to.
#[derive(Debug, Clone)]
pub struct ResolvedCommit {
    pub sha: String,
    pub message: String,
    pub author: String,
}

/// Result of a fetch: how much was transferred (zero objects when nothing changed).
#[derive(Debug, Clone, Default)]
pub struct FetchStats {
    pub received_objects: usize,
    pub received_bytes: usize,
    pub total_objects: usize,
    /// The SSH host key the server presented (`<type> <base64>`), for pinning.
    pub host_key: Option<String>,
}

/// Repository credentials, held in memory only for the duration of a fetch. Never written
/// to disk, to the mirror's configuration, to process arguments or to logs.
#[derive(Clone, Default)]
pub struct GitAuth {
    /// An OpenSSH private key (a project's deploy key).
    pub ssh_private_key: Option<String>,
    /// HTTPS user name and token.
    pub https: Option<(String, String)>,
    /// The host key pinned for this project (`<type> <base64>`); empty before first use.
    pub known_host_key: Option<String>,
}

impl GitAuth {
    /// True when a key or token is held (not only a pinned host key).
    pub fn has_secret(&self) -> bool {
        self.ssh_private_key.is_some() || self.https.is_some()
    }
}

impl std::fmt::Debug for GitAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GitAuth")
            .field(
                "ssh_private_key",
                &self.ssh_private_key.as_ref().map(|_| "<redacted>"),
            )
            .field(
                "https",
                &self.https.as_ref().map(|(u, _)| (u, "<redacted>")),
            )
            .field("known_host_key", &self.known_host_key)
            .finish()
    }
}

/// Callbacks answering the server's authentication and host-key questions from `auth`.
fn callbacks<'a>(
    auth: &'a GitAuth,
    offered_key: &'a std::cell::RefCell<Option<String>>,
    rejected: &'a std::cell::RefCell<Option<(String, String)>>,
) -> git2::RemoteCallbacks<'a> {
    let mut callbacks = git2::RemoteCallbacks::new();
    let mut attempts = 0u32;
    callbacks.credentials(move |_url, username, allowed| {
        // libgit2 asks again after a refusal; one honest attempt per method is enough.
        attempts += 1;
        if attempts > 2 {
            return Err(git2::Error::new(
                git2::ErrorCode::Auth,
                git2::ErrorClass::Net,
                "credentials refused",
            ));
        }
        if allowed.contains(git2::CredentialType::SSH_KEY) {
            if let Some(key) = &auth.ssh_private_key {
                return git2::Cred::ssh_key_from_memory(username.unwrap_or("git"), None, key, None);
            }
        }
        if allowed.contains(git2::CredentialType::USER_PASS_PLAINTEXT) {
            if let Some((user, token)) = &auth.https {
                return git2::Cred::userpass_plaintext(user, token);
            }
        }
        if allowed.contains(git2::CredentialType::USERNAME) {
            return git2::Cred::username(username.unwrap_or("git"));
        }
        Err(git2::Error::new(
            git2::ErrorCode::Auth,
            git2::ErrorClass::Net,
            "no credentials configured for this repository",
        ))
    });
    callbacks.certificate_check(move |cert, _host| {
        let Some(hostkey) = cert.as_hostkey() else {
            // TLS: libgit2 validates the certificate chain itself.
            return Ok(git2::CertificateCheckStatus::CertificatePassthrough);
        };
        let (Some(kind), Some(raw)) = (hostkey.hostkey_type(), hostkey.hostkey()) else {
            return Ok(git2::CertificateCheckStatus::CertificatePassthrough);
        };
        use base64::Engine as _;
        let offered = format!(
            "{} {}",
            kind.name(),
            base64::engine::general_purpose::STANDARD.encode(raw)
        );
        *offered_key.borrow_mut() = Some(offered.clone());
        match auth
            .known_host_key
            .as_deref()
            .map(str::trim)
            .filter(|k| !k.is_empty())
        {
            // Trust on first use: the coordinator pins what was offered now.
            None => Ok(git2::CertificateCheckStatus::CertificateOk),
            Some(pinned) if same_key(pinned, &offered) => {
                Ok(git2::CertificateCheckStatus::CertificateOk)
            }
            Some(pinned) => {
                *rejected.borrow_mut() = Some((pinned.to_owned(), offered));
                Err(git2::Error::from_str("host key mismatch"))
            }
        }
    });
    callbacks
}

/// Compares `<type> <base64>` keys, ignoring a trailing comment.
fn same_key(a: &str, b: &str) -> bool {
    let words = |s: &str| {
        s.split_whitespace()
            .take(2)
            .map(str::to_owned)
            .collect::<Vec<_>>()
    };
    words(a) == words(b)
}

/// Maps a failed fetch to the error users should see; never includes a secret.
fn fetch_error(url: &str, e: &git2::Error, rejected: Option<(String, String)>) -> CloneError {
    let remote = redact_url(url);
    if let Some((pinned, offered)) = rejected {
        return CloneError::HostKeyChanged {
            remote,
            pinned,
            offered,
        };
    }
    let message = e.message().to_ascii_lowercase();
    if e.code() == git2::ErrorCode::Auth
        || message.contains("authentication")
        || message.contains("credentials")
        || message.contains("unauthorized")
        || message.contains("401")
        || message.contains("403")
        || message.contains("permission denied")
    {
        return CloneError::AuthenticationFailed { remote };
    }
    CloneError::Fetch {
        remote,
        message: e.message().to_owned(),
    }
}

/// The repository a local URL (an absolute path or `file://`) names.
fn local_path(url: &str) -> Option<&Path> {
    if let Some(rest) = url.strip_prefix("file://") {
        return Some(Path::new(rest));
    }
    url.starts_with('/').then(|| Path::new(url))
}

/// Opens or creates the bare mirror of `url` at `mirror` and fetches every branch and tag
/// (nothing else: a remote's other refs, such as GitHub's `refs/pull/*`, may point at
/// objects the fetch does not need, or that are missing). A mirror this call created is
/// removed again when the fetch fails, so no empty mirror stays behind.
pub fn fetch_mirror(
    url: &str,
    mirror: &Path,
    auth: &GitAuth,
    on_progress: impl FnMut(&str),
) -> Result<FetchStats, CloneError> {
    let (repo, created) = match Repository::open_bare(mirror) {
        Ok(repo) => (repo, false),
        Err(_) => {
            if mirror.exists() {
                // A mirror that cannot be opened is corrupt (e.g. a crash during creation).
                std::fs::remove_dir_all(mirror).map_err(|source| CloneError::Io {
                    path: mirror.to_owned(),
                    source,
                })?;
            }
            std::fs::create_dir_all(mirror).map_err(|source| CloneError::Io {
                path: mirror.to_owned(),
                source,
            })?;
            (Repository::init_bare(mirror)?, true)
        }
    };
    let fetched = match local_path(url) {
        Some(path) => fetch_local(path, &repo, &[], on_progress),
        None => fetch_remote(url, &repo, auth, on_progress),
    };
    if fetched.is_err() && created {
        drop(repo);
        let _ = std::fs::remove_dir_all(mirror);
    }
    fetched
}

fn fetch_remote(
    url: &str,
    repo: &Repository,
    auth: &GitAuth,
    mut on_progress: impl FnMut(&str),
) -> Result<FetchStats, CloneError> {
    // An anonymous remote: the URL is not written into the mirror's config, so credentials
    // carried in a URL never land on disk.
    let mut remote = repo.remote_anonymous(url)?;
    let mut stats = FetchStats::default();
    let offered_key = std::cell::RefCell::new(None);
    let rejected = std::cell::RefCell::new(None);
    let mut callbacks = callbacks(auth, &offered_key, &rejected);
    let mut last_reported = 0usize;
    callbacks.transfer_progress(|p| {
        stats.received_objects = p.received_objects();
        stats.received_bytes = p.received_bytes();
        stats.total_objects = p.total_objects();
        if p.total_objects() > 0
            && (p.received_objects() == p.total_objects()
                || p.received_objects() >= last_reported + p.total_objects().div_ceil(10))
        {
            last_reported = p.received_objects();
            on_progress(&format!(
                "receiving objects: {}/{} ({} bytes)",
                p.received_objects(),
                p.total_objects(),
                p.received_bytes()
            ));
        }
        true
    });
    let mut options = FetchOptions::new();
    options.remote_callbacks(callbacks);
    // Tags come through their own refspec; automatic tag following would add nothing.
    options.download_tags(git2::AutotagOption::None);
    options.prune(git2::FetchPrune::On);
    let fetched = remote.fetch(
        &["+refs/heads/*:refs/heads/*", "+refs/tags/*:refs/tags/*"],
        Some(&mut options),
        None,
    );
    drop(options);
    fetched.map_err(|e| fetch_error(url, &e, rejected.borrow_mut().take()))?;
    stats.host_key = offered_key.borrow_mut().take();
    Ok(stats)
}

/// Fetches the branches and tags of a repository on this host into the mirror, plus the
/// commits `extra` names.
///
/// libgit2's local transport reads every ref of the source, wanted or not, and fails on
/// one whose object is missing; so a local source is copied here with libgit2's pack
/// builder: the objects reachable from its branches, tags and `extra` and not from what
/// the mirror already has, then the mirror's branches and tags made equal to the source's.
fn fetch_local(
    source: &Path,
    repo: &Repository,
    extra: &[Oid],
    mut on_progress: impl FnMut(&str),
) -> Result<FetchStats, CloneError> {
    let shown = source.display().to_string();
    let src = Repository::open(source).map_err(|e| CloneError::Fetch {
        remote: shown.clone(),
        message: e.message().to_owned(),
    })?;
    let mut wanted: Vec<(String, Oid)> = Vec::new();
    for reference in src.references()? {
        let Ok(reference) = reference else { continue };
        let Some(name) = reference.name().ok().map(str::to_owned) else {
            continue;
        };
        if !(name.starts_with("refs/heads/") || name.starts_with("refs/tags/")) {
            continue;
        }
        // A branch or tag whose object is missing is broken in the source: skipped, as
        // git's upload-pack skips it.
        let Some(oid) = reference.resolve().ok().and_then(|r| r.target()) else {
            on_progress(&format!("warning: {name} is broken in {shown}; skipped"));
            continue;
        };
        if src.find_object(oid, None).is_err() {
            on_progress(&format!("warning: {name} is broken in {shown}; skipped"));
            continue;
        }
        wanted.push((name, oid));
    }
    let mut walk = src.revwalk()?;
    let mut builder = src.packbuilder()?;
    let mut tips = 0;
    for (_, oid) in &wanted {
        let object = src.find_object(*oid, None)?;
        if object.kind() != Some(git2::ObjectType::Commit) {
            // An annotated tag (or a tagged tree or blob): the object itself, then what
            // it points at.
            builder.insert_object(*oid, None)?;
        }
        match object.peel_to_commit() {
            Ok(commit) => {
                walk.push(commit.id())?;
                tips += 1;
            }
            Err(_) => builder.insert_recursive(object.peel(git2::ObjectType::Any)?.id(), None)?,
        }
    }
    for oid in extra {
        if src.find_commit(*oid).is_ok() {
            walk.push(*oid)?;
            tips += 1;
        }
    }
    // What the mirror has already does not travel again.
    for reference in repo.references()? {
        if let Some(oid) = reference.ok().and_then(|r| r.target()) {
            if src.find_commit(oid).is_ok() {
                walk.hide(oid)?;
            }
        }
    }
    if tips > 0 {
        builder.insert_walk(&mut walk)?;
    }
    let objects = builder.object_count();
    let mut bytes = 0usize;
    if objects > 0 {
        on_progress(&format!("copying {objects} objects from {shown}"));
        let odb = repo.odb()?;
        let mut writer = odb.packwriter()?;
        let mut failed = None;
        builder.foreach(|chunk| {
            bytes += chunk.len();
            match std::io::Write::write_all(&mut writer, chunk) {
                Ok(()) => true,
                Err(e) => {
                    failed = Some(e);
                    false
                }
            }
        })?;
        if let Some(e) = failed {
            return Err(CloneError::Fetch {
                remote: shown,
                message: format!("writing the mirror's pack: {e}"),
            });
        }
        writer.commit()?;
    }
    // Branches and tags as the source has them; those it no longer has are pruned.
    let keep: std::collections::HashSet<&str> = wanted.iter().map(|(n, _)| n.as_str()).collect();
    let stale: Vec<String> = repo
        .references()?
        .flatten()
        .filter_map(|r| r.name().ok().map(str::to_owned))
        .filter(|n| {
            (n.starts_with("refs/heads/") || n.starts_with("refs/tags/"))
                && !keep.contains(n.as_str())
        })
        .collect();
    for name in stale {
        repo.find_reference(&name)?.delete()?;
    }
    for (name, oid) in &wanted {
        repo.reference(name, *oid, true, "ocore: fetch")?;
    }
    Ok(FetchStats {
        received_objects: objects,
        received_bytes: bytes,
        total_objects: objects,
        host_key: None,
    })
}

/// Resolves a reference in the mirror. A branch together with a commit must agree; a tag or
/// commit alone resolves directly (a commit may be abbreviated).
pub fn resolve(mirror: &Path, reference: &Reference) -> Result<ResolvedCommit, CloneError> {
    let repo = Repository::open_bare(mirror)?;
    let by_name = |refname: String, shown: &str| -> Result<Oid, CloneError> {
        let r = repo
            .find_reference(&refname)
            .map_err(|_| CloneError::UnknownReference(shown.to_owned()))?;
        Ok(r.peel_to_commit()?.id())
    };
    let oid = match (&reference.commit_sha, &reference.tag, &reference.branch) {
        (Some(sha), _, branch) => {
            let object = repo.revparse_single(sha).map_err(|e| match e.code() {
                git2::ErrorCode::Ambiguous => CloneError::Ambiguous {
                    reference: sha.clone(),
                    message: e.message().to_owned(),
                },
                _ => CloneError::UnknownReference(sha.clone()),
            })?;
            let commit = object
                .peel_to_commit()
                .map_err(|_| CloneError::UnknownReference(sha.clone()))?;
            if let Some(branch) = branch {
                let head = by_name(format!("refs/heads/{branch}"), branch)?;
                // The commit must be on the branch (the branch may have moved on since).
                if head != commit.id() && !repo.graph_descendant_of(head, commit.id())? {
                    return Err(CloneError::Mismatch {
                        branch: branch.clone(),
                        branch_commit: head.to_string(),
                        commit: sha.clone(),
                    });
                }
            }
            commit.id()
        }
        (None, Some(tag), _) => by_name(format!("refs/tags/{tag}"), tag)?,
        (None, None, Some(branch)) => by_name(format!("refs/heads/{branch}"), branch)?,
        (None, None, None) => {
            return Err(CloneError::InvalidReference(
                "one of branch, commitSha or tag is required".to_owned(),
            ))
        }
    };
    let commit = repo.find_commit(oid)?;
    let author = commit.author();
    Ok(ResolvedCommit {
        sha: oid.to_string(),
        message: commit.message().unwrap_or_default().trim().to_owned(),
        author: match (author.name().ok(), author.email().ok()) {
            (Some(n), Some(e)) => format!("{n} <{e}>"),
            (Some(n), None) => n.to_owned(),
            (None, Some(e)) => e.to_owned(),
            (None, None) => String::new(),
        },
    })
}

/// Writes the tree of `sha` into `target`: exact blob contents, executable bits and
/// symlinks, and an empty folder for each submodule (filled by [`checkout_submodules`]).
/// Returns the number of files written.
pub fn checkout(mirror: &Path, sha: &str, target: &Path) -> Result<usize, CloneError> {
    use std::os::unix::fs::PermissionsExt;
    let repo = Repository::open_bare(mirror)?;
    let tree = repo.find_commit(Oid::from_str(sha)?)?.tree()?;
    let io = |path: &Path| {
        let path = path.to_owned();
        move |source| CloneError::Io { path, source }
    };
    std::fs::create_dir_all(target).map_err(io(target))?;
    let mut files = 0usize;
    let mut failure: Option<CloneError> = None;
    let walked = tree.walk(git2::TreeWalkMode::PreOrder, |dir, entry| {
        let name = entry.name().unwrap_or_default();
        // Git never records these; a crafted tree could, to escape the target.
        if name.is_empty() || name == "." || name == ".." || name == ".git" || name.contains('/') {
            return git2::TreeWalkResult::Skip;
        }
        let path = target.join(dir).join(name);
        let result = match entry.kind() {
            Some(git2::ObjectType::Tree) | Some(git2::ObjectType::Commit) => {
                std::fs::create_dir_all(&path).map_err(io(&path))
            }
            Some(git2::ObjectType::Blob) => (|| {
                let blob = repo.find_blob(entry.id())?;
                if entry.filemode() == 0o120000 {
                    let link = String::from_utf8_lossy(blob.content()).into_owned();
                    std::os::unix::fs::symlink(link, &path).map_err(io(&path))?;
                } else {
                    std::fs::write(&path, blob.content()).map_err(io(&path))?;
                    let mode = if entry.filemode() == 0o100755 {
                        0o755
                    } else {
                        0o644
                    };
                    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode))
                        .map_err(io(&path))?;
                }
                files += 1;
                Ok(())
            })(),
            _ => Ok(()),
        };
        match result {
            Ok(()) => git2::TreeWalkResult::Ok,
            Err(e) => {
                failure = Some(e);
                git2::TreeWalkResult::Abort
            }
        }
    });
    if let Some(e) = failure {
        return Err(e);
    }
    walked?;
    Ok(files)
}

/// Submodules checked out, with the objects their mirrors fetched.
#[derive(Debug, Clone, Default)]
pub struct SubmoduleReport {
    pub checked_out: Vec<String>,
    pub fetched_objects: usize,
}

/// Deepest submodule nesting followed (OCA repositories rarely nest at all).
const MAX_SUBMODULE_DEPTH: usize = 4;

/// Checks out, recursively, every submodule the commit at `target` records, each at the
/// commit the superproject pins, through its own incrementally fetched mirror kept in
/// `mirrors_dir`. Relative submodule URLs resolve against `super_url`.
pub fn checkout_submodules(
    mirror: &Path,
    sha: &str,
    super_url: &str,
    target: &Path,
    mirrors_dir: &Path,
    auth: &GitAuth,
    on_progress: &mut dyn FnMut(&str),
) -> Result<SubmoduleReport, CloneError> {
    let mut report = SubmoduleReport::default();
    let walk = Walk {
        mirrors_dir,
        auth,
        project_server: ocore_proto::git_url::server(super_url),
    };
    walk.submodules_of(
        mirror,
        sha,
        super_url,
        target,
        "",
        0,
        on_progress,
        &mut report,
    )?;
    Ok(report)
}

struct Walk<'a> {
    mirrors_dir: &'a Path,
    auth: &'a GitAuth,
    /// The project's server (`host[:port]`): its credentials and pinned host key are
    /// used for submodules on that server only, never handed to another one.
    project_server: Option<String>,
}

impl Walk<'_> {
    #[allow(clippy::too_many_arguments)]
    fn submodules_of(
        &self,
        mirror: &Path,
        sha: &str,
        super_url: &str,
        target: &Path,
        prefix: &str,
        depth: usize,
        on_progress: &mut dyn FnMut(&str),
        report: &mut SubmoduleReport,
    ) -> Result<(), CloneError> {
        let mirrors_dir = self.mirrors_dir;
        let repo = Repository::open_bare(mirror)?;
        let commit = repo.find_commit(Oid::from_str(sha)?)?;
        let tree = commit.tree()?;
        let Some(entry) = tree.get_name(".gitmodules") else {
            return Ok(());
        };
        let blob = repo.find_blob(entry.id())?;
        let urls = parse_gitmodules(&String::from_utf8_lossy(blob.content()));
        // Gitlinks (mode 160000) are the commits the superproject pins.
        let mut links: Vec<(String, Oid)> = Vec::new();
        tree.walk(git2::TreeWalkMode::PreOrder, |dir, e| {
            if e.filemode() == 0o160000 {
                links.push((format!("{dir}{}", e.name().unwrap_or_default()), e.id()));
            }
            git2::TreeWalkResult::Ok
        })?;
        for (path, oid) in links {
            let shown = format!("{prefix}{path}");
            let Some(raw_url) = urls.get(&path) else {
                return Err(CloneError::Submodule {
                    path: shown,
                    message: "recorded in the tree but missing from .gitmodules".to_owned(),
                });
            };
            if depth >= MAX_SUBMODULE_DEPTH {
                return Err(CloneError::Submodule {
                    path: shown,
                    message: format!("nested deeper than {MAX_SUBMODULE_DEPTH} levels"),
                });
            }
            let url = resolve_submodule_url(super_url, raw_url);
            let relative = Path::new(&path);
            if relative.is_absolute()
                || relative
                    .components()
                    .any(|c| c == std::path::Component::ParentDir)
            {
                return Err(CloneError::Submodule {
                    path: shown,
                    message: "path leaves the checkout".to_owned(),
                });
            }
            let sub_mirror = mirrors_dir.join(format!("{}.git", mirror_name(&url)));
            on_progress(&format!("submodule {shown}: fetching {}", redact_url(&url)));
            let anonymous = GitAuth::default();
            let server = ocore_proto::git_url::server(&url);
            let auth = if server == self.project_server {
                self.auth
            } else {
                if server.is_some() && self.auth.has_secret() {
                    on_progress(&format!(
                        "submodule {shown}: {} is not the project's server; fetching it without the project's credentials",
                        server.as_deref().unwrap_or_default()
                    ));
                }
                &anonymous
            };
            let sub_repo_has = |m: &Path| {
                Repository::open_bare(m)
                    .ok()
                    .and_then(|r| r.find_commit(oid).ok().map(|_| ()))
                    .is_some()
            };
            if !sub_repo_has(&sub_mirror) {
                let stats = fetch_mirror(&url, &sub_mirror, auth, |_| {})?;
                report.fetched_objects += stats.received_objects;
                if !sub_repo_has(&sub_mirror) {
                    // Not on any branch or tag: ask for the commit itself (servers that allow
                    // fetching reachable SHA-1s answer).
                    let _ = fetch_commit(&url, &sub_mirror, oid, auth);
                }
                if !sub_repo_has(&sub_mirror) {
                    return Err(CloneError::MissingSubmoduleCommit {
                        path: shown,
                        commit: oid.to_string(),
                        url: redact_url(&url),
                    });
                }
            }
            let dest = target.join(relative);
            let _ = std::fs::remove_dir_all(&dest);
            checkout(&sub_mirror, &oid.to_string(), &dest)?;
            report
                .checked_out
                .push(format!("{shown} @ {}", &oid.to_string()[..12]));
            self.submodules_of(
                &sub_mirror,
                &oid.to_string(),
                &url,
                &dest,
                &format!("{shown}/"),
                depth + 1,
                on_progress,
                report,
            )?;
        }
        Ok(())
    }
}

fn fetch_commit(url: &str, mirror: &Path, oid: Oid, auth: &GitAuth) -> Result<(), git2::Error> {
    let repo = Repository::open_bare(mirror)?;
    if let Some(path) = local_path(url) {
        return fetch_local(path, &repo, &[oid], |_| {})
            .map(|_| ())
            .map_err(|e| git2::Error::from_str(&e.to_string()));
    }
    let mut remote = repo.remote_anonymous(url)?;
    let offered = std::cell::RefCell::new(None);
    let rejected = std::cell::RefCell::new(None);
    let mut options = FetchOptions::new();
    options.remote_callbacks(callbacks(auth, &offered, &rejected));
    remote.fetch(&[&oid.to_string()], Some(&mut options), None)
}

/// `submodule.<name>.path` -> `submodule.<name>.url`, keyed by path.
fn parse_gitmodules(text: &str) -> std::collections::HashMap<String, String> {
    let mut by_name: std::collections::HashMap<String, (Option<String>, Option<String>)> =
        std::collections::HashMap::new();
    let mut current: Option<String> = None;
    for line in text.lines() {
        let line = line.trim();
        if line.starts_with('#') || line.starts_with(';') || line.is_empty() {
            continue;
        }
        if let Some(section) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            current = section
                .strip_prefix("submodule")
                .map(|n| n.trim().trim_matches('"').to_owned());
            continue;
        }
        let (Some(name), Some((key, value))) = (&current, line.split_once('=')) else {
            continue;
        };
        let entry = by_name.entry(name.clone()).or_default();
        let value = value.trim().trim_matches('"').to_owned();
        match key.trim() {
            "path" => entry.0 = Some(value),
            "url" => entry.1 = Some(value),
            _ => {}
        }
    }
    by_name
        .into_values()
        .filter_map(|(path, url)| Some((path?, url?)))
        .collect()
}

/// Resolves `../other.git`-style submodule URLs against the superproject's URL.
fn resolve_submodule_url(super_url: &str, url: &str) -> String {
    if !(url.starts_with("./") || url.starts_with("../")) {
        return url.to_owned();
    }
    let mut base = super_url.trim_end_matches('/').to_owned();
    let mut rest = url;
    loop {
        if let Some(r) = rest.strip_prefix("./") {
            rest = r;
        } else if let Some(r) = rest.strip_prefix("../") {
            rest = r;
            match base.rfind(['/', ':']) {
                // scp-like `host:path`: keep the colon, it separates host and path.
                Some(i) if base.as_bytes()[i] == b':' => base.truncate(i + 1),
                Some(i) => base.truncate(i),
                None => base.clear(),
            }
        } else {
            break;
        }
    }
    let sep = if base.ends_with(':') { "" } else { "/" };
    format!("{base}{sep}{rest}")
}

/// A file-system-safe, stable name for a submodule's mirror.
fn mirror_name(url: &str) -> String {
    let tail: String = redact_url(url)
        .rsplit(['/', ':'])
        .next()
        .unwrap_or("repo")
        .trim_end_matches(".git")
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .take(40)
        .collect();
    let hash = sha1_smol::Sha1::from(url.as_bytes()).digest().to_string();
    format!("{tail}-{}", &hash[..12])
}

/// Removes user info from a URL for messages (`https://user:pw@host/x` -> `https://host/x`).
pub fn redact_url(url: &str) -> String {
    match url.split_once("://") {
        Some((scheme, rest)) => match rest.split_once('@') {
            Some((userinfo, host)) if !userinfo.contains('/') => format!("{scheme}://{host}"),
            _ => url.to_owned(),
        },
        None => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repository_urls_are_absolute() {
        for ok in [
            "https://github.com/acme/shop.git",
            "ssh://git@github.com/acme/shop.git",
            "git@github.com:acme/shop.git",
            "file:///srv/git/shop.git",
            "/srv/git/shop.git",
        ] {
            assert!(valid_url(ok), "{ok}");
        }
        for bad in [
            "",
            ".",
            "..",
            "shop.git",
            "./shop",
            "../../srv/shop",
            "-oProxyCommand=x",
            "--upload-pack=touch",
            "/srv/a b",
            "/srv/a\0b",
            "/srv/a\nb",
            "https://",
            "ext::sh -c touch",
        ] {
            assert!(!valid_url(bad), "{bad:?}");
        }
    }

    fn reference(branch: Option<&str>, sha: Option<&str>, tag: Option<&str>) -> Reference {
        Reference {
            branch: branch.map(str::to_owned),
            commit_sha: sha.map(str::to_owned),
            tag: tag.map(str::to_owned),
        }
    }

    #[test]
    fn references_are_validated() {
        assert!(validate_reference(&reference(Some("main"), None, None)).is_ok());
        assert!(validate_reference(&reference(Some("feature/x-1"), None, None)).is_ok());
        assert!(validate_reference(&reference(None, Some("abcd"), None)).is_ok());
        assert!(validate_reference(&reference(None, None, Some("v1.2.3"))).is_ok());
        for bad in [
            reference(None, None, None),
            reference(Some("-rf"), None, None),
            reference(Some("a..b"), None, None),
            reference(Some("a b"), None, None),
            reference(None, Some("abc"), None),
            reference(None, Some("xyz1"), None),
            reference(None, Some(&"a".repeat(41)), None),
        ] {
            assert!(validate_reference(&bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn submodule_urls_resolve_like_git() {
        assert_eq!(
            resolve_submodule_url("https://github.com/acme/shop.git", "../oca-web.git"),
            "https://github.com/acme/oca-web.git"
        );
        assert_eq!(
            resolve_submodule_url("git@github.com:acme/shop.git", "../../OCA/web.git"),
            "git@github.com:OCA/web.git"
        );
        assert_eq!(
            resolve_submodule_url("/srv/git/shop", "../web"),
            "/srv/git/web"
        );
        assert_eq!(
            resolve_submodule_url("x", "https://h/y.git"),
            "https://h/y.git"
        );
        let parsed = parse_gitmodules(
            "[submodule \"oca/web\"]\n\tpath = oca/web\n\turl = https://github.com/OCA/web.git\n# c\n[submodule \"x\"]\n\tpath = x\n",
        );
        assert_eq!(
            parsed.get("oca/web").map(String::as_str),
            Some("https://github.com/OCA/web.git")
        );
        assert_eq!(parsed.len(), 1, "entries without url are ignored");
        assert!(mirror_name("https://github.com/OCA/web.git").starts_with("web-"));
        assert_ne!(
            mirror_name("https://a/web.git"),
            mirror_name("https://b/web.git")
        );
    }

    #[test]
    fn credentials_never_show_and_errors_name_only_the_remote() {
        let auth = GitAuth {
            ssh_private_key: Some("-----BEGIN OPENSSH PRIVATE KEY----- s3cret".into()),
            https: Some(("ci".into(), "tok3n".into())),
            known_host_key: None,
        };
        let shown = format!("{auth:?}");
        assert!(
            !shown.contains("s3cret") && !shown.contains("tok3n"),
            "{shown}"
        );
        let e = git2::Error::new(
            git2::ErrorCode::Auth,
            git2::ErrorClass::Http,
            "too many redirects or authentication replays",
        );
        let err = fetch_error("https://ci:tok3n@git.example/shop.git", &e, None);
        assert_eq!(
            err.to_string(),
            "authentication failed for https://git.example/shop.git; check the project's deploy key or token"
        );
        let err = fetch_error(
            "ssh://git@h/x.git",
            &git2::Error::from_str("host key mismatch"),
            Some(("ssh-ed25519 AAAA".into(), "ssh-ed25519 BBBB".into())),
        );
        assert!(
            err.to_string()
                .contains("host key of ssh://h/x.git changed"),
            "{err}"
        );
        assert!(same_key("ssh-ed25519 AAAA comment", "ssh-ed25519 AAAA"));
        assert!(!same_key("ssh-ed25519 AAAA", "ssh-rsa AAAA"));
    }

    #[test]
    fn relative_submodules_are_on_the_project_server() {
        let project = "ssh://git@git.example:2222/acme/shop.git";
        let relative = resolve_submodule_url(project, "../tools.git");
        assert_eq!(
            ocore_proto::git_url::server(&relative),
            ocore_proto::git_url::server(project)
        );
    }

    #[test]
    fn urls_are_redacted() {
        assert_eq!(
            redact_url("https://u:secret@git.example/x.git"),
            "https://git.example/x.git"
        );
        assert_eq!(redact_url("ssh://git@host/x.git"), "ssh://host/x.git");
        assert_eq!(redact_url("/srv/repo.git"), "/srv/repo.git");
    }

    fn git(dir: &Path, args: &[&str]) {
        let ok = std::process::Command::new("git")
            .args(args)
            .current_dir(dir)
            .env("GIT_AUTHOR_NAME", "Ada")
            .env("GIT_AUTHOR_EMAIL", "ada@example.com")
            .env("GIT_COMMITTER_NAME", "Ada")
            .env("GIT_COMMITTER_EMAIL", "ada@example.com")
            .status()
            .map(|s| s.success())
            .unwrap_or(false);
        assert!(ok, "git {args:?}");
    }

    #[test]
    fn mirror_fetches_incrementally_and_resolves_every_kind_of_reference(
    ) -> Result<(), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        let src = dir.path().join("src");
        std::fs::create_dir(&src)?;
        git(&src, &["init", "-q", "-b", "main"]);
        std::fs::write(src.join("a.txt"), "one")?;
        git(&src, &["add", "."]);
        git(&src, &["commit", "-qm", "first commit"]);
        git(&src, &["tag", "v1"]);
        let url = src.display().to_string();
        let mirror = dir.path().join("mirror.git");

        let first = fetch_mirror(&url, &mirror, &GitAuth::default(), |_| {})?;
        assert!(first.received_objects > 0);
        let again = fetch_mirror(&url, &mirror, &GitAuth::default(), |_| {})?;
        assert_eq!(again.received_objects, 0, "nothing new to transfer");

        let v1 = resolve(&mirror, &reference(None, None, Some("v1")))?;
        assert_eq!(v1.message, "first commit");
        assert_eq!(v1.author, "Ada <ada@example.com>");

        std::fs::write(src.join("a.txt"), "two")?;
        git(&src, &["commit", "-qam", "second"]);
        let second = fetch_mirror(&url, &mirror, &GitAuth::default(), |_| {})?;
        assert!(second.received_objects > 0 && second.received_objects < 10);

        let head = resolve(&mirror, &reference(Some("main"), None, None))?;
        assert_eq!(head.message, "second");
        let short = resolve(&mirror, &reference(None, Some(&v1.sha[..7]), None))?;
        assert_eq!(short.sha, v1.sha);
        // An old commit of the branch is accepted with the branch; an unknown one is named.
        assert!(resolve(&mirror, &reference(Some("main"), Some(&v1.sha), None)).is_ok());
        let err = resolve(&mirror, &reference(Some("nope"), None, None)).expect_err("unknown");
        assert!(err.to_string().contains("\"nope\""), "{err}");
        let err = resolve(&mirror, &reference(None, Some("deadbeef"), None)).expect_err("unknown");
        assert!(err.to_string().contains("deadbeef"), "{err}");

        let work = dir.path().join("work");
        checkout(&mirror, &v1.sha, &work)?;
        assert_eq!(std::fs::read_to_string(work.join("a.txt"))?, "one");
        Ok(())
    }
}
