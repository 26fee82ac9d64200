//! Result deliveries to the host application: `deliveries` lists them,
//! `rerun-delivery` hands a parked one to the host's handler again.

use chrono::Utc;
use liaison::store::DeliveryFilter;
use liaison::{Delivery, DeliveryState, Liaison};
use serde::Serialize;

use crate::args::{DeliveriesArgs, RerunDeliveryArgs};
use crate::fail::{Done, Fail, Outcome};
use crate::render::{Table, age, count, print, print_json, time, truncate};

/// The deliveries as a table: id, submission, partner, final state, state,
/// attempts, due (or delivered), last error.
pub(crate) fn table(found: &[Delivery]) -> String {
    let now = Utc::now();
    let mut table = Table::new(&[
        "id",
        "submission",
        "partner",
        "final state",
        "state",
        "attempts",
        "due",
        "last error",
    ])
    .right(&[5]);
    for d in found {
        let due = match (d.state, d.delivered_at) {
            (DeliveryState::Delivered, Some(at)) => format!("delivered {} ago", age(at, now)),
            (DeliveryState::Delivered, None) => "delivered".to_owned(),
            (DeliveryState::Parked, _) => "waits for a re-run".to_owned(),
            (_, _) if d.due_at <= now => "now".to_owned(),
            _ => format!("{} UTC", time(d.due_at)),
        };
        table.row(vec![
            d.id.to_string(),
            d.submission_id.to_string(),
            d.partner.clone(),
            d.final_state.to_string(),
            d.state.to_string(),
            d.attempts.to_string(),
            due,
            truncate(d.last_error.as_deref().unwrap_or("-"), 60),
        ]);
    }
    table.render()
}

pub(crate) async fn list(liaison: &Liaison, args: &DeliveriesArgs, json: bool) -> Outcome {
    let mut filter = DeliveryFilter::default().limit(args.limit);
    filter.partner = args.partner.clone();
    filter.state = args.state;
    filter.submission = args.submission;
    let found = liaison.deliveries(&filter).await?;
    if json {
        print_json(&found)?;
        return Ok(Done::Clean);
    }
    if found.is_empty() {
        print("no result deliveries match\n")?;
        return Ok(Done::Clean);
    }
    let mut out = table(&found);
    out.push_str(&count(found.len() as u64, "delivery", "deliveries"));
    if found.len() == args.limit {
        out.push_str(" (the limit: raise --limit)");
    }
    out.push('\n');
    let parked = found
        .iter()
        .filter(|d| d.state == DeliveryState::Parked)
        .count();
    if parked > 0 {
        out.push_str(&format!(
            "\n{} parked: fix what made the host's handler fail, then\n  liaison rerun-delivery <ID> --reason \"<what was fixed>\"\n",
            count(parked as u64, "delivery is", "deliveries are")
        ));
    }
    print(&out)?;
    Ok(Done::Clean)
}

/// `rerun-delivery --json`.
#[derive(Debug, Serialize)]
struct Rerun<'a> {
    action: &'static str,
    delivery: &'a Delivery,
}

pub(crate) async fn rerun(liaison: &Liaison, args: &RerunDeliveryArgs, json: bool) -> Outcome {
    let after = liaison
        .rerun_delivery(args.id, args.actor.actor(), &args.reason)
        .await
        .map_err(|e| {
            let refused = e.is_not_parked();
            let mut fail = Fail::from(e);
            if refused {
                fail.message.push_str(
                    "\nhint: `liaison deliveries --state parked` lists the ones to re-run",
                );
            }
            fail
        })?;
    if json {
        print_json(&Rerun {
            action: "rerun-delivery",
            delivery: &after,
        })?;
    } else {
        print(&format!(
            "Re-ran delivery {} of submission {}: parked -> {}, with a fresh retry budget. \
             The running host application hands it to its result handler at its next poll \
             (the CLI calls no handler itself).\n",
            after.id, after.submission_id, after.state
        ))?;
    }
    Ok(Done::Clean)
}
