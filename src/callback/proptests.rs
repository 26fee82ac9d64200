//! Property tests: no input makes a verifier panic, and a signature made with
//! `sign` verifies for any body while any single-byte change of the body fails.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use http::header::{HeaderMap, HeaderValue};
use proptest::collection::vec;
use proptest::prelude::*;
use proptest::sample::Index;

use super::{
    GithubSignature, InboundCallback, SignatureError, SignatureVerifier, StandardWebhooks,
    StripeSignature,
};

/// Any byte a `HeaderValue` can hold (visible ASCII, tab, and opaque
/// 0x80..=0xFF), so the generated value always reaches the verifier.
fn header_byte() -> impl Strategy<Value = u8> {
    any::<u8>().prop_map(storable)
}

fn storable(b: u8) -> u8 {
    if (b < 0x20 && b != b'\t') || b == 0x7f {
        b' '
    } else {
        b
    }
}

/// Header values: random bytes, random text, near-misses of each scheme,
/// thousands of entries, and values around the length cap.
fn header_value() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        vec(header_byte(), 0..128),
        any::<String>().prop_map(String::into_bytes),
        "[0-9]{0,25}(\\.[0-9]{0,3})?".prop_map(String::into_bytes),
        "-?[0-9]{0,20}".prop_map(String::into_bytes),
        "( ?v1a?,[A-Za-z0-9+/=]{0,48}){0,6} ?".prop_map(String::into_bytes),
        "(sha256=)?[0-9a-fA-F]{0,70}".prop_map(String::into_bytes),
        "(t=[0-9]{0,22},?)?( ?v[01]=[0-9a-fA-F]{0,66},?){0,6}".prop_map(String::into_bytes),
        (0usize..3000).prop_map(|n| "v1,AAAA ".repeat(n).into_bytes()),
        (0usize..3000).prop_map(|n| format!("t=1,{}", "v1=00,".repeat(n)).into_bytes()),
        vec(header_byte(), 8000..8400),
    ]
    .prop_map(|value| value.into_iter().map(storable).collect())
}

fn now() -> impl Strategy<Value = SystemTime> {
    prop_oneof![
        (0u64..4_000_000_000).prop_map(|s| UNIX_EPOCH + Duration::from_secs(s)),
        any::<u64>().prop_map(|s| UNIX_EPOCH
            .checked_add(Duration::from_secs(s))
            .unwrap_or(UNIX_EPOCH)),
        any::<u32>().prop_map(|s| UNIX_EPOCH
            .checked_sub(Duration::from_secs(u64::from(s)))
            .unwrap_or(UNIX_EPOCH)),
    ]
}

/// A callback whose named headers carry the given bytes (`None`: absent).
fn callback(headers: &[(&'static str, Option<Vec<u8>>)], body: Vec<u8>) -> InboundCallback {
    let mut map = HeaderMap::new();
    for (name, value) in headers {
        if let Some(value) = value {
            let value = HeaderValue::from_bytes(value).expect("header_value() stays valid");
            map.insert(*name, value);
        }
    }
    InboundCallback::new("prop", map, body)
}

fn flip(body: &[u8], at: Index, mask: u8) -> Vec<u8> {
    let mut changed = body.to_vec();
    changed[at.index(body.len())] ^= mask;
    changed
}

fn verifiers() -> Vec<Box<dyn SignatureVerifier>> {
    vec![
        Box::new(StandardWebhooks::new("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap()),
        Box::new(GithubSignature::new("It's a Secret to Everybody").unwrap()),
        Box::new(StripeSignature::new("whsec_test").unwrap()),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn arbitrary_headers_and_bodies_never_panic(
        id in proptest::option::of(header_value()),
        timestamp in proptest::option::of(header_value()),
        signature in proptest::option::of(header_value()),
        github in proptest::option::of(header_value()),
        stripe in proptest::option::of(header_value()),
        body in vec(any::<u8>(), 0..256),
        now in now(),
    ) {
        let cb = callback(
            &[
                ("webhook-id", id),
                ("webhook-timestamp", timestamp),
                ("webhook-signature", signature),
                ("x-hub-signature-256", github),
                ("stripe-signature", stripe),
            ],
            body,
        );
        for verifier in verifiers() {
            let result = verifier.verify(&cb, now);
            // Random input essentially never carries a valid signature; what
            // matters is an answer, not a panic.
            if let Err(err) = result {
                let _ = err.to_string();
            }
        }
    }

    #[test]
    fn standard_webhooks_signed_bodies_verify_and_changes_fail(
        key in vec(any::<u8>(), 1..64),
        msg_id in "[A-Za-z0-9_]{1,40}",
        timestamp in 0i64..4_000_000_000,
        body in vec(any::<u8>(), 1..1024),
        at in any::<Index>(),
        mask in 1u8..=255,
    ) {
        let verifier = StandardWebhooks::new(&format!("whsec_{}", STANDARD.encode(&key))).unwrap();
        let signature = verifier.sign(&msg_id, timestamp, &body);
        let headers = |body: Vec<u8>| callback(
            &[
                ("webhook-id", Some(msg_id.clone().into_bytes())),
                ("webhook-timestamp", Some(timestamp.to_string().into_bytes())),
                ("webhook-signature", Some(signature.clone().into_bytes())),
            ],
            body,
        );
        let now = UNIX_EPOCH + Duration::from_secs(timestamp.unsigned_abs());
        prop_assert_eq!(verifier.verify(&headers(body.clone()), now), Ok(()));
        prop_assert_eq!(
            verifier.verify(&headers(flip(&body, at, mask)), now),
            Err(SignatureError::NoMatch)
        );
    }

    #[test]
    fn github_signed_bodies_verify_and_changes_fail(
        secret in "[ -~]{1,40}",
        body in vec(any::<u8>(), 1..1024),
        at in any::<Index>(),
        mask in 1u8..=255,
    ) {
        let verifier = GithubSignature::new(&secret).unwrap();
        let signature = verifier.sign(&body);
        let headers = |body: Vec<u8>| {
            callback(&[("x-hub-signature-256", Some(signature.clone().into_bytes()))], body)
        };
        prop_assert_eq!(verifier.verify(&headers(body.clone()), UNIX_EPOCH), Ok(()));
        prop_assert_eq!(
            verifier.verify(&headers(flip(&body, at, mask)), UNIX_EPOCH),
            Err(SignatureError::NoMatch)
        );
    }

    #[test]
    fn stripe_signed_bodies_verify_and_changes_fail(
        secret in "[ -~]{1,40}",
        timestamp in 0i64..4_000_000_000,
        body in vec(any::<u8>(), 1..1024),
        at in any::<Index>(),
        mask in 1u8..=255,
    ) {
        let verifier = StripeSignature::new(&secret).unwrap();
        let signature = verifier.sign(timestamp, &body);
        let headers = |body: Vec<u8>| {
            callback(&[("stripe-signature", Some(signature.clone().into_bytes()))], body)
        };
        let now = UNIX_EPOCH + Duration::from_secs(timestamp.unsigned_abs());
        prop_assert_eq!(verifier.verify(&headers(body.clone()), now), Ok(()));
        prop_assert_eq!(
            verifier.verify(&headers(flip(&body, at, mask)), now),
            Err(SignatureError::NoMatch)
        );
    }
}
