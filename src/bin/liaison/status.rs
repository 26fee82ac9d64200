//! `status`: the four questions in plain words, then a table per partner.

use std::collections::BTreeMap;
use std::time::Duration;

use liaison::Liaison;
use liaison::SubmissionState;
use liaison::ops::{Answer, FourQuestions, HealthReport, PartnerHealth, Verdict};
use liaison::store::{AgeBand, Totals};
use serde::Serialize;

use crate::args::StatusArgs;
use crate::fail::{Done, Outcome};
use crate::open::Target;
use crate::render::{Table, age, age_secs, count, print, print_json, time};

/// The four answers, for `--json` (with the full health report beside them).
#[derive(Debug, Serialize)]
struct Status {
    verdict: Verdict,
    window_secs: u64,
    working: Working,
    noticed: Noticed,
    impact: Impact,
    recovery: Recovery,
    /// The four answers, worded as the ops page words them.
    questions: FourQuestions,
    health: HealthReport,
}

#[derive(Debug, Serialize)]
struct Working {
    verdict: Verdict,
    reasons: Vec<String>,
}

#[derive(Debug, Serialize)]
struct Noticed {
    /// Sum of the four counts below.
    problems: u64,
    stuck: u64,
    dead_lettered: u64,
    /// Stored callbacks never verified or processed (disposition `received`).
    unverified_callbacks: u64,
    quarantined_callbacks: u64,
    /// Results the host's handler gave up on.
    parked_results: u64,
}

#[derive(Debug, Serialize)]
struct Impact {
    submissions: u64,
    /// Minor units per currency (ISO 4217 code, or `unspecified`).
    value: liaison::Money,
    /// At risk by the submissions' kind, across partners.
    by_kind: BTreeMap<String, Totals>,
    /// At risk by age (since enqueue), across partners.
    by_age: BTreeMap<AgeBand, Totals>,
    /// Open work near or past its business deadline, per partner (only
    /// partners with some).
    deadlines: Vec<Deadlines>,
}

#[derive(Debug, Serialize)]
struct Deadlines {
    partner: String,
    /// The partner's lead time, in seconds.
    lead_time_secs: u64,
    /// Deadline within the lead time.
    at_risk: Totals,
    /// Deadline passed, still open.
    missed: Totals,
    /// In plain words.
    words: String,
}

fn impact(report: &HealthReport) -> Impact {
    let mut by_kind: BTreeMap<String, Totals> = BTreeMap::new();
    let mut by_age: BTreeMap<AgeBand, Totals> = BTreeMap::new();
    let mut deadlines = Vec::new();
    for p in &report.partners {
        for (kind, t) in &p.at_risk_by_kind {
            by_kind.entry(kind.clone()).or_default().add(t);
        }
        for (age, t) in &p.at_risk_by_age {
            by_age.entry(*age).or_default().add(t);
        }
        if let Some(words) = p.deadline_words() {
            deadlines.push(Deadlines {
                partner: p.partner.clone(),
                lead_time_secs: p.deadlines.lead_time_secs,
                at_risk: p.deadlines.at_risk.clone(),
                missed: p.deadlines.missed.clone(),
                words,
            });
        }
    }
    Impact {
        submissions: report.at_risk.count,
        value: report.at_risk.value.clone(),
        by_kind,
        by_age,
        deadlines,
    }
}

#[derive(Debug, Serialize)]
struct Recovery {
    replayable: u64,
    failed: u64,
    dead_lettered: u64,
    stuck: u64,
    quarantined_callbacks: u64,
    parked_results: u64,
    commands: Vec<String>,
}

pub(crate) async fn run(
    liaison: &Liaison,
    target: &Target,
    args: &StatusArgs,
    json: bool,
) -> Outcome {
    let report = liaison.health(args.window).await?;
    let questions = liaison.four_questions(&report).await?;
    let c = questions.counts;
    let status = Status {
        verdict: report.verdict,
        window_secs: report.window_secs,
        working: Working {
            verdict: report.verdict,
            reasons: report.reasons.clone(),
        },
        noticed: Noticed {
            problems: c.problems(),
            stuck: c.stuck,
            dead_lettered: c.dead_lettered,
            unverified_callbacks: c.unverified_callbacks,
            quarantined_callbacks: c.quarantined_callbacks,
            parked_results: c.parked_results,
        },
        impact: impact(&report),
        recovery: Recovery {
            replayable: c.replayable(),
            failed: c.failed,
            dead_lettered: c.dead_lettered,
            stuck: c.stuck,
            quarantined_callbacks: c.quarantined_callbacks,
            parked_results: c.parked_results,
            commands: commands(target, c.replayable(), c.quarantined_callbacks),
        },
        questions,
        health: report,
    };
    if json {
        print_json(&status)?;
    } else {
        print(&human(&status, args.window))?;
    }
    Ok(if status.verdict == Verdict::Down {
        Done::Problems
    } else {
        Done::Clean
    })
}

fn commands(target: &Target, replayable: u64, quarantined: u64) -> Vec<String> {
    let cli = target.command();
    let mut commands = Vec::new();
    if replayable > 0 {
        commands.push(format!(
            "{cli} list --state failed --state dead_lettered --state stuck"
        ));
        commands.push(format!("{cli} replay-where --dry-run"));
        commands.push(format!("{cli} replay-where --reason \"<why>\""));
    }
    if quarantined > 0 {
        commands.push(format!("{cli} callbacks --quarantined"));
    }
    commands
}

fn verdict_word(v: Verdict) -> &'static str {
    match v {
        Verdict::Healthy => "HEALTHY",
        Verdict::Degraded => "DEGRADED",
        Verdict::Down => "DOWN",
        _ => "UNKNOWN",
    }
}

fn window_words(window: Duration) -> String {
    let secs = window.as_secs();
    match secs {
        s if s % 86_400 == 0 => count(s / 86_400, "day", "days"),
        s if s % 3600 == 0 => count(s / 3600, "hour", "hours"),
        s if s % 60 == 0 => count(s / 60, "minute", "minutes"),
        s => count(s, "second", "seconds"),
    }
}

/// `Is it working today?          Yes: every partner is working`.
fn line(out: &mut String, a: &Answer) {
    out.push_str(&format!(
        "{:<30}{}: {}\n",
        a.question.words(),
        if a.yes { "Yes" } else { "No" },
        a.reason
    ));
}

fn human(s: &Status, window: Duration) -> String {
    let mut out = String::new();
    let last = window_words(window);
    let q = &s.questions;
    line(&mut out, &q.working);
    out.push_str(&format!(
        "  - overall {} over the last {last}\n",
        verdict_word(s.verdict)
    ));
    if s.health.partners.is_empty() {
        out.push_str("  - the outbox holds no submissions yet\n");
    }
    for reason in &s.working.reasons {
        out.push_str(&format!("  - {reason}\n"));
    }
    line(&mut out, &q.noticed);

    line(&mut out, &q.impact);
    let i = &s.impact;
    let split = |groups: Vec<(&str, &Totals)>| {
        groups
            .into_iter()
            .map(|(name, t)| format!("{name}: {} worth {}", t.count, t.value))
            .collect::<Vec<_>>()
            .join("; ")
    };
    if !i.by_kind.is_empty() {
        out.push_str(&format!(
            "  - by kind: {}\n",
            split(i.by_kind.iter().map(|(k, t)| (k.as_str(), t)).collect())
        ));
    }
    if !i.by_age.is_empty() {
        out.push_str(&format!(
            "  - by age: {}\n",
            split(i.by_age.iter().map(|(a, t)| (a.as_str(), t)).collect())
        ));
    }

    line(&mut out, &q.recoverable);
    let r = &s.recovery;
    for command in &r.commands {
        out.push_str(&format!("  $ {command}\n"));
    }
    if r.quarantined_callbacks > 0 {
        out.push_str(
            "  (quarantined callbacks are reprocessed by the host application: see `liaison reprocess ID`;\n   one that needs no reprocessing is dismissed: `liaison dismiss ID --reason \"<why>\"`)\n",
        );
    }
    if r.parked_results > 0 {
        out.push_str("  (parked results: see `liaison deliveries`)\n");
    }

    if !s.health.partners.is_empty() {
        out.push('\n');
        out.push_str(&partner_table(&s.health.partners, &last));
    }
    out.push('\n');
    out.push_str(&engines(&s.health));
    out
}

/// The engine instances recorded in the outbox, and whether each is live.
fn engines(health: &HealthReport) -> String {
    let live = health.instances.iter().filter(|i| i.live).count() as u64;
    if health.instances.is_empty() {
        return "Engines: none has recorded itself in this outbox (no host application has \
                run it in the last day)\n"
            .to_owned();
    }
    let mut table = Table::new(&[
        "instance",
        "host",
        "pid",
        "version",
        "started",
        "partners",
        "last beat",
        "state",
    ])
    .right(&[2]);
    let now = health.generated_at;
    for i in &health.instances {
        let inst = &i.instance;
        let state = if i.live {
            "live".to_owned()
        } else if let Some(at) = inst.stopped_at {
            format!("stopped {} ago", age(at, now))
        } else {
            format!("gone: no beat for {}", age(inst.last_beat_at, now))
        };
        table.row(vec![
            inst.id.clone(),
            inst.host.clone(),
            inst.pid.to_string(),
            inst.version.clone(),
            time(inst.started_at),
            inst.partners.join(", "),
            time(inst.last_beat_at),
            state,
        ]);
    }
    format!(
        "Engines: {} live of {} recorded\n{}",
        live,
        health.instances.len(),
        table.render()
    )
}

fn partner_table(partners: &[PartnerHealth], last: &str) -> String {
    let mut table = Table::new(&[
        "partner",
        "verdict",
        "queued",
        "in flight",
        "awaiting",
        "succeeded",
        "failed",
        "dead-lettered",
        "stuck",
        "oldest queued",
        "at risk",
    ])
    .right(&[2, 3, 4, 5, 6, 7, 8, 9, 10]);
    for p in partners {
        let now = |state| p.by_state.get(&state).map_or(0, |t| t.count).to_string();
        table.row(vec![
            p.partner.clone(),
            verdict_word(p.verdict).to_lowercase(),
            now(SubmissionState::Queued),
            now(SubmissionState::InFlight),
            now(SubmissionState::AwaitingResult),
            p.window.succeeded.to_string(),
            p.window.failed.to_string(),
            p.window.dead_lettered.to_string(),
            p.stuck.to_string(),
            p.oldest_queued_secs
                .map_or_else(|| "-".to_owned(), age_secs),
            format!("{} ({})", p.at_risk.value, p.at_risk.count),
        ]);
    }
    format!(
        "{}succeeded, failed, dead-lettered: ended in the last {last}; other columns: now; \
         at risk: value (count)\n",
        table.render()
    )
}
