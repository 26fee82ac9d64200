//! The UUID-backed ids (submission, callback, alert, lease token): one
//! definition of their text form, parsing and UUID conversions.

/// Display as a hyphenated UUID, parse from one ([`crate::Error::InvalidInput`]
/// naming `$what` otherwise), and convert to and from [`uuid::Uuid`] inside
/// the crate (the stores keep ids as UUIDs where the database has the type).
macro_rules! uuid_id {
    ($name:ident, $what:literal) => {
        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                self.0.as_hyphenated().fmt(f)
            }
        }

        impl std::str::FromStr for $name {
            type Err = crate::error::Error;

            fn from_str(s: &str) -> crate::error::Result<Self> {
                uuid::Uuid::parse_str(s)
                    .map($name)
                    .map_err(|e| crate::error::Error::invalid($what, e.to_string()))
            }
        }

        #[allow(dead_code)]
        impl $name {
            /// The id of a stored UUID.
            pub(crate) fn from_uuid(uuid: uuid::Uuid) -> Self {
                $name(uuid)
            }

            /// The UUID to store.
            pub(crate) fn uuid(&self) -> uuid::Uuid {
                self.0
            }
        }
    };
}

pub(crate) use uuid_id;
