//! The end-to-end test in a real browser: Debian's `chromium`, driven over
//! the DevTools protocol (see `cdp.rs`), replays a stuck submission through
//! the ops page's form. Part of `tests/it/ops_page.rs`, which provides the
//! fixture.

use std::path::Path;
use std::time::Duration;

use liaison::store::OutboxStore;
use liaison::{Actor, SubmissionId, SubmissionState};

use super::cdp;
use super::{TOKEN, fixture};

/// Drive the page in Debian's chromium: the stuck submission is listed on the
/// overview, its page's replay form is filled in and submitted, and the page
/// then shows it queued.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operator_replays_a_stuck_submission_in_a_real_browser() {
    let chromium = Path::new("/usr/bin/chromium");
    if !chromium.exists() {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI must install chromium (/usr/bin/chromium) for the ops page's browser test"
        );
        eprintln!(
            "notice: /usr/bin/chromium is missing, so the browser test is skipped (apt-get install chromium)"
        );
        return;
    }
    let f = fixture().await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let app = f.app(Some(TOKEN));
    let server = tokio::spawn(async move { axum::serve(listener, app).await });
    let id = f.stuck;
    let driven = tokio::task::spawn_blocking(move || replay_in_browser(chromium, &base, id)).await;
    server.abort();
    driven.unwrap().unwrap_or_else(|e| panic!("browser: {e}"));

    assert_eq!(f.state(id).await, SubmissionState::Queued);
    let event = f.store.timeline(id).await.unwrap().pop().unwrap();
    assert_eq!(event.actor, Actor::person("ann@clinic.example"));
    assert_eq!(
        event.reason.as_deref(),
        Some("lab confirmed it never arrived")
    );
}

fn replay_in_browser(chromium: &Path, base: &str, id: SubmissionId) -> Result<(), cdp::BoxError> {
    const WAIT: Duration = Duration::from_secs(20);
    let mut browser = cdp::Browser::launch(chromium)?;
    browser.open(&format!("{base}/"))?;
    browser.wait_until(
        "!!document.querySelector('#stuck-list') && document.body.innerText.includes('lab-stuck-1')",
        WAIT,
    )?;
    browser.click(&format!("#stuck-list a[href='/submissions/{id}']"))?;
    browser.wait_until(
        &format!("location.pathname === '/submissions/{id}' && !!document.querySelector('form[data-action=replay]')"),
        WAIT,
    )?;
    let form = "form[data-action=replay]";
    browser.type_into(&format!("{form} input[name=actor]"), "ann@clinic.example")?;
    browser.type_into(
        &format!("{form} input[name=reason]"),
        "lab confirmed it never arrived",
    )?;
    browser.type_into(&format!("{form} input[name=token]"), TOKEN)?;
    browser.click(&format!("{form} button[type=submit]"))?;
    browser.wait_until(
        "document.querySelector('[data-field=state]')?.textContent === 'queued' \
         && document.body.innerText.includes('Replayed')",
        WAIT,
    )?;
    Ok(())
}
