//! Roles one engine instance plays at a time (the alert evaluator): who may
//! take or renew a role's lease, decided once for every store.

use std::time::Duration;

use chrono::{DateTime, Utc};

use crate::store::RoleLease;
use crate::store::common::saturating_after;

/// The lease to write when `holder` asks for `role` at `now`, or `None`
/// when another instance holds it and its lease has not run out. The
/// holder renews (its `since` kept); a free or lapsed role is taken.
pub(crate) fn claim(
    current: Option<&RoleLease>,
    role: &str,
    holder: &str,
    now: DateTime<Utc>,
    lease_for: Duration,
) -> Option<RoleLease> {
    let since = match current {
        Some(held) if held.holder == holder => held.since,
        Some(held) if held.expires_at > now => return None,
        _ => now,
    };
    Some(RoleLease {
        role: role.to_owned(),
        holder: holder.to_owned(),
        since,
        expires_at: saturating_after(now, lease_for),
    })
}

/// Whether `holder` may give the role up: only while it holds it.
pub(crate) fn releases(current: Option<&RoleLease>, holder: &str) -> bool {
    current.is_some_and(|held| held.holder == holder)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::rules::fixtures::t;

    const LEASE: Duration = Duration::from_secs(60);

    #[test]
    fn a_free_role_is_taken_renewed_by_its_holder_and_refused_to_others() {
        let first = claim(None, "alert_evaluator", "a", t(0), LEASE).unwrap();
        assert_eq!((first.holder.as_str(), first.since), ("a", t(0)));
        assert_eq!(first.expires_at, t(60_000));
        // Another instance while it lives: refused.
        assert_eq!(
            claim(Some(&first), "alert_evaluator", "b", t(59_999), LEASE),
            None
        );
        // The holder renews: same start, later end.
        let renewed = claim(Some(&first), "alert_evaluator", "a", t(30_000), LEASE).unwrap();
        assert_eq!((renewed.since, renewed.expires_at), (t(0), t(90_000)));
    }

    #[test]
    fn a_lapsed_lease_is_taken_over_and_the_old_holder_cannot_renew_it() {
        let held = claim(None, "alert_evaluator", "a", t(0), LEASE).unwrap();
        // "a" died: at the end of its lease "b" takes over.
        let taken = claim(Some(&held), "alert_evaluator", "b", t(60_000), LEASE).unwrap();
        assert_eq!((taken.holder.as_str(), taken.since), ("b", t(60_000)));
        // "a" comes back: "b" holds it now.
        assert_eq!(
            claim(Some(&taken), "alert_evaluator", "a", t(61_000), LEASE),
            None
        );
        assert!(!releases(Some(&taken), "a"));
        assert!(releases(Some(&taken), "b"));
        assert!(!releases(None, "b"));
    }

    #[test]
    fn a_lease_for_ever_saturates() {
        let held = claim(None, "r", "a", t(0), Duration::MAX).unwrap();
        assert_eq!(held.expires_at, DateTime::<Utc>::MAX_UTC);
    }
}
