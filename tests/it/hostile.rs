//! Hostile input at the HTTP boundary: raw requests over a real socket to the
//! real callback router (oversized and chunked bodies, invalid UTF-8 in the
//! body, the path and headers, deeply nested JSON, huge and repeated
//! headers, hostile partner names, SQL metacharacters and NUL in callback
//! fields), and at the engine's enqueue. Each request gets a clear HTTP
//! status, and afterwards the work written before it is intact: another
//! store instance reads it back unchanged, and `PRAGMA integrity_check` is
//! `ok`. The store-level cases run on every store in
//! `conformance::hostile`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use async_trait::async_trait;
use liaison::callback::{Disposition, JsonMatcher, StandardWebhooks};
use liaison::engine::{Liaison, Partner};
use liaison::store::{
    AttemptReport, CallbackFilter, ClaimRequest, OutboxStore, SqliteStore, StateChange,
};
use liaison::{
    AttemptContext, AttemptOutcome, NewSubmission, PartnerAdapter, PartnerError, Submission,
    SubmissionState, SubmitOutcome,
};
use serde_json::json;
use tempfile::TempDir;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::conformance::hostile::{SQL_META, integrity_check};

const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
/// The callback size cap of the partner under test.
const CAP: usize = 256 * 1024;

/// Never called: the engine is not started, work is driven by hand.
#[derive(Debug)]
struct Idle;

#[async_trait]
impl PartnerAdapter for Idle {
    async fn submit(
        &self,
        _: &AttemptContext,
        _: &Submission,
    ) -> Result<SubmitOutcome, PartnerError> {
        Err(PartnerError::transient("not under test"))
    }
}

fn signer() -> StandardWebhooks {
    StandardWebhooks::new(SECRET).unwrap()
}

/// A host with partner "lab" (Standard Webhooks, JSON callbacks, a 256 KiB
/// cap) on a SQLite file, the callback router on a real port, one
/// submission awaiting its result under reference `R-1` and three queued.
struct Target {
    _dir: TempDir,
    path: PathBuf,
    store: SqliteStore,
    liaison: Liaison,
    addr: SocketAddr,
    awaiting: Submission,
    queued: Vec<Submission>,
}

impl Target {
    async fn start() -> Target {
        Target::start_with(liaison::engine::EngineSettings::default()).await
    }

    async fn start_with(settings: liaison::engine::EngineSettings) -> Target {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("outbox.db");
        let store = SqliteStore::open(&path).unwrap();
        let partner = Partner::new("lab", Idle)
            .callbacks(JsonMatcher::builder(signer()).build().unwrap())
            .max_callback_bytes(CAP);
        let liaison = Liaison::builder(store.clone())
            .settings(settings)
            .partner(partner)
            .build()
            .unwrap();
        liaison
            .enqueue(claim("awaiting"))
            .await
            .expect("enqueue through the engine");
        let lease = store
            .claim(ClaimRequest::new("lab", 1, Duration::from_secs(60)).at(store.now()))
            .await
            .unwrap()
            .remove(0);
        let awaiting = store
            .complete(
                &lease,
                AttemptReport::new(AttemptOutcome::Accepted).http_status(202),
                StateChange::to(SubmissionState::AwaitingResult).external_ref("R-1"),
            )
            .await
            .unwrap();
        let mut queued = Vec::new();
        for i in 0..3 {
            queued.push(
                liaison
                    .enqueue(claim(&format!("q{i}")))
                    .await
                    .unwrap()
                    .submission,
            );
        }
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let app = liaison::http::callback_router(liaison.clone());
        tokio::spawn(async move { axum::serve(listener, app).await });
        Target {
            _dir: dir,
            path,
            store,
            liaison,
            addr,
            awaiting,
            queued,
        }
    }

    /// Send raw bytes; the status the server answered (0 if none).
    async fn send(&self, request: Vec<u8>) -> u16 {
        send_raw(self.addr, request).await
    }

    /// POST `body` to `path` with `headers`, signed (or not) for "lab".
    async fn post(&self, path: &str, headers: &[(&str, &[u8])], body: &[u8]) -> u16 {
        self.send(request(path, headers, body)).await
    }

    /// POST a body signed for "lab" with valid Standard Webhooks headers.
    async fn post_signed(&self, msg_id: &str, body: &[u8]) -> u16 {
        let (ts, sig) = sign(msg_id, body);
        self.post(
            "/callbacks/lab",
            &[
                ("webhook-id", msg_id.as_bytes()),
                ("webhook-timestamp", ts.as_bytes()),
                ("webhook-signature", sig.as_bytes()),
            ],
            body,
        )
        .await
    }

    async fn callbacks(&self) -> Vec<liaison::callback::StoredCallback> {
        let mut all = self
            .store
            .list_callbacks(&CallbackFilter::default().limit(10_000))
            .await
            .unwrap();
        all.reverse();
        all
    }

    async fn last_callback(&self) -> liaison::callback::StoredCallback {
        self.callbacks().await.pop().expect("a stored callback")
    }

    /// The work written before is unchanged (read by a second store
    /// instance on the same file), the file passes its integrity check, and
    /// the router still answers a good callback.
    async fn still_intact(&self) {
        let other = SqliteStore::open(&self.path).expect("the store still opens");
        for s in &self.queued {
            assert_eq!(&other.get(s.id).await.unwrap(), s);
        }
        let awaiting = other.get(self.awaiting.id).await.unwrap();
        assert_eq!(awaiting.external_ref.as_deref(), Some("R-1"));
        assert_eq!(integrity_check(&self.path), "ok");
    }
}

fn claim(key: &str) -> NewSubmission {
    NewSubmission::new("lab", "claim.submit", json!({ "claim": key })).idempotency_key(key)
}

fn sign(msg_id: &str, body: &[u8]) -> (String, String) {
    let ts = chrono::Utc::now().timestamp();
    (ts.to_string(), signer().sign(msg_id, ts, body))
}

/// An HTTP/1.1 request with exactly these headers (plus Host, Connection
/// and, unless given, Content-Length).
fn request(path: &str, headers: &[(&str, &[u8])], body: &[u8]) -> Vec<u8> {
    let mut out =
        format!("POST {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n").into_bytes();
    if !headers.iter().any(|(n, _)| {
        n.eq_ignore_ascii_case("content-length") || n.eq_ignore_ascii_case("transfer-encoding")
    }) {
        out.extend_from_slice(format!("Content-Length: {}\r\n", body.len()).as_bytes());
    }
    for (name, value) in headers {
        out.extend_from_slice(name.as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value);
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(body);
    out
}

/// Write the request while reading the answer (the server may answer
/// before it has read a refused body); return the status code.
async fn send_raw(addr: SocketAddr, request: Vec<u8>) -> u16 {
    let stream = TcpStream::connect(addr).await.unwrap();
    let (mut reader, mut writer) = stream.into_split();
    let write = tokio::spawn(async move {
        let _ = writer.write_all(&request).await;
        let _ = writer.flush().await;
        writer
    });
    let mut answer = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        match tokio::time::timeout(Duration::from_secs(30), reader.read(&mut chunk)).await {
            Ok(Ok(0)) | Ok(Err(_)) => break,
            Ok(Ok(n)) => {
                answer.extend_from_slice(&chunk[..n]);
                if answer.len() >= 12 && answer.windows(4).any(|w| w == b"\r\n\r\n") {
                    break;
                }
            }
            Err(_) => panic!("no answer within 30 s"),
        }
    }
    write.abort();
    let text = String::from_utf8_lossy(&answer);
    text.strip_prefix("HTTP/1.1 ")
        .and_then(|rest| rest.get(..3))
        .and_then(|code| code.parse().ok())
        .unwrap_or(0)
}

/// The whole answer to `request` (read until the server closes), without
/// its `date` header.
async fn answer_raw(addr: SocketAddr, request: Vec<u8>) -> Vec<u8> {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream.write_all(&request).await.unwrap();
    let mut answer = Vec::new();
    tokio::time::timeout(Duration::from_secs(30), stream.read_to_end(&mut answer))
        .await
        .expect("an answer within 30 s")
        .unwrap();
    let text = String::from_utf8(answer).expect("a UTF-8 answer");
    text.split_inclusive("\r\n")
        .filter(|line| !line.to_ascii_lowercase().starts_with("date:"))
        .collect::<String>()
        .into_bytes()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn partner_names_with_control_characters_are_refused_and_not_stored() {
    let t = Target::start().await;
    let before = t.callbacks().await.len();
    for path in [
        "/callbacks/%1B]0;x%07",
        "/callbacks/a%0D%0Ab",
        "/callbacks/lab%0D%0A2026-01-01T00:00:00Z%20INFO%20forged",
        "/callbacks/%1B%5B31m",
    ] {
        let body = br#"{"reference":"R-1","status":"succeeded"}"#;
        assert_eq!(t.post(path, &[], body).await, 401, "{path}");
        // Above the default cap too: refused, not recorded as too large.
        let big = vec![b'x'; 2 * 1024 * 1024];
        assert_eq!(t.post(path, &[], &big).await, 401, "{path} (large)");
    }
    let stored = t.callbacks().await;
    assert_eq!(stored.len(), before, "nothing is stored: {stored:#?}");
    // The engine refuses them too, for hosts with their own HTTP stack.
    let headers = axum::http::HeaderMap::new();
    for name in ["\x1b]0;x\x07", "a\r\nb", ""] {
        let refused = t.liaison.ingest_callback(name, &headers, b"{}").await;
        assert!(
            refused.as_ref().is_err_and(|e| e.is_invalid_input()),
            "{name:?}: {refused:?}"
        );
        let refused = t.liaison.refuse_oversized(name, &headers, 1 << 30).await;
        assert!(refused.is_err(), "{name:?}: {refused:?}");
    }
    assert_eq!(t.callbacks().await.len(), before);
    t.still_intact().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_and_configured_partners_are_answered_alike() {
    let t = Target::start().await;
    let body = br#"{"reference":"R-1","status":"succeeded"}"#;
    let (ts, sig) = sign("msg_probe", body);
    let bad = "v1,AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=";
    let headers: [(&str, &[u8]); 3] = [
        ("webhook-id", b"msg_probe"),
        ("webhook-timestamp", ts.as_bytes()),
        ("webhook-signature", bad.as_bytes()),
    ];
    // A configured partner with a bad signature, an unknown partner (even
    // with a valid signature of the configured one's) and a name no partner
    // can have.
    let configured = answer_raw(t.addr, request("/callbacks/lab", &headers, body)).await;
    let good: [(&str, &[u8]); 3] = [
        ("webhook-id", b"msg_probe"),
        ("webhook-timestamp", ts.as_bytes()),
        ("webhook-signature", sig.as_bytes()),
    ];
    let unknown = answer_raw(t.addr, request("/callbacks/nobody", &good, body)).await;
    let invalid = answer_raw(t.addr, request("/callbacks/%1B]0;x%07", &good, body)).await;
    let text = String::from_utf8_lossy(&configured).into_owned();
    assert!(text.starts_with("HTTP/1.1 401 "), "{text}");
    assert!(text.ends_with(r#"{"disposition":"rejected"}"#), "{text}");
    assert_eq!(String::from_utf8_lossy(&unknown), text);
    assert_eq!(String::from_utf8_lossy(&invalid), text);
    // What is stored for each is as before: both rejected, with their reasons.
    let stored = t.callbacks().await;
    let reasons: Vec<(&str, Disposition, bool)> = stored
        .iter()
        .map(|c| (c.partner.as_str(), c.disposition, c.error.is_some()))
        .collect();
    assert_eq!(
        reasons,
        [
            ("lab", Disposition::Rejected, true),
            ("nobody", Disposition::Rejected, true)
        ]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_callbacks_get_413_and_their_metadata_is_kept() {
    let t = Target::start().await;
    // A declared size far above the cap is refused before any body is read.
    let status = t
        .post("/callbacks/lab", &[("content-length", b"10737418240")], b"")
        .await;
    assert_eq!(status, 413);
    let stored = t.last_callback().await;
    assert_eq!(stored.disposition, Disposition::TooLarge);
    assert!(stored.body.is_none());
    assert_eq!(stored.size, 10_737_418_240);
    // A chunked body (no declared size) is cut one byte past the cap.
    let body = vec![b'x'; CAP + 4096];
    let mut chunked = Vec::new();
    for part in body.chunks(16 * 1024) {
        chunked.extend_from_slice(format!("{:x}\r\n", part.len()).as_bytes());
        chunked.extend_from_slice(part);
        chunked.extend_from_slice(b"\r\n");
    }
    chunked.extend_from_slice(b"0\r\n\r\n");
    let status = t
        .post(
            "/callbacks/lab",
            &[("transfer-encoding", b"chunked")],
            &chunked,
        )
        .await;
    assert_eq!(status, 413);
    assert_eq!(t.last_callback().await.disposition, Disposition::TooLarge);
    // A signed body one byte over the cap is refused; at the cap it is read
    // (and is malformed: it is not JSON).
    let status = t.post_signed("msg_big", &vec![b' '; CAP + 1]).await;
    assert_eq!(status, 413);
    let status = t.post_signed("msg_cap", &vec![b' '; CAP]).await;
    assert_eq!(status, 400);
    assert_eq!(t.last_callback().await.disposition, Disposition::Malformed);
    // Oversized for an unknown partner too: the default cap applies.
    let status = t
        .post(
            "/callbacks/nobody",
            &[("content-length", b"1099511627776")],
            b"",
        )
        .await;
    assert_eq!(status, 413);
    t.still_intact().await;
}

/// A client that announces a body and disconnects half-way is recorded as
/// `incomplete` with what it sent, not as a body above the cap; nothing of
/// the partial body is kept.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_disconnects_mid_body_is_recorded_as_incomplete() {
    let t = Target::start().await;
    for (path, name) in [("/callbacks/lab", "lab"), ("/callbacks/nobody", "nobody")] {
        let mut stream = TcpStream::connect(t.addr).await.unwrap();
        let head = format!(
            "POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n\
             Content-Length: 1000\r\n\r\n"
        );
        stream.write_all(head.as_bytes()).await.unwrap();
        stream.write_all(&[b'{'; 100]).await.unwrap();
        stream.flush().await.unwrap();
        // Give the server the 100 bytes, then go away.
        tokio::time::sleep(Duration::from_millis(100)).await;
        drop(stream);
        // The server records it once it sees the connection end.
        let mut found = None;
        for _ in 0..400 {
            found = t.callbacks().await.pop().filter(|c| c.partner == name);
            if found.is_some() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        let stored = found.unwrap_or_else(|| panic!("nothing was recorded for {path}"));
        assert_eq!(
            stored.disposition,
            Disposition::Incomplete,
            "{path}: {stored:?}"
        );
        assert_eq!(stored.size, 100, "{path}");
        assert!(stored.body.is_none(), "{path}");
        let error = stored.error.clone().unwrap_or_default();
        assert!(error.contains("100 of the 1000"), "{path}: {error}");
    }
    t.still_intact().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_utf8_and_deeply_nested_bodies_are_malformed_not_a_crash() {
    let t = Target::start().await;
    let bodies: Vec<(&str, Vec<u8>)> = vec![
        (
            "utf8",
            b"{\"reference\":\"R-1\",\"status\":\"succ\xff\xfeeded\"}".to_vec(),
        ),
        (
            "bom",
            b"\xef\xbb\xbf{\"reference\":\"R-1\",\"status\":\"succeeded\"}".to_vec(),
        ),
        ("arrays", "[".repeat(200_000).into_bytes()),
        ("objects", "{\"a\":".repeat(50_000).into_bytes()),
        (
            "nested-inside",
            format!(
                "{{\"reference\":\"R-1\",\"status\":\"succeeded\",\"x\":{}1{}}}",
                "[".repeat(10_000),
                "]".repeat(10_000)
            )
            .into_bytes(),
        ),
        (
            "nul",
            b"{\"reference\":\"R-1\",\"status\":\"succeeded\",\"event_id\":\"a\\u0000b\"}".to_vec(),
        ),
        (
            "raw-nul",
            b"{\"reference\":\"R-1\0\",\"status\":\"succeeded\"}".to_vec(),
        ),
        (
            "lone-surrogate",
            b"{\"reference\":\"\\ud800\",\"status\":\"succeeded\"}".to_vec(),
        ),
        ("truncated", b"{\"reference\":\"R-1\",\"stat".to_vec()),
        ("empty", Vec::new()),
    ];
    for (name, body) in &bodies {
        let status = t.post_signed(&format!("msg_{name}"), body).await;
        assert_eq!(status, 400, "{name}");
        let stored = t.last_callback().await;
        assert_eq!(stored.disposition, Disposition::Malformed, "{name}");
        assert_eq!(
            stored.body.as_deref(),
            Some(body.as_slice()),
            "{name}: raw body kept"
        );
    }
    assert_eq!(
        t.store.get(t.awaiting.id).await.unwrap().state,
        SubmissionState::AwaitingResult,
        "nothing was applied"
    );
    // A malformed callback reprocessed is still malformed, not a crash.
    let first = t.callbacks().await.remove(0);
    let again = t.liaison.reprocess_callback(first.id).await.unwrap();
    assert_eq!(again.disposition, Disposition::Malformed);
    // And the good one still goes through afterwards.
    let ok = br#"{"reference":"R-1","status":"succeeded","event_id":"e-ok"}"#;
    assert_eq!(t.post_signed("msg_ok", ok).await, 200);
    assert_eq!(
        t.store.get(t.awaiting.id).await.unwrap().state,
        SubmissionState::Succeeded
    );
    t.still_intact().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_partner_names_in_the_path_get_401_or_400() {
    let t = Target::start().await;
    let long = "p".repeat(10_000);
    for (path, expected) in [
        ("/callbacks/nobody", 401),
        (
            "/callbacks/%27%3B%20DROP%20TABLE%20liaison_callbacks%3B--",
            401,
        ),
        ("/callbacks/%25", 401),
        ("/callbacks/_", 401),
        ("/callbacks/%00", 401),
        ("/callbacks/lab%00", 401),
        ("/callbacks/%C3%BCnic%C3%B6de", 401),
        (&format!("/callbacks/{long}"), 401),
        // Not UTF-8 once decoded: the router refuses it before liaison sees it.
        ("/callbacks/%FF%FE", 400),
        // No such route.
        ("/callbacks/lab/extra", 404),
    ] {
        let body = br#"{"reference":"R-1","status":"succeeded"}"#;
        let (ts, sig) = sign("msg_path", body);
        let status = t
            .post(
                path,
                &[
                    ("webhook-id", b"msg_path"),
                    ("webhook-timestamp", ts.as_bytes()),
                    ("webhook-signature", sig.as_bytes()),
                ],
                body,
            )
            .await;
        assert_eq!(status, expected, "{}", &path[..path.len().min(60)]);
    }
    // Raw non-ASCII bytes in the request line are refused by the HTTP layer.
    let mut raw = b"POST /callbacks/\xff\xfe HTTP/1.1\r\nHost: t\r\nConnection: close\r\nContent-Length: 2\r\n\r\n{}".to_vec();
    assert_eq!(t.send(std::mem::take(&mut raw)).await, 400);
    // Unknown partners with valid names are stored, rejected, never
    // applied; names outside the partner alphabet are not stored at all.
    let stored = t.callbacks().await;
    assert!(
        stored
            .iter()
            .all(|c| c.disposition == Disposition::Rejected)
    );
    let mut names: Vec<&str> = stored.iter().map(|c| c.partner.as_str()).collect();
    names.sort_unstable();
    assert_eq!(names, ["_", "nobody"]);
    assert_eq!(
        t.store.get(t.awaiting.id).await.unwrap().state,
        SubmissionState::AwaitingResult
    );
    t.still_intact().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn huge_repeated_and_non_utf8_headers_get_clear_statuses() {
    let t = Target::start().await;
    let body = br#"{"reference":"R-9","status":"succeeded","event_id":"h"}"#;
    let (ts, good) = sign("msg_h", body);
    let post = |headers: Vec<(&'static str, Vec<u8>)>| {
        let t = &t;
        async move {
            let borrowed: Vec<(&str, &[u8])> =
                headers.iter().map(|(n, v)| (*n, v.as_slice())).collect();
            t.post("/callbacks/lab", &borrowed, body).await
        }
    };
    let id = || ("webhook-id", b"msg_h".to_vec());
    let stamp = || ("webhook-timestamp", ts.clone().into_bytes());
    let bad = format!("v1,{}", "A".repeat(43) + "=");
    // Two signature headers: only the first is read; a bad first one is refused.
    let status = post(vec![
        id(),
        stamp(),
        ("webhook-signature", bad.clone().into_bytes()),
        ("webhook-signature", good.clone().into_bytes()),
    ])
    .await;
    assert_eq!(status, 401);
    // Two timestamps, the first stale: refused.
    let status = post(vec![
        id(),
        ("webhook-timestamp", b"1".to_vec()),
        stamp(),
        ("webhook-signature", good.clone().into_bytes()),
    ])
    .await;
    assert_eq!(status, 401);
    // A signature header above the verifier's limit, and one of many entries.
    let huge = format!("{good} {}", "v1,AAAA ".repeat(4096));
    let status = post(vec![
        id(),
        stamp(),
        ("webhook-signature", huge.into_bytes()),
    ])
    .await;
    assert_eq!(status, 401);
    let many = format!("{} {good}", "v1,AAAA ".repeat(100));
    let status = post(vec![
        id(),
        stamp(),
        ("webhook-signature", many.into_bytes()),
    ])
    .await;
    assert_eq!(status, 401, "signatures past the 16th are not checked");
    // Bytes that are not visible ASCII in a signature header: refused.
    let mut opaque = good.clone().into_bytes();
    opaque.extend_from_slice(b"\xff\xfe");
    let status = post(vec![id(), stamp(), ("webhook-signature", opaque)]).await;
    assert_eq!(status, 401);
    // The same in a header no verifier reads: stored lossily, accepted.
    let status = post(vec![
        id(),
        stamp(),
        ("webhook-signature", good.clone().into_bytes()),
        ("x-note", b"caf\xc3\xa9 \xff".to_vec()),
        ("x-sql", SQL_META[0].as_bytes().to_vec()),
    ])
    .await;
    assert_eq!(status, 202, "signed and well formed: unmatched, kept");
    let stored = t.last_callback().await;
    assert_eq!(stored.disposition, Disposition::Unmatched);
    assert!(
        stored
            .headers
            .iter()
            .any(|(n, v)| n == "x-sql" && v == SQL_META[0])
    );
    // Headers bigger or more numerous than the HTTP layer takes: 431.
    let status = post(vec![id(), stamp(), ("x-big", vec![b'a'; 1024 * 1024])]).await;
    assert_eq!(status, 431);
    let mut flood: Vec<(&'static str, Vec<u8>)> = Vec::new();
    let names: Vec<&'static str> = (0..500)
        .map(|i| &*Box::leak(format!("x-h{i}").into_boxed_str()))
        .collect();
    for name in names {
        flood.push((name, b"v".to_vec()));
    }
    assert_eq!(post(flood).await, 431);
    // A lone CR or NUL inside a header value is a broken request.
    let status = post(vec![id(), stamp(), ("x-bad", b"a\0b".to_vec())]).await;
    assert_eq!(status, 400);
    t.still_intact().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sql_metacharacters_in_callback_fields_match_nothing_they_should_not() {
    let t = Target::start().await;
    // A reference that is a LIKE wildcard matches no submission.
    for (i, meta) in SQL_META.iter().enumerate() {
        let body =
            json!({ "reference": meta, "status": "succeeded", "event_id": meta }).to_string();
        let status = t
            .post_signed(&format!("msg_meta{i}"), body.as_bytes())
            .await;
        assert_eq!(status, 202, "{meta:?}: kept as unmatched");
    }
    assert_eq!(
        t.store.get(t.awaiting.id).await.unwrap().state,
        SubmissionState::AwaitingResult
    );
    // Control characters in identifiers are malformed.
    for bad in ["R-1\u{0}", "R-1\n", "\u{1b}[2J"] {
        let body = json!({ "reference": bad, "status": "succeeded" }).to_string();
        assert_eq!(t.post_signed("msg_ctl", body.as_bytes()).await, 400);
    }
    // An event id over 255 bytes is malformed too.
    let body = json!({ "reference": "R-1", "status": "succeeded", "event_id": "e".repeat(256) })
        .to_string();
    assert_eq!(t.post_signed("msg_long", body.as_bytes()).await, 400);
    // Numbers out of range as identifiers and statuses are read as text.
    let body = br#"{"reference": 1e400, "status": "succeeded"}"#;
    assert_eq!(
        t.post_signed("msg_num", body).await,
        400,
        "not a finite number"
    );
    let body = br#"{"reference": 18446744073709551616, "status": "succeeded"}"#;
    assert_eq!(
        t.post_signed("msg_u64", body).await,
        202,
        "a float reference, unmatched"
    );
    // The real reference, with a hostile event id, applies once.
    // (The event ids above were the metacharacters themselves: a repeat of
    // one of them would be recognised as the same event.)
    let event = "evt'); DELETE FROM liaison_callbacks;--";
    let body = json!({ "reference": "R-1", "status": "succeeded", "event_id": event }).to_string();
    assert_eq!(t.post_signed("msg_real", body.as_bytes()).await, 200);
    assert_eq!(t.post_signed("msg_real2", body.as_bytes()).await, 200);
    let dispositions: Vec<_> = t.callbacks().await.iter().map(|c| c.disposition).collect();
    assert_eq!(
        &dispositions[dispositions.len() - 2..],
        [Disposition::Applied, Disposition::Duplicate]
    );
    assert_eq!(
        t.store.get(t.awaiting.id).await.unwrap().state,
        SubmissionState::Succeeded
    );
    t.still_intact().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_engine_refuses_unknown_and_hostile_partner_names() {
    let t = Target::start().await;
    for partner in ["nobody", "lab2", "LAB", "%", "_", SQL_META[0], ""] {
        let err = t
            .liaison
            .enqueue(NewSubmission::new(partner, "k", json!({})))
            .await
            .unwrap_err();
        assert!(err.is_invalid_input(), "{partner:?}: {err:?}");
        let err = t
            .liaison
            .enqueue_batch(vec![
                claim("b1"),
                NewSubmission::new(partner, "k", json!({})),
            ])
            .await
            .unwrap_err();
        assert!(err.is_invalid_input(), "{partner:?}: {err:?}");
    }
    let err = t
        .liaison
        .pause(
            SQL_META[0],
            chrono::Utc::now() + chrono::Duration::hours(1),
            liaison::Actor::person("ops"),
            "maintenance",
        )
        .await
        .unwrap_err();
    assert!(err.is_invalid_input(), "{err:?}");
    t.still_intact().await;
}

/// Accepts every submission under a reference derived from its key.
#[derive(Debug)]
struct Accepts;

#[async_trait]
impl PartnerAdapter for Accepts {
    async fn submit(
        &self,
        ctx: &AttemptContext,
        _: &Submission,
    ) -> Result<SubmitOutcome, PartnerError> {
        Ok(SubmitOutcome::AwaitResult {
            external_ref: Some(format!("ref-{}", ctx.idempotency_key)),
        })
    }
}

/// "Keep for ever" configured as `Duration::MAX` (attempt timeout, result
/// timeout, unmatched TTL): work and callbacks go through, no panic.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn durations_configured_at_their_maximum_do_not_panic() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(dir.path().join("outbox.db")).unwrap();
    let partner = Partner::new("lab", Accepts)
        .attempt_timeout(Duration::MAX)
        .result_timeout(Duration::MAX)
        .unmatched_ttl(Duration::MAX)
        .callbacks(
            JsonMatcher::builder(liaison::callback::Unverified)
                .build()
                .unwrap(),
        );
    let liaison = Liaison::builder(store.clone())
        .partner(partner)
        .settings(liaison::engine::EngineSettings::default().payload_retention(Duration::MAX))
        .build()
        .unwrap();
    let id = liaison.enqueue(claim("k1")).await.unwrap().submission.id;
    liaison.run_until_idle().await.unwrap();
    let s = store.get(id).await.unwrap();
    assert_eq!(s.state, SubmissionState::AwaitingResult);
    assert!(s.result_deadline.unwrap() > chrono::Utc::now() + chrono::Duration::days(365));
    let unmatched = liaison
        .ingest_callback(
            "lab",
            &Default::default(),
            br#"{"reference":"ref-other","status":"succeeded"}"#,
        )
        .await
        .unwrap();
    assert_eq!(unmatched.disposition, Disposition::Unmatched);
    let applied = liaison
        .ingest_callback(
            "lab",
            &Default::default(),
            br#"{"reference":"ref-k1","status":"succeeded"}"#,
        )
        .await
        .unwrap();
    assert_eq!(applied.disposition, Disposition::Applied);
    assert_eq!(
        store.get(id).await.unwrap().state,
        SubmissionState::Succeeded
    );
    let purged = liaison.run_retention().await.unwrap();
    assert_eq!(purged.payloads, 0, "kept for ever");
}

/// The database file and its write-ahead log, in bytes, after a truncating
/// checkpoint: what is stored, not how far the reused log has been written.
fn on_disk(path: &std::path::Path) -> u64 {
    let conn = liaison::rusqlite::Connection::open(path).expect("open for a checkpoint");
    conn.busy_timeout(Duration::from_secs(10)).unwrap();
    conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |row| {
        row.get::<_, i64>(0)
    })
    .expect("checkpoint runs");
    drop(conn);
    let wal = path.with_file_name(format!(
        "{}-wal",
        path.file_name().unwrap().to_string_lossy()
    ));
    [path.to_path_buf(), wal]
        .iter()
        .map(|p| std::fs::metadata(p).map_or(0, |m| m.len()))
        .sum()
}

/// Anyone can post to `/callbacks/{name}`: to names that are no configured
/// partner, 1 MiB bodies (the default cap) must not fill the database. Only
/// their metadata is stored, and they are counted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn callbacks_to_unknown_names_do_not_fill_the_database() {
    let t = Target::start().await;
    let before = on_disk(&t.path);
    let body = vec![b'x'; 1024 * 1024];
    for i in 0..200 {
        let name = format!("probe-{i}-{}", uuid::Uuid::new_v4().simple());
        let status = t
            .post(
                &format!("/callbacks/{name}"),
                &[
                    ("content-type", b"application/json"),
                    ("user-agent", b"flood/1.0"),
                    ("x-padding", &[b'p'; 4096]),
                ],
                &body,
            )
            .await;
        assert_eq!(status, 401, "{name}: answered as before");
    }
    let after = on_disk(&t.path);
    let grown = after.saturating_sub(before);
    eprintln!("database and WAL: {before} -> {after} bytes (+{grown})");
    assert!(
        grown < 1024 * 1024,
        "200 callbacks of 1 MiB to unknown names grew the database by {grown} bytes"
    );
    // Each is stored as metadata: its size, no body, allowlisted headers only.
    let stored: Vec<_> = t
        .callbacks()
        .await
        .into_iter()
        .filter(|c| c.partner.starts_with("probe-"))
        .collect();
    assert_eq!(stored.len(), 200);
    for c in &stored {
        assert_eq!(c.disposition, Disposition::Rejected);
        assert_eq!(c.size, 1024 * 1024);
        assert!(c.body.is_none(), "{}: body kept", c.partner);
        let names: Vec<&str> = c.headers.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, ["content-type", "user-agent"], "{}", c.partner);
    }
    let text = t
        .liaison
        .render_metrics(Duration::from_secs(3600))
        .await
        .unwrap();
    let counted = text
        .lines()
        .find(|l| l.starts_with("liaison_callbacks_unknown_total "))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse::<f64>().ok());
    assert_eq!(counted, Some(200.0), "{text}");
    t.still_intact().await;
}

/// A configured partner's name is public: callbacks with bad signatures
/// keep their bodies up to the hourly cap, then metadata only; all are
/// answered 401 and the dropped ones are counted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unverified_bodies_past_the_hourly_cap_are_kept_as_metadata_only() {
    let settings = liaison::engine::EngineSettings::default().unverified_bodies_per_hour(Some(5));
    let t = Target::start_with(settings).await;
    let body = br#"{"reference":"R-1","status":"succeeded"}"#;
    let bad = "v1,AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=";
    for i in 0..20 {
        let (ts, _) = sign(&format!("msg_{i}"), body);
        let status = t
            .post(
                "/callbacks/lab",
                &[
                    ("content-type", b"application/json"),
                    ("user-agent", b"forger/1.0"),
                    ("webhook-id", format!("msg_{i}").as_bytes()),
                    ("webhook-timestamp", ts.as_bytes()),
                    ("webhook-signature", bad.as_bytes()),
                ],
                body,
            )
            .await;
        assert_eq!(status, 401, "callback {i}");
    }
    let stored = t.callbacks().await;
    assert_eq!(stored.len(), 20);
    assert!(
        stored
            .iter()
            .all(|c| c.disposition == Disposition::Rejected)
    );
    let (kept, dropped): (Vec<_>, Vec<_>) = stored.iter().partition(|c| c.body.is_some());
    assert_eq!((kept.len(), dropped.len()), (5, 15));
    for c in &kept {
        assert!(c.headers.iter().any(|(n, _)| n == "webhook-signature"));
    }
    for c in &dropped {
        let names: Vec<&str> = c.headers.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, ["content-type", "user-agent"], "{}", c.id);
        assert_eq!(c.size, body.len() as u64);
    }
    let text = t
        .liaison
        .render_metrics(Duration::from_secs(3600))
        .await
        .unwrap();
    let counted = text
        .lines()
        .find(|l| l.starts_with("liaison_callbacks_unverified_dropped_total{"))
        .map(|l| {
            (
                l.contains(r#"partner="lab""#),
                l.rsplit(' ').next().unwrap().to_owned(),
            )
        });
    assert_eq!(counted, Some((true, "15".to_owned())), "{text}");
    // A good callback is still applied.
    assert_eq!(t.post_signed("msg_good", body).await, 200);
    t.still_intact().await;
}

/// The engine's retention deletes rows of callbacks to unknown names after
/// `payload_retention`, and rows settled for good after
/// `callback_row_retention`; a configured partner's are not unknown.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_deletes_callback_rows_of_unknown_names_then_settled_ones() {
    use liaison::engine::EngineSettings;
    let settings = EngineSettings::default()
        .payload_retention(Duration::ZERO)
        .rejected_body_retention(Duration::ZERO)
        .callback_row_retention(Duration::MAX);
    let t = Target::start_with(settings).await;
    let headers = axum::http::HeaderMap::new();
    let body = br#"{"reference":"R-1","status":"succeeded"}"#;
    let forged = t
        .liaison
        .ingest_callback("lab", &headers, body)
        .await
        .unwrap();
    let probe = t
        .liaison
        .ingest_callback("nobody", &headers, body)
        .await
        .unwrap();
    assert_eq!((forged.http_status, probe.http_status), (401, 401));
    tokio::time::sleep(Duration::from_millis(5)).await;

    let report = t.liaison.run_retention().await.unwrap();
    assert_eq!(
        (report.unknown_callbacks, report.settled_callbacks),
        (1, 0),
        "{report:?}"
    );
    assert!(t.store.callback(probe.callback_id).await.is_err());
    let kept = t.store.callback(forged.callback_id).await.unwrap();
    assert!(
        kept.body.is_none(),
        "its body went after rejected_body_retention"
    );

    let later = Liaison::builder(t.store.clone())
        .settings(EngineSettings::default().callback_row_retention(Duration::ZERO))
        .build()
        .unwrap();
    let report = later.run_retention().await.unwrap();
    assert_eq!(report.settled_callbacks, 1, "{report:?}");
    assert!(t.store.callback(forged.callback_id).await.is_err());
    t.still_intact().await;
}
