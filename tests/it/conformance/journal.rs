//! The operations journal on every store: pause, resume, acknowledge (with
//! its note), reprocessing a callback that concerns no submission, and bulk
//! dismissal by filter are each journaled with who, when and why; a refused
//! action journals nothing; lines read newest first, by partner or target,
//! a page at a time, from any instance.

use chrono::{Duration, Utc};
use liaison::callback::{CorrelateBy, Disposition, JsonMatcher, Unverified};
use liaison::engine::{BulkScope, Liaison, Partner};
use liaison::ops::alerts::{Owner, ProblemClass};
use liaison::ops::{JournalFilter, OpsAction};
use liaison::store::{NewAlert, NewCallback, Settlement};
use liaison::{Actor, AttemptContext, PartnerAdapter, PartnerError, Submission, SubmitOutcome};
use serde_json::json;

use super::harness::{Harness, Store};

/// Never called: the cases act through the hub's recovery methods.
#[derive(Debug)]
struct Idle;

#[async_trait::async_trait]
impl PartnerAdapter for Idle {
    async fn submit(
        &self,
        _: &AttemptContext,
        _: &Submission,
    ) -> Result<SubmitOutcome, PartnerError> {
        Ok(SubmitOutcome::AwaitResult { external_ref: None })
    }
}

fn hub(store: &Store) -> Liaison {
    let matcher = JsonMatcher::builder(Unverified)
        .correlate(CorrelateBy::IdempotencyKey, "/claim")
        .status("/status", ["succeeded"], ["failed"])
        .build()
        .unwrap();
    Liaison::builder_arc(store.clone())
        .partner(Partner::new("lab", Idle).callbacks(matcher))
        .build()
        .unwrap()
}

async fn all(liaison: &Liaison) -> Vec<liaison::ops::JournalEntry> {
    liaison
        .ops_journal(&JournalFilter::default())
        .await
        .unwrap()
}

pub async fn pause_resume_and_acknowledge_are_journaled_with_actor_and_reason(h: &Harness) {
    let store = h.store().await;
    let liaison = hub(&store);
    let until = Utc::now() + Duration::hours(2);
    // Refused actions journal nothing.
    assert!(
        liaison
            .pause("lab", until, Actor::person("dana"), "  ")
            .await
            .unwrap_err()
            .is_invalid_input()
    );
    assert!(all(&liaison).await.is_empty());

    liaison
        .pause(
            "lab",
            until,
            Actor::person("dana"),
            "lab maintenance 18:00-20:00",
        )
        .await
        .unwrap();
    liaison
        .resume("lab", Actor::person("eli"), "the lab is back early")
        .await
        .unwrap();
    let (alert, _) = store
        .open_alert(NewAlert::new(
            "lab",
            ProblemClass::PartnerUnavailable,
            Owner::new("lab desk", "desk@lab.example"),
            "lab is down",
        ))
        .await
        .unwrap();
    liaison
        .acknowledge_alert_with_note(alert.id, Actor::person("fay"), "called the lab")
        .await
        .unwrap();
    // Another partner's pause is not on the lab's page.
    liaison
        .pause("bank", until, Actor::person("dana"), "bank window")
        .await
        .unwrap();

    let lab = liaison
        .ops_journal(&JournalFilter::default().partner("lab"))
        .await
        .unwrap();
    let seen: Vec<_> = lab
        .iter()
        .map(|l| (l.action.as_str(), l.actor.as_str(), l.reason.as_str()))
        .collect();
    assert_eq!(
        seen,
        [
            ("acknowledge_alert", "fay", "called the lab"),
            ("resume_partner", "eli", "the lab is back early"),
            ("pause_partner", "dana", "lab maintenance 18:00-20:00"),
        ]
    );
    assert_eq!(
        lab[0].target.as_deref(),
        Some(alert.id.to_string().as_str())
    );
    assert_eq!(lab[0].ops_action(), Some(OpsAction::AcknowledgeAlert));
    assert_eq!(lab[0].action_words(), "acknowledged the alert");
    assert!(
        lab[2].target.as_deref().unwrap().starts_with("until "),
        "{:?}",
        lab[2].target
    );
    assert!(
        lab.windows(2)
            .all(|w| w[0].id > w[1].id && w[0].at >= w[1].at)
    );
    assert!(lab.iter().all(|l| l.partner.as_deref() == Some("lab")));

    // By target, and a page at a time.
    let on_alert = liaison
        .ops_journal(&JournalFilter::default().target(alert.id.to_string()))
        .await
        .unwrap();
    assert_eq!(on_alert.len(), 1);
    let first = liaison
        .ops_journal(&JournalFilter::default().limit(2))
        .await
        .unwrap();
    assert_eq!(first.len(), 2);
    assert_eq!(first[0].partner.as_deref(), Some("bank"));
    let next = liaison
        .ops_journal(&JournalFilter::default().before(first[1].id).limit(10))
        .await
        .unwrap();
    assert_eq!(
        next.iter().map(|l| l.id).collect::<Vec<_>>(),
        lab[1..].iter().map(|l| l.id).collect::<Vec<_>>()
    );

    // Acknowledging again after it resolved is refused and journals nothing.
    store.resolve_alert(alert.id, Utc::now()).await.unwrap();
    assert!(
        liaison
            .acknowledge_alert_with_note(alert.id, Actor::person("gus"), "late")
            .await
            .is_err()
    );
    // Every instance reads the same journal.
    let other = hub(&h.store().await);
    assert_eq!(all(&other).await.len(), 4);
}

pub async fn bulk_dismissal_and_an_unmatched_reprocess_are_journaled_once(h: &Harness) {
    let store = h.store().await;
    let liaison = hub(&store);
    let mut ids = Vec::new();
    for n in 0..2 {
        let id = store
            .record_callback(NewCallback::new("lab", format!("junk {n}").into_bytes()))
            .await
            .unwrap();
        store
            .settle_callback(
                id,
                Settlement::Malformed {
                    reason: "not JSON".into(),
                },
            )
            .await
            .unwrap();
        ids.push(id);
    }
    // A callback about no known submission: it waits, unmatched.
    let body = json!({ "claim": "nobody", "status": "succeeded" }).to_string();
    let unmatched = liaison
        .ingest_callback("lab", &Default::default(), body.as_bytes())
        .await
        .unwrap();
    assert_eq!(unmatched.disposition, Disposition::Unmatched);
    // Blank reasons are refused before anything changes.
    let scope = BulkScope {
        ids: &ids,
        filter: "malformed callbacks from lab",
        partner: Some("lab"),
    };
    assert!(
        liaison
            .dismiss_callbacks(scope, Actor::person("dana"), " ")
            .await
            .unwrap_err()
            .is_invalid_input()
    );
    assert!(all(&liaison).await.is_empty());

    // One of three is not in the quarantine: refused, the others dismissed,
    // one line for all.
    let with_unmatched = [ids[0], ids[1], unmatched.callback_id];
    let done = liaison
        .dismiss_callbacks(
            BulkScope {
                ids: &with_unmatched,
                ..scope
            },
            Actor::person("dana"),
            "test messages",
        )
        .await
        .unwrap();
    assert_eq!((done.asked, done.changed, done.refused.len()), (3, 2, 1));
    let lines = all(&liaison).await;
    assert_eq!(lines.len(), 1);
    assert_eq!(lines[0].action, "dismiss_callbacks");
    assert_eq!(lines[0].partner.as_deref(), Some("lab"));
    assert_eq!(
        lines[0].target.as_deref(),
        Some("malformed callbacks from lab")
    );
    assert_eq!(
        lines[0].reason,
        "2 of 3 callback(s), 1 refused: test messages"
    );
    assert_eq!(done.journal, lines[0]);

    // Reprocessing the unmatched one (no submission's timeline to go on)
    // is journaled with what the run decided.
    let receipt = liaison
        .reprocess_callback_by(unmatched.callback_id, Actor::person("eli"), "matcher fixed")
        .await
        .unwrap();
    assert_eq!(receipt.disposition, Disposition::Unmatched);
    let lines = all(&liaison).await;
    assert_eq!(lines.len(), 2);
    assert_eq!(lines[0].action, "reprocess_callback");
    assert_eq!(lines[0].actor.as_str(), "eli");
    assert_eq!(
        lines[0].target.as_deref(),
        Some(unmatched.callback_id.to_string().as_str())
    );
    assert_eq!(lines[0].reason, "ended unmatched: matcher fixed");

    // A bulk reprocess journals one line, not one per callback.
    let again = [unmatched.callback_id];
    let done = liaison
        .reprocess_callbacks_by(
            BulkScope {
                ids: &again,
                filter: "unmatched callbacks from lab",
                partner: Some("lab"),
            },
            Actor::person("eli"),
            "second try",
        )
        .await
        .unwrap();
    assert_eq!(done.changed, 1);
    let lines = all(&liaison).await;
    assert_eq!(lines.len(), 3);
    assert_eq!(lines[0].action, "reprocess_callbacks");
    assert_eq!(lines[0].reason, "1 of 1 callback(s): second try");
}
