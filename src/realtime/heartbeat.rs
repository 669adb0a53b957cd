//! The node's heartbeat: one task pings every local session every `WS_HEARTBEAT_MS` and closes
//! the ones that have been silent too long, so that a quiet socket holds no timer of its own.
//! Sessions are spread over `SLOTS` ticks of the interval by their id, so the pings of many
//! sessions do not all leave in the same instant.

use std::sync::{Arc, Weak};
use std::time::Duration;

use super::router::Router;
use crate::metrics::Metrics;

/// Ticks per heartbeat interval; each tick visits the sessions of one slot.
const SLOTS: u128 = 16;

/// Starts the heartbeat on the current actix arbiter. It ends with the router.
pub fn start(router: &Arc<Router>, interval: Duration, timeout: Duration, metrics: Arc<Metrics>) {
    let router: Weak<Router> = Arc::downgrade(router);
    let tick = (interval / SLOTS as u32).max(Duration::from_millis(10));
    actix_rt::spawn(async move {
        let mut ticker = tokio::time::interval(tick);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        ticker.tick().await;
        let mut slot = 0;
        loop {
            ticker.tick().await;
            let Some(router) = router.upgrade() else {
                return;
            };
            beat(&router, slot, interval + timeout, &metrics);
            slot = (slot + 1) % SLOTS;
        }
    });
}

/// Pings the sessions of `slot`, closing those silent for longer than `silence`.
fn beat(router: &Router, slot: u128, silence: Duration, metrics: &Metrics) {
    router.for_each_session(|id, out| {
        if id.as_u128() % SLOTS != slot || out.is_dead() {
            return;
        }
        if out.silent_for() > silence {
            metrics
                .ws_disconnects
                .with_label_values(&["heartbeat_timeout"])
                .inc();
            out.close(1000, "heartbeat timeout");
        } else {
            out.ping();
        }
    });
}
