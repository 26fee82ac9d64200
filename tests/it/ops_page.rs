//! The ops page: every endpoint through `oneshot` (no sockets), the token and
//! origin rules for actions, HTML escaping, and one run in a real headless
//! chromium that replays a stuck submission through the page's form.

#[path = "../browser/replay.rs"]
mod browser;
#[path = "../browser/cdp.rs"]
pub(crate) mod cdp;

use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::http::{HeaderMap, Request, StatusCode};
use liaison::engine::Liaison;
use liaison::http::ops::{OpsState, router};
use liaison::ops::alerts::{Owner, Ownership, ProblemClass};
use liaison::store::{NewCallback, OutboxStore, Settlement, SqliteStore};
use liaison::{Actor, NewSubmission, SubmissionId, SubmissionState};
use serde_json::{Value, json};
use tempfile::TempDir;
use tower::ServiceExt;

use crate::support::{drive_new_to, park_deliveries, store};

pub(crate) const TOKEN: &str = "correct horse battery staple";
const RUNBOOK: &str = "https://wiki.example/runbooks/result-overdue";

/// A store with one submission in each problem state, and the hub on it.
pub(crate) struct Fixture {
    pub(crate) _dir: TempDir,
    pub(crate) store: SqliteStore,
    pub(crate) liaison: Liaison,
    pub(crate) stuck: SubmissionId,
    pub(crate) failed: SubmissionId,
    pub(crate) dead: SubmissionId,
    pub(crate) succeeded: SubmissionId,
    pub(crate) queued: SubmissionId,
}

pub(crate) fn worth(partner: &str, key: &str, cents: i64) -> NewSubmission {
    NewSubmission::new(
        partner,
        "claim.submit",
        json!({ "claim": key, "patient": "P-1" }),
    )
    .idempotency_key(key)
    .business_value(cents)
}

pub(crate) async fn fixture() -> Fixture {
    use SubmissionState::*;
    let (dir, store) = store();
    let (stuck, _) = drive_new_to(&store, worth("lab", "lab-stuck-1", 4200), Stuck).await;
    let (failed, _) = drive_new_to(&store, worth("bank", "bank-failed-1", 1_234_500), Failed).await;
    let (succeeded, _) = drive_new_to(&store, worth("bank", "bank-ok-1", 100), Succeeded).await;
    let (dead, _) = drive_new_to(&store, worth("shop", "shop-dead-1", 999), DeadLettered).await;
    let (queued, _) = drive_new_to(&store, worth("post", "post-q-1", 5), Queued).await;
    let billing = Owner::new("billing ops", "billing@clinic.example").runbook(RUNBOOK);
    let liaison = Liaison::builder(store.clone())
        .ownership(
            Ownership::new(Owner::new("integrations team", "#integrations"))
                .route(ProblemClass::ResultOverdue, billing),
        )
        .build()
        .unwrap();
    Fixture {
        _dir: dir,
        store,
        liaison,
        stuck,
        failed,
        dead,
        succeeded,
        queued,
    }
}

impl Fixture {
    pub(crate) fn app(&self, token: Option<&str>) -> Router {
        let mut state = OpsState::new(self.liaison.clone());
        state.token = token.map(str::to_owned);
        router(state).unwrap()
    }

    pub(crate) async fn state(&self, id: SubmissionId) -> SubmissionState {
        self.store.get(id).await.unwrap().state
    }
}

pub(crate) struct Answer {
    pub(crate) status: StatusCode,
    pub(crate) headers: HeaderMap,
    pub(crate) body: String,
}

impl Answer {
    pub(crate) fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("{e}: {}", self.body))
    }
}

pub(crate) async fn call(app: &Router, request: Request<Body>) -> Answer {
    let response = app.clone().oneshot(request).await.unwrap();
    let status = response.status();
    let headers = response.headers().clone();
    let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
        .await
        .unwrap();
    Answer {
        status,
        headers,
        body: String::from_utf8(bytes.to_vec()).unwrap(),
    }
}

pub(crate) async fn get(app: &Router, uri: &str) -> Answer {
    call(app, Request::get(uri).body(Body::empty()).unwrap()).await
}

async fn post_json(app: &Router, uri: &str, token: Option<&str>, body: Value) -> Answer {
    let mut request = Request::post(uri).header("content-type", "application/json");
    if let Some(token) = token {
        request = request.header("authorization", format!("Bearer {token}"));
    }
    call(app, request.body(Body::from(body.to_string())).unwrap()).await
}

pub(crate) async fn post_form(
    app: &Router,
    uri: &str,
    origin: Option<&str>,
    fields: &[(&str, &str)],
) -> Answer {
    let body = form_urlencoded::Serializer::new(String::new())
        .extend_pairs(fields)
        .finish();
    let mut request = Request::post(uri)
        .header("content-type", "application/x-www-form-urlencoded")
        .header("host", "ops.clinic.example");
    if let Some(origin) = origin {
        request = request.header("origin", origin);
    }
    call(app, request.body(Body::from(body)).unwrap()).await
}

fn action(actor: &str, reason: &str) -> Value {
    json!({ "actor": actor, "reason": reason })
}

#[tokio::test]
async fn json_endpoints_answer_with_their_shapes() {
    let f = fixture().await;
    f.liaison.evaluate_alerts().await.unwrap();
    let app = f.app(None);

    let health = get(&app, "/api/health").await;
    assert_eq!(health.status, StatusCode::OK);
    let health = health.json();
    assert!(["healthy", "degraded", "down"].contains(&health["verdict"].as_str().unwrap()));
    let lab = health["partners"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["partner"] == "lab")
        .unwrap();
    assert_eq!(lab["stuck"], 1);
    assert_eq!(lab["at_risk"]["value"]["unspecified"], 4200);

    let alerts = get(&app, "/api/alerts?open=true").await.json();
    let overdue = alerts["alerts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["class"] == "result_overdue");
    let overdue = overdue.expect("the stuck submission opens an alert");
    assert_eq!(overdue["partner"], "lab");
    assert_eq!(overdue["owner"]["name"], "billing ops");
    assert_eq!(
        get(&app, "/api/alerts?open=maybe").await.status,
        StatusCode::BAD_REQUEST
    );

    let stuck = get(&app, "/api/submissions?state=stuck&partner=lab&limit=10")
        .await
        .json();
    let rows = stuck["submissions"].as_array().unwrap();
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0]["idempotency_key"], "lab-stuck-1");
    assert_eq!(rows[0]["state"], "stuck");
    assert!(rows[0].get("payload").is_none(), "payloads are never shown");
    assert_eq!(rows[0]["payload_purged"], false);
    let two = get(&app, "/api/submissions?state=failed,dead_lettered")
        .await
        .json();
    assert_eq!(two["submissions"].as_array().unwrap().len(), 2);
    let page = get(&app, "/api/submissions?limit=1").await.json();
    assert_eq!(page["submissions"].as_array().unwrap().len(), 1);
    let after = page["next_after"].as_str().expect("a next page");
    let next = get(&app, &format!("/api/submissions?limit=10&after={after}"))
        .await
        .json();
    assert_eq!(next["submissions"].as_array().unwrap().len(), 4);
    assert_eq!(next["next_after"], Value::Null);
    let bad = get(&app, "/api/submissions?state=lost").await;
    assert_eq!(bad.status, StatusCode::BAD_REQUEST);
    assert!(bad.json()["error"].as_str().unwrap().contains("lost"));

    let one = get(&app, &format!("/api/submissions/{}", f.stuck)).await;
    assert_eq!(one.status, StatusCode::OK);
    let one = one.json();
    assert_eq!(one["submission"]["id"], f.stuck.to_string());
    let kinds: Vec<&str> = one["timeline"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["kind"].as_str().unwrap())
        .collect();
    assert_eq!(kinds, ["enqueued", "claimed", "accepted", "stuck"]);
    assert_eq!(one["attempts"][0]["outcome"], "accepted");
    let missing = get(&app, &format!("/api/submissions/{}", SubmissionId::new())).await;
    assert_eq!(missing.status, StatusCode::NOT_FOUND);
    assert_eq!(
        get(&app, "/api/submissions/not-an-id").await.status,
        StatusCode::BAD_REQUEST
    );

    let callback = f
        .store
        .record_callback(
            NewCallback::new("lab", b"<not json/>".to_vec())
                .header("webhook-id", "evt-1")
                .body_hash("00"),
        )
        .await
        .unwrap();
    let malformed = Settlement::Malformed {
        reason: "expected JSON".into(),
    };
    f.store.settle_callback(callback, malformed).await.unwrap();
    let quarantined = get(&app, "/api/callbacks?quarantined=true").await.json();
    let rows = quarantined["callbacks"].as_array().unwrap();
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0]["disposition"], "malformed");
    assert!(rows[0].get("body").is_none(), "raw bodies are never shown");
    let all = get(&app, "/api/callbacks?partner=lab&limit=5").await.json();
    assert_eq!(all["callbacks"].as_array().unwrap().len(), 1);
}

#[tokio::test]
async fn the_overview_shows_verdicts_alerts_stuck_work_and_a_chart_per_partner() {
    let f = fixture().await;
    f.liaison.evaluate_alerts().await.unwrap();
    let page = get(&f.app(Some(TOKEN)), "/").await;
    assert_eq!(page.status, StatusCode::OK);
    assert_eq!(page.headers["content-type"], "text/html; charset=utf-8");
    assert!(
        page.headers["content-security-policy"]
            .to_str()
            .unwrap()
            .contains("default-src 'none'")
    );
    let html = page.body;
    assert!(
        html.contains("Degraded") && html.contains("Healthy"),
        "verdict words"
    );
    assert!(
        html.contains("1 submission(s) stuck without a result"),
        "reasons"
    );
    assert!(
        html.contains("lab-stuck-1")
            && html.contains(&format!("href=\"/submissions/{}\"", f.stuck))
    );
    assert!(html.contains("bank-failed-1") && html.contains("shop-dead-1"));
    assert!(
        html.contains("42.00 (currency unspecified)")
            && html.contains("12345.00 (currency unspecified)"),
        "money from minor units"
    );
    assert_eq!(html.matches("<svg").count(), 4, "one chart per partner");
    assert!(html.contains("<polyline") && html.contains("<rect"));
    assert!(html.contains("billing ops") && html.contains("billing@clinic.example"));
    assert!(
        html.contains(&format!("<a href=\"{RUNBOOK}\"")),
        "the runbook is linked"
    );
    assert!(!html.contains("Read-only"));
    let read_only = get(&f.app(None), "/").await.body;
    assert!(read_only.contains("Read-only"));
}

#[tokio::test]
async fn the_submission_page_shows_details_timeline_and_the_forms_that_apply() {
    let f = fixture().await;
    let app = f.app(Some(TOKEN));
    let page = get(&app, &format!("/submissions/{}", f.stuck)).await;
    assert_eq!(page.status, StatusCode::OK);
    let html = page.body;
    assert!(html.contains("<strong data-field=\"state\">stuck</strong>"));
    assert!(html.contains("42.00") && html.contains("<table class=\"timeline\">"));
    assert!(!html.contains("P-1"), "the payload is not shown");
    for action in ["replay", "resolve", "cancel"] {
        let form = format!("action=\"/submissions/{}/{action}\"", f.stuck);
        assert!(html.contains(&form), "{action} form");
    }
    assert!(html.contains("type=\"password\" name=\"token\""));
    let queued = get(&app, &format!("/submissions/{}", f.queued)).await.body;
    assert!(
        queued.contains("data-action=\"cancel\"") && !queued.contains("data-action=\"replay\"")
    );
    let done = get(&app, &format!("/submissions/{}", f.succeeded))
        .await
        .body;
    // Only the search box's form (GET): no action form.
    assert!(!done.contains("<form method=\"post\"") && done.contains("it is finished"));
    let read_only = get(&f.app(None), &format!("/submissions/{}", f.stuck))
        .await
        .body;
    assert!(!read_only.contains("<form method=\"post\"") && read_only.contains("Read-only"));
    let missing = get(&app, &format!("/submissions/{}", SubmissionId::new())).await;
    assert_eq!(missing.status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn actions_are_refused_without_the_right_token() {
    let f = fixture().await;
    let replay = format!("/api/submissions/{}/replay", f.stuck);
    let form = format!("/submissions/{}/replay", f.stuck);
    let fields = |token| {
        [
            ("actor", "ann"),
            ("reason", "partner fixed it"),
            ("token", token),
        ]
    };

    let read_only = f.app(None);
    let answer = post_json(&read_only, &replay, Some(TOKEN), action("ann", "why")).await;
    assert_eq!(answer.status, StatusCode::FORBIDDEN);
    assert!(
        answer.json()["error"]
            .as_str()
            .unwrap()
            .contains("read-only")
    );
    assert_eq!(
        post_form(&read_only, &form, None, &fields(TOKEN))
            .await
            .status,
        StatusCode::FORBIDDEN
    );
    let empty = f.app(Some(""));
    assert_eq!(
        post_json(&empty, &replay, Some(""), action("ann", "why"))
            .await
            .status,
        StatusCode::FORBIDDEN
    );

    let app = f.app(Some(TOKEN));
    let wrong = post_json(&app, &replay, Some("guess"), action("ann", "why")).await;
    assert_eq!(wrong.status, StatusCode::UNAUTHORIZED);
    assert_eq!(wrong.headers["www-authenticate"], "Bearer");
    assert_eq!(
        post_json(&app, &replay, None, action("ann", "why"))
            .await
            .status,
        StatusCode::UNAUTHORIZED
    );
    let html = post_form(&app, &form, None, &fields("guess")).await;
    assert_eq!(html.status, StatusCode::UNAUTHORIZED);
    assert!(html.body.contains("token is missing or wrong"));
    assert!(
        html.body.contains("value=\"partner fixed it\""),
        "what was typed is kept"
    );
    assert_eq!(
        post_form(&app, &form, None, &[("actor", "ann"), ("reason", "r")])
            .await
            .status,
        StatusCode::UNAUTHORIZED
    );

    assert_eq!(
        f.state(f.stuck).await,
        SubmissionState::Stuck,
        "nothing changed"
    );
    assert_eq!(f.store.timeline(f.stuck).await.unwrap().len(), 4);
}

#[tokio::test]
async fn cross_origin_posts_are_refused() {
    let f = fixture().await;
    let app = f.app(Some(TOKEN));
    let form = format!("/submissions/{}/cancel", f.queued);
    let fields = [
        ("actor", "ann"),
        ("reason", "duplicate claim"),
        ("token", TOKEN),
    ];
    let evil = post_form(&app, &form, Some("https://evil.example"), &fields).await;
    assert_eq!(evil.status, StatusCode::FORBIDDEN);
    assert!(evil.body.contains("another site"));
    let json = Request::post(format!("/api/submissions/{}/cancel", f.queued))
        .header("authorization", format!("Bearer {TOKEN}"))
        .header("origin", "http://evil.example")
        .header("host", "ops.clinic.example")
        .body(Body::from(action("ann", "why").to_string()))
        .unwrap();
    assert_eq!(call(&app, json).await.status, StatusCode::FORBIDDEN);
    assert_eq!(f.state(f.queued).await, SubmissionState::Queued);

    let same = post_form(&app, &form, Some("https://ops.clinic.example"), &fields).await;
    assert_eq!(same.status, StatusCode::SEE_OTHER);
    assert_eq!(f.state(f.queued).await, SubmissionState::Cancelled);
}

#[tokio::test]
async fn actions_change_the_state_and_journal_who_and_why() {
    use SubmissionState::*;
    let f = fixture().await;
    let app = f.app(Some(TOKEN));
    let store = &f.store;
    let last = |id| async move { store.timeline(id).await.unwrap().pop().unwrap() };

    let answer = post_json(
        &app,
        &format!("/api/submissions/{}/replay", f.stuck),
        Some(TOKEN),
        action("ann@ops", "the lab confirmed it never arrived"),
    )
    .await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);
    assert_eq!(answer.json()["submission"]["state"], "queued");
    assert_eq!(f.state(f.stuck).await, Queued);
    let event = last(f.stuck).await;
    assert_eq!(event.actor, Actor::person("ann@ops"));
    assert_eq!(
        event.reason.as_deref(),
        Some("the lab confirmed it never arrived")
    );

    let resolve = json!({
        "actor": "bob",
        "reason": "paid by phone",
        "outcome": "succeeded",
        "result": {"paid": 4200, "member": "P-SECRET-7"}
    });
    let path = format!("/api/submissions/{}/resolve", f.failed);
    assert_eq!(
        post_json(&app, &path, Some(TOKEN), resolve).await.status,
        StatusCode::OK
    );
    assert_eq!(f.state(f.failed).await, ResolvedManually);
    assert_eq!(last(f.failed).await.actor, Actor::person("bob"));
    // The attached document is kept; the page shows its size, not its content.
    let kept = f.store.get(f.failed).await.unwrap().result;
    assert_eq!(
        kept.as_ref().and_then(|r| r.document()),
        Some(&json!({"paid": 4200, "member": "P-SECRET-7"}))
    );
    let page = get(&app, &format!("/submissions/{}", f.failed)).await.body;
    assert!(page.contains("Result document"), "{page}");
    assert!(page.contains("kept, not shown here ("), "{page}");
    assert!(!page.contains("P-SECRET-7"), "the document is not shown");

    let path = format!("/api/submissions/{}/cancel", f.queued);
    assert_eq!(
        post_json(&app, &path, Some(TOKEN), action("cy", "sent twice"))
            .await
            .status,
        StatusCode::OK
    );
    assert_eq!(f.state(f.queued).await, Cancelled);

    let form = format!("/submissions/{}/replay", f.dead);
    let fields = [
        ("actor", "dee"),
        ("reason", "mapping fixed"),
        ("token", TOKEN),
    ];
    let posted = post_form(&app, &form, Some("http://ops.clinic.example"), &fields).await;
    assert_eq!(posted.status, StatusCode::SEE_OTHER);
    let location = posted.headers["location"].to_str().unwrap().to_owned();
    assert_eq!(location, format!("/submissions/{}?done=replay", f.dead));
    let page = get(&app, &location).await.body;
    assert!(page.contains("<strong data-field=\"state\">queued</strong>"));
    assert!(page.contains("Replayed") && page.contains("mapping fixed") && page.contains("dee"));
}

#[tokio::test]
async fn action_errors_answer_400_404_or_409_with_the_message() {
    let f = fixture().await;
    let app = f.app(Some(TOKEN));
    let post = |path: String, body: Value| {
        let app = app.clone();
        async move { post_json(&app, &path, Some(TOKEN), body).await }
    };
    let done = post(
        format!("/api/submissions/{}/replay", f.succeeded),
        action("ann", "again"),
    )
    .await;
    assert_eq!(done.status, StatusCode::CONFLICT);
    assert!(
        done.json()["error"]
            .as_str()
            .unwrap()
            .contains("cannot go from succeeded")
    );
    let no_reason = post(
        format!("/api/submissions/{}/replay", f.stuck),
        action("ann", " "),
    )
    .await;
    assert_eq!(no_reason.status, StatusCode::BAD_REQUEST);
    assert!(
        no_reason.json()["error"]
            .as_str()
            .unwrap()
            .contains("reason")
    );
    let no_actor = post(
        format!("/api/submissions/{}/cancel", f.stuck),
        json!({ "reason": "x" }),
    )
    .await;
    assert_eq!(no_actor.status, StatusCode::BAD_REQUEST);
    assert!(no_actor.json()["error"].as_str().unwrap().contains("actor"));
    let no_outcome = post(
        format!("/api/submissions/{}/resolve", f.stuck),
        action("ann", "x"),
    )
    .await;
    assert_eq!(no_outcome.status, StatusCode::BAD_REQUEST);
    let unknown = post(
        format!("/api/submissions/{}/cancel", SubmissionId::new()),
        action("a", "b"),
    )
    .await;
    assert_eq!(unknown.status, StatusCode::NOT_FOUND);
    let bad_id = post("/api/submissions/nope/cancel".into(), action("a", "b")).await;
    assert_eq!(bad_id.status, StatusCode::BAD_REQUEST);
    let verb = post(
        format!("/api/submissions/{}/delete", f.stuck),
        action("a", "b"),
    )
    .await;
    assert_eq!(verb.status, StatusCode::NOT_FOUND);
    let request = Request::post(format!("/api/submissions/{}/cancel", f.stuck))
        .header("authorization", format!("Bearer {TOKEN}"))
        .body(Body::from("actor=ann"))
        .unwrap();
    assert_eq!(call(&app, request).await.status, StatusCode::BAD_REQUEST);
    let form = post_form(
        &app,
        &format!("/submissions/{}/replay", f.succeeded),
        None,
        &[("actor", "ann"), ("reason", "again"), ("token", TOKEN)],
    )
    .await;
    assert_eq!(form.status, StatusCode::CONFLICT);
    assert!(form.body.contains("cannot go from succeeded"));
    assert_eq!(f.state(f.stuck).await, SubmissionState::Stuck);
}

/// The handler error the parked deliveries keep (hostile, to check escaping).
const HANDLER_ERROR: &str = "claims table locked <script>alert(3)</script>";

/// Results of "lab" go to the host: two finished submissions whose
/// deliveries are parked, one delivered.
struct Parked {
    first: SubmissionId,
    second: SubmissionId,
    delivered: SubmissionId,
    first_delivery: String,
    second_delivery: String,
    delivered_delivery: String,
}

async fn park(f: &Fixture) -> Parked {
    use SubmissionState::*;
    f.store.set_result_delivery("lab", true).await.unwrap();
    let (first, _) = drive_new_to(&f.store, worth("lab", "lab-res-1", 700), Succeeded).await;
    let (second, _) = drive_new_to(&f.store, worth("lab", "lab-res-2", 800), Failed).await;
    let (delivered, _) = drive_new_to(&f.store, worth("lab", "lab-res-ok", 900), Succeeded).await;
    park_deliveries(&f.store, "lab", &[first, second], HANDLER_ERROR).await;
    let delivery = |id: SubmissionId| async move {
        let found = f
            .liaison
            .deliveries(&liaison::store::DeliveryFilter::default().submission(id))
            .await
            .unwrap();
        assert_eq!(found.len(), 1);
        found[0].id.to_string()
    };
    Parked {
        first,
        second,
        delivered,
        first_delivery: delivery(first).await,
        second_delivery: delivery(second).await,
        delivered_delivery: delivery(delivered).await,
    }
}

async fn delivery_state(f: &Fixture, id: SubmissionId) -> liaison::DeliveryState {
    f.liaison
        .deliveries(&liaison::store::DeliveryFilter::default().submission(id))
        .await
        .unwrap()[0]
        .state
}

#[tokio::test]
async fn parked_results_show_on_the_overview_and_the_submission_page() {
    let f = fixture().await;
    let app = f.app(Some(TOKEN));
    let before = get(&app, "/").await.body;
    assert!(
        !before.contains("id=\"parked\""),
        "no section while nothing is parked"
    );

    let p = park(&f).await;
    let escaped = "claims table locked &lt;script&gt;alert(3)&lt;/script&gt;";
    let page = get(&app, "/").await;
    assert_eq!(page.status, StatusCode::OK);
    let html = page.body;
    assert!(html.contains("<h2 id=\"parked\">Results not delivered to the host (2)</h2>"));
    // Text from data is isolated (<bdi>) so right-to-left text cannot reorder the line.
    assert!(
        html.contains("<li data-partner=\"lab\"><bdi>lab</bdi>: <strong>2</strong> parked</li>")
    );
    for id in [p.first, p.second] {
        let link = format!("href=\"/submissions/{id}#deliveries\"");
        assert!(html.contains(&link), "{link}");
    }
    assert!(
        !html.contains(&p.delivered.to_string()),
        "delivered ones are not listed"
    );
    assert!(
        html.contains(escaped) && !html.contains("<script>"),
        "escaped"
    );

    let detail = get(&app, &format!("/submissions/{}", p.first)).await.body;
    assert!(detail.contains("<h2 id=\"deliveries\">Results to the host</h2>"));
    assert!(detail.contains("<td data-field=\"delivery-state\">parked</td>"));
    assert!(detail.contains(escaped) && !detail.contains("<script>"));
    let form = format!(
        "action=\"/submissions/{}/deliveries/{}/rerun\" data-action=\"rerun\"",
        p.first, p.first_delivery
    );
    assert!(detail.contains(&form), "the re-run form");
    let done = get(&app, &format!("/submissions/{}", p.delivered))
        .await
        .body;
    assert!(done.contains("<td data-field=\"delivery-state\">delivered</td>"));
    assert!(
        !done.contains("data-action=\"rerun\""),
        "only a parked one is re-run"
    );
    let none = get(&app, &format!("/submissions/{}", f.queued)).await.body;
    assert!(
        !none.contains("Results to the host"),
        "no deliveries, no section"
    );
    let read_only = get(&f.app(None), &format!("/submissions/{}", p.first))
        .await
        .body;
    assert!(
        !read_only.contains("data-action=\"rerun\"")
            && read_only.contains("liaison rerun-delivery")
    );

    let parked = get(&app, "/api/deliveries?state=parked&partner=lab").await;
    assert_eq!(parked.status, StatusCode::OK);
    let rows = parked.json()["deliveries"].as_array().unwrap().clone();
    assert_eq!(rows.len(), 2);
    assert_eq!(rows[0]["id"], p.first_delivery.as_str());
    assert_eq!(rows[0]["state"], "parked");
    assert_eq!(rows[0]["last_error"], HANDLER_ERROR);
    let all = get(&app, "/api/deliveries").await.json();
    assert_eq!(all["deliveries"].as_array().unwrap().len(), 3);
    let one = get(&app, &format!("/api/deliveries?submission={}", p.delivered))
        .await
        .json();
    assert_eq!(one["deliveries"][0]["state"], "delivered");
    let limited = get(&app, "/api/deliveries?limit=1").await.json();
    assert_eq!(limited["deliveries"].as_array().unwrap().len(), 1);
    let other = get(&app, "/api/deliveries?state=parked&partner=bank")
        .await
        .json();
    assert_eq!(other["deliveries"], json!([]));
    for bad in ["state=failed", "submission=nope", "limit=many"] {
        let answer = get(&app, &format!("/api/deliveries?{bad}")).await;
        assert_eq!(
            answer.status,
            StatusCode::BAD_REQUEST,
            "{bad}: {}",
            answer.body
        );
        assert!(answer.json()["error"].is_string());
    }
}

#[tokio::test]
async fn a_parked_delivery_is_rerun_through_the_form_and_the_api() {
    use liaison::DeliveryState::*;
    let f = fixture().await;
    let p = park(&f).await;
    let app = f.app(Some(TOKEN));
    let form = format!(
        "/submissions/{}/deliveries/{}/rerun",
        p.first, p.first_delivery
    );
    let fields = |token| {
        [
            ("actor", "ann"),
            ("reason", "unlocked the table"),
            ("token", token),
        ]
    };

    let refused = post_form(&app, &form, None, &fields("guess")).await;
    assert_eq!(refused.status, StatusCode::UNAUTHORIZED);
    assert!(refused.body.contains("token is missing or wrong"));
    assert!(
        refused.body.contains("value=\"unlocked the table\""),
        "what was typed is kept"
    );
    let no_token = post_form(&app, &form, None, &[("actor", "ann"), ("reason", "r")]).await;
    assert_eq!(no_token.status, StatusCode::UNAUTHORIZED);
    let read_only = post_form(&f.app(None), &form, None, &fields(TOKEN)).await;
    assert_eq!(read_only.status, StatusCode::FORBIDDEN);
    let evil = post_form(&app, &form, Some("https://evil.example"), &fields(TOKEN)).await;
    assert_eq!(evil.status, StatusCode::FORBIDDEN);
    assert_eq!(delivery_state(&f, p.first).await, Parked, "nothing changed");

    let posted = post_form(
        &app,
        &form,
        Some("http://ops.clinic.example"),
        &fields(TOKEN),
    )
    .await;
    assert_eq!(posted.status, StatusCode::SEE_OTHER, "{}", posted.body);
    let location = posted.headers["location"].to_str().unwrap().to_owned();
    assert_eq!(location, format!("/submissions/{}?done=rerun", p.first));
    assert_eq!(delivery_state(&f, p.first).await, Pending);
    let page = get(&app, &location).await.body;
    assert!(page.contains("Re-run: the result is handed to the host"));
    assert!(page.contains("<td data-field=\"delivery-state\">pending</td>"));
    assert!(page.contains("result_delivery_rerun") && page.contains("unlocked the table"));
    let last = f.store.timeline(p.first).await.unwrap().pop().unwrap();
    assert_eq!(last.actor, Actor::person("ann"));

    let api = format!("/api/deliveries/{}/rerun", p.second_delivery);
    let wrong = post_json(&app, &api, Some("guess"), action("bob", "fixed")).await;
    assert_eq!(wrong.status, StatusCode::UNAUTHORIZED);
    assert_eq!(wrong.headers["www-authenticate"], "Bearer");
    let without = post_json(&app, &api, None, action("bob", "fixed")).await;
    assert_eq!(without.status, StatusCode::UNAUTHORIZED);
    let read_only = post_json(&f.app(None), &api, Some(TOKEN), action("bob", "fixed")).await;
    assert_eq!(read_only.status, StatusCode::FORBIDDEN);
    assert_eq!(
        delivery_state(&f, p.second).await,
        Parked,
        "nothing changed"
    );
    let done = post_json(&app, &api, Some(TOKEN), action("bob", "fixed the schema")).await;
    assert_eq!(done.status, StatusCode::OK, "{}", done.body);
    let done = done.json();
    assert_eq!(done["delivery"]["state"], "pending");
    assert_eq!(done["delivery"]["attempts"], 0);
    assert_eq!(delivery_state(&f, p.second).await, Pending);
    let last = f.store.timeline(p.second).await.unwrap().pop().unwrap();
    assert_eq!(last.actor, Actor::person("bob"));
    assert_eq!(last.reason.as_deref(), Some("fixed the schema"));

    let overview = get(&app, "/").await.body;
    assert!(
        !overview.contains("id=\"parked\""),
        "nothing parked any more"
    );
}

#[tokio::test]
async fn rerun_errors_answer_400_404_or_409_with_the_message() {
    let f = fixture().await;
    let p = park(&f).await;
    let app = f.app(Some(TOKEN));
    let api = |id: &str| format!("/api/deliveries/{id}/rerun");

    let delivered = post_json(
        &app,
        &api(&p.delivered_delivery),
        Some(TOKEN),
        action("a", "b"),
    )
    .await;
    assert_eq!(delivered.status, StatusCode::CONFLICT);
    let message = delivered.json()["error"].as_str().unwrap().to_owned();
    assert_eq!(
        message,
        format!(
            "delivery {} is delivered; only a parked delivery is re-run",
            p.delivered_delivery
        )
    );
    let unknown = SubmissionId::new().to_string();
    let missing = post_json(&app, &api(&unknown), Some(TOKEN), action("a", "b")).await;
    assert_eq!(missing.status, StatusCode::NOT_FOUND);
    assert!(
        missing.json()["error"]
            .as_str()
            .unwrap()
            .contains("not found")
    );
    let bad_id = post_json(&app, &api("nope"), Some(TOKEN), action("a", "b")).await;
    assert_eq!(bad_id.status, StatusCode::BAD_REQUEST);
    let no_reason = post_json(&app, &api(&p.first_delivery), Some(TOKEN), action("a", " ")).await;
    assert_eq!(no_reason.status, StatusCode::BAD_REQUEST);
    assert!(
        no_reason.json()["error"]
            .as_str()
            .unwrap()
            .contains("reason")
    );
    let no_actor = post_json(
        &app,
        &api(&p.first_delivery),
        Some(TOKEN),
        json!({ "reason": "x" }),
    )
    .await;
    assert_eq!(no_actor.status, StatusCode::BAD_REQUEST);
    let request = Request::post(api(&p.first_delivery))
        .header("authorization", format!("Bearer {TOKEN}"))
        .body(Body::from("actor=ann"))
        .unwrap();
    assert_eq!(call(&app, request).await.status, StatusCode::BAD_REQUEST);
    assert_eq!(
        delivery_state(&f, p.first).await,
        liaison::DeliveryState::Parked
    );

    let fields = [("actor", "ann"), ("reason", "again"), ("token", TOKEN)];
    let form = |sid: SubmissionId, did: &str| format!("/submissions/{sid}/deliveries/{did}/rerun");
    let conflict = post_form(
        &app,
        &form(p.delivered, &p.delivered_delivery),
        None,
        &fields,
    )
    .await;
    assert_eq!(conflict.status, StatusCode::CONFLICT);
    assert!(conflict.body.contains("only a parked delivery is re-run"));
    assert!(
        conflict.body.contains("Results to the host"),
        "the page, with the message"
    );
    let elsewhere = post_form(&app, &form(p.delivered, &p.first_delivery), None, &fields).await;
    assert_eq!(
        elsewhere.status,
        StatusCode::NOT_FOUND,
        "another submission's delivery"
    );
    assert!(elsewhere.body.contains("has no delivery"));
    let unknown_form = post_form(&app, &form(p.first, &unknown), None, &fields).await;
    assert_eq!(unknown_form.status, StatusCode::NOT_FOUND);
    let no_submission = post_form(
        &app,
        &form(SubmissionId::new(), &p.first_delivery),
        None,
        &fields,
    )
    .await;
    assert_eq!(no_submission.status, StatusCode::NOT_FOUND);
    let bad_submission = post_form(
        &app,
        &form(p.first, "x").replace(&p.first.to_string(), "nope"),
        None,
        &fields,
    )
    .await;
    assert_eq!(bad_submission.status, StatusCode::BAD_REQUEST);
    let blank = post_form(
        &app,
        &form(p.first, &p.first_delivery),
        None,
        &[("actor", "ann"), ("reason", ""), ("token", TOKEN)],
    )
    .await;
    assert_eq!(blank.status, StatusCode::BAD_REQUEST);
    assert!(blank.body.contains("invalid reason"));
    assert_eq!(
        delivery_state(&f, p.first).await,
        liaison::DeliveryState::Parked,
        "nothing changed"
    );
    assert_eq!(
        delivery_state(&f, p.second).await,
        liaison::DeliveryState::Parked
    );
}

#[tokio::test]
async fn with_a_read_token_the_deliveries_need_it_and_the_page_carries_it() {
    let f = fixture().await;
    let p = park(&f).await;
    let app = router(
        OpsState::new(f.liaison.clone())
            .token(TOKEN)
            .read_token(READ_TOKEN),
    )
    .unwrap();
    let refused = get(&app, "/api/deliveries?state=parked").await;
    assert_eq!(refused.status, StatusCode::UNAUTHORIZED);
    assert!(!refused.body.contains(HANDLER_ERROR));
    let bearer = format!("Bearer {READ_TOKEN}");
    let served = get_with(
        &app,
        "/api/deliveries?state=parked",
        &[("authorization", &bearer)],
    )
    .await;
    assert_eq!(served.status, StatusCode::OK);
    assert_eq!(served.json()["deliveries"].as_array().unwrap().len(), 2);

    let query: String = form_urlencoded::byte_serialize(READ_TOKEN.as_bytes()).collect();
    let overview = get(&app, &format!("/?token={query}")).await.body;
    let link = format!("href=\"/submissions/{}?token={query}#deliveries\"", p.first);
    assert!(
        overview.contains(&link),
        "the token before the fragment: {link}"
    );
    let detail = get(&app, &format!("/submissions/{}?token={query}", p.first))
        .await
        .body;
    let target = format!(
        "/submissions/{}/deliveries/{}/rerun?token={query}",
        p.first, p.first_delivery
    );
    assert!(detail.contains(&format!("action=\"{target}\"")), "{detail}");
    let fields = [("actor", "ann"), ("reason", "fixed"), ("token", TOKEN)];
    let without = format!(
        "/submissions/{}/deliveries/{}/rerun",
        p.first, p.first_delivery
    );
    let refused = post_form(&app, &without, None, &fields).await;
    assert_eq!(
        refused.status,
        StatusCode::UNAUTHORIZED,
        "the form post needs the read token"
    );
    assert_eq!(
        delivery_state(&f, p.first).await,
        liaison::DeliveryState::Parked
    );
    let posted = post_form(&app, &target, None, &fields).await;
    assert_eq!(posted.status, StatusCode::SEE_OTHER, "{}", posted.body);
    assert_eq!(
        posted.headers["location"],
        format!("/submissions/{}?done=rerun&token={query}", p.first).as_str()
    );
    assert_eq!(
        delivery_state(&f, p.first).await,
        liaison::DeliveryState::Pending
    );
}

#[tokio::test]
async fn text_from_data_is_escaped_in_html() {
    let f = fixture().await;
    let hostile = "<script>alert(1)</script>";
    let key = "<img src=x onerror=alert(2)>";
    drive_new_to(&f.store, worth("clinic", key, 1), SubmissionState::Stuck).await;
    let app = f.app(Some(TOKEN));
    let resolve = json!({ "actor": "\"eve\" <x>", "reason": hostile, "outcome": "failed" });
    let path = format!("/api/submissions/{}/resolve", f.stuck);
    assert_eq!(
        post_json(&app, &path, Some(TOKEN), resolve).await.status,
        StatusCode::OK
    );

    let page = get(&app, &format!("/submissions/{}", f.stuck)).await.body;
    assert!(!page.contains(hostile) && !page.contains("<x>"));
    assert!(page.contains("&lt;script&gt;alert(1)&lt;/script&gt;"));
    assert!(page.contains("&quot;eve&quot; &lt;x&gt;"));
    let overview = get(&app, "/").await.body;
    assert!(!overview.contains(key) && overview.contains("&lt;img src=x onerror=alert(2)&gt;"));

    let echoed = post_form(
        &app,
        &format!("/submissions/{}/cancel", f.queued),
        None,
        &[
            ("actor", "\"><script>x</script>"),
            ("reason", hostile),
            ("token", "wrong"),
        ],
    )
    .await;
    assert_eq!(echoed.status, StatusCode::UNAUTHORIZED);
    assert!(!echoed.body.contains("<script>"));
    assert!(
        echoed
            .body
            .contains("value=\"&quot;&gt;&lt;script&gt;x&lt;/script&gt;\"")
    );
}

#[tokio::test]
async fn metrics_are_prometheus_text() {
    let f = fixture().await;
    let answer = get(&f.app(None), "/metrics").await;
    assert_eq!(answer.status, StatusCode::OK);
    let content_type = answer
        .headers
        .get("content-type")
        .unwrap()
        .to_str()
        .unwrap();
    assert!(
        content_type.starts_with("application/openmetrics-text"),
        "{content_type}"
    );
    assert_eq!(answer.body.lines().last(), Some("# EOF"));
    assert!(
        answer
            .body
            .contains(r#"liaison_submissions{partner="lab",state="stuck"} 1"#),
        "{}",
        answer.body
    );
    for line in answer.body.lines() {
        if let Some(meta) = line.strip_prefix("# ") {
            let kind = meta.split(' ').next().unwrap();
            assert!(["HELP", "TYPE", "UNIT", "EOF"].contains(&kind), "{line}");
            continue;
        }
        let (series, value) = line.rsplit_once(' ').expect("a sample has a value");
        let name = series.split('{').next().unwrap();
        assert!(name.starts_with("liaison_"), "{line}");
        assert!(
            name.chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':'),
            "{line}"
        );
        assert!(value.parse::<f64>().is_ok(), "{line}");
        if let Some(labels) = series.strip_prefix(name) {
            assert!(
                labels.is_empty() || (labels.starts_with('{') && labels.ends_with('}')),
                "{line}"
            );
        }
    }
}

#[tokio::test]
async fn a_short_token_is_refused_when_the_router_is_built() {
    let f = fixture().await;
    let state = |token: &str| OpsState::new(f.liaison.clone()).token(token);
    let refused = router(state("s3cret")).unwrap_err();
    assert!(refused.is_invalid_input(), "{refused:?}");
    assert!(router(state(&"x".repeat(15))).is_err());
    assert!(router(state(&"x".repeat(16))).is_ok());
    assert!(router(state(TOKEN)).is_ok());
    // No token, or an empty one: read-only, as before.
    assert!(router(OpsState::new(f.liaison.clone())).is_ok());
    assert!(router(state("")).is_ok());
}

const READ_TOKEN: &str = "a separate read-only secret";

async fn get_with(app: &Router, uri: &str, headers: &[(&str, &str)]) -> Answer {
    let mut request = Request::get(uri);
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    call(app, request.body(Body::empty()).unwrap()).await
}

#[tokio::test]
async fn reads_need_the_read_token_when_one_is_set() {
    let f = fixture().await;
    let app = router(
        OpsState::new(f.liaison.clone())
            .token(TOKEN)
            .read_token(READ_TOKEN),
    )
    .unwrap();
    let detail = format!("/submissions/{}", f.stuck);
    let api_detail = format!("/api/submissions/{}", f.stuck);
    let reads = [
        "/",
        detail.as_str(),
        "/api/health",
        "/api/alerts",
        "/api/submissions",
        api_detail.as_str(),
        "/api/callbacks",
        "/metrics",
    ];
    let bearer = |t: &str| format!("Bearer {t}");
    for uri in reads {
        // Missing, wrong, or the action token instead: 401 and nothing read.
        for headers in [
            vec![],
            vec![("authorization", bearer("wrong token, long enough"))],
            vec![("authorization", bearer(TOKEN))],
        ] {
            let headers: Vec<(&str, &str)> =
                headers.iter().map(|(n, v)| (*n, v.as_str())).collect();
            let refused = get_with(&app, uri, &headers).await;
            assert_eq!(
                refused.status,
                StatusCode::UNAUTHORIZED,
                "{uri} {headers:?}"
            );
            for secret in ["lab-stuck-1", "bank-failed-1", "shop-dead-1", "liaison_"] {
                assert!(!refused.body.contains(secret), "{uri}: {}", refused.body);
            }
        }
        let wrong_query = if uri.contains('?') { "&" } else { "?" };
        let refused = get(&app, &format!("{uri}{wrong_query}token=wrong")).await;
        assert_eq!(refused.status, StatusCode::UNAUTHORIZED, "{uri}");
        // The right token, as a header or (for a browser) in the query.
        let served = get_with(&app, uri, &[("authorization", &bearer(READ_TOKEN))]).await;
        assert_eq!(served.status, StatusCode::OK, "{uri}: {}", served.body);
        let query: String = form_urlencoded::byte_serialize(READ_TOKEN.as_bytes()).collect();
        let served = get(&app, &format!("{uri}?token={query}")).await;
        assert_eq!(served.status, StatusCode::OK, "{uri}: {}", served.body);
    }
    let api = get(&app, "/api/health").await;
    assert_eq!(api.headers["www-authenticate"], "Bearer");
    assert!(api.json()["error"].is_string());

    // The page carries the token in its own links and forms.
    let query: String = form_urlencoded::byte_serialize(READ_TOKEN.as_bytes()).collect();
    let overview = get(&app, &format!("/?token={query}")).await;
    assert!(
        overview
            .body
            .contains(&format!("/submissions/{}?token={query}", f.stuck)),
        "{}",
        overview.body
    );
    let page = get(&app, &format!("{detail}?token={query}")).await;
    assert!(
        page.body.contains(&format!(
            "action=\"/submissions/{}/cancel?token={query}\"",
            f.stuck
        )),
        "{}",
        page.body
    );
    // So do its error pages, but never to a request without the token.
    let missing = get(&app, &format!("/submissions/not-an-id?token={query}")).await;
    assert!(missing.status.is_client_error());
    assert!(
        missing.body.contains(&format!("href=\"/?token={query}\"")),
        "{}",
        missing.body
    );
    let refused = get(&app, "/submissions/not-an-id?token=wrong").await;
    assert!(!refused.body.contains(&query), "{}", refused.body);
    // A form post needs the read token as well (its refusal would show the
    // page), and its redirect keeps it.
    let fields = [("actor", "ann"), ("reason", "duplicate"), ("token", TOKEN)];
    let cancel = format!("/submissions/{}/cancel", f.stuck);
    let refused = post_form(&app, &cancel, None, &[("actor", "ann"), ("token", "nope")]).await;
    assert_eq!(refused.status, StatusCode::UNAUTHORIZED);
    assert!(!refused.body.contains("lab-stuck-1"), "{}", refused.body);
    let done = post_form(&app, &format!("{cancel}?token={query}"), None, &fields).await;
    assert_eq!(done.status, StatusCode::SEE_OTHER, "{}", done.body);
    assert_eq!(
        done.headers["location"],
        format!("/submissions/{}?done=cancel&token={query}", f.stuck).as_str()
    );
    // JSON actions carry the action token alone.
    let replay = post_json(
        &app,
        &format!("/api/submissions/{}/replay", f.failed),
        Some(TOKEN),
        action("ann", "fixed"),
    )
    .await;
    assert_eq!(replay.status, StatusCode::OK, "{}", replay.body);

    // Without a read token, reads stay open.
    assert_eq!(
        get(&f.app(None), "/api/health").await.status,
        StatusCode::OK
    );
    // A short read token is refused like a short action token.
    let short = OpsState::new(f.liaison.clone()).read_token("s3cret");
    assert!(router(short).unwrap_err().is_invalid_input());
}

#[tokio::test]
async fn requests_for_other_hosts_are_refused_with_421() {
    let f = fixture().await;
    let app = router(
        OpsState::new(f.liaison.clone())
            .token(TOKEN)
            .allowed_hosts(["127.0.0.1:8081"]),
    )
    .unwrap();
    // The issue's own: a DNS-rebound page asks for the submissions.
    let evil = get_with(&app, "/api/submissions", &[("host", "evil.example")]).await;
    assert_eq!(evil.status, StatusCode::MISDIRECTED_REQUEST);
    assert!(!evil.body.contains("lab-stuck-1"), "{}", evil.body);
    let served = get_with(&app, "/api/submissions", &[("host", "127.0.0.1:8081")]).await;
    assert_eq!(served.status, StatusCode::OK);
    assert!(served.body.contains("lab-stuck-1"), "{}", served.body);
    // Every route, actions included; no Host at all is refused too.
    let page = get_with(&app, "/", &[("host", "evil.example:8081")]).await;
    assert_eq!(page.status, StatusCode::MISDIRECTED_REQUEST);
    assert_eq!(
        get(&app, "/metrics").await.status,
        StatusCode::MISDIRECTED_REQUEST
    );
    let request = Request::post(format!("/api/submissions/{}/cancel", f.queued))
        .header("host", "evil.example")
        .header("authorization", format!("Bearer {TOKEN}"))
        .header("content-type", "application/json")
        .body(Body::from(action("ann", "dup").to_string()))
        .unwrap();
    assert_eq!(
        call(&app, request).await.status,
        StatusCode::MISDIRECTED_REQUEST
    );
    assert_eq!(f.state(f.queued).await, SubmissionState::Queued);
    // Unset: no check. An empty list is refused when the router is built.
    let open = get_with(
        &f.app(None),
        "/api/submissions",
        &[("host", "evil.example")],
    )
    .await;
    assert_eq!(open.status, StatusCode::OK);
    let empty = OpsState::new(f.liaison.clone()).allowed_hosts(Vec::<String>::new());
    assert!(router(empty).unwrap_err().is_invalid_input());
}

#[tokio::test]
async fn the_overview_lists_the_engines_and_escapes_what_they_recorded() {
    let f = fixture().await;
    let page = get(&f.app(None), "/").await.body;
    assert!(page.contains("Engines (0 live)"), "none yet");
    assert!(page.contains("No engine has recorded itself"));

    let mut live = liaison::store::Instance::this_process(
        vec!["lab".into(), "<b>bank</b>".into()],
        Duration::from_secs(300),
    );
    live.host = "web-1<script>alert(1)</script>".into();
    f.store.beat(&live).await.unwrap();
    let mut gone =
        liaison::store::Instance::this_process(vec!["post".into()], Duration::from_secs(5));
    gone.id = "gone-\"one\"".into();
    gone.last_beat_at = chrono::Utc::now() - chrono::Duration::hours(1);
    f.store.beat(&gone).await.unwrap();

    let page = get(&f.app(None), "/").await.body;
    assert!(page.contains("Engines (1 live)"), "{page}");
    let table = &page[page.find("id=\"engines-list\"").unwrap()..];
    let table = &table[..table.find("</table>").unwrap()];
    assert!(
        table.contains("web-1&lt;script&gt;alert(1)&lt;/script&gt;"),
        "{table}"
    );
    assert!(!table.contains("<script>") && !page.contains("<b>bank</b>"));
    assert!(table.contains("lab, &lt;b&gt;bank&lt;/b&gt;"), "{table}");
    assert!(
        table.contains("data-instance=\"gone-&quot;one&quot;\""),
        "{table}"
    );
    assert_eq!(table.matches(">live<").count(), 1, "{table}");
    assert_eq!(table.matches(">gone<").count(), 1, "{table}");
    // post's queued work has waited for an hour's worth of its engine's beats.
    assert!(
        page.contains("Engines serving it</dt><dd>none live (last beat"),
        "{page}"
    );
}

#[tokio::test]
async fn a_quarantined_callback_is_dismissed_through_the_api_with_the_same_checks() {
    use liaison::callback::Disposition;
    let f = fixture().await;
    let store_one = |body: &'static [u8]| {
        let store = f.store.clone();
        async move {
            store
                .record_callback(NewCallback::new("lab", body.to_vec()).body_hash("00"))
                .await
                .unwrap()
        }
    };
    let malformed = store_one(b"<not json/>").await;
    f.store
        .settle_callback(
            malformed,
            Settlement::Malformed {
                reason: "expected JSON".into(),
            },
        )
        .await
        .unwrap();
    let too_large = f
        .store
        .record_callback(
            NewCallback::new("lab", Vec::new())
                .without_body()
                .size(10_000_000)
                .disposition(Disposition::TooLarge, None),
        )
        .await
        .unwrap();
    let api = |id: &str| format!("/api/callbacks/{id}/dismiss");
    let why = action("ann", "a test message from the partner's sandbox");

    // The same gate as the other actions: token and origin.
    let read_only = f.app(None);
    let refused = post_json(&read_only, &api(&malformed.to_string()), None, why.clone()).await;
    assert_eq!(refused.status, StatusCode::FORBIDDEN);
    let app = f.app(Some(TOKEN));
    let wrong = post_json(
        &app,
        &api(&malformed.to_string()),
        Some("wrong token!!"),
        why.clone(),
    )
    .await;
    assert_eq!(wrong.status, StatusCode::UNAUTHORIZED);
    let cross = Request::post(api(&malformed.to_string()))
        .header("authorization", format!("Bearer {TOKEN}"))
        .header("origin", "http://evil.example")
        .header("host", "ops.clinic.example")
        .body(Body::from(why.to_string()))
        .unwrap();
    assert_eq!(call(&app, cross).await.status, StatusCode::FORBIDDEN);
    // Bad input, unknown ids, callbacks outside the quarantine.
    let no_reason = post_json(
        &app,
        &api(&malformed.to_string()),
        Some(TOKEN),
        action("ann", " "),
    )
    .await;
    assert_eq!(no_reason.status, StatusCode::BAD_REQUEST);
    assert!(
        no_reason.json()["error"]
            .as_str()
            .unwrap()
            .contains("reason")
    );
    let bad_id = post_json(&app, &api("nope"), Some(TOKEN), why.clone()).await;
    assert_eq!(bad_id.status, StatusCode::BAD_REQUEST);
    let unknown = "0190a7b2-58f1-7c2e-9a35-5d0e8b1f2c3d";
    let missing = post_json(&app, &api(unknown), Some(TOKEN), why.clone()).await;
    assert_eq!(missing.status, StatusCode::NOT_FOUND);
    let outside = post_json(&app, &api(&too_large.to_string()), Some(TOKEN), why.clone()).await;
    assert_eq!(outside.status, StatusCode::CONFLICT);
    assert!(
        outside.json()["error"]
            .as_str()
            .unwrap()
            .starts_with(&format!(
                "callback {too_large} is too_large; only a quarantined callback"
            )),
        "{}",
        outside.body
    );
    assert_eq!(
        f.store.callback(malformed).await.unwrap().disposition,
        Disposition::Malformed,
        "nothing changed by a refusal"
    );

    let done = post_json(&app, &api(&malformed.to_string()), Some(TOKEN), why.clone()).await;
    assert_eq!(done.status, StatusCode::OK, "{}", done.body);
    let callback = &done.json()["callback"];
    assert_eq!(callback["disposition"], "dismissed");
    assert_eq!(callback["quarantined"], false);
    assert_eq!(callback["dismissal"]["actor"], "ann");
    assert_eq!(callback["dismissal"]["from"], "malformed");
    assert_eq!(
        callback["dismissal"]["reason"],
        "a test message from the partner's sandbox"
    );
    assert!(callback.get("body").is_none());
    let quarantined = get(&app, "/api/callbacks?quarantined=true").await.json();
    assert_eq!(quarantined["callbacks"].as_array().unwrap().len(), 0);
    let again = post_json(&app, &api(&malformed.to_string()), Some(TOKEN), why).await;
    assert_eq!(again.status, StatusCode::CONFLICT);
}

/// Two currencies and business deadlines: the overview shows value at risk
/// per currency (never added together), by kind and by age, the partner's
/// deadlines, and the nearest business deadlines (escaped, linked); a
/// submission's page shows its currency and deadline.
#[tokio::test]
async fn the_overview_shows_value_per_currency_and_the_nearest_business_deadlines() {
    use SubmissionState::*;
    let (_dir, store) = store();
    let due = chrono::Utc::now() + chrono::Duration::hours(3);
    let claim = |key: &str| {
        NewSubmission::new("clinic", "claim.submit", json!({ "claim": key })).idempotency_key(key)
    };
    let (eur, _) = drive_new_to(
        &store,
        claim("C-<1>")
            .business_value_in(25_000, "EUR")
            .business_deadline(due),
        DeadLettered,
    )
    .await;
    drive_new_to(&store, claim("C-2").business_value_in(1_000, "USD"), Failed).await;
    drive_new_to(
        &store,
        claim("C-3").business_deadline(due + chrono::Duration::hours(1)),
        Queued,
    )
    .await;
    let liaison = Liaison::builder(store.clone()).build().unwrap();
    let mut state = OpsState::new(liaison);
    state.token = None;
    let app = router(state).unwrap();
    let html = get(&app, "/").await.body;
    assert!(
        html.contains("Value at risk: <strong>EUR 250.00 + USD 10.00</strong> in 2 submission(s)"),
        "{html}"
    );
    assert!(html.contains("<bdi>claim.submit</bdi>: EUR 250.00 + USD 10.00 in 2 submissions"));
    assert!(html.contains("&lt; 1 h: EUR 250.00 + USD 10.00 in 2 submissions"));
    assert!(
        html.contains(
            "<dd data-field=\"deadlines\"><bdi>2 submission(s) will miss their business deadline within 24 h (EUR 250.00)</bdi></dd>"
        ),
        "the partner's deadlines, the unvalued C-3 counted too: {html}"
    );
    let list = &html[html
        .find("Open work by business deadline")
        .expect("the list")..];
    let first = list.find("C-&lt;1&gt;").expect("escaped key");
    let second = list.find("C-3").expect("C-3 listed");
    assert!(first < second, "nearest first");
    assert!(
        !list[..list.find("</table>").unwrap()].contains("C-2"),
        "no deadline, not listed"
    );
    assert!(list.contains(&format!("href=\"/submissions/{eur}\"")));
    let page = get(&app, &format!("/submissions/{eur}")).await.body;
    assert!(page.contains("EUR 250.00"), "{page}");
    assert!(page.contains("data-field=\"business_deadline\""), "{page}");
}
