//! A hand-written `PartnerAdapter` for a partner whose API does not fit
//! `HttpJsonAdapter`: a form-encoded endpoint that answers in plain text.
//!
//! Run with:
//!
//! ```text
//! cargo run --example custom_adapter --features mock
//! ```
//!
//! You will see five submissions delivered through the adapter to a local
//! stand-in partner (a `MockPartner` that fails every 3rd request), the
//! retries it caused, and each submission's final state and partner reference.
//! The adapter shows the three duties of any adapter: send the idempotency
//! key, map the partner's answer to `SubmitOutcome`, and classify failures
//! as `PartnerError` so the engine knows whether to retry.

use std::time::Duration;

use async_trait::async_trait;
use liaison::engine::{Liaison, Partner};
use liaison::retry::Fixed;
use liaison::store::{ListFilter, OutboxStore, SqliteStore};
use liaison::testing::{Behavior, MockPartner};
use liaison::{
    AttemptContext, NewSubmission, PartnerAdapter, PartnerError, Submission, SubmitOutcome,
};
use serde_json::json;

/// The partner's contract, as its documentation might state it: POST the
/// fields, put our key in `X-Request-Key`, read the reference from the answer.
#[derive(Debug)]
struct LabOrders {
    client: reqwest::Client,
    url: String,
}

#[async_trait]
impl PartnerAdapter for LabOrders {
    async fn submit(
        &self,
        ctx: &AttemptContext,
        submission: &Submission,
    ) -> Result<SubmitOutcome, PartnerError> {
        let payload = submission
            .payload
            .as_ref()
            .ok_or_else(|| PartnerError::permanent("payload was purged"))?;
        let response = self
            .client
            .post(&self.url)
            // 1. The same key on every attempt: the partner can deduplicate.
            .header("Idempotency-Key", &ctx.idempotency_key)
            .json(payload)
            .send()
            .await
            // 2. Transport failures: timeout, or transient (retried).
            .map_err(|e| PartnerError::from_reqwest(e, Duration::from_secs(10)))?;
        let status = response.status();
        let headers = response.headers().clone();
        let text = response
            .text()
            .await
            .map_err(|e| PartnerError::from_reqwest(e, Duration::from_secs(10)))?;
        // 3. HTTP statuses: 5xx/408/409 transient, 429 rate limited, other 4xx permanent.
        PartnerError::classify_http(status, &headers, &text)?;
        // 4. The answer: accepted, with the partner's reference for its callback.
        let reference = serde_json::from_str::<serde_json::Value>(&text)
            .ok()
            .and_then(|v| v["reference"].as_str().map(str::to_owned));
        Ok(SubmitOutcome::AwaitResult {
            external_ref: reference,
        })
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let partner = MockPartner::start_with(Behavior::flaky(3, Behavior::Healthy)).await?;
    let store = SqliteStore::open_temporary()?;
    let adapter = LabOrders {
        client: reqwest::Client::new(),
        url: partner.submit_url(),
    };
    let liaison = Liaison::builder(store.clone())
        .partner(Partner::new("lab", adapter).retry(Fixed::new(Duration::from_millis(50))?))
        .build()?;
    for i in 1..=5 {
        liaison
            .enqueue(
                NewSubmission::new("lab", "order.create", json!({ "order": i, "test": "CBC" }))
                    .idempotency_key(format!("ORD-{i}")),
            )
            .await?;
    }
    liaison.run_until_idle().await?;

    for s in store.list(&ListFilter::default()).await? {
        println!(
            "{}  {:<16} attempts={}  partner ref={}",
            s.idempotency_key,
            s.state,
            s.attempts,
            s.external_ref.as_deref().unwrap_or("-")
        );
    }
    let stats = partner.stats();
    println!(
        "partner: {} requests, {} side effects for {} keys",
        stats.requests, stats.side_effects, stats.distinct_keys
    );
    Ok(())
}
