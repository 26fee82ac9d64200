//! Reads: row mapping and the queries behind `get`, `get_by_key`, `list`,
//! `timeline` and `attempts`. Every statement is parameterised.

use std::collections::BTreeMap;

use tokio_postgres::Row;
use tokio_postgres::types::ToSql;

use super::db::{Db, clean, corrupt, get, sid, to_sid};
use crate::error::{Error, Result};
use crate::fingerprint::Fingerprint;
use crate::model::event::{Attempt, AttemptOutcome, Event};
use crate::model::money::currency_from_column;
use crate::model::result::ResultDocument;
use crate::model::submission::SubmissionState;
use crate::model::submission::{Submission, SubmissionId};
use crate::store::common::{
    HOUR_MS, StoredLine, count as count_u64, from_millis, state_list, submission_columns, to_millis,
};
use crate::store::rules;
use crate::store::{HourlyCount, HourlyQuery, ListFilter};

/// The columns [`submission_from_row`] reads, in its order (usable in
/// `SELECT` and `RETURNING`).
pub(super) const SUBMISSION_COLUMNS: &str = "id, partner, kind, payload::text, fingerprint, \
    idempotency_key, ordering_key, correlation::text, external_ref, business_value, priority, \
    state, attempts, due_at, not_before, lease_expires_at, result_deadline, created_at, \
    updated_at, terminal_at, last_error, replays, attempts_before_cycle, \
    COALESCE(cycle_started_at, created_at), result_document, currency, business_deadline";

/// How many columns [`SUBMISSION_COLUMNS`] has; a query may select more after them.
pub(super) const SUBMISSION_WIDTH: usize = 27;

fn count(column: &'static str, n: i32) -> Result<u32> {
    u32::try_from(n).map_err(|e| corrupt(column, e))
}

pub(super) fn submission_from_row(row: &Row) -> Result<Submission> {
    let payload: Option<String> = get(row, 3)?;
    let fingerprint: String = get(row, 4)?;
    let correlation: Option<String> = get(row, 7)?;
    let state: String = get(row, 11)?;
    Ok(Submission {
        id: to_sid("id", get(row, 0)?)?,
        partner: get(row, 1)?,
        kind: get(row, 2)?,
        payload: payload
            .map(|p| serde_json::from_str(&p))
            .transpose()
            .map_err(|e| corrupt("payload", e))?,
        fingerprint: Fingerprint::parse(&fingerprint)
            .ok_or_else(|| corrupt("fingerprint", "not a fingerprint"))?,
        idempotency_key: get(row, 5)?,
        ordering_key: get(row, 6)?,
        correlation: correlation
            .map(|c| serde_json::from_str::<BTreeMap<String, String>>(&c))
            .transpose()
            .map_err(|e| corrupt("correlation", e))?
            .unwrap_or_default(),
        external_ref: get(row, 8)?,
        business_value: get(row, 9)?,
        priority: get(row, 10)?,
        state: state.parse().map_err(|e| corrupt("state", e))?,
        attempts: count("attempts", get(row, 12)?)?,
        due_at: from_millis(get(row, 13)?),
        not_before: get::<Option<i64>>(row, 14)?.map(from_millis),
        lease_expires_at: get::<Option<i64>>(row, 15)?.map(from_millis),
        result_deadline: get::<Option<i64>>(row, 16)?.map(from_millis),
        created_at: from_millis(get(row, 17)?),
        updated_at: from_millis(get(row, 18)?),
        terminal_at: get::<Option<i64>>(row, 19)?.map(from_millis),
        last_error: get(row, 20)?,
        replays: count("replays", get(row, 21)?)?,
        attempts_before_cycle: count("attempts_before_cycle", get(row, 22)?)?,
        cycle_started_at: from_millis(get(row, 23)?),
        result: get::<Option<String>>(row, 24)?
            .map(|r| ResultDocument::from_stored(&r))
            .transpose()
            .map_err(|e| corrupt("result_document", e))?,
        currency: currency_from_column(get::<Option<String>>(row, 25)?.as_deref()),
        business_deadline: get::<Option<i64>>(row, 26)?.map(from_millis),
    })
}

pub(super) async fn get_on(db: &Db<'_>, id: SubmissionId) -> Result<Submission> {
    find_on(db, id)
        .await?
        .ok_or_else(|| Error::not_found("submission", id))
}

pub(super) async fn find_on(db: &Db<'_>, id: SubmissionId) -> Result<Option<Submission>> {
    db.query_opt(
        &format!("SELECT {SUBMISSION_COLUMNS} FROM liaison_submissions WHERE id = $1"),
        &[&sid(id)],
        "read submission",
    )
    .await?
    .as_ref()
    .map(submission_from_row)
    .transpose()
}

/// The submission `partner` enqueued under `key`: the one the ledger names
/// for it, else the newest sent under it now; `None` when there is none.
pub(super) async fn by_key_on(db: &Db<'_>, partner: &str, key: &str) -> Result<Option<Submission>> {
    db.query_opt(
        &format!(
            "SELECT {SUBMISSION_COLUMNS} FROM liaison_submissions WHERE id = COALESCE( \
                 (SELECT submission_id FROM liaison_idempotency_keys \
                  WHERE partner = $1 AND idempotency_key = $2), \
                 (SELECT id FROM liaison_submissions \
                  WHERE partner = $1 AND idempotency_key = $2 ORDER BY seq DESC LIMIT 1))"
        ),
        &[&partner, &key],
        "read submission by key",
    )
    .await?
    .as_ref()
    .map(submission_from_row)
    .transpose()
}

pub(super) async fn list_on(db: &Db<'_>, filter: &ListFilter) -> Result<Vec<Submission>> {
    let columns = submission_columns(SUBMISSION_COLUMNS, filter.without_payload, "payload::text,");
    let mut sql = format!("SELECT {columns} FROM liaison_submissions WHERE TRUE");
    let mut args: Vec<Box<dyn ToSql + Sync + Send>> = Vec::new();
    let mut arg = |sql: &mut String, clause: &str, value: Box<dyn ToSql + Sync + Send>| {
        args.push(value);
        sql.push_str(&clause.replace('?', &format!("${}", args.len())));
    };
    if let Some(partner) = &filter.partner {
        arg(
            &mut sql,
            " AND partner = ?",
            Box::new(clean(partner).into_owned()),
        );
    } else if filter.idempotency_key.is_some() || filter.external_ref.is_some() {
        // A key or the partner's reference without a partner (the ops
        // page's search) is looked up per known partner on the (partner,
        // key) and (partner, reference) indexes: every partner with
        // submissions has folded counts or pending deltas.
        sql.push_str(
            " AND partner IN (SELECT partner FROM liaison_state_counts \
             UNION SELECT partner FROM liaison_state_deltas)",
        );
    }
    let states = filter.distinct_states();
    match states.as_slice() {
        [] => {}
        // One state as an equality: a prepared plan cannot know that an
        // array holds one value, and with `= ANY` it reads every row in
        // the state and sorts them instead of reading the (partner, state,
        // seq) index in order up to the limit.
        [state] => arg(&mut sql, " AND state = ?", Box::new(state.as_str())),
        // Several in `seq` order: one ordered, limited read per state,
        // merged below, for the same reason.
        _ if !filter.by_deadline => {}
        states => {
            let states: Vec<String> = states.iter().map(|s| s.as_str().into()).collect();
            arg(&mut sql, " AND state = ANY(?)", Box::new(states));
        }
    }
    let per_state = states.len() > 1 && !filter.by_deadline;
    if let Some(kind) = &filter.kind {
        arg(
            &mut sql,
            " AND kind = ?",
            Box::new(clean(kind).into_owned()),
        );
    }
    if let Some(key) = &filter.idempotency_key {
        arg(
            &mut sql,
            " AND idempotency_key = ?",
            Box::new(clean(key).into_owned()),
        );
    }
    if let Some(key) = &filter.ordering_key {
        arg(
            &mut sql,
            " AND ordering_key = ?",
            Box::new(clean(key).into_owned()),
        );
    }
    if let Some(from) = filter.created_from {
        arg(&mut sql, " AND created_at >= ?", Box::new(to_millis(from)));
    }
    if let Some(until) = filter.created_until {
        arg(&mut sql, " AND created_at < ?", Box::new(to_millis(until)));
    }
    if let Some((name, value)) = &filter.correlation {
        // Checked by `ListFilter::check`: no NUL to clean.
        arg(
            &mut sql,
            " AND seq IN (SELECT submission_seq FROM liaison_correlations WHERE name = ?",
            Box::new(name.clone()),
        );
        arg(&mut sql, " AND value = ?", Box::new(value.clone()));
        if let Some(partner) = &filter.partner {
            arg(
                &mut sql,
                " AND partner = ?",
                Box::new(clean(partner).into_owned()),
            );
        }
        sql.push(')');
    }
    if let Some(since) = filter.updated_since {
        arg(&mut sql, " AND updated_at >= ?", Box::new(to_millis(since)));
    }
    if let Some(reference) = &filter.external_ref {
        arg(
            &mut sql,
            " AND external_ref = ?",
            Box::new(clean(reference).into_owned()),
        );
    }
    if let Some(value) = &filter.correlation_value {
        // Checked by `ListFilter::check`: no NUL to clean.
        arg(
            &mut sql,
            " AND seq IN (SELECT submission_seq FROM liaison_correlations WHERE value = ?)",
            Box::new(value.clone()),
        );
    }
    if let Some(after) = filter.after {
        let cursor = if filter.by_deadline {
            " AND (business_deadline, seq) > \
             (SELECT business_deadline, seq FROM liaison_submissions WHERE id = ?)"
        } else {
            " AND seq > (SELECT seq FROM liaison_submissions WHERE id = ?)"
        };
        arg(&mut sql, cursor, Box::new(sid(after)));
    }
    let limit = i64::try_from(filter.effective_limit()).unwrap_or(100);
    if filter.by_deadline {
        sql.push_str(&format!(
            " AND {} ORDER BY business_deadline, seq",
            crate::store::impact::DEADLINE_OPEN
        ));
        arg(&mut sql, " LIMIT ?", Box::new(limit));
    } else if per_state {
        // Each branch repeats the filters' numbered parameters.
        arg(&mut sql, " ORDER BY seq LIMIT ?", Box::new(limit));
        let limit_at = args.len();
        let base = sql
            .strip_suffix(&format!(" ORDER BY seq LIMIT ${limit_at}"))
            .unwrap_or(&sql)
            .replacen(
                &format!("SELECT {columns} FROM"),
                &format!("SELECT {columns}, seq AS list_seq FROM"),
                1,
            );
        let mut branches = Vec::with_capacity(states.len());
        // The states are written out (our own constants), so the plan
        // knows a rare state from a common one and reads its index range,
        // not the whole table in `seq` order.
        for (i, state) in states.iter().enumerate() {
            branches.push(format!(
                "(SELECT * FROM ({base} AND state = {} ORDER BY seq LIMIT ${limit_at}) b{i})",
                state_list([*state])
            ));
        }
        sql = format!(
            "SELECT * FROM ({}) m ORDER BY list_seq LIMIT ${limit_at}",
            branches.join(" UNION ALL ")
        );
    } else {
        arg(&mut sql, " ORDER BY seq LIMIT ?", Box::new(limit));
    }
    let params: Vec<&(dyn ToSql + Sync)> = args
        .iter()
        .map(|a| a.as_ref() as &(dyn ToSql + Sync))
        .collect();
    db.query(&sql, &params, "list submissions")
        .await?
        .iter()
        .map(submission_from_row)
        .collect()
}

/// The chart's counts: what was created in the window (through the index
/// of `(partner, created_at)`), and what is still unfinished from before it
/// (through the partner's unfinished states); neither reads the partner's
/// history. As one `OR`, the plan read every submission of the table.
pub(super) async fn hourly_on(db: &Db<'_>, query: &HourlyQuery) -> Result<Vec<HourlyCount>> {
    // The unfinished states are written out (our own constants): against
    // a parameter the planner cannot tell they are few of a long history.
    let unfinished = state_list(
        SubmissionState::ALL
            .into_iter()
            .filter(|s| !s.is_terminal()),
    );
    db.query(
        &format!("SELECT CASE WHEN created_at < $2::bigint THEN -1 WHEN created_at >= $3::bigint THEN $4::bigint \
                ELSE LEAST((created_at - $2::bigint) / $5::bigint, $4::bigint) END, \
         CASE WHEN terminal_at IS NULL THEN NULL WHEN terminal_at < $2::bigint THEN -1 \
                ELSE LEAST((terminal_at - $2::bigint) / $5::bigint, $4::bigint) END, \
         terminal_at IS NOT NULL AND terminal_at < $3::bigint, state, COUNT(*) \
         FROM (SELECT created_at, terminal_at, state FROM liaison_submissions \
                 WHERE partner = $1 AND created_at >= $2::bigint \
               UNION ALL \
               SELECT created_at, terminal_at, state FROM liaison_submissions \
                 WHERE partner = $1 AND state IN ({unfinished}) AND created_at < $2::bigint) s \
         GROUP BY 1, 2, 3, 4"),
        &[
            &clean(&query.partner).as_ref(),
            &to_millis(query.from),
            &to_millis(query.now),
            &i64::from(query.hours),
            &HOUR_MS,
        ],
        "count submissions by hour",
    )
    .await?
    .iter()
    .map(|row| {
        let state: String = get(row, 3)?;
        Ok(HourlyCount {
            created: get(row, 0)?,
            ended: get(row, 1)?,
            ended_by_now: get(row, 2)?,
            state: state
                .parse::<SubmissionState>()
                .map_err(|e| corrupt("state", e))?,
            count: count_u64(get(row, 4)?),
        })
    })
    .collect()
}

pub(super) async fn timeline_on(db: &Db<'_>, id: SubmissionId) -> Result<Vec<Event>> {
    let submission = get_on(db, id).await?;
    // The stored lines and the claims' places in one statement: one
    // snapshot, so a claim is never read without the lines written before it.
    let rows = db
        .query(
            "SELECT seq, at, kind, from_state, to_state, actor, reason, data::text, \
                    NULL::integer, NULL::uuid \
             FROM liaison_events WHERE submission_id = $1 \
             UNION ALL \
             SELECT claim_seq, started_at, NULL, NULL, NULL, NULL, NULL, NULL, number, lease_token \
             FROM liaison_attempts WHERE submission_id = $1 AND claim_seq IS NOT NULL \
             ORDER BY 1",
            &[&sid(id)],
            "read timeline",
        )
        .await?;
    let mut stored = Vec::new();
    let mut claims = Vec::new();
    for row in &rows {
        let seq: i64 = get(row, 0)?;
        let at: i64 = get(row, 1)?;
        let kind: Option<String> = get(row, 2)?;
        let Some(kind) = kind else {
            let attempt: i32 = get(row, 8)?;
            let token: uuid::Uuid = get(row, 9)?;
            claims.push(rules::ClaimRecord {
                attempt: u32::try_from(attempt).map_err(|e| corrupt("number", e))?,
                token: crate::store::LeaseToken::from_uuid(token),
                at: from_millis(at),
                seq,
            });
            continue;
        };
        let line = StoredLine {
            seq,
            at,
            kind,
            from_state: get(row, 3)?,
            to_state: get(row, 4)?,
            actor: get(row, 5)?,
            reason: get(row, 6)?,
            data: get(row, 7)?,
        };
        stored.push(
            line.decode(id)
                .map_err(|(column, why)| corrupt(column, why))?,
        );
    }
    Ok(rules::timeline(&submission, stored, claims))
}

pub(super) async fn attempts_on(db: &Db<'_>, id: SubmissionId) -> Result<Vec<Attempt>> {
    get_on(db, id).await?;
    let rows = db
        .query(
            "SELECT number, started_at, finished_at, outcome, http_status, error \
             FROM liaison_attempts WHERE submission_id = $1 ORDER BY number",
            &[&sid(id)],
            "read attempts",
        )
        .await?;
    rows.iter()
        .map(|row| {
            let outcome: Option<String> = get(row, 3)?;
            let status: Option<i32> = get(row, 4)?;
            Ok(Attempt {
                submission_id: id,
                number: count("number", get(row, 0)?)?,
                started_at: from_millis(get(row, 1)?),
                finished_at: get::<Option<i64>>(row, 2)?.map(from_millis),
                outcome: outcome.as_deref().and_then(AttemptOutcome::from_name),
                http_status: status.and_then(|s| u16::try_from(s).ok()),
                error: get(row, 5)?,
            })
        })
        .collect()
}
