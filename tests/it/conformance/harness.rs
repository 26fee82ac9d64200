//! One harness per test: a fresh database (an SQLite file in a temporary
//! directory, or a PostgreSQL schema of its own) on which any number of
//! store instances can be opened, as separate processes would.

use std::sync::Arc;
use std::time::Duration;

use liaison::store::{
    AttemptReport, ClaimRequest, Lease, OutboxStore, SqliteConfig, SqliteStore, StateChange,
};
use liaison::{AttemptOutcome, NewSubmission, SubmissionId, SubmissionState};
use serde_json::json;
use tempfile::TempDir;

pub type Store = Arc<dyn OutboxStore>;

/// What differs between the stores a case opens.
#[derive(Debug, Clone)]
pub struct Settings {
    pub max_payload_bytes: usize,
    pub ledger_retention: Option<Duration>,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            max_payload_bytes: 1024 * 1024,
            ledger_retention: Some(Duration::from_secs(30 * 24 * 3600)),
        }
    }
}

impl Settings {
    pub fn max_payload_bytes(mut self, bytes: usize) -> Self {
        self.max_payload_bytes = bytes;
        self
    }

    pub fn ledger_retention(mut self, retention: Option<Duration>) -> Self {
        self.ledger_retention = retention;
        self
    }
}

pub struct Harness {
    backend: Backend,
}

enum Backend {
    Sqlite {
        dir: TempDir,
    },
    #[cfg(feature = "postgres")]
    Postgres(pg::Schema),
}

impl Harness {
    pub fn sqlite() -> Harness {
        Harness {
            backend: Backend::Sqlite {
                dir: tempfile::tempdir().expect("temp dir"),
            },
        }
    }

    /// A fresh schema on `LIAISON_TEST_PG_URL`; `None` (after a notice) when
    /// the variable is not set, unless `LIAISON_REQUIRE_PG=1`.
    #[cfg(feature = "postgres")]
    pub async fn postgres() -> Option<Harness> {
        let schema = pg::Schema::create().await?;
        Some(Harness {
            backend: Backend::Postgres(schema),
        })
    }

    /// Another harness of the same kind, on a database of its own (another
    /// SQLite file, another PostgreSQL schema).
    pub async fn another(&self) -> Harness {
        match &self.backend {
            Backend::Sqlite { .. } => Harness::sqlite(),
            #[cfg(feature = "postgres")]
            Backend::Postgres(_) => Harness::postgres()
                .await
                .expect("a second schema on the same server"),
        }
    }

    /// Which store this is, for messages.
    pub fn name(&self) -> &'static str {
        match &self.backend {
            Backend::Sqlite { .. } => "sqlite",
            #[cfg(feature = "postgres")]
            Backend::Postgres(_) => "postgres",
        }
    }

    /// A new store instance on this harness's database, default settings.
    pub async fn store(&self) -> Store {
        self.store_with(Settings::default()).await
    }

    /// A new store instance on this harness's database.
    pub async fn store_with(&self, settings: Settings) -> Store {
        match &self.backend {
            Backend::Sqlite { dir } => {
                let config = SqliteConfig::default()
                    .max_payload_bytes(settings.max_payload_bytes)
                    .ledger_retention(settings.ledger_retention);
                Arc::new(
                    SqliteStore::open_with(dir.path().join("outbox.db"), config)
                        .expect("open SQLite store"),
                )
            }
            #[cfg(feature = "postgres")]
            Backend::Postgres(schema) => Arc::new(schema.open(settings).await),
        }
    }
}

pub fn submission(partner: &str, key: &str) -> NewSubmission {
    NewSubmission::new(
        partner,
        "claim.submit",
        json!({ "claim": key, "amount": 12500 }),
    )
    .idempotency_key(key)
}

pub const LEASE: Duration = Duration::from_secs(30);

pub async fn claim_one(store: &Store, partner: &str) -> Lease {
    // Dated by the store's clock, as `support::claim_one` (see there).
    let mut leases = store
        .claim(ClaimRequest::new(partner, 1, LEASE).at(store.now()))
        .await
        .expect("claim");
    assert_eq!(leases.len(), 1, "expected one due submission for {partner}");
    leases.remove(0)
}

/// Drive a fresh submission of `partner` into `state` through the store's
/// own operations. Returns its id and, for `InFlight`, the lease.
pub async fn drive_to(
    store: &Store,
    partner: &str,
    state: SubmissionState,
) -> (SubmissionId, Option<Lease>) {
    use SubmissionState::*;
    let id = store
        .enqueue(submission(partner, &format!("{partner}-key")))
        .await
        .expect("enqueue")
        .submission
        .id;
    if state == Queued {
        return (id, None);
    }
    if state == Cancelled {
        store
            .transition(id, StateChange::to(Cancelled))
            .await
            .expect("cancel");
        return (id, None);
    }
    let lease = claim_one(store, partner).await;
    let settle = |outcome, target| {
        let lease = lease.clone();
        async move {
            store
                .complete(&lease, AttemptReport::new(outcome), StateChange::to(target))
                .await
                .expect("complete")
        }
    };
    match state {
        InFlight => return (id, Some(lease)),
        AwaitingResult | Stuck => {
            settle(AttemptOutcome::Accepted, AwaitingResult).await;
            if state == Stuck {
                store
                    .transition(id, StateChange::to(Stuck))
                    .await
                    .expect("stuck");
            }
        }
        Succeeded => {
            settle(AttemptOutcome::Succeeded, Succeeded).await;
        }
        Failed | ResolvedManually => {
            settle(AttemptOutcome::Failed, Failed).await;
            if state == ResolvedManually {
                store
                    .transition(id, StateChange::to(ResolvedManually))
                    .await
                    .expect("resolve");
            }
        }
        DeadLettered => {
            settle(AttemptOutcome::Permanent, DeadLettered).await;
        }
        Queued | Cancelled => unreachable!(),
    }
    assert_eq!(store.get(id).await.unwrap().state, state);
    (id, None)
}

/// Whether CI demands the PostgreSQL side.
pub fn postgres_required() -> bool {
    std::env::var("LIAISON_REQUIRE_PG").is_ok_and(|v| v == "1")
}

#[cfg(feature = "postgres")]
pub mod pg {
    //! A schema of its own per test, dropped when the harness goes (also
    //! when the test panics).

    use liaison::store::{PostgresConfig, PostgresStore};

    use super::{Settings, postgres_required};

    pub const URL_VAR: &str = "LIAISON_TEST_PG_URL";

    pub struct Schema {
        pub url: String,
        pub name: String,
    }

    /// The test database's URL, or `None` after a notice. Panics when
    /// `LIAISON_REQUIRE_PG=1` and it is missing.
    pub fn url() -> Option<String> {
        match std::env::var(URL_VAR) {
            Ok(url) if !url.trim().is_empty() => Some(url),
            _ if postgres_required() => {
                panic!("LIAISON_REQUIRE_PG=1 but {URL_VAR} is not set")
            }
            _ => {
                eprintln!("skipping PostgreSQL: {URL_VAR} not set");
                None
            }
        }
    }

    /// Connect to the database directly, for what a host would do itself.
    pub async fn client(url: &str) -> tokio_postgres::Client {
        let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls)
            .await
            .unwrap_or_else(|e| panic!("cannot reach PostgreSQL at {URL_VAR}: {e}"));
        tokio::spawn(connection);
        client
    }

    impl Schema {
        pub async fn create() -> Option<Schema> {
            let url = url()?;
            let name = format!("liaison_t_{}", uuid::Uuid::new_v4().simple());
            // A set URL that cannot be reached is a failure, not a skip.
            let schema = Schema { url, name };
            drop(schema.open(Settings::default()).await);
            Some(schema)
        }

        pub fn config(&self, settings: Settings) -> PostgresConfig {
            PostgresConfig::default()
                .schema(self.name.clone())
                .pool_size(8)
                .max_payload_bytes(settings.max_payload_bytes)
                .ledger_retention(settings.ledger_retention)
        }

        pub async fn open(&self, settings: Settings) -> PostgresStore {
            PostgresStore::connect(&self.url, self.config(settings))
                .await
                .unwrap_or_else(|e| {
                    panic!(
                        "cannot open a PostgreSQL store ({URL_VAR}): {e}; cause: {:?}",
                        std::error::Error::source(&e)
                    )
                })
        }
    }

    impl Drop for Schema {
        fn drop(&mut self) {
            let (url, name) = (self.url.clone(), self.name.clone());
            // Its own thread and runtime: drop may run inside (or after) the
            // test's runtime, and also while a failed test unwinds.
            let dropped = std::thread::spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .ok()?;
                rt.block_on(async {
                    let (client, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
                        .await
                        .ok()?;
                    tokio::spawn(connection);
                    client
                        .batch_execute(&format!(
                            "SET lock_timeout = '10s'; DROP SCHEMA IF EXISTS {name} CASCADE"
                        ))
                        .await
                        .ok()
                })
            })
            .join();
            if !matches!(dropped, Ok(Some(()))) {
                eprintln!("could not drop test schema {}", self.name);
            }
        }
    }
}

/// A connection of the test's own to the database under test.
enum Raw {
    Sqlite(liaison::rusqlite::Connection),
    #[cfg(feature = "postgres")]
    Postgres(tokio_postgres::Client),
}

impl Harness {
    /// A connection of its own to the database under test (on PostgreSQL
    /// with the schema under test as its search path).
    async fn raw(&self) -> Raw {
        match &self.backend {
            Backend::Sqlite { dir } => Raw::Sqlite(
                liaison::rusqlite::Connection::open(dir.path().join("outbox.db"))
                    .expect("open the SQLite file"),
            ),
            #[cfg(feature = "postgres")]
            Backend::Postgres(schema) => {
                let client = pg::client(&schema.url).await;
                client
                    .batch_execute(&format!("SET search_path = {}", schema.name))
                    .await
                    .expect("search path");
                Raw::Postgres(client)
            }
        }
    }

    /// Run SQL (no parameters; the same text on both dialects) directly on
    /// the database under test, as an older release would have written it.
    pub async fn execute_raw(&self, sql: &str) {
        match self.raw().await {
            Raw::Sqlite(conn) => conn.execute_batch(sql).expect("raw SQL"),
            #[cfg(feature = "postgres")]
            Raw::Postgres(client) => client.batch_execute(sql).await.expect("raw SQL"),
        }
    }

    /// Run a query (no parameters; the same text on both dialects) that
    /// answers one count, directly on the database under test.
    pub async fn count_raw(&self, sql: &str) -> i64 {
        match self.raw().await {
            Raw::Sqlite(conn) => conn
                .query_row(sql, [], |row| row.get(0))
                .expect("raw count"),
            #[cfg(feature = "postgres")]
            Raw::Postgres(client) => client.query_one(sql, &[]).await.expect("raw count").get(0),
        }
    }

    /// The SQLite file under test (`None` for PostgreSQL), for checks a
    /// host would run itself, such as `PRAGMA integrity_check`.
    pub fn sqlite_file(&self) -> Option<std::path::PathBuf> {
        match &self.backend {
            Backend::Sqlite { dir } => Some(dir.path().join("outbox.db")),
            #[cfg(feature = "postgres")]
            Backend::Postgres(_) => None,
        }
    }

    /// The PostgreSQL URL and schema under test (`None` for SQLite), for a
    /// tool that opens the outbox itself, such as the CLI.
    pub fn postgres_schema(&self) -> Option<(&str, &str)> {
        match &self.backend {
            Backend::Sqlite { .. } => None,
            #[cfg(feature = "postgres")]
            Backend::Postgres(schema) => Some((&schema.url, &schema.name)),
        }
    }
}
