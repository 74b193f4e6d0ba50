//! Bitbucket Cloud webhooks: `X-Event-Key` (`repo:push`, …), `X-Request-UUID` and
//! `X-Hub-Signature` (`sha256=` HMAC-SHA256 of the raw body, sent when the webhook has a
//! secret; oCore always sets one). One push may carry several changes, one per ref.

use axum::http::HeaderMap;
use serde::Deserialize;

use super::{
    json_body, message, required, verify_hmac_sha256, Event, Parsed, RefKind, RefUpdate,
    WebhookError,
};

pub const EVENT: &str = "X-Event-Key";
pub const DELIVERY: &str = "X-Request-UUID";
const SIGNATURE: &str = "X-Hub-Signature";
/// Headers kept for a redeliver.
pub const KEPT: &[&str] = &[
    EVENT,
    DELIVERY,
    "X-Hook-UUID",
    "X-Attempt-Number",
    "Content-Type",
];

#[derive(Deserialize)]
struct Payload {
    push: PushBody,
    actor: Option<Actor>,
}

#[derive(Deserialize)]
struct PushBody {
    #[serde(default)]
    changes: Vec<Change>,
}

#[derive(Deserialize)]
struct Change {
    new: Option<Ref>,
    old: Option<Ref>,
}

#[derive(Deserialize)]
struct Ref {
    #[serde(rename = "type")]
    kind: String,
    name: String,
    target: Option<Target>,
}

#[derive(Deserialize)]
struct Target {
    hash: String,
    message: Option<String>,
    author: Option<Author>,
}

#[derive(Deserialize)]
struct Author {
    /// `Name <email>`, as Git wrote it.
    raw: Option<String>,
}

#[derive(Deserialize)]
struct Actor {
    display_name: Option<String>,
    nickname: Option<String>,
}

fn ref_kind(kind: &str) -> RefKind {
    match kind {
        "branch" => RefKind::Branch,
        "tag" | "annotated_tag" => RefKind::Tag,
        _ => RefKind::Other,
    }
}

pub fn verify(headers: &HeaderMap, body: &[u8], secret: &str) -> Result<(), WebhookError> {
    let signature = super::header(headers, SIGNATURE)
        .map_err(|e| WebhookError::Unauthenticated(e.to_string()))?
        .ok_or_else(|| {
            WebhookError::Unauthenticated(format!(
                "missing header {SIGNATURE}: set the webhook's Secret in Bitbucket to the one `ocore webhook reconfigure` printed"
            ))
        })?;
    verify_hmac_sha256(SIGNATURE, &signature, body, secret)
}

pub fn parse(headers: &HeaderMap, body: &[u8]) -> Result<Parsed, WebhookError> {
    let event = required(headers, EVENT, "is this request from Bitbucket Cloud?")?;
    let delivery_id = required(headers, DELIVERY, "is this request from Bitbucket Cloud?")?;
    let kind = if event == "repo:push" {
        let payload: Payload = json_body(headers, body, "Bitbucket")?;
        let mut updates = Vec::new();
        for change in payload.push.changes {
            let update = match (change.new, change.old) {
                (Some(new), _) => {
                    let target = new.target.as_ref();
                    RefUpdate {
                        kind: ref_kind(&new.kind),
                        commit_sha: Some(target.map(|t| t.hash.clone()).ok_or_else(|| {
                            WebhookError::Malformed(format!(
                                "change of {} {} has no target commit",
                                new.kind, new.name
                            ))
                        })?),
                        message: message(target.and_then(|t| t.message.as_deref())),
                        author: target
                            .and_then(|t| t.author.as_ref())
                            .and_then(|a| a.raw.as_deref())
                            .map(str::trim)
                            .filter(|a| !a.is_empty())
                            .map(str::to_owned),
                        name: new.name,
                    }
                }
                // A deleted ref: only the old side is sent.
                (None, Some(old)) => RefUpdate {
                    kind: ref_kind(&old.kind),
                    name: old.name,
                    commit_sha: None,
                    message: None,
                    author: None,
                },
                (None, None) => {
                    return Err(WebhookError::Malformed(
                        "a push change has neither a new nor an old ref".to_owned(),
                    ))
                }
            };
            updates.push(update);
        }
        Event::Push {
            updates,
            pusher: payload.actor.and_then(|a| a.display_name.or(a.nickname)),
        }
    } else {
        json_body::<serde_json::Value>(headers, body, "Bitbucket")?;
        Event::Other
    };
    Ok(Parsed {
        event,
        delivery_id,
        kind,
    })
}

#[cfg(test)]
mod tests {
    use super::super::tests::{fixture, headers, sign};
    use super::*;

    fn bitbucket(event: &str, signature: &str) -> HeaderMap {
        headers(&[
            (EVENT, event),
            (DELIVERY, "9a0e7c3c-6f6e-4d4b-9b8a-1c2d3e4f5a6b"),
            (SIGNATURE, signature),
        ])
    }

    #[test]
    fn a_documented_push_gives_the_new_target() {
        let body = fixture("bitbucket-push.json");
        let h = bitbucket("repo:push", &sign("s3cret", &body));
        assert_eq!(verify(&h, &body, "s3cret"), Ok(()));
        let parsed = parse(&h, &body).expect("push");
        assert_eq!(parsed.delivery_id, "9a0e7c3c-6f6e-4d4b-9b8a-1c2d3e4f5a6b");
        assert_eq!(
            parsed.kind,
            Event::Push {
                updates: vec![RefUpdate {
                    kind: RefKind::Branch,
                    name: "main".into(),
                    commit_sha: Some("e42fac24456e4a56f1b7f9358afc3070e3b7ddec".into()),
                    message: Some("Jenkinsfile created online with Bitbucket".into()),
                    author: Some("Stephen Connolly <stephen.alan.connolly@gmail.com>".into()),
                }],
                pusher: Some("Stephen Connolly".into()),
            }
        );
    }

    #[test]
    fn deleted_branches_and_other_events() {
        let body = fixture("bitbucket-branch-deleted.json");
        let Event::Push { updates, .. } = parse(&bitbucket("repo:push", ""), &body)
            .expect("push")
            .kind
        else {
            panic!("a push");
        };
        assert_eq!(updates.len(), 1);
        assert_eq!(updates[0].name, "feature/test");
        assert_eq!(updates[0].commit_sha, None);
        let other = parse(&bitbucket("pullrequest:created", ""), b"{}").expect("other");
        assert_eq!(other.kind, Event::Other);
    }

    #[test]
    fn the_signature_is_required_and_checked() {
        let body = fixture("bitbucket-push.json");
        let err = verify(&headers(&[(EVENT, "repo:push")]), &body, "s3cret").expect_err("none");
        assert!(err.to_string().contains(SIGNATURE), "{err}");
        let mut tampered = body.clone();
        tampered.extend_from_slice(b" ");
        let h = bitbucket("repo:push", &sign("s3cret", &body));
        assert!(verify(&h, &tampered, "s3cret").is_err());
        assert!(parse(
            &bitbucket("repo:push", ""),
            br#"{"push": {"changes": [{}]}}"#
        )
        .is_err());
        assert!(
            parse(&headers(&[(EVENT, "repo:push")]), &body).is_err(),
            "no request id"
        );
    }
}
