//! The mock partner's memory: its behaviour, counters, logs and idempotency
//! ledger, shared by the handle, the handlers and the connection tracking.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::http::StatusCode;
use chrono::{DateTime, Utc};
use serde_json::{Value, json};
use tokio::sync::Notify;

use super::behavior::{Behavior, MockOutcome, Terminal};
use super::callback::{CallbackHost, CallbackPlan, final_outcome};
use super::records::{MockStats, ReceivedRequest, SentCallback, SideEffect};
use crate::callback::StandardWebhooks;

/// Everything a partner remembers. One lock, never held across an `.await`.
#[derive(Debug)]
pub(crate) struct Shared {
    ledger: Mutex<Ledger>,
    /// Woken when a handler finishes or a connection closes.
    changed: Notify,
    /// Sends callbacks to the host.
    pub(crate) callback_client: reqwest::Client,
}

#[derive(Debug)]
struct Ledger {
    behavior: Behavior,
    /// Requests since `behavior` was set.
    since_set: u64,
    callback_url: Option<String>,
    /// Signs callbacks, if set.
    callback_signer: Option<StandardWebhooks>,
    stats: MockStats,
    /// Handlers running now.
    current: u64,
    /// Accepted connections not yet closed.
    open_connections: u64,
    keys_seen: HashSet<String>,
    in_progress: HashSet<String>,
    answers: HashMap<String, Stored>,
    references: u64,
    arrivals: u64,
    /// Kept sorted by arrival number.
    received: Vec<(u64, ReceivedRequest)>,
    side_effects: Vec<SideEffect>,
    /// Callback POSTs started.
    callbacks_started: u64,
    /// Finished callback POSTs, kept sorted by start number.
    callback_log: Vec<(u64, SentCallback)>,
    /// What `GET /status/{reference}` answers, by reference.
    statuses: HashMap<String, Status>,
}

/// A reference's result as the status endpoint reports it.
#[derive(Debug)]
struct Status {
    /// From when the result is known; `None`: never (pending for good).
    known_at: Option<Instant>,
    /// The result's body, once known.
    body: Value,
}

/// A processed key's payload and the answer it got, replayed for retries.
#[derive(Debug)]
struct Stored {
    print: BodyPrint,
    answer: Answer,
}

/// What identifies "the same payload": the JSON value when the body is JSON
/// (so key order and whitespace do not matter), the bytes otherwise.
#[derive(Debug, Clone, PartialEq)]
enum BodyPrint {
    Json(Value),
    Raw(Bytes),
}

/// A request body, parsed once.
#[derive(Debug)]
pub(crate) struct Payload {
    /// The JSON body, or `Null`.
    pub(crate) value: Value,
    print: BodyPrint,
}

impl Payload {
    pub(crate) fn new(bytes: Bytes) -> Payload {
        match serde_json::from_slice::<Value>(&bytes) {
            Ok(value) => Payload {
                print: BodyPrint::Json(value.clone()),
                value,
            },
            Err(_) => Payload {
                value: Value::Null,
                print: BodyPrint::Raw(bytes),
            },
        }
    }
}

/// An answer: status, JSON body and, for 429, the `Retry-After` seconds.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Answer {
    pub(crate) status: StatusCode,
    pub(crate) body: Value,
    pub(crate) retry_after_secs: Option<u64>,
}

impl Answer {
    pub(crate) fn new(status: StatusCode, body: Value) -> Answer {
        Answer {
            status,
            body,
            retry_after_secs: None,
        }
    }

    /// `status` with `{"error": message}`.
    pub(crate) fn error(status: StatusCode, message: &str) -> Answer {
        Answer::new(status, json!({ "error": message }))
    }
}

impl Shared {
    pub(crate) fn new(behavior: Behavior, callback_client: reqwest::Client) -> Shared {
        Shared {
            ledger: Mutex::new(Ledger {
                behavior,
                since_set: 0,
                callback_url: None,
                callback_signer: None,
                stats: MockStats::default(),
                current: 0,
                open_connections: 0,
                keys_seen: HashSet::new(),
                in_progress: HashSet::new(),
                answers: HashMap::new(),
                references: 0,
                arrivals: 0,
                received: Vec::new(),
                side_effects: Vec::new(),
                callbacks_started: 0,
                callback_log: Vec::new(),
                statuses: HashMap::new(),
            }),
            changed: Notify::new(),
            callback_client,
        }
    }

    /// The lock; a panic elsewhere while holding it leaves the data usable.
    fn lock(&self) -> MutexGuard<'_, Ledger> {
        self.ledger.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub(crate) fn behavior(&self) -> Behavior {
        self.lock().behavior.clone()
    }

    pub(crate) fn set_behavior(&self, behavior: Behavior) {
        let mut ledger = self.lock();
        ledger.behavior = behavior;
        ledger.since_set = 0;
    }

    pub(crate) fn callback_url(&self) -> Option<String> {
        self.lock().callback_url.clone()
    }

    pub(crate) fn set_callback_url(&self, url: Option<String>) {
        self.lock().callback_url = url;
    }

    pub(crate) fn callback_signer(&self) -> Option<StandardWebhooks> {
        self.lock().callback_signer.clone()
    }

    pub(crate) fn set_callback_signer(&self, signer: Option<StandardWebhooks>) {
        self.lock().callback_signer = signer;
    }

    pub(crate) fn callback_log(&self) -> Vec<SentCallback> {
        self.lock()
            .callback_log
            .iter()
            .map(|(_, sent)| sent.clone())
            .collect()
    }

    pub(crate) fn stats(&self) -> MockStats {
        self.lock().stats
    }

    pub(crate) fn received(&self) -> Vec<ReceivedRequest> {
        self.lock()
            .received
            .iter()
            .map(|(_, request)| request.clone())
            .collect()
    }

    pub(crate) fn side_effects(&self) -> Vec<SideEffect> {
        self.lock().side_effects.clone()
    }

    /// Zero the counters and clear the logs; what the partner remembers about
    /// keys (stored answers, keys in progress) and its behaviour are kept.
    pub(crate) fn reset_stats(&self) {
        let mut ledger = self.lock();
        ledger.stats = MockStats {
            max_concurrent: ledger.current,
            ..MockStats::default()
        };
        ledger.keys_seen.clear();
        ledger.received.clear();
        ledger.side_effects.clear();
        ledger.callback_log.clear();
    }

    /// A request reached the handler: count it and take its number.
    pub(crate) fn arrive(self: &Arc<Self>, key: Option<String>) -> Visit {
        let mut ledger = self.lock();
        ledger.arrivals += 1;
        ledger.since_set += 1;
        ledger.current += 1;
        ledger.stats.requests += 1;
        ledger.stats.max_concurrent = ledger.stats.max_concurrent.max(ledger.current);
        if let Some(key) = &key
            && ledger.keys_seen.insert(key.clone())
        {
            ledger.stats.distinct_keys += 1;
        }
        Visit {
            shared: Arc::clone(self),
            order: ledger.arrivals,
            number: ledger.since_set,
            at: Utc::now(),
            behavior: ledger.behavior.clone(),
            key,
        }
    }

    /// Mark `key` in progress, or `None` if it already is.
    pub(crate) fn mark_in_progress(self: &Arc<Self>, key: &str) -> Option<KeyMark> {
        self.lock()
            .in_progress
            .insert(key.to_owned())
            .then(|| KeyMark {
                shared: Arc::clone(self),
                key: key.to_owned(),
            })
    }

    /// The idempotency layer: replay the stored answer for a known key, refuse
    /// a known key with another payload, or perform the effect once.
    pub(crate) fn process(
        &self,
        key: &str,
        payload: &Payload,
        terminal: Terminal,
    ) -> (Answer, Option<CallbackPlan>) {
        let mut ledger = self.lock();
        if let Some(stored) = ledger.answers.get(key) {
            let answer = if stored.print == payload.print {
                stored.answer.clone()
            } else {
                Answer::error(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "idempotency key reused with a different payload",
                )
            };
            return (answer, None);
        }

        ledger.references += 1;
        let reference = format!("MP-{}", ledger.references);
        // What the status endpoint will answer, and from when.
        let now = Instant::now();
        let status = match &terminal {
            Terminal::Accept => Status {
                known_at: None,
                body: Value::Null,
            },
            Terminal::Complete => Status {
                known_at: Some(now),
                body: result_answer(&reference, &MockOutcome::Succeeded),
            },
            Terminal::CompleteWithFailure { reason } => Status {
                known_at: Some(now),
                body: result_answer(&reference, &MockOutcome::failed(reason.clone())),
            },
            Terminal::Completed(outcome) => Status {
                known_at: Some(now),
                body: result_answer(&reference, outcome),
            },
            Terminal::CallbackLater {
                delay,
                outcome,
                mode,
            } => Status {
                known_at: Some(now + *delay),
                body: result_answer(&reference, &final_outcome(outcome, mode)),
            },
        };
        ledger.statuses.insert(reference.clone(), status);
        let (answer, callback) = match terminal {
            Terminal::Accept => (accepted(&reference), None),
            Terminal::Completed(outcome) => (
                Answer::new(StatusCode::OK, result_answer(&reference, &outcome)),
                None,
            ),
            Terminal::Complete => (
                Answer::new(
                    StatusCode::OK,
                    json!({ "reference": reference, "status": "succeeded" }),
                ),
                None,
            ),
            Terminal::CompleteWithFailure { reason } => (
                Answer::new(
                    StatusCode::OK,
                    json!({ "reference": reference, "status": "failed", "reason": reason }),
                ),
                None,
            ),
            Terminal::CallbackLater {
                delay,
                outcome,
                mode,
            } => (
                accepted(&reference),
                Some(CallbackPlan::new(delay, &reference, key, &outcome, &mode)),
            ),
        };
        ledger.side_effects.push(SideEffect {
            idempotency_key: key.to_owned(),
            reference,
            body: payload.value.clone(),
            at: Utc::now(),
        });
        ledger.stats.side_effects += 1;
        ledger.answers.insert(
            key.to_owned(),
            Stored {
                print: payload.print.clone(),
                answer: answer.clone(),
            },
        );
        (answer, callback)
    }

    /// `GET /status/{reference}`: the result once known, `pending` before,
    /// 404 for a reference the partner never gave.
    pub(crate) fn status(&self, reference: &str) -> Answer {
        let ledger = self.lock();
        match ledger.statuses.get(reference) {
            None => Answer::error(StatusCode::NOT_FOUND, "unknown reference"),
            Some(Status {
                known_at: Some(at),
                body,
            }) if *at <= Instant::now() => Answer::new(StatusCode::OK, body.clone()),
            Some(_) => Answer::new(
                StatusCode::OK,
                json!({ "reference": reference, "status": "pending" }),
            ),
        }
    }

    /// A callback POST is starting: its number, for the log's order.
    pub(crate) fn callback_started(&self) -> u64 {
        let mut ledger = self.lock();
        ledger.callbacks_started += 1;
        ledger.callbacks_started
    }

    /// Callback POST number `order` finished: count it and log it (in the
    /// order the POSTs started).
    pub(crate) fn record_callback(&self, order: u64, sent: SentCallback) {
        let mut ledger = self.lock();
        ledger.stats.callbacks_sent += 1;
        if !sent.delivered() {
            ledger.stats.callbacks_failed += 1;
        }
        let at = ledger
            .callback_log
            .partition_point(|(started, _)| *started < order);
        ledger.callback_log.insert(at, (order, sent));
    }

    pub(crate) fn connection_opened(&self) {
        self.lock().open_connections += 1;
    }

    pub(crate) fn connection_closed(&self) {
        self.lock().open_connections -= 1;
        self.changed.notify_waiters();
    }

    /// After the listener closed: wait until every connection left open has a
    /// request in progress (idle keep-alive connections are closed by the
    /// graceful shutdown), at most `patience`.
    pub(crate) async fn idle_connections_closed(&self, patience: Duration) {
        let deadline = tokio::time::Instant::now() + patience;
        loop {
            // Created before the check, so a change in between still wakes us.
            let changed = self.changed.notified();
            {
                let ledger = self.lock();
                if ledger.open_connections <= ledger.current {
                    return;
                }
            }
            if tokio::time::timeout_at(deadline, changed).await.is_err() {
                return;
            }
        }
    }
}

/// A synchronous or polled result: `{"reference", "status"}`, `"reason"`
/// when it failed, and the outcome's fields.
fn result_answer(reference: &str, outcome: &MockOutcome) -> Value {
    let mut body = outcome.fields();
    body.insert("reference".to_owned(), json!(reference));
    body.insert("status".to_owned(), json!(outcome.status()));
    if let Some(reason) = outcome.reason() {
        body.insert("reason".to_owned(), json!(reason));
    }
    Value::Object(body)
}

fn accepted(reference: &str) -> Answer {
    Answer::new(StatusCode::ACCEPTED, json!({ "reference": reference }))
}

/// One request in the handler, from its arrival until it is answered or
/// abandoned. Dropping it (even by cancellation) ends its concurrency count.
#[derive(Debug)]
pub(crate) struct Visit {
    shared: Arc<Shared>,
    order: u64,
    /// 1-based, since the behaviour was set.
    pub(crate) number: u64,
    at: DateTime<Utc>,
    /// The behaviour when the request arrived.
    pub(crate) behavior: Behavior,
    key: Option<String>,
}

impl Visit {
    /// Log the answer in `received` (in arrival order).
    pub(crate) fn log(&self, body: Value, status: StatusCode) {
        let request = ReceivedRequest {
            idempotency_key: self.key.clone(),
            body,
            at: self.at,
            status: status.as_u16(),
        };
        let mut ledger = self.shared.lock();
        let at = ledger
            .received
            .partition_point(|(order, _)| *order < self.order);
        ledger.received.insert(at, (self.order, request));
    }
}

impl Drop for Visit {
    fn drop(&mut self) {
        self.shared.lock().current -= 1;
        self.shared.changed.notify_waiters();
    }
}

/// A key in progress; dropping it (even by cancellation) clears the mark.
#[derive(Debug)]
pub(crate) struct KeyMark {
    shared: Arc<Shared>,
    key: String,
}

impl Drop for KeyMark {
    fn drop(&mut self) {
        self.shared.lock().in_progress.remove(&self.key);
    }
}

impl CallbackHost for Shared {
    fn callback_url(&self) -> Option<String> {
        Shared::callback_url(self)
    }

    fn callback_signer(&self) -> Option<StandardWebhooks> {
        Shared::callback_signer(self)
    }

    fn callback_client(&self) -> &reqwest::Client {
        &self.callback_client
    }

    fn callback_started(&self) -> u64 {
        Shared::callback_started(self)
    }

    fn record_callback(&self, order: u64, sent: SentCallback) {
        Shared::record_callback(self, order, sent)
    }
}
