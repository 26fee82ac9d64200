//! The [`SignatureVerifier`] trait, its [`SignatureError`], the explicit
//! [`Unverified`] choice, and the HMAC and timestamp checks the built-in
//! schemes share.

use std::fmt;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

use super::InboundCallback;
use crate::error::Error;

/// Longest signature-related header value (in bytes) a verifier parses; a
/// longer one is [`SignatureError::Malformed`]. No scheme needs more than a
/// few hundred bytes.
pub const MAX_SIGNATURE_HEADER_BYTES: usize = 8 * 1024;

/// Most signatures checked in one header (after filtering to the scheme's
/// version, e.g. `v1`). Entries past this many are ignored; if none of the
/// checked ones matched, verification fails with [`SignatureError::NoMatch`].
pub const MAX_SIGNATURES_CHECKED: usize = 16;

/// How far a signed timestamp may be from the verifier's clock, in either
/// direction, unless configured otherwise (the Standard Webhooks and Stripe
/// recommendation).
pub const DEFAULT_TOLERANCE: Duration = Duration::from_secs(300);

/// Length in bytes of an HMAC-SHA256 tag.
const TAG_LEN: usize = 32;

/// Why a callback's signature was not accepted.
///
/// The variants say what to fix without helping an attacker: no variant ever
/// carries a secret, the expected signature, or the received header value.
///
/// ```
/// use liaison::callback::SignatureError;
///
/// let err = SignatureError::TimestampOutOfTolerance { age_seconds: -301, tolerance_seconds: 300 };
/// assert_eq!(err.to_string(), "signed timestamp is 301 s in the future; tolerance is 300 s");
/// ```
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SignatureError {
    /// A header the scheme requires is absent.
    #[error("missing header `{header}`")]
    MissingHeader {
        /// The header's name (lowercase).
        header: &'static str,
    },

    /// A header is present but cannot be used: not visible ASCII, longer than
    /// [`MAX_SIGNATURE_HEADER_BYTES`], unparseable, a timestamp that is not a
    /// non-negative integer (or overflows `i64`), or (when no well-formed
    /// signature was present at all) a signature that is empty, not valid
    /// base64 / hex, or does not decode to exactly 32 bytes.
    #[error("malformed header `{header}`: {reason}")]
    Malformed {
        /// The header's name (lowercase).
        header: &'static str,
        /// What is wrong with it (never the value itself).
        reason: String,
    },

    /// The signed timestamp is further from now than the tolerance allows.
    /// `age_seconds` is negative for a timestamp in the future.
    #[error("{}", describe_age(*age_seconds, *tolerance_seconds))]
    TimestampOutOfTolerance {
        /// Now minus the signed timestamp, in whole seconds.
        age_seconds: i64,
        /// The verifier's tolerance, in whole seconds.
        tolerance_seconds: u64,
    },

    /// The headers are well formed, but no signature matched any configured
    /// secret (or the header held no signature of the scheme's version).
    #[error("no signature matched")]
    NoMatch,
}

fn describe_age(age: i64, tolerance: u64) -> String {
    if age < 0 {
        format!(
            "signed timestamp is {} s in the future; tolerance is {tolerance} s",
            age.unsigned_abs()
        )
    } else {
        format!("signed timestamp is {age} s old; tolerance is {tolerance} s")
    }
}

/// Decides whether an inbound callback really came from the partner.
///
/// Verification fails closed: every partner is configured with a verifier,
/// and a partner that sends unsigned callbacks is configured with
/// [`Unverified`] explicitly, which health and the ops page show as a risk.
/// Built in: [`StandardWebhooks`](super::StandardWebhooks),
/// [`GithubSignature`](super::GithubSignature),
/// [`StripeSignature`](super::StripeSignature); a host implements this trait
/// for any other scheme. The trait is object-safe, so a verifier can be held as
/// `Box<dyn SignatureVerifier>` or `Arc<dyn SignatureVerifier>`.
///
/// ```
/// use liaison::callback::{InboundCallback, SignatureError, SignatureVerifier};
/// use std::time::SystemTime;
///
/// /// A partner that sends a fixed token (weak, but some do).
/// #[derive(Debug)]
/// struct SharedToken;
///
/// impl SignatureVerifier for SharedToken {
///     fn verify(&self, callback: &InboundCallback, _now: SystemTime) -> Result<(), SignatureError> {
///         let token = callback
///             .header_str("x-token")
///             .ok_or(SignatureError::MissingHeader { header: "x-token" })?;
///         // A real verifier compares in constant time.
///         if token == "let-me-in" { Ok(()) } else { Err(SignatureError::NoMatch) }
///     }
///
///     fn scheme(&self) -> &'static str {
///         "shared_token"
///     }
/// }
///
/// let verifier: Box<dyn SignatureVerifier> = Box::new(SharedToken);
/// let callback = InboundCallback::new("acme", Default::default(), b"{}".to_vec());
/// assert_eq!(
///     verifier.verify(&callback, SystemTime::now()),
///     Err(SignatureError::MissingHeader { header: "x-token" })
/// );
/// ```
pub trait SignatureVerifier: Send + Sync + fmt::Debug {
    /// `Ok(())` if the callback carries a valid signature as of `now` (the
    /// clock is a parameter so tests and replays can pin it).
    fn verify(&self, callback: &InboundCallback, now: SystemTime) -> Result<(), SignatureError>;

    /// Short name for health and logs: `"standard_webhooks"`, `"github"`,
    /// `"stripe"`, `"unverified"`, ...
    fn scheme(&self) -> &'static str;
}

/// The explicit choice of no verification, for a partner that does not sign
/// its callbacks. [`verify`](SignatureVerifier::verify) always succeeds;
/// health and the ops page show a partner configured this way as a risk.
///
/// ```
/// use liaison::callback::{InboundCallback, SignatureVerifier, Unverified};
/// use std::time::SystemTime;
///
/// let callback = InboundCallback::new("legacy", Default::default(), Vec::new());
/// assert!(Unverified.verify(&callback, SystemTime::now()).is_ok());
/// assert_eq!(Unverified.scheme(), "unverified");
/// ```
#[derive(Debug, Clone, Copy, Default)]
pub struct Unverified;

impl SignatureVerifier for Unverified {
    fn verify(&self, _callback: &InboundCallback, _now: SystemTime) -> Result<(), SignatureError> {
        Ok(())
    }

    fn scheme(&self) -> &'static str {
        "unverified"
    }
}

type HmacSha256 = Hmac<Sha256>;

/// One or more HMAC-SHA256 keys (secret rotation): signing uses the first,
/// verification accepts any. Holds keyed MAC states, never the secrets' text;
/// deliberately not `Debug`.
#[derive(Clone)]
pub(super) struct HmacKeys {
    first: HmacSha256,
    rest: Vec<HmacSha256>,
}

impl HmacKeys {
    /// Keys from a secret's bytes; an empty secret is refused.
    pub(super) fn new(secret: &[u8]) -> crate::Result<Self> {
        Ok(Self {
            first: keyed(secret)?,
            rest: Vec::new(),
        })
    }

    /// Adds a secret that verification also accepts.
    pub(super) fn push(&mut self, secret: &[u8]) -> crate::Result<()> {
        self.rest.push(keyed(secret)?);
        Ok(())
    }

    /// How many secrets are configured.
    pub(super) fn len(&self) -> usize {
        1 + self.rest.len()
    }

    /// The tag of the concatenated `parts` under the first secret.
    pub(super) fn sign(&self, parts: &[&[u8]]) -> [u8; TAG_LEN] {
        absorb(self.first.clone(), parts)
            .finalize()
            .into_bytes()
            .into()
    }

    /// MAC states of the concatenated `parts` under every secret, ready to
    /// verify candidates against.
    fn absorbed(&self, parts: &[&[u8]]) -> Vec<HmacSha256> {
        std::iter::once(&self.first)
            .chain(&self.rest)
            .map(|key| absorb(key.clone(), parts))
            .collect()
    }
}

fn keyed(secret: &[u8]) -> crate::Result<HmacSha256> {
    if secret.is_empty() {
        return Err(Error::invalid("secret", "empty"));
    }
    // HMAC accepts keys of any length; map the (unreachable) error anyway
    // rather than panic. The reason never contains the secret.
    HmacSha256::new_from_slice(secret)
        .map_err(|_| Error::invalid("secret", "not usable as an HMAC-SHA256 key"))
}

fn absorb(mut mac: HmacSha256, parts: &[&[u8]]) -> HmacSha256 {
    for part in parts {
        mac.update(part);
    }
    mac
}

/// The value of a required header: present, visible ASCII, at most
/// [`MAX_SIGNATURE_HEADER_BYTES`]. Only the first value of a repeated header
/// is used.
pub(super) fn required_header<'a>(
    callback: &'a InboundCallback,
    header: &'static str,
) -> Result<&'a str, SignatureError> {
    let value = callback
        .headers
        .get(header)
        .ok_or(SignatureError::MissingHeader { header })?;
    if value.len() > MAX_SIGNATURE_HEADER_BYTES {
        return Err(malformed(
            header,
            format!(
                "{} bytes long, above the limit of {MAX_SIGNATURE_HEADER_BYTES}",
                value.len()
            ),
        ));
    }
    value
        .to_str()
        .map_err(|_| malformed(header, "contains bytes that are not visible ASCII"))
}

pub(super) fn malformed(header: &'static str, reason: impl Into<String>) -> SignatureError {
    SignatureError::Malformed {
        header,
        reason: reason.into(),
    }
}

/// A Unix timestamp in whole seconds: ASCII digits only (no sign, no
/// fraction, no spaces), within `i64`.
pub(super) fn parse_timestamp(header: &'static str, value: &str) -> Result<i64, SignatureError> {
    if value.is_empty() || !value.bytes().all(|b| b.is_ascii_digit()) {
        return Err(malformed(
            header,
            "timestamp is not a non-negative integer number of seconds",
        ));
    }
    value
        .parse::<i64>()
        .map_err(|_| malformed(header, "timestamp is out of range"))
}

/// Accepts `timestamp` if it is at most `tolerance` (whole seconds, bound
/// included) before or after `now`.
pub(super) fn check_timestamp(
    timestamp: i64,
    now: SystemTime,
    tolerance: Duration,
) -> Result<(), SignatureError> {
    let age = unix_seconds(now).saturating_sub(timestamp);
    let tolerance_seconds = tolerance.as_secs();
    if age.unsigned_abs() > tolerance_seconds {
        return Err(SignatureError::TimestampOutOfTolerance {
            age_seconds: age,
            tolerance_seconds,
        });
    }
    Ok(())
}

/// Whole seconds since the Unix epoch, rounded down, saturating at the ends
/// of `i64`.
fn unix_seconds(time: SystemTime) -> i64 {
    match time.duration_since(UNIX_EPOCH) {
        Ok(after) => i64::try_from(after.as_secs()).unwrap_or(i64::MAX),
        Err(before) => {
            let before = before.duration();
            let whole = before
                .as_secs()
                .saturating_add(u64::from(before.subsec_nanos() > 0));
            i64::try_from(whole).map_or(i64::MIN, |s| -s)
        }
    }
}

/// A decoded signature of exactly 32 bytes, or why the candidate is unusable.
pub(super) fn to_tag(decoded: &[u8]) -> Result<[u8; TAG_LEN], String> {
    <[u8; TAG_LEN]>::try_from(decoded).map_err(|_| {
        format!(
            "a signature decodes to {} bytes, expected {TAG_LEN}",
            decoded.len()
        )
    })
}

/// A lowercase or uppercase hex signature of exactly 32 bytes.
pub(super) fn decode_hex_tag(text: &str) -> Result<[u8; TAG_LEN], String> {
    if text.is_empty() {
        return Err("a signature is empty".to_owned());
    }
    if text.len() != 2 * TAG_LEN {
        return Err(format!(
            "a signature is {} hex digits long, expected {}",
            text.len(),
            2 * TAG_LEN
        ));
    }
    let mut tag = [0u8; TAG_LEN];
    hex::decode_to_slice(text, &mut tag).map_err(|_| "a signature is not valid hex".to_owned())?;
    Ok(tag)
}

/// Checks candidate signatures of `parts` against every key.
///
/// At most [`MAX_SIGNATURES_CHECKED`] candidates are looked at. Any one
/// well-formed candidate matching any key passes. Otherwise the result is
/// [`SignatureError::NoMatch`] if there was no candidate, at least one
/// well-formed one, or more candidates than the cap; and
/// [`SignatureError::Malformed`] (with the first candidate's problem) if every
/// candidate was unusable (empty, undecodable, wrong length). Comparison is
/// `Mac::verify_slice`, constant-time.
pub(super) fn verify_candidates(
    keys: &HmacKeys,
    parts: &[&[u8]],
    header: &'static str,
    candidates: impl IntoIterator<Item = Result<[u8; TAG_LEN], String>>,
) -> Result<(), SignatureError> {
    let mut macs: Option<Vec<HmacSha256>> = None;
    let mut well_formed = false;
    let mut first_problem: Option<String> = None;
    for (checked, candidate) in candidates.into_iter().enumerate() {
        if checked == MAX_SIGNATURES_CHECKED {
            return Err(SignatureError::NoMatch);
        }
        match candidate {
            Ok(tag) => {
                well_formed = true;
                let macs = macs.get_or_insert_with(|| keys.absorbed(parts));
                if macs
                    .iter()
                    .any(|mac| mac.clone().verify_slice(&tag).is_ok())
                {
                    return Ok(());
                }
            }
            Err(problem) => {
                first_problem.get_or_insert(problem);
            }
        }
    }
    match first_problem {
        Some(reason) if !well_formed => Err(malformed(header, reason)),
        _ => Err(SignatureError::NoMatch),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn _obj_safe(_: Box<dyn SignatureVerifier>) {}

    #[test]
    fn unverified_always_passes_and_says_so() {
        let cb = InboundCallback::new("p", Default::default(), b"anything".to_vec());
        assert_eq!(Unverified.verify(&cb, UNIX_EPOCH), Ok(()));
        assert_eq!(Unverified.scheme(), "unverified");
    }

    #[test]
    fn timestamps_parse_strictly() {
        let h = "t";
        assert_eq!(parse_timestamp(h, "1614265330"), Ok(1_614_265_330));
        assert_eq!(parse_timestamp(h, "0"), Ok(0));
        for bad in [
            "",
            "abc",
            "1614265330.5",
            "-5",
            "+5",
            " 5",
            "5 ",
            "1e9",
            "99999999999999999999",
            "9223372036854775808",
        ] {
            assert!(
                matches!(
                    parse_timestamp(h, bad),
                    Err(SignatureError::Malformed { header: "t", .. })
                ),
                "{bad:?}"
            );
        }
        assert_eq!(parse_timestamp(h, "9223372036854775807"), Ok(i64::MAX));
    }

    #[test]
    fn tolerance_bound_is_inclusive_in_both_directions() {
        let now = UNIX_EPOCH + Duration::from_secs(1_000_000);
        let tol = Duration::from_secs(300);
        assert_eq!(check_timestamp(1_000_000 - 300, now, tol), Ok(()));
        assert_eq!(check_timestamp(1_000_000 + 300, now, tol), Ok(()));
        assert_eq!(
            check_timestamp(1_000_000 - 301, now, tol),
            Err(SignatureError::TimestampOutOfTolerance {
                age_seconds: 301,
                tolerance_seconds: 300
            })
        );
        assert_eq!(
            check_timestamp(1_000_000 + 301, now, tol),
            Err(SignatureError::TimestampOutOfTolerance {
                age_seconds: -301,
                tolerance_seconds: 300
            })
        );
    }

    #[test]
    fn extreme_clocks_and_timestamps_do_not_overflow() {
        let tol = Duration::from_secs(300);
        assert!(check_timestamp(i64::MAX, UNIX_EPOCH, tol).is_err());
        assert!(check_timestamp(0, SystemTime::now(), tol).is_err());
        let before_epoch = UNIX_EPOCH - Duration::from_millis(1500);
        assert_eq!(unix_seconds(before_epoch), -2);
        assert!(check_timestamp(i64::MAX, before_epoch, tol).is_err());
        assert!(check_timestamp(i64::MIN, UNIX_EPOCH, tol).is_err());
        assert_eq!(check_timestamp(i64::MAX, UNIX_EPOCH, Duration::MAX), Ok(()));
    }

    #[test]
    fn error_messages_are_readable() {
        assert_eq!(
            SignatureError::MissingHeader {
                header: "webhook-id"
            }
            .to_string(),
            "missing header `webhook-id`"
        );
        assert_eq!(
            SignatureError::TimestampOutOfTolerance {
                age_seconds: 301,
                tolerance_seconds: 300
            }
            .to_string(),
            "signed timestamp is 301 s old; tolerance is 300 s"
        );
        assert_eq!(SignatureError::NoMatch.to_string(), "no signature matched");
    }

    #[test]
    fn empty_secret_is_refused() {
        let err = HmacKeys::new(b"").err().expect("refused");
        assert!(err.is_invalid_input());
    }

    #[test]
    fn candidates_beyond_the_cap_are_not_checked() {
        let keys = HmacKeys::new(b"k").unwrap();
        let good = keys.sign(&[b"body"]);
        let wrong = [0u8; TAG_LEN];
        let mut candidates = vec![Ok(wrong); MAX_SIGNATURES_CHECKED - 1];
        candidates.push(Ok(good));
        assert_eq!(
            verify_candidates(&keys, &[b"body"], "h", candidates.clone()),
            Ok(())
        );
        candidates.insert(0, Ok(wrong));
        assert_eq!(
            verify_candidates(&keys, &[b"body"], "h", candidates),
            Err(SignatureError::NoMatch)
        );
    }

    #[test]
    fn outcome_without_a_match_depends_on_the_candidates() {
        let keys = HmacKeys::new(b"k").unwrap();
        let none: Vec<Result<[u8; TAG_LEN], String>> = Vec::new();
        assert_eq!(
            verify_candidates(&keys, &[b"x"], "h", none),
            Err(SignatureError::NoMatch)
        );
        assert_eq!(
            verify_candidates(&keys, &[b"x"], "h", [Err("bad".to_owned())]),
            Err(malformed("h", "bad"))
        );
        assert_eq!(
            verify_candidates(
                &keys,
                &[b"x"],
                "h",
                [Err("bad".to_owned()), Ok([0; TAG_LEN])]
            ),
            Err(SignatureError::NoMatch)
        );
    }

    #[test]
    fn hex_tags_need_exactly_64_digits() {
        let lower = "757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17";
        let tag = decode_hex_tag(lower).unwrap();
        assert_eq!(decode_hex_tag(&lower.to_uppercase()), Ok(tag));
        assert!(decode_hex_tag("").is_err());
        assert!(decode_hex_tag(&lower[..63]).is_err());
        assert!(decode_hex_tag(&lower[..62]).is_err());
        assert!(decode_hex_tag(&format!("{lower}00")).is_err());
        assert!(decode_hex_tag(&format!("{}zz", &lower[..62])).is_err());
        assert!(to_tag(&[0; 31]).is_err());
        assert!(to_tag(&[0; 33]).is_err());
    }
}
