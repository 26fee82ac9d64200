//! The ops page over a live engine, with partners misbehaving the ways real
//! ones do.
//!
//! Run with:
//!
//! ```text
//! cargo run --example ops_dashboard --features mock,http
//! ```
//!
//! You will see a URL and a token. Open the URL in a browser: three mock
//! partners over real HTTP receive a claim every quarter of a second (400 in
//! all). The clearinghouse answers one request in four with 503 (retried,
//! then delivered); the pharmacy takes turns processing, reporting "member
//! not found" and refusing with 422 (failed and dead-lettered work); the lab
//! accepts and calls back signed, except in spells when it never calls back,
//! so its work goes stuck after 3 s, and spells when its callbacks come in a
//! format the matcher does not read (they land in the quarantine). After
//! 20 s the clearinghouse "announces maintenance" and is paused for ten
//! minutes, as an operator would on its page. Within seconds the page shows
//! the four questions, verdicts with their reasons, alerts with their
//! owners, the stuck and failed lists with the money at risk, the quarantine,
//! and each partner's last hours as a chart. Search for a claim (`C-10003`),
//! page through the lists and export them as CSV; open a stuck claim and
//! replay, resolve or cancel it with the token; reprocess or dismiss a
//! quarantined callback; resume the clearinghouse; acknowledge an alert. The
//! timeline records who did it and why. `GET /api/health` and the other JSON
//! routes answer too.
//!
//! The ops page listens on 127.0.0.1 on its own, answering only requests
//! addressed to that address (or `localhost`); the callback endpoint the lab
//! calls back on has a listener of its own, as in production, where partners
//! reach the callback listener and only operators the ops one.
//!
//! Ctrl-C stops it (the outbox is a temporary file). With
//! `LIAISON_EXAMPLE_EXIT_AFTER_SECS=N` it stops by itself after N seconds,
//! after checking that the page and the JSON API answer (for CI smoke runs).
//! `LIAISON_OPS_TOKEN` sets the token instead of a random one.

use std::time::Duration;

use base64::Engine as _;
use liaison::callback::{JsonMatcher, StandardWebhooks};
use liaison::engine::{AlertSettings, EngineSettings, Liaison, Partner};
use liaison::http::EdgeLimits;
use liaison::http::ops::{OpsState, router};
use liaison::ops::alerts::{Owner, Ownership, ProblemClass};
use liaison::retry::{Exponential, RetryLimits};
use liaison::store::SqliteStore;
use liaison::testing::{Behavior, CallbackMode, MockOutcome, MockPartner};
use liaison::{HttpJsonAdapter, NewSubmission, ResultMapping};
use serde_json::json;

/// Claims sent in all, one every [`EVERY`].
const CLAIMS: u32 = 400;
const EVERY: Duration = Duration::from_millis(250);
/// How long the partners keep each behaviour before the next.
const SPELL: Duration = Duration::from_secs(4);

type BoxError = Box<dyn std::error::Error + Send + Sync>;

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    let exit_after = match std::env::var("LIAISON_EXAMPLE_EXIT_AFTER_SECS") {
        Ok(secs) => Some(Duration::from_secs(secs.trim().parse()?)),
        Err(_) => None,
    };
    let token = std::env::var("LIAISON_OPS_TOKEN")
        .unwrap_or_else(|_| hex::encode(rand::random::<[u8; 16]>()));
    let secret = format!(
        "whsec_{}",
        base64::engine::general_purpose::STANDARD.encode(rand::random::<[u8; 32]>())
    );

    let clearinghouse =
        MockPartner::start_with(Behavior::flaky(4, Behavior::AcceptAndComplete)).await?;
    let pharmacy = MockPartner::start_with(Behavior::AcceptAndComplete).await?;
    let lab = MockPartner::start_with(Behavior::Healthy).await?;

    let synchronous = |mock: &MockPartner| -> liaison::Result<HttpJsonAdapter> {
        HttpJsonAdapter::new(&mock.submit_url())?
            .status_pointer("/status", ResultMapping::new(["succeeded"], ["failed"])?)
    };
    let quick_retries = || -> liaison::Result<(Exponential, RetryLimits)> {
        Ok((
            Exponential::new(Duration::from_millis(100), Duration::from_secs(1))?,
            RetryLimits::new(5, Duration::from_secs(60))?,
        ))
    };
    let (retry, limits) = quick_retries()?;
    let clearinghouse_partner = Partner::new("clearinghouse", synchronous(&clearinghouse)?)
        .retry(retry)
        .limits(limits);
    let (retry, limits) = quick_retries()?;
    let pharmacy_partner = Partner::new("pharmacy", synchronous(&pharmacy)?)
        .retry(retry)
        .limits(limits);
    let lab_partner = Partner::new("lab", HttpJsonAdapter::new(&lab.submit_url())?)
        .callbacks(JsonMatcher::builder(StandardWebhooks::new(&secret)?).build()?)
        .result_timeout(Duration::from_secs(3))
        .delay_budget(Duration::from_secs(30));

    let runbooks = "https://wiki.example/runbooks/liaison";
    let billing = Owner::new("billing ops", "billing@clinic.example")
        .runbook(format!("{runbooks}#results-overdue"));
    let ownership = Ownership::new(
        Owner::new("integrations team", "#integrations")
            .runbook(format!("{runbooks}#partner-unavailable")),
    )
    .route(ProblemClass::ResultOverdue, billing.clone())
    .route(ProblemClass::ProcessingFailed, billing);

    let liaison = Liaison::builder(SqliteStore::open_temporary()?)
        .partner(clearinghouse_partner)
        .partner(pharmacy_partner)
        .partner(lab_partner)
        .ownership(ownership)
        .settings(
            EngineSettings::default()
                .poll_interval(Duration::from_millis(50))
                .deadline_interval(Duration::from_millis(200)),
        )
        .alert_settings(AlertSettings::default().interval(Duration::from_secs(2)))
        .build()?;
    let handle = liaison.start();

    // Two listeners: partners reach the callback one (in production, the
    // internet), only operators the ops one, bound to loopback. On one
    // listener, whoever can post a callback could read the page and the API.
    let callback_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let callbacks_base = format!("http://{}", callback_listener.local_addr()?);
    // Behind a timeout, a concurrency limit and a body limit (EdgeLimits).
    let callbacks = liaison::http::callback_router_with(liaison.clone(), EdgeLimits::default());
    tokio::spawn(async move { axum::serve(callback_listener, callbacks).await });
    lab.set_callback_url(Some(format!("{callbacks_base}/callbacks/lab")));
    lab.set_callback_signing(Some(StandardWebhooks::new(&secret)?));

    let ops_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let ops_addr = ops_listener.local_addr()?;
    let base = format!("http://{ops_addr}");
    // Only requests naming this address as their Host are answered (421
    // otherwise): another site's page cannot read this one through your
    // browser by making its own name resolve to 127.0.0.1 (DNS rebinding).
    let ops = router(
        OpsState::new(liaison.clone())
            .token(token.clone())
            .allowed_hosts([
                ops_addr.to_string(),
                format!("localhost:{}", ops_addr.port()),
            ]),
    )?;
    // Operators only, but limits all the same: a stuck browser tab or a
    // script in a loop cannot tie up the host.
    let ops = EdgeLimits::default().concurrency(16).apply(ops);
    tokio::spawn(async move { axum::serve(ops_listener, ops).await });

    println!("ops page:  {base}/");
    println!("ops token: {token}");
    println!("JSON:      {base}/api/health, /api/alerts, /api/submissions?state=stuck");
    println!("Ctrl-C to stop.");

    tokio::spawn(take_turns(pharmacy.clone(), lab.clone()));
    tokio::spawn(send_claims(liaison.clone()));
    tokio::spawn(announce_maintenance(liaison.clone()));

    match exit_after {
        None => std::future::pending::<()>().await,
        Some(after) => {
            tokio::time::sleep(after).await;
            smoke_check(&base).await?;
            handle.shutdown(Duration::from_secs(5)).await?;
            println!("stopped after {} s", after.as_secs());
        }
    }
    // Keep the partners up until the end.
    drop((clearinghouse, pharmacy, lab));
    Ok(())
}

/// Enqueue a claim every [`EVERY`], round robin over the partners.
async fn send_claims(liaison: Liaison) {
    let partners = ["clearinghouse", "pharmacy", "lab"];
    for n in 0..CLAIMS {
        let partner = partners[n as usize % partners.len()];
        let claim = format!("C-{}", 10_000 + n);
        let cents = 1_000 + i64::from(n * 7_919 % 49_000);
        let new = NewSubmission::new(partner, "claim.submit", json!({ "claim_id": claim }))
            .idempotency_key(&claim)
            .correlation("claim_id", &claim)
            .business_value_in(cents, "USD");
        if let Err(error) = liaison.enqueue(new).await {
            eprintln!("enqueue {claim}: {error}");
        }
        tokio::time::sleep(EVERY).await;
    }
}

/// Change the pharmacy's and the lab's behaviour every [`SPELL`].
async fn take_turns(pharmacy: MockPartner, lab: MockPartner) {
    let pharmacy_turns = [
        Behavior::AcceptAndComplete,
        Behavior::complete_with_failure("member not found"),
        Behavior::AcceptAndComplete,
        Behavior::reject(422),
    ];
    let delay = Duration::from_millis(300);
    let lab_turns = [
        Behavior::callback_later(delay, MockOutcome::Succeeded),
        Behavior::callback_later_with(delay, MockOutcome::Succeeded, CallbackMode::Malformed),
        Behavior::callback_later_with(delay, MockOutcome::Succeeded, CallbackMode::Never),
        Behavior::callback_later(delay, MockOutcome::failed("sample haemolysed")),
    ];
    for turn in 0usize.. {
        pharmacy.set_behavior(pharmacy_turns[turn % pharmacy_turns.len()].clone());
        lab.set_behavior(lab_turns[turn % lab_turns.len()].clone());
        tokio::time::sleep(SPELL).await;
    }
}

/// After 20 s the clearinghouse announces ten minutes of maintenance: it is
/// paused (its claims wait in the queue), as an operator would on its page.
async fn announce_maintenance(liaison: Liaison) {
    tokio::time::sleep(Duration::from_secs(20)).await;
    let until = chrono::Utc::now() + chrono::Duration::minutes(10);
    let ops = liaison::Actor::person("dana@clinic.example");
    if let Err(error) = liaison
        .pause(
            "clearinghouse",
            until,
            ops,
            "announced maintenance, ticket 4411",
        )
        .await
    {
        eprintln!("pause: {error}");
    }
}

/// The overview (with the four questions and the search box), the
/// quarantine, a CSV export and the health API answer, the overview shows
/// the partners, and a request for another host name is refused.
async fn smoke_check(base: &str) -> Result<(), BoxError> {
    let client = reqwest::Client::builder().no_proxy().build()?;
    let page = client.get(format!("{base}/")).send().await?;
    if !page.status().is_success() {
        return Err(format!("GET / answered {}", page.status()).into());
    }
    let html = page.text().await?;
    if ![
        "clearinghouse",
        "pharmacy",
        "lab",
        "<svg",
        "Can we recover?",
        "role=\"search\"",
    ]
    .iter()
    .all(|s| html.contains(s))
    {
        return Err(
            "the overview does not show every partner, its chart, the questions and search".into(),
        );
    }
    for path in [
        "/quarantine",
        "/search?q=C-10003",
        "/partners/clearinghouse",
    ] {
        client
            .get(format!("{base}{path}"))
            .send()
            .await?
            .error_for_status()?;
    }
    let csv = client
        .get(format!("{base}/export/failed"))
        .send()
        .await?
        .error_for_status()?
        .text()
        .await?;
    if !csv.starts_with("id,partner,kind,idempotency_key,state") {
        return Err("the CSV export has no header".into());
    }
    let health: serde_json::Value = client
        .get(format!("{base}/api/health"))
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?;
    // A page served under another name (DNS rebinding) is not answered.
    let rebound = client
        .get(format!("{base}/api/health"))
        .header(reqwest::header::HOST, "evil.example")
        .send()
        .await?;
    if rebound.status() != reqwest::StatusCode::MISDIRECTED_REQUEST {
        return Err(format!("Host: evil.example answered {}", rebound.status()).into());
    }
    println!(
        "smoke check: the page answers; overall verdict {}, {} submission(s) at risk",
        health["verdict"].as_str().unwrap_or("?"),
        health["at_risk"]["count"]
    );
    Ok(())
}
