//! The `NOTIFY` side of the wake-up hints for the store's own writes.
//!
//! A transaction that sends a notification takes a database-wide lock at
//! commit and holds it until the commit is durable (PostgreSQL delivers
//! notifications in commit order), so enqueues that each notified committed
//! one at a time, each waiting for its own WAL flush. The store's
//! connections therefore set `liaison.quiet` (migration 0018's trigger then
//! stays silent) and the store hands the partners whose work became due to
//! one task, which sends their hints after the commit, in a transaction of
//! its own: whatever gathered while the previous hint was sent goes in one
//! statement. Hints stay hints: one that cannot be sent is dropped, and the
//! dispatchers' polling finds the work.

use std::collections::BTreeSet;

use chrono::{DateTime, Utc};
use deadpool_postgres::Pool;
use tokio::sync::mpsc;

use crate::model::submission::{Submission, SubmissionState};

/// Partners whose work became due, at most this many per statement.
const MAX_PER_HINT: usize = 256;

/// The store's side: say which partners have new due work.
#[derive(Debug)]
pub(super) struct Hints {
    tx: Option<mpsc::UnboundedSender<String>>,
}

impl Hints {
    /// Start the sending task on `pool` (outside a Tokio runtime nothing is
    /// sent: polling finds the work).
    pub(super) fn start(pool: Pool) -> Self {
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return Hints { tx: None };
        };
        let (tx, rx) = mpsc::unbounded_channel();
        // Ends when the store (the last sender) goes.
        runtime.spawn(send(pool, rx));
        Hints { tx: Some(tx) }
    }

    /// Hint the partners of `written` whose work is queued and due at
    /// `now`, as the trigger would have.
    pub(super) fn due<'a>(
        &self,
        written: impl IntoIterator<Item = &'a Submission>,
        now: DateTime<Utc>,
    ) {
        let Some(tx) = &self.tx else { return };
        let mut partners = BTreeSet::new();
        for s in written {
            if s.state == SubmissionState::Queued && s.due_at <= now {
                partners.insert(s.partner.as_str());
            }
        }
        for partner in partners {
            let _ = tx.send(partner.to_owned());
        }
    }

    /// Hint `partner` (work of it came back to the queue, due now).
    pub(super) fn partner(&self, partner: &str) {
        if let Some(tx) = &self.tx {
            let _ = tx.send(partner.to_owned());
        }
    }
}

async fn send(pool: Pool, mut rx: mpsc::UnboundedReceiver<String>) {
    let mut batch = Vec::with_capacity(MAX_PER_HINT);
    while rx.recv_many(&mut batch, MAX_PER_HINT).await > 0 {
        let partners: Vec<String> = std::mem::take(&mut batch)
            .into_iter()
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect();
        let sent = async {
            let conn = pool.get().await.map_err(|e| e.to_string())?;
            // The payload migration 5's trigger sends: schema ':' partner.
            conn.execute(
                "SELECT pg_notify('liaison_wake', current_schema() || ':' || p) \
                 FROM unnest($1::text[]) AS p",
                &[&partners],
            )
            .await
            .map_err(|e| e.to_string())
        }
        .await;
        if let Err(error) = sent {
            tracing::debug!(%error, "a wake-up hint was not sent; polling finds the work");
        }
    }
}
