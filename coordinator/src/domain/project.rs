//! Projects (a Git repository of addons), their environments (one database and filestore
//! each, with branch mappings and snapshot retention) and instances (the blue/green pair
//! serving an environment, declared on one agent).

use serde::{Deserialize, Serialize};

use super::{shorten, Invalid, PinnedHostKey, RepositoryCredentials};

pub const DEFAULT_KEEP_LAST: u32 = 10;
pub const DEFAULT_KEEP_DAYS: u32 = 30;

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Project {
    pub id: String,
    pub name: String,
    pub repository_url: String,
    /// Folder of the repository holding the addons, relative; empty for the root.
    #[serde(default)]
    pub addons_subpath: String,
    /// The deploy key or HTTPS token the agent fetches with (secret half sealed); `None`
    /// for a public repository. Records written before it held `credentialsRef`, a
    /// placeholder that was never used, which is ignored on reading.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credentials: Option<RepositoryCredentials>,
    /// The SSH host key pinned on the first deploy over SSH.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ssh_host_key: Option<PinnedHostKey>,
    pub created_at: i64,
    pub updated_at: i64,
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct SnapshotSettings {
    /// Keep at most this many unpinned snapshots; 0 means no count limit.
    pub keep_last: u32,
    /// Delete unpinned snapshots older than this; 0 means no age limit.
    pub keep_days: u32,
}

impl Default for SnapshotSettings {
    fn default() -> Self {
        Self {
            keep_last: DEFAULT_KEEP_LAST,
            keep_days: DEFAULT_KEEP_DAYS,
        }
    }
}

impl SnapshotSettings {
    pub fn validate(&self) -> Result<(), Invalid> {
        if self.keep_last > 10_000 || self.keep_days > 36_500 {
            return Err(Invalid(
                "keepLast must be at most 10000 and keepDays at most 36500 (0 means no limit)"
                    .to_owned(),
            ));
        }
        Ok(())
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Environment {
    pub id: String,
    pub project_id: String,
    pub name: String,
    #[serde(default)]
    pub snapshot_settings: SnapshotSettings,
    pub created_at: i64,
    pub updated_at: i64,
}

/// A branch whose pushes and branch-only deploys go to an environment.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct BranchMapping {
    pub project_id: String,
    pub branch: String,
    pub environment_id: String,
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Color {
    Blue,
    Green,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Instance {
    pub id: String,
    pub project_id: String,
    pub environment_id: String,
    /// The agent holding the instance.
    pub agent: String,
    /// The instance id as declared in that agent's `agent.toml`.
    pub agent_instance_id: String,
    /// Which colour serves traffic, as the agent last reported it.
    #[serde(default)]
    pub active_color: Option<Color>,
    #[serde(default)]
    pub active_color_at: Option<i64>,
    pub created_at: i64,
    pub updated_at: i64,
}

/// Repository locations the agent's Git client understands: URLs with a scheme, scp-like
/// `user@host:path`, and absolute local paths (mirrors on the agent host).
pub fn validate_repository_url(url: &str) -> Result<(), Invalid> {
    let schemes = ["https://", "http://", "ssh://", "git://", "file://"];
    let scp_like = url
        .split_once(':')
        .is_some_and(|(host, path)| host.contains('@') && !host.contains('/') && !path.is_empty());
    let ok = !url.is_empty()
        && url.chars().count() <= 2048
        && !url.chars().any(|c| c.is_whitespace() || c.is_control())
        && !url.starts_with('-')
        && (schemes
            .iter()
            .any(|s| url.starts_with(s) && url.len() > s.len())
            || scp_like
            || url.starts_with('/'));
    let carries_password = ["https://", "http://"].iter().any(|s| {
        url.strip_prefix(s)
            .and_then(|rest| rest.split('/').next())
            .and_then(|authority| authority.rsplit_once('@'))
            .is_some_and(|(userinfo, _)| userinfo.contains(':'))
    });
    if carries_password {
        return Err(Invalid(
            "repositoryUrl must not carry a password or token; store it with `ocore project set-token` (PUT /api/projects/{projectId}/credentials/https-token), which keeps it sealed".to_owned(),
        ));
    }
    if ok {
        Ok(())
    } else {
        Err(Invalid(format!(
            "repositoryUrl {:?} must be a Git URL (https://…, ssh://…, git@host:path, file://… or an absolute path)",
            shorten(url)
        )))
    }
}

/// A relative folder inside the repository, without `..`; empty means the root.
pub fn validate_addons_subpath(path: &str) -> Result<(), Invalid> {
    let ok = path.chars().count() <= 1024
        && !path.starts_with('/')
        && !path.chars().any(char::is_control)
        && path.split('/').all(|c| c != ".." && c != ".");
    if ok {
        Ok(())
    } else {
        Err(Invalid(format!(
            "addonsSubpath {:?} must be a relative folder without '.' or '..' components",
            shorten(path)
        )))
    }
}

/// Branch and tag names as Git accepts them (`git check-ref-format`), bounded in length.
pub fn validate_ref_name(what: &str, name: &str) -> Result<(), Invalid> {
    let bad_char = |c: char| {
        c.is_control() || c.is_whitespace() || matches!(c, '~' | '^' | ':' | '?' | '*' | '[' | '\\')
    };
    let ok = !name.is_empty()
        && name.chars().count() <= 255
        && !name.starts_with('-')
        && !name.starts_with('/')
        && !name.ends_with('/')
        && !name.ends_with('.')
        && !name.ends_with(".lock")
        && !name.contains("..")
        && !name.contains("//")
        && !name.contains("@{")
        && name != "@"
        && !name.chars().any(bad_char)
        && name.split('/').all(|c| !c.starts_with('.'));
    if ok {
        Ok(())
    } else {
        Err(Invalid(format!(
            "{what} {:?} is not a valid Git {what} name",
            shorten(name)
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repository_urls() {
        for ok in [
            "https://github.com/acme/addons.git",
            "git@github.com:acme/addons.git",
            "ssh://git@gitlab.example.com/acme/addons",
            "file:///srv/git/addons",
            "/srv/git/addons.git",
            "https://ci@gitlab.example.com/acme/addons.git",
        ] {
            assert!(validate_repository_url(ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            "addons",
            "https://",
            "-uhttps://x",
            "https://a b",
            "ftp//x",
        ] {
            assert!(validate_repository_url(bad).is_err(), "{bad}");
        }
        let err = validate_repository_url("https://ci:ghp_s3cret@github.com/acme/a.git")
            .expect_err("a token in the URL");
        assert!(
            err.0.contains("set-token") && !err.0.contains("s3cret"),
            "{err}"
        );
    }

    #[test]
    fn subpaths_and_refs() {
        assert!(validate_addons_subpath("").is_ok());
        assert!(validate_addons_subpath("addons/custom").is_ok());
        assert!(validate_addons_subpath("../x").is_err());
        assert!(validate_addons_subpath("/abs").is_err());
        for ok in ["main", "feature/x-1", "v17.0.1", "release/2024.1"] {
            assert!(validate_ref_name("branch", ok).is_ok(), "{ok}");
        }
        for bad in [
            "", "-x", "a..b", "a b", "x.lock", "a/", ".hidden", "a~1", "x:y",
        ] {
            let e = validate_ref_name("branch", bad).expect_err(bad);
            assert!(e.0.starts_with("branch"), "{e}");
        }
    }

    #[test]
    fn retention_bounds() {
        assert!(SnapshotSettings::default().validate().is_ok());
        assert!(SnapshotSettings {
            keep_last: 0,
            keep_days: 0
        }
        .validate()
        .is_ok());
        assert!(SnapshotSettings {
            keep_last: 10_001,
            keep_days: 0
        }
        .validate()
        .is_err());
    }
}
