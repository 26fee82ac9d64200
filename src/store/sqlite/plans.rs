//! The hot statements use indexes: a test that records every statement the
//! store runs while enqueueing, dispatching, ingesting callbacks, reporting
//! health, listing and looking up by the host's keys, then asks SQLite for
//! each one's `EXPLAIN QUERY PLAN` and refuses a full `SCAN` of the tables
//! that grow with history (submissions, callbacks, events, attempts, the
//! idempotency ledger, correlation fields).
//!
//! Statements are recorded with SQLite's trace hook (rusqlite's `trace`
//! feature, enabled for tests only), per database file, so statements of
//! other tests running at the same time are not mixed in.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Mutex;

use rusqlite::Connection;
use rusqlite::trace::{TraceEvent, TraceEventCodes};

/// Statements seen per database path.
static SEEN: Mutex<BTreeMap<String, BTreeSet<String>>> = Mutex::new(BTreeMap::new());

/// Record every statement `conn` runs (called by `connect` in test builds).
pub(super) fn watch(conn: &mut Connection, path: &std::path::Path) {
    let key = path.display().to_string();
    let _ = conn.trace_v2(
        TraceEventCodes::SQLITE_TRACE_STMT,
        Some(move |event: TraceEvent<'_>| {
            if let TraceEvent::Stmt(_, sql) = event {
                // Trigger bodies are reported as "-- TRIGGER name".
                if !sql.starts_with("--") {
                    SEEN.lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .entry(key.clone())
                        .or_default()
                        .insert(sql.to_owned());
                }
            }
        }),
    );
}

fn seen(path: &std::path::Path) -> BTreeSet<String> {
    SEEN.lock()
        .unwrap_or_else(|p| p.into_inner())
        .get(&path.display().to_string())
        .cloned()
        .unwrap_or_default()
}

/// Tables whose size grows with history: none may be scanned whole.
const GROWING: [&str; 6] = [
    "liaison_submissions",
    "liaison_callbacks",
    "liaison_events",
    "liaison_attempts",
    "liaison_idempotency_keys",
    "liaison_correlations",
];

/// Partial indexes that hold only unfinished work (queued, in flight,
/// awaiting a result, unmatched callbacks): scanning one is bounded by the
/// work pending, not by history.
const PENDING_ONLY: [&str; 6] = [
    // live leases (migration 16; the reaper reads it whole since 22)
    "liaison_submissions_partner_leases",
    // open work with a business deadline (migration 14)
    "liaison_submissions_business_deadline",
    "liaison_submissions_nearest_deadline",
    "liaison_submissions_deadline",
    "liaison_submissions_due",
    "liaison_callbacks_unmatched",
];

/// The plan's lines that scan a growing table without a bounding index.
///
/// An unfiltered page (`WHERE 1 = 1 ORDER BY seq [DESC] LIMIT ?`) is planned
/// as a `SCAN` of the table in rowid order, but it stops after `LIMIT` rows,
/// so it is not a full scan: such statements are let through. A filtered
/// one is not (it may walk the whole table to find few matches).
fn full_scans(conn: &Connection, sql: &str) -> Vec<String> {
    if sql.contains("WHERE 1 = 1 ORDER BY seq")
        && sql.trim_end().ends_with(|c: char| c.is_ascii_digit())
    {
        let tail = sql.rsplit("ORDER BY seq").next().unwrap_or("");
        if matches!(
            tail.split_whitespace().collect::<Vec<_>>().as_slice(),
            ["LIMIT", _] | ["DESC", "LIMIT", _]
        ) {
            return Vec::new();
        }
    }
    // Transaction control and pragmas have no plan.
    let Some(details) = plan(conn, sql) else {
        return Vec::new();
    };
    let aliases = aliases(sql);
    details
        .into_iter()
        .filter(|d| {
            let Some(rest) = d.strip_prefix("SCAN ") else {
                return false;
            };
            let name = rest.split_whitespace().next().unwrap_or("");
            // The plan names a table by its alias where the statement gives one.
            let table = aliases
                .iter()
                .find(|(alias, _)| *alias == name)
                .map_or(name, |(_, table)| *table);
            GROWING.contains(&table) && !PENDING_ONLY.iter().any(|i| rest.contains(i))
        })
        .collect()
}

/// The indexes a plan's lines read (`SEARCH t USING INDEX i (...)`,
/// `SCAN t USING COVERING INDEX i`).
fn indexes_read(plan: &[String]) -> Vec<String> {
    plan.iter()
        .filter_map(|line| line.split(" INDEX ").nth(1)?.split_whitespace().next())
        .map(str::to_owned)
        .collect()
}

/// The lines of `sql`'s `EXPLAIN QUERY PLAN`; `None` for a statement that
/// has none (transaction control, pragmas).
fn plan(conn: &Connection, sql: &str) -> Option<Vec<String>> {
    let mut stmt = conn.prepare(&format!("EXPLAIN QUERY PLAN {sql}")).ok()?;
    // Parameters stay unbound (NULL): the plan is chosen when preparing.
    let nulls = std::iter::repeat_n(rusqlite::types::Null, stmt.parameter_count());
    let details = stmt
        .query_map(rusqlite::params_from_iter(nulls), |row| {
            row.get::<_, String>(3)
        })
        .and_then(|rows| rows.collect())
        .expect("read the query plan");
    Some(details)
}

/// `(alias, table)` for each growing table the statement names with an
/// alias (`FROM liaison_callbacks c`, `... AS c`).
fn aliases(sql: &str) -> Vec<(&str, &'static str)> {
    const NOT_ALIASES: &[&str] = &[
        "WHERE", "SET", "ON", "INDEXED", "JOIN", "LEFT", "INNER", "ORDER", "GROUP", "LIMIT",
        "VALUES", "USING", "NOT",
    ];
    let words: Vec<&str> = sql
        .split(|c: char| c.is_whitespace() || c == '(' || c == ')' || c == ',')
        .filter(|w| !w.is_empty())
        .collect();
    let mut found = Vec::new();
    for (i, word) in words.iter().enumerate() {
        let Some(table) = GROWING.iter().find(|t| *t == word) else {
            continue;
        };
        let next = match words.get(i + 1) {
            Some(w) if w.eq_ignore_ascii_case("AS") => words.get(i + 2),
            other => other,
        };
        if let Some(alias) = next
            && alias.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
            && !NOT_ALIASES.iter().any(|k| alias.eq_ignore_ascii_case(k))
        {
            found.push((*alias, *table));
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::SqliteStore;
    use crate::store::plan_workload::{assert_reached, engine, workload};

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn hot_statements_use_indexes_not_full_scans() {
        let store = SqliteStore::open_temporary().unwrap();
        let path = store.path().to_path_buf();
        let liaison = engine(store);
        workload(&liaison).await;

        let statements = seen(&path);
        // The workload did reach the hot statements.
        for needle in [
            "INSERT OR FAIL INTO liaison_submissions",
            "UPDATE OR FAIL liaison_submissions SET state = 'in_flight'",
            "UPDATE OR FAIL liaison_submissions SET state = ?2",
            "INSERT OR FAIL INTO liaison_callbacks",
            // An early callback looked at again, among those before it.
            "seq < (SELECT seq FROM liaison_callbacks WHERE id = ?3)",
            "FROM liaison_state_counts",
            "ORDER BY s.priority DESC",
            "SET payload = NULL",
            "SET body = NULL",
            "CASE WHEN payload IS NULL THEN NULL ELSE 'null' END",
            "GROUP BY 1, 2, 3, 4",
            "INSERT OR FAIL INTO liaison_correlations",
            "FROM liaison_correlations WHERE name = ?",
            "AND updated_at >= ?",
            "FROM liaison_idempotency_keys WHERE partner = ?1 AND idempotency_key = ?2), ",
            "INSERT OR FAIL INTO liaison_deliveries",
            "FROM liaison_deliveries d",
            "UPDATE OR FAIL liaison_deliveries SET state = ?2",
            "WHERE partner = ?1 AND state = 'in_flight' AND lease_expires_at > ?2",
            "UPDATE liaison_partners SET rate_tat_us",
            "INDEXED BY liaison_submissions_created",
        ] {
            assert_reached(&statements, needle);
        }
        // Migrations run once when a database is opened: not a hot path.
        // Retention is checked too: its batches must come from the indexes
        // of what is still to purge, not from a walk of finished history.
        let migrations: Vec<&str> = crate::store::migrations::MIGRATIONS
            .iter()
            .map(|m| m.sql(crate::store::migrations::Dialect::Sqlite))
            .collect();
        let hot: Vec<&String> = statements
            .iter()
            .filter(|sql| !migrations.iter().any(|m| m.contains(sql.trim())))
            .collect();
        // Retention's batches come from the indexes of what is still to
        // purge (a range search of a finished-work index would walk every
        // purged row again on each batch).
        let plan_of = |needle: &str| -> String {
            let sql = hot
                .iter()
                .find(|s| s.contains(needle))
                .unwrap_or_else(|| panic!("no statement contains {needle:?}"));
            plan(&Connection::open(&path).unwrap(), sql)
                .expect("a statement with a plan")
                .join("; ")
        };
        for (needle, index) in [
            ("SET payload = NULL", "liaison_submissions_unpurged"),
            ("SET body = NULL", "liaison_callbacks_unpurged"),
            (
                "SET correlation = NULL, external_ref = NULL",
                "liaison_submissions_uncleared",
            ),
            ("SET headers = '[]'", "liaison_callbacks_uncleared"),
        ] {
            let plan = plan_of(needle);
            assert!(plan.contains(index), "{needle}: {plan}");
        }
        // A delivery claim reads one partner's due index in order and
        // stops at its limit: sorting every pending delivery made each
        // claim cost as much as the backlog of undelivered results.
        let due = plan_of("FROM liaison_deliveries d");
        assert!(
            due.contains("INDEX liaison_deliveries_due (partner=? AND due_at<?)")
                && !due.contains("TEMP B-TREE"),
            "{due}"
        );
        // Lookups by the host's keys reach their rows through indexes, not
        // by walking the submissions in `seq` order (a `SEARCH` of the
        // rowid range after a page, which the scan check lets through).
        let lookups: Vec<&&String> = hot
            .iter()
            .filter(|s| !s.starts_with("DELETE"))
            .filter(|s| {
                s.contains("liaison_correlations WHERE name") || s.contains("updated_at >=")
            })
            .collect();
        assert_eq!(lookups.len(), 8, "{lookups:#?}");
        for sql in lookups {
            let plan = plan(&Connection::open(&path).unwrap(), sql)
                .expect("a statement with a plan")
                .join("; ");
            let index = if sql.contains("liaison_correlations WHERE name") {
                "INDEX liaison_correlations_value (name=? AND value=?"
            } else {
                "INDEX liaison_submissions_updated (updated_at>?)"
            };
            assert!(plan.contains(index), "{sql}\n{plan}");
            assert!(!plan.contains("rowid>?"), "{sql}\n{plan}");
        }
        // The search without a partner: per known partner on the (partner,
        // key) and (partner, reference) indexes; a correlation value under
        // any name on the index of values (migration 20), each page too.
        for (needle, index, pages) in [
            (
                "AND idempotency_key = ?",
                "INDEX liaison_submissions_key (partner=? AND idempotency_key=?",
                2,
            ),
            (
                "AND external_ref = ?",
                "INDEX liaison_submissions_external_ref (partner=? AND external_ref=?",
                2,
            ),
            (
                "liaison_correlations WHERE value = ?",
                "INDEX liaison_correlations_by_value (value=?",
                2,
            ),
        ] {
            let searches: Vec<&&String> = hot
                .iter()
                .filter(|s| s.contains("WHERE 1 = 1") && s.contains(needle))
                .filter(|s| !s.contains("AND partner = ?"))
                .collect();
            assert_eq!(searches.len(), pages, "{needle}: {searches:#?}");
            for sql in searches {
                let plan = plan(&Connection::open(&path).unwrap(), sql)
                    .expect("a statement with a plan")
                    .join("; ");
                assert!(plan.contains(index), "{sql}\n{plan}");
                assert!(!plan.contains("SCAN liaison_submissions"), "{sql}\n{plan}");
            }
        }
        // A claim's look for an unfinished predecessor of the same ordering
        // key reads the blocking states' entries of the key, not every
        // earlier submission of it (migration 0025).
        let due = plan_of("AND p.seq < s.seq)");
        assert!(
            due.contains(
                "liaison_submissions_ordering (partner=? AND ordering_key=? AND state=? AND seq<?)"
            ),
            "{due}"
        );
        // The plans of the hot statements that contain `needle`, `count` of
        // them.
        let plans_matching = |needle: &str, count: usize| -> Vec<(String, String)> {
            let found: Vec<&&String> = hot.iter().filter(|s| s.contains(needle)).collect();
            assert_eq!(found.len(), count, "{needle}: {found:#?}");
            found
                .into_iter()
                .map(|sql| {
                    let plan = plan(&Connection::open(&path).unwrap(), sql)
                        .expect("a statement with a plan")
                        .join("; ");
                    (sql.to_string(), plan)
                })
                .collect()
        };
        // The chart and a partner's list by creation time read the window
        // from (partner, created_at), not the partner's history (0026):
        // the chart, and the list's first and next page.
        for (sql, plan) in plans_matching("created_at >= ?", 3) {
            assert!(
                plan.contains("INDEX liaison_submissions_created (partner=? AND created_at>?)"),
                "{sql}\n{plan}"
            );
        }
        // A list of several states reads each state's entries in `seq`
        // order and stops at the limit (the only sort is the merge of the
        // branches), with a partner and without.
        for (sql, plan) in plans_matching("ORDER BY list_seq", 2) {
            let index = if sql.contains("partner = ?") {
                "INDEX liaison_submissions_partner_state (partner=? AND state=?)"
            } else {
                "INDEX liaison_submissions_state (state=?)"
            };
            // Each branch's own read (from `CO-ROUTINE` to the scan of its
            // result) sorts nothing.
            let branches: Vec<&str> = plan
                .split("CO-ROUTINE")
                .skip(1)
                .map(|b| b.split("SCAN (subquery").next().unwrap_or(b))
                .collect();
            assert_eq!(branches.len(), 2, "{sql}\n{plan}");
            for branch in branches {
                assert!(
                    branch.contains(index) && !branch.contains("TEMP B-TREE"),
                    "{sql}\n{plan}"
                );
            }
        }
        // Overdue results come from the index of awaited results by
        // deadline, in order, not from every result awaited, sorted.
        for (sql, plan) in plans_matching("result_deadline <= ?1", 2) {
            assert!(
                plan.contains("INDEX liaison_submissions_deadline (result_deadline<?)")
                    && !plan.contains("TEMP B-TREE"),
                "{sql}\n{plan}"
            );
        }
        // Unfinished work past the delay budget is read through the
        // partner's unfinished states, not through (partner, created_at),
        // which holds the partner's history before the cutoff.
        for (sql, plan) in plans_matching("+created_at <= ?", 2) {
            assert!(
                !plan.contains("liaison_submissions_created"),
                "{sql}\n{plan}"
            );
        }
        let crashed = plan_of("AND lease_expiries > 0");
        assert!(
            crashed.contains("liaison_submissions_worker_crashed"),
            "{crashed}"
        );
        let by_key = plan_of("WHERE id = COALESCE(");
        for index in [
            "sqlite_autoindex_liaison_submissions_1 (id=?)",
            "PRIMARY KEY (partner=? AND idempotency_key=?)",
            "liaison_submissions_key (partner=? AND idempotency_key=?)",
        ] {
            assert!(by_key.contains(index), "get_by_key: {by_key}");
        }
        let check = |conn: &Connection, label: &'static str| -> Vec<String> {
            hot.iter()
                .flat_map(|sql| {
                    full_scans(conn, sql)
                        .into_iter()
                        .map(move |line| format!("{line} ({label})\n    in: {sql}"))
                })
                .collect()
        };
        // Plans are checked twice: as SQLite chooses them without statistics
        // (most hosts never run ANALYZE)...
        // The indexes the hot statements' plans read, under both.
        let mut read = BTreeSet::new();
        let mut reads = |conn: &Connection| {
            for sql in &hot {
                read.extend(indexes_read(&plan(conn, sql).unwrap_or_default()));
            }
        };
        reads(&Connection::open(&path).unwrap());
        let mut scans = check(&Connection::open(&path).unwrap(), "no statistics");
        // ...and with the statistics `ANALYZE` writes for a database holding
        // 1,000,000 finished submissions of one partner and as many callbacks
        // (what `PRAGMA optimize` would leave), where a few large states
        // make walking the table in `seq` order look cheap.
        Connection::open(&path)
            .unwrap()
            .execute_batch(
                "ANALYZE;
                 DELETE FROM sqlite_stat1;
                 INSERT INTO sqlite_stat1 (tbl, idx, stat) VALUES
                   ('liaison_callbacks', 'liaison_callbacks_disposition', '1000000 200000 1'),
                   ('liaison_callbacks', 'liaison_callbacks_event', '1000000 1000000 1'),
                   ('liaison_callbacks', 'liaison_callbacks_hash', '1000000 1000000 1'),
                   ('liaison_callbacks', 'liaison_callbacks_submission', '1000000 1'),
                   ('liaison_callbacks', 'liaison_callbacks_unmatched', '10 10 1'),
                   ('liaison_callbacks', 'liaison_callbacks_received', '1000000 1000000 1'),
                   ('liaison_callbacks', 'sqlite_autoindex_liaison_callbacks_1', '1000000 1'),
                   ('liaison_events', 'liaison_events_submission', '3000000 3 1'),
                   ('liaison_submissions', 'liaison_submissions_partner_state', '1000000 1000000 333334 1'),
                   ('liaison_submissions', 'liaison_submissions_state', '1000000 333334 1'),
                   ('liaison_submissions', 'liaison_submissions_key', '1000000 1000000 1'),
                   ('liaison_submissions', 'liaison_submissions_partner_terminal', '1000000 1000000 1'),
                   ('liaison_submissions', 'liaison_submissions_unpurged', '1000 1'),
                   ('liaison_callbacks', 'liaison_callbacks_unpurged', '1000 1'),
                   ('liaison_submissions', 'liaison_submissions_accepted', '999000 999000 1'),
                   ('liaison_submissions', 'sqlite_autoindex_liaison_submissions_1', '1000000 1'),
                   ('liaison_submissions', 'liaison_submissions_updated', '1000000 1'),
                   ('liaison_correlations', 'liaison_correlations_value', '3000000 1000000 3 3 1'),
                   ('liaison_correlations', 'liaison_correlations_by_value', '3000000 3 3 1'),
                   ('liaison_correlations', 'sqlite_autoindex_liaison_correlations_1', '3000000 3 1'),
                   ('liaison_deliveries', 'liaison_deliveries_due', '10 10 1'),
                   ('liaison_deliveries', 'liaison_deliveries_order', '100 100 100 1'),
                   ('liaison_deliveries', 'liaison_deliveries_submission', '1000000 1 1'),
                   ('liaison_deliveries', 'liaison_deliveries_state', '1000000 333334 1000000 1'),
                   ('liaison_deliveries', 'sqlite_autoindex_liaison_deliveries_1', '1000000 1');",
            )
            .unwrap();
        // A new connection loads the statistics with the schema.
        scans.extend(check(
            &Connection::open(&path).unwrap(),
            "1,000,000-row statistics",
        ));
        let conn = Connection::open(&path).unwrap();
        reads(&conn);
        // Every index of a table that grows with history earns its place:
        // each one costs every write of its table one more B-tree to
        // update, so one no hot statement reads is dropped. Indexes that
        // only enforce a constraint (`sql` is NULL) are not in question.
        let mut unread = Vec::new();
        for table in GROWING {
            let mut stmt = conn
                .prepare(
                    "SELECT name FROM sqlite_master WHERE type = 'index' AND tbl_name = ?1 \
                     AND sql IS NOT NULL ORDER BY name",
                )
                .unwrap();
            let names = stmt
                .query_map([table], |row| row.get::<_, String>(0))
                .unwrap()
                .map(Result::unwrap);
            unread.extend(names.filter(|name| !read.contains(name)));
        }
        assert!(
            unread.is_empty(),
            "indexes no hot statement reads: {unread:?}"
        );
        assert!(
            scans.is_empty(),
            "{} hot statements scan a table that grows with history:\n{}",
            scans.len(),
            scans.join("\n")
        );
    }

    #[test]
    fn a_full_scan_is_caught() {
        let conn = Connection::open_in_memory().unwrap();
        conn.execute_batch(
            "CREATE TABLE liaison_events (seq INTEGER PRIMARY KEY, submission_id TEXT, kind TEXT);
             CREATE INDEX liaison_events_submission ON liaison_events (submission_id, seq);",
        )
        .unwrap();
        assert_eq!(
            full_scans(&conn, "SELECT seq FROM liaison_events WHERE kind = ?1").len(),
            1
        );
        assert!(
            full_scans(
                &conn,
                "SELECT seq FROM liaison_events WHERE submission_id = ?1"
            )
            .is_empty()
        );
        // A first page stops after LIMIT rows; a filtered one may not.
        assert!(
            full_scans(
                &conn,
                "SELECT seq FROM liaison_events WHERE 1 = 1 ORDER BY seq DESC LIMIT ?1"
            )
            .is_empty()
        );
        assert_eq!(
            full_scans(
                &conn,
                "SELECT seq FROM liaison_events WHERE 1 = 1 AND kind = ?1 ORDER BY seq LIMIT ?2"
            )
            .len(),
            1
        );
    }
}
