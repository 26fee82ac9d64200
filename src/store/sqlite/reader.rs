//! A small pool of read connections. WAL lets them read while the writer
//! writes; each read runs on tokio's blocking pool.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use rusqlite::Connection;

use super::{SqliteConfig, connect};
use crate::error::{Error, Result};

#[derive(Debug)]
pub(super) struct ReadPool {
    path: PathBuf,
    config: SqliteConfig,
    idle: Mutex<Vec<Connection>>,
}

impl ReadPool {
    pub(super) fn new(path: PathBuf, config: SqliteConfig) -> Self {
        ReadPool {
            path,
            config,
            idle: Mutex::new(Vec::new()),
        }
    }

    fn checkout(&self) -> Result<Connection> {
        let idle = self.idle.lock().unwrap_or_else(|p| p.into_inner()).pop();
        match idle {
            Some(conn) => Ok(conn),
            None => {
                let conn = connect(&self.path, &self.config)?;
                conn.execute_batch("PRAGMA query_only = ON")
                    .map_err(super::db::db_err("open read connection"))?;
                Ok(conn)
            }
        }
    }

    fn checkin(&self, conn: Connection) {
        let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
        if idle.len() < self.config.read_connections {
            idle.push(conn);
        }
    }

    /// Run `f` on a read connection off the async threads.
    pub(super) async fn read<T, F>(self: &Arc<Self>, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T> + Send + 'static,
    {
        let pool = Arc::clone(self);
        tokio::task::spawn_blocking(move || {
            let conn = pool.checkout()?;
            let result = f(&conn);
            pool.checkin(conn);
            result
        })
        .await
        .map_err(|e| Error::Storage {
            operation: "read task",
            source: Box::new(e),
        })?
    }
}
