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
}

/// Requests waiting per model version before new ones are answered UNAVAILABLE.
pub(crate) const QUEUE_CAPACITY: usize = 4096;

impl InstancePool {
    pub fn start(label: String, instances: Vec<Box<dyn EngineInstance>>, stats: Arc<ModelStats>) -> Result<Self> {
        let (tx, rx) = crossbeam_channel::bounded::<Job>(QUEUE_CAPACITY);
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
        Ok(InstancePool { tx: Some(tx), threads, label })
    }

    pub fn submit(&self, job: Job) -> Result<()> {
        let tx = self.tx.as_ref().ok_or_else(|| Error::unavailable(format!("{} is unloading", self.label)))?;
        tx.try_send(job).map_err(|e| match e {
            TrySendError::Full(_) => Error::unavailable(format!(
                "inference queue of {} is full ({QUEUE_CAPACITY} requests waiting)",
                self.label
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
