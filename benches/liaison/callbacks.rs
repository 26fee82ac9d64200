//! Scenarios 5-6: end to end over HTTP with MockPartner (asynchronous
//! accept + signed callback), and the callback ingest rate.

use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use base64::Engine as _;
use http::header::{HeaderMap, HeaderValue};
use liaison::callback::{Disposition, JsonMatcher, StandardWebhooks};
use liaison::engine::EngineSettings;
use liaison::rusqlite::params;
use liaison::store::{ListFilter, SqliteStore, Synchronous};
use liaison::testing::{Behavior, MockOutcome, MockPartner};
use liaison::{
    AttemptContext, HttpJsonAdapter, Liaison, Partner, PartnerAdapter, PartnerError, Submission,
    SubmissionState, SubmitOutcome,
};
use serde_json::json;

use crate::report::Figure;
use crate::{Ctx, dispatch, median, raw};

/// Requests and submissions in flight at once in scenario 5.
const CONCURRENCY: usize = 32;

fn secret() -> String {
    format!(
        "whsec_{}",
        base64::engine::general_purpose::STANDARD.encode(rand::random::<[u8; 32]>())
    )
}

/// The raw loop: reqwest -> axum on loopback, `total` requests answered 202
/// with a reference, `CONCURRENCY` at a time. Returns requests/s.
pub(crate) async fn raw_http(total: usize) -> f64 {
    use axum::routing::post;
    let app = axum::Router::new().route(
        "/submit",
        post(|body: axum::body::Bytes| async move {
            let _: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
            (
                axum::http::StatusCode::ACCEPTED,
                axum::Json(json!({ "reference": uuid::Uuid::new_v4().to_string() })),
            )
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let url = format!("http://{}/submit", listener.local_addr().expect("addr"));
    let server = tokio::spawn(async move { axum::serve(listener, app).await });
    let client = reqwest::Client::new();
    let per_task = total.div_ceil(CONCURRENCY);
    let started = Instant::now();
    let mut joins = Vec::new();
    for t in 0..CONCURRENCY {
        let (client, url) = (client.clone(), url.clone());
        joins.push(tokio::spawn(async move {
            for i in 0..per_task {
                let response = client
                    .post(&url)
                    .header("idempotency-key", format!("k-{t}-{i}"))
                    .json(&crate::payload(i))
                    .send()
                    .await
                    .expect("raw request");
                let _ = response.bytes().await.expect("raw body");
            }
        }));
    }
    for j in joins {
        j.await.expect("task");
    }
    let took = started.elapsed();
    server.abort();
    crate::rate(per_task * CONCURRENCY, took)
}

/// One liaison run: `n` submissions to a MockPartner that accepts with 202
/// and calls back (signed, Standard Webhooks) to liaison's axum callback
/// router; timed from the engine's start until all are Succeeded.
pub(crate) async fn liaison_http(ctx: &Ctx, n: usize, rep: usize) -> f64 {
    let dir = ctx.scratch();
    let store = SqliteStore::open(dir.path().join("liaison.db")).expect("store");
    liaison_http_on(Arc::new(store), n, rep).await
}

/// [`liaison_http`] on any store (scenario P4 runs it on PostgreSQL).
pub(crate) async fn liaison_http_on(
    store: Arc<dyn liaison::store::OutboxStore>,
    n: usize,
    rep: usize,
) -> f64 {
    let secret = secret();
    let delay = crate::env_usize("LIAISON_BENCH_CALLBACK_DELAY_MS", 0) as u64;
    let mock = MockPartner::start_with(Behavior::callback_later(
        Duration::from_millis(delay),
        MockOutcome::Succeeded,
    ))
    .await
    .expect("mock partner");
    mock.set_callback_signing(Some(StandardWebhooks::new(&secret).expect("secret")));
    let partner = Partner::new(
        "lab",
        HttpJsonAdapter::new(&mock.submit_url()).expect("adapter"),
    )
    .callbacks(
        JsonMatcher::builder(StandardWebhooks::new(&secret).expect("secret"))
            .build()
            .expect("matcher"),
    )
    .concurrency(CONCURRENCY);
    let hub = Liaison::builder_arc(store)
        .partner(partner)
        .settings(EngineSettings::default().claim_batch(CONCURRENCY))
        .build()
        .expect("hub");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    mock.set_callback_url(Some(format!(
        "http://{}/callbacks/lab",
        listener.local_addr().expect("addr")
    )));
    let app = liaison::http::callback_router(hub.clone());
    let server = tokio::spawn(async move { axum::serve(listener, app).await });

    let mut i = 0;
    while i < n {
        let batch: Vec<_> = (i..(i + 500).min(n))
            .map(|j| {
                liaison::NewSubmission::new("lab", "lab.order", crate::payload(j))
                    .idempotency_key(format!("r{rep}-{j}"))
            })
            .collect();
        i += batch.len();
        hub.enqueue_batch(batch).await.expect("fill");
    }
    let store = hub.store().clone();
    let took = dispatch::drain_until(
        &hub,
        "lab",
        &[
            SubmissionState::Queued,
            SubmissionState::InFlight,
            SubmissionState::AwaitingResult,
        ],
    )
    .await;
    server.abort();
    let done = store
        .list(
            &ListFilter::default()
                .partner("lab")
                .state(SubmissionState::Succeeded)
                .limit(ListFilter::MAX_LIMIT),
        )
        .await
        .expect("list")
        .len();
    assert!(
        done >= n.min(ListFilter::MAX_LIMIT),
        "every submission ended Succeeded"
    );
    crate::rate(n, took)
}

/// Scenario 5.
pub(crate) async fn http_end_to_end(ctx: &Ctx) {
    let n = ctx.n;
    let (mut ours, mut base) = (Vec::new(), Vec::new());
    for rep in 0..ctx.reps {
        base.push(raw_http(2 * n).await);
        ours.push(liaison_http(ctx, n, rep).await);
    }
    Figure {
        id: "5",
        name: "HTTP end to end, 202 + signed callback, FULL".into(),
        unit: "submissions/s",
        liaison: median(ours),
        baseline: median(base),
        baseline_name: "raw reqwest -> axum loop, requests/s, same request count and concurrency",
        target: ">= 0.17x",
        met: None,
        n,
        note: format!("concurrency {CONCURRENCY}; each submission = 2 HTTP requests"),
    }
    .check(0.17)
    .print();
}

/// Accepts with a reference derived from the idempotency key.
#[derive(Debug)]
struct AcceptWithRef;

#[async_trait]
impl PartnerAdapter for AcceptWithRef {
    async fn submit(
        &self,
        ctx: &AttemptContext,
        _: &Submission,
    ) -> Result<SubmitOutcome, PartnerError> {
        Ok(SubmitOutcome::AwaitResult {
            external_ref: Some(format!("R-{}", ctx.idempotency_key)),
        })
    }
}

/// A signed callback for the submission with key `key`.
fn signed(signer: &StandardWebhooks, key: &str) -> (HeaderMap, Vec<u8>) {
    let event_id = uuid::Uuid::new_v4().to_string();
    let body = json!({
        "event_id": event_id,
        "reference": format!("R-{key}"),
        "idempotency_key": key,
        "status": "succeeded",
        "reason": null,
    })
    .to_string()
    .into_bytes();
    let ts = chrono::Utc::now().timestamp();
    let mut headers = HeaderMap::new();
    headers.insert("content-type", HeaderValue::from_static("application/json"));
    let value = |s: String| HeaderValue::from_str(&s).expect("header");
    headers.insert(StandardWebhooks::ID_HEADER, value(event_id.clone()));
    headers.insert(StandardWebhooks::TIMESTAMP_HEADER, value(ts.to_string()));
    headers.insert(
        StandardWebhooks::SIGNATURE_HEADER,
        value(signer.sign(&event_id, ts, &body)),
    );
    (headers, body)
}

/// The raw baseline: per callback, verify the HMAC, parse the JSON, and in
/// one transaction store the raw body and mark its submission done.
fn raw_ingest(path: &std::path::Path, secret: &[u8], n: usize) -> f64 {
    use hmac::{KeyInit, Mac};
    let conn = raw::open(path, Synchronous::Full);
    conn.execute_batch(
        "CREATE TABLE raw_callbacks (seq INTEGER PRIMARY KEY, body BLOB, reference TEXT);
         ALTER TABLE raw_submissions ADD COLUMN external_ref TEXT;",
    )
    .expect("raw callback schema");
    raw::seed_queued(&conn, n);
    conn.execute_batch(
        "UPDATE raw_submissions SET external_ref = 'R-' || seq, state = 'awaiting_result';
         CREATE UNIQUE INDEX raw_ref ON raw_submissions (external_ref);",
    )
    .expect("raw refs");
    let bodies: Vec<(Vec<u8>, Vec<u8>)> = (1..=n)
        .map(|seq| {
            let body = json!({"event_id": uuid::Uuid::new_v4().to_string(),
                "reference": format!("R-{seq}"), "status": "succeeded"})
            .to_string()
            .into_bytes();
            let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(secret).expect("key");
            mac.update(&body);
            (body, mac.finalize().into_bytes().to_vec())
        })
        .collect();
    let started = Instant::now();
    for (body, tag) in &bodies {
        let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(secret).expect("key");
        mac.update(body);
        mac.verify_slice(tag).expect("verified");
        let parsed: serde_json::Value = serde_json::from_slice(body).expect("json");
        let reference = parsed["reference"].as_str().expect("reference");
        conn.execute_batch("BEGIN IMMEDIATE").expect("begin");
        conn.prepare_cached("INSERT INTO raw_callbacks (body, reference) VALUES (?1, ?2)")
            .and_then(|mut s| s.execute(params![body, reference]))
            .expect("store callback");
        let changed = conn
            .prepare_cached(
                "UPDATE raw_submissions SET state = 'succeeded' WHERE external_ref = ?1 \
                 AND state = 'awaiting_result'",
            )
            .and_then(|mut s| s.execute(params![reference]))
            .expect("apply");
        assert_eq!(changed, 1);
        conn.execute_batch("COMMIT").expect("commit");
    }
    crate::rate(n, started.elapsed())
}

/// Scenario 6: `n` signed callbacks, each verified, matched to its
/// submission (awaiting its result) and applied; 32 callers at once.
pub(crate) async fn ingest(ctx: &Ctx) {
    let n = ctx.n;
    let (mut ours, mut base) = (Vec::new(), Vec::new());
    for rep in 0..ctx.reps {
        let dir = ctx.scratch();
        base.push(tokio::task::block_in_place(|| {
            raw_ingest(&dir.path().join("raw.db"), &rand::random::<[u8; 32]>(), n)
        }));

        let secret = secret();
        let signer = StandardWebhooks::new(&secret).expect("secret");
        let store = SqliteStore::open(dir.path().join("liaison.db")).expect("store");
        let hub = Liaison::builder(store)
            .partner(
                Partner::new("bench", AcceptWithRef)
                    .concurrency(dispatch::BATCH)
                    .callbacks(
                        JsonMatcher::builder(signer.clone())
                            .build()
                            .expect("matcher"),
                    ),
            )
            .settings(EngineSettings::default().claim_batch(dispatch::BATCH))
            .build()
            .expect("hub");
        let tag = format!("r{rep}");
        dispatch::fill(&hub, n, &tag).await;
        dispatch::drain(&hub).await; // all AwaitingResult now
        let calls: Vec<(HeaderMap, Vec<u8>)> = (0..n)
            .map(|i| signed(&signer, &format!("{tag}-{i}")))
            .collect();
        let hub = Arc::new(hub);
        let calls = Arc::new(calls);
        let started = Instant::now();
        let mut joins = Vec::new();
        for t in 0..CONCURRENCY {
            let (hub, calls) = (Arc::clone(&hub), Arc::clone(&calls));
            joins.push(tokio::spawn(async move {
                let mut applied = 0;
                for (headers, body) in calls.iter().skip(t).step_by(CONCURRENCY) {
                    let receipt = hub
                        .ingest_callback("bench", headers, body)
                        .await
                        .expect("ingest");
                    applied += usize::from(receipt.disposition == Disposition::Applied);
                }
                applied
            }));
        }
        let mut applied = 0;
        for j in joins {
            applied += j.await.expect("task");
        }
        ours.push(crate::rate(n, started.elapsed()));
        assert_eq!(applied, n, "every callback verified, matched and applied");
    }
    Figure {
        id: "6",
        name: "callback ingest: verified, matched, applied".into(),
        unit: "callbacks/s",
        liaison: median(ours),
        baseline: median(base),
        baseline_name: "raw HMAC verify + JSON parse + store + update, one tx each, 1 caller",
        target: "none",
        met: None,
        n,
        note: format!("{CONCURRENCY} concurrent callers, FULL"),
    }
    .print();
}
