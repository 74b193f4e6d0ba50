//! The coordinator's domain model: projects, environments, instances, deployments, their
//! event logs, snapshots and webhook deliveries, with the validation rules and the pure
//! state transitions the API, the store and the dispatcher share. Nothing here does I/O.

mod credentials;
mod deployment;
mod event;
mod project;
mod snapshot;
mod webhook;

pub use credentials::{
    host_key_fingerprint, repository_secret_context, validate_token, PinnedHostKey,
    RepositoryCredentials, DEFAULT_TOKEN_USERNAME,
};
pub use deployment::{
    Deployment, DeploymentStatus, GitRef, Plan, PlanModule, RollbackTarget, Step, StepStatus,
    TriggerType, PIPELINE_STEPS,
};
pub use event::{DeployEvent, EventKind};
pub use project::{
    validate_addons_subpath, validate_ref_name, validate_repository_url, BranchMapping, Color,
    Environment, Instance, Project, SnapshotSettings, DEFAULT_KEEP_DAYS, DEFAULT_KEEP_LAST,
};
pub use snapshot::{Snapshot, SnapshotEstimate, SnapshotKind, SnapshotState};
pub use webhook::{
    webhook_secret_context, Delivery, KeptRequest, Outcome, Provider, WebhookSecret,
    MAX_DELIVERIES, MAX_KEPT_REQUESTS, MAX_KEPT_REQUEST_BYTES,
};

use time::OffsetDateTime;

#[cfg(test)]
pub(crate) use deployment::tests as deployment_tests;

/// Why a value given by a user cannot be used; the message names the field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct Invalid(pub String);

/// Current time in Unix milliseconds, as the domain records times.
pub fn now_ms() -> i64 {
    let now = OffsetDateTime::now_utc();
    i64::try_from(now.unix_timestamp_nanos() / 1_000_000).unwrap_or(i64::MAX)
}

/// RFC 3339 text in UTC with exactly three fraction digits for Unix milliseconds, so
/// times also sort as text.
pub fn rfc3339_ms(ms: i64) -> String {
    let format = time::macros::format_description!(
        "[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:3]Z"
    );
    OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .ok()
        .and_then(|t| t.format(&format).ok())
        .unwrap_or_default()
}

/// Ids of projects, environments and instances: 1 to 63 lower-case letters, digits and
/// inner hyphens, so they are safe in paths, labels and token grants.
pub fn validate_slug(what: &str, id: &str) -> Result<(), Invalid> {
    let ok = !id.is_empty()
        && id.len() <= 63
        && id
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !id.starts_with('-')
        && !id.ends_with('-');
    if ok {
        Ok(())
    } else {
        Err(Invalid(format!(
            "{what} {:?} must be 1 to 63 lower-case letters, digits and inner hyphens (e.g. shop-prod)",
            shorten(id)
        )))
    }
}

/// A display name: 1 to 100 characters without control characters.
pub fn validate_name(what: &str, name: &str) -> Result<(), Invalid> {
    if name.trim().is_empty() || name.chars().count() > 100 || name.chars().any(char::is_control) {
        return Err(Invalid(format!(
            "{what} must be 1 to 100 characters without control characters"
        )));
    }
    Ok(())
}

/// Bounds user text echoed back in error messages.
pub fn shorten(s: &str) -> String {
    let mut out: String = s.chars().take(80).collect();
    if s.chars().count() > 80 {
        out.push('…');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slugs() {
        for ok in ["shop", "shop-prod", "a", "a1-b2"] {
            assert!(validate_slug("id", ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            "Shop",
            "-shop",
            "shop-",
            "shop prod",
            "shop/x",
            &"a".repeat(64),
        ] {
            let err = validate_slug("project id", bad).expect_err(bad);
            assert!(err.0.contains("project id"), "{err}");
        }
    }

    #[test]
    fn times_have_milliseconds() {
        assert_eq!(rfc3339_ms(1_700_000_000_123), "2023-11-14T22:13:20.123Z");
        assert_eq!(rfc3339_ms(1_700_000_000_000), "2023-11-14T22:13:20.000Z");
    }
}
