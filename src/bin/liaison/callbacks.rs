//! Inbound callbacks: `callbacks` lists them; `reprocess` explains why the
//! host application, not the CLI, reprocesses one; `dismiss` takes one out
//! of the quarantine with a reason.

use base64::Engine as _;
use chrono::{DateTime, Utc};
use liaison::Liaison;
use liaison::callback::{Correlation, Dismissal, Disposition, StoredCallback};
use liaison::store::CallbackFilter;
use serde::Serialize;

use crate::args::{CallbacksArgs, DismissArgs, ReprocessArgs};
use crate::fail::{Done, Fail, Outcome};
use crate::render::{Table, count, one_line, or_dash, print, print_json, time, truncate};

/// A callback as the CLI prints it in JSON (the raw body only for `reprocess`).
#[derive(Debug, Serialize)]
struct View {
    id: String,
    partner: String,
    received_at: DateTime<Utc>,
    disposition: Disposition,
    quarantined: bool,
    submission_id: Option<String>,
    event_id: Option<String>,
    correlation: Option<Correlation>,
    error: Option<String>,
    size: u64,
    body_hash: String,
    processed_at: Option<DateTime<Utc>>,
    /// Who dismissed it, when, why, and what it was.
    dismissal: Option<Dismissal>,
    #[serde(skip_serializing_if = "Option::is_none")]
    headers: Option<Vec<(String, String)>>,
    /// The body as text, when it is UTF-8.
    #[serde(skip_serializing_if = "Option::is_none")]
    body_text: Option<String>,
    /// The body in base64, when it is not UTF-8.
    #[serde(skip_serializing_if = "Option::is_none")]
    body_base64: Option<String>,
}

impl View {
    fn of(c: &StoredCallback, with_body: bool) -> Self {
        let (body_text, body_base64) = match (&c.body, with_body) {
            (Some(body), true) => match std::str::from_utf8(body) {
                Ok(text) => (Some(text.to_owned()), None),
                Err(_) => (
                    None,
                    Some(base64::engine::general_purpose::STANDARD.encode(body)),
                ),
            },
            _ => (None, None),
        };
        View {
            id: c.id.to_string(),
            partner: c.partner.clone(),
            received_at: c.received_at,
            disposition: c.disposition,
            quarantined: c.disposition.is_quarantined(),
            submission_id: c.submission_id.map(|id| id.to_string()),
            event_id: c.event_id.clone(),
            correlation: c.correlation.clone(),
            error: c.error.clone(),
            size: c.size,
            body_hash: c.body_hash.clone(),
            processed_at: c.processed_at,
            dismissal: c.dismissal.clone(),
            headers: with_body.then(|| c.headers.clone()),
            body_text,
            body_base64,
        }
    }
}

pub(crate) async fn list(liaison: &Liaison, args: &CallbacksArgs, json: bool) -> Outcome {
    let mut filter = if args.quarantined {
        CallbackFilter::quarantined()
    } else {
        let mut filter = CallbackFilter::default();
        filter.dispositions = args.dispositions.clone();
        filter
    };
    filter.partner = args.partner.clone();
    filter.limit = Some(args.limit);
    // The list shows no bodies (`show` does): read none.
    let filter = filter.without_body();
    let found = liaison.store().list_callbacks(&filter).await?;
    if json {
        let views: Vec<View> = found.iter().map(|c| View::of(c, false)).collect();
        print_json(&views)?;
        return Ok(Done::Clean);
    }
    if found.is_empty() {
        print("no callbacks match\n")?;
        return Ok(Done::Clean);
    }
    let mut table = Table::new(&[
        "id",
        "partner",
        "received (utc)",
        "disposition",
        "submission",
        "error",
    ]);
    for c in &found {
        table.row(vec![
            c.id.to_string(),
            c.partner.clone(),
            time(c.received_at),
            c.disposition.to_string(),
            or_dash(c.submission_id),
            truncate(c.error.as_deref().unwrap_or("-"), 60),
        ]);
    }
    let mut out = table.render();
    out.push_str(&count(found.len() as u64, "callback", "callbacks"));
    if found.len() == args.limit {
        out.push_str(" (the limit: raise --limit to see more)");
    }
    out.push('\n');
    print(&out)?;
    Ok(Done::Clean)
}

/// The library's rule: not yet settled, unmatched, quarantined for a
/// reason a fix can remove (a conflict is a fact, not a fault), or
/// dismissed (reprocessed on purpose).
fn reprocessable(d: Disposition) -> bool {
    d.is_reprocessable()
}

/// `reprocess --json`.
#[derive(Debug, Serialize)]
struct NotReprocessed {
    callback: View,
    reprocessable: bool,
    reprocessed: bool,
    explanation: String,
}

/// `reprocess --reason` that reprocessed: what the run decided.
#[derive(Debug, Serialize)]
struct Reprocessed {
    callback_id: String,
    reprocessed: bool,
    disposition: Disposition,
    submission_id: Option<String>,
}

pub(crate) async fn reprocess(liaison: &Liaison, args: &ReprocessArgs, json: bool) -> Outcome {
    let c = liaison.store().callback(args.id).await?;
    let can = reprocessable(c.disposition) && c.body.is_some();
    if let (true, Some(reason)) = (can, &args.reason) {
        // The ops page's path: journaled with the actor and the reason. It
        // needs the partner's matcher, which only a host application
        // registers; refused (nothing changed) otherwise.
        match liaison
            .reprocess_callback_by(c.id, args.actor.actor(), reason)
            .await
        {
            Ok(receipt) => {
                if json {
                    print_json(&Reprocessed {
                        callback_id: c.id.to_string(),
                        reprocessed: true,
                        disposition: receipt.disposition,
                        submission_id: receipt.submission_id.map(|s| s.to_string()),
                    })?;
                } else {
                    print(&format!(
                        "reprocessed callback {}: {}\n",
                        c.id, receipt.disposition
                    ))?;
                }
                return Ok(Done::Clean);
            }
            Err(liaison::Error::InvalidInput {
                field: "partner", ..
            }) => {}
            Err(e) => return Err(e.into()),
        }
    }
    let explanation = if !reprocessable(c.disposition) {
        format!(
            "callback {} is {}: there is nothing to reprocess.",
            c.id, c.disposition
        )
    } else if c.body.is_none() {
        format!(
            "callback {} has no stored body (it was above the size cap or purged): \
             it cannot be reprocessed; ask the partner to send it again.",
            c.id
        )
    } else {
        format!(
            "the CLI cannot reprocess callbacks: verifying the signature and reading the \
             body need the partner's matcher and secrets, which only the host application \
             has. Fix the cause of its error first, then have the host application call \
             Liaison::reprocess_callback_by(\"{}\", actor, reason) — the ops page's \
             reprocess, or whatever admin route or task it exposes; it is journaled with \
             who and why. The callback is kept as it arrived, so nothing is lost meanwhile.",
            c.id
        )
    };
    if json {
        print_json(&NotReprocessed {
            callback: View::of(&c, true),
            reprocessable: can,
            reprocessed: false,
            explanation: explanation.clone(),
        })?;
    } else {
        print(&describe(&c))?;
    }
    Err(Fail::usage(format!("not reprocessed: {explanation}")))
}

fn describe(c: &StoredCallback) -> String {
    let mut out = format!("Callback {}\n", c.id);
    let mut field = |name: &str, value: String| {
        out.push_str(&format!("  {name:<12} {}\n", one_line(&value)));
    };
    field("partner", c.partner.clone());
    field("received", format!("{} UTC", time(c.received_at)));
    field("disposition", c.disposition.to_string());
    field("error", or_dash(c.error.as_ref()));
    field("submission", or_dash(c.submission_id));
    field("event id", or_dash(c.event_id.as_ref()));
    field(
        "processed",
        or_dash(c.processed_at.map(|t| format!("{} UTC", time(t)))),
    );
    if let Some(d) = &c.dismissal {
        field(
            "dismissed",
            format!(
                "{} UTC by {} (was {}): {}",
                time(d.at),
                d.actor,
                d.from,
                d.reason
            ),
        );
    }
    // The store's keyed hash of the body (HMAC-SHA256), not its SHA-256.
    field("size", format!("{} bytes, hash {}", c.size, c.body_hash));
    let names: Vec<&str> = c.headers.iter().map(|(n, _)| n.as_str()).collect();
    field(
        "headers",
        if names.is_empty() {
            "-".to_owned()
        } else {
            names.join(", ")
        },
    );
    field(
        "body",
        match &c.body {
            None => "not stored".to_owned(),
            Some(body) => truncate(&String::from_utf8_lossy(body), 400),
        },
    );
    out
}

/// `dismiss --json`.
#[derive(Debug, Serialize)]
struct Dismissed {
    action: &'static str,
    callback: View,
}

pub(crate) async fn dismiss(liaison: &Liaison, args: &DismissArgs, json: bool) -> Outcome {
    let after = liaison
        .dismiss_callback(args.id, args.actor.actor(), args.reason.as_str())
        .await
        .map_err(|e| {
            let refused = e.is_not_quarantined();
            let mut fail = Fail::from(e);
            if refused {
                fail.message.push_str(
                    "\nhint: `liaison callbacks --quarantined` lists the ones to dismiss",
                );
            }
            fail
        })?;
    if json {
        print_json(&Dismissed {
            action: "dismiss",
            callback: View::of(&after, false),
        })?;
    } else {
        let was = after
            .dismissal
            .as_ref()
            .map_or_else(|| "quarantined".to_owned(), |d| d.from.to_string());
        print(&format!(
            "Dismissed callback {} of {}: {was} -> {}. It left the quarantine; the alert \
             about it resolves at the next evaluation once none of its kind is left.\n",
            after.id, after.partner, after.disposition
        ))?;
    }
    Ok(Done::Clean)
}
