//! Numbered schema migrations, applied in order with the version recorded.

use rusqlite::{Connection, params};

use super::sql::{db_err, to_millis};
use crate::error::{Error, Result};

/// The migrations, in order: (version, name, SQL).
pub(super) const MIGRATIONS: &[(i64, &str, &str)] = &[
    (
        1,
        "init",
        include_str!("../../../migrations/sqlite/0001_init.sql"),
    ),
    (
        2,
        "replay_cycles",
        include_str!("../../../migrations/sqlite/0002_replay_cycles.sql"),
    ),
    (
        3,
        "health",
        include_str!("../../../migrations/sqlite/0003_health.sql"),
    ),
    (
        4,
        "alerts",
        include_str!("../../../migrations/sqlite/0004_alerts.sql"),
    ),
    (
        5,
        "wakeups",
        include_str!("../../../migrations/sqlite/0005_wakeups.sql"),
    ),
    (
        6,
        "retention",
        include_str!("../../../migrations/sqlite/0006_retention.sql"),
    ),
];

/// The newest schema version this build of liaison knows; a database with a
/// higher recorded version is refused with [`Error::SchemaTooNew`].
pub const SCHEMA_VERSION: i64 = MIGRATIONS[MIGRATIONS.len() - 1].0;

/// Bring the database up to [`SCHEMA_VERSION`] in one `BEGIN IMMEDIATE`
/// transaction, or refuse a database from a newer version.
pub(crate) fn migrate(conn: &Connection) -> Result<i64> {
    conn.execute_batch("BEGIN IMMEDIATE")
        .map_err(db_err("begin migration"))?;
    let result = apply(conn);
    match &result {
        Ok(_) => conn
            .execute_batch("COMMIT")
            .map_err(db_err("commit migration"))?,
        Err(_) => {
            let _ = conn.execute_batch("ROLLBACK");
        }
    }
    result
}

fn apply(conn: &Connection) -> Result<i64> {
    conn.execute_batch(
        "CREATE TABLE IF NOT EXISTS liaison_migrations (
            version    INTEGER PRIMARY KEY,
            name       TEXT    NOT NULL,
            applied_at INTEGER NOT NULL
        )",
    )
    .map_err(db_err("create migrations table"))?;
    let current: i64 = conn
        .query_row(
            "SELECT COALESCE(MAX(version), 0) FROM liaison_migrations",
            [],
            |row| row.get(0),
        )
        .map_err(db_err("read schema version"))?;
    if current > SCHEMA_VERSION {
        return Err(Error::SchemaTooNew {
            found: current,
            supported: SCHEMA_VERSION,
        });
    }
    for (version, name, sql) in MIGRATIONS.iter().filter(|(v, _, _)| *v > current) {
        tracing::info!(version, name, "applying liaison schema migration");
        conn.execute_batch(sql).map_err(db_err("apply migration"))?;
        // Reliability tests: a migration's SQL has run, its transaction is
        // not committed.
        #[cfg(feature = "failpoints")]
        fail::fail_point!("liaison::migrate::applied");
        conn.execute(
            "INSERT INTO liaison_migrations (version, name, applied_at) VALUES (?1, ?2, ?3)",
            params![version, name, to_millis(chrono::Utc::now())],
        )
        .map_err(db_err("record migration"))?;
    }
    Ok(SCHEMA_VERSION)
}
