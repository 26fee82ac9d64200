//! Scenarios 5-6 (next step).

use crate::Ctx;

pub(crate) async fn http_end_to_end(_ctx: &Ctx) {}

pub(crate) async fn ingest(_ctx: &Ctx) {}
