//! Restricted APIs (`--http-restricted-api`, `--grpc-restricted-protocol`) with Triton's semantics (spec §3):
//! each API category may require a header (HTTP) or metadata entry (gRPC) with an exact value. One parser
//! and one check serve every front end; a front end only maps its endpoints to categories and says how to
//! read a header.
//!
//! Differences from Triton, all on the safe side: values may come from a file (`@/path`) or the environment
//! (`env:NAME`) instead of the command line, the comparison takes the same time whatever the candidate, and
//! the value never appears in a message or log.

use std::fmt;
use std::sync::Arc;

use rampart_types::Error;

/// Triton's API categories, spelled as on the command line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Category {
    Health,
    Metadata,
    Inference,
    SharedMemory,
    ModelConfig,
    ModelRepository,
    Statistics,
    Trace,
    Logging,
}

impl Category {
    pub const ALL: [Category; 9] = [
        Category::Health,
        Category::Metadata,
        Category::Inference,
        Category::SharedMemory,
        Category::ModelConfig,
        Category::ModelRepository,
        Category::Statistics,
        Category::Trace,
        Category::Logging,
    ];

    pub const fn name(self) -> &'static str {
        match self {
            Category::Health => "health",
            Category::Metadata => "metadata",
            Category::Inference => "inference",
            Category::SharedMemory => "shared-memory",
            Category::ModelConfig => "model-config",
            Category::ModelRepository => "model-repository",
            Category::Statistics => "statistics",
            Category::Trace => "trace",
            Category::Logging => "logging",
        }
    }

    pub fn parse(s: &str) -> Option<Category> {
        Category::ALL.into_iter().find(|c| c.name() == s)
    }

    /// Categories that administer the server rather than serve inference.
    pub const fn is_admin(self) -> bool {
        matches!(
            self,
            Category::SharedMemory
                | Category::ModelConfig
                | Category::ModelRepository
                | Category::Statistics
                | Category::Trace
                | Category::Logging
        )
    }

    fn index(self) -> usize {
        Category::ALL.iter().position(|c| *c == self).expect("listed")
    }
}

impl fmt::Display for Category {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Which front end a restriction set belongs to: it decides the flag name, the wording and the header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    Http,
    Grpc,
}

impl Protocol {
    fn flag(self) -> &'static str {
        match self {
            Protocol::Http => "--http-restricted-api",
            Protocol::Grpc => "--grpc-restricted-protocol",
        }
    }
    fn noun(self) -> &'static str {
        match self {
            Protocol::Http => "api",
            Protocol::Grpc => "protocol",
        }
    }
}

/// A secret header value. Its `Debug` never shows it.
#[derive(Clone)]
struct Secret(Vec<u8>);

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Secret(<{} bytes>)", self.0.len())
    }
}

impl Secret {
    /// Compares in time that depends only on the secret's length, never on where a candidate differs.
    fn matches(&self, candidate: &[u8]) -> bool {
        let mut diff = u8::from(candidate.len() != self.0.len());
        for (i, &b) in self.0.iter().enumerate() {
            diff |= b ^ candidate.get(i).copied().unwrap_or(!b);
        }
        diff == 0
    }
}

#[derive(Debug)]
struct Rule {
    /// The header (HTTP) or metadata key (gRPC) as configured, for messages.
    header: String,
    /// The same, lower-case, for look-ups (HTTP header names are case-insensitive; gRPC keys are lower-case).
    lookup: String,
    value: Secret,
}

/// The restrictions of one front end. Default: nothing restricted.
#[derive(Debug, Clone)]
pub struct Restrictions {
    protocol: Protocol,
    rules: [Option<Arc<Rule>>; 9],
}

/// A request that did not present the credential its category requires.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Denied {
    pub protocol: Protocol,
    pub category: Category,
    /// The header that was expected (no value).
    pub header: String,
}

impl Denied {
    /// The client-facing error, as Triton words it for the restriction's protocol. HTTP renders it as 403;
    /// gRPC as UNAVAILABLE (Triton's choice, kept for compatibility: see docs/security.md).
    pub fn to_error(&self) -> Error {
        match self.protocol {
            Protocol::Http => Error::new(
                rampart_types::Code::PermissionDenied,
                format!("This API is restricted, expecting header '{}'", self.header),
            ),
            Protocol::Grpc => Error::unavailable(format!(
                "This protocol is restricted, expecting header '{}'",
                self.header
            )),
        }
    }
}

impl Restrictions {
    pub fn none(protocol: Protocol) -> Self {
        Restrictions { protocol, rules: Default::default() }
    }

    /// Parses the repeated flag values. `resolve` turns a value into the secret (the binary reads `@file` and
    /// `env:NAME` there); its errors must not contain the value.
    pub fn parse(
        protocol: Protocol,
        specs: &[String],
        resolve: &dyn Fn(&str) -> Result<String, String>,
    ) -> Result<Self, String> {
        let mut out = Restrictions::none(protocol);
        let flag = protocol.flag();
        for spec in specs {
            let format_error = || {
                format!("{flag} option format is '<config name>:<setting>=<value>'. Got {}", redact(spec))
            };
            let (cats, setting) = spec.split_once(':').ok_or_else(format_error)?;
            let (key, value) = setting.split_once('=').ok_or_else(format_error)?;
            if cats.is_empty() || key.is_empty() || value.is_empty() {
                return Err(format_error());
            }
            let value = resolve(value)?;
            if value.is_empty() {
                return Err(format!("{flag}: the value for header '{key}' is empty"));
            }
            let header = match protocol {
                Protocol::Http => key.to_string(),
                Protocol::Grpc => format!("triton-grpc-protocol-{key}"),
            };
            let lookup = header.to_ascii_lowercase();
            let rule = Arc::new(Rule { header, lookup, value: Secret(value.into_bytes()) });
            for c in cats.split(',') {
                let cat = Category::parse(c).ok_or_else(|| format!("unknown restricted {} '{c}'", protocol.noun()))?;
                let slot = &mut out.rules[cat.index()];
                if slot.is_some() {
                    return Err(format!(
                        "restricted {} '{c}' can not be specified in multiple config groups",
                        protocol.noun()
                    ));
                }
                *slot = Some(rule.clone());
            }
        }
        Ok(out)
    }

    /// The header a category requires, if any.
    pub fn header_for(&self, category: Category) -> Option<&str> {
        self.rules[category.index()].as_deref().map(|r| r.header.as_str())
    }

    /// Categories that answer without a credential.
    pub fn open_categories(&self) -> Vec<Category> {
        Category::ALL.into_iter().filter(|c| self.rules[c.index()].is_none()).collect()
    }

    /// Checks a request of `category`. `first_header(name)` returns the first value of a header (names are
    /// given lower-case; the front end matches them case-insensitively).
    pub fn check<'a>(&self, category: Category, first_header: impl Fn(&str) -> Option<&'a [u8]>) -> Result<(), Denied> {
        let Some(rule) = &self.rules[category.index()] else { return Ok(()) };
        match first_header(&rule.lookup) {
            Some(v) if rule.value.matches(v) => Ok(()),
            _ => Err(Denied { protocol: self.protocol, category, header: rule.header.clone() }),
        }
    }
}

/// A flag value with everything after the categories replaced, for error messages (a mistyped separator must
/// not echo the secret).
fn redact(spec: &str) -> String {
    match spec.find([':', '=']) {
        Some(i) => format!("'{}<redacted>'", &spec[..=i]),
        None => format!("'{spec}'"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plain(v: &str) -> Result<String, String> {
        Ok(v.to_string())
    }

    fn parse(p: Protocol, specs: &[&str]) -> Result<Restrictions, String> {
        Restrictions::parse(p, &specs.iter().map(|s| s.to_string()).collect::<Vec<_>>(), &plain)
    }

    #[test]
    fn parsing_follows_triton() {
        let r = parse(Protocol::Http, &["model-repository:admin-key=admin:val=ue", "inference,metadata:Infer-Key=iv"]).unwrap();
        assert_eq!(r.header_for(Category::ModelRepository), Some("admin-key"));
        assert_eq!(r.header_for(Category::Inference), Some("Infer-Key"));
        assert_eq!(r.header_for(Category::Health), None);
        assert_eq!(r.open_categories().len(), 6);
        let e = parse(Protocol::Http, &["bogus:k=v"]).unwrap_err();
        assert_eq!(e, "unknown restricted api 'bogus'");
        let e = parse(Protocol::Grpc, &["bogus:k=v"]).unwrap_err();
        assert_eq!(e, "unknown restricted protocol 'bogus'");
        let e = parse(Protocol::Http, &["health:a=b", "health,trace:c=d"]).unwrap_err();
        assert_eq!(e, "restricted api 'health' can not be specified in multiple config groups");
        for bad in ["health", "health:k", ":k=v", "health:=v", "health:k="] {
            let e = parse(Protocol::Http, &[bad]).unwrap_err();
            assert!(e.starts_with("--http-restricted-api option format is"), "{bad}: {e}");
        }
        let e = parse(Protocol::Http, &["health:k"]).unwrap_err();
        assert!(!e.contains("secret"));
        let e = parse(Protocol::Http, &["nope-secretvalue"]).unwrap_err();
        assert!(e.contains("nope-secretvalue"), "no ':' so nothing to redact: {e}");
        let e = parse(Protocol::Http, &["inference:k:secretvalue"]).unwrap_err();
        assert!(!e.contains("secretvalue") && e.contains("'inference:<redacted>'"), "{e}");
        let e = parse(Protocol::Http, &["k=secretvalue"]).unwrap_err();
        assert!(!e.contains("secretvalue") && e.contains("'k=<redacted>'"), "{e}");
        let e = Restrictions::parse(Protocol::Http, &["health:k=v:hidden".into()], &|_| Err("bad value".into())).unwrap_err();
        assert_eq!(e, "bad value");
    }

    #[test]
    fn checks_headers_exactly() {
        let r = parse(Protocol::Grpc, &["inference:Key=Value"]).unwrap();
        let hdr = |want: Option<&'static [u8]>| move |name: &str| {
            assert_eq!(name, "triton-grpc-protocol-key");
            want
        };
        assert!(r.check(Category::Inference, hdr(Some(b"Value"))).is_ok());
        assert!(r.check(Category::Health, hdr(None)).is_ok());
        for bad in [None, Some(&b"value"[..]), Some(&b"Value "[..]), Some(&b"Valu"[..]), Some(&b""[..])] {
            let d = r.check(Category::Inference, hdr(bad)).unwrap_err();
            assert_eq!(d.header, "triton-grpc-protocol-Key");
        }
        let d = r.check(Category::Inference, hdr(None)).unwrap_err();
        assert_eq!(
            d.to_error().message(),
            "This protocol is restricted, expecting header 'triton-grpc-protocol-Key'"
        );
        let h = parse(Protocol::Http, &["health:K=v"]).unwrap();
        let d = h.check(Category::Health, |_| None).unwrap_err();
        let e = d.to_error();
        assert_eq!(e.code().http_status(), 403);
        assert_eq!(e.message(), "This API is restricted, expecting header 'K'");
    }

    #[test]
    fn secret_never_printed() {
        let r = parse(Protocol::Http, &["health:k=topsecret"]).unwrap();
        assert!(!format!("{r:?}").contains("topsecret"));
    }
}
