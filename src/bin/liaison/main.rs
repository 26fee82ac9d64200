//! `liaison`: inspect and recover a liaison outbox from a shell, without the
//! host application. Human output by default, `--json` for scripts.
//!
//! Run with `cargo run --features cli --bin liaison -- --db outbox.db status`
//! (or `--db postgres://user@host/db --schema liaison` for a PostgreSQL
//! outbox); every command is described, with its output, in docs/cli.md.

mod actions;
mod alerts;
mod args;
mod callbacks;
mod deliveries;
mod fail;
mod journal;
mod open;
mod pauses;
mod render;
mod status;
mod submissions;

use std::process::ExitCode;

use clap::Parser;
use liaison::Liaison;

use crate::args::{Cli, Command};
use crate::fail::{Done, Fail, Outcome};

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli).await {
        Ok(Done::Clean) => ExitCode::SUCCESS,
        Ok(Done::Problems) => ExitCode::from(1),
        Err(fail) => {
            render::note(&format!("error: {}", fail.message));
            ExitCode::from(fail.code)
        }
    }
}

async fn run(cli: Cli) -> Outcome {
    let db = cli.db.ok_or_else(|| {
        Fail::usage("no outbox given: pass --db PATH (or a postgres:// URL) or set LIAISON_DB")
    })?;
    let target = open::Target::new(db, cli.schema, cli.ca_file)?;
    let store = open::open(&target).await?;
    // No partners: the CLI reads and recovers; it never sends. Past this
    // point both stores take the same path, through the library's API.
    let liaison = Liaison::builder_arc(store).build()?;
    let json = cli.json;
    match &cli.command {
        Command::Status(a) => status::run(&liaison, &target, a, json).await,
        Command::List(a) => submissions::list(&liaison, a, json).await,
        Command::Show(a) => submissions::show(&liaison, a, json).await,
        Command::Export(a) => submissions::export(&liaison, a).await,
        Command::Replay(a) => actions::replay(&liaison, a, json).await,
        Command::ReplayWhere(a) => actions::replay_where(&liaison, a, json).await,
        Command::Resolve(a) => actions::resolve(&liaison, a, json).await,
        Command::Cancel(a) => actions::cancel(&liaison, a, json).await,
        Command::Forget(a) => actions::forget(&liaison, a, json).await,
        Command::Deliveries(a) => deliveries::list(&liaison, a, json).await,
        Command::RerunDelivery(a) => deliveries::rerun(&liaison, a, json).await,
        Command::Callbacks(a) => callbacks::list(&liaison, a, json).await,
        Command::Reprocess(a) => callbacks::reprocess(&liaison, a, json).await,
        Command::Dismiss(a) => callbacks::dismiss(&liaison, a, json).await,
        Command::Alerts(a) => alerts::list(&liaison, a, json).await,
        Command::Ack(a) => alerts::ack(&liaison, a, json).await,
        Command::Pause(a) => pauses::pause(&liaison, a, json).await,
        Command::Resume(a) => pauses::resume(&liaison, a, json).await,
        Command::ShowAlert(a) => alerts::show(&liaison, a, json).await,
        Command::Journal(a) => journal::list(&liaison, a, json).await,
    }
}
