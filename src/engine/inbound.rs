//! Inbound callbacks: verify and parse, then store, match and apply in one
//! transaction, answered after its commit.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant, SystemTime};

use chrono::Utc;
use http::header::{
    AUTHORIZATION, COOKIE, HeaderMap, HeaderName, HeaderValue, PROXY_AUTHORIZATION,
};
use sha2::{Digest, Sha256};
use tracing::Instrument;

use super::Liaison;
use crate::callback::{CallbackId, CallbackReceipt, Disposition, InboundCallback, StoredCallback};
use crate::error::{Error, Result};
use crate::model::event::{Actor, EventKind};
use crate::model::submission::{SubmissionState, validate_partner};
use crate::ops::journal::{JournalLine, OpsAction};
use crate::store::rules::callbacks::{MAX_METADATA_HEADER_BYTES, METADATA_HEADERS};
use crate::store::{NewCallback, Note, Settlement};

/// The callback size cap for partners that do not set one: 1 MiB.
pub(crate) const DEFAULT_CALLBACK_CAP: usize = 1024 * 1024;

/// A matcher's verdict on a callback, before the store settles it.
enum Judged {
    Rejected(String),
    Malformed(String),
    Report(crate::callback::CallbackReport),
}

/// Verify, then parse.
fn judge_with(
    matcher: &dyn crate::callback::CallbackMatcher,
    callback: &InboundCallback,
    arrived: SystemTime,
) -> Judged {
    match matcher.verify(callback, arrived) {
        Err(e) => Judged::Rejected(e.to_string()),
        Ok(()) => match matcher.parse(callback) {
            Err(e) => Judged::Malformed(e.reason),
            Ok(report) => Judged::Report(report),
        },
    }
}

/// Most headers kept with a stored callback.
const MAX_KEPT_HEADERS: usize = 64;
/// Longest header value kept, in bytes.
const MAX_KEPT_HEADER_BYTES: usize = 8 * 1024;

/// The headers worth keeping for reprocessing (signature headers above all),
/// without credentials.
fn kept_headers(headers: &HeaderMap) -> Vec<(String, String)> {
    headers
        .iter()
        .filter(|(name, _)| ![AUTHORIZATION, COOKIE, PROXY_AUTHORIZATION].contains(name))
        .filter(|(_, value)| value.len() <= MAX_KEPT_HEADER_BYTES)
        .take(MAX_KEPT_HEADERS)
        .map(|(name, value)| {
            (
                name.as_str().to_owned(),
                String::from_utf8_lossy(value.as_bytes()).into_owned(),
            )
        })
        .collect()
}

/// The allowlisted headers ([`METADATA_HEADERS`]) of a callback stored as
/// metadata only.
fn metadata_headers(headers: &HeaderMap) -> Vec<(String, String)> {
    METADATA_HEADERS
        .iter()
        .filter_map(|name| {
            let value = headers.get(*name)?;
            (value.len() <= MAX_METADATA_HEADER_BYTES).then(|| {
                (
                    (*name).to_owned(),
                    String::from_utf8_lossy(value.as_bytes()).into_owned(),
                )
            })
        })
        .collect()
}

/// Counts callbacks to names that are no configured partner, and logs them
/// at most once per [`UnknownCallbacks::LOG_INTERVAL`]: a flood makes one
/// warning a minute with the count since the last, not one per request.
#[derive(Debug, Default)]
pub(crate) struct UnknownCallbacks {
    since_log: AtomicU64,
    last_log: Mutex<Option<Instant>>,
}

impl UnknownCallbacks {
    /// At most one warning this often.
    pub(crate) const LOG_INTERVAL: Duration = Duration::from_secs(60);

    fn seen(&self, metrics: &crate::ops::Metrics) {
        metrics.callback_to_unknown_partner();
        self.since_log.fetch_add(1, Ordering::Relaxed);
        let now = Instant::now();
        let mut last = self.last_log.lock().unwrap_or_else(PoisonError::into_inner);
        if last.is_some_and(|at| now.duration_since(at) < Self::LOG_INTERVAL) {
            return;
        }
        *last = Some(now);
        let count = self.since_log.swap(0, Ordering::Relaxed);
        tracing::warn!(
            count,
            "callbacks to names that are no configured partner (stored without their bodies)"
        );
    }
}

/// Counts, per configured partner and clock hour (UTC), the callbacks that
/// failed verification, to cap how many of their bodies are kept
/// ([`super::EngineSettings::unverified_bodies_per_hour`]). In memory, per
/// engine instance.
#[derive(Debug, Default)]
pub(crate) struct UnverifiedBodies {
    /// Partner -> (hour since the epoch, rejections counted in it).
    counts: Mutex<HashMap<String, (i64, u32)>>,
}

impl UnverifiedBodies {
    /// Count one more rejection for `partner` now; true when it is past
    /// `cap` (`None`: no cap) and its body is not to be kept.
    fn past_cap(&self, partner: &str, cap: Option<u32>) -> bool {
        let Some(cap) = cap else {
            return false;
        };
        let hour = Utc::now().timestamp().div_euclid(3600);
        let mut counts = self.counts.lock().unwrap_or_else(PoisonError::into_inner);
        // Only configured partners are counted: the map stays small. Hours
        // gone by are forgotten.
        counts.retain(|_, (at, _)| *at == hour);
        let count = counts.entry(partner.to_owned()).or_insert((hour, 0));
        count.1 = count.1.saturating_add(1);
        count.1 > cap
    }
}

fn headers_from(kept: &[(String, String)]) -> HeaderMap {
    let mut map = HeaderMap::new();
    for (name, value) in kept {
        if let (Ok(name), Ok(value)) = (
            HeaderName::from_bytes(name.as_bytes()),
            HeaderValue::from_str(value),
        ) {
            map.append(name, value);
        }
    }
    map
}

impl Liaison {
    /// Take one callback from a partner: store it raw, then verify, parse,
    /// match and apply it. The receipt says what was done and which HTTP
    /// status to answer. Errors are storage failures only (answer 503 so the
    /// partner retries), except [`Error::InvalidInput`] for a `partner` that
    /// is not a valid partner name (the alphabet of configured names: letters,
    /// digits, `_ - . : /`, at most 64 bytes): nothing is stored for it, and it
    /// should be answered like a rejected callback (401). Every other kind of
    /// bad input is a disposition.
    ///
    /// | disposition | status |
    /// |---|---|
    /// | applied, duplicate, conflicting, late | 200 |
    /// | unmatched (kept for a late match) | 202 |
    /// | malformed | 400 |
    /// | rejected: bad signature, unknown partner, or none configured for callbacks | 401 |
    /// | too large | 413 |
    ///
    /// An unknown partner is answered exactly like a bad signature, so that
    /// probing cannot tell which partner names are configured.
    pub async fn ingest_callback(
        &self,
        partner: &str,
        headers: &HeaderMap,
        body: &[u8],
    ) -> Result<CallbackReceipt> {
        // The name comes from outside: logged quoted and escaped (Debug).
        let span = tracing::info_span!("liaison.callback", partner = ?partner, size = body.len());
        self.ingest(partner, headers, body).instrument(span).await
    }

    /// The largest callback body accepted for `partner` (the default cap for
    /// an unknown one).
    pub fn callback_cap(&self, partner: &str) -> usize {
        self.shared
            .partners
            .get(partner)
            .map_or(DEFAULT_CALLBACK_CAP, |rt| rt.config.max_callback_bytes)
    }

    /// The largest [`Liaison::callback_cap`] of any name: of the configured
    /// partners, and the default cap that unknown names get.
    pub fn largest_callback_cap(&self) -> usize {
        self.shared
            .partners
            .values()
            .map(|rt| rt.config.max_callback_bytes)
            .fold(DEFAULT_CALLBACK_CAP, usize::max)
    }

    /// Record a callback whose body was not kept because it is above the
    /// cap: its metadata is stored and the partner is answered 413. A
    /// `partner` that is not a valid partner name is refused with
    /// [`Error::InvalidInput`] and nothing is stored (answer it 401, as
    /// [`Liaison::ingest_callback`] says).
    pub async fn refuse_oversized(
        &self,
        partner: &str,
        headers: &HeaderMap,
        size: u64,
    ) -> Result<CallbackReceipt> {
        validate_partner(partner)?;
        let cap = self.callback_cap(partner);
        let reason = format!("body of {size} bytes is above the limit of {cap} bytes");
        self.record_unread(partner, headers, size, Disposition::TooLarge, reason)
            .await
    }

    /// Record a callback whose client stopped sending before its body ended
    /// (it disconnected, or the connection broke): `received` bytes came of
    /// the `declared` length, if one was declared. Its metadata is stored
    /// as [`Disposition::Incomplete`], so it is told apart from a body above
    /// the cap; nothing of the body is kept (a partial body is not the
    /// partner's message). Errors as for [`Liaison::refuse_oversized`].
    pub async fn record_incomplete(
        &self,
        partner: &str,
        headers: &HeaderMap,
        received: u64,
        declared: Option<u64>,
    ) -> Result<CallbackReceipt> {
        validate_partner(partner)?;
        let reason = match declared {
            Some(declared) => format!(
                "the client stopped sending after {received} of the {declared} bytes it announced"
            ),
            None => format!("the client stopped sending after {received} bytes"),
        };
        self.record_unread(partner, headers, received, Disposition::Incomplete, reason)
            .await
    }

    /// Store the metadata of a callback whose body was not read whole.
    async fn record_unread(
        &self,
        partner: &str,
        headers: &HeaderMap,
        size: u64,
        disposition: Disposition,
        reason: String,
    ) -> Result<CallbackReceipt> {
        let unknown = !self.shared.partners.contains_key(partner);
        let new = NewCallback {
            partner: partner.to_owned(),
            received_at: self.shared.now(),
            headers: if unknown {
                metadata_headers(headers)
            } else {
                kept_headers(headers)
            },
            body: None,
            body_hash: String::new(),
            size,
            disposition,
            error: Some(reason.clone()),
        };
        let id = self.shared.store.record_callback(new).await?;
        if unknown {
            self.shared.unknown_callbacks.seen(&self.shared.metrics);
        } else {
            tracing::warn!(callback_id = %id, partner = ?partner, %reason, "callback refused");
        }
        Ok(CallbackReceipt {
            callback_id: id,
            disposition,
            http_status: disposition.http_status(),
            submission_id: None,
            detail: Some(reason),
        })
    }

    async fn ingest(
        &self,
        partner: &str,
        headers: &HeaderMap,
        body: &[u8],
    ) -> Result<CallbackReceipt> {
        // A name outside the partner alphabet (control characters, spaces,
        // too long) is no partner's: refused before anything is stored.
        validate_partner(partner)?;
        if body.len() > self.callback_cap(partner) {
            return self
                .refuse_oversized(partner, headers, body.len() as u64)
                .await;
        }
        let received_at = self.shared.now();
        let store = &self.shared.store;
        let new = NewCallback {
            // An unknown (valid) name is stored too (as metadata only), so
            // nothing inbound goes unseen.
            partner: partner.to_owned(),
            received_at,
            headers: kept_headers(headers),
            body: Some(body.to_vec()),
            body_hash: hex::encode(Sha256::digest(body)),
            size: body.len() as u64,
            disposition: Disposition::Received,
            error: None,
        };
        if !self.shared.partners.contains_key(partner) {
            // Anyone can post to any name: for one that is no configured
            // partner only the metadata is kept (size, hash, allowlisted
            // headers), so such posts cannot fill the database, and they are
            // counted rather than logged one by one.
            let reason = format!("no partner {partner:?} is configured to receive callbacks");
            let id = store
                .record_callback(NewCallback {
                    headers: metadata_headers(headers),
                    body: None,
                    disposition: Disposition::Rejected,
                    error: Some(reason.clone()),
                    ..new
                })
                .await?;
            self.shared.unknown_callbacks.seen(&self.shared.metrics);
            return Ok(Self::refused(id, reason));
        }
        let configured = self
            .shared
            .partners
            .get(partner)
            .is_some_and(|rt| rt.config.callbacks.is_some());
        if !configured {
            let reason = format!("partner {partner:?} is not configured to receive callbacks");
            let id = store
                .record_callback(NewCallback {
                    disposition: Disposition::Rejected,
                    error: Some(reason.clone()),
                    ..new
                })
                .await?;
            tracing::warn!(callback_id = %id, %reason, "callback refused");
            return Ok(Self::refused(id, reason));
        }
        let callback = InboundCallback {
            partner: partner.to_owned(),
            received_at,
            headers: headers.clone(),
            body: body.to_vec(),
        };
        // Judged before it is stored, then stored and settled in one
        // transaction, and answered after the commit: a 2xx means stored.
        // Where it cannot be judged or settled, it is stored raw on its own,
        // as it arrived, for the recovery sweep (or a person) to settle; the
        // caller gets the error.
        let (settlement, dropped) = match self.judge(&callback, true) {
            Ok(judged) => judged,
            Err(error) => {
                store.record_callback(new).await?;
                return Err(error);
            }
        };
        match store
            .record_and_settle_callback(new.clone(), settlement)
            .await
        {
            Ok(receipt) => Ok(self.settled(receipt, &callback.partner, dropped).await),
            Err(error) => {
                if let Err(raw) = store.record_callback(new).await {
                    tracing::warn!(%raw, "could not store a callback raw after its settlement failed");
                }
                Err(error)
            }
        }
    }

    /// The receipt of a callback refused before verification. Answered like
    /// a bad signature: probing does not reveal which partner names are
    /// configured.
    fn refused(id: CallbackId, reason: String) -> CallbackReceipt {
        CallbackReceipt {
            callback_id: id,
            disposition: Disposition::Rejected,
            http_status: Disposition::Rejected.http_status(),
            submission_id: None,
            detail: Some(reason),
        }
    }

    /// Verify, parse and settle a stored callback. A rejection counts
    /// towards the partner's hourly cap of stored unverified bodies when
    /// `capped` (a new arrival; not a reprocessing).
    async fn process(
        &self,
        id: CallbackId,
        callback: &InboundCallback,
        capped: bool,
    ) -> Result<CallbackReceipt> {
        let (settlement, dropped) = self.judge(callback, capped)?;
        let receipt = self.shared.store.settle_callback(id, settlement).await?;
        Ok(self.settled(receipt, &callback.partner, dropped).await)
    }

    /// Verify and parse a callback with its partner's matcher: how to
    /// settle it, and whether its body is dropped past the hourly cap of
    /// stored unverified bodies (counted when `capped`).
    fn judge(&self, callback: &InboundCallback, capped: bool) -> Result<(Settlement, bool)> {
        let runtime = self.shared.partners.get(&callback.partner);
        let Some((matcher, ttl, max_result)) = runtime.and_then(|rt| {
            Some((
                rt.config.callbacks.clone()?,
                rt.config.unmatched_ttl,
                rt.config.max_result_bytes,
            ))
        }) else {
            return Err(Error::invalid(
                "partner",
                format!(
                    "{:?} is not configured to receive callbacks",
                    callback.partner
                ),
            ));
        };
        // Verified as of its arrival: a stored callback reprocessed later is
        // judged by the clock it arrived under, not by its age now.
        let arrived = SystemTime::from(callback.received_at);
        // A matcher that panics (a bug, or a body it was not written for)
        // quarantines the callback as malformed, body kept, to reprocess
        // after the fix: it takes down neither the request nor the sweep
        // that settles stranded callbacks.
        let judged = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            judge_with(matcher.as_ref(), callback, arrived)
        }));
        let settlement = match judged {
            Ok(Judged::Rejected(reason)) => Settlement::Rejected {
                reason,
                metadata_only: capped
                    && self.shared.unverified_bodies.past_cap(
                        &callback.partner,
                        self.shared.settings.unverified_bodies_per_hour,
                    ),
            },
            Ok(Judged::Malformed(reason)) => Settlement::Malformed { reason },
            Ok(Judged::Report(mut report)) => Settlement::Report {
                report: {
                    report.result = report.result.map(|r| r.cap(max_result));
                    report
                },
                unmatched_until: super::saturating_after(self.shared.now(), ttl),
            },
            Err(panic) => {
                let message = crate::error::panic_message(panic.as_ref());
                // What it said goes with the stored callback, not into the
                // log: a matcher's message may quote the body.
                tracing::error!(partner = %callback.partner, "the callback matcher panicked; the callback is quarantined as malformed");
                Settlement::Malformed {
                    reason: format!("the callback matcher panicked: {message}"),
                }
            }
        };
        let dropped = matches!(
            settlement,
            Settlement::Rejected {
                metadata_only: true,
                ..
            }
        );
        Ok((settlement, dropped))
    }

    /// Count and log a settled callback.
    async fn settled(
        &self,
        receipt: CallbackReceipt,
        partner: &str,
        dropped: bool,
    ) -> CallbackReceipt {
        if dropped {
            self.shared.metrics.unverified_body_dropped(partner);
        }
        self.shared.metrics.callback(partner, receipt.disposition);
        if let (Disposition::Applied, Some(id)) = (receipt.disposition, receipt.submission_id) {
            self.record_time_to_result(id).await;
        }
        tracing::info!(
            callback_id = %receipt.callback_id,
            disposition = receipt.disposition.as_str(),
            submission_id = ?receipt.submission_id,
            "callback processed"
        );
        receipt
    }

    /// Run a stored callback through verification, parsing and matching
    /// again — after a fix of configuration or code. Only callbacks that are
    /// unsettled, unmatched, quarantined (malformed, rejected, expired) or
    /// dismissed can be reprocessed; an applied one is refused. A dismissed
    /// callback reprocessed on purpose ends as the run decides (applied, or
    /// back in the quarantine); its dismissal stays on record.
    pub async fn reprocess_callback(&self, id: CallbackId) -> Result<CallbackReceipt> {
        let stored = self.shared.store.callback(id).await?;
        if !stored.disposition.is_reprocessable() {
            return Err(Error::invalid(
                "callback",
                format!(
                    "callback {id} is {}; there is nothing to reprocess",
                    stored.disposition
                ),
            ));
        }
        let body = stored.body.ok_or_else(|| {
            Error::invalid(
                "callback",
                format!("callback {id} has no stored body to reprocess"),
            )
        })?;
        let callback = InboundCallback {
            partner: stored.partner,
            received_at: stored.received_at,
            headers: headers_from(&stored.headers),
            body,
        };
        self.process(id, &callback, false).await
    }
}

impl Liaison {
    /// [`Liaison::reprocess_callback`] on a person's request: `actor` and
    /// `reason` (what was fixed) are required, logged, and — when the
    /// callback concerns a submission — put on that submission's timeline
    /// ([`crate::EventKind::CallbackReprocessed`]) after what the run did;
    /// otherwise in the operations journal ([`Liaison::ops_journal`],
    /// right after the run: the run commits on its own).
    ///
    /// Errors, each changing nothing: [`Error::InvalidInput`] naming
    /// `reason` when it is blank, or `callback` when there is nothing to
    /// reprocess (an applied callback, no stored body); [`Error::NotFound`].
    pub async fn reprocess_callback_by(
        &self,
        id: CallbackId,
        actor: Actor,
        reason: &str,
    ) -> Result<CallbackReceipt> {
        if reason.trim().is_empty() {
            return Err(Error::invalid(
                "reason",
                "say what was fixed; it is journaled",
            ));
        }
        self.reprocess_journaled(id, actor, reason, true).await
    }

    /// [`Liaison::reprocess_callback_by`], journaling a callback that
    /// concerns no submission in the operations journal only when
    /// `journal_unmatched` (a bulk action journals one line for all).
    pub(crate) async fn reprocess_journaled(
        &self,
        id: CallbackId,
        actor: Actor,
        reason: &str,
        journal_unmatched: bool,
    ) -> Result<CallbackReceipt> {
        let stored = self.shared.store.callback(id).await?;
        let (before, partner) = (stored.submission_id, stored.partner);
        let receipt = self.reprocess_callback(id).await?;
        if let Some(submission) = receipt.submission_id.or(before) {
            let note = Note::new(EventKind::CallbackReprocessed, actor.clone()).reason(format!(
                "callback {id} reprocessed ({}): {}",
                receipt.disposition,
                reason.trim()
            ));
            self.shared.store.note(submission, note).await?;
        } else if journal_unmatched {
            // After the run, which commits on its own: a failure to journal
            // is reported, the reprocessing stays done.
            let line = JournalLine::new(
                self.store().now(),
                actor.clone(),
                OpsAction::ReprocessCallback,
                format!("ended {}: {}", receipt.disposition, reason.trim()),
            )
            .partner(partner)
            .target(id.to_string());
            self.shared.store.journal(line).await?;
        }
        tracing::warn!(
            callback_id = %id,
            disposition = receipt.disposition.as_str(),
            %actor,
            reason,
            "callback reprocessed by request"
        );
        Ok(receipt)
    }

    /// Dismiss a quarantined callback (malformed, rejected, expired or
    /// conflicting) that needs no reprocessing: a duplicate the partner sent
    /// again correctly, a test message, a conflict settled with the partner.
    /// It leaves the quarantine — so the alert and the verdict about it
    /// clear once none is left — with `actor`, the time and `reason` kept
    /// with it ([`crate::callback::StoredCallback::dismissal`]) and, when it
    /// was matched to a submission, a line on that submission's timeline.
    /// It can still be reprocessed on purpose
    /// ([`Liaison::reprocess_callback`]).
    ///
    /// Errors, each changing nothing: [`Error::InvalidInput`] naming
    /// `actor` or `reason` when blank; [`Error::NotQuarantined`] for a
    /// callback outside the quarantine; [`Error::NotFound`].
    ///
    /// ```
    /// # use liaison::{Actor, Liaison, store::SqliteStore};
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> liaison::Result<()> {
    /// # let liaison = Liaison::builder(SqliteStore::open_temporary()?).build()?;
    /// # let id: liaison::callback::CallbackId = "0190a7b2-58f1-7c2e-9a35-5d0e8b1f2c3d".parse()?;
    /// let refused = liaison
    ///     .dismiss_callback(id, Actor::person("dana"), "  ")
    ///     .await
    ///     .unwrap_err();
    /// assert!(refused.is_invalid_input()); // a dismissal says why
    /// # Ok(()) }
    /// ```
    pub async fn dismiss_callback(
        &self,
        id: CallbackId,
        actor: Actor,
        reason: impl Into<String>,
    ) -> Result<StoredCallback> {
        let dismissed = self
            .shared
            .store
            .dismiss_callback(id, actor, reason.into())
            .await?;
        tracing::info!(
            callback_id = %id,
            partner = %dismissed.partner,
            actor = %dismissed.dismissal.as_ref().map_or("", |d| d.actor.as_str()),
            "quarantined callback dismissed"
        );
        Ok(dismissed)
    }

    /// Feed the time-to-result histogram when the callback just applied to
    /// `id` gave it its final result. Best effort: a failed read is logged.
    pub(crate) async fn record_time_to_result(&self, id: crate::model::submission::SubmissionId) {
        match self.shared.store.get(id).await {
            Ok(s)
                if matches!(
                    s.state,
                    SubmissionState::Succeeded | SubmissionState::Failed
                ) =>
            {
                self.shared.metrics.result_now(&s.partner, s.created_at);
            }
            Ok(_) => {}
            Err(error) => {
                tracing::debug!(%error, "could not read a settled submission for metrics")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_are_not_kept_and_kept_headers_round_trip() {
        let mut h = HeaderMap::new();
        h.insert(AUTHORIZATION, HeaderValue::from_static("Bearer secret"));
        h.insert("webhook-id", HeaderValue::from_static("msg_1"));
        h.insert(COOKIE, HeaderValue::from_static("s=1"));
        let kept = kept_headers(&h);
        assert_eq!(kept, vec![("webhook-id".to_owned(), "msg_1".to_owned())]);
        assert_eq!(headers_from(&kept).get("webhook-id").unwrap(), "msg_1");
    }
}
