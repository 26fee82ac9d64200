//! The `liaison` binary on a prepared outbox: each command's output and exit
//! code, the `--json` variants, and the errors a support engineer will meet.
//!
//! Every case runs twice, as `cli::sqlite::<case>` on an SQLite file and as
//! `cli::postgres::<case>` on a PostgreSQL schema of its own (the
//! conformance suite's harness: `LIAISON_TEST_PG_URL`, skipped with a
//! notice without it unless `LIAISON_REQUIRE_PG=1`): the same commands, the
//! same output and exit codes. What only one store has (a file that is not
//! a database, a server that cannot be reached) is tested on its own below.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::process::Command;

use liaison::callback::{CallbackId, Disposition};
use liaison::store::{NewCallback, Settlement};
use liaison::{EventKind, SubmissionId, SubmissionState};
use serde_json::Value;

use crate::conformance::harness::{Harness, Store};
use crate::support::{drive_new_to, park_deliveries, submission};

/// An outbox with work in every state that matters, and one malformed
/// callback in quarantine. The store is closed again: the CLI is the only
/// one using it, as on a support engineer's machine.
struct Outbox {
    db: Harness,
    ids: BTreeMap<&'static str, SubmissionId>,
    callback: CallbackId,
}

impl Outbox {
    fn id(&self, key: &str) -> String {
        self.ids[key].to_string()
    }

    fn run(&self, args: &[&str]) -> Run {
        run(&self.db, args)
    }

    /// A store instance on the outbox, as the host application has.
    async fn store(&self) -> Store {
        self.db.store().await
    }
}

/// bank: 2 succeeded, 1 failed (500.00), 1 dead-lettered (700.00), 1 stuck
/// (300.00), 1 queued; lab: 1 stuck (25.00). At risk: 4 worth 1525.00 (no currency given).
async fn outbox(db: Harness) -> Outbox {
    use SubmissionState::*;
    let store = db.store().await;
    // Queued work last: driving a submission claims its partner's due work.
    let script = [
        ("bank", "s1", 10_000, Succeeded),
        ("bank", "s2", 10_000, Succeeded),
        ("bank", "f1", 50_000, Failed),
        ("bank", "d1", 70_000, DeadLettered),
        ("bank", "k1", 30_000, Stuck),
        ("lab", "x1", 2_500, Stuck),
        ("bank", "q1", 2_000, Queued),
    ];
    let mut ids = BTreeMap::new();
    for (partner, key, cents, state) in script {
        let new = submission(partner, key).business_value(cents);
        let (id, _) = drive_new_to(&*store, new, state).await;
        ids.insert(key, id);
    }
    let body = b"{\"status\": \"succeeded\", \"ref\": ".to_vec();
    let callback = store
        .record_callback(NewCallback::new("bank", body).header("content-type", "application/json"))
        .await
        .unwrap();
    store
        .settle_callback(
            callback,
            Settlement::Malformed {
                reason: "EOF while parsing a value at line 1 column 32".into(),
            },
        )
        .await
        .unwrap();
    drop(store);
    Outbox { db, ids, callback }
}

#[derive(Debug)]
struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

impl Run {
    fn json(&self) -> Value {
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("stdout is not JSON ({e}):\n{}", self.stdout))
    }

    #[track_caller]
    fn ok(&self) -> &Self {
        assert_eq!(self.code, 0, "{self:#?}");
        self
    }

    #[track_caller]
    fn has(&self, needle: &str) -> &Self {
        assert!(
            self.stdout.contains(needle),
            "{needle:?} not in stdout:\n{self:#?}"
        );
        self
    }
}

/// `--db` (and `--schema`) naming the outbox under test.
fn db_args(db: &Harness) -> Vec<OsString> {
    match db.postgres_schema() {
        Some((url, schema)) => ["--db", url, "--schema", schema]
            .map(OsString::from)
            .to_vec(),
        None => vec![
            "--db".into(),
            db.sqlite_file().expect("an SQLite file").into(),
        ],
    }
}

/// The binary, with the environment it could read the outbox from removed.
fn cli() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_liaison"));
    for var in ["LIAISON_DB", "LIAISON_SCHEMA", "LIAISON_CA_FILE"] {
        command.env_remove(var);
    }
    command.env("USER", "tester");
    command
}

fn run(db: &Harness, args: &[&str]) -> Run {
    run_with(db_args(db), args)
}

fn run_with(db_args: Vec<OsString>, args: &[&str]) -> Run {
    let out = cli()
        .args(db_args)
        .args(args)
        .output()
        .expect("run the liaison binary");
    Run {
        code: out.status.code().expect("exited"),
        stdout: String::from_utf8(out.stdout).expect("UTF-8 stdout"),
        stderr: String::from_utf8(out.stderr).expect("UTF-8 stderr"),
    }
}

async fn state_of(outbox: &Outbox, key: &str) -> SubmissionState {
    outbox
        .store()
        .await
        .get(outbox.ids[key])
        .await
        .unwrap()
        .state
}

async fn status_answers_the_four_questions(db: Harness) {
    let outbox = outbox(db).await;
    let run = outbox.run(&["status"]);
    run.ok()
        .has("Is it working today?")
        .has("Yes: with problems to look at: bank: 50%")
        .has("DEGRADED")
        .has("bank: 50% of the submissions that ended in the window failed")
        .has("Do we notice when it breaks?")
        .has("2 stuck, 1 dead-lettered")
        .has("1 callback in quarantine")
        .has("Is there an impact?")
        .has("4 submissions worth 1525.00 (currency unspecified) at risk")
        .has("Can we recover?")
        .has(
            "4 replayable submissions (1 failed, 1 dead-lettered, 2 stuck) to replay, resolve or \
             cancel; 1 quarantined callback to reprocess or dismiss",
        )
        .has("replay-where --dry-run")
        .has("callbacks --quarantined");
    // The commands to run name this outbox again (a PostgreSQL one with its
    // schema, without a password).
    let again = match outbox.db.postgres_schema() {
        Some((url, schema)) => format!("liaison --db {url} --schema {schema} replay-where"),
        None => format!(
            "liaison --db {} replay-where",
            outbox.db.sqlite_file().unwrap().display()
        ),
    };
    run.has(&again);
    // The questions come first, then the table per partner.
    let table = run.stdout.find("PARTNER").expect("a partner table");
    assert!(run.stdout.find("Can we recover?").unwrap() < table);
    let bank = run.stdout.lines().find(|l| l.starts_with("bank ")).unwrap();
    assert!(
        bank.contains("degraded") && bank.contains("1500.00 (currency unspecified) (3)"),
        "{bank}"
    );
    let lab = run.stdout.lines().find(|l| l.starts_with("lab ")).unwrap();
    assert!(lab.contains("25.00 (currency unspecified) (1)"), "{lab}");

    let json = outbox
        .run(&["status", "--window", "2d", "--json"])
        .ok()
        .json();
    assert_eq!(json["verdict"], "degraded");
    assert_eq!(json["window_secs"], 172_800);
    assert_eq!(json["impact"]["submissions"], 4);
    assert_eq!(json["impact"]["value"]["unspecified"], 152_500);
    assert_eq!(json["noticed"]["stuck"], 2);
    assert_eq!(json["noticed"]["quarantined_callbacks"], 1);
    assert_eq!(json["recovery"]["replayable"], 4);
    // The answers, worded as the ops page words them.
    assert_eq!(json["questions"]["impact"]["yes"], true);
    assert_eq!(json["questions"]["impact"]["good"], false);
    assert_eq!(json["questions"]["counts"]["quarantined_callbacks"], 1);
    assert_eq!(json["health"]["partners"].as_array().unwrap().len(), 2);
}

async fn status_exits_1_when_the_verdict_is_down(db: Harness) {
    let store = db.store().await;
    for key in ["a", "b", "c"] {
        let new = submission("lab", key).business_value(1_000);
        drive_new_to(&*store, new, SubmissionState::DeadLettered).await;
    }
    drop(store);
    let run = run(&db, &["status"]);
    assert_eq!(run.code, 1, "{run:#?}");
    run.has("DOWN")
        .has("lab: nothing succeeded in the window")
        .has("3 submissions worth 30.00 (currency unspecified) at risk");
}

/// Two currencies and a business deadline: `status` says each in plain
/// words, never adding EUR to USD; `list --by-deadline` lists the open work
/// by nearest deadline; `show` and `export` carry the currency and deadline.
async fn status_reports_impact_per_currency_and_deadlines_at_risk(db: Harness) {
    use SubmissionState::*;
    let store = db.store().await;
    let due = chrono::Utc::now() + chrono::Duration::hours(3);
    let script = [
        ("e1", 25_000, "EUR", Some(due), DeadLettered),
        ("u1", 1_000, "USD", None, Failed),
        (
            "e2",
            5_000,
            "EUR",
            Some(due + chrono::Duration::hours(48)),
            Queued,
        ),
    ];
    let mut ids = BTreeMap::new();
    for (key, cents, currency, deadline, state) in script {
        let mut new = submission("clearinghouse", key).business_value_in(cents, currency);
        if let Some(at) = deadline {
            new = new.business_deadline(at);
        }
        ids.insert(key, drive_new_to(&*store, new, state).await.0);
    }
    drop(store);
    let run = run(&db, &["status"]);
    run.has("2 submissions worth EUR 250.00 + USD 10.00 at risk")
        .has("by age: < 1 h: 2 worth EUR 250.00 + USD 10.00")
        .has(
            "clearinghouse: 1 submission(s) will miss their business deadline within 24 h (EUR 250.00)",
        );
    let json = run_json(&db, &["status", "--json"]);
    assert_eq!(json["impact"]["value"]["EUR"], 25_000);
    assert_eq!(json["impact"]["value"]["USD"], 1_000);
    assert_eq!(json["impact"]["deadlines"][0]["at_risk"]["count"], 1);
    assert_eq!(json["impact"]["deadlines"][0]["lead_time_secs"], 86_400);

    let list = run_ok(&db, &["list", "--by-deadline"]);
    // Keys as a column (" e1 "): "e1" alone also occurs inside hex ids.
    let e1 = list.find(" e1 ").expect("e1 listed");
    let e2 = list.find(" e2 ").expect("e2 listed");
    assert!(e1 < e2, "nearest first: {list}");
    assert!(!list.contains(" u1 "), "no deadline, not listed: {list}");
    assert!(
        list.contains("EUR 250.00") && list.contains("BUSINESS DEADLINE"),
        "{list}"
    );
    let show = run_ok(&db, &["show", &ids["u1"].to_string()]);
    assert!(show.contains("USD 10.00"), "{show}");
    let show = run_ok(&db, &["show", &ids["e1"].to_string()]);
    assert!(
        show.contains("business deadline") && show.contains("(in "),
        "{show}"
    );
    let csv = run_ok(&db, &["export", "--format", "csv"]);
    let header = csv.lines().next().unwrap();
    assert!(header.ends_with("currency,business_deadline"), "{header}");
    assert!(csv.lines().any(|l| l.contains(",USD,")), "{csv}");
}

fn run_ok(db: &Harness, args: &[&str]) -> String {
    let run = run(db, args);
    assert_eq!(run.code, 0, "{run:#?}");
    run.stdout
}

fn run_json(db: &Harness, args: &[&str]) -> Value {
    serde_json::from_str(&run(db, args).stdout).expect("JSON")
}

async fn an_empty_outbox_is_healthy(db: Harness) {
    drop(db.store().await);
    run(&db, &["status"])
        .ok()
        .has("HEALTHY")
        .has("no submissions yet")
        .has("Is there an impact?")
        .has("No: no work is at risk")
        .has("Yes: nothing needs recovering");
    run(&db, &["list"]).ok().has("no submissions match");
}

async fn list_filters_by_state_and_partner(db: Harness) {
    let outbox = outbox(db).await;
    let run = outbox.run(&["list", "--state", "stuck", "--partner", "lab"]);
    run.ok()
        .has("ID")
        .has("LAST ERROR")
        .has(&outbox.id("x1"))
        .has("  x1  ")
        .has("1 submission\n");
    assert!(
        !run.stdout.contains(&outbox.id("k1")),
        "bank's stuck work is not lab's"
    );

    let json = outbox
        .run(&[
            "list",
            "--state",
            "dead-lettered",
            "--state",
            "failed",
            "--json",
        ])
        .ok()
        .json();
    let states: Vec<&str> = json
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["state"].as_str().unwrap())
        .collect();
    assert_eq!(states, ["failed", "dead_lettered"]);

    let limited = outbox.run(&["list", "--limit", "2"]);
    limited.ok().has("2 submissions (the limit");
}

async fn list_and_show_find_work_by_the_hosts_keys_and_by_time_of_change(db: Harness) {
    let outbox = outbox(db).await;
    let store = outbox.store().await;
    let mut ids = BTreeMap::new();
    for (partner, key, claim) in [
        ("lab", "c1", "C-77"),
        ("bank", "c2", "C-77"),
        ("bank", "c3", "C-78"),
    ] {
        let new = submission(partner, key).correlation("claim_id", claim);
        ids.insert(key, store.enqueue(new).await.unwrap().submission.id);
    }
    let run = outbox.run(&["list", "--correlation", "claim_id=C-77"]);
    run.ok()
        .has(&ids["c1"].to_string())
        .has(&ids["c2"].to_string())
        .has("2 submissions\n");
    let json = outbox
        .run(&[
            "list",
            "--correlation",
            "claim_id=C-77",
            "--partner",
            "bank",
            "--json",
        ])
        .ok()
        .json();
    let keys: Vec<&str> = json
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["idempotency_key"].as_str().unwrap())
        .collect();
    assert_eq!(keys, ["c2"]);
    let export = outbox
        .run(&["export", "--correlation", "claim_id=C-77"])
        .ok()
        .json();
    assert_eq!(export.as_array().unwrap().len(), 2);
    for (args, message) in [
        (
            ["list", "--correlation", "claim id=C-77"],
            "invalid correlation field name",
        ),
        (["list", "--correlation", "claim_id"], "NAME=VALUE"),
        (["list", "--updated-since", "yesterday"], "RFC 3339"),
    ] {
        let run = outbox.run(&args);
        assert_eq!(run.code, 2, "{run:#?}");
        assert!(run.stderr.contains(message), "{run:#?}");
    }

    // Changes since a time: an age or RFC 3339.
    let everything = outbox.run(&["list", "--updated-since", "1h", "--json"]);
    assert_eq!(everything.ok().json().as_array().unwrap().len(), 10);
    outbox
        .run(&["list", "--updated-since", "2099-01-01T00:00:00Z"])
        .ok()
        .has("no submissions match");
    tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    let since = chrono::Utc::now().to_rfc3339();
    tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    store
        .transition(
            ids["c1"],
            liaison::store::StateChange::to(SubmissionState::Cancelled),
        )
        .await
        .unwrap();
    let changed = outbox.run(&["list", "--updated-since", &since]);
    changed
        .ok()
        .has(&ids["c1"].to_string())
        .has("1 submission\n");

    // `show` by the host's key, also by the key from before a replay.
    store
        .replay(
            outbox.ids["d1"],
            liaison::store::Replay::new(liaison::Actor::person("ops"), "fixed").fresh_key(true),
        )
        .await
        .unwrap();
    drop(store);
    for key in ["d1", "d1~replay1"] {
        outbox
            .run(&["show", "--partner", "bank", "--key", key])
            .ok()
            .has(&format!("Submission {}", outbox.id("d1")))
            .has("d1~replay1");
    }
    let json = outbox
        .run(&["show", "--partner", "bank", "--key", "d1", "--json"])
        .ok()
        .json();
    assert_eq!(json["submission"]["id"], outbox.id("d1"));
    let run = outbox.run(&["show", "--partner", "lab", "--key", "d1"]);
    assert_eq!(run.code, 2, "{run:#?}");
    assert!(run.stderr.contains("not found"), "{run:#?}");
    let run = outbox.run(&["show", "--key", "d1"]);
    assert_eq!(run.code, 2, "{run:#?}");
    assert!(run.stderr.contains("--partner"), "{run:#?}");
    let run = outbox.run(&["show", &outbox.id("d1"), "--key", "d1", "--partner", "bank"]);
    assert_eq!(run.code, 2, "{run:#?}");
}

async fn show_prints_the_details_the_timeline_and_the_attempts(db: Harness) {
    let outbox = outbox(db).await;
    let id = outbox.id("k1");
    let run = outbox.run(&["show", &id]);
    run.ok()
        .has(&format!("Submission {id}"))
        .has("state            stuck")
        .has("value            300.00")
        .has("Timeline (4 events, UTC)")
        .has("Attempts (1)")
        .has("To recover: liaison replay");
    let timeline: Vec<&str> = run
        .stdout
        .lines()
        .skip_while(|l| !l.starts_with("Timeline"))
        .skip(2)
        .take_while(|l| !l.is_empty())
        .collect();
    let events: Vec<&str> = timeline
        .iter()
        .map(|l| l.split_whitespace().nth(2).unwrap())
        .collect();
    assert_eq!(events, ["enqueued", "claimed", "accepted", "stuck"]);
    assert!(
        timeline[3].contains("awaiting_result -> stuck"),
        "{}",
        timeline[3]
    );

    let json = outbox.run(&["show", &id, "--json"]).ok().json();
    assert_eq!(json["submission"]["id"], id.as_str());
    assert_eq!(json["timeline"].as_array().unwrap().len(), 4);
    assert_eq!(json["attempts"][0]["outcome"], "accepted");
}

async fn replay_puts_the_submission_back_in_the_queue(db: Harness) {
    let outbox = outbox(db).await;
    let id = outbox.id("k1");
    let run = outbox.run(&[
        "replay",
        &id,
        "--reason",
        "partner lost it",
        "--actor",
        "alice",
    ]);
    run.ok()
        .has(&format!("Replayed {id}: stuck -> queued"))
        .has("same idempotency key k1");
    assert_eq!(state_of(&outbox, "k1").await, SubmissionState::Queued);
    let last = outbox
        .store()
        .await
        .timeline(outbox.ids["k1"])
        .await
        .unwrap()
        .pop()
        .unwrap();
    assert_eq!(last.kind, EventKind::Replayed);
    assert_eq!(last.actor.as_str(), "alice");
    assert_eq!(last.reason.as_deref(), Some("partner lost it"));

    // Once queued it cannot be replayed again: refused, naming the state.
    let again = outbox.run(&["replay", &id, "--reason", "twice"]);
    assert_eq!(again.code, 2, "{again:#?}");
    assert!(again.stderr.contains("from queued"), "{}", again.stderr);
    assert!(
        again.stderr.contains("only failed, dead-lettered or stuck"),
        "{}",
        again.stderr
    );

    // The failed one gets a fresh key; --json gives the new submission.
    let json = outbox
        .run(&[
            "replay",
            &outbox.id("f1"),
            "--reason",
            "data fixed",
            "--json",
        ])
        .ok()
        .json();
    assert_eq!(json["action"], "replay");
    assert_eq!(json["submission"]["state"], "queued");
    assert_eq!(json["submission"]["idempotency_key"], "f1~replay1");
}

async fn replay_where_dry_run_counts_what_the_real_run_replays(db: Harness) {
    let outbox = outbox(db).await;
    let dry = outbox.run(&["replay-where", "--dry-run"]);
    dry.ok()
        .has("Would replay 4 submissions (dry run: nothing changed)");
    let dry_json = outbox
        .run(&["replay-where", "--dry-run", "--json"])
        .ok()
        .json();
    assert_eq!(dry_json["matched"], 4);
    assert_eq!(dry_json["replayed"], 0);
    assert_eq!(state_of(&outbox, "d1").await, SubmissionState::DeadLettered);

    // Filters narrow it, as for list.
    let narrowed = outbox.run(&["replay-where", "--dry-run", "--partner", "lab", "--json"]);
    assert_eq!(narrowed.ok().json()["matched"], 1);

    let real = outbox.run(&["replay-where", "--reason", "after the outage"]);
    real.ok().has("Replayed 4 submissions of 4 matched.");
    assert!(real.stderr.contains("Replaying 4 submissions"), "{real:#?}");
    let queued = outbox
        .store()
        .await
        .list(&liaison::store::ListFilter::default().state(SubmissionState::Queued))
        .await
        .unwrap();
    assert_eq!(queued.len(), 4 + 1, "the four replayed and q1");

    // Nothing is left to replay; a reason is required for a real run.
    let nothing = outbox.run(&["replay-where", "--reason", "again", "--json"]);
    assert_eq!(nothing.ok().json()["replayed"], 0);
    let no_reason = outbox.run(&["replay-where"]);
    assert_eq!(no_reason.code, 2);
    assert!(
        no_reason.stderr.contains("--reason"),
        "{}",
        no_reason.stderr
    );
}

async fn resolve_settles_by_hand_with_the_outcome_on_the_timeline(db: Harness) {
    let outbox = outbox(db).await;
    let id = outbox.id("d1");
    outbox
        .run(&[
            "resolve",
            &id,
            "--outcome",
            "succeeded",
            "--note",
            "entered on the partner portal",
        ])
        .ok()
        .has(&format!(
            "Resolved {id} by hand (succeeded): dead_lettered -> resolved_manually"
        ));
    assert_eq!(
        state_of(&outbox, "d1").await,
        SubmissionState::ResolvedManually
    );
    let last = outbox
        .store()
        .await
        .timeline(outbox.ids["d1"])
        .await
        .unwrap()
        .pop()
        .unwrap();
    assert_eq!(last.actor.as_str(), "tester", "$USER is the default actor");
    assert_eq!(last.data.unwrap()["outcome"], "succeeded");

    let json = outbox
        .run(&[
            "resolve",
            &outbox.id("f1"),
            "--outcome",
            "failed",
            "--failure-reason",
            "patient withdrew",
            "--note",
            "called the clinic",
            "--result",
            r#"{"withdrawn": true, "clinic_ref": "W-9"}"#,
            "--json",
        ])
        .ok()
        .json();
    assert_eq!(json["submission"]["state"], "resolved_manually");
    let last = outbox
        .store()
        .await
        .timeline(outbox.ids["f1"])
        .await
        .unwrap()
        .pop()
        .unwrap();
    let data = last.data.unwrap();
    assert_eq!(data["outcome"], "failed");
    assert_eq!(data["reason"], "patient withdrew");
    // The attached document is kept as the submission's result.
    let resolved = outbox.store().await.get(outbox.ids["f1"]).await.unwrap();
    assert_eq!(
        resolved.result.as_ref().and_then(|r| r.document()),
        Some(&serde_json::json!({"withdrawn": true, "clinic_ref": "W-9"}))
    );
    let not_json = outbox.run(&[
        "resolve",
        &outbox.id("k1"),
        "--outcome",
        "succeeded",
        "--note",
        "y",
        "--result",
        "{not json",
    ]);
    assert_eq!(not_json.code, 2, "{}", not_json.stderr);
    assert!(not_json.stderr.contains("not JSON"), "{}", not_json.stderr);

    let mixed = outbox.run(&[
        "resolve",
        &outbox.id("k1"),
        "--outcome",
        "succeeded",
        "--failure-reason",
        "x",
        "--note",
        "y",
    ]);
    assert_eq!(mixed.code, 2);
    assert_eq!(state_of(&outbox, "k1").await, SubmissionState::Stuck);
}

async fn cancel_stops_unfinished_work_and_is_refused_for_finished_work(db: Harness) {
    let outbox = outbox(db).await;
    let id = outbox.id("q1");
    outbox
        .run(&["cancel", &id, "--reason", "claim withdrawn"])
        .ok()
        .has(&format!("Cancelled {id}: queued -> cancelled"));
    assert_eq!(state_of(&outbox, "q1").await, SubmissionState::Cancelled);

    let refused = outbox.run(&["cancel", &outbox.id("s1"), "--reason", "too late"]);
    assert_eq!(refused.code, 2, "{refused:#?}");
    assert!(
        refused
            .stderr
            .contains("cannot go from succeeded to cancelled"),
        "{}",
        refused.stderr
    );
    assert!(refused.stdout.is_empty());
    assert_eq!(state_of(&outbox, "s1").await, SubmissionState::Succeeded);
}

async fn callbacks_lists_the_quarantine(db: Harness) {
    let outbox = outbox(db).await;
    let id = outbox.callback.to_string();
    outbox
        .run(&["callbacks", "--quarantined"])
        .ok()
        .has("DISPOSITION")
        .has(&id)
        .has("malformed")
        .has("EOF while parsing")
        .has("1 callback\n");
    let json = outbox
        .run(&[
            "callbacks",
            "--disposition",
            "malformed",
            "--partner",
            "bank",
            "--json",
        ])
        .ok()
        .json();
    assert_eq!(json[0]["id"], id.as_str());
    assert_eq!(json[0]["disposition"], "malformed");
    assert_eq!(json[0]["quarantined"], true);
    outbox
        .run(&["callbacks", "--partner", "lab"])
        .ok()
        .has("no callbacks match");
}

async fn reprocess_explains_that_the_host_does_it(db: Harness) {
    let outbox = outbox(db).await;
    let id = outbox.callback.to_string();
    let run = outbox.run(&["reprocess", &id]);
    assert_eq!(run.code, 2, "{run:#?}");
    run.has(&format!("Callback {id}"))
        .has("malformed")
        .has("{\"status\": \"succeeded\"");
    assert!(
        run.stderr.contains("Liaison::reprocess_callback"),
        "{}",
        run.stderr
    );
    assert!(run.stderr.contains("matcher and secrets"), "{}", run.stderr);
    let stored = outbox
        .store()
        .await
        .callback(outbox.callback)
        .await
        .unwrap();
    assert_eq!(
        stored.disposition,
        Disposition::Malformed,
        "nothing changed"
    );

    // With a reason it goes through `Liaison::reprocess_callback_by`, the
    // ops page's journaled path, which needs the partner's matcher: the CLI
    // has none, so it is refused, nothing changed and nothing journaled.
    let run = outbox.run(&[
        "reprocess",
        &id,
        "--reason",
        "matcher fixed",
        "--actor",
        "dana",
    ]);
    assert_eq!(run.code, 2, "{run:#?}");
    assert!(
        run.stderr.contains("Liaison::reprocess_callback_by"),
        "{}",
        run.stderr
    );
    let stored = outbox
        .store()
        .await
        .callback(outbox.callback)
        .await
        .unwrap();
    assert_eq!(stored.disposition, Disposition::Malformed);
    outbox.run(&["journal"]).ok().has("0 journal lines");

    let json = outbox.run(&["reprocess", &id, "--json"]);
    assert_eq!(json.code, 2);
    let json = json.json();
    assert_eq!(json["reprocessed"], false);
    assert_eq!(json["reprocessable"], true);
    assert!(
        json["callback"]["body_text"]
            .as_str()
            .unwrap()
            .starts_with("{\"status\"")
    );
}

async fn dismiss_takes_a_callback_out_of_the_quarantine_with_a_reason(db: Harness) {
    let outbox = outbox(db).await;
    let id = outbox.callback.to_string();
    // Refused, exit 2, nothing changed: no reason, a blank one, an unknown
    // or malformed id.
    let missing = outbox.run(&["dismiss", &id]);
    assert_eq!(missing.code, 2);
    assert!(missing.stderr.contains("--reason"), "{}", missing.stderr);
    let blank = outbox.run(&["dismiss", &id, "--reason", " "]);
    assert_eq!(blank.code, 2);
    assert!(blank.stderr.contains("invalid reason"), "{}", blank.stderr);
    let unknown = "0190a7b2-58f1-7c2e-9a35-5d0e8b1f2c3d";
    let run = outbox.run(&["dismiss", unknown, "--reason", "x"]);
    assert_eq!(run.code, 2);
    assert!(
        run.stderr
            .contains(&format!("callback {unknown} not found")),
        "{}",
        run.stderr
    );
    assert_eq!(outbox.run(&["dismiss", "C-1", "--reason", "x"]).code, 2);
    let stored = outbox
        .store()
        .await
        .callback(outbox.callback)
        .await
        .unwrap();
    assert_eq!(stored.disposition, Disposition::Malformed);

    outbox
        .run(&[
            "dismiss",
            &id,
            "--reason",
            "the partner resent it correctly",
        ])
        .ok()
        .has(&format!(
            "Dismissed callback {id} of bank: malformed -> dismissed"
        ));
    let stored = outbox
        .store()
        .await
        .callback(outbox.callback)
        .await
        .unwrap();
    assert_eq!(stored.disposition, Disposition::Dismissed);
    let dismissal = stored.dismissal.unwrap();
    assert_eq!(dismissal.actor.as_str(), "tester");
    assert_eq!(dismissal.reason, "the partner resent it correctly");
    assert_eq!(dismissal.from, Disposition::Malformed);
    outbox
        .run(&["callbacks", "--quarantined"])
        .ok()
        .has("no callbacks match");
    // Visible in the callback's listing and in `reprocess`'s description.
    let json = outbox
        .run(&["callbacks", "--disposition", "dismissed", "--json"])
        .ok()
        .json();
    assert_eq!(json[0]["quarantined"], false);
    assert_eq!(json[0]["dismissal"]["actor"], "tester");
    assert_eq!(json[0]["dismissal"]["from"], "malformed");
    let shown = outbox.run(&["reprocess", &id]);
    assert!(
        shown
            .stdout
            .contains("by tester (was malformed): the partner resent it correctly"),
        "{shown:#?}"
    );

    // Not quarantined any more: refused, with a hint.
    let again = outbox.run(&[
        "dismiss", &id, "--reason", "again", "--actor", "ann", "--json",
    ]);
    assert_eq!(again.code, 2, "{again:#?}");
    assert!(
        again.stderr.contains(&format!(
            "callback {id} is dismissed; only a quarantined callback"
        )),
        "{}",
        again.stderr
    );
    assert!(again.stderr.contains("liaison callbacks --quarantined"));
    assert!(again.stdout.is_empty());
}

async fn export_writes_json_with_timelines_and_csv(db: Harness) {
    let outbox = outbox(db).await;
    let json = outbox
        .run(&["export", "--format", "json", "--timelines"])
        .ok()
        .json();
    let rows = json.as_array().unwrap();
    assert_eq!(rows.len(), 7);
    for row in rows {
        let timeline = row["timeline"].as_array().unwrap();
        assert_eq!(timeline[0]["kind"], "enqueued", "{row}");
        assert!(row["business_value"].is_i64());
    }
    let plain = outbox.run(&["export", "--state", "stuck"]).ok().json();
    assert_eq!(plain.as_array().unwrap().len(), 2);
    assert!(plain[0].get("timeline").is_none());

    let csv = outbox.run(&["export", "--format", "csv", "--partner", "bank"]);
    let lines: Vec<&str> = csv.ok().stdout.lines().collect();
    assert!(
        lines[0].starts_with("id,partner,kind,state,idempotency_key,"),
        "{}",
        lines[0]
    );
    assert_eq!(lines.len(), 1 + 6);
    assert!(
        lines
            .iter()
            .any(|l| l.contains(",d1,") && l.contains(",70000,"))
    );

    let with_timelines = outbox.run(&["export", "--format", "csv", "--timelines", "--limit", "1"]);
    let out = &with_timelines.ok().stdout;
    assert!(out.lines().next().unwrap().ends_with(",timeline"));
    assert!(
        out.contains("\"\"kind\"\":\"\"enqueued\"\""),
        "quoted JSON column:\n{out}"
    );
}

async fn errors_are_explained_with_exit_code_2(db: Harness) {
    let outbox = outbox(db).await;
    let unknown = SubmissionId::new().to_string();
    let run = outbox.run(&["show", &unknown]);
    assert_eq!(run.code, 2);
    assert!(
        run.stderr
            .contains(&format!("submission {unknown} not found")),
        "{}",
        run.stderr
    );

    let run = outbox.run(&["show", "C-1042"]);
    assert_eq!(run.code, 2);
    assert!(
        run.stderr.contains("not a submission id: \"C-1042\""),
        "{}",
        run.stderr
    );

    let run = outbox.run(&["list", "--state", "lost"]);
    assert_eq!(run.code, 2);
    assert!(
        run.stderr.contains("queued, in_flight, awaiting_result"),
        "{}",
        run.stderr
    );

    let run = outbox.run(&["status", "--window", "1x"]);
    assert_eq!(run.code, 2);
    assert!(
        run.stderr
            .contains("30s (seconds), 15m (minutes), 1h (hours) or 2d (days)")
    );

    let unknown_callback = SubmissionId::new().to_string(); // any UUID is a callback id too
    let run = outbox.run(&["reprocess", &unknown_callback]);
    assert_eq!(run.code, 2);
    assert!(run.stderr.contains("not found"), "{}", run.stderr);
}

/// An outbox whose partner "bank" sends its results to the host: `p1` and
/// `p2` finished and their deliveries are parked (the handler kept
/// failing), `ok` finished and was delivered, `q1` is still queued.
async fn outbox_with_parked_results(db: Harness) -> Outbox {
    use SubmissionState::*;
    let store = db.store().await;
    store.set_result_delivery("bank", true).await.unwrap();
    let mut ids = BTreeMap::new();
    for (key, state) in [
        ("p1", Succeeded),
        ("p2", Failed),
        ("ok", Succeeded),
        ("q1", Queued),
    ] {
        let (id, _) = drive_new_to(&*store, submission("bank", key), state).await;
        ids.insert(key, id);
    }
    let parked = park_deliveries(
        &*store,
        "bank",
        &[ids["p1"], ids["p2"]],
        "claims table locked\u{1b}[2J",
    )
    .await;
    assert_eq!(parked.len(), 2);
    drop(store);
    Outbox {
        db,
        ids,
        callback: SubmissionId::new().to_string().parse().unwrap(),
    }
}

async fn deliveries_lists_results_and_show_names_a_parked_one(db: Harness) {
    let outbox = outbox_with_parked_results(db).await;
    let all = outbox.run(&["deliveries"]);
    all.ok()
        .has("FINAL STATE")
        .has("parked")
        .has("delivered")
        .has("claims table locked\\u001b[2J")
        .has("3 deliveries")
        .has("2 deliveries are parked")
        .has("liaison rerun-delivery <ID>");
    assert!(!all.stdout.contains('\u{1b}'), "control characters escaped");

    let parked = outbox.run(&["deliveries", "--state", "parked", "--json"]);
    let rows = parked.ok().json();
    let rows = rows.as_array().unwrap();
    assert_eq!(rows.len(), 2);
    assert_eq!(rows[0]["state"], "parked");
    assert_eq!(rows[0]["submission_id"], outbox.id("p1"));
    assert_eq!(rows[0]["final_state"], "succeeded");
    assert_eq!(rows[1]["final_state"], "failed");
    assert_eq!(rows[0]["attempts"], 1);
    assert!(
        rows[0]["last_error"]
            .as_str()
            .unwrap()
            .starts_with("claims table locked")
    );

    let one = outbox.run(&["deliveries", "--submission", &outbox.id("ok"), "--json"]);
    let rows = one.ok().json();
    assert_eq!(rows.as_array().unwrap().len(), 1);
    assert_eq!(rows[0]["state"], "delivered");
    let limited = outbox.run(&["deliveries", "--limit", "1"]);
    limited.ok().has("1 delivery (the limit: raise --limit)");
    outbox
        .run(&["deliveries", "--partner", "lab"])
        .ok()
        .has("no result deliveries match");

    let show = outbox.run(&["show", &outbox.id("p1")]);
    let delivery = rows_of(&outbox, "p1")[0]["id"].as_str().unwrap().to_owned();
    show.ok()
        .has("Results to the host (1 delivery)")
        .has(&format!("liaison rerun-delivery {delivery} --reason"));
    let json = outbox.run(&["show", &outbox.id("p1"), "--json"]).json();
    assert_eq!(json["deliveries"][0]["id"], delivery.as_str());
    let queued = outbox.run(&["show", &outbox.id("q1")]);
    assert!(!queued.ok().stdout.contains("Results to the host"));
    assert_eq!(
        outbox.run(&["show", &outbox.id("q1"), "--json"]).json()["deliveries"],
        serde_json::json!([])
    );
}

fn rows_of(outbox: &Outbox, key: &str) -> Vec<Value> {
    let run = outbox.run(&["deliveries", "--submission", &outbox.id(key), "--json"]);
    run.ok().json().as_array().unwrap().clone()
}

async fn rerun_delivery_hands_a_parked_result_over_again_and_refuses_the_others(db: Harness) {
    let outbox = outbox_with_parked_results(db).await;
    let p1 = rows_of(&outbox, "p1")[0]["id"].as_str().unwrap().to_owned();
    let p2 = rows_of(&outbox, "p2")[0]["id"].as_str().unwrap().to_owned();
    let delivered = rows_of(&outbox, "ok")[0]["id"].as_str().unwrap().to_owned();

    let run = outbox.run(&[
        "rerun-delivery",
        &p1,
        "--reason",
        "unlocked the claims table",
    ]);
    run.ok()
        .has(&format!(
            "Re-ran delivery {p1} of submission {}",
            outbox.id("p1")
        ))
        .has("parked -> pending");
    let after = rows_of(&outbox, "p1");
    assert_eq!(after[0]["state"], "pending");
    assert_eq!(after[0]["attempts"], 0, "a fresh retry budget");
    let last = outbox
        .store()
        .await
        .timeline(outbox.ids["p1"])
        .await
        .unwrap()
        .pop()
        .unwrap();
    assert_eq!(last.kind, EventKind::ResultDeliveryRerun);
    assert_eq!(last.actor.as_str(), "tester");
    assert_eq!(last.reason.as_deref(), Some("unlocked the claims table"));

    let json = outbox.run(&[
        "rerun-delivery",
        &p2,
        "--reason",
        "fixed",
        "--actor",
        "ann",
        "--json",
    ]);
    let json = json.ok().json();
    assert_eq!(json["action"], "rerun-delivery");
    assert_eq!(json["delivery"]["state"], "pending");
    assert_eq!(json["delivery"]["id"], p2.as_str());

    // Refused by state: exit 2, a clear message, a hint, nothing changed.
    for (id, state) in [(&p1, "pending"), (&delivered, "delivered")] {
        let again = outbox.run(&["rerun-delivery", id, "--reason", "again"]);
        assert_eq!(again.code, 2, "{again:#?}");
        assert!(
            again.stderr.contains(&format!(
                "delivery {id} is {state}; only a parked delivery is re-run"
            )),
            "{}",
            again.stderr
        );
        assert!(again.stderr.contains("liaison deliveries --state parked"));
        assert!(again.stdout.is_empty());
    }
    assert_eq!(rows_of(&outbox, "ok")[0]["state"], "delivered");

    let missing = outbox.run(&["rerun-delivery", &p1]);
    assert_eq!(missing.code, 2);
    assert!(missing.stderr.contains("--reason"), "{}", missing.stderr);
    let blank = outbox.run(&["rerun-delivery", &p1, "--reason", " "]);
    assert_eq!(blank.code, 2);
    assert!(blank.stderr.contains("reason"), "{}", blank.stderr);
    let unknown = SubmissionId::new().to_string();
    let run = outbox.run(&["rerun-delivery", &unknown, "--reason", "x"]);
    assert_eq!(run.code, 2);
    assert!(
        run.stderr
            .contains(&format!("delivery {unknown} not found")),
        "{}",
        run.stderr
    );
    let run = outbox.run(&["rerun-delivery", "D-1", "--reason", "x"]);
    assert_eq!(run.code, 2);
    assert!(
        run.stderr.contains("not a delivery id: \"D-1\""),
        "{}",
        run.stderr
    );
    let run = outbox.run(&["deliveries", "--state", "failed"]);
    assert_eq!(run.code, 2);
    assert!(
        run.stderr.contains("pending, delivered, parked"),
        "{}",
        run.stderr
    );
}

async fn the_database_may_come_from_the_environment_or_after_the_command(db: Harness) {
    let outbox = outbox(db).await;
    let args = db_args(&outbox.db);
    // --db VALUE [--schema NAME] as LIAISON_DB [and LIAISON_SCHEMA].
    let mut from_env = cli();
    from_env.args(["list", "--partner", "lab", "--json"]);
    from_env.env("LIAISON_DB", &args[1]);
    if let Some(schema) = args.get(3) {
        from_env.env("LIAISON_SCHEMA", schema);
    }
    let from_env = from_env.output().unwrap();
    assert!(from_env.status.success(), "{from_env:?}");
    let rows: Value = serde_json::from_slice(&from_env.stdout).unwrap();
    assert_eq!(rows.as_array().unwrap().len(), 1);

    let after = cli().arg("list").args(&args).output().unwrap();
    assert!(after.status.success(), "{after:?}");

    let neither = cli().arg("status").output().unwrap();
    assert_eq!(neither.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&neither.stderr).contains("LIAISON_DB"));
}

/// Run one statement on the outbox under test, as an operator (or another
/// release) could have: SQL of that store, outside liaison.
async fn execute(db: &Harness, statement: &str) {
    match db.postgres_schema() {
        Some((url, schema)) => {
            let client = crate::conformance::harness::pg::client(url).await;
            client
                .batch_execute(&format!("SET search_path TO {schema}; {statement}"))
                .await
                .unwrap();
        }
        None => {
            rusqlite::Connection::open(db.sqlite_file().unwrap())
                .unwrap()
                .execute_batch(statement)
                .unwrap();
        }
    }
}

/// The schema version the outbox under test records.
async fn recorded_version(db: &Harness) -> i64 {
    let sql = "SELECT COALESCE(MAX(version), 0) FROM liaison_migrations";
    match db.postgres_schema() {
        Some((url, schema)) => {
            let client = crate::conformance::harness::pg::client(url).await;
            client
                .batch_execute(&format!("SET search_path TO {schema}"))
                .await
                .unwrap();
            client.query_one(sql, &[]).await.unwrap().get(0)
        }
        None => rusqlite::Connection::open(db.sqlite_file().unwrap())
            .unwrap()
            .query_row(sql, [], |row| row.get(0))
            .unwrap(),
    }
}

/// An outbox on an older schema (its newest migration's record removed) or
/// a newer one (a migration this build does not know recorded): every
/// command is refused with exit 2, and nothing is migrated.
async fn another_schema_version_is_refused_and_never_migrated(db: Harness) {
    use liaison::store::SCHEMA_VERSION;
    let outbox = outbox(db).await;
    execute(
        &outbox.db,
        &format!("DELETE FROM liaison_migrations WHERE version = {SCHEMA_VERSION}"),
    )
    .await;
    for args in [&["status"][..], &["replay-where", "--reason", "x"][..]] {
        let run = outbox.run(args);
        assert_eq!(run.code, 2, "{args:?}: {run:#?}");
        assert!(
            run.stderr.contains(&format!(
                "has schema version {}, older than this CLI's ({SCHEMA_VERSION}); \
                 the CLI does not migrate a host's database",
                SCHEMA_VERSION - 1
            )),
            "{run:#?}"
        );
        assert!(run.stdout.is_empty(), "{run:#?}");
    }
    assert_eq!(recorded_version(&outbox.db).await, SCHEMA_VERSION - 1);

    let newer = SCHEMA_VERSION + 1;
    execute(
        &outbox.db,
        &format!(
            "INSERT INTO liaison_migrations (version, name, applied_at, checksum) \
             VALUES ({newer}, 'from_the_future', 0, NULL)"
        ),
    )
    .await;
    let run = outbox.run(&["list"]);
    assert_eq!(run.code, 2, "{run:#?}");
    assert!(
        run.stderr.contains(&format!(
            "has schema version {newer}, newer than this CLI knows"
        )),
        "{run:#?}"
    );
    assert_eq!(recorded_version(&outbox.db).await, newer);
}

#[test]
fn a_missing_file_is_never_created() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("typo.db");
    let run = run_with(vec!["--db".into(), path.clone().into()], &["status"]);
    assert_eq!(run.code, 2);
    assert!(
        run.stderr
            .contains(&format!("no outbox at {}", path.display())),
        "{}",
        run.stderr
    );
    assert!(run.stdout.is_empty());
    assert!(!path.exists(), "the CLI created {}", path.display());
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
}

#[test]
fn a_file_that_is_not_an_outbox_is_left_alone() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("app.db");
    std::fs::write(&path, b"").unwrap(); // an empty file is an empty SQLite database
    let run = run_with(vec!["--db".into(), path.clone().into()], &["list"]);
    assert_eq!(run.code, 2);
    assert!(
        run.stderr.contains("is not a liaison outbox"),
        "{}",
        run.stderr
    );
    assert_eq!(
        std::fs::metadata(&path).unwrap().len(),
        0,
        "nothing was written"
    );
    // A schema is PostgreSQL's: refused for a file, which is left alone.
    let run = run_with(
        vec!["--db".into(), path.clone().into()],
        &["--schema", "liaison", "list"],
    );
    assert_eq!(run.code, 2, "{run:#?}");
    assert!(run.stderr.contains("--schema"), "{run:#?}");
    assert_eq!(std::fs::metadata(&path).unwrap().len(), 0);
}

async fn alerts_lists_open_alerts_with_owners_and_ack_stops_reminders(db: Harness) {
    use liaison::ops::alerts::{Owner, ProblemClass};
    use liaison::store::NewAlert;
    let outbox = outbox(db).await;
    let (alert, opened) = outbox
        .store()
        .await
        .open_alert(NewAlert::new(
            "bank",
            ProblemClass::ResultOverdue,
            Owner::new("billing ops", "billing@clinic.example")
                .runbook("https://runbooks.example/stuck"),
            "1 submission(s) stuck without a result",
        ))
        .await
        .unwrap();
    assert!(opened);
    let id = alert.id.to_string();
    outbox
        .run(&["alerts"])
        .ok()
        .has("1 open alert")
        .has(&id)
        .has("result_overdue")
        .has("billing ops")
        .has("billing@clinic.example")
        .has("https://runbooks.example/stuck");
    outbox
        .run(&["ack", &id, "--actor", "dana", "--note", "on it, lab called"])
        .ok()
        .has("acknowledged");
    let json = outbox.run(&["alerts", "--json"]).ok().json();
    assert_eq!(json[0]["acknowledged_by"], "dana");
    // Journaled with its note, as the page journals it.
    outbox
        .run(&["journal", "--target", &id])
        .ok()
        .has("1 journal line")
        .has("acknowledge_alert")
        .has("dana")
        .has("on it, lab called");
    let bad = outbox.run(&["ack", "nope"]);
    assert_eq!(bad.code, 2);
}

#[derive(Debug)]
struct DownPager;

#[async_trait::async_trait]
impl liaison::ops::alerts::AlertSink for DownPager {
    async fn notify(
        &self,
        _: liaison::ops::alerts::AlertEvent,
        _: &liaison::ops::alerts::Alert,
    ) -> Result<(), liaison::ops::alerts::SinkError> {
        Err(liaison::ops::alerts::SinkError::new(
            "pager",
            "the pager relay is down",
        ))
    }
    fn name(&self) -> &'static str {
        "pager"
    }
}

async fn show_alert_lists_its_notifications_and_status_says_alerts_are_not_arriving(db: Harness) {
    use liaison::engine::{AlertSettings, Liaison};
    use liaison::ops::alerts::{ChannelSink, NotificationState, Owner, Ownership, ProblemClass};
    let outbox = outbox(db).await;
    let (channel, _rx) = ChannelSink::new(64);
    let liaison = Liaison::builder_arc(outbox.store().await)
        .ownership(
            Ownership::new(Owner::new("integrations", "#integrations"))
                .partner("bank", Owner::new("billing ops", "billing@clinic.example")),
        )
        .owner_sink("billing ops", DownPager)
        .alert_sink(channel)
        .alert_settings(AlertSettings::default().sink_attempts(1))
        .build()
        .unwrap();
    liaison.evaluate_alerts().await.unwrap();
    let alert = liaison
        .alerts(true)
        .await
        .unwrap()
        .into_iter()
        .find(|a| a.partner == "bank" && a.class == ProblemClass::ResultOverdue)
        .expect("the stuck submission opens an alert");
    crate::dispatch::eventually(
        "both tries journaled",
        std::time::Duration::from_secs(10),
        || async {
            let n = liaison.alert_notifications(alert.id).await.unwrap();
            n.len() == 2 && n.iter().all(|n| n.state != NotificationState::Pending)
        },
    )
    .await;
    let id = alert.id.to_string();
    outbox
        .run(&["show-alert", &id])
        .ok()
        .has(&id)
        .has("billing ops (billing@clinic.example)")
        .has("2 notifications")
        .has("pager")
        .has("failed")
        .has("the pager relay is down")
        .has("channel")
        .has("delivered");
    let json = outbox.run(&["show-alert", &id, "--json"]).ok().json();
    assert_eq!(json["alert"]["id"], id);
    assert_eq!(json["notifications"].as_array().unwrap().len(), 2);
    outbox
        .run(&["status"])
        .has("alerts are not reaching billing ops (pager: the pager relay is down) since");
    assert_eq!(outbox.run(&["show-alert", "nope"]).code, 2);
    assert_ne!(
        outbox
            .run(&["show-alert", &SubmissionId::new().to_string()])
            .code,
        0
    );
}

/// Text from outside (a partner's error, a callback's partner name, headers
/// and body) with terminal escapes and forged lines in it.
const HOSTILE: &str = "\x1b[31mred\x1b]0;title\x07\r\nforged: line\u{9b}2J";

async fn output_never_carries_control_characters_from_stored_text(db: Harness) {
    use liaison::AttemptOutcome;
    use liaison::store::{AttemptReport, StateChange};

    let store = db.store().await;
    let id = store
        .enqueue(submission("bank", "evil"))
        .await
        .unwrap()
        .submission
        .id;
    let lease = crate::support::claim_one(&*store, "bank").await;
    store
        .complete(
            &lease,
            AttemptReport::new(AttemptOutcome::Failed).error(HOSTILE),
            StateChange::to(SubmissionState::Failed).error(HOSTILE),
        )
        .await
        .unwrap();
    assert_eq!(
        store.get(id).await.unwrap().last_error.as_deref(),
        Some(HOSTILE)
    );
    let callback = store
        .record_callback(
            NewCallback::new(HOSTILE, HOSTILE.as_bytes().to_vec())
                .header("x-evil", HOSTILE)
                .disposition(Disposition::Rejected, Some(HOSTILE.to_owned())),
        )
        .await
        .unwrap();
    drop(store);
    let (id, callback) = (id.to_string(), callback.to_string());
    let commands: [&[&str]; 9] = [
        &["show", &id],
        &["show", &id, "--json"],
        &["list"],
        &["list", "--json"],
        &["callbacks"],
        &["callbacks", "--json"],
        &["reprocess", &callback],
        &["reprocess", &callback, "--json"],
        &["status"],
    ];
    for args in commands {
        let run = run(&db, args);
        for (name, out) in [("stdout", &run.stdout), ("stderr", &run.stderr)] {
            assert!(
                !out.chars().any(|c| c.is_control() && c != '\n'),
                "{args:?}: a control character on {name}:\n{out:?}"
            );
            assert!(
                !out.lines().any(|l| l.starts_with("forged")),
                "{args:?}: a forged line on {name}:\n{out}"
            );
        }
    }
    // What was escaped is still there to read.
    run(&db, &["show", &id]).has("\\u001b[31mred");
    let json = run(&db, &["show", &id, "--json"]);
    json.has("\\u001b[31mred");
    // Still JSON, the text intact once decoded.
    assert!(
        json.json()
            .to_string()
            .contains(&serde_json::to_string(HOSTILE).unwrap()[1..20])
    );
}

/// lab: queued work due for a minute, its only engine gone (last beat a
/// minute ago); bank: expected to finish at least 1 per hour, nothing
/// finished, served by a live engine.
async fn outbox_with_a_dead_engine_and_a_silent_partner(db: &Harness) -> String {
    use liaison::engine::ExpectedTraffic;
    use liaison::store::Instance;
    let store = db.store().await;
    store.enqueue(submission("lab", "waits")).await.unwrap();
    store.enqueue(submission("bank", "queued")).await.unwrap();
    let minute_ago = chrono::Utc::now() - chrono::Duration::minutes(1);
    let mut dead = Instance::this_process(vec!["lab".into()], std::time::Duration::from_secs(5));
    dead.host = "worker-7".into();
    dead.started_at = minute_ago - chrono::Duration::hours(1);
    dead.last_beat_at = minute_ago;
    store.beat(&dead).await.unwrap();
    let mut live = Instance::this_process(vec!["bank".into()], std::time::Duration::from_secs(600));
    live.host = "worker-8".into();
    store.beat(&live).await.unwrap();
    store
        .set_expected_traffic("bank", Some(&ExpectedTraffic::finished(1)))
        .await
        .unwrap();
    drop(store);
    // lab's work came due a minute ago (an enqueue cannot date it back).
    execute(
        db,
        &format!(
            "UPDATE liaison_submissions SET due_at = {} WHERE partner = 'lab'",
            minute_ago.timestamp_millis()
        ),
    )
    .await;
    minute_ago
        .with_timezone(&chrono::Utc)
        .format("%Y-%m-%d %H:%M:%S UTC")
        .to_string()
}

async fn status_names_a_dead_engine_and_a_silent_partner_and_lists_the_engines(db: Harness) {
    let since = outbox_with_a_dead_engine_and_a_silent_partner(&db).await;
    let run = run(&db, &["status"]);
    assert_eq!(run.code, 1, "down: {run:#?}");
    run.has("DOWN")
        .has(&format!(
            "lab: no dispatcher is running for lab since {}: work is due and no engine sends it",
            // Stored to the millisecond: the second is the same.
            since
        ))
        .has(
            "bank: no submission reached a result in the last 1 h; at least 1 per hour is expected",
        )
        .has("Engines: 1 live of 2 recorded")
        .has("worker-7")
        .has("gone: no beat for 1m");
    let engines = run.stdout.find("Engines:").unwrap();
    let live = run.stdout.lines().find(|l| l.contains("worker-8")).unwrap();
    assert!(live.contains("live") && live.contains("bank"), "{live}");
    assert!(run.stdout.find("PARTNER").unwrap() < engines);

    let json = self::run(&db, &["status", "--json"]).json();
    assert_eq!(json["verdict"], "down");
    let instances = json["health"]["instances"].as_array().unwrap();
    assert_eq!(instances.len(), 2);
    let dead = instances.iter().find(|i| i["host"] == "worker-7").unwrap();
    assert_eq!(dead["live"], false);
    assert_eq!(dead["partners"], serde_json::json!(["lab"]));
    assert_eq!(dead["beat_interval_ms"], 5000);
    let partners = json["health"]["partners"].as_array().unwrap();
    let lab = partners.iter().find(|p| p["partner"] == "lab").unwrap();
    assert_eq!(lab["dispatcher"]["missing"], true);
    let bank = partners.iter().find(|p| p["partner"] == "bank").unwrap();
    assert_eq!(bank["dispatcher"]["live_instances"], 1);
    assert_eq!(bank["traffic"]["silent"], true);
    assert_eq!(bank["traffic"]["expected"], "at least 1 per hour");
}

/// Issue 15's "done when": one database with a dead engine, a silent
/// partner, a business deadline at risk and values in two currencies;
/// `status` says each in plain words and never adds the currencies up.
async fn status_says_a_dead_engine_a_silent_partner_a_deadline_at_risk_and_two_currencies(
    db: Harness,
) {
    use SubmissionState::*;
    let since = outbox_with_a_dead_engine_and_a_silent_partner(&db).await;
    let store = db.store().await;
    let due = chrono::Utc::now() + chrono::Duration::hours(5);
    let claim = submission("clearinghouse", "C-1042")
        .business_value_in(40_000, "EUR")
        .business_deadline(due);
    drive_new_to(&*store, claim, DeadLettered).await;
    let lab_test = submission("clearinghouse", "C-1043").business_value_in(1_250, "USD");
    drive_new_to(&*store, lab_test, Failed).await;
    drop(store);

    let run = run(&db, &["status"]);
    assert_eq!(run.code, 1, "down: {run:#?}");
    run.has(&format!(
        "lab: no dispatcher is running for lab since {since}: work is due and no engine sends it"
    ))
    .has("bank: no submission reached a result in the last 1 h; at least 1 per hour is expected")
    .has(
        "clearinghouse: 1 submission(s) will miss their business deadline within 24 h (EUR 400.00)",
    )
    .has("EUR 400.00 + USD 12.50");
    assert!(
        !run.stdout.contains("412.50") && !run.stdout.contains("41250"),
        "currencies are never added together: {}",
        run.stdout
    );
    let json = self::run(&db, &["status", "--json"]).json();
    assert_eq!(json["impact"]["value"]["EUR"], 40_000);
    assert_eq!(json["impact"]["value"]["USD"], 1_250);
    let reasons = json["working"]["reasons"].to_string();
    for words in [
        "no dispatcher is running for lab",
        "no submission reached a result",
        "will miss their business deadline",
    ] {
        assert!(reasons.contains(words), "{words:?} not in {reasons}");
    }
}

async fn pause_and_resume_a_partner_with_a_reason(db: Harness) {
    let outbox = outbox(db).await;
    let run = outbox.run(&[
        "pause",
        "bank",
        "--until",
        "2h",
        "--reason",
        "bank maintenance window",
        "--actor",
        "ops-anna",
    ]);
    run.ok().has("Paused bank until ").has("by ops-anna");
    let pauses = outbox
        .store()
        .await
        .pauses(chrono::Utc::now())
        .await
        .unwrap();
    assert_eq!(pauses.len(), 1);
    assert_eq!(pauses[0].partner, "bank");
    assert_eq!(pauses[0].reason, "bank maintenance window");
    assert_eq!(pauses[0].actor.as_str(), "ops-anna");
    let left = pauses[0].until - chrono::Utc::now();
    assert!(left > chrono::Duration::minutes(110) && left <= chrono::Duration::hours(2));
    outbox
        .run(&["status"])
        .has("bank: paused until")
        .has("by ops-anna (bank maintenance window)");

    // A time, as JSON.
    let json = outbox
        .run(&[
            "--json",
            "pause",
            "lab",
            "--until",
            "2099-03-03T19:00:00+01:00",
            "--reason",
            "lab migration",
        ])
        .ok()
        .json();
    assert_eq!(json["action"], "pause");
    assert_eq!(json["until"], "2099-03-03T18:00:00Z");
    assert_eq!(json["actor"], "tester");

    let run = outbox.run(&["resume", "bank", "--reason", "maintenance over"]);
    run.ok().has("Resumed bank by tester");
    let pauses = outbox
        .store()
        .await
        .pauses(chrono::Utc::now())
        .await
        .unwrap();
    assert_eq!(
        pauses
            .iter()
            .map(|p| p.partner.as_str())
            .collect::<Vec<_>>(),
        ["lab"]
    );
    let json = outbox
        .run(&["--json", "resume", "lab", "--reason", "done"])
        .ok()
        .json();
    assert_eq!(json["action"], "resume");
    assert!(json.get("until").is_none());

    // Each is in the operations journal, newest first, with who and why.
    let lines = outbox
        .run(&["--json", "journal", "--partner", "bank"])
        .ok()
        .json();
    let lines = lines.as_array().unwrap();
    assert_eq!(lines.len(), 2);
    assert_eq!(lines[0]["action"], "resume_partner");
    assert_eq!(lines[0]["reason"], "maintenance over");
    assert_eq!(lines[1]["action"], "pause_partner");
    assert_eq!(lines[1]["actor"], "ops-anna");
    assert_eq!(lines[1]["reason"], "bank maintenance window");
    outbox
        .run(&["journal", "--limit", "1"])
        .ok()
        .has("1 journal line")
        .has("resume_partner")
        .has("older lines: --before ");

    // Refused, nothing changed, exit 2.
    for (args, says) in [
        (
            &["pause", "bank", "--until", "yesterday", "--reason", "x"][..],
            "RFC 3339",
        ),
        (
            &[
                "pause",
                "bank",
                "--until",
                "2001-01-01T00:00:00Z",
                "--reason",
                "x",
            ][..],
            "a pause must end in the future",
        ),
        (&["pause", "bank", "--until", "1h"][..], "--reason"),
        (
            &["pause", "bank", "--until", "1h", "--reason", " "][..],
            "reason",
        ),
        (&["resume", "bank", "--reason", ""][..], "reason"),
    ] {
        let run = outbox.run(args);
        assert_eq!(run.code, 2, "{args:?}: {run:#?}");
        assert!(run.stderr.contains(says), "{args:?}: {run:#?}");
        assert!(run.stdout.is_empty(), "{args:?}: {run:#?}");
    }
    assert!(
        outbox
            .store()
            .await
            .pauses(chrono::Utc::now())
            .await
            .unwrap()
            .is_empty()
    );
}

// What only PostgreSQL has: a server to reach, a URL, schemas. Nothing is
// created by accident, and the password never reaches the output.

/// A PostgreSQL URL and a schema name nobody created; `None` (skipped)
/// without a test database, as the harness does.
fn postgres_url() -> Option<String> {
    crate::conformance::harness::pg::url()
}

/// Whether `schema` exists, and how many `liaison_*` tables it holds.
async fn schema_state(url: &str, schema: &str) -> (bool, i64) {
    let client = crate::conformance::harness::pg::client(url).await;
    let exists = client
        .query_opt("SELECT 1 FROM pg_namespace WHERE nspname = $1", &[&schema])
        .await
        .unwrap()
        .is_some();
    let tables: i64 = client
        .query_one(
            "SELECT count(*) FROM pg_tables WHERE schemaname = $1 AND tablename LIKE 'liaison%'",
            &[&schema],
        )
        .await
        .unwrap()
        .get(0);
    (exists, tables)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_postgres_schema_that_does_not_exist_is_never_created() {
    let Some(url) = postgres_url() else { return };
    let schema = format!("liaison_t_{}", uuid::Uuid::new_v4().simple());
    let id = SubmissionId::new().to_string();
    let commands: [&[&str]; 4] = [
        &["status"],
        &["list", "--json"],
        &["replay", &id, "--reason", "x"],
        &["pause", "bank", "--until", "1h", "--reason", "x"],
    ];
    for args in commands {
        let run = run_with(
            ["--db", &url, "--schema", &schema]
                .map(OsString::from)
                .to_vec(),
            args,
        );
        assert_eq!(run.code, 2, "{args:?}: {run:#?}");
        assert!(
            run.stderr.contains("error: no outbox at postgres://")
                && run.stderr.contains(&format!(
                    "(schema {schema}): schema {schema} not found (the CLI never creates one)"
                )),
            "{args:?}: {run:#?}"
        );
        assert!(run.stdout.is_empty(), "{args:?}: {run:#?}");
    }
    assert_eq!(
        schema_state(&url, &schema).await,
        (false, 0),
        "nothing created"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_postgres_schema_without_an_outbox_is_left_alone() {
    let Some(url) = postgres_url() else { return };
    let schema = format!("liaison_t_{}", uuid::Uuid::new_v4().simple());
    let client = crate::conformance::harness::pg::client(&url).await;
    client
        .batch_execute(&format!(
            "CREATE SCHEMA {schema}; CREATE TABLE {schema}.claims (id TEXT)"
        ))
        .await
        .unwrap();
    let run = run_with(
        ["--db", &url, "--schema", &schema]
            .map(OsString::from)
            .to_vec(),
        &["list"],
    );
    let after = schema_state(&url, &schema).await;
    client
        .batch_execute(&format!("DROP SCHEMA {schema} CASCADE"))
        .await
        .unwrap();
    assert_eq!(run.code, 2, "{run:#?}");
    assert!(
        run.stderr
            .contains(&format!("liaison outbox in schema {schema} not found")),
        "{run:#?}"
    );
    assert_eq!(after, (true, 0), "no liaison table created");
}

#[test]
fn an_unreachable_server_exits_3_and_a_bad_url_exits_2_without_the_password() {
    // Port 1 on this machine: nothing listens, the connection is refused.
    let unreachable = run_with(
        vec![
            "--db".into(),
            "postgres://ops:s3cret@127.0.0.1:1/app".into(),
        ],
        &["status"],
    );
    assert_eq!(unreachable.code, 3, "{unreachable:#?}");
    assert!(
        unreachable
            .stderr
            .contains("cannot open the outbox at postgres://ops@127.0.0.1:1/app")
            && unreachable.stderr.contains("database unavailable"),
        "{unreachable:#?}"
    );
    for (url, says) in [
        (
            "postgres://ops:s3cret@127.0.0.1:notaport/app",
            "invalid value for option `port`",
        ),
        (
            "postgres://ops:s3cret@127.0.0.1/app?colour=blue",
            "unknown option `colour`",
        ),
        ("postgres://", "it names no host"),
    ] {
        let run = run_with(vec!["--db".into(), url.into()], &["list"]);
        assert_eq!(run.code, 2, "{url}: {run:#?}");
        assert!(
            run.stderr.contains("invalid url") && run.stderr.contains(says),
            "{url}: {run:#?}"
        );
    }
    let bad_schema = run_with(
        vec![
            "--db".into(),
            "postgres://ops:s3cret@127.0.0.1:1/app".into(),
        ],
        &["--schema", "Robert'); DROP TABLE x", "list"],
    );
    assert_eq!(bad_schema.code, 2, "{bad_schema:#?}");
    assert!(
        bad_schema.stderr.contains("invalid schema"),
        "{bad_schema:#?}"
    );
    let missing_ca = run_with(
        vec!["--db".into(), "postgres://ops@127.0.0.1:1/app".into()],
        &["--ca-file", "/nonexistent/ca.pem", "list"],
    );
    assert_eq!(missing_ca.code, 2, "{missing_ca:#?}");
    assert!(
        missing_ca.stderr.contains("cannot read the CA file"),
        "{missing_ca:#?}"
    );
    for run in [&unreachable, &bad_schema] {
        assert!(!run.stderr.contains("s3cret"), "{run:#?}");
        assert!(run.stdout.is_empty(), "{run:#?}");
    }
}

/// Every case above on both stores: `cli::sqlite::<case>` and
/// `cli::postgres::<case>`.
macro_rules! both_stores {
    ($($case:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $case() {
                    super::$case(super::Harness::sqlite()).await;
                }
            )*
        }

        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $case() {
                    let Some(db) = super::Harness::postgres().await else {
                        return;
                    };
                    super::$case(db).await;
                }
            )*
        }
    };
}

both_stores! {
    status_answers_the_four_questions,
    status_exits_1_when_the_verdict_is_down,
    status_reports_impact_per_currency_and_deadlines_at_risk,
    an_empty_outbox_is_healthy,
    list_filters_by_state_and_partner,
    list_and_show_find_work_by_the_hosts_keys_and_by_time_of_change,
    show_prints_the_details_the_timeline_and_the_attempts,
    replay_puts_the_submission_back_in_the_queue,
    replay_where_dry_run_counts_what_the_real_run_replays,
    resolve_settles_by_hand_with_the_outcome_on_the_timeline,
    cancel_stops_unfinished_work_and_is_refused_for_finished_work,
    callbacks_lists_the_quarantine,
    reprocess_explains_that_the_host_does_it,
    dismiss_takes_a_callback_out_of_the_quarantine_with_a_reason,
    export_writes_json_with_timelines_and_csv,
    errors_are_explained_with_exit_code_2,
    deliveries_lists_results_and_show_names_a_parked_one,
    rerun_delivery_hands_a_parked_result_over_again_and_refuses_the_others,
    the_database_may_come_from_the_environment_or_after_the_command,
    alerts_lists_open_alerts_with_owners_and_ack_stops_reminders,
    show_alert_lists_its_notifications_and_status_says_alerts_are_not_arriving,
    output_never_carries_control_characters_from_stored_text,
    status_names_a_dead_engine_and_a_silent_partner_and_lists_the_engines,
    status_says_a_dead_engine_a_silent_partner_a_deadline_at_risk_and_two_currencies,
    pause_and_resume_a_partner_with_a_reason,
    another_schema_version_is_refused_and_never_migrated,
}
