//! The sequence batcher: requests that belong to a sequence (a correlation ID, START and END flags) run in
//! order, one at a time per sequence, each batch holding at most one request per sequence.
//!
//! A sequence holds a *slot* from its START until its END or until it stays idle too long; sequences that
//! find no free slot wait in a backlog. With the `direct` strategy each instance owns `max_batch` slots and a
//! batch has one row per slot up to the highest ready one (rows of slots with nothing ready are null rows);
//! with `oldest` the slots are `max_candidate_sequences` shared candidates and a batch takes the oldest ready
//! requests, up to `max_batch` rows. The executor turns rows into control tensors and state; this module
//! knows nothing about tensors.

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use crate::Task;

/// A sequence's correlation ID: a number or a string (never 0 or empty).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum SequenceId {
    Number(u64),
    Text(String),
}

impl fmt::Display for SequenceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SequenceId::Number(n) => write!(f, "{n}"),
            SequenceId::Text(s) => f.write_str(s),
        }
    }
}

/// How sequences get slots and batches form.
#[derive(Clone, Debug)]
pub enum Strategy {
    /// Each instance owns `max_batch` slots; a batch waits up to `max_delay` for `min_utilization` of
    /// them to be ready.
    Direct { max_delay: Duration, min_utilization: f32 },
    /// `candidates` slots shared by every instance; a batch waits up to `max_delay` to reach a preferred
    /// size (or `max_batch`).
    Oldest { candidates: usize, preferred: Vec<usize>, max_delay: Duration },
}

#[derive(Clone, Debug)]
pub struct SequencePolicy {
    pub strategy: Strategy,
    /// Rows per execution: the model's `max_batch_size`, 1 for a model without a batch dimension.
    pub max_batch: usize,
    /// A sequence without a request for this long is released (`max_sequence_idle_microseconds`).
    pub idle: Duration,
    /// Open sequences (holding a slot or waiting for one) of this model version.
    pub max_sequences: usize,
    /// Open sequences one owner may hold.
    pub max_per_owner: usize,
    /// No batch forms until this many requests wait (once): Triton's `TRITONSERVER_DELAY_SCHEDULER`.
    pub hold_until: usize,
    /// With `hold_until`, also until this many requests wait in the backlog (sequences without a slot):
    /// Triton's `TRITONSERVER_BACKLOG_DELAY_SCHEDULER`.
    pub hold_backlog: usize,
}

/// What a request says about its sequence.
#[derive(Clone, Debug)]
pub struct Membership {
    pub id: SequenceId,
    pub start: bool,
    pub end: bool,
    /// Who may send the sequence's requests: the caller that started it (`None`: anyone, i.e. nobody
    /// identified).
    pub owner: Option<String>,
    /// The request's queue deadline (its `timeout`): a sequence still in the backlog when one of its
    /// requests' deadlines passes is rejected whole, as in Triton.
    pub deadline: Option<Instant>,
}

/// One row of a sequence batch: a request and its flags, or a null row (`task: None`, nothing ready in that
/// slot; only the `direct` strategy makes them).
pub struct Row<T> {
    pub task: Option<T>,
    /// The sequence (unique per START: a reused correlation ID is a new sequence); 0 for a null row.
    pub key: u64,
    pub id: Option<SequenceId>,
    pub start: bool,
    pub end: bool,
}

/// Runs the rows of one sequence batch on one instance.
pub trait SequenceExecutor<T>: Send + 'static {
    fn execute_rows(&mut self, rows: Vec<Row<T>>);
}

/// Why a sequence ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Released {
    /// Its END request ran.
    End,
    /// No request came for `idle`.
    Idle,
    /// It waited in the backlog past a request's deadline; its requests were rejected.
    Expired,
}

/// Called once per sequence (its key, its correlation ID) when it ends, with the batcher's lock held: keep
/// it short.
pub type OnRelease = Arc<dyn Fn(u64, &SequenceId, Released) + Send + Sync>;

/// Why a request could not join its sequence.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// Not a START request, and the sequence is not open (never started, ended, or idle too long).
    NotStarted,
    /// The sequence belongs to another caller.
    Foreign,
    /// `max_sequences` are open.
    TooMany(usize),
    /// The owner holds `max_per_owner` sequences.
    TooManyForOwner(usize),
    /// The queue is full (`capacity` requests wait).
    Full(usize),
    /// The version is unloading.
    Closed,
}

struct Seq<T> {
    id: SequenceId,
    queue: VecDeque<(T, bool, bool)>,
    /// A START request was cancelled before it ran: the next request starts the sequence instead.
    restart: bool,
    /// The earliest deadline of its requests (applies while it waits in the backlog).
    deadline: Option<Instant>,
    slot: Option<usize>,
    busy: bool,
    last: Instant,
    owner: Option<String>,
}

struct State<T> {
    /// Open sequences by key (a sequence whose END is queued stays here until it runs).
    seqs: HashMap<u64, Seq<T>>,
    /// The correlation IDs that take requests, and their sequence. As in Triton, an ID closes when its END
    /// request arrives (not when it runs): a START after it opens a new sequence.
    ids: HashMap<SequenceId, u64>,
    next_key: u64,
    slots: Vec<Option<u64>>,
    backlog: VecDeque<u64>,
    /// Open sequences per owner; anonymous callers share the owner "".
    owners: HashMap<String, usize>,
    queued: usize,
    held: bool,
    closed: bool,
}

pub(crate) struct Batcher<T> {
    state: Mutex<State<T>>,
    wake: Condvar,
    policy: SequencePolicy,
    capacity: usize,
    on_release: OnRelease,
}

impl<T: Task> Batcher<T> {
    pub(crate) fn new(
        mut policy: SequencePolicy,
        instances: usize,
        capacity: usize,
        on_release: OnRelease,
    ) -> Self {
        policy.max_batch = policy.max_batch.max(1);
        let slots = match &policy.strategy {
            Strategy::Direct { .. } => instances * policy.max_batch,
            Strategy::Oldest { candidates, .. } => (*candidates).max(1),
        };
        Batcher {
            state: Mutex::new(State {
                seqs: HashMap::new(),
                ids: HashMap::new(),
                next_key: 1,
                slots: vec![None; slots],
                backlog: VecDeque::new(),
                owners: HashMap::new(),
                queued: 0,
                held: policy.hold_until > 0,
                closed: false,
            }),
            wake: Condvar::new(),
            policy,
            capacity,
            on_release,
        }
    }

    fn lock(&self) -> MutexGuard<'_, State<T>> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Queues `task` behind the earlier requests of its sequence, opening the sequence on START.
    pub(crate) fn push(&self, task: T, m: Membership) -> Result<(), Refusal> {
        let mut s = self.lock();
        if s.closed {
            return Err(Refusal::Closed);
        }
        if s.queued >= self.capacity {
            return Err(Refusal::Full(self.capacity));
        }
        let now = Instant::now();
        if let Some(&key) = s.ids.get(&m.id) {
            let seq = s.seqs.get_mut(&key).expect("an open ID has its sequence");
            if seq.owner != m.owner {
                return Err(Refusal::Foreign);
            }
            seq.queue.push_back((task, m.start, m.end));
            seq.last = now;
            seq.deadline = earliest(seq.deadline, m.deadline);
            if m.end {
                s.ids.remove(&m.id);
            }
        } else {
            if !m.start {
                return Err(Refusal::NotStarted);
            }
            if s.seqs.len() >= self.policy.max_sequences {
                return Err(Refusal::TooMany(self.policy.max_sequences));
            }
            let owner = m.owner.clone().unwrap_or_default();
            let held = s.owners.get(&owner).copied().unwrap_or(0);
            if held >= self.policy.max_per_owner {
                return Err(Refusal::TooManyForOwner(self.policy.max_per_owner));
            }
            s.owners.insert(owner, held + 1);
            let key = s.next_key;
            s.next_key += 1;
            let slot = self.free_slot(&s);
            match slot {
                Some(i) => s.slots[i] = Some(key),
                None => s.backlog.push_back(key),
            }
            if !m.end {
                s.ids.insert(m.id.clone(), key);
            }
            let queue = VecDeque::from([(task, m.start, m.end)]);
            let seq = Seq {
                id: m.id,
                queue,
                restart: false,
                deadline: m.deadline,
                slot,
                busy: false,
                last: now,
                owner: m.owner,
            };
            s.seqs.insert(key, seq);
        }
        s.queued += 1;
        drop(s);
        self.wake.notify_all();
        Ok(())
    }

    /// The free slot a new sequence takes: the lowest slot index of any instance (every instance's slot 0
    /// before any slot 1, as in Triton).
    fn free_slot(&self, s: &State<T>) -> Option<usize> {
        let per = self.slots_per_instance(s.slots.len());
        let instances = s.slots.len() / per;
        (0..per)
            .flat_map(|j| (0..instances).map(move |i| i * per + j))
            .find(|&k| s.slots[k].is_none())
    }

    /// Slots each instance serves out of `total`: its batch rows (direct), or all of them (oldest).
    fn slots_per_instance(&self, total: usize) -> usize {
        match self.policy.strategy {
            Strategy::Direct { .. } => self.policy.max_batch,
            Strategy::Oldest { .. } => total.max(1),
        }
    }

    /// Open sequences (holding a slot or in the backlog).
    pub(crate) fn open(&self) -> usize {
        self.lock().seqs.len()
    }

    pub(crate) fn waiting(&self) -> usize {
        self.lock().queued
    }

    pub(crate) fn close(&self) {
        self.lock().closed = true;
        self.wake.notify_all();
    }

    /// The loop of instance `instance`: form a batch, run it, release what ended.
    pub(crate) fn run<E: SequenceExecutor<T>>(&self, instance: usize, executor: &mut E) {
        loop {
            let Some((rows, taken)) = self.next_batch(instance) else { return };
            crate::guarded(|| executor.execute_rows(rows));
            let mut s = self.lock();
            let now = Instant::now();
            for (key, end) in taken {
                let Some(seq) = s.seqs.get_mut(&key) else { continue };
                seq.busy = false;
                seq.last = now;
                if end {
                    self.release(&mut s, key, Released::End);
                }
            }
            drop(s);
            self.wake.notify_all();
        }
    }

    /// Frees the slot of sequence `key` for the backlog's oldest sequence.
    fn release(&self, s: &mut State<T>, key: u64, why: Released) {
        let Some(seq) = s.seqs.remove(&key) else { return };
        if s.ids.get(&seq.id) == Some(&key) {
            s.ids.remove(&seq.id);
        }
        let owner = seq.owner.clone().unwrap_or_default();
        if let Some(n) = s.owners.get_mut(&owner) {
            *n -= 1;
            if *n == 0 {
                s.owners.remove(&owner);
            }
        }
        s.queued -= seq.queue.len();
        match seq.slot {
            Some(slot) => {
                s.slots[slot] = None;
                if let Some(next) = s.backlog.pop_front() {
                    s.slots[slot] = Some(next);
                    if let Some(n) = s.seqs.get_mut(&next) {
                        n.slot = Some(slot);
                    }
                }
            }
            None => s.backlog.retain(|&b| b != key),
        }
        (self.on_release)(key, &seq.id, why);
    }

    /// Releases sequences idle for longer than the policy allows; returns when the next one could expire.
    fn reap(&self, s: &mut State<T>, now: Instant) -> Option<Instant> {
        let idle = self.policy.idle;
        let expired: Vec<u64> = s
            .seqs
            .iter()
            .filter(|(_, q)| !q.busy && q.queue.is_empty() && now.duration_since(q.last) >= idle)
            .map(|(&key, _)| key)
            .collect();
        for key in expired {
            self.release(s, key, Released::Idle);
        }
        let timed_out: Vec<u64> = s
            .seqs
            .iter()
            .filter(|(_, q)| q.slot.is_none() && q.deadline.is_some_and(|d| d <= now))
            .map(|(&key, _)| key)
            .collect();
        for key in timed_out {
            if let Some(seq) = s.seqs.get_mut(&key) {
                let waiting: Vec<(T, bool, bool)> = seq.queue.drain(..).collect();
                s.queued -= waiting.len();
                for (task, _, _) in waiting {
                    task.reject(rampart_types::Error::unavailable(
                        "timeout of the corresponding sequence has been expired",
                    ));
                }
            }
            self.release(s, key, Released::Expired);
        }
        let idle_at =
            s.seqs.values().filter(|q| !q.busy && q.queue.is_empty()).map(|q| q.last + idle).min();
        let backlog_at =
            s.seqs.values().filter(|q| q.slot.is_none()).filter_map(|q| q.deadline).min();
        earliest(idle_at, backlog_at)
    }

    /// Slots this instance serves.
    fn own_slots(&self, instance: usize, total: usize) -> std::ops::Range<usize> {
        match self.policy.strategy {
            Strategy::Direct { .. } => {
                let per = self.slots_per_instance(total);
                instance * per..((instance + 1) * per).min(total)
            }
            Strategy::Oldest { .. } => 0..total,
        }
    }

    /// Waits for the next batch of `instance`; `None` once closed and drained.
    #[allow(clippy::type_complexity)]
    fn next_batch(&self, instance: usize) -> Option<(Vec<Row<T>>, Vec<(u64, bool)>)> {
        let mut s = self.lock();
        loop {
            let now = Instant::now();
            let next_expiry = self.reap(&mut s, now);
            if s.closed && s.queued == 0 {
                return None;
            }
            if s.held {
                // As in Triton: N counts the requests waiting in slots, M those in the backlog.
                let (mut in_slots, mut backlog) = (0, 0);
                for q in s.seqs.values() {
                    *if q.slot.is_some() { &mut in_slots } else { &mut backlog } += q.queue.len();
                }
                s.held = in_slots < self.policy.hold_until || backlog < self.policy.hold_backlog;
            }
            let range = self.own_slots(instance, s.slots.len());
            // Ready slots: a sequence not running, whose oldest live request waits.
            let mut ready: Vec<(usize, Instant)> = Vec::new();
            for slot in range.clone() {
                let Some(key) = s.slots[slot] else { continue };
                let State { seqs, queued, .. } = &mut *s;
                let Some(seq) = seqs.get_mut(&key) else { continue };
                while seq.queue.front().is_some_and(|(t, _, _)| t.is_cancelled()) {
                    if let Some((_, start, _)) = seq.queue.pop_front() {
                        seq.restart |= start;
                    }
                    *queued -= 1;
                }
                if !seq.busy
                    && let Some((t, _, _)) = seq.queue.front()
                {
                    ready.push((slot, t.enqueued()));
                }
            }
            let holding = s.held && !s.closed;
            let until = if ready.is_empty() || holding {
                next_expiry
            } else {
                match self.delay(&ready, range.len(), now) {
                    None => return Some(self.take(&mut s, ready)),
                    Some(delay) => Some(next_expiry.map_or(delay, |e| e.min(delay))),
                }
            };
            let Some(until) = until else {
                s = self.wake.wait(s).unwrap_or_else(|e| e.into_inner());
                continue;
            };
            let timeout = until.saturating_duration_since(now).max(Duration::from_micros(50));
            s = self.wake.wait_timeout(s, timeout).unwrap_or_else(|e| e.into_inner()).0;
        }
    }

    /// When a batch of `ready` slots (out of `own` slots) should stop waiting for more; `None`: run now.
    fn delay(&self, ready: &[(usize, Instant)], own: usize, now: Instant) -> Option<Instant> {
        let oldest = ready.iter().map(|r| r.1).min().unwrap_or(now);
        match &self.policy.strategy {
            Strategy::Direct { max_delay, min_utilization } => {
                let full = ready.len() as f32 >= min_utilization * own as f32;
                (!full && !max_delay.is_zero()).then_some(oldest + *max_delay).filter(|&d| d > now)
            }
            Strategy::Oldest { preferred, max_delay, .. } => {
                let n = ready.len().min(self.policy.max_batch);
                let enough = n >= self.policy.max_batch || preferred.contains(&n);
                (!enough && !max_delay.is_zero())
                    .then_some(oldest + *max_delay)
                    .filter(|&d| d > now)
            }
        }
    }

    /// Takes the heads of the `ready` slots into rows (marking their sequences busy).
    fn take(
        &self,
        s: &mut State<T>,
        mut ready: Vec<(usize, Instant)>,
    ) -> (Vec<Row<T>>, Vec<(u64, bool)>) {
        let mut rows = Vec::new();
        let mut taken = Vec::new();
        let mut pop = |s: &mut State<T>, slot: usize| -> Row<T> {
            let key = s.slots[slot].expect("a ready slot holds a sequence");
            let seq = s.seqs.get_mut(&key).expect("a slot's sequence is open");
            let (task, start, end) = seq.queue.pop_front().expect("a ready sequence has a request");
            let start = start || std::mem::take(&mut seq.restart);
            seq.busy = true;
            let id = seq.id.clone();
            s.queued -= 1;
            taken.push((key, end));
            Row { task: Some(task), key, id: Some(id), start, end }
        };
        match self.policy.strategy {
            Strategy::Direct { .. } => {
                let first = ready.iter().map(|r| r.0).min().unwrap_or(0);
                let base = first - first % self.policy.max_batch;
                let last = ready.iter().map(|r| r.0).max().unwrap_or(base);
                for slot in base..=last {
                    if ready.iter().any(|r| r.0 == slot) {
                        rows.push(pop(s, slot));
                    } else {
                        rows.push(Row { task: None, key: 0, id: None, start: false, end: false });
                    }
                }
            }
            Strategy::Oldest { .. } => {
                ready.sort_by_key(|r| r.1);
                for (slot, _) in ready.into_iter().take(self.policy.max_batch) {
                    rows.push(pop(s, slot));
                }
            }
        }
        (rows, taken)
    }
}

#[cfg(test)]
mod tests;

/// The earlier of two optional instants.
fn earliest(a: Option<Instant>, b: Option<Instant>) -> Option<Instant> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}
