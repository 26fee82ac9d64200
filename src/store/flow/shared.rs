//! What engine instances share besides the work, written once: a partner's
//! circuit and the roles one instance plays at a time. Each step locks the
//! row, decides with [`crate::store::rules::circuit`] or
//! [`crate::store::rules::role`], and writes what was decided.

use std::time::Duration;

use chrono::{DateTime, Utc};

use crate::error::{Error, Result};
use crate::store::driver::SharedDriver;
use crate::store::rules::{circuit, role};
use crate::store::{CircuitOutcome, CircuitStep, RoleLease};

/// Apply one step to `partner`'s circuit.
pub(crate) async fn circuit_step<D: SharedDriver>(
    d: &D,
    partner: &str,
    step: &CircuitStep,
    now: DateTime<Utc>,
) -> Result<CircuitOutcome> {
    check_step(partner, step)?;
    let row = d.lock_circuit(partner, now).await?;
    let decision = circuit::step(&row, step, now);
    let circuit = match decision.write {
        Some(write) => {
            d.write_circuit(&write, now).await?;
            write
        }
        None => row.clone(),
    };
    Ok(CircuitOutcome {
        changed: circuit.state != row.state,
        circuit,
        admission: decision.admission,
    })
}

/// Take or renew `role` for `holder`; `true` when it holds it now.
pub(crate) async fn claim_role<D: SharedDriver>(
    d: &D,
    name: &str,
    holder: &str,
    now: DateTime<Utc>,
    lease_for: Duration,
) -> Result<bool> {
    check_role(name, holder)?;
    let current = d.lock_role(name).await?;
    match role::claim(Some(&current), name, holder, now, lease_for) {
        Some(lease) => {
            d.write_role(&lease).await?;
            Ok(true)
        }
        None => Ok(false),
    }
}

/// Give `role` up at `now` if `holder` holds it, so another instance may
/// take it at once.
pub(crate) async fn release_role<D: SharedDriver>(
    d: &D,
    name: &str,
    holder: &str,
    now: DateTime<Utc>,
) -> Result<()> {
    check_role(name, holder)?;
    let current = d.lock_role(name).await?;
    if role::releases(Some(&current), holder) {
        d.write_role(&RoleLease {
            expires_at: now.min(current.expires_at),
            ..current
        })
        .await?;
    }
    Ok(())
}

/// A step names a valid partner and, where it names one, an instance.
fn check_step(partner: &str, step: &CircuitStep) -> Result<()> {
    crate::model::submission::validate_partner(partner)?;
    match step {
        CircuitStep::Admit { instance, .. } | CircuitStep::ReleaseProbe { instance }
            if instance.trim().is_empty() =>
        {
            Err(Error::invalid("instance", "name the engine instance"))
        }
        _ => Ok(()),
    }
}

/// A role and its holder are named (an empty holder is nobody's lease).
fn check_role(role: &str, holder: &str) -> Result<()> {
    if role.trim().is_empty() {
        return Err(Error::invalid("role", "name the role"));
    }
    if holder.trim().is_empty() {
        return Err(Error::invalid("holder", "name the engine instance"));
    }
    Ok(())
}
