//! The shim's side of the app spin ([`tas::spin`] owns the rule, the CPU
//! budget and the process-wide [`tas::spin::SpinCtl`] the shim keeps in
//! its global state): the daemon's goal and the contention to price the
//! spin with, read from the shim's contexts.
//!
//! Must not block: contexts are only tried.

use crate::global::global;
use tas_tune::Goal;

/// The daemon's goal and the contention to price the app's spinning with
/// ([`tas::spin::priced_contention`] of its fast-path core's CPU wait),
/// from the first live context free to look at.
pub fn daemon_view() -> (Goal, f64) {
    for c in global().live_ctxs() {
        if let Some(inner) = c.inner.try_lock() {
            let goal = Goal::from_wire(inner.tas.goal()).unwrap_or_default();
            return (
                goal,
                tas::spin::priced_contention(inner.tas.cpu_contention_ppm()),
            );
        }
    }
    (Goal::default(), 0.0)
}
