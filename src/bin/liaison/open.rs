//! Opening the outbox: never create a file, never migrate one.

use std::path::Path;

use liaison::rusqlite::{Connection, OpenFlags};
use liaison::store::{SCHEMA_VERSION, SqliteStore};

use crate::fail::Fail;

/// Open the store at `path`, refusing a missing file, a file that is not a
/// liaison outbox, and a schema other than the one this build knows (opening
/// an older one would migrate the host's database under it).
pub(crate) fn open(path: &Path) -> Result<SqliteStore, Fail> {
    let shown = path.display();
    match std::fs::metadata(path) {
        Ok(meta) if meta.is_file() => {}
        Ok(_) => {
            return Err(Fail::usage(format!(
                "no outbox at {shown}: it is not a file"
            )));
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(Fail::usage(format!("no outbox at {shown}")));
        }
        Err(e) => return Err(Fail::usage(format!("cannot read {shown}: {e}"))),
    }
    check_schema(path)?;
    SqliteStore::open(path).map_err(Fail::from)
}

fn check_schema(path: &Path) -> Result<(), Fail> {
    let shown = path.display();
    // Read-write without CREATE: the file is never created, and the WAL
    // index can be opened as the host's own connections do.
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(|e| Fail::usage(format!("cannot open {shown}: {e}")))?;
    let has_table: bool = conn
        .query_row(
            "SELECT EXISTS (SELECT 1 FROM sqlite_master \
             WHERE type = 'table' AND name = 'liaison_migrations')",
            [],
            |row| row.get(0),
        )
        .map_err(|e| Fail::usage(format!("{shown} is not an SQLite database ({e})")))?;
    if !has_table {
        return Err(Fail::usage(format!(
            "{shown} is not a liaison outbox: it has no liaison_* tables"
        )));
    }
    let version: i64 = conn
        .query_row(
            "SELECT COALESCE(MAX(version), 0) FROM liaison_migrations",
            [],
            |row| row.get(0),
        )
        .map_err(|e| Fail::usage(format!("cannot read the schema version of {shown} ({e})")))?;
    if version > SCHEMA_VERSION {
        return Err(Fail::usage(format!(
            "the outbox at {shown} has schema version {version}, newer than this CLI knows \
             ({SCHEMA_VERSION}); use the liaison CLI of the host application's release"
        )));
    }
    if version < SCHEMA_VERSION {
        return Err(Fail::usage(format!(
            "the outbox at {shown} has schema version {version}, older than this CLI's \
             ({SCHEMA_VERSION}); the CLI does not migrate a host's database: use the liaison \
             CLI of the host application's release"
        )));
    }
    Ok(())
}
