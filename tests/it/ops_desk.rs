//! The ops page as the recovery desk: the four questions, search, paging
//! with counts, CSV export, the quarantine (reprocess, dismiss, one or by
//! filter after a dry run), pause and resume, acknowledging alerts; every
//! action refused without a token, with a wrong one, cross-origin, or from
//! a state that refuses it (nothing changed); hostile data inert on every
//! page. And one run in a real headless chromium (`browser::desk`).

#[path = "../browser/desk.rs"]
mod browser;

use axum::Router;
use axum::body::Body;
use axum::http::{Request, StatusCode};
use liaison::callback::{
    CallbackId, CorrelateBy, Disposition, JsonMatcher, StoredCallback, Unverified,
};
use liaison::engine::{Liaison, Partner};
use liaison::http::ops::{OpsState, router};
use liaison::store::{
    AttemptReport, ClaimRequest, NewCallback, OutboxStore, Settlement, StateChange,
};
use liaison::{
    Actor, AttemptContext, AttemptOutcome, NewSubmission, PartnerAdapter, PartnerError, Submission,
    SubmissionId, SubmissionState, SubmitOutcome,
};
use serde_json::json;

use crate::ops_page::{Fixture, TOKEN, fixture, get, post_form, worth};
use crate::support::drive_new_to;

const SAME: Option<&str> = Some("http://ops.clinic.example");

/// A partner adapter that is never called: the tests act through the store
/// and the page, with no engine running.
#[derive(Debug)]
pub(crate) struct Idle;

#[async_trait::async_trait]
impl PartnerAdapter for Idle {
    async fn submit(
        &self,
        _: &AttemptContext,
        _: &Submission,
    ) -> Result<SubmitOutcome, PartnerError> {
        Ok(SubmitOutcome::AwaitResult { external_ref: None })
    }
}

/// The lab's callbacks as the partner sends them: `{"claim": key, "status": ...}`.
pub(crate) fn fixed_matcher() -> JsonMatcher {
    JsonMatcher::builder(Unverified)
        .correlate(CorrelateBy::IdempotencyKey, "/claim")
        .status("/status", ["succeeded"], ["failed"])
        .build()
        .unwrap()
}

/// The matcher before the fix: it looks for fields the partner does not send.
fn broken_matcher() -> JsonMatcher {
    JsonMatcher::builder(Unverified)
        .correlate(CorrelateBy::IdempotencyKey, "/claim_no")
        .status("/state", ["paid"], ["denied"])
        .build()
        .unwrap()
}

/// A hub on the fixture's store whose lab reads callbacks with `matcher`.
pub(crate) fn hub(f: &Fixture, matcher: JsonMatcher) -> Liaison {
    Liaison::builder(f.store.clone())
        .partner(Partner::new("lab", Idle).callbacks(matcher))
        .build()
        .unwrap()
}

pub(crate) fn app_for(liaison: &Liaison, token: Option<&str>) -> Router {
    let mut state = OpsState::new(liaison.clone());
    state.token = token.map(str::to_owned);
    router(state).unwrap()
}

/// The lab's callback about the stuck submission, quarantined as
/// malformed by the broken matcher.
pub(crate) async fn malformed_callback(f: &Fixture) -> CallbackId {
    let broken = hub(f, broken_matcher());
    let body = json!({ "claim": "lab-stuck-1", "status": "succeeded" }).to_string();
    let receipt = broken
        .ingest_callback("lab", &Default::default(), body.as_bytes())
        .await
        .unwrap();
    assert_eq!(receipt.disposition, Disposition::Malformed);
    receipt.callback_id
}

/// A callback stored and settled malformed with `body` as it came.
async fn quarantined(f: &Fixture, partner: &str, body: &[u8], reason: &str) -> CallbackId {
    let id = f
        .store
        .record_callback(NewCallback::new(partner, body.to_vec()).body_hash("00"))
        .await
        .unwrap();
    f.store
        .settle_callback(
            id,
            Settlement::Malformed {
                reason: reason.into(),
            },
        )
        .await
        .unwrap();
    id
}

async fn callback(f: &Fixture, id: CallbackId) -> StoredCallback {
    f.store.callback(id).await.unwrap()
}

/// A submission the partner accepted under `reference`.
async fn accepted_with_reference(f: &Fixture, new: NewSubmission, reference: &str) -> SubmissionId {
    let partner = new.partner().to_owned();
    let id = f.store.enqueue(new).await.unwrap().submission.id;
    let lease = f
        .store
        .claim(ClaimRequest::new(&partner, 1, crate::support::LEASE).at(f.store.now()))
        .await
        .unwrap()
        .remove(0);
    f.store
        .complete(
            &lease,
            AttemptReport::new(AttemptOutcome::Accepted),
            StateChange::to(SubmissionState::AwaitingResult).external_ref(reference),
        )
        .await
        .unwrap();
    id
}

fn form_fields<'a>(actor: &'a str, reason: &'a str, token: &'a str) -> Vec<(&'a str, &'a str)> {
    vec![("actor", actor), ("reason", reason), ("token", token)]
}

#[tokio::test]
async fn the_four_questions_are_answered_at_the_top() {
    let f = fixture().await;
    let app = f.app(Some(TOKEN));
    let html = get(&app, "/").await.body;
    for (id, question) in [
        ("working", "Is it working today?"),
        ("noticed", "Do we notice when it breaks?"),
        ("impact", "Is there an impact?"),
        ("recoverable", "Can we recover?"),
    ] {
        let at = html
            .find(&format!("data-question=\"{id}\""))
            .unwrap_or_else(|| panic!("{id} missing"));
        assert!(html[at..].contains(question), "{id}");
    }
    let impact = &html[html.find("data-question=\"impact\"").unwrap()..];
    assert!(
        impact.contains("data-field=\"answer\">Yes<"),
        "work is at risk"
    );
    assert!(impact.contains("3 submissions worth"), "{impact}");
    assert!(impact.contains("href=\"/lists/failed\""));
    let recover = &html[html.find("data-question=\"recoverable\"").unwrap()..];
    assert!(
        recover.contains("3 replayable submissions (")
            && recover.contains(") to replay, resolve or cancel")
    );
    // They come before everything else.
    assert!(html.find("data-question").unwrap() < html.find("id=\"partners\"").unwrap());

    let (_dir, empty) = crate::support::store();
    let quiet = Liaison::builder(empty).build().unwrap();
    let html = get(&app_for(&quiet, None), "/").await.body;
    let impact = &html[html.find("data-question=\"impact\"").unwrap()..];
    assert!(impact.contains("data-field=\"answer\">No<") && impact.contains("no work is at risk"));
    let working = &html[html.find("data-question=\"working\"").unwrap()..];
    assert!(working.contains("nothing has been sent yet"));
}

#[tokio::test]
async fn search_finds_by_key_reference_correlation_value_and_id_from_every_page() {
    let f = fixture().await;
    let app = f.app(Some(TOKEN));
    let by_ref = accepted_with_reference(
        &f,
        worth("clinic", "C-1042", 500).correlation("order_no", "SO-9913"),
        "LAB-REF-77",
    )
    .await;
    // Every page carries the search box.
    for path in [
        "/".to_owned(),
        format!("/submissions/{}", f.stuck),
        "/lists/stuck".to_owned(),
        "/quarantine".to_owned(),
        "/alerts".to_owned(),
        "/partners/lab".to_owned(),
    ] {
        let page = get(&app, &path).await;
        assert_eq!(page.status, StatusCode::OK, "{path}");
        assert!(
            page.body
                .contains("<form method=\"get\" action=\"/search\" role=\"search\">"),
            "{path}"
        );
    }
    let hit = |query: &str| {
        let app = app.clone();
        let uri = format!(
            "/search?q={}",
            form_urlencoded::byte_serialize(query.as_bytes()).collect::<String>()
        );
        async move { get(&app, &uri).await }
    };
    for (query, how) in [
        ("C-1042", "idempotency key"),
        ("LAB-REF-77", "partner's reference"),
        ("SO-9913", "correlation value"),
        ("order_no=SO-9913", "correlation field"),
    ] {
        let page = hit(query).await;
        assert_eq!(page.status, StatusCode::OK);
        assert!(
            page.body.contains("1 submission(s) found"),
            "{query}: {}",
            page.body
        );
        assert!(page.body.contains(how), "{query}");
        assert!(
            page.body
                .contains(&format!("href=\"/submissions/{by_ref}\"")),
            "{query}"
        );
    }
    let by_id = hit(&f.stuck.to_string()).await.body;
    assert!(by_id.contains("submission id") && by_id.contains("lab-stuck-1"));
    let nothing = hit("c-1042").await.body;
    assert!(nothing.contains("0 submission(s) found") && nothing.contains("Nothing matches"));
    // The query is shown back escaped, in the box and the answer.
    let hostile = hit("\"><script>alert(1)</script>").await.body;
    assert!(!hostile.contains("<script>alert(1)"));
    assert!(hostile.contains("value=\"&quot;&gt;&lt;script&gt;alert(1)&lt;/script&gt;\""));
    assert_eq!(hit(&"x".repeat(501)).await.status, StatusCode::BAD_REQUEST);
    let cb = malformed_callback(&f).await;
    let found = hit(&cb.to_string()).await.body;
    assert!(
        found.contains(&format!("href=\"/callbacks/{cb}\"")),
        "{found}"
    );
}

#[tokio::test]
async fn lists_page_by_cursor_with_counts_stable_under_inserts() {
    let f = fixture().await;
    let app = f.app(None);
    let mut stuck = vec![f.stuck];
    for i in 0..6 {
        let (id, _) = drive_new_to(
            &f.store,
            worth("lab", &format!("lab-stuck-extra-{i}"), 100),
            SubmissionState::Stuck,
        )
        .await;
        stuck.push(id);
    }
    let first = get(&app, "/lists/stuck?limit=3").await;
    assert_eq!(first.status, StatusCode::OK);
    let html = first.body;
    assert!(
        html.contains("Rows 1 to 3 of <span data-field=\"total\">7</span>"),
        "{html}"
    );
    for id in &stuck[..3] {
        assert!(html.contains(&format!("/submissions/{id}\"")));
    }
    assert!(!html.contains(&format!("/submissions/{}\"", stuck[3])));
    let next = format!("/lists/stuck?after={}&amp;seen=3&amp;limit=3", stuck[2]);
    assert!(html.contains(&format!("href=\"{next}\"")), "{html}");

    // A new stuck submission meanwhile goes to the end: page two is the same.
    let (late, _) = drive_new_to(
        &f.store,
        worth("lab", "lab-late", 1),
        SubmissionState::Stuck,
    )
    .await;
    let second = get(&app, &next.replace("&amp;", "&")).await.body;
    assert!(
        second.contains("Rows 4 to 6 of <span data-field=\"total\">8</span>"),
        "{second}"
    );
    for id in &stuck[3..6] {
        assert!(second.contains(&format!("/submissions/{id}\"")));
    }
    assert!(!second.contains(&format!("/submissions/{late}\"")));
    let third = get(
        &app,
        &format!("/lists/stuck?after={}&seen=6&limit=3", stuck[5]),
    )
    .await
    .body;
    assert!(third.contains(&format!("/submissions/{}\"", stuck[6])));
    assert!(third.contains(&format!("/submissions/{late}\"")));
    assert!(!third.contains("rel=\"next\""), "the last page");
    // Per partner, and failed with dead letters.
    let failed = get(&app, "/lists/failed?partner=bank").await.body;
    assert!(failed.contains("of <span data-field=\"total\">1</span>"));
    assert!(failed.contains("bank-failed-1") && !failed.contains("shop-dead-1"));
    assert_eq!(
        get(&app, "/lists/stuck?after=nope").await.status,
        StatusCode::BAD_REQUEST
    );
    assert_eq!(get(&app, "/lists/nope").await.status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn deadlines_page_by_deadline_order() {
    let f = fixture().await;
    let app = f.app(None);
    let soon = chrono::Utc::now() + chrono::Duration::hours(2);
    let mut ids = Vec::new();
    for i in 0..4 {
        let new = worth("post", &format!("dl-{i}"), 10)
            .business_deadline(soon + chrono::Duration::minutes(10 * (4 - i)));
        ids.push(f.store.enqueue(new).await.unwrap().submission.id);
    }
    // Nearest first: dl-3, dl-2, dl-1, dl-0.
    let first = get(&app, "/lists/deadlines?limit=2").await.body;
    let at = |html: &str, id: SubmissionId| html.find(&format!("/submissions/{id}\""));
    assert!(at(&first, ids[3]).unwrap() < at(&first, ids[2]).unwrap());
    assert!(at(&first, ids[1]).is_none());
    let second = get(
        &app,
        &format!("/lists/deadlines?after={}&seen=2&limit=2", ids[2]),
    )
    .await
    .body;
    assert!(at(&second, ids[1]).unwrap() < at(&second, ids[0]).unwrap());
    assert!(at(&second, ids[3]).is_none());
}

#[tokio::test]
async fn lists_export_as_streamed_csv_as_filtered() {
    let f = fixture().await;
    let app = f.app(None);
    drive_new_to(
        &f.store,
        worth("lab", "=HYPERLINK(\"http://evil\")", 100),
        SubmissionState::Stuck,
    )
    .await;
    let csv = get(&app, "/export/stuck").await;
    assert_eq!(csv.status, StatusCode::OK);
    assert_eq!(csv.headers["content-type"], "text/csv; charset=utf-8");
    assert!(
        csv.headers["content-disposition"]
            .to_str()
            .unwrap()
            .starts_with("attachment; filename=\"liaison-stuck-")
    );
    let lines: Vec<&str> = csv.body.split("\r\n").filter(|l| !l.is_empty()).collect();
    assert_eq!(lines.len(), 3, "header and two rows: {}", csv.body);
    assert!(lines[0].starts_with("id,partner,kind,idempotency_key,state,value"));
    assert!(lines[1].starts_with(&format!("{},lab,claim.submit,lab-stuck-1,stuck,", f.stuck)));
    assert!(lines[1].contains("42.00 (currency unspecified)"));
    assert!(
        lines[2].contains("\"'=HYPERLINK(\"\"http://evil\"\")\""),
        "{}",
        lines[2]
    );
    let failed = get(&app, "/export/failed?partner=shop").await.body;
    assert_eq!(failed.matches("\r\n").count(), 2);
    assert!(failed.contains("shop-dead-1,dead_lettered"));

    let cb = quarantined(&f, "lab", b"<x/>", "expected JSON, got \"<x/>\"").await;
    let q = get(&app, "/export/quarantine?disposition=malformed")
        .await
        .body;
    assert!(q.starts_with("id,partner,received_at,disposition,error"));
    assert!(q.contains(&format!("{cb},lab,")) && q.contains(",malformed,"));
    assert!(!q.contains("<x/>,"), "bodies are not exported");
    assert_eq!(
        get(&app, "/export/quarantine?disposition=applied")
            .await
            .status,
        StatusCode::BAD_REQUEST
    );
    assert_eq!(
        get(&app, "/export/nope").await.status,
        StatusCode::NOT_FOUND
    );
}

#[tokio::test]
async fn a_large_export_is_streamed_a_page_at_a_time() {
    use http_body_util::BodyExt;
    use tower::ServiceExt;
    let f = fixture().await;
    let due = chrono::Utc::now() + chrono::Duration::days(3);
    let batch: Vec<NewSubmission> = (0..1203)
        .map(|i| worth("bulk", &format!("bulk-{i:05}"), i).business_deadline(due))
        .collect();
    f.store.enqueue_batch(batch).await.unwrap();
    let response = f
        .app(None)
        .oneshot(
            Request::get("/export/deadlines")
                .body(Body::empty())
                .unwrap(),
        )
        .await
        .unwrap();
    let mut body = response.into_body();
    let (mut frames, mut text) = (0, String::new());
    while let Some(frame) = body.frame().await {
        let data = frame.unwrap().into_data().unwrap();
        frames += 1;
        text.push_str(std::str::from_utf8(&data).unwrap());
    }
    // The header, then one frame per page of 500 rows read from the store.
    assert_eq!(frames, 4, "header + 500 + 500 + 203 rows");
    assert_eq!(text.matches("\r\n").count(), 1 + 1203);
    assert!(text.contains("bulk-00000") && text.contains("bulk-01202"));
}

#[tokio::test]
async fn the_quarantine_lists_with_reason_and_shows_a_bounded_escaped_body() {
    let f = fixture().await;
    let app = f.app(Some(TOKEN));
    let hostile = format!(
        "<script>alert(1)</script>\u{202E}evil\u{0}{}",
        "A".repeat(20_000)
    );
    let cb = quarantined(&f, "lab", hostile.as_bytes(), "expected JSON, got <script>").await;
    let other = quarantined(&f, "bank", b"{}", "no status").await;
    let list = get(&app, "/quarantine").await;
    assert_eq!(list.status, StatusCode::OK);
    let html = list.body;
    assert!(html.contains("Callbacks in quarantine (2)"), "{html}");
    assert!(html.contains(&format!("href=\"/callbacks/{cb}\"")));
    assert!(html.contains(&format!("href=\"/callbacks/{other}\"")));
    assert!(html.contains("unreadable: could not be parsed"));
    assert!(html.contains("expected JSON, got &lt;script&gt;"));
    assert!(!html.contains("AAAA"), "bodies are not in the list");
    let lab = get(&app, "/quarantine?partner=lab").await.body;
    assert!(lab.contains("Callbacks in quarantine (1)") && !lab.contains(&other.to_string()));
    assert_eq!(
        get(&app, "/quarantine?disposition=applied").await.status,
        StatusCode::BAD_REQUEST
    );

    let page = get(&app, &format!("/callbacks/{cb}")).await;
    assert_eq!(page.status, StatusCode::OK);
    let html = page.body;
    assert!(!html.contains("<script>alert(1)"));
    assert!(html.contains("&lt;script&gt;alert(1)&lt;/script&gt;\\u{202e}evil\\u{0}"));
    assert!(
        html.contains("The first 8192 of 20033 bytes."),
        "{}",
        &html[..2000]
    );
    assert!(
        html.len() < 40_000,
        "the body view is bounded: {}",
        html.len()
    );
    assert!(html.contains("data-action=\"reprocess\"") && html.contains("data-action=\"dismiss\""));
}

#[tokio::test]
async fn a_quarantined_callback_is_reprocessed_after_its_matcher_is_fixed() {
    let f = fixture().await;
    let cb = malformed_callback(&f).await;
    let fixed = hub(&f, fixed_matcher());
    let app = app_for(&fixed, Some(TOKEN));
    let path = format!("/callbacks/{cb}/reprocess");
    let why = form_fields(
        "ann",
        "the lab's new format is read since release 4.2",
        TOKEN,
    );
    let done = post_form(&app, &path, SAME, &why).await;
    assert_eq!(done.status, StatusCode::OK, "{}", done.body);
    assert!(
        done.body
            .contains("Reprocessed: it is now <strong data-field=\"disposition\">applied</strong>")
    );
    assert!(
        done.body
            .contains(&format!("href=\"/submissions/{}\"", f.stuck))
    );
    assert_eq!(callback(&f, cb).await.disposition, Disposition::Applied);
    assert_eq!(f.state(f.stuck).await, SubmissionState::Succeeded);
    // Journaled on the submission's timeline: who, and what was fixed.
    let last = f.store.timeline(f.stuck).await.unwrap().pop().unwrap();
    assert_eq!(last.kind, liaison::EventKind::CallbackReprocessed);
    assert_eq!(last.actor, Actor::person("ann"));
    let noted = last.reason.unwrap();
    assert!(
        noted.contains(&cb.to_string())
            && noted.ends_with("the lab's new format is read since release 4.2"),
        "{noted}"
    );
    // From a state that refuses it: applied callbacks are not reprocessed.
    let again = post_form(&app, &path, SAME, &why).await;
    assert_eq!(again.status, StatusCode::BAD_REQUEST);
    assert!(
        again.body.contains("there is nothing to reprocess")
            && again.body.contains("Nothing was changed.")
    );
}

#[tokio::test]
async fn a_quarantined_callback_is_dismissed_with_a_reason_through_the_page() {
    let f = fixture().await;
    let app = f.app(Some(TOKEN));
    let cb = quarantined(&f, "lab", b"ping", "not JSON").await;
    let path = format!("/callbacks/{cb}/dismiss");
    let missing = post_form(&app, &path, SAME, &form_fields("ann", " ", TOKEN)).await;
    assert_eq!(missing.status, StatusCode::BAD_REQUEST);
    assert!(missing.body.contains("invalid reason: say why"));
    assert_eq!(callback(&f, cb).await.disposition, Disposition::Malformed);
    let done = post_form(
        &app,
        &path,
        SAME,
        &form_fields("ann", "a sandbox ping", TOKEN),
    )
    .await;
    assert_eq!(done.status, StatusCode::OK, "{}", done.body);
    assert!(done.body.contains("Dismissed"));
    let stored = callback(&f, cb).await;
    assert_eq!(stored.disposition, Disposition::Dismissed);
    let dismissal = stored.dismissal.unwrap();
    assert_eq!(
        (dismissal.actor, dismissal.reason.as_str()),
        (Actor::person("ann"), "a sandbox ping")
    );
    let page = get(&app, &format!("/callbacks/{cb}")).await.body;
    assert!(page.contains("data-field=\"dismissal\"") && page.contains("a sandbox ping"));
    let again = post_form(&app, &path, SAME, &form_fields("ann", "again", TOKEN)).await;
    assert_eq!(again.status, StatusCode::CONFLICT);
    assert!(
        again.body.contains("only a quarantined callback"),
        "{}",
        again.body
    );
}

#[tokio::test]
async fn callbacks_are_dismissed_by_filter_after_a_dry_run_count() {
    let f = fixture().await;
    let app = f.app(Some(TOKEN));
    let mut lab = Vec::new();
    for i in 0..3 {
        lab.push(quarantined(&f, "lab", format!("x{i}").as_bytes(), "not JSON").await);
    }
    let bank = quarantined(&f, "bank", b"y", "not JSON").await;
    let fields = |extra: &[(&'static str, &'static str)]| {
        let mut v = vec![
            ("partner", "lab"),
            ("actor", "ann"),
            ("reason", "the lab's sandbox flooded us"),
            ("token", TOKEN),
        ];
        v.extend_from_slice(extra);
        v
    };
    let dry = post_form(&app, "/quarantine/dismiss", SAME, &fields(&[])).await;
    assert_eq!(dry.status, StatusCode::OK, "{}", dry.body);
    assert!(
        dry.body.contains("<strong data-field=\"count\">3</strong>"),
        "{}",
        dry.body
    );
    assert!(dry.body.contains("Nothing has been changed yet."));
    assert!(dry.body.contains("name=\"expected\" value=\"3\""));
    assert!(
        !dry.body.contains(TOKEN),
        "the token is never put in a page"
    );
    for id in lab.iter().chain([&bank]) {
        assert_eq!(callback(&f, *id).await.disposition, Disposition::Malformed);
    }
    // The quarantine changed since the count: refused, nothing changed.
    let stale = post_form(
        &app,
        "/quarantine/dismiss",
        SAME,
        &fields(&[("confirm", "yes"), ("expected", "2")]),
    )
    .await;
    assert_eq!(stale.status, StatusCode::CONFLICT);
    assert!(stale.body.contains("count again"));
    assert_eq!(
        callback(&f, lab[0]).await.disposition,
        Disposition::Malformed
    );
    let done = post_form(
        &app,
        "/quarantine/dismiss",
        SAME,
        &fields(&[("confirm", "yes"), ("expected", "3")]),
    )
    .await;
    assert_eq!(done.status, StatusCode::OK, "{}", done.body);
    assert!(done.body.contains("Dismissed 3 of 3"), "{}", done.body);
    for id in &lab {
        let c = callback(&f, *id).await;
        assert_eq!(c.disposition, Disposition::Dismissed);
        assert_eq!(c.dismissal.unwrap().reason, "the lab's sandbox flooded us");
    }
    assert_eq!(
        callback(&f, bank).await.disposition,
        Disposition::Malformed,
        "another partner"
    );
    // One journal line for the three, on the lab's page.
    let page = get(&app, "/partners/lab").await.body;
    let journal = &page[page.find("id=\"journal\"").expect("the journal")..];
    assert_eq!(
        journal
            .matches("data-journal=\"dismiss_callbacks\"")
            .count(),
        1
    );
    assert!(journal.contains("3 of 3 callback(s): the lab"), "{journal}");
}

#[tokio::test]
async fn callbacks_are_reprocessed_by_filter_after_a_dry_run_count() {
    let f = fixture().await;
    let cb = malformed_callback(&f).await;
    let noise = quarantined(&f, "lab", b"not json at all", "not JSON").await;
    let app = app_for(&hub(&f, fixed_matcher()), Some(TOKEN));
    let fields = |extra: &[(&'static str, &'static str)]| {
        let mut v = vec![
            ("partner", "lab"),
            ("disposition", "malformed"),
            ("actor", "ann"),
            ("reason", "release 4.2 reads the new format"),
            ("token", TOKEN),
        ];
        v.extend_from_slice(extra);
        v
    };
    let dry = post_form(&app, "/quarantine/reprocess", SAME, &fields(&[])).await;
    assert!(
        dry.body.contains("<strong data-field=\"count\">2</strong>"),
        "{}",
        dry.body
    );
    assert_eq!(callback(&f, cb).await.disposition, Disposition::Malformed);
    let done = post_form(
        &app,
        "/quarantine/reprocess",
        SAME,
        &fields(&[("confirm", "yes"), ("expected", "2")]),
    )
    .await;
    assert!(done.body.contains("Reprocessed 2 of 2"), "{}", done.body);
    assert_eq!(callback(&f, cb).await.disposition, Disposition::Applied);
    assert_eq!(
        callback(&f, noise).await.disposition,
        Disposition::Malformed,
        "still unreadable"
    );
    assert_eq!(f.state(f.stuck).await, SubmissionState::Succeeded);
}

#[tokio::test]
async fn a_partner_is_paused_and_resumed_with_who_and_why() {
    let f = fixture().await;
    let app = f.app(Some(TOKEN));
    let page = get(&app, "/partners/lab").await.body;
    assert!(page.contains("Not paused") && page.contains("data-action=\"pause\""));
    assert!(!page.contains("data-action=\"resume\""));
    let resume = post_form(
        &app,
        "/partners/lab/resume",
        SAME,
        &form_fields("ann", "back", TOKEN),
    )
    .await;
    assert_eq!(
        resume.status,
        StatusCode::CONFLICT,
        "not paused: nothing to resume"
    );
    assert!(resume.body.contains("is not paused"));

    let mut pause = form_fields("ann", "the lab's maintenance, ticket 4411", TOKEN);
    pause.push(("until", "yesterday"));
    let refused = post_form(&app, "/partners/lab/pause", SAME, &pause).await;
    assert_eq!(refused.status, StatusCode::BAD_REQUEST);
    assert!(refused.body.contains("invalid until") && refused.body.contains("value=\"yesterday\""));
    assert!(f.store.pauses(chrono::Utc::now()).await.unwrap().is_empty());
    let page = get(&app, "/partners/lab").await.body;
    assert!(
        page.contains("id=\"journal\"") && page.contains("Nobody has acted here yet."),
        "a refused action journals nothing"
    );
    pause.pop();
    pause.push(("until", "2h"));
    let done = post_form(&app, "/partners/lab/pause", SAME, &pause).await;
    assert_eq!(done.status, StatusCode::OK, "{}", done.body);
    assert!(done.body.contains("is paused until"));
    let pauses = f.store.pauses(chrono::Utc::now()).await.unwrap();
    assert_eq!(pauses.len(), 1);
    assert_eq!(pauses[0].actor, Actor::person("ann"));
    assert_eq!(pauses[0].reason, "the lab's maintenance, ticket 4411");
    let page = get(&app, "/partners/lab").await.body;
    assert!(page.contains("Paused until") && page.contains("ticket 4411"));
    assert!(
        page.contains("by <strong><bdi>ann</bdi></strong>"),
        "{page}"
    );
    let overview = get(&app, "/").await.body;
    assert!(overview.contains("data-field=\"paused\""));

    let done = post_form(
        &app,
        "/partners/lab/resume",
        SAME,
        &form_fields("bob", "maintenance ended early", TOKEN),
    )
    .await;
    assert_eq!(done.status, StatusCode::OK, "{}", done.body);
    assert!(done.body.contains("is resumed by"));
    assert!(f.store.pauses(chrono::Utc::now()).await.unwrap().is_empty());
    // Both are in the partner's operations journal, newest first, with
    // who and why.
    let page = get(&app, "/partners/lab").await.body;
    let journal = &page[page.find("id=\"journal\"").expect("the journal")..];
    let resumed = journal.find("data-journal=\"resume_partner\"").unwrap();
    let paused = journal.find("data-journal=\"pause_partner\"").unwrap();
    assert!(resumed < paused, "{journal}");
    assert!(
        journal[resumed..paused].contains("bob")
            && journal[resumed..paused].contains("maintenance ended early")
    );
    assert!(journal[paused..].contains("ann") && journal[paused..].contains("ticket 4411"));
    assert!(journal[paused..].contains("until "));
    // Another partner's page has none of it.
    let bank = get(&app, "/partners/bank").await.body;
    assert!(bank.contains("Nobody has acted here yet."));
}

#[tokio::test]
async fn an_alert_is_acknowledged_with_a_name_and_shows_its_notifications() {
    let f = fixture().await;
    let (sink, _rx) = liaison::ops::alerts::ChannelSink::new(16);
    let liaison = Liaison::builder(f.store.clone())
        .alert_sink(sink)
        .build()
        .unwrap();
    liaison.evaluate_alerts().await.unwrap();
    let alert = liaison
        .alerts(true)
        .await
        .unwrap()
        .into_iter()
        .find(|a| a.partner == "lab")
        .expect("the stuck submission opens an alert");
    let app = app_for(&liaison, Some(TOKEN));
    let list = get(&app, "/alerts").await.body;
    assert!(list.contains(&format!("href=\"/alerts/{}#acknowledge\"", alert.id)));
    let page = get(&app, &format!("/alerts/{}", alert.id)).await.body;
    assert!(page.contains("data-action=\"acknowledge\""));
    assert!(page.contains("Notifications sent"));
    let path = format!("/alerts/{}/acknowledge", alert.id);
    let nameless = post_form(&app, &path, SAME, &[("actor", " "), ("token", TOKEN)]).await;
    assert_eq!(nameless.status, StatusCode::BAD_REQUEST);
    assert!(nameless.body.contains("invalid actor"));
    let done = post_form(
        &app,
        &path,
        SAME,
        &[
            ("actor", "dana (billing ops)"),
            ("reason", "on it; the lab is called"),
            ("token", TOKEN),
        ],
    )
    .await;
    assert_eq!(done.status, StatusCode::OK, "{}", done.body);
    assert!(done.body.contains("Reminders to its owner stop"));
    let stored = liaison.store().alert(alert.id).await.unwrap();
    assert_eq!(
        stored.acknowledged_by,
        Some(Actor::person("dana (billing ops)"))
    );
    let again = post_form(&app, &path, SAME, &[("actor", "eve"), ("token", TOKEN)]).await;
    assert_eq!(again.status, StatusCode::CONFLICT);
    assert!(again.body.contains("already acknowledged by dana"));
    let page = get(&app, &format!("/alerts/{}", alert.id)).await.body;
    assert!(!page.contains("data-action=\"acknowledge\""));
    assert!(page.contains("by <bdi>dana (billing ops)</bdi>"));
    // The acknowledgement and its note are journaled, on the alert's page.
    let journal = &page[page.find("id=\"journal\"").expect("the journal")..];
    assert!(
        journal.contains("data-journal=\"acknowledge_alert\""),
        "{journal}"
    );
    assert!(journal.contains("on it; the lab is called"), "{journal}");
    assert_eq!(
        journal.matches("data-journal=").count(),
        1,
        "the refused second acknowledgement journals nothing"
    );
}

/// Every new action, refused without a token, with a wrong one, from
/// another site, and on a read-only page: nothing changes.
#[tokio::test]
async fn every_action_is_refused_without_the_right_token_or_from_another_site() {
    let f = fixture().await;
    let cb = quarantined(&f, "lab", b"x", "not JSON").await;
    let alert_hub = Liaison::builder(f.store.clone()).build().unwrap();
    alert_hub.evaluate_alerts().await.unwrap();
    let alert = alert_hub.alerts(true).await.unwrap().remove(0);
    let app = f.app(Some(TOKEN));
    let read_only = f.app(None);
    let posts: Vec<(String, Vec<(&str, &str)>)> = vec![
        (format!("/callbacks/{cb}/dismiss"), vec![]),
        (format!("/callbacks/{cb}/reprocess"), vec![]),
        (
            "/quarantine/dismiss".into(),
            vec![("confirm", "yes"), ("expected", "1")],
        ),
        (
            "/quarantine/reprocess".into(),
            vec![("confirm", "yes"), ("expected", "1")],
        ),
        ("/partners/lab/pause".into(), vec![("until", "2h")]),
        (format!("/alerts/{}/acknowledge", alert.id), vec![]),
    ];
    for (path, extra) in &posts {
        let with = |token: Option<&'static str>| {
            let mut v = vec![("actor", "mallory"), ("reason", "because")];
            v.extend(extra.iter().copied());
            if let Some(t) = token {
                v.push(("token", t));
            }
            v
        };
        let none = post_form(&app, path, SAME, &with(None)).await;
        assert_eq!(none.status, StatusCode::UNAUTHORIZED, "{path}");
        assert!(
            none.body.contains("the ops token is missing or wrong")
                && none.body.contains("Nothing was changed.")
        );
        let wrong = post_form(&app, path, SAME, &with(Some("wrong token, long enough"))).await;
        assert_eq!(wrong.status, StatusCode::UNAUTHORIZED, "{path}");
        let cross = post_form(&app, path, Some("http://evil.example"), &with(Some(TOKEN))).await;
        assert_eq!(cross.status, StatusCode::FORBIDDEN, "{path}");
        assert!(cross.body.contains("came from another site"));
        let ro = post_form(&read_only, path, SAME, &with(Some(TOKEN))).await;
        assert_eq!(ro.status, StatusCode::FORBIDDEN, "{path}");
        assert!(ro.body.contains("read-only"));
    }
    assert_eq!(callback(&f, cb).await.disposition, Disposition::Malformed);
    assert!(f.store.pauses(chrono::Utc::now()).await.unwrap().is_empty());
    assert!(
        f.store
            .alert(alert.id)
            .await
            .unwrap()
            .acknowledged_by
            .is_none()
    );
    // A read-only page shows no action forms.
    for path in [
        format!("/callbacks/{cb}"),
        "/quarantine".to_owned(),
        "/partners/lab".to_owned(),
        format!("/alerts/{}", alert.id),
    ] {
        let page = get(&read_only, &path).await.body;
        assert!(!page.contains("<form method=\"post\""), "{path}");
        assert!(page.contains("Read-only"), "{path}");
    }
}

/// Script tags, quotes, right-to-left overrides, control characters and
/// 1 MiB strings in payload-side fields and partner error text: inert and
/// cut short on every page that shows them.
#[tokio::test]
async fn hostile_data_is_inert_and_cut_short_on_every_page() {
    let f = fixture().await;
    let mib = "\u{202E}<script>x</script>\"'".repeat(1 << 16); // > 1 MiB
    let key = format!("<script>alert('key')</script>{}", &mib[..92]);
    let new = NewSubmission::new(
        "lab",
        "claim.submit",
        json!({ "note": &mib[..23 * 40_000] }),
    )
    .idempotency_key(&key)
    .correlation("order_no", "\"><img src=x onerror=alert(1)>");
    let id = accepted_with_reference(&f, new, "<b>REF</b>").await;
    f.store
        .transition(
            id,
            StateChange::to(SubmissionState::Stuck).error(mib.clone()),
        )
        .await
        .unwrap();
    let cb = quarantined(&f, "lab", mib.as_bytes(), &mib).await;
    let app = f.app(Some(TOKEN));
    for path in [
        "/".to_owned(),
        "/lists/stuck".to_owned(),
        format!("/submissions/{id}"),
        "/search?q=%3Cb%3EREF%3C%2Fb%3E".to_owned(),
        "/quarantine".to_owned(),
        format!("/callbacks/{cb}"),
        "/partners/lab".to_owned(),
        "/partners/%3Cscript%3Ex%3C%2Fscript%3E".to_owned(),
    ] {
        let page = get(&app, &path).await;
        assert_eq!(page.status, StatusCode::OK, "{path}");
        let html = page.body;
        assert!(
            !html.contains("<script>"),
            "{path}: a script tag got through"
        );
        assert!(!html.contains("<img"), "{path}");
        assert!(!html.contains("<b>REF"), "{path}");
        assert!(!html.contains('\u{202E}'), "{path}: a raw RTL override");
        assert!(!html.contains('\u{0}'), "{path}: a raw NUL");
        assert!(
            html.len() < 200_000,
            "{path}: {} bytes; 1 MiB strings are cut",
            html.len()
        );
    }
    // Made visible and escaped, and cut with a note where it is long.
    let list = get(&app, "/lists/stuck").await.body;
    assert!(list.contains("more characters not shown"));
    let detail = get(&app, &format!("/submissions/{id}")).await.body;
    assert!(detail.contains("\\u{202e}&lt;script&gt;x&lt;/script&gt;&quot;'"));
}

#[tokio::test]
async fn the_json_lists_page_by_cursor_too() {
    let f = fixture().await;
    let app = f.app(None);
    let mut ids = Vec::new();
    for i in 0..3 {
        ids.push(quarantined(&f, "lab", b"x", &format!("bad {i}")).await);
    }
    let first = get(&app, "/api/callbacks?quarantined=true&limit=2")
        .await
        .json();
    let rows = first["callbacks"].as_array().unwrap();
    assert_eq!(rows.len(), 2);
    assert_eq!(rows[0]["id"], ids[2].to_string(), "newest first");
    let after = rows[1]["id"].as_str().unwrap();
    let next = get(
        &app,
        &format!("/api/callbacks?quarantined=true&limit=2&after={after}"),
    )
    .await
    .json();
    let rows = next["callbacks"].as_array().unwrap();
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0]["id"], ids[0].to_string());
}
