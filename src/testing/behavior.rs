//! What the mock partner does with a request: [`Behavior`] and [`MockOutcome`].

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use serde_json::{Map, Value};

/// How a [`MockPartner`](super::MockPartner) answers `POST /submit`.
///
/// Wrapping behaviours ([`Flaky`](Behavior::Flaky), [`Slow`](Behavior::Slow),
/// [`RateLimited`](Behavior::RateLimited)) act in front of the one they wrap, the
/// way a load balancer or gateway answers before the partner's application sees
/// the request: `Behavior::flaky(3, Behavior::slow(d, Behavior::Healthy))` answers
/// every third request 503 at once and sleeps before accepting the others.
///
/// Requests are counted from the moment the behaviour is set (with
/// [`MockPartner::start_with`](super::MockPartner::start_with) or
/// [`MockPartner::set_behavior`](super::MockPartner::set_behavior)), 1-based, and
/// every request that reaches the partner counts, whatever it was answered.
///
/// Only [`Healthy`](Behavior::Healthy), [`AcceptAndComplete`](Behavior::AcceptAndComplete),
/// [`CompleteWithFailure`](Behavior::CompleteWithFailure), [`Complete`](Behavior::Complete)
/// and [`CallbackLater`](Behavior::CallbackLater) (and a [`Scripted`](Behavior::Scripted)
/// partner when its script picks one of them) reach the partner's idempotency layer:
/// they need an `Idempotency-Key`, record a side effect the first time a key is
/// processed, and replay the stored answer after that. The failure answers (503,
/// 429, [`Reject`](Behavior::Reject), [`Failing`](Behavior::Failing)) have no
/// effect and are not remembered.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum Behavior {
    /// Accept asynchronously: 202 `{"reference": "..."}`; the result is never
    /// reported (use [`CallbackLater`](Behavior::CallbackLater) for a partner
    /// that calls back).
    Healthy,
    /// Process synchronously: 200 `{"reference": "...", "status": "succeeded"}`.
    AcceptAndComplete,
    /// Process synchronously but report failure: 200
    /// `{"reference": "...", "status": "failed", "reason": "..."}`. The side
    /// effect is recorded: the partner did process the request.
    CompleteWithFailure {
        /// The reason given in the answer.
        reason: String,
    },
    /// Every `every`-th request (`every`, `2 * every`, ...) is answered 503 with
    /// no effect; the others are handled by `then`. `every: 0` never fails.
    Flaky {
        /// Fail one request in this many.
        every: u32,
        /// What answers the other requests.
        then: Box<Behavior>,
    },
    /// Sleep `delay`, then let `then` answer. The request counts as in progress
    /// (for its idempotency key and for `max_concurrent`) during the sleep; a
    /// request abandoned by its client during the sleep has no effect.
    Slow {
        /// How long to sleep first.
        delay: Duration,
        /// What answers after the sleep.
        then: Box<Behavior>,
    },
    /// Answer 429 with `Retry-After: <seconds>` (whole seconds, rounded up) to
    /// the first `times` requests, then let `then` answer.
    RateLimited {
        /// The wait announced in `Retry-After`.
        retry_after: Duration,
        /// How many requests are refused.
        times: u32,
        /// What answers after that.
        then: Box<Behavior>,
    },
    /// Answer `status` (for example 422) with `{"error": "..."}`; no effect. A
    /// number that is not an HTTP status is answered as 500.
    Reject {
        /// The status to answer.
        status: u16,
    },
    /// Answer 500 to everything: the server is up but processing is broken.
    Failing,
    /// Accept with 202 `{"reference": "..."}`, then, `delay` later, POST the
    /// result to the callback URL (see
    /// [`MockPartner::set_callback_url`](super::MockPartner::set_callback_url))
    /// with `content-type: application/json`:
    ///
    /// ```json
    /// {"event_id": "<uuid>", "reference": "MP-1", "idempotency_key": "<key>",
    ///  "status": "succeeded", "reason": null}
    /// ```
    ///
    /// (`"status": "failed"` with the reason for [`MockOutcome::Failed`]),
    /// plus the outcome's [fields](MockOutcome::with_field), its result
    /// document.
    /// `mode` makes the callback misbehave the ways real partners' callbacks
    /// do (see [`CallbackMode`]); [`callback_later`](Behavior::callback_later)
    /// is [`CallbackMode::Normal`].
    ///
    /// With [`MockPartner::set_callback_signing`](super::MockPartner::set_callback_signing),
    /// every delivery is signed the Standard Webhooks way: `webhook-id` (the
    /// body's `event_id`), `webhook-timestamp` (Unix seconds at sending) and
    /// `webhook-signature` over the exact bytes sent.
    ///
    /// Each delivery is one attempt: a host that answers non-2xx, or does not
    /// answer, gets no retry from the mock (real partners retry; the host's
    /// idempotent ingest makes that safe, and
    /// [`CallbackMode::Duplicate`] sends the repeat explicitly). Every attempt
    /// is counted in [`MockStats`](super::MockStats)' `callbacks_sent`, in
    /// `callbacks_failed` too if it was not answered 2xx, and listed in
    /// [`MockPartner::callback_log`](super::MockPartner::callback_log). The
    /// deliveries of one accepted request are sent one after the other. The
    /// URL (and the signing) is read when each delivery is due; with no URL
    /// set, nothing is sent or counted. A replayed answer (same key again)
    /// sends no second callback.
    CallbackLater {
        /// How long after accepting the first delivery is sent.
        delay: Duration,
        /// The result reported.
        outcome: MockOutcome,
        /// How the callback is delivered.
        mode: CallbackMode,
    },
    /// Process synchronously and answer 200 with `outcome`:
    /// `{"reference": "...", "status": "succeeded"}` or
    /// `{"reference": "...", "status": "failed", "reason": "..."}`, plus the
    /// outcome's [fields](MockOutcome::with_field) (its result document):
    ///
    /// ```json
    /// {"reference": "MP-1", "status": "succeeded",
    ///  "adjudication": {"decision": "approved", "paid": 12500, "claim_no": "CH-000123"}}
    /// ```
    ///
    /// [`AcceptAndComplete`](Behavior::AcceptAndComplete) is
    /// `Complete { outcome: MockOutcome::Succeeded }` and
    /// [`CompleteWithFailure`](Behavior::CompleteWithFailure) is
    /// `Complete { outcome: MockOutcome::failed(reason) }`.
    Complete {
        /// The result answered.
        outcome: MockOutcome,
    },
    /// Decide per request: the script is given the request's JSON body (or
    /// `Null`) and returns the behaviour that answers it, so one partner can
    /// approve one claim, deny another and leave a third to the poll. It is
    /// asked again for every request, retries included (the idempotency layer
    /// still replays a processed key's stored answer). A script may return a
    /// wrapping behaviour; a script that returns another `Scripted` is answered
    /// 500.
    Scripted(MockScript),
}

impl Behavior {
    /// [`Behavior::Flaky`]: every `every`-th request fails with 503.
    pub fn flaky(every: u32, then: Behavior) -> Behavior {
        Behavior::Flaky {
            every,
            then: Box::new(then),
        }
    }

    /// [`Behavior::Slow`]: sleep `delay` before `then` answers.
    pub fn slow(delay: Duration, then: Behavior) -> Behavior {
        Behavior::Slow {
            delay,
            then: Box::new(then),
        }
    }

    /// [`Behavior::RateLimited`]: the first `times` requests get 429 with
    /// `Retry-After`.
    pub fn rate_limited(retry_after: Duration, times: u32, then: Behavior) -> Behavior {
        Behavior::RateLimited {
            retry_after,
            times,
            then: Box::new(then),
        }
    }

    /// [`Behavior::Reject`] with `status`.
    pub fn reject(status: u16) -> Behavior {
        Behavior::Reject { status }
    }

    /// [`Behavior::CompleteWithFailure`] with `reason`.
    pub fn complete_with_failure(reason: impl Into<String>) -> Behavior {
        Behavior::CompleteWithFailure {
            reason: reason.into(),
        }
    }

    /// [`Behavior::Complete`]: answer `outcome` at once, 200.
    pub fn complete(outcome: MockOutcome) -> Behavior {
        Behavior::Complete { outcome }
    }

    /// [`Behavior::Scripted`]: `script` picks the behaviour for each request
    /// from its JSON body.
    pub fn scripted(script: impl Fn(&Value) -> Behavior + Send + Sync + 'static) -> Behavior {
        Behavior::Scripted(MockScript(Arc::new(script)))
    }

    /// [`Behavior::CallbackLater`]: accept, and report `outcome` to the
    /// callback URL `delay` later, once ([`CallbackMode::Normal`]).
    pub fn callback_later(delay: Duration, outcome: MockOutcome) -> Behavior {
        Behavior::callback_later_with(delay, outcome, CallbackMode::Normal)
    }

    /// [`Behavior::CallbackLater`] with a misbehaving callback: accept, and
    /// report `outcome` the way `mode` says.
    pub fn callback_later_with(
        delay: Duration,
        outcome: MockOutcome,
        mode: CallbackMode,
    ) -> Behavior {
        Behavior::CallbackLater {
            delay,
            outcome,
            mode,
        }
    }
}

/// How a [`Behavior::CallbackLater`] partner delivers its callback.
///
/// Every mode but [`Never`](CallbackMode::Never) sends the documented JSON
/// body (below, "the result"), except [`Malformed`](CallbackMode::Malformed).
/// Signing (see
/// [`MockPartner::set_callback_signing`](super::MockPartner::set_callback_signing))
/// applies to every delivery, except that
/// [`WrongSignature`](CallbackMode::WrongSignature) signs with another secret.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum CallbackMode {
    /// The result, once, `delay` after the 202.
    #[default]
    Normal,
    /// Accept, and never call back.
    Never,
    /// One delivery whose body is not the documented JSON, nor JSON at all:
    /// `<result reference="MP-1" status="succeeded"/>`, still
    /// `content-type: application/json` and signed if signing is on.
    Malformed,
    /// The same delivery twice, one after the other: the same body bytes,
    /// the same `event_id` and the same `webhook-id` (each is signed when it
    /// is sent, so its timestamp and signature may differ).
    Duplicate,
    /// The result, then a second delivery with the same `event_id` (and
    /// `webhook-id`) reporting the opposite status: `failed` with reason
    /// `"conflicting report"` after a success, `succeeded` (reason `null`)
    /// after a failure.
    Conflicting,
    /// The result, signed with a secret generated for the occasion, so it
    /// never verifies. Without signing configured it still carries
    /// `webhook-id`, `webhook-timestamp` and that `webhook-signature`.
    WrongSignature,
    /// The result, then a second delivery with a fresh `event_id` (a new
    /// event, as a partner sends when it revises its adjudication) reporting
    /// this result instead: another amount, another document, or another
    /// status. The status endpoint answers the revised result.
    Revised(MockOutcome),
    /// The result is sent before the 202 answers the submit: the handler
    /// waits `delay`, POSTs the callback and waits for the host's answer (at
    /// most 5 s), and only then answers the submitter. A host sees a result
    /// for a reference it has not been told yet.
    Early,
    /// [`Early`](CallbackMode::Early) and [`Duplicate`](CallbackMode::Duplicate)
    /// at once: the same delivery twice, one after the other, both sent and
    /// answered before the 202 answers the submit (a partner that retries
    /// a callback it thinks was lost, before the host knows the reference).
    EarlyDuplicate,
}

/// The function of a [`Behavior::Scripted`] partner: from a request's JSON
/// body to the behaviour that answers it. Two scripts are equal when they are
/// the same function object (clones of one script).
#[derive(Clone)]
pub struct MockScript(Arc<dyn Fn(&Value) -> Behavior + Send + Sync>);

impl MockScript {
    /// The behaviour for a request with this body.
    pub fn decide(&self, body: &Value) -> Behavior {
        (self.0)(body)
    }
}

impl fmt::Debug for MockScript {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("MockScript(..)")
    }
}

impl PartialEq for MockScript {
    fn eq(&self, other: &MockScript) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }
}

/// The result a partner reports: in a callback ([`Behavior::CallbackLater`]),
/// a synchronous answer ([`Behavior::Complete`]) and the status endpoint
/// (`GET /status/{reference}`, see [`MockPartner`](super::MockPartner)).
///
/// A result can carry a document, the way real partners attach their
/// adjudication, remittance or booking to the status:
/// [`with_field`](MockOutcome::with_field) adds a member to every body that
/// reports the result.
///
/// ```
/// use liaison::testing::MockOutcome;
/// use serde_json::json;
///
/// // {"status": "succeeded", "adjudication": {...}, ...}
/// let approved = MockOutcome::Succeeded.with_field(
///     "adjudication",
///     json!({"decision": "approved", "paid": 12500, "claim_no": "CH-000123"}),
/// );
/// // {"status": "failed", "reason": "...", "adjudication": {...}, ...}
/// let denied = MockOutcome::failed("claim lacks information")
///     .with_field("adjudication", json!({"decision": "denied", "codes": ["CO-16"]}));
/// assert!(approved.is_success() && !denied.is_success());
/// assert_eq!(denied.fields()["adjudication"]["codes"][0], "CO-16");
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum MockOutcome {
    /// `"status": "succeeded"`.
    Succeeded,
    /// `"status": "failed"` with the reason.
    Failed {
        /// The reason reported.
        reason: String,
    },
    /// `outcome`, with `fields` added to the body that reports it. The
    /// documented members (`event_id`, `reference`, `idempotency_key`,
    /// `status`, `reason`) win over fields of the same name.
    WithFields {
        /// The status reported.
        outcome: Box<MockOutcome>,
        /// Members added to the body.
        fields: Map<String, Value>,
    },
}

impl MockOutcome {
    /// [`MockOutcome::Failed`] with `reason`.
    pub fn failed(reason: impl Into<String>) -> MockOutcome {
        MockOutcome::Failed {
            reason: reason.into(),
        }
    }

    /// This result with the member `name: value` in its body (replacing a
    /// field of that name added before).
    pub fn with_field(self, name: impl Into<String>, value: Value) -> MockOutcome {
        match self {
            MockOutcome::WithFields {
                outcome,
                mut fields,
            } => {
                fields.insert(name.into(), value);
                MockOutcome::WithFields { outcome, fields }
            }
            plain => {
                let mut fields = Map::new();
                fields.insert(name.into(), value);
                MockOutcome::WithFields {
                    outcome: Box::new(plain),
                    fields,
                }
            }
        }
    }

    /// Whether it reports `"status": "succeeded"`.
    pub fn is_success(&self) -> bool {
        match self {
            MockOutcome::Succeeded => true,
            MockOutcome::Failed { .. } => false,
            MockOutcome::WithFields { outcome, .. } => outcome.is_success(),
        }
    }

    /// The failure reason, for a failed result.
    pub fn reason(&self) -> Option<&str> {
        match self {
            MockOutcome::Succeeded => None,
            MockOutcome::Failed { reason } => Some(reason),
            MockOutcome::WithFields { outcome, .. } => outcome.reason(),
        }
    }

    /// The members added to the body (empty for a plain result).
    pub fn fields(&self) -> Map<String, Value> {
        match self {
            MockOutcome::Succeeded | MockOutcome::Failed { .. } => Map::new(),
            MockOutcome::WithFields { outcome, fields } => {
                let mut all = outcome.fields();
                all.extend(fields.clone());
                all
            }
        }
    }

    /// `"succeeded"` or `"failed"`.
    pub(crate) fn status(&self) -> &'static str {
        if self.is_success() {
            "succeeded"
        } else {
            "failed"
        }
    }
}

/// What the behaviour chain says about request number `number` (1-based,
/// counted since the behaviour was set).
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Step {
    /// Answer this failure now; no effect.
    Fail(Failure),
    /// Sleep, then look at the rest of the chain.
    Sleep(Duration, Box<Behavior>),
    /// Hand the request to the idempotency layer.
    Process(Terminal),
    /// Ask the script which behaviour answers, then go on with it.
    Script(MockScript),
}

/// A behaviour that processes the request (and so has an effect).
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Terminal {
    /// [`Behavior::Healthy`].
    Accept,
    /// [`Behavior::AcceptAndComplete`].
    Complete,
    /// [`Behavior::CompleteWithFailure`].
    CompleteWithFailure { reason: String },
    /// [`Behavior::Complete`].
    Completed(MockOutcome),
    /// [`Behavior::CallbackLater`].
    CallbackLater {
        delay: Duration,
        outcome: MockOutcome,
        mode: CallbackMode,
    },
}

/// A failure answer that never reaches the idempotency layer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Failure {
    /// 503 from [`Behavior::Flaky`].
    Unavailable,
    /// 429 with this many `Retry-After` seconds.
    RateLimited { retry_after_secs: u64 },
    /// [`Behavior::Reject`].
    Reject { status: u16 },
    /// [`Behavior::Failing`].
    Broken,
}

impl Behavior {
    /// Walk the wrappers until a sleep, a failure or a terminal behaviour.
    pub(crate) fn step(self, number: u64) -> Step {
        let mut behavior = self;
        loop {
            behavior = match behavior {
                Behavior::Flaky { every, then } => {
                    if every != 0 && number.is_multiple_of(u64::from(every)) {
                        return Step::Fail(Failure::Unavailable);
                    }
                    *then
                }
                Behavior::RateLimited {
                    retry_after,
                    times,
                    then,
                } => {
                    if number <= u64::from(times) {
                        return Step::Fail(Failure::RateLimited {
                            retry_after_secs: whole_seconds_up(retry_after),
                        });
                    }
                    *then
                }
                Behavior::Slow { delay, then } => return Step::Sleep(delay, then),
                Behavior::Reject { status } => return Step::Fail(Failure::Reject { status }),
                Behavior::Failing => return Step::Fail(Failure::Broken),
                Behavior::Healthy => return Step::Process(Terminal::Accept),
                Behavior::AcceptAndComplete => return Step::Process(Terminal::Complete),
                Behavior::CompleteWithFailure { reason } => {
                    return Step::Process(Terminal::CompleteWithFailure { reason });
                }
                Behavior::Complete { outcome } => {
                    return Step::Process(Terminal::Completed(outcome));
                }
                Behavior::Scripted(script) => return Step::Script(script),
                Behavior::CallbackLater {
                    delay,
                    outcome,
                    mode,
                } => {
                    return Step::Process(Terminal::CallbackLater {
                        delay,
                        outcome,
                        mode,
                    });
                }
            };
        }
    }
}

/// `Retry-After` seconds: whole seconds, rounded up.
fn whole_seconds_up(wait: Duration) -> u64 {
    wait.as_secs() + u64::from(wait.subsec_nanos() > 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_rounds_up_to_whole_seconds() {
        assert_eq!(whole_seconds_up(Duration::ZERO), 0);
        assert_eq!(whole_seconds_up(Duration::from_millis(1)), 1);
        assert_eq!(whole_seconds_up(Duration::from_secs(2)), 2);
        assert_eq!(whole_seconds_up(Duration::from_millis(2001)), 3);
    }

    #[test]
    fn callback_later_is_the_normal_mode() {
        assert_eq!(CallbackMode::default(), CallbackMode::Normal);
        let d = Duration::from_millis(5);
        assert_eq!(
            Behavior::callback_later(d, MockOutcome::Succeeded),
            Behavior::callback_later_with(d, MockOutcome::Succeeded, CallbackMode::Normal)
        );
        let early = Behavior::callback_later_with(d, MockOutcome::Succeeded, CallbackMode::Early);
        assert_eq!(
            Behavior::slow(d, early).step(1),
            Step::Sleep(
                d,
                Box::new(Behavior::CallbackLater {
                    delay: d,
                    outcome: MockOutcome::Succeeded,
                    mode: CallbackMode::Early,
                })
            )
        );
    }

    #[test]
    fn wrappers_apply_outside_in() {
        let b = Behavior::flaky(
            2,
            Behavior::rate_limited(Duration::from_millis(1500), 3, Behavior::AcceptAndComplete),
        );
        let limited = Step::Fail(Failure::RateLimited {
            retry_after_secs: 2,
        });
        assert_eq!(b.clone().step(1), limited);
        assert_eq!(b.clone().step(2), Step::Fail(Failure::Unavailable));
        assert_eq!(b.clone().step(3), limited);
        assert_eq!(b.clone().step(4), Step::Fail(Failure::Unavailable));
        assert_eq!(b.step(5), Step::Process(Terminal::Complete));

        assert_eq!(
            Behavior::flaky(0, Behavior::Healthy).step(7),
            Step::Process(Terminal::Accept)
        );
        let slow = Behavior::slow(Duration::from_millis(5), Behavior::Failing);
        assert_eq!(
            slow.step(1),
            Step::Sleep(Duration::from_millis(5), Box::new(Behavior::Failing))
        );
    }
}
