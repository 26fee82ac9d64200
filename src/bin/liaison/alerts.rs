//! `alerts`: open (or all) alerts with their owners; `ack` acknowledges one;
//! `show-alert` shows one with its notifications.

use liaison::Liaison;
use liaison::ops::alerts::{AlertId, NotificationState};

use crate::args::{AckArgs, AlertsArgs, ShowAlertArgs};
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
    let alert = liaison
        .acknowledge_alert_with_note(id, args.actor(), &args.note)
        .await?;
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

pub(crate) async fn show(liaison: &Liaison, args: &ShowAlertArgs, json: bool) -> Outcome {
    let id: AlertId = args
        .id
        .parse()
        .map_err(|_| Fail::usage(format!("not an alert id: {:?}", args.id)))?;
    let alert = liaison.store().alert(id).await?;
    let notifications = liaison.alert_notifications(id).await?;
    if json {
        print_json(&serde_json::json!({
            "alert": alert,
            "notifications": notifications,
        }))?;
        return Ok(Done::Clean);
    }
    let state = if let Some(at) = alert.resolved_at {
        format!("resolved {}", time(at))
    } else if let Some(by) = &alert.acknowledged_by {
        format!("open, acknowledged by {by}")
    } else {
        "open".to_owned()
    };
    let last = alert.last_notified_at.map(time);
    let mut out = vec![
        format!("alert {} ({state})", alert.id),
        format!("partner:  {}", alert.partner),
        format!("class:    {}", alert.class),
        format!("owner:    {} ({})", alert.owner.name, alert.owner.contact),
        format!("runbook:  {}", or_dash(alert.owner.runbook.as_ref())),
        format!("opened:   {}", time(alert.opened_at)),
        format!(
            "notified: {} time(s), last {}",
            alert.notify_count,
            or_dash(last.as_ref())
        ),
        format!("details:  {}", alert.details),
        String::new(),
        count(notifications.len() as u64, "notification", "notifications"),
    ];
    let mut table = Table::new(&[
        "SENT",
        "EVENT",
        "SINK",
        "OWNER",
        "STATE",
        "TRIES",
        "NEXT TRY",
        "LAST ERROR",
    ]);
    for n in &notifications {
        let next = n
            .next_try_at
            .filter(|_| n.state == NotificationState::Pending);
        table.row(vec![
            time(n.created_at),
            n.event.as_str().to_owned(),
            n.sink.clone(),
            n.owner.clone(),
            n.state.to_string(),
            n.attempts.to_string(),
            or_dash(next.map(time).as_ref()),
            or_dash(n.last_error.as_ref().map(|e| truncate(e, 60)).as_ref()),
        ]);
    }
    out.push(table.render());
    print(&out.join("\n"))?;
    Ok(Done::Clean)
}
