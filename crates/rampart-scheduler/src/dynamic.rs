//! The dynamic batcher (Triton's `dynamic_batching`). An instance thread that takes a task gathers
//! compatible tasks behind it ([`crate::Executor::compatible`]) until the batch reaches `max_batch_size` or a
//! `preferred_batch_size`, or the first task has waited `max_queue_delay_microseconds`, then hands the batch
//! to its executor. Tasks stay in FIFO order within their priority level; one that does not fit waits at
//! the head of the next batch. While a batch forms, its tasks still count against their level's
//! `max_queue_size`, as in Triton.

use std::sync::atomic::AtomicBool;

use crate::priority_queue::{Pop, PriorityQueue};
use crate::{BatchPolicy, Executor, Task, guarded};

/// The loop of one instance thread: runs until the queue is closed and drained. `held` is shared by the
/// version's instance threads: while set, they wait for `policy.hold_until` requests (once).
pub(crate) fn run<T: Task, E: Executor<T>>(
    executor: &mut E,
    queue: &PriorityQueue<T>,
    policy: &BatchPolicy,
    held: &AtomicBool,
) {
    use std::sync::atomic::Ordering;
    while held.load(Ordering::Acquire) {
        if queue.waiting() >= policy.hold_until || queue.is_closed() {
            held.store(false, Ordering::Release);
        } else {
            // Triton polls every 10 ms too.
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
    }
    loop {
        let (first, level) = match queue.pop(None, |_| true) {
            Pop::Task(task, level) => (task, level),
            Pop::Closed => return,
            Pop::Blocked | Pop::TimedOut => continue,
        };
        // A task nothing can join (no batch dimension, already a full batch, or one that batches with
        // nothing: a decoupled request) runs at once.
        let alone = first.batch_size() == 0
            || first.batch_size() >= policy.max_batch_size
            || !executor.compatible(&first, &first);
        if alone {
            queue.release(&[level]);
            guarded(|| executor.execute_one(first));
            continue;
        }
        // Held tasks count against their level's max_queue_size until the batch runs (or the loop
        // unwinds: the guard releases them then).
        let mut held = Held { queue, levels: vec![level] };
        let deadline = first.enqueued() + policy.max_delay;
        let mut size = first.batch_size();
        let mut batch = vec![first];
        while !policy.done(size) {
            let fits = |next: &T| {
                next.batch_size() > 0
                    && size + next.batch_size() <= policy.max_batch_size
                    && executor.compatible(&batch[0], next)
            };
            match queue.pop(Some(deadline), fits) {
                Pop::Task(next, level) => {
                    size += next.batch_size();
                    held.levels.push(level);
                    batch.push(next);
                }
                Pop::Blocked | Pop::TimedOut | Pop::Closed => break,
            }
        }
        drop(held);
        if batch.len() == 1 {
            let task = batch.pop().expect("one task");
            guarded(|| executor.execute_one(task));
        } else {
            guarded(|| executor.execute_batch(batch));
        }
    }
}

/// The levels of the tasks a forming batch holds; released when dropped.
struct Held<'a, T: Task> {
    queue: &'a PriorityQueue<T>,
    levels: Vec<usize>,
}

impl<T: Task> Drop for Held<'_, T> {
    fn drop(&mut self) {
        self.queue.release(&self.levels);
    }
}
