//! Numbered schema migrations, applied in order with the version and the
//! checksum recorded, in one transaction under an advisory lock so
//! instances starting together do not race. The list is shared with SQLite
//! ([`crate::store::migrations`]): version N means the same schema on both.

use std::time::Duration;

use tokio_postgres::{Client, Transaction};

use super::db::pg_err;
use crate::error::{Error, Result};
use crate::store::common::to_millis;
use crate::store::migrations::{self, Dialect, MIGRATIONS, Recorded};

use crate::store::migrations::SCHEMA_VERSION;

/// The advisory lock every liaison instance takes to migrate ("liaison1").
const MIGRATION_LOCK: i64 = 0x6C69_6169_736F_6E31;

/// How long a migration waits for the lock (other instances migrating) and
/// for its DDL's locks, at least.
const MIGRATION_WAIT: Duration = Duration::from_secs(60);

/// Bring the schema up to [`SCHEMA_VERSION`], creating `schema` if it is
/// named and missing, after checking the migrations it already has against
/// this build's; or refuse a database from a newer version, or one whose
/// applied migrations changed ([`Error::MigrationChanged`]), touching
/// nothing. Waits for other instances' migrations for at least a minute,
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
            applied_at BIGINT NOT NULL,
            checksum   TEXT
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
    check_applied(&tx).await?;
    for migration in MIGRATIONS.iter().filter(|m| m.version > current) {
        let (version, name) = (migration.version, migration.name);
        tracing::info!(
            version,
            name,
            "applying liaison schema migration (PostgreSQL)"
        );
        tx.batch_execute(migration.sql(Dialect::Postgres))
            .await
            .map_err(pg_err("apply migration"))?;
        tx.execute(
            "INSERT INTO liaison_migrations (version, name, applied_at, checksum)
             VALUES ($1, $2, $3, $4)",
            &[
                &version,
                &name,
                &to_millis(chrono::Utc::now()),
                &migration.checksum(Dialect::Postgres),
            ],
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

/// Check, changing nothing, that the outbox exists at exactly this build's
/// schema version with the migrations this build carries: for a store
/// opened with [`crate::store::PostgresConfig::migrate`] off (the CLI). One
/// `READ ONLY` transaction, so nothing can be created by accident: a
/// missing schema or a schema without liaison's tables is
/// [`Error::NotFound`], an older version [`Error::SchemaTooOld`], a newer
/// one [`Error::SchemaTooNew`], a changed migration
/// [`Error::MigrationChanged`].
pub(super) async fn check_existing(client: &mut Client, schema: Option<&str>) -> Result<i64> {
    let tx = client
        .build_transaction()
        .read_only(true)
        .start()
        .await
        .map_err(pg_err("begin schema check"))?;
    let shown = match schema {
        Some(schema) => {
            let exists = tx
                .query_opt("SELECT 1 FROM pg_namespace WHERE nspname = $1", &[&schema])
                .await
                .map_err(pg_err("look up schema"))?
                .is_some();
            if !exists {
                return Err(Error::not_found("schema", schema));
            }
            schema.to_owned()
        }
        None => tx
            .query_one("SELECT current_schema()::text", &[])
            .await
            .map_err(pg_err("look up schema"))?
            .try_get::<_, Option<String>>(0)
            .map_err(pg_err("look up schema"))?
            .unwrap_or_else(|| "(none on the search path)".to_owned()),
    };
    let has_table: bool = tx
        .query_one("SELECT to_regclass('liaison_migrations') IS NOT NULL", &[])
        .await
        .map_err(pg_err("look up migrations table"))?
        .try_get(0)
        .map_err(pg_err("look up migrations table"))?;
    if !has_table {
        return Err(Error::not_found("liaison outbox in schema", shown));
    }
    let current: i64 = tx
        .query_one(
            "SELECT COALESCE(MAX(version), 0)::BIGINT FROM liaison_migrations",
            &[],
        )
        .await
        .map_err(pg_err("read schema version"))?
        .try_get(0)
        .map_err(pg_err("read schema version"))?;
    migrations::require_current(current)?;
    // At this build's version every row has its checksum (the runner that
    // migrated it recorded them); rows without one would be trusted, as the
    // runner trusts them, but not written here.
    let recorded = recorded(&tx).await?;
    migrations::verify(&recorded, Dialect::Postgres)?;
    tx.rollback().await.map_err(pg_err("end schema check"))?;
    Ok(current)
}

/// Compare the recorded checksums of the applied migrations with this
/// build's ([`migrations::verify`]), in the migration's transaction and
/// under its lock. A schema migrated by a release from before checksums
/// gets the column, and its rows this build's checksums: trusted on first
/// open, since migrations 1 to 6 have not changed since they were released.
async fn check_applied(tx: &Transaction<'_>) -> Result<()> {
    // The `liaison_migrations` on the search path (the store's schema), as
    // every statement here sees it.
    let has_checksum = tx
        .query_opt(
            "SELECT 1 FROM pg_attribute
             WHERE attrelid = to_regclass($1) AND attname = $2 AND NOT attisdropped",
            &[&"liaison_migrations", &"checksum"],
        )
        .await
        .map_err(pg_err("read migrations table"))?
        .is_some();
    if !has_checksum {
        tracing::info!("recording liaison migration checksums for the first time (PostgreSQL)");
        tx.batch_execute("ALTER TABLE liaison_migrations ADD COLUMN IF NOT EXISTS checksum TEXT")
            .await
            .map_err(pg_err("add migration checksums"))?;
    }
    let recorded = recorded(tx).await?;
    for (version, checksum) in migrations::verify(&recorded, Dialect::Postgres)? {
        tx.execute(
            "UPDATE liaison_migrations SET checksum = $1 WHERE version = $2 AND checksum IS NULL",
            &[&checksum, &version],
        )
        .await
        .map_err(pg_err("record migration checksum"))?;
    }
    Ok(())
}

/// The store's key for fingerprints and body hashes: created (32 random
/// bytes) by the first instance to open a database that has none, read by
/// every other. Instances racing to create it all read the winner's.
pub(super) async fn store_key(client: &Client) -> Result<crate::fingerprint::StoreKey> {
    use crate::fingerprint::StoreKey;
    let secret = StoreKey::generate().to_vec();
    client
        .execute(
            "INSERT INTO liaison_secrets (name, secret, created_at) VALUES ($1, $2, $3) \
             ON CONFLICT (name) DO NOTHING",
            &[&StoreKey::NAME, &secret, &to_millis(chrono::Utc::now())],
        )
        .await
        .map_err(pg_err("create the store's fingerprint key"))?;
    let secret: Vec<u8> = client
        .query_one(
            "SELECT secret FROM liaison_secrets WHERE name = $1",
            &[&StoreKey::NAME],
        )
        .await
        .and_then(|row| row.try_get(0))
        .map_err(pg_err("read the store's fingerprint key"))?;
    StoreKey::from_stored(&secret)
}

/// The applied migrations as `liaison_migrations` records them.
async fn recorded(tx: &Transaction<'_>) -> Result<Vec<Recorded>> {
    tx.query(
        "SELECT version, name, checksum FROM liaison_migrations ORDER BY version",
        &[],
    )
    .await
    .map_err(pg_err("read applied migrations"))?
    .iter()
    .map(|row| {
        Ok(Recorded {
            version: row.try_get(0)?,
            name: row.try_get(1)?,
            checksum: row.try_get(2)?,
        })
    })
    .collect::<std::result::Result<Vec<_>, tokio_postgres::Error>>()
    .map_err(pg_err("read applied migrations"))
}
