//! Scenarios 7-9 (later step).

use crate::Ctx;

pub(crate) fn child_main() -> Option<i32> {
    None
}

pub(crate) async fn drain_on_history(ctx: &Ctx) {
    let _ = ctx.drain_secs;
}

pub(crate) async fn ops_queries(_ctx: &Ctx) {}

pub(crate) fn peak_rss(_ctx: &Ctx) {}
