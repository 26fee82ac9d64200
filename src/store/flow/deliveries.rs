//! Result deliveries: recorded with the change that finishes a submission,
//! claimed under leases, ended under them, re-run by hand.

use chrono::{DateTime, Utc};

use super::journal;
use crate::error::{Error, Result};
use crate::model::delivery::{Delivery, DeliveryId};
use crate::model::submission::{Submission, SubmissionState};
use crate::store::driver::Driver;
use crate::store::rules::delivery as rules;
use crate::store::{DeliveryClaim, DeliveryEnd, DeliveryLease, LeaseToken, Note};

/// After a change from `from` to `after` (same transaction): record the
/// result's delivery if the change finished the submission.
pub(crate) async fn record<D: Driver>(
    d: &D,
    from: SubmissionState,
    after: &Submission,
    now: DateTime<Utc>,
) -> Result<()> {
    if rules::finishes(from, after.state) {
        d.insert_delivery(DeliveryId::new(), after, now).await?;
    }
    Ok(())
}

/// Claim due deliveries under fresh leases.
pub(crate) async fn claim<D: Driver>(d: &D, claim: &DeliveryClaim) -> Result<Vec<DeliveryLease>> {
    if claim.limit == 0 || claim.partners.is_empty() {
        return Ok(Vec::new());
    }
    // Each partner's oldest due deliveries, then the oldest of those: a
    // partner's due index read in order, never a sort of everything
    // pending (which made each claim cost as much as the backlog).
    let mut partners: Vec<&str> = claim.partners.iter().map(String::as_str).collect();
    partners.sort_unstable();
    partners.dedup();
    let mut due = Vec::new();
    for partner in partners {
        due.extend(d.due_deliveries(partner, claim.now, claim.limit).await?);
    }
    due.sort_by_key(|row| (row.due_at, row.seq));
    due.truncate(claim.limit);
    let expires_at = claim.lease_end();
    let mut leases = Vec::new();
    for id in due.into_iter().map(|row| row.id) {
        let token = LeaseToken::fresh();
        if let Some(delivery) = d
            .mark_delivery_claimed(id, token, expires_at, claim.now)
            .await?
        {
            leases.push(DeliveryLease {
                delivery,
                token,
                expires_at,
            });
        }
    }
    Ok(leases)
}

/// End a claimed delivery under its lease, journaling it.
pub(crate) async fn finish<D: Driver>(
    d: &D,
    lease: &DeliveryLease,
    end: &DeliveryEnd,
    now: DateTime<Utc>,
) -> Result<()> {
    let id = lease.delivery.id;
    let (current, token) = d
        .lock_delivery(id)
        .await?
        .ok_or_else(|| Error::not_found("delivery", id))?;
    let (write, event) = rules::end(&current, token, lease, end, now)?;
    d.write_delivery(&write).await?;
    journal(d, &event).await
}

/// Re-run a parked delivery.
pub(crate) async fn rerun<D: Driver>(
    d: &D,
    id: DeliveryId,
    note: &Note,
    now: DateTime<Utc>,
) -> Result<Delivery> {
    let (current, _) = d
        .lock_delivery(id)
        .await?
        .ok_or_else(|| Error::not_found("delivery", id))?;
    let (write, event) = rules::rerun(&current, note, now)?;
    let after = d.write_delivery(&write).await?;
    journal(d, &event).await?;
    Ok(after)
}
