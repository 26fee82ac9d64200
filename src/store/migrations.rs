//! The schema migrations, declared once for every store.
//!
//! Each migration has a version, a name and one SQL file per dialect:
//! `migrations/sqlite/NNNN_name.sql` and `migrations/postgres/NNNN_name.sql`.
//! Version N means the same schema on both stores. The stores' runners
//! (`sqlite::migrate`, `postgres::migrate`) apply what a database lacks, in
//! order, and record each applied migration in `liaison_migrations` with the
//! SHA-256 (hex) of the SQL they ran. On every open the recorded checksums
//! are compared with this build's: a migration edited after it was applied
//! is refused with [`Error::MigrationChanged`], since the database would not
//! have the schema the code expects. A migration, once released, is never
//! edited: a change is a new migration.

use sha2::{Digest, Sha256};

use crate::error::{Error, Result};

/// One migration: its version and name, and its SQL in each dialect built.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Migration {
    /// Its number, from 1 with no gaps.
    pub(crate) version: i64,
    /// Its name, as recorded in `liaison_migrations` and in the file names.
    pub(crate) name: &'static str,
    /// The file name in both `migrations/` folders, `NNNN_name.sql`.
    #[cfg_attr(not(test), allow(dead_code))]
    pub(crate) file: &'static str,
    /// `migrations/sqlite/<file>`.
    #[cfg(feature = "sqlite")]
    pub(crate) sqlite: &'static str,
    /// `migrations/postgres/<file>`.
    #[cfg(feature = "postgres")]
    pub(crate) postgres: &'static str,
}

/// The SQL dialect of a store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Dialect {
    /// [`crate::store::SqliteStore`].
    #[cfg(feature = "sqlite")]
    Sqlite,
    /// [`crate::store::PostgresStore`].
    #[cfg(feature = "postgres")]
    Postgres,
}

impl Migration {
    /// Its SQL in `dialect`.
    pub(crate) fn sql(&self, dialect: Dialect) -> &'static str {
        match dialect {
            #[cfg(feature = "sqlite")]
            Dialect::Sqlite => self.sqlite,
            #[cfg(feature = "postgres")]
            Dialect::Postgres => self.postgres,
        }
    }

    /// The checksum recorded for it: SHA-256 of its SQL text in `dialect`,
    /// lower-case hex.
    pub(crate) fn checksum(&self, dialect: Dialect) -> String {
        hex::encode(Sha256::digest(self.sql(dialect).as_bytes()))
    }
}

/// Declare the migrations: `version, "name", "file";` each, in order.
macro_rules! migrations {
    ($($version:literal, $name:literal, $file:literal;)+) => {
        /// Every migration, in order.
        pub(crate) const MIGRATIONS: &[Migration] = &[$(
            Migration {
                version: $version,
                name: $name,
                file: $file,
                #[cfg(feature = "sqlite")]
                sqlite: include_str!(concat!(
                    env!("CARGO_MANIFEST_DIR"),
                    "/migrations/sqlite/",
                    $file
                )),
                #[cfg(feature = "postgres")]
                postgres: include_str!(concat!(
                    env!("CARGO_MANIFEST_DIR"),
                    "/migrations/postgres/",
                    $file
                )),
            },
        )+];
    };
}

migrations! {
    1, "init", "0001_init.sql";
    2, "replay_cycles", "0002_replay_cycles.sql";
    3, "health", "0003_health.sql";
    4, "alerts", "0004_alerts.sql";
    5, "wakeups", "0005_wakeups.sql";
    6, "retention", "0006_retention.sql";
    7, "callback_rows", "0007_callback_rows.sql";
    8, "results", "0008_results.sql";
    9, "deliveries", "0009_deliveries.sql";
    10, "lookup", "0010_lookup.sql";
    11, "poison", "0011_poison.sql";
    12, "silence", "0012_silence.sql";
    13, "callback_dismissals", "0013_callback_dismissals.sql";
    14, "impact", "0014_impact.sql";
    15, "alert_notifications", "0015_alert_notifications.sql";
    16, "partner_limits", "0016_partner_limits.sql";
    17, "shared_circuit", "0017_shared_circuit.sql";
    18, "no_hot_rows", "0018_no_hot_rows.sql";
    19, "privacy", "0019_privacy.sql";
    20, "ops_journal", "0020_ops_journal.sql";
    21, "limit_waiters", "0021_limit_waiters.sql";
    22, "one_lease_index", "0022_one_lease_index.sql";
    23, "counts_in_writes", "0023_counts_in_writes.sql";
    24, "created_index", "0024_created_index.sql";
    25, "ordering_by_state", "0025_ordering_by_state.sql";
    26, "created_index_sqlite", "0026_created_index_sqlite.sql";
    27, "inserts_count_themselves", "0027_inserts_count_themselves.sql";
    28, "claims_read_from_attempts", "0028_claims_read_from_attempts.sql";
    29, "changes_count_themselves", "0029_changes_count_themselves.sql";
}

/// The newest schema version this build of liaison knows; a database with a
/// higher recorded version is refused with [`Error::SchemaTooNew`].
// Public through `store::SCHEMA_VERSION` with the `sqlite` feature.
#[cfg_attr(not(feature = "sqlite"), allow(unreachable_pub))]
pub const SCHEMA_VERSION: i64 = MIGRATIONS[MIGRATIONS.len() - 1].version;

/// Whether an outbox opened without migrating (a support tool's open:
/// nothing may change) can be used: only at exactly this build's version.
/// Older is [`Error::SchemaTooOld`], newer [`Error::SchemaTooNew`].
#[cfg_attr(not(feature = "postgres"), allow(dead_code))]
pub(crate) fn require_current(found: i64) -> Result<()> {
    if found > SCHEMA_VERSION {
        Err(Error::SchemaTooNew {
            found,
            supported: SCHEMA_VERSION,
        })
    } else if found < SCHEMA_VERSION {
        Err(Error::SchemaTooOld {
            found,
            required: SCHEMA_VERSION,
        })
    } else {
        Ok(())
    }
}

/// One row of `liaison_migrations`, as a store read it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Recorded {
    /// The version applied.
    pub(crate) version: i64,
    /// The name recorded with it.
    pub(crate) name: String,
    /// The checksum recorded with it; `None` for rows written before
    /// liaison recorded checksums.
    pub(crate) checksum: Option<String>,
}

/// Compare what a database recorded with this build's migrations (all of
/// `recorded` must be at most [`SCHEMA_VERSION`]: the runner refuses newer
/// databases first). Returns the checksums to fill in, as (version,
/// checksum), for rows that have none; refuses with
/// [`Error::MigrationChanged`] a row whose name or checksum differs from
/// this build's, or whose version this build does not have.
///
/// A row without a checksum was written by a release from before checksums
/// were recorded (versions 1 to 6). It is trusted on first open and given
/// this build's checksum: those migration files have not changed since they
/// were released, so the SQL that ran is the SQL this build carries.
pub(crate) fn verify(recorded: &[Recorded], dialect: Dialect) -> Result<Vec<(i64, String)>> {
    let mut fill = Vec::new();
    for row in recorded {
        let changed = || Error::MigrationChanged {
            version: row.version,
            name: row.name.clone(),
        };
        let Some(migration) = MIGRATIONS.iter().find(|m| m.version == row.version) else {
            return Err(changed());
        };
        if migration.name != row.name {
            return Err(changed());
        }
        let expected = migration.checksum(dialect);
        match &row.checksum {
            None => fill.push((row.version, expected)),
            Some(found) if *found == expected => {}
            Some(found) => {
                tracing::error!(
                    version = row.version,
                    name = %row.name,
                    recorded = %found,
                    expected = %expected,
                    "a liaison schema migration was changed after it was applied"
                );
                return Err(changed());
            }
        }
    }
    Ok(fill)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;
    use std::path::Path;

    use super::*;

    /// `(version, name)` of every `NNNN_name.sql` in `migrations/<dialect>`;
    /// any other file there fails the test.
    fn files(dialect: &str) -> BTreeSet<(i64, String)> {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("migrations")
            .join(dialect);
        let mut found = BTreeSet::new();
        for entry in std::fs::read_dir(&dir).expect("read the migrations folder") {
            let file = entry.expect("read a directory entry").file_name();
            let file = file.to_str().expect("a UTF-8 file name");
            let parsed = file
                .strip_suffix(".sql")
                .and_then(|stem| stem.split_once('_'))
                .filter(|(digits, _)| digits.len() == 4)
                .and_then(|(digits, name)| Some((digits.parse::<i64>().ok()?, name.to_owned())));
            let Some(parsed) = parsed else {
                panic!("{dialect}/{file} is not named NNNN_name.sql");
            };
            assert!(found.insert(parsed), "{dialect}/{file} twice");
        }
        found
    }

    fn declared() -> BTreeSet<(i64, String)> {
        MIGRATIONS
            .iter()
            .map(|m| (m.version, m.name.to_owned()))
            .collect()
    }

    #[test]
    fn the_list_matches_the_files_of_both_dialects() {
        let declared = declared();
        for dialect in ["sqlite", "postgres"] {
            let files = files(dialect);
            let missing: Vec<_> = files.difference(&declared).collect();
            assert!(
                missing.is_empty(),
                "files in migrations/{dialect} missing from MIGRATIONS: {missing:?}"
            );
            let no_file: Vec<_> = declared.difference(&files).collect();
            assert!(
                no_file.is_empty(),
                "MIGRATIONS entries without a file in migrations/{dialect}: {no_file:?}"
            );
        }
    }

    #[test]
    fn versions_count_from_one_and_file_names_follow_them() {
        for (expected, m) in (1..).zip(MIGRATIONS) {
            assert_eq!(m.version, expected, "{m:?}");
            assert_eq!(m.file, format!("{:04}_{}.sql", m.version, m.name));
        }
        assert_eq!(SCHEMA_VERSION, MIGRATIONS.len() as i64);
    }

    #[test]
    fn each_dialect_carries_its_own_file() {
        let read = |dialect: &str, file: &str| {
            std::fs::read_to_string(
                Path::new(env!("CARGO_MANIFEST_DIR"))
                    .join("migrations")
                    .join(dialect)
                    .join(file),
            )
            .expect("read a migration")
        };
        for m in MIGRATIONS {
            #[cfg(feature = "sqlite")]
            assert_eq!(m.sql(Dialect::Sqlite), read("sqlite", m.file));
            #[cfg(feature = "postgres")]
            assert_eq!(m.sql(Dialect::Postgres), read("postgres", m.file));
        }
    }

    #[cfg(feature = "sqlite")]
    #[test]
    fn checksums_are_sha256_hex_of_the_sql() {
        let init = &MIGRATIONS[0];
        let sum = init.checksum(Dialect::Sqlite);
        assert_eq!(sum.len(), 64);
        assert!(
            sum.bytes()
                .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
        );
        assert_eq!(sum, hex::encode(Sha256::digest(init.sqlite.as_bytes())));
        assert_ne!(sum, MIGRATIONS[1].checksum(Dialect::Sqlite));
    }

    #[cfg(feature = "sqlite")]
    #[test]
    fn verify_fills_missing_checksums_and_refuses_changes() {
        let dialect = Dialect::Sqlite;
        let row = |version: i64, name: &str, checksum: Option<String>| Recorded {
            version,
            name: name.into(),
            checksum,
        };
        let good = |i: usize| Some(MIGRATIONS[i].checksum(dialect));

        // Rows from before checksums: filled with this build's.
        let fill = verify(
            &[row(1, "init", None), row(2, "replay_cycles", good(1))],
            dialect,
        )
        .unwrap();
        assert_eq!(fill, [(1, MIGRATIONS[0].checksum(dialect))]);
        assert!(verify(&[], dialect).unwrap().is_empty());

        for (bad, version) in [
            (row(2, "replay_cycles", Some("0".repeat(64))), 2),
            (row(3, "renamed", good(2)), 3),
            (row(3, "renamed", None), 3),
            (row(0, "before time", None), 0),
        ] {
            let err = verify(&[row(1, "init", good(0)), bad.clone()], dialect).unwrap_err();
            assert_eq!(err.kind(), crate::ErrorKind::MigrationChanged, "{bad:?}");
            assert!(
                matches!(&err, Error::MigrationChanged { version: v, name } if *v == version && *name == bad.name),
                "{err:?}"
            );
        }
    }

    #[test]
    fn an_outbox_opened_without_migrating_must_be_at_this_builds_version() {
        assert!(require_current(SCHEMA_VERSION).is_ok());
        let old = require_current(SCHEMA_VERSION - 1).unwrap_err();
        assert_eq!(old.kind(), crate::ErrorKind::SchemaTooOld);
        assert!(old.is_storage() && !old.is_retryable());
        let new = require_current(SCHEMA_VERSION + 1).unwrap_err();
        assert_eq!(new.kind(), crate::ErrorKind::SchemaTooNew);
        assert_eq!(
            require_current(0).unwrap_err().kind(),
            crate::ErrorKind::SchemaTooOld
        );
    }
}
