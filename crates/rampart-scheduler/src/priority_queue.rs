//! The waiting tasks of a dynamically batched model version: one FIFO per priority level (Triton's
//! `priority_levels`, level 1 first), shared by the model's instance threads.
//!
//! An instance thread takes the head of the highest non-empty level, and while it gathers a batch it may take
//! the next head only when that task fits ([`PriorityQueue::pop`]'s `accept`); a task that does not fit
//! stays at its head for the next batch, so every level stays FIFO. A head whose queue deadline has passed is
//! answered "Request timeout expired" (`REJECT`) or moved to its level's delayed queue (`DELAY`), which is
//! served only when the level has nothing else (Triton's order); heads whose caller went away are dropped.

use std::collections::VecDeque;
use std::sync::{Condvar, Mutex, MutexGuard};
use std::time::Instant;

use rampart_types::Error;

use crate::{Task, Ticket};

pub(crate) struct PriorityQueue<T> {
    state: Mutex<State<T>>,
    ready: Condvar,
    /// `max_queue_size` of each level (0: no limit of its own).
    level_limits: Vec<usize>,
    /// Tasks that may wait in all levels together (`--max-queued-requests`).
    capacity: usize,
}

struct Entry<T> {
    task: T,
    deadline: Option<Instant>,
    delay_on_timeout: bool,
}

struct State<T> {
    levels: Vec<VecDeque<Entry<T>>>,
    /// Tasks of each level whose `DELAY` timeout passed while they waited.
    delayed: Vec<VecDeque<Entry<T>>>,
    waiting: usize,
    /// Tasks of each level the batcher holds while it forms a batch: they still count against the
    /// level's `max_queue_size` (Triton counts every request not yet scheduled).
    forming: Vec<usize>,
    closed: bool,
}

#[derive(Debug, PartialEq, Eq)]
pub(crate) enum PushError {
    /// The task's level holds its `max_queue_size`.
    LevelFull,
    /// All levels together hold `capacity`.
    Full,
    Closed,
}

pub(crate) enum Pop<T> {
    /// A task and its level; the level counts it as held until [`PriorityQueue::release`].
    Task(T, usize),
    /// The next task does not fit (`accept` said no); it stays queued.
    Blocked,
    /// The deadline passed with nothing queued.
    TimedOut,
    /// Closed and empty.
    Closed,
}

impl<T: Task> PriorityQueue<T> {
    pub fn new(level_limits: Vec<usize>, capacity: usize) -> Self {
        let n = level_limits.len().max(1);
        PriorityQueue {
            state: Mutex::new(State {
                levels: (0..n).map(|_| VecDeque::new()).collect(),
                delayed: (0..n).map(|_| VecDeque::new()).collect(),
                waiting: 0,
                forming: vec![0; n],
                closed: false,
            }),
            ready: Condvar::new(),
            level_limits,
            capacity: capacity.max(1),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State<T>> {
        // A panic while holding the lock leaves the queues consistent (no operation is half done), so a
        // poisoned lock is still usable.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Queues `task` at the end of its level (`ticket.level`, clamped to the last level).
    pub fn push(&self, task: T, ticket: Ticket) -> Result<(), PushError> {
        let mut st = self.lock();
        if st.closed {
            return Err(PushError::Closed);
        }
        let level = ticket.level.min(st.levels.len() - 1);
        let limit = self.level_limits.get(level).copied().unwrap_or(0);
        let queued = st.levels[level].len() + st.delayed[level].len() + st.forming[level];
        if limit > 0 && queued >= limit {
            return Err(PushError::LevelFull);
        }
        if st.waiting >= self.capacity {
            return Err(PushError::Full);
        }
        let entry =
            Entry { task, deadline: ticket.deadline, delay_on_timeout: ticket.delay_on_timeout };
        st.levels[level].push_back(entry);
        st.waiting += 1;
        drop(st);
        self.ready.notify_one();
        Ok(())
    }

    /// Takes the head of the highest non-empty level when `accept` takes it; waits for a task until
    /// `deadline` (`None`: until one comes or the queue is closed).
    pub fn pop(&self, deadline: Option<Instant>, accept: impl Fn(&T) -> bool) -> Pop<T> {
        let mut st = self.lock();
        loop {
            st.drop_dead_heads(Instant::now());
            // The highest level with a task; within it, the tasks that have not timed out come first.
            let next = (0..st.levels.len()).find_map(|l| {
                if !st.levels[l].is_empty() {
                    Some((l, false))
                } else if !st.delayed[l].is_empty() {
                    Some((l, true))
                } else {
                    None
                }
            });
            if let Some((l, from_delayed)) = next {
                let q = if from_delayed { &mut st.delayed[l] } else { &mut st.levels[l] };
                if !accept(&q.front().expect("not empty").task) {
                    drop(st);
                    // Another idle instance may start a batch with it.
                    self.ready.notify_one();
                    return Pop::Blocked;
                }
                let entry = q.pop_front().expect("not empty");
                st.waiting -= 1;
                st.forming[l] += 1;
                return Pop::Task(entry.task, l);
            }
            if st.closed {
                return Pop::Closed;
            }
            st = match deadline {
                None => self.ready.wait(st).unwrap_or_else(|p| p.into_inner()),
                Some(d) => {
                    let now = Instant::now();
                    if now >= d {
                        return Pop::TimedOut;
                    }
                    self.ready.wait_timeout(st, d - now).unwrap_or_else(|p| p.into_inner()).0
                }
            };
        }
    }

    /// The popped tasks of `levels` are scheduled (their batch runs now): they stop counting as held.
    pub fn release(&self, levels: &[usize]) {
        let mut st = self.lock();
        for &l in levels {
            st.forming[l] = st.forming[l].saturating_sub(1);
        }
    }

    /// No more tasks are accepted; the queued ones are still handed out, then [`Pop::Closed`].
    pub fn close(&self) {
        self.lock().closed = true;
        self.ready.notify_all();
    }

    pub fn waiting(&self) -> usize {
        self.lock().waiting
    }

    pub fn is_closed(&self) -> bool {
        self.lock().closed
    }
}

impl<T: Task> State<T> {
    /// Answers (REJECT) or moves behind (DELAY) heads whose queue deadline has passed, and drops heads nobody
    /// waits for.
    fn drop_dead_heads(&mut self, now: Instant) {
        for (q, delayed) in self.levels.iter_mut().zip(self.delayed.iter_mut()) {
            while let Some(head) = q.front() {
                let expired = head.deadline.is_some_and(|d| now > d);
                if !expired && !head.task.is_cancelled() {
                    break;
                }
                let mut entry = q.pop_front().expect("head");
                if entry.task.is_cancelled() {
                    self.waiting -= 1;
                } else if entry.delay_on_timeout {
                    entry.deadline = None;
                    delayed.push_back(entry);
                } else {
                    self.waiting -= 1;
                    entry.task.reject(Error::unavailable("Request timeout expired"));
                }
            }
            while delayed.front().is_some_and(|e| e.task.is_cancelled()) {
                delayed.pop_front();
                self.waiting -= 1;
            }
        }
    }
}
