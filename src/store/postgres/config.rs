//! [`PostgresConfig`]: the settings of a [`super::PostgresStore`].

use std::time::Duration;

use crate::error::{Error, Result};

/// Settings for [`super::PostgresStore`]. `Default` is what we recommend
/// (add [`PostgresConfig::tls`] when the database is not on a private
/// network).
///
/// ```
/// use liaison::store::PostgresConfig;
/// use std::time::Duration;
///
/// let config = PostgresConfig::default()
///     .pool_size(16)
///     .schema("liaison")
///     .max_payload_bytes(256 * 1024)
///     .ledger_retention(Some(Duration::from_secs(90 * 24 * 3600)));
/// assert_eq!(config.schema.as_deref(), Some("liaison"));
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct PostgresConfig {
    /// Connections kept open at most (each instance has its own pool).
    /// Default 16.
    pub pool_size: usize,
    /// Largest payload accepted, in bytes of canonical JSON. Default 1 MiB.
    pub max_payload_bytes: usize,
    /// How long an idempotency key stays in the ledger after its enqueue
    /// (it is removed only once its submission is terminal). `None` keeps
    /// keys until they are pruned otherwise. Default 30 days.
    pub ledger_retention: Option<Duration>,
    /// The schema the `liaison_*` tables live in, created if missing; it is
    /// the only schema on the store's `search_path`. A lower-case SQL
    /// identifier (`[a-z_][a-z0-9_]*`, at most 63 bytes). Default `None`: the
    /// connection's own `search_path` (usually `public`).
    pub schema: Option<String>,
    /// How long a statement waits for a lock another transaction holds
    /// before failing with [`Error::Busy`] (PostgreSQL's `lock_timeout`;
    /// zero waits for ever). Default 5 s, like SQLite's busy timeout.
    pub lock_timeout: Duration,
    /// How long to wait for a pooled connection (or to open one) before
    /// failing with [`Error::Busy`]. Default 30 s.
    pub acquire_timeout: Duration,
    /// Whether and how connections use TLS. Default
    /// [`PostgresTls::Disabled`].
    pub tls: PostgresTls,
    /// Whether [`super::PostgresStore::connect`] may change the database:
    /// create [`PostgresConfig::schema`] if it is missing and apply pending
    /// migrations. Default `true`, what a host application wants. Support
    /// tools that must never change a host's database (the `liaison` CLI)
    /// set it to `false`: then only an outbox that exists at this build's
    /// schema version is opened, checked in a read-only transaction, and
    /// anything else is refused with nothing created.
    pub migrate: bool,
}

/// TLS for the connections of a [`super::PostgresStore`] (rustls; the
/// server's certificate and host name are always verified).
///
/// With TLS configured, TLS is required: a server that offers none is
/// refused rather than used in the clear. A URL that names its own
/// `sslmode` keeps it (`sslmode=prefer` falls back to plain TCP when the
/// server offers no TLS — but never when verification fails).
///
/// ```
/// use liaison::store::{PostgresConfig, PostgresTls};
///
/// // A managed database whose CA is in the system's trust store:
/// let config = PostgresConfig::default().tls(PostgresTls::PlatformRoots);
/// // One whose CA bundle you downloaded (e.g. a cloud provider's):
/// let bundle = b"-----BEGIN CERTIFICATE-----\n...".to_vec();
/// let config = PostgresConfig::default().tls(PostgresTls::RootsPem(bundle));
/// # let _ = config;
/// ```
#[derive(Clone, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum PostgresTls {
    /// Plain TCP or a Unix socket: for a local server or a private network.
    /// A URL with `sslmode=require` then fails to connect.
    #[default]
    Disabled,
    /// Verify the server against the platform's trust store (the same
    /// verifier the HTTP client uses).
    PlatformRoots,
    /// Verify the server against these CA certificates only (PEM, one or
    /// more `CERTIFICATE` blocks).
    RootsPem(Vec<u8>),
}

impl std::fmt::Debug for PostgresTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PostgresTls::Disabled => f.write_str("Disabled"),
            PostgresTls::PlatformRoots => f.write_str("PlatformRoots"),
            PostgresTls::RootsPem(pem) => write!(f, "RootsPem({} bytes)", pem.len()),
        }
    }
}

impl Default for PostgresConfig {
    fn default() -> Self {
        PostgresConfig {
            pool_size: 16,
            max_payload_bytes: 1024 * 1024,
            ledger_retention: Some(Duration::from_secs(30 * 24 * 3600)),
            schema: None,
            lock_timeout: Duration::from_secs(5),
            acquire_timeout: Duration::from_secs(30),
            tls: PostgresTls::Disabled,
            migrate: true,
        }
    }
}

impl PostgresConfig {
    /// Set [`PostgresConfig::pool_size`].
    pub fn pool_size(mut self, size: usize) -> Self {
        self.pool_size = size;
        self
    }

    /// Set [`PostgresConfig::max_payload_bytes`].
    pub fn max_payload_bytes(mut self, bytes: usize) -> Self {
        self.max_payload_bytes = bytes;
        self
    }

    /// Set [`PostgresConfig::ledger_retention`].
    pub fn ledger_retention(mut self, retention: Option<Duration>) -> Self {
        self.ledger_retention = retention;
        self
    }

    /// Set [`PostgresConfig::schema`].
    pub fn schema(mut self, schema: impl Into<String>) -> Self {
        self.schema = Some(schema.into());
        self
    }

    /// Set [`PostgresConfig::lock_timeout`].
    pub fn lock_timeout(mut self, timeout: Duration) -> Self {
        self.lock_timeout = timeout;
        self
    }

    /// Set [`PostgresConfig::acquire_timeout`].
    pub fn acquire_timeout(mut self, timeout: Duration) -> Self {
        self.acquire_timeout = timeout;
        self
    }

    /// Set [`PostgresConfig::tls`].
    pub fn tls(mut self, tls: PostgresTls) -> Self {
        self.tls = tls;
        self
    }

    /// Set [`PostgresConfig::migrate`].
    ///
    /// ```
    /// use liaison::store::PostgresConfig;
    ///
    /// // Open an existing outbox only; never create or migrate anything.
    /// let config = PostgresConfig::default().schema("liaison").migrate(false);
    /// assert!(!config.migrate);
    /// ```
    pub fn migrate(mut self, migrate: bool) -> Self {
        self.migrate = migrate;
        self
    }

    pub(super) fn check(&self) -> Result<()> {
        if self.max_payload_bytes == 0 {
            return Err(Error::invalid("max_payload_bytes", "must be above zero"));
        }
        if self.pool_size == 0 {
            return Err(Error::invalid("pool_size", "must be at least 1"));
        }
        if let Some(schema) = &self.schema {
            let mut chars = schema.chars();
            let plain = chars
                .next()
                .is_some_and(|c| c.is_ascii_lowercase() || c == '_')
                && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
                && schema.len() <= 63;
            if !plain {
                return Err(Error::invalid(
                    "schema",
                    "use a lower-case SQL identifier: [a-z_][a-z0-9_]*, at most 63 bytes",
                ));
            }
        }
        Ok(())
    }
}
