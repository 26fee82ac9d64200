//! Opening the outbox, an SQLite file or a PostgreSQL schema: never create
//! one, never migrate one. Past opening, every command goes through the
//! same `Liaison` API whatever the store.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use liaison::rusqlite::{Connection, OpenFlags};
use liaison::store::{
    OutboxStore, PostgresConfig, PostgresStore, PostgresTls, SCHEMA_VERSION, SqliteStore,
};

use crate::fail::Fail;
use crate::render::shell_quote;

/// Where the outbox is, as `--db` (and `--schema`) named it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Target {
    /// An SQLite file.
    Sqlite(PathBuf),
    /// A PostgreSQL database, and the schema of its `liaison_*` tables
    /// (`None`: the connection's own search path, usually `public`).
    Postgres {
        url: String,
        schema: Option<String>,
        /// A PEM file of CA certificates to verify the server with.
        ca_file: Option<PathBuf>,
    },
}

/// How long the CLI waits to reach PostgreSQL (or for a pooled
/// connection) before it says the database cannot be reached.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

impl Target {
    /// `postgres://` and `postgresql://` name a PostgreSQL database; any
    /// other value is an SQLite file's path. `--schema` and `--ca-file` only
    /// make sense for PostgreSQL.
    pub(crate) fn new(
        db: PathBuf,
        schema: Option<String>,
        ca_file: Option<PathBuf>,
    ) -> Result<Self, Fail> {
        let url = db
            .to_str()
            .filter(|s| is_postgres_url(s))
            .map(str::to_owned);
        match url {
            Some(url) => Ok(Target::Postgres {
                url,
                schema,
                ca_file,
            }),
            None if schema.is_some() => Err(Fail::usage(
                "--schema (LIAISON_SCHEMA) names a PostgreSQL schema; --db is an SQLite file \
                 here (a PostgreSQL outbox is named by a postgres:// URL)",
            )),
            None if ca_file.is_some() => Err(Fail::usage(
                "--ca-file is for a PostgreSQL server; --db is an SQLite file here",
            )),
            None => Ok(Target::Sqlite(db)),
        }
    }

    /// How a person is shown this outbox: the file, or the URL without its
    /// password, and the schema.
    pub(crate) fn shown(&self) -> String {
        match self {
            Target::Sqlite(path) => path.display().to_string(),
            Target::Postgres { url, schema, .. } => match schema {
                Some(schema) => format!("{} (schema {schema})", without_password(url)),
                None => without_password(url),
            },
        }
    }

    /// The start of a command line that opens this outbox again, for the
    /// commands `status` suggests. A password in the URL is left out: it
    /// would end up in terminals, tickets and shell history.
    pub(crate) fn command(&self) -> String {
        match self {
            Target::Sqlite(path) => {
                format!("liaison --db {}", shell_quote(&path.display().to_string()))
            }
            Target::Postgres { url, schema, .. } => {
                let mut cli = format!("liaison --db {}", shell_quote(&without_password(url)));
                if let Some(schema) = schema {
                    cli.push_str(" --schema ");
                    cli.push_str(&shell_quote(schema));
                }
                cli
            }
        }
    }
}

pub(crate) fn is_postgres_url(s: &str) -> bool {
    let lower = s.trim_start().to_ascii_lowercase();
    lower.starts_with("postgres://") || lower.starts_with("postgresql://")
}

/// The URL with the password of its user part and any `password=` query
/// parameter removed.
pub(crate) fn without_password(url: &str) -> String {
    let (scheme, rest) = url.split_once("://").unwrap_or(("", url));
    let end = rest.find(['/', '?']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(end);
    let authority = match authority.rsplit_once('@') {
        Some((user, hosts)) => {
            let user = user.split_once(':').map_or(user, |(name, _)| name);
            format!("{user}@{hosts}")
        }
        None => authority.to_owned(),
    };
    let tail = match tail.split_once('?') {
        Some((path, query)) => {
            let kept: Vec<&str> = query
                .split('&')
                .filter(|p| !p.to_ascii_lowercase().starts_with("password="))
                .collect();
            if kept.is_empty() {
                path.to_owned()
            } else {
                format!("{path}?{}", kept.join("&"))
            }
        }
        None => tail.to_owned(),
    };
    format!("{scheme}://{authority}{tail}")
}

/// TLS as the URL and `--ca-file` ask: verified against the CA file when
/// one is given; against the platform's trust store when the URL requires
/// TLS (`sslmode=require`, `verify-ca`, `verify-full`); else none (a URL
/// with `sslmode=prefer` then talks plain TCP, as the driver does).
pub(crate) fn tls_for(url: &str, ca_file: Option<&Path>) -> Result<PostgresTls, Fail> {
    if let Some(path) = ca_file {
        let pem = std::fs::read(path)
            .map_err(|e| Fail::usage(format!("cannot read the CA file {}: {e}", path.display())))?;
        return Ok(PostgresTls::RootsPem(pem));
    }
    let query = url.split_once('?').map_or("", |(_, q)| q);
    let requires = query.split('&').any(|p| {
        matches!(
            p.to_ascii_lowercase().as_str(),
            "sslmode=require" | "sslmode=verify-ca" | "sslmode=verify-full"
        )
    });
    Ok(if requires {
        PostgresTls::PlatformRoots
    } else {
        PostgresTls::Disabled
    })
}

/// Open the outbox `target` names, refusing what is not a liaison outbox
/// at this build's schema version and creating nothing.
pub(crate) async fn open(target: &Target) -> Result<Arc<dyn OutboxStore>, Fail> {
    match target {
        Target::Sqlite(path) => Ok(Arc::new(open_sqlite(path)?)),
        Target::Postgres {
            url,
            schema,
            ca_file,
        } => {
            let mut config = PostgresConfig::default()
                .migrate(false)
                .pool_size(2)
                .acquire_timeout(CONNECT_TIMEOUT)
                .tls(tls_for(url, ca_file.as_deref())?);
            if let Some(schema) = schema {
                config = config.schema(schema.clone());
            }
            let store = PostgresStore::connect(url, config)
                .await
                .map_err(|e| explain_open(target, e))?;
            Ok(Arc::new(store))
        }
    }
}

/// An error from opening a PostgreSQL outbox, as a person reads it.
fn explain_open(target: &Target, err: liaison::Error) -> Fail {
    use liaison::{Error, ErrorKind};
    let shown = target.shown();
    let with = |code: u8, message: String| Fail { code, message };
    match &err {
        Error::SchemaTooOld { found, required } => with(
            2,
            format!(
                "the outbox at {shown} has schema version {found}, older than this CLI's \
                 ({required}); the CLI does not migrate a host's database: use the liaison \
                 CLI of the host application's release"
            ),
        ),
        Error::SchemaTooNew { found, supported } => with(
            2,
            format!(
                "the outbox at {shown} has schema version {found}, newer than this CLI knows \
                 ({supported}); use the liaison CLI of the host application's release"
            ),
        ),
        _ => match err.kind() {
            ErrorKind::NotFound => with(
                2,
                format!("no outbox at {shown}: {err} (the CLI never creates one)"),
            ),
            ErrorKind::InvalidInput => {
                let fail = Fail::from(err);
                with(2, format!("cannot open {shown}: {}", fail.message))
            }
            _ => {
                let fail = Fail::from(err);
                with(
                    fail.code,
                    format!("cannot open the outbox at {shown}: {}", fail.message),
                )
            }
        },
    }
}

/// Open the store at `path`, refusing a missing file, a file that is not a
/// liaison outbox, and a schema other than the one this build knows (opening
/// an older one would migrate the host's database under it).
fn open_sqlite(path: &Path) -> Result<SqliteStore, Fail> {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_never_leave_the_url_shown() {
        for (url, shown) in [
            (
                "postgres://ops:s3cret@db.internal:5432/app",
                "postgres://ops@db.internal:5432/app",
            ),
            (
                "postgresql://ops:p%40ss@db/app?sslmode=require&password=x",
                "postgresql://ops@db/app?sslmode=require",
            ),
            ("postgres://db/app?password=x", "postgres://db/app"),
            ("postgres://ops@db/app", "postgres://ops@db/app"),
            ("postgres://a:b@c", "postgres://a@c"),
        ] {
            assert_eq!(without_password(url), shown, "{url}");
        }
        let target = Target::new(
            "postgres://ops:s3cret@db/app".into(),
            Some("liaison".into()),
            None,
        )
        .unwrap();
        assert_eq!(
            target.command(),
            "liaison --db postgres://ops@db/app --schema liaison"
        );
        assert!(!target.shown().contains("s3cret"));
    }

    #[test]
    fn a_url_names_postgres_and_anything_else_a_file() {
        assert!(matches!(
            Target::new("POSTGRESQL://db/app".into(), None, None),
            Ok(Target::Postgres { .. })
        ));
        assert_eq!(
            Target::new("outbox.db".into(), None, None).unwrap(),
            Target::Sqlite("outbox.db".into())
        );
        let fail = Target::new("outbox.db".into(), Some("s".into()), None).unwrap_err();
        assert_eq!(fail.code, 2);
        assert!(fail.message.contains("--schema"), "{}", fail.message);
        assert_eq!(
            Target::new("outbox.db".into(), None, Some("ca.pem".into()))
                .unwrap_err()
                .code,
            2
        );
    }

    #[test]
    fn tls_follows_the_urls_sslmode_or_the_ca_file() {
        assert_eq!(
            tls_for("postgres://db/app", None).unwrap(),
            PostgresTls::Disabled
        );
        assert_eq!(
            tls_for("postgres://db/app?sslmode=prefer", None).unwrap(),
            PostgresTls::Disabled
        );
        for mode in ["require", "verify-ca", "VERIFY-FULL"] {
            assert_eq!(
                tls_for(&format!("postgres://db/app?x=1&sslmode={mode}"), None).unwrap(),
                PostgresTls::PlatformRoots,
                "{mode}"
            );
        }
        let dir = tempfile::tempdir().unwrap();
        let ca = dir.path().join("ca.pem");
        std::fs::write(&ca, b"-----BEGIN CERTIFICATE-----\n").unwrap();
        assert_eq!(
            tls_for("postgres://db/app", Some(&ca)).unwrap(),
            PostgresTls::RootsPem(b"-----BEGIN CERTIFICATE-----\n".to_vec())
        );
        let missing = tls_for("postgres://db/app", Some(&dir.path().join("no.pem")));
        assert_eq!(missing.unwrap_err().code, 2);
    }
}
