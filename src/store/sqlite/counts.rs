//! The per-(partner, state, currency) counters `health()` reads
//! (`liaison_state_counts`), kept by the statements that insert submissions
//! or change their state, in the same transaction. Until migration 23 three
//! triggers kept them, two upserts per changed row; now a batch writes one
//! upsert per counter it touched (a claim of 64 writes two, not 128).
//!
//! Submissions are never deleted on SQLite, and their business value and
//! currency never change, so inserts and state changes are all there is to
//! count. The crash-loop and failpoint tests compare the counters with a
//! `GROUP BY` of the table after every kill.

use rusqlite::{Connection, params};

use super::db::db_err;
use crate::error::Result;
use crate::model::money::Currency;
use crate::model::submission::{Submission, SubmissionState};

/// Changes to the counters, summed until [`Counts::write`]. A batch
/// touches a handful of counters: a list searched in place allocates a
/// partner's name once per counter, not once per row.
#[derive(Debug, Default)]
pub(super) struct Counts(Vec<Counter>);

/// One counter's key, `(partner, state, currency)`, and its change
/// `(n, value)`.
type Counter = ((String, &'static str, &'static str), (i64, i128));

impl Counts {
    /// A submission of `partner` worth `value` in `currency` now counts in
    /// `state` (`+1`) or no longer does (`-1`).
    pub(super) fn add(
        &mut self,
        partner: &str,
        currency: Option<Currency>,
        value: Option<i64>,
        state: SubmissionState,
        sign: i64,
    ) {
        let key = (state.as_str(), currency.as_ref().map_or("", |c| c.code()));
        let at = self
            .0
            .iter()
            .position(|((p, s, c), _)| p == partner && (*s, *c) == key)
            .unwrap_or_else(|| {
                self.0.push(((partner.to_owned(), key.0, key.1), (0, 0)));
                self.0.len() - 1
            });
        let entry = &mut self.0[at].1;
        entry.0 += sign;
        entry.1 += i128::from(sign) * i128::from(value.unwrap_or(0));
    }

    /// `submission` moved from `from` to its current state.
    pub(super) fn moved(&mut self, submission: &Submission, from: SubmissionState) {
        if from != submission.state {
            let s = submission;
            self.add(&s.partner, s.currency, s.business_value, from, -1);
            self.add(&s.partner, s.currency, s.business_value, s.state, 1);
        }
    }

    /// Apply the summed changes, one upsert per counter (more only for a
    /// value sum beyond what one row's `INTEGER` holds in one step).
    pub(super) fn write(mut self, conn: &Connection) -> Result<()> {
        if self.0.is_empty() {
            return Ok(());
        }
        let mut stmt = conn
            .prepare_cached(
                "INSERT OR FAIL INTO liaison_state_counts (partner, state, currency, n, value) \
                 VALUES (?1, ?2, ?3, ?4, ?5) \
                 ON CONFLICT (partner, state, currency) \
                 DO UPDATE SET n = n + excluded.n, value = value + excluded.value",
            )
            .map_err(db_err("count submissions"))?;
        // In key order, as every batch writes them.
        self.0.sort_unstable_by(|a, b| a.0.cmp(&b.0));
        for ((partner, state, currency), (mut n, mut value)) in self.0 {
            loop {
                let step = value.clamp(i128::from(i64::MIN), i128::from(i64::MAX));
                if n != 0 || step != 0 {
                    let step_i64 = i64::try_from(step).unwrap_or_default();
                    stmt.execute(params![partner, state, currency, n, step_i64])
                        .map_err(db_err("count submissions"))?;
                }
                value -= step;
                n = 0;
                if value == 0 {
                    break;
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::submission::MAX_BUSINESS_VALUE;
    use crate::store::rules::fixtures::submission;

    fn counters(conn: &Connection) -> Vec<(String, String, String, i64, i64)> {
        conn.prepare(
            "SELECT partner, state, currency, n, value FROM liaison_state_counts \
             ORDER BY partner, state, currency",
        )
        .unwrap()
        .query_map([], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?))
        })
        .unwrap()
        .collect::<std::result::Result<_, _>>()
        .unwrap()
    }

    /// A batch sums per (partner, state, currency) and writes each counter
    /// once; moves out of a state subtract what moves into another adds; a
    /// no-op move writes nothing; a value sum past `i64` is written in steps.
    #[test]
    fn a_batch_is_summed_per_counter_and_written_once() {
        use SubmissionState::*;
        let conn = Connection::open_in_memory().unwrap();
        conn.execute_batch(
            "CREATE TABLE liaison_state_counts (partner TEXT NOT NULL, state TEXT NOT NULL, \
             currency TEXT NOT NULL DEFAULT '', n INTEGER NOT NULL DEFAULT 0, \
             value INTEGER NOT NULL DEFAULT 0, PRIMARY KEY (partner, state, currency)) WITHOUT ROWID",
        )
        .unwrap();
        let mut eur = submission(InFlight);
        eur.business_value = Some(250);
        eur.currency = Some("EUR".parse().unwrap());
        let mut lab = submission(InFlight);
        lab.partner = "lab".into();

        let mut counts = Counts::default();
        for _ in 0..3 {
            counts.moved(&eur, Queued);
        }
        counts.moved(&lab, Queued);
        counts.moved(&lab, InFlight); // no change
        counts.add(&lab.partner, lab.currency, lab.business_value, Queued, 1);
        counts.write(&conn).unwrap();
        assert_eq!(
            counters(&conn),
            [
                ("bank".into(), "in_flight".into(), "EUR".into(), 3, 750),
                ("bank".into(), "queued".into(), "EUR".into(), -3, -750),
                ("lab".into(), "in_flight".into(), "".into(), 1, 0),
            ]
        );

        // 2,000 at the cap sum past i64::MAX: the counter gets it all.
        let mut big = submission(Queued);
        big.partner = "vault".into();
        big.business_value = Some(MAX_BUSINESS_VALUE);
        let mut counts = Counts::default();
        for _ in 0..2_000 {
            counts.add(&big.partner, big.currency, big.business_value, Queued, 1);
        }
        counts.write(&conn).unwrap();
        let (n, value): (i64, f64) = conn
            .query_row(
                "SELECT n, value FROM liaison_state_counts WHERE partner = 'vault'",
                [],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .unwrap();
        assert_eq!(n, 2_000);
        assert_eq!(value, 2_000.0 * MAX_BUSINESS_VALUE as f64);
    }
}
