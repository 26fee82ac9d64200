//! liaison's benchmarks against raw baselines measured in the same process.
//!
//! ```text
//! cargo bench --features mock,http --bench liaison
//! ```
//!
//! Every scenario runs its raw baseline interleaved with liaison's run
//! (baseline, liaison, baseline, liaison, ...), takes the median of each, and
//! prints one table row plus one JSON line (`{"scenario": ...}`) per figure.
//! See docs/performance.md for the recorded figures and what limits them.
//!
//! Environment:
//! - `LIAISON_BENCH_N`: submissions per run of scenarios 1-7 (default 2000;
//!   scenarios 3, 4 and 7 use 5x that);
//! - `LIAISON_BENCH_REPS`: repetitions, medians are reported (default 3);
//! - `LIAISON_BENCH_BIG`: size of the history / backlog of scenarios 7-10
//!   (default 100000; the issue's full size is 1000000);
//! - `LIAISON_BENCH_ONLY`: comma-separated scenarios to run (default all):
//!   numbers, and `P1`-`P5` (or `P` for all five) for PostgreSQL;
//! - `LIAISON_BENCH_DIR`: where databases go (default `target/liaison-bench`;
//!   must be a real disk, not tmpfs, or `synchronous` means nothing). Seeded
//!   databases of scenarios 7-9 are kept there and reused between runs;
//! - `LIAISON_BENCH_DRAIN_SECS`: how long scenario 9 drains (default 20);
//! - `LIAISON_BENCH_PG_URL`: a PostgreSQL server for scenarios P1-P5 (built
//!   with `--features mock,http,postgres`; skipped with a notice without it);
//! - `LIAISON_BENCH_PG_DRAIN`: submissions P3 drains (default 20000);
//! - `LIAISON_BENCH_PG_POOL`: the connection pool of P4's store (default
//!   16, the store's default).
//! - `LIAISON_BENCH_CALLBACK_DELAY_MS`: how long the mock partner of
//!   scenarios 5 and P4 waits after its 202 before it calls back (default 0:
//!   most callbacks race the recording of the acceptance they report on).

mod callbacks;
mod dispatch;
mod enqueue;
mod history;
#[cfg(feature = "postgres")]
mod postgres;
mod raw;
mod report;
mod retention;

use std::path::PathBuf;
use std::time::Duration;

use async_trait::async_trait;
use liaison::{AttemptContext, Outcome, PartnerAdapter, PartnerError, Submission, SubmitOutcome};

/// What every scenario gets.
#[derive(Debug, Clone)]
pub(crate) struct Ctx {
    pub(crate) n: usize,
    pub(crate) reps: usize,
    pub(crate) big: usize,
    pub(crate) dir: PathBuf,
    pub(crate) drain_secs: u64,
    /// `LIAISON_BENCH_ONLY`, upper-cased; `None`: every scenario.
    pub(crate) only: Option<Vec<String>>,
}

impl Ctx {
    /// Whether the figure `id` (e.g. "4b") is to run: every figure when
    /// `LIAISON_BENCH_ONLY` is unset, a scenario's figures when it names
    /// the scenario ("4"), the one figure when it names that ("4B" or
    /// "4b", so that a profile holds one figure's work alone).
    pub(crate) fn runs(&self, id: &str) -> bool {
        let scenario = id.trim_end_matches(|c: char| c.is_ascii_alphabetic());
        self.only.as_ref().is_none_or(|only| {
            only.iter()
                .any(|s| s == scenario || s.eq_ignore_ascii_case(id))
        })
    }

    /// A fresh, empty directory for one run's database files.
    pub(crate) fn scratch(&self) -> tempfile::TempDir {
        tempfile::Builder::new()
            .prefix("run-")
            .tempdir_in(&self.dir)
            .expect("create a scratch directory in LIAISON_BENCH_DIR")
    }
}

/// The partner that accepts everything at once: dispatch cost without I/O.
#[derive(Debug)]
pub(crate) struct Noop;

#[async_trait]
impl PartnerAdapter for Noop {
    async fn submit(
        &self,
        _: &AttemptContext,
        _: &Submission,
    ) -> Result<SubmitOutcome, PartnerError> {
        Ok(SubmitOutcome::Completed(Outcome::succeeded()))
    }
}

pub(crate) fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.replace('_', "").parse().ok())
        .unwrap_or(default)
}

/// The median of some measurements.
pub(crate) fn median(mut xs: Vec<f64>) -> f64 {
    xs.sort_by(f64::total_cmp);
    let n = xs.len();
    if n == 0 {
        return f64::NAN;
    }
    if n % 2 == 1 {
        xs[n / 2]
    } else {
        (xs[n / 2 - 1] + xs[n / 2]) / 2.0
    }
}

/// A payload of the size hosts typically send.
pub(crate) fn payload(i: usize) -> serde_json::Value {
    serde_json::json!({
        "order": i,
        "amount_cents": 12_345,
        "currency": "EUR",
        "memo": "benchmark payload of a typical size",
    })
}

/// Items per second for `n` items done in `took`.
pub(crate) fn rate(n: usize, took: Duration) -> f64 {
    n as f64 / took.as_secs_f64()
}

fn main() {
    // Scenario 9 measures peak RSS in child processes of this binary.
    if let Some(code) = history::child_main() {
        std::process::exit(code);
    }
    let dir = std::env::var_os("LIAISON_BENCH_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/liaison-bench"));
    std::fs::create_dir_all(&dir).expect("create LIAISON_BENCH_DIR");
    let ctx = Ctx {
        n: env_usize("LIAISON_BENCH_N", 2000).max(64),
        reps: env_usize("LIAISON_BENCH_REPS", 3).max(1),
        big: env_usize("LIAISON_BENCH_BIG", 100_000).max(1000),
        dir,
        drain_secs: env_usize("LIAISON_BENCH_DRAIN_SECS", 20).max(1) as u64,
        only: std::env::var("LIAISON_BENCH_ONLY").ok().map(|v| {
            v.split(',')
                .map(|s| s.trim().to_ascii_uppercase())
                .filter(|s| !s.is_empty())
                .collect()
        }),
    };
    let wanted_name = |name: &str| {
        ctx.only.as_ref().is_none_or(|o| {
            o.iter()
                .any(|s| s == name || (s == "P" && name.starts_with('P')))
        })
    };
    let wanted = |s: u32| wanted_name(&s.to_string());
    // A figure of scenario 1 or 4 named alone ("4b") runs its scenario,
    // which then runs that figure only (`Ctx::runs`).
    let wanted_parts =
        |s: u32, parts: &[&str]| wanted(s) || parts.iter().any(|p| wanted_name(&format!("{s}{p}")));
    // `cargo bench` passes `--bench`; a filter argument selects scenarios too.
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    report::header(&ctx);
    runtime.block_on(async {
        if wanted_parts(1, &["A", "B"]) {
            enqueue::one_per_call(&ctx).await;
        }
        if wanted(2) {
            enqueue::concurrent(&ctx).await;
        }
        if wanted(3) {
            enqueue::batched(&ctx).await;
        }
        if wanted_parts(4, &["A", "B", "C"]) {
            dispatch::noop(&ctx).await;
        }
        if wanted(5) {
            callbacks::http_end_to_end(&ctx).await;
        }
        if wanted(6) {
            callbacks::ingest(&ctx).await;
        }
        if wanted(7) {
            history::drain_on_history(&ctx).await;
        }
        if wanted(8) {
            history::ops_queries(&ctx).await;
        }
        if wanted(10) {
            retention::purge_history(&ctx).await;
        }
        #[cfg(feature = "postgres")]
        if ["P1", "P2", "P3", "P4", "P5"]
            .iter()
            .any(|p| wanted_name(p))
        {
            postgres::run(&ctx, &wanted_name).await;
        }
    });
    drop(runtime);
    if wanted(9) {
        history::peak_rss(&ctx);
    }
    report::footer();
}
