//! The direct scheduler: one bounded queue per model version, drained by one dedicated OS thread per model
//! instance. Engines never run on the async runtime's workers. (Dynamic batching comes in a later issue and
//! replaces the queue consumer, not this interface.)

use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{Sender, TrySendError};
use rampart_types::{EngineInstance, Error, Result, Tensor};
use tokio::sync::oneshot;

use crate::stats::{ExecutionTimes, ModelStats};

pub(crate) struct Job {
    pub inputs: Vec<Tensor>,
    pub outputs: Vec<String>,
    pub batch_size: u64,
    pub enqueued: Instant,
    pub reply: oneshot::Sender<Result<Vec<Tensor>>>,
}

pub(crate) struct InstancePool {
    tx: Option<Sender<Job>>,
    threads: Vec<JoinHandle<()>>,
    label: String,
    capacity: usize,
}

/// Default for requests waiting per model version before new ones are answered UNAVAILABLE
/// (`--max-queued-requests`).
pub const DEFAULT_QUEUE_CAPACITY: usize = 4096;

impl InstancePool {
    /// Starts one thread per instance; at most `capacity` requests wait (requests being executed do not count).
    pub fn start(label: String, instances: Vec<Box<dyn EngineInstance>>, stats: Arc<ModelStats>, capacity: usize) -> Result<Self> {
        let capacity = capacity.max(1);
        let (tx, rx) = crossbeam_channel::bounded::<Job>(capacity);
        let mut threads = Vec::with_capacity(instances.len());
        for (i, mut instance) in instances.into_iter().enumerate() {
            let rx = rx.clone();
            let stats = stats.clone();
            let t = std::thread::Builder::new()
                .name(format!("rampart-{label}-{i}"))
                .spawn(move || {
                    while let Ok(job) = rx.recv() {
                        run_job(instance.as_mut(), job, &stats);
                    }
                })
                .map_err(|e| Error::internal(format!("cannot start instance thread for {label}: {e}")))?;
            threads.push(t);
        }
        Ok(InstancePool { tx: Some(tx), threads, label, capacity })
    }

    pub fn submit(&self, job: Job) -> Result<()> {
        let tx = self.tx.as_ref().ok_or_else(|| Error::unavailable(format!("{} is unloading", self.label)))?;
        tx.try_send(job).map_err(|e| match e {
            TrySendError::Full(_) => Error::unavailable(format!(
                "inference queue of {} is full ({} requests waiting; --max-queued-requests)",
                self.label, self.capacity
            )),
            TrySendError::Disconnected(_) => Error::unavailable(format!("{} is unloading", self.label)),
        })
    }
}

fn run_job(instance: &mut dyn EngineInstance, job: Job, stats: &ModelStats) {
    if job.reply.is_closed() {
        return; // the client went away while the request waited
    }
    let start = Instant::now();
    let queue = start.duration_since(job.enqueued);
    let result = std::panic::catch_unwind(AssertUnwindSafe(|| instance.execute(&job.inputs, &job.outputs)))
        .unwrap_or_else(|panic| {
            let what = panic
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "unknown panic".into());
            Err(Error::internal(format!("engine panicked: {what}")))
        });
    if result.is_ok() {
        stats.record_execution(&ExecutionTimes {
            batch_size: job.batch_size,
            queue,
            compute_input: Duration::ZERO,
            compute_infer: start.elapsed(),
            compute_output: Duration::ZERO,
        });
    }
    let _ = job.reply.send(result);
}

impl Drop for InstancePool {
    fn drop(&mut self) {
        self.tx.take();
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rampart_types::{Code, ModelSignature};

    /// A fake engine that blocks each execution until the test lets it go (scheduler unit test only).
    struct Gate {
        started: crossbeam_channel::Sender<()>,
        release: crossbeam_channel::Receiver<()>,
        sig: ModelSignature,
    }

    impl EngineInstance for Gate {
        fn signature(&self) -> &ModelSignature {
            &self.sig
        }
        fn execute(&mut self, _: &[Tensor], _: &[String]) -> Result<Vec<Tensor>> {
            self.started.send(()).unwrap();
            self.release.recv().unwrap();
            Ok(vec![])
        }
    }

    fn job() -> (Job, oneshot::Receiver<Result<Vec<Tensor>>>) {
        let (tx, rx) = oneshot::channel();
        (Job { inputs: vec![], outputs: vec![], batch_size: 1, enqueued: Instant::now(), reply: tx }, rx)
    }

    #[test]
    fn full_queue_is_unavailable_and_every_accepted_job_is_answered() {
        let (started_tx, started) = crossbeam_channel::unbounded();
        let (release, release_rx) = crossbeam_channel::unbounded();
        let gate = Gate { started: started_tx, release: release_rx, sig: ModelSignature::default() };
        let pool = InstancePool::start("m-1".into(), vec![Box::new(gate)], Arc::new(ModelStats::default()), 2).unwrap();
        let (a, ra) = job();
        pool.submit(a).unwrap();
        started.recv().unwrap(); // A is executing: it no longer counts against the queue
        let (b, rb) = job();
        let (c, rc) = job();
        pool.submit(b).unwrap();
        pool.submit(c).unwrap();
        let (d, _rd) = job();
        let e = pool.submit(d).unwrap_err();
        assert_eq!(e.code(), Code::Unavailable);
        assert!(e.message().contains("2 requests waiting"), "{e}");
        for _ in 0..3 {
            release.send(()).unwrap();
        }
        for r in [ra, rb, rc] {
            assert!(r.blocking_recv().unwrap().is_ok());
        }
    }
}
