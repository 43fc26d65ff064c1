//! The model repository flags (heading "Model Repository"): repository paths, startup and readiness policy,
//! model control (none, poll, explicit) and startup models, and the per-request limits (Rampart's own).

use std::path::PathBuf;

use clap::{ArgAction, Args};
use rampart_core::{ModelControlMode, RequestLimits};

use super::{CliError, parse_bool};

#[derive(Args, Debug)]
pub struct RepositoryFlags {
    /// Model repository path; repeatable.
    #[arg(
        long = "model-repository",
        visible_alias = "model-store",
        help_heading = "Model Repository"
    )]
    pub model_repository: Vec<PathBuf>,
    /// Exit at startup if any model fails to load.
    #[arg(long, default_value = "true", value_parser = parse_bool, action = ArgAction::Set, help_heading = "Model Repository")]
    pub exit_on_error: bool,
    /// Disable auto-completion of model configs from the model files (implies --strict-model-config).
    #[arg(long, action = ArgAction::SetTrue, help_heading = "Model Repository")]
    pub disable_auto_complete_config: bool,
    /// Ready only when every model is ready.
    #[arg(long, default_value = "true", value_parser = parse_bool, action = ArgAction::Set, help_heading = "Model Repository")]
    pub strict_readiness: bool,
    /// none (load everything at startup), poll (follow the repository) or explicit (repository API).
    #[arg(long, default_value = "none", help_heading = "Model Repository")]
    pub model_control_mode: String,
    /// Seconds between repository polls in poll mode (0: never poll).
    #[arg(long, default_value_t = 15, help_heading = "Model Repository")]
    pub repository_poll_secs: u64,
    /// Model to load at startup (explicit mode); repeatable; `*` alone loads every model.
    #[arg(long, help_heading = "Model Repository")]
    pub load_model: Vec<String>,
    /// Let load requests carry model files (`file:` parameters). Off by default: it is remote code upload.
    #[arg(long, default_value = "false", value_parser = parse_bool, action = ArgAction::Set, help_heading = "Model Repository")]
    pub allow_model_file_override: bool,
    /// Start in poll or explicit mode even though the model-repository API answers without credentials on a
    /// non-loopback listener (Rampart refuses that by default).
    #[arg(long, default_value = "false", value_parser = parse_bool, action = ArgAction::Set, help_heading = "Model Repository")]
    pub allow_unauthenticated_model_control: bool,
    #[arg(long, help_heading = "Model Repository")]
    pub model_config_name: Option<String>,
    #[arg(long, default_value_t = 4, help_heading = "Model Repository")]
    pub model_load_thread_count: u32,
    #[arg(long, default_value_t = 0, help_heading = "Model Repository")]
    pub model_load_retry_count: u32,
    /// Requests that may wait per model version; more are answered 503 / UNAVAILABLE (Rampart's own).
    #[arg(long, default_value_t = 4096, help_heading = "Model Repository")]
    pub max_queued_requests: usize,
    /// Most inputs one inference request may carry (Rampart's own).
    #[arg(long, default_value_t = 1024, help_heading = "Model Repository")]
    pub max_request_inputs: usize,
    /// Most requested outputs one inference request may carry (Rampart's own).
    #[arg(long, default_value_t = 1024, help_heading = "Model Repository")]
    pub max_request_outputs: usize,
    /// Most request-level parameters one inference request may carry (Rampart's own).
    #[arg(long, default_value_t = 64, help_heading = "Model Repository")]
    pub max_request_parameters: usize,
    /// Most BYTES (string) elements over all inputs of one inference request (Rampart's own).
    #[arg(long, default_value_t = 1 << 20, help_heading = "Model Repository")]
    pub max_request_bytes_elements: u64,
    /// Open sequences per stateful model version; more STARTs are answered 503 / UNAVAILABLE (Rampart's
    /// own).
    #[arg(long, default_value_t = rampart_core::SequenceLimits::default().max_sequences, help_heading = "Model Repository")]
    pub max_sequences: usize,
    /// Open sequences one client (certificate or access key; anonymous clients share one count) may hold
    /// per stateful model version (Rampart's own).
    #[arg(long, default_value_t = rampart_core::SequenceLimits::default().max_per_client, help_heading = "Model Repository")]
    pub max_sequences_per_client: usize,
    /// off (Triton's behaviour), warn (verify each model's model.sig and log failures) or enforce (refuse a
    /// model that does not verify) (Rampart's own).
    #[arg(long, default_value = "off", help_heading = "Model Repository")]
    pub model_signature_policy: String,
    /// A PEM public key (or certificate) models may be signed with; repeatable (Rampart's own).
    #[arg(long, help_heading = "Model Repository")]
    pub model_signature_key: Vec<PathBuf>,
    /// A PEM file of root certificates that signing certificates (model_signing sign certificate) must
    /// chain to; repeatable (Rampart's own).
    #[arg(long, help_heading = "Model Repository")]
    pub model_signature_root: Vec<PathBuf>,
    #[arg(long, default_value = "false", value_parser = parse_bool, action = ArgAction::Set, help_heading = "Model Repository")]
    pub model_namespacing: bool,
    #[arg(long, default_value = "true", value_parser = parse_bool, action = ArgAction::Set, help_heading = "Model Repository")]
    pub enable_peer_access: bool,
}

impl RepositoryFlags {
    /// `--model-control-mode` and the startup models it allows; notes a file override that cannot apply.
    pub(super) fn control_mode(
        &self,
        inert: &mut Vec<String>,
    ) -> Result<ModelControlMode, CliError> {
        let Some(mode) = ModelControlMode::parse(&self.model_control_mode) else {
            return Err(CliError::UnexpectedValue {
                flag: "model-control-mode",
                value: self.model_control_mode.clone(),
                expected: "none, poll or explicit",
            });
        };
        if !self.load_model.is_empty() && mode != ModelControlMode::Explicit {
            return Err(CliError::LoadModelNeedsExplicit);
        }
        if self.load_model.len() > 1 && self.load_model.iter().any(|m| m == "*") {
            return Err(CliError::WildcardNotAlone);
        }
        for m in self.load_model.iter().filter(|m| *m != "*") {
            rampart_core::validate_model_name(m)
                .map_err(|e| CliError::LoadModelName(e.message().to_string()))?;
        }
        if self.allow_model_file_override && mode != ModelControlMode::Explicit {
            inert.push("--allow-model-file-override has no effect: load requests need --model-control-mode=explicit".into());
        }
        Ok(mode)
    }

    /// `--model-signature-policy` with the keys of `--model-signature-key` and the roots of
    /// `--model-signature-root`, read now.
    pub(super) fn signature_policy(&self) -> Result<rampart_core::SignaturePolicy, CliError> {
        use rampart_core::SignatureMode;
        let Some(mode) = SignatureMode::parse(&self.model_signature_policy) else {
            return Err(CliError::UnexpectedValue {
                flag: "model-signature-policy",
                value: self.model_signature_policy.clone(),
                expected: "off, warn or enforce",
            });
        };
        if mode != SignatureMode::Off
            && self.model_signature_key.is_empty()
            && self.model_signature_root.is_empty()
        {
            return Err(CliError::SignatureKey(format!(
                "--model-signature-policy={} needs at least one --model-signature-key or --model-signature-root",
                mode.as_str()
            )));
        }
        let mut trust = rampart_signing::Trust::default();
        for path in &self.model_signature_key {
            let text = read_pem("model-signature-key", path)?;
            trust.keys.push(rampart_signing::TrustedKey::from_pem(&text).map_err(|e| {
                CliError::SignatureKey(format!("--model-signature-key '{}': {e}", path.display()))
            })?);
        }
        for path in &self.model_signature_root {
            let text = read_pem("model-signature-root", path)?;
            trust.roots.extend(rampart_signing::TrustedRoot::from_pem(&text).map_err(|e| {
                CliError::SignatureKey(format!("--model-signature-root '{}': {e}", path.display()))
            })?);
        }
        Ok(rampart_core::SignaturePolicy { mode, trust })
    }

    /// The per-request limits; also refuses the repository features Rampart does not have yet (custom config
    /// names, load retries, namespacing) and zero queue or load-thread sizes.
    pub(super) fn request_limits(&self) -> Result<RequestLimits, CliError> {
        if let Some(n) = &self.model_config_name {
            return Err(CliError::not_yet("model-config-name", n, "custom config names"));
        }
        if self.model_load_retry_count > 0 {
            let count = self.model_load_retry_count.to_string();
            return Err(CliError::not_yet("model-load-retry-count", &count, "load retries"));
        }
        if self.max_queued_requests == 0 {
            return Err(CliError::NotPositive("--max-queued-requests"));
        }
        for (flag, v) in [
            ("--max-request-inputs", self.max_request_inputs),
            ("--max-request-outputs", self.max_request_outputs),
            ("--max-request-parameters", self.max_request_parameters),
            ("--max-request-bytes-elements", self.max_request_bytes_elements as usize),
            ("--max-sequences", self.max_sequences),
            ("--max-sequences-per-client", self.max_sequences_per_client),
        ] {
            if v == 0 {
                return Err(CliError::NotPositive(flag));
            }
        }
        if self.model_load_thread_count == 0 {
            return Err(CliError::NotPositive("--model-load-thread-count"));
        }
        if self.model_namespacing {
            return Err(CliError::not_yet("model-namespacing", "true", "model namespacing"));
        }
        Ok(RequestLimits {
            max_inputs: self.max_request_inputs,
            max_outputs: self.max_request_outputs,
            max_parameters: self.max_request_parameters,
            max_bytes_elements: self.max_request_bytes_elements,
        })
    }
}

fn read_pem(flag: &str, path: &std::path::Path) -> Result<String, CliError> {
    std::fs::read_to_string(path).map_err(|e| {
        CliError::SignatureKey(format!("cannot read --{flag} '{}': {e}", path.display()))
    })
}
