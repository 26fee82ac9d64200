//! How a command ends: exit codes, and errors as a person reads them.

use std::error::Error as _;

use liaison::ErrorKind;

/// A command that ran to its end.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Done {
    /// Nothing to report: exit 0.
    Clean,
    /// It ran, and what it found is a problem (the command says which): exit 1.
    Problems,
}

/// A command that could not do what was asked.
#[derive(Debug)]
pub(crate) struct Fail {
    /// 2: usage, missing file, unknown id, refused by state; 3: the database failed.
    pub(crate) code: u8,
    /// What to print on stderr.
    pub(crate) message: String,
}

impl Fail {
    /// Exit 2 with this message.
    pub(crate) fn usage(message: impl Into<String>) -> Self {
        Fail {
            code: 2,
            message: message.into(),
        }
    }

    /// A library error, with a hint for a state that refused the action.
    pub(crate) fn with_hint(err: liaison::Error, hint: &str) -> Self {
        let refused = err.is_invalid_transition() || err.is_unfinished();
        let mut fail = Fail::from(err);
        if refused {
            fail.message.push_str("\nhint: ");
            fail.message.push_str(hint);
        }
        fail
    }
}

impl From<liaison::Error> for Fail {
    fn from(err: liaison::Error) -> Self {
        let code = match err.kind() {
            ErrorKind::Storage
            | ErrorKind::Busy
            | ErrorKind::Unavailable
            | ErrorKind::Corrupt
            | ErrorKind::Closed => 3,
            _ => 2,
        };
        // The typed error's message, then its causes (a driver error's text).
        let mut message = err.to_string();
        let mut cause = err.source();
        while let Some(c) = cause {
            message.push_str(": ");
            message.push_str(&c.to_string());
            cause = c.source();
        }
        Fail { code, message }
    }
}

pub(crate) type Outcome = Result<Done, Fail>;
