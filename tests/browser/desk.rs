//! The recovery desk in a real browser: Debian's `chromium`, driven over
//! the DevTools protocol (see `cdp.rs`): search by key, page to the second
//! page, reprocess a quarantined callback after its matcher is fixed,
//! dismiss one, pause and resume a partner, export a list and read the CSV.
//! On failure, screenshots of the overview and of a submission page are
//! written next to the test binary's temporary files (the path is printed).
//! Part of `tests/it/ops_desk.rs`, which provides the fixture.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use liaison::callback::{CallbackId, Disposition};
use liaison::store::OutboxStore;
use liaison::{SubmissionId, SubmissionState};

use super::{TOKEN, app_for, fixed_matcher, fixture, hub, malformed_callback, quarantined};
use crate::ops_page::cdp;
use crate::ops_page::worth;
use crate::support::drive_new_to;

const WAIT: Duration = Duration::from_secs(20);

struct Ids {
    stuck: SubmissionId,
    reprocess: CallbackId,
    dismiss: CallbackId,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operator_works_the_recovery_desk_in_a_real_browser() {
    let chromium = Path::new("/usr/bin/chromium");
    if !chromium.exists() {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI must install chromium (/usr/bin/chromium) for the ops page's browser test"
        );
        eprintln!("notice: /usr/bin/chromium is missing, so the browser test is skipped");
        return;
    }
    let f = fixture().await;
    for i in 0..4 {
        drive_new_to(
            &f.store,
            worth("lab", &format!("lab-more-{i}"), 10),
            SubmissionState::Stuck,
        )
        .await;
    }
    let reprocess = malformed_callback(&f).await;
    let dismiss = quarantined(&f, "bank", b"{\"ping\": true}", "no status").await;
    let fixed = hub(&f, fixed_matcher());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let app = app_for(&fixed, Some(TOKEN));
    let server = tokio::spawn(async move { axum::serve(listener, app).await });
    let downloads = tempfile::tempdir().unwrap();
    let ids = Ids {
        stuck: f.stuck,
        reprocess,
        dismiss,
    };
    let dir = downloads.path().to_owned();
    let driven = tokio::task::spawn_blocking(move || drive(chromium, &base, &ids, &dir)).await;
    server.abort();
    driven.unwrap().unwrap_or_else(|e| panic!("browser: {e}"));

    let stored = f.store.callback(reprocess).await.unwrap();
    assert_eq!(stored.disposition, Disposition::Applied);
    assert_eq!(f.state(f.stuck).await, SubmissionState::Succeeded);
    let dismissed = f.store.callback(dismiss).await.unwrap();
    assert_eq!(dismissed.disposition, Disposition::Dismissed);
    assert_eq!(
        dismissed.dismissal.unwrap().reason,
        "a ping from the bank's sandbox"
    );
    assert!(
        f.store.pauses(chrono::Utc::now()).await.unwrap().is_empty(),
        "resumed"
    );
}

/// Run the scenario; on failure, save screenshots and say where.
fn drive(chromium: &Path, base: &str, ids: &Ids, downloads: &Path) -> Result<(), cdp::BoxError> {
    let mut browser = cdp::Browser::launch(chromium)?;
    browser.allow_downloads(downloads)?;
    browser.open(&format!("{base}/"))?;
    let outcome = scenario(&mut browser, base, ids, downloads);
    if let Err(error) = &outcome {
        let dir = artefacts();
        let mut saved = Vec::new();
        for (name, url) in [
            ("overview", format!("{base}/")),
            ("submission", format!("{base}/submissions/{}", ids.stuck)),
        ] {
            let path = dir.join(format!("ops-desk-{name}.png"));
            if browser.navigate(&url).is_ok()
                && browser
                    .wait_until("document.readyState === 'complete'", WAIT)
                    .is_ok()
                && browser.screenshot(&path).is_ok()
            {
                saved.push(path.display().to_string());
            }
        }
        eprintln!("browser test failed ({error}); screenshots: {saved:?}");
    }
    outcome
}

fn artefacts() -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR"));
    let _ = std::fs::create_dir_all(&dir);
    dir
}

fn submit(
    browser: &mut cdp::Browser,
    form: &str,
    fields: &[(&str, &str)],
) -> Result<(), cdp::BoxError> {
    for (name, value) in fields {
        browser.type_into(&format!("{form} input[name={name}]"), value)?;
    }
    browser.click(&format!("{form} button[type=submit]"))
}

fn scenario(
    browser: &mut cdp::Browser,
    base: &str,
    ids: &Ids,
    downloads: &Path,
) -> Result<(), cdp::BoxError> {
    // The four questions, then search by the key a caller reads out.
    browser.wait_until(
        "!!document.querySelector('[data-question=recoverable]')",
        WAIT,
    )?;
    browser.type_into("nav form[role=search] input[name=q]", "bank-failed-1")?;
    browser.click("nav form[role=search] button[type=submit]")?;
    browser.wait_until(
        "location.pathname === '/search' && document.body.innerText.includes('1 submission(s) found')",
        WAIT,
    )?;
    browser.click("#search-list a")?;
    browser.wait_until(
        "location.pathname.startsWith('/submissions/') && document.querySelector('[data-field=state]')?.textContent === 'failed'",
        WAIT,
    )?;

    // Page to the second page of the stuck list.
    browser.navigate(&format!("{base}/lists/stuck?limit=2"))?;
    browser.wait_until("!!document.querySelector('a[rel=next]')", WAIT)?;
    browser.click("a[rel=next]")?;
    browser.wait_until(
        "document.querySelector('[data-field=pager]')?.innerText.startsWith('Rows 3 to 4 of 5')",
        WAIT,
    )?;

    // Reprocess the quarantined callback now that its matcher is fixed.
    browser.navigate(&format!("{base}/quarantine"))?;
    browser.wait_until("!!document.querySelector('#quarantine-list')", WAIT)?;
    browser.click(&format!("a[href='/callbacks/{}']", ids.reprocess))?;
    browser.wait_until(
        "!!document.querySelector('form[data-action=reprocess]')",
        WAIT,
    )?;
    submit(
        browser,
        "form[data-action=reprocess]",
        &[
            ("actor", "ann@clinic.example"),
            ("reason", "release 4.2 reads the lab's format"),
            ("token", TOKEN),
        ],
    )?;
    browser.wait_until(
        "document.querySelector('[data-field=disposition]')?.textContent === 'applied'",
        WAIT,
    )?;

    // Dismiss the other one with a reason.
    browser.navigate(&format!("{base}/callbacks/{}", ids.dismiss))?;
    browser.wait_until(
        "!!document.querySelector('form[data-action=dismiss]')",
        WAIT,
    )?;
    submit(
        browser,
        "form[data-action=dismiss]",
        &[
            ("actor", "ann@clinic.example"),
            ("reason", "a ping from the bank's sandbox"),
            ("token", TOKEN),
        ],
    )?;
    browser.wait_until(
        "document.body.innerText.includes('left the quarantine')",
        WAIT,
    )?;

    // Pause the lab for two hours, then resume it.
    browser.navigate(&format!("{base}/partners/lab"))?;
    browser.wait_until("!!document.querySelector('form[data-action=pause]')", WAIT)?;
    submit(
        browser,
        "form[data-action=pause]",
        &[
            ("until", "2h"),
            ("actor", "ann@clinic.example"),
            ("reason", "the lab's maintenance window"),
            ("token", TOKEN),
        ],
    )?;
    browser.wait_until("document.body.innerText.includes('is paused until')", WAIT)?;
    browser.navigate(&format!("{base}/partners/lab"))?;
    browser.wait_until(
        "document.querySelector('[data-field=paused]')?.innerText.includes('the lab\\'s maintenance window')",
        WAIT,
    )?;
    submit(
        browser,
        "form[data-action=resume]",
        &[
            ("actor", "ann@clinic.example"),
            ("reason", "the lab is back early"),
            ("token", TOKEN),
        ],
    )?;
    browser.wait_until("document.body.innerText.includes('is resumed by')", WAIT)?;

    // Export the failed list and read the CSV the browser saved.
    browser.navigate(&format!("{base}/lists/failed"))?;
    browser.wait_until("!!document.querySelector('a[data-action=export]')", WAIT)?;
    browser.click("a[data-action=export]")?;
    let csv = wait_for_download(downloads)?;
    let lines: Vec<&str> = csv.lines().collect();
    if lines.len() != 3
        || !lines[0].starts_with("id,partner,kind,idempotency_key,state")
        || !csv.contains("bank-failed-1,failed")
        || !csv.contains("shop-dead-1,dead_lettered")
    {
        return Err(format!("unexpected CSV:\n{csv}").into());
    }
    Ok(())
}

/// The first finished download in `dir` (Chromium writes `.crdownload` while it runs).
fn wait_for_download(dir: &Path) -> Result<String, cdp::BoxError> {
    let started = Instant::now();
    loop {
        for entry in std::fs::read_dir(dir)? {
            let path = entry?.path();
            if path.extension().is_some_and(|e| e == "csv") {
                return Ok(std::fs::read_to_string(path)?);
            }
        }
        if started.elapsed() > WAIT {
            return Err("no CSV was downloaded".into());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}
