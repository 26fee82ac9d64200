//! Encodings both stores share: times as milliseconds since the epoch,
//! durations as milliseconds, texts cut to what the database keeps.

use std::time::Duration;

use chrono::{DateTime, Utc};

use crate::model::event::{Actor, Event, EventKind};
use crate::model::submission::{SubmissionId, SubmissionState};

/// Longest error or reason text kept in the database, in bytes.
pub(crate) const MAX_TEXT_BYTES: usize = 4096;

/// Rows changed per retention pass, so one pass never holds locks for long.
/// On SQLite a pass is one job of the one writer, and the host's enqueues
/// wait behind it: scenario 10 measured their median latency during a long
/// purge at ~10 ms with 1,000 rows a pass and ~3 ms with 250, the purge
/// taking ~15% longer.
pub(crate) const PURGE_BATCH: i64 = 250;

/// A time as stored: milliseconds since the Unix epoch.
pub(crate) fn to_millis(t: DateTime<Utc>) -> i64 {
    t.timestamp_millis()
}

/// The error for state changes whose rows were not where the changes
/// expected them (gone, or in another state than the one read under their
/// lock): `written` of `expected` matched. Under the rows' locks it does
/// not happen; should it, the transaction is refused rather than
/// miscounted.
pub(crate) fn rows_moved(expected: usize, written: u64) -> crate::error::Error {
    crate::error::Error::Storage {
        operation: "change state",
        source: format!(
            "{written} of {expected} submissions were in the state read under their lock"
        )
        .into(),
    }
}

/// `t` as a store keeps it: whole milliseconds. What a write answers with
/// is what a read of it returns.
pub(crate) fn stored_time(t: DateTime<Utc>) -> DateTime<Utc> {
    from_millis(to_millis(t))
}

/// A stored time; one outside chrono's range reads as the earliest time.
pub(crate) fn from_millis(ms: i64) -> DateTime<Utc> {
    DateTime::from_timestamp_millis(ms).unwrap_or(DateTime::<Utc>::MIN_UTC)
}

/// A duration in milliseconds, saturating ("for ever" stays for ever).
pub(crate) fn duration_ms(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

/// An enqueue in a host's transaction runs in a savepoint of its own
/// (this statement opens it; [`host_enqueue_end`] ends it): a failure
/// undoes the enqueue, every item of it, and the host's own work stays for
/// the host to commit or roll back. Both stores' SQL.
pub(crate) const HOST_ENQUEUE_BEGIN: &str = "SAVEPOINT liaison_enqueue";

/// What ends a host-transaction enqueue's savepoint after `result`: kept,
/// or undone (and the setting it made, on PostgreSQL, with it).
pub(crate) fn host_enqueue_end<T>(result: &crate::error::Result<T>) -> &'static str {
    match result {
        Ok(_) => "RELEASE SAVEPOINT liaison_enqueue",
        Err(_) => "ROLLBACK TO SAVEPOINT liaison_enqueue; RELEASE SAVEPOINT liaison_enqueue",
    }
}

/// `at` plus `d`, saturating at the end of representable time ("for
/// ever" stays for ever).
pub(crate) fn saturating_after(at: DateTime<Utc>, d: Duration) -> DateTime<Utc> {
    chrono::Duration::from_std(d)
        .ok()
        .and_then(|d| at.checked_add_signed(d))
        .unwrap_or(DateTime::<Utc>::MAX_UTC)
}

/// `at` plus `d` as stored, saturating at the end of representable time.
pub(crate) fn millis_after(at: DateTime<Utc>, d: Duration) -> i64 {
    to_millis(at).saturating_add(duration_ms(d))
}

/// A callback's dismissal as stored (`dismissed_by`, `dismissed_at`,
/// `dismissed_reason`, `dismissed_from`): `None` until it is dismissed. A
/// `dismissed_from` that names no disposition is an error.
pub(crate) fn dismissal(
    by: Option<String>,
    at: Option<i64>,
    reason: Option<String>,
    from: Option<String>,
) -> crate::error::Result<Option<crate::model::callback::Dismissal>> {
    let (Some(by), Some(at), Some(from)) = (by, at, from) else {
        return Ok(None);
    };
    Ok(Some(crate::model::callback::Dismissal {
        actor: crate::model::event::Actor::from_stored(by),
        at: from_millis(at),
        reason: reason.unwrap_or_default(),
        from: from.parse()?,
    }))
}

/// Cut a text to at most [`MAX_TEXT_BYTES`] on a character boundary.
pub(crate) fn bounded(text: Option<&str>) -> Option<String> {
    text.map(|t| {
        if t.len() <= MAX_TEXT_BYTES {
            t.to_owned()
        } else {
            let mut end = MAX_TEXT_BYTES;
            while !t.is_char_boundary(end) {
                end -= 1;
            }
            format!("{}…", &t[..end])
        }
    })
}

/// Selected in place of `payload` by a read without payloads: a JSON `null`
/// where one is kept, SQL NULL where retention purged it. Testing for NULL
/// does not read the value.
pub(crate) const PAYLOAD_KEPT: &str = "CASE WHEN payload IS NULL THEN NULL ELSE 'null' END";

/// `columns` with `column` replaced by `instead` when `leave_out` is set, so
/// the row mapping reads the same positions either way.
pub(crate) fn columns(
    columns: &'static str,
    leave_out: bool,
    column: &str,
    instead: &str,
) -> std::borrow::Cow<'static, str> {
    if leave_out {
        debug_assert!(columns.contains(column), "{column} not in {columns}");
        columns.replacen(column, instead, 1).into()
    } else {
        columns.into()
    }
}

/// The submission columns without the documents (payload, result) when
/// `leave_out` is set: the payload as [`PAYLOAD_KEPT`] (its column named
/// `payload_column`, as the store selects it), the result as NULL.
pub(crate) fn submission_columns(
    all: &'static str,
    leave_out: bool,
    payload_column: &str,
) -> std::borrow::Cow<'static, str> {
    let columns = columns(all, leave_out, payload_column, &format!("{PAYLOAD_KEPT},"));
    if leave_out {
        columns.replacen(", result_document", ", NULL", 1).into()
    } else {
        columns
    }
}

/// One hour in milliseconds: the unit of [`crate::store::HourlyCount`].
pub(crate) const HOUR_MS: i64 = 3_600_000;

/// A SQL count as u64 (counts are never negative).
pub(crate) fn count(n: i64) -> u64 {
    u64::try_from(n).unwrap_or(0)
}

/// The stored names of the states that `keep` selects.
pub(crate) fn state_names(keep: impl Fn(SubmissionState) -> bool) -> Vec<&'static str> {
    SubmissionState::ALL
        .into_iter()
        .filter(|s| keep(*s))
        .map(SubmissionState::as_str)
        .collect()
}

/// `states` as a quoted SQL list (`'queued', 'in_flight'`): our own
/// constants, never input. Written out where a parameter would hide from
/// the planner that the states are few (a partial index, a short range of
/// an index that carries the state).
pub(crate) fn state_list(states: impl IntoIterator<Item = SubmissionState>) -> String {
    states
        .into_iter()
        .map(|s| format!("'{}'", s.as_str()))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Validate an enqueue's submissions (all or none, as
/// [`crate::model::submission::validate_batch`]) and key their fingerprints
/// with the store's secret: what both stores record and the ledger
/// compares.
pub(crate) fn validate(
    batch: Vec<crate::model::submission::NewSubmission>,
    max_payload_bytes: usize,
    key: &crate::fingerprint::StoreKey,
) -> crate::error::Result<Vec<crate::model::submission::ValidSubmission>> {
    let mut valid = crate::model::submission::validate_batch(batch, max_payload_bytes)?;
    for v in &mut valid {
        v.fingerprint = key.fingerprint(&v.plain_fingerprint);
    }
    Ok(valid)
}

/// A callback as a store records it: its body hash keyed with the store's
/// secret, so a hash shown without a token cannot be checked against
/// guessed bodies.
pub(crate) fn keyed_callback(
    mut callback: crate::store::NewCallback,
    key: &crate::fingerprint::StoreKey,
) -> crate::store::NewCallback {
    callback.body_hash = key.body_hash(&callback.body_hash);
    callback
}

/// What both stores check before recording a partner's expected traffic:
/// a valid partner name and a setting that can be met.
pub(crate) fn check_expected_traffic(
    partner: &str,
    expected: Option<&crate::model::traffic::ExpectedTraffic>,
) -> crate::error::Result<()> {
    crate::model::submission::validate_partner(partner)?;
    if let Some(expected) = expected {
        expected.check()?;
    }
    Ok(())
}

/// A stored timeline line's columns, as both stores keep them (the time in
/// milliseconds, states and data as text).
pub(crate) struct StoredLine {
    pub(crate) seq: i64,
    pub(crate) at: i64,
    pub(crate) kind: String,
    pub(crate) from_state: Option<String>,
    pub(crate) to_state: Option<String>,
    pub(crate) actor: String,
    pub(crate) reason: Option<String>,
    pub(crate) data: Option<String>,
}

impl StoredLine {
    /// The line of submission `id`, or the column that does not decode and
    /// why (each store makes its own corruption error of it).
    pub(crate) fn decode(self, id: SubmissionId) -> Result<Event, (&'static str, String)> {
        let state = |column: &'static str, text: Option<String>| {
            text.map(|s| s.parse::<SubmissionState>())
                .transpose()
                .map_err(|e| (column, e.to_string()))
        };
        Ok(Event {
            seq: self.seq,
            submission_id: id,
            at: from_millis(self.at),
            kind: EventKind::from_name(&self.kind),
            from_state: state("from_state", self.from_state)?,
            to_state: state("to_state", self.to_state)?,
            actor: Actor::from_stored(self.actor),
            reason: self.reason,
            data: self
                .data
                .map(|d| serde_json::from_str(&d))
                .transpose()
                .map_err(|e| ("data", e.to_string()))?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn texts_are_cut_on_a_character_boundary() {
        assert_eq!(bounded(None), None);
        assert_eq!(bounded(Some("short")).as_deref(), Some("short"));
        let long = "é".repeat(MAX_TEXT_BYTES);
        let cut = bounded(Some(&long)).unwrap();
        assert!(cut.ends_with('…'));
        assert!(cut.len() <= MAX_TEXT_BYTES + '…'.len_utf8());
    }

    #[test]
    fn durations_saturate() {
        assert_eq!(duration_ms(Duration::MAX), i64::MAX);
        assert_eq!(
            millis_after(DateTime::<Utc>::MAX_UTC, Duration::MAX),
            i64::MAX
        );
        assert_eq!(from_millis(i64::MAX), DateTime::<Utc>::MIN_UTC);
    }
}
