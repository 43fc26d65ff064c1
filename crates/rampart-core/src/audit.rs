//! The audit log: one JSON object per line for every call in an administrative category, every refused
//! credential, and startup and shutdown. Written to stderr or to `--audit-log-file` (opened at startup only;
//! nothing reachable over the network can change it). JSON encoding escapes control characters, so request
//! paths and names cannot forge lines.

use std::io::Write;
use std::path::Path;
use std::sync::Mutex;

use serde_json::{Map, Value, json};

use crate::access::{Category, Denied, Protocol};
use rampart_types::ClientIdentity;

/// One audited event. Fields that do not apply stay `None` and are left out.
#[derive(Debug, Default, Clone)]
pub struct AuditEvent<'a> {
    /// `startup`, `shutdown`, `admin` (a call in an admin category) or `denied` (a refused credential).
    pub event: &'a str,
    /// `http` or `grpc`.
    pub protocol: Option<&'a str>,
    pub client: Option<String>,
    /// The verified client-certificate subject of an mTLS connection.
    pub tls_identity: Option<String>,
    pub category: Option<Category>,
    /// The model a `--model-access` refusal was about.
    pub model: Option<String>,
    /// The path (HTTP) or method (gRPC), or what started/stopped.
    pub target: Option<String>,
    /// `allowed`, `denied`, or an HTTP status code.
    pub outcome: Option<String>,
}

pub struct AuditLog {
    sink: Mutex<Box<dyn Write + Send>>,
}

impl std::fmt::Debug for AuditLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AuditLog")
    }
}

impl AuditLog {
    pub fn stderr() -> Self {
        AuditLog { sink: Mutex::new(Box::new(std::io::stderr())) }
    }

    /// Appends to `path` (created with mode 0600 when new).
    pub fn file(path: &Path) -> Result<Self, String> {
        use std::os::unix::fs::OpenOptionsExt;
        let f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .mode(0o600)
            .open(path)
            .map_err(|e| format!("cannot open --audit-log-file '{}': {e}", path.display()))?;
        Ok(AuditLog { sink: Mutex::new(Box::new(f)) })
    }

    /// A log that keeps the lines in memory (tests).
    pub fn to_writer(w: Box<dyn Write + Send>) -> Self {
        AuditLog { sink: Mutex::new(w) }
    }

    pub fn record(&self, e: &AuditEvent<'_>) {
        let mut o = Map::new();
        o.insert("time".into(), json!(now_rfc3339()));
        o.insert("event".into(), json!(e.event));
        let opt = |o: &mut Map<String, Value>, k: &str, v: Option<&str>| {
            if let Some(v) = v {
                o.insert(k.into(), json!(v));
            }
        };
        opt(&mut o, "protocol", e.protocol);
        opt(&mut o, "client", e.client.as_deref());
        opt(&mut o, "tls_identity", e.tls_identity.as_deref());
        opt(&mut o, "category", e.category.map(|c| c.name()));
        opt(&mut o, "model", e.model.as_deref());
        opt(&mut o, "target", e.target.as_deref());
        opt(&mut o, "outcome", e.outcome.as_deref());
        // JSON escapes control characters; U+2028 and U+2029 are legal unescaped in JSON but end a line for
        // many log readers, so they are escaped too.
        let mut line = Value::Object(o)
            .to_string()
            .replace('\u{2028}', "\\u2028")
            .replace('\u{2029}', "\\u2029");
        line.push('\n');
        let mut sink = self.sink.lock().unwrap_or_else(|p| p.into_inner());
        if let Err(err) = sink.write_all(line.as_bytes()).and_then(|()| sink.flush()) {
            tracing::error!("cannot write the audit log: {err}");
        }
    }
}

/// The request an audit record is about, as a front end sees it.
#[derive(Debug, Clone, Copy)]
pub struct Call<'a> {
    pub protocol: Protocol,
    pub client: Option<&'a str>,
    pub identity: Option<&'a ClientIdentity>,
    /// The path (HTTP) or method (gRPC).
    pub target: &'a str,
}

impl AuditLog {
    /// Records a refused credential.
    pub fn denied(&self, call: &Call<'_>, denied: &Denied) {
        self.record(&call.event("denied", denied.category, "denied".into(), denied.model.clone()));
    }

    /// Records a call in an admin category (see [`audited`]) with its outcome; other calls are not recorded.
    pub fn admin(&self, call: &Call<'_>, category: Category, outcome: String) {
        if audited(category) {
            self.record(&call.event("admin", category, outcome, None));
        }
    }
}

impl<'a> Call<'a> {
    fn event(
        &self,
        event: &'a str,
        category: Category,
        outcome: String,
        model: Option<String>,
    ) -> AuditEvent<'a> {
        AuditEvent {
            event,
            protocol: Some(self.protocol.name()),
            client: self.client.map(str::to_string),
            tls_identity: self.identity.map(|i| i.subject().to_string()),
            category: Some(category),
            model,
            target: Some(self.target.to_string()),
            outcome: Some(outcome),
        }
    }
}

/// Whether calls of this category are audited (every admin category; refusals are audited everywhere).
pub fn audited(category: Category) -> bool {
    category.is_admin()
}

/// UTC time as `YYYY-MM-DDTHH:MM:SS.mmmZ`.
fn now_rfc3339() -> String {
    crate::logging::UtcTime::now().rfc3339_millis()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[derive(Clone, Default)]
    struct Buf(Arc<Mutex<Vec<u8>>>);
    impl Write for Buf {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn one_json_line_per_event_with_escaping() {
        let buf = Buf::default();
        let log = AuditLog::to_writer(Box::new(buf.clone()));
        log.record(&AuditEvent {
            event: "denied",
            protocol: Some("http"),
            client: Some("127.0.0.1:5".into()),
            category: Some(Category::ModelRepository),
            target: Some("/v2/repository/index\n{\"forged\":1}\u{2028}x\u{2029}".into()),
            outcome: Some("denied".into()),
            ..Default::default()
        });
        let text = String::from_utf8(buf.0.lock().unwrap().clone()).unwrap();
        assert_eq!(text.lines().count(), 1, "{text}");
        let v: Value = serde_json::from_str(text.trim()).unwrap();
        assert_eq!(v["category"], "model-repository");
        assert_eq!(v["target"], "/v2/repository/index\n{\"forged\":1}\u{2028}x\u{2029}");
        assert!(!text.contains('\u{2028}') && text.contains("\\u2028"), "{text}");
        assert!(v.get("tls_identity").is_none());
        let t = v["time"].as_str().unwrap();
        assert!(t.len() == 24 && t.ends_with('Z') && t.starts_with("20"), "{t}");
    }
}
