//! Claims, results under a lease, and reaping leases that ended.

use chrono::{DateTime, Utc};

use super::journal;
use super::submissions::apply_change;
use crate::error::{Error, Result};
use crate::model::submission::{Submission, SubmissionId, SubmissionState};
use crate::store::driver::Driver;
use crate::store::rules::lease as rules;
use crate::store::rules::limits;
use crate::store::{
    AttemptReport, ClaimRequest, Claimed, Lease, LeaseToken, ReapPolicy, Reaped, StateChange,
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
    let grant = limits::grant(&request.limits, &state, request.limit, request.now);
    if grant.take == 0 {
        return Ok(Claimed {
            leases: Vec::new(),
            limited: grant.limited,
        });
    }
    let granted = ClaimRequest {
        limit: grant.take,
        ..request.clone()
    };
    let leases = claim_due(d, &granted).await?;
    if let Some(rate) = &request.limits.rate
        && !leases.is_empty()
    {
        let tat = limits::spend(rate, state.rate_tat_us, leases.len(), request.now);
        d.write_rate(&request.partner, tat).await?;
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
    let ids = d.due(request, blocking).await?;
    let expires_at = request.lease_end();
    let mut leases = Vec::with_capacity(ids.len());
    for id in ids {
        let token = LeaseToken::fresh();
        let Some(submission) = d.mark_claimed(id, token, expires_at, request.now).await? else {
            continue;
        };
        let attempt = submission.attempts;
        d.start_attempt(id, attempt, token, request.now).await?;
        journal(d, &rules::claimed(id, attempt, token, request.now)).await?;
        leases.push(Lease {
            submission,
            token,
            attempt,
            expires_at,
        });
    }
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
    let applied = apply_change(d, &locked.submission, &change, now).await?;
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
        let after = apply_change(d, &locked.submission, &change, now).await?;
        reaped.push(Reaped {
            id,
            partner: after.partner,
            state: after.state,
        });
    }
    Ok(reaped)
}
