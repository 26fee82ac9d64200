//! What one ops read allocates: the JSON API and the overview must not load
//! payloads and callback bodies they never show. A counting global allocator
//! (this binary runs nothing else; the tests take turns) measures every
//! allocation in the process while one request runs, the store's reader
//! threads included.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use axum::Router;
use axum::body::Body;
use axum::http::{Request, StatusCode};
use liaison::NewSubmission;
use liaison::engine::Liaison;
use liaison::http::ops::{OpsState, router};
use liaison::store::{NewCallback, OutboxStore, SqliteStore};
use serde_json::{Value, json};
use tempfile::TempDir;
use tower::ServiceExt;

const MIB: u64 = 1024 * 1024;

/// Counts the bytes allocated (a growing `realloc` counts its growth).
struct Counting;

static ALLOCATED: AtomicU64 = AtomicU64::new(0);

// SAFETY: every call is passed on to `System` unchanged.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCATED.fetch_add(layout.size() as u64, Ordering::Relaxed);
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        ALLOCATED.fetch_add(layout.size() as u64, Ordering::Relaxed);
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let grown = new_size.saturating_sub(layout.size());
        ALLOCATED.fetch_add(grown as u64, Ordering::Relaxed);
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// One measurement at a time: the counter is process-wide.
static TURN: Mutex<()> = Mutex::new(());

/// Run `test` alone, on a runtime of its own.
fn alone(test: impl Future<Output = ()>) {
    let _turn = TURN.lock().unwrap_or_else(|e| e.into_inner());
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(test);
}

fn store() -> (TempDir, SqliteStore) {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = SqliteStore::open(dir.path().join("outbox.db")).expect("open store");
    (dir, store)
}

fn app(store: &SqliteStore) -> Router {
    let liaison = Liaison::builder(store.clone()).build().unwrap();
    router(OpsState::new(liaison)).expect("ops router")
}

/// The response to `GET uri` and the bytes allocated while it was made and
/// read to the end.
async fn measure(app: &Router, uri: &str) -> (u64, StatusCode, Vec<u8>) {
    let app = app.clone();
    let request = Request::get(uri).body(Body::empty()).unwrap();
    let before = ALLOCATED.load(Ordering::SeqCst);
    let response = app.oneshot(request).await.unwrap();
    let status = response.status();
    let body = axum::body::to_bytes(response.into_body(), usize::MAX)
        .await
        .unwrap();
    let allocated = ALLOCATED.load(Ordering::SeqCst) - before;
    (allocated, status, body.to_vec())
}

fn mib(bytes: u64) -> String {
    format!("{:.2} MiB", bytes as f64 / MIB as f64)
}

#[test]
fn listing_a_thousand_one_mib_callbacks_allocates_under_20_mib() {
    alone(list_one_mib_callbacks());
}

async fn list_one_mib_callbacks() {
    let (_dir, store) = store();
    let body = vec![b'x'; MIB as usize];
    for _ in 0..1000 {
        store
            .record_callback(NewCallback::new("lab", body.clone()))
            .await
            .unwrap();
    }
    let app = app(&store);
    let (allocated, status, answer) = measure(&app, "/api/callbacks?limit=1000").await;
    assert_eq!(status, StatusCode::OK);
    let answer: Value = serde_json::from_slice(&answer).unwrap();
    let callbacks = answer["callbacks"].as_array().unwrap();
    assert_eq!(callbacks.len(), 1000);
    for c in callbacks {
        assert_eq!(c["size"], MIB);
        assert_eq!(c["body_hash"].as_str().map(str::len), Some(64));
        assert!(c.get("body").is_none() && c.get("headers").is_none(), "{c}");
    }
    eprintln!("GET /api/callbacks?limit=1000 allocated {}", mib(allocated));
    assert!(
        allocated < 20 * MIB,
        "GET /api/callbacks?limit=1000 allocated {}",
        mib(allocated)
    );
}

/// 1,000 queued submissions with 64 KiB payloads each (62.5 MiB in all).
async fn big_payloads(store: &SqliteStore) {
    let filler = "y".repeat(64 * 1024);
    let batch = (0..1000)
        .map(|i| {
            NewSubmission::new("bank", "claim.submit", json!({ "n": i, "filler": filler }))
                .idempotency_key(format!("big-{i}"))
        })
        .collect();
    store.enqueue_batch(batch).await.unwrap();
}

#[test]
fn listing_a_thousand_big_submissions_allocates_under_20_mib() {
    alone(list_big_submissions());
}

async fn list_big_submissions() {
    let (_dir, store) = store();
    big_payloads(&store).await;
    let app = app(&store);
    let (allocated, status, answer) = measure(&app, "/api/submissions?limit=1000").await;
    assert_eq!(status, StatusCode::OK);
    let answer: Value = serde_json::from_slice(&answer).unwrap();
    let submissions = answer["submissions"].as_array().unwrap();
    assert_eq!(submissions.len(), 1000);
    for s in submissions {
        assert_eq!(s["payload_purged"], false, "{s}");
        assert!(s.get("payload").is_none(), "{s}");
    }
    eprintln!(
        "GET /api/submissions?limit=1000 allocated {}",
        mib(allocated)
    );
    assert!(
        allocated < 20 * MIB,
        "GET /api/submissions?limit=1000 allocated {}",
        mib(allocated)
    );
}

#[test]
fn the_overview_of_a_thousand_big_submissions_allocates_under_20_mib() {
    alone(overview_of_big_submissions());
}

async fn overview_of_big_submissions() {
    let (_dir, store) = store();
    big_payloads(&store).await;
    let app = app(&store);
    let (allocated, status, page) = measure(&app, "/").await;
    assert_eq!(status, StatusCode::OK);
    let page = String::from_utf8(page).unwrap();
    assert!(page.contains("data-partner=\"bank\""), "{page}");
    assert!(
        page.contains("1000 unfinished"),
        "the chart counts them all"
    );
    eprintln!("GET / allocated {}", mib(allocated));
    assert!(allocated < 20 * MIB, "GET / allocated {}", mib(allocated));
}
