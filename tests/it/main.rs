//! Integration tests: one binary, a module per capability.

mod claims;
mod durability;
mod input;
mod ledger;
mod support;
mod transactional;
mod transitions;
