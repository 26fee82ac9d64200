//! Soak: 100,000 submissions through a partner that flaps up and down every
//! few seconds and calls back late and twice; nothing may be lost, nothing
//! done twice, and memory must stay flat after warm-up.
//!
//! Run with:
//!
//! ```text
//! cargo run --release --example soak --features mock,http
//! LIAISON_SOAK_N=20000 cargo run --release --example soak --features mock,http
//! ```
//!
//! The host — the engine, the SQLite outbox in a temporary file, and the
//! axum callback router — runs in this process. The partner, a
//! `MockPartner`, runs in a child process (this same program, started with
//! `LIAISON_SOAK_ROLE=partner`), so that the host's memory figures are the
//! host's own and not the mock's growing records. The partner accepts with
//! 202 and posts the result later (0.2 to 1.5 s), twice with the same event
//! id, answers 503 to one request in nine, goes down for 2 s every 4 s and
//! changes its callback delay each time it comes back. The host keeps at
//! most 5,000 submissions unfinished, enqueueing in batches of 500, as a
//! host under a steady load does. Results arrive only by callback (the
//! result deadline is an hour, so nothing is polled). The circuit breaker
//! is on: it opens after 5 unavailability failures in a row and probes 2 s
//! later.
//!
//! Every 5 s it prints progress and the resident memory (`VmRSS`) and its
//! peak (`VmHWM`) from `/proc/self/status`. At the end it checks: every
//! submission present and succeeded (lost = 0), one side effect per key at
//! the partner, no submission settled twice and no callback applied twice
//! (duplicates = 0), no callback left unsettled, and the peak RSS at the end
//! within 1.5 times (plus 16 MiB) the peak at warm-up (10 % of the work
//! done). It exits non-zero on any violation, or if no submission finishes
//! for 3 minutes. The figures of a run are in docs/reliability.md.

use std::collections::{BTreeMap, HashSet};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{ExitCode, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use liaison::callback::{JsonMatcher, StandardWebhooks};
use liaison::engine::{CircuitSettings, EngineSettings, Liaison, Partner};
use liaison::http::EdgeLimits;
use liaison::retry::{Exponential, RetryLimits};
use liaison::rusqlite;
use liaison::store::SqliteStore;
use liaison::testing::{Behavior, CallbackMode, MockOutcome, MockPartner};
use liaison::{HttpJsonAdapter, NewSubmission, ResultMapping};
use serde_json::json;

const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
const ROLE: &str = "LIAISON_SOAK_ROLE";
const CALLBACK_URL: &str = "LIAISON_SOAK_CALLBACK_URL";

/// The partner is up this long, then down for `DOWN`.
const UP: Duration = Duration::from_secs(4);
const DOWN: Duration = Duration::from_secs(2);
/// Most unfinished submissions at a time, and the enqueue batch.
const BACKLOG: u64 = 5_000;
const BATCH: u64 = 500;
/// No submission finishing for this long is a failure.
const STALL: Duration = Duration::from_secs(180);

type Failure = Box<dyn std::error::Error + Send + Sync>;

fn main() -> ExitCode {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    let result = if std::env::var(ROLE).as_deref() == Ok("partner") {
        runtime.block_on(partner())
    } else {
        runtime.block_on(host())
    };
    match result {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(error) => {
            eprintln!("soak: {error}");
            ExitCode::FAILURE
        }
    }
}

fn signer() -> Result<StandardWebhooks, Failure> {
    Ok(StandardWebhooks::new(SECRET)?)
}

/// The partner's behaviour in its `round`-th up period: accept, call back
/// twice after a delay that changes every round, 503 one request in nine.
fn behavior(round: u64) -> Behavior {
    let delays = [200, 800, 1500, 500];
    let delay = Duration::from_millis(delays[(round % 4) as usize]);
    Behavior::flaky(
        9,
        Behavior::callback_later_with(delay, MockOutcome::Succeeded, CallbackMode::Duplicate),
    )
}

/// The child: serve the mock, flap, and answer `stats` on stdin with one
/// `stats {json}` line on stdout. Ends when stdin closes.
async fn partner() -> Result<bool, Failure> {
    let mock = MockPartner::start_with(behavior(0)).await?;
    mock.set_callback_signing(Some(signer()?));
    mock.set_callback_url(Some(std::env::var(CALLBACK_URL)?));
    println!("url {}", mock.submit_url());
    let flaps = Arc::new(AtomicU64::new(0));
    let flapper = mock.clone();
    let flapped = Arc::clone(&flaps);
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(UP).await;
            flapper.go_down().await;
            tokio::time::sleep(DOWN).await;
            if let Err(error) = flapper.come_back().await {
                eprintln!("soak partner: cannot come back: {error}");
                std::process::exit(2);
            }
            let round = flapped.fetch_add(1, Ordering::SeqCst) + 1;
            flapper.set_behavior(behavior(round));
        }
    });
    let (lines, mut commands) = tokio::sync::mpsc::unbounded_channel();
    std::thread::spawn(move || {
        for line in std::io::stdin().lock().lines() {
            let Ok(line) = line else { break };
            if lines.send(line).is_err() {
                break;
            }
        }
    });
    while let Some(command) = commands.recv().await {
        if command.trim() == "stats" {
            let stats = mock.stats();
            let effects = mock.side_effects();
            let keys: HashSet<&str> = effects.iter().map(|e| e.idempotency_key.as_str()).collect();
            let line = json!({
                "requests": stats.requests,
                "side_effects": stats.side_effects,
                "distinct_keys": stats.distinct_keys,
                "keys_with_effect": keys.len(),
                "callbacks_sent": stats.callbacks_sent,
                "callbacks_failed": stats.callbacks_failed,
                "flaps": flaps.load(Ordering::SeqCst),
            });
            println!("stats {line}");
            std::io::stdout().flush()?;
        }
    }
    Ok(true)
}

/// Resident memory and its peak, in KiB, from `/proc/self/status`.
fn memory_kib() -> (u64, u64) {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or(0)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

/// Submissions by state.
fn states(conn: &rusqlite::Connection) -> Result<BTreeMap<String, u64>, Failure> {
    let mut stmt =
        conn.prepare_cached("SELECT state, COUNT(*) FROM liaison_submissions GROUP BY state")?;
    let rows = stmt.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?)))?;
    let mut out = BTreeMap::new();
    for row in rows {
        let (state, n) = row?;
        out.insert(state, u64::try_from(n)?);
    }
    Ok(out)
}

fn finished(states: &BTreeMap<String, u64>) -> u64 {
    ["succeeded", "failed", "dead_lettered", "cancelled"]
        .iter()
        .filter_map(|s| states.get(*s))
        .sum()
}

fn count(conn: &rusqlite::Connection, sql: &str) -> Result<u64, Failure> {
    let n: i64 = conn.query_row(sql, [], |r| r.get(0))?;
    Ok(u64::try_from(n)?)
}

/// One memory sample: submissions finished, RSS and peak RSS (KiB).
#[derive(Debug, Clone, Copy)]
struct Sample {
    done: u64,
    rss: u64,
    hwm: u64,
}

async fn host() -> Result<bool, Failure> {
    let n: u64 = match std::env::var("LIAISON_SOAK_N") {
        Ok(text) => text.parse()?,
        Err(_) => 100_000,
    };
    let dir = tempfile::tempdir()?;
    let db = dir.path().join("soak.db");
    let store = SqliteStore::open(&db)?;

    // The callback port first: the partner is told where to call back.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let callback_url = format!("http://{}/callbacks/lab", listener.local_addr()?);
    let mut child = std::process::Command::new(std::env::current_exe()?)
        .env(ROLE, "partner")
        .env(CALLBACK_URL, &callback_url)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()?;
    let mut child_in = child.stdin.take().ok_or("no child stdin")?;
    let mut child_out = BufReader::new(child.stdout.take().ok_or("no child stdout")?);
    let mut line = String::new();
    child_out.read_line(&mut line)?;
    let url = line
        .trim()
        .strip_prefix("url ")
        .ok_or_else(|| format!("unexpected first line from the partner: {line:?}"))?
        .to_owned();

    let adapter = HttpJsonAdapter::new(&url)?
        .status_pointer("/status", ResultMapping::new(["succeeded"], ["failed"])?)?;
    let partner = Partner::new("lab", adapter)
        .callbacks(JsonMatcher::builder(signer()?).build()?)
        .retry(Exponential::new(
            Duration::from_millis(100),
            Duration::from_secs(2),
        )?)
        .limits(RetryLimits::new(100_000, Duration::from_secs(4 * 3600))?)
        .attempt_timeout(Duration::from_secs(5))
        .concurrency(32)
        // Open after 5 unavailability failures in a row, probe 2 s later: a
        // partner that flaps every few seconds is worth probing soon.
        .circuit(CircuitSettings::new(5, Duration::from_secs(2))?)
        .result_timeout(Duration::from_secs(3600));
    let settings = EngineSettings::default()
        .poll_interval(Duration::from_millis(50))
        .reap_interval(Duration::from_secs(1))
        .lease_margin(Duration::from_secs(2));
    let liaison = Liaison::builder(store)
        .partner(partner)
        .settings(settings)
        .build()?;
    // Behind a timeout, a concurrency limit and a body limit (EdgeLimits):
    // whoever reaches the endpoint cannot hold it open or pile requests up.
    let app = liaison::http::callback_router_with(liaison.clone(), EdgeLimits::default());
    tokio::spawn(async move { axum::serve(listener, app).await });
    let handle = liaison.start();
    let started = Instant::now();
    println!("soak: {n} submissions; partner {url}, up {UP:?} / down {DOWN:?}; database {db:?}");

    // The monitor: counts from the file every second, a line every 5 s.
    let done = Arc::new(AtomicU64::new(0));
    let enqueued = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let samples = Arc::new(Mutex::new(Vec::<Sample>::new()));
    let monitor = {
        let (db, done, enqueued, stop, samples) = (
            db.clone(),
            Arc::clone(&done),
            Arc::clone(&enqueued),
            Arc::clone(&stop),
            Arc::clone(&samples),
        );
        std::thread::spawn(move || monitor(&db, n, &done, &enqueued, &stop, &samples))
    };

    // Enqueue with at most BACKLOG unfinished.
    let mut next = 0u64;
    let mut last_progress = (0u64, Instant::now());
    let mut ok = true;
    loop {
        let finished_now = done.load(Ordering::SeqCst);
        if finished_now >= n {
            break;
        }
        if finished_now > last_progress.0 {
            last_progress = (finished_now, Instant::now());
        } else if last_progress.1.elapsed() > STALL {
            eprintln!("soak: VIOLATION: nothing finished for {STALL:?}");
            ok = false;
            break;
        }
        if next < n && next - finished_now.min(next) < BACKLOG {
            let end = (next + BATCH).min(n);
            let batch = (next..end)
                .map(|i| {
                    NewSubmission::new(
                        "lab",
                        "soak.claim",
                        json!({ "claim": i, "cents": i % 10_000 }),
                    )
                    .idempotency_key(format!("S-{i}"))
                })
                .collect();
            liaison.enqueue_batch(batch).await?;
            next = end;
            enqueued.store(next, Ordering::SeqCst);
        } else {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    // Let late duplicate callbacks land and stored ones settle.
    tokio::time::sleep(Duration::from_secs(5)).await;
    stop.store(true, Ordering::SeqCst);
    monitor.join().map_err(|_| "monitor panicked")??;
    let report = handle.shutdown(Duration::from_secs(10)).await?;
    let elapsed = started.elapsed();

    writeln!(child_in, "stats")?;
    child_in.flush()?;
    line.clear();
    child_out.read_line(&mut line)?;
    let partner_stats: serde_json::Value = serde_json::from_str(
        line.trim()
            .strip_prefix("stats ")
            .ok_or_else(|| format!("unexpected stats line: {line:?}"))?,
    )?;
    drop(child_in);
    child.wait()?;

    ok &= verdict(&db, n, &partner_stats, &samples.lock().unwrap(), elapsed)?;
    println!("engine shutdown: {report:?}");
    Ok(ok)
}

fn monitor(
    db: &Path,
    n: u64,
    done: &AtomicU64,
    enqueued: &AtomicU64,
    stop: &AtomicBool,
    samples: &Mutex<Vec<Sample>>,
) -> Result<(), Failure> {
    let conn = rusqlite::Connection::open(db)?;
    conn.busy_timeout(Duration::from_secs(10))?;
    let started = Instant::now();
    let mut tick = 0u64;
    let mut reported_end = false;
    while !stop.load(Ordering::SeqCst) {
        std::thread::sleep(Duration::from_secs(1));
        tick += 1;
        let by_state = states(&conn)?;
        let finished_now = finished(&by_state);
        done.store(finished_now, Ordering::SeqCst);
        let (rss, hwm) = memory_kib();
        samples.lock().unwrap().push(Sample {
            done: finished_now,
            rss,
            hwm,
        });
        let end = finished_now >= n && !reported_end;
        reported_end |= end;
        if (tick.is_multiple_of(5) && finished_now < n) || end {
            println!(
                "[{:>5.0} s] enqueued {:>6}, finished {:>6} ({:.0}/s), {:?}, RSS {} MiB, peak {} MiB",
                started.elapsed().as_secs_f64(),
                enqueued.load(Ordering::SeqCst),
                finished_now,
                finished_now as f64 / started.elapsed().as_secs_f64(),
                by_state,
                rss / 1024,
                hwm / 1024,
            );
        }
    }
    Ok(())
}

/// The final checks; prints the figures and every violation.
fn verdict(
    db: &PathBuf,
    n: u64,
    partner: &serde_json::Value,
    samples: &[Sample],
    elapsed: Duration,
) -> Result<bool, Failure> {
    let conn = rusqlite::Connection::open(db)?;
    let by_state = states(&conn)?;
    let present = count(
        &conn,
        "SELECT COUNT(DISTINCT idempotency_key) FROM liaison_submissions",
    )?;
    let rows = count(&conn, "SELECT COUNT(*) FROM liaison_submissions")?;
    let settled_twice = count(
        &conn,
        "SELECT COUNT(*) FROM (SELECT submission_id FROM liaison_events \
         WHERE to_state IN ('succeeded', 'failed') GROUP BY submission_id HAVING COUNT(*) > 1)",
    )?;
    let applied_twice = count(
        &conn,
        "SELECT COUNT(*) FROM (SELECT submission_id FROM liaison_callbacks \
         WHERE disposition = 'applied' GROUP BY submission_id HAVING COUNT(*) > 1)",
    )?;
    let mut stmt =
        conn.prepare("SELECT disposition, COUNT(*) FROM liaison_callbacks GROUP BY disposition")?;
    let callbacks: BTreeMap<String, i64> = stmt
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?
        .collect::<Result<_, _>>()?;
    let integrity: String = conn.query_row("PRAGMA integrity_check", [], |r| r.get(0))?;
    let number = |name: &str| partner[name].as_u64().unwrap_or(0);
    let side_effects = number("side_effects");
    let lost = n - present.min(n);
    let duplicates = (rows - present)
        + settled_twice
        + applied_twice
        + (side_effects - number("keys_with_effect"));

    let warm = samples.iter().find(|s| s.done >= n / 10).copied();
    let last = samples.last().copied();
    println!(
        "soak: submissions {n}, lost {lost}, duplicates {duplicates}, {:.0} s ({:.0}/s); states {by_state:?}; \
         callbacks by disposition {callbacks:?}; partner {partner}; integrity {integrity}",
        elapsed.as_secs_f64(),
        n as f64 / elapsed.as_secs_f64(),
    );
    let mut ok = true;
    let mut violation = |what: String| {
        eprintln!("soak: VIOLATION: {what}");
        ok = false;
    };
    if lost != 0 {
        violation(format!("{lost} submissions lost"));
    }
    if by_state.get("succeeded").copied().unwrap_or(0) != n {
        violation(format!("not every submission succeeded: {by_state:?}"));
    }
    if duplicates != 0 {
        violation(format!(
            "{duplicates} duplicates (rows {rows}, keys {present}, settled twice {settled_twice}, \
             applied twice {applied_twice}, partner side effects {side_effects})"
        ));
    }
    if side_effects != n {
        violation(format!(
            "{side_effects} side effects at the partner for {n} keys"
        ));
    }
    if callbacks.get("received").copied().unwrap_or(0) != 0 {
        violation(format!("callbacks left unsettled: {callbacks:?}"));
    }
    if integrity != "ok" {
        violation(format!("integrity_check: {integrity}"));
    }
    match (warm, last) {
        (Some(warm), Some(last)) => {
            println!(
                "memory: peak RSS {} MiB at warm-up ({} finished), {} MiB at the end; RSS now {} MiB; \
                 samples (finished: RSS MiB) {}",
                warm.hwm / 1024,
                warm.done,
                last.hwm / 1024,
                last.rss / 1024,
                samples
                    .iter()
                    .step_by((samples.len() / 12).max(1))
                    .map(|s| format!("{}: {}", s.done, s.rss / 1024))
                    .collect::<Vec<_>>()
                    .join(", ")
            );
            if last.hwm as f64 > warm.hwm as f64 * 1.5 + 16.0 * 1024.0 {
                violation(format!(
                    "peak RSS grew from {} KiB at warm-up to {} KiB",
                    warm.hwm, last.hwm
                ));
            }
        }
        _ => violation("no memory samples".to_owned()),
    }
    Ok(ok)
}
