//! GitLab webhooks: `X-Gitlab-Event` (`Push Hook`, `Tag Push Hook`, …), the secret token
//! in `X-Gitlab-Token` (GitLab sends the secret itself, not a signature), and the delivery
//! id in `X-Gitlab-Event-UUID` (or `Idempotency-Key`, which GitLab keeps across retries).

use axum::http::HeaderMap;
use serde::Deserialize;

use super::{
    author, is_zero_sha, json_body, message, required, split_ref, token_matches, Event, Parsed,
    RefUpdate, WebhookError,
};

pub const EVENT: &str = "X-Gitlab-Event";
pub const DELIVERY: &str = "X-Gitlab-Event-UUID";
pub const IDEMPOTENCY: &str = "Idempotency-Key";
const TOKEN: &str = "X-Gitlab-Token";
/// Headers kept for a redeliver; never the token.
pub const KEPT: &[&str] = &[
    EVENT,
    DELIVERY,
    IDEMPOTENCY,
    "X-Gitlab-Webhook-UUID",
    "X-Gitlab-Instance",
    "Content-Type",
];

#[derive(Deserialize)]
struct Push {
    #[serde(rename = "ref")]
    git_ref: String,
    after: String,
    /// The commit to check out (for an annotated tag, `after` is the tag object).
    checkout_sha: Option<String>,
    #[serde(default)]
    commits: Vec<Commit>,
    user_name: Option<String>,
    user_username: Option<String>,
}

#[derive(Deserialize)]
struct Commit {
    id: String,
    message: Option<String>,
    author: Option<Person>,
}

#[derive(Deserialize)]
struct Person {
    name: Option<String>,
    email: Option<String>,
}

/// A delivery id for a GitLab too old to send one: the body's SHA-256, so a retry of the
/// same body is still recognised.
pub fn body_delivery_id(body: &[u8]) -> String {
    let digest = ring::digest::digest(&ring::digest::SHA256, body);
    format!("sha256-{}", hex::encode(&digest.as_ref()[..16]))
}

pub fn verify(headers: &HeaderMap, secret: &str) -> Result<(), WebhookError> {
    let presented = super::header(headers, TOKEN)
        .map_err(|e| WebhookError::Unauthenticated(e.to_string()))?
        .ok_or_else(|| {
            WebhookError::Unauthenticated(format!(
                "missing header {TOKEN}: set the webhook's Secret token in GitLab to the one `ocore webhook reconfigure` printed"
            ))
        })?;
    if token_matches(&presented, secret) {
        Ok(())
    } else {
        Err(WebhookError::Unauthenticated(format!(
            "header {TOKEN} is not this project's webhook secret: paste the secret `ocore webhook reconfigure` printed into GitLab"
        )))
    }
}

pub fn parse(headers: &HeaderMap, body: &[u8]) -> Result<Parsed, WebhookError> {
    let event = required(headers, EVENT, "is this request from GitLab?")?;
    let delivery_id = match super::header(headers, DELIVERY)? {
        Some(id) => id,
        None => super::header(headers, IDEMPOTENCY)?.unwrap_or_else(|| body_delivery_id(body)),
    };
    let kind = match event.as_str() {
        "Push Hook" | "Tag Push Hook" => {
            let push: Push = json_body(headers, body, "GitLab")?;
            let (kind, name) = split_ref(&push.git_ref);
            let deleted = is_zero_sha(&push.after);
            let sha = push
                .checkout_sha
                .clone()
                .filter(|s| !s.is_empty() && !is_zero_sha(s))
                .unwrap_or_else(|| push.after.clone());
            // `commits` holds the newest commits, oldest first; the head is the one pushed.
            let head = push
                .commits
                .iter()
                .find(|c| c.id == sha || c.id == push.after)
                .or(push.commits.last());
            let update = RefUpdate {
                kind,
                name,
                commit_sha: (!deleted).then_some(sha),
                message: message(head.and_then(|c| c.message.as_deref())),
                author: head
                    .and_then(|c| c.author.as_ref())
                    .and_then(|a| author(a.name.as_deref(), a.email.as_deref())),
            };
            Event::Push {
                updates: vec![update],
                pusher: push.user_name.or(push.user_username),
            }
        }
        _ => {
            json_body::<serde_json::Value>(headers, body, "GitLab")?;
            Event::Other
        }
    };
    Ok(Parsed {
        event,
        delivery_id,
        kind,
    })
}

#[cfg(test)]
mod tests {
    use super::super::tests::{fixture, headers};
    use super::super::RefKind;
    use super::*;

    fn gitlab(event: &str) -> HeaderMap {
        headers(&[
            (EVENT, event),
            (DELIVERY, "13792a34-cac6-4fda-95a8-c58e00a3954e"),
            (TOKEN, "s3cret"),
        ])
    }

    #[test]
    fn a_documented_push_gives_the_head_of_its_commits() {
        let body = fixture("gitlab-push.json");
        let h = gitlab("Push Hook");
        assert_eq!(verify(&h, "s3cret"), Ok(()));
        let parsed = parse(&h, &body).expect("push");
        assert_eq!(parsed.delivery_id, "13792a34-cac6-4fda-95a8-c58e00a3954e");
        assert_eq!(
            parsed.kind,
            Event::Push {
                updates: vec![RefUpdate {
                    kind: RefKind::Branch,
                    name: "main".into(),
                    commit_sha: Some("da1560886d4f094c3e6c9ef40349f7d38b5d27d7".into()),
                    message: Some("fixed readme".into()),
                    author: Some("GitLab dev user <gitlabdev@dv6700.(none)>".into()),
                }],
                pusher: Some("John Smith".into()),
            }
        );
    }

    #[test]
    fn tag_pushes_other_events_and_deleted_branches() {
        let tag = parse(&gitlab("Tag Push Hook"), &fixture("gitlab-tag-push.json")).expect("tag");
        let Event::Push { updates, .. } = tag.kind else {
            panic!("a push");
        };
        assert_eq!(updates[0].kind, RefKind::Tag);
        assert_eq!(updates[0].name, "v1.0.0");
        assert_eq!(
            updates[0].commit_sha.as_deref(),
            Some("82b3d5ae55f7080f1e6022629cdb57bfae7cccc7")
        );
        let issue = parse(&gitlab("Issue Hook"), &fixture("gitlab-issue.json")).expect("issue");
        assert_eq!(issue.kind, Event::Other);
        let deleted = br#"{"object_kind":"push","ref":"refs/heads/old","before":"95790bf891e76fee5e1747ab589903a6a1f80f22","after":"0000000000000000000000000000000000000000","checkout_sha":null,"commits":[],"user_name":"John Smith"}"#;
        let Event::Push { updates, .. } = parse(&gitlab("Push Hook"), deleted).expect("push").kind
        else {
            panic!("a push");
        };
        assert_eq!(updates[0].commit_sha, None);
    }

    #[test]
    fn the_token_must_be_the_secret_and_ids_have_fallbacks() {
        assert!(matches!(
            verify(&gitlab("Push Hook"), "other"),
            Err(WebhookError::Unauthenticated(_))
        ));
        let err = verify(&headers(&[(EVENT, "Push Hook")]), "s3cret").expect_err("missing");
        assert!(err.to_string().contains(TOKEN), "{err}");
        let body = fixture("gitlab-push.json");
        let retry = headers(&[(EVENT, "Push Hook"), (IDEMPOTENCY, "f5e5f430")]);
        assert_eq!(parse(&retry, &body).expect("push").delivery_id, "f5e5f430");
        let old = headers(&[(EVENT, "Push Hook")]);
        let id = parse(&old, &body).expect("push").delivery_id;
        assert_eq!(id, body_delivery_id(&body), "same body, same id");
        assert!(id.starts_with("sha256-"));
        assert!(parse(&gitlab("Push Hook"), b"[1, 2").is_err());
    }
}
