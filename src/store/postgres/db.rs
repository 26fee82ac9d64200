//! The connection every query runs on, and the mapping of driver errors
//! and values to the crate's.

use std::borrow::Cow;
use std::fmt;

use deadpool_postgres::StatementCache;
use tokio_postgres::error::SqlState;
use tokio_postgres::types::ToSql;
use tokio_postgres::{Client, Row, Statement};
use uuid::Uuid;

use crate::error::{BoxError, Error, Result};
use crate::model::alert::AlertId;
use crate::model::callback::CallbackId;
use crate::model::submission::SubmissionId;
use crate::store::LeaseToken;

/// A parameter list for a query.
pub(super) type Params<'a> = [&'a (dyn ToSql + Sync)];

/// One connection, inside whatever transaction its owner opened (the
/// store's own, or the host's). Statements are prepared through the
/// pool's per-connection cache when there is one.
pub(super) struct Db<'a> {
    client: &'a Client,
    cache: Option<&'a StatementCache>,
    /// Without the pool's cache (a host's connection), statements are kept
    /// for this `Db`'s life: a batch enqueue prepares each statement once.
    local: std::sync::Mutex<std::collections::HashMap<String, Statement>>,
}

impl<'a> Db<'a> {
    pub(super) fn new(client: &'a Client, cache: Option<&'a StatementCache>) -> Self {
        Db {
            client,
            cache,
            local: Default::default(),
        }
    }

    async fn prepare(&self, sql: &str, operation: &'static str) -> Result<Statement> {
        #[cfg(test)]
        super::plans::record(sql);
        if let Some(cache) = self.cache {
            return cache
                .prepare(self.client, sql)
                .await
                .map_err(pg_err(operation));
        }
        let known = self
            .local
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(sql)
            .cloned();
        if let Some(stmt) = known {
            return Ok(stmt);
        }
        let stmt = self.client.prepare(sql).await.map_err(pg_err(operation))?;
        self.local
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(sql.to_owned(), stmt.clone());
        Ok(stmt)
    }

    pub(super) async fn query(
        &self,
        sql: &str,
        params: &Params<'_>,
        operation: &'static str,
    ) -> Result<Vec<Row>> {
        let stmt = self.prepare(sql, operation).await?;
        self.client
            .query(&stmt, params)
            .await
            .map_err(pg_err(operation))
    }

    pub(super) async fn query_opt(
        &self,
        sql: &str,
        params: &Params<'_>,
        operation: &'static str,
    ) -> Result<Option<Row>> {
        let stmt = self.prepare(sql, operation).await?;
        self.client
            .query_opt(&stmt, params)
            .await
            .map_err(pg_err(operation))
    }

    pub(super) async fn query_one(
        &self,
        sql: &str,
        params: &Params<'_>,
        operation: &'static str,
    ) -> Result<Row> {
        let stmt = self.prepare(sql, operation).await?;
        self.client
            .query_one(&stmt, params)
            .await
            .map_err(pg_err(operation))
    }

    pub(super) async fn execute(
        &self,
        sql: &str,
        params: &Params<'_>,
        operation: &'static str,
    ) -> Result<u64> {
        let stmt = self.prepare(sql, operation).await?;
        self.client
            .execute(&stmt, params)
            .await
            .map_err(pg_err(operation))
    }

    /// Run statements that take no parameters (savepoints, settings).
    pub(super) async fn batch(&self, sql: &str, operation: &'static str) -> Result<()> {
        self.client
            .batch_execute(sql)
            .await
            .map_err(pg_err(operation))
    }

    /// Serialize with every other transaction that takes the same lock,
    /// until this transaction ends (the key pair is hashed; a collision only
    /// serializes more than needed).
    pub(super) async fn advisory_lock(&self, class: LockClass, key: &str) -> Result<()> {
        self.execute(
            "SELECT pg_advisory_xact_lock($1, hashtext($2))",
            &[&(class as i32), &clean(key).as_ref()],
            "take advisory lock",
        )
        .await
        .map(drop)
    }

    /// [`Db::advisory_lock`] for several keys in one round trip, taken in
    /// the order given (as that many calls would take them).
    pub(super) async fn advisory_locks(&self, locks: &[(LockClass, &str)]) -> Result<()> {
        let classes: Vec<i32> = locks.iter().map(|(class, _)| *class as i32).collect();
        let keys: Vec<String> = locks
            .iter()
            .map(|(_, key)| clean(key).into_owned())
            .collect();
        self.query(
            "SELECT pg_advisory_xact_lock(l.class, hashtext(l.key)) FROM \
             (SELECT class, key FROM unnest($1::int[], $2::text[]) WITH ORDINALITY \
              AS u(class, key, n) ORDER BY n) AS l",
            &[&classes, &keys],
            "take advisory locks",
        )
        .await
        .map(drop)
    }
}

impl fmt::Debug for Db<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Db")
            .field("cached", &self.cache.is_some())
            .finish()
    }
}

/// What an advisory lock serializes (the first of its two keys).
#[derive(Debug, Clone, Copy)]
#[repr(i32)]
pub(super) enum LockClass {
    /// Settling callbacks of one partner event id.
    CallbackEvent = 0x6C69_0001,
    /// Settling callbacks with one body.
    CallbackBody = 0x6C69_0002,
    /// Recording or matching one partner reference.
    PartnerRef = 0x6C69_0003,
    // 0x6C69_0004 is taken by the state-count fold of migration 0018 (one
    // fold at a time per schema; migrations 3 to 15 used it for a
    // per-partner counter lock).
}

/// Map a driver error to the crate's error, keeping it as the source.
/// Serialization failures, deadlocks, lock timeouts and a full server are
/// [`Error::Busy`]: the same call may succeed when retried.
pub(super) fn pg_err(operation: &'static str) -> impl Fn(tokio_postgres::Error) -> Error {
    move |e| {
        if is_unavailable(&e) {
            Error::Unavailable {
                operation,
                source: Box::new(e),
            }
        } else if is_busy(&e) {
            Error::Busy {
                operation,
                source: Box::new(e),
            }
        } else {
            Error::Storage {
                operation,
                source: Box::new(e),
            }
        }
    }
}

/// The connection is gone (closed by the server, the network, or a server
/// shutting down) or could not be made: nothing of the transaction stayed,
/// and the same call may succeed on a new connection.
fn is_unavailable(e: &tokio_postgres::Error) -> bool {
    if e.is_closed() {
        return true;
    }
    match e.code() {
        Some(code) => [
            SqlState::ADMIN_SHUTDOWN,
            SqlState::CRASH_SHUTDOWN,
            SqlState::CANNOT_CONNECT_NOW,
            SqlState::CONNECTION_FAILURE,
            SqlState::CONNECTION_EXCEPTION,
            SqlState::SQLCLIENT_UNABLE_TO_ESTABLISH_SQLCONNECTION,
        ]
        .contains(code),
        // No SQL state: an I/O error on the socket.
        None => std::error::Error::source(e).is_some_and(|s| s.is::<std::io::Error>()),
    }
}

fn is_busy(e: &tokio_postgres::Error) -> bool {
    e.code().is_some_and(|code| {
        [
            SqlState::T_R_SERIALIZATION_FAILURE,
            SqlState::T_R_DEADLOCK_DETECTED,
            SqlState::LOCK_NOT_AVAILABLE,
            SqlState::TOO_MANY_CONNECTIONS,
        ]
        .contains(code)
    })
}

/// Is this a unique-constraint violation?
pub(super) fn is_unique_violation(e: &Error) -> bool {
    match e {
        Error::Storage { source, .. } => source
            .downcast_ref::<tokio_postgres::Error>()
            .and_then(tokio_postgres::Error::code)
            .is_some_and(|c| *c == SqlState::UNIQUE_VIOLATION),
        _ => false,
    }
}

/// Map a pool error: waiting too long for a connection is [`Error::Busy`],
/// a closed pool is [`Error::Closed`].
pub(super) fn pool_err(e: deadpool_postgres::PoolError) -> Error {
    use deadpool_postgres::PoolError;
    match e {
        PoolError::Backend(e) => pg_err("connect")(e),
        PoolError::Closed => Error::Closed,
        e @ PoolError::Timeout(_) => Error::Busy {
            operation: "acquire connection",
            source: Box::new(e),
        },
        e => Error::Storage {
            operation: "acquire connection",
            source: Box::new(e),
        },
    }
}

/// An error for a stored value that does not decode.
pub(super) fn corrupt(column: &'static str, cause: impl Into<BoxError>) -> Error {
    Error::corrupt(
        format!("column {column} holds a value that does not decode"),
        Some(cause.into()),
    )
}

/// Read column `idx` of a row.
pub(super) fn get<'r, T>(row: &'r Row, idx: usize) -> Result<T>
where
    T: tokio_postgres::types::FromSql<'r>,
{
    row.try_get(idx).map_err(pg_err("decode row"))
}

/// PostgreSQL text cannot hold NUL characters: they are stored as U+FFFD.
pub(super) fn clean(text: &str) -> Cow<'_, str> {
    if text.contains('\0') {
        Cow::Owned(text.replace('\0', "\u{FFFD}"))
    } else {
        Cow::Borrowed(text)
    }
}

/// A count as PostgreSQL's `integer` holds it (saturating).
pub(super) fn int(n: u32) -> i32 {
    i32::try_from(n).unwrap_or(i32::MAX)
}

/// [`clean`] for an optional owned text.
pub(super) fn clean_opt(text: Option<String>) -> Option<String> {
    text.map(|t| match clean(&t) {
        Cow::Borrowed(_) => t,
        Cow::Owned(c) => c,
    })
}

pub(super) fn sid(id: SubmissionId) -> Uuid {
    id.uuid()
}

pub(super) fn cid(id: CallbackId) -> Uuid {
    id.uuid()
}

pub(super) fn aid(id: AlertId) -> Uuid {
    id.uuid()
}

pub(super) fn to_aid(u: Uuid) -> Result<AlertId> {
    Ok(AlertId::from_uuid(u))
}

pub(super) fn token_uuid(token: LeaseToken) -> Uuid {
    token.uuid()
}

pub(super) fn to_sid(_column: &'static str, u: Uuid) -> Result<SubmissionId> {
    Ok(SubmissionId::from_uuid(u))
}

pub(super) fn to_cid(u: Uuid) -> Result<CallbackId> {
    Ok(CallbackId::from_uuid(u))
}
