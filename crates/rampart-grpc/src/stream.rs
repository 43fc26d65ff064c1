//! `ModelStreamInfer`: many requests and their responses on one bidirectional stream.
//!
//! Each request runs as its own task (at most [`STREAM_CONCURRENCY`] at once). Responses wait for the
//! client in one bounded channel per stream (`--grpc-max-response-pool-size`); when it is full, the
//! models' instances wait too. Requests to a model with one response each are answered in request order
//! (a [`Turn`] chain). A decoupled model's responses go out as its instance sends them, each with the
//! parameter `triton_final_response`; the final flag on its own becomes an empty response only when the
//! request asked for it (`triton_enable_empty_final_response`). When the client goes away the stream's
//! tasks are aborted, which drops their core streams and cancels the requests.
//!
//! With the `triton_grpc_error: true` header the first error ends the stream with its status; otherwise
//! errors travel in `error_message` and the stream stays open. When the server drains (after
//! `--shutdown-grace-secs`), a stream takes no new request, answers the ones it has and ends with
//! UNAVAILABLE, a status rather than a reset.

use std::pin::Pin;
use std::sync::Arc;

use rampart_core::{ResponseStream, StreamedResponse};
use rampart_types::Error;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc, oneshot};
use tokio::task::JoinSet;
use tokio_stream::{Stream, StreamExt};
use tonic::{Status, Streaming};

use crate::inference::{Caller, Inference, Trace, status};
use crate::pb::{self, infer_parameter::ParameterChoice};

/// Requests of one stream that may run at once.
pub const STREAM_CONCURRENCY: usize = 64;
/// Responses of one stream that may wait to be written when `--grpc-max-response-pool-size` is left at
/// Triton's default (unbounded).
pub const DEFAULT_PENDING_RESPONSES: usize = 64;
/// The most `--grpc-max-response-pool-size` keeps.
pub const MAX_PENDING_RESPONSES: usize = 1 << 16;

const FINAL: &str = "triton_final_response";
const EMPTY_FINAL: &str = "triton_enable_empty_final_response";

pub(crate) type InferStream =
    Pin<Box<dyn Stream<Item = Result<pb::ModelStreamInferResponse, Status>> + Send>>;

type Out = mpsc::Sender<Result<pb::ModelStreamInferResponse, Status>>;

/// What every request of a stream shares.
#[derive(Clone)]
pub(crate) struct StreamContext {
    pub inference: Inference,
    pub caller: Option<Arc<Caller>>,
    pub traceparent: Option<Arc<str>>,
    pub close_on_error: bool,
}

/// Answers the requests of one stream.
pub(crate) fn serve(
    cx: StreamContext,
    requests: Streaming<pb::ModelInferRequest>,
    pending: usize,
) -> InferStream {
    let (out, rx) = mpsc::channel(pending.max(1));
    tokio::spawn(dispatch(cx, requests, out));
    Box::pin(tokio_stream::wrappers::ReceiverStream::new(rx))
}

async fn dispatch(cx: StreamContext, mut requests: Streaming<pb::ModelInferRequest>, out: Out) {
    let mut tasks = JoinSet::new();
    let slots = Arc::new(Semaphore::new(STREAM_CONCURRENCY));
    let mut previous: Option<oneshot::Receiver<Option<Link>>> = None;
    let mut admitted_before: Option<oneshot::Receiver<()>> = None;
    let draining = cx.inference.server.draining();
    tokio::pin!(draining);
    let mut shutting_down = false;
    loop {
        tokio::select! {
            // The client went away: returning drops `tasks`, which aborts them.
            _ = out.closed() => return,
            // The server drains: no new requests; the ones running are answered, then a clean end.
            () = &mut draining => {
                shutting_down = true;
                break;
            }
            Some(_) = tasks.join_next(), if !tasks.is_empty() => {}
            item = requests.next() => match item {
                None => break,
                // A message that cannot be decoded (e.g. over the size limit) breaks the stream itself.
                Some(Err(s)) => {
                    let _ = out.send(Err(crate::status::request_error(s, "ModelStreamInfer"))).await;
                    return;
                }
                Some(Ok(req)) => {
                    let permit = tokio::select! {
                        p = slots.clone().acquire_owned() => p.expect("the semaphore is never closed"),
                        _ = out.closed() => return,
                    };
                    let (done, next) = oneshot::channel();
                    let turn = Turn::new(previous.replace(next), done);
                    let (admitted, after) = oneshot::channel();
                    let order = Admission { before: admitted_before.replace(after), admitted };
                    tasks.spawn(answer(cx.clone(), req, out.clone(), turn, order, permit));
                }
            }
        }
    }
    // The client closed its side (or the server drains): finish the requests that run, unless the client
    // goes away meanwhile.
    loop {
        tokio::select! {
            _ = out.closed() => return,
            joined = tasks.join_next() => if joined.is_none() { break },
        }
    }
    if shutting_down {
        let _ = out.send(Err(Status::unavailable(SHUTTING_DOWN))).await;
    }
}

/// The status that ends a stream still open when the server drains (after its requests were answered).
const SHUTTING_DOWN: &str = "the server is shutting down: this stream's requests were answered; reconnect to \
                             another server";

/// A request's place in the order of answers: it may write once the request before it is done (its
/// `Turn` dropped without passing).
struct Turn {
    previous: Option<Link>,
    done: oneshot::Sender<Option<Link>>,
}

/// Where a request waits for the one before it: the channel closes when that request is done, or carries the
/// link before it when that request passed its turn (a decoupled request does not hold the order).
struct Link(oneshot::Receiver<Option<Link>>);

impl Turn {
    fn new(
        previous: Option<oneshot::Receiver<Option<Link>>>,
        done: oneshot::Sender<Option<Link>>,
    ) -> Self {
        Turn { previous: previous.map(Link), done }
    }

    /// Waits until every request before this one is done.
    async fn wait(&mut self) {
        while let Some(Link(rx)) = &mut self.previous {
            self.previous = rx.await.ok().flatten();
        }
    }

    /// Lets the requests behind go first, once the requests before are done: the request behind waits on
    /// the link before this one. Links already passed are skipped here, so however many decoupled requests
    /// follow a running one, the chain stays as long as the requests still holding the order.
    fn pass(mut self) {
        while let Some(Link(rx)) = &mut self.previous {
            match rx.try_recv() {
                Ok(link) => self.previous = link,
                Err(oneshot::error::TryRecvError::Closed) => self.previous = None,
                Err(oneshot::error::TryRecvError::Empty) => break,
            }
        }
        let _ = self.done.send(self.previous.take());
    }
}

/// A request's place in the order the core receives the stream's requests: it is handed over once the
/// request before it was (or failed), so the requests of a sequence reach its batcher in the order sent.
struct Admission {
    before: Option<oneshot::Receiver<()>>,
    admitted: oneshot::Sender<()>,
}

/// Runs one request of the stream and writes its responses.
async fn answer(
    cx: StreamContext,
    req: pb::ModelInferRequest,
    out: Out,
    mut turn: Turn,
    order: Admission,
    _slot: OwnedSemaphorePermit,
) {
    let echo = Echo {
        id: req.id.clone(),
        model: req.model_name.clone(),
        version: req.model_version.clone(),
    };
    let started = start(&cx, req, order).await;
    let (mut stream, trace, empty_final) = match started {
        Ok(s) => s,
        Err(e) => {
            turn.wait().await;
            let _ = out.send(failure(&cx, e, None)).await;
            return;
        }
    };
    if !stream.decoupled() {
        let first = stream.next().await.unwrap_or_else(|| Err(Error::internal("no response")));
        turn.wait().await;
        let item = match first {
            Ok(StreamedResponse { response: Some(r), .. }) => {
                stamp(&trace, "GRPC_SEND_START");
                let item = written(r, &echo, true);
                stamp(&trace, "GRPC_SEND_END");
                Ok(item)
            }
            Ok(StreamedResponse { response: None, .. }) => return,
            Err(e) => failure(&cx, e, Some(&echo)),
        };
        let _ = out.send(item).await;
        return;
    }
    turn.pass();
    while let Some(item) = stream.next().await {
        let item = match item {
            Ok(StreamedResponse { response: Some(r), last }) => Ok(written(r, &echo, last)),
            Ok(StreamedResponse { response: None, .. }) if empty_final => Ok(empty(&echo)),
            Ok(StreamedResponse { response: None, .. }) => return,
            Err(e) => failure(&cx, e, Some(&echo)),
        };
        if out.send(item).await.is_err() {
            return; // the client went away: dropping `stream` cancels the request
        }
    }
}

/// Checks and converts a request and hands it to the core; also reads
/// `triton_enable_empty_final_response`, which is the front end's and not passed on.
async fn start(
    cx: &StreamContext,
    mut req: pb::ModelInferRequest,
    order: Admission,
) -> Result<(ResponseStream, Option<Trace>, bool), Error> {
    if let Some(before) = order.before {
        let _ = before.await;
    }
    // Signalled after the first poll, by which the core has queued the request (or refused it): its
    // admission runs before the first point where the request waits. An early error drops the sender,
    // which lets the next request go as well.
    let mut admitted = Some(order.admitted);
    let empty_final = match req.parameters.remove(EMPTY_FINAL).and_then(|p| p.parameter_choice) {
        None => false,
        Some(ParameterChoice::BoolParam(b)) => b,
        Some(_) => {
            return Err(Error::invalid_arg(format!(
                "invalid value type for '{EMPTY_FINAL}' parameter, expected bool_param."
            )));
        }
    };
    let principal = cx.inference.check_model(cx.caller.as_deref(), &req.model_name)?;
    let call = cx.inference.infer_stream(req, cx.traceparent.as_deref(), principal);
    let mut call = std::pin::pin!(call);
    let (stream, trace) = std::future::poll_fn(|c| {
        let polled = call.as_mut().poll(c);
        if let Some(a) = admitted.take() {
            let _ = a.send(());
        }
        polled
    })
    .await?;
    Ok((stream, trace, empty_final))
}

fn stamp(trace: &Option<Trace>, name: &'static str) {
    if let Some(t) = trace {
        t.stamp(name);
    }
}

/// What a response repeats of its request.
struct Echo {
    id: String,
    model: String,
    version: String,
}

fn final_flag(last: bool) -> (String, pb::InferParameter) {
    (
        FINAL.to_string(),
        pb::InferParameter { parameter_choice: Some(ParameterChoice::BoolParam(last)) },
    )
}

fn written(
    r: rampart_core::InferResponse,
    echo: &Echo,
    last: bool,
) -> pb::ModelStreamInferResponse {
    let mut response = crate::convert::infer_response(r);
    if response.id.is_empty() {
        response.id.clone_from(&echo.id);
    }
    response.parameters.extend([final_flag(last)]);
    pb::ModelStreamInferResponse { error_message: String::new(), infer_response: Some(response) }
}

/// The final flag alone, as an empty response (`triton_enable_empty_final_response`).
fn empty(echo: &Echo) -> pb::ModelStreamInferResponse {
    let response = pb::ModelInferResponse {
        id: echo.id.clone(),
        model_name: echo.model.clone(),
        model_version: echo.version.clone(),
        parameters: [final_flag(true)].into_iter().collect(),
        ..Default::default()
    };
    pb::ModelStreamInferResponse { error_message: String::new(), infer_response: Some(response) }
}

/// An error: the stream's status with `triton_grpc_error`, otherwise an `error_message`. An error of a
/// request that reached its model (`echo`) carries the request's id and the final flag.
fn failure(
    cx: &StreamContext,
    e: Error,
    echo: Option<&Echo>,
) -> Result<pb::ModelStreamInferResponse, Status> {
    if cx.close_on_error {
        return Err(status(e));
    }
    let infer_response = echo.map(|echo| pb::ModelInferResponse {
        id: echo.id.clone(),
        model_name: echo.model.clone(),
        model_version: echo.version.clone(),
        parameters: [final_flag(true)].into_iter().collect(),
        ..Default::default()
    });
    Ok(pb::ModelStreamInferResponse { error_message: e.message().to_string(), infer_response })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A chain of turns as `dispatch` builds it.
    fn chain(n: usize) -> Vec<Turn> {
        let mut previous = None;
        (0..n)
            .map(|_| {
                let (done, next) = oneshot::channel();
                Turn::new(previous.replace(next), done)
            })
            .collect()
    }

    /// Decoupled requests that finish behind a coupled one still running leave nothing behind, and the
    /// request after them still waits for the coupled one.
    #[tokio::test]
    async fn passed_turns_hold_no_task_and_keep_the_order() {
        let n = 10_000;
        let mut turns = chain(n + 2);
        let mut last = turns.pop().expect("the last turn");
        let mut turns = turns.into_iter();
        let coupled = turns.next().expect("the first turn");
        let alive = tokio::runtime::Handle::current().metrics().num_alive_tasks();
        for decoupled in turns {
            decoupled.pass();
        }
        tokio::task::yield_now().await;
        let now = tokio::runtime::Handle::current().metrics().num_alive_tasks();
        assert!(now <= alive + 1, "{n} passed turns left {} tasks", now - alive);
        let waited = tokio::time::timeout(std::time::Duration::from_millis(20), last.wait()).await;
        assert!(waited.is_err(), "the last request must wait for the coupled one");
        drop(coupled);
        tokio::time::timeout(std::time::Duration::from_secs(5), last.wait())
            .await
            .expect("the coupled request is done: the last one's turn comes");
    }
}
