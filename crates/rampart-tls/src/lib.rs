//! TLS and mutual TLS for every Rampart listener, with rustls (ring provider, TLS 1.2 and 1.3 only).
//!
//! - [`TlsFiles`] names the PEM files; [`ReloadingConfig`] loads them into a rustls `ServerConfig` and, when
//!   watched, reloads them whenever their contents change (cert-manager rotation). A reload swaps the config
//!   used for *new* handshakes only; established connections keep the session they negotiated. A broken
//!   replacement is logged and the previous config keeps serving.
//! - [`accept_tls`] turns a TCP listener into a stream of TLS connections; every handshake runs in its own
//!   task with a deadline, so one slow client cannot hold the accept loop.
//! - [`TlsListener`] adapts that stream to `axum::serve`.
//! - [`Peer`] is what a connection knows about its client: the address and, on a mutual-TLS connection, the
//!   names of the verified client certificate ([`ClientIdentity`]), read once per connection.
#![forbid(unsafe_code)]

use std::io;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use rustls::ServerConfig;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_rustls::server::TlsStream;

pub use rampart_types::ClientIdentity;

/// How long a client may take to complete the TLS handshake.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Connections whose handshake is in progress, per listener; more wait in the kernel's accept queue.
const MAX_PENDING_HANDSHAKES: usize = 256;

/// The PEM files of one listener.
#[derive(Debug, Clone)]
pub struct TlsFiles {
    /// Which listener, for messages (e.g. "grpc").
    pub listener: &'static str,
    pub cert: PathBuf,
    pub key: PathBuf,
    /// CA bundle that signs accepted client certificates (mutual TLS).
    pub root: Option<PathBuf>,
    /// Require and verify a client certificate.
    pub mutual: bool,
}

/// Names a file by the flag that gave it, e.g. `--grpc-server-cert 'tls/server.pem'`.
fn flag(listener: &str, which: &str, path: &Path) -> String {
    format!("--{listener}-{which} '{}'", path.display())
}

fn read(listener: &str, which: &str, path: &Path) -> Result<Vec<u8>, String> {
    std::fs::read(path)
        .map_err(|e| format!("{listener} TLS: cannot read {}: {e}", flag(listener, which, path)))
}

/// The raw bytes of the files, to detect changes.
fn snapshot(files: &TlsFiles) -> Result<Vec<Vec<u8>>, String> {
    let mut out = vec![
        read(files.listener, "server-cert", &files.cert)?,
        read(files.listener, "server-key", &files.key)?,
    ];
    if let Some(root) = &files.root {
        out.push(read(files.listener, "root-cert", root)?);
    }
    Ok(out)
}

fn certs(
    listener: &str,
    which: &str,
    path: &Path,
    pem: &[u8],
) -> Result<Vec<CertificateDer<'static>>, String> {
    let certs: Vec<_> =
        CertificateDer::pem_slice_iter(pem).collect::<Result<_, _>>().map_err(|e| {
            format!("{listener} TLS: {} is not valid PEM: {e}", flag(listener, which, path))
        })?;
    if certs.is_empty() {
        return Err(format!(
            "{listener} TLS: {} contains no certificate",
            flag(listener, which, path)
        ));
    }
    Ok(certs)
}

/// Builds the rustls config from file contents (as returned by [`snapshot`]).
fn build(
    files: &TlsFiles,
    contents: &[Vec<u8>],
    alpn: &[&[u8]],
) -> Result<Arc<ServerConfig>, String> {
    let l = files.listener;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let chain = certs(l, "server-cert", &files.cert, &contents[0])?;
    let key = PrivateKeyDer::from_pem_slice(&contents[1]).map_err(|e| {
        format!("{l} TLS: {} holds no usable private key: {e}", flag(l, "server-key", &files.key))
    })?;
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|e| format!("{l} TLS: {e}"))?;
    let builder = if files.mutual {
        let root = files
            .root
            .as_ref()
            .ok_or_else(|| format!("{l} TLS: mutual TLS needs a root certificate"))?;
        let mut store = rustls::RootCertStore::empty();
        for c in certs(l, "root-cert", root, &contents[2])? {
            store.add(c).map_err(|e| format!("{l} TLS: {}: {e}", flag(l, "root-cert", root)))?;
        }
        let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(store), provider)
            .build()
            .map_err(|e| format!("{l} TLS: {}: {e}", flag(l, "root-cert", root)))?;
        builder.with_client_cert_verifier(verifier)
    } else {
        builder.with_no_client_auth()
    };
    let mut config = builder.with_single_cert(chain, key).map_err(|e| {
        format!(
            "{l} TLS: {} and {} cannot be used together: {e}",
            flag(l, "server-cert", &files.cert),
            flag(l, "server-key", &files.key)
        )
    })?;
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Ok(Arc::new(config))
}

/// A listener's TLS config, reloadable while serving.
pub struct ReloadingConfig {
    files: TlsFiles,
    alpn: Vec<Vec<u8>>,
    current: RwLock<(Arc<ServerConfig>, Vec<Vec<u8>>)>,
}

impl ReloadingConfig {
    /// Loads the files now; any problem is a startup error naming the file.
    pub fn load(files: TlsFiles, alpn: &[&[u8]]) -> Result<Arc<Self>, String> {
        if files.mutual && files.root.is_none() {
            return Err(format!(
                "{} TLS: mutual TLS needs --{}-root-cert (the CA that signs client certificates)",
                files.listener, files.listener
            ));
        }
        let contents = snapshot(&files)?;
        let config = build(&files, &contents, alpn)?;
        Ok(Arc::new(ReloadingConfig {
            alpn: alpn.iter().map(|p| p.to_vec()).collect(),
            files,
            current: RwLock::new((config, contents)),
        }))
    }

    /// The config for the next handshake.
    pub fn current(&self) -> Arc<ServerConfig> {
        self.current.read().unwrap_or_else(|p| p.into_inner()).0.clone()
    }

    /// Re-reads the files; swaps the config when their contents changed and still make a valid config.
    /// Returns whether a new config is now in use.
    pub fn reload(&self) -> Result<bool, String> {
        let contents = snapshot(&self.files)?;
        if self.current.read().unwrap_or_else(|p| p.into_inner()).1 == contents {
            return Ok(false);
        }
        let alpn: Vec<&[u8]> = self.alpn.iter().map(|p| p.as_slice()).collect();
        let config = build(&self.files, &contents, &alpn)?;
        *self.current.write().unwrap_or_else(|p| p.into_inner()) = (config, contents);
        Ok(true)
    }

    /// Checks the files every `interval` for the life of the runtime.
    pub fn watch(self: &Arc<Self>, interval: Duration) {
        let this = Arc::downgrade(self);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(interval);
            tick.tick().await;
            let mut last_error: Option<String> = None;
            loop {
                tick.tick().await;
                let Some(this) = this.upgrade() else { return };
                match this.reload() {
                    Ok(true) => {
                        last_error = None;
                        tracing::info!("{} TLS: reloaded certificate files", this.files.listener);
                    }
                    Ok(false) => last_error = None,
                    Err(e) => {
                        if last_error.as_ref() != Some(&e) {
                            tracing::error!("{e}; keeping the previous certificate");
                        }
                        last_error = Some(e);
                    }
                }
            }
        });
    }
}

/// Accepts TCP connections and completes TLS handshakes in separate tasks; finished connections come out of
/// the returned channel.
pub fn accept_tls(
    listener: TcpListener,
    config: Arc<ReloadingConfig>,
) -> mpsc::Receiver<(TlsStream<TcpStream>, Peer)> {
    let (tx, rx) = mpsc::channel(64);
    let pending = Arc::new(tokio::sync::Semaphore::new(MAX_PENDING_HANDSHAKES));
    tokio::spawn(async move {
        loop {
            let Ok(permit) = pending.clone().acquire_owned().await else { return };
            let (tcp, peer) = match listener.accept().await {
                Ok(c) => c,
                Err(e) => {
                    tracing::warn!("accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            let _ = tcp.set_nodelay(true);
            let acceptor = tokio_rustls::TlsAcceptor::from(config.current());
            let conn_tx = tx.clone();
            let listener_name = config.files.listener;
            tokio::spawn(async move {
                let _permit = permit;
                match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                    Ok(Ok(tls)) => {
                        let identity = tls
                            .get_ref()
                            .1
                            .peer_certificates()
                            .and_then(|c| c.first())
                            .and_then(identity_of);
                        let _ = conn_tx.send((tls, Peer { addr: peer, identity })).await;
                    }
                    Ok(Err(e)) => {
                        tracing::debug!("{listener_name} TLS handshake with {peer} failed: {e}")
                    }
                    Err(_) => {
                        tracing::debug!("{listener_name} TLS handshake with {peer} timed out")
                    }
                }
            });
            if tx.is_closed() {
                return;
            }
        }
    });
    rx
}

/// `axum::serve` listener over [`accept_tls`].
pub struct TlsListener {
    rx: mpsc::Receiver<(TlsStream<TcpStream>, Peer)>,
    local: SocketAddr,
}

impl TlsListener {
    pub fn new(listener: TcpListener, config: Arc<ReloadingConfig>) -> io::Result<Self> {
        let local = listener.local_addr()?;
        Ok(TlsListener { rx: accept_tls(listener, config), local })
    }
}

impl axum::serve::Listener for TlsListener {
    type Io = TlsStream<TcpStream>;
    type Addr = Peer;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.rx.recv().await {
            Some(c) => c,
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> io::Result<Self::Addr> {
        Ok(Peer { addr: self.local, identity: None })
    }
}

/// The client end of a connection: its address and, on a mutual-TLS connection, the verified certificate's
/// names. Plain connections convert from their `SocketAddr`.
#[derive(Debug, Clone)]
pub struct Peer {
    pub addr: SocketAddr,
    pub identity: Option<Arc<ClientIdentity>>,
}

impl From<SocketAddr> for Peer {
    fn from(addr: SocketAddr) -> Self {
        Peer { addr, identity: None }
    }
}

impl std::fmt::Display for Peer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.addr.fmt(f)
    }
}

/// The names of a client certificate that rustls has already verified against the configured CA: subject
/// common names and the DNS, URI, e-mail and IP subject-alternative names. `None` when the certificate
/// cannot be parsed (then no identity rule can match).
pub fn identity_of(cert: &CertificateDer<'_>) -> Option<Arc<ClientIdentity>> {
    use x509_parser::extensions::GeneralName;
    let (_, parsed) = x509_parser::parse_x509_certificate(cert.as_ref()).ok()?;
    let mut names: Vec<(&'static str, String)> = Vec::new();
    for cn in parsed.subject().iter_common_name() {
        if let Ok(v) = cn.as_str() {
            names.push(("cn", v.to_string()));
        }
    }
    if let Ok(Some(san)) = parsed.subject_alternative_name() {
        for n in &san.value.general_names {
            match n {
                GeneralName::DNSName(v) => names.push(("dns", v.to_string())),
                GeneralName::URI(v) => names.push(("uri", v.to_string())),
                GeneralName::RFC822Name(v) => names.push(("email", v.to_string())),
                GeneralName::IPAddress(b) => {
                    let ip = match b.len() {
                        4 => <[u8; 4]>::try_from(*b)
                            .ok()
                            .map(|a| std::net::IpAddr::from(a).to_string()),
                        16 => <[u8; 16]>::try_from(*b)
                            .ok()
                            .map(|a| std::net::IpAddr::from(a).to_string()),
                        _ => None,
                    };
                    names.extend(ip.map(|ip| ("ip", ip)));
                }
                _ => {}
            }
        }
    }
    Some(Arc::new(ClientIdentity::new(parsed.subject().to_string(), names)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pair(name: &str) -> (String, String) {
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = rcgen::CertificateParams::new(vec![name.to_string()])
            .unwrap()
            .self_signed(&key)
            .unwrap();
        (cert.pem(), key.serialize_pem())
    }

    fn files(dir: &Path, mutual: bool) -> TlsFiles {
        TlsFiles {
            listener: "http",
            cert: dir.join("c.pem"),
            key: dir.join("k.pem"),
            root: mutual.then(|| dir.join("ca.pem")),
            mutual,
        }
    }

    #[test]
    fn loads_rejects_and_reloads() {
        let dir = tempfile::tempdir().unwrap();
        let f = files(dir.path(), false);
        let e = ReloadingConfig::load(f.clone(), &[b"h2"]).err().unwrap();
        assert!(e.contains("cannot read --http-server-cert") && e.contains("c.pem"), "{e}");
        let (c1, k1) = pair("localhost");
        let (_, k2) = pair("localhost");
        std::fs::write(&f.cert, &c1).unwrap();
        std::fs::write(&f.key, &k2).unwrap();
        let e = ReloadingConfig::load(f.clone(), &[b"h2"]).err().unwrap();
        assert!(e.contains("cannot be used together"), "{e}");
        std::fs::write(&f.key, "garbage").unwrap();
        assert!(
            ReloadingConfig::load(f.clone(), &[b"h2"])
                .err()
                .unwrap()
                .contains("no usable private key")
        );
        std::fs::write(&f.key, &k1).unwrap();
        let cfg = ReloadingConfig::load(f.clone(), &[b"h2"]).unwrap();
        assert_eq!(cfg.current().alpn_protocols, vec![b"h2".to_vec()]);
        assert!(!cfg.reload().unwrap(), "unchanged files keep the config");
        let before = cfg.current();
        // A broken replacement keeps the old config.
        std::fs::write(&f.cert, "not a cert").unwrap();
        assert!(cfg.reload().is_err());
        assert!(Arc::ptr_eq(&before, &cfg.current()));
        let (c3, k3) = pair("localhost");
        std::fs::write(&f.cert, &c3).unwrap();
        std::fs::write(&f.key, &k3).unwrap();
        assert!(cfg.reload().unwrap());
        assert!(!Arc::ptr_eq(&before, &cfg.current()));
    }

    #[test]
    fn mutual_needs_a_root() {
        let dir = tempfile::tempdir().unwrap();
        let mut f = files(dir.path(), true);
        f.root = None;
        assert!(ReloadingConfig::load(f, &[]).err().unwrap().contains("root"));
        let f = files(dir.path(), true);
        let (c, k) = pair("localhost");
        std::fs::write(&f.cert, &c).unwrap();
        std::fs::write(&f.key, &k).unwrap();
        std::fs::write(f.root.as_ref().unwrap(), &c).unwrap();
        assert!(ReloadingConfig::load(f, &[]).is_ok());
    }

    #[test]
    fn identity_lists_common_name_and_alternative_names() {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(vec!["Client.Example".to_string()]).unwrap();
        params.distinguished_name.push(rcgen::DnType::CommonName, "alice");
        params.distinguished_name.push(rcgen::DnType::OrganizationName, "Example");
        params
            .subject_alt_names
            .push(rcgen::SanType::URI("spiffe://example/ns/a".try_into().unwrap()));
        params
            .subject_alt_names
            .push(rcgen::SanType::Rfc822Name("alice@example.com".try_into().unwrap()));
        params.subject_alt_names.push(rcgen::SanType::IpAddress("10.0.0.7".parse().unwrap()));
        let cert = params.self_signed(&key).unwrap();
        let id = identity_of(cert.der()).unwrap();
        let mut names = id.names().to_vec();
        names.sort();
        assert_eq!(
            names,
            [
                "cn:alice",
                "dns:client.example",
                "email:alice@example.com",
                "ip:10.0.0.7",
                "uri:spiffe://example/ns/a"
            ]
        );
        assert!(id.subject().contains("CN=alice"), "{}", id.subject());
        assert!(identity_of(&CertificateDer::from(vec![0x30, 0x03, 1, 2, 3])).is_none());
    }
}
