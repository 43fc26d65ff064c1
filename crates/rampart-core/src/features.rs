//! Answers for protocol features this build does not offer, written once for every front end.

use rampart_types::Error;

/// Client shared-memory registration and shared-memory tensor parameters (`--allow-client-shm=false`).
pub fn client_shm_disabled() -> Error {
    Error::unsupported(
        "Client shared memory is disabled. Start the server with '--allow-client-shm=true' to enable.",
    )
}

/// CUDA shared memory: this server has no GPU support.
pub fn cuda_shm_unsupported() -> Error {
    Error::invalid_arg(
        "CUDA shared memory is not supported: this server was built without GPU support",
    )
}

/// An API whose feature belongs to a later release (trace settings, log settings, generate).
pub fn not_yet(what: &str) -> Error {
    Error::unsupported(format!("{what} is not supported yet by Rampart"))
}
