//! Claims, results under a lease, and reaping leases that ended.

use std::collections::{HashMap, HashSet};

use chrono::{DateTime, Utc};

use super::journal;
use super::submissions::{apply_change, apply_changes};
use crate::error::{Error, Result};
use crate::model::callback::CallbackId;
use crate::model::submission::{Submission, SubmissionId, SubmissionState};
use crate::store::driver::{Driver, Locked, Waiting};
use crate::store::rules::callbacks as callback_rules;
use crate::store::rules::lease as rules;
use crate::store::rules::limits;
use crate::store::rules::transition;
use crate::store::{
    AttemptReport, ClaimRequest, Claimed, FinishedAttempt, Lease, LeaseToken, ReapPolicy, Reaped,
    StateChange,
};

/// Claim due work of one partner under fresh leases, within the limits the
/// request carries: the partner's row is locked first, so every claimer of
/// the partner (any instance, any process) decides after the last one
/// committed.
pub(crate) async fn claim<D: Driver>(d: &D, request: &ClaimRequest) -> Result<Claimed> {
    if request.limit == 0 || request.limits.is_none() {
        let leases = claim_due(d, request).await?;
        return Ok(Claimed {
            leases,
            limited: None,
        });
    }
    let state = d.lock_limits(&request.partner, request.now).await?;
    let claimer = request
        .claimer
        .as_ref()
        .map(|(id, holding)| limits::Claimer {
            id,
            holding: *holding,
        });
    let grant = limits::grant(&request.limits, &state, request.limit, request.now, claimer);
    let leases = if grant.take == 0 {
        Vec::new()
    } else {
        let granted = ClaimRequest {
            limit: grant.take,
            ..request.clone()
        };
        claim_due(d, &granted).await?
    };
    if let Some(rate) = &request.limits.rate
        && !leases.is_empty()
    {
        let tat = limits::spend(rate, state.rate_tat_us, leases.len(), request.now);
        d.write_rate(&request.partner, tat).await?;
    }
    if let Some(waiters) = limits::waiters_after(&state, claimer, &grant, leases.len(), request.now)
    {
        d.write_waiters(&request.partner, waiters.as_deref())
            .await?;
    }
    Ok(Claimed {
        leases,
        limited: grant.limited,
    })
}

/// Claim up to `request.limit` of the partner's due work.
async fn claim_due<D: Driver>(d: &D, request: &ClaimRequest) -> Result<Vec<Lease>> {
    if request.limit == 0 {
        return Ok(Vec::new());
    }
    let blocking = rules::blocking_states(request.dead_letter_blocks_ordering);
    // The whole batch in a constant number of statements: find, put in
    // flight and start the attempts (one statement on PostgreSQL). The
    // claims' timeline lines are read from the attempts
    // ([`rules::timeline`]).
    let expires_at = request.lease_end();
    let tokens = rules::claim_tokens(request.limit);
    let leases: Vec<Lease> = d
        .claim_due(request, blocking, &tokens, expires_at)
        .await?
        .into_iter()
        .map(|(submission, token)| Lease {
            attempt: submission.attempts,
            submission,
            token,
            expires_at,
        })
        .collect();
    Ok(leases)
}

/// What a completion did. A stale one is journaled, so the store commits
/// it before answering [`Error::StaleLease`].
pub(crate) enum Completion {
    Applied(Box<Submission>),
    Stale,
}

impl Completion {
    /// The answer for the caller, once the transaction committed.
    pub(crate) fn answer(self, id: SubmissionId) -> Result<Submission> {
        match self {
            Completion::Applied(submission) => Ok(*submission),
            Completion::Stale => Err(Error::StaleLease { id }),
        }
    }
}

/// Finish the lease's attempt and apply its change, if the lease is still
/// the submission's current one.
pub(crate) async fn complete<D: Driver>(
    d: &D,
    lease: &Lease,
    report: &AttemptReport,
    change: &StateChange,
    now: DateTime<Utc>,
) -> Result<Completion> {
    let id = lease.submission.id;
    if let Some(reference) = &change.external_ref {
        d.lock_reference(&lease.submission.partner, reference)
            .await?;
    }
    let locked = d
        .lock_submission(id)
        .await?
        .ok_or_else(|| Error::not_found("submission", id))?;
    let change =
        match rules::complete(&locked.submission, locked.lease, lease, report, change, now)? {
            rules::Completion::Stale(event) => {
                journal(d, &event).await?;
                return Ok(Completion::Stale);
            }
            rules::Completion::Apply(change) => change,
        };
    d.finish_attempt(id, lease.token, report).await?;
    let applied = apply_change(d, locked.submission, &change, now).await?;
    // A callback that arrived before this result was recorded can match now.
    let applied = if applied.state == SubmissionState::Queued {
        applied
    } else {
        super::callbacks::rematch(d, &applied, now).await?
    };
    // Reliability tests: the result is written, its transaction not
    // committed.
    #[cfg(feature = "failpoints")]
    fail::fail_point!("liaison::complete::before_commit");
    Ok(Completion::Applied(Box::new(applied)))
}

/// Record finished attempts in the caller's transaction, each as
/// [`complete`] decides it, with one statement per kind of change for the
/// whole batch: lock the references and rows, decide each
/// ([`rules::complete`]), check references, then finish the attempts, write
/// the states, journal, record deliveries. Answers in input order; an item
/// refused by the rules (or whose row is gone) writes nothing. Several
/// attempts of one submission are applied one round after the other, in
/// input order, each round seeing the one before.
pub(crate) async fn complete_batch<D: Driver>(
    d: &D,
    items: &[FinishedAttempt],
    now: DateTime<Utc>,
) -> Result<Vec<Result<Completion>>> {
    let mut answers: Vec<(usize, Result<Completion>)> = Vec::with_capacity(items.len());
    let mut pending: Vec<usize> = (0..items.len()).collect();
    while !pending.is_empty() {
        let mut seen = HashSet::new();
        let (round, later): (Vec<usize>, Vec<usize>) = pending
            .into_iter()
            .partition(|&i| seen.insert(items[i].lease.submission.id));
        answers.extend(complete_round(d, items, &round, now).await?);
        pending = later;
    }
    answers.sort_by_key(|(i, _)| *i);
    // Reliability tests: the results are written, their transaction not
    // committed.
    #[cfg(feature = "failpoints")]
    fail::fail_point!("liaison::complete::before_commit");
    Ok(answers.into_iter().map(|(_, answer)| answer).collect())
}

/// One round of [`complete_batch`]: `round` indexes items of distinct
/// submissions.
async fn complete_round<D: Driver>(
    d: &D,
    items: &[FinishedAttempt],
    round: &[usize],
    now: DateTime<Utc>,
) -> Result<Vec<(usize, Result<Completion>)>> {
    let mut answers = Vec::with_capacity(round.len());
    // References first, then rows: the order every writer locks in.
    let references: Vec<(&str, &str)> = round
        .iter()
        .filter_map(|&i| {
            let item = &items[i];
            let reference = item.change.external_ref.as_deref()?;
            Some((item.lease.submission.partner.as_str(), reference))
        })
        .collect();
    d.lock_references(&references).await?;
    let ids: Vec<SubmissionId> = round
        .iter()
        .map(|&i| items[i].lease.submission.id)
        .collect();
    let mut rows: HashMap<SubmissionId, Locked> = d
        .lock_submissions(&ids)
        .await?
        .into_iter()
        .map(|l| (l.submission.id, l))
        .collect();

    // Decide each.
    let mut events = Vec::new();
    let mut applies: Vec<(usize, Locked, StateChange)> = Vec::new();
    for &i in round {
        let item = &items[i];
        let id = item.lease.submission.id;
        let Some(locked) = rows.remove(&id) else {
            answers.push((i, Err(Error::not_found("submission", id))));
            continue;
        };
        match rules::complete(
            &locked.submission,
            locked.lease,
            &item.lease,
            &item.report,
            &item.change,
            now,
        ) {
            Err(e) => answers.push((i, Err(e))),
            Ok(rules::Completion::Stale(event)) => {
                events.push(event);
                answers.push((i, Ok(Completion::Stale)));
            }
            Ok(rules::Completion::Apply(change)) => applies.push((i, locked, change)),
        }
    }

    // A reference another submission holds (or an earlier item of this
    // batch takes) refuses its item, as `apply_change` does one at a time.
    let wanted: Vec<(&str, &str, SubmissionId)> = applies
        .iter()
        .filter_map(|(_, locked, change)| {
            let reference = change.external_ref.as_deref()?;
            Some((
                locked.submission.partner.as_str(),
                reference,
                locked.submission.id,
            ))
        })
        .collect();
    let mut holders = d.reference_holders(&wanted).await?.into_iter();
    let mut taken: HashMap<(String, String), SubmissionId> = HashMap::new();
    let mut kept = Vec::with_capacity(applies.len());
    for (i, locked, change) in applies {
        if let Some(reference) = &change.external_ref {
            let partner = &locked.submission.partner;
            let key = (partner.clone(), reference.clone());
            let holder = holders
                .next()
                .flatten()
                .or_else(|| taken.get(&key).copied());
            if let Some(holder) = holder {
                answers.push((
                    i,
                    Err(transition::reference_taken(
                        partner,
                        reference,
                        Some(holder),
                    )),
                ));
                continue;
            }
            taken.insert(key, locked.submission.id);
        }
        kept.push((i, locked, change));
    }

    // Write: attempts, states, timeline, deliveries.
    let ends: Vec<(SubmissionId, LeaseToken, &AttemptReport)> = kept
        .iter()
        .map(|(i, locked, _)| {
            (
                locked.submission.id,
                items[*i].lease.token,
                &items[*i].report,
            )
        })
        .collect();
    d.finish_attempts(&ends).await?;
    let order: Vec<usize> = kept.iter().map(|(i, _, _)| *i).collect();
    let changes = kept
        .into_iter()
        .map(|(_, locked, change)| (locked.submission, change))
        .collect();
    let updated = apply_changes(d, changes, events, now).await?;

    // Callbacks that arrived before these results were recorded can match
    // now: one look per partner, then each submission takes those recorded
    // under one of its references (a callback once only), and all are
    // settled together.
    let mut by_partner: HashMap<&str, Vec<String>> = HashMap::new();
    for after in updated
        .iter()
        .filter(|s| s.state != SubmissionState::Queued)
    {
        by_partner
            .entry(after.partner.as_str())
            .or_default()
            .extend(callback_rules::references(after));
    }
    let mut waiting: HashMap<String, Vec<Waiting>> = HashMap::new();
    for (partner, references) in &by_partner {
        let found = d.waiting_callbacks(partner, references).await?;
        if !found.is_empty() {
            waiting.insert(partner.to_string(), found);
        }
    }
    let mut taken: HashSet<CallbackId> = HashSet::new();
    let mut rematching = Vec::with_capacity(updated.len());
    for after in updated {
        let mine: Vec<Waiting> = match waiting.get(&after.partner) {
            Some(found) if after.state != SubmissionState::Queued => {
                let references: HashSet<String> =
                    callback_rules::references(&after).into_iter().collect();
                found
                    .iter()
                    .filter(|w| references.contains(&w.reference) && taken.insert(w.stored.id))
                    .cloned()
                    .collect()
            }
            _ => Vec::new(),
        };
        rematching.push((after, mine));
    }
    let after = super::callbacks::rematch_all(d, rematching, now).await?;
    for (i, after) in order.into_iter().zip(after) {
        answers.push((i, Ok(Completion::Applied(Box::new(after)))));
    }
    Ok(answers)
}

/// Close the attempt of each lease that ended and return its work to the
/// queue or dead-letter it, as `policy`'s limits for its partner say,
/// journaling each; what became of them.
pub(crate) async fn reap<D: Driver>(
    d: &D,
    now: DateTime<Utc>,
    policy: &ReapPolicy,
) -> Result<Vec<Reaped>> {
    let expired = d.expired_leases(now, rules::REAP_BATCH).await?;
    let mut reaped = Vec::with_capacity(expired.len());
    for locked in expired {
        let id = locked.submission.id;
        let limits = policy.limits_for(&locked.submission.partner);
        let (report, change) = rules::expired(
            &locked.submission,
            locked.lease,
            locked.lease_expiries,
            &limits,
            now,
        );
        if let Some(token) = locked.lease {
            d.finish_attempt(id, token, &report).await?;
        }
        let after = apply_change(d, locked.submission, &change, now).await?;
        reaped.push(Reaped {
            id,
            partner: after.partner,
            state: after.state,
        });
    }
    Ok(reaped)
}
