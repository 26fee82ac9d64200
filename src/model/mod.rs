//! The domain types every layer shares: submissions and their states, the
//! timeline's events and attempts, callbacks and their dispositions, alerts
//! and problem classes, circuit states. `store`, `engine`, `ops`, `http` and
//! `callback` depend on this module, never on each other for these types;
//! it depends on nothing of theirs (only on `error`, which names its ids).
//!
//! Everything here is public through the paths users know: the crate root,
//! `liaison::callback`, `liaison::ops::alerts` and `liaison::engine`.

pub(crate) mod alert;
pub(crate) mod callback;
pub(crate) mod circuit;
pub(crate) mod delivery;
pub(crate) mod event;
pub(crate) mod money;
pub(crate) mod notification;
pub(crate) mod result;
pub(crate) mod submission;
pub(crate) mod traffic;
