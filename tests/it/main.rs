//! Integration tests: one binary, a module per capability.

#[cfg(all(feature = "mock", feature = "http"))]
mod alert_classes;
#[cfg(all(feature = "mock", feature = "http"))]
mod callbacks;
#[cfg(feature = "cli")]
mod cli;
#[cfg(feature = "cli")]
mod cli_privacy;
mod conformance;
#[cfg(feature = "mock")]
mod dispatch;
mod durability;
#[cfg(feature = "http")]
mod edge_limits;
mod fuzz_corpus;
#[cfg(feature = "mock")]
mod global_limits;
mod health;
#[cfg(feature = "http")]
mod hostile;
mod migrations;
mod model;
#[cfg(all(feature = "http", feature = "mock"))]
mod ops_desk;
#[cfg(all(feature = "http", feature = "mock"))]
mod ops_page;
mod recovery;
#[cfg(all(feature = "mock", feature = "http"))]
mod reliability;
#[cfg(feature = "mock")]
mod results;
mod retention;
#[cfg(all(feature = "postgres", feature = "mock", feature = "http"))]
mod scale_out;
#[cfg(all(feature = "postgres", feature = "mock", feature = "http"))]
mod shared_circuit;
mod sqlite_only;
mod support;
mod transactional;
