//! The per-partner dispatch loop, one attempt's life, and the lease reaper.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::Utc;
use serde_json::json;
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument;

use super::Shared;
use super::circuit::{self, Admit, CircuitState, CircuitView, Signal};
use super::completer::Completer;
use super::partner_config::Partner;
use crate::model::event::{Actor, AttemptOutcome, EventKind};
use crate::model::submission::{Submission, SubmissionState};
use crate::partner::{AttemptContext, PartnerError, SubmitOutcome};
use crate::retry::{RetryDecision, decide};
use crate::store::{
    AttemptReport, ClaimRequest, Claimed, HandOver, Lease, Limited, ListFilter, Note,
    PartnerLimits, StateChange,
};

/// A registered partner's live state.
#[derive(Debug)]
pub(crate) struct PartnerRuntime {
    pub(crate) config: Partner,
    pub(crate) wake: Notify,
    /// Until when the partner is paused (announced maintenance), as last
    /// read from the store or set through this hub.
    pub(crate) paused_until: Mutex<Option<chrono::DateTime<Utc>>>,
    /// This instance's own cap (the partner's concurrency): no more
    /// attempts run here at once. The store enforces the partner's limits
    /// across instances ([`PartnerLimits`]).
    permits: Arc<Semaphore>,
    /// What this instance last learnt of the partner's shared circuit.
    pub(super) circuit: CircuitView,
    /// What every claim asks the store to enforce for all instances.
    limits: PartnerLimits,
}

impl PartnerRuntime {
    pub(crate) fn new(config: Partner, limits: PartnerLimits) -> Self {
        PartnerRuntime {
            permits: Arc::new(Semaphore::new(config.concurrency)),
            circuit: CircuitView::new(&config.name),
            limits,
            wake: Notify::new(),
            paused_until: Mutex::new(None),
            config,
        }
    }

    /// The shared circuit's state as this instance last learnt it.
    pub(crate) fn circuit_state(&self) -> CircuitState {
        self.circuit.state()
    }

    /// The end of the current pause, if the partner is paused at `now`
    /// (the store's time).
    pub(crate) fn paused(&self, now: chrono::DateTime<Utc>) -> Option<chrono::DateTime<Utc>> {
        let until = *self.paused_until.lock().unwrap_or_else(|p| p.into_inner());
        until.filter(|u| *u > now)
    }

    pub(crate) fn set_paused(&self, until: Option<chrono::DateTime<Utc>>) {
        *self.paused_until.lock().unwrap_or_else(|p| p.into_inner()) = until;
    }

    /// How many of the partner's slots this instance holds: attempts
    /// running here (one permit is taken before each claim, and is not a
    /// slot until the claim grants it).
    fn holding(&self) -> u32 {
        let running = self
            .config
            .concurrency
            .saturating_sub(self.permits.available_permits().saturating_add(1));
        u32::try_from(running).unwrap_or(u32::MAX)
    }

    pub(super) fn lease_for(&self, margin: Duration) -> Duration {
        self.config.attempt_timeout.saturating_add(margin)
    }
}

/// Claim and start work for one partner until told to stop claiming.
pub(crate) async fn run_partner(
    shared: Arc<Shared>,
    rt: Arc<PartnerRuntime>,
    instance: Arc<str>,
    completer: Completer,
    stop: CancellationToken,
    abandon: CancellationToken,
    attempts: TaskTracker,
) {
    let name = rt.config.name.clone();
    // Results of what this dispatcher finishes must be recorded for the
    // host's handler: register it before the first claim.
    if !super::results::register(&shared, &rt, &stop).await {
        return;
    }
    // A pause set by another instance (or before a restart) applies at once.
    match shared.store.pauses(shared.now()).await {
        Ok(pauses) => rt.set_paused(pauses.iter().find(|p| p.partner == name).map(|p| p.until)),
        Err(error) => tracing::warn!(%error, "reading partner pauses failed"),
    }
    // Consecutive claims the partner's concurrency held back (every slot
    // taken, perhaps by other instances, whose finishing nothing here
    // hears of, or this instance's fair share of them): the next look
    // waits longer, up to the poll interval.
    let mut full = 0u32;
    while !stop.is_cancelled() {
        // Capacity first: wait for one permit...
        let first = tokio::select! {
            _ = stop.cancelled() => break,
            permit = Arc::clone(&rt.permits).acquire_owned() => match permit {
                Ok(p) => p,
                Err(_) => break, // the semaphore is never closed
            },
        };
        // A paused partner gets nothing; its work waits in the queue.
        if let Some(until) = rt.paused(shared.now()) {
            drop(first);
            let wait = (until - shared.now())
                .to_std()
                .unwrap_or_default()
                .min(shared.settings.poll_interval);
            tokio::select! {
                _ = stop.cancelled() => break,
                _ = tokio::time::sleep(wait) => {}
                _ = rt.wake.notified() => {}
            }
            continue;
        }
        // ...then ask the shared circuit, which the attempt that freed the
        // permit (or another instance) may just have opened.
        let admit = circuit::admit(&shared, &rt, &instance).await;
        let probe = match admit {
            Admit::Normal => false,
            Admit::Probe => true,
            Admit::WaitUntil(until) => {
                drop(first);
                tokio::select! {
                    _ = stop.cancelled() => break,
                    _ = tokio::time::sleep_until(until) => {}
                    _ = rt.wake.notified() => {}
                }
                continue;
            }
        };
        // Batch claims: while attempts are in flight, give the running
        // attempts a moment to finish so one claim transaction takes
        // several submissions instead of one each time a permit comes back.
        // Results are recorded in batches, so permits come back in bursts:
        // the wait ends once enough are free and a burst has landed (the
        // count stopped growing across a yield to the tasks giving theirs
        // back), or after `CLAIM_GATHER`, only when the partner is busy
        // anyway. A fixed wait left the store idle for the rest of it on
        // every claim.
        if !probe && rt.limits.rate.is_none() {
            let wanted = Gather::for_partner(&shared, &rt);
            if !gather(&rt.permits, &rt.wake, wanted, &stop).await {
                break;
            }
        }
        let want = if probe {
            1
        } else {
            shared
                .settings
                .claim_batch
                .min(rt.permits.available_permits() + 1)
        };

        // The store grants what the partner's limits allow across every
        // instance, in the claim's transaction.
        let request = ClaimRequest::new(
            name.clone(),
            want,
            rt.lease_for(shared.settings.lease_margin),
        )
        .at(shared.now())
        .dead_letter_blocks_ordering(rt.config.dead_letter_blocks_ordering)
        .limits(rt.limits)
        // The store shares the partner's slots fairly between instances
        // that wait for them: this one says what it holds (the permit just
        // taken is not yet a slot).
        .claimer(instance.as_ref(), rt.holding());
        let Claimed { leases, limited } = match shared.store.claim_limited(request).await {
            Ok(claimed) => claimed,
            Err(error) => {
                tracing::warn!(partner = %name, %error, "claiming due work failed; retrying after the poll interval");
                Claimed {
                    leases: Vec::new(),
                    limited: None,
                }
            }
        };
        full = match limited {
            Some(Limited::Concurrency { .. } | Limited::FairShare { .. }) if leases.is_empty() => {
                full.saturating_add(1)
            }
            _ => 0,
        };
        // Reliability tests: the claim is committed, no request is sent yet.
        #[cfg(feature = "failpoints")]
        if !leases.is_empty() {
            fail::fail_point!("liaison::claim::committed");
        }
        if leases.is_empty() {
            drop(first);
            if probe {
                circuit::release_probe(&shared, &rt, &instance).await;
            }
            if let Some(Limited::Rate { retry_at }) = limited {
                // The shared budget is spent: nothing can start before
                // `retry_at`, whatever wakes us.
                tokio::select! {
                    _ = stop.cancelled() => break,
                    _ = tokio::time::sleep(until_rate(&shared, retry_at)) => {}
                }
                continue;
            }
            let wait = if full > 0 {
                full_wait(full, shared.settings.poll_interval)
            } else {
                shared.settings.poll_interval
            };
            tokio::select! {
                _ = stop.cancelled() => break,
                _ = rt.wake.notified() => {}
                _ = tokio::time::sleep(wait) => {}
            }
            continue;
        }
        let mut first = Some(first);
        for lease in leases {
            let permit = match first.take() {
                Some(p) => p,
                None => match Arc::clone(&rt.permits).try_acquire_owned() {
                    Ok(p) => p,
                    // Cannot happen: only this loop takes permits and it
                    // claimed no more than were free. Release the lease.
                    Err(_) => {
                        release(&shared, &lease, "no capacity for claimed work").await;
                        continue;
                    }
                },
            };
            attempts.spawn(run_attempt(
                Arc::clone(&shared),
                Arc::clone(&rt),
                completer.clone(),
                lease,
                permit,
                abandon.clone(),
                probe.then(|| Arc::clone(&instance)),
            ));
        }
        // The rate granted less than asked: the next claim could not start
        // anything before `retry_at`.
        if let Some(Limited::Rate { retry_at }) = limited {
            tokio::select! {
                _ = stop.cancelled() => break,
                _ = tokio::time::sleep(until_rate(&shared, retry_at)) => {}
            }
        }
    }
}

/// How long until the shared rate budget lets the next attempt start
/// (`retry_at` is the store's time), at most a poll interval.
fn until_rate(shared: &Shared, retry_at: chrono::DateTime<Utc>) -> Duration {
    (retry_at - shared.now())
        .to_std()
        .unwrap_or_default()
        .min(shared.settings.poll_interval)
}

/// Longest a dispatcher waits for more free permits before claiming.
const CLAIM_GATHER: Duration = Duration::from_millis(1);

/// First wait after a claim found every slot of the partner's concurrency
/// taken.
const FULL_FIRST_WAIT: Duration = Duration::from_millis(10);

/// Longest wait between looks at a partner whose slots are all taken (or
/// the poll interval, if shorter). Slots taken by this instance wake the
/// dispatcher as they free up; those of other instances are only seen by
/// looking again. The store keeps a refused instance's place among the
/// partner's waiters, and a freed slot stays free for the longest waiting
/// until it looks again: short, so a contended slot is not idle long, and
/// well within the life of a waiter's record
/// ([`crate::store::rules::limits::WAITER_TTL_US`]).
const FULL_MAX_WAIT: Duration = Duration::from_millis(50);

/// How long to wait after `full` claims in a row found no free slot:
/// doubling from [`FULL_FIRST_WAIT`] up to [`FULL_MAX_WAIT`] (or `poll`).
fn full_wait(full: u32, poll: Duration) -> Duration {
    let doublings = full.saturating_sub(1).min(16);
    FULL_FIRST_WAIT
        .saturating_mul(1 << doublings)
        .min(FULL_MAX_WAIT)
        .min(poll)
}

/// How many free permits a claim waits for ([`gather`]).
#[derive(Debug, Clone, Copy)]
struct Gather {
    /// Enough to claim.
    target: usize,
    /// As many as one claim takes: no reason to wait for more.
    batch: usize,
}

impl Gather {
    /// Enough to claim is a quarter of what one claim may take. Below it
    /// the dispatcher waits for more, up to `CLAIM_GATHER` ([`gather`]),
    /// but only while other attempts are in flight (their finishing frees
    /// permits); with nothing in flight it claims at once.
    fn for_partner(shared: &Shared, rt: &PartnerRuntime) -> Self {
        let batch = shared.settings.claim_batch.min(rt.config.concurrency);
        let free = rt.permits.available_permits() + 1; // + the one we hold
        let in_flight = rt.config.concurrency.saturating_sub(free);
        let target = if in_flight == 0 {
            1
        } else {
            (batch / 4).max(1)
        };
        Gather { target, batch }
    }
}

/// Wait for permits to come back before a claim (see its caller): until at
/// least `wanted.target` are free (counting the one the caller holds) and
/// no more came back across a yield, or `wanted.batch` are, or
/// [`CLAIM_GATHER`] passed. Each attempt wakes `wake` as it gives its
/// permit back. `false` when told to stop.
async fn gather(
    permits: &Semaphore,
    wake: &Notify,
    wanted: Gather,
    stop: &CancellationToken,
) -> bool {
    let until = tokio::time::Instant::now() + CLAIM_GATHER;
    let free = || permits.available_permits() + 1;
    let mut seen = free();
    // Bounded: each pass either waits for a wake or the deadline, or sees
    // more permits back than the pass before, of a bounded number.
    loop {
        if seen >= wanted.batch {
            return true;
        }
        if seen >= wanted.target {
            tokio::task::yield_now().await;
            let now = free();
            if now == seen || tokio::time::Instant::now() >= until {
                return true;
            }
            seen = now;
            continue;
        }
        tokio::select! {
            _ = stop.cancelled() => return false,
            _ = tokio::time::sleep_until(until) => return true,
            _ = wake.notified() => {}
        }
        seen = free();
    }
}

/// One attempt: call the adapter under the timeout, record the result.
async fn run_attempt(
    shared: Arc<Shared>,
    rt: Arc<PartnerRuntime>,
    completer: Completer,
    lease: Lease,
    permit: OwnedSemaphorePermit,
    abandon: CancellationToken,
    // The instance, when this attempt is the circuit's probe.
    probe: Option<Arc<str>>,
) {
    let mut permit = Some(permit);
    let submission = &lease.submission;
    let span = tracing::info_span!(
        "liaison.attempt",
        submission_id = %submission.id,
        partner = %submission.partner,
        attempt = lease.attempt,
        key = %submission.idempotency_key,
    );
    async {
        let timeout = rt.config.attempt_timeout;
        let ctx = AttemptContext {
            submission_id: submission.id,
            partner: submission.partner.clone(),
            idempotency_key: submission.idempotency_key.clone(),
            attempt: lease.attempt,
            deadline: super::saturating_after(Utc::now(), timeout),
        };
        let started = Instant::now();
        let result = tokio::select! {
            r = tokio::time::timeout(timeout, rt.config.adapter.submit(&ctx, submission)) => r,
            _ = abandon.cancelled() => {
                release(&shared, &lease, "the engine shut down before the attempt finished").await;
                if let Some(instance) = &probe {
                    circuit::release_probe(&shared, &rt, instance).await;
                }
                return;
            }
        };
        let result = match result {
            Ok(r) => r,
            Err(_) => Err(PartnerError::Timeout { after: timeout }),
        };
        // Reliability tests: the partner has answered (or not), nothing of
        // it is recorded yet.
        #[cfg(feature = "failpoints")]
        fail::fail_point!("liaison::attempt::answered");
        let elapsed = started.elapsed();
        let signal = match &result {
            Err(e) if e.is_unavailability() => Signal::Unavailable,
            _ => Signal::Reachable,
        };
        circuit::report(&shared, &rt, signal).await;
        let (report, change) = match result {
            Ok(outcome) => settle_success(&rt, outcome, shared.now()),
            Err(error) => settle_failure(&rt, &lease, error, shared.now()),
        };
        shared
            .metrics
            .attempt(&submission.partner, report.outcome, elapsed);
        if matches!(
            change.target,
            SubmissionState::Succeeded | SubmissionState::Failed
        ) {
            shared
                .metrics
                .result_now(&submission.partner, submission.created_at);
        }
        tracing::debug!(
            outcome = report.outcome.as_str(),
            ?elapsed,
            "attempt finished"
        );
        let dead_lettered = change.target == SubmissionState::DeadLettered;
        // The slot goes back once the store has taken the result, so the
        // claim it makes runs after it (see `super::completer`).
        let slot = permit.take();
        let runtime = Arc::clone(&rt);
        let hand_over = HandOver::new(move || {
            drop(slot);
            runtime.wake.notify_one();
        });
        if record(&completer, &lease, report, change, hand_over).await
            && dead_lettered
            && rt.config.dead_letter_blocks_ordering
        {
            journal_held(&shared, &lease.submission).await;
        }
    }
    .instrument(span)
    .await;
    // Given back already once the result was handed over; not when the
    // engine shut down before the attempt finished.
    drop(permit);
    rt.wake.notify_one();
    shared.activity.notify_waiters();
}

/// `now` is the store's time ([`super::Shared::now`]).
fn settle_success(
    rt: &PartnerRuntime,
    outcome: SubmitOutcome,
    now: chrono::DateTime<Utc>,
) -> (AttemptReport, StateChange) {
    let actor = Actor::system("dispatcher");
    match outcome {
        SubmitOutcome::AwaitResult { external_ref } => {
            let deadline = super::saturating_after(now, rt.config.result_timeout);
            let mut change = StateChange::to(SubmissionState::AwaitingResult)
                .actor(actor)
                .result_deadline(deadline);
            if let Some(reference) = external_ref {
                change = change.external_ref(reference);
            }
            (
                AttemptReport::new(AttemptOutcome::Accepted).finished_at(now),
                change,
            )
        }
        SubmitOutcome::Completed(outcome) => {
            let report = AttemptReport::new(if outcome.is_success() {
                AttemptOutcome::Succeeded
            } else {
                AttemptOutcome::Failed
            })
            .finished_at(now);
            let change = super::results::outcome_change(outcome, rt.config.max_result_bytes);
            (report, change.actor(actor))
        }
    }
}

fn settle_failure(
    rt: &PartnerRuntime,
    lease: &Lease,
    error: PartnerError,
    now: chrono::DateTime<Utc>,
) -> (AttemptReport, StateChange) {
    // Limits count from the start of the current cycle (enqueue or replay).
    let age = (now - lease.submission.cycle_started_at)
        .to_std()
        .unwrap_or(Duration::ZERO);
    let attempt_in_cycle = lease
        .attempt
        .saturating_sub(lease.submission.attempts_before_cycle);
    let (decision, why) = decide(
        rt.config.retry.as_ref(),
        &rt.config.limits,
        attempt_in_cycle,
        age,
        &error,
    );
    let text = error.to_string();
    let mut report = AttemptReport::new(error.attempt_outcome())
        .finished_at(now)
        .error(text.clone());
    if let Some(status) = error.status() {
        report = report.http_status(status);
    }
    let actor = Actor::system("dispatcher");
    let change = match decision {
        RetryDecision::RetryAfter(delay) => {
            // The error text may hold an excerpt of the partner's answer
            // (personal data): at debug only; above it, its class.
            tracing::info!(?delay, outcome = ?report.outcome, status = ?report.http_status, "attempt failed; retry scheduled");
            tracing::debug!(error = ?text, "the failed attempt's error");
            StateChange::to(SubmissionState::Queued)
                .actor(actor)
                .due_at(super::saturating_after(now, delay))
                .error(text)
                .data(
                    json!({ "retry_in_ms": u64::try_from(delay.as_millis()).unwrap_or(u64::MAX) }),
                )
        }
        RetryDecision::GiveUp => {
            tracing::warn!(why, outcome = ?report.outcome, status = ?report.http_status, "attempt failed; dead-lettered");
            tracing::debug!(error = ?text, "the dead-lettered attempt's error");
            StateChange::to(SubmissionState::DeadLettered)
                .actor(actor)
                .reason(crate::retry::dead_letter_reason(why, &text))
                .error(text)
        }
    };
    (report, change)
}

/// Note on the timeline of each queued successor with the same ordering key
/// that it now waits behind a dead letter.
async fn journal_held(shared: &Shared, submission: &Submission) {
    let Some(ordering_key) = submission.ordering_key.clone() else {
        return;
    };
    let filter = ListFilter {
        ordering_key: Some(ordering_key),
        ..ListFilter::default()
            .partner(submission.partner.clone())
            .state(SubmissionState::Queued)
            .limit(ListFilter::MAX_LIMIT)
    };
    let successors = match shared.store.list(&filter).await {
        Ok(list) => list,
        Err(e) => {
            tracing::warn!(error = %e, "could not list submissions held behind a dead letter");
            return;
        }
    };
    let blocker = submission.id;
    for successor in successors.into_iter().filter(|s| s.id > blocker) {
        let note = Note::new(EventKind::Held, Actor::system("dispatcher"))
            .reason(format!(
                "held back behind dead-lettered submission {blocker} (same ordering key) until it is replayed, resolved or cancelled"
            ))
            .data(json!({ "blocked_by": blocker.to_string() }));
        if let Err(e) = shared.store.note(successor.id, note).await {
            tracing::warn!(error = %e, "could not journal a held submission");
        }
    }
}

/// Store an attempt's result (through the completer, in a batch with the
/// results finishing alongside); `true` when it was applied. A stale lease
/// means the work was taken over (our lease expired): the store journaled it
/// and nothing else is to do.
async fn record(
    completer: &Completer,
    lease: &Lease,
    report: AttemptReport,
    change: StateChange,
    hand_over: HandOver,
) -> bool {
    match completer
        .complete(lease, report.clone(), change.clone(), hand_over)
        .await
    {
        Ok(_) => true,
        Err(e) if e.is_stale_lease() => {
            tracing::warn!(
                "the lease expired before the result was recorded; the result was journaled and not applied"
            );
            false
        }
        Err(e) if e.is_reference_taken() => {
            // The partner's reference already belongs to another submission:
            // record the acceptance without it (correlate by id or key).
            // The reference may be personal data: at debug only.
            tracing::error!(
                "partner returned a reference that is already in use; recorded without it"
            );
            tracing::debug!(error = %e, "the reference already in use");
            let mut change = change;
            change.external_ref = None;
            change.data = Some(json!({ "rejected_external_ref": e.to_string() }));
            match completer
                .complete(lease, report, change, HandOver::nothing())
                .await
            {
                Ok(_) => true,
                Err(e) => {
                    tracing::error!(error = %e, "recording the attempt failed; the lease will expire and the work be retried");
                    false
                }
            }
        }
        Err(e) => {
            tracing::error!(error = %e, "recording the attempt failed; the lease will expire and the work be retried");
            false
        }
    }
}

/// Give a claimed submission back without counting a result.
async fn release(shared: &Shared, lease: &Lease, why: &str) {
    let report = AttemptReport::new(AttemptOutcome::Interrupted)
        .finished_at(shared.now())
        .error(why);
    let change = StateChange::to(SubmissionState::Queued)
        .actor(Actor::system("dispatcher"))
        .event(EventKind::Released)
        .reason(why);
    match shared.store.complete(lease, report, change).await {
        Ok(_) => {}
        Err(e) if e.is_stale_lease() => {}
        Err(e) => tracing::error!(error = %e, "releasing a lease failed; it will expire instead"),
    }
}

/// Reap expired leases periodically: each returns to the queue, or is
/// dead-lettered when its partner's limits say so (see
/// [`crate::store::ReapLimits`]).
pub(crate) async fn run_reaper(shared: Arc<Shared>, stop: CancellationToken) {
    loop {
        refresh_pauses(&shared).await;
        match shared
            .store
            .reap_expired_leases(shared.now(), &shared.reap_policy)
            .await
        {
            Ok(reaped) if !reaped.is_empty() => {
                let given_up = reaped
                    .iter()
                    .filter(|r| r.state == SubmissionState::DeadLettered)
                    .count();
                tracing::warn!(
                    count = reaped.len(),
                    dead_lettered = given_up,
                    "expired leases reaped (a worker crashed or stalled)"
                );
                for r in &reaped {
                    shared.metrics.lease_expired(&r.partner);
                    if r.state == SubmissionState::DeadLettered {
                        shared.metrics.poison_dead_lettered(&r.partner);
                        tracing::warn!(
                            submission_id = %r.id,
                            partner = %r.partner,
                            "dead-lettered: the worker crashed or hung on it too often (or its retries ran out)"
                        );
                        held_behind_reaped(&shared, r).await;
                    }
                }
                for partner in shared.partners.values() {
                    partner.wake.notify_one();
                }
            }
            Ok(_) => {}
            Err(error) => tracing::warn!(%error, "reaping expired leases failed"),
        }
        tokio::select! {
            _ = stop.cancelled() => break,
            _ = tokio::time::sleep(shared.settings.reap_interval) => {}
        }
    }
}

/// Note its held successors on the timeline, as for a dead letter of the
/// dispatcher, when the reaper dead-lettered a submission whose partner
/// lets dead letters hold their ordering key (the default, also for a
/// partner this process does not run). Rare: one read is fine.
async fn held_behind_reaped(shared: &Shared, reaped: &crate::store::Reaped) {
    let holds = shared
        .partners
        .get(&reaped.partner)
        .is_none_or(|rt| rt.config.dead_letter_blocks_ordering);
    if !holds {
        return;
    }
    match shared.store.get(reaped.id).await {
        Ok(submission) => journal_held(shared, &submission).await,
        Err(e) => tracing::warn!(error = %e, "could not read a dead-lettered submission"),
    }
}

/// Pauses are shared through the store: pick up those set by other instances.
pub(crate) async fn refresh_pauses(shared: &Shared) {
    match shared.store.pauses(shared.now()).await {
        Ok(pauses) => {
            for (name, rt) in &shared.partners {
                let until = pauses.iter().find(|p| &p.partner == name).map(|p| p.until);
                rt.set_paused(until);
                if until.is_none() {
                    rt.wake.notify_one();
                }
            }
        }
        Err(error) => tracing::warn!(%error, "reading partner pauses failed"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The permits of the attempts in flight, all taken, and the one the
    /// dispatcher holds.
    async fn all_taken(
        n: usize,
    ) -> (
        Arc<Semaphore>,
        OwnedSemaphorePermit,
        Vec<OwnedSemaphorePermit>,
    ) {
        let permits = Arc::new(Semaphore::new(n));
        let held = Arc::clone(&permits).acquire_owned().await.unwrap();
        let mut running = Vec::new();
        for _ in 1..n {
            running.push(Arc::clone(&permits).acquire_owned().await.unwrap());
        }
        (permits, held, running)
    }

    /// Permits given back in a burst (as a batch of results recorded
    /// together gives them) end the wait as soon as the burst has landed,
    /// with all of them free, before any timer runs out: the paused clock
    /// never moves. A fixed wait would have taken `CLAIM_GATHER`.
    #[tokio::test(start_paused = true)]
    async fn a_burst_of_permits_ends_the_wait_once_it_has_landed() {
        let (permits, _held, mut running) = all_taken(8).await;
        let wake = Arc::new(Notify::new());
        let giver = {
            let wake = Arc::clone(&wake);
            tokio::spawn(async move {
                // Two come back, then (after the dispatcher had a look)
                // the rest of the burst.
                for permit in running.drain(..2) {
                    drop(permit);
                    wake.notify_one();
                }
                tokio::task::yield_now().await;
                for permit in running.drain(..) {
                    drop(permit);
                    wake.notify_one();
                }
            })
        };
        let start = tokio::time::Instant::now();
        let wanted = Gather {
            target: 2,
            batch: 8,
        };
        assert!(gather(&permits, &wake, wanted, &CancellationToken::new()).await);
        assert_eq!(permits.available_permits(), 7, "the whole burst is back");
        assert_eq!(tokio::time::Instant::now(), start, "no timer ran out");
        giver.await.unwrap();
    }

    /// Nothing coming back: the wait ends after `CLAIM_GATHER`, and a stop
    /// ends it at once with `false`.
    #[tokio::test(start_paused = true)]
    async fn the_wait_is_bounded_and_a_stop_ends_it() {
        let (permits, _held, _running) = all_taken(8).await;
        let wake = Notify::new();
        let wanted = Gather {
            target: 2,
            batch: 8,
        };
        let start = tokio::time::Instant::now();
        assert!(gather(&permits, &wake, wanted, &CancellationToken::new()).await);
        assert_eq!(tokio::time::Instant::now() - start, CLAIM_GATHER);

        let stop = CancellationToken::new();
        stop.cancel();
        assert!(!gather(&permits, &wake, wanted, &stop).await);
    }
}
