//! Stripe-style signatures: `Stripe-Signature: t=<unix>,v1=<hex>,...`.

use std::fmt;
use std::time::{Duration, SystemTime};

use super::InboundCallback;
use super::signature::{
    DEFAULT_TOLERANCE, HmacKeys, SignatureError, SignatureVerifier, check_timestamp,
    decode_hex_tag, malformed, parse_timestamp, required_header, verify_candidates,
};

/// Verifies (and makes) Stripe-style webhook signatures.
///
/// The partner sends `Stripe-Signature: t=<unix seconds>,v1=<hex>[,v1=<hex>]...`
/// (other schemes such as `v0=` may be present and are ignored). Each `v1` is
/// the HMAC-SHA256 of `{t}.{body}` (raw body bytes) under the secret.
///
/// The secret is used as its UTF-8 bytes, exactly as given: Stripe's secrets
/// look like `whsec_...` but, unlike [`StandardWebhooks`](super::StandardWebhooks)
/// secrets, are **not** base64-decoded, and the `whsec_` prefix is part of the
/// key.
///
/// Verification, in order:
///
/// 1. the header must be present ([`SignatureError::MissingHeader`]),
///    visible ASCII and at most
///    [`MAX_SIGNATURE_HEADER_BYTES`](super::MAX_SIGNATURE_HEADER_BYTES);
/// 2. it must hold exactly one `t=`, ASCII digits fitting `i64`
///    ([`SignatureError::Malformed`] if absent, repeated or not an integer),
///    at most the tolerance away from `now` in either direction (default
///    300 s, bound included; otherwise
///    [`SignatureError::TimestampOutOfTolerance`]);
/// 3. any one `v1=` entry matching any configured secret passes. No `v1=`
///    entry, or only well-formed ones that do not match, is
///    [`SignatureError::NoMatch`]; a `v1=` that is empty, not 64 hex digits
///    (either case) never matches, and if every `v1=` is like that the error
///    is `Malformed`. At most
///    [`MAX_SIGNATURES_CHECKED`](super::MAX_SIGNATURES_CHECKED) `v1=` entries
///    are checked. Entries are separated by commas; spaces around an entry
///    are ignored.
///
/// `Debug` shows the number of secrets and the tolerance, never a secret.
///
/// ```
/// use liaison::callback::{InboundCallback, SignatureVerifier, StripeSignature};
/// use http::header::HeaderMap;
/// use std::time::{Duration, UNIX_EPOCH};
///
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let verifier = StripeSignature::new("whsec_test_secret")?.tolerance(Duration::from_secs(60));
/// let body = br#"{"id":"evt_1","type":"payment_intent.succeeded"}"#;
/// let header = verifier.sign(1_700_000_000, body);
/// assert!(header.starts_with("t=1700000000,v1="));
///
/// let mut headers = HeaderMap::new();
/// headers.insert("Stripe-Signature", header.parse()?);
/// let callback = InboundCallback::new("stripe", headers, body.to_vec());
/// assert_eq!(verifier.verify(&callback, UNIX_EPOCH + Duration::from_secs(1_700_000_030)), Ok(()));
/// assert!(verifier.verify(&callback, UNIX_EPOCH + Duration::from_secs(1_700_000_061)).is_err());
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct StripeSignature {
    keys: HmacKeys,
    tolerance: Duration,
}

impl StripeSignature {
    /// The signature header.
    pub const HEADER: &'static str = "stripe-signature";

    /// A verifier for `secret`, used as its UTF-8 bytes (prefix included, no
    /// decoding). An empty secret is [`crate::Error::InvalidInput`] for field
    /// `secret`.
    pub fn new(secret: &str) -> crate::Result<Self> {
        Ok(Self {
            keys: HmacKeys::new(secret.as_bytes())?,
            tolerance: DEFAULT_TOLERANCE,
        })
    }

    /// Also accept `secret`, for rotation: a signature matching any
    /// configured secret passes. [`sign`](StripeSignature::sign) keeps using
    /// the first.
    pub fn with_secret(mut self, secret: &str) -> crate::Result<Self> {
        self.keys.push(secret.as_bytes())?;
        Ok(self)
    }

    /// How far `t` may be from the clock, in either direction, in whole
    /// seconds (default [`DEFAULT_TOLERANCE`](super::DEFAULT_TOLERANCE), 300 s).
    pub fn tolerance(mut self, tolerance: Duration) -> Self {
        self.tolerance = tolerance;
        self
    }

    /// The header value (`t=<timestamp>,v1=<lowercase hex>`) for `body`, made
    /// with the first secret. Verification accepts it when `timestamp` is
    /// non-negative and within the tolerance.
    pub fn sign(&self, timestamp: i64, body: &[u8]) -> String {
        let timestamp = timestamp.to_string();
        let tag = self.keys.sign(&[timestamp.as_bytes(), b".", body]);
        format!("t={timestamp},v1={}", hex::encode(tag))
    }
}

impl SignatureVerifier for StripeSignature {
    fn verify(&self, callback: &InboundCallback, now: SystemTime) -> Result<(), SignatureError> {
        let value = required_header(callback, Self::HEADER)?;
        let entries = || value.split(',').map(str::trim_ascii);

        let mut timestamps = entries().filter_map(|entry| entry.strip_prefix("t="));
        let timestamp = timestamps
            .next()
            .ok_or_else(|| malformed(Self::HEADER, "no `t=` timestamp"))?;
        if timestamps.next().is_some() {
            return Err(malformed(Self::HEADER, "more than one `t=` timestamp"));
        }
        let timestamp = parse_timestamp(Self::HEADER, timestamp)?;
        check_timestamp(timestamp, now, self.tolerance)?;

        let candidates = entries()
            .filter_map(|entry| entry.strip_prefix("v1="))
            .map(decode_hex_tag);
        let timestamp = timestamp.to_string();
        verify_candidates(
            &self.keys,
            &[timestamp.as_bytes(), b".", &callback.body],
            Self::HEADER,
            candidates,
        )
    }

    fn scheme(&self) -> &'static str {
        "stripe"
    }
}

impl fmt::Debug for StripeSignature {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StripeSignature")
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

    const SECRET: &str = "whsec_test_secret";
    const TS: i64 = 1_700_000_000;
    const BODY: &[u8] = br#"{"id":"evt_1","object":"event"}"#;

    fn verifier() -> StripeSignature {
        StripeSignature::new(SECRET).unwrap()
    }

    fn at(secs: i64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(secs.try_into().unwrap())
    }

    fn check_with(
        verifier: &StripeSignature,
        header: &str,
        body: &[u8],
        now: i64,
    ) -> Result<(), SignatureError> {
        let cb = test_callback(&[("Stripe-Signature", header)], body);
        verifier.verify(&cb, at(now))
    }

    fn check(header: &str) -> Result<(), SignatureError> {
        check_with(&verifier(), header, BODY, TS)
    }

    /// The `v1=<hex>` part of a signed header.
    fn v1(header: &str) -> &str {
        header.split_once(',').unwrap().1
    }

    fn is_malformed(result: Result<(), SignatureError>) -> bool {
        matches!(
            result,
            Err(SignatureError::Malformed {
                header: "stripe-signature",
                ..
            })
        )
    }

    #[test]
    fn sign_and_verify_round_trip() {
        let header = verifier().sign(TS, BODY);
        assert_eq!(check(&header), Ok(()));
        assert_eq!(verifier().scheme(), "stripe");
        // Independent computation: HMAC-SHA256("whsec_test_secret", "1700000000.{body}").
        use hmac::{Hmac, KeyInit, Mac};
        let mut mac = Hmac::<sha2::Sha256>::new_from_slice(SECRET.as_bytes()).unwrap();
        mac.update(b"1700000000.");
        mac.update(BODY);
        let expected = hex::encode(mac.finalize().into_bytes());
        assert_eq!(header, format!("t=1700000000,v1={expected}"));
    }

    #[test]
    fn secret_is_not_base64_decoded() {
        // Same text as a Standard Webhooks secret, but keyed by its UTF-8 bytes.
        let text = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
        let stripe = StripeSignature::new(text).unwrap();
        use hmac::{Hmac, KeyInit, Mac};
        let mut mac = Hmac::<sha2::Sha256>::new_from_slice(text.as_bytes()).unwrap();
        mac.update(b"1700000000.");
        mac.update(BODY);
        let expected = hex::encode(mac.finalize().into_bytes());
        assert_eq!(stripe.sign(TS, BODY), format!("t=1700000000,v1={expected}"));
    }

    #[test]
    fn tolerance_edges() {
        let header = verifier().sign(TS, BODY);
        let v = verifier();
        assert_eq!(check_with(&v, &header, BODY, TS + 300), Ok(()));
        assert_eq!(check_with(&v, &header, BODY, TS - 300), Ok(()));
        assert_eq!(
            check_with(&v, &header, BODY, TS + 301),
            Err(SignatureError::TimestampOutOfTolerance {
                age_seconds: 301,
                tolerance_seconds: 300
            })
        );
        assert_eq!(
            check_with(&v, &header, BODY, TS - 301),
            Err(SignatureError::TimestampOutOfTolerance {
                age_seconds: -301,
                tolerance_seconds: 300
            })
        );
        let strict = verifier().tolerance(Duration::from_secs(5));
        assert_eq!(check_with(&strict, &header, BODY, TS + 5), Ok(()));
        assert!(check_with(&strict, &header, BODY, TS + 6).is_err());
    }

    #[test]
    fn one_correct_among_several_v1_verifies() {
        let header = verifier().sign(TS, BODY);
        let wrong = hex::encode([9u8; 32]);
        let many = format!("t={TS},v1={wrong},v0={wrong},{},v1=", v1(&header));
        assert_eq!(check(&many), Ok(()));
        let spaced = format!("t={TS}, v1={wrong} , {}", v1(&header));
        assert_eq!(check(&spaced), Ok(()));
        let only_wrong = format!("t={TS},v1={wrong},v1={wrong}");
        assert_eq!(check(&only_wrong), Err(SignatureError::NoMatch));
    }

    #[test]
    fn missing_t_is_malformed() {
        let header = verifier().sign(TS, BODY);
        assert!(is_malformed(check(v1(&header))));
        assert!(is_malformed(check(&format!("t=,{}", v1(&header)))));
        assert!(is_malformed(check(&format!(
            "t={TS},t={TS},{}",
            v1(&header)
        ))));
        assert!(is_malformed(check(&format!(
            "t=1700000000.0,{}",
            v1(&header)
        ))));
        assert!(is_malformed(check(&format!(
            "t=99999999999999999999,{}",
            v1(&header)
        ))));
    }

    #[test]
    fn missing_v1_does_not_match() {
        let wrong = hex::encode([9u8; 32]);
        assert_eq!(check(&format!("t={TS}")), Err(SignatureError::NoMatch));
        assert_eq!(
            check(&format!("t={TS},v0={wrong}")),
            Err(SignatureError::NoMatch)
        );
    }

    #[test]
    fn bad_v1_values_are_malformed() {
        let header = verifier().sign(TS, BODY);
        assert!(is_malformed(check(&format!("t={TS},v1="))));
        assert!(is_malformed(check(&header[..header.len() - 2])));
        assert!(is_malformed(check(&format!("{header}00"))));
        // Upper-case hex is the same bytes and is accepted.
        let upper = format!("t={TS},v1={}", v1(&header)[3..].to_uppercase());
        assert_eq!(check(&upper), Ok(()));
    }

    #[test]
    fn wrong_secret_does_not_match() {
        let header = StripeSignature::new("whsec_other").unwrap().sign(TS, BODY);
        assert_eq!(check(&header), Err(SignatureError::NoMatch));
    }

    #[test]
    fn missing_header_is_named() {
        let cb = test_callback(&[], BODY);
        assert_eq!(
            verifier().verify(&cb, at(TS)),
            Err(SignatureError::MissingHeader {
                header: "stripe-signature"
            })
        );
    }

    #[test]
    fn body_and_timestamp_are_both_signed() {
        let header = verifier().sign(TS, BODY);
        let mut body = BODY.to_vec();
        body[0] ^= 0x20;
        assert_eq!(
            check_with(&verifier(), &header, &body, TS),
            Err(SignatureError::NoMatch)
        );
        let moved = format!("t={},{}", TS + 1, v1(&header));
        assert_eq!(check(&moved), Err(SignatureError::NoMatch));
    }

    #[test]
    fn rotation_accepts_the_second_secret() {
        let old = verifier().sign(TS, BODY);
        let rotated = StripeSignature::new("whsec_new")
            .unwrap()
            .with_secret(SECRET)
            .unwrap();
        assert_eq!(check_with(&rotated, &old, BODY, TS), Ok(()));
        assert_ne!(rotated.sign(TS, BODY), old);
        assert!(StripeSignature::new("").is_err());
    }

    #[test]
    fn debug_hides_secrets() {
        let text = format!("{:?}", verifier().with_secret("whsec_two").unwrap());
        assert_eq!(text, "StripeSignature { secrets: 2, tolerance: 300s }");
    }
}
