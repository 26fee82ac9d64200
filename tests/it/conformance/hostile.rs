//! Hostile input at the store boundary, on every store: SQL metacharacters
//! and NUL bytes in every string field, keys over the limit or with control
//! characters, numbers and timestamps at the ends of their ranges, deeply
//! nested and oversized payloads, unknown partners. Each case ends with a
//! clear typed error (or an exact round trip) and with the work written
//! before it intact: a fresh store instance reads it back unchanged, and on
//! SQLite `PRAGMA integrity_check` answers `ok`.

use std::time::Duration;

use chrono::{DateTime, Utc};
use liaison::callback::{Correlation, Disposition, ReportedOutcome};
use liaison::store::{
    AttemptReport, CallbackFilter, ClaimRequest, ListFilter, Note, Pause, Replay, StateChange,
};
use liaison::{
    Actor, AttemptOutcome, Error, ErrorKind, EventKind, NewSubmission, Submission, SubmissionId,
    SubmissionState,
};
use serde_json::{Value, json};

use super::callbacks::{raw, report};
use super::harness::{Harness, LEASE, Settings, Store, claim_one, submission};

/// Strings an attacker would try on a SQL layer. None of them may change the
/// statement, and `%` / `_` must not act as `LIKE` wildcards.
pub const SQL_META: [&str; 10] = [
    "'; DROP TABLE liaison_submissions;--",
    "Robert'); DROP TABLE liaison_idempotency_keys;--",
    "' OR '1'='1",
    "\" OR \"\"=\"",
    "%",
    "_",
    "%_%",
    "\\",
    "1; SELECT pg_sleep(10)",
    "$1 ?1 :name @p",
];

/// The partner the baseline work belongs to; no case touches it.
const BASE: &str = "base";

/// Work written before the hostile input.
async fn baseline(store: &Store) -> Vec<Submission> {
    let mut out = Vec::new();
    for i in 0..3 {
        let s = store
            .enqueue(submission(BASE, &format!("base-{i}")).correlation("claim_id", "C-1"))
            .await
            .expect("baseline enqueue")
            .submission;
        out.push(s);
    }
    out
}

/// After the hostile input: a fresh store instance on the same database
/// opens, reads the baseline back unchanged and lists everything; the SQLite
/// file passes its integrity check.
async fn still_intact(h: &Harness, before: &[Submission]) {
    let fresh = h.store().await;
    for s in before {
        let now = fresh.get(s.id).await.expect("baseline readable");
        assert_eq!(&now, s, "{}: baseline submission changed", h.name());
        assert_eq!(
            fresh.timeline(s.id).await.expect("timeline").len(),
            1,
            "only its enqueue event"
        );
    }
    let base = fresh
        .list(&ListFilter::default().partner(BASE))
        .await
        .expect("list after hostile input");
    assert_eq!(base.len(), before.len());
    let all = fresh
        .list(&ListFilter::default().limit(ListFilter::MAX_LIMIT))
        .await
        .expect("list everything");
    assert!(all.len() >= before.len());
    for s in &all {
        fresh.timeline(s.id).await.expect("every timeline decodes");
    }
    if let Some(path) = h.sqlite_file() {
        assert_eq!(integrity_check(&path), "ok");
    }
}

/// `PRAGMA integrity_check` on an SQLite file, through a connection of its own.
pub fn integrity_check(path: &std::path::Path) -> String {
    let conn = liaison::rusqlite::Connection::open(path).expect("open for integrity check");
    conn.query_row("PRAGMA integrity_check", [], |row| row.get::<_, String>(0))
        .expect("integrity check runs")
}

fn invalid_field(err: &Error) -> &'static str {
    match err {
        Error::InvalidInput { field, .. } => field,
        other => panic!("expected InvalidInput, got {other:?}"),
    }
}

/// PostgreSQL text cannot hold NUL: the store keeps U+FFFD in its place.
/// Everything else must come back byte for byte.
fn same_text(stored: &str, given: &str) -> bool {
    stored == given || stored == given.replace('\0', "\u{FFFD}")
}

pub async fn hostile_sql_metacharacters_in_every_string_field(h: &Harness) {
    let store = h.store().await;
    let before = baseline(&store).await;

    // Partner, kind and correlation field names are names: metacharacters
    // are refused, not escaped.
    type Named = fn(&str) -> NewSubmission;
    let names: [(&str, Named); 3] = [
        ("partner", |bad| NewSubmission::new(bad, "k", json!({}))),
        ("kind", |bad| NewSubmission::new("meta", bad, json!({}))),
        ("correlation field name", |bad| {
            NewSubmission::new("meta", "k", json!({})).correlation(bad, "v")
        }),
    ];
    for bad in SQL_META.iter().filter(|m| **m != "_") {
        for (field, new) in names {
            let err = store.enqueue(new(bad)).await.unwrap_err();
            assert_eq!(invalid_field(&err), field, "{field} {bad:?}");
        }
    }

    // Keys, ordering keys and correlation values take any printable text
    // and must round-trip exactly.
    let mut ids = Vec::new();
    for (i, meta) in SQL_META.iter().enumerate() {
        let new = NewSubmission::new("meta", "claim.submit", json!({ "i": i, "text": meta }))
            .idempotency_key(*meta)
            .ordering_key(format!("{meta}{i}"))
            .correlation("claim_id", *meta);
        let s = store.enqueue(new).await.expect("enqueue").submission;
        assert_eq!(s.idempotency_key, *meta);
        assert_eq!(
            s.ordering_key.as_deref(),
            Some(format!("{meta}{i}").as_str())
        );
        assert_eq!(s.correlation["claim_id"], *meta);
        assert_eq!(s.payload, Some(json!({ "i": i, "text": meta })));
        ids.push(s.id);
    }
    // `_` and a partner called `_` are legal names: a list by partner, key or
    // ordering key matches only the exact value, never as a pattern.
    store
        .enqueue(NewSubmission::new("_", "_", json!({})).idempotency_key("x"))
        .await
        .expect("partner `_`");
    for (i, meta) in SQL_META.iter().enumerate() {
        let by_key = store
            .list(&ListFilter::default().idempotency_key(*meta))
            .await
            .unwrap();
        assert_eq!(
            by_key.iter().map(|s| s.id).collect::<Vec<_>>(),
            [ids[i]],
            "key {meta:?}"
        );
        let by_order = store
            .list(&ListFilter::default().ordering_key(format!("{meta}{i}")))
            .await
            .unwrap();
        assert_eq!(by_order.len(), 1, "ordering key {meta:?}");
    }
    for pattern in ["%", "_", "m%", "met_"] {
        let listed = store
            .list(&ListFilter::default().partner(pattern))
            .await
            .unwrap();
        assert!(
            listed.iter().all(|s| s.partner == pattern),
            "partner {pattern:?} matched {:?}",
            listed.iter().map(|s| &s.partner).collect::<Vec<_>>()
        );
        let listed = store
            .list(&ListFilter::default().kind(pattern))
            .await
            .unwrap();
        assert!(listed.iter().all(|s| s.kind == pattern), "kind {pattern:?}");
    }
    // The same key again is deduplicated, not a new row.
    let again = store
        .enqueue(
            NewSubmission::new(
                "meta",
                "claim.submit",
                json!({ "i": 0, "text": SQL_META[0] }),
            )
            .idempotency_key(SQL_META[0])
            .ordering_key(format!("{}0", SQL_META[0]))
            .correlation("claim_id", SQL_META[0]),
        )
        .await
        .unwrap();
    assert!(again.deduplicated);
    assert_eq!(again.submission.id, ids[0]);

    // NUL is a control character: refused in keys and correlation values.
    for (new, field) in [
        (submission("meta", "nul\0key"), "idempotency_key"),
        (
            submission("meta", "ok-key").ordering_key("a\0b"),
            "ordering_key",
        ),
        (
            submission("meta", "ok-key").correlation("claim_id", "\0"),
            "correlation field value",
        ),
    ] {
        assert_eq!(invalid_field(&store.enqueue(new).await.unwrap_err()), field);
    }

    // Free text: external reference, actor, reason, error, notes, event data.
    let evil = "x'); DELETE FROM liaison_events WHERE ('1'='1 %_\0 \u{202e}";
    let mut leases = Vec::new();
    for _ in 0..2 {
        leases.push(claim_one(&store, "meta").await);
    }
    let reference = format!("REF-{}", SQL_META[0]);
    let accepted = store
        .complete(
            &leases[0],
            AttemptReport::new(AttemptOutcome::Accepted)
                .http_status(202)
                .error(evil),
            StateChange::to(SubmissionState::AwaitingResult)
                .external_ref(reference.as_str())
                .actor(Actor::person(evil))
                .reason(evil)
                .data(json!({ "evil": evil })),
        )
        .await
        .expect("complete with hostile text");
    assert_eq!(accepted.external_ref.as_deref(), Some(reference.as_str()));
    let other = store
        .complete(
            &leases[1],
            AttemptReport::new(AttemptOutcome::Accepted).http_status(202),
            StateChange::to(SubmissionState::AwaitingResult).external_ref("%"),
        )
        .await
        .expect("a reference that is a LIKE wildcard");
    store
        .note(
            accepted.id,
            Note::new(EventKind::Held, Actor::person(evil))
                .reason(evil)
                .data(json!({ "n": evil })),
        )
        .await
        .expect("note with hostile text");
    let timeline = store.timeline(accepted.id).await.unwrap();
    let note = timeline.last().unwrap();
    assert!(same_text(note.actor.as_str(), evil), "{:?}", note.actor);
    assert!(same_text(note.reason.as_deref().unwrap(), evil));
    let accepted_event = &timeline[timeline.len() - 2];
    assert!(same_text(accepted_event.actor.as_str(), evil));
    let attempt = store.attempts(accepted.id).await.unwrap().remove(0);
    assert!(same_text(attempt.error.as_deref().unwrap(), evil));

    // Callbacks: a partner name, headers and event ids full of
    // metacharacters.
    let stored = store
        .record_callback({
            let mut cb = raw(SQL_META[0], "{}");
            cb.headers.push((SQL_META[1].into(), evil.into()));
            cb
        })
        .await
        .expect("a callback for an unknown, hostile partner name is stored");
    let back = store.callback(stored).await.unwrap();
    assert!(same_text(&back.partner, SQL_META[0]));
    // Callbacks settled in turn, each with the state `accepted` (whose
    // reference is not `%`) must be in after it.
    struct Settled<'a> {
        case: &'a str,
        reference: String,
        event: &'a str,
        outcome: ReportedOutcome,
        disposition: Disposition,
        submission: Option<SubmissionId>,
        accepted: SubmissionState,
    }
    let settled = [
        Settled {
            case: "`%` as a reference matches only the reference `%`",
            reference: "%".into(),
            event: SQL_META[1],
            outcome: ReportedOutcome::Succeeded,
            disposition: Disposition::Applied,
            submission: Some(other.id),
            accepted: SubmissionState::AwaitingResult,
        },
        Settled {
            case: "the same hostile event id again is the same event",
            reference: "%".into(),
            event: SQL_META[1],
            outcome: ReportedOutcome::Succeeded,
            disposition: Disposition::Duplicate,
            submission: None,
            accepted: SubmissionState::AwaitingResult,
        },
        Settled {
            case: "a pattern-like event id is not the same event as another id",
            reference: reference.clone(),
            event: "%",
            outcome: ReportedOutcome::Failed {
                reason: evil.into(),
            },
            disposition: Disposition::Applied,
            submission: Some(accepted.id),
            accepted: SubmissionState::Failed,
        },
        Settled {
            case: "an unmatched reference full of metacharacters matches nothing",
            reference: SQL_META[2].into(),
            event: SQL_META[2],
            outcome: ReportedOutcome::Succeeded,
            disposition: Disposition::Unmatched,
            submission: None,
            accepted: SubmissionState::Failed,
        },
    ];
    for (n, c) in settled.into_iter().enumerate() {
        let cb = store
            .record_callback(raw("meta", &format!(r#"{{"n": {}}}"#, n + 1)))
            .await
            .unwrap();
        let receipt = store
            .settle_callback(
                cb,
                report(
                    Correlation::ExternalRef(c.reference),
                    Some(c.event),
                    c.outcome,
                ),
            )
            .await
            .unwrap();
        assert_eq!(receipt.disposition, c.disposition, "{}", c.case);
        if let Some(id) = c.submission {
            assert_eq!(receipt.submission_id, Some(id), "{}", c.case);
        }
        assert_eq!(
            store.get(accepted.id).await.unwrap().state,
            c.accepted,
            "{}",
            c.case
        );
    }
    let failed = store.get(accepted.id).await.unwrap();
    assert!(same_text(failed.last_error.as_deref().unwrap(), evil));
    let listed = store
        .list_callbacks(&CallbackFilter::default().partner("%"))
        .await
        .unwrap();
    assert!(listed.is_empty(), "partner `%` is not a pattern");

    // Pauses keyed by a name that looks like a pattern stay apart.
    let until = Utc::now() + chrono::Duration::hours(1);
    let pause = |partner: &str| Pause::new(partner, until, Actor::person(evil), evil);
    store.set_pause("_", Some(pause("_"))).await.unwrap();
    store.set_pause("meta", Some(pause("meta"))).await.unwrap();
    let err = store.set_pause("%", None).await.unwrap_err();
    assert_eq!(invalid_field(&err), "partner");
    let err = store
        .set_pause(SQL_META[0], Some(pause(SQL_META[0])))
        .await
        .unwrap_err();
    assert_eq!(invalid_field(&err), "partner");
    let pauses = store.pauses(Utc::now()).await.unwrap();
    assert_eq!(pauses.len(), 2, "both pauses, nothing else");
    assert!(pauses.iter().all(|p| same_text(&p.reason, evil)));

    still_intact(h, &before).await;
}

pub async fn hostile_keys_over_255_bytes_or_with_control_characters_are_refused(h: &Harness) {
    let store = h.store().await;
    let before = baseline(&store).await;
    let count = || async { store.list(&ListFilter::default()).await.unwrap().len() };
    let n = count().await;
    let bad_keys = [
        "k".repeat(256),
        "é".repeat(128),                 // 256 bytes in 128 characters
        format!("{}é", "k".repeat(254)), // 256 bytes, the last character split
        "x".repeat(64 * 1024),
        String::new(),
        "a\nb".into(),
        "a\rb".into(),
        "tab\there".into(),
        "nul\0".into(),
        "esc\u{1b}[31m".into(),
        "del\u{7f}".into(),
        "nel\u{85}".into(),
    ];
    for key in &bad_keys {
        for (new, field) in [
            (submission("keys", key), "idempotency_key"),
            (
                submission("keys", "fine").ordering_key(key.as_str()),
                "ordering_key",
            ),
        ] {
            let err = store.enqueue(new.clone()).await.unwrap_err();
            assert_eq!(err.kind(), ErrorKind::InvalidInput, "{key:?}");
            assert!(err.is_invalid_input());
            assert_eq!(invalid_field(&err), field);
            // In a batch, the bad item refuses the whole batch.
            let err = store
                .enqueue_batch(vec![submission("keys", "good"), new])
                .await
                .unwrap_err();
            assert!(err.is_invalid_input(), "{err:?}");
        }
    }
    assert_eq!(count().await, n, "nothing was written");
    // The limits themselves are accepted: 255 bytes, multi-byte included.
    for key in ["k".repeat(255), format!("{}é", "k".repeat(253))] {
        let s = store.enqueue(submission("keys", &key)).await.unwrap();
        assert_eq!(s.submission.idempotency_key, key);
    }
    // A full-length key replayed under a fresh key still fits the limit.
    let long = "r".repeat(255);
    let id = store
        .enqueue(submission("replay", &long))
        .await
        .unwrap()
        .submission
        .id;
    let lease = claim_one(&store, "replay").await;
    store
        .complete(
            &lease,
            AttemptReport::new(AttemptOutcome::Failed),
            StateChange::to(SubmissionState::Failed),
        )
        .await
        .unwrap();
    let replayed = store
        .replay(
            id,
            Replay::new(Actor::person("ops"), "retry").fresh_key(true),
        )
        .await
        .unwrap();
    assert!(replayed.idempotency_key.len() <= liaison::MAX_KEY_BYTES);
    assert!(replayed.idempotency_key.ends_with("~replay1"));
    still_intact(h, &before).await;
}

/// A fresh-key replay whose derived key the host already used for other
/// work is refused with a conflict, and changes nothing.
pub async fn hostile_a_replay_key_taken_by_other_work_is_a_conflict(h: &Harness) {
    let store = h.store().await;
    let before = baseline(&store).await;
    let id = store
        .enqueue(submission("replay", "K"))
        .await
        .unwrap()
        .submission
        .id;
    let lease = claim_one(&store, "replay").await;
    store
        .complete(
            &lease,
            AttemptReport::new(AttemptOutcome::Failed),
            StateChange::to(SubmissionState::Failed),
        )
        .await
        .unwrap();
    let squatter = store
        .enqueue(
            NewSubmission::new("replay", "other", json!({ "other": true }))
                .idempotency_key("K~replay1"),
        )
        .await
        .unwrap()
        .submission;
    let err = store
        .replay(
            id,
            Replay::new(Actor::person("ops"), "retry").fresh_key(true),
        )
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::IdempotencyConflict, "{err:?}");
    let s = store.get(id).await.unwrap();
    assert_eq!(s.state, SubmissionState::Failed);
    assert_eq!(s.idempotency_key, "K");
    assert_eq!(store.get(squatter.id).await.unwrap(), squatter);
    // Keeping the key still works.
    let kept = store
        .replay(id, Replay::new(Actor::person("ops"), "retry"))
        .await
        .unwrap();
    assert_eq!(kept.state, SubmissionState::Queued);
    still_intact(h, &before).await;
}

pub async fn hostile_numbers_out_of_range(h: &Harness) {
    let store = h.store().await;
    let before = baseline(&store).await;
    // Business value: 0 to 2^53; negative and larger refused.
    for bad in [-1, i64::MIN, liaison::MAX_BUSINESS_VALUE + 1, i64::MAX] {
        let err = store
            .enqueue(submission("num", "neg").business_value(bad))
            .await
            .unwrap_err();
        assert_eq!(invalid_field(&err), "business_value");
    }
    let rich = store
        .enqueue(submission("num", "max").business_value(liaison::MAX_BUSINESS_VALUE))
        .await
        .unwrap()
        .submission;
    assert_eq!(rich.business_value, Some(liaison::MAX_BUSINESS_VALUE));
    // Priority: both ends of i32, claimed highest first.
    let low = store
        .enqueue(submission("num", "low").priority(i32::MIN))
        .await
        .unwrap()
        .submission;
    let high = store
        .enqueue(submission("num", "high").priority(i32::MAX))
        .await
        .unwrap()
        .submission;
    assert_eq!(store.get(low.id).await.unwrap().priority, i32::MIN);
    // Payload numbers at the ends of u64, i64 and f64 round-trip.
    let numbers = json!({
        "u64": u64::MAX, "i64": i64::MIN, "f64": f64::MAX, "tiny": f64::MIN_POSITIVE,
        "neg0": -0.0, "nan": f64::NAN, "inf": f64::INFINITY
    });
    let n = store
        .enqueue(NewSubmission::new("num", "numbers", numbers.clone()).idempotency_key("n"))
        .await
        .unwrap()
        .submission;
    assert_eq!(store.get(n.id).await.unwrap().payload, Some(numbers));
    // Limits and durations at their ends are clamped or refused, never a panic.
    let leases = store
        .claim(ClaimRequest::new("num", usize::MAX, LEASE).at(store.now()))
        .await
        .expect("a huge claim limit");
    assert_eq!(leases[0].submission.id, high.id, "i32::MAX first");
    assert_eq!(
        leases.last().unwrap().submission.id,
        low.id,
        "i32::MIN last"
    );
    let ids: Vec<_> = leases.iter().map(|l| l.submission.id).collect();
    assert!(ids.contains(&rich.id) && ids.contains(&n.id));
    assert!(
        store
            .claim(ClaimRequest::new("num", 0, LEASE).at(store.now()))
            .await
            .unwrap()
            .is_empty()
    );
    store.enqueue(submission("lease", "forever")).await.unwrap();
    match store
        .claim(ClaimRequest::new("lease", 1, Duration::MAX).at(store.now()))
        .await
    {
        Ok(leases) => assert_eq!(leases.len(), 1),
        Err(err) => assert!(err.is_invalid_input(), "{err:?}"),
    }
    let listed = store
        .list(&ListFilter::default().limit(usize::MAX))
        .await
        .expect("a huge list limit is clamped");
    assert!(listed.len() <= ListFilter::MAX_LIMIT);
    let listed = store.list(&ListFilter::default().limit(0)).await.unwrap();
    assert!(listed.len() <= 1);
    // Status codes and attempt numbers at their ends.
    let done = store
        .complete(
            &leases[0],
            AttemptReport::new(AttemptOutcome::Failed).http_status(u16::MAX),
            StateChange::to(SubmissionState::Failed),
        )
        .await
        .unwrap();
    assert_eq!(
        store.attempts(done.id).await.unwrap()[0].http_status,
        Some(u16::MAX)
    );
    let cb = store
        .record_callback({
            let mut cb = raw("num", "{}");
            cb.size = u64::MAX;
            cb
        })
        .await
        .expect("a huge declared size");
    // Kept as the largest size the column holds (a signed 64-bit integer).
    assert!(store.callback(cb).await.unwrap().size >= i64::MAX as u64);
    still_intact(h, &before).await;
}

pub async fn hostile_timestamps_far_in_the_past_and_future(h: &Harness) {
    let store = h.store().await;
    let before = baseline(&store).await;
    // The stores keep milliseconds: the ends of time at that precision.
    let ms = |t: DateTime<Utc>| DateTime::from_timestamp_millis(t.timestamp_millis()).unwrap();
    let (past, future) = (ms(DateTime::<Utc>::MIN_UTC), ms(DateTime::<Utc>::MAX_UTC));
    let early = store
        .enqueue(submission("time", "early").not_before(past))
        .await
        .unwrap()
        .submission;
    let late = store
        .enqueue(submission("time", "late").not_before(future))
        .await
        .unwrap()
        .submission;
    assert_eq!(store.get(early.id).await.unwrap().not_before, Some(past));
    assert_eq!(store.get(late.id).await.unwrap().not_before, Some(future));
    // Only the one due long ago is claimed now; the far-future one is never due.
    let leases = store
        .claim(ClaimRequest::new("time", 10, LEASE).at(store.now()))
        .await
        .unwrap();
    assert_eq!(
        leases.iter().map(|l| l.submission.id).collect::<Vec<_>>(),
        [early.id]
    );
    // A claim "at" the end of time is refused or clamped, never a panic.
    match store
        .claim(ClaimRequest::new("time", 10, LEASE).at(future))
        .await
    {
        Ok(leases) => assert!(leases.iter().all(|l| l.submission.id == late.id)),
        Err(err) => assert!(err.is_invalid_input(), "{err:?}"),
    }
    // Deadlines at both ends.
    let accepted = store
        .complete(
            &leases[0],
            AttemptReport::new(AttemptOutcome::Accepted),
            StateChange::to(SubmissionState::AwaitingResult)
                .external_ref("T-1")
                .result_deadline(future),
        )
        .await
        .unwrap();
    assert_eq!(accepted.result_deadline, Some(future));
    assert!(
        store
            .overdue_results(Utc::now(), 10)
            .await
            .unwrap()
            .is_empty()
    );
    assert!(store.overdue_results(past, 10).await.unwrap().is_empty());
    let at_the_end = store.overdue_results(future, usize::MAX).await.unwrap();
    assert_eq!(
        at_the_end.iter().map(|s| s.id).collect::<Vec<_>>(),
        [accepted.id],
        "at the end of time the deadline has come"
    );
    store
        .defer_deadline(
            accepted.id,
            past,
            Note::new(EventKind::Held, Actor::system("poll")),
        )
        .await
        .expect("a deadline in the far past");
    assert_eq!(
        store
            .overdue_results(Utc::now(), 10)
            .await
            .unwrap()
            .iter()
            .map(|s| s.id)
            .collect::<Vec<_>>(),
        [accepted.id]
    );
    // List filters at both ends, and an empty or inverted window.
    let window = |from: Option<DateTime<Utc>>, until: Option<DateTime<Utc>>| {
        let mut filter = ListFilter::default().limit(ListFilter::MAX_LIMIT);
        filter.created_from = from;
        filter.created_until = until;
        filter
    };
    let all = store.list(&window(None, None)).await.unwrap().len();
    assert_eq!(
        store
            .list(&window(Some(past), Some(future)))
            .await
            .unwrap()
            .len(),
        all
    );
    for (name, from, until) in [
        ("inverted", Some(future), Some(past)),
        ("from the end of time", Some(future), None),
        ("until the start of time", None, Some(past)),
    ] {
        let listed = store.list(&window(from, until)).await.unwrap();
        assert!(listed.is_empty(), "{name}: {listed:?}");
    }
    // Housekeeping at both ends of time touches only what it should.
    assert!(
        store
            .reap_expired_leases(past, &liaison::store::ReapPolicy::default())
            .await
            .unwrap()
            .is_empty()
    );
    store.expire_unmatched(past).await.unwrap();
    store.prune_ledger(past).await.unwrap();
    let purged = store.purge(past.into()).await.unwrap();
    assert_eq!(purged.payloads, 0);
    // A retry due at the end of time and a change dated at its start.
    let lease = {
        store.enqueue(submission("time", "retry")).await.unwrap();
        claim_one(&store, "time").await
    };
    let queued = store
        .complete(
            &lease,
            AttemptReport::new(AttemptOutcome::Transient),
            StateChange::to(SubmissionState::Queued).due_at(future),
        )
        .await
        .unwrap();
    assert_eq!(queued.due_at, future);
    assert!(
        store
            .claim(ClaimRequest::new("time", 10, LEASE).at(store.now()))
            .await
            .unwrap()
            .is_empty()
    );
    // A pause that ends at the end of time is a pause.
    store
        .set_pause(
            "time",
            Some(Pause::new("time", future, Actor::person("ops"), "forever")),
        )
        .await
        .unwrap();
    assert_eq!(store.pauses(Utc::now()).await.unwrap()[0].until, future);
    // A callback from the far past is stored as it came.
    let cb = store
        .record_callback({
            let mut cb = raw("time", "{}");
            cb.received_at = past;
            cb
        })
        .await
        .unwrap();
    assert_eq!(store.callback(cb).await.unwrap().received_at, past);
    still_intact(h, &before).await;
}

/// A JSON value nested `depth` levels deep, built without recursion.
pub fn nested(depth: usize) -> Value {
    let mut v = json!("bottom");
    for _ in 0..depth {
        v = json!([v]);
    }
    v
}

pub async fn hostile_deeply_nested_and_huge_payloads(h: &Harness) {
    let store = h
        .store_with(Settings::default().max_payload_bytes(256 * 1024))
        .await;
    let before = baseline(&store).await;
    // As deep as serde_json itself parses: stored and read back.
    let text = format!("{}1{}", "[".repeat(127), "]".repeat(127));
    let deep: Value = serde_json::from_str(&text).expect("serde_json parses 127 levels");
    let ok = store
        .enqueue(NewSubmission::new("deep", "k", deep.clone()).idempotency_key("ok"))
        .await
        .expect("127 levels")
        .submission;
    assert_eq!(store.get(ok.id).await.unwrap().payload, Some(deep));
    assert!(
        serde_json::from_str::<Value>(&format!("{}{}", "[".repeat(200), "]".repeat(200))).is_err()
    );
    // Deeper than that (a host can build it in code): refused with a typed
    // error instead of stored unreadable.
    for depth in [129, 1_000] {
        let new =
            NewSubmission::new("deep", "k", nested(depth)).idempotency_key(format!("d{depth}"));
        let err = store.enqueue(new).await.unwrap_err();
        assert_eq!(invalid_field(&err), "payload", "{depth}: {err}");
    }
    // Event data (a note, a state change) is held to the same depth.
    let err = store
        .note(
            ok.id,
            Note::new(EventKind::Held, Actor::person("ops")).data(nested(200)),
        )
        .await
        .unwrap_err();
    assert_eq!(invalid_field(&err), "data", "{err}");
    let err = store
        .transition(
            ok.id,
            StateChange::to(SubmissionState::Cancelled).data(nested(129)),
        )
        .await
        .unwrap_err();
    assert_eq!(invalid_field(&err), "data", "{err}");
    assert_eq!(
        store.get(ok.id).await.unwrap().state,
        SubmissionState::Queued
    );
    assert_eq!(store.timeline(ok.id).await.unwrap().len(), 1);
    // Oversized in bytes, in keys, in array length.
    let wide: serde_json::Map<String, Value> =
        (0..20_000).map(|i| (format!("k{i}"), json!(i))).collect();
    for (name, payload) in [
        ("20,000 keys", Value::Object(wide)),
        ("200,000 array items", json!(vec![0u8; 200_000])),
    ] {
        let err = store
            .enqueue(NewSubmission::new("deep", "k", payload))
            .await
            .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::PayloadTooLarge, "{name}: {err:?}");
    }
    // NUL, a byte-order mark and SQL inside the payload are data, kept exactly.
    let odd = json!({ "nul": "a\u{0}b", "bom": "\u{feff}", "quote": SQL_META[0] });
    let s = store
        .enqueue(NewSubmission::new("deep", "k", odd.clone()).idempotency_key("odd"))
        .await
        .unwrap()
        .submission;
    assert_eq!(store.get(s.id).await.unwrap().payload, Some(odd));
    still_intact(h, &before).await;
}

pub async fn hostile_unknown_partner_names(h: &Harness) {
    let store = h.store().await;
    let before = baseline(&store).await;
    // Unknown (but valid) names: no work, no error.
    assert!(
        store
            .claim(ClaimRequest::new("nobody", 10, LEASE).at(store.now()))
            .await
            .unwrap()
            .is_empty()
    );
    // Names no partner can have: refused or empty, never a storage error.
    for name in [
        "",
        "a b",
        "x".repeat(10_000).as_str(),
        "\0",
        SQL_META[0],
        "é",
    ] {
        match store
            .claim(ClaimRequest::new(name, 10, LEASE).at(store.now()))
            .await
        {
            Ok(leases) => assert!(leases.is_empty(), "{name:?}"),
            Err(err) => assert!(err.is_invalid_input(), "{name:?}: {err:?}"),
        }
        let listed = store
            .list(&ListFilter::default().partner(name))
            .await
            .unwrap();
        assert!(listed.is_empty());
        let cbs = store
            .list_callbacks(&CallbackFilter::default().partner(name))
            .await
            .unwrap();
        assert!(cbs.is_empty());
    }
    let missing = SubmissionId::new();
    assert!(store.get(missing).await.unwrap_err().is_not_found());
    still_intact(h, &before).await;
}
