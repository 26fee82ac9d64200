//! `journal`: the operations journal, newest first — who paused or resumed
//! a partner, acknowledged an alert, reprocessed a callback that concerns no
//! submission, reprocessed or dismissed callbacks by filter; when and why.

use liaison::Liaison;
use liaison::ops::JournalFilter;

use crate::args::JournalArgs;
use crate::fail::{Done, Outcome};
use crate::render::{Table, count, or_dash, print, print_json, time, truncate};

pub(crate) async fn list(liaison: &Liaison, args: &JournalArgs, json: bool) -> Outcome {
    let mut filter = JournalFilter::default().limit(args.limit);
    if let Some(partner) = &args.partner {
        filter = filter.partner(partner);
    }
    if let Some(target) = &args.target {
        filter = filter.target(target);
    }
    if let Some(before) = args.before {
        filter = filter.before(before);
    }
    let lines = liaison.ops_journal(&filter).await?;
    if json {
        print_json(&lines)?;
        return Ok(Done::Clean);
    }
    let mut table =
        Table::new(&["ID", "AT", "ACTOR", "ACTION", "PARTNER", "TARGET", "REASON"]).right(&[0]);
    for l in &lines {
        table.row(vec![
            l.id.to_string(),
            time(l.at),
            l.actor.to_string(),
            l.action.clone(),
            or_dash(l.partner.as_ref()),
            truncate(l.target.as_deref().unwrap_or("-"), 60),
            truncate(&l.reason, 80),
        ]);
    }
    let mut out = format!(
        "{}\n{}",
        count(lines.len() as u64, "journal line", "journal lines"),
        table.render()
    );
    if let Some(last) = lines.last()
        && lines.len() >= args.limit
    {
        out.push_str(&format!("older lines: --before {}\n", last.id));
    }
    print(&out)?;
    Ok(Done::Clean)
}
