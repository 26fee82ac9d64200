//! Every way a partner's result callback can go wrong, and what liaison
//! records for each.
//!
//! Run with:
//!
//! ```text
//! cargo run --example callbacks --features mock,http
//! ```
//!
//! You will see one submission per failure mode sent to a `MockPartner` over
//! real HTTP. The partner accepts each one (202 and its own reference) and
//! then calls back, signed with Standard Webhooks, to liaison's axum callback
//! router: normally, with a failure, never, with a body that is not JSON,
//! twice, twice with opposite results, with a forged signature, and before
//! its own 202. One table line per mode shows the submission's final state,
//! the disposition of each callback the mode produced, the HTTP status the
//! partner got back for each, and why it ended there. Then the malformed
//! callback is reprocessed (still malformed: its body has not changed), and
//! the quarantine is listed. The whole run takes a few seconds; it exits
//! non-zero if any mode ended differently from what `MODES` says, so CI
//! catches regressions.

use std::process::ExitCode;
use std::time::{Duration, Instant};

use base64::Engine as _;
use liaison::callback::{Disposition, JsonMatcher, StandardWebhooks, StoredCallback};
use liaison::engine::{EngineSettings, Liaison, Partner};
use liaison::http::EdgeLimits;
use liaison::store::{CallbackFilter, OutboxStore, SqliteStore};
use liaison::testing::{Behavior, CallbackMode, MockOutcome, MockPartner};
use liaison::{HttpJsonAdapter, NewSubmission, SubmissionState};
use serde_json::json;

/// How long after its 202 the partner calls back.
const DELAY: Duration = Duration::from_millis(300);

/// One failure mode and how it must end: the submission's state, the
/// dispositions of its callbacks, and the HTTP statuses the partner got.
type Mode = (
    &'static str,
    CallbackMode,
    SubmissionState,
    &'static [Disposition],
    &'static [u16],
);

#[rustfmt::skip]
const MODES: [Mode; 8] = {
    use CallbackMode as M;
    use Disposition::{Applied, Conflicting, Duplicate, Malformed, Rejected};
    use SubmissionState::{Failed, Stuck, Succeeded};
    [
        ("normal",          M::Normal,         Succeeded, &[Applied],              &[200]),
        ("failed",          M::Normal,         Failed,    &[Applied],              &[200]),
        ("never",           M::Never,          Stuck,     &[],                     &[]),
        ("malformed",       M::Malformed,      Stuck,     &[Malformed],            &[400]),
        ("duplicate",       M::Duplicate,      Succeeded, &[Applied, Duplicate],   &[200, 200]),
        ("conflicting",     M::Conflicting,    Succeeded, &[Applied, Conflicting], &[200, 200]),
        ("wrong signature", M::WrongSignature, Stuck,     &[Rejected],             &[401]),
        ("early",           M::Early,          Succeeded, &[Applied],              &[202]),
    ]
};

#[tokio::main]
async fn main() -> Result<ExitCode, Box<dyn std::error::Error>> {
    // The shared secret, as the partner would hand it over: `whsec_` + base64.
    let secret = format!(
        "whsec_{}",
        base64::engine::general_purpose::STANDARD.encode(rand::random::<[u8; 32]>())
    );
    let mock = MockPartner::start().await?;
    let partner = Partner::new("lab", HttpJsonAdapter::new(&mock.submit_url())?)
        // JsonMatcher's defaults read MockPartner's callbacks: `/reference`
        // (the partner's own reference), `/status`, `/event_id`, `/reason`.
        .callbacks(JsonMatcher::builder(StandardWebhooks::new(&secret)?).build()?)
        .result_timeout(Duration::from_secs(1))
        // Polling needs an adapter that can poll; HttpJsonAdapter without a
        // `status_url` cannot, so an overdue result goes straight to Stuck.
        .polling(Duration::from_millis(200), 2);
    let settings = EngineSettings::default()
        .poll_interval(Duration::from_millis(50))
        .deadline_interval(Duration::from_millis(100));
    let liaison = Liaison::builder(SqliteStore::open_temporary()?)
        .partner(partner)
        .settings(settings)
        .build()?;
    let store = liaison.store().clone();
    let handle = liaison.start();

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let callback_url = format!("http://{}/callbacks/lab", listener.local_addr()?);
    // Behind a timeout, a concurrency limit and a body limit (EdgeLimits):
    // whoever reaches the endpoint cannot hold it open or pile requests up.
    let app = liaison::http::callback_router_with(liaison.clone(), EdgeLimits::default());
    tokio::spawn(async move { axum::serve(listener, app).await });
    mock.set_callback_url(Some(callback_url.clone()));
    mock.set_callback_signing(Some(StandardWebhooks::new(&secret)?));
    println!("partner:  {}", mock.submit_url());
    println!("callback: {callback_url} (Standard Webhooks)\n");

    println!(
        "{:<16} {:<10} {:<21} {:<9} {:<3} detail",
        "mode", "state", "callbacks", "answered", "ok"
    );
    let mut all_ok = true;
    let mut malformed = None;
    for (i, (name, mode, want_state, want_dispositions, want_statuses)) in MODES.iter().enumerate()
    {
        let outcome = match *want_state {
            SubmissionState::Failed => MockOutcome::failed("member not eligible"),
            _ => MockOutcome::Succeeded,
        };
        // Switch the partner's behaviour, then send one submission.
        let seen = (
            all_callbacks(&store).await?.len(),
            mock.callback_log().len(),
        );
        mock.set_behavior(Behavior::callback_later_with(DELAY, outcome, mode.clone()));
        let new = NewSubmission::new("lab", "lab.order", json!({ "order": i }))
            .idempotency_key(format!("order-{i}"));
        let id = liaison.enqueue(new).await?.submission.id;

        // Poll the store (at most 10 s) until the mode has ended as expected.
        // Callbacks are taken by arrival, not by submission: a malformed or
        // forged one is never parsed, so it is matched to no submission.
        let started = Instant::now();
        let (state, dispositions, statuses, passed) = loop {
            let state = store.get(id).await?.state;
            let stored = all_callbacks(&store).await?.split_off(seen.0);
            let dispositions: Vec<Disposition> = stored.iter().map(|c| c.disposition).collect();
            let statuses: Vec<u16> = mock.callback_log()[seen.1..]
                .iter()
                .map(|c| c.status.unwrap_or(0))
                .collect();
            let passed = state == *want_state
                && dispositions == *want_dispositions
                && statuses == *want_statuses;
            if passed || started.elapsed() > Duration::from_secs(10) {
                break (state, dispositions, statuses, passed);
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        };
        all_ok &= passed;
        if *mode == CallbackMode::Malformed {
            malformed = all_callbacks(&store).await?.get(seen.0).map(|c| c.id);
        }
        // Why it ended there: the partner's reason, or the last timeline line.
        let submission = store.get(id).await?;
        let last = store.timeline(id).await?.pop();
        let detail = match (submission.last_error, last) {
            (Some(reason), _) => reason,
            (None, Some(event)) => format!("{}: {}", event.kind, event.reason.unwrap_or_default()),
            (None, None) => String::new(),
        };
        println!(
            "{name:<16} {:<10} {:<21} {:<9} {:<3} {detail}",
            state.as_str(),
            list(&dispositions),
            list(&statuses),
            if passed { "yes" } else { "NO" },
        );
    }

    // The partner's format has not changed, so reprocessing the same body with
    // the same matcher leaves it quarantined; after a matcher fix it applies.
    if let Some(id) = malformed {
        let receipt = liaison.reprocess_callback(id).await?;
        let kept = receipt.disposition == Disposition::Malformed && receipt.http_status == 400;
        all_ok &= kept;
        println!(
            "\nreprocess {id}: {} ({})",
            receipt.disposition,
            receipt.detail.as_deref().unwrap_or("")
        );
    } else {
        all_ok = false;
    }

    let quarantine = store.list_callbacks(&CallbackFilter::quarantined()).await?;
    println!("\nquarantine ({}):", quarantine.len());
    for c in quarantine.iter().rev() {
        println!(
            "  {:<12} {} {}",
            c.disposition.as_str(),
            c.id,
            c.error.as_deref().unwrap_or("")
        );
    }
    let mut kinds: Vec<&str> = quarantine.iter().map(|c| c.disposition.as_str()).collect();
    kinds.sort_unstable();
    all_ok &= kinds == ["conflicting", "malformed", "rejected"];

    handle.shutdown(Duration::from_secs(5)).await?;
    if all_ok {
        println!("\nevery mode ended as expected");
        Ok(ExitCode::SUCCESS)
    } else {
        println!("\nsome modes did NOT end as expected");
        Ok(ExitCode::FAILURE)
    }
}

/// Every stored callback, oldest first.
async fn all_callbacks(
    store: &std::sync::Arc<dyn OutboxStore>,
) -> liaison::Result<Vec<StoredCallback>> {
    let filter = CallbackFilter::default().limit(10_000);
    let mut all = store.list_callbacks(&filter).await?;
    all.reverse();
    Ok(all)
}

fn list<T: std::fmt::Display>(items: &[T]) -> String {
    if items.is_empty() {
        return "-".to_owned();
    }
    items
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}
