//! The crate's one public error type and its classification.

use std::error::Error as StdError;
use std::sync::Arc;

use crate::model::callback::{CallbackId, Disposition};
use crate::model::delivery::{DeliveryId, DeliveryState};
use crate::model::submission::{SubmissionId, SubmissionState};

/// A boxed underlying cause, kept so [`std::error::Error::source`] returns the
/// real driver error instead of a string.
/// Any error, boxed: what host code (a result handler, a signature
/// verifier) may return.
pub type BoxError = Box<dyn StdError + Send + Sync + 'static>;

/// Everything that can go wrong in `liaison`.
///
/// Match on [`Error::kind`] (or use the `is_*` methods) to decide what to do;
/// the variants carry the details a caller needs to act (which field was
/// invalid, which submission holds a key, which state refused a transition).
/// Driver errors (SQLite, I/O) are never part of the public signature: they are
/// reachable through [`std::error::Error::source`].
///
/// ```
/// use liaison::{Error, ErrorKind};
///
/// fn explain(err: &Error) -> &'static str {
///     match err.kind() {
///         ErrorKind::IdempotencyConflict => "that key was used for a different payload",
///         ErrorKind::InvalidInput | ErrorKind::PayloadTooLarge => "fix the request",
///         _ if err.is_retryable() => "try again shortly",
///         _ => "see the logs",
///     }
/// }
/// # let _ = explain;
/// ```
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// An argument failed validation; nothing was written.
    #[error("invalid {field}: {reason}")]
    InvalidInput {
        /// The field or argument that was refused.
        field: &'static str,
        /// Why it was refused.
        reason: String,
    },

    /// A payload (or other body) is above the configured size cap; nothing was written.
    #[error("payload of {size} bytes is above the limit of {limit} bytes")]
    PayloadTooLarge {
        /// Size of the refused payload in bytes (canonical JSON encoding).
        size: usize,
        /// The configured cap in bytes.
        limit: usize,
    },

    /// The idempotency key is already recorded for this partner with a
    /// different payload fingerprint.
    #[error(
        "idempotency key {key:?} of partner {partner:?} already belongs to submission {existing} with a different payload"
    )]
    IdempotencyConflict {
        /// The partner the key belongs to.
        partner: String,
        /// The key that was reused.
        key: String,
        /// The submission that holds the key.
        existing: SubmissionId,
    },

    /// The requested state change is not in the transition table (or not
    /// allowed through this operation); nothing was changed.
    #[error("submission {id}: cannot go from {from} to {to}: {reason}")]
    InvalidTransition {
        /// The submission.
        id: SubmissionId,
        /// Its current state.
        from: SubmissionState,
        /// The state that was asked for.
        to: SubmissionState,
        /// Why the change is refused.
        reason: &'static str,
    },

    /// The partner's reference (the id it returned on acceptance) is already
    /// recorded for another submission of that partner; nothing was changed.
    /// A reference correlates callbacks, so it belongs to one submission.
    #[error("partner reference {reference:?} of partner {partner:?} already belongs to {}", holder.map_or_else(|| "another submission".to_owned(), |h| format!("submission {h}")))]
    ReferenceTaken {
        /// The partner.
        partner: String,
        /// The reference it returned.
        reference: String,
        /// The submission that holds it, where known.
        holder: Option<SubmissionId>,
    },

    /// The callback was settled already (applied, a duplicate, late, ...):
    /// only callbacks not yet settled, unmatched or quarantined are
    /// processed (again). Nothing was changed.
    #[error(
        "callback {id} is already {disposition}; only unsettled, unmatched or quarantined callbacks are processed"
    )]
    AlreadySettled {
        /// The callback.
        id: CallbackId,
        /// How it was settled.
        disposition: Disposition,
    },

    /// A result delivery to the host was asked to re-run while it is not
    /// parked (it is pending, or the host took it): only a parked delivery
    /// is re-run. Nothing was changed.
    #[error("delivery {id} is {state}; only a parked delivery is re-run")]
    NotParked {
        /// The delivery.
        id: DeliveryId,
        /// Where it stands.
        state: DeliveryState,
    },

    /// A callback was asked to be dismissed while it is not in the
    /// quarantine (it was applied, is still waiting for a match, or was
    /// dismissed already): only a quarantined callback is dismissed.
    /// Nothing was changed.
    #[error(
        "callback {id} is {disposition}; only a quarantined callback (malformed, rejected, expired, conflicting) is dismissed"
    )]
    NotQuarantined {
        /// The callback.
        id: CallbackId,
        /// What it is.
        disposition: Disposition,
    },

    /// A submission was asked to be erased (`forget`) while it is not
    /// finished (queued, in flight, awaiting its result or stuck): cancel
    /// or resolve it first, so no attempt or callback finds its data gone
    /// half-way. Nothing was changed.
    #[error("submission {id} is {state}; only finished work is erased: cancel or resolve it first")]
    Unfinished {
        /// The submission.
        id: SubmissionId,
        /// Its state.
        state: SubmissionState,
    },

    /// A result was reported under a lease token that is no longer the
    /// submission's current one (the lease expired and the work was claimed
    /// again, or it was cancelled). Nothing was changed; the attempt is
    /// journaled on the timeline.
    #[error("submission {id}: lease token is stale; the result was journaled and not applied")]
    StaleLease {
        /// The submission.
        id: SubmissionId,
    },

    /// No such submission (or other record).
    #[error("{what} {id} not found")]
    NotFound {
        /// What was looked up ("submission", ...).
        what: &'static str,
        /// The identifier that was looked up.
        id: String,
    },

    /// The database was written by a newer version of liaison.
    #[error(
        "database schema version {found} is newer than this build of liaison supports ({supported}); upgrade liaison"
    )]
    SchemaTooNew {
        /// The schema version recorded in the database.
        found: i64,
        /// The newest schema version this build knows.
        supported: i64,
    },

    /// The database's schema is older than this build's, and the store was
    /// opened without migrating it (`PostgresConfig::migrate(false)`, as the
    /// `liaison` CLI opens an outbox): nothing was changed. Run the host
    /// application (which migrates on open) or the liaison release that
    /// matches the database.
    #[error(
        "database schema version {found} is older than this build of liaison expects ({required}) and was opened without migrating it; nothing was changed"
    )]
    SchemaTooOld {
        /// The schema version recorded in the database.
        found: i64,
        /// The schema version this build needs.
        required: i64,
    },

    /// A migration this database recorded as applied differs from the one
    /// this build of liaison carries (its SQL's checksum or its name), or is
    /// unknown to this build. The database may not have the schema the code
    /// expects, so it is refused and nothing is touched. Not retryable: run
    /// the liaison release whose migrations match, or restore the original
    /// migration file (an applied migration is never edited; a change is a
    /// new migration).
    ///
    /// Databases migrated before liaison recorded checksums have their
    /// checksums filled in from the build that first opens them.
    #[error(
        "migration {version} ({name}) was changed after it was applied: the database recorded a different migration than this build of liaison carries; restore the migration as released or use the matching liaison release"
    )]
    MigrationChanged {
        /// The migration's version.
        version: i64,
        /// The migration's name, as the database recorded it.
        name: String,
    },

    /// The database stayed locked by another connection longer than the busy
    /// timeout. Safe to retry.
    #[error("database is busy ({operation}); retry later")]
    Busy {
        /// What was being done.
        operation: &'static str,
        /// The driver error.
        #[source]
        source: BoxError,
    },

    /// The storage layer failed (I/O, corruption, constraint, driver error).
    #[error("storage error during {operation}")]
    Storage {
        /// What was being done.
        operation: &'static str,
        /// The driver error.
        #[source]
        source: BoxError,
    },

    /// The database could not be reached, or the connection to it was lost
    /// mid-operation (PostgreSQL). Whatever the operation wrote was rolled
    /// back with its transaction; retrying may succeed once the database is
    /// back.
    #[error("database unavailable ({operation}); retry later")]
    Unavailable {
        /// What was being done.
        operation: &'static str,
        /// The driver error.
        #[source]
        source: BoxError,
    },

    /// Stored data does not decode, or stored records contradict each other
    /// (a ledger key whose submission is missing): the database was changed
    /// outside liaison, or is damaged. Not retryable.
    #[error("stored data is corrupt: {what}")]
    Corrupt {
        /// What does not decode or does not fit.
        what: String,
        /// The decoding error, where there is one.
        #[source]
        source: Option<BoxError>,
    },

    /// The store has been shut down (its writer is gone).
    #[error("the store is closed")]
    Closed,

    /// The host's transactional result handler failed: its writes were
    /// rolled back with the acknowledgement of the delivery.
    #[error("the host's result handler failed: {source}")]
    Handler {
        /// The handler's error.
        #[source]
        source: BoxError,
    },
}

/// The class of an [`Error`], for matching without caring about details.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorKind {
    /// See [`Error::InvalidInput`].
    InvalidInput,
    /// See [`Error::PayloadTooLarge`].
    PayloadTooLarge,
    /// See [`Error::IdempotencyConflict`].
    IdempotencyConflict,
    /// See [`Error::InvalidTransition`].
    InvalidTransition,
    /// See [`Error::ReferenceTaken`].
    ReferenceTaken,
    /// See [`Error::AlreadySettled`].
    AlreadySettled,
    /// See [`Error::NotParked`].
    NotParked,
    /// See [`Error::NotQuarantined`].
    NotQuarantined,
    /// See [`Error::Unfinished`].
    Unfinished,
    /// See [`Error::StaleLease`].
    StaleLease,
    /// See [`Error::NotFound`].
    NotFound,
    /// See [`Error::SchemaTooNew`].
    SchemaTooNew,
    /// See [`Error::SchemaTooOld`].
    SchemaTooOld,
    /// See [`Error::MigrationChanged`].
    MigrationChanged,
    /// See [`Error::Busy`].
    Busy,
    /// See [`Error::Storage`].
    Storage,
    /// See [`Error::Unavailable`].
    Unavailable,
    /// See [`Error::Corrupt`].
    Corrupt,
    /// See [`Error::Closed`].
    Closed,
    /// See [`Error::Handler`].
    Handler,
}

/// What a caught panic said, when it said it with a string.
pub(crate) fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a panic".to_owned())
}

impl Error {
    /// The class of this error.
    pub fn kind(&self) -> ErrorKind {
        match self {
            Error::InvalidInput { .. } => ErrorKind::InvalidInput,
            Error::PayloadTooLarge { .. } => ErrorKind::PayloadTooLarge,
            Error::IdempotencyConflict { .. } => ErrorKind::IdempotencyConflict,
            Error::InvalidTransition { .. } => ErrorKind::InvalidTransition,
            Error::ReferenceTaken { .. } => ErrorKind::ReferenceTaken,
            Error::AlreadySettled { .. } => ErrorKind::AlreadySettled,
            Error::NotParked { .. } => ErrorKind::NotParked,
            Error::NotQuarantined { .. } => ErrorKind::NotQuarantined,
            Error::Unfinished { .. } => ErrorKind::Unfinished,
            Error::StaleLease { .. } => ErrorKind::StaleLease,
            Error::NotFound { .. } => ErrorKind::NotFound,
            Error::SchemaTooNew { .. } => ErrorKind::SchemaTooNew,
            Error::SchemaTooOld { .. } => ErrorKind::SchemaTooOld,
            Error::MigrationChanged { .. } => ErrorKind::MigrationChanged,
            Error::Busy { .. } => ErrorKind::Busy,
            Error::Storage { .. } => ErrorKind::Storage,
            Error::Unavailable { .. } => ErrorKind::Unavailable,
            Error::Corrupt { .. } => ErrorKind::Corrupt,
            Error::Closed => ErrorKind::Closed,
            Error::Handler { .. } => ErrorKind::Handler,
        }
    }

    /// The caller's input was refused (invalid field or too large); fix it
    /// rather than retrying.
    pub fn is_invalid_input(&self) -> bool {
        matches!(
            self.kind(),
            ErrorKind::InvalidInput | ErrorKind::PayloadTooLarge
        )
    }

    /// An idempotency key was reused with a different payload.
    pub fn is_conflict(&self) -> bool {
        self.kind() == ErrorKind::IdempotencyConflict
    }

    /// An erasure was refused because the submission is not finished
    /// ([`Error::Unfinished`]).
    pub fn is_unfinished(&self) -> bool {
        self.kind() == ErrorKind::Unfinished
    }

    /// A state change was refused by the transition table.
    pub fn is_invalid_transition(&self) -> bool {
        self.kind() == ErrorKind::InvalidTransition
    }

    /// The partner's reference already belongs to another submission.
    pub fn is_reference_taken(&self) -> bool {
        self.kind() == ErrorKind::ReferenceTaken
    }

    /// The callback was settled already; there is nothing to process.
    pub fn is_already_settled(&self) -> bool {
        self.kind() == ErrorKind::AlreadySettled
    }

    /// A re-run was asked of a result delivery that is not parked.
    pub fn is_not_parked(&self) -> bool {
        self.kind() == ErrorKind::NotParked
    }

    /// A dismissal was asked of a callback that is not quarantined.
    pub fn is_not_quarantined(&self) -> bool {
        self.kind() == ErrorKind::NotQuarantined
    }

    /// Stored data does not decode or contradicts itself.
    pub fn is_corrupt(&self) -> bool {
        self.kind() == ErrorKind::Corrupt
    }

    /// A result came in under a lease that is no longer current.
    pub fn is_stale_lease(&self) -> bool {
        self.kind() == ErrorKind::StaleLease
    }

    /// The record does not exist.
    pub fn is_not_found(&self) -> bool {
        self.kind() == ErrorKind::NotFound
    }

    /// The storage layer failed or is unavailable (including busy and
    /// closed, and a database this build cannot use: schema too new, too
    /// old for a store opened without migrating, or a migration changed
    /// after it was applied).
    pub fn is_storage(&self) -> bool {
        matches!(
            self.kind(),
            ErrorKind::Storage
                | ErrorKind::Busy
                | ErrorKind::Unavailable
                | ErrorKind::Corrupt
                | ErrorKind::Closed
                | ErrorKind::SchemaTooNew
                | ErrorKind::SchemaTooOld
                | ErrorKind::MigrationChanged
        )
    }

    /// Retrying the same call later may succeed.
    pub fn is_retryable(&self) -> bool {
        matches!(self.kind(), ErrorKind::Busy | ErrorKind::Unavailable)
    }

    pub(crate) fn invalid(field: &'static str, reason: impl Into<String>) -> Self {
        Error::InvalidInput {
            field,
            reason: reason.into(),
        }
    }

    /// Stored data that does not decode (`source`) or does not fit.
    pub(crate) fn corrupt(what: impl Into<String>, source: Option<BoxError>) -> Self {
        Error::Corrupt {
            what: what.into(),
            source,
        }
    }

    pub(crate) fn not_found(what: &'static str, id: impl ToString) -> Self {
        Error::NotFound {
            what,
            id: id.to_string(),
        }
    }

    /// Build a storage error whose cause can be shared by several callers
    /// (one failed group commit answers every caller in the group).
    #[cfg_attr(not(feature = "sqlite"), allow(dead_code))]
    pub(crate) fn shared_storage(
        operation: &'static str,
        source: Arc<dyn StdError + Send + Sync + 'static>,
        busy: bool,
    ) -> Self {
        let source: BoxError = Box::new(SharedCause(source));
        if busy {
            Error::Busy { operation, source }
        } else {
            Error::Storage { operation, source }
        }
    }
}

/// A cause shared between several errors; displays and chains as the original.
#[derive(Debug)]
#[cfg_attr(not(feature = "sqlite"), allow(dead_code))]
struct SharedCause(Arc<dyn StdError + Send + Sync + 'static>);

impl std::fmt::Display for SharedCause {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

impl StdError for SharedCause {
    fn source(&self) -> Option<&(dyn StdError + 'static)> {
        self.0.source()
    }
}

/// `Result` with the crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classification_matches_kind() {
        let e = Error::invalid("idempotency_key", "empty");
        assert_eq!(e.kind(), ErrorKind::InvalidInput);
        assert!(e.is_invalid_input());
        assert!(!e.is_retryable());
        let e = Error::PayloadTooLarge { size: 2, limit: 1 };
        assert!(e.is_invalid_input());
        assert!(!Error::Closed.is_invalid_input());
        assert!(Error::Closed.is_storage());
        let e = Error::MigrationChanged {
            version: 3,
            name: "health".into(),
        };
        assert_eq!(e.kind(), ErrorKind::MigrationChanged);
        assert!(e.is_storage());
        assert!(!e.is_retryable());
        assert!(
            e.to_string()
                .starts_with("migration 3 (health) was changed after it was applied: "),
            "{e}"
        );
    }

    #[test]
    fn storage_errors_keep_their_cause() {
        let io = std::io::Error::other("disk on fire");
        let e = Error::shared_storage("commit", Arc::new(io), true);
        assert!(e.is_retryable());
        let cause = StdError::source(&e).expect("cause kept");
        assert_eq!(cause.to_string(), "disk on fire");
    }
}
