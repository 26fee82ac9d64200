//! Tests of the HTTP JSON adapter against a plain socket server.
use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::mpsc;

use serde_json::json;

use super::*;
use crate::error::ErrorKind;
use crate::fingerprint::Fingerprint;
use crate::model::submission::{SubmissionId, SubmissionState};

/// What the test server received.
#[derive(Debug)]
struct Received {
    request_line: String,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Received {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// A raw HTTP/1.1 response; `None` length means close-delimited.
fn response(status: &str, headers: &[(&str, &str)], body: &[u8], length: bool) -> Vec<u8> {
    let mut out = format!("HTTP/1.1 {status}\r\nconnection: close\r\n");
    for (name, value) in headers {
        out.push_str(&format!("{name}: {value}\r\n"));
    }
    if length {
        out.push_str(&format!("content-length: {}\r\n", body.len()));
    }
    out.push_str("\r\n");
    let mut out = out.into_bytes();
    out.extend_from_slice(body);
    out
}

fn json_response(status: &str, body: Value) -> Vec<u8> {
    let body = body.to_string();
    response(
        status,
        &[("content-type", "application/json")],
        body.as_bytes(),
        true,
    )
}

/// Serve one connection on 127.0.0.1 with a canned answer; the base URL
/// and what arrived.
fn serve_once(answer: Vec<u8>) -> (String, mpsc::Receiver<Received>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let (mut stream, _) = listener.accept().unwrap();
        if let Some(received) = read_request(&mut stream) {
            let _ = tx.send(received);
        }
        // The client may hang up before reading everything: ignore errors.
        let _ = stream.write_all(&answer);
        let _ = stream.shutdown(std::net::Shutdown::Write);
    });
    (base, rx)
}

fn read_request(stream: &mut TcpStream) -> Option<Received> {
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .ok()?;
    let mut data = Vec::new();
    let mut buf = [0u8; 4096];
    let head_end = loop {
        if let Some(at) = data.windows(4).position(|w| w == b"\r\n\r\n") {
            break at;
        }
        let n = stream.read(&mut buf).ok()?;
        if n == 0 {
            return None;
        }
        data.extend_from_slice(&buf[..n]);
    };
    let head = String::from_utf8(data[..head_end].to_vec()).ok()?;
    let mut lines = head.split("\r\n");
    let request_line = lines.next()?.to_owned();
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    let length: usize = headers
        .iter()
        .find(|(n, _)| n == "content-length")
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or(0);
    let mut body = data[head_end + 4..].to_vec();
    while body.len() < length {
        let n = stream.read(&mut buf).ok()?;
        if n == 0 {
            break;
        }
        body.extend_from_slice(&buf[..n]);
    }
    Some(Received {
        request_line,
        headers,
        body,
    })
}

fn received(rx: &mpsc::Receiver<Received>) -> Received {
    rx.recv_timeout(Duration::from_secs(30))
        .expect("the server got a request")
}

fn submission(payload: Option<Value>) -> Submission {
    let now = Utc::now();
    Submission {
        id: SubmissionId::new(),
        partner: "clearinghouse".into(),
        kind: "claim.submit".into(),
        fingerprint: Fingerprint::of(payload.as_ref().unwrap_or(&Value::Null)),
        payload,
        idempotency_key: "C-7/é".into(),
        ordering_key: None,
        correlation: BTreeMap::new(),
        external_ref: None,
        business_value: None,
        currency: None,
        business_deadline: None,
        priority: 0,
        state: SubmissionState::InFlight,
        attempts: 3,
        due_at: now,
        not_before: None,
        lease_expires_at: None,
        result_deadline: None,
        created_at: now,
        updated_at: now,
        terminal_at: None,
        last_error: None,
        replays: 0,
        result: None,
        attempts_before_cycle: 0,
        cycle_started_at: now,
    }
}

fn context(s: &Submission) -> AttemptContext {
    AttemptContext {
        submission_id: s.id,
        partner: s.partner.clone(),
        idempotency_key: s.idempotency_key.clone(),
        attempt: s.attempts,
        deadline: Utc::now() + chrono::Duration::seconds(30),
    }
}

fn mapping() -> ResultMapping {
    ResultMapping::new(["succeeded", "completed"], ["failed", "rejected"]).unwrap()
}

/// Submit one claim to a server giving `answer`.
async fn submit_to(
    answer: Vec<u8>,
    configure: impl FnOnce(HttpJsonAdapter) -> HttpJsonAdapter,
) -> (
    Result<SubmitOutcome, PartnerError>,
    mpsc::Receiver<Received>,
) {
    let (base, rx) = serve_once(answer);
    let adapter = configure(HttpJsonAdapter::new(&format!("{base}/claims")).unwrap());
    let s = submission(Some(json!({"claim": "C-7", "amount": 12500})));
    (adapter.submit(&context(&s), &s).await, rx)
}

fn plain(adapter: HttpJsonAdapter) -> HttpJsonAdapter {
    adapter
}

fn with_status(adapter: HttpJsonAdapter) -> HttpJsonAdapter {
    adapter.status_pointer("/status", mapping()).unwrap()
}

fn _object_safe(adapter: HttpJsonAdapter) -> Arc<dyn PartnerAdapter> {
    Arc::new(adapter)
}

#[tokio::test]
async fn sends_payload_key_and_liaison_headers_exactly() {
    let (base, rx) = serve_once(json_response("202 Accepted", json!({"reference": "CH-1"})));
    let adapter = HttpJsonAdapter::new(&format!("{base}/v2/claims?account=7"))
        .unwrap()
        .header("X-Partner-Account", "acme")
        .unwrap();
    let payload = json!({"claim": "C-7", "lines": [1, 2.5, null], "note": "naïve \"q\""});
    let s = submission(Some(payload.clone()));
    let outcome = adapter.submit(&context(&s), &s).await.unwrap();
    assert_eq!(
        outcome,
        SubmitOutcome::AwaitResult {
            external_ref: Some("CH-1".into())
        }
    );
    let got = received(&rx);
    assert_eq!(got.request_line, "POST /v2/claims?account=7 HTTP/1.1");
    assert_eq!(got.header("content-type"), Some("application/json"));
    assert_eq!(got.header("accept"), Some("application/json"));
    assert_eq!(got.header("x-partner-account"), Some("acme"));
    let key = got
        .headers
        .iter()
        .find(|(n, _)| n == "idempotency-key")
        .map(|(_, v)| v.as_bytes());
    assert_eq!(key, Some("C-7/é".as_bytes()));
    assert_eq!(
        got.header("x-liaison-submission-id"),
        Some(s.id.to_string().as_str())
    );
    assert_eq!(got.header("x-liaison-attempt"), Some("3"));
    assert_eq!(got.header("authorization"), None);
    assert_eq!(serde_json::from_slice::<Value>(&got.body).unwrap(), payload);
}

#[tokio::test]
async fn custom_idempotency_header_and_content_type() {
    let (result, rx) = submit_to(response("202 Accepted", &[], b"", true), |a| {
        a.idempotency_header("X-Request-Key")
            .unwrap()
            .header("Content-Type", "application/vnd.partner+json")
            .unwrap()
            .header("X-Request-Key", "overridden by the adapter")
            .unwrap()
    })
    .await;
    assert_eq!(
        result.unwrap(),
        SubmitOutcome::AwaitResult { external_ref: None }
    );
    let got = received(&rx);
    assert_eq!(
        got.header("content-type"),
        Some("application/vnd.partner+json")
    );
    assert!(got.header("idempotency-key").is_none());
    let keys: Vec<_> = got
        .headers
        .iter()
        .filter(|(n, _)| n == "x-request-key")
        .collect();
    assert_eq!(keys.len(), 1);
    assert_eq!(keys[0].1.as_bytes(), "C-7/é".as_bytes());
}

#[tokio::test]
async fn accepted_with_reference() {
    let (result, _) = submit_to(
        json_response("202 Accepted", json!({"reference": "CH-889"})),
        plain,
    )
    .await;
    assert_eq!(
        result.unwrap(),
        SubmitOutcome::AwaitResult {
            external_ref: Some("CH-889".into())
        }
    );
    let (result, _) = submit_to(
        json_response("202 Accepted", json!({"data": {"id": 12345}})),
        |a| a.reference_pointer("/data/id").unwrap(),
    )
    .await;
    assert_eq!(
        result.unwrap(),
        SubmitOutcome::AwaitResult {
            external_ref: Some("12345".into())
        }
    );
}

#[tokio::test]
async fn without_a_status_pointer_a_final_2xx_is_the_result() {
    // 200 and 201 carry the document (whole body, or at the result pointer).
    let (result, _) = submit_to(
        json_response("201 Created", json!({"data": {"id": 12345, "paid": 10}})),
        plain,
    )
    .await;
    assert_eq!(
        result.unwrap(),
        SubmitOutcome::Completed(
            Outcome::succeeded().with_result(json!({"data": {"id": 12345, "paid": 10}}))
        )
    );
    let (result, _) = submit_to(
        json_response("200 OK", json!({"data": {"id": 12345, "paid": 10}})),
        |a| a.result_pointer("/data").unwrap(),
    )
    .await;
    assert_eq!(
        result.unwrap(),
        SubmitOutcome::Completed(
            Outcome::succeeded().with_result(json!({"id": 12345, "paid": 10}))
        )
    );
    // No body, a body that is not JSON, or nothing at the pointer: a
    // success without a document.
    for (answer, configure) in [
        (
            response("204 No Content", &[], b"", false),
            plain as fn(HttpJsonAdapter) -> HttpJsonAdapter,
        ),
        (response("200 OK", &[], b"OK", true), plain),
        (
            json_response("200 OK", json!({"data": null})),
            |a: HttpJsonAdapter| a.result_pointer("/data").unwrap(),
        ),
    ] {
        let (result, _) = submit_to(answer, configure).await;
        assert_eq!(
            result.unwrap(),
            SubmitOutcome::Completed(Outcome::succeeded())
        );
    }
    assert!(
        HttpJsonAdapter::new("http://x.example/")
            .unwrap()
            .result_pointer("data")
            .is_err()
    );
}

#[tokio::test]
async fn empty_or_unusable_answers_await_without_reference() {
    let none = SubmitOutcome::AwaitResult { external_ref: None };
    let answers = [
        response("202 Accepted", &[], b"", true),
        response("202 Accepted", &[], b"queued, thanks", true),
        json_response("202 Accepted", json!({"reference": {"id": 1}})),
        json_response("202 Accepted", json!({"reference": ""})),
        json_response("202 Accepted", json!({"reference": "x".repeat(256)})),
        json_response("202 Accepted", json!({"reference": "CH\n889"})),
        json_response("202 Accepted", json!({"other": "CH-889"})),
    ];
    for answer in answers {
        let (result, _) = submit_to(answer, plain).await;
        assert_eq!(result.unwrap(), none);
    }
    let (result, _) = submit_to(
        json_response("202 Accepted", json!({"reference": "x".repeat(255)})),
        plain,
    )
    .await;
    assert_eq!(
        result.unwrap(),
        SubmitOutcome::AwaitResult {
            external_ref: Some("x".repeat(255))
        }
    );
}

#[tokio::test]
async fn synchronous_success() {
    let (result, _) = submit_to(
        json_response("200 OK", json!({"status": "Completed", "reference": "R"})),
        with_status,
    )
    .await;
    assert_eq!(
        result.unwrap(),
        SubmitOutcome::Completed(
            Outcome::succeeded().with_result(json!({"status": "Completed", "reference": "R"}))
        )
    );
}

#[tokio::test]
async fn synchronous_failure_keeps_the_reason() {
    let (result, _) = submit_to(
        json_response(
            "200 OK",
            json!({"status": "rejected", "reason": "member id unknown"}),
        ),
        with_status,
    )
    .await;
    assert_eq!(
        result.unwrap(),
        SubmitOutcome::Completed(
            Outcome::failed("member id unknown")
                .with_result(json!({"status": "rejected", "reason": "member id unknown"}))
        )
    );
    let (result, _) = submit_to(
        json_response(
            "200 OK",
            json!({"ok": false, "errors": [{"msg": "bad\ndate"}]}),
        ),
        |a| {
            a.status_pointer("/ok", ResultMapping::new(["true"], ["false"]).unwrap())
                .unwrap()
                .reason_pointer("/errors/0/msg")
                .unwrap()
        },
    )
    .await;
    assert_eq!(
        result.unwrap(),
        SubmitOutcome::Completed(
            Outcome::failed("bad date")
                .with_result(json!({"ok": false, "errors": [{"msg": "bad\ndate"}]}))
        )
    );
    let (result, _) = submit_to(
        json_response("200 OK", json!({"status": "failed"})),
        with_status,
    )
    .await;
    assert_eq!(
        result.unwrap(),
        SubmitOutcome::Completed(
            Outcome::failed("the partner reported status \"failed\"")
                .with_result(json!({"status": "failed"}))
        )
    );
}

#[tokio::test]
async fn unknown_status_is_still_processing() {
    let (result, _) = submit_to(
        json_response(
            "202 Accepted",
            json!({"status": "received", "reference": "CH-9"}),
        ),
        with_status,
    )
    .await;
    assert_eq!(
        result.unwrap(),
        SubmitOutcome::AwaitResult {
            external_ref: Some("CH-9".into())
        }
    );
}

#[tokio::test]
async fn error_statuses_are_classified() {
    let (result, _) = submit_to(response("503 Service Unavailable", &[], b"", true), plain).await;
    assert!(matches!(
        result,
        Err(PartnerError::Transient {
            status: Some(503),
            ..
        })
    ));

    let (result, _) = submit_to(
        response("429 Too Many Requests", &[("retry-after", "3")], b"", true),
        plain,
    )
    .await;
    let err = result.unwrap_err();
    assert!(matches!(
        err,
        PartnerError::RateLimited {
            status: Some(429),
            ..
        }
    ));
    assert_eq!(err.retry_after(), Some(Duration::from_secs(3)));

    let (result, _) = submit_to(
        json_response(
            "422 Unprocessable Entity",
            json!({"error": "member id unknown"}),
        ),
        plain,
    )
    .await;
    match result {
        Err(PartnerError::Permanent {
            reason,
            status: Some(422),
        }) => assert!(reason.contains("member id unknown"), "{reason}"),
        other => panic!("{other:?}"),
    }

    let (result, _) = submit_to(
        response("302 Found", &[("location", "/login")], b"", true),
        plain,
    )
    .await;
    assert!(matches!(
        result,
        Err(PartnerError::Permanent {
            status: Some(302),
            ..
        })
    ));
}

#[tokio::test]
async fn connection_refused_is_transient() {
    let port = {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    };
    let adapter = HttpJsonAdapter::new(&format!("http://127.0.0.1:{port}/claims")).unwrap();
    let s = submission(Some(json!({"claim": 1})));
    match adapter.submit(&context(&s), &s).await {
        Err(PartnerError::Transient {
            source: Some(source),
            status: None,
            ..
        }) => {
            let cause = source
                .downcast_ref::<reqwest::Error>()
                .expect("reqwest cause");
            assert!(cause.is_connect(), "{cause:?}");
        }
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn purged_payload_is_permanent_without_a_request() {
    let adapter = HttpJsonAdapter::new("http://127.0.0.1:9/claims").unwrap();
    let s = submission(None);
    match adapter.submit(&context(&s), &s).await {
        Err(PartnerError::Permanent { reason, .. }) => {
            assert_eq!(reason, "payload was purged")
        }
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn bearer_token_is_sent_and_never_shown() {
    let (base, rx) = serve_once(response("202 Accepted", &[], b"", true));
    let adapter = HttpJsonAdapter::new(&format!("{base}/claims"))
        .unwrap()
        .bearer_token("s3cr3t-t0ken")
        .unwrap()
        .header("X-Api-Key", "k3y-value")
        .unwrap();
    let s = submission(Some(json!({})));
    adapter.submit(&context(&s), &s).await.unwrap();
    let got = received(&rx);
    assert_eq!(got.header("authorization"), Some("Bearer s3cr3t-t0ken"));
    assert_eq!(got.header("x-api-key"), Some("k3y-value"));
    assert!(adapter.headers[AUTHORIZATION].is_sensitive());
    assert!(adapter.headers["x-api-key"].is_sensitive());
    let shown = format!("{adapter:?} {adapter:#?}");
    assert!(!shown.contains("s3cr3t"), "{shown}");
    assert!(!shown.contains("k3y-value"), "{shown}");
    assert!(shown.contains("authorization"), "{shown}");
}

#[test]
fn url_secrets_are_redacted_in_debug() {
    let adapter =
        HttpJsonAdapter::new("https://user:pa55@api.example.com:8443/hook?token=secret#frag")
            .unwrap()
            .status_url("https://api.example.com/claims/{ref}?api_key=hidden")
            .unwrap();
    let shown = format!("{adapter:?}");
    for secret in ["secret", "pa55", "user", "hidden", "frag"] {
        assert!(!shown.contains(secret), "{secret} in {shown}");
    }
    assert!(
        shown.contains("\"https://api.example.com:8443\""),
        "{shown}"
    );
}

#[test]
fn debug_shows_urls_as_scheme_host_and_port_only() {
    let adapter = HttpJsonAdapter::new("https://api.example/claims/SECRETPATH?token=T")
        .unwrap()
        .status_url("https://api.example/status/SECRETPATH/{ref}")
        .unwrap();
    for shown in [format!("{adapter:?}"), format!("{adapter:#?}")] {
        for secret in ["SECRETPATH", "token", "=T", "claims", "status/"] {
            assert!(!shown.contains(secret), "{secret} in {shown}");
        }
        assert!(shown.contains("\"https://api.example\""), "{shown}");
    }
}

#[test]
fn invalid_configuration_is_refused() {
    let invalid = |r: Result<HttpJsonAdapter>| {
        let err = r.expect_err("refused");
        assert_eq!(err.kind(), ErrorKind::InvalidInput, "{err}");
        match err {
            Error::InvalidInput { field, .. } => field,
            _ => unreachable!(),
        }
    };
    assert_eq!(invalid(HttpJsonAdapter::new("not a url")), "url");
    assert_eq!(invalid(HttpJsonAdapter::new("ftp://example.com/x")), "url");
    assert_eq!(invalid(HttpJsonAdapter::new("file:///etc/passwd")), "url");
    let base = || HttpJsonAdapter::new("https://example.com/claims").unwrap();
    assert_eq!(invalid(base().header("bad name", "v")), "header name");
    assert_eq!(invalid(base().header("", "v")), "header name");
    assert_eq!(invalid(base().header("x-a", "line\nbreak")), "header value");
    assert_eq!(invalid(base().bearer_token("a\r\nb")), "bearer token");
    assert_eq!(invalid(base().bearer_token(" ")), "bearer token");
    assert_eq!(
        invalid(base().idempotency_header("a b")),
        "idempotency header"
    );
    assert_eq!(
        invalid(base().idempotency_header("Content-Type")),
        "idempotency header"
    );
    assert_eq!(
        invalid(base().reference_pointer("ref")),
        "reference pointer"
    );
    assert_eq!(invalid(base().reason_pointer("reason")), "reason pointer");
    assert_eq!(
        invalid(base().status_pointer("status", mapping())),
        "status pointer"
    );
    assert_eq!(
        invalid(base().status_url("https://example.com/x")),
        "status url"
    );
    assert_eq!(
        invalid(base().status_url("https://example.com/{ref}/{ref}")),
        "status url"
    );
    assert_eq!(
        invalid(base().status_url("mailto:x@example.com")),
        "status url"
    );
    for bad in [
        ResultMapping::new(Vec::<String>::new(), Vec::<String>::new()),
        ResultMapping::new(["done"], ["DONE"]),
        ResultMapping::new(["ok", " "], ["failed"]),
    ] {
        assert_eq!(bad.unwrap_err().kind(), ErrorKind::InvalidInput);
    }
    // The token is not repeated in the error either.
    let err = base().bearer_token("s3cr3t\n").unwrap_err();
    assert!(!err.to_string().contains("s3cr3t"));
}

#[tokio::test]
async fn oversized_accepted_answer_is_transient() {
    let body = json!({"reference": "x".repeat(DEFAULT_MAX_RESPONSE_BYTES)}).to_string();
    for length in [true, false] {
        let (result, _) = submit_to(
            response("202 Accepted", &[], body.as_bytes(), length),
            plain,
        )
        .await;
        match result {
            Err(PartnerError::Transient { reason, status, .. }) => {
                assert_eq!(status, Some(202));
                assert!(reason.contains("longer than 65536 bytes"), "{reason}");
            }
            other => panic!("{other:?}"),
        }
    }
    let (result, _) = submit_to(
        json_response(
            "202 Accepted",
            json!({"reference": "CH-1", "pad": "x".repeat(100)}),
        ),
        |a| a.max_response_bytes(64),
    )
    .await;
    assert!(matches!(result, Err(PartnerError::Transient { .. })));
}

#[tokio::test]
async fn hostile_answers_never_panic() {
    let nested = "[".repeat(10_000) + &"]".repeat(10_000);
    let huge = vec![b'7'; 10 * 1024 * 1024];
    let none = SubmitOutcome::AwaitResult { external_ref: None };

    let (r, _) = submit_to(
        response("202 Accepted", &[], b"\xff\xfe{\"a\x00", true),
        plain,
    )
    .await;
    assert_eq!(r.unwrap(), none);
    let (r, _) = submit_to(
        response("202 Accepted", &[], nested.as_bytes(), true),
        with_status,
    )
    .await;
    assert_eq!(r.unwrap(), none);
    let nested_obj = "{\"a\":".repeat(10_000) + "1" + &"}".repeat(10_000);
    let (r, _) = submit_to(
        response("200 OK", &[], nested_obj.as_bytes(), true),
        with_status,
    )
    .await;
    assert_eq!(r.unwrap(), none); // past serde_json's recursion limit: not JSON
    for length in [true, false] {
        let (r, _) = submit_to(response("200 OK", &[], &huge, length), with_status).await;
        assert!(matches!(r, Err(PartnerError::Transient { .. })), "{r:?}");
        let (r, _) = submit_to(
            response("500 Internal Server Error", &[], &huge, length),
            plain,
        )
        .await;
        assert!(
            matches!(
                r,
                Err(PartnerError::Transient {
                    status: Some(500),
                    ..
                })
            ),
            "{r:?}"
        );
    }
    let (r, _) = submit_to(
        response("400 Bad Request", &[], b"\xff\xfebad \xc3", true),
        plain,
    )
    .await;
    match r {
        Err(PartnerError::Permanent { reason, .. }) => {
            assert!(reason.contains("bad"), "{reason}")
        }
        other => panic!("{other:?}"),
    }
}

fn polling(base: &str) -> HttpJsonAdapter {
    HttpJsonAdapter::new(&format!("{base}/claims"))
        .unwrap()
        .bearer_token("tok")
        .unwrap()
        .status_pointer("/state", mapping())
        .unwrap()
        .status_url(&format!("{base}/claims/{{ref}}/status?v=2"))
        .unwrap()
}

fn accepted(reference: &str) -> Submission {
    let mut s = submission(Some(json!({})));
    s.state = SubmissionState::AwaitingResult;
    s.external_ref = Some(reference.to_owned());
    s
}

#[tokio::test]
async fn poll_encodes_the_reference_and_maps_the_answer() {
    let (base, rx) = serve_once(json_response("200 OK", json!({"state": "completed"})));
    let s = accepted("a/b c?%é");
    let status = polling(&base).poll_status(&s).await.unwrap();
    assert_eq!(
        status,
        PollStatus::Done(Outcome::succeeded().with_result(json!({"state": "completed"})))
    );
    let got = received(&rx);
    assert_eq!(
        got.request_line,
        "GET /claims/a%2Fb%20c%3F%25%C3%A9/status?v=2 HTTP/1.1"
    );
    assert_eq!(got.header("authorization"), Some("Bearer tok"));
    assert_eq!(
        got.header("x-liaison-submission-id"),
        Some(s.id.to_string().as_str())
    );

    let (base, _) = serve_once(json_response("200 OK", json!({"state": "in review"})));
    let status = polling(&base).poll_status(&accepted("CH-1")).await.unwrap();
    assert_eq!(status, PollStatus::Pending);

    let (base, _) = serve_once(json_response(
        "200 OK",
        json!({"state": "rejected", "reason": "duplicate"}),
    ));
    let status = polling(&base).poll_status(&accepted("CH-1")).await.unwrap();
    assert_eq!(
        status,
        PollStatus::Done(
            Outcome::failed("duplicate")
                .with_result(json!({"state": "rejected", "reason": "duplicate"}))
        )
    );

    let (base, _) = serve_once(response("404 Not Found", &[], b"", true));
    let err = polling(&base)
        .poll_status(&accepted("CH-1"))
        .await
        .unwrap_err();
    assert!(matches!(
        err,
        PollError::Partner(PartnerError::Permanent {
            status: Some(404),
            ..
        })
    ));

    let (base, _) = serve_once(json_response("200 OK", json!({"other": 1})));
    let err = polling(&base)
        .poll_status(&accepted("CH-1"))
        .await
        .unwrap_err();
    assert!(matches!(
        err,
        PollError::Partner(PartnerError::Transient { .. })
    ));
}

#[tokio::test]
async fn poll_is_unsupported_without_configuration_or_reference() {
    let s = accepted("CH-1");
    let plain = HttpJsonAdapter::new("http://127.0.0.1:9/claims").unwrap();
    assert!(matches!(
        plain.poll_status(&s).await,
        Err(PollError::Unsupported)
    ));
    let no_mapping = plain
        .clone()
        .status_url("http://127.0.0.1:9/claims/{ref}")
        .unwrap();
    assert!(matches!(
        no_mapping.poll_status(&s).await,
        Err(PollError::Unsupported)
    ));
    let full = polling("http://127.0.0.1:9");
    let mut no_ref = s.clone();
    no_ref.external_ref = None;
    assert!(matches!(
        full.poll_status(&no_ref).await,
        Err(PollError::Unsupported)
    ));
    for dots in [".", ".."] {
        assert!(matches!(
            full.poll_status(&accepted(dots)).await,
            Err(PollError::Partner(PartnerError::Permanent { .. }))
        ));
    }
}
