//! Lookups by the host's own keys: what a lookup accepts and what it
//! answers when nothing has the key. Each store only reads.

use crate::error::{Error, Result};
use crate::model::submission::validate_lookup;

/// Refuse a (partner, idempotency key) that enqueue would refuse: no
/// submission can have it.
pub(crate) fn check_key(partner: &str, key: &str) -> Result<()> {
    validate_lookup(partner, key)
}

/// The error for a key no submission of `partner` has.
pub(crate) fn key_not_found(partner: &str, key: &str) -> Error {
    Error::not_found(
        "submission",
        format!("with idempotency key {key:?} of partner {partner:?}"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lookup_accepts_what_enqueue_accepts() {
        assert!(check_key("bank", "C-1042").is_ok());
        assert!(check_key("bank", &"k".repeat(255)).is_ok());
        for (partner, key, field) in [
            ("bank", "", "idempotency_key"),
            ("bank", &*"k".repeat(256), "idempotency_key"),
            ("bank", "nul\0", "idempotency_key"),
            ("", "k", "partner"),
            ("a b", "k", "partner"),
        ] {
            match check_key(partner, key) {
                Err(Error::InvalidInput { field: f, .. }) => assert_eq!(f, field, "{key:?}"),
                other => panic!("{partner:?} {key:?}: {other:?}"),
            }
        }
        let err = key_not_found("bank", "C-1");
        assert!(err.is_not_found());
        assert_eq!(
            err.to_string(),
            r#"submission with idempotency key "C-1" of partner "bank" not found"#
        );
    }
}
