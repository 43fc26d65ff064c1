//! The access flags (heading "Access", Rampart's own, both listeners) and the rules of all restriction flags:
//! `--http-restricted-api`, `--grpc-restricted-protocol`, `--client-cert-access` and `--model-access`, with
//! their secret values read from files or the environment, and the model-control exposure check.

use clap::Args;
use rampart_core::access::{Category, ModelAccess, Protocol, Restrictions};

use super::grpc::GrpcFlags;
use super::http::HttpFlags;
use super::{Cli, CliError};

#[derive(Args, Debug)]
pub struct AccessFlags {
    /// `<model globs>:<key>=<value>` or `<model globs>:client-cert=<kind>:<name>`: inference on the models
    /// the globs name (`*`, `?`) also needs this key (header `<key>` on HTTP, metadata
    /// `triton-grpc-protocol-<key>` on gRPC) or client certificate. The value may be `@/path` or `env:NAME`.
    /// Repeatable; a model named by several rules needs one of them.
    #[arg(long, help_heading = "Access")]
    pub model_access: Vec<String>,
    /// `<categories>:<kind>:<name>` (kind: cn, dns, uri, email, ip): a verified mutual-TLS client certificate
    /// with that name may call the categories, in place of their restricted-API key. Repeatable.
    #[arg(long, help_heading = "Access")]
    pub client_cert_access: Vec<String>,
}

/// The access rules of both listeners and of the models.
pub(super) struct AccessRules {
    pub http: Restrictions,
    pub grpc: Restrictions,
    pub models: ModelAccess,
}

impl AccessFlags {
    /// Parses the listeners' restricted categories (with the client-certificate alternatives) and the
    /// per-model rules.
    pub(super) fn rules(
        &self,
        http: &HttpFlags,
        grpc: &GrpcFlags,
    ) -> Result<AccessRules, CliError> {
        let mut http_rules =
            Restrictions::parse(Protocol::Http, &http.http_restricted_api, &resolve_secret)
                .map_err(CliError::Access)?;
        let mut grpc_rules =
            Restrictions::parse(Protocol::Grpc, &grpc.grpc_restricted_protocol, &resolve_secret)
                .map_err(CliError::Access)?;
        http_rules.add_client_certs(&self.client_cert_access).map_err(CliError::Access)?;
        grpc_rules.add_client_certs(&self.client_cert_access).map_err(CliError::Access)?;
        let models =
            ModelAccess::parse(&self.model_access, &resolve_secret).map_err(CliError::Access)?;
        Ok(AccessRules { http: http_rules, grpc: grpc_rules, models })
    }

    /// Rules that name client certificates (they need mutual TLS on a listener).
    pub(super) fn wants_client_certs(&self) -> bool {
        !self.client_cert_access.is_empty()
            || self.model_access.iter().any(|m| m.contains(":client-cert="))
    }
}

/// A restricted-API value: `@/path` (file contents, one trailing newline removed), `env:NAME`, or the
/// literal. Errors name the file or variable, never the value.
fn resolve_secret(v: &str) -> Result<String, String> {
    if let Some(path) = v.strip_prefix('@') {
        let mut s = std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read restricted-API value file '{path}': {e}"))?;
        if s.ends_with('\n') {
            s.pop();
            if s.ends_with('\r') {
                s.pop();
            }
        }
        return Ok(s);
    }
    if let Some(name) = v.strip_prefix("env:") {
        return std::env::var(name).map_err(|_| {
            format!("restricted-API value: environment variable '{name}' is not set")
        });
    }
    Ok(v.to_string())
}

/// Secure default beyond Triton: model control (which decides what code runs) is refused when anyone who
/// can reach a non-loopback listener may use the repository API without a credential. Returns the exposed
/// listeners ("HTTP on <address>:<port>", …); empty when none is.
pub(super) fn exposed_model_control(cli: &Cli, rules: &AccessRules) -> Vec<String> {
    let (http, grpc) = (&cli.http, &cli.grpc);
    let loopback = |address: &str| {
        let host = address
            .strip_prefix("ipv6:")
            .unwrap_or(address)
            .trim_start_matches('[')
            .trim_end_matches(']');
        host.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback())
    };
    let open = |rules: &Restrictions| rules.open_categories().contains(&Category::ModelRepository);
    let mut exposed = Vec::new();
    if http.allow_http && open(&rules.http) && !loopback(&http.http_address) {
        exposed.push(format!("HTTP on {}:{}", http.http_address, http.http_port));
    }
    if grpc.allow_grpc && open(&rules.grpc) && !loopback(&grpc.grpc_address) {
        exposed.push(format!("gRPC on {}:{}", grpc.grpc_address, grpc.grpc_port));
    }
    // The SageMaker multi-model routes load and unload models too (same category, HTTP's rules).
    let multi_model =
        std::env::var("SAGEMAKER_MULTI_MODEL").is_ok_and(|v| v.eq_ignore_ascii_case("true"));
    if cfg!(feature = "sagemaker")
        && cli.sagemaker.allow_sagemaker
        && multi_model
        && open(&rules.http)
        && !loopback(&http.http_address)
    {
        exposed
            .push(format!("SageMaker on {}:{}", http.http_address, cli.sagemaker.sagemaker_port));
    }
    exposed
}
