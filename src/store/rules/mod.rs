//! The rules of the outbox, decided once for every store.
//!
//! Each function here is pure: it takes what a store read (a submission,
//! the ledger's entry for a key, an earlier callback) and returns what to
//! write (a row update, a timeline event, a callback's disposition) or the
//! typed error that refuses the operation. No function reads a clock, a
//! database or the network. The orchestration that reads, calls the rule
//! and writes is [`super::flow`], written once over [`super::driver::Driver`];
//! each store only implements the driver's reads, locks and writes.

pub(crate) mod callbacks;
pub(crate) mod circuit;
pub(crate) mod delivery;
pub(crate) mod event;
pub(crate) mod lease;
pub(crate) mod ledger;
pub(crate) mod limits;
pub(crate) mod lookup;
pub(crate) mod notify;
pub(crate) mod privacy;
pub(crate) mod replay;
pub(crate) mod role;
pub(crate) mod transition;

pub(crate) use event::{ClaimRecord, NewEvent, timeline};

/// Submissions as a store would have read them, for the rules' own tests.
#[cfg(test)]
pub(crate) mod fixtures {
    use chrono::{DateTime, TimeZone, Utc};
    use serde_json::json;

    use crate::fingerprint::Fingerprint;
    use crate::model::submission::{Submission, SubmissionId, SubmissionState};

    /// A time, in milliseconds since the epoch.
    pub(crate) fn t(ms: i64) -> DateTime<Utc> {
        Utc.timestamp_millis_opt(ms).unwrap()
    }

    /// A submission of partner `bank` with key `pay-1`, in `state`.
    pub(crate) fn submission(state: SubmissionState) -> Submission {
        let payload = json!({"cents": 500});
        Submission {
            id: SubmissionId::new(),
            partner: "bank".into(),
            kind: "payment".into(),
            fingerprint: Fingerprint::of(&payload),
            payload: Some(payload),
            idempotency_key: "pay-1".into(),
            ordering_key: None,
            correlation: Default::default(),
            external_ref: None,
            business_value: None,
            currency: None,
            business_deadline: None,
            priority: 0,
            state,
            attempts: 1,
            due_at: t(1_000),
            not_before: None,
            lease_expires_at: None,
            result_deadline: None,
            created_at: t(1_000),
            updated_at: t(1_000),
            terminal_at: None,
            last_error: None,
            replays: 0,
            result: None,
            attempts_before_cycle: 0,
            cycle_started_at: t(1_000),
        }
    }
}
