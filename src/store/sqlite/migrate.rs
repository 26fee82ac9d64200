//! Numbered schema migrations, applied in order with the version and the
//! checksum recorded (the list is shared with PostgreSQL:
//! [`crate::store::migrations`]).

use rusqlite::{Connection, params};

use super::db::{db_err, to_millis};
use crate::error::{Error, Result};
use crate::store::migrations::{self, Dialect, MIGRATIONS, Recorded};

pub use crate::store::migrations::SCHEMA_VERSION;

/// Bring the database up to [`SCHEMA_VERSION`] in one `BEGIN IMMEDIATE`
/// transaction, after checking the migrations it already has against this
/// build's; or refuse a database from a newer version, or one whose applied
/// migrations changed ([`Error::MigrationChanged`]), touching nothing.
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
            applied_at INTEGER NOT NULL,
            checksum   TEXT
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
    check_applied(conn)?;
    for migration in MIGRATIONS.iter().filter(|m| m.version > current) {
        let (version, name) = (migration.version, migration.name);
        tracing::info!(version, name, "applying liaison schema migration");
        conn.execute_batch(migration.sql(Dialect::Sqlite))
            .map_err(db_err("apply migration"))?;
        // Reliability tests: a migration's SQL has run, its transaction is
        // not committed.
        #[cfg(feature = "failpoints")]
        fail::fail_point!("liaison::migrate::applied");
        conn.execute(
            "INSERT INTO liaison_migrations (version, name, applied_at, checksum)
             VALUES (?1, ?2, ?3, ?4)",
            params![
                version,
                name,
                to_millis(chrono::Utc::now()),
                migration.checksum(Dialect::Sqlite)
            ],
        )
        .map_err(db_err("record migration"))?;
    }
    Ok(SCHEMA_VERSION)
}

/// Compare the recorded checksums of the applied migrations with this
/// build's ([`migrations::verify`]). A database migrated by a release from
/// before checksums gets the column, and its rows this build's checksums:
/// trusted on first open, since migrations 1 to 6 have not changed since
/// they were released.
fn check_applied(conn: &Connection) -> Result<()> {
    let has_checksum: bool = conn
        .query_row(
            "SELECT COUNT(*) > 0 FROM pragma_table_info(?1) WHERE name = ?2",
            params!["liaison_migrations", "checksum"],
            |row| row.get(0),
        )
        .map_err(db_err("read migrations table"))?;
    if !has_checksum {
        tracing::info!("recording liaison migration checksums for the first time");
        conn.execute_batch("ALTER TABLE liaison_migrations ADD COLUMN checksum TEXT")
            .map_err(db_err("add migration checksums"))?;
    }
    let recorded = {
        let mut stmt = conn
            .prepare("SELECT version, name, checksum FROM liaison_migrations ORDER BY version")
            .map_err(db_err("read applied migrations"))?;
        stmt.query_map([], |row| {
            Ok(Recorded {
                version: row.get(0)?,
                name: row.get(1)?,
                checksum: row.get(2)?,
            })
        })
        .and_then(|rows| rows.collect::<rusqlite::Result<Vec<_>>>())
        .map_err(db_err("read applied migrations"))?
    };
    for (version, checksum) in migrations::verify(&recorded, Dialect::Sqlite)? {
        conn.execute(
            "UPDATE liaison_migrations SET checksum = ?1 WHERE version = ?2 AND checksum IS NULL",
            params![checksum, version],
        )
        .map_err(db_err("record migration checksum"))?;
    }
    Ok(())
}

/// The store's key for fingerprints and body hashes: created (32 random
/// bytes) by the first open of a database that has none, read by every
/// later one. Two stores racing to create it keep the first one's.
pub(crate) fn store_key(conn: &Connection) -> Result<crate::fingerprint::StoreKey> {
    use crate::fingerprint::StoreKey;
    conn.execute(
        "INSERT OR IGNORE INTO liaison_secrets (name, secret, created_at) VALUES (?1, ?2, ?3)",
        params![
            StoreKey::NAME,
            &StoreKey::generate()[..],
            to_millis(chrono::Utc::now())
        ],
    )
    .map_err(db_err("create the store's fingerprint key"))?;
    let secret: Vec<u8> = conn
        .query_row(
            "SELECT secret FROM liaison_secrets WHERE name = ?1",
            params![StoreKey::NAME],
            |row| row.get(0),
        )
        .map_err(db_err("read the store's fingerprint key"))?;
    StoreKey::from_stored(&secret)
}
