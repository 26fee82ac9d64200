//! The command line: options, commands, and the parsers that turn text into
//! the library's types with messages a person can act on.

use std::path::PathBuf;
use std::time::Duration;

use chrono::{DateTime, Utc};
use clap::{Args, Parser, Subcommand, ValueEnum};
use liaison::callback::{CallbackId, Disposition};
use liaison::store::ListFilter;
use liaison::{DeliveryId, DeliveryState, SubmissionId, SubmissionState};

// The command line (the about text is set below, not taken from doc comments).
#[derive(Debug, Parser)]
#[command(
    name = "liaison",
    version,
    max_term_width = 100,
    about = "Inspect and recover a liaison outbox (its SQLite file or PostgreSQL schema) without the host application.",
    after_help = "Exit codes: 0 ok; 1 it ran and found problems (status: the verdict is down; \
                  replay-where: some were refused); 2 usage, bad URL, missing file or schema, not an \
                  outbox or another schema version, unknown id, or an action the submission's (or \
                  delivery's) state refuses; 3 the database failed (unreachable, busy, I/O).\n\
                  Guide with examples: docs/cli.md"
)]
pub(crate) struct Cli {
    /// The outbox: an SQLite file's path, or a PostgreSQL URL
    /// (postgres://user:password@host:5432/db). It must exist: the CLI never
    /// creates or migrates one.
    #[arg(long, env = "LIAISON_DB", value_name = "PATH|URL", global = true)]
    pub(crate) db: Option<PathBuf>,

    /// With a PostgreSQL URL: the schema of the liaison_* tables, as the
    /// host application configures it (PostgresConfig::schema). Default:
    /// the connection's search path (usually public).
    #[arg(long, env = "LIAISON_SCHEMA", value_name = "NAME", global = true)]
    pub(crate) schema: Option<String>,

    /// With a PostgreSQL URL: verify the server's TLS certificate against
    /// these CA certificates (PEM), and require TLS. Without it, TLS is used
    /// (verified against the system's trust store) when the URL says
    /// sslmode=require, verify-ca or verify-full.
    #[arg(long, env = "LIAISON_CA_FILE", value_name = "PEM", global = true)]
    pub(crate) ca_file: Option<PathBuf>,

    /// Print stable JSON on stdout instead of tables.
    #[arg(long, global = true)]
    pub(crate) json: bool,

    #[command(subcommand)]
    pub(crate) command: Command,
}

#[derive(Debug, Subcommand)]
pub(crate) enum Command {
    /// Is it working, do we notice, what is the impact, can we recover.
    Status(StatusArgs),
    /// Submissions matching filters, oldest first.
    List(ListArgs),
    /// One submission: its details, full timeline and attempts.
    Show(ShowArgs),
    /// Send a failed, dead-lettered or stuck submission again.
    Replay(ReplayArgs),
    /// Replay every failed, dead-lettered or stuck submission matching filters.
    ReplayWhere(ReplayWhereArgs),
    /// Settle a failed, dead-lettered or stuck submission by hand.
    Resolve(ResolveArgs),
    /// Cancel a submission that is not finished.
    Cancel(CancelArgs),
    /// Erase a finished submission's personal data (payload, result,
    /// correlation, errors, callback bodies and headers); the timeline's
    /// skeleton stays and the erasure is journaled.
    Forget(ForgetArgs),
    /// Result deliveries to the host application, oldest first.
    Deliveries(DeliveriesArgs),
    /// Hand a parked result delivery to the host's handler again.
    RerunDelivery(RerunDeliveryArgs),
    /// Stored inbound callbacks, newest first.
    Callbacks(CallbacksArgs),
    /// Show a callback and how to reprocess it (the host application does it).
    Reprocess(ReprocessArgs),
    /// Take a quarantined callback out of the quarantine, with a reason.
    Dismiss(DismissArgs),
    /// Write submissions as JSON or CSV to stdout.
    Export(ExportArgs),
    /// Open alerts with their owners (`--all` for resolved ones too).
    Alerts(AlertsArgs),
    /// Acknowledge an alert: its owner is on it; reminders stop.
    Ack(AckArgs),
    /// Pause a partner (its maintenance): nothing is sent to it until a time.
    Pause(PauseArgs),
    /// Lift a partner's pause now: its queued work goes out.
    Resume(ResumeArgs),
    /// One alert with its notifications: to which sink and owner, tries,
    /// delivered, pending or failed, and the last error.
    ShowAlert(ShowAlertArgs),
    /// The operations journal, newest first: who paused or resumed a
    /// partner, acknowledged an alert, reprocessed or dismissed callbacks
    /// by filter, when and why.
    Journal(JournalArgs),
}

#[derive(Debug, Args)]
pub(crate) struct PauseArgs {
    /// The partner, as the host application registers it.
    pub(crate) partner: String,
    /// Until when: RFC 3339 (2026-03-03T18:00:00Z) or a duration from now
    /// (30m, 2h, 1d).
    #[arg(long, value_name = "WHEN", value_parser = parse_until)]
    pub(crate) until: Until,
    /// Why (e.g. the partner's announced maintenance); kept with the pause.
    #[arg(long)]
    pub(crate) reason: String,
    #[command(flatten)]
    pub(crate) actor: ActorArg,
}

#[derive(Debug, Args)]
pub(crate) struct ResumeArgs {
    /// The partner.
    pub(crate) partner: String,
    /// Why it is resumed now.
    #[arg(long)]
    pub(crate) reason: String,
    #[command(flatten)]
    pub(crate) actor: ActorArg,
}

/// The end of a pause as given: a time, or a duration from when the
/// command runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Until {
    At(DateTime<Utc>),
    In(Duration),
}

impl Until {
    /// The time it names, counting a duration from `now`.
    pub(crate) fn resolve(self, now: DateTime<Utc>) -> DateTime<Utc> {
        match self {
            Until::At(at) => at,
            Until::In(d) => chrono::Duration::from_std(d)
                .ok()
                .and_then(|d| now.checked_add_signed(d))
                .unwrap_or(DateTime::<Utc>::MAX_UTC),
        }
    }
}

/// RFC 3339, or `30m`, `2h`, `1d` from now.
pub(crate) fn parse_until(s: &str) -> Result<Until, String> {
    if let Ok(at) = DateTime::parse_from_rfc3339(s.trim()) {
        return Ok(Until::At(at.with_timezone(&Utc)));
    }
    parse_window(s).map(Until::In).map_err(|_| {
        format!(
            "not a time: {s:?}; give RFC 3339 (2026-03-03T18:00:00Z) \
             or a duration from now: 30m, 2h or 1d"
        )
    })
}

#[derive(Debug, Args)]
pub(crate) struct ShowAlertArgs {
    /// The alert id (as `alerts` prints it).
    pub(crate) id: String,
}

#[derive(Debug, Args)]
pub(crate) struct AlertsArgs {
    /// Also list resolved alerts.
    #[arg(long)]
    pub(crate) all: bool,
}

#[derive(Debug, Args)]
pub(crate) struct AckArgs {
    /// The alert id.
    pub(crate) id: String,
    /// A note for the operations journal ("on it; the partner called").
    #[arg(long, default_value = "")]
    pub(crate) note: String,
    #[command(flatten)]
    pub(crate) actor: ActorArg,
}

impl AckArgs {
    pub(crate) fn actor(&self) -> liaison::Actor {
        self.actor.actor()
    }
}

#[derive(Debug, Args)]
pub(crate) struct JournalArgs {
    /// Only this partner's lines.
    #[arg(long)]
    pub(crate) partner: Option<String>,
    /// Only the lines about this alert or callback id (or a bulk action's
    /// filter, as journaled).
    #[arg(long)]
    pub(crate) target: Option<String>,
    /// Only lines older than this journal id (the next page).
    #[arg(long)]
    pub(crate) before: Option<i64>,
    /// At most this many lines (at most 1000).
    #[arg(long, default_value_t = 100)]
    pub(crate) limit: usize,
}

#[derive(Debug, Args)]
pub(crate) struct StatusArgs {
    /// The window for outcomes and rates: 30s, 15m, 1h, 2d.
    #[arg(long, default_value = "1h", value_parser = parse_window)]
    pub(crate) window: Duration,
}

/// Filters shared by list, replay-where and export.
#[derive(Debug, Args)]
pub(crate) struct Filters {
    /// Only submissions in this state (repeat for several).
    #[arg(long = "state", value_name = "STATE", value_parser = parse_state)]
    pub(crate) states: Vec<SubmissionState>,
    /// Only this partner.
    #[arg(long)]
    pub(crate) partner: Option<String>,
    /// Only this kind (e.g. claim.submit).
    #[arg(long)]
    pub(crate) kind: Option<String>,
    /// Only this idempotency key (the host's business key), as sent now
    /// (`show --partner P --key K` also finds it by its key before a replay).
    #[arg(long)]
    pub(crate) key: Option<String>,
    /// Only those carrying this correlation field, e.g. claim_id=C-1042
    /// (exact match).
    #[arg(long, value_name = "NAME=VALUE", value_parser = parse_correlation)]
    pub(crate) correlation: Option<(String, String)>,
    /// Only those changed at or after this time: RFC 3339
    /// (2026-03-03T09:00:00Z) or an age (30s, 15m, 1h, 2d ago).
    #[arg(long, value_name = "WHEN", value_parser = parse_since)]
    pub(crate) updated_since: Option<DateTime<Utc>>,
}

impl Filters {
    pub(crate) fn to_filter(&self) -> ListFilter {
        let mut filter = ListFilter::default();
        filter.partner = self.partner.clone();
        filter.states = self.states.clone();
        filter.kind = self.kind.clone();
        filter.idempotency_key = self.key.clone();
        filter.correlation = self.correlation.clone();
        filter.updated_since = self.updated_since;
        filter
    }
}

#[derive(Debug, Args)]
pub(crate) struct ListArgs {
    #[command(flatten)]
    pub(crate) filters: Filters,
    /// At most this many (1 to 10000).
    #[arg(long, default_value = "100", value_parser = parse_limit)]
    pub(crate) limit: usize,
    /// Only open work (not succeeded, cancelled or resolved by hand) with a
    /// business deadline, nearest deadline first.
    #[arg(long)]
    pub(crate) by_deadline: bool,
}

#[derive(Debug, Args)]
pub(crate) struct ShowArgs {
    /// The submission id.
    #[arg(value_parser = parse_submission_id, required_unless_present = "key")]
    pub(crate) id: Option<SubmissionId>,
    /// Instead of an id: the host's idempotency key (with --partner). The
    /// key it was enqueued under finds it too after a replay under a fresh
    /// key, while the idempotency ledger keeps that key.
    #[arg(long, conflicts_with = "id", requires = "partner")]
    pub(crate) key: Option<String>,
    /// The partner the key belongs to (with --key).
    #[arg(long, requires = "key")]
    pub(crate) partner: Option<String>,
}

/// Who is acting; goes on the timeline.
#[derive(Debug, Args)]
pub(crate) struct ActorArg {
    /// Your name, for the timeline. Default: $USER, or "cli".
    #[arg(long, value_name = "NAME")]
    pub(crate) actor: Option<String>,
}

impl ActorArg {
    pub(crate) fn actor(&self) -> liaison::Actor {
        let name = self
            .actor
            .clone()
            .or_else(|| std::env::var("USER").ok())
            .map(|n| n.trim().to_owned())
            .filter(|n| !n.is_empty())
            .unwrap_or_else(|| "cli".to_owned());
        liaison::Actor::person(name)
    }
}

#[derive(Debug, Args)]
pub(crate) struct ReplayArgs {
    /// The submission id.
    #[arg(value_parser = parse_submission_id)]
    pub(crate) id: SubmissionId,
    /// Why it is sent again (goes on the timeline).
    #[arg(long)]
    pub(crate) reason: String,
    #[command(flatten)]
    pub(crate) actor: ActorArg,
}

#[derive(Debug, Args)]
pub(crate) struct ReplayWhereArgs {
    #[command(flatten)]
    pub(crate) filters: Filters,
    /// Only count what would be replayed; change nothing.
    #[arg(long)]
    pub(crate) dry_run: bool,
    /// Why they are sent again (goes on every timeline). Required unless --dry-run.
    #[arg(long, required_unless_present = "dry_run")]
    pub(crate) reason: Option<String>,
    #[command(flatten)]
    pub(crate) actor: ActorArg,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum OutcomeArg {
    /// The work was done (e.g. on the partner's portal).
    Succeeded,
    /// The work will not be done.
    Failed,
}

#[derive(Debug, Args)]
pub(crate) struct ResolveArgs {
    /// The submission id.
    #[arg(value_parser = parse_submission_id)]
    pub(crate) id: SubmissionId,
    /// How it was settled.
    #[arg(long, value_enum)]
    pub(crate) outcome: OutcomeArg,
    /// With --outcome failed: the reason to record (default: the note).
    #[arg(long, value_name = "REASON")]
    pub(crate) failure_reason: Option<String>,
    /// A result document to attach (JSON), e.g. what the partner's portal
    /// showed; handed to the host's result handler.
    #[arg(long, value_name = "JSON", value_parser = parse_json)]
    pub(crate) result: Option<serde_json::Value>,
    /// What was done, and how (goes on the timeline).
    #[arg(long)]
    pub(crate) note: String,
    #[command(flatten)]
    pub(crate) actor: ActorArg,
}

fn parse_json(text: &str) -> Result<serde_json::Value, String> {
    serde_json::from_str(text).map_err(|e| format!("not JSON: {e}"))
}

#[derive(Debug, Args)]
pub(crate) struct CancelArgs {
    /// The submission id.
    #[arg(value_parser = parse_submission_id)]
    pub(crate) id: SubmissionId,
    /// Why (goes on the timeline).
    #[arg(long)]
    pub(crate) reason: String,
    #[command(flatten)]
    pub(crate) actor: ActorArg,
}

#[derive(Debug, Args)]
pub(crate) struct ForgetArgs {
    /// The submission id (or name it with --partner and --key).
    #[arg(value_parser = parse_submission_id, required_unless_present = "key", conflicts_with = "key")]
    pub(crate) id: Option<SubmissionId>,
    /// The partner of the submission named by --key.
    #[arg(long, requires = "key")]
    pub(crate) partner: Option<String>,
    /// The idempotency key the host enqueued it under (with --partner).
    #[arg(long, requires = "partner")]
    pub(crate) key: Option<String>,
    /// Why (e.g. the erasure request's reference); journaled.
    #[arg(long)]
    pub(crate) reason: String,
    #[command(flatten)]
    pub(crate) actor: ActorArg,
}

#[derive(Debug, Args)]
pub(crate) struct DeliveriesArgs {
    /// Only this partner.
    #[arg(long)]
    pub(crate) partner: Option<String>,
    /// Only deliveries in this state: pending, delivered or parked.
    #[arg(long, value_name = "STATE", value_parser = parse_delivery_state)]
    pub(crate) state: Option<DeliveryState>,
    /// Only the deliveries of this submission.
    #[arg(long, value_name = "ID", value_parser = parse_submission_id)]
    pub(crate) submission: Option<SubmissionId>,
    /// At most this many (1 to 10000).
    #[arg(long, default_value = "100", value_parser = parse_limit)]
    pub(crate) limit: usize,
}

#[derive(Debug, Args)]
pub(crate) struct RerunDeliveryArgs {
    /// The delivery id (as `liaison deliveries` prints it).
    #[arg(value_parser = parse_delivery_id)]
    pub(crate) id: DeliveryId,
    /// What was fixed, why it is handed over again (goes on the timeline).
    #[arg(long)]
    pub(crate) reason: String,
    #[command(flatten)]
    pub(crate) actor: ActorArg,
}

#[derive(Debug, Args)]
pub(crate) struct CallbacksArgs {
    /// Only the quarantine: malformed, rejected, expired and conflicting
    /// (not dismissed ones: `--disposition dismissed` lists those).
    #[arg(long, conflicts_with = "dispositions")]
    pub(crate) quarantined: bool,
    /// Only this partner.
    #[arg(long)]
    pub(crate) partner: Option<String>,
    /// Only this disposition (repeat for several).
    #[arg(long = "disposition", value_name = "DISPOSITION", value_parser = parse_disposition)]
    pub(crate) dispositions: Vec<Disposition>,
    /// At most this many (1 to 10000).
    #[arg(long, default_value = "100", value_parser = parse_limit)]
    pub(crate) limit: usize,
}

#[derive(Debug, Args)]
pub(crate) struct ReprocessArgs {
    /// The callback id.
    #[arg(value_parser = parse_callback_id)]
    pub(crate) id: CallbackId,
    /// What was fixed: with it, the callback is reprocessed through
    /// `Liaison::reprocess_callback_by` (journaled with the actor and this
    /// reason) where this process has the partner's matcher; without it,
    /// the callback is only described.
    #[arg(long)]
    pub(crate) reason: Option<String>,
    #[command(flatten)]
    pub(crate) actor: ActorArg,
}

#[derive(Debug, Args)]
pub(crate) struct DismissArgs {
    /// The callback id (as `liaison callbacks --quarantined` prints it).
    #[arg(value_parser = parse_callback_id)]
    pub(crate) id: CallbackId,
    /// Why it needs no reprocessing (kept with the callback, and on its
    /// submission's timeline when it was matched to one).
    #[arg(long)]
    pub(crate) reason: String,
    #[command(flatten)]
    pub(crate) actor: ActorArg,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum Format {
    /// A JSON array of full submissions.
    Json,
    /// One row per submission, with a header.
    Csv,
}

#[derive(Debug, Args)]
pub(crate) struct ExportArgs {
    #[command(flatten)]
    pub(crate) filters: Filters,
    /// At most this many (default: all that match).
    #[arg(long, value_parser = parse_limit)]
    pub(crate) limit: Option<usize>,
    /// The output format.
    #[arg(long, value_enum, default_value = "json")]
    pub(crate) format: Format,
    /// Include each submission's timeline (CSV: a JSON column).
    #[arg(long)]
    pub(crate) timelines: bool,
}

const STATE_NAMES: &str = "queued, in_flight, awaiting_result, succeeded, failed, \
                           dead_lettered, stuck, cancelled, resolved_manually";

const DISPOSITION_NAMES: &str = "received, applied, duplicate, conflicting, late, \
                                 unmatched, expired, malformed, rejected, too_large";

/// `dead-lettered` and `dead_lettered` both name a state.
pub(crate) fn parse_state(s: &str) -> Result<SubmissionState, String> {
    s.trim()
        .to_ascii_lowercase()
        .replace('-', "_")
        .parse()
        .map_err(|_| format!("unknown state {s:?}; the states are: {STATE_NAMES}"))
}

pub(crate) fn parse_disposition(s: &str) -> Result<Disposition, String> {
    s.trim()
        .to_ascii_lowercase()
        .replace('-', "_")
        .parse()
        .map_err(|_| {
            format!("unknown disposition {s:?}; the dispositions are: {DISPOSITION_NAMES}")
        })
}

pub(crate) fn parse_submission_id(s: &str) -> Result<SubmissionId, String> {
    s.trim().parse().map_err(|_| {
        format!("not a submission id: {s:?} (ids are UUIDs, as `liaison list` prints them)")
    })
}

pub(crate) fn parse_delivery_state(s: &str) -> Result<DeliveryState, String> {
    s.trim().to_ascii_lowercase().parse().map_err(|_| {
        format!("unknown delivery state {s:?}; the states are: pending, delivered, parked")
    })
}

pub(crate) fn parse_delivery_id(s: &str) -> Result<DeliveryId, String> {
    s.trim().parse().map_err(|_| {
        format!("not a delivery id: {s:?} (ids are UUIDs, as `liaison deliveries` prints them)")
    })
}

pub(crate) fn parse_callback_id(s: &str) -> Result<CallbackId, String> {
    s.trim().parse().map_err(|_| {
        format!("not a callback id: {s:?} (ids are UUIDs, as `liaison callbacks` prints them)")
    })
}

pub(crate) fn parse_limit(s: &str) -> Result<usize, String> {
    match s.trim().parse::<usize>() {
        Ok(n) if (1..=ListFilter::MAX_LIMIT).contains(&n) => Ok(n),
        _ => Err(format!(
            "not a limit: {s:?}; give a whole number from 1 to {}",
            ListFilter::MAX_LIMIT
        )),
    }
}

/// `name=value`: a correlation field to match (the library checks both).
pub(crate) fn parse_correlation(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((name, value)) => Ok((name.trim().to_owned(), value.to_owned())),
        None => Err(format!(
            "not a correlation field: {s:?}; give NAME=VALUE, e.g. claim_id=C-1042"
        )),
    }
}

/// A time as RFC 3339 (`2026-03-03T09:00:00Z`), or an age (`15m`: that
/// long before now).
pub(crate) fn parse_since(s: &str) -> Result<DateTime<Utc>, String> {
    if let Ok(at) = DateTime::parse_from_rfc3339(s.trim()) {
        return Ok(at.with_timezone(&Utc));
    }
    let explain = || {
        format!(
            "not a time: {s:?}; give RFC 3339 (2026-03-03T09:00:00Z) \
             or an age: 30s, 15m, 1h or 2d (ago)"
        )
    };
    let age = parse_window(s).map_err(|_| explain())?;
    chrono::Duration::from_std(age)
        .ok()
        .and_then(|age| Utc::now().checked_sub_signed(age))
        .ok_or_else(explain)
}

/// `30s`, `15m`, `1h`, `2d`: a positive whole number and one unit.
pub(crate) fn parse_window(s: &str) -> Result<Duration, String> {
    let explain = || {
        format!(
            "not a window: {s:?}; give a whole number and a unit: \
             30s (seconds), 15m (minutes), 1h (hours) or 2d (days)"
        )
    };
    let s = s.trim();
    let (split, _) = s.char_indices().last().ok_or_else(explain)?;
    let (number, unit) = s.split_at(split);
    let n: u64 = number.parse().map_err(|_| explain())?;
    let unit_secs = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        _ => return Err(explain()),
    };
    match n.checked_mul(unit_secs) {
        Some(secs) if secs > 0 => Ok(Duration::from_secs(secs)),
        _ => Err(explain()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn windows_parse_or_explain_the_format() {
        assert_eq!(parse_window("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_window("15m"), Ok(Duration::from_secs(900)));
        assert_eq!(parse_window("1h"), Ok(Duration::from_secs(3600)));
        assert_eq!(parse_window("2d"), Ok(Duration::from_secs(172_800)));
        for bad in [
            "1x",
            "",
            "h",
            "1é",
            "0h",
            "-1h",
            "1.5h",
            "99999999999999999999d",
        ] {
            let err = parse_window(bad).unwrap_err();
            assert!(err.contains("30s"), "{bad}: {err}");
        }
    }

    #[test]
    fn states_accept_dashes_and_list_the_valid_ones() {
        assert_eq!(
            parse_state("dead-lettered"),
            Ok(SubmissionState::DeadLettered)
        );
        assert_eq!(parse_state("Stuck"), Ok(SubmissionState::Stuck));
        let err = parse_state("lost").unwrap_err();
        for state in SubmissionState::ALL {
            assert!(err.contains(state.as_str()), "{err}");
        }
    }

    #[test]
    fn correlations_and_times_parse_or_explain_the_format() {
        assert_eq!(
            parse_correlation("claim_id=C-1=2"),
            Ok(("claim_id".into(), "C-1=2".into()))
        );
        assert!(
            parse_correlation("claim_id")
                .unwrap_err()
                .contains("NAME=VALUE")
        );
        let at = parse_since("2026-03-03T10:00:00+01:00").unwrap();
        assert_eq!(at.to_rfc3339(), "2026-03-03T09:00:00+00:00");
        let ago = Utc::now() - parse_since("15m").unwrap();
        assert!((899..=901).contains(&ago.num_seconds()), "{ago}");
        for bad in ["yesterday", "2026-03-03", "0m", "99999999999999d"] {
            assert!(parse_since(bad).unwrap_err().contains("RFC 3339"), "{bad}");
        }
    }

    #[test]
    fn delivery_states_and_ids_parse_or_explain() {
        assert_eq!(parse_delivery_state(" Parked"), Ok(DeliveryState::Parked));
        assert!(
            parse_delivery_state("failed")
                .unwrap_err()
                .contains("pending, delivered, parked")
        );
        assert!(
            parse_delivery_id("42")
                .unwrap_err()
                .contains("liaison deliveries")
        );
    }

    #[test]
    fn dispositions_list_the_valid_ones() {
        assert_eq!(parse_disposition("too-large"), Ok(Disposition::TooLarge));
        assert!(parse_disposition("odd").unwrap_err().contains("malformed"));
    }

    #[test]
    fn pause_ends_parse_as_times_or_durations_from_now() {
        let now = Utc::now();
        assert_eq!(
            parse_until("2h").unwrap().resolve(now),
            now + chrono::Duration::hours(2)
        );
        let at = parse_until("2026-03-03T19:00:00+01:00")
            .unwrap()
            .resolve(now);
        assert_eq!(at.to_rfc3339(), "2026-03-03T18:00:00+00:00");
        for bad in ["tomorrow", "0h", "2026-03-03", ""] {
            assert!(parse_until(bad).unwrap_err().contains("RFC 3339"), "{bad}");
        }
    }

    #[test]
    fn the_command_line_is_consistent() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }
}
