//! Silence: engine instances beat into the store, and a partner whose every
//! engine died turns `Down`; expected traffic makes a quiet partner an
//! alert. Each case runs on both stores.

use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Datelike, Utc};
use liaison::engine::{EngineSettings, ExpectedTraffic};
use liaison::ops::alerts::{AlertEvent, ChannelSink, ProblemClass};
use liaison::ops::{HealthReport, PartnerHealth, Verdict};
use liaison::store::{AttemptReport, Instance, NewCallback, StateChange, StatsQuery};
use liaison::{
    AttemptContext, AttemptOutcome, Liaison, Outcome, Partner, PartnerAdapter, PartnerError,
    Submission, SubmissionState, SubmitOutcome,
};

use super::harness::{Harness, Store, claim_one, submission};
use super::health_stats::ms;

/// Never answers: every attempt runs into its timeout.
#[derive(Debug)]
struct Hangs;

#[async_trait]
impl PartnerAdapter for Hangs {
    async fn submit(
        &self,
        _: &AttemptContext,
        _: &Submission,
    ) -> Result<SubmitOutcome, PartnerError> {
        std::future::pending().await
    }
}

/// Every submission succeeds at once.
#[derive(Debug)]
struct Succeeds;

#[async_trait]
impl PartnerAdapter for Succeeds {
    async fn submit(
        &self,
        _: &AttemptContext,
        _: &Submission,
    ) -> Result<SubmitOutcome, PartnerError> {
        Ok(SubmitOutcome::Completed(Outcome::succeeded()))
    }
}

const BEAT: Duration = Duration::from_millis(100);

/// A fast engine: beats every 100 ms, one attempt at a time, attempts cut
/// off after 200 ms.
fn engine(store: Store) -> Liaison {
    Liaison::builder_arc(store)
        .partner(
            Partner::new("lab", Hangs)
                .concurrency(1)
                .attempt_timeout(Duration::from_millis(200)),
        )
        .settings(
            EngineSettings::default()
                .heartbeat_interval(BEAT)
                .poll_interval(Duration::from_millis(20))
                .lease_margin(Duration::from_millis(100)),
        )
        .build()
        .unwrap()
}

/// Health as the CLI computes it: a hub with no partners on the store.
async fn health(store: &Store) -> HealthReport {
    Liaison::builder_arc(store.clone())
        .build()
        .unwrap()
        .health(Duration::from_secs(3600))
        .await
        .unwrap()
}

fn partner<'a>(report: &'a HealthReport, name: &str) -> &'a PartnerHealth {
    report
        .partners
        .iter()
        .find(|p| p.partner == name)
        .unwrap_or_else(|| panic!("{name} is not in the report: {report:#?}"))
}

/// Poll health until `done` holds (at most 30 s, generous for a loaded
/// machine); the report that satisfied it.
async fn until(
    h: &Harness,
    store: &Store,
    what: &str,
    done: impl Fn(&HealthReport) -> bool,
) -> HealthReport {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let report = health(store).await;
        if done(&report) {
            return report;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{}: {what} did not happen; last report: {report:#?}",
            h.name()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn instance(id: &str, partners: &[&str], last_beat: DateTime<Utc>) -> Instance {
    let mut i = Instance::this_process(
        partners.iter().map(|p| p.to_string()).collect(),
        Duration::from_secs(5),
    );
    i.id = id.into();
    i.started_at = ms(last_beat - chrono::Duration::minutes(1));
    i.last_beat_at = ms(last_beat);
    i
}

/// Enqueue `partner`'s `key` and finish it in `state` (succeeded, failed
/// or dead-lettered) through one attempt.
async fn finish(store: &Store, partner: &str, key: &str, state: SubmissionState) {
    store.enqueue(submission(partner, key)).await.unwrap();
    let lease = claim_one(store, partner).await;
    let outcome = match state {
        SubmissionState::Succeeded => AttemptOutcome::Succeeded,
        SubmissionState::Failed => AttemptOutcome::Failed,
        _ => AttemptOutcome::Permanent,
    };
    store
        .complete(&lease, AttemptReport::new(outcome), StateChange::to(state))
        .await
        .unwrap();
}

pub async fn instances_beat_stop_and_age_out(h: &Harness) {
    let (one, two) = (h.store().await, h.store().await);
    let now = ms(Utc::now());
    let a = instance("a", &["lab", "bank"], now - chrono::Duration::seconds(2));
    let b = instance("b", &["lab"], now - chrono::Duration::seconds(1));
    one.beat(&a).await.unwrap();
    two.beat(&b).await.unwrap();
    // Shared: each store instance sees both, the latest beat first.
    for store in [&one, &two] {
        assert_eq!(
            store.instances().await.unwrap(),
            [b.clone(), a.clone()],
            "{}",
            h.name()
        );
    }
    // A beat moves the last beat (and may change the partners).
    let mut a2 = a.clone();
    a2.last_beat_at = now;
    a2.partners = vec!["lab".into()];
    one.beat(&a2).await.unwrap();
    assert_eq!(two.instances().await.unwrap()[0], a2, "{}", h.name());

    // A stop is its last beat, and no later beat revives it.
    let stop = now + chrono::Duration::seconds(1);
    two.stop_instance("a", stop).await.unwrap();
    let mut a3 = a2.clone();
    a3.last_beat_at = now + chrono::Duration::seconds(5);
    one.beat(&a3).await.unwrap();
    let stopped = one
        .instances()
        .await
        .unwrap()
        .into_iter()
        .find(|i| i.id == "a")
        .unwrap();
    assert_eq!(stopped.stopped_at, Some(stop), "{}", h.name());
    assert_eq!(stopped.last_beat_at, stop, "{}", h.name());

    // Pruning removes what beat before the cutoff; each partner keeps the
    // last beat of its engines that went.
    let old = now - chrono::Duration::days(2);
    one.beat(&instance("old-1", &["lab"], old)).await.unwrap();
    one.beat(&instance(
        "old-2",
        &["lab", "shop"],
        old + chrono::Duration::hours(1),
    ))
    .await
    .unwrap();
    let removed = two
        .prune_instances(now - chrono::Duration::days(1))
        .await
        .unwrap();
    assert_eq!(removed, 2, "{}", h.name());
    let ids: Vec<String> = one
        .instances()
        .await
        .unwrap()
        .into_iter()
        .map(|i| i.id)
        .collect();
    assert_eq!(ids, ["a", "b"], "{}", h.name());
    let stats = one
        .stats(&StatsQuery::new(Duration::from_secs(3600)).partners(["lab", "shop", "bank"]))
        .await
        .unwrap();
    let served = |name: &str| {
        stats
            .iter()
            .find(|s| s.partner == name)
            .unwrap()
            .last_served_at
    };
    assert_eq!(
        served("lab"),
        Some(old + chrono::Duration::hours(1)),
        "{}",
        h.name()
    );
    assert_eq!(
        served("shop"),
        Some(old + chrono::Duration::hours(1)),
        "{}",
        h.name()
    );
    assert_eq!(served("bank"), None, "{}", h.name());
    // A later prune keeps the latest, never moves it back.
    one.beat(&instance(
        "older",
        &["lab"],
        old - chrono::Duration::days(1),
    ))
    .await
    .unwrap();
    one.prune_instances(now - chrono::Duration::days(1))
        .await
        .unwrap();
    let stats = one
        .stats(&StatsQuery::new(Duration::from_secs(3600)).partner("lab"))
        .await
        .unwrap();
    assert_eq!(
        stats[0].last_served_at,
        Some(old + chrono::Duration::hours(1)),
        "{}",
        h.name()
    );
}

pub async fn expected_traffic_is_recorded_and_counted(h: &Harness) {
    let (one, two) = (h.store().await, h.store().await);
    let office = ExpectedTraffic::finished(2)
        .per(Duration::from_secs(3600))
        .weekdays(chrono::Weekday::Mon..=chrono::Weekday::Fri)
        .hours(8, 18)
        .time_zone("Europe/Berlin");
    one.set_expected_traffic("lab", Some(&office))
        .await
        .unwrap();
    one.set_expected_traffic("bank", Some(&ExpectedTraffic::callbacks(1)))
        .await
        .unwrap();
    assert_eq!(
        two.expected_traffic().await.unwrap(),
        [
            ("bank".to_owned(), ExpectedTraffic::callbacks(1)),
            ("lab".to_owned(), office.clone())
        ],
        "{}",
        h.name()
    );
    // Bad input is refused, and nothing changes.
    for bad in [
        ExpectedTraffic::finished(0),
        ExpectedTraffic::callbacks(1).time_zone("Moon/Base"),
    ] {
        let err = one
            .set_expected_traffic("bank", Some(&bad))
            .await
            .unwrap_err();
        assert!(err.is_invalid_input(), "{}: {err:?}", h.name());
    }
    one.set_expected_traffic("bank", None).await.unwrap();
    assert_eq!(
        two.expected_traffic().await.unwrap(),
        [("lab".to_owned(), office.clone())],
        "{}",
        h.name()
    );

    // Finished: succeeded and failed count, up to the expected least.
    for (key, state) in [
        ("ok", SubmissionState::Succeeded),
        ("refused", SubmissionState::DeadLettered),
    ] {
        finish(&one, "lab", key, state).await;
        let stats = two
            .stats(
                &StatsQuery::new(Duration::from_secs(3600))
                    .at(two.now() + chrono::Duration::milliseconds(1))
                    .partner("lab")
                    .expected_traffic("lab", office.clone()),
            )
            .await
            .unwrap();
        assert_eq!(stats[0].traffic, Some(1), "{}: after {state:?}", h.name());
    }
    finish(&one, "shop", "failed", SubmissionState::Failed).await;
    for key in ["more-1", "more-2"] {
        let id = one
            .enqueue(submission("lab", key))
            .await
            .unwrap()
            .submission
            .id;
        one.transition(id, StateChange::to(SubmissionState::Cancelled))
            .await
            .unwrap();
    }
    let count = |partner: &'static str, expected: ExpectedTraffic| {
        let two = two.clone();
        async move {
            // The window ends before its `at`: read just after now, or what
            // finished in this very millisecond is left out.
            two.stats(
                &StatsQuery::new(Duration::from_secs(3600))
                    .at(two.now() + chrono::Duration::milliseconds(1))
                    .partner(partner)
                    .expected_traffic(partner, expected),
            )
            .await
            .unwrap()[0]
                .traffic
        }
    };
    assert_eq!(
        count("shop", ExpectedTraffic::finished(5)).await,
        Some(1),
        "{}",
        h.name()
    );
    assert_eq!(
        count("lab", ExpectedTraffic::finished(5)).await,
        Some(1),
        "{}: cancelled ones do not count",
        h.name()
    );
    finish(&one, "shop", "ok", SubmissionState::Succeeded).await;
    assert_eq!(
        count("shop", ExpectedTraffic::finished(1)).await,
        Some(1),
        "{}: counted up to the least",
        h.name()
    );
    assert_eq!(
        count("shop", ExpectedTraffic::finished(9)).await,
        Some(2),
        "{}",
        h.name()
    );
    // Outside the period: nothing.
    let later = two
        .stats(
            &StatsQuery::new(Duration::from_secs(3600))
                .at(Utc::now() + chrono::Duration::hours(2))
                .partner("shop")
                .expected_traffic("shop", ExpectedTraffic::finished(9)),
        )
        .await
        .unwrap();
    assert_eq!(later[0].traffic, Some(0), "{}", h.name());
    // No expectation asked for: not counted.
    let plain = two
        .stats(&StatsQuery::new(Duration::from_secs(3600)).partner("shop"))
        .await
        .unwrap();
    assert_eq!(plain[0].traffic, None, "{}", h.name());

    // Callbacks: every one that arrived, but not those failing verification.
    let mut ids = Vec::new();
    for body in ["one", "two"] {
        ids.push(
            one.record_callback(NewCallback::new("post", body.as_bytes()))
                .await
                .unwrap(),
        );
    }
    one.settle_callback(
        ids[0],
        liaison::store::Settlement::Rejected {
            reason: "bad signature".into(),
            metadata_only: false,
        },
    )
    .await
    .unwrap();
    assert_eq!(
        count("post", ExpectedTraffic::callbacks(9)).await,
        Some(1),
        "{}",
        h.name()
    );
}

pub async fn due_work_is_dated_from_the_queue_and_from_expired_leases(h: &Harness) {
    let store = h.store().await;
    let later = ms(Utc::now() + chrono::Duration::hours(1));
    store
        .enqueue(submission("lab", "later").not_before(later))
        .await
        .unwrap();
    let due = |store: Store| async move {
        store
            .stats(&StatsQuery::new(Duration::from_secs(3600)).partner("lab"))
            .await
            .unwrap()[0]
            .oldest_due_at
    };
    assert_eq!(due(store.clone()).await, Some(later), "{}", h.name());
    // The store dates by its own clock (on PostgreSQL the database's, as
    // measured): the host's may run a few milliseconds ahead of it.
    let before = ms(store.now());
    store.enqueue(submission("lab", "now")).await.unwrap();
    let queued = due(store.clone()).await.unwrap();
    assert!(queued >= before && queued < later, "{}: {queued}", h.name());
    // In flight: due again when its lease ends.
    let lease = claim_one(&store, "lab").await;
    assert_eq!(
        due(store.clone()).await,
        Some(later.min(ms(lease.expires_at))),
        "{}",
        h.name()
    );
    let empty = store
        .stats(&StatsQuery::new(Duration::from_secs(3600)).partner("idle"))
        .await
        .unwrap();
    assert_eq!(empty[0].oldest_due_at, None, "{}", h.name());
}

/// Run an engine for "lab" on `store` in a runtime of its own (as another
/// process would), until told to die: then its runtime is dropped with
/// every task in it, so nothing of its graceful shutdown runs, as when the
/// process is killed.
fn run_then_kill(
    store: Store,
    started: std::sync::mpsc::Sender<String>,
    die: std::sync::mpsc::Receiver<()>,
) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let handle = rt.block_on(async {
        let liaison = engine(store);
        for i in 0..4 {
            liaison
                .enqueue(submission("lab", &format!("due-{i}")))
                .await
                .unwrap();
        }
        liaison.start()
    });
    let _ = started.send(handle.instance_id().to_owned());
    let _ = die.recv();
    std::mem::forget(handle);
    rt.shutdown_background();
}

pub async fn a_partner_whose_every_engine_is_killed_turns_down_within_three_beats(h: &Harness) {
    let observer = h.store().await;
    let doomed = h.store().await;
    let (started_tx, started) = std::sync::mpsc::channel();
    let (die, die_rx) = std::sync::mpsc::channel();
    let engine_thread = std::thread::spawn(move || run_then_kill(doomed, started_tx, die_rx));
    let id = tokio::task::spawn_blocking(move || started.recv())
        .await
        .unwrap()
        .expect("the engine started");
    // Alive: it beats, and while it does the partner is not down, though
    // its queued work has waited far longer than three beats (one attempt
    // at a time, each hanging until cut off).
    let alive = until(h, &observer, "five beats", |r| {
        r.instances.iter().any(|i| {
            i.instance.id == id
                && i.live
                && i.instance.last_beat_at - i.instance.started_at
                    >= chrono::Duration::milliseconds(500)
        })
    })
    .await;
    let lab = partner(&alive, "lab");
    assert_ne!(lab.verdict, Verdict::Down, "{}: {lab:#?}", h.name());
    assert_eq!(lab.dispatcher.live_instances, 1, "{}", h.name());
    assert!(!lab.dispatcher.missing, "{}", h.name());
    assert!(
        lab.by_state.contains_key(&SubmissionState::Queued),
        "{}: work waits: {lab:#?}",
        h.name()
    );

    die.send(()).unwrap();
    tokio::task::spawn_blocking(move || engine_thread.join())
        .await
        .unwrap()
        .expect("the engine's thread ended");
    let down = until(h, &observer, "Down", |r| {
        partner(r, "lab").verdict == Verdict::Down
    })
    .await;
    let lab = partner(&down, "lab");
    let dead = down.instances.iter().find(|i| i.instance.id == id).unwrap();
    assert!(!dead.live, "{}", h.name());
    assert_eq!(
        dead.instance.stopped_at,
        None,
        "{}: killed, not stopped",
        h.name()
    );
    let since = dead
        .instance
        .last_beat_at
        .format("%Y-%m-%d %H:%M:%S UTC")
        .to_string();
    assert!(
        lab.reasons.contains(&format!(
            "no dispatcher is running for lab since {since}: work is due and no engine sends it"
        )),
        "{}: {:?}",
        h.name(),
        lab.reasons
    );
    assert!(lab.dispatcher.missing, "{}", h.name());
    assert_eq!(
        lab.dispatcher.last_beat_at,
        Some(dead.instance.last_beat_at),
        "{}",
        h.name()
    );
    assert!(
        down.reasons
            .iter()
            .any(|r| r.starts_with("lab: no dispatcher is running")),
        "{}: {:?}",
        h.name(),
        down.reasons
    );

    // A new engine brings it back.
    let again = engine(observer.clone());
    let handle = again.start();
    let back = until(h, &observer, "a live engine again", |r| {
        partner(r, "lab").dispatcher.live_instances == 1
    })
    .await;
    assert_ne!(partner(&back, "lab").verdict, Verdict::Down, "{}", h.name());
    handle.shutdown(Duration::from_millis(10)).await.unwrap();
}

pub async fn a_stopped_engine_serves_nothing_and_stale_instances_age_out(h: &Harness) {
    let store = h.store().await;
    // An instance gone for two days, left by a process long dead.
    let old = ms(Utc::now() - chrono::Duration::days(2));
    store
        .beat(&instance("long-gone", &["lab"], old))
        .await
        .unwrap();
    let liaison = engine(store.clone());
    liaison.enqueue(submission("lab", "waits")).await.unwrap();
    let handle = liaison.start();
    let id = handle.instance_id().to_owned();
    // Starting prunes it; the partner keeps its last beat.
    let report = until(h, &store, "the stale instance pruned", |r| {
        r.instances.iter().all(|i| i.instance.id != "long-gone")
            && r.instances.iter().any(|i| i.instance.id == id && i.live)
    })
    .await;
    assert_eq!(report.instances.len(), 1, "{}: {report:#?}", h.name());
    let stats = store
        .stats(&StatsQuery::new(Duration::from_secs(60)).partner("lab"))
        .await
        .unwrap();
    assert_eq!(stats[0].last_served_at, Some(old), "{}", h.name());

    handle.shutdown(Duration::from_millis(10)).await.unwrap();
    let stopped = store
        .instances()
        .await
        .unwrap()
        .into_iter()
        .find(|i| i.id == id)
        .unwrap();
    assert!(stopped.stopped_at.is_some(), "{}", h.name());
    // Its queued work is due, and nothing sends it: down three beats on.
    let down = until(h, &store, "Down after the stop", |r| {
        partner(r, "lab").verdict == Verdict::Down
    })
    .await;
    let since = stopped
        .last_beat_at
        .format("%Y-%m-%d %H:%M:%S UTC")
        .to_string();
    assert!(
        partner(&down, "lab")
            .reasons
            .iter()
            .any(|r| r.contains(&format!("no dispatcher is running for lab since {since}"))),
        "{}: {down:#?}",
        h.name()
    );
    assert!(down.instances.iter().all(|i| !i.live), "{}", h.name());
}

pub async fn fresh_work_nobody_ever_served_is_not_down_yet(h: &Harness) {
    let store = h.store().await;
    // Just enqueued, no engine ever: not down before three default beats
    // (15 s) pass, so hosts and tests that check health before starting
    // are not told a lie. (The 15 s themselves: `ops::health`'s tests.)
    store.enqueue(submission("lab", "fresh")).await.unwrap();
    let report = health(&store).await;
    let lab = partner(&report, "lab");
    assert_ne!(lab.verdict, Verdict::Down, "{}: {lab:#?}", h.name());
    assert!(!lab.dispatcher.missing, "{}", h.name());
    assert_eq!(lab.dispatcher.live_instances, 0, "{}", h.name());
    assert!(report.instances.is_empty(), "{}", h.name());
}

pub async fn silence_opens_an_alert_and_traffic_resolves_it(h: &Harness) {
    let store = h.store().await;
    let (sink, mut events) = ChannelSink::new(16);
    let liaison = Liaison::builder_arc(store.clone())
        .partner(Partner::new("lab", Succeeds).expect_traffic(ExpectedTraffic::finished(1)))
        .partner(
            Partner::new("post", Succeeds)
                .expect_traffic(ExpectedTraffic::callbacks(3).per(Duration::from_secs(1800))),
        )
        .alert_sink(sink)
        .build()
        .unwrap();
    let report = liaison.health(Duration::from_secs(3600)).await.unwrap();
    let lab = partner(&report, "lab");
    assert_eq!(lab.verdict, Verdict::Degraded, "{}: {lab:#?}", h.name());
    assert_eq!(
        lab.reasons,
        ["no submission reached a result in the last 1 h; at least 1 per hour is expected"],
        "{}",
        h.name()
    );
    let t = lab.traffic.as_ref().unwrap();
    assert!(
        t.checked && t.silent && t.counted == 0,
        "{}: {t:?}",
        h.name()
    );
    assert_eq!(
        partner(&report, "post").reasons,
        ["no callback arrived in the last 30 min; at least 3 per 30 min is expected"],
        "{}",
        h.name()
    );

    liaison.evaluate_alerts().await.unwrap();
    let open = liaison.alerts(true).await.unwrap();
    let silent: Vec<_> = open
        .iter()
        .filter(|a| a.class == ProblemClass::SilentPartner)
        .collect();
    assert_eq!(silent.len(), 2, "{}: {open:#?}", h.name());
    let lab_alert = silent.iter().find(|a| a.partner == "lab").unwrap();
    assert_eq!(lab_alert.class.as_str(), "silent_partner");
    assert!(
        lab_alert
            .details
            .starts_with("no submission reached a result"),
        "{}",
        h.name()
    );
    let (event, alert) = events.recv().await.unwrap();
    assert_eq!(
        (event, alert.class),
        (AlertEvent::Opened, ProblemClass::SilentPartner)
    );

    // Traffic comes: the alert resolves, the verdict clears.
    liaison.enqueue(submission("lab", "one")).await.unwrap();
    liaison.run_until_idle().await.unwrap();
    liaison.evaluate_alerts().await.unwrap();
    let open = liaison.alerts(true).await.unwrap();
    assert!(
        !open
            .iter()
            .any(|a| a.partner == "lab" && a.class == ProblemClass::SilentPartner),
        "{}: {open:#?}",
        h.name()
    );
    let report = liaison.health(Duration::from_secs(3600)).await.unwrap();
    assert_eq!(
        partner(&report, "lab").verdict,
        Verdict::Healthy,
        "{}",
        h.name()
    );

    // The engine recorded the expectations when it ran: health computed
    // without the partners configured (the CLI) checks them too.
    let bare = health(&store).await;
    assert!(
        !partner(&bare, "lab").traffic.as_ref().unwrap().silent,
        "{}",
        h.name()
    );
    assert_eq!(
        partner(&bare, "post").verdict,
        Verdict::Degraded,
        "{}",
        h.name()
    );
    assert!(
        bare.reasons.contains(
            &"post: no callback arrived in the last 30 min; at least 3 per 30 min is expected"
                .to_owned()
        ),
        "{}: {:?}",
        h.name(),
        bare.reasons
    );
}

pub async fn outside_its_windows_silence_is_not_checked(h: &Harness) {
    let store = h.store().await;
    // Only on tomorrow's weekday (in UTC): never now.
    let tomorrow = Utc::now().weekday().succ();
    let liaison = Liaison::builder_arc(store.clone())
        .partner(
            Partner::new("lab", Succeeds)
                .expect_traffic(ExpectedTraffic::finished(1).weekdays(tomorrow..=tomorrow)),
        )
        .build()
        .unwrap();
    let report = liaison.health(Duration::from_secs(3600)).await.unwrap();
    let lab = partner(&report, "lab");
    assert_eq!(lab.verdict, Verdict::Healthy, "{}: {lab:#?}", h.name());
    let t = lab.traffic.as_ref().unwrap();
    assert!(!t.checked && !t.silent, "{}: {t:?}", h.name());
    assert_eq!(t.expected, format!("at least 1 per hour on {tomorrow} UTC"));
    liaison.evaluate_alerts().await.unwrap();
    assert!(
        liaison.alerts(true).await.unwrap().is_empty(),
        "{}",
        h.name()
    );
}
