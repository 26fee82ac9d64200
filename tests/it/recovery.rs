//! Recovery operations: cancel, replay, replay by filter, manual resolution.
//! Each from every state it allows, refused from the others, journaled.

use liaison::engine::Liaison;
use liaison::store::{ListFilter, OutboxStore, SqliteStore};
use liaison::{Actor, ErrorKind, EventKind, Outcome, SubmissionId, SubmissionState};

use crate::support::{drive_to, store};

fn hub(store: &SqliteStore) -> Liaison {
    Liaison::builder(store.clone()).build().unwrap()
}

#[derive(Debug, Clone, Copy)]
enum Action {
    Cancel,
    Replay,
    Resolve,
}

async fn act(
    liaison: &Liaison,
    action: Action,
    id: SubmissionId,
) -> liaison::Result<liaison::Submission> {
    let ops = Actor::person("ops@clinic");
    match action {
        Action::Cancel => liaison.cancel(id, ops, "claim withdrawn").await,
        Action::Replay => liaison.replay(id, ops, "partner fixed its mapping").await,
        Action::Resolve => {
            liaison
                .resolve_manually(
                    id,
                    Outcome::succeeded(),
                    ops,
                    "submitted on the partner portal",
                )
                .await
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_action_works_from_its_states_and_is_refused_elsewhere() {
    use SubmissionState::*;
    let (_dir, store) = store();
    let liaison = hub(&store);
    let cases = [
        (
            Action::Cancel,
            Cancelled,
            vec![Queued, InFlight, AwaitingResult, Stuck],
        ),
        (Action::Replay, Queued, vec![Failed, DeadLettered, Stuck]),
        (
            Action::Resolve,
            ResolvedManually,
            vec![Failed, DeadLettered, Stuck],
        ),
    ];
    for (n, (action, target, allowed)) in cases.into_iter().enumerate() {
        for (m, from) in SubmissionState::ALL.into_iter().enumerate() {
            let (id, _lease) = drive_to(&store, &format!("p{n}-{m}"), from).await;
            let before = store.get(id).await.unwrap();
            let events_before = store.timeline(id).await.unwrap().len();
            let result = act(&liaison, action, id).await;
            if allowed.contains(&from) {
                let after = result.unwrap_or_else(|e| panic!("{action:?} from {from}: {e}"));
                assert_eq!(after.state, target, "{action:?} from {from}");
                let last = store.timeline(id).await.unwrap().pop().unwrap();
                assert_eq!(last.actor.as_str(), "ops@clinic");
                assert!(last.reason.is_some(), "{action:?} journals its reason");
                assert_eq!((last.from_state, last.to_state), (Some(from), Some(target)));
            } else {
                let err = result.expect_err(&format!("{action:?} from {from} must be refused"));
                assert_eq!(
                    err.kind(),
                    ErrorKind::InvalidTransition,
                    "{action:?} from {from}: {err}"
                );
                assert_eq!(store.get(id).await.unwrap(), before);
                assert_eq!(store.timeline(id).await.unwrap().len(), events_before);
            }
        }
    }
}

#[tokio::test]
async fn actions_need_a_reason() {
    let (_dir, store) = store();
    let liaison = hub(&store);
    let (id, _) = drive_to(&store, "p", SubmissionState::Queued).await;
    let err = liaison
        .cancel(id, Actor::person("a"), "  ")
        .await
        .unwrap_err();
    assert!(err.is_invalid_input());
    assert_eq!(store.get(id).await.unwrap().state, SubmissionState::Queued);
}

#[tokio::test]
async fn a_replay_starts_a_new_cycle_and_keeps_or_renews_the_key() {
    let (_dir, store) = store();
    let liaison = hub(&store);
    // Stuck: the partner holds the original, so the key is kept.
    let (stuck, _) = drive_to(&store, "a", SubmissionState::Stuck).await;
    let key = store.get(stuck).await.unwrap().idempotency_key;
    let replayed = liaison
        .replay(stuck, Actor::person("ops"), "try again")
        .await
        .unwrap();
    assert_eq!(replayed.idempotency_key, key);
    assert_eq!(replayed.replays, 1);
    assert_eq!(replayed.attempts_in_cycle(), 0);
    let last = store.timeline(stuck).await.unwrap().pop().unwrap();
    assert_eq!(last.kind, EventKind::Replayed);

    // Failed: the partner refused it; a fresh key, recorded in the ledger.
    let (failed, _) = drive_to(&store, "b", SubmissionState::Failed).await;
    let key = store.get(failed).await.unwrap().idempotency_key;
    let replayed = liaison
        .replay(failed, Actor::person("ops"), "data fixed")
        .await
        .unwrap();
    assert_eq!(replayed.idempotency_key, format!("{key}~replay1"));
    let data = store
        .timeline(failed)
        .await
        .unwrap()
        .pop()
        .unwrap()
        .data
        .unwrap();
    assert_eq!(data["previous_key"], key.as_str());
    // The new key deduplicates to the same submission.
    let again = store
        .enqueue(
            crate::support::submission("b", &key).idempotency_key(replayed.idempotency_key.clone()),
        )
        .await
        .unwrap();
    assert!(again.deduplicated);
    assert_eq!(again.submission.id, failed);
}

#[tokio::test]
async fn replay_where_dry_run_counts_what_the_real_run_replays() {
    let (_dir, store) = store();
    let liaison = hub(&store);
    let mut expected = 0;
    for (i, state) in [
        SubmissionState::Failed,
        SubmissionState::DeadLettered,
        SubmissionState::Stuck,
        SubmissionState::Succeeded,
        SubmissionState::AwaitingResult,
        SubmissionState::Failed,
    ]
    .into_iter()
    .enumerate()
    {
        drive_to(&store, &format!("lab{i}"), state).await;
        expected += usize::from(matches!(
            state,
            SubmissionState::Failed | SubmissionState::DeadLettered | SubmissionState::Stuck
        ));
    }
    let ops = Actor::person("ops");
    let dry = liaison
        .replay_where(
            &ListFilter::default(),
            ops.clone(),
            "after the outage",
            true,
        )
        .await
        .unwrap();
    assert_eq!(dry.matched, expected);
    assert_eq!(dry.replayed, 0);
    let queued_before = store
        .list(&ListFilter::default().state(SubmissionState::Queued))
        .await
        .unwrap()
        .len();
    assert_eq!(queued_before, 0, "the dry run changed nothing");

    let real = liaison
        .replay_where(&ListFilter::default(), ops, "after the outage", false)
        .await
        .unwrap();
    assert_eq!(real.replayed, dry.matched);
    assert!(real.refused.is_empty());
    let queued = store
        .list(&ListFilter::default().state(SubmissionState::Queued))
        .await
        .unwrap()
        .len();
    assert_eq!(queued, expected);

    // A filter narrows it: only one partner's stuck work.
    let narrowed = liaison
        .replay_where(
            &ListFilter::default()
                .partner("lab3")
                .state(SubmissionState::Succeeded),
            Actor::person("ops"),
            "nothing to do",
            true,
        )
        .await
        .unwrap();
    assert_eq!(narrowed.matched, 0, "succeeded work is never replayed");
}
