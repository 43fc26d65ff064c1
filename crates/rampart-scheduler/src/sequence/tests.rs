//! The sequence batcher with a fake task and executor: order within a sequence, slots and null rows,
//! backlog, ownership, bounds and idle release.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender, unbounded};
use rampart_types::Error;

use crate::{
    Membership, Refusal, Released, Row, Scheduler, SequenceExecutor, SequenceId, SequencePolicy,
    Strategy, Task,
};

struct Probe {
    tag: u32,
    enqueued: Instant,
    done: Sender<u32>,
    cancelled: bool,
}

impl Task for Probe {
    fn batch_size(&self) -> u64 {
        1
    }
    fn enqueued(&self) -> Instant {
        self.enqueued
    }
    fn is_cancelled(&self) -> bool {
        self.cancelled
    }
    fn reject(self, _: Error) {
        // A rejected probe answers with its tag plus 1000, so a test can tell it from a run one.
        let _ = self.done.send(self.tag + 1000);
    }
}

/// A batch as the executor saw it: per row, the task's tag (None: a null row) and its START/END flags.
type Batch = Vec<(Option<u32>, bool, bool)>;

#[derive(Clone, Default)]
struct Recorder(Arc<Mutex<Vec<Batch>>>);

impl SequenceExecutor<Probe> for Recorder {
    fn execute_rows(&mut self, rows: Vec<Row<Probe>>) {
        let batch = rows.iter().map(|r| (r.task.as_ref().map(|t| t.tag), r.start, r.end)).collect();
        self.0.lock().unwrap().push(batch);
        for r in rows {
            if let Some(t) = r.task {
                let _ = t.done.send(t.tag);
            }
        }
    }
}

fn policy(strategy: Strategy, max_batch: usize) -> SequencePolicy {
    SequencePolicy {
        strategy,
        max_batch,
        idle: Duration::from_secs(5),
        max_sequences: 16,
        max_per_owner: 16,
        hold_until: 0,
        hold_backlog: 0,
    }
}

fn direct() -> Strategy {
    Strategy::Direct { max_delay: Duration::ZERO, min_utilization: 0.0 }
}

struct Bench {
    scheduler: Scheduler<Probe>,
    batches: Recorder,
    released: Arc<Mutex<Vec<(SequenceId, Released)>>>,
    done: Receiver<u32>,
    tx: Sender<u32>,
}

fn bench(policy: SequencePolicy, instances: usize) -> Bench {
    let batches = Recorder::default();
    let released = Arc::new(Mutex::new(Vec::new()));
    let log = released.clone();
    let on_release: crate::OnRelease =
        Arc::new(move |_, id, why| log.lock().unwrap().push((id.clone(), why)));
    let executors = (0..instances).map(|_| batches.clone()).collect();
    let scheduler =
        Scheduler::start_sequences("t".into(), executors, 64, policy, on_release).unwrap();
    let (tx, done) = unbounded();
    Bench { scheduler, batches, released, done, tx }
}

/// A request's membership: sequence `id`, its flags and owner, no deadline.
fn member(id: u64, start: bool, end: bool, owner: Option<&str>) -> Membership {
    Membership {
        id: SequenceId::Number(id),
        start,
        end,
        owner: owner.map(str::to_string),
        deadline: None,
    }
}

impl Bench {
    fn send(
        &self,
        tag: u32,
        id: u64,
        start: bool,
        end: bool,
        owner: Option<&str>,
    ) -> Result<(), Refusal> {
        self.send_probe(tag, member(id, start, end, owner), false)
    }

    fn send_probe(&self, tag: u32, m: Membership, cancelled: bool) -> Result<(), Refusal> {
        let probe = Probe { tag, enqueued: Instant::now(), done: self.tx.clone(), cancelled };
        self.scheduler.submit_in_sequence(probe, m)
    }

    /// What was released, once `n` sequences were (the release follows the answers).
    fn released(&self, n: usize) -> Vec<(SequenceId, Released)> {
        let deadline = Instant::now() + Duration::from_secs(5);
        while self.released.lock().unwrap().len() < n && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
        self.released.lock().unwrap().clone()
    }

    fn wait(&self, n: usize) -> Vec<u32> {
        (0..n).map(|_| self.done.recv_timeout(Duration::from_secs(5)).expect("answered")).collect()
    }
}

#[test]
fn a_sequence_runs_in_order_and_closes_at_end() {
    let b = bench(policy(direct(), 1), 1);
    b.send(1, 7, true, false, None).unwrap();
    b.send(2, 7, false, false, None).unwrap();
    b.send(3, 7, false, true, None).unwrap();
    // The END request is queued: the ID is closed for everything but a new START.
    assert_eq!(b.send(4, 7, false, false, None), Err(Refusal::NotStarted));
    assert_eq!(b.wait(3), vec![1, 2, 3]);
    let flags: Vec<Batch> = b.batches.0.lock().unwrap().clone();
    assert_eq!(
        flags,
        vec![
            vec![(Some(1), true, false)],
            vec![(Some(2), false, false)],
            vec![(Some(3), false, true)]
        ]
    );
    assert_eq!(b.send(5, 8, false, false, None), Err(Refusal::NotStarted));
    assert_eq!(b.released(1), vec![(SequenceId::Number(7), Released::End)]);
    assert_eq!(b.scheduler.open_sequences(), 0);
}

#[test]
fn direct_batches_one_row_per_slot_with_null_rows_below_the_highest() {
    let mut p =
        policy(Strategy::Direct { max_delay: Duration::from_millis(300), min_utilization: 1.0 }, 2);
    p.hold_until = 3;
    let b = bench(p, 1);
    // Sequence 1 takes slot 0 and sequence 2 slot 1; nothing runs until 3 requests wait.
    b.send(10, 1, true, false, None).unwrap();
    b.send(20, 2, true, false, None).unwrap();
    b.send(21, 2, false, true, None).unwrap();
    assert_eq!(b.wait(3).len(), 3);
    let batches = b.batches.0.lock().unwrap().clone();
    assert_eq!(batches[0], vec![(Some(10), true, false), (Some(20), true, false)]);
    // Slot 0 has nothing left: the second batch keeps sequence 2 in its row behind a null row (once the
    // delay for a full batch passes).
    assert_eq!(batches[1], vec![(None, false, false), (Some(21), false, true)]);
}

#[test]
fn a_sequence_without_a_slot_waits_in_the_backlog() {
    let b = bench(policy(direct(), 1), 1);
    b.send(1, 1, true, false, None).unwrap();
    assert_eq!(b.wait(1), vec![1]);
    b.send(2, 2, true, true, None).unwrap();
    std::thread::sleep(Duration::from_millis(50));
    assert!(b.done.try_recv().is_err(), "sequence 2 must wait for the only slot");
    b.send(3, 1, false, true, None).unwrap();
    assert_eq!(b.wait(2), vec![3, 2]);
}

#[test]
fn owners_and_bounds() {
    let mut p = policy(direct(), 4);
    p.max_sequences = 3;
    p.max_per_owner = 2;
    let b = bench(p, 1);
    b.send(1, 1, true, false, Some("alice")).unwrap();
    assert_eq!(b.send(2, 1, false, false, Some("mallory")), Err(Refusal::Foreign));
    assert_eq!(b.send(2, 1, false, false, None), Err(Refusal::Foreign));
    b.send(3, 2, true, false, Some("alice")).unwrap();
    assert_eq!(b.send(4, 3, true, false, Some("alice")), Err(Refusal::TooManyForOwner(2)));
    b.send(5, 4, true, false, Some("bob")).unwrap();
    assert_eq!(b.send(6, 5, true, false, Some("carol")), Err(Refusal::TooMany(3)));
    b.send(7, 1, false, true, Some("alice")).unwrap();
    b.wait(4);
    // Ending a sequence frees its place.
    b.send(8, 3, true, false, Some("alice")).unwrap();
    b.wait(1);
}

#[test]
fn an_idle_sequence_is_released() {
    let mut p = policy(
        Strategy::Oldest { candidates: 2, preferred: vec![2], max_delay: Duration::ZERO },
        2,
    );
    p.idle = Duration::from_millis(50);
    let b = bench(p, 1);
    b.send(1, 9, true, false, None).unwrap();
    b.wait(1);
    let deadline = Instant::now() + Duration::from_secs(5);
    while b.released.lock().unwrap().is_empty() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    assert_eq!(*b.released.lock().unwrap(), vec![(SequenceId::Number(9), Released::Idle)]);
    assert_eq!(b.send(2, 9, false, false, None), Err(Refusal::NotStarted));
}

#[test]
fn oldest_batches_across_sequences_without_null_rows() {
    let mut p = policy(
        Strategy::Oldest { candidates: 4, preferred: vec![3], max_delay: Duration::from_secs(2) },
        4,
    );
    p.hold_until = 3;
    let b = bench(p, 1);
    for id in 1..=3 {
        b.send(id as u32, id, true, true, None).unwrap();
    }
    b.wait(3);
    let batches = b.batches.0.lock().unwrap().clone();
    assert_eq!(
        batches,
        vec![vec![(Some(1), true, true), (Some(2), true, true), (Some(3), true, true)]]
    );
}

#[test]
fn the_delay_hooks_hold_until_enough_requests_and_backlog_wait() {
    let mut p = policy(direct(), 1);
    p.hold_until = 2;
    p.hold_backlog = 1;
    let b = bench(p, 1);
    b.send(1, 1, true, false, None).unwrap();
    b.send(2, 1, false, false, None).unwrap();
    std::thread::sleep(Duration::from_millis(50));
    assert!(b.done.try_recv().is_err(), "held until a request waits in the backlog");
    b.send(3, 2, true, true, None).unwrap();
    b.send(4, 1, false, true, None).unwrap();
    assert_eq!(b.wait(4), vec![1, 2, 4, 3]);
}

#[test]
fn a_start_after_a_queued_end_opens_a_new_sequence() {
    let b = bench(policy(direct(), 2), 1);
    b.send(1, 5, true, false, None).unwrap();
    b.send(2, 5, false, true, None).unwrap();
    b.send(3, 5, true, false, None).unwrap();
    b.send(4, 5, false, true, None).unwrap();
    let mut done = b.wait(4);
    done.sort_unstable();
    assert_eq!(done, vec![1, 2, 3, 4], "no request of either sequence is lost");
    assert_eq!(b.released(2), vec![(SequenceId::Number(5), Released::End); 2]);
}

#[test]
fn a_cancelled_start_passes_its_flag_to_the_next_request() {
    let mut p = policy(direct(), 1);
    p.hold_until = 2;
    let b = bench(p, 1);
    b.send_probe(1, member(3, true, false, None), true).unwrap();
    b.send(2, 3, false, true, None).unwrap();
    assert_eq!(b.wait(1), vec![2]);
    assert_eq!(b.batches.0.lock().unwrap().clone(), vec![vec![(Some(2), true, true)]]);
}

#[test]
fn a_backlogged_sequence_past_a_deadline_is_rejected_whole() {
    let b = bench(policy(direct(), 1), 1);
    b.send(1, 1, true, false, None).unwrap();
    assert_eq!(b.wait(1), vec![1]);
    // Sequence 2 waits for the only slot; its requests carry a 50 ms deadline.
    let soon = Some(Instant::now() + Duration::from_millis(50));
    b.send_probe(2, Membership { deadline: soon, ..member(2, true, false, None) }, false).unwrap();
    b.send(3, 2, false, false, None).unwrap();
    assert_eq!(b.wait(2), vec![1002, 1003], "both requests of the expired backlog are rejected");
    assert!(b.released(1).contains(&(SequenceId::Number(2), Released::Expired)));
    assert_eq!(b.send(4, 2, false, true, None), Err(Refusal::NotStarted));
    b.send(5, 1, false, true, None).unwrap();
    assert_eq!(b.wait(1), vec![5]);
}
