//! The hot statements use indexes on PostgreSQL too: a test that records
//! every statement the store prepares while running the workload the SQLite
//! plan test runs (`store::plan_workload`), grows the schema's history to
//! tens of thousands of finished submissions, `ANALYZE`s it, and asks the
//! server for each statement's generic plan — the plan a prepared
//! statement settles on after its first executions, chosen without the
//! parameters' values. A `Seq Scan` of a table that grows with history
//! fails the test.
//!
//! PostgreSQL 15 has no `EXPLAIN (GENERIC_PLAN)`, so each statement is
//! `PREPARE`d with `plan_cache_mode = force_generic_plan` and explained
//! with `EXPLAIN EXECUTE` and NULL arguments (which that mode does not look
//! at).

use std::collections::BTreeSet;
use std::sync::Mutex;

/// Every statement the store prepared in this test process.
static SEEN: Mutex<BTreeSet<String>> = Mutex::new(BTreeSet::new());

/// Record a statement (called by `Db::prepare` in test builds).
pub(super) fn record(sql: &str) {
    let mut seen = SEEN.lock().unwrap_or_else(|p| p.into_inner());
    if !seen.contains(sql) {
        seen.insert(sql.to_owned());
    }
}

/// Tables whose size grows with history: none may be read whole.
const GROWING: [&str; 7] = [
    "liaison_submissions",
    "liaison_callbacks",
    "liaison_events",
    "liaison_attempts",
    "liaison_idempotency_keys",
    "liaison_correlations",
    "liaison_deliveries",
];

/// The plan's lines that read a growing table sequentially.
fn seq_scans(plan: &[String]) -> Vec<String> {
    plan.iter()
        .filter(|line| {
            line.split("Seq Scan on ")
                .nth(1)
                .and_then(|rest| rest.split_whitespace().next())
                .is_some_and(|table| GROWING.contains(&table))
        })
        .map(|line| line.trim().to_owned())
        .collect()
}

#[cfg(test)]
mod tests {
    use tokio_postgres::{Client, NoTls};

    use super::*;
    use crate::store::plan_workload::{assert_reached, engine, workload};
    use crate::store::{PostgresConfig, PostgresStore};

    /// How many times each finished row of the workload is copied: enough
    /// that reading a table whole costs more than any index path.
    const COPIES: i32 = 3000;

    /// `(table, column overrides)`: every row of the workload is copied as
    /// finished work past its retention (history grows; pending work and
    /// what retention has yet to purge do not), with the text that must
    /// stay unique made unique per copy.
    const HISTORY: [(&str, &[(&str, &str)]); 6] = [
        (
            "liaison_submissions",
            &[
                ("idempotency_key", "idempotency_key || '-' || g"),
                ("external_ref", "external_ref || '-' || g"),
                (
                    "state",
                    "CASE WHEN terminal_at IS NULL THEN 'succeeded' ELSE state END",
                ),
                ("terminal_at", "COALESCE(terminal_at, updated_at)"),
                ("lease_token", "NULL"),
                ("lease_expires_at", "NULL"),
                // Past retention, as most of a long history is.
                ("payload", "NULL"),
                ("result_document", "NULL"),
                ("payload_purged_at", "updated_at"),
                ("correlation", "NULL"),
                ("personal_cleared_at", "updated_at"),
            ],
        ),
        (
            "liaison_attempts",
            &[
                ("finished_at", "COALESCE(finished_at, started_at)"),
                ("outcome", "COALESCE(outcome, 'accepted')"),
            ],
        ),
        ("liaison_events", &[]),
        (
            "liaison_callbacks",
            &[
                ("event_id", "event_id || '-' || g"),
                ("reference", "reference || '-' || g"),
                ("body_hash", "body_hash || '-' || g"),
                ("disposition", "'applied'"),
                ("match_until", "NULL"),
                ("body", "NULL"),
                ("body_purged_at", "received_at"),
                ("personal_cleared_at", "received_at"),
            ],
        ),
        (
            "liaison_idempotency_keys",
            &[("idempotency_key", "idempotency_key || '-' || g")],
        ),
        (
            "liaison_deliveries",
            &[
                ("state", "'delivered'"),
                ("lease_token", "NULL"),
                ("lease_expires_at", "NULL"),
            ],
        ),
    ];

    /// Copy the workload's rows `COPIES` times as finished history. Ids are
    /// mapped by `md5(id || copy)`, the same in every table, so a copied
    /// submission's attempts, events and callbacks point at it.
    async fn grow_history(client: &Client) {
        for (table, overrides) in HISTORY {
            let columns = client
                .query(
                    "SELECT column_name::text, data_type::text FROM information_schema.columns
                     WHERE table_schema = current_schema() AND table_name = $1
                       AND is_identity = 'NO' AND is_generated = 'NEVER'
                     ORDER BY ordinal_position",
                    &[&table],
                )
                .await
                .expect("read the columns");
            let (names, values): (Vec<String>, Vec<String>) = columns
                .iter()
                .map(|row| {
                    let name: String = row.get(0);
                    let kind: String = row.get(1);
                    let value = match overrides.iter().find(|(column, _)| *column == name) {
                        Some((_, value)) => (*value).to_owned(),
                        None if kind == "uuid" => format!("md5({name}::text || '-' || g)::uuid"),
                        None => name.clone(),
                    };
                    (name, value)
                })
                .unzip();
            client
                .batch_execute(&format!(
                    "INSERT INTO {table} ({}) SELECT {} FROM {table}, generate_series(1, {COPIES}) g",
                    names.join(", "),
                    values.join(", ")
                ))
                .await
                .unwrap_or_else(|e| panic!("copy {table}: {e}"));
        }
        // Correlation rows name their submission by `seq`, which a copy
        // does not keep: find the copy by its mapped id.
        client
            .batch_execute(&format!(
                "INSERT INTO liaison_correlations (submission_seq, partner, name, value)
                 SELECT n.seq, c.partner, c.name, c.value || '-' || g
                 FROM liaison_correlations c
                 JOIN liaison_submissions o ON o.seq = c.submission_seq
                 CROSS JOIN generate_series(1, {COPIES}) g
                 JOIN liaison_submissions n ON n.id = md5(o.id::text || '-' || g)::uuid;
                 ANALYZE;"
            ))
            .await
            .expect("copy the correlations");
    }

    /// The generic plan of `sql`, or `None` for a statement that cannot be
    /// prepared (transaction control, settings).
    async fn generic_plan(client: &Client, sql: &str) -> Option<Vec<String>> {
        let first = sql.split_whitespace().next()?.to_ascii_uppercase();
        if !["SELECT", "INSERT", "UPDATE", "DELETE", "WITH"].contains(&first.as_str()) {
            return None;
        }
        client
            .batch_execute("DEALLOCATE ALL")
            .await
            .expect("deallocate");
        client
            .batch_execute(&format!("PREPARE liaison_plan AS {sql}"))
            .await
            .unwrap_or_else(|e| panic!("prepare {sql}: {e}"));
        let params: i32 = client
            .query_one(
                "SELECT cardinality(parameter_types) FROM pg_prepared_statements
                 WHERE name = 'liaison_plan'",
                &[],
            )
            .await
            .expect("count the parameters")
            .get(0);
        let args = if params == 0 {
            String::new()
        } else {
            format!("({})", vec!["NULL"; params as usize].join(", "))
        };
        let plan = client
            .query(&format!("EXPLAIN EXECUTE liaison_plan{args}"), &[])
            .await
            .unwrap_or_else(|e| panic!("explain {sql}: {e}"))
            .iter()
            .map(|row| row.get::<_, String>(0))
            .collect();
        Some(plan)
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn hot_statements_use_indexes_not_sequential_scans() {
        let Some(url) = crate::store::postgres::test_url() else {
            return;
        };
        let schema = format!("liaison_plans_{}", std::process::id());
        let (client, connection) = tokio_postgres::connect(&url, NoTls).await.expect("connect");
        tokio::spawn(connection);
        client
            .batch_execute(&format!("DROP SCHEMA IF EXISTS {schema} CASCADE"))
            .await
            .expect("drop an earlier run's schema");
        // The checks run in a task of their own, so the schema is dropped
        // whether they pass or fail; a failure is raised after.
        let checked = tokio::spawn(check_plans(url, schema.clone())).await;
        client
            .batch_execute(&format!("DROP SCHEMA IF EXISTS {schema} CASCADE"))
            .await
            .expect("drop the schema");
        if let Err(failed) = checked {
            std::panic::resume_unwind(failed.into_panic());
        }
    }

    /// Run the workload on `schema`, grow its history, and check every
    /// recorded statement's generic plan.
    async fn check_plans(url: String, schema: String) {
        let (client, connection) = tokio_postgres::connect(&url, NoTls).await.expect("connect");
        tokio::spawn(connection);
        let store = PostgresStore::connect(&url, PostgresConfig::default().schema(&schema))
            .await
            .expect("open the store");
        let liaison = engine(store);
        workload(&liaison).await;
        drop(liaison);

        client
            .batch_execute(&format!(
                "SET search_path = {schema}; SET plan_cache_mode = force_generic_plan"
            ))
            .await
            .expect("settings");
        grow_history(&client).await;

        let migrations: Vec<&str> = crate::store::migrations::MIGRATIONS
            .iter()
            .map(|m| m.sql(crate::store::migrations::Dialect::Postgres))
            .collect();
        let statements: Vec<String> = SEEN
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .filter(|sql| !migrations.iter().any(|m| m.contains(sql.trim())))
            .cloned()
            .collect();
        // The workload did reach the hot statements.
        for needle in [
            "INSERT INTO liaison_submissions",
            "WITH due AS (SELECT s.id, s.priority, s.due_at, s.seq FROM liaison_submissions s",
            "UPDATE liaison_submissions SET state = 'in_flight'",
            "INSERT INTO liaison_attempts",
            "UPDATE liaison_attempts SET finished_at",
            "UPDATE liaison_submissions SET state = $2",
            "INSERT INTO liaison_callbacks",
            "FROM liaison_state_totals",
            "FROM liaison_correlations WHERE value = $1",
            "UNION ALL",
            "INSERT INTO liaison_deliveries",
            "FROM liaison_deliveries d",
            "SET payload = NULL",
            "SET body = NULL",
            "unnest($1::text[]) d (disposition)",
            "DELETE FROM liaison_idempotency_keys",
            // Early callbacks settled by a batch of results, together.
            "CROSS JOIN LATERAL",
            "UPDATE liaison_callbacks c SET disposition = u.disposition",
        ] {
            assert_reached(&statements, needle);
        }
        // The grown history makes a plan that reads it whole visible: the
        // chart's count as it was before this test is caught.
        let before = "SELECT state, COUNT(*) FROM liaison_submissions \
            WHERE partner = $1 AND (created_at >= $2 OR state = ANY($3)) GROUP BY 1";
        let plan = generic_plan(&client, before).await.expect("a plan");
        assert!(!seq_scans(&plan).is_empty(), "{}", plan.join("\n"));

        // A claim's look for an unfinished predecessor of the same ordering
        // key reads entries of the blocking states only (the ordering index
        // carries the state, migration 0025), not every earlier submission
        // of the key with its state as a filter: the copies above give each
        // of the workload's two keys some 15,000 finished submissions.
        let due = statements
            .iter()
            .find(|s| s.contains("AND p.seq < s.seq"))
            .expect("the claim's statement");
        let plan = generic_plan(&client, due).await.expect("a plan");
        let probe = plan
            .iter()
            .skip_while(|line| !line.contains("SubPlan 1"))
            .find(|line| line.contains("Index Cond"))
            .unwrap_or_else(|| panic!("no index probe:\n{}", plan.join("\n")));
        assert!(
            probe.contains("state = ANY ('{queued,in_flight"),
            "{}",
            plan.join("\n")
        );

        // The look-up of earlier deliveries a callback repeats takes both
        // kinds of key in one statement: each branch reads its own index,
        // and runs only for keys of its kind.
        let repeats = statements
            .iter()
            .find(|s| s.contains("NOT w.by_event"))
            .expect("the repeat look-up");
        let plan = generic_plan(&client, repeats).await.expect("a plan");
        let text = plan.join("\n");
        for index in ["liaison_callbacks_event", "liaison_callbacks_hash"] {
            assert!(text.contains(index), "{index}:\n{text}");
        }
        assert_eq!(text.matches("One-Time Filter").count(), 2, "{text}");

        // A list of several states reads each state's entries in `seq`
        // order up to the limit: no sort below the merge of the branches.
        let lists: Vec<&String> = statements
            .iter()
            .filter(|s| s.contains("ORDER BY list_seq"))
            .collect();
        assert!(lists.len() >= 2, "{lists:#?}");
        for sql in lists {
            let plan = generic_plan(&client, sql).await.expect("a plan");
            let text = plan.join("\n");
            assert!(text.contains("Merge Append"), "{sql}\n{text}");
            assert!(
                !plan.iter().any(|line| line
                    .trim_start()
                    .trim_start_matches("->  ")
                    .starts_with("Sort  ")),
                "a branch sorts: {sql}\n{text}"
            );
            // Not the whole table in `seq` order, filtered by state.
            assert!(!text.contains("liaison_submissions_pkey"), "{sql}\n{text}");
        }

        let mut scans = Vec::new();
        let mut planned = 0;
        for sql in &statements {
            let Some(plan) = generic_plan(&client, sql).await else {
                continue;
            };
            planned += 1;
            let found = seq_scans(&plan);
            if !found.is_empty() {
                scans.push(format!(
                    "{}\n    in: {sql}\n{}",
                    found.join("; "),
                    plan.join("\n")
                ));
            }
        }
        assert!(planned > 50, "only {planned} statements were planned");
        assert!(
            scans.is_empty(),
            "{} hot statements read a table that grows with history whole:\n{}",
            scans.len(),
            scans.join("\n\n")
        );
    }

    #[test]
    fn a_sequential_scan_is_caught() {
        let plan = [
            "Hash Join  (cost=1.2..40.1 rows=10 width=8)".to_owned(),
            "  ->  Seq Scan on liaison_attempts a  (cost=0.00..35.50 rows=2550 width=24)"
                .to_owned(),
            "  ->  Seq Scan on liaison_partners  (cost=0.00..1.01 rows=1 width=8)".to_owned(),
            "  ->  Index Scan using liaison_events_submission on liaison_events".to_owned(),
        ];
        assert_eq!(seq_scans(&plan).len(), 1);
        assert!(seq_scans(&plan)[0].contains("liaison_attempts"));
    }
}
