//! A Python model's own readiness check (Triton's `is_ready()`): each readiness request for the model asks
//! the worker, which runs `is_ready()` on a thread of its own. A check already in flight is waited for, not
//! repeated; one that does not answer within [`TIMEOUT`] (Triton's 5 s) is "not ready", and the next
//! request waits for it. While no worker runs (it died and is restarted by the next inference request),
//! the model counts as ready.

use std::os::fd::OwnedFd;
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use rampart_types::ReadinessCheck;
use serde_json::json;

use crate::ipc;

/// How long a readiness request waits for `is_ready()`.
pub(crate) const TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Default)]
pub(crate) struct Readiness {
    state: Mutex<State>,
    answered: Condvar,
}

#[derive(Default)]
struct State {
    /// The events socket of the running worker.
    sock: Option<Arc<OwnedFd>>,
    in_flight: bool,
    /// The answer of the last check.
    ready: bool,
    /// Counts answers, so that a waiter sees a new one.
    answers: u64,
}

impl Readiness {
    /// A new worker runs (no check of an earlier one is in flight any more).
    pub(crate) fn attach(&self, sock: Arc<OwnedFd>) {
        let mut s = self.state.lock().unwrap_or_else(|p| p.into_inner());
        s.sock = Some(sock);
        s.in_flight = false;
    }

    /// The worker answered a check.
    pub(crate) fn answered(&self, ready: bool) {
        let mut s = self.state.lock().unwrap_or_else(|p| p.into_inner());
        s.in_flight = false;
        s.ready = ready;
        s.answers += 1;
        self.answered.notify_all();
    }
}

impl ReadinessCheck for Readiness {
    fn is_ready(&self) -> bool {
        let mut s = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let Some(sock) = s.sock.clone() else { return true };
        if !s.in_flight {
            if ipc::send(&sock, &json!({"op": "is_ready"}), &[]).is_err() {
                return true; // the worker is gone: the next inference request restarts it
            }
            s.in_flight = true;
        }
        let seen = s.answers;
        let deadline = Instant::now() + TIMEOUT;
        while s.answers == seen {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return false;
            }
            s = self.answered.wait_timeout(s, left).unwrap_or_else(|p| p.into_inner()).0;
        }
        s.ready
    }
}
