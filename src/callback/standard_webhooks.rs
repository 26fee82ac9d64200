//! [Standard Webhooks](https://www.standardwebhooks.com) signatures, the
//! scheme svix uses.

use std::fmt;
use std::time::{Duration, SystemTime};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;

use super::InboundCallback;
use super::signature::{
    DEFAULT_TOLERANCE, HmacKeys, SignatureError, SignatureVerifier, check_timestamp, malformed,
    parse_timestamp, required_header, to_tag, verify_candidates,
};
use crate::error::Error;

/// Verifies (and makes) [Standard Webhooks](https://www.standardwebhooks.com)
/// signatures.
///
/// The partner sends `webhook-id`, `webhook-timestamp` (Unix seconds) and
/// `webhook-signature`, a space-separated list of `<version>,<base64>`
/// entries. The signature is HMAC-SHA256 of `{id}.{timestamp}.{body}` (raw
/// body bytes) under the base64-decoded secret.
///
/// Verification, in order:
///
/// 1. each of the three headers must be present
///    ([`SignatureError::MissingHeader`]), visible ASCII and at most
///    [`MAX_SIGNATURE_HEADER_BYTES`](super::MAX_SIGNATURE_HEADER_BYTES)
///    ([`SignatureError::Malformed`]);
/// 2. the timestamp must be ASCII digits fitting `i64` (`Malformed`
///    otherwise, e.g. `1614265330.5`, `abc`, `-5`) and at most the tolerance
///    away from `now`, in the past or the future (bound included: with the
///    default 300 s, 300 s passes and 301 s is
///    [`SignatureError::TimestampOutOfTolerance`]);
/// 3. any one `v1` entry matching any configured secret passes. Entries of
///    other versions (`v1a`, ...) and entries without a comma are ignored; a
///    header with no `v1` entry, or whose `v1` entries are well formed but do
///    not match, is [`SignatureError::NoMatch`]. A `v1` entry that is empty
///    (`v1,`), not padded standard base64, or not exactly 32 bytes decoded
///    never matches; if every `v1` entry is like that the error is
///    `Malformed`. At most
///    [`MAX_SIGNATURES_CHECKED`](super::MAX_SIGNATURES_CHECKED) `v1` entries
///    are checked.
///
/// `Debug` shows the number of secrets and the tolerance, never a secret.
///
/// ```
/// use liaison::callback::{InboundCallback, SignatureVerifier, StandardWebhooks};
/// use http::header::{HeaderMap, HeaderValue};
/// use std::time::{Duration, UNIX_EPOCH};
///
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// // During a rotation both the old and the new secret are accepted; the
/// // first one signs.
/// let ours = StandardWebhooks::new("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw")?
///     .with_secret("whsec_c2Vjb25kIHNlY3JldA==")?;
/// assert_eq!(format!("{ours:?}"), "StandardWebhooks { secrets: 2, tolerance: 300s }");
///
/// let body = br#"{"type":"result.ready"}"#;
/// let mut headers = HeaderMap::new();
/// headers.insert("webhook-id", HeaderValue::from_static("msg_1"));
/// headers.insert("webhook-timestamp", HeaderValue::from_static("1700000000"));
/// headers.insert("webhook-signature", ours.sign("msg_1", 1_700_000_000, body).parse()?);
///
/// let callback = InboundCallback::new("partner", headers, body.to_vec());
/// let now = UNIX_EPOCH + Duration::from_secs(1_700_000_060);
/// assert_eq!(ours.verify(&callback, now), Ok(()));
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct StandardWebhooks {
    keys: HmacKeys,
    tolerance: Duration,
}

impl StandardWebhooks {
    /// The message id header.
    pub const ID_HEADER: &'static str = "webhook-id";
    /// The timestamp header (Unix seconds).
    pub const TIMESTAMP_HEADER: &'static str = "webhook-timestamp";
    /// The signature list header.
    pub const SIGNATURE_HEADER: &'static str = "webhook-signature";

    /// A verifier for `secret`: `whsec_<base64>` or the bare base64 (standard
    /// alphabet, padded). An empty or undecodable secret is
    /// [`Error::InvalidInput`] for field `secret`; the error never contains
    /// the secret.
    pub fn new(secret: &str) -> crate::Result<Self> {
        Ok(Self {
            keys: HmacKeys::new(&decode_secret(secret)?)?,
            tolerance: DEFAULT_TOLERANCE,
        })
    }

    /// Also accept `secret` (same format as [`StandardWebhooks::new`]), for
    /// rotation: a signature matching any configured secret passes.
    /// [`sign`](StandardWebhooks::sign) keeps using the first.
    pub fn with_secret(mut self, secret: &str) -> crate::Result<Self> {
        self.keys.push(&decode_secret(secret)?)?;
        Ok(self)
    }

    /// How far the signed timestamp may be from the clock, in either
    /// direction, in whole seconds (default
    /// [`DEFAULT_TOLERANCE`](super::DEFAULT_TOLERANCE), 300 s).
    pub fn tolerance(mut self, tolerance: Duration) -> Self {
        self.tolerance = tolerance;
        self
    }

    /// The `webhook-signature` value (`v1,<base64>`) for a message, made with
    /// the first secret: for a mock partner and our own outgoing webhooks.
    /// Verification accepts it when `timestamp` is non-negative and within
    /// the tolerance.
    pub fn sign(&self, msg_id: &str, timestamp: i64, body: &[u8]) -> String {
        let timestamp = timestamp.to_string();
        let tag = self.keys.sign(&signed_content(msg_id, &timestamp, body));
        format!("v1,{}", STANDARD.encode(tag))
    }
}

fn signed_content<'a>(msg_id: &'a str, timestamp: &'a str, body: &'a [u8]) -> [&'a [u8]; 5] {
    [msg_id.as_bytes(), b".", timestamp.as_bytes(), b".", body]
}

fn decode_secret(secret: &str) -> crate::Result<Vec<u8>> {
    let encoded = secret.strip_prefix("whsec_").unwrap_or(secret);
    if encoded.is_empty() {
        return Err(Error::invalid("secret", "empty"));
    }
    // Not the decode error: it would quote a byte of the secret.
    STANDARD.decode(encoded).map_err(|_| {
        Error::invalid(
            "secret",
            "not `whsec_` followed by padded standard base64, nor padded standard base64",
        )
    })
}

fn decode_signature(text: &str) -> Result<[u8; 32], String> {
    if text.is_empty() {
        return Err("a v1 signature is empty".to_owned());
    }
    let decoded = STANDARD
        .decode(text)
        .map_err(|_| "a v1 signature is not padded standard base64".to_owned())?;
    to_tag(&decoded)
}

impl SignatureVerifier for StandardWebhooks {
    fn verify(&self, callback: &InboundCallback, now: SystemTime) -> Result<(), SignatureError> {
        let msg_id = required_header(callback, Self::ID_HEADER)?;
        let timestamp = required_header(callback, Self::TIMESTAMP_HEADER)?;
        let signatures = required_header(callback, Self::SIGNATURE_HEADER)?;

        let timestamp = parse_timestamp(Self::TIMESTAMP_HEADER, timestamp)?;
        check_timestamp(timestamp, now, self.tolerance)?;

        if signatures.trim_ascii().is_empty() {
            return Err(malformed(Self::SIGNATURE_HEADER, "no signatures"));
        }
        let candidates = signatures
            .split_ascii_whitespace()
            .filter_map(|entry| entry.split_once(','))
            .filter(|(version, _)| *version == "v1")
            .map(|(_, signature)| decode_signature(signature));
        let timestamp = timestamp.to_string();
        verify_candidates(
            &self.keys,
            &signed_content(msg_id, &timestamp, &callback.body),
            Self::SIGNATURE_HEADER,
            candidates,
        )
    }

    fn scheme(&self) -> &'static str {
        "standard_webhooks"
    }
}

impl fmt::Debug for StandardWebhooks {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StandardWebhooks")
            .field("secrets", &self.keys.len())
            .field("tolerance", &self.tolerance)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::callback::test_callback;
    use std::time::UNIX_EPOCH;

    const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
    const MSG_ID: &str = "msg_p5jXN8AQM9LWM0D4loKWxJek";
    const TS: i64 = 1_614_265_330;
    const BODY: &[u8] = br#"{"test": 2432232314}"#;
    const SIG: &str = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=";

    fn verifier() -> StandardWebhooks {
        StandardWebhooks::new(SECRET).unwrap()
    }

    fn at(secs: i64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(secs.try_into().unwrap())
    }

    fn callback(ts: &str, sig: &str, body: &[u8]) -> InboundCallback {
        test_callback(
            &[
                ("webhook-id", MSG_ID),
                ("webhook-timestamp", ts),
                ("webhook-signature", sig),
            ],
            body,
        )
    }

    fn check(sig: &str) -> Result<(), SignatureError> {
        verifier().verify(&callback("1614265330", sig, BODY), at(TS))
    }

    fn is_malformed(result: Result<(), SignatureError>, expected: &'static str) -> bool {
        matches!(result, Err(SignatureError::Malformed { header, .. }) if header == expected)
    }

    #[test]
    fn spec_example_verifies() {
        assert_eq!(check(SIG), Ok(()));
        assert_eq!(verifier().sign(MSG_ID, TS, BODY), SIG);
        // Also without the prefix, and with upper-case header names.
        let bare = StandardWebhooks::new("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap();
        let cb = test_callback(
            &[
                ("Webhook-Id", MSG_ID),
                ("WEBHOOK-TIMESTAMP", "1614265330"),
                ("Webhook-Signature", SIG),
            ],
            BODY,
        );
        assert_eq!(bare.verify(&cb, at(TS)), Ok(()));
        assert_eq!(bare.scheme(), "standard_webhooks");
    }

    #[test]
    fn empty_v1_signature_is_malformed() {
        assert!(is_malformed(check("v1,"), "webhook-signature"));
        assert!(is_malformed(check("v1, v1,"), "webhook-signature"));
    }

    #[test]
    fn truncated_signature_is_malformed() {
        let truncated = &SIG[..SIG.len() - 4];
        assert!(is_malformed(check(truncated), "webhook-signature"));
        // A prefix that is not even valid base64 is malformed too.
        assert!(is_malformed(
            check(&SIG[..SIG.len() - 1]),
            "webhook-signature"
        ));
    }

    #[test]
    fn over_long_signature_is_malformed() {
        let mut bytes = STANDARD.decode(&SIG[3..]).unwrap();
        bytes.extend_from_slice(&[0, 1, 2]);
        let longer = format!("v1,{}", STANDARD.encode(&bytes));
        assert!(is_malformed(check(&longer), "webhook-signature"));
        assert!(is_malformed(
            check(&format!("{SIG}AAAA")),
            "webhook-signature"
        ));
    }

    #[test]
    fn wrong_secret_does_not_match() {
        let other = StandardWebhooks::new("whsec_c2Vjb25kIHNlY3JldA==").unwrap();
        let cb = callback("1614265330", SIG, BODY);
        assert_eq!(other.verify(&cb, at(TS)), Err(SignatureError::NoMatch));
    }

    #[test]
    fn timestamp_tolerance_edges() {
        let cb = callback("1614265330", SIG, BODY);
        let v = verifier();
        assert_eq!(v.verify(&cb, at(TS + 300)), Ok(()));
        assert_eq!(v.verify(&cb, at(TS - 300)), Ok(()));
        assert_eq!(
            v.verify(&cb, at(TS + 301)),
            Err(SignatureError::TimestampOutOfTolerance {
                age_seconds: 301,
                tolerance_seconds: 300
            })
        );
        assert_eq!(
            v.verify(&cb, at(TS - 301)),
            Err(SignatureError::TimestampOutOfTolerance {
                age_seconds: -301,
                tolerance_seconds: 300
            })
        );
        let strict = verifier().tolerance(Duration::from_secs(10));
        assert!(strict.verify(&cb, at(TS + 10)).is_ok());
        assert!(strict.verify(&cb, at(TS + 11)).is_err());
    }

    #[test]
    fn non_integer_timestamps_are_malformed() {
        for ts in [
            "1614265330.5",
            "abc",
            "",
            "-1614265330",
            "99999999999999999999",
        ] {
            let cb = callback(ts, SIG, BODY);
            assert!(
                is_malformed(verifier().verify(&cb, at(TS)), "webhook-timestamp"),
                "{ts:?}"
            );
        }
    }

    #[test]
    fn each_missing_header_is_named() {
        let all = [
            ("webhook-id", MSG_ID),
            ("webhook-timestamp", "1614265330"),
            ("webhook-signature", SIG),
        ];
        for skip in 0..all.len() {
            let headers: Vec<_> = all
                .iter()
                .enumerate()
                .filter(|(i, _)| *i != skip)
                .map(|(_, h)| *h)
                .collect();
            let cb = test_callback(&headers, BODY);
            assert_eq!(
                verifier().verify(&cb, at(TS)),
                Err(SignatureError::MissingHeader {
                    header: all[skip].0
                })
            );
        }
    }

    #[test]
    fn body_changed_by_one_byte_does_not_match() {
        let mut body = BODY.to_vec();
        body[9] ^= 1;
        let cb = callback("1614265330", SIG, &body);
        assert_eq!(verifier().verify(&cb, at(TS)), Err(SignatureError::NoMatch));
        let cb = callback("1614265330", SIG, &BODY[..BODY.len() - 1]);
        assert_eq!(verifier().verify(&cb, at(TS)), Err(SignatureError::NoMatch));
    }

    #[test]
    fn other_versions_are_ignored() {
        let v1a_only = format!("v1a,{}", &SIG[3..]);
        assert_eq!(check(&v1a_only), Err(SignatureError::NoMatch));
        assert_eq!(
            check(&format!("v2,{} V1,{}", &SIG[3..], &SIG[3..])),
            Err(SignatureError::NoMatch)
        );
        assert_eq!(check(&format!("v1a,garbage {SIG}")), Ok(()));
    }

    #[test]
    fn correct_signature_after_garbage_entries_verifies() {
        let wrong = format!("v1,{}", STANDARD.encode([7u8; 32]));
        let header = format!("v1, v1,!!! v1,AAAA nocomma v1a,xyz {wrong} {SIG}");
        assert_eq!(check(&header), Ok(()));
        // Extra spaces between entries are tolerated.
        assert_eq!(check(&format!("  {wrong}   {SIG}  ")), Ok(()));
    }

    #[test]
    fn blank_header_is_malformed() {
        assert!(is_malformed(check(""), "webhook-signature"));
        assert!(is_malformed(check("   "), "webhook-signature"));
    }

    #[test]
    fn second_secret_verifies_during_rotation() {
        let rotated = StandardWebhooks::new("whsec_c2Vjb25kIHNlY3JldA==")
            .unwrap()
            .with_secret(SECRET)
            .unwrap();
        assert_eq!(
            rotated.verify(&callback("1614265330", SIG, BODY), at(TS)),
            Ok(())
        );
        // The first secret signs.
        assert_ne!(rotated.sign(MSG_ID, TS, BODY), SIG);
    }

    #[test]
    fn sign_round_trips_through_verify() {
        let v = verifier()
            .with_secret("whsec_c2Vjb25kIHNlY3JldA==")
            .unwrap();
        let body = b"\x00\xffbinary body, not JSON";
        let sig = v.sign("msg_2", 1_700_000_000, body);
        let cb = test_callback(
            &[
                ("webhook-id", "msg_2"),
                ("webhook-timestamp", "1700000000"),
                ("webhook-signature", &sig),
            ],
            body,
        );
        assert_eq!(v.verify(&cb, at(1_700_000_000)), Ok(()));
        // The id is signed: another id does not match.
        let mut other = cb.clone();
        other.headers.insert("webhook-id", "msg_3".parse().unwrap());
        assert_eq!(
            v.verify(&other, at(1_700_000_000)),
            Err(SignatureError::NoMatch)
        );
    }

    #[test]
    fn too_many_signatures_stop_at_the_cap() {
        use crate::callback::MAX_SIGNATURES_CHECKED;
        let wrong = format!("v1,{}", STANDARD.encode([7u8; 32]));
        let entries = |n: usize| format!("{} {SIG}", vec![wrong.as_str(); n].join(" "));
        // The correct one as the 16th v1 entry is still checked ...
        assert_eq!(check(&entries(MAX_SIGNATURES_CHECKED - 1)), Ok(()));
        // ... as the 17th it is not.
        assert_eq!(
            check(&entries(MAX_SIGNATURES_CHECKED)),
            Err(SignatureError::NoMatch)
        );
        // Many entries within the length cap: no match, no error.
        let many = entries(150);
        assert!(many.len() <= crate::callback::MAX_SIGNATURE_HEADER_BYTES);
        assert_eq!(check(&many), Err(SignatureError::NoMatch));
        // Entries of other versions do not count toward the cap.
        let v1a = format!("{} {SIG}", vec!["v1a,x"; 500].join(" "));
        assert_eq!(check(&v1a), Ok(()));
    }

    #[test]
    fn oversized_and_opaque_headers_are_malformed() {
        let long = format!("{} {SIG}", "v1a,x ".repeat(2000));
        assert!(is_malformed(check(&long), "webhook-signature"));
        let mut cb = callback("1614265330", SIG, BODY);
        cb.headers.insert(
            "webhook-id",
            http::header::HeaderValue::from_bytes(b"msg_\xff").unwrap(),
        );
        assert!(is_malformed(verifier().verify(&cb, at(TS)), "webhook-id"));
    }

    #[test]
    fn bad_secrets_are_refused_without_echoing_them() {
        for secret in [
            "",
            "whsec_",
            "whsec_not*base64!",
            "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaS",
        ] {
            let err = StandardWebhooks::new(secret).expect_err(secret);
            assert!(
                matches!(
                    err,
                    Error::InvalidInput {
                        field: "secret",
                        ..
                    }
                ),
                "{secret:?}"
            );
            let text = err.to_string();
            if let Some(body) = secret.strip_prefix("whsec_").filter(|b| !b.is_empty()) {
                assert!(!text.contains(body), "{text}");
            }
        }
        assert!(verifier().with_secret("%%%").is_err());
    }

    #[test]
    fn debug_hides_secrets() {
        let text = format!("{:?}", verifier());
        assert_eq!(text, "StandardWebhooks { secrets: 1, tolerance: 300s }");
    }
}
