//! Scheduler tests with a fake task and a fake executor: what waits, in which order, in which batches.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender, unbounded};
use rampart_types::{Code, Error, Result};

use crate::{BatchPolicy, Executor, QueuePolicy, Scheduler, Task, Ticket};

/// A queued request: `rows` rows tagged `tag`; `width` stands for the non-batch shape (tasks of different
/// widths cannot share a batch).
struct Probe {
    tag: u32,
    rows: u64,
    width: usize,
    enqueued: Instant,
    reply: Sender<Result<Vec<u32>>>,
}

impl Task for Probe {
    fn batch_size(&self) -> u64 {
        self.rows
    }
    fn enqueued(&self) -> Instant {
        self.enqueued
    }
    fn is_cancelled(&self) -> bool {
        false
    }
    fn reject(self, error: Error) {
        let _ = self.reply.send(Err(error));
    }
}

type Executions = Arc<Mutex<Vec<Vec<u32>>>>;

/// Records the row tags of every execution and answers each task with its own rows. When `hold` is set, the
/// first execution reports that it started and waits until the test releases it, so that everything
/// submitted meanwhile waits in the queue.
struct Recorder {
    executions: Executions,
    hold: Option<(Sender<()>, Receiver<()>)>,
}

impl Recorder {
    fn run(&mut self, tasks: Vec<Probe>) {
        if let Some((started, release)) = self.hold.take() {
            started.send(()).unwrap();
            release.recv().unwrap();
        }
        let rows = tasks.iter().flat_map(|t| vec![t.tag; t.rows as usize]).collect();
        self.executions.lock().unwrap().push(rows);
        for t in tasks {
            let _ = t.reply.send(Ok(vec![t.tag; t.rows as usize]));
        }
    }
}

impl Executor<Probe> for Recorder {
    fn execute_one(&mut self, task: Probe) {
        self.run(vec![task]);
    }
    fn execute_batch(&mut self, tasks: Vec<Probe>) {
        assert!(tasks.len() > 1);
        self.run(tasks);
    }
    /// Width 0 stands for a task that batches with nothing (a decoupled request).
    fn compatible(&self, first: &Probe, next: &Probe) -> bool {
        first.width == next.width && first.width != 0
    }
}

type Reply = Receiver<Result<Vec<u32>>>;

fn probe(tag: u32, rows: u64, width: usize) -> (Probe, Reply) {
    let (reply, rx) = unbounded();
    (Probe { tag, rows, width, enqueued: Instant::now(), reply }, rx)
}

struct Harness {
    scheduler: Scheduler<Probe>,
    executions: Executions,
    started: Receiver<()>,
    release: Sender<()>,
}

/// A scheduler of `instances` recorders; the first instance holds its first execution.
fn harness(instances: usize, capacity: usize, policy: Option<BatchPolicy>) -> Harness {
    let executions = Executions::default();
    let (started_tx, started) = unbounded();
    let (release, release_rx) = unbounded();
    let recorders = (0..instances)
        .map(|i| Recorder {
            executions: executions.clone(),
            hold: (i == 0).then(|| (started_tx.clone(), release_rx.clone())),
        })
        .collect();
    let scheduler = Scheduler::start("m-1".into(), recorders, capacity, policy).unwrap();
    Harness { scheduler, executions, started, release }
}

impl Harness {
    /// Submits a task that occupies the held instance, and waits until it runs.
    fn block(&self, level: usize) -> Reply {
        let (p, rx) = probe(9999, 1, 1);
        self.scheduler.submit(p, Ticket { level, ..Default::default() }).unwrap();
        self.started.recv().unwrap();
        rx
    }

    fn order(&self) -> Vec<u32> {
        let executions = self.executions.lock().unwrap();
        let mut seen: Vec<u32> = Vec::new();
        for rows in executions.iter() {
            for &tag in rows {
                if tag != 9999 && seen.last() != Some(&tag) {
                    seen.push(tag);
                }
            }
        }
        seen
    }
}

fn policy(max_batch_size: u64, levels: usize) -> BatchPolicy {
    BatchPolicy {
        max_batch_size,
        preferred: vec![],
        max_delay: Duration::ZERO,
        levels: vec![QueuePolicy { reject_on_timeout: true, ..Default::default() }; levels],
        default_level: 0,
        hold_until: 0,
    }
}

#[test]
fn full_fifo_queue_is_unavailable_and_every_accepted_task_is_answered() {
    let h = harness(1, 2, None);
    let ra = h.block(0); // running: it no longer counts against the queue
    let (b, rb) = probe(1, 1, 1);
    let (c, rc) = probe(2, 1, 1);
    h.scheduler.submit(b, Ticket::default()).unwrap();
    h.scheduler.submit(c, Ticket::default()).unwrap();
    let (d, _rd) = probe(3, 1, 1);
    let e = h.scheduler.submit(d, Ticket::default()).unwrap_err();
    assert_eq!(e.code(), Code::Unavailable);
    assert_eq!(
        e.message(),
        "inference queue of m-1 is full (2 requests waiting; --max-queued-requests)"
    );
    h.release.send(()).unwrap();
    for r in [ra, rb, rc] {
        assert!(r.recv().unwrap().is_ok());
    }
    assert_eq!(h.order(), vec![1, 2], "FIFO");
}

#[test]
fn queue_policy_deadlines() {
    let now = Instant::now();
    let ms = Duration::from_millis;
    let p = |timeout: Option<Duration>, allow: bool, reject: bool| QueuePolicy {
        timeout,
        allow_timeout_override: allow,
        reject_on_timeout: reject,
        max_queue_size: 0,
    };
    assert_eq!(p(None, false, true).deadline(now, Some(5_000)), None, "no override allowed");
    assert_eq!(p(None, true, true).deadline(now, Some(5_000)), Some(now + ms(5)));
    assert_eq!(p(Some(ms(10)), false, true).deadline(now, None), Some(now + ms(10)));
    assert_eq!(p(Some(ms(10)), true, true).deadline(now, Some(5_000)), Some(now + ms(5)));
    assert_eq!(
        p(Some(ms(10)), true, true).deadline(now, Some(50_000)),
        Some(now + ms(10)),
        "cannot lengthen"
    );
    assert_eq!(p(Some(ms(10)), true, true).deadline(now, Some(0)), Some(now + ms(10)));
    assert_eq!(
        p(Some(ms(10)), true, false).deadline(now, Some(5_000)),
        Some(now + ms(5)),
        "DELAY has the same deadline"
    );
}

#[test]
fn priority_parameter_maps_to_levels_like_triton() {
    let p = BatchPolicy { default_level: 1, ..policy(8, 3) };
    assert_eq!(p.level(Some(1)), 0, "1 is the highest level");
    assert_eq!(p.level(Some(3)), 2);
    assert_eq!(p.level(None), 1, "no priority: the default level");
    assert_eq!(p.level(Some(0)), 1, "0 means the default level");
    assert_eq!(p.level(Some(4)), 1, "above priority_levels: the default level");
    assert_eq!(p.level(Some(u64::MAX)), 1);
    let t = p.ticket(Instant::now(), Some(3), None);
    assert_eq!((t.level, t.deadline, t.delay_on_timeout), (2, None, false));
}

#[test]
fn dynamic_batches_stay_within_limits_and_answer_every_task_with_its_rows() {
    for instances in [1usize, 2] {
        let p = BatchPolicy {
            preferred: vec![4, 8],
            max_delay: Duration::from_millis(5),
            ..policy(8, 1)
        };
        let h = Arc::new(harness(instances, 4096, Some(p)));
        h.release.send(()).unwrap(); // nothing is held
        let mut threads = Vec::new();
        for thread in 0..4u32 {
            let h = h.clone();
            threads.push(std::thread::spawn(move || {
                let mut pending = Vec::new();
                for n in 0..50u32 {
                    let rows = 1 + u64::from((thread * 7 + n * 13) % 8);
                    let (p, rx) = probe(thread * 100 + n, rows, 1);
                    h.scheduler.submit(p, Ticket::default()).unwrap();
                    pending.push((rx, thread * 100 + n, rows));
                }
                for (rx, tag, rows) in pending {
                    assert_eq!(rx.recv().unwrap().unwrap(), vec![tag; rows as usize]);
                }
            }));
        }
        for t in threads {
            t.join().unwrap();
        }
        let executions = h.executions.lock().unwrap();
        assert!(executions.iter().all(|e| (1..=8).contains(&e.len())), "{executions:?}");
        assert_eq!(executions.iter().map(Vec::len).sum::<usize>(), {
            (0..4u32)
                .flat_map(|t| (0..50u32).map(move |n| 1 + ((t * 7 + n * 13) % 8) as usize))
                .sum::<usize>()
        });
        assert!(executions.len() < 200, "nothing was batched: {} executions", executions.len());
    }
}

#[test]
fn incompatible_tasks_are_not_combined_and_keep_their_order() {
    let h = harness(
        1,
        4096,
        Some(BatchPolicy { max_delay: Duration::from_millis(20), ..policy(16, 1) }),
    );
    let r0 = h.block(0);
    let mut replies = vec![r0];
    for (tag, rows, width) in [(1, 2, 3), (2, 3, 4), (3, 1, 3)] {
        let (p, rx) = probe(tag, rows, width);
        h.scheduler.submit(p, Ticket::default()).unwrap();
        replies.push(rx);
    }
    h.release.send(()).unwrap();
    for rx in replies {
        assert!(rx.recv().unwrap().is_ok());
    }
    let sizes: Vec<usize> = h.executions.lock().unwrap().iter().skip(1).map(Vec::len).collect();
    assert_eq!(
        sizes,
        vec![2, 3, 1],
        "width 4 cannot join the width-3 batch, and nothing overtakes it"
    );
}

#[test]
fn expired_tasks_are_rejected_and_a_full_level_uses_tritons_words() {
    let p = BatchPolicy {
        levels: vec![QueuePolicy {
            max_queue_size: 1,
            reject_on_timeout: true,
            ..Default::default()
        }],
        ..policy(8, 1)
    };
    let h = harness(1, 4096, Some(p));
    let ra = h.block(0);
    let (b, rb) = probe(1, 1, 1);
    let ticket =
        Ticket { deadline: Some(Instant::now() + Duration::from_millis(1)), ..Default::default() };
    h.scheduler.submit(b, ticket).unwrap();
    let (c, _rc) = probe(2, 1, 1);
    assert_eq!(
        h.scheduler.submit(c, Ticket::default()).unwrap_err().message(),
        "Exceeds maximum queue size"
    );
    std::thread::sleep(Duration::from_millis(20));
    h.release.send(()).unwrap();
    assert!(ra.recv().unwrap().is_ok());
    let e = rb.recv().unwrap().unwrap_err();
    assert_eq!((e.code(), e.message()), (Code::Unavailable, "Request timeout expired"));
    let (d, rd) = probe(3, 1, 1);
    h.scheduler.submit(d, Ticket::default()).unwrap();
    assert!(rd.recv().unwrap().is_ok(), "the queue serves again");
}

#[test]
fn tasks_held_while_a_batch_forms_count_against_max_queue_size() {
    // Triton's example: a 300 ms queue delay, a preferred batch of 8, max_queue_size 1. One task is held by
    // the forming batch; a second one arriving meanwhile exceeds the queue size.
    let p = BatchPolicy {
        preferred: vec![8],
        max_delay: Duration::from_millis(300),
        levels: vec![QueuePolicy { max_queue_size: 1, ..Default::default() }],
        ..policy(8, 1)
    };
    let h = harness(1, 4096, Some(p));
    h.release.send(()).unwrap(); // nothing is held by the executor
    let (a, ra) = probe(1, 1, 1);
    h.scheduler.submit(a, Ticket::default()).unwrap();
    while h.scheduler.waiting() > 0 {
        std::thread::sleep(Duration::from_millis(1));
    }
    let (b, _rb) = probe(2, 1, 1);
    let e = h.scheduler.submit(b, Ticket::default()).unwrap_err();
    assert_eq!((e.code(), e.message()), (Code::Unavailable, "Exceeds maximum queue size"));
    assert_eq!(ra.recv().unwrap().unwrap(), vec![1], "the held task runs when its delay is over");
    let (c, rc) = probe(3, 1, 1);
    h.scheduler.submit(c, Ticket::default()).expect("room again once the batch ran");
    assert_eq!(rc.recv().unwrap().unwrap(), vec![3]);
}

#[test]
fn a_task_that_batches_with_nothing_runs_without_waiting_for_the_queue_delay() {
    let p = BatchPolicy { preferred: vec![8], max_delay: Duration::from_secs(5), ..policy(8, 1) };
    let h = harness(1, 4096, Some(p));
    h.release.send(()).unwrap();
    let start = Instant::now();
    let (alone, rx) = probe(1, 1, 0);
    h.scheduler.submit(alone, Ticket::default()).unwrap();
    assert_eq!(rx.recv().unwrap().unwrap(), vec![1]);
    assert!(start.elapsed() < Duration::from_secs(2), "waited {:?}", start.elapsed());
}

#[test]
fn higher_priority_levels_run_first_and_each_level_is_fifo() {
    let h = harness(1, 4096, Some(BatchPolicy { default_level: 2, ..policy(1, 3) }));
    let mut replies = vec![h.block(2)];
    for (tag, level) in [(1, 2), (2, 1), (3, 0), (4, 2), (5, 0), (6, 1)] {
        let (p, rx) = probe(tag, 1, 1);
        h.scheduler.submit(p, Ticket { level, ..Default::default() }).unwrap();
        replies.push(rx);
    }
    assert_eq!(h.scheduler.waiting(), 6);
    h.release.send(()).unwrap();
    for rx in replies {
        assert!(rx.recv().unwrap().is_ok());
    }
    assert_eq!(h.order(), vec![3, 5, 2, 6, 1, 4]);
}

#[test]
fn delayed_tasks_run_after_the_tasks_of_their_level_that_did_not_time_out() {
    let h = harness(1, 4096, Some(policy(1, 2)));
    let mut replies = vec![h.block(1)];
    for (tag, level, late) in
        [(1, 0, true), (2, 0, false), (3, 1, false), (4, 0, true), (5, 0, false)]
    {
        let (p, rx) = probe(tag, 1, 1);
        let deadline = late.then(|| Instant::now() - Duration::from_millis(1));
        h.scheduler.submit(p, Ticket { level, deadline, delay_on_timeout: late }).unwrap();
        replies.push(rx);
    }
    h.release.send(()).unwrap();
    for rx in replies {
        assert!(rx.recv().unwrap().is_ok(), "DELAY still runs the task");
    }
    assert_eq!(h.order(), vec![2, 5, 1, 4, 3], "level 1 on time, level 1 delayed, then level 2");
}

#[test]
fn each_level_has_its_own_max_queue_size() {
    let limited = QueuePolicy { max_queue_size: 1, ..Default::default() };
    let p = BatchPolicy {
        levels: vec![limited, QueuePolicy::default()],
        default_level: 1,
        ..policy(1, 2)
    };
    let h = harness(1, 4096, Some(p));
    let mut replies = vec![h.block(1)];
    let (a, ra) = probe(1, 1, 1);
    h.scheduler.submit(a, Ticket { level: 0, ..Default::default() }).unwrap();
    replies.push(ra);
    let (b, _rb) = probe(2, 1, 1);
    let refused = h.scheduler.submit(b, Ticket { level: 0, ..Default::default() }).unwrap_err();
    assert_eq!(refused.message(), "Exceeds maximum queue size");
    for tag in 3..10 {
        let (p, rx) = probe(tag, 1, 1);
        h.scheduler
            .submit(p, Ticket { level: 1, ..Default::default() })
            .expect("no limit of its own");
        replies.push(rx);
    }
    h.release.send(()).unwrap();
    for rx in replies {
        assert!(rx.recv().unwrap().is_ok());
    }
}

/// One queued task of the property test: its level, rows, width and whether its queue deadline has
/// already passed, with REJECT or with DELAY.
#[derive(Debug, Clone)]
struct Queued {
    level: usize,
    rows: u64,
    width: usize,
    expired: bool,
    delayed: bool,
}

fn queued(levels: usize, max_batch: u64) -> impl proptest::strategy::Strategy<Value = Queued> {
    use proptest::prelude::*;
    let expiry =
        prop_oneof![6 => Just((false, false)), 1 => Just((true, false)), 1 => Just((false, true))];
    (0..levels, 1..=max_batch, prop_oneof![Just(2usize), Just(3usize)], expiry).prop_map(
        |(level, rows, width, (expired, delayed))| Queued { level, rows, width, expired, delayed },
    )
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig { cases: 48, ..Default::default() })]

    /// Whatever the mix of levels, sizes, widths and expired deadlines queued behind a busy instance: no
    /// batch exceeds max_batch_size, levels are served highest first and FIFO within a level, every live
    /// task is answered exactly once, every expired REJECT one is rejected with Triton's words and never
    /// executed, and every expired DELAY one runs after the tasks of its level that have not timed out.
    #[test]
    fn batching_properties(
        levels in 1usize..4,
        max_batch in 1u64..9,
        preferred in proptest::collection::vec(1u64..9, 0..3),
        tasks in proptest::collection::vec(queued(3, 8), 1..40),
    ) {
        use proptest::prelude::*;
        let max_levels = tasks.iter().map(|j| j.level + 1).max().unwrap_or(1).max(levels);
        let max_rows = tasks.iter().map(|j| j.rows).max().unwrap_or(1);
        let max_batch = max_batch.max(max_rows);
        let preferred: Vec<u64> = preferred.into_iter().filter(|&p| p <= max_batch).collect();
        let p = BatchPolicy {
            max_batch_size: max_batch,
            preferred,
            max_delay: Duration::from_millis(1),
            levels: vec![QueuePolicy::default(); max_levels],
            default_level: 0,
            hold_until: 0,
        };
        let h = harness(1, 4096, Some(p));
        let rb = h.block(max_levels - 1);
        let mut pending = Vec::new();
        for (tag, q) in tasks.iter().enumerate() {
            let (p, rx) = probe(tag as u32, q.rows, q.width);
            let late = q.expired || q.delayed;
            let deadline = late.then(|| Instant::now() - Duration::from_millis(1));
            let ticket = Ticket { level: q.level, deadline, delay_on_timeout: q.delayed };
            h.scheduler.submit(p, ticket).unwrap();
            pending.push(rx);
        }
        h.release.send(()).unwrap();
        prop_assert!(rb.recv().unwrap().is_ok());
        for (rx, q) in pending.into_iter().zip(&tasks) {
            let answer = rx.recv().expect("every task is answered");
            if q.expired {
                let e = answer.expect_err("an expired task is rejected");
                prop_assert_eq!((e.code(), e.message()), (Code::Unavailable, "Request timeout expired"));
            } else {
                prop_assert_eq!(answer.expect("a live task succeeds").len() as u64, q.rows);
            }
        }
        let Harness { scheduler, executions, .. } = h;
        drop(scheduler); // joins the instance thread: every execution is recorded
        let executions = executions.lock().unwrap();
        let mut seen: Vec<u32> = Vec::new();
        for rows in executions.iter().skip(1) {
            prop_assert!(rows.len() as u64 <= max_batch, "batch of {} > {}", rows.len(), max_batch);
            for &tag in rows {
                if seen.last() != Some(&tag) {
                    seen.push(tag);
                }
            }
        }
        let live: Vec<u32> = (0..tasks.len() as u32).filter(|&t| !tasks[t as usize].expired).collect();
        let mut sorted = seen.clone();
        sorted.sort_unstable();
        prop_assert_eq!(&sorted, &live, "each live task executed exactly once, no expired one");
        let served_levels: Vec<usize> = seen.iter().map(|&t| tasks[t as usize].level).collect();
        prop_assert!(served_levels.windows(2).all(|w| w[0] <= w[1]), "levels out of order: {:?}", served_levels);
        for level in 0..max_levels {
            let order: Vec<u32> = seen.iter().copied().filter(|&t| tasks[t as usize].level == level).collect();
            let delayed = |t: &u32| tasks[*t as usize].delayed;
            let (late, on_time): (Vec<u32>, Vec<u32>) = order.iter().partition(|t| delayed(t));
            prop_assert_eq!(order.clone(), [on_time.clone(), late.clone()].concat(), "level {}: DELAY tasks must come last", level);
            prop_assert!(on_time.windows(2).all(|w| w[0] < w[1]), "level {} not FIFO: {:?}", level, on_time);
            prop_assert!(late.windows(2).all(|w| w[0] < w[1]), "level {} delayed not FIFO: {:?}", level, late);
        }
    }
}

/// `TRITONSERVER_DELAY_SCHEDULER`: nothing runs until three tasks wait, then they batch together.
#[test]
fn the_delay_hook_holds_the_batcher_until_enough_tasks_wait() {
    let p = BatchPolicy { hold_until: 3, ..policy(8, 1) };
    let h = harness(1, 4096, Some(p));
    h.release.send(()).unwrap();
    let mut replies = Vec::new();
    for tag in 1..=2 {
        let (p, rx) = probe(tag, 1, 1);
        h.scheduler.submit(p, Ticket::default()).unwrap();
        replies.push(rx);
    }
    std::thread::sleep(Duration::from_millis(60));
    assert!(h.executions.lock().unwrap().is_empty(), "held until three tasks wait");
    let (p, rx) = probe(3, 1, 1);
    h.scheduler.submit(p, Ticket::default()).unwrap();
    replies.push(rx);
    for r in &replies {
        r.recv().unwrap().unwrap();
    }
    assert_eq!(*h.executions.lock().unwrap(), vec![vec![1, 2, 3]]);
}
