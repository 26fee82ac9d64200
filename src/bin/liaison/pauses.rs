//! `pause` and `resume`: announce a partner's maintenance so nothing is
//! sent to it (and its alerts are marked expected) until a time, or lift
//! it. Shared through the store with every running host instance, which
//! picks it up at its next poll. The pause keeps its actor and reason.

use chrono::{DateTime, Utc};
use liaison::Liaison;
use serde::Serialize;

use crate::args::{PauseArgs, ResumeArgs};
use crate::fail::{Done, Outcome};
use crate::render::{print, print_json, time};

/// What `--json` prints.
#[derive(Debug, Serialize)]
struct Paused<'a> {
    action: &'static str,
    partner: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    until: Option<DateTime<Utc>>,
    actor: &'a str,
    reason: &'a str,
}

pub(crate) async fn pause(liaison: &Liaison, args: &PauseArgs, json: bool) -> Outcome {
    let actor = args.actor.actor();
    let until = args.until.resolve(liaison.store().now());
    liaison
        .pause(&args.partner, until, actor.clone(), &args.reason)
        .await?;
    if json {
        print_json(&Paused {
            action: "pause",
            partner: &args.partner,
            until: Some(until),
            actor: actor.as_str(),
            reason: &args.reason,
        })?;
    } else {
        print(&format!(
            "Paused {} until {} by {}: nothing is sent to it until then (queued work waits, \
             nothing is lost); running host applications stop sending at their next poll.\n",
            args.partner,
            time(until),
            actor
        ))?;
    }
    Ok(Done::Clean)
}

pub(crate) async fn resume(liaison: &Liaison, args: &ResumeArgs, json: bool) -> Outcome {
    let actor = args.actor.actor();
    liaison
        .resume(&args.partner, actor.clone(), &args.reason)
        .await?;
    if json {
        print_json(&Paused {
            action: "resume",
            partner: &args.partner,
            until: None,
            actor: actor.as_str(),
            reason: &args.reason,
        })?;
    } else {
        print(&format!(
            "Resumed {} by {}: running host applications send its queued work at their next poll.\n",
            args.partner, actor
        ))?;
    }
    Ok(Done::Clean)
}
