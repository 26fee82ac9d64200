//! The mapping of SQLite's errors and stored values to the crate's.

use std::str::FromStr;

use rusqlite::ErrorCode;

use crate::error::{BoxError, Error, Result};
pub(crate) use crate::store::common::{from_millis, to_millis};

/// Map a driver error to the crate's error, keeping it as the source: a
/// lock held past the busy timeout is [`Error::Busy`], a stored value that
/// does not decode is [`Error::Corrupt`].
pub(crate) fn db_err(operation: &'static str) -> impl Fn(rusqlite::Error) -> Error {
    move |e| {
        if is_busy(&e) {
            Error::Busy {
                operation,
                source: Box::new(e),
            }
        } else if is_undecodable(&e) {
            Error::corrupt(
                format!("a row read by {operation} does not decode"),
                Some(Box::new(e)),
            )
        } else {
            Error::Storage {
                operation,
                source: Box::new(e),
            }
        }
    }
}

pub(crate) fn is_busy(e: &rusqlite::Error) -> bool {
    matches!(
        e.sqlite_error_code(),
        Some(ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked)
    )
}

fn is_undecodable(e: &rusqlite::Error) -> bool {
    matches!(
        e,
        rusqlite::Error::FromSqlConversionFailure(..)
            | rusqlite::Error::InvalidColumnType(..)
            | rusqlite::Error::IntegralValueOutOfRange(..)
    )
}

/// The error a row mapping returns for a value that does not decode.
pub(crate) fn corrupt(column: &'static str, detail: impl std::fmt::Display) -> rusqlite::Error {
    rusqlite::Error::FromSqlConversionFailure(
        0,
        rusqlite::types::Type::Text,
        format!("column {column}: {detail}").into(),
    )
}

/// A stored text parsed as an id or token: [`Error::Corrupt`] if it does
/// not parse (never [`Error::InvalidInput`]: nobody passed it in).
pub(crate) fn parse_column<T>(column: &'static str, text: &str) -> Result<T>
where
    T: FromStr,
    T::Err: Into<BoxError>,
{
    text.parse().map_err(|e: T::Err| {
        Error::corrupt(
            format!("column {column} holds {text:?}, which does not parse"),
            Some(e.into()),
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::submission::SubmissionId;

    #[test]
    fn stored_values_that_do_not_decode_are_corrupt_not_bad_input() {
        let err = parse_column::<SubmissionId>("id", "not-a-uuid").unwrap_err();
        assert!(err.is_corrupt() && !err.is_invalid_input(), "{err:?}");
        let err = db_err("read submission")(corrupt("state", "no such state"));
        assert!(err.is_corrupt(), "{err:?}");
        assert!(std::error::Error::source(&err).is_some());
    }
}
