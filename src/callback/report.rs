//! Parsing a partner's callback: the matcher trait, and the error for a
//! callback that cannot be understood. What a parsed callback says (which
//! submission, which event, which outcome) is `model::callback`.

use std::fmt;

use super::InboundCallback;
use super::signature::SignatureError;
pub use crate::model::callback::{CallbackReport, Correlation, ReportedOutcome};

/// A callback that could not be understood; it is quarantined with this
/// reason and answered with 400.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("malformed callback: {reason}")]
#[non_exhaustive]
pub struct MalformedCallback {
    /// What was wrong, for the quarantine list.
    pub reason: String,
}

impl MalformedCallback {
    /// A malformed-callback error with a reason.
    pub fn new(reason: impl Into<String>) -> Self {
        MalformedCallback {
            reason: reason.into(),
        }
    }
}

/// Turns a partner's callback into a [`CallbackReport`]: first checks it
/// came from the partner, then reads it in the partner's own format.
///
/// Verification fails closed: a matcher always has a verifier, and not
/// verifying is the explicit [`super::Unverified`].
pub trait CallbackMatcher: Send + Sync + fmt::Debug {
    /// Check the callback's signature (or other proof of origin).
    fn verify(
        &self,
        callback: &InboundCallback,
        now: std::time::SystemTime,
    ) -> Result<(), SignatureError>;

    /// Read the callback. Called only after `verify` succeeded.
    fn parse(&self, callback: &InboundCallback) -> Result<CallbackReport, MalformedCallback>;

    /// The verification scheme, for health and logs ("unverified" is a risk).
    fn scheme(&self) -> &'static str;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn _object_safe(_: Box<dyn CallbackMatcher>) {}
}
