//! The table and the JSON lines.

use serde_json::json;

use crate::Ctx;

/// One measured figure against its baseline.
#[derive(Debug, Clone)]
pub(crate) struct Figure {
    /// Scenario id, e.g. "1a".
    pub(crate) id: &'static str,
    pub(crate) name: String,
    pub(crate) unit: &'static str,
    pub(crate) liaison: f64,
    pub(crate) baseline: f64,
    pub(crate) baseline_name: &'static str,
    /// Human-readable target, e.g. ">= 0.8x".
    pub(crate) target: &'static str,
    /// Whether the target is met (`None`: no target).
    pub(crate) met: Option<bool>,
    pub(crate) n: usize,
    pub(crate) note: String,
}

impl Figure {
    /// liaison / baseline; for times (lower is better) baseline / liaison
    /// would be the speed-up, but we always print liaison / baseline.
    pub(crate) fn ratio(&self) -> f64 {
        self.liaison / self.baseline
    }

    /// Print the row and the JSON line.
    pub(crate) fn print(&self) {
        let met = match self.met {
            Some(true) => "met",
            Some(false) => "MISSED",
            None => "-",
        };
        println!(
            "{:<4} {:<44} {:>12} {:>12} {:>7.3} {:<10} {:<7} {:>9} {}",
            self.id,
            self.name,
            fmt(self.liaison),
            fmt(self.baseline),
            self.ratio(),
            self.target,
            met,
            self.n,
            self.unit,
        );
        println!(
            "{}",
            json!({
                "scenario": self.id,
                "name": self.name,
                "unit": self.unit,
                "liaison": round(self.liaison),
                "baseline": round(self.baseline),
                "baseline_name": self.baseline_name,
                "ratio": round(self.ratio()),
                "target": self.target,
                "met": self.met,
                "n": self.n,
                "note": self.note,
            })
        );
    }
}

fn round(x: f64) -> f64 {
    if x.abs() >= 100.0 {
        x.round()
    } else {
        (x * 1000.0).round() / 1000.0
    }
}

fn fmt(x: f64) -> String {
    if x.abs() >= 100.0 {
        format!("{x:.0}")
    } else {
        format!("{x:.3}")
    }
}

pub(crate) fn header(ctx: &Ctx) {
    println!(
        "liaison benchmarks: N={} reps={} big={} dir={} (medians; baseline interleaved)",
        ctx.n,
        ctx.reps,
        ctx.big,
        ctx.dir.display()
    );
    println!(
        "{:<4} {:<44} {:>12} {:>12} {:>7} {:<10} {:<7} {:>9} unit",
        "id", "scenario", "liaison", "baseline", "ratio", "target", "status", "n"
    );
}

pub(crate) fn footer() {
    println!("done");
}
