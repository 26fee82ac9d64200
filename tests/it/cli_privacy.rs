//! `liaison forget`: erase a finished submission's personal data by id or
//! by partner and key, from the command line, on the SQLite file.

use std::path::Path;
use std::process::Command;

use liaison::store::{OutboxStore, SqliteStore};
use liaison::{EventKind, NewSubmission, SubmissionState};
use serde_json::json;

use crate::support::drive_new_to;

fn run(db: &Path, args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_liaison"))
        .arg("--db")
        .arg(db)
        .args(args)
        .env_remove("LIAISON_DB")
        .env("USER", "tester")
        .output()
        .expect("run the liaison binary");
    (
        out.status.code().expect("exited"),
        String::from_utf8(out.stdout).expect("UTF-8 stdout"),
        String::from_utf8(out.stderr).expect("UTF-8 stderr"),
    )
}

fn personal(key: &str) -> NewSubmission {
    NewSubmission::new("lab", "order", json!({ "patient": "Ada Lovelace" }))
        .idempotency_key(key)
        .correlation("patient", "Ada Lovelace")
}

#[tokio::test]
async fn forget_erases_by_id_and_by_key_and_refuses_unfinished_work() {
    use SubmissionState::*;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("outbox.db");
    let store = SqliteStore::open(&path).unwrap();
    let (by_id, _) = drive_new_to(&store, personal("o-1"), Succeeded).await;
    let (by_key, _) = drive_new_to(&store, personal("o-2"), Failed).await;
    let (queued, _) = drive_new_to(&store, personal("o-3"), Queued).await;
    drop(store);

    let (code, stdout, stderr) = run(
        &path,
        &[
            "forget",
            &by_id.to_string(),
            "--reason",
            "erasure request 7",
        ],
    );
    assert_eq!(code, 0, "{stdout}{stderr}");
    assert!(stdout.contains(&format!("Forgot {by_id}")), "{stdout}");
    let (code, stdout, stderr) = run(
        &path,
        &[
            "--json",
            "forget",
            "--partner",
            "lab",
            "--key",
            "o-2",
            "--reason",
            "request 8",
        ],
    );
    assert_eq!(code, 0, "{stdout}{stderr}");
    let answer: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(answer["action"], "forget");
    assert_eq!(answer["submission"]["id"], by_key.to_string());
    assert!(!stdout.contains("Ada"), "{stdout}");

    // Unfinished work is refused with a hint, and keeps its data.
    let (code, stdout, stderr) = run(&path, &["forget", &queued.to_string(), "--reason", "r"]);
    assert_eq!(code, 2, "{stdout}{stderr}");
    assert!(stderr.contains("cancel"), "{stderr}");
    // Naming nothing is a usage error.
    let (code, _, _) = run(&path, &["forget", "--reason", "r"]);
    assert_eq!(code, 2);

    let store = SqliteStore::open(&path).unwrap();
    for id in [by_id, by_key] {
        let s = store.get(id).await.unwrap();
        assert!(s.payload.is_none() && s.correlation.is_empty(), "{s:?}");
        let last = store.timeline(id).await.unwrap().pop().unwrap();
        assert_eq!(last.kind, EventKind::Forgotten);
        assert_eq!(last.actor.as_str(), "tester");
    }
    let kept = store.get(queued).await.unwrap();
    assert!(kept.payload.is_some() && !kept.correlation.is_empty());
}
