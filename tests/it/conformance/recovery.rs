//! Replay, notes and manual resolution.

use liaison::store::{ListFilter, Note, Replay, StateChange};
use liaison::{Actor, EventKind, SubmissionState};
use serde_json::json;

use super::harness::{Harness, claim_one, drive_to, submission};

pub async fn a_replay_under_a_fresh_key_records_it_in_the_ledger(h: &Harness) {
    let store = h.store().await;
    let (id, _) = drive_to(&store, "bank", SubmissionState::DeadLettered).await;
    let before = store.get(id).await.unwrap();
    let s = store
        .replay(
            id,
            Replay::new(Actor::person("ops"), "partner fixed their mapping").fresh_key(true),
        )
        .await
        .unwrap();
    assert_eq!(s.state, SubmissionState::Queued);
    assert_eq!(s.idempotency_key, "bank-key~replay1");
    assert_eq!(s.replays, 1);
    assert_eq!(s.attempts, 1);
    assert_eq!(s.attempts - s.attempts_in_cycle(), 1);
    assert_eq!(s.attempts_in_cycle(), 0);
    assert!(s.cycle_started_at() >= before.cycle_started_at());
    assert_eq!(s.terminal_at, None);
    let event = store.timeline(id).await.unwrap().pop().unwrap();
    assert_eq!(event.kind, EventKind::Replayed);
    assert_eq!(event.actor.as_str(), "ops");
    assert_eq!(event.reason.as_deref(), Some("partner fixed their mapping"));
    assert_eq!(
        event.data.unwrap(),
        json!({"replay": 1, "previous_key": "bank-key", "key": "bank-key~replay1", "fresh_key": true})
    );
    // Both keys lead to it in the ledger.
    for key in ["bank-key", "bank-key~replay1"] {
        let again = store.enqueue(submission("bank", key)).await;
        match key {
            "bank-key" => assert_eq!(again.unwrap().submission.id, id),
            _ => assert!(
                again.unwrap_err().is_conflict(),
                "another payload under the new key"
            ),
        }
    }
    // It is claimable again and a second replay derives from the original.
    let lease = claim_one(&store, "bank").await;
    assert_eq!(lease.attempt, 2);
    store
        .complete(
            &lease,
            liaison::store::AttemptReport::new(liaison::AttemptOutcome::Failed),
            StateChange::to(SubmissionState::Failed),
        )
        .await
        .unwrap();
    let s = store
        .replay(
            id,
            Replay::new(Actor::person("ops"), "again").fresh_key(true),
        )
        .await
        .unwrap();
    assert_eq!(s.idempotency_key, "bank-key~replay2");
    assert_eq!((s.replays, s.attempts - s.attempts_in_cycle()), (2, 2));
}

pub async fn a_replay_may_keep_the_key_and_is_refused_elsewhere(h: &Harness) {
    let store = h.store().await;
    let (id, _) = drive_to(&store, "bank", SubmissionState::Stuck).await;
    let s = store
        .replay(id, Replay::new(Actor::person("ops"), "resend"))
        .await
        .unwrap();
    assert_eq!(s.idempotency_key, "bank-key");
    assert_eq!(s.replays, 1);
    let err = store
        .replay(id, Replay::new(Actor::person("ops"), "resend"))
        .await
        .unwrap_err();
    assert!(err.is_invalid_transition(), "{err:?}");
    let (done, _) = drive_to(&store, "lab", SubmissionState::Succeeded).await;
    let before = store.timeline(done).await.unwrap().len();
    assert!(
        store
            .replay(done, Replay::new(Actor::person("ops"), "x"))
            .await
            .unwrap_err()
            .is_invalid_transition()
    );
    let (failed, _) = drive_to(&store, "cc", SubmissionState::Failed).await;
    assert!(
        store
            .replay(failed, Replay::new(Actor::person("ops"), "  "))
            .await
            .unwrap_err()
            .is_invalid_input()
    );
    assert_eq!(store.timeline(done).await.unwrap().len(), before);
    // Replay through `transition` also starts a new cycle.
    let s = store
        .transition(failed, StateChange::to(SubmissionState::Queued))
        .await
        .unwrap();
    assert_eq!((s.replays, s.attempts - s.attempts_in_cycle()), (1, 1));
}

pub async fn notes_go_on_the_timeline_and_change_nothing(h: &Harness) {
    let store = h.store().await;
    let (id, _) = drive_to(&store, "bank", SubmissionState::Queued).await;
    let before = store.get(id).await.unwrap();
    store
        .note(
            id,
            Note::new(EventKind::Held, Actor::system("dispatcher"))
                .reason("waiting behind C-1")
                .data(json!({"blocker": "C-1"})),
        )
        .await
        .unwrap();
    store
        .note(
            id,
            Note::new(
                EventKind::Other("host_comment".into()),
                Actor::person("eve"),
            ),
        )
        .await
        .unwrap();
    assert_eq!(store.get(id).await.unwrap(), before);
    let timeline = store.timeline(id).await.unwrap();
    assert_eq!(timeline.len(), 3);
    assert!(timeline.windows(2).all(|w| w[0].seq < w[1].seq));
    assert_eq!(timeline[1].kind, EventKind::Held);
    assert_eq!(timeline[1].data.as_ref().unwrap()["blocker"], "C-1");
    assert_eq!(timeline[2].kind, EventKind::Other("host_comment".into()));
    assert_eq!(timeline[2].from_state, None);
    let missing = liaison::SubmissionId::new();
    assert!(
        store
            .note(missing, Note::new(EventKind::Held, Actor::person("x")))
            .await
            .unwrap_err()
            .is_not_found()
    );
}

pub async fn what_one_instance_commits_another_sees(h: &Harness) {
    let (a, b) = (h.store().await, h.store().await);
    let mut ids = Vec::new();
    for i in 0..20 {
        ids.push(
            a.enqueue(submission("bank", &format!("k{i}")))
                .await
                .unwrap()
                .submission
                .id,
        );
    }
    let lease = claim_one(&b, "bank").await;
    let accepted = a
        .complete(
            &lease,
            liaison::store::AttemptReport::new(liaison::AttemptOutcome::Accepted).http_status(202),
            StateChange::to(SubmissionState::AwaitingResult).external_ref("REF-1"),
        )
        .await
        .unwrap();
    drop(a);
    let c = h.store().await;
    let all = c.list(&ListFilter::default().limit(100)).await.unwrap();
    assert_eq!(all.iter().map(|s| s.id).collect::<Vec<_>>(), ids);
    assert_eq!(c.get(accepted.id).await.unwrap(), accepted);
    assert_eq!(c.timeline(accepted.id).await.unwrap().len(), 3);
    assert_eq!(
        c.attempts(accepted.id).await.unwrap()[0].http_status,
        Some(202)
    );
    assert!(
        c.enqueue(submission("bank", "k3"))
            .await
            .unwrap()
            .deduplicated
    );
}

pub async fn a_partner_pause_is_shared_by_every_instance(h: &Harness) {
    let (a, b) = (h.store().await, h.store().await);
    let until = chrono::Utc::now() + chrono::Duration::hours(1);
    let pause = |partner: &str| {
        liaison::store::Pause::new(partner, until, Actor::person("ops"), "partner maintenance")
    };
    a.set_pause("bank", Some(pause("bank"))).await.unwrap();
    a.set_pause("lab", Some(pause("lab"))).await.unwrap();
    let seen = b.pauses(chrono::Utc::now()).await.unwrap();
    assert_eq!(seen.len(), 2);
    assert_eq!(seen[0].partner, "bank");
    assert_eq!(seen[0].until.timestamp_millis(), until.timestamp_millis());
    assert_eq!(seen[0].actor.as_str(), "ops");
    assert_eq!(seen[0].reason, "partner maintenance");
    assert!(
        b.pauses(until + chrono::Duration::seconds(1))
            .await
            .unwrap()
            .is_empty()
    );
    a.set_pause("lab", None).await.unwrap();
    let seen = b.pauses(chrono::Utc::now()).await.unwrap();
    assert_eq!(
        seen.iter().map(|p| p.partner.as_str()).collect::<Vec<_>>(),
        ["bank"]
    );
    assert!(
        a.set_pause("not a name", None)
            .await
            .unwrap_err()
            .is_invalid_input()
    );
}
