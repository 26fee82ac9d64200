//! State-machine model test: random sequences of enqueue, claim, result
//! (success, failure, retryable, permanent, accepted), stale results,
//! callbacks (matching, unknown, repeated, conflicting), deadlines passing,
//! replay (same or fresh key), manual resolution, cancel and crash-restart
//! (the store dropped and reopened on the same SQLite file, outstanding
//! leases abandoned and reaped) run against the real `SqliteStore` and a
//! small in-memory model. After every step: each submission's state is the
//! model's, none is lost or extra, every idempotency key maps to one
//! submission, every timeline is a chain of transitions allowed by
//! `SubmissionState::can_become` ending in the current state, and every
//! callback (delivered through `Liaison::ingest_callback`) got the
//! disposition the model predicts, so none is applied twice.
//!
//! 64 cases of up to 40 steps by default; `PROPTEST_CASES` scales it.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use chrono::Utc;
use http::header::HeaderMap;
use liaison::callback::{Disposition, JsonMatcher, Unverified};
use liaison::engine::{Liaison, Partner};
use liaison::store::{
    AttemptReport, ClaimRequest, Lease, ListFilter, OutboxStore, ReapPolicy, Replay, SqliteConfig,
    SqliteStore, StateChange, Synchronous,
};
use liaison::{
    Actor, AttemptContext, AttemptOutcome, ErrorKind, NewSubmission, PartnerAdapter, PartnerError,
    Submission, SubmissionId, SubmissionState, SubmitOutcome,
};
use proptest::prelude::*;
use serde_json::json;

use SubmissionState::*;

const PARTNER: &str = "lab";
/// Leases end at once, so a restart can reap them at the real current time
/// (reaped work is due at the reaping time); a result is still accepted
/// under a token until the reaper or a cancel replaces it.
const LEASE: Duration = Duration::ZERO;

#[derive(Debug, Clone)]
enum Op {
    Enqueue { key: u8, payload: u8 },
    Claim { n: usize },
    Result { lease: usize, outcome: u8 },
    StaleResult { lease: usize },
    Callback { target: usize, success: bool },
    Repeat { callback: usize, flip: bool },
    Deadline,
    Replay { target: usize, fresh: bool },
    Resolve { target: usize },
    Cancel { target: usize },
    Restart,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (0u8..10, 0u8..2).prop_map(|(key, payload)| Op::Enqueue { key, payload }),
        4 => (1usize..4).prop_map(|n| Op::Claim { n }),
        6 => (any::<usize>(), 0u8..7).prop_map(|(lease, outcome)| Op::Result { lease, outcome }),
        1 => any::<usize>().prop_map(|lease| Op::StaleResult { lease }),
        6 => (any::<usize>(), any::<bool>())
            .prop_map(|(target, success)| Op::Callback { target, success }),
        2 => (any::<usize>(), any::<bool>())
            .prop_map(|(callback, flip)| Op::Repeat { callback, flip }),
        1 => Just(Op::Deadline),
        2 => (any::<usize>(), any::<bool>()).prop_map(|(target, fresh)| Op::Replay { target, fresh }),
        1 => any::<usize>().prop_map(|target| Op::Resolve { target }),
        1 => any::<usize>().prop_map(|target| Op::Cancel { target }),
        1 => Just(Op::Restart),
    ]
}

/// What the model knows of one submission.
#[derive(Debug, Clone)]
struct Sub {
    id: SubmissionId,
    key: String,
    state: SubmissionState,
    external_ref: Option<String>,
    replays: u32,
    /// Leases in a row that ended without a report (the reaper
    /// dead-letters at 3, the default crash limit).
    lease_expiries: u32,
}

/// One callback sent: its event id, reference and outcome.
#[derive(Debug, Clone)]
struct Sent {
    event: String,
    reference: String,
    success: bool,
}

#[derive(Debug)]
struct LeaseEntry {
    sub: usize,
    lease: Lease,
    live: bool,
}

#[derive(Default)]
struct Model {
    subs: Vec<Sub>,
    /// Every idempotency key ever recorded: (submission, payload variant).
    ledger: BTreeMap<String, (usize, u8)>,
    leases: Vec<LeaseEntry>,
    callbacks: Vec<Sent>,
}

fn payload(variant: u8) -> serde_json::Value {
    json!({ "variant": variant })
}

/// The key a fresh-key replay derives (as the store documents it).
fn replay_key(key: &str, n: u32) -> String {
    let base = key.split("~replay").next().unwrap_or(key);
    format!("{base}~replay{n}")
}

fn open(path: &Path) -> SqliteStore {
    SqliteStore::open_with(
        path,
        SqliteConfig::default().synchronous(Synchronous::Normal),
    )
    .expect("open the store")
}

/// Never called: the engine is not started; the model drives the store.
#[derive(Debug)]
struct Idle;

#[async_trait::async_trait]
impl PartnerAdapter for Idle {
    async fn submit(
        &self,
        _: &AttemptContext,
        _: &Submission,
    ) -> Result<SubmitOutcome, PartnerError> {
        Err(PartnerError::transient("not under test"))
    }
}

/// Deliver a callback through the engine's inbound path
/// (`Liaison::ingest_callback`: stored raw, parsed by the JSON matcher,
/// settled by the store).
async fn deliver(store: &SqliteStore, sent: &Sent) -> Disposition {
    let liaison = Liaison::builder(store.clone())
        .partner(
            Partner::new(PARTNER, Idle)
                .callbacks(JsonMatcher::builder(Unverified).build().expect("matcher")),
        )
        .build()
        .expect("engine");
    let mut body = json!({
        "event_id": sent.event, "reference": sent.reference,
        "status": if sent.success { "succeeded" } else { "failed" },
    });
    if !sent.success {
        body["reason"] = json!("denied");
    }
    liaison
        .ingest_callback(PARTNER, &HeaderMap::new(), body.to_string().as_bytes())
        .await
        .expect("ingest")
        .disposition
}

impl Model {
    fn pick(&self, i: usize, ok: impl Fn(&Sub) -> bool) -> Option<usize> {
        let candidates: Vec<usize> = (0..self.subs.len())
            .filter(|&s| ok(&self.subs[s]))
            .collect();
        (!candidates.is_empty()).then(|| candidates[i % candidates.len()])
    }

    fn kill_leases_of(&mut self, sub: usize) {
        for l in self.leases.iter_mut().filter(|l| l.sub == sub) {
            l.live = false;
        }
    }

    async fn step(&mut self, store: &mut SqliteStore, path: &Path, op: &Op) {
        match *op {
            Op::Enqueue {
                key,
                payload: variant,
            } => {
                let key = format!("k{key}");
                let result = store
                    .enqueue(
                        NewSubmission::new(PARTNER, "claim.submit", payload(variant))
                            .idempotency_key(key.as_str()),
                    )
                    .await;
                match self.ledger.get(&key).copied() {
                    Some((sub, v)) if v == variant => {
                        let e = result.expect("same key, same payload");
                        assert!(e.deduplicated);
                        assert_eq!(e.submission.id, self.subs[sub].id);
                    }
                    Some((sub, _)) => match result.unwrap_err() {
                        liaison::Error::IdempotencyConflict { existing, .. } => {
                            assert_eq!(existing, self.subs[sub].id)
                        }
                        other => panic!("expected a conflict, got {other:?}"),
                    },
                    None => {
                        let e = result.expect("a new key");
                        assert!(!e.deduplicated);
                        self.ledger.insert(key.clone(), (self.subs.len(), variant));
                        self.subs.push(Sub {
                            id: e.submission.id,
                            key,
                            state: Queued,
                            external_ref: None,
                            replays: 0,
                            lease_expiries: 0,
                        });
                    }
                }
            }
            Op::Claim { n } => {
                let queued = self.subs.iter().filter(|s| s.state == Queued).count();
                let leases = store
                    .claim(ClaimRequest::new(PARTNER, n, LEASE).at(store.now()))
                    .await
                    .expect("claim");
                assert_eq!(leases.len(), n.min(queued), "claims take due work");
                for lease in leases {
                    let sub = self
                        .subs
                        .iter()
                        .position(|s| s.id == lease.submission.id)
                        .expect("a claimed submission the model knows");
                    assert_eq!(self.subs[sub].state, Queued, "claimed twice");
                    assert_eq!(lease.submission.idempotency_key, self.subs[sub].key);
                    self.subs[sub].state = InFlight;
                    self.leases.push(LeaseEntry {
                        sub,
                        lease,
                        live: true,
                    });
                }
            }
            Op::Result { lease, outcome } => {
                if !self.leases.iter().any(|l| l.live) {
                    // Nothing in flight: claim first, so the step does something.
                    Box::pin(self.step(store, path, &Op::Claim { n: 1 })).await;
                }
                let live: Vec<usize> = (0..self.leases.len())
                    .filter(|&i| self.leases[i].live)
                    .collect();
                if live.is_empty() {
                    return;
                }
                let entry = live[lease % live.len()];
                let sub = self.leases[entry].sub;
                let reference = format!("ref-{sub}");
                let (report, change, target) = match outcome {
                    0 => (
                        AttemptOutcome::Succeeded,
                        StateChange::to(Succeeded),
                        Succeeded,
                    ),
                    1 => (AttemptOutcome::Failed, StateChange::to(Failed), Failed),
                    2 => (
                        AttemptOutcome::Transient,
                        StateChange::to(Queued).due_at(Utc::now() - chrono::Duration::seconds(1)),
                        Queued,
                    ),
                    3 => (
                        AttemptOutcome::Permanent,
                        StateChange::to(DeadLettered),
                        DeadLettered,
                    ),
                    // Acceptance is the most common answer (3 in 7): the
                    // callback paths start there.
                    _ => (
                        AttemptOutcome::Accepted,
                        StateChange::to(AwaitingResult)
                            .external_ref(reference.as_str())
                            .result_deadline(Utc::now() + chrono::Duration::hours(1)),
                        AwaitingResult,
                    ),
                };
                let done = store
                    .complete(
                        &self.leases[entry].lease,
                        AttemptReport::new(report),
                        change,
                    )
                    .await
                    .expect("a live lease completes");
                assert_eq!(done.state, target);
                self.subs[sub].state = target;
                // A reported result starts the crash count again.
                self.subs[sub].lease_expiries = 0;
                if target == AwaitingResult {
                    self.subs[sub].external_ref = Some(reference);
                }
                self.leases[entry].live = false;
            }
            Op::StaleResult { lease } => {
                let dead: Vec<usize> = (0..self.leases.len())
                    .filter(|&i| !self.leases[i].live)
                    .collect();
                if dead.is_empty() {
                    return;
                }
                let entry = &self.leases[dead[lease % dead.len()]];
                let err = store
                    .complete(
                        &entry.lease,
                        AttemptReport::new(AttemptOutcome::Succeeded),
                        StateChange::to(Succeeded),
                    )
                    .await
                    .unwrap_err();
                assert_eq!(err.kind(), ErrorKind::StaleLease, "{err:?}");
            }
            Op::Callback { target, success } => {
                let eligible =
                    |s: &Sub| s.external_ref.is_some() && !matches!(s.state, Queued | InFlight);
                let sub = self.pick(target, eligible);
                // Mostly about known work; one in five names no submission.
                if sub.is_none() && target % 5 != 0 {
                    return;
                }
                let sent = Sent {
                    event: format!("ev{}", self.callbacks.len()),
                    reference: sub.map_or_else(
                        || format!("ghost-{}", self.callbacks.len()),
                        |s| self.subs[s].external_ref.clone().unwrap(),
                    ),
                    success,
                };
                let got = deliver(store, &sent).await;
                let expected = match sub.map(|s| self.subs[s].state) {
                    None => Disposition::Unmatched,
                    Some(Cancelled | ResolvedManually) => Disposition::Late,
                    Some(AwaitingResult | Stuck) => Disposition::Applied,
                    Some(Succeeded) if success => Disposition::Duplicate,
                    Some(Failed) if !success => Disposition::Duplicate,
                    Some(_) => Disposition::Conflicting,
                };
                assert_eq!(got, expected, "callback {sent:?}");
                if let (Some(s), Disposition::Applied) = (sub, got) {
                    self.subs[s].state = if success { Succeeded } else { Failed };
                }
                self.callbacks.push(sent);
            }
            Op::Repeat { callback, flip } => {
                if self.callbacks.is_empty() {
                    return;
                }
                let mut sent = self.callbacks[callback % self.callbacks.len()].clone();
                sent.success ^= flip;
                let got = deliver(store, &sent).await;
                let expected = if flip {
                    Disposition::Conflicting
                } else {
                    Disposition::Duplicate
                };
                assert_eq!(got, expected, "a repeated event is never applied again");
            }
            Op::Deadline => {
                let awaiting: Vec<SubmissionId> = self
                    .subs
                    .iter()
                    .filter(|s| s.state == AwaitingResult)
                    .map(|s| s.id)
                    .collect();
                assert!(
                    store
                        .overdue_results(Utc::now(), 1000)
                        .await
                        .unwrap()
                        .is_empty(),
                    "no deadline has passed yet"
                );
                let later = Utc::now() + chrono::Duration::hours(2);
                let mut overdue: Vec<SubmissionId> = store
                    .overdue_results(later, 1000)
                    .await
                    .unwrap()
                    .iter()
                    .map(|s| s.id)
                    .collect();
                overdue.sort();
                let mut expected = awaiting.clone();
                expected.sort();
                assert_eq!(overdue, expected, "exactly the work awaiting a result");
                for id in awaiting {
                    let s = store
                        .transition(id, StateChange::to(Stuck).actor(Actor::system("deadlines")))
                        .await
                        .expect("deadline passed");
                    assert_eq!(s.state, Stuck);
                    let sub = self.subs.iter_mut().find(|s| s.id == id).unwrap();
                    sub.state = Stuck;
                }
            }
            Op::Replay { target, fresh } => {
                let Some(sub) = self.pick(target, |_| true) else {
                    return;
                };
                let result = store
                    .replay(
                        self.subs[sub].id,
                        Replay::new(Actor::person("ops"), "model replay").fresh_key(fresh),
                    )
                    .await;
                if matches!(self.subs[sub].state, Failed | DeadLettered | Stuck) {
                    let s = result.expect("replayable");
                    assert_eq!(s.state, Queued);
                    let m = &mut self.subs[sub];
                    m.state = Queued;
                    m.replays += 1;
                    m.lease_expiries = 0;
                    if fresh {
                        let key = replay_key(&m.key, m.replays);
                        let variant = self.ledger[&m.key].1;
                        m.key = key.clone();
                        self.ledger.insert(key, (sub, variant));
                    }
                    assert_eq!(s.idempotency_key, self.subs[sub].key);
                } else {
                    assert_eq!(result.unwrap_err().kind(), ErrorKind::InvalidTransition);
                }
            }
            Op::Resolve { target } => {
                let Some(sub) = self.pick(target, |_| true) else {
                    return;
                };
                let result = store
                    .transition(
                        self.subs[sub].id,
                        StateChange::to(ResolvedManually)
                            .actor(Actor::person("ops"))
                            .reason("done by phone"),
                    )
                    .await;
                if matches!(self.subs[sub].state, Failed | DeadLettered | Stuck) {
                    assert_eq!(result.expect("resolvable").state, ResolvedManually);
                    self.subs[sub].state = ResolvedManually;
                } else {
                    assert_eq!(result.unwrap_err().kind(), ErrorKind::InvalidTransition);
                }
            }
            Op::Cancel { target } => {
                let Some(sub) = self.pick(target, |_| true) else {
                    return;
                };
                let result = store
                    .transition(
                        self.subs[sub].id,
                        StateChange::to(Cancelled)
                            .actor(Actor::person("ops"))
                            .reason("withdrawn"),
                    )
                    .await;
                if self.subs[sub].state.is_terminal() {
                    assert_eq!(result.unwrap_err().kind(), ErrorKind::InvalidTransition);
                } else {
                    assert_eq!(result.expect("cancellable").state, Cancelled);
                    self.subs[sub].state = Cancelled;
                    self.subs[sub].lease_expiries = 0;
                    self.kill_leases_of(sub);
                }
            }
            Op::Restart => {
                // The process dies: its leases are abandoned. A new one opens
                // the same file and reaps them once they expire.
                *store = open(path);
                // The default policy: 3 leases in a row that ended without
                // a report dead-letter the submission.
                let reaped = store
                    .reap_expired_leases(Utc::now(), &ReapPolicy::default())
                    .await
                    .expect("reap");
                let mut expected = Vec::new();
                for s in self.subs.iter_mut().filter(|s| s.state == InFlight) {
                    s.lease_expiries += 1;
                    s.state = if s.lease_expiries >= 3 {
                        DeadLettered
                    } else {
                        Queued
                    };
                    expected.push((s.id, s.state));
                }
                let mut reaped: Vec<(SubmissionId, SubmissionState)> =
                    reaped.into_iter().map(|r| (r.id, r.state)).collect();
                reaped.sort();
                expected.sort();
                assert_eq!(reaped, expected, "every abandoned lease is reaped");
                for l in &mut self.leases {
                    l.live = false;
                }
            }
        }
    }

    /// The invariants, checked against the store after every step.
    async fn check(&self, store: &SqliteStore) {
        let all = store
            .list(&ListFilter::default().limit(ListFilter::MAX_LIMIT))
            .await
            .expect("list");
        assert_eq!(all.len(), self.subs.len(), "no submission lost or invented");
        for (i, m) in self.subs.iter().enumerate() {
            let s = store.get(m.id).await.expect("every submission readable");
            assert_eq!(s.state, m.state, "submission {i} ({})", m.key);
            assert_eq!(s.idempotency_key, m.key);
            assert_eq!(s.external_ref, m.external_ref);
            let holders = store
                .list(&ListFilter::default().idempotency_key(m.key.as_str()))
                .await
                .unwrap();
            assert_eq!(
                holders.iter().map(|h| h.id).collect::<Vec<_>>(),
                [m.id],
                "key {} maps to one submission",
                m.key
            );
            // The timeline: a chain of allowed transitions ending in the state.
            let timeline = store.timeline(m.id).await.expect("timeline");
            let mut current: Option<SubmissionState> = None;
            for event in &timeline {
                let Some(to) = event.to_state else {
                    continue;
                };
                match current {
                    None => assert_eq!(to, Queued, "the first transition enqueues"),
                    Some(from) => {
                        assert_eq!(event.from_state, Some(from), "{:?}", event.kind);
                        assert!(from.can_become(to), "{from} -> {to} is not in the table");
                    }
                }
                current = Some(to);
            }
            assert_eq!(current, Some(m.state), "the timeline ends in the state");
        }
        let callbacks = store
            .list_callbacks(&liaison::store::CallbackFilter::default().limit(10_000))
            .await
            .unwrap();
        let applied = callbacks
            .iter()
            .filter(|c| c.disposition == Disposition::Applied)
            .count();
        let settled_by_callback = {
            let mut n = 0;
            for m in &self.subs {
                n += store
                    .timeline(m.id)
                    .await
                    .unwrap()
                    .iter()
                    .filter(|e| e.to_state.is_some() && e.actor.as_str() == "system:callbacks")
                    .count();
            }
            n
        };
        assert_eq!(
            applied, settled_by_callback,
            "each applied callback settled once"
        );
    }
}

fn cases() -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(64)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(cases()))]

    #[test]
    fn the_store_follows_the_model(ops in proptest::collection::vec(op(), 10..40)) {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("outbox.db");
            let mut store = open(&path);
            let mut model = Model::default();
            for op in &ops {
                model.step(&mut store, &path, op).await;
                model.check(&store).await;
            }
            drop(store);
            assert_eq!(
                crate::conformance::hostile::integrity_check(&path),
                "ok"
            );
        });
    }
}
