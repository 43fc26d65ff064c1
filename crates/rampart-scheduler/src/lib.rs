//! Rampart's schedulers: how the requests of one model version wait, and which instance thread runs them.
//!
//! A [`Scheduler`] owns one bounded queue per model version and one dedicated OS thread per model
//! instance; engines never run on the async runtime's workers. It is generic over the task it queues
//! ([`Task`]) and over what runs tasks ([`Executor`]), so it knows nothing about tensors, configs or
//! protocols: the core decides what a task carries and how a batch of them executes.
//!
//! Two ways of waiting exist today, chosen by [`Scheduler::start`]:
//! - without a [`BatchPolicy`], one lock-free FIFO; every task runs alone;
//! - with one, the dynamic batcher (`dynamic.rs`): one FIFO per priority level with its queue policy, and each
//!   instance thread gathers compatible tasks into a batch.
//!
//! - [`Scheduler::start_sequences`] starts the sequence batcher (`sequence.rs`): requests carry a
//!   correlation ID and run in order within their sequence, a batch holding one request per sequence.
#![forbid(unsafe_code)]

mod dynamic;
mod policy;
mod priority_queue;
mod sequence;

use std::panic::AssertUnwindSafe;
use std::thread::JoinHandle;
use std::time::Instant;

use crossbeam_channel::{Sender, TrySendError};
use rampart_types::{Error, Result};

pub use policy::{BatchPolicy, QueuePolicy, Ticket};
use priority_queue::{PriorityQueue, PushError};
pub use sequence::{
    Membership, OnRelease, Refusal, Released, Row, SequenceExecutor, SequenceId, SequencePolicy,
    Strategy,
};

/// Default for requests waiting per model version before new ones are answered UNAVAILABLE
/// (`--max-queued-requests`).
pub const DEFAULT_QUEUE_CAPACITY: usize = 4096;

/// What a scheduler queues: one accepted request.
pub trait Task: Send + 'static {
    /// Rows this task adds to a batch; 0 for a model without a batch dimension (never batched).
    fn batch_size(&self) -> u64;
    /// When the task was accepted: the dynamic batcher's delay counts from the first task's arrival.
    fn enqueued(&self) -> Instant;
    /// The caller went away: the task is dropped without running.
    fn is_cancelled(&self) -> bool;
    /// Answers the task with `error` without running it (a queue timeout).
    fn reject(self, error: Error);
}

/// Runs tasks: one model instance, owned by one scheduler thread.
pub trait Executor<T>: Send + 'static {
    /// Runs one task alone.
    fn execute_one(&mut self, task: T);
    /// Runs tasks the batcher gathered (two or more, all [`Executor::compatible`] with the first) as one
    /// execution.
    fn execute_batch(&mut self, tasks: Vec<T>);
    /// Whether `next` may join a batch that `first` started.
    fn compatible(&self, first: &T, next: &T) -> bool;
}

/// The queue and instance threads of one model version.
pub struct Scheduler<T: Task> {
    queue: Queue<T>,
    threads: Vec<JoinHandle<()>>,
    label: String,
    capacity: usize,
    policy: Option<BatchPolicy>,
}

enum Queue<T> {
    Fifo(Option<Sender<T>>),
    Priority(std::sync::Arc<PriorityQueue<T>>),
    Sequence(std::sync::Arc<sequence::Batcher<T>>),
}

impl<T: Task> Scheduler<T> {
    /// Starts one thread per executor (`rampart-<label>-<i>`); at most `capacity` tasks wait (tasks being
    /// executed do not count). With `batching` the dynamic batcher gathers tasks.
    pub fn start<E: Executor<T>>(
        label: String,
        executors: Vec<E>,
        capacity: usize,
        batching: Option<BatchPolicy>,
    ) -> Result<Self> {
        let capacity = capacity.max(1);
        let mut threads = Vec::with_capacity(executors.len());
        let queue = match &batching {
            None => {
                let (tx, rx) = crossbeam_channel::bounded::<T>(capacity);
                for (i, mut executor) in executors.into_iter().enumerate() {
                    let rx = rx.clone();
                    threads.push(spawn(&label, i, move || {
                        while let Ok(task) = rx.recv() {
                            if !task.is_cancelled() {
                                guarded(|| executor.execute_one(task));
                            }
                        }
                    })?);
                }
                Queue::Fifo(Some(tx))
            }
            Some(policy) => {
                let limits = policy.levels.iter().map(|l| l.max_queue_size).collect();
                let queue = std::sync::Arc::new(PriorityQueue::new(limits, capacity));
                let held =
                    std::sync::Arc::new(std::sync::atomic::AtomicBool::new(policy.hold_until > 0));
                for (i, mut executor) in executors.into_iter().enumerate() {
                    let (queue, policy, held) = (queue.clone(), policy.clone(), held.clone());
                    threads.push(spawn(&label, i, move || {
                        dynamic::run(&mut executor, &queue, &policy, &held)
                    })?);
                }
                Queue::Priority(queue)
            }
        };
        Ok(Scheduler { queue, threads, label, capacity, policy: batching })
    }

    /// Starts the sequence batcher with one thread per executor; at most `capacity` requests wait.
    /// `on_release` hears of every sequence that ends (its END ran, or it stayed idle).
    pub fn start_sequences<E: SequenceExecutor<T>>(
        label: String,
        executors: Vec<E>,
        capacity: usize,
        policy: SequencePolicy,
        on_release: OnRelease,
    ) -> Result<Self> {
        let capacity = capacity.max(1);
        let batcher = std::sync::Arc::new(sequence::Batcher::new(
            policy,
            executors.len(),
            capacity,
            on_release,
        ));
        let mut threads = Vec::with_capacity(executors.len());
        for (i, mut executor) in executors.into_iter().enumerate() {
            let batcher = batcher.clone();
            threads.push(spawn(&label, i, move || batcher.run(i, &mut executor))?);
        }
        Ok(Scheduler { queue: Queue::Sequence(batcher), threads, label, capacity, policy: None })
    }

    /// Queues a request of a sequence (a scheduler started with [`Scheduler::start_sequences`]).
    pub fn submit_in_sequence(&self, task: T, membership: Membership) -> Result<(), Refusal> {
        match &self.queue {
            Queue::Sequence(b) => b.push(task, membership),
            _ => Err(Refusal::Closed),
        }
    }

    /// Whether this is a sequence batcher.
    pub fn is_sequence(&self) -> bool {
        matches!(self.queue, Queue::Sequence(_))
    }

    /// Open sequences of a sequence batcher (0 otherwise).
    pub fn open_sequences(&self) -> usize {
        match &self.queue {
            Queue::Sequence(b) => b.open(),
            _ => 0,
        }
    }

    /// The level, queue deadline and timeout action of a task arriving now with the request parameters
    /// `priority` and `timeout` (µs).
    pub fn ticket(&self, priority: Option<u64>, timeout_us: Option<u64>) -> Ticket {
        match &self.policy {
            None => Ticket::default(),
            Some(p) => p.ticket(Instant::now(), priority, timeout_us),
        }
    }

    /// Queues `task`, or answers why it cannot wait: UNAVAILABLE when the queue (or the task's priority
    /// level) is full, or the version is unloading.
    pub fn submit(&self, task: T, ticket: Ticket) -> Result<()> {
        let full = || {
            Error::unavailable(format!(
                "inference queue of {} is full ({} requests waiting; --max-queued-requests)",
                self.label, self.capacity
            ))
        };
        let unloading = || Error::unavailable(format!("{} is unloading", self.label));
        match &self.queue {
            Queue::Fifo(tx) => {
                tx.as_ref().ok_or_else(unloading)?.try_send(task).map_err(|e| match e {
                    TrySendError::Full(_) => full(),
                    TrySendError::Disconnected(_) => unloading(),
                })
            }
            Queue::Priority(q) => q.push(task, ticket).map_err(|e| match e {
                PushError::LevelFull => Error::unavailable("Exceeds maximum queue size"),
                PushError::Full => full(),
                PushError::Closed => unloading(),
            }),
            Queue::Sequence(_) => Err(Error::internal(format!(
                "{}: a request without a sequence reached the sequence batcher",
                self.label
            ))),
        }
    }

    /// Tasks waiting in the priority queues (0 without dynamic batching: the FIFO does not count them).
    pub fn waiting(&self) -> usize {
        match &self.queue {
            Queue::Priority(q) => q.waiting(),
            Queue::Sequence(b) => b.waiting(),
            Queue::Fifo(_) => 0,
        }
    }
}

/// Runs `f`, keeping the thread alive if it panics: the executor answers its own tasks (the core's turns an
/// engine panic into an INTERNAL error); tasks lost in a panic drop their reply channels, which their
/// callers see as an error.
fn guarded(f: impl FnOnce()) {
    let _ = std::panic::catch_unwind(AssertUnwindSafe(f));
}

fn spawn(label: &str, i: usize, body: impl FnOnce() + Send + 'static) -> Result<JoinHandle<()>> {
    std::thread::Builder::new()
        .name(format!("rampart-{label}-{i}"))
        .spawn(body)
        .map_err(|e| Error::internal(format!("cannot start instance thread for {label}: {e}")))
}

impl<T: Task> Drop for Scheduler<T> {
    /// Closes the queue; the threads run what was accepted, then end, and are joined.
    fn drop(&mut self) {
        match &mut self.queue {
            Queue::Fifo(tx) => drop(tx.take()),
            Queue::Priority(q) => q.close(),
            Queue::Sequence(b) => b.close(),
        }
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

#[cfg(test)]
mod tests;
