//! GitHub-style signatures: `X-Hub-Signature-256: sha256=<hex>`.

use std::fmt;
use std::time::SystemTime;

use super::InboundCallback;
use super::signature::{
    HmacKeys, SignatureError, SignatureVerifier, decode_hex_tag, malformed, required_header,
    verify_candidates,
};

/// Verifies (and makes) GitHub-style webhook signatures.
///
/// The partner sends `X-Hub-Signature-256: sha256=<hex>`, the HMAC-SHA256 of
/// the raw body under the secret's UTF-8 bytes. The scheme has no timestamp,
/// so it cannot refuse a replayed delivery: deduplication by event id or
/// body hash is what protects against replays.
///
/// - a missing header is [`SignatureError::MissingHeader`];
/// - a value without the `sha256=` prefix (case-sensitive, as GitHub sends
///   it), or whose hex is empty, not exactly 64 digits, or not hex, is
///   [`SignatureError::Malformed`];
/// - a well-formed signature that matches no configured secret is
///   [`SignatureError::NoMatch`].
///
/// Upper-case hex digits are accepted as well as lower-case: they encode the
/// same 32 bytes, and the bytes are what is compared (in constant time). The
/// legacy SHA-1 `X-Hub-Signature` header is not consulted.
///
/// `Debug` shows the number of secrets, never a secret.
///
/// ```
/// use liaison::callback::{GithubSignature, InboundCallback, SignatureVerifier};
/// use http::header::{HeaderMap, HeaderValue};
/// use std::time::SystemTime;
///
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// // GitHub's documented example.
/// let verifier = GithubSignature::new("It's a Secret to Everybody")?;
/// let mut headers = HeaderMap::new();
/// headers.insert(
///     "X-Hub-Signature-256",
///     HeaderValue::from_static(
///         "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17",
///     ),
/// );
/// let callback = InboundCallback::new("github", headers, b"Hello, World!".to_vec());
/// assert_eq!(verifier.verify(&callback, SystemTime::now()), Ok(()));
/// assert_eq!(verifier.sign(b"Hello, World!"), callback.header_str("x-hub-signature-256").unwrap());
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct GithubSignature {
    keys: HmacKeys,
}

impl GithubSignature {
    /// The signature header.
    pub const HEADER: &'static str = "x-hub-signature-256";

    /// A verifier for `secret`, used as its UTF-8 bytes. An empty secret is
    /// [`crate::Error::InvalidInput`] for field `secret`.
    pub fn new(secret: &str) -> crate::Result<Self> {
        Ok(Self {
            keys: HmacKeys::new(secret.as_bytes())?,
        })
    }

    /// Also accept `secret`, for rotation: a signature matching any
    /// configured secret passes. [`sign`](GithubSignature::sign) keeps using
    /// the first.
    pub fn with_secret(mut self, secret: &str) -> crate::Result<Self> {
        self.keys.push(secret.as_bytes())?;
        Ok(self)
    }

    /// The header value (`sha256=<lowercase hex>`) for `body`, made with the
    /// first secret.
    pub fn sign(&self, body: &[u8]) -> String {
        format!("sha256={}", hex::encode(self.keys.sign(&[body])))
    }
}

impl SignatureVerifier for GithubSignature {
    fn verify(&self, callback: &InboundCallback, _now: SystemTime) -> Result<(), SignatureError> {
        let value = required_header(callback, Self::HEADER)?;
        let hex = value
            .strip_prefix("sha256=")
            .ok_or_else(|| malformed(Self::HEADER, "does not start with `sha256=`"))?;
        verify_candidates(
            &self.keys,
            &[&callback.body],
            Self::HEADER,
            [decode_hex_tag(hex)],
        )
    }

    fn scheme(&self) -> &'static str {
        "github"
    }
}

impl fmt::Debug for GithubSignature {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GithubSignature")
            .field("secrets", &self.keys.len())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::callback::test_callback;

    const SECRET: &str = "It's a Secret to Everybody";
    const BODY: &[u8] = b"Hello, World!";
    const SIG: &str = "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17";

    fn check_with(
        verifier: &GithubSignature,
        sig: &str,
        body: &[u8],
    ) -> Result<(), SignatureError> {
        let cb = test_callback(&[("X-Hub-Signature-256", sig)], body);
        verifier.verify(&cb, SystemTime::now())
    }

    fn check(sig: &str) -> Result<(), SignatureError> {
        check_with(&GithubSignature::new(SECRET).unwrap(), sig, BODY)
    }

    fn is_malformed(result: Result<(), SignatureError>) -> bool {
        matches!(
            result,
            Err(SignatureError::Malformed {
                header: "x-hub-signature-256",
                ..
            })
        )
    }

    #[test]
    fn documented_example_verifies() {
        assert_eq!(check(SIG), Ok(()));
        assert_eq!(GithubSignature::new(SECRET).unwrap().sign(BODY), SIG);
        assert_eq!(GithubSignature::new(SECRET).unwrap().scheme(), "github");
    }

    #[test]
    fn uppercase_hex_is_accepted() {
        let upper = format!("sha256={}", SIG["sha256=".len()..].to_uppercase());
        assert_eq!(check(&upper), Ok(()));
    }

    #[test]
    fn wrong_secret_does_not_match() {
        let other = GithubSignature::new("not the secret").unwrap();
        assert_eq!(check_with(&other, SIG, BODY), Err(SignatureError::NoMatch));
    }

    #[test]
    fn missing_header_is_named() {
        let cb = test_callback(&[("X-Hub-Signature", "sha1=abc")], BODY);
        assert_eq!(
            GithubSignature::new(SECRET)
                .unwrap()
                .verify(&cb, SystemTime::now()),
            Err(SignatureError::MissingHeader {
                header: "x-hub-signature-256"
            })
        );
    }

    #[test]
    fn missing_prefix_is_malformed() {
        assert!(is_malformed(check(&SIG["sha256=".len()..])));
        assert!(is_malformed(check(&SIG.replace("sha256=", "SHA256="))));
        assert!(is_malformed(check(&SIG.replace("sha256=", "sha1="))));
    }

    #[test]
    fn truncated_empty_and_over_long_hex_are_malformed() {
        assert!(is_malformed(check(&SIG[..SIG.len() - 1])));
        assert!(is_malformed(check(&SIG[..SIG.len() - 2])));
        assert!(is_malformed(check("sha256=")));
        assert!(is_malformed(check("")));
        assert!(is_malformed(check(&format!("{SIG}00"))));
        assert!(is_malformed(check(&format!("{}zz", &SIG[..SIG.len() - 2]))));
    }

    #[test]
    fn body_changed_by_one_byte_does_not_match() {
        let verifier = GithubSignature::new(SECRET).unwrap();
        assert_eq!(
            check_with(&verifier, SIG, b"Hello, World?"),
            Err(SignatureError::NoMatch)
        );
        assert_eq!(
            check_with(&verifier, SIG, b"Hello, World!\n"),
            Err(SignatureError::NoMatch)
        );
    }

    #[test]
    fn rotation_and_round_trip() {
        let verifier = GithubSignature::new("new secret")
            .unwrap()
            .with_secret(SECRET)
            .unwrap();
        assert_eq!(check_with(&verifier, SIG, BODY), Ok(()));
        let body = b"\x00\x01 raw bytes \xff";
        assert_eq!(check_with(&verifier, &verifier.sign(body), body), Ok(()));
        assert_ne!(verifier.sign(BODY), SIG);
        assert!(GithubSignature::new("").is_err());
        assert!(verifier.with_secret("").is_err());
    }

    #[test]
    fn debug_hides_secrets() {
        let verifier = GithubSignature::new(SECRET).unwrap();
        let text = format!("{verifier:?}");
        assert_eq!(text, "GithubSignature { secrets: 1 }");
    }
}
