//! Retention: payloads, raw callback bodies and personal data of finished
//! work are removed after their period; what happened (ids, states,
//! fingerprints, the timelines' skeleton) stays.
//!
//! No vacuum step, unlike the SQLite store: PostgreSQL's autovacuum reclaims
//! the dead row versions (and their TOASTed payloads) for reuse by the
//! table; a `VACUUM FULL` to shrink the files is an operator's choice, as it
//! locks the table.

use chrono::{DateTime, Utc};

use super::db::{Db, clean};
use crate::error::Result;
use crate::store::common::{PURGE_BATCH, state_names, to_millis};
use crate::store::rules::callbacks::{SETTLED_FOR_GOOD, UNKNOWN_NAME};
use crate::store::{PurgeCutoffs, PurgeReport};

/// One pass: at most [`PURGE_BATCH`] payloads and as many callback bodies.
///
/// Each batch is chosen as `seq = ANY(ARRAY(SELECT ... LIMIT n))`, which
/// the planner reaches by primary key; `seq IN (SELECT ... LIMIT n)` was
/// planned, as a prepared statement's generic plan, as a hash join over
/// every row of the table (the query-plan test, `plans.rs`, checks this).
///
/// Rows are taken `FOR UPDATE SKIP LOCKED`: a submission being replayed or
/// a callback being settled right now is left for a later pass (and the
/// lock re-checks the conditions on the row's newest version, so a
/// submission replayed meanwhile keeps its payload). Concurrent passes on
/// several instances take different rows.
pub(super) async fn purge_on(
    db: &Db<'_>,
    cutoffs: &PurgeCutoffs,
    now: DateTime<Utc>,
) -> Result<PurgeReport> {
    let cutoff = cutoffs.finished;
    let terminal = state_names(|s| s.is_terminal());
    let unfinished = state_names(|s| !s.is_terminal());
    // A result not yet delivered to the host keeps its document (and the
    // payload with it) until it is.
    let payloads = db
        .execute(
            "UPDATE liaison_submissions SET payload = NULL, result_document = NULL, payload_purged_at = $2 \
             WHERE seq = ANY(ARRAY(SELECT seq FROM liaison_submissions \
                 WHERE terminal_at IS NOT NULL AND terminal_at <= $1 AND payload IS NOT NULL \
                   AND state = ANY($3) \
                   AND NOT EXISTS (SELECT 1 FROM liaison_deliveries d \
                        WHERE d.submission_id = liaison_submissions.id AND d.state <> 'delivered') \
                 LIMIT $4 FOR UPDATE SKIP LOCKED))",
            &[&to_millis(cutoff), &to_millis(now), &terminal, &PURGE_BATCH],
            "purge payloads",
        )
        .await?;
    // Bodies of callbacks about finished (or no) submissions; never one still
    // waiting to be processed or matched.
    let bodies = db
        .execute(
            "UPDATE liaison_callbacks SET body = NULL, body_purged_at = $2 \
             WHERE seq = ANY(ARRAY(SELECT c.seq FROM liaison_callbacks c \
                 WHERE c.body IS NOT NULL \
                   AND c.received_at <= GREATEST($1::bigint, $5::bigint) \
                   AND c.received_at <= CASE c.disposition WHEN 'rejected' THEN $5::bigint ELSE $1::bigint END \
                   AND c.disposition NOT IN ('received', 'unmatched') \
                   AND NOT EXISTS (SELECT 1 FROM liaison_submissions s \
                        WHERE s.id = c.submission_id AND s.state = ANY($3)) \
                 LIMIT $4 FOR UPDATE OF c SKIP LOCKED))",
            &[
                &to_millis(cutoff),
                &to_millis(now),
                &unfinished,
                &PURGE_BATCH,
                &to_millis(cutoffs.rejected),
            ],
            "purge callback bodies",
        )
        .await?;
    // Rows of callbacks settled for good, past their longer period; never
    // one about a submission still unfinished. Timeline events refer to
    // callbacks only by id in their data: they stay.
    let settled_for_good: Vec<&str> = SETTLED_FOR_GOOD.iter().map(|d| d.as_str()).collect();
    let settled = db
        .execute(
            // Oldest first per disposition, through the (disposition,
            // received_at) index: once past rows are gone, a pass reads
            // nothing but the index's first entries. Filtered on all
            // dispositions at once, the plan read the whole table each pass.
            "DELETE FROM liaison_callbacks \
             WHERE seq = ANY(ARRAY(SELECT c.seq FROM unnest($1::text[]) d (disposition) \
                 CROSS JOIN LATERAL (SELECT c.seq FROM liaison_callbacks c \
                     WHERE c.disposition = d.disposition AND c.received_at <= $2 \
                       AND NOT EXISTS (SELECT 1 FROM liaison_submissions s \
                            WHERE s.id = c.submission_id AND s.state = ANY($3)) \
                     ORDER BY c.received_at LIMIT $4 FOR UPDATE SKIP LOCKED) c \
                 LIMIT $4))",
            &[
                &settled_for_good,
                &to_millis(cutoffs.settled_rows),
                &unfinished,
                &PURGE_BATCH,
            ],
            "delete settled callbacks",
        )
        .await?;
    // Rows of callbacks to names that are no configured partner.
    let unknown_name: Vec<&str> = UNKNOWN_NAME.iter().map(|d| d.as_str()).collect();
    let configured: Vec<String> = cutoffs
        .configured
        .iter()
        .map(|p| clean(p).into_owned())
        .collect();
    let unknown = db
        .execute(
            "DELETE FROM liaison_callbacks \
             WHERE seq = ANY(ARRAY(SELECT c.seq FROM liaison_callbacks c \
                 WHERE c.disposition = ANY($1) AND c.received_at <= $2 \
                   AND c.partner <> ALL($3) \
                 LIMIT $4 FOR UPDATE SKIP LOCKED))",
            &[
                &unknown_name,
                &to_millis(cutoffs.unknown_rows),
                &configured,
                &PURGE_BATCH,
            ],
            "delete callbacks to unknown names",
        )
        .await?;
    // Personal data of finished work and of callbacks, on the terms their
    // payloads and bodies go (what is cleared: rules::privacy).
    let personal = super::privacy::clear_finished(db, cutoff, now).await?;
    let callback_personal =
        super::privacy::clear_callbacks(db, cutoff, cutoffs.rejected, now).await?;
    let full = |n: u64| i64::try_from(n).is_ok_and(|n| n >= PURGE_BATCH);
    Ok(PurgeReport {
        payloads,
        callback_bodies: bodies,
        settled_callbacks: settled,
        unknown_callbacks: unknown,
        personal_data: personal,
        callback_personal_data: callback_personal,
        more: full(payloads)
            || full(bodies)
            || full(settled)
            || full(unknown)
            || full(personal)
            || full(callback_personal),
    })
}

/// Remove idempotency keys whose retention ended and whose submission is
/// terminal.
///
/// The work is the expired keys (their partial index) and one look by id
/// at each one's submission: `OFFSET 0` keeps the `NOT EXISTS` a per-key
/// probe. Without it, the plan a prepared statement settles on joined the
/// expired keys to every submission by a hash of the whole table.
pub(super) async fn prune_ledger_on(db: &Db<'_>, now: DateTime<Utc>) -> Result<u64> {
    let unfinished = state_names(|s| !s.is_terminal());
    db.execute(
        "DELETE FROM liaison_idempotency_keys k \
         WHERE k.expires_at IS NOT NULL AND k.expires_at <= $1 \
           AND NOT EXISTS (SELECT 1 FROM liaison_submissions s \
                WHERE s.id = k.submission_id AND s.state = ANY($2) OFFSET 0)",
        &[&to_millis(now), &unfinished],
        "prune idempotency ledger",
    )
    .await
}
