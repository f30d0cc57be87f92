//! Readiness: what the server still waits for before it serves fully (its stores opening,
//! its listeners starting, the stored subscriptions being resumed, a stop under way), and
//! the routes that report it to load balancers and Kubernetes:
//!
//! | route               | answer                                                        |
//! |---------------------|---------------------------------------------------------------|
//! | `GET /health/live`  | 200 `{"status":"live"}` while the process serves HTTP          |
//! | `GET /health/ready` | 200 `{"status":"ready"}`, or 503 `{"status":"not ready","waiting":[...]}` |
//!
//! Owns the set of pending conditions only: each part that must finish first holds a
//! [`Pending`] guard and drops it when done. It must not know the parts themselves; the
//! admin and provisioning listeners serve [`router`].

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use axum::{Json, Router};
use parking_lot::Mutex;
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::sync::Arc;

/// What stands between the server and "ready" (a condition per name, counted).
#[derive(Clone, Default)]
pub struct Health {
    pending: Arc<Mutex<BTreeMap<&'static str, usize>>>,
}

/// A condition the server waits for while this guard lives.
#[must_use = "the condition ends when the guard is dropped"]
pub struct Pending {
    health: Health,
    what: &'static str,
}

impl Health {
    /// Not ready for `what` until the returned guard is dropped.
    pub fn pending(&self, what: &'static str) -> Pending {
        *self.pending.lock().entry(what).or_insert(0) += 1;
        Pending { health: self.clone(), what }
    }

    /// The conditions still pending, by name (empty when ready).
    pub fn waiting(&self) -> Vec<&'static str> {
        self.pending.lock().keys().copied().collect()
    }

    pub fn is_ready(&self) -> bool {
        self.pending.lock().is_empty()
    }
}

impl Drop for Pending {
    fn drop(&mut self) {
        let mut pending = self.health.pending.lock();
        if let Some(n) = pending.get_mut(self.what) {
            *n -= 1;
            if *n == 0 {
                pending.remove(self.what);
            }
        }
    }
}

/// `GET /health/live` and `GET /health/ready`.
pub fn router(health: Health) -> Router {
    Router::new().route("/health/live", get(live)).route("/health/ready", get(ready)).with_state(health)
}

async fn live() -> Json<Value> {
    Json(json!({"status": "live"}))
}

async fn ready(State(health): State<Health>) -> (StatusCode, Json<Value>) {
    let waiting = health.waiting();
    if waiting.is_empty() {
        (StatusCode::OK, Json(json!({"status": "ready"})))
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, Json(json!({"status": "not ready", "waiting": waiting})))
    }
}

#[cfg(test)]
mod tests {
    use super::Health;

    #[test]
    fn ready_once_every_guard_is_dropped() {
        let h = Health::default();
        assert!(h.is_ready());
        let a = h.pending("stores");
        let b = h.pending("stores");
        let c = h.pending("listeners");
        assert_eq!(h.waiting(), ["listeners", "stores"]);
        drop(a);
        drop(c);
        assert_eq!(h.waiting(), ["stores"], "one of two holders of a condition is not enough");
        drop(b);
        assert!(h.is_ready());
    }
}
