//! The built-in backends `identity`, `repeat` and `square`: Triton's test backends, which its qa suites,
//! the rate limiter and many users' smoke and load tests rely on. A model of theirs is only a
//! `config.pbtxt` (and an empty version directory); no model file is read.
//!
//! - [`Identity`]: every `OUTPUT<k>` is the request's `INPUT<k>`, any data type; the model parameter
//!   `execute_delay_ms` sleeps once per execution.
//! - [`Repeat`] (decoupled): one response per element of `IN`, with `OUT = IN[i]` and `IDX = i`, each after
//!   `DELAY[i]` ms.
//! - [`Square`] (decoupled): `IN` responses, each with `OUT = IN`.
//!
//! Config checks and messages follow Triton's backends. [`register`] adds all three to a registry.
#![forbid(unsafe_code)]

mod identity;
mod repeat;
mod square;

use std::sync::Arc;
use std::time::Duration;

pub use identity::Identity;
pub use repeat::Repeat;
pub use square::Square;

use rampart_types::{Backends, DataType, Error, IoSpec, Responder, Result, Tensor};

/// Registers `identity`, `repeat` and `square`.
pub fn register(backends: &mut Backends) {
    backends.register("identity", Arc::new(Identity));
    backends.register("repeat", Arc::new(Repeat));
    backends.register("square", Arc::new(Square));
}

/// A shape as Triton's backends print it: `[1,2]`.
fn shape(dims: &[i64]) -> String {
    let parts: Vec<String> = dims.iter().map(i64::to_string).collect();
    format!("[{}]", parts.join(","))
}

fn type_name(s: &IoSpec) -> &str {
    s.datatype.as_ref().map(|t| t.config_name()).unwrap_or("TYPE_INVALID")
}

/// Checks that a declared tensor has `name`, `datatype` and (when given) `dims`, with Triton's messages.
fn expect(
    kind: &str,
    position: &str,
    spec: &IoSpec,
    name: &str,
    datatype: DataType,
    dims: Option<&[i64]>,
) -> Result<()> {
    if spec.name != name {
        return Err(Error::invalid_arg(format!(
            "expected {position} {kind} tensor name to be {name}, got {}",
            spec.name
        )));
    }
    if let Some(dims) = dims
        && spec.dims != dims
    {
        return Err(Error::invalid_arg(format!(
            "expected {name} shape to be {}, got {}",
            shape(dims),
            shape(&spec.dims)
        )));
    }
    if spec.datatype != Ok(datatype) {
        return Err(Error::invalid_arg(format!(
            "expected {name} datatype to be {}, got {}",
            datatype.as_str(),
            type_name(spec)
        )));
    }
    Ok(())
}

/// The input `name` of a request.
fn input<'a>(inputs: &'a [Tensor], name: &str) -> Result<&'a Tensor> {
    inputs
        .iter()
        .find(|t| t.name == name)
        .ok_or_else(|| Error::invalid_arg(format!("failed to get input '{name}'")))
}

/// The little-endian 32-bit values of a tensor.
fn words(t: &Tensor) -> impl Iterator<Item = [u8; 4]> + '_ {
    t.data.chunks_exact(4).map(|c| [c[0], c[1], c[2], c[3]])
}

/// Longest sleep one request value may ask for (`DELAY`, `WAIT`): a client controls it.
pub const MAX_DELAY_MS: u64 = 60_000;

/// Sleeps `ms` in short steps, stopping early when the request is cancelled.
fn sleep(ms: u64, responder: &dyn Responder) -> Result<()> {
    let until = std::time::Instant::now() + Duration::from_millis(ms);
    loop {
        if responder.is_cancelled() {
            return Err(Error::new(rampart_types::Code::Cancelled, "request cancelled"));
        }
        let left = until.saturating_duration_since(std::time::Instant::now());
        if left.is_zero() {
            return Ok(());
        }
        std::thread::sleep(left.min(Duration::from_millis(20)));
    }
}

/// Collects the responses of a decoupled backend run as a coupled model (`decoupled: false`): the first
/// is the answer, as in Triton.
#[derive(Default)]
struct First(std::cell::RefCell<Option<Vec<Tensor>>>);

impl Responder for First {
    fn send(&self, outputs: Vec<Tensor>) -> Result<()> {
        let mut first = self.0.borrow_mut();
        if first.is_none() {
            *first = Some(outputs);
        }
        Ok(())
    }
    fn is_cancelled(&self) -> bool {
        false
    }
}

impl First {
    /// Runs a decoupled instance's request and answers with its first response.
    fn answer_of(
        instance: &mut dyn rampart_types::EngineInstance,
        inputs: &[Tensor],
        outputs: &[String],
        model: &str,
    ) -> Result<Vec<Tensor>> {
        let first = First::default();
        let request = rampart_types::EngineRequest::new(inputs.to_vec(), outputs.to_vec());
        instance.execute_decoupled(&request, &first)?;
        first.0.into_inner().ok_or_else(|| {
            Error::invalid_arg(format!(
                "model '{model}' sent no response; a model that answers zero or several responses per request \
                 needs model_transaction_policy {{ decoupled: true }}"
            ))
        })
    }
}

#[cfg(test)]
mod tests;
