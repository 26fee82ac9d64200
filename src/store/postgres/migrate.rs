//! Numbered schema migrations, applied in order with the version recorded,
//! in one transaction under an advisory lock so instances starting together
//! do not race.

use std::time::Duration;

use tokio_postgres::Client;

use super::common::to_millis;
use super::db::pg_err;
use crate::error::{Error, Result};

/// The migrations, in order: (version, name, SQL). The numbering follows the
/// SQLite store's: version N means the same schema on both.
const MIGRATIONS: &[(i64, &str, &str)] = &[
    (
        1,
        "init",
        include_str!("../../../migrations/postgres/0001_init.sql"),
    ),
    (
        2,
        "replay_cycles",
        include_str!("../../../migrations/postgres/0002_replay_cycles.sql"),
    ),
    (
        3,
        "health",
        include_str!("../../../migrations/postgres/0003_health.sql"),
    ),
    (
        4,
        "alerts",
        include_str!("../../../migrations/postgres/0004_alerts.sql"),
    ),
    (
        5,
        "wakeups",
        include_str!("../../../migrations/postgres/0005_wakeups.sql"),
    ),
    (
        6,
        "retention",
        include_str!("../../../migrations/postgres/0006_retention.sql"),
    ),
];

/// The newest schema version this build knows; a database with a higher
/// recorded version is refused with [`Error::SchemaTooNew`].
pub(crate) const SCHEMA_VERSION: i64 = MIGRATIONS[MIGRATIONS.len() - 1].0;

/// The advisory lock every liaison instance takes to migrate ("liaison1").
const MIGRATION_LOCK: i64 = 0x6C69_6169_736F_6E31;

/// How long a migration waits for the lock (other instances migrating) and
/// for its DDL's locks, at least.
const MIGRATION_WAIT: Duration = Duration::from_secs(60);

/// Bring the schema up to [`SCHEMA_VERSION`], creating `schema` if it is
/// named and missing, or refuse a database from a newer version (touching
/// nothing). Waits for other instances' migrations for at least a minute,
/// whatever the store's `lock_timeout`.
pub(super) async fn migrate(
    client: &mut Client,
    schema: Option<&str>,
    lock_timeout: Duration,
) -> Result<i64> {
    let tx = client
        .transaction()
        .await
        .map_err(pg_err("begin migration"))?;
    let wait = lock_timeout.max(MIGRATION_WAIT).as_millis();
    tx.batch_execute(&format!("SET LOCAL lock_timeout = {wait}"))
        .await
        .map_err(pg_err("set migration lock timeout"))?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])
        .await
        .map_err(pg_err("take migration lock"))?;
    if let Some(schema) = schema {
        let exists = tx
            .query_opt("SELECT 1 FROM pg_namespace WHERE nspname = $1", &[&schema])
            .await
            .map_err(pg_err("look up schema"))?
            .is_some();
        if !exists {
            // The name is checked to be a plain lower-case identifier.
            tx.batch_execute(&format!("CREATE SCHEMA {schema}"))
                .await
                .map_err(pg_err("create schema"))?;
        }
    }
    tx.batch_execute(
        "CREATE TABLE IF NOT EXISTS liaison_migrations (
            version    BIGINT PRIMARY KEY,
            name       TEXT   NOT NULL,
            applied_at BIGINT NOT NULL
        )",
    )
    .await
    .map_err(pg_err("create migrations table"))?;
    let current: i64 = tx
        .query_one(
            "SELECT COALESCE(MAX(version), 0)::BIGINT FROM liaison_migrations",
            &[],
        )
        .await
        .map_err(pg_err("read schema version"))?
        .try_get(0)
        .map_err(pg_err("read schema version"))?;
    if current > SCHEMA_VERSION {
        return Err(Error::SchemaTooNew {
            found: current,
            supported: SCHEMA_VERSION,
        });
    }
    for (version, name, sql) in MIGRATIONS.iter().filter(|(v, _, _)| *v > current) {
        tracing::info!(
            version,
            name,
            "applying liaison schema migration (PostgreSQL)"
        );
        tx.batch_execute(sql)
            .await
            .map_err(pg_err("apply migration"))?;
        tx.execute(
            "INSERT INTO liaison_migrations (version, name, applied_at) VALUES ($1, $2, $3)",
            &[version, name, &to_millis(chrono::Utc::now())],
        )
        .await
        .map_err(pg_err("record migration"))?;
        // Reliability tests: a migration ran, its transaction not committed.
        #[cfg(feature = "failpoints")]
        fail::fail_point!("liaison::migrate::applied");
    }
    tx.commit().await.map_err(pg_err("commit migration"))?;
    Ok(SCHEMA_VERSION)
}
