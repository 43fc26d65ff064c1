//! The one authorization entry point of both front ends: the restricted-API category check
//! (`--http-restricted-api`, `--grpc-restricted-protocol`), the per-model check (`--model-access`), the
//! warning a refusal logs and the audit records. A front end only maps its endpoints to categories
//! (`rampart-http/src/restrict.rs`, `rampart-grpc/src/restrict.rs`) and describes its caller.

use std::sync::Arc;

use rampart_types::{ClientIdentity, Error};

use crate::access::{Category, HeaderCredentials, ModelAccess, Protocol, Restrictions};
use crate::audit::{AuditLog, Call};

/// Who is calling, as the front end sees one request or call.
pub struct Caller<'a> {
    pub protocol: Protocol,
    /// HTTP headers, or gRPC metadata (tonic keeps it in the same map).
    pub headers: &'a http::HeaderMap,
    /// The verified client certificate of the connection, if any.
    pub identity: Option<&'a ClientIdentity>,
    /// The client's address, for the audit log (formatted only when a record is written).
    pub addr: Option<std::net::SocketAddr>,
    /// The HTTP path or the gRPC method.
    pub target: &'a str,
}

impl<'a> Caller<'a> {
    /// A caller seen by `protocol`: its headers (or metadata), its connection's verified certificate and
    /// address, and the path or method it asked for.
    pub fn new(
        protocol: Protocol,
        headers: &'a http::HeaderMap,
        identity: Option<&'a ClientIdentity>,
        addr: Option<std::net::SocketAddr>,
        target: &'a str,
    ) -> Self {
        Caller { protocol, headers, identity, addr, target }
    }

    /// Writes an audit record of this caller: `write` gets the call, its client address formatted.
    fn audit(&self, write: impl FnOnce(&Call<'_>)) {
        let client = self.addr.map(|a| a.to_string());
        write(&Call {
            protocol: self.protocol,
            client: client.as_deref(),
            identity: self.identity,
            target: self.target,
        });
    }

    fn credentials(&self) -> HeaderCredentials<'_> {
        HeaderCredentials { headers: self.headers, identity: self.identity }
    }
}

/// The access rules of one listener and where its decisions are recorded.
#[derive(Clone)]
pub struct Gate {
    restrictions: Arc<Restrictions>,
    model_access: Arc<ModelAccess>,
    audit: Option<Arc<AuditLog>>,
}

impl Gate {
    pub fn new(
        restrictions: Arc<Restrictions>,
        model_access: Arc<ModelAccess>,
        audit: Option<Arc<AuditLog>>,
    ) -> Self {
        Gate { restrictions, model_access, audit }
    }

    /// Whether an inference request's caller must be described: `--model-access` has rules to check, or
    /// the caller can be identified for its sequences (a key this gate knows — a restricted inference
    /// category or `--model-access` keys — or the connection's `verified` client certificate). Front ends
    /// skip describing the caller otherwise.
    pub fn describes_callers(&self, verified: bool) -> bool {
        verified
            || !self.model_access.is_empty()
            || self.restrictions.header_for(Category::Inference).is_some()
            || self.model_access.has_keys()
    }

    /// Who is calling, as far as this listener verified: the client certificate's subject, else the key it
    /// presented for inference (`--http-restricted-api`/`--grpc-restricted-protocol` on inference, or a
    /// `--model-access` key naming `model`), as a SHA-256 digest of the header and value. `None`:
    /// anonymous. A sequence started by one principal refuses requests of another.
    fn principal(&self, model: &str, caller: &Caller<'_>) -> Option<String> {
        if let Some(id) = caller.identity {
            return Some(format!("cert:{}", id.subject()));
        }
        // The key that let the request in: a `--model-access` key it presents with the right value, else
        // the restricted inference category's (checked before the request got here).
        let creds = caller.credentials();
        let header = self
            .model_access
            .presented_key(caller.protocol, model, &creds)
            .or_else(|| self.restrictions.lookup_for(Category::Inference));
        header.and_then(|h| {
            let value = caller.headers.get(h)?;
            let mut input = h.as_bytes().to_vec();
            input.push(0);
            input.extend_from_slice(value.as_bytes());
            let digest = ring::digest::digest(&ring::digest::SHA256, &input);
            let hex: String = digest.as_ref()[..16].iter().map(|b| format!("{b:02x}")).collect();
            Some(format!("key:{hex}"))
        })
    }

    /// The category check of a request in `category`. A refusal (401/403, UNAUTHENTICATED/
    /// PERMISSION_DENIED) is logged as a warning and audited.
    pub fn authorize(&self, category: Category, caller: &Caller<'_>) -> Result<(), Error> {
        self.restrictions.check(category, &caller.credentials()).map_err(|denied| {
            let target = caller.target.escape_debug();
            match caller.protocol {
                Protocol::Http => tracing::warn!(category = category.name(), path = %target, "restricted API refused: missing or wrong credential"),
                Protocol::Grpc => tracing::warn!(category = category.name(), method = %target, "restricted protocol refused: missing or wrong credential"),
            }
            if let Some(log) = &self.audit {
                caller.audit(|call| log.denied(call, &denied));
            }
            denied.to_error()
        })
    }

    /// Whether an audit log is kept (so that a caller builds a record only then).
    pub fn audits(&self) -> bool {
        self.audit.is_some()
    }

    /// Records an allowed call in an admin category with its outcome (the audit log keeps admin calls
    /// only).
    pub fn audit_admin(&self, category: Category, caller: &Caller<'_>, outcome: String) {
        if let Some(log) = &self.audit {
            caller.audit(|call| log.admin(call, category, outcome));
        }
    }

    /// `--model-access` for an inference request of `model` (the category check ran before). For an
    /// ensemble the caller must also be allowed every model its steps reach: an ensemble never lets a
    /// client run a model it could not call directly. On success, the caller's principal.
    pub fn authorize_model(
        &self,
        server: &crate::Server,
        model: &str,
        caller: &Caller<'_>,
    ) -> Result<Option<String>, Error> {
        if self.model_access.is_empty() {
            return Ok(self.principal(model, caller));
        }
        let creds = caller.credentials();
        for reached in std::iter::once(model.to_string()).chain(server.composing_models(model)) {
            self.model_access.check(caller.protocol, &reached, &creds).map_err(|denied| {
                tracing::warn!(model = %model.escape_debug(), step = %reached.escape_debug(), "model access refused: missing or wrong credential");
                if let Some(log) = &self.audit {
                    caller.audit(|call| log.denied(call, &denied));
                }
                denied.to_error()
            })?;
        }
        Ok(self.principal(model, caller))
    }
}
