//! Restricted APIs (`--http-restricted-api`, `--grpc-restricted-protocol`) with Triton's semantics
//! (docs/protocol.md, "Restricted APIs"): each API category may require a header (HTTP) or metadata
//! entry (gRPC) with an exact value. One parser and one check serve every front end; a front end
//! only maps its endpoints to categories and says how to read a header.
//!
//! Differences from Triton, all on the safe side: values may come from a file (`@/path`) or the environment
//! (`env:NAME`) instead of the command line, the comparison takes the same time whatever the candidate, and
//! the value never appears in a message or log.
//!
//! Beyond Triton (docs/security.md, "Finer authorization"):
//! - `--client-cert-access=<categories>:<identity>` lets the verified client certificate of a mutual-TLS
//!   connection stand in for a category's key: a request passes with the key *or* a listed certificate name;
//! - `--model-access=<model globs>:<key>=<value>` or `…:client-cert=<identity>` adds a per-model check to
//!   inference: once the category check passed, a request for a model that some rule names must satisfy one
//!   of the rules naming it. Models no rule names are governed by the category rules alone.

use std::fmt;
use std::sync::Arc;

use rampart_types::identity::parse_identity;
use rampart_types::{ClientIdentity, Error};

/// What a request presents: its headers (HTTP) or metadata (gRPC), and the verified client certificate of
/// its connection.
pub trait Credentials {
    /// The first value of a header; `name` is lower-case and matched case-insensitively.
    fn header(&self, name: &str) -> Option<&[u8]>;
    fn identity(&self) -> Option<&ClientIdentity>;
}

/// The credentials of a request as both front ends hold them: HTTP headers or gRPC metadata (tonic keeps
/// metadata in the same `http::HeaderMap`), and the connection's client certificate names.
pub struct HeaderCredentials<'a> {
    pub headers: &'a http::HeaderMap,
    pub identity: Option<&'a ClientIdentity>,
}

impl Credentials for HeaderCredentials<'_> {
    fn header(&self, name: &str) -> Option<&[u8]> {
        self.headers.get(name).map(|v| v.as_bytes())
    }
    fn identity(&self) -> Option<&ClientIdentity> {
        self.identity
    }
}

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
    /// `http` or `grpc`, as in audit records.
    pub const fn name(self) -> &'static str {
        match self {
            Protocol::Http => "http",
            Protocol::Grpc => "grpc",
        }
    }
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

impl Rule {
    fn new(header: String, value: String) -> Rule {
        let lookup = header.to_ascii_lowercase();
        Rule { header, lookup, value: Secret(value.into_bytes()) }
    }

    fn satisfied(&self, creds: &dyn Credentials) -> bool {
        creds.header(&self.lookup).is_some_and(|v| self.value.matches(v))
    }
}

/// The restrictions of one front end. Default: nothing restricted.
#[derive(Debug, Clone)]
pub struct Restrictions {
    protocol: Protocol,
    rules: [Option<Arc<Rule>>; 9],
    /// Certificate names that may stand in for a category's key (`--client-cert-access`).
    identities: [Vec<String>; 9],
}

/// A request that did not present the credential its category (or model) requires.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Denied {
    pub protocol: Protocol,
    pub category: Category,
    /// The header that was expected (no value); `None` when only a client certificate would do.
    pub header: Option<String>,
    /// Set when a `--model-access` rule refused the request.
    pub model: Option<String>,
}

impl Denied {
    /// The client-facing error. A category refusal is worded as Triton's for the protocol: HTTP renders it as
    /// 403, gRPC as UNAVAILABLE (Triton's choice, kept for compatibility: see docs/security.md). A model
    /// refusal (Rampart's own) is PERMISSION_DENIED on both.
    pub fn to_error(&self) -> Error {
        let expecting = match &self.header {
            Some(h) => format!("expecting header '{h}'"),
            None => "expecting a verified client certificate".to_string(),
        };
        if let Some(model) = &self.model {
            return Error::new(
                rampart_types::Code::PermissionDenied,
                format!("access to model '{model}' is restricted, {expecting}"),
            );
        }
        match self.protocol {
            Protocol::Http => Error::new(
                rampart_types::Code::PermissionDenied,
                format!("This API is restricted, {expecting}"),
            ),
            Protocol::Grpc => {
                Error::unavailable(format!("This protocol is restricted, {expecting}"))
            }
        }
    }
}

/// The header or metadata key a front end expects for a configured key name.
fn wire_header(protocol: Protocol, key: &str) -> String {
    match protocol {
        Protocol::Http => key.to_string(),
        Protocol::Grpc => format!("triton-grpc-protocol-{key}"),
    }
}

impl Restrictions {
    pub fn none(protocol: Protocol) -> Self {
        Restrictions { protocol, rules: Default::default(), identities: Default::default() }
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
                format!(
                    "{flag} option format is '<config name>:<setting>=<value>'. Got {}",
                    redact(spec)
                )
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
            let rule = Arc::new(Rule::new(wire_header(protocol, key), value));
            for c in cats.split(',') {
                let cat = Category::parse(c)
                    .ok_or_else(|| format!("unknown restricted {} '{c}'", protocol.noun()))?;
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

    /// Adds `--client-cert-access=<categories>:<identity>` rules (repeatable; a category may list several
    /// identities, and may also have a key: either credential passes).
    pub fn add_client_certs(&mut self, specs: &[String]) -> Result<(), String> {
        for spec in specs {
            let (cats, identity) = spec.split_once(':').filter(|(c, i)| !c.is_empty() && !i.is_empty()).ok_or_else(|| {
                format!(
                    "--client-cert-access option format is '<categories>:<kind>:<name>'. Got '{}'",
                    spec.escape_debug()
                )
            })?;
            let identity =
                parse_identity(identity).map_err(|e| format!("--client-cert-access: {e}"))?;
            for c in cats.split(',') {
                let cat = Category::parse(c)
                    .ok_or_else(|| format!("--client-cert-access: unknown category '{c}'"))?;
                let list = &mut self.identities[cat.index()];
                if !list.contains(&identity) {
                    list.push(identity.clone());
                }
            }
        }
        Ok(())
    }

    /// The header a category requires, if any.
    pub fn header_for(&self, category: Category) -> Option<&str> {
        self.rules[category.index()].as_deref().map(|r| r.header.as_str())
    }

    /// The header a category requires, lower-case (as looked up).
    pub fn lookup_for(&self, category: Category) -> Option<&str> {
        self.rules[category.index()].as_deref().map(|r| r.lookup.as_str())
    }

    /// The certificate names that may stand in for a category's key.
    pub fn identities_for(&self, category: Category) -> &[String] {
        &self.identities[category.index()]
    }

    /// Categories that answer without a credential.
    pub fn open_categories(&self) -> Vec<Category> {
        Category::ALL
            .into_iter()
            .filter(|c| self.rules[c.index()].is_none() && self.identities[c.index()].is_empty())
            .collect()
    }

    /// Checks a request of `category`: it passes with the category's key, or with a client certificate that
    /// carries one of the category's identities.
    pub fn check(&self, category: Category, creds: &dyn Credentials) -> Result<(), Denied> {
        let rule = self.rules[category.index()].as_deref();
        let identities = &self.identities[category.index()];
        if rule.is_none() && identities.is_empty() {
            return Ok(());
        }
        if rule.is_some_and(|r| r.satisfied(creds)) || identity_listed(identities, creds) {
            return Ok(());
        }
        Err(Denied {
            protocol: self.protocol,
            category,
            header: rule.map(|r| r.header.clone()),
            model: None,
        })
    }
}

fn identity_listed(identities: &[String], creds: &dyn Credentials) -> bool {
    !identities.is_empty()
        && creds.identity().is_some_and(|id| identities.iter().any(|want| id.has(want)))
}

/// One `--model-access` rule: the models it names and the credential it accepts.
#[derive(Debug)]
struct ModelRule {
    globs: Vec<String>,
    credential: ModelCredential,
}

#[derive(Debug)]
enum ModelCredential {
    /// A key: header `<key>` on HTTP, metadata `triton-grpc-protocol-<key>` on gRPC.
    Key { http: Rule, grpc: Rule },
    /// A name the verified client certificate must carry.
    ClientCert(String),
}

/// Per-model inference rules (`--model-access`), shared by every front end.
#[derive(Debug, Default)]
pub struct ModelAccess {
    rules: Vec<ModelRule>,
}

/// Largest number of globs in one `--model-access` value, and of `--model-access` values.
const MAX_MODEL_RULES: usize = 1024;

impl ModelAccess {
    /// Parses `<glob>[,<glob>…]:<key>=<value>` and `<glob>[,<glob>…]:client-cert=<kind>:<name>` values.
    /// `resolve` reads `@file` / `env:NAME` values as for the restricted-API flags.
    pub fn parse(
        specs: &[String],
        resolve: &dyn Fn(&str) -> Result<String, String>,
    ) -> Result<Self, String> {
        if specs.len() > MAX_MODEL_RULES {
            return Err(format!("--model-access: at most {MAX_MODEL_RULES} rules"));
        }
        let mut rules = Vec::new();
        for spec in specs {
            let format_error = || {
                format!(
                    "--model-access option format is '<model globs>:<key>=<value>' or '<model globs>:client-cert=<kind>:<name>'. Got {}",
                    redact(spec)
                )
            };
            let (globs, setting) = spec.split_once(':').ok_or_else(format_error)?;
            let (key, value) = setting.split_once('=').ok_or_else(format_error)?;
            if globs.is_empty() || key.is_empty() || value.is_empty() {
                return Err(format_error());
            }
            let globs: Vec<String> = globs.split(',').map(str::to_string).collect();
            if globs.iter().any(|g| g.is_empty()) || globs.len() > MAX_MODEL_RULES {
                return Err(format_error());
            }
            let credential = if key == "client-cert" {
                ModelCredential::ClientCert(
                    parse_identity(value).map_err(|e| format!("--model-access: {e}"))?,
                )
            } else {
                let value = resolve(value)?;
                if value.is_empty() {
                    return Err(format!("--model-access: the value for header '{key}' is empty"));
                }
                ModelCredential::Key {
                    http: Rule::new(wire_header(Protocol::Http, key), value.clone()),
                    grpc: Rule::new(wire_header(Protocol::Grpc, key), value),
                }
            };
            rules.push(ModelRule { globs, credential });
        }
        Ok(ModelAccess { rules })
    }

    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    /// The globs of every rule, for the startup report.
    /// Whether a rule asks for a key (rather than a client certificate).
    pub fn has_keys(&self) -> bool {
        self.rules.iter().any(|r| matches!(r.credential, ModelCredential::Key { .. }))
    }

    /// The header (lower-case) of the first key rule naming `model` whose key the request presents.
    pub fn presented_key(
        &self,
        protocol: Protocol,
        model: &str,
        creds: &dyn Credentials,
    ) -> Option<&str> {
        self.rules.iter().filter(|r| r.globs.iter().any(|g| glob_match(g, model))).find_map(|r| {
            match &r.credential {
                ModelCredential::Key { http, grpc } => {
                    let rule = if protocol == Protocol::Http { http } else { grpc };
                    rule.satisfied(creds).then_some(rule.lookup.as_str())
                }
                ModelCredential::ClientCert(_) => None,
            }
        })
    }

    /// Whether a rule names `model` (only a caller with its credential may run it).
    pub fn covers(&self, model: &str) -> bool {
        self.rules.iter().any(|r| r.globs.iter().any(|g| glob_match(g, model)))
    }

    pub fn globs(&self) -> Vec<&str> {
        self.rules.iter().flat_map(|r| r.globs.iter().map(String::as_str)).collect()
    }

    /// Checks an inference request for `model`. Models that no rule names pass (the category check has
    /// already run); a named model needs the credential of one of the rules naming it.
    pub fn check(
        &self,
        protocol: Protocol,
        model: &str,
        creds: &dyn Credentials,
    ) -> Result<(), Denied> {
        let mut first_header: Option<&str> = None;
        let mut named = false;
        for rule in self.rules.iter().filter(|r| r.globs.iter().any(|g| glob_match(g, model))) {
            named = true;
            let ok = match &rule.credential {
                ModelCredential::Key { http, grpc } => {
                    let r = if protocol == Protocol::Http { http } else { grpc };
                    first_header.get_or_insert(r.header.as_str());
                    r.satisfied(creds)
                }
                ModelCredential::ClientCert(want) => {
                    creds.identity().is_some_and(|id| id.has(want))
                }
            };
            if ok {
                return Ok(());
            }
        }
        if !named {
            return Ok(());
        }
        Err(Denied {
            protocol,
            category: Category::Inference,
            header: first_header.map(str::to_string),
            model: Some(model.to_string()),
        })
    }
}

/// Shell-style glob: `*` matches any run of characters, `?` one character, everything else itself. Linear
/// backtracking (no recursion), so a hostile model name cannot make it slow beyond `O(len(glob) * len(name))`.
pub fn glob_match(glob: &str, name: &str) -> bool {
    let (g, n): (Vec<char>, Vec<char>) = (glob.chars().collect(), name.chars().collect());
    let (mut gi, mut ni) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while ni < n.len() {
        if gi < g.len() && (g[gi] == '?' || (g[gi] != '*' && g[gi] == n[ni])) {
            gi += 1;
            ni += 1;
        } else if gi < g.len() && g[gi] == '*' {
            star = Some((gi, ni));
            gi += 1;
        } else if let Some((sg, sn)) = star {
            gi = sg + 1;
            ni = sn + 1;
            star = Some((sg, sn + 1));
        } else {
            return false;
        }
    }
    g[gi..].iter().all(|&c| c == '*')
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
        let r = parse(
            Protocol::Http,
            &["model-repository:admin-key=admin:val=ue", "inference,metadata:Infer-Key=iv"],
        )
        .unwrap();
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
        let e = Restrictions::parse(Protocol::Http, &["health:k=v:hidden".into()], &|_| {
            Err("bad value".into())
        })
        .unwrap_err();
        assert_eq!(e, "bad value");
    }

    /// Credentials for tests: one header and maybe an identity.
    struct Creds {
        header: Option<(&'static str, &'static [u8])>,
        identity: Option<ClientIdentity>,
    }

    impl Credentials for Creds {
        fn header(&self, name: &str) -> Option<&[u8]> {
            self.header.filter(|(n, _)| *n == name).map(|(_, v)| v)
        }
        fn identity(&self) -> Option<&ClientIdentity> {
            self.identity.as_ref()
        }
    }

    fn key(name: &'static str, value: &'static [u8]) -> Creds {
        Creds { header: Some((name, value)), identity: None }
    }

    fn cert(cn: &str) -> Creds {
        Creds {
            header: None,
            identity: Some(ClientIdentity::new(format!("CN={cn}"), [("cn", cn.to_string())])),
        }
    }

    const NOTHING: Creds = Creds { header: None, identity: None };

    #[test]
    fn checks_headers_exactly() {
        let r = parse(Protocol::Grpc, &["inference:Key=Value"]).unwrap();
        assert!(r.check(Category::Inference, &key("triton-grpc-protocol-key", b"Value")).is_ok());
        assert!(r.check(Category::Health, &NOTHING).is_ok());
        for bad in [&b"value"[..], b"Value ", b"Valu", b""] {
            let d =
                r.check(Category::Inference, &key("triton-grpc-protocol-key", bad)).unwrap_err();
            assert_eq!(d.header.as_deref(), Some("triton-grpc-protocol-Key"));
        }
        let d = r.check(Category::Inference, &NOTHING).unwrap_err();
        assert_eq!(
            d.to_error().message(),
            "This protocol is restricted, expecting header 'triton-grpc-protocol-Key'"
        );
        let h = parse(Protocol::Http, &["health:K=v"]).unwrap();
        let d = h.check(Category::Health, &NOTHING).unwrap_err();
        let e = d.to_error();
        assert_eq!(e.code().http_status(), 403);
        assert_eq!(e.message(), "This API is restricted, expecting header 'K'");
    }

    #[test]
    fn client_certificate_stands_in_for_a_key() {
        let mut r = parse(Protocol::Http, &["model-repository:admin-key=s3cret"]).unwrap();
        r.add_client_certs(&[
            "model-repository,logging:cn:ops".into(),
            "logging:dns:ops.example".into(),
        ])
        .unwrap();
        assert_eq!(r.identities_for(Category::Logging), ["cn:ops", "dns:ops.example"]);
        assert!(r.check(Category::ModelRepository, &key("admin-key", b"s3cret")).is_ok());
        assert!(r.check(Category::ModelRepository, &cert("ops")).is_ok());
        assert!(r.check(Category::Logging, &cert("ops")).is_ok());
        let d = r.check(Category::ModelRepository, &cert("dev")).unwrap_err();
        assert_eq!(d.to_error().message(), "This API is restricted, expecting header 'admin-key'");
        let d = r.check(Category::Logging, &key("admin-key", b"s3cret")).unwrap_err();
        assert_eq!(
            d.to_error().message(),
            "This API is restricted, expecting a verified client certificate"
        );
        assert!(!r.open_categories().contains(&Category::Logging));
        assert!(r.open_categories().contains(&Category::Inference));
        for bad in ["logging", "logging:ops", ":cn:ops", "bogus:cn:ops", "logging:cn:"] {
            assert!(r.add_client_certs(&[bad.into()]).is_err(), "{bad}");
        }
    }

    /// A sequence's owner is the key that let the request in, not any key header it carries.
    #[test]
    fn the_presented_key_is_the_one_that_matches() {
        let specs = ["m:x-a=alpha".to_string(), "m:x-b=beta".to_string()];
        let m = ModelAccess::parse(&specs, &plain).unwrap();
        assert_eq!(m.presented_key(Protocol::Http, "m", &key("x-b", b"beta")), Some("x-b"));
        assert_eq!(m.presented_key(Protocol::Http, "m", &key("x-a", b"forged")), None);
        assert_eq!(m.presented_key(Protocol::Http, "other", &key("x-a", b"alpha")), None);
    }

    #[test]
    fn model_rules_add_to_the_category_check() {
        let specs: Vec<String> = [
            "secret-*,vault:tenant-key=a",
            "secret-*:client-cert=cn:ops",
            "tenant-b-*:tenant-key=b",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let m = ModelAccess::parse(&specs, &plain).unwrap();
        assert!(m.check(Protocol::Http, "public", &NOTHING).is_ok(), "unnamed models pass");
        assert!(m.check(Protocol::Http, "secret-1", &key("tenant-key", b"a")).is_ok());
        assert!(m.check(Protocol::Http, "vault", &key("tenant-key", b"a")).is_ok());
        assert!(
            m.check(Protocol::Grpc, "secret-1", &key("triton-grpc-protocol-tenant-key", b"a"))
                .is_ok()
        );
        assert!(
            m.check(Protocol::Grpc, "secret-1", &key("tenant-key", b"a")).is_err(),
            "gRPC keys are prefixed"
        );
        assert!(m.check(Protocol::Http, "secret-1", &cert("ops")).is_ok());
        assert!(
            m.check(Protocol::Http, "tenant-b-x", &key("tenant-key", b"a")).is_err(),
            "key a is for secret-* only"
        );
        let d = m.check(Protocol::Http, "secret-1", &key("tenant-key", b"b")).unwrap_err();
        let e = d.to_error();
        assert_eq!(e.code().http_status(), 403);
        assert_eq!(e.code().grpc_code(), 7);
        assert_eq!(
            e.message(),
            "access to model 'secret-1' is restricted, expecting header 'tenant-key'"
        );
        let only_cert =
            ModelAccess::parse(&["x:client-cert=dns:a.example".into()], &plain).unwrap();
        let e = only_cert.check(Protocol::Grpc, "x", &NOTHING).unwrap_err().to_error();
        assert_eq!(
            e.message(),
            "access to model 'x' is restricted, expecting a verified client certificate"
        );
        for bad in ["x", "x:k", ":k=v", "x,:k=v", "x:client-cert=alice", "x:k="] {
            assert!(ModelAccess::parse(&[bad.into()], &plain).is_err(), "{bad}");
        }
        let e = ModelAccess::parse(&["x:k:topsecret".into()], &plain).unwrap_err();
        assert!(!e.contains("topsecret"), "{e}");
    }

    #[test]
    fn globs() {
        for (g, n, want) in [
            ("*", "anything", true),
            ("*", "", true),
            ("a*", "abc", true),
            ("a*", "ba", false),
            ("*c", "abc", true),
            ("a?c", "abc", true),
            ("a?c", "ac", false),
            ("a*b*c", "axxbyyc", true),
            ("a*b*c", "axxbyy", false),
            ("exact", "exact", true),
            ("exact", "exactly", false),
            ("é*", "éa", true),
        ] {
            assert_eq!(glob_match(g, n), want, "{g} {n}");
        }
        let long = "a".repeat(10_000);
        assert!(!glob_match("*a*a*a*a*a*b", &long));
    }

    #[test]
    fn secret_never_printed() {
        let r = parse(Protocol::Http, &["health:k=topsecret"]).unwrap();
        assert!(!format!("{r:?}").contains("topsecret"));
    }
}
