//! The shim's side of the app spin ([`tas::spin`] owns the rule, the CPU
//! budget and the process-wide [`tas::spin::SpinCtl`] the shim keeps in
//! its global state): the daemon's goal, read from the shim's contexts.
//!
//! Must not block: contexts are only tried.

use crate::global::global;
use tas_tune::Goal;

/// The daemon's goal, from the first live context free to look at.
pub fn daemon_goal() -> Goal {
    for c in global().live_ctxs() {
        if let Some(inner) = c.inner.try_lock() {
            return Goal::from_wire(inner.tas.goal()).unwrap_or_default();
        }
    }
    Goal::default()
}
