//! [`Wakeups`]: hints from the store that due work may be waiting, for
//! stores shared by several processes.

use tokio::sync::broadcast;

/// One wake-up hint.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Wake {
    /// Work for this partner became due (enqueued, replayed, released or
    /// unpaused), possibly by another process.
    Partner(String),
    /// Hints may have been missed (the channel was down, or this receiver
    /// fell behind): look at every partner now.
    All,
}

/// A stream of [`Wake`] hints from [`crate::store::OutboxStore::wakeups`].
///
/// Hints are only hints: a dispatcher that acts on them still polls, so a
/// hint lost in transit delays work by at most one poll interval, and a
/// hint with nothing behind it costs one empty claim.
#[derive(Debug)]
pub struct Wakeups {
    rx: broadcast::Receiver<Wake>,
}

impl Wakeups {
    /// Wrap a broadcast receiver; stores create these.
    #[cfg_attr(not(feature = "postgres"), allow(dead_code))]
    pub(crate) fn new(rx: broadcast::Receiver<Wake>) -> Self {
        Wakeups { rx }
    }

    /// The next hint, or `None` once the store stopped sending any (it was
    /// dropped). A receiver that fell behind gets [`Wake::All`] in place of
    /// what it missed.
    pub async fn next(&mut self) -> Option<Wake> {
        match self.rx.recv().await {
            Ok(wake) => Some(wake),
            Err(broadcast::error::RecvError::Lagged(_)) => Some(Wake::All),
            Err(broadcast::error::RecvError::Closed) => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_lagging_receiver_is_told_to_look_everywhere() {
        let (tx, rx) = broadcast::channel(2);
        let mut wakeups = Wakeups::new(rx);
        for name in ["a", "b", "c", "d"] {
            tx.send(Wake::Partner(name.into())).unwrap();
        }
        assert_eq!(wakeups.next().await, Some(Wake::All));
        assert_eq!(wakeups.next().await, Some(Wake::Partner("c".into())));
        assert_eq!(wakeups.next().await, Some(Wake::Partner("d".into())));
        drop(tx);
        assert_eq!(wakeups.next().await, None);
    }
}
