//! Recovery actions: `replay`, `replay-where`, `resolve`, `cancel`. Each
//! names its actor and reason, goes through the library (which journals it),
//! and is refused, changing nothing, when the submission's state does not
//! allow it.

use liaison::{Liaison, Outcome as PartnerOutcome, Submission};
use serde::Serialize;

use crate::args::{CancelArgs, ForgetArgs, OutcomeArg, ReplayArgs, ReplayWhereArgs, ResolveArgs};
use crate::fail::{Done, Fail, Outcome};
use crate::render::{count, note, print, print_json};

const RESOLVABLE: &str = "only failed, dead_lettered and stuck submissions can be resolved by hand";
const FORGETTABLE: &str = "only finished submissions are erased: `liaison cancel` (or `resolve`) it \
                           first, then forget it";
const CANCELLABLE: &str = "only unfinished submissions (queued, in_flight, awaiting_result, \
                           stuck) can be cancelled";

/// What `--json` prints after one action.
#[derive(Debug, Serialize)]
struct Acted<'a> {
    action: &'static str,
    submission: &'a Submission,
}

fn report(action: &'static str, s: &Submission, json: bool, words: String) -> Outcome {
    if json {
        print_json(&Acted {
            action,
            submission: s,
        })?;
    } else {
        print(&format!("{words}\n"))?;
    }
    Ok(Done::Clean)
}

pub(crate) async fn replay(liaison: &Liaison, args: &ReplayArgs, json: bool) -> Outcome {
    let before = liaison.store().get(args.id).await?;
    // A refusal already names the states replay works from: no hint needed.
    let after = liaison
        .replay(args.id, args.actor.actor(), &args.reason)
        .await?;
    let key = if after.idempotency_key == before.idempotency_key {
        format!("same idempotency key {}", after.idempotency_key)
    } else {
        format!(
            "fresh idempotency key {} (was {}: the partner refused the original)",
            after.idempotency_key, before.idempotency_key
        )
    };
    let words = format!(
        "Replayed {}: {} -> {}, {key}. The running host application sends it at its next poll (the CLI sends nothing itself).",
        after.id, before.state, after.state
    );
    report("replay", &after, json, words)
}

/// `replay-where --json`.
#[derive(Debug, Serialize)]
struct Bulk {
    dry_run: bool,
    matched: usize,
    replayed: usize,
    refused: Vec<Refused>,
}

#[derive(Debug, Serialize)]
struct Refused {
    id: String,
    reason: String,
}

pub(crate) async fn replay_where(liaison: &Liaison, args: &ReplayWhereArgs, json: bool) -> Outcome {
    let filter = args.filters.to_filter();
    let actor = args.actor.actor();
    // The library insists on a reason even for a dry run; a dry run writes nothing.
    let reason = args.reason.clone().unwrap_or_else(|| "dry run".to_owned());
    if args.dry_run {
        let would = liaison.replay_where(&filter, actor, &reason, true).await?;
        if json {
            print_json(&Bulk {
                dry_run: true,
                matched: would.matched,
                replayed: 0,
                refused: Vec::new(),
            })?;
        } else {
            print(&format!(
                "Would replay {} (dry run: nothing changed).\n",
                count(would.matched as u64, "submission", "submissions")
            ))?;
        }
        return Ok(Done::Clean);
    }
    if !json {
        let would = liaison
            .replay_where(&filter, actor.clone(), &reason, true)
            .await?;
        note(&format!(
            "Replaying {}...",
            count(would.matched as u64, "submission", "submissions")
        ));
    }
    let done = liaison.replay_where(&filter, actor, &reason, false).await?;
    let refused: Vec<Refused> = done
        .refused
        .iter()
        .map(|(id, why)| Refused {
            id: id.to_string(),
            reason: why.clone(),
        })
        .collect();
    if json {
        print_json(&Bulk {
            dry_run: false,
            matched: done.matched,
            replayed: done.replayed,
            refused,
        })?;
    } else {
        let mut out = format!(
            "Replayed {} of {} matched.\n",
            count(done.replayed as u64, "submission", "submissions"),
            done.matched
        );
        for r in &refused {
            out.push_str(&format!("  refused {}: {}\n", r.id, r.reason));
        }
        print(&out)?;
    }
    Ok(if done.refused.is_empty() {
        Done::Clean
    } else {
        Done::Problems
    })
}

pub(crate) async fn resolve(liaison: &Liaison, args: &ResolveArgs, json: bool) -> Outcome {
    let outcome = match (args.outcome, &args.failure_reason) {
        (OutcomeArg::Succeeded, Some(_)) => {
            return Err(Fail::usage(
                "--failure-reason goes with --outcome failed, not succeeded",
            ));
        }
        (OutcomeArg::Succeeded, None) => PartnerOutcome::succeeded(),
        (OutcomeArg::Failed, reason) => {
            PartnerOutcome::failed(reason.clone().unwrap_or_else(|| args.note.clone()))
        }
    };
    let outcome = match &args.result {
        Some(document) => outcome.with_result(document.clone()),
        None => outcome,
    };
    let before = liaison.store().get(args.id).await?;
    let after = liaison
        .resolve_manually(args.id, outcome, args.actor.actor(), &args.note)
        .await
        .map_err(|e| Fail::with_hint(e, RESOLVABLE))?;
    let outcome = match args.outcome {
        OutcomeArg::Succeeded => "succeeded",
        OutcomeArg::Failed => "failed",
    };
    let words = format!(
        "Resolved {} by hand ({outcome}): {} -> {}.",
        after.id, before.state, after.state
    );
    report("resolve", &after, json, words)
}

pub(crate) async fn cancel(liaison: &Liaison, args: &CancelArgs, json: bool) -> Outcome {
    let before = liaison.store().get(args.id).await?;
    let after = liaison
        .cancel(args.id, args.actor.actor(), &args.reason)
        .await
        .map_err(|e| Fail::with_hint(e, CANCELLABLE))?;
    let mut words = format!(
        "Cancelled {}: {} -> {}.",
        after.id, before.state, after.state
    );
    if before.state == liaison::SubmissionState::InFlight {
        words.push_str(" The attempt under way may still reach the partner; its result will be journaled and ignored.");
    }
    report("cancel", &after, json, words)
}

pub(crate) async fn forget(liaison: &Liaison, args: &ForgetArgs, json: bool) -> Outcome {
    let target = match (&args.id, &args.partner, &args.key) {
        (Some(id), _, _) => liaison::ForgetTarget::Id(*id),
        (None, Some(partner), Some(key)) => liaison::ForgetTarget::key(partner, key),
        _ => {
            return Err(Fail::usage(
                "name the submission: its id, or --partner and --key",
            ));
        }
    };
    let after = liaison
        .forget(target, args.actor.actor(), &args.reason)
        .await
        .map_err(|e| Fail::with_hint(e, FORGETTABLE))?;
    let words = format!(
        "Forgot {} ({}): its payload, result, correlation, errors and callbacks' bodies and headers are erased; its timeline keeps what happened and who erased it, and why.",
        after.id, after.state
    );
    report("forget", &after, json, words)
}
