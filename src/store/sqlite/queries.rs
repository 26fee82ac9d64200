//! Reads: row mapping and the queries behind `get`, `get_by_key`, `list`,
//! `timeline` and `attempts`. Every statement is parameterised and cached.

use std::collections::BTreeMap;

use rusqlite::types::Value as SqlValue;
use rusqlite::{Connection, OptionalExtension, Row, params};

use super::db::{db_err, from_millis, parse_column, to_millis};
use crate::error::{Error, Result};
use crate::fingerprint::Fingerprint;
use crate::model::event::{Attempt, AttemptOutcome, Event};
use crate::model::money::currency_from_column;
use crate::model::result::ResultDocument;
use crate::model::submission::SubmissionState;
use crate::model::submission::{Submission, SubmissionId};
use crate::store::common::{HOUR_MS, StoredLine, count, state_list, submission_columns};
use crate::store::rules;
use crate::store::{HourlyCount, HourlyQuery, ListFilter};

/// The columns [`submission_from_row`] maps, as a literal, so that the
/// statements run once per row are `concat!`ed at compile time rather than
/// formatted on every call.
macro_rules! submission_columns_sql {
    () => {
        "id, partner, kind, payload, fingerprint, idempotency_key, \
         ordering_key, correlation, external_ref, business_value, priority, state, attempts, due_at, \
         not_before, lease_expires_at, result_deadline, created_at, updated_at, terminal_at, last_error, \
         replays, attempts_before_cycle, COALESCE(cycle_started_at, created_at), result_document, currency, business_deadline"
    };
}
pub(super) use submission_columns_sql;

pub(super) const SUBMISSION_COLUMNS: &str = submission_columns_sql!();

/// How many columns [`SUBMISSION_COLUMNS`] has; a query may select more after them.
pub(super) const SUBMISSION_WIDTH: usize = 27;

pub(super) fn corrupt(column: &'static str, detail: impl std::fmt::Display) -> rusqlite::Error {
    rusqlite::Error::FromSqlConversionFailure(
        0,
        rusqlite::types::Type::Text,
        format!("column {column}: {detail}").into(),
    )
}

pub(super) fn submission_from_row(row: &Row<'_>) -> rusqlite::Result<Submission> {
    let id: String = row.get(0)?;
    let payload: Option<String> = row.get(3)?;
    let fingerprint: String = row.get(4)?;
    let correlation: Option<String> = row.get(7)?;
    let state: String = row.get(11)?;
    Ok(Submission {
        id: id.parse().map_err(|e| corrupt("id", e))?,
        partner: row.get(1)?,
        kind: row.get(2)?,
        payload: payload
            .map(|p| serde_json::from_str(&p))
            .transpose()
            .map_err(|e| corrupt("payload", e))?,
        fingerprint: Fingerprint::parse(&fingerprint)
            .ok_or_else(|| corrupt("fingerprint", "not a fingerprint"))?,
        idempotency_key: row.get(5)?,
        ordering_key: row.get(6)?,
        correlation: correlation
            .map(|c| serde_json::from_str::<BTreeMap<String, String>>(&c))
            .transpose()
            .map_err(|e| corrupt("correlation", e))?
            .unwrap_or_default(),
        external_ref: row.get(8)?,
        business_value: row.get(9)?,
        priority: row.get(10)?,
        state: state.parse().map_err(|e| corrupt("state", e))?,
        attempts: row.get(12)?,
        due_at: from_millis(row.get(13)?),
        not_before: row.get::<_, Option<i64>>(14)?.map(from_millis),
        lease_expires_at: row.get::<_, Option<i64>>(15)?.map(from_millis),
        result_deadline: row.get::<_, Option<i64>>(16)?.map(from_millis),
        created_at: from_millis(row.get(17)?),
        updated_at: from_millis(row.get(18)?),
        terminal_at: row.get::<_, Option<i64>>(19)?.map(from_millis),
        last_error: row.get(20)?,
        replays: row.get(21)?,
        attempts_before_cycle: row.get(22)?,
        cycle_started_at: from_millis(row.get(23)?),
        result: row
            .get::<_, Option<String>>(24)?
            .map(|r| ResultDocument::from_stored(&r))
            .transpose()
            .map_err(|e| corrupt("result_document", e))?,
        currency: currency_from_column(row.get::<_, Option<String>>(25)?.as_deref()),
        business_deadline: row.get::<_, Option<i64>>(26)?.map(from_millis),
    })
}

pub(crate) fn get_on(conn: &Connection, id: SubmissionId) -> Result<Submission> {
    find_on(conn, id)?.ok_or_else(|| Error::not_found("submission", id))
}

pub(super) fn find_on(conn: &Connection, id: SubmissionId) -> Result<Option<Submission>> {
    let mut stmt = conn
        .prepare_cached(concat!(
            "SELECT ",
            submission_columns_sql!(),
            " FROM liaison_submissions WHERE id = ?1"
        ))
        .map_err(db_err("read submission"))?;
    stmt.query_row(params![id.to_string()], submission_from_row)
        .optional()
        .map_err(db_err("read submission"))
}

/// The submission `partner` enqueued under `key`: the one the ledger names
/// for it, else the newest sent under it now; `None` when there is none.
pub(crate) fn by_key_on(conn: &Connection, partner: &str, key: &str) -> Result<Option<Submission>> {
    let mut stmt = conn
        .prepare_cached(&format!(
            "SELECT {SUBMISSION_COLUMNS} FROM liaison_submissions WHERE id = COALESCE( \
                 (SELECT submission_id FROM liaison_idempotency_keys \
                  WHERE partner = ?1 AND idempotency_key = ?2), \
                 (SELECT id FROM liaison_submissions \
                  WHERE partner = ?1 AND idempotency_key = ?2 ORDER BY seq DESC LIMIT 1))"
        ))
        .map_err(db_err("read submission by key"))?;
    stmt.query_row(params![partner, key], submission_from_row)
        .optional()
        .map_err(db_err("read submission by key"))
}

/// Every partner with submissions: the state counts hold a row for each.
const KNOWN_PARTNERS: &str = " AND partner IN (SELECT partner FROM liaison_state_counts)";

pub(crate) fn list_on(conn: &Connection, filter: &ListFilter) -> Result<Vec<Submission>> {
    let columns = submission_columns(SUBMISSION_COLUMNS, filter.without_payload, "payload,");
    // SQLite has no statistics for the new filters (most hosts never run
    // ANALYZE) and would walk the table in `seq` order: a correlation
    // filter is read from its index and the submissions by rowid, a
    // filter by time of change from the index of `updated_at`.
    // A key or the partner's reference without a partner (the ops page's
    // search) is looked up per known partner on the (partner, key) and
    // (partner, reference) indexes, never by walking the table.
    let per_partner = filter.partner.is_none()
        && (filter.idempotency_key.is_some() || filter.external_ref.is_some());
    let hint = if filter.correlation.is_some() {
        " NOT INDEXED"
    } else if filter.updated_since.is_some() {
        " INDEXED BY liaison_submissions_updated"
    } else if filter.partner.is_some() && filter.created_from.is_some() {
        // The window, not the partner's history (migration 0026).
        " INDEXED BY liaison_submissions_created"
    } else if per_partner && filter.idempotency_key.is_some() {
        " INDEXED BY liaison_submissions_key"
    } else if per_partner {
        " INDEXED BY liaison_submissions_external_ref"
    } else {
        ""
    };
    let mut sql = format!("SELECT {columns} FROM liaison_submissions{hint} WHERE 1 = 1");
    let mut args: Vec<SqlValue> = Vec::new();
    let mut arg = |sql: &mut String, clause: &str, value: SqlValue| {
        args.push(value);
        sql.push_str(&clause.replace('?', &format!("?{}", args.len())));
    };
    if let Some(partner) = &filter.partner {
        arg(&mut sql, " AND partner = ?", partner.clone().into());
    } else if per_partner {
        sql.push_str(KNOWN_PARTNERS);
    }
    // Several states in `seq` order: one ordered, limited read per state,
    // merged below. As one `state IN (...)` the order could not come from
    // the index, and every row in those states was read and sorted.
    let states = filter.distinct_states();
    let per_state = states.len() > 1 && !filter.by_deadline;
    if let [state] = states.as_slice() {
        arg(&mut sql, " AND state = ?", state.as_str().to_owned().into());
    } else if !states.is_empty() && !per_state {
        sql.push_str(" AND state IN (");
        for (i, state) in states.iter().enumerate() {
            if i > 0 {
                sql.push_str(", ");
            }
            arg(&mut sql, "?", state.as_str().to_owned().into());
        }
        sql.push(')');
    }
    if let Some(kind) = &filter.kind {
        arg(&mut sql, " AND kind = ?", kind.clone().into());
    }
    if let Some(key) = &filter.idempotency_key {
        arg(&mut sql, " AND idempotency_key = ?", key.clone().into());
    }
    if let Some(key) = &filter.ordering_key {
        arg(&mut sql, " AND ordering_key = ?", key.clone().into());
    }
    if let Some(from) = filter.created_from {
        arg(&mut sql, " AND created_at >= ?", to_millis(from).into());
    }
    if let Some(until) = filter.created_until {
        arg(&mut sql, " AND created_at < ?", to_millis(until).into());
    }
    if let Some((name, value)) = &filter.correlation {
        arg(
            &mut sql,
            " AND seq IN (SELECT submission_seq FROM liaison_correlations WHERE name = ?",
            name.clone().into(),
        );
        arg(&mut sql, " AND value = ?", value.clone().into());
        if let Some(partner) = &filter.partner {
            arg(&mut sql, " AND partner = ?", partner.clone().into());
        }
        sql.push(')');
    }
    if let Some(since) = filter.updated_since {
        arg(&mut sql, " AND updated_at >= ?", to_millis(since).into());
    }
    if let Some(reference) = &filter.external_ref {
        arg(&mut sql, " AND external_ref = ?", reference.clone().into());
    }
    if let Some(value) = &filter.correlation_value {
        arg(
            &mut sql,
            " AND seq IN (SELECT submission_seq FROM liaison_correlations WHERE value = ?)",
            value.clone().into(),
        );
    }
    if let Some(after) = filter.after {
        let cursor = if filter.by_deadline {
            " AND (business_deadline, seq) > \
             (SELECT business_deadline, seq FROM liaison_submissions WHERE id = ?)"
        } else {
            " AND seq > (SELECT seq FROM liaison_submissions WHERE id = ?)"
        };
        arg(&mut sql, cursor, after.to_string().into());
    }
    let limit = i64::try_from(filter.effective_limit()).unwrap_or(100);
    if filter.by_deadline {
        sql.push_str(&format!(
            " AND {} ORDER BY business_deadline, seq",
            crate::store::impact::DEADLINE_OPEN
        ));
        arg(&mut sql, " LIMIT ?", limit.into());
    } else if per_state {
        // Each branch repeats the filters' numbered parameters.
        arg(&mut sql, " ORDER BY seq LIMIT ?", limit.into());
        let limit_at = args.len();
        let (base, tail) = sql
            .rsplit_once(" ORDER BY seq LIMIT ")
            .unwrap_or((sql.as_str(), ""));
        let base = base.replacen(
            &format!("SELECT {columns} FROM"),
            &format!("SELECT {columns}, seq AS list_seq FROM"),
            1,
        );
        let mut branches = Vec::with_capacity(states.len());
        for state in &states {
            args.push(state.as_str().to_owned().into());
            branches.push(format!(
                "SELECT * FROM ({base} AND state = ?{} ORDER BY seq LIMIT {tail})",
                args.len()
            ));
        }
        sql = format!(
            "SELECT * FROM ({}) ORDER BY list_seq LIMIT ?{limit_at}",
            branches.join(" UNION ALL ")
        );
    } else {
        arg(&mut sql, " ORDER BY seq LIMIT ?", limit.into());
    }
    let mut stmt = conn
        .prepare_cached(&sql)
        .map_err(db_err("list submissions"))?;
    let rows = stmt
        .query_map(rusqlite::params_from_iter(args), submission_from_row)
        .map_err(db_err("list submissions"))?;
    rows.collect::<rusqlite::Result<Vec<_>>>()
        .map_err(db_err("list submissions"))
}

/// The chart's counts: what was created in the window (through the index
/// of `(partner, created_at)`), and what is still unfinished from before it
/// (through the partner's unfinished states); neither reads the partner's
/// history. As one `OR`, it walked every submission of the partner.
pub(crate) fn hourly_on(conn: &Connection, query: &HourlyQuery) -> Result<Vec<HourlyCount>> {
    let unfinished = state_list(
        SubmissionState::ALL
            .into_iter()
            .filter(|s| !s.is_terminal()),
    );
    let sql = format!(
        "SELECT CASE WHEN created_at < ?2 THEN -1 WHEN created_at >= ?3 THEN ?4 \
                ELSE MIN((created_at - ?2) / ?5, ?4) END, \
         CASE WHEN terminal_at IS NULL THEN NULL WHEN terminal_at < ?2 THEN -1 \
                ELSE MIN((terminal_at - ?2) / ?5, ?4) END, \
         terminal_at IS NOT NULL AND terminal_at < ?3, state, COUNT(*) \
         FROM (SELECT created_at, terminal_at, state \
                 FROM liaison_submissions INDEXED BY liaison_submissions_created \
                 WHERE partner = ?1 AND created_at >= ?2 \
               UNION ALL \
               SELECT created_at, terminal_at, state \
                 FROM liaison_submissions INDEXED BY liaison_submissions_partner_state \
                 WHERE partner = ?1 AND state IN ({unfinished}) AND created_at < ?2) \
         GROUP BY 1, 2, 3, 4"
    );
    let args = params![
        query.partner,
        to_millis(query.from),
        to_millis(query.now),
        i64::from(query.hours),
        HOUR_MS,
    ];
    let mut stmt = conn
        .prepare_cached(&sql)
        .map_err(db_err("count submissions by hour"))?;
    let rows = stmt
        .query_map(args, |row| {
            let state: String = row.get(3)?;
            Ok(HourlyCount {
                created: row.get(0)?,
                ended: row.get(1)?,
                ended_by_now: row.get(2)?,
                state: state
                    .parse::<SubmissionState>()
                    .map_err(|e| corrupt("state", e))?,
                count: count(row.get(4)?),
            })
        })
        .map_err(db_err("count submissions by hour"))?;
    rows.collect::<rusqlite::Result<Vec<_>>>()
        .map_err(db_err("count submissions by hour"))
}

pub(crate) fn timeline_on(conn: &Connection, id: SubmissionId) -> Result<Vec<Event>> {
    let submission = get_on(conn, id)?;
    // The stored lines and the claims' places in one statement: one
    // snapshot, so a claim is never read without the lines written before it.
    let mut stmt = conn
        .prepare_cached(
            "SELECT seq, at, kind, from_state, to_state, actor, reason, data, NULL, NULL \
             FROM liaison_events WHERE submission_id = ?1 \
             UNION ALL \
             SELECT claim_seq, started_at, NULL, NULL, NULL, NULL, NULL, NULL, number, lease_token \
             FROM liaison_attempts WHERE submission_id = ?1 AND claim_seq IS NOT NULL \
             ORDER BY 1",
        )
        .map_err(db_err("read timeline"))?;
    /// A row of the statement: a stored line, or a claim's place.
    enum Read {
        Line(StoredLine),
        Claim(u32, String, i64, i64),
    }
    let rows = stmt
        .query_map(params![id.to_string()], |row| {
            let (seq, at) = (row.get(0)?, row.get(1)?);
            Ok(match row.get::<_, Option<String>>(2)? {
                Some(kind) => Read::Line(StoredLine {
                    seq,
                    at,
                    kind,
                    from_state: row.get(3)?,
                    to_state: row.get(4)?,
                    actor: row.get(5)?,
                    reason: row.get(6)?,
                    data: row.get(7)?,
                }),
                None => Read::Claim(row.get(8)?, row.get(9)?, at, seq),
            })
        })
        .map_err(db_err("read timeline"))?;
    let mut stored = Vec::new();
    let mut claims = Vec::new();
    for read in rows {
        match read.map_err(db_err("read timeline"))? {
            Read::Line(line) => stored.push(
                line.decode(id)
                    .map_err(|(column, why)| db_err("read timeline")(corrupt(column, why)))?,
            ),
            Read::Claim(attempt, token, at, seq) => claims.push(rules::ClaimRecord {
                attempt,
                token: parse_column("lease_token", &token)?,
                at: from_millis(at),
                seq,
            }),
        }
    }
    Ok(rules::timeline(&submission, stored, claims))
}

pub(crate) fn attempts_on(conn: &Connection, id: SubmissionId) -> Result<Vec<Attempt>> {
    get_on(conn, id)?;
    let mut stmt = conn
        .prepare_cached(
            "SELECT number, started_at, finished_at, outcome, http_status, error \
             FROM liaison_attempts WHERE submission_id = ?1 ORDER BY number",
        )
        .map_err(db_err("read attempts"))?;
    let rows = stmt
        .query_map(params![id.to_string()], |row| {
            let outcome: Option<String> = row.get(3)?;
            Ok(Attempt {
                submission_id: id,
                number: row.get(0)?,
                started_at: from_millis(row.get(1)?),
                finished_at: row.get::<_, Option<i64>>(2)?.map(from_millis),
                outcome: outcome.as_deref().and_then(AttemptOutcome::from_name),
                http_status: row.get(4)?,
                error: row.get(5)?,
            })
        })
        .map_err(db_err("read attempts"))?;
    rows.collect::<rusqlite::Result<Vec<_>>>()
        .map_err(db_err("read attempts"))
}
