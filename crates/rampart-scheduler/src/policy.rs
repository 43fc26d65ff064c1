//! The policy types a scheduler is configured with. The core builds them from a model config
//! (`dynamic_batching`, its queue policies); the scheduler knows no config format.

use std::time::{Duration, Instant};

/// One priority level's queue policy (`default_queue_policy`, or its `priority_queue_policy` entry).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct QueuePolicy {
    /// The timeout every request gets (`None`: no timeout).
    pub timeout: Option<Duration>,
    /// Whether a request's `timeout` parameter may shorten it.
    pub allow_timeout_override: bool,
    /// An expired request is rejected (REJECT) rather than still run (DELAY).
    pub reject_on_timeout: bool,
    /// Requests that may wait in this level (0: no limit beyond `--max-queued-requests`).
    pub max_queue_size: usize,
}

impl QueuePolicy {
    /// The queue deadline of a request that arrives at `now` with an optional `timeout` parameter (µs): the
    /// level's default, or the request's own when the policy allows overrides and it is shorter.
    pub fn deadline(&self, now: Instant, requested_us: Option<u64>) -> Option<Instant> {
        let requested = requested_us
            .filter(|&us| us > 0 && self.allow_timeout_override)
            .map(Duration::from_micros);
        let timeout = match (self.timeout, requested) {
            (Some(d), Some(r)) => Some(d.min(r)),
            (d, r) => d.or(r),
        };
        timeout.and_then(|t| now.checked_add(t))
    }
}

/// A model's `dynamic_batching` settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BatchPolicy {
    /// The model's `max_batch_size` (> 0).
    pub max_batch_size: u64,
    /// `preferred_batch_size`, ascending; empty: prefer `max_batch_size`.
    pub preferred: Vec<u64>,
    pub max_delay: Duration,
    /// The queue policy of each priority level (one entry when `priority_levels` is 0).
    pub levels: Vec<QueuePolicy>,
    /// The level (0-based) of requests without a `priority` or with one outside 1..=levels.
    pub default_level: usize,
    /// No batch forms until this many requests wait (once; 0 = off): Triton's
    /// `TRITONSERVER_DELAY_SCHEDULER` test hook.
    pub hold_until: usize,
}

impl BatchPolicy {
    /// The 0-based level of a request's `priority` parameter: 1 is the highest; 0, none or a value above
    /// `priority_levels` mean the default level (Triton's rule).
    pub fn level(&self, priority: Option<u64>) -> usize {
        match priority {
            Some(p) if p >= 1 && p <= self.levels.len() as u64 => (p - 1) as usize,
            _ => self.default_level,
        }
    }

    /// Where a request arriving at `now` waits, and until when.
    pub fn ticket(&self, now: Instant, priority: Option<u64>, timeout_us: Option<u64>) -> Ticket {
        let level = self.level(priority);
        let policy = &self.levels[level];
        Ticket {
            level,
            deadline: policy.deadline(now, timeout_us),
            delay_on_timeout: !policy.reject_on_timeout,
        }
    }

    /// Whether a batch of `size` rows is complete: `max_batch_size`, or a preferred size.
    pub(crate) fn done(&self, size: u64) -> bool {
        size >= self.max_batch_size || self.preferred.contains(&size)
    }
}

/// Where a task waits: its priority level (0-based; level 1 of the config is 0) and its queue deadline.
/// Still waiting at the deadline, it is answered "Request timeout expired" (`REJECT`), or moved behind the
/// tasks of its level that have not timed out (`DELAY`, `delay_on_timeout`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Ticket {
    pub level: usize,
    pub deadline: Option<Instant>,
    pub delay_on_timeout: bool,
}
