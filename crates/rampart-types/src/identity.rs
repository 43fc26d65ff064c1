//! The verified identity of a client: the names carried by the certificate it presented on a mutual-TLS
//! connection, once the TLS layer has checked it against the configured CA. Access rules name one of these
//! (`cn:…`, `dns:…`, `uri:…`, `email:…`, `ip:…`); nothing here parses certificates.

use std::fmt;

/// Kinds of certificate name an access rule can require.
pub const IDENTITY_KINDS: [&str; 5] = ["cn", "dns", "uri", "email", "ip"];

/// The names of a verified client certificate, each as `<kind>:<value>` (DNS names lower-case).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ClientIdentity {
    /// The certificate subject as text, for audit records.
    subject: String,
    names: Vec<String>,
}

impl ClientIdentity {
    /// `names` are `(kind, value)` pairs; kinds outside [`IDENTITY_KINDS`] are dropped.
    pub fn new(
        subject: impl Into<String>,
        names: impl IntoIterator<Item = (&'static str, String)>,
    ) -> Self {
        let names = names
            .into_iter()
            .filter(|(kind, _)| IDENTITY_KINDS.contains(kind))
            .map(|(kind, value)| normalize(kind, &value))
            .collect();
        ClientIdentity { subject: subject.into(), names }
    }

    pub fn subject(&self) -> &str {
        &self.subject
    }

    pub fn names(&self) -> &[String] {
        &self.names
    }

    /// Whether the certificate carries `wanted` (an identity as returned by [`parse_identity`]).
    pub fn has(&self, wanted: &str) -> bool {
        self.names.iter().any(|n| n == wanted)
    }
}

impl fmt::Display for ClientIdentity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.subject)
    }
}

fn normalize(kind: &str, value: &str) -> String {
    if kind == "dns" {
        format!("dns:{}", value.to_ascii_lowercase())
    } else {
        format!("{kind}:{value}")
    }
}

/// Parses an identity as written in a flag (`dns:client.example`), normalized for [`ClientIdentity::has`].
pub fn parse_identity(text: &str) -> Result<String, String> {
    let bad = || {
        format!(
            "client identity '{}' must be <kind>:<name> with kind one of {}",
            text.escape_debug(),
            IDENTITY_KINDS.join(", ")
        )
    };
    let (kind, value) = text.split_once(':').ok_or_else(bad)?;
    let kind = IDENTITY_KINDS.into_iter().find(|k| *k == kind).ok_or_else(bad)?;
    if value.is_empty() || value.chars().any(char::is_control) {
        return Err(bad());
    }
    Ok(normalize(kind, value))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_match_by_kind() {
        let id = ClientIdentity::new(
            "CN=alice,O=example",
            [
                ("cn", "alice".to_string()),
                ("dns", "Alice.Example".to_string()),
                ("uri", "spiffe://ex/ns/a".to_string()),
                ("x", "y".into()),
            ],
        );
        assert!(id.has(&parse_identity("cn:alice").unwrap()));
        assert!(id.has(&parse_identity("dns:alice.example").unwrap()));
        assert!(id.has(&parse_identity("dns:ALICE.example").unwrap()));
        assert!(id.has(&parse_identity("uri:spiffe://ex/ns/a").unwrap()));
        assert!(!id.has(&parse_identity("uri:spiffe://ex/ns/A").unwrap()));
        assert!(!id.has(&parse_identity("dns:alice").unwrap()), "a CN is not a DNS name");
        assert!(!id.has(&parse_identity("cn:Alice").unwrap()));
        assert_eq!(id.names().len(), 3);
        assert_eq!(id.to_string(), "CN=alice,O=example");
        for bad in ["alice", "cn:", "CN:alice", "host:alice", "cn:a\nb", ""] {
            assert!(parse_identity(bad).is_err(), "{bad}");
        }
    }
}
