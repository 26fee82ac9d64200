//! Reading submissions: `list`, `show`, `export`.

use chrono::{SecondsFormat, Utc};
use liaison::store::{DeliveryFilter, ListFilter};
use liaison::{
    Attempt, Delivery, DeliveryState, Event, Liaison, Submission, SubmissionState, format_value,
};
use serde::Serialize;

use crate::args::{ExportArgs, Format, ListArgs, ShowArgs};
use crate::fail::{Done, Fail, Outcome};
use crate::render::{Table, age, count, one_line, or_dash, print, print_json, time, truncate};

pub(crate) async fn list(liaison: &Liaison, args: &ListArgs, json: bool) -> Outcome {
    let mut filter = args.filters.to_filter().limit(args.limit);
    if args.by_deadline {
        filter = filter.by_deadline();
    }
    let found = liaison.store().list(&filter).await?;
    if json {
        print_json(&found)?;
        return Ok(Done::Clean);
    }
    if found.is_empty() {
        print("no submissions match\n")?;
        return Ok(Done::Clean);
    }
    let now = liaison.store().now();
    let mut header = vec!["id", "partner", "key", "state", "attempts", "age", "value"];
    if args.by_deadline {
        header.push("business deadline");
    }
    header.push("last error");
    let mut table = Table::new(&header).right(&[4, 5]);
    for s in &found {
        let mut row = vec![
            s.id.to_string(),
            s.partner.clone(),
            truncate(&s.idempotency_key, 32),
            s.state.to_string(),
            s.attempts.to_string(),
            age(s.created_at, now),
            value(s),
        ];
        if args.by_deadline {
            row.push(s.business_deadline.map_or("-".into(), |d| deadline(d, now)));
        }
        row.push(truncate(s.last_error.as_deref().unwrap_or("-"), 60));
        table.row(row);
    }
    let mut out = table.render();
    out.push_str(&count(found.len() as u64, "submission", "submissions"));
    if found.len() == args.limit {
        out.push_str(" (the limit: raise --limit, or use `liaison export`)");
    }
    out.push('\n');
    print(&out)?;
    Ok(Done::Clean)
}

/// A submission's business value with its currency, or `-`.
fn value(s: &Submission) -> String {
    s.business_value
        .map_or("-".into(), |v| format_value(v, s.currency))
}

/// A business deadline with how far off it is: `2026-03-01 12:00:00 UTC
/// (in 5h)` or `(missed 2h ago)`.
fn deadline(at: chrono::DateTime<Utc>, now: chrono::DateTime<Utc>) -> String {
    if at <= now {
        format!("{} UTC (missed {} ago)", time(at), age(at, now))
    } else {
        format!("{} UTC (in {})", time(at), age(now, at))
    }
}

/// `show --json`.
#[derive(Debug, Serialize)]
struct Shown<'a> {
    submission: &'a Submission,
    timeline: &'a [Event],
    attempts: &'a [Attempt],
    /// Its result deliveries to the host (none when its partner has no
    /// result handler).
    deliveries: &'a [Delivery],
}

pub(crate) async fn show(liaison: &Liaison, args: &ShowArgs, json: bool) -> Outcome {
    let store = liaison.store();
    let s = match (&args.id, &args.partner, &args.key) {
        (Some(id), _, _) => liaison.get(*id).await?,
        (None, Some(partner), Some(key)) => liaison.get_by_key(partner, key).await?,
        _ => return Err(Fail::usage("give a submission id, or --partner and --key")),
    };
    let timeline = store.timeline(s.id).await?;
    let attempts = store.attempts(s.id).await?;
    let deliveries = liaison
        .deliveries(&DeliveryFilter::default().submission(s.id))
        .await?;
    if json {
        print_json(&Shown {
            submission: &s,
            timeline: &timeline,
            attempts: &attempts,
            deliveries: &deliveries,
        })?;
        return Ok(Done::Clean);
    }
    let now = liaison.store().now();
    let mut out = format!("Submission {}\n", s.id);
    let mut field = |name: &str, value: String| {
        out.push_str(&format!("  {name:<16} {}\n", one_line(&value)));
    };
    field("partner", s.partner.clone());
    field("kind", s.kind.clone());
    field("state", s.state.to_string());
    field("idempotency key", s.idempotency_key.clone());
    field("ordering key", or_dash(s.ordering_key.as_ref()));
    field("partner ref", or_dash(s.external_ref.as_ref()));
    field("value", value(&s));
    if let Some(at) = s.business_deadline {
        field("business deadline", deadline(at, now));
    }
    field("priority", s.priority.to_string());
    field(
        "attempts",
        if s.replays == 0 {
            s.attempts.to_string()
        } else {
            format!(
                "{} ({} since the last replay)",
                s.attempts,
                s.attempts_in_cycle()
            )
        },
    );
    field("replays", s.replays.to_string());
    field(
        "created",
        format!(
            "{} UTC ({} ago)",
            time(s.created_at),
            age(s.created_at, now)
        ),
    );
    field("updated", format!("{} UTC", time(s.updated_at)));
    if s.state == SubmissionState::Queued {
        field("due", format!("{} UTC", time(s.due_at)));
    }
    if let Some(at) = s.lease_expires_at {
        field("lease ends", format!("{} UTC", time(at)));
    }
    if let Some(at) = s.result_deadline {
        field("result due", format!("{} UTC", time(at)));
    }
    if let Some(at) = s.terminal_at {
        field("finished", format!("{} UTC", time(at)));
    }
    field("last error", or_dash(s.last_error.as_ref()));
    if !s.correlation.is_empty() {
        let pairs: Vec<String> = s
            .correlation
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        field("correlation", pairs.join(", "));
    }
    field(
        "payload",
        match &s.payload {
            Some(p) => format!("{} bytes of JSON (--json prints it)", p.to_string().len()),
            None => "purged by retention".to_owned(),
        },
    );

    out.push_str(&format!(
        "\nTimeline ({}, UTC)\n",
        count(timeline.len() as u64, "event", "events")
    ));
    let mut table = Table::new(&["time", "event", "from -> to", "actor", "reason", "data"]);
    for e in &timeline {
        let states = match (e.from_state, e.to_state) {
            (None, None) => "-".to_owned(),
            (from, to) => format!("{} -> {}", or_dash(from), or_dash(to)),
        };
        table.row(vec![
            time(e.at),
            e.kind.to_string(),
            states,
            e.actor.to_string(),
            or_dash(e.reason.as_ref()),
            e.data
                .as_ref()
                .map_or_else(|| "-".to_owned(), |d| truncate(&d.to_string(), 80)),
        ]);
    }
    out.push_str(&table.render());

    out.push_str(&format!("\nAttempts ({})\n", attempts.len()));
    if attempts.is_empty() {
        out.push_str("  none yet\n");
    } else {
        let mut table =
            Table::new(&["#", "started", "took", "outcome", "http", "error"]).right(&[0, 2, 4]);
        for a in &attempts {
            let took = a.finished_at.map_or_else(
                || "running".to_owned(),
                |end| format!("{} ms", (end - a.started_at).num_milliseconds().max(0)),
            );
            table.row(vec![
                a.number.to_string(),
                time(a.started_at),
                took,
                a.outcome
                    .map_or_else(|| "-".to_owned(), |o| o.as_str().to_owned()),
                or_dash(a.http_status),
                or_dash(a.error.as_ref()),
            ]);
        }
        out.push_str(&table.render());
    }
    if !deliveries.is_empty() {
        out.push_str(&format!(
            "\nResults to the host ({})\n",
            count(deliveries.len() as u64, "delivery", "deliveries")
        ));
        out.push_str(&crate::deliveries::table(&deliveries));
        if let Some(parked) = deliveries.iter().find(|d| d.state == DeliveryState::Parked) {
            out.push_str(&format!(
                "The host's handler kept failing; once fixed: liaison rerun-delivery {} --reason \"<what was fixed>\"\n",
                parked.id
            ));
        }
    }
    if let Some(next) = next_steps(&s) {
        out.push_str(&format!("\n{next}\n"));
    }
    print(&out)?;
    Ok(Done::Clean)
}

fn next_steps(s: &Submission) -> Option<String> {
    use SubmissionState::*;
    let id = s.id;
    match s.state {
        Failed | DeadLettered | Stuck => Some(format!(
            "To recover: liaison replay {id} --reason \"<why>\"\n\
             or, if it was done another way: liaison resolve {id} --outcome succeeded --note \"<how>\""
        )),
        Queued | InFlight | AwaitingResult => Some(format!(
            "Not finished. To stop it: liaison cancel {id} --reason \"<why>\""
        )),
        _ => None,
    }
}

/// Every submission matching the filter, page by page, up to `limit`.
async fn collect(
    liaison: &Liaison,
    mut filter: ListFilter,
    limit: Option<usize>,
) -> liaison::Result<Vec<Submission>> {
    let mut all = Vec::new();
    loop {
        let want = limit.map_or(ListFilter::MAX_LIMIT, |l| {
            (l - all.len()).min(ListFilter::MAX_LIMIT)
        });
        if want == 0 {
            break;
        }
        filter.limit = Some(want);
        let page = liaison.store().list(&filter).await?;
        let Some(last) = page.last() else { break };
        filter.after = Some(last.id);
        let full = page.len() == want;
        all.extend(page);
        if !full {
            break;
        }
    }
    Ok(all)
}

/// One submission in a JSON export: its fields, then its timeline if asked.
#[derive(Debug, Serialize)]
struct Exported<'a> {
    #[serde(flatten)]
    submission: &'a Submission,
    #[serde(skip_serializing_if = "Option::is_none")]
    timeline: Option<&'a [Event]>,
}

const CSV_COLUMNS: [&str; 19] = [
    "id",
    "partner",
    "kind",
    "state",
    "idempotency_key",
    "ordering_key",
    "external_ref",
    "business_value",
    "priority",
    "attempts",
    "replays",
    "created_at",
    "updated_at",
    "terminal_at",
    "result_deadline",
    "last_error",
    "correlation",
    "currency",
    "business_deadline",
];

pub(crate) async fn export(liaison: &Liaison, args: &ExportArgs) -> Outcome {
    let found = collect(liaison, args.filters.to_filter(), args.limit).await?;
    let mut timelines = Vec::new();
    if args.timelines {
        for s in &found {
            timelines.push(liaison.store().timeline(s.id).await?);
        }
    }
    match args.format {
        Format::Json => {
            let rows: Vec<Exported<'_>> = found
                .iter()
                .enumerate()
                .map(|(i, submission)| Exported {
                    submission,
                    timeline: timelines.get(i).map(Vec::as_slice),
                })
                .collect();
            print_json(&rows)?;
        }
        Format::Csv => {
            let mut header: Vec<&str> = CSV_COLUMNS.to_vec();
            if args.timelines {
                header.push("timeline");
            }
            let mut out = csv_line(header.iter().map(|h| h.to_string()));
            for (i, s) in found.iter().enumerate() {
                let mut cells = vec![
                    s.id.to_string(),
                    s.partner.clone(),
                    s.kind.clone(),
                    s.state.to_string(),
                    s.idempotency_key.clone(),
                    s.ordering_key.clone().unwrap_or_default(),
                    s.external_ref.clone().unwrap_or_default(),
                    s.business_value.map(|v| v.to_string()).unwrap_or_default(),
                    s.priority.to_string(),
                    s.attempts.to_string(),
                    s.replays.to_string(),
                    s.created_at.to_rfc3339_opts(SecondsFormat::Millis, true),
                    s.updated_at.to_rfc3339_opts(SecondsFormat::Millis, true),
                    s.terminal_at
                        .map(|t| t.to_rfc3339_opts(SecondsFormat::Millis, true))
                        .unwrap_or_default(),
                    s.result_deadline
                        .map(|t| t.to_rfc3339_opts(SecondsFormat::Millis, true))
                        .unwrap_or_default(),
                    s.last_error.clone().unwrap_or_default(),
                    if s.correlation.is_empty() {
                        String::new()
                    } else {
                        serde_json::to_string(&s.correlation).unwrap_or_default()
                    },
                    s.currency.map(|c| c.code().to_owned()).unwrap_or_default(),
                    s.business_deadline
                        .map(|t| t.to_rfc3339_opts(SecondsFormat::Millis, true))
                        .unwrap_or_default(),
                ];
                if let Some(timeline) = timelines.get(i) {
                    cells.push(
                        serde_json::to_string(timeline)
                            .map_err(|e| Fail::usage(format!("cannot encode JSON: {e}")))?,
                    );
                }
                out.push_str(&csv_line(cells));
            }
            print(&out)?;
        }
    }
    Ok(Done::Clean)
}

/// One RFC 4180 line: fields with a comma, quote or line break are quoted.
fn csv_line(cells: impl IntoIterator<Item = String>) -> String {
    let quoted: Vec<String> = cells
        .into_iter()
        .map(|c| {
            if c.contains([',', '"', '\n', '\r']) {
                format!("\"{}\"", c.replace('"', "\"\""))
            } else {
                c
            }
        })
        .collect();
    let mut line = quoted.join(",");
    line.push_str("\r\n");
    line
}

#[cfg(test)]
mod tests {
    use super::csv_line;

    #[test]
    fn csv_quotes_what_needs_it() {
        let line = csv_line(["a".into(), "b,c".into(), "say \"hi\"".into(), "x\ny".into()]);
        assert_eq!(line, "a,\"b,c\",\"say \"\"hi\"\"\",\"x\ny\"\r\n");
    }
}
