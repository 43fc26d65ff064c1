//! The listeners' TLS flags (Rampart's own on HTTP; Triton's on gRPC), one struct per listener because the
//! flag names carry the listener's, and their conversion into [`TlsFiles`] (`None` when TLS is off).

use std::path::PathBuf;

use clap::{ArgAction, Args};
use rampart_tls::TlsFiles;

use super::{CliError, parse_bool};

#[derive(Args, Debug)]
pub struct HttpTlsFlags {
    /// Serve HTTPS (Rampart's own; Triton has no TLS on HTTP).
    #[arg(long, default_value = "false", value_parser = parse_bool, action = ArgAction::Set, help_heading = "HTTP")]
    pub http_use_ssl: bool,
    /// Require client certificates signed by --http-root-cert (implies --http-use-ssl).
    #[arg(long, default_value = "false", value_parser = parse_bool, action = ArgAction::Set, help_heading = "HTTP")]
    pub http_use_ssl_mutual: bool,
    /// PEM certificate chain of the HTTP listener.
    #[arg(long, help_heading = "HTTP")]
    pub http_server_cert: Option<PathBuf>,
    /// PEM private key of the HTTP listener.
    #[arg(long, help_heading = "HTTP")]
    pub http_server_key: Option<PathBuf>,
    /// PEM CA certificate(s) that sign accepted client certificates.
    #[arg(long, help_heading = "HTTP")]
    pub http_root_cert: Option<PathBuf>,
}

#[derive(Args, Debug)]
pub struct GrpcTlsFlags {
    #[arg(long, default_value = "false", value_parser = parse_bool, action = ArgAction::Set, help_heading = "GRPC")]
    pub grpc_use_ssl: bool,
    #[arg(long, default_value = "false", value_parser = parse_bool, action = ArgAction::Set, help_heading = "GRPC")]
    pub grpc_use_ssl_mutual: bool,
    #[arg(long, help_heading = "GRPC")]
    pub grpc_server_cert: Option<PathBuf>,
    #[arg(long, help_heading = "GRPC")]
    pub grpc_server_key: Option<PathBuf>,
    #[arg(long, help_heading = "GRPC")]
    pub grpc_root_cert: Option<PathBuf>,
}

impl TryFrom<&HttpTlsFlags> for Option<TlsFiles> {
    type Error = CliError;

    fn try_from(f: &HttpTlsFlags) -> Result<Self, CliError> {
        let (cert, key, root) = (&f.http_server_cert, &f.http_server_key, &f.http_root_cert);
        tls_files("http", f.http_use_ssl, f.http_use_ssl_mutual, cert, key, root)
    }
}

impl TryFrom<&GrpcTlsFlags> for Option<TlsFiles> {
    type Error = CliError;

    fn try_from(f: &GrpcTlsFlags) -> Result<Self, CliError> {
        let (cert, key, root) = (&f.grpc_server_cert, &f.grpc_server_key, &f.grpc_root_cert);
        tls_files("grpc", f.grpc_use_ssl, f.grpc_use_ssl_mutual, cert, key, root)
    }
}

/// A listener's TLS files from its flags; `None` when TLS is off. Mutual implies TLS.
fn tls_files(
    listener: &'static str,
    ssl: bool,
    mutual: bool,
    cert: &Option<PathBuf>,
    key: &Option<PathBuf>,
    root: &Option<PathBuf>,
) -> Result<Option<TlsFiles>, CliError> {
    if !(ssl || mutual) {
        return Ok(None);
    }
    let need = |v: &Option<PathBuf>, flag: &'static str| {
        v.clone().ok_or(CliError::TlsMissing { listener, flag })
    };
    let files = TlsFiles {
        listener,
        cert: need(cert, "server-cert")?,
        key: need(key, "server-key")?,
        root: root.clone(),
        mutual,
    };
    if mutual && root.is_none() {
        return Err(CliError::TlsMutualNeedsRoot { listener });
    }
    Ok(Some(files))
}
