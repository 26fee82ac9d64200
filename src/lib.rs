//! # liaison
//!
//! Reliable partner integrations, embedded in your application: a
//! transactional outbox on SQLite, an idempotency-key ledger, leases that
//! survive crashes, and a timeline of everything that happened to each
//! submission.
//!
//! The pieces: the [`Submission`] model and its transition table; the
//! [`store::OutboxStore`] with its default [`store::SqliteStore`]; the
//! [`engine`] ([`Liaison`]) that claims due work and sends it through a
//! [`PartnerAdapter`] per partner under [`retry`] policies, timeouts,
//! concurrency and rate limits and a circuit breaker; [`HttpJsonAdapter`] for
//! partners that need no code. Callbacks and the operations surface build on
//! these (see the repository's `docs/`).
//!
//! The store can also be driven directly, as a dispatcher does:
//!
//! ```
//! use liaison::store::{ClaimRequest, OutboxStore, SqliteStore, StateChange, AttemptReport};
//! use liaison::{AttemptOutcome, NewSubmission, SubmissionState};
//! use serde_json::json;
//! use std::time::Duration;
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> liaison::Result<()> {
//! let store = SqliteStore::open_temporary()?;
//! store
//!     .enqueue(NewSubmission::new("clearinghouse", "claim.submit", json!({"claim": "C-7"}))
//!         .idempotency_key("C-7"))
//!     .await?;
//!
//! // A worker claims due work under a lease and reports what the partner said.
//! let leases = store
//!     .claim(ClaimRequest::new("clearinghouse", 10, Duration::from_secs(30)))
//!     .await?;
//! let lease = &leases[0];
//! let done = store
//!     .complete(
//!         lease,
//!         AttemptReport::new(AttemptOutcome::Accepted).http_status(202),
//!         StateChange::to(SubmissionState::AwaitingResult).external_ref("CH-889"),
//!     )
//!     .await?;
//! assert_eq!(done.state, SubmissionState::AwaitingResult);
//! assert_eq!(store.timeline(done.id).await?.len(), 3); // enqueued, claimed, accepted
//! # Ok(())
//! # }
//! ```
//!
//! ## Features
//!
//! | feature | default | what it adds |
//! |---|---|---|
//! | `sqlite` | yes | [`store::SqliteStore`], with SQLite compiled in (no system library) |
//! | `postgres` | no | `store::PostgresStore` for several host instances sharing one outbox (docs/scaling.md) |
//! | `http` | no | `http::callback_router` (callbacks) and `http::ops::router` (ops page, JSON API, `/metrics`) |
//! | `cli` | no | the `liaison` command-line tool (status, list, show, replay, resolve, cancel, callbacks, export) |
//! | `rustls` | yes | TLS for the HTTP client (rustls), so `https://` partners work |
//! | `mock` | no | [`testing::MockPartner`]: a scripted partner over real HTTP, for tests and examples |
//! | `backoff` | no | `retry::FromBackoff`: any `backoff` crate `Backoff` as a retry policy (opt-in: `backoff` is unmaintained, RUSTSEC-2025-0012) |
//! | `failpoints` | no | testing only: `fail` failpoints at crash-relevant places for the reliability tests, and `liaison::clock::skew_ms` to run a process with a wrong clock; inert unless configured |
//! | `full` | no | all of the above but `failpoints` |
#![cfg_attr(docsrs, feature(doc_cfg))]
#![forbid(unsafe_code)]
#![warn(missing_docs, missing_debug_implementations, unreachable_pub)]

pub mod callback;
mod clock;
pub mod engine;
mod error;
mod fingerprint;
#[cfg(feature = "http")]
#[cfg_attr(docsrs, doc(cfg(feature = "http")))]
pub mod http;
mod http_adapter;
mod id;
mod model;
pub mod ops;
mod partner;
pub mod retry;
pub mod store;
#[cfg(feature = "mock")]
#[cfg_attr(docsrs, doc(cfg(feature = "mock")))]
pub mod testing;

pub use engine::{FinishedSubmission, ResultHandler};
pub use engine::{ForgetTarget, Handle, Liaison, Partner};
pub use error::{BoxError, Error, ErrorKind, Result};
pub use fingerprint::Fingerprint;
pub use http_adapter::{HttpJsonAdapter, ResultMapping};
pub use model::delivery::{Delivery, DeliveryId, DeliveryState};
pub use model::event::{Actor, Attempt, AttemptOutcome, Event, EventKind};
pub use model::money::{Currency, Money, format_value};
pub use model::result::{DEFAULT_MAX_RESULT_BYTES, ResultDocument};
pub use model::submission::{
    MAX_BUSINESS_VALUE, MAX_CORRELATION_BYTES, MAX_CORRELATION_FIELDS, MAX_KEY_BYTES,
    MAX_KIND_BYTES, MAX_PARTNER_BYTES, NewSubmission, Submission, SubmissionId, SubmissionState,
};
pub use partner::{
    AttemptContext, MAX_RETRY_AFTER, Outcome, PartnerAdapter, PartnerError, PollError, PollStatus,
    SubmitOutcome,
};

/// The rusqlite version liaison is built with, for
/// [`store::SqliteStore::enqueue_in_transaction`].
#[cfg(feature = "sqlite")]
#[cfg_attr(docsrs, doc(cfg(feature = "sqlite")))]
pub use rusqlite;

// The README's code must keep compiling.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;
