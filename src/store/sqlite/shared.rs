//! What engine instances share besides the work, in SQLite: each partner's
//! circuit (columns of `liaison_partners`) and roles one instance plays at
//! a time (`liaison_roles`). Every decision was made by
//! `rules::circuit` / `rules::role`; this reads and writes. Writes run on
//! the one writer (`BEGIN IMMEDIATE`, so several processes on one file take
//! turns), which is all the locking SQLite needs.

use chrono::{DateTime, Utc};
use rusqlite::{Connection, OptionalExtension, Row, params};

use super::db::{corrupt, db_err, from_millis, to_millis};
use super::driver::Sql;
use crate::error::Result;
use crate::model::circuit::{CircuitState, SharedCircuit};
use crate::store::RoleLease;
use crate::store::driver::SharedDriver;

const CIRCUIT_COLUMNS: &str =
    "partner, circuit_state, circuit_failures, circuit_since, circuit_until, circuit_probe";

fn circuit_from_row(row: &Row<'_>) -> rusqlite::Result<SharedCircuit> {
    let state: String = row.get(1)?;
    let mut circuit = SharedCircuit::closed(row.get::<_, String>(0)?);
    circuit.state = state
        .parse::<CircuitState>()
        .map_err(|e| corrupt("circuit_state", e))?;
    circuit.consecutive_failures = row.get(2)?;
    circuit.since = row.get::<_, Option<i64>>(3)?.map(from_millis);
    circuit.until = row.get::<_, Option<i64>>(4)?.map(from_millis);
    circuit.probe_holder = row.get(5)?;
    Ok(circuit)
}

/// One partner's circuit (closed with no failures when it has no row).
pub(super) fn circuit_on(conn: &Connection, partner: &str) -> Result<SharedCircuit> {
    Ok(conn
        .prepare_cached(&format!(
            "SELECT {CIRCUIT_COLUMNS} FROM liaison_partners WHERE partner = ?1"
        ))
        .and_then(|mut stmt| {
            stmt.query_row(params![partner], circuit_from_row)
                .optional()
        })
        .map_err(db_err("read a partner's circuit"))?
        .unwrap_or_else(|| SharedCircuit::closed(partner)))
}

/// Every partner's circuit that has a row, by partner.
pub(super) fn circuits_on(conn: &Connection) -> Result<Vec<SharedCircuit>> {
    conn.prepare_cached(&format!(
        "SELECT {CIRCUIT_COLUMNS} FROM liaison_partners ORDER BY partner"
    ))
    .and_then(|mut stmt| stmt.query_map([], circuit_from_row)?.collect())
    .map_err(db_err("read partner circuits"))
}

const ROLE_COLUMNS: &str = "role, holder, since, expires_at";

fn role_from_row(row: &Row<'_>) -> rusqlite::Result<RoleLease> {
    Ok(RoleLease {
        role: row.get(0)?,
        holder: row.get(1)?,
        since: from_millis(row.get(2)?),
        expires_at: from_millis(row.get(3)?),
    })
}

/// Every role's lease (lapsed ones too), by role.
pub(super) fn roles_on(conn: &Connection) -> Result<Vec<RoleLease>> {
    conn.prepare_cached(&format!(
        "SELECT {ROLE_COLUMNS} FROM liaison_roles WHERE holder <> '' ORDER BY role"
    ))
    .and_then(|mut stmt| stmt.query_map([], role_from_row)?.collect())
    .map_err(db_err("read role leases"))
}

impl SharedDriver for Sql<'_> {
    async fn lock_circuit(&self, partner: &str, now: DateTime<Utc>) -> Result<SharedCircuit> {
        self.0
            .prepare_cached(
                "INSERT INTO liaison_partners (partner, updated_at) VALUES (?1, ?2) \
                 ON CONFLICT (partner) DO NOTHING",
            )
            .and_then(|mut stmt| stmt.execute(params![partner, to_millis(now)]))
            .map_err(db_err("record a partner"))?;
        circuit_on(self.0, partner)
    }

    async fn write_circuit(&self, circuit: &SharedCircuit, now: DateTime<Utc>) -> Result<()> {
        self.0
            .prepare_cached(
                "UPDATE liaison_partners SET circuit_state = ?2, circuit_failures = ?3, \
                   circuit_since = ?4, circuit_until = ?5, circuit_probe = ?6, updated_at = ?7 \
                 WHERE partner = ?1",
            )
            .and_then(|mut stmt| {
                stmt.execute(params![
                    circuit.partner,
                    circuit.state.as_str(),
                    circuit.consecutive_failures,
                    circuit.since.map(to_millis),
                    circuit.until.map(to_millis),
                    circuit.probe_holder,
                    to_millis(now),
                ])
            })
            .map_err(db_err("write a partner's circuit"))?;
        Ok(())
    }

    async fn lock_role(&self, role: &str) -> Result<RoleLease> {
        self.0
            .prepare_cached(
                "INSERT INTO liaison_roles (role, holder, since, expires_at) VALUES (?1, '', 0, 0) \
                 ON CONFLICT (role) DO NOTHING",
            )
            .and_then(|mut stmt| stmt.execute(params![role]))
            .map_err(db_err("record a role"))?;
        self.0
            .prepare_cached(&format!(
                "SELECT {ROLE_COLUMNS} FROM liaison_roles WHERE role = ?1"
            ))
            .and_then(|mut stmt| stmt.query_row(params![role], role_from_row))
            .map_err(db_err("read a role's lease"))
    }

    async fn write_role(&self, lease: &RoleLease) -> Result<()> {
        self.0
            .prepare_cached(
                "UPDATE liaison_roles SET holder = ?2, since = ?3, expires_at = ?4 WHERE role = ?1",
            )
            .and_then(|mut stmt| {
                stmt.execute(params![
                    lease.role,
                    lease.holder,
                    to_millis(lease.since),
                    to_millis(lease.expires_at),
                ])
            })
            .map_err(db_err("write a role's lease"))?;
        Ok(())
    }
}
