//! The SageMaker front end's flags (heading "Sagemaker") and the `SAGEMAKER_*` environment it reads
//! (docs/protocol.md, "SageMaker").

use std::path::PathBuf;

use clap::{ArgAction, Args};

use super::{CliError, parse_bool};

#[cfg(feature = "sagemaker")]
pub use rampart_http::SageMakerOptions;
/// A build without the SageMaker front end never has its options.
#[cfg(not(feature = "sagemaker"))]
#[derive(Debug, Clone)]
pub enum SageMakerOptions {}

#[derive(Args, Debug)]
pub struct SageMakerFlags {
    #[arg(long, default_value = "false", value_parser = parse_bool, action = ArgAction::Set, help_heading = "Sagemaker")]
    pub allow_sagemaker: bool,
    /// Port of the SageMaker front end (on --http-address).
    #[arg(long, default_value_t = 8080, help_heading = "Sagemaker")]
    pub sagemaker_port: u16,
    /// Rampart: the directory SageMaker multi-model loads may come from (`<root>/<name>/model[/<dir>]`).
    #[arg(long, default_value = "/opt/ml/models", help_heading = "Sagemaker")]
    pub sagemaker_multi_model_root: PathBuf,
    #[arg(long, help_heading = "Sagemaker")]
    pub sagemaker_safe_port_range: Option<String>,
    #[arg(long, help_heading = "Sagemaker")]
    pub sagemaker_thread_count: Option<String>,
}

impl SageMakerFlags {
    /// Settings given beyond the defaults (reported when the front end is off).
    pub(super) fn settings_given(&self) -> bool {
        self.sagemaker_port != 8080
            || self.sagemaker_safe_port_range.is_some()
            || self.sagemaker_thread_count.is_some()
    }

    /// `--allow-sagemaker=true` in a build without the front end is refused.
    #[cfg(not(feature = "sagemaker"))]
    pub(super) fn options(
        &self,
        _: rampart_core::ModelControlMode,
    ) -> Result<Option<SageMakerOptions>, CliError> {
        if self.allow_sagemaker {
            return Err(CliError::NotBuilt {
                what: "--allow-sagemaker=true",
                feature: "sagemaker",
            });
        }
        Ok(None)
    }

    /// `--allow-sagemaker=true` and the `SAGEMAKER_*` environment (docs/protocol.md, "SageMaker").
    #[cfg(feature = "sagemaker")]
    pub(super) fn options(
        &self,
        mode: rampart_core::ModelControlMode,
    ) -> Result<Option<SageMakerOptions>, CliError> {
        if !self.allow_sagemaker {
            return Ok(None);
        }
        let env = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
        let inference_type = match env("SAGEMAKER_TRITON_INFERENCE_TYPE").as_deref() {
            None | Some("infer") => "infer",
            Some("generate") => "generate",
            Some("generate_stream") => "generate_stream",
            Some(t) => {
                return Err(CliError::SageMaker(format!(
                    "unexpected SAGEMAKER_TRITON_INFERENCE_TYPE '{t}' (expected infer, generate or generate_stream)"
                )));
            }
        };
        let ping_live = match env("SAGEMAKER_TRITON_PING_MODE").as_deref() {
            None | Some("ready") => false,
            Some("live") => true,
            Some(m) => {
                return Err(CliError::SageMaker(format!(
                    "unexpected SAGEMAKER_TRITON_PING_MODE '{m}' (expected ready or live)"
                )));
            }
        };
        if let Some(r) = &self.sagemaker_safe_port_range {
            return Err(CliError::not_yet(
                "sagemaker-safe-port-range",
                r,
                "port-range checks of the other listeners",
            ));
        }
        let multi_model =
            env("SAGEMAKER_MULTI_MODEL").is_some_and(|v| v.eq_ignore_ascii_case("true"));
        if multi_model && mode != rampart_core::ModelControlMode::Explicit {
            return Err(CliError::SageMaker("SAGEMAKER_MULTI_MODEL=true loads and unloads models: it needs --model-control-mode=explicit".into()));
        }
        Ok(Some(SageMakerOptions {
            inference_type,
            default_model: env("SAGEMAKER_TRITON_DEFAULT_MODEL_NAME")
                .unwrap_or_else(|| "unspecified_SAGEMAKER_TRITON_DEFAULT_MODEL_NAME".into()),
            ping_live,
            multi_model,
            multi_model_root: self.sagemaker_multi_model_root.clone(),
        }))
    }
}
