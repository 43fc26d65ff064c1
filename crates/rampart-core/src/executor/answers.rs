//! Requests handed to an engine that answers on its own time ([`rampart_types::EngineInstance::submit`]):
//! where each request's responses go ([`Answers`]), and the statistics of the execution they came in,
//! recorded when its last request ends.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rampart_types::{Answers, Code, Error, Responder, Result, Tensor};
use tokio::sync::{mpsc, oneshot};

use super::{Answer, Streamed, cancelled, stamp_compute};
use crate::stats::{ExecutionTimes, ModelStats, ResponseOutcome};
use crate::trace::Trace;

/// One execution's requests: the statistics count it once, when its last request has ended, with the
/// requests that succeeded.
pub(crate) struct Execution {
    stats: Arc<ModelStats>,
    start: Instant,
    left: AtomicUsize,
    /// The batch size and queue time of each request that succeeded.
    succeeded: Mutex<(u64, Vec<Duration>)>,
}

impl Execution {
    pub(crate) fn new(stats: Arc<ModelStats>, requests: usize) -> Arc<Execution> {
        Arc::new(Execution {
            stats,
            start: Instant::now(),
            left: AtomicUsize::new(requests),
            succeeded: Mutex::new((0, Vec::new())),
        })
    }

    pub(crate) fn start(&self) -> Instant {
        self.start
    }

    fn ended(&self, ok: Option<(u64, Duration)>) {
        if let Some((size, queue)) = ok {
            let mut s = self.succeeded.lock().unwrap_or_else(|p| p.into_inner());
            s.0 += size;
            s.1.push(queue);
        }
        if self.left.fetch_sub(1, Ordering::AcqRel) != 1 {
            return;
        }
        let (size, queues) =
            std::mem::take(&mut *self.succeeded.lock().unwrap_or_else(|p| p.into_inner()));
        if !queues.is_empty() {
            let times = ExecutionTimes {
                batch_size: size,
                queue: Duration::ZERO,
                compute_input: Duration::ZERO,
                compute_infer: self.start.elapsed(),
                compute_output: Duration::ZERO,
            };
            self.stats.record_batch(&times, &queues);
        }
    }
}

/// What every request's answers share: its execution, size, queue time and trace.
pub(crate) struct Common {
    pub execution: Arc<Execution>,
    pub batch_size: u64,
    pub queue: Duration,
    pub trace: Option<Arc<Trace>>,
    /// The request's cancellation flag ([`crate::infer::InferRequest::cancelled`]).
    pub cancelled: Option<Arc<AtomicBool>>,
}

impl Common {
    fn ended(&self, ok: bool) {
        if let Some(t) = &self.trace {
            let start = self.execution.start;
            stamp_compute([t], start, start, Instant::now());
        }
        self.execution.ended(ok.then_some((self.batch_size, self.queue)));
    }
}

/// The answer of a request of a model that is not decoupled: the first response (or error) ends it.
pub(crate) struct Unary {
    pub common: Common,
    pub tx: Mutex<Option<oneshot::Sender<Result<Answer>>>>,
}

impl Unary {
    fn answer(&self, result: Result<Answer>) -> bool {
        let Some(tx) = self.tx.lock().unwrap_or_else(|p| p.into_inner()).take() else {
            return false;
        };
        self.common.ended(result.is_ok());
        let _ = tx.send(result);
        true
    }
}

impl Responder for Unary {
    fn send(&self, outputs: Vec<Tensor>) -> Result<()> {
        self.send_answer(outputs.into())
    }

    fn is_cancelled(&self) -> bool {
        super::flagged(&self.common.cancelled) || self.caller_gone()
    }

    fn caller_gone(&self) -> bool {
        self.tx.lock().unwrap_or_else(|p| p.into_inner()).as_ref().is_none_or(|tx| tx.is_closed())
    }
}

impl Unary {
    fn send_answer(&self, answer: Answer) -> Result<()> {
        if self.answer(Ok(answer)) {
            Ok(())
        } else {
            Err(Error::invalid_arg("a model that is not decoupled sends one response per request"))
        }
    }
}

impl Answers for Unary {
    fn send_with_parameters(
        &self,
        outputs: Vec<Tensor>,
        parameters: &str,
        _last: bool,
    ) -> Result<()> {
        self.send_answer(answer(outputs, parameters)?)
    }

    fn finish(&self, result: Result<()>) {
        let answer = result.and_then(|()| {
            Err(Error::internal("the model ended the request without sending a response"))
        });
        self.answer(answer);
    }
}

impl Drop for Unary {
    fn drop(&mut self) {
        self.answer(Err(unanswered()));
    }
}

/// The responses of a decoupled request, then its final flag or error.
pub(crate) struct Stream {
    pub common: Common,
    pub tx: mpsc::Sender<Streamed>,
    pub stats: Arc<ModelStats>,
    /// The index of the next response within the request.
    pub index: AtomicU64,
    /// When the instance started working on the next response.
    pub since: Mutex<Instant>,
    pub finished: AtomicBool,
}

impl Stream {
    pub(crate) fn new(common: Common, tx: mpsc::Sender<Streamed>, stats: Arc<ModelStats>) -> Self {
        Stream {
            common,
            tx,
            stats,
            index: AtomicU64::new(0),
            since: Mutex::new(Instant::now()),
            finished: AtomicBool::new(false),
        }
    }
}

impl Stream {
    /// Hands one response over (`Streamed::Response` or `Streamed::Last`) and records it.
    fn hand_over(&self, item: Streamed) -> Result<()> {
        let worked = self.since.lock().unwrap_or_else(|p| p.into_inner()).elapsed();
        let handing = Instant::now();
        if self.tx.blocking_send(item).is_err() {
            return Err(cancelled());
        }
        let index = self.index.fetch_add(1, Ordering::AcqRel);
        self.stats.record_response(index, ResponseOutcome::Success, worked, handing.elapsed());
        *self.since.lock().unwrap_or_else(|p| p.into_inner()) = Instant::now();
        Ok(())
    }
}

impl Responder for Stream {
    fn send(&self, outputs: Vec<Tensor>) -> Result<()> {
        if self.finished.load(Ordering::Acquire) {
            return Err(Error::invalid_arg("the request has already ended"));
        }
        self.hand_over(Streamed::Response(outputs.into()))
    }

    fn is_cancelled(&self) -> bool {
        super::flagged(&self.common.cancelled) || self.caller_gone()
    }

    fn caller_gone(&self) -> bool {
        self.tx.is_closed()
    }
}

impl Answers for Stream {
    fn send_last(&self, outputs: Vec<Tensor>) -> Result<()> {
        self.send_with_parameters(outputs, "", true)
    }

    fn send_with_parameters(
        &self,
        outputs: Vec<Tensor>,
        parameters: &str,
        last: bool,
    ) -> Result<()> {
        let answer = answer(outputs, parameters)?;
        if !last {
            if self.finished.load(Ordering::Acquire) {
                return Err(Error::invalid_arg("the request has already ended"));
            }
            return self.hand_over(Streamed::Response(answer));
        }
        if self.ended() {
            return Err(Error::invalid_arg("the request has already ended"));
        }
        let sent = self.hand_over(Streamed::Last(answer));
        self.common.ended(sent.is_ok());
        sent
    }

    fn finish(&self, result: Result<()>) {
        if self.ended() {
            return;
        }
        let end = match result {
            Ok(()) => Streamed::Final,
            Err(e) => {
                let outcome = if e.code() == Code::Cancelled {
                    ResponseOutcome::Cancel
                } else {
                    ResponseOutcome::Fail
                };
                let worked = self.since.lock().unwrap_or_else(|p| p.into_inner()).elapsed();
                self.stats.record_response(
                    self.index.load(Ordering::Acquire),
                    outcome,
                    worked,
                    Duration::ZERO,
                );
                Streamed::Error(e)
            }
        };
        self.common.ended(matches!(end, Streamed::Final));
        let _ = self.tx.blocking_send(end);
    }
}

impl Stream {
    fn ended(&self) -> bool {
        self.finished.swap(true, Ordering::AcqRel)
    }
}

impl Drop for Stream {
    fn drop(&mut self) {
        self.finish(Err(unanswered()));
    }
}

/// A response with the parameters model code set on it (a JSON object; empty: none).
fn answer(outputs: Vec<Tensor>, parameters: &str) -> Result<Answer> {
    let parameters = crate::infer::parameters_from_json(parameters, "response parameters")?;
    Ok(Answer { outputs, parameters })
}

fn unanswered() -> Error {
    Error::internal("the engine dropped the request without ending it")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tensor(v: i32) -> Tensor {
        let data = bytes::Bytes::copy_from_slice(&v.to_le_bytes());
        Tensor::new("OUT", rampart_types::DataType::Int32, vec![1], data)
    }

    fn common(execution: &Arc<Execution>, size: u64) -> Common {
        Common {
            execution: execution.clone(),
            batch_size: size,
            queue: Duration::ZERO,
            trace: None,
            cancelled: None,
        }
    }

    #[test]
    fn a_cancelled_request_whose_caller_still_reads_is_cancelled_but_not_gone() {
        let stats = Arc::new(ModelStats::default());
        let execution = Execution::new(stats.clone(), 1);
        let flag = Arc::new(AtomicBool::new(false));
        let (tx, mut rx) = mpsc::channel(8);
        let stream = Stream::new(
            Common { cancelled: Some(flag.clone()), ..common(&execution, 1) },
            tx,
            stats.clone(),
        );
        assert!(!stream.is_cancelled());
        flag.store(true, Ordering::Release);
        assert!(stream.is_cancelled() && !stream.caller_gone());
        // What the model still sends is delivered.
        stream.send(vec![tensor(3)]).unwrap();
        assert!(matches!(rx.try_recv().unwrap(), Streamed::Response(_)));
        drop(rx);
        assert!(stream.caller_gone());
    }

    #[test]
    fn a_unary_request_ends_with_its_first_response_and_an_unfinished_one_with_an_error() {
        let stats = Arc::new(ModelStats::default());
        let execution = Execution::new(stats.clone(), 3);
        let (tx, mut first) = oneshot::channel();
        let answered = Unary { common: common(&execution, 2), tx: Mutex::new(Some(tx)) };
        answered.send(vec![tensor(7)]).unwrap();
        assert!(answered.send(vec![tensor(8)]).is_err(), "a second response");
        answered.finish(Err(Error::internal("ignored")));
        assert_eq!(first.try_recv().unwrap().unwrap().outputs[0].data.as_ref(), 7i32.to_le_bytes());
        let (tx, mut none) = oneshot::channel();
        Unary { common: common(&execution, 1), tx: Mutex::new(Some(tx)) }.finish(Ok(()));
        let e = none.try_recv().unwrap().unwrap_err();
        assert!(e.message().contains("without sending a response"), "{e}");
        // The execution is recorded once, when its last request ends, with the requests that succeeded.
        assert_eq!(stats.snapshot().execution_count, 0);
        let (tx, mut dropped) = oneshot::channel();
        drop(Unary { common: common(&execution, 1), tx: Mutex::new(Some(tx)) });
        assert_eq!(dropped.try_recv().unwrap().unwrap_err().code(), Code::Internal);
        let s = stats.snapshot();
        assert_eq!((s.execution_count, s.inference_count), (1, 2));
    }

    #[test]
    fn a_stream_sends_its_responses_then_one_end() {
        let stats = Arc::new(ModelStats::default());
        let execution = Execution::new(stats.clone(), 1);
        let (tx, mut rx) = mpsc::channel(8);
        let stream = Stream::new(common(&execution, 1), tx, stats.clone());
        stream.send(vec![tensor(1)]).unwrap();
        stream.send(vec![tensor(2)]).unwrap();
        stream.finish(Ok(()));
        stream.finish(Err(Error::internal("a second end is ignored")));
        assert!(stream.send(vec![tensor(3)]).is_err(), "a response after the end");
        drop(stream);
        let mut items = vec![];
        while let Ok(item) = rx.try_recv() {
            items.push(item);
        }
        assert!(matches!(
            items.as_slice(),
            [Streamed::Response(_), Streamed::Response(_), Streamed::Final]
        ));
        assert_eq!(stats.snapshot().execution_count, 1);
    }
}
