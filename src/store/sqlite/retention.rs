//! Retention: payloads, raw callback bodies and personal data of finished
//! work are removed after their period; what happened (ids, states,
//! fingerprints, the timelines' skeleton) stays.

use chrono::{DateTime, Utc};
use rusqlite::{Connection, params};

use super::db::{db_err, to_millis};
use crate::error::Result;
use crate::model::submission::SubmissionState;
use crate::store::common::state_names;
use crate::store::rules::callbacks::{SETTLED_FOR_GOOD, UNKNOWN_NAME, sql_list};
use crate::store::{PurgeCutoffs, PurgeReport};

use crate::store::common::PURGE_BATCH as BATCH;

pub(crate) fn purge_on(
    conn: &Connection,
    cutoffs: &PurgeCutoffs,
    now: DateTime<Utc>,
) -> Result<PurgeReport> {
    let cutoff = cutoffs.finished;
    let terminal: Vec<String> = SubmissionState::ALL
        .into_iter()
        .filter(|s| s.is_terminal())
        .map(|s| format!("'{}'", s.as_str()))
        .collect();
    let terminal = terminal.join(", ");
    // Batches come from the index of what is still to purge (an entry
    // leaves it with its payload), whatever SQLite would choose: through the
    // state index it would walk every finished submission, purged or not.
    // A result not yet delivered to the host keeps its document (and the
    // payload with it) until it is.
    let payloads = conn
        .prepare_cached(&format!(
            "UPDATE liaison_submissions SET payload = NULL, result_document = NULL, payload_purged_at = ?2 \
             WHERE seq IN (SELECT seq FROM liaison_submissions \
                 INDEXED BY liaison_submissions_unpurged \
                 WHERE terminal_at IS NOT NULL AND terminal_at <= ?1 AND payload IS NOT NULL \
                   AND state IN ({terminal}) \
                   AND NOT EXISTS (SELECT 1 FROM liaison_deliveries d \
                        WHERE d.submission_id = liaison_submissions.id AND d.state <> 'delivered') \
                 LIMIT ?3)"
        ))
        .and_then(|mut stmt| stmt.execute(params![to_millis(cutoff), to_millis(now), BATCH]))
        .map_err(db_err("purge payloads"))?;
    // Bodies of callbacks about finished (or no) submissions; never one still
    // waiting to be processed or matched. Rejected ones by their own cutoff.
    let bodies = conn
        .prepare_cached(&format!(
            "UPDATE liaison_callbacks SET body = NULL, body_purged_at = ?2 \
             WHERE seq IN (SELECT c.seq FROM liaison_callbacks c \
                 WHERE c.body IS NOT NULL \
                   AND c.received_at <= max(?1, ?4) \
                   AND c.received_at <= CASE c.disposition WHEN 'rejected' THEN ?4 ELSE ?1 END \
                   AND c.disposition NOT IN ('received', 'unmatched') \
                   AND NOT EXISTS (SELECT 1 FROM liaison_submissions s \
                        WHERE s.id = c.submission_id AND s.state NOT IN ({terminal})) \
                 LIMIT ?3)"
        ))
        .and_then(|mut stmt| {
            stmt.execute(params![
                to_millis(cutoff),
                to_millis(now),
                BATCH,
                to_millis(cutoffs.rejected)
            ])
        })
        .map_err(db_err("purge callback bodies"))?;
    // Rows of callbacks settled for good, past their longer period; never
    // one about a submission still unfinished. Timeline events refer to
    // callbacks only by id in their data: they stay.
    let settled = conn
        .prepare_cached(&format!(
            "DELETE FROM liaison_callbacks \
             WHERE seq IN (SELECT c.seq FROM liaison_callbacks c \
                 INDEXED BY liaison_callbacks_settled \
                 WHERE c.disposition IN ({}) AND c.received_at <= ?1 \
                   AND NOT EXISTS (SELECT 1 FROM liaison_submissions s \
                        WHERE s.id = c.submission_id AND s.state NOT IN ({terminal})) \
                 LIMIT ?2)",
            sql_list(&SETTLED_FOR_GOOD)
        ))
        .and_then(|mut stmt| stmt.execute(params![to_millis(cutoffs.settled_rows), BATCH]))
        .map_err(db_err("delete settled callbacks"))?;
    // Rows of callbacks to names that are no configured partner.
    let configured =
        serde_json::to_string(&cutoffs.configured).map_err(|e| crate::error::Error::Storage {
            operation: "encode configured partners",
            source: Box::new(e),
        })?;
    let unknown = conn
        .prepare_cached(&format!(
            "DELETE FROM liaison_callbacks \
             WHERE seq IN (SELECT c.seq FROM liaison_callbacks c \
                 INDEXED BY liaison_callbacks_settled \
                 WHERE c.disposition IN ({}) AND c.received_at <= ?1 \
                   AND c.partner NOT IN (SELECT value FROM json_each(?2)) \
                 LIMIT ?3)",
            sql_list(&UNKNOWN_NAME)
        ))
        .and_then(|mut stmt| {
            stmt.execute(params![to_millis(cutoffs.unknown_rows), configured, BATCH])
        })
        .map_err(db_err("delete callbacks to unknown names"))?;
    // Personal data of finished work and of callbacks, on the terms their
    // payloads and bodies go (what is cleared: rules::privacy).
    let personal = super::privacy::clear_finished(conn, cutoff, now)?;
    let callback_personal = super::privacy::clear_callbacks(conn, cutoff, cutoffs.rejected, now)?;
    // Give freed pages back to the file (a no-op unless auto_vacuum is
    // incremental, which new databases are).
    // Each step of this pragma frees one page: step it to the end.
    conn.prepare_cached("PRAGMA incremental_vacuum")
        .and_then(|mut stmt| {
            let mut rows = stmt.query([])?;
            while rows.next()?.is_some() {}
            Ok(())
        })
        .map_err(db_err("incremental vacuum"))?;
    Ok(PurgeReport {
        payloads: payloads as u64,
        callback_bodies: bodies as u64,
        settled_callbacks: settled as u64,
        unknown_callbacks: unknown as u64,
        personal_data: personal,
        callback_personal_data: callback_personal,
        more: [payloads, bodies, settled, unknown]
            .into_iter()
            .any(|n| n as i64 == BATCH)
            || [personal, callback_personal]
                .into_iter()
                .any(|n| n as i64 == BATCH),
    })
}

/// Remove idempotency keys whose retention ended and whose submission is
/// terminal.
pub(crate) fn prune_ledger_on(conn: &Connection, now: DateTime<Utc>) -> Result<u64> {
    // The states are our own constants, never input.
    let unfinished: Vec<String> = state_names(|s| !s.is_terminal())
        .into_iter()
        .map(|s| format!("'{s}'"))
        .collect();
    let removed = conn
        .prepare_cached(&format!(
            "DELETE FROM liaison_idempotency_keys \
             WHERE expires_at IS NOT NULL AND expires_at <= ?1 \
               AND NOT EXISTS (SELECT 1 FROM liaison_submissions s \
                    WHERE s.id = liaison_idempotency_keys.submission_id \
                      AND s.state IN ({}))",
            unfinished.join(", ")
        ))
        .and_then(|mut stmt| stmt.execute(params![to_millis(now)]))
        .map_err(db_err("prune idempotency ledger"))?;
    Ok(removed as u64)
}
