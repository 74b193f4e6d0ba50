//! Retention: which snapshots an environment's settings let go (keep the last N, keep the
//! ones younger than D days; pinned ones always stay), and deleting them with one garbage
//! collection of the blobs nothing needs any more.

use time::{Duration, OffsetDateTime};

use super::catalog::{self, SnapshotError};
use super::{blocking, SnapshotMeta, Snapshots};

/// Zero means "no limit of this kind"; with both zero nothing is deleted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct RetentionPolicy {
    pub keep_last: u32,
    pub keep_days: u32,
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RetentionOutcome {
    pub deleted: Vec<String>,
    pub freed_bytes: u64,
}

/// The snapshots `policy` lets go, given all of them and the time now. A snapshot stays
/// when it is pinned, among the `keep_last` newest, or younger than `keep_days`.
pub fn select_expired(
    snapshots: &[SnapshotMeta],
    policy: RetentionPolicy,
    now: OffsetDateTime,
) -> Vec<String> {
    if policy.keep_last == 0 && policy.keep_days == 0 {
        return Vec::new();
    }
    let mut newest_first: Vec<&SnapshotMeta> = snapshots.iter().collect();
    newest_first.sort_by(|a, b| b.created_at.cmp(&a.created_at).then(b.id.cmp(&a.id)));
    let cutoff = now - Duration::days(i64::from(policy.keep_days));
    newest_first
        .iter()
        .enumerate()
        .filter(|(rank, s)| {
            let by_count = policy.keep_last > 0 && *rank < policy.keep_last as usize;
            let by_age = policy.keep_days > 0 && s.created_at >= cutoff;
            !(s.pinned || by_count || by_age)
        })
        .map(|(_, s)| s.id.clone())
        .collect()
}

impl Snapshots {
    /// Deletes the snapshots `policy` lets go, then the blobs no remaining one needs.
    pub async fn apply_retention(
        &self,
        instance_id: &str,
        policy: RetentionPolicy,
    ) -> Result<RetentionOutcome, SnapshotError> {
        self.apply_retention_at(instance_id, policy, OffsetDateTime::now_utc())
            .await
    }

    /// `apply_retention` with the time passed in.
    pub async fn apply_retention_at(
        &self,
        instance_id: &str,
        policy: RetentionPolicy,
        now: OffsetDateTime,
    ) -> Result<RetentionOutcome, SnapshotError> {
        let ctx = self.ctx(instance_id)?;
        let _live = ctx.locks.live.lock().await;
        let _store = ctx.locks.store.write().await;
        let instance = ctx.instance.clone();
        let ctx2 = ctx.clone();
        let outcome = blocking(move || {
            let ctx = ctx2;
            let all = catalog::list_sync(&ctx)?;
            let doomed = select_expired(&all, policy, now);
            let mut out = RetentionOutcome::default();
            for id in doomed {
                let size = catalog::remove_published(&ctx, &id)?;
                out.freed_bytes += size;
                out.deleted.push(id);
            }
            if !out.deleted.is_empty() {
                let (_, freed) = catalog::collect_garbage(&ctx)?;
                out.freed_bytes += freed;
            }
            Ok::<_, SnapshotError>(out)
        })
        .await?;
        if !outcome.deleted.is_empty() {
            tracing::info!(
                instance = %instance,
                deleted = ?outcome.deleted,
                freed = outcome.freed_bytes,
                "retention applied"
            );
        }
        Ok(outcome)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::snapshot::SnapshotKind;

    fn snap(id: &str, days_ago: i64, pinned: bool, now: OffsetDateTime) -> SnapshotMeta {
        SnapshotMeta {
            id: id.into(),
            instance_id: "i".into(),
            kind: SnapshotKind::PreDeploy,
            pinned,
            size_bytes: 0,
            estimated_bytes: 0,
            created_at: now - Duration::days(days_ago),
            deployment_id: None,
            commit_sha: None,
            database: "db".into(),
            file_count: 0,
            filestore_bytes: 0,
            imported: None,
        }
    }

    #[test]
    fn retention_keeps_newest_recent_and_pinned() {
        let now = time::macros::datetime!(2025-06-01 12:00 UTC);
        let all = vec![
            snap("d0", 0, false, now),
            snap("d1", 1, false, now),
            snap("d5", 5, false, now),
            snap("d10", 10, true, now),
            snap("d20", 20, false, now),
        ];
        let sorted = |mut v: Vec<String>| {
            v.sort();
            v
        };
        let policy = |keep_last, keep_days| RetentionPolicy {
            keep_last,
            keep_days,
        };
        assert!(select_expired(&all, policy(0, 0), now).is_empty());
        assert_eq!(
            sorted(select_expired(&all, policy(2, 0), now)),
            vec!["d20", "d5"]
        );
        assert_eq!(
            sorted(select_expired(&all, policy(0, 3), now)),
            vec!["d20", "d5"]
        );
        // Either rule keeps a snapshot.
        assert_eq!(select_expired(&all, policy(1, 7), now), vec!["d20"]);
        // The pinned one stays even when everything else goes.
        assert_eq!(
            sorted(select_expired(&all, policy(1, 0), now)),
            vec!["d1", "d20", "d5"]
        );
    }
}
