//! Testing aids: [`MockPartner`], a partner over real HTTP with scripted
//! behaviours (feature `mock`).
//!
//! The partner listens on `127.0.0.1`, answers `POST /submit` according to its
//! [`Behavior`] (healthy, completing, flaky, slow, rate-limited, rejecting,
//! failing, calling back later), can [go down](MockPartner::go_down) and
//! [come back](MockPartner::come_back) on the same port, and keeps the record a
//! test needs to assert exactly-once effects: [`MockStats`], every
//! [`ReceivedRequest`] and every [`SideEffect`]. Its callbacks can be signed
//! ([`MockPartner::set_callback_signing`]) and can misbehave the ways real
//! partners' do ([`CallbackMode`]: never sent, malformed, duplicated,
//! conflicting, revised, wrongly signed, arriving before the submit's answer);
//! each one sent is a [`SentCallback`]. Results can carry a document
//! ([`MockOutcome::with_field`]), in the synchronous answer, the callback and
//! the status endpoint (`GET /status/{reference}`), and a
//! [scripted](Behavior::scripted) partner answers each request its own way.
//!
//! ```
//! use liaison::testing::{Behavior, MockPartner};
//! use serde_json::json;
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! // Every second request fails with 503.
//! let partner = MockPartner::start_with(Behavior::flaky(2, Behavior::AcceptAndComplete)).await?;
//! let client = reqwest::Client::builder().no_proxy().build()?;
//! let send = || {
//!     client
//!         .post(partner.submit_url())
//!         .header("Idempotency-Key", "order-7")
//!         .json(&json!({"order": 7}))
//!         .send()
//! };
//!
//! assert_eq!(send().await?.status(), 200);
//! assert_eq!(send().await?.status(), 503);
//! let retried: serde_json::Value = send().await?.json().await?;
//! assert_eq!(retried, json!({"reference": "MP-1", "status": "succeeded"}));
//! assert_eq!(partner.stats().side_effects, 1); // three requests, one effect
//! # Ok(())
//! # }
//! ```

mod behavior;
mod callback;
#[cfg(test)]
mod callback_tests;
#[cfg(test)]
mod document_tests;
mod handler;
mod listener;
mod mock_partner;
mod records;
mod state;
#[cfg(test)]
mod tests;

pub use behavior::{Behavior, CallbackMode, MockOutcome, MockScript};
pub use mock_partner::MockPartner;
pub use records::{MockStats, ReceivedRequest, SentCallback, SideEffect};
