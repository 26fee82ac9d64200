//! Claims out, adjudications back into the host's own table: exactly once.
//!
//! Run with:
//!
//! ```text
//! cargo run --example claims_roundtrip --features mock,http
//! ```
//!
//! The host keeps a `claims` table on the outbox's SQLite file and enqueues
//! each claim in the same transaction as its row. A mock clearinghouse accepts
//! every claim with 202 and reports its adjudication later, a document in the
//! result (`{"decision": "approved", "paid": 12500, "claim_no": "CH-..."}` or
//! `{"decision": "denied", "codes": ["CO-16"]}`): most by a signed callback,
//! some only when polled, some twice, some a second time with another amount.
//! A transactional result handler writes status, paid amount and the
//! partner's claim number into `claims` and counts each application.
//!
//! You will see the run's timing, the host's table summed up (claims by
//! status, total paid, a few rows) and what became of the partner's
//! callbacks. It takes a few seconds and exits non-zero if a claim has no
//! result, a result was applied more than once, or the host's row differs
//! from the document liaison kept or from what the partner sent.

use std::collections::BTreeMap;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use base64::Engine as _;
use liaison::callback::{JsonMatcher, StandardWebhooks};
use liaison::engine::{EngineSettings, Liaison, Partner};
use liaison::http::EdgeLimits;
use liaison::rusqlite::{Connection, TransactionBehavior, params};
use liaison::store::{CallbackFilter, OutboxStore, SqliteResultHandler, SqliteStore};
use liaison::testing::{Behavior, CallbackMode, MockOutcome, MockPartner};
use liaison::{BoxError, FinishedSubmission, HttpJsonAdapter, NewSubmission, ResultMapping};
use serde_json::{Value, json};

/// How many claims the host sends.
const CLAIMS: i64 = 120;
/// How long after its 202 the partner reports (or, for poll-only claims,
/// knows) the adjudication.
const DELAY: Duration = Duration::from_millis(200);
/// How long the host waits for every claim's result.
const PATIENCE: Duration = Duration::from_secs(15);

/// How the clearinghouse treats a claim: decided from the claim number, so the
/// run is the same every time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Script {
    /// Approved, one callback.
    Approved,
    /// Denied with reason codes, one callback.
    Denied,
    /// Approved, no callback: the result is only on the status endpoint.
    PollOnly,
    /// Approved, the same callback twice.
    Twice,
    /// Approved, then a second callback with a lower amount.
    Revised,
}

impl Script {
    fn of(n: i64) -> Script {
        match n % 10 {
            0..=4 => Script::Approved,
            5 | 6 => Script::Denied,
            7 => Script::PollOnly,
            8 => Script::Twice,
            _ => Script::Revised,
        }
    }

    /// The callbacks the partner sends for one claim.
    fn callbacks(self) -> usize {
        match self {
            Script::PollOnly => 0,
            Script::Approved | Script::Denied => 1,
            Script::Twice | Script::Revised => 2,
        }
    }
}

/// The claim's amount, in cents.
fn amount(n: i64) -> i64 {
    10_000 + n * 250
}

/// The partner's adjudication of claim `n` (the first one, for a revised claim).
fn adjudication(n: i64) -> Value {
    match Script::of(n) {
        Script::Denied => {
            json!({"decision": "denied", "codes": ["CO-16", format!("N{}", 100 + n % 7)]})
        }
        _ => json!({
            "decision": "approved",
            "paid": amount(n) * 8 / 10,
            "claim_no": format!("CH-{:06}", 500_000 + n),
        }),
    }
}

/// The clearinghouse: reads the claim number from the payload and scripts
/// its answer.
fn clearinghouse(payload: &Value) -> Behavior {
    let Some(n) = payload["claim_no"].as_i64() else {
        return Behavior::reject(422);
    };
    let approved = MockOutcome::Succeeded.with_field("adjudication", adjudication(n));
    let later = |outcome, mode| Behavior::callback_later_with(DELAY, outcome, mode);
    match Script::of(n) {
        Script::Approved => later(approved, CallbackMode::Normal),
        Script::Denied => later(
            MockOutcome::failed("claim lacks information")
                .with_field("adjudication", adjudication(n)),
            CallbackMode::Normal,
        ),
        Script::PollOnly => later(approved, CallbackMode::Never),
        Script::Twice => later(approved, CallbackMode::Duplicate),
        Script::Revised => {
            let mut revised = adjudication(n);
            revised["paid"] = json!(amount(n) / 2);
            let revised = MockOutcome::Succeeded.with_field("adjudication", revised);
            later(approved, CallbackMode::Revised(revised))
        }
    }
}

/// The host's result handler: one UPDATE in liaison's write transaction.
#[derive(Debug)]
struct Claims;

impl SqliteResultHandler for Claims {
    fn handle(&self, conn: &Connection, finished: &FinishedSubmission) -> Result<(), BoxError> {
        let doc = finished.document();
        let codes = doc
            .and_then(|d| d.get("codes"))
            .map(|codes| codes.to_string());
        let changed = conn.execute(
            "UPDATE claims SET status = ?2, paid = ?3, partner_claim_no = ?4, denial_codes = ?5,
                    applied = applied + 1
             WHERE claim_id = ?1",
            params![
                finished.submission.idempotency_key,
                finished.final_state().as_str(),
                doc.and_then(|d| d["paid"].as_i64()),
                doc.and_then(|d| d["claim_no"].as_str()),
                codes,
            ],
        )?;
        if changed != 1 {
            return Err(format!("no claim {}", finished.submission.idempotency_key).into());
        }
        Ok(())
    }
}

/// One row of the host's table.
#[derive(Debug)]
struct Row {
    claim_id: String,
    n: i64,
    status: String,
    paid: Option<i64>,
    partner_claim_no: Option<String>,
    denial_codes: Option<String>,
    applied: i64,
}

#[tokio::main]
async fn main() -> Result<ExitCode, Box<dyn std::error::Error>> {
    let started = Instant::now();
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("claims.db");
    let store = SqliteStore::open(&path)?;
    let mut host = store.connect()?;
    host.execute_batch(
        "CREATE TABLE claims (
            claim_id         TEXT PRIMARY KEY,
            n                INTEGER NOT NULL,
            amount_cents     INTEGER NOT NULL,
            status           TEXT NOT NULL DEFAULT 'submitted',
            paid             INTEGER,
            partner_claim_no TEXT,
            denial_codes     TEXT,
            applied          INTEGER NOT NULL DEFAULT 0
        )",
    )?;
    println!("outbox and host table: {}", path.display());

    let secret = format!(
        "whsec_{}",
        base64::engine::general_purpose::STANDARD.encode(rand::random::<[u8; 32]>())
    );
    let mock = MockPartner::start_with(Behavior::scripted(clearinghouse)).await?;
    // 202 awaits the result; a callback or a poll's answer carries it under
    // `/status`, with the adjudication under `/adjudication`.
    let adapter = HttpJsonAdapter::new(&mock.submit_url())?
        .status_pointer("/status", ResultMapping::new(["succeeded"], ["failed"])?)?
        .result_pointer("/adjudication")?
        .status_url(&mock.status_url())?;
    let matcher = JsonMatcher::builder(StandardWebhooks::new(&secret)?)
        .result("/adjudication")
        .build()?;
    let partner = Partner::new("clearinghouse", adapter)
        .callbacks(matcher)
        // Poll-only claims: overdue after 1 s, then polled every 200 ms.
        .result_timeout(Duration::from_secs(1))
        .polling(Duration::from_millis(200), 10)
        .results_in_sqlite(&store, Claims);
    let settings = EngineSettings::default()
        .poll_interval(Duration::from_millis(50))
        .deadline_interval(Duration::from_millis(100));
    let liaison = Liaison::builder(store.clone())
        .partner(partner)
        .settings(settings)
        .build()?;
    let handle = liaison.start();

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let callback_url = format!("http://{}/callbacks/clearinghouse", listener.local_addr()?);
    // Behind a timeout, a concurrency limit and a body limit (EdgeLimits):
    // whoever reaches the endpoint cannot hold it open or pile requests up.
    let app = liaison::http::callback_router_with(liaison.clone(), EdgeLimits::default());
    tokio::spawn(async move { axum::serve(listener, app).await });
    mock.set_callback_url(Some(callback_url));
    mock.set_callback_signing(Some(StandardWebhooks::new(&secret)?));

    // The host's write: the claim's row and its submission, one transaction.
    for n in 0..CLAIMS {
        let claim_id = format!("C-{}", 1000 + n);
        let tx = host.transaction_with_behavior(TransactionBehavior::Immediate)?;
        tx.execute(
            "INSERT INTO claims (claim_id, n, amount_cents) VALUES (?1, ?2, ?3)",
            params![claim_id, n, amount(n)],
        )?;
        let payload = json!({"claim_id": claim_id, "claim_no": n, "amount_cents": amount(n)});
        store.enqueue_in_transaction(
            &tx,
            NewSubmission::new("clearinghouse", "claim.submit", payload).idempotency_key(&claim_id),
        )?;
        tx.commit()?;
    }
    println!("enqueued {CLAIMS} claims with their rows");

    // Wait until every claim has its result in the host's table, and every
    // callback the partner sends has been answered (so a double would show).
    let want_callbacks: usize = (0..CLAIMS).map(|n| Script::of(n).callbacks()).sum();
    let waited = Instant::now();
    loop {
        let done: i64 =
            host.query_row("SELECT count(*) FROM claims WHERE applied > 0", [], |r| {
                r.get(0)
            })?;
        let sent = mock.callback_log().len();
        if done == CLAIMS && sent >= want_callbacks {
            break;
        }
        if waited.elapsed() > PATIENCE {
            println!(
                "gave up after {PATIENCE:?}: {done} of {CLAIMS} results, {sent} of {want_callbacks} callbacks"
            );
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // The last callbacks were answered; let their ingest settle.
    tokio::time::sleep(Duration::from_millis(300)).await;
    println!(
        "results in after {:.1} s\n",
        started.elapsed().as_secs_f64()
    );

    let rows = read_rows(&host)?;
    let mut problems = Vec::new();
    for row in &rows {
        problems.extend(check(&liaison, row).await?);
    }
    if rows.len() != CLAIMS as usize {
        problems.push(format!("{} rows in claims, want {CLAIMS}", rows.len()));
    }

    summary(&rows);
    let callbacks = store
        .list_callbacks(&CallbackFilter::default().limit(10_000))
        .await?;
    let mut dispositions: BTreeMap<&str, usize> = BTreeMap::new();
    for c in &callbacks {
        *dispositions.entry(c.disposition.as_str()).or_default() += 1;
    }
    println!(
        "\ncallbacks: {} sent by the partner, {} received: {}",
        mock.callback_log().len(),
        callbacks.len(),
        dispositions
            .iter()
            .map(|(d, n)| format!("{n} {d}"))
            .collect::<Vec<_>>()
            .join(", ")
    );

    handle.shutdown(Duration::from_secs(5)).await?;
    if problems.is_empty() {
        println!("\nevery claim has exactly one result, as the partner sent it");
        Ok(ExitCode::SUCCESS)
    } else {
        println!("\n{} problem(s):", problems.len());
        for p in problems.iter().take(20) {
            println!("  {p}");
        }
        Ok(ExitCode::FAILURE)
    }
}

fn read_rows(host: &Connection) -> liaison::rusqlite::Result<Vec<Row>> {
    let mut stmt = host.prepare(
        "SELECT claim_id, n, status, paid, partner_claim_no, denial_codes, applied
         FROM claims ORDER BY n",
    )?;
    let rows = stmt.query_map([], |r| {
        Ok(Row {
            claim_id: r.get(0)?,
            n: r.get(1)?,
            status: r.get(2)?,
            paid: r.get(3)?,
            partner_claim_no: r.get(4)?,
            denial_codes: r.get(5)?,
            applied: r.get(6)?,
        })
    })?;
    rows.collect()
}

/// What is wrong with one claim's row: applied other than once, another
/// status than the partner's, or a row that differs from the document
/// liaison kept or from the partner's (first) adjudication.
async fn check(liaison: &Liaison, row: &Row) -> liaison::Result<Vec<String>> {
    let mut problems = Vec::new();
    let claim = &row.claim_id;
    if row.applied != 1 {
        problems.push(format!("{claim}: applied {} times", row.applied));
        if row.applied == 0 {
            return Ok(problems);
        }
    }
    let script = Script::of(row.n);
    let want_status = if script == Script::Denied {
        "failed"
    } else {
        "succeeded"
    };
    if row.status != want_status {
        problems.push(format!(
            "{claim}: status {}, want {want_status}",
            row.status
        ));
    }
    let submission = liaison.get_by_key("clearinghouse", claim).await?;
    let kept = submission
        .result
        .as_ref()
        .and_then(|r| r.document())
        .cloned();
    // The partner's first word stands: a repeat or a revision with another
    // document is recorded as conflicting and not applied.
    if kept.as_ref() != Some(&adjudication(row.n)) {
        problems.push(format!(
            "{claim}: liaison kept {kept:?}, the partner sent {}",
            adjudication(row.n)
        ));
    }
    let kept = kept.unwrap_or(Value::Null);
    let wrote = (
        row.paid,
        row.partner_claim_no.as_deref(),
        row.denial_codes.clone(),
    );
    let in_doc = (
        kept["paid"].as_i64(),
        kept["claim_no"].as_str(),
        kept.get("codes").map(|c| c.to_string()),
    );
    if wrote != in_doc {
        problems.push(format!(
            "{claim}: the host wrote {wrote:?}, the document says {in_doc:?}"
        ));
    }
    Ok(problems)
}

fn summary(rows: &[Row]) {
    let mut by_status: BTreeMap<&str, (usize, i64)> = BTreeMap::new();
    for row in rows {
        let entry = by_status.entry(row.status.as_str()).or_default();
        entry.0 += 1;
        entry.1 += row.paid.unwrap_or(0);
    }
    println!("{:<10} {:>6} {:>14}", "status", "claims", "paid");
    for (status, (count, paid)) in &by_status {
        println!("{status:<10} {count:>6} {:>14}", dollars(*paid));
    }
    let total: i64 = rows.iter().filter_map(|r| r.paid).sum();
    println!("{:<10} {:>6} {:>14}", "total", rows.len(), dollars(total));

    println!(
        "\n{:<8} {:<9} {:<10} {:>10} {:<10} {:<16} applied",
        "claim", "script", "status", "paid", "claim no", "codes"
    );
    // One row of each script.
    let mut shown = Vec::new();
    for row in rows {
        let script = Script::of(row.n);
        if shown.contains(&script) {
            continue;
        }
        shown.push(script);
        println!(
            "{:<8} {:<9} {:<10} {:>10} {:<10} {:<16} {}",
            row.claim_id,
            format!("{script:?}"),
            row.status,
            row.paid.map(dollars).unwrap_or_else(|| "-".into()),
            row.partner_claim_no.as_deref().unwrap_or("-"),
            row.denial_codes.as_deref().unwrap_or("-"),
            row.applied
        );
    }
}

fn dollars(cents: i64) -> String {
    format!("${}.{:02}", cents / 100, cents % 100)
}
