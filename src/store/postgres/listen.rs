//! The `LISTEN` side of the wake-up hints (migration 0005 has the `NOTIFY`
//! side): one dedicated connection per store, outside the pool, that
//! forwards `liaison_wake` notifications for this store's schema to every
//! [`Wakeups`] subscriber, and reconnects when it is dropped.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::{broadcast, mpsc};
use tokio::task::JoinHandle;
use tokio_postgres::{AsyncMessage, NoTls};
use tokio_postgres_rustls::MakeRustlsConnect;
use tokio_util::sync::CancellationToken;

use crate::error::BoxError;
use crate::store::{Wake, Wakeups};

/// The channel migration 0005's triggers notify.
const CHANNEL: &str = "liaison_wake";

/// How many hints a slow subscriber may fall behind before it is told to
/// look at every partner ([`Wake::All`]).
const BUFFER: usize = 1024;

/// How often the idle connection is checked (a dead peer behind a silent
/// network would otherwise go unnoticed), and how long the check may take.
const CHECK_EVERY: Duration = Duration::from_secs(10);
const CHECK_TIMEOUT: Duration = Duration::from_secs(5);

/// Reconnection backoff bounds.
const RETRY_FIRST: Duration = Duration::from_millis(50);
const RETRY_MAX: Duration = Duration::from_secs(5);

/// The application name the listening connection shows in
/// `pg_stat_activity`: `liaison-listen:` and the schema (cut to PostgreSQL's
/// 63 bytes).
pub(crate) fn application_name(schema: &str) -> String {
    let mut name = format!("liaison-listen:{schema}");
    name.truncate(63);
    name
}

/// Starts the listener on first subscription and stops it when the store
/// goes or nobody listens any more.
pub(super) struct Listener {
    config: tokio_postgres::Config,
    tls: Option<MakeRustlsConnect>,
    stop: CancellationToken,
    running: Mutex<Option<Running>>,
}

struct Running {
    tx: broadcast::Sender<Wake>,
    task: JoinHandle<()>,
}

impl Listener {
    pub(super) fn new(config: tokio_postgres::Config, tls: Option<MakeRustlsConnect>) -> Self {
        Listener {
            config,
            tls,
            stop: CancellationToken::new(),
            running: Mutex::new(None),
        }
    }

    /// A new subscription; starts the listening task if it is not running.
    /// `None` outside a Tokio runtime.
    pub(super) fn subscribe(self: &Arc<Self>) -> Option<Wakeups> {
        let runtime = tokio::runtime::Handle::try_current().ok()?;
        let mut running = self.running.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(r) = running.as_ref().filter(|r| !r.task.is_finished()) {
            return Some(Wakeups::new(r.tx.subscribe()));
        }
        let (tx, rx) = broadcast::channel(BUFFER);
        let task = runtime.spawn(listen(Arc::downgrade(self), tx.clone()));
        *running = Some(Running { tx, task });
        Some(Wakeups::new(rx))
    }

    /// Whether the task should end: the store is gone, or every subscriber
    /// is. Decided under the lock `subscribe` takes, so a subscriber that
    /// arrives meanwhile starts a new task instead of joining a dying one.
    fn should_end(&self, tx: &broadcast::Sender<Wake>) -> bool {
        if self.stop.is_cancelled() {
            return true;
        }
        let mut running = self.running.lock().unwrap_or_else(|p| p.into_inner());
        if tx.receiver_count() == 0 {
            *running = None;
            return true;
        }
        false
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

/// Listen until the store is dropped or nobody subscribes any more,
/// reconnecting with backoff whenever the connection fails.
async fn listen(listener: std::sync::Weak<Listener>, tx: broadcast::Sender<Wake>) {
    let mut delay = RETRY_FIRST;
    let mut dropped = false;
    loop {
        let Some(this) = listener.upgrade() else {
            return;
        };
        if this.should_end(&tx) {
            return;
        }
        let (config, tls) = (this.config.clone(), this.tls.clone());
        let stop = this.stop.clone();
        drop(this);
        match session(&config, tls, &tx, &stop, &listener, &mut dropped).await {
            Ok(()) => return, // asked to stop
            Err(error) => {
                if !dropped {
                    tracing::warn!(%error, "the LISTEN connection failed; reconnecting (dispatchers keep polling meanwhile)");
                    dropped = true;
                    // It was up: start the backoff over.
                    delay = RETRY_FIRST;
                } else {
                    tracing::debug!(%error, "reconnecting the LISTEN connection failed");
                }
            }
        }
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(delay) => {}
        }
        delay = (delay * 2).min(RETRY_MAX);
    }
}

/// One connection's life: connect, `LISTEN`, forward notifications. Returns
/// `Ok` when told to stop, `Err` when the connection failed.
async fn session(
    config: &tokio_postgres::Config,
    tls: Option<MakeRustlsConnect>,
    tx: &broadcast::Sender<Wake>,
    stop: &CancellationToken,
    listener: &std::sync::Weak<Listener>,
    dropped: &mut bool,
) -> Result<(), BoxError> {
    let (note_tx, mut notes) = mpsc::channel(BUFFER);
    let (client, driver) = match tls {
        Some(tls) => {
            let (client, connection) = config.connect(tls).await?;
            (client, drive(connection, note_tx))
        }
        None => {
            let (client, connection) = config.connect(NoTls).await?;
            (client, drive(connection, note_tx))
        }
    };
    let outcome: Result<(), BoxError> = async {
        let schema: String = client
            .query_one("SELECT current_schema()::text", &[])
            .await?
            .try_get(0)?;
        client.batch_execute(&format!("LISTEN {CHANNEL}")).await?;
        if std::mem::take(dropped) {
            tracing::info!("the LISTEN connection is back");
        }
        // Anything enqueued while we were not listening went unheard.
        let _ = tx.send(Wake::All);
        let prefix = format!("{schema}:");
        let mut check = tokio::time::interval(CHECK_EVERY);
        check.tick().await;
        loop {
            tokio::select! {
                _ = stop.cancelled() => return Ok(()),
                note = notes.recv() => match note {
                    Some(payload) => {
                        if let Some(partner) = payload.strip_prefix(&prefix) {
                            let _ = tx.send(Wake::Partner(partner.to_owned()));
                        }
                    }
                    None => return Err("the connection closed".into()),
                },
                _ = check.tick() => {
                    if listener.upgrade().is_none_or(|l| l.should_end(tx)) {
                        return Ok(());
                    }
                    match tokio::time::timeout(CHECK_TIMEOUT, client.batch_execute("")).await {
                        Ok(answer) => answer?,
                        Err(_) => return Err("the connection stopped answering".into()),
                    }
                }
            }
        }
    }
    .await;
    // Aborting the driver drops the connection and closes its socket.
    driver.abort();
    outcome
}

/// Poll the connection (nothing happens on it otherwise), passing on the
/// notifications it yields between query answers. The task ends, dropping
/// `notes`, when the connection fails or closes.
fn drive<S, T>(
    mut connection: tokio_postgres::Connection<S, T>,
    notes: mpsc::Sender<String>,
) -> JoinHandle<()>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    T: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    tokio::spawn(async move {
        while let Some(message) = std::future::poll_fn(|cx| connection.poll_message(cx)).await {
            match message {
                Ok(AsyncMessage::Notification(n)) => {
                    if notes.send(n.payload().to_owned()).await.is_err() {
                        return;
                    }
                }
                Ok(_) => {} // notices
                Err(_) => return,
            }
        }
    })
}
