//! Fuzz entry points for liaison's inbound surface, shared by the cargo-fuzz
//! targets (`fuzz/fuzz_targets/`) and the normal test suite, which runs them
//! over the checked-in corpus and random inputs (`tests/it/fuzz_corpus.rs`
//! includes this file by path).
//!
//! Each entry point takes arbitrary bytes, never panics on them, and checks
//! properties that must hold for every input (a panic is a finding):
//!
//! - [`signature_headers`]: the three built-in verifiers. Raw mode uses the
//!   input as the scheme's headers and body: a verification that succeeds
//!   must carry exactly the signature we would have made. Signed mode
//!   (selector bit 0x80) signs the body properly: it must verify, and must
//!   stop verifying once a byte of the body changes.
//! - [`json_matcher`]: [`JsonMatcher::parse`] with several configurations:
//!   a report it returns always holds bounded identifiers without control
//!   characters, and a body that is not JSON is always malformed.
//! - [`callback_ingest`]: [`Liaison::ingest_callback`] on a temporary SQLite
//!   store: never an error (errors are storage failures only) but
//!   `InvalidInput` for a name no partner could have, which stores nothing;
//!   the status is the disposition's, the raw callback is stored as received, a
//!   signed partner's callback without a real signature is never applied,
//!   and no submission is ever settled twice.
//! - [`callback_router`] (feature `http`): raw bytes as one HTTP connection
//!   to the axum callback router on 127.0.0.1, over the same harness: the
//!   router answers HTTP or closes, never with a server error, still
//!   answers a well-formed callback afterwards, and settles nothing twice.
//!
//! Input layout: byte 0 selects a mode; the rest is split at NUL bytes into
//! header values, the last piece being the body (JSON bodies contain no raw
//! NUL, so a corpus file is `<selector>[<header>\0...]<body>`).

use std::sync::OnceLock;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use liaison::callback::{
    CallbackMatcher, CorrelateBy, Correlation, Disposition, GithubSignature, InboundCallback,
    JsonMatcher, ReportedOutcome, SignatureError, SignatureVerifier, StandardWebhooks,
    StripeSignature, Unverified,
};
use liaison::engine::{Liaison, Partner};
use liaison::store::{
    AttemptReport, ClaimRequest, OutboxStore, SqliteConfig, SqliteStore, StateChange, Synchronous,
};
use liaison::{
    AttemptContext, AttemptOutcome, NewSubmission, PartnerAdapter, PartnerError, Submission,
    SubmissionId, SubmitOutcome,
};
use reqwest::header::{HeaderMap, HeaderName, HeaderValue};

/// The verifiers' clock in raw and signed mode (2023-11-14).
pub const NOW_SECS: i64 = 1_700_000_000;
/// The Standard Webhooks secret (the specification's example).
pub const STANDARD_SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
/// The GitHub and Stripe secret.
pub const HMAC_SECRET: &str = "fuzz-secret";
/// Longest identifier a matcher may return, in bytes.
const MAX_ID_BYTES: usize = 255;

fn now() -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(NOW_SECS as u64)
}

/// The input's selector byte, header values and body.
pub fn split(data: &[u8]) -> (u8, Vec<&[u8]>, &[u8]) {
    let Some((&selector, rest)) = data.split_first() else {
        return (0, Vec::new(), &[]);
    };
    let mut parts: Vec<&[u8]> = rest.split(|b| *b == 0).collect();
    let body = parts.pop().unwrap_or(&[]);
    (selector, parts, body)
}

/// Headers from (name, raw value) pairs; values HTTP could not carry (CR,
/// LF, NUL) are left out, as the HTTP layer would refuse them.
pub fn headers(pairs: &[(&'static str, &[u8])]) -> HeaderMap {
    let mut map = HeaderMap::new();
    for (name, value) in pairs {
        if let Ok(value) = HeaderValue::from_bytes(value) {
            map.append(HeaderName::from_static(name), value);
        }
    }
    map
}

fn callback(pairs: &[(&'static str, &[u8])], body: &[u8]) -> InboundCallback {
    InboundCallback::new("fuzz", headers(pairs), body.to_vec())
}

struct Verifiers {
    standard: StandardWebhooks,
    github: GithubSignature,
    stripe: StripeSignature,
}

fn verifiers() -> &'static Verifiers {
    static V: OnceLock<Verifiers> = OnceLock::new();
    V.get_or_init(|| Verifiers {
        standard: StandardWebhooks::new(STANDARD_SECRET).expect("valid secret"),
        github: GithubSignature::new(HMAC_SECRET).expect("valid secret"),
        stripe: StripeSignature::new(HMAC_SECRET).expect("valid secret"),
    })
}

/// Signature headers: see the module documentation.
pub fn signature_headers(data: &[u8]) {
    let (selector, parts, body) = split(data);
    let part = |i: usize| parts.get(i).copied().unwrap_or(&[]);
    let v = verifiers();
    if selector & 0x80 != 0 {
        signed_round_trip(v, selector, part(0), body);
        return;
    }

    // Standard Webhooks: id, timestamp, signature.
    let cb = callback(
        &[
            ("webhook-id", part(0)),
            ("webhook-timestamp", part(1)),
            ("webhook-signature", part(2)),
        ],
        body,
    );
    if v.standard.verify(&cb, now()).is_ok() {
        let id = cb.header_str("webhook-id").expect("verified: id present");
        let ts: i64 = cb
            .header_str("webhook-timestamp")
            .and_then(|t| t.parse().ok())
            .expect("verified: timestamp parses");
        let expected = v.standard.sign(id, ts, body);
        let sent = cb
            .header_str("webhook-signature")
            .expect("verified: present");
        assert!(
            sent.split_ascii_whitespace().any(|s| s == expected),
            "standard webhooks verified without our signature"
        );
    }

    // GitHub: one header.
    let cb = callback(&[("x-hub-signature-256", part(0))], body);
    if v.github.verify(&cb, now()).is_ok() {
        let sent = cb
            .header_str("x-hub-signature-256")
            .expect("verified: present");
        assert_eq!(
            sent.to_ascii_lowercase(),
            v.github.sign(body),
            "github verified without our signature"
        );
    }

    // Stripe: one header with t= and v1= entries.
    let cb = callback(&[("stripe-signature", part(0))], body);
    if v.stripe.verify(&cb, now()).is_ok() {
        let sent = cb
            .header_str("stripe-signature")
            .expect("verified: present");
        let ts: i64 = sent
            .split(',')
            .find_map(|e| e.trim_ascii().strip_prefix("t="))
            .and_then(|t| t.parse().ok())
            .expect("verified: timestamp parses");
        let expected = v.stripe.sign(ts, body);
        let expected_v1 = expected.split_once(",v1=").expect("t=..,v1=..").1;
        assert!(
            sent.split(',')
                .filter_map(|e| e.trim_ascii().strip_prefix("v1="))
                .any(|s| s.eq_ignore_ascii_case(expected_v1)),
            "stripe verified without our signature"
        );
    }
}

/// The schemes under which an input verifies in raw mode (for checking
/// that the corpus's valid samples are still valid).
pub fn verified_by(data: &[u8]) -> Vec<&'static str> {
    let (_, parts, body) = split(data);
    let part = |i: usize| parts.get(i).copied().unwrap_or(&[]);
    let v = verifiers();
    let candidates: [(&dyn SignatureVerifier, InboundCallback); 3] = [
        (
            &v.standard,
            callback(
                &[
                    ("webhook-id", part(0)),
                    ("webhook-timestamp", part(1)),
                    ("webhook-signature", part(2)),
                ],
                body,
            ),
        ),
        (
            &v.github,
            callback(&[("x-hub-signature-256", part(0))], body),
        ),
        (&v.stripe, callback(&[("stripe-signature", part(0))], body)),
    ];
    candidates
        .iter()
        .filter(|(verifier, cb)| verifier.verify(cb, now()).is_ok())
        .map(|(verifier, _)| verifier.scheme())
        .collect()
}

/// Sign `body` properly (within the tolerance): it verifies; with one bit
/// of the body flipped, it does not.
fn signed_round_trip(v: &Verifiers, selector: u8, id: &[u8], body: &[u8]) {
    // A skew of up to +-63 s, well inside the 300 s tolerance.
    let ts = NOW_SECS + i64::from(selector & 0x3f) * if selector & 0x40 != 0 { -1 } else { 1 };
    // A message id is visible ASCII (verifiers refuse other header bytes).
    let id = std::str::from_utf8(id)
        .ok()
        .filter(|s| !s.is_empty() && s.bytes().all(|b| b.is_ascii_graphic() || b == b' '))
        .unwrap_or("msg_fuzz");
    let ts_text = ts.to_string();
    let make = |body: &[u8]| {
        [
            callback(
                &[
                    ("webhook-id", id.as_bytes()),
                    ("webhook-timestamp", ts_text.as_bytes()),
                    (
                        "webhook-signature",
                        v.standard.sign(id, ts, body).as_bytes(),
                    ),
                ],
                body,
            ),
            callback(
                &[("x-hub-signature-256", v.github.sign(body).as_bytes())],
                body,
            ),
            callback(
                &[("stripe-signature", v.stripe.sign(ts, body).as_bytes())],
                body,
            ),
        ]
    };
    let all: [&dyn SignatureVerifier; 3] = [&v.standard, &v.github, &v.stripe];
    for (verifier, cb) in all.iter().zip(make(body)) {
        assert_eq!(
            verifier.verify(&cb, now()),
            Ok(()),
            "{} refused its own signature",
            verifier.scheme()
        );
        if !body.is_empty() {
            let mut tampered = cb.clone();
            let i = usize::from(selector) % body.len();
            tampered.body[i] ^= 1 << (selector % 8);
            assert_eq!(
                verifier.verify(&tampered, now()),
                Err(SignatureError::NoMatch),
                "{} accepted a tampered body",
                verifier.scheme()
            );
        }
    }
}

fn matchers() -> &'static [JsonMatcher] {
    static M: OnceLock<Vec<JsonMatcher>> = OnceLock::new();
    M.get_or_init(|| {
        vec![
            JsonMatcher::builder(Unverified)
                .progress(["processing"])
                .build()
                .expect("valid matcher"),
            JsonMatcher::builder(Unverified)
                .correlate(CorrelateBy::SubmissionId, "/data/0/id")
                .status("/data/0/state", ["paid", "1", "true"], ["denied", "0"])
                .event_id("/meta/~1id")
                .reason("/data/0/errors/0")
                .build()
                .expect("valid matcher"),
            JsonMatcher::builder(Unverified)
                .correlate(CorrelateBy::IdempotencyKey, "/")
                .status("/~0", ["x"], ["y"])
                .without_event_id()
                .build()
                .expect("valid matcher"),
        ]
    })
}

fn check_identifier(what: &str, id: &str) {
    assert!(!id.is_empty(), "{what} is empty");
    assert!(id.len() <= MAX_ID_BYTES, "{what} is {} bytes", id.len());
    assert!(
        !id.chars().any(char::is_control),
        "{what} holds control characters"
    );
}

/// The JSON matcher: see the module documentation.
pub fn json_matcher(data: &[u8]) {
    let (selector, body) = data.split_first().map_or((0, data), |(s, b)| (*s, b));
    let matcher = &matchers()[usize::from(selector) % matchers().len()];
    let cb = InboundCallback::new("fuzz", HeaderMap::new(), body.to_vec());
    let is_json = serde_json::from_slice::<serde_json::Value>(body).is_ok();
    match matcher.parse(&cb) {
        Err(malformed) => assert!(
            !malformed.reason.is_empty(),
            "a malformed callback says why"
        ),
        Ok(report) => {
            assert!(is_json, "a report from a body that is not JSON");
            match &report.correlation {
                Correlation::ExternalRef(r) => check_identifier("reference", r),
                Correlation::IdempotencyKey(k) => check_identifier("key", k),
                Correlation::SubmissionId(_) => {}
                _ => {}
            }
            if let Some(event) = &report.event_id {
                check_identifier("event id", event);
            }
            match &report.outcome {
                ReportedOutcome::Failed { reason } => {
                    assert!(!reason.is_empty() && reason.chars().count() <= 1000);
                }
                ReportedOutcome::Progress { note: Some(note) } => {
                    assert!(!note.is_empty() && note.chars().count() <= 1000);
                }
                _ => {}
            }
        }
    }
}

/// Whether the matcher the selector picks reads the input as a report
/// (for checking that the corpus's valid samples are still valid).
pub fn parses(data: &[u8]) -> bool {
    let (selector, body) = data.split_first().map_or((0, data), |(s, b)| (*s, b));
    let matcher = &matchers()[usize::from(selector) % matchers().len()];
    matcher
        .parse(&InboundCallback::new(
            "fuzz",
            HeaderMap::new(),
            body.to_vec(),
        ))
        .is_ok()
}

/// Accepts every submission; the ingest harness drives work by hand.
#[derive(Debug)]
struct Idle;

#[async_trait::async_trait]
impl PartnerAdapter for Idle {
    async fn submit(
        &self,
        _: &AttemptContext,
        _: &Submission,
    ) -> Result<SubmitOutcome, PartnerError> {
        Err(PartnerError::transient("not under test"))
    }
}

/// A temporary SQLite store with partners "open" (unsigned JSON callbacks)
/// and "signed" (Standard Webhooks), and submissions of "open" awaiting
/// their results under references `R-0` .. `R-3`.
pub struct Ingest {
    runtime: tokio::runtime::Runtime,
    liaison: Liaison,
    store: SqliteStore,
    awaiting: Vec<SubmissionId>,
    _dir: tempfile::TempDir,
}

/// Callback size cap of both partners.
pub const INGEST_CAP: usize = 64 * 1024;

impl Ingest {
    /// Build the harness.
    pub fn start() -> Ingest {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        let dir = tempfile::tempdir().expect("temp dir");
        let store = SqliteStore::open_with(
            dir.path().join("fuzz.db"),
            SqliteConfig::default().synchronous(Synchronous::Normal),
        )
        .expect("store");
        let liaison = Liaison::builder(store.clone())
            .partner(
                Partner::new("open", Idle)
                    .callbacks(
                        JsonMatcher::builder(Unverified)
                            .progress(["processing"])
                            .build()
                            .expect("matcher"),
                    )
                    .max_callback_bytes(INGEST_CAP),
            )
            .partner(
                Partner::new("signed", Idle)
                    .callbacks(
                        JsonMatcher::builder(
                            StandardWebhooks::new(STANDARD_SECRET).expect("secret"),
                        )
                        .build()
                        .expect("matcher"),
                    )
                    .max_callback_bytes(INGEST_CAP),
            )
            .build()
            .expect("liaison");
        let awaiting = runtime.block_on(async {
            let mut ids = Vec::new();
            for i in 0..4 {
                let new = NewSubmission::new("open", "fuzz", serde_json::json!({ "i": i }))
                    .idempotency_key(format!("K-{i}"));
                ids.push(liaison.enqueue(new).await.expect("enqueue").submission.id);
                let lease = store
                    .claim(ClaimRequest::new("open", 1, Duration::from_secs(3600)))
                    .await
                    .expect("claim")
                    .remove(0);
                store
                    .complete(
                        &lease,
                        AttemptReport::new(AttemptOutcome::Accepted),
                        StateChange::to(liaison::SubmissionState::AwaitingResult)
                            .external_ref(format!("R-{i}")),
                    )
                    .await
                    .expect("accept");
            }
            ids
        });
        Ingest {
            runtime,
            liaison,
            store,
            awaiting,
            _dir: dir,
        }
    }

    /// One callback from the input: see the module documentation.
    pub fn run(&self, data: &[u8]) {
        let (selector, parts, body) = split(data);
        let part = |i: usize| parts.get(i).copied().unwrap_or(&[]);
        let unknown = String::from_utf8_lossy(part(4)).into_owned();
        let partner = match selector % 4 {
            0 | 3 => "open",
            1 => "signed",
            _ => unknown.as_str(),
        };
        let headers = headers(&[
            ("webhook-id", part(0)),
            ("webhook-timestamp", part(1)),
            ("webhook-signature", part(2)),
            ("content-type", part(3)),
        ]);
        self.runtime.block_on(async {
            // A name no partner could have is refused before anything is
            // stored; every other input gets a receipt.
            let valid_name = !partner.is_empty()
                && partner.len() <= 64
                && partner
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.' | ':' | '/'));
            let receipt = match self.liaison.ingest_callback(partner, &headers, body).await {
                Err(e) if !valid_name => {
                    assert!(e.is_invalid_input(), "{e:?}");
                    return;
                }
                answer => answer.expect("ingest answers every input with a receipt"),
            };
            assert!(valid_name, "{partner:?} is not a partner name, yet stored");
            let d = receipt.disposition;
            let stored = self
                .store
                .callback(receipt.callback_id)
                .await
                .expect("the callback is stored");
            assert_eq!(stored.disposition, d);
            let known = partner == "open" || partner == "signed";
            if d == Disposition::TooLarge {
                assert!(body.len() > INGEST_CAP);
                assert!(stored.body.is_none());
            } else if !known {
                // A name that is no configured partner: metadata only.
                assert!(stored.body.is_none(), "{partner:?}: body kept");
                assert_eq!(stored.size, body.len() as u64);
            } else {
                assert_eq!(stored.body.as_deref(), Some(body), "stored as received");
            }
            if !known {
                assert!(matches!(d, Disposition::Rejected | Disposition::TooLarge));
            }
            // An unknown partner is answered like a bad signature (401).
            assert_eq!(receipt.http_status, d.http_status(), "{d:?}");
            if partner == "signed" {
                // The fuzzer cannot forge a signature: never parsed, never applied.
                assert!(
                    matches!(d, Disposition::Rejected | Disposition::TooLarge),
                    "{d:?}"
                );
            }
            self.check_settled_at_most_once().await;
        });
    }

    /// No submission of the harness was ever settled twice.
    async fn check_settled_at_most_once(&self) {
        for id in &self.awaiting {
            let settled = self
                .store
                .timeline(*id)
                .await
                .expect("timeline")
                .iter()
                .filter(|e| e.to_state.is_some_and(|s| s.is_terminal()))
                .count();
            assert!(settled <= 1, "submission {id} settled {settled} times");
        }
    }
}

/// Callback ingest on one process-wide harness: see the module documentation.
pub fn callback_ingest(data: &[u8]) {
    static INGEST: OnceLock<Ingest> = OnceLock::new();
    INGEST.get_or_init(Ingest::start).run(data);
}

/// The callback router served on 127.0.0.1 over the ingest harness's store
/// and partners, on a thread and runtime of its own.
#[cfg(feature = "http")]
pub struct Served {
    ingest: Ingest,
    addr: std::net::SocketAddr,
}

/// A well-formed callback the router must always answer: one that matches
/// nothing yet (202), under a reference of its own each time (a repeated
/// body would be a duplicate).
#[cfg(feature = "http")]
fn probe() -> Vec<u8> {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    let n = N.fetch_add(1, Ordering::Relaxed);
    let body = format!("{{\"reference\":\"nobody-{n}\",\"status\":\"succeeded\"}}");
    format!(
        "POST /callbacks/open HTTP/1.1\r\nHost: fuzz\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

#[cfg(feature = "http")]
impl Served {
    /// Start the router.
    pub fn start() -> Served {
        let ingest = Ingest::start();
        let router = liaison::http::callback_router(ingest.liaison.clone());
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        listener.set_nonblocking(true).expect("non-blocking");
        let addr = listener.local_addr().expect("address");
        std::thread::Builder::new()
            .name("fuzz-router".into())
            .spawn(move || {
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("runtime");
                runtime.block_on(async move {
                    let listener = tokio::net::TcpListener::from_std(listener).expect("listener");
                    axum::serve(listener, router).await.expect("serve");
                });
            })
            .expect("router thread");
        Served { ingest, addr }
    }

    /// Send raw bytes as one connection; the response's bytes (empty when
    /// the server closed without answering). With `end`, the write side is
    /// closed after the bytes, so an incomplete request ends at once (the
    /// server then closes, answered or not) instead of waiting for more.
    fn exchange(&self, data: &[u8], end: bool) -> Vec<u8> {
        use std::io::{Read, Write};
        let mut stream = std::net::TcpStream::connect(self.addr).expect("connect");
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .expect("timeout");
        stream
            .set_write_timeout(Some(Duration::from_secs(10)))
            .expect("timeout");
        // The server may answer and close before reading everything.
        let _ = stream.write_all(data);
        if end {
            let _ = stream.shutdown(std::net::Shutdown::Write);
        }
        let mut answer = Vec::new();
        let _ = stream.take(64 * 1024).read_to_end(&mut answer);
        answer
    }

    /// One connection carrying the input's bytes as they are: the router
    /// answers HTTP (or closes), never with a server error, keeps answering
    /// a well-formed callback afterwards, and no submission is settled twice.
    pub fn run(&self, data: &[u8]) {
        let answer = self.exchange(data, true);
        if !answer.is_empty() {
            let status = status_of(&answer).unwrap_or_else(|| {
                panic!("not an HTTP answer: {:?}", String::from_utf8_lossy(&answer))
            });
            assert!(
                status != 500,
                "a server error for {:?}",
                String::from_utf8_lossy(data)
            );
        }
        let probe = self.exchange(&probe(), false);
        assert_eq!(
            status_of(&probe),
            Some(202),
            "the router stopped answering: {:?}",
            String::from_utf8_lossy(&probe)
        );
        self.ingest
            .runtime
            .block_on(self.ingest.check_settled_at_most_once());
    }
}

/// The status code of an HTTP/1.x answer.
#[cfg(feature = "http")]
fn status_of(answer: &[u8]) -> Option<u16> {
    let line = answer.split(|b| *b == b'\n').next()?;
    let rest = line
        .strip_prefix(b"HTTP/1.1 ")
        .or_else(|| line.strip_prefix(b"HTTP/1.0 "))?;
    std::str::from_utf8(rest.get(..3)?).ok()?.parse().ok()
}

/// Raw HTTP bytes to the callback router over a real socket, on one
/// process-wide server: see [`Served::run`].
#[cfg(feature = "http")]
pub fn callback_router(data: &[u8]) {
    static SERVED: OnceLock<Served> = OnceLock::new();
    SERVED.get_or_init(Served::start).run(data);
}
