//! Engine instances as they record themselves: who runs, where, for which
//! partners, and when each last beat.

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::error::{Error, Result};

/// One running (or lately running) engine: a row of `liaison_instances`,
/// written by [`crate::Liaison::start`] and refreshed every
/// [`crate::engine::EngineSettings::heartbeat_interval`]. Whether it is live
/// is decided by health ([`crate::ops::InstanceHealth::live`]), from the
/// interval the instance recorded, so every reader judges it the same way.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct Instance {
    /// A fresh id per start (a UUID).
    pub id: String,
    /// The host name of the machine it runs on.
    pub host: String,
    /// Its process id.
    pub pid: u32,
    /// The liaison version it runs.
    pub version: String,
    /// When it started.
    pub started_at: DateTime<Utc>,
    /// The partners it dispatches for.
    pub partners: Vec<String>,
    /// How often it beats.
    #[serde(rename = "beat_interval_ms", serialize_with = "as_millis")]
    pub beat_interval: Duration,
    /// Its last beat (on a graceful shutdown, the time it stopped).
    pub last_beat_at: DateTime<Utc>,
    /// When it shut down gracefully; `None` while it runs, or when it died.
    pub stopped_at: Option<DateTime<Utc>>,
}

fn as_millis<S: serde::Serializer>(d: &Duration, s: S) -> std::result::Result<S::Ok, S::Error> {
    s.serialize_u64(u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

impl Instance {
    /// An instance starting now on this machine, in this process, for
    /// `partners`, beating every `beat_interval`.
    pub fn this_process(partners: Vec<String>, beat_interval: Duration) -> Self {
        let now = crate::clock::now();
        Instance {
            id: uuid::Uuid::now_v7().to_string(),
            host: host_name(),
            pid: std::process::id(),
            version: env!("CARGO_PKG_VERSION").to_owned(),
            started_at: now,
            partners,
            beat_interval,
            last_beat_at: now,
            stopped_at: None,
        }
    }

    /// `partners` as stored: a JSON array.
    pub(crate) fn partners_json(&self) -> String {
        serde_json::to_string(&self.partners).unwrap_or_else(|_| "[]".to_owned())
    }

    /// A stored partner list read back.
    pub(crate) fn partners_from_json(text: &str) -> Result<Vec<String>> {
        serde_json::from_str(text)
            .map_err(|e| Error::corrupt("liaison_instances.partners", Some(Box::new(e))))
    }
}

/// This machine's name, as the operating system knows it (the kernel's on
/// Linux, `COMPUTERNAME` on Windows, `HOSTNAME` elsewhere); "unknown" when
/// none can be read. It is a label for people, never used to decide.
fn host_name() -> String {
    let from_file = |path: &str| {
        std::fs::read_to_string(path)
            .ok()
            .map(|s| s.trim().to_owned())
    };
    from_file("/proc/sys/kernel/hostname")
        .or_else(|| from_file("/etc/hostname"))
        .or_else(|| std::env::var("COMPUTERNAME").ok())
        .or_else(|| std::env::var("HOSTNAME").ok())
        .map(|name| name.trim().chars().take(255).collect::<String>())
        .filter(|name| !name.is_empty())
        .unwrap_or_else(|| "unknown".to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_process_names_itself() {
        let i = Instance::this_process(vec!["lab".into()], Duration::from_secs(5));
        assert_eq!(i.pid, std::process::id());
        assert!(!i.host.is_empty());
        assert_eq!(i.version, env!("CARGO_PKG_VERSION"));
        assert_eq!(
            Instance::partners_from_json(&i.partners_json()).unwrap(),
            ["lab"]
        );
        assert!(Instance::partners_from_json("{").is_err());
    }
}
