//! What engine instances share besides the work, in PostgreSQL: each
//! partner's circuit (columns of `liaison_partners`) and roles one instance
//! plays at a time (`liaison_roles`). Every decision was made by
//! `rules::circuit` / `rules::role`; this reads, locks (`FOR UPDATE` on the
//! one row, so concurrent steps of several instances queue up) and writes.

use chrono::{DateTime, Utc};
use tokio_postgres::Row;

use super::db::{Db, clean, get};
use crate::error::Result;
use crate::model::circuit::{CircuitState, SharedCircuit};
use crate::store::RoleLease;
use crate::store::common::{from_millis, to_millis};
use crate::store::driver::SharedDriver;

const CIRCUIT_COLUMNS: &str =
    "partner, circuit_state, circuit_failures, circuit_since, circuit_until, circuit_probe";

fn circuit_from_row(row: &Row) -> Result<SharedCircuit> {
    let mut circuit = SharedCircuit::closed(get::<String>(row, 0)?);
    circuit.state = get::<String>(row, 1)?.parse::<CircuitState>()?;
    circuit.consecutive_failures = u32::try_from(get::<i32>(row, 2)?).unwrap_or(0);
    circuit.since = get::<Option<i64>>(row, 3)?.map(from_millis);
    circuit.until = get::<Option<i64>>(row, 4)?.map(from_millis);
    circuit.probe_holder = get(row, 5)?;
    Ok(circuit)
}

/// One partner's circuit (closed with no failures when it has no row).
pub(super) async fn circuit_on(db: &Db<'_>, partner: &str) -> Result<SharedCircuit> {
    db.query_opt(
        &format!("SELECT {CIRCUIT_COLUMNS} FROM liaison_partners WHERE partner = $1"),
        &[&partner],
        "read a partner's circuit",
    )
    .await?
    .as_ref()
    .map(circuit_from_row)
    .transpose()
    .map(|found| found.unwrap_or_else(|| SharedCircuit::closed(partner)))
}

/// Every partner's circuit that has a row, by partner.
pub(super) async fn circuits_on(db: &Db<'_>) -> Result<Vec<SharedCircuit>> {
    db.query(
        &format!("SELECT {CIRCUIT_COLUMNS} FROM liaison_partners ORDER BY partner"),
        &[],
        "read partner circuits",
    )
    .await?
    .iter()
    .map(circuit_from_row)
    .collect()
}

const ROLE_COLUMNS: &str = "role, holder, since, expires_at";

fn role_from_row(row: &Row) -> Result<RoleLease> {
    Ok(RoleLease {
        role: get(row, 0)?,
        holder: get(row, 1)?,
        since: from_millis(get(row, 2)?),
        expires_at: from_millis(get(row, 3)?),
    })
}

/// Every role's lease (lapsed ones too), by role.
pub(super) async fn roles_on(db: &Db<'_>) -> Result<Vec<RoleLease>> {
    db.query(
        &format!("SELECT {ROLE_COLUMNS} FROM liaison_roles WHERE holder <> '' ORDER BY role"),
        &[],
        "read role leases",
    )
    .await?
    .iter()
    .map(role_from_row)
    .collect()
}

impl SharedDriver for Db<'_> {
    async fn lock_circuit(&self, partner: &str, now: DateTime<Utc>) -> Result<SharedCircuit> {
        // A row to lock first: two instances creating it at once both go on
        // to lock the one row that won.
        self.execute(
            "INSERT INTO liaison_partners (partner, updated_at) VALUES ($1, $2) \
             ON CONFLICT (partner) DO NOTHING",
            &[&partner, &to_millis(now)],
            "record a partner",
        )
        .await?;
        let row = self
            .query_one(
                &format!(
                    "SELECT {CIRCUIT_COLUMNS} FROM liaison_partners WHERE partner = $1 FOR UPDATE"
                ),
                &[&partner],
                "lock a partner's circuit",
            )
            .await?;
        circuit_from_row(&row)
    }

    async fn write_circuit(&self, circuit: &SharedCircuit, now: DateTime<Utc>) -> Result<()> {
        let failures = i32::try_from(circuit.consecutive_failures).unwrap_or(i32::MAX);
        self.execute(
            "UPDATE liaison_partners SET circuit_state = $2, circuit_failures = $3, \
               circuit_since = $4, circuit_until = $5, circuit_probe = $6, updated_at = $7 \
             WHERE partner = $1",
            &[
                &circuit.partner,
                &circuit.state.as_str(),
                &failures,
                &circuit.since.map(to_millis),
                &circuit.until.map(to_millis),
                &circuit.probe_holder.as_deref().map(clean),
                &to_millis(now),
            ],
            "write a partner's circuit",
        )
        .await
        .map(drop)
    }

    async fn lock_role(&self, role: &str) -> Result<RoleLease> {
        let role = clean(role);
        self.execute(
            "INSERT INTO liaison_roles (role, holder, since, expires_at) VALUES ($1, '', 0, 0) \
             ON CONFLICT (role) DO NOTHING",
            &[&role.as_ref()],
            "record a role",
        )
        .await?;
        let row = self
            .query_one(
                &format!("SELECT {ROLE_COLUMNS} FROM liaison_roles WHERE role = $1 FOR UPDATE"),
                &[&role.as_ref()],
                "lock a role's lease",
            )
            .await?;
        role_from_row(&row)
    }

    async fn write_role(&self, lease: &RoleLease) -> Result<()> {
        self.execute(
            "UPDATE liaison_roles SET holder = $2, since = $3, expires_at = $4 WHERE role = $1",
            &[
                &clean(&lease.role).as_ref(),
                &clean(&lease.holder).as_ref(),
                &to_millis(lease.since),
                &to_millis(lease.expires_at),
            ],
            "write a role's lease",
        )
        .await
        .map(drop)
    }
}
