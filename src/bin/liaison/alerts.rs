//! `alerts`: open (or all) alerts with their owners; `ack` acknowledges one.

use liaison::Liaison;
use liaison::ops::alerts::AlertId;

use crate::args::{AckArgs, AlertsArgs};
use crate::fail::{Done, Fail, Outcome};
use crate::render::{Table, count, or_dash, print, print_json, time, truncate};

pub(crate) async fn list(liaison: &Liaison, args: &AlertsArgs, json: bool) -> Outcome {
    let alerts = liaison.alerts(!args.all).await?;
    if json {
        print_json(&alerts)?;
        return Ok(Done::Clean);
    }
    let mut table = Table::new(&[
        "ID", "PARTNER", "CLASS", "OWNER", "CONTACT", "OPENED", "STATE", "DETAILS",
    ]);
    for a in &alerts {
        let state = if a.resolved_at.is_some() {
            "resolved".to_owned()
        } else if let Some(by) = &a.acknowledged_by {
            format!("acknowledged by {by}")
        } else if a.expected {
            "open (expected: partner paused)".to_owned()
        } else {
            "open".to_owned()
        };
        table.row(vec![
            a.id.to_string(),
            a.partner.clone(),
            a.class.to_string(),
            a.owner.name.clone(),
            a.owner.contact.clone(),
            time(a.opened_at),
            state,
            truncate(&a.details, 60),
        ]);
    }
    let what = if args.all { "alert" } else { "open alert" };
    print(&format!(
        "{}\n{}",
        count(alerts.len() as u64, what, &format!("{what}s")),
        table.render()
    ))?;
    for a in alerts
        .iter()
        .filter(|a| a.is_open() && a.owner.runbook.is_some())
    {
        print(&format!(
            "runbook for {} {}: {}",
            a.partner,
            a.class,
            or_dash(a.owner.runbook.as_ref())
        ))?;
    }
    Ok(Done::Clean)
}

pub(crate) async fn ack(liaison: &Liaison, args: &AckArgs, json: bool) -> Outcome {
    let id: AlertId = args
        .id
        .parse()
        .map_err(|_| Fail::usage(format!("not an alert id: {:?}", args.id)))?;
    let alert = liaison.acknowledge_alert(id, args.actor()).await?;
    if json {
        print_json(&alert)?;
    } else {
        print(&format!(
            "acknowledged {} ({} at {}) as {}; reminders stop",
            alert.id,
            alert.class,
            alert.partner,
            or_dash(alert.acknowledged_by.as_ref())
        ))?;
    }
    Ok(Done::Clean)
}
