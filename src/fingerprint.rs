//! Payload fingerprints: SHA-256 over a canonical JSON encoding.

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::Value;
use sha2::{Digest, Sha256};

/// SHA-256 of a payload's canonical JSON encoding (object keys sorted by
/// their UTF-8 bytes, no insignificant whitespace, numbers and strings as
/// `serde_json` writes them), so `{"b":1,"a":2}` and `{ "a": 2, "b": 1 }`
/// have the same fingerprint. The idempotency ledger compares these.
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
pub struct Fingerprint([u8; 32]);

impl Fingerprint {
    /// The fingerprint of a JSON value.
    pub fn of(value: &Value) -> Self {
        Self::of_json(value).0
    }

    /// The fingerprint and the length of the canonical encoding in bytes.
    pub(crate) fn of_json(value: &Value) -> (Self, usize) {
        let mut canonical = Vec::with_capacity(256);
        write_canonical(value, &mut canonical);
        let digest = Sha256::digest(&canonical);
        let mut bytes = [0u8; 32];
        bytes.copy_from_slice(&digest);
        (Fingerprint(bytes), canonical.len())
    }

    /// The raw digest.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// Lower-case hex, 64 characters.
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }

    /// Parse the 64-character hex form.
    pub fn from_hex(s: &str) -> Option<Self> {
        let mut bytes = [0u8; 32];
        hex::decode_to_slice(s, &mut bytes).ok()?;
        Some(Fingerprint(bytes))
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
        write!(f, "Fingerprint({})", self.to_hex())
    }
}

impl fmt::Display for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl Serialize for Fingerprint {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.to_hex())
    }
}

impl<'de> Deserialize<'de> for Fingerprint {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let s = String::deserialize(deserializer)?;
        Fingerprint::from_hex(&s)
            .ok_or_else(|| serde::de::Error::custom("expected 64 hex characters"))
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
}
