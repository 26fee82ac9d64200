//! Payload fingerprints: SHA-256 over a canonical JSON encoding, keyed
//! with the store's own secret (HMAC-SHA256) before they are stored.

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::Value;
use sha2::{Digest, Sha256};

/// SHA-256 of a payload's canonical JSON encoding (object keys sorted by
/// their UTF-8 bytes, no insignificant whitespace, numbers and strings as
/// `serde_json` writes them), so `{"b":1,"a":2}` and `{ "a": 2, "b": 1 }`
/// have the same fingerprint. The idempotency ledger compares these.
///
/// **Keyed in the store.** [`Fingerprint::of`] is the plain SHA-256, which
/// anyone can compute: a low-variety payload (a yes/no, a small amount)
/// could be recovered from it by guessing. So a store keeps each
/// submission's fingerprint keyed with a secret of its own, created at its
/// first open and kept in the database (HMAC-SHA256 over the plain
/// fingerprint): [`crate::Submission::fingerprint`] is keyed
/// ([`Fingerprint::is_keyed`]), shown as `k1:` and 64 hex characters, and
/// the same payload has different fingerprints in two stores. Conflict
/// detection is unchanged: the same payload has the same keyed fingerprint
/// in one store. Rows written before keying keep their plain fingerprint
/// (64 hex characters, no prefix) and are compared as plain ones.
///
/// ```
/// use liaison::Fingerprint;
/// use serde_json::json;
///
/// let a = Fingerprint::of(&json!({"b": 1, "a": [true, null]}));
/// let b = Fingerprint::of(&serde_json::from_str(r#"{ "a": [true, null], "b": 1 }"#)?);
/// assert_eq!(a, b);
/// assert_ne!(a, Fingerprint::of(&json!({"a": [true, null], "b": 2})));
/// # Ok::<(), serde_json::Error>(())
/// ```
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Fingerprint {
    bytes: [u8; 32],
    keyed: bool,
}

/// How a keyed fingerprint is written: this prefix, then 64 hex characters.
const KEYED_PREFIX: &str = "k1:";

impl Fingerprint {
    /// The (plain, unkeyed) fingerprint of a JSON value.
    pub fn of(value: &Value) -> Self {
        Self::of_json(value).0
    }

    /// Whether this is a store's keyed fingerprint (`k1:`…) rather than
    /// the plain SHA-256 ([`Fingerprint::of`], or a row written before
    /// keying).
    pub fn is_keyed(&self) -> bool {
        self.keyed
    }

    /// Parse either stored form: `k1:` and 64 hex characters (keyed), or 64
    /// hex characters (plain).
    ///
    /// ```
    /// use liaison::Fingerprint;
    ///
    /// let plain = Fingerprint::of(&serde_json::json!({}));
    /// assert_eq!(Fingerprint::parse(&plain.to_string()), Some(plain));
    /// let keyed = Fingerprint::parse(&format!("k1:{}", plain.to_hex())).unwrap();
    /// assert!(keyed.is_keyed());
    /// assert_ne!(keyed, plain);
    /// ```
    pub fn parse(s: &str) -> Option<Self> {
        match s.strip_prefix(KEYED_PREFIX) {
            Some(hex) => Self::from_hex(hex).map(|f| Fingerprint { keyed: true, ..f }),
            None => Self::from_hex(s),
        }
    }

    /// The fingerprint and the length of the canonical encoding in bytes.
    pub(crate) fn of_json(value: &Value) -> (Self, usize) {
        let mut canonical = Vec::with_capacity(256);
        write_canonical(value, &mut canonical);
        let digest = Sha256::digest(&canonical);
        let mut bytes = [0u8; 32];
        bytes.copy_from_slice(&digest);
        (
            Fingerprint {
                bytes,
                keyed: false,
            },
            canonical.len(),
        )
    }

    /// The raw digest (or HMAC, for a keyed fingerprint).
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.bytes
    }

    /// Lower-case hex of [`Fingerprint::as_bytes`], 64 characters (without
    /// the `k1:` prefix of a keyed one; `Display` writes it).
    pub fn to_hex(&self) -> String {
        hex::encode(self.bytes)
    }

    /// Parse the 64-character hex form of a plain fingerprint.
    pub fn from_hex(s: &str) -> Option<Self> {
        let mut bytes = [0u8; 32];
        hex::decode_to_slice(s, &mut bytes).ok()?;
        Some(Fingerprint {
            bytes,
            keyed: false,
        })
    }
}

/// A store's secret for fingerprints and callback body hashes: 32 random
/// bytes created at the store's first open and kept in its database
/// (`liaison_secrets`), shared by every instance on it. Never shown: its
/// `Debug` says only that it is there.
#[derive(Clone)]
pub(crate) struct StoreKey([u8; 32]);

impl StoreKey {
    /// The name of its row in `liaison_secrets`.
    pub(crate) const NAME: &'static str = "fingerprint_key";

    /// A fresh random key.
    pub(crate) fn generate() -> [u8; 32] {
        rand::random()
    }

    /// The key as stored; anything but 32 bytes is an error.
    pub(crate) fn from_stored(bytes: &[u8]) -> crate::error::Result<Self> {
        <[u8; 32]>::try_from(bytes).map(StoreKey).map_err(|_| {
            crate::error::Error::corrupt(
                format!(
                    "the store's fingerprint key is {} bytes, not 32",
                    bytes.len()
                ),
                None,
            )
        })
    }

    fn mac(&self, label: &[u8], data: &[u8]) -> [u8; 32] {
        use hmac::{Hmac, KeyInit, Mac};
        // A 32-byte key is always accepted.
        let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(&self.0)
            .unwrap_or_else(|_| unreachable!("HMAC takes a key of any length"));
        mac.update(label);
        mac.update(data);
        let mut out = [0u8; 32];
        out.copy_from_slice(&mac.finalize().into_bytes());
        out
    }

    /// The keyed form of a plain fingerprint (a keyed one is kept as it is).
    pub(crate) fn fingerprint(&self, plain: &Fingerprint) -> Fingerprint {
        if plain.keyed {
            return *plain;
        }
        Fingerprint {
            bytes: self.mac(b"liaison fingerprint v1\0", &plain.bytes),
            keyed: true,
        }
    }

    /// The keyed form of a callback body's SHA-256 (hex, as computed on
    /// arrival): 64 hex characters. Equal bodies keep equal hashes in one
    /// store, so repeats are still recognised; an empty hash (nothing was
    /// read) stays empty.
    pub(crate) fn body_hash(&self, plain_hex: &str) -> String {
        if plain_hex.is_empty() {
            return String::new();
        }
        hex::encode(self.mac(b"liaison body hash v1\0", plain_hex.as_bytes()))
    }
}

impl fmt::Debug for StoreKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("StoreKey(..)")
    }
}

/// Canonical encoding. Object keys are sorted here rather than relying on
/// `serde_json::Map` being a `BTreeMap`: another crate in the build enabling
/// serde_json's `preserve_order` feature would otherwise change fingerprints.
fn write_canonical(value: &Value, out: &mut Vec<u8>) {
    match value {
        Value::Object(map) => {
            let mut entries: Vec<(&String, &Value)> = map.iter().collect();
            entries.sort_unstable_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
            out.push(b'{');
            for (i, (key, value)) in entries.into_iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write_scalar(&Value::String(key.clone()), out);
                out.push(b':');
                write_canonical(value, out);
            }
            out.push(b'}');
        }
        Value::Array(items) => {
            out.push(b'[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write_canonical(item, out);
            }
            out.push(b']');
        }
        scalar => write_scalar(scalar, out),
    }
}

fn write_scalar(value: &Value, out: &mut Vec<u8>) {
    // Writing a scalar Value into a Vec cannot fail.
    serde_json::to_writer(&mut *out, value).unwrap_or_default();
}

impl fmt::Debug for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Fingerprint({self})")
    }
}

/// The stored form: `k1:` and 64 hex characters when keyed, else 64 hex
/// characters.
impl fmt::Display for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.keyed {
            f.write_str(KEYED_PREFIX)?;
        }
        f.write_str(&self.to_hex())
    }
}

impl Serialize for Fingerprint {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Fingerprint {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let s = String::deserialize(deserializer)?;
        Fingerprint::parse(&s).ok_or_else(|| {
            serde::de::Error::custom("expected 64 hex characters, with or without `k1:`")
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn canonical(v: &Value) -> String {
        let mut out = Vec::new();
        write_canonical(v, &mut out);
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn canonical_form_sorts_keys_at_every_depth() {
        let v = json!({"z": {"b": 1, "a": [ {"y": 2, "x": "é\n"} ]}, "a": null});
        assert_eq!(
            canonical(&v),
            r#"{"a":null,"z":{"a":[{"x":"é\n","y":2}],"b":1}}"#
        );
    }

    #[test]
    fn fingerprint_differs_on_any_change_and_round_trips_hex() {
        let a = Fingerprint::of(&json!({"amount": 100}));
        let b = Fingerprint::of(&json!({"amount": 101}));
        assert_ne!(a, b);
        assert_eq!(Fingerprint::from_hex(&a.to_hex()), Some(a));
        assert_eq!(Fingerprint::from_hex("zz"), None);
        // The SHA-256 of the canonical text `{}`.
        assert_eq!(
            Fingerprint::of(&json!({})).to_hex(),
            "44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a"
        );
    }

    #[test]
    fn keyed_fingerprints_depend_on_the_key_and_keep_equality() {
        let a = StoreKey([1; 32]);
        let b = StoreKey([2; 32]);
        let plain = Fingerprint::of(&json!({"ok": true}));
        let (ka, kb) = (a.fingerprint(&plain), b.fingerprint(&plain));
        assert!(ka.is_keyed() && kb.is_keyed() && !plain.is_keyed());
        assert_ne!(ka, kb, "two stores, two fingerprints");
        assert_ne!(ka.as_bytes(), plain.as_bytes());
        assert_eq!(ka, a.fingerprint(&Fingerprint::of(&json!({"ok": true}))));
        assert_eq!(a.fingerprint(&ka), ka, "keying twice changes nothing");
        // Written and read back in the stored form.
        assert!(ka.to_string().starts_with("k1:") && ka.to_string().len() == 67);
        assert_eq!(Fingerprint::parse(&ka.to_string()), Some(ka));
        let json = serde_json::to_string(&ka).unwrap();
        assert_eq!(serde_json::from_str::<Fingerprint>(&json).unwrap(), ka);
        assert_eq!(Fingerprint::parse("k1:zz"), None);
        // Body hashes: keyed, 64 hex, equal for equal input, empty stays empty.
        assert_eq!(a.body_hash("ab").len(), 64);
        assert_eq!(a.body_hash("ab"), a.body_hash("ab"));
        assert_ne!(a.body_hash("ab"), b.body_hash("ab"));
        assert_eq!(a.body_hash(""), "");
        assert_eq!(format!("{a:?}"), "StoreKey(..)");
    }
}
